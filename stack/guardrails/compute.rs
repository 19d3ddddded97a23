//! Guardrails: compute.
//!
//! - `imdsv2-required`: every launch template and instance requires IMDS
//!   tokens (`http_tokens = "required"`). With IMDSv1 one forged GET (an
//!   SSRF in anything the agent runs) hands out the instance's credentials.
//! - `user-data-size`: user data fits EC2's 16 KB once gzipped and
//!   base64-encoded, the form devstack sends. AWS counts the raw bytes; the
//!   encoded form errs on the safe side. Too big fails every launch.

use serde_json::Value;

use super::Violation;
use crate::aws::instance::{encode_user_data, Instance};
use crate::aws::launch_template::LaunchTemplate;
use crate::engine::resource::{Resource, Stack};
use crate::worker::userdata::USER_DATA_LIMIT;

/// Kinds that launch instances.
const LAUNCHING: [&str; 2] = [LaunchTemplate::KIND, Instance::KIND];

pub fn check(stack: &Stack, out: &mut Vec<Violation>) {
    for r in stack
        .resources
        .iter()
        .filter(|r| LAUNCHING.contains(&r.kind.as_str()))
    {
        let tokens = r
            .body
            .pointer("/metadata/http_tokens")
            .and_then(Value::as_str);
        if tokens != Some("required") {
            out.push(Violation {
                rule: "imdsv2-required",
                address: r.address.clone(),
                message: format!(
                    "instance metadata must require IMDSv2 tokens, but http_tokens is {}; use MetadataOptions::imdsv2_only",
                    tokens.map_or("unset".to_string(), |t| format!("\"{t}\""))
                ),
            });
        }
        let Some(script) = r.body.get("user_data").and_then(Value::as_str) else {
            continue;
        };
        match encode_user_data(script) {
            Ok(encoded) if encoded.len() > USER_DATA_LIMIT => out.push(Violation {
                rule: "user-data-size",
                address: r.address.clone(),
                message: format!(
                    "user data is {} bytes gzipped and base64-encoded; EC2 accepts at most {USER_DATA_LIMIT}: move logic out of the script",
                    encoded.len()
                ),
            }),
            Ok(_) => {}
            Err(e) => out.push(Violation {
                rule: "user-data-size",
                address: r.address.clone(),
                message: format!("user data cannot be encoded: {e}"),
            }),
        }
    }
}

/// A small stack made of the real resource types, for guardrail tests.
#[cfg(test)]
pub(super) mod fixture {
    use crate::aws::instance::{Instance, MetadataOptions};
    use crate::aws::launch_template::LaunchTemplate;
    use crate::aws::security_group::SecurityGroup;
    use crate::aws::security_group_rules::{Rule, SecurityGroupRules};
    use crate::aws::subnet::Subnet;
    use crate::aws::tags::Tags;
    use crate::aws::vpc::Vpc;
    use crate::engine::resource::{Handle, Stack};

    pub struct Mini {
        pub stack: Stack,
        pub subnet: Handle<Subnet>,
        pub worker_sg: Handle<SecurityGroup>,
        pub manager_sg: Handle<SecurityGroup>,
    }

    /// A VPC, a subnet, and the worker and manager security groups.
    pub fn network() -> Mini {
        let mut s = Stack::new("t", "test");
        let vpc = s.add(
            "vpc",
            Vpc {
                cidr: "10.0.0.0/16".into(),
                enable_dns_support: true,
                enable_dns_hostnames: true,
                tags: Tags::new(),
            },
        );
        let subnet = s.add(
            "subnet",
            Subnet {
                vpc: vpc.id(),
                cidr: "10.0.1.0/24".into(),
                availability_zone: "us-east-2a".into(),
                map_public_ip_on_launch: true,
                tags: Tags::new(),
            },
        );
        let sg = |name: &str| SecurityGroup {
            name: name.into(),
            description: name.into(),
            vpc: vpc.id(),
            tags: Tags::new(),
        };
        let worker_sg = s.add("security_group.worker", sg("worker"));
        let manager_sg = s.add("security_group.manager", sg("manager"));
        Mini {
            stack: s,
            subnet,
            worker_sg,
            manager_sg,
        }
    }

    impl Mini {
        /// The worker launch template, on the worker group.
        pub fn launch_template(&mut self, metadata: MetadataOptions, user_data: &str) {
            self.stack.add(
                "launch_template.worker",
                LaunchTemplate {
                    name: "t-worker".into(),
                    image: "ami-1".into(),
                    instance_type: "t3.xlarge".into(),
                    iam_instance_profile: "t-worker-profile".into(),
                    subnet: self.subnet.id(),
                    security_groups: vec![self.worker_sg.id()],
                    associate_public_ip: true,
                    metadata,
                    user_data: user_data.into(),
                    instance_tags: Tags::new(),
                    tags: Tags::new(),
                },
            );
        }

