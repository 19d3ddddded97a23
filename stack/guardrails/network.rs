//! Guardrails: network.
//!
//! - `no-ssh`: no ingress rule anywhere admits port 22 (tcp over a range
//!   that includes 22, or all traffic). Operators use SSM; an open SSH
//!   port is only attack surface.
//! - `worker-no-cidr-ingress`: the worker security group admits nothing by
//!   address range. Workers run an unattended agent with credentials.
//! - `worker-ingress`: the worker group's only ingress is tcp 9100
//!   (node_exporter) and 9101 (worker exporter) from the manager's group.
//!
//! The worker group is whichever group a launch template puts workers in;
//! the manager's is whichever group an instance uses. Rules are found in
//! every `ingress` list of every resource, so a future rule kind is checked
//! without changes here.

use std::collections::BTreeSet;

use serde_json::Value;

use super::Violation;
use crate::aws::instance::Instance;
use crate::aws::launch_template::LaunchTemplate;
use crate::engine::resource::{as_ref, Resource, Stack};
use crate::stack::{NODE_EXPORTER_PORT, WORKER_EXPORTER_PORT};

const SSH_PORT: i64 = 22;

pub fn check(stack: &Stack, out: &mut Vec<Violation>) {
    let groups_of = |kind: &str| -> BTreeSet<String> {
        stack
            .resources
            .iter()
            .filter(|r| r.kind == kind)
            .filter_map(|r| r.body.get("security_groups")?.as_array())
            .flatten()
            .filter_map(|g| as_ref(g).map(|(addr, _)| addr.to_string()))
            .collect()
    };
    let worker_groups = groups_of(LaunchTemplate::KIND);
    let manager_groups = groups_of(Instance::KIND);

    for r in &stack.resources {
        let Some(ingress) = r.body.get("ingress").and_then(Value::as_array) else {
            continue;
        };
        for rule in ingress {
            if admits_ssh(rule) {
                out.push(Violation {
                    rule: "no-ssh",
                    address: r.address.clone(),
                    message: format!(
                        "ingress {} admits SSH (port 22); use SSM Session Manager instead",
                        describe(rule)
                    ),
                });
            }
        }
        let group = r.body.get("group").and_then(as_ref).map(|(a, _)| a);
        if !group.is_some_and(|g| worker_groups.contains(g)) {
            continue;
        }
        for rule in ingress {
            if rule.get("cidr").is_some_and(|c| !c.is_null()) {
                out.push(Violation {
                    rule: "worker-no-cidr-ingress",
                    address: r.address.clone(),
                    message: format!(
                        "the worker security group admits {} by address range; workers take ingress only from the manager's group",
                        describe(rule)
                    ),
                });
            } else if !is_manager_scrape(rule, &manager_groups) {
                out.push(Violation {
                    rule: "worker-ingress",
                    address: r.address.clone(),
                    message: format!(
                        "the worker security group admits {}; only tcp {NODE_EXPORTER_PORT} and {WORKER_EXPORTER_PORT} from the manager's group are allowed",
                        describe(rule)
                    ),
                });
            }
        }
    }
}

fn protocol(rule: &Value) -> &str {
    rule.get("protocol").and_then(Value::as_str).unwrap_or("")
}

fn ports(rule: &Value) -> (i64, i64) {
    let port = |k: &str| rule.get(k).and_then(Value::as_i64).unwrap_or(0);
    (port("from_port"), port("to_port"))
}

fn admits_ssh(rule: &Value) -> bool {
    match protocol(rule) {
        "-1" | "all" => true,
        "tcp" | "6" => {
            let (from, to) = ports(rule);
            from <= SSH_PORT && SSH_PORT <= to
        }
        _ => false,
    }
}

fn is_manager_scrape(rule: &Value, manager_groups: &BTreeSet<String>) -> bool {
    let scrape_ports = [NODE_EXPORTER_PORT as i64, WORKER_EXPORTER_PORT as i64];
    let (from, to) = ports(rule);
    let source = rule.get("source").and_then(as_ref).map(|(a, _)| a);
    // With no instance declared there is no manager group to compare with;
    // any group source is then accepted (CIDRs are refused above).
    let from_manager =
        source.is_some_and(|s| manager_groups.is_empty() || manager_groups.contains(s));
    matches!(protocol(rule), "tcp" | "6")
        && from == to
        && scrape_ports.contains(&from)
        && from_manager
}

