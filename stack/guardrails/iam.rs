//! Guardrails: IAM. Least privilege, checked on the declared policies:
//!
//! - `iam-wildcard-action`: no Allow statement grants every action (`*`),
//!   every action of a service (`s3:*`), or everything but a list
//!   (`NotAction`).
//! - `iam-wildcard-resource`: `Resource: *` (or `NotResource`) only for
//!   EC2 describe calls, which take no resource ARN (Prometheus EC2
//!   service discovery); everything else names its ARNs.
//! - `iam-admin-policy`: no administrator-class managed policy attached.
//! - `iam-open-trust`: no trust policy that lets anyone assume the role.
//!
//! Values held in references (ARNs known after apply) are never `*`, so
//! checking the declared bodies is enough.

use serde_json::Value;

use super::Violation;
use crate::aws::iam_role::IamRole;
use crate::aws::iam_role_policy::IamRolePolicy;
use crate::aws::iam_role_policy_attachment::IamRolePolicyAttachment;
use crate::engine::resource::{Resource, Stack};

/// Managed policies that amount to administrator access.
const ADMIN_POLICIES: &[&str] = &[
    ":policy/AdministratorAccess",
    ":policy/PowerUserAccess",
    ":policy/IAMFullAccess",
];

/// The only actions allowed on `Resource: *`.
const DESCRIBE_PREFIX: &str = "ec2:describe";

pub fn check(stack: &Stack, out: &mut Vec<Violation>) {
    for r in &stack.resources {
        let mut report = |rule: &'static str, message: String| {
            out.push(Violation {
                rule,
                address: r.address.clone(),
                message,
            })
        };
        match r.kind.as_str() {
            IamRolePolicy::KIND => {
                if let Some(doc) = r.body.get("policy") {
                    check_permissions(doc, &mut report);
                }
            }
            IamRole::KIND => {
                if let Some(doc) = r.body.get("assume_role_policy") {
                    check_permissions(doc, &mut report);
                    check_trust(doc, &mut report);
                }
            }
            IamRolePolicyAttachment::KIND => {
                let arn = r.body.get("policy_arn").and_then(Value::as_str);
                if let Some(arn) = arn.filter(|a| ADMIN_POLICIES.iter().any(|p| a.ends_with(p))) {
                    report(
                        "iam-admin-policy",
                        format!("attaches {arn}; grant the specific actions the role needs in its inline policy"),
                    );
                }
            }
            _ => {}
        }
    }
}

/// A JSON value that may be one item or a list of them.
fn items(v: Option<&Value>) -> Vec<&Value> {
    match v {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(other) => vec![other],
        None => vec![],
    }
}

fn strings(v: Option<&Value>) -> Vec<&str> {
    items(v).into_iter().filter_map(Value::as_str).collect()
}

fn allows(statements: &Value) -> Vec<&Value> {
    items(statements.get("Statement"))
        .into_iter()
        .filter(|s| s.get("Effect").and_then(Value::as_str) == Some("Allow"))
        .collect()
}