        /// The manager instance, on the manager group.
        pub fn instance(&mut self, metadata: MetadataOptions, user_data: &str) {
            self.stack.add(
                "instance.manager",
                Instance {
                    ami: "ami-2".into(),
                    instance_type: "t4g.small".into(),
                    subnet: self.subnet.id(),
                    security_groups: vec![self.manager_sg.id()],
                    iam_instance_profile: "t-manager-profile".into(),
                    metadata,
                    user_data: user_data.into(),
                    tags: Tags::new(),
                },
            );
        }

        /// The rule set of the worker (`worker`) or manager group.
        pub fn rules(&mut self, which: &str, ingress: Vec<Rule>) {
            let group = if which == "worker" {
                self.worker_sg.id()
            } else {
                self.manager_sg.id()
            };
            self.stack.add(
                &format!("security_group.{which}.rules"),
                SecurityGroupRules {
                    group,
                    ingress,
                    egress: vec![Rule::all_to_anywhere()],
                },
            );
        }

        /// Everything as the platform declares it: passes every guardrail.
        pub fn safe() -> Mini {
            let mut m = network();
            m.launch_template(MetadataOptions::imdsv2_only(1), "#!/bin/bash\ntrue\n");
            m.instance(MetadataOptions::imdsv2_only(2), "#!/bin/bash\ntrue\n");
            let (manager, worker) = (m.manager_sg.id(), m.worker_sg.id());
            m.rules(
                "worker",
                vec![
                    Rule::tcp_from_group(9100, manager.clone()),
                    Rule::tcp_from_group(9101, manager),
                ],
            );
            m.rules(
                "manager",
                vec![
                    Rule::tcp_from_cidr(443, "0.0.0.0/0"),
                    Rule::tcp_from_cidr(80, "0.0.0.0/0"),
                    Rule::tcp_from_group(9091, worker.clone()),
                    Rule::tcp_from_group(3100, worker),
                ],
            );
            m
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::{network, Mini};
    use super::*;
    use crate::aws::instance::MetadataOptions;

    fn violations(stack: &Stack) -> Vec<Violation> {
        let mut out = Vec::new();
        check(stack, &mut out);
        out
    }

    fn imdsv1() -> MetadataOptions {
        MetadataOptions {
            http_tokens: "optional".into(),
            ..MetadataOptions::imdsv2_only(1)
        }
    }

    #[test]
    fn the_safe_stack_passes() {
        assert_eq!(violations(&Mini::safe().stack), vec![]);
    }

    #[test]
    fn a_launch_template_allowing_imdsv1_is_refused() {
        let mut m = network();
        m.launch_template(imdsv1(), "#!/bin/bash\n");
        m.instance(MetadataOptions::imdsv2_only(2), "#!/bin/bash\n");
        let v = violations(&m.stack);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].rule, "imdsv2-required");
        assert_eq!(v[0].address, "launch_template.worker");
        assert!(v[0].to_string().contains("\"optional\""), "{}", v[0]);
    }

    #[test]
    fn an_instance_allowing_imdsv1_is_refused() {
        let mut m = network();
        m.launch_template(MetadataOptions::imdsv2_only(1), "#!/bin/bash\n");
        m.instance(imdsv1(), "#!/bin/bash\n");
        let v = violations(&m.stack);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].rule, "imdsv2-required");
        assert_eq!(v[0].address, "instance.manager");
    }

    #[test]
    fn user_data_over_16_kb_encoded_is_refused() {
        // Pseudo-random hex compresses only about 2:1, so 48 000 of them
        // stay well over 16 KB once gzipped and base64-encoded.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let noise: String = (0..48_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from_digit((x % 16) as u32, 16).unwrap_or('0')
            })
            .collect();
        let mut m = network();
        m.launch_template(MetadataOptions::imdsv2_only(1), "#!/bin/bash\n");
        m.instance(
            MetadataOptions::imdsv2_only(2),
            &format!("#!/bin/bash\n# {noise}\n"),
        );
        let v = violations(&m.stack);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].rule, "user-data-size");
        assert_eq!(v[0].address, "instance.manager");
        assert!(v[0].message.contains("16384"), "{}", v[0]);
    }

    #[test]
    fn large_but_compressible_user_data_passes() {
        let mut m = network();
        m.launch_template(
            MetadataOptions::imdsv2_only(1),
            &"echo the same line again\n".repeat(2000),
        );
        assert_eq!(violations(&m.stack), vec![]);
    }
}