/// `tcp 22-22 from 0.0.0.0/0`, for messages.
fn describe(rule: &Value) -> String {
    let (from, to) = ports(rule);
    let what = match protocol(rule) {
        "-1" | "all" => "all traffic".to_string(),
        p if from == to => format!("{p} {from}"),
        p => format!("{p} {from}-{to}"),
    };
    let source = rule
        .get("cidr")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| {
            let s = rule.get("source")?;
            Some(as_ref(s).map_or_else(|| s.to_string(), |(a, _)| a.to_string()))
        })
        .unwrap_or_else(|| "anywhere".into());
    format!("{what} from {source}")
}

#[cfg(test)]
mod tests {
    use super::super::compute::fixture::{network, Mini};
    use super::*;
    use crate::aws::instance::MetadataOptions;
    use crate::aws::security_group_rules::Rule;

    fn violations(stack: &Stack) -> Vec<Violation> {
        let mut out = Vec::new();
        check(stack, &mut out);
        out
    }

    /// The platform with the given worker and manager ingress.
    fn with_ingress(
        worker: impl FnOnce(&Mini) -> Vec<Rule>,
        manager: impl FnOnce(&Mini) -> Vec<Rule>,
    ) -> Stack {
        let mut m = network();
        m.launch_template(MetadataOptions::imdsv2_only(1), "#!/bin/bash\n");
        m.instance(MetadataOptions::imdsv2_only(2), "#!/bin/bash\n");
        let (w, g) = (worker(&m), manager(&m));
        m.rules("worker", w);
        m.rules("manager", g);
        m.stack
    }

    fn scrapes(m: &Mini) -> Vec<Rule> {
        vec![
            Rule::tcp_from_group(9100, m.manager_sg.id()),
            Rule::tcp_from_group(9101, m.manager_sg.id()),
        ]
    }

    fn web(_: &Mini) -> Vec<Rule> {
        vec![Rule::tcp_from_cidr(443, "0.0.0.0/0")]
    }

    #[test]
    fn the_safe_stack_passes() {
        assert_eq!(violations(&Mini::safe().stack), vec![]);
    }

    #[test]
    fn ssh_from_anywhere_on_the_manager_is_refused() {
        let stack = with_ingress(scrapes, |_| vec![Rule::tcp_from_cidr(22, "0.0.0.0/0")]);
        let v = violations(&stack);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].rule, "no-ssh");
        assert_eq!(v[0].address, "security_group.manager.rules");
        assert!(v[0].message.contains("tcp 22 from 0.0.0.0/0"), "{}", v[0]);
    }

    #[test]
    fn a_port_range_spanning_22_is_ssh_too() {
        let stack = with_ingress(scrapes, |_| {
            vec![Rule {
                to_port: 1024,
                from_port: 1,
                ..Rule::tcp_from_cidr(0, "10.0.0.0/8")
            }]
        });
        let v = violations(&stack);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].rule, "no-ssh");
    }

    #[test]
    fn all_traffic_ingress_admits_ssh() {
        let stack = with_ingress(scrapes, |_| {
            vec![Rule {
                cidr: Some("10.0.0.0/8".into()),
                ..Rule::all_to_anywhere()
            }]
        });
        assert_eq!(
            violations(&stack)
                .iter()
                .map(|v| v.rule)
                .collect::<Vec<_>>(),
            vec!["no-ssh"]
        );
    }

    #[test]
    fn cidr_ingress_on_the_worker_group_is_refused() {
        let stack = with_ingress(
            |m| {
                let mut r = scrapes(m);
                r.push(Rule::tcp_from_cidr(9100, "10.20.0.0/16"));
                r
            },
            web,
        );
        let v = violations(&stack);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].rule, "worker-no-cidr-ingress");
        assert_eq!(v[0].address, "security_group.worker.rules");
    }

    #[test]
    fn worker_ingress_on_another_port_is_refused() {
        let stack = with_ingress(|m| vec![Rule::tcp_from_group(8080, m.manager_sg.id())], web);
        let v = violations(&stack);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].rule, "worker-ingress");
        assert!(
            v[0].message
                .contains("tcp 8080 from security_group.manager"),
            "{}",
            v[0]
        );
    }

    #[test]
    fn worker_ingress_from_a_group_other_than_the_managers_is_refused() {
        let stack = with_ingress(|m| vec![Rule::tcp_from_group(9100, m.worker_sg.id())], web);
        let v = violations(&stack);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].rule, "worker-ingress");
    }

    #[test]
    fn ssh_to_a_worker_from_the_manager_breaks_two_rules() {
        let stack = with_ingress(|m| vec![Rule::tcp_from_group(22, m.manager_sg.id())], web);
        let mut rules: Vec<&str> = violations(&stack).iter().map(|v| v.rule).collect();
        rules.sort();
        assert_eq!(rules, vec!["no-ssh", "worker-ingress"]);
    }
}