fn check_permissions(doc: &Value, report: &mut impl FnMut(&'static str, String)) {
    for (i, s) in allows(doc).into_iter().enumerate() {
        let actions = strings(s.get("Action"));
        for a in &actions {
            if *a == "*" || a.ends_with(":*") {
                report(
                    "iam-wildcard-action",
                    format!("statement {i} allows '{a}'; list the actions the role needs"),
                );
            }
        }
        if s.get("NotAction").is_some() {
            report(
                "iam-wildcard-action",
                format!("statement {i} allows everything but its NotAction list; list the actions the role needs instead"),
            );
        }
        let everything =
            strings(s.get("Resource")).contains(&"*") || s.get("NotResource").is_some();
        let describe_only = !actions.is_empty()
            && actions
                .iter()
                .all(|a| a.to_ascii_lowercase().starts_with(DESCRIBE_PREFIX));
        if everything && !describe_only {
            report(
                "iam-wildcard-resource",
                format!(
                    "statement {i} allows {} on every resource; only ec2:Describe* calls may use Resource \"*\", name the ARNs",
                    actions.join(", ")
                ),
            );
        }
    }
}

fn check_trust(doc: &Value, report: &mut impl FnMut(&'static str, String)) {
    for (i, s) in allows(doc).into_iter().enumerate() {
        let p = s.get("Principal");
        let open = p.and_then(Value::as_str) == Some("*")
            || p.and_then(|p| p.get("AWS"))
                .is_some_and(|a| strings(Some(a)).contains(&"*"));
        if open {
            report(
                "iam-open-trust",
                format!("trust statement {i} lets any principal assume the role; name the service or account"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::iam_policy::{PolicyDocument, Statement};
    use crate::aws::iam_role::IamRole;
    use crate::engine::resource::Stack;

    /// A stack with one role and one inline policy made of `statements`.
    fn stack_with(statements: Vec<Statement>) -> Stack {
        let mut s = Stack::new("t", "dev");
        let role = s.add(
            "iam_role.r",
            IamRole {
                name: "r".into(),
                assume_role_policy: PolicyDocument::trust_service("ec2.amazonaws.com"),
                tags: Default::default(),
            },
        );
        s.add(
            "iam_role_policy.r",
            IamRolePolicy {
                role: role.name(),
                name: "r-inline".into(),
                policy: PolicyDocument::new(statements),
            },
        );
        s
    }

    fn rules(s: &Stack) -> Vec<&'static str> {
        let mut out = Vec::new();
        check(s, &mut out);
        out.iter().map(|v| v.rule).collect()
    }

    #[test]
    fn every_action_is_refused() {
        let s = stack_with(vec![Statement::allow(["*"]).on("arn:aws:s3:::b")]);
        assert_eq!(rules(&s), vec!["iam-wildcard-action"]);
    }

    #[test]
    fn every_action_of_a_service_is_refused() {
        let s = stack_with(vec![Statement::allow(["s3:*"]).on("arn:aws:s3:::b/*")]);
        assert_eq!(rules(&s), vec!["iam-wildcard-action"]);
    }

    #[test]
    fn every_resource_is_refused_except_for_ec2_describe_calls() {
        let s = stack_with(vec![Statement::allow(["dynamodb:Scan"]).on("*")]);
        let mut out = Vec::new();
        check(&s, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].rule, "iam-wildcard-resource");
        assert_eq!(out[0].address, "iam_role_policy.r");
        assert!(out[0].message.contains("dynamodb:Scan"), "{}", out[0]);

        // One non-describe action spoils the statement.
        let s = stack_with(vec![Statement::allow([
            "ec2:DescribeInstances",
            "ec2:TerminateInstances",
        ])
        .on("*")]);
        assert_eq!(rules(&s), vec!["iam-wildcard-resource"]);

        let s = stack_with(vec![Statement::allow([
            "ec2:DescribeInstances",
            "ec2:DescribeAvailabilityZones",
        ])
        .on("*")]);
        assert_eq!(rules(&s), Vec::<&str>::new());
    }

    #[test]
    fn named_actions_on_named_resources_pass() {
        let s = stack_with(vec![
            Statement::allow(["dynamodb:GetItem", "dynamodb:UpdateItem"])
                .on("arn:aws:dynamodb:us-east-2:1:table/t"),
            Statement::allow(["s3:Get*"]).on("arn:aws:s3:::b/*"),
        ]);
        assert_eq!(rules(&s), Vec::<&str>::new());
    }

    #[test]
    fn administrator_policies_and_open_trust_are_refused() {
        let mut s = stack_with(vec![]);
        let role = s.add(
            "iam_role.open",
            IamRole {
                name: "open".into(),
                assume_role_policy: PolicyDocument::new(vec![Statement {
                    principal: Some(serde_json::json!({"AWS": "*"})),
                    ..Statement::allow(["sts:AssumeRole"])
                }]),
                tags: Default::default(),
            },
        );
        s.add(
            "iam_role_policy_attachment.admin",
            IamRolePolicyAttachment {
                role: role.name(),
                policy_arn: "arn:aws:iam::aws:policy/AdministratorAccess".into(),
            },
        );
        assert_eq!(rules(&s), vec!["iam-open-trust", "iam-admin-policy"]);
    }
}
