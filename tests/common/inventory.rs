//! The exact-resources check that crash and fault tests end with: the
//! endpoint holds exactly what the stack declares (no duplicate, nothing
//! orphaned), and state records every declared address exactly once, with
//! the id that is live.
//!
//! The count is independent of the product's own `read`/`find` code: it
//! lists everything of a kind at the endpoint through the SDK. Every test has
//! a fresh moto, so whatever is there besides moto's defaults (the default
//! VPC with its subnets, main route table and default group) and the state
//! table was made by the applies under test; a leaked duplicate shows up
//! even if it lost its tags. On top of that, every EC2 resource carrying
//! this stack's `devstack:*` ownership tags must be the one resource state
//! records for its address.
//!
//! The kinds are the stack's own (`devstack::stack::stack`), not a list
//! kept here: a kind without a counter below is accepted only if the tag
//! check covers it (an EC2 resource tagged with its address); otherwise the
//! check fails and says to add a counter.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use devstack::engine::resource::Stack;
use devstack::engine::snapshot::Snapshot;
use devstack::stack::env::Env;
use devstack::state::StateKey;

use super::Moto;

/// The state table `devstack init` creates by default.
pub const STATE_TABLE: &str = "devstack-state";

/// What was checked, for the test's log line.
#[derive(Debug, Clone)]
pub struct Inventory {
    /// Declared (and found) resources per kind.
    pub kinds: BTreeMap<String, usize>,
    /// EC2 resources carrying this stack's ownership tags.
    pub tagged: usize,
}

impl Inventory {
    pub fn resources(&self) -> usize {
        self.kinds.values().sum()
    }
}

/// How live resources of one kind are compared with the stack and state.
enum LiveSet {
    /// Every live resource of the kind, by AWS id: the count must equal the
    /// declared count and the ids must be exactly the ids state records.
    Exact(Vec<String>),
    /// Every live resource of the kind (ids in a format state may not
    /// share, e.g. name vs ARN): the count must equal the declared count.
    Count(usize),
    /// Resources that live on others (a rule set on its group): each id
    /// state records must be among these. The plan's no-op check compares
    /// their content.
    Within(Vec<String>),
}

/// The stack `devstack` builds for environment `env` (e.g. "prod").
pub fn declared(env: &str) -> Stack {
    let env = Env::load(env).unwrap_or_else(|e| panic!("environment {env}: {e}"));
    devstack::stack::stack(&env)
}

/// The state snapshot for `stack`, read from the default DynamoDB store.
pub async fn state(moto: &Moto, stack: &Stack) -> Option<Snapshot> {
    let cfg = moto.sdk_config().await;
    let store = devstack::state::open(&format!("dynamodb:{STATE_TABLE}"), Some(&cfg))
        .await
        .expect("open the state store");
    let key = StateKey {
        stack: stack.name.clone(),
        env: stack.env.clone(),
    };
    store.load(&key).await.expect("load state")
}

/// Checks that the endpoint and state hold exactly environment `env`'s
/// stack. `dir` is where `devstack state list` runs. Err lists every
/// discrepancy, then what was found.
pub async fn check(moto: &Moto, env: &str, dir: &Path) -> Result<Inventory, String> {
    let stack = declared(env);
    let mut errors: Vec<String> = Vec::new();

    // State: every declared address exactly once, with its kind; outputs.
    let snap = state(moto, &stack)
        .await
        .ok_or_else(|| "no state was recorded".to_string())?;
    if let Err(e) = snap.verify_integrity() {
        errors.push(format!("state fails its integrity check: {e}"));
    }
    let want: BTreeMap<&str, &str> = stack
        .resources
        .iter()
        .map(|r| (r.address.as_str(), r.kind.as_str()))
        .collect();
    for (addr, kind) in &want {
        match snap.resources.get(*addr) {
            None => errors.push(format!("state lacks {addr}")),
            Some(r) if r.kind != *kind => {
                errors.push(format!("state records {addr} as {}, not {kind}", r.kind))
            }
            Some(_) => {}
        }
    }
    for addr in snap.resources.keys() {
        if !want.contains_key(addr.as_str()) {
            errors.push(format!(
                "state records {addr}, which the stack does not declare"
            ));
        }
    }
    let outputs: BTreeSet<&str> = stack.outputs.iter().map(|o| o.name.as_str()).collect();
    let recorded: BTreeSet<&str> = snap.outputs.keys().map(String::as_str).collect();
    if outputs != recorded {
        errors.push(format!(
            "state outputs are {recorded:?}, the stack declares {outputs:?}"
        ));
    }
    errors.extend(state_list_errors(moto, dir, &want));

    // Live resources per kind, against the stack and state.
    let cfg = moto.sdk_config().await;
    let live = Live::new(&cfg);
    let tagged = live.owned_ec2(&stack).await;
    let mut kinds: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for r in &stack.resources {
        kinds.entry(r.kind.clone()).or_default().push(&r.address);
    }
    let mut found = String::new();
    for (kind, addresses) in &kinds {
        let state_ids: Vec<String> = addresses
            .iter()
            .filter_map(|a| snap.resources.get(*a).map(|r| r.id.clone()))
            .collect();
        let Some(set) = live.of_kind(kind).await else {
            let covered = addresses.iter().all(|a| {
                snap.resources
                    .get(*a)
                    .is_some_and(|r| tagged.get(*a).is_some_and(|ids| ids.contains(&r.id)))
            });
            if !covered {
                errors.push(format!(
                    "no live counter for kind {kind} in tests/common/inventory.rs, and its \
                     resources carry no devstack EC2 tags: add a counter to Live::of_kind"
                ));
            }
            found.push_str(&format!("  {kind}: (by tags only)\n"));
            continue;
        };
        let n = addresses.len();
        match set {
            LiveSet::Exact(mut ids) => {
                ids.sort();
                found.push_str(&format!("  {kind}: {ids:?}\n"));
                if ids.len() != n {
                    errors.push(format!(
                        "{kind}: {} live, the stack declares {n} ({})",
                        ids.len(),
                        addresses.join(", ")
                    ));
                }
                let mut recorded = state_ids.clone();
                recorded.sort();
                if ids != recorded {
                    errors.push(format!(
                        "{kind}: live ids {ids:?} are not the ids state records {recorded:?}"
                    ));
                }
            }
            LiveSet::Count(count) => {
                found.push_str(&format!("  {kind}: {count}\n"));
                if count != n {
                    errors.push(format!(
                        "{kind}: {count} live, the stack declares {n} ({})",
                        addresses.join(", ")
                    ));
                }
            }
            LiveSet::Within(ids) => {
                found.push_str(&format!("  {kind}: within {ids:?}\n"));
                let distinct: BTreeSet<&String> = state_ids.iter().collect();
                if distinct.len() != state_ids.len() {
                    errors.push(format!("{kind}: state ids repeat: {state_ids:?}"));
                }
                for id in &state_ids {
                    if !ids.contains(id) {
                        errors.push(format!("{kind}: state records {id}, which is not live"));
                    }
                }
            }
        }
    }

    // Ownership tags: one resource per address and type, the one in state.
    let mut tagged_count = 0;
    for (addr, ids) in &tagged {
        tagged_count += ids.len();
        let Some(rec) = snap.resources.get(addr) else {
            errors.push(format!(
                "{ids:?} carry devstack:address={addr}, which state does not record (orphaned)"
            ));
            continue;
        };
        if !ids.contains(&rec.id) {
            errors.push(format!(
                "{addr}: state records {}, but {ids:?} carry its tags",
                rec.id
            ));
        }
    }
    for (addr, types) in live.owned_ec2_types(&stack).await {
        for (rtype, ids) in types {
            if ids.len() > 1 {
                errors.push(format!(
                    "{addr}: {} {rtype} resources carry its tags (duplicates): {ids:?}",
                    ids.len()
                ));
            }
        }
    }

    if errors.is_empty() {
        Ok(Inventory {
            kinds: kinds.into_iter().map(|(k, a)| (k, a.len())).collect(),
            tagged: tagged_count,
        })
    } else {
        Err(format!(
            "{}\nfound:\n{found}state:\n{}",
            errors.join("\n"),
            snap.resources
                .iter()
                .map(|(a, r)| format!("  {a} {} {}\n", r.kind, r.id))
                .collect::<String>()
        ))
    }
}

/// `devstack state list` names every declared address exactly once.
fn state_list_errors(moto: &Moto, dir: &Path, want: &BTreeMap<&str, &str>) -> Vec<String> {
    let out = super::devstack(moto, dir)
        .args(["state", "list"])
        .output()
        .expect("run devstack state list");
    if !out.status.success() {
        return vec![format!(
            "devstack state list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )];
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let addr = line.split_whitespace().next().unwrap_or_default();
        *seen.entry(addr).or_default() += 1;
    }
    let mut errors = Vec::new();
    for (addr, n) in &seen {
        if *n != 1 || !want.contains_key(addr) {
            errors.push(format!("state list shows {addr} {n} time(s)"));
        }
    }
    for addr in want.keys() {
        if !seen.contains_key(addr) {
            errors.push(format!("state list lacks {addr}"));
        }
    }
    errors
}

/// Clients for listing what is live.
struct Live {
    ec2: aws_sdk_ec2::Client,
    iam: aws_sdk_iam::Client,
    ddb: aws_sdk_dynamodb::Client,
    logs: aws_sdk_cloudwatchlogs::Client,
    ssm: aws_sdk_ssm::Client,
    secrets: aws_sdk_secretsmanager::Client,
}

/// Panics with the operation's name: the check cannot go on without it.
fn ok<T, E: std::fmt::Debug>(what: &str, r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("inventory: {what}: {e:?}"))
}

impl Live {
    fn new(cfg: &aws_config::SdkConfig) -> Live {
        Live {
            ec2: aws_sdk_ec2::Client::new(cfg),
            iam: aws_sdk_iam::Client::new(cfg),
            ddb: aws_sdk_dynamodb::Client::new(cfg),
            logs: aws_sdk_cloudwatchlogs::Client::new(cfg),
            ssm: aws_sdk_ssm::Client::new(cfg),
            secrets: aws_sdk_secretsmanager::Client::new(cfg),
        }
    }

    /// The live resources of `kind`, or None for a kind this file does not
    /// know how to list.
    async fn of_kind(&self, kind: &str) -> Option<LiveSet> {
        Some(match kind {
            "aws_vpc" => LiveSet::Exact(
                self.vpcs()
                    .await
                    .into_iter()
                    .filter(|v| v.is_default() != Some(true))
                    .filter_map(|v| v.vpc_id().map(str::to_string))
                    .collect(),
            ),
            "aws_subnet" => {
                let defaults = self.default_vpcs().await;
                let out = ok("DescribeSubnets", self.ec2.describe_subnets().send().await);
                LiveSet::Exact(
                    out.subnets()
                        .iter()
                        .filter(|s| !s.vpc_id().is_some_and(|v| defaults.contains(v)))
                        .filter_map(|s| s.subnet_id().map(str::to_string))
                        .collect(),
                )
            }
            "aws_internet_gateway" => {
                let defaults = self.default_vpcs().await;
                let out = ok(
                    "DescribeInternetGateways",
                    self.ec2.describe_internet_gateways().send().await,
                );
                LiveSet::Exact(
                    out.internet_gateways()
                        .iter()
                        .filter(|g| {
                            !g.attachments()
                                .iter()
                                .any(|a| a.vpc_id().is_some_and(|v| defaults.contains(v)))
                        })
                        .filter_map(|g| g.internet_gateway_id().map(str::to_string))
                        .collect(),
                )
            }
            "aws_route_table" => LiveSet::Exact(
                self.route_tables()
                    .await
                    .iter()
                    .filter(|t| !t.associations().iter().any(|a| a.main() == Some(true)))
                    .filter_map(|t| t.route_table_id().map(str::to_string))
                    .collect(),
            ),
            "aws_route_table_association" => LiveSet::Exact(
                self.route_tables()
                    .await
                    .iter()
                    .flat_map(|t| t.associations())
                    .filter(|a| a.main() != Some(true) && a.subnet_id().is_some())
                    .filter_map(|a| a.route_table_association_id().map(str::to_string))
                    .collect(),
            ),
            "aws_security_group" => LiveSet::Exact(self.groups().await),
            "aws_security_group_rules" => LiveSet::Within(self.groups().await),
            "aws_instance" => {
                let out = ok(
                    "DescribeInstances",
                    self.ec2.describe_instances().send().await,
                );
                LiveSet::Exact(
                    out.reservations()
                        .iter()
                        .flat_map(|r| r.instances())
                        .filter(|i| {
                            !i.state().and_then(|s| s.name()).is_some_and(|s| {
                                matches!(s.as_str(), "terminated" | "shutting-down")
                            })
                        })
                        .filter_map(|i| i.instance_id().map(str::to_string))
                        .collect(),
                )
            }
            "aws_ebs_volume" | "aws_volume" => LiveSet::Exact(
                self.volumes()
                    .await
                    .iter()
                    .filter_map(|v| v.volume_id().map(str::to_string))
                    .collect(),
            ),
            "aws_volume_attachment" => LiveSet::Count(
                self.volumes()
                    .await
                    .iter()
                    .map(|v| v.attachments().len())
                    .sum(),
            ),
            "aws_eip" => LiveSet::Exact(
                self.addresses()
                    .await
                    .iter()
                    .filter_map(|a| a.allocation_id().map(str::to_string))
                    .collect(),
            ),
            "aws_eip_association" => LiveSet::Count(
                self.addresses()
                    .await
                    .iter()
                    .filter(|a| a.association_id().is_some())
                    .count(),
            ),
            "aws_launch_template" => {
                let out = ok(
                    "DescribeLaunchTemplates",
                    self.ec2.describe_launch_templates().send().await,
                );
                LiveSet::Exact(
                    out.launch_templates()
                        .iter()
                        .filter_map(|t| t.launch_template_id().map(str::to_string))
                        .collect(),
                )
            }
            "aws_key_pair" => {
                let out = ok(
                    "DescribeKeyPairs",
                    self.ec2.describe_key_pairs().send().await,
                );
                LiveSet::Count(out.key_pairs().len())
            }
            // IAM is global; moto starts with none of these (AWS managed
            // policies are excluded by listing local ones only).
            "aws_iam_role" => LiveSet::Count(self.roles().await.len()),
            "aws_iam_instance_profile" => {
                let out = ok(
                    "ListInstanceProfiles",
                    self.iam
                        .list_instance_profiles()
                        .max_items(1000)
                        .send()
                        .await,
                );
                LiveSet::Count(out.instance_profiles().len())
            }
            "aws_iam_policy" => {
                let out = ok(
                    "ListPolicies",
                    self.iam
                        .list_policies()
                        .scope(aws_sdk_iam::types::PolicyScopeType::Local)
                        .max_items(1000)
                        .send()
                        .await,
                );
                LiveSet::Count(out.policies().len())
            }
            "aws_iam_role_policy" => {
                let mut n = 0;
                for role in self.roles().await {
                    let out = ok(
                        "ListRolePolicies",
                        self.iam
                            .list_role_policies()
                            .role_name(&role)
                            .max_items(1000)
                            .send()
                            .await,
                    );
                    n += out.policy_names().len();
                }
                LiveSet::Count(n)
            }
            "aws_iam_role_policy_attachment" => {
                let mut n = 0;
                for role in self.roles().await {
                    let out = ok(
                        "ListAttachedRolePolicies",
                        self.iam
                            .list_attached_role_policies()
                            .role_name(&role)
                            .max_items(1000)
                            .send()
                            .await,
                    );
                    n += out.attached_policies().len();
                }
                LiveSet::Count(n)
            }
            "aws_dynamodb_table" => {
                let out = ok("ListTables", self.ddb.list_tables().send().await);
                LiveSet::Count(
                    out.table_names()
                        .iter()
                        .filter(|t| t.as_str() != STATE_TABLE)
                        .count(),
                )
            }
            "aws_cloudwatch_log_group" => {
                let out = ok(
                    "DescribeLogGroups",
                    self.logs.describe_log_groups().send().await,
                );
                LiveSet::Count(out.log_groups().len())
            }
            "aws_ssm_parameter" => {
                let out = ok(
                    "DescribeParameters",
                    self.ssm.describe_parameters().max_results(50).send().await,
                );
                LiveSet::Count(out.parameters().len())
            }
            "aws_secretsmanager_secret" => {
                let out = ok("ListSecrets", self.secrets.list_secrets().send().await);
                LiveSet::Count(out.secret_list().len())
            }
            _ => return None,
        })
    }

    async fn vpcs(&self) -> Vec<aws_sdk_ec2::types::Vpc> {
        ok("DescribeVpcs", self.ec2.describe_vpcs().send().await)
            .vpcs()
            .to_vec()
    }

    async fn default_vpcs(&self) -> BTreeSet<String> {
        self.vpcs()
            .await
            .into_iter()
            .filter(|v| v.is_default() == Some(true))
            .filter_map(|v| v.vpc_id().map(str::to_string))
            .collect()
    }

    /// Route tables outside the default VPC.
    async fn route_tables(&self) -> Vec<aws_sdk_ec2::types::RouteTable> {
        let defaults = self.default_vpcs().await;
        ok(
            "DescribeRouteTables",
            self.ec2.describe_route_tables().send().await,
        )
        .route_tables()
        .iter()
        .filter(|t| !t.vpc_id().is_some_and(|v| defaults.contains(v)))
        .cloned()
        .collect()
    }

    /// Security groups outside the default VPC, without each VPC's
    /// `default` group.
    async fn groups(&self) -> Vec<String> {
        let defaults = self.default_vpcs().await;
        ok(
            "DescribeSecurityGroups",
            self.ec2.describe_security_groups().send().await,
        )
        .security_groups()
        .iter()
        .filter(|g| !g.vpc_id().is_some_and(|v| defaults.contains(v)))
        .filter(|g| g.group_name() != Some("default"))
        .filter_map(|g| g.group_id().map(str::to_string))
        .collect()
    }

    /// Volumes that are not an instance's root volume (those come and go
    /// with their instance).
    ///
    /// AWS marks a root volume's attachment `DeleteOnTermination` in
    /// DescribeVolumes; moto leaves that field out there and reports it
    /// only in the instance's block device mappings, so both are asked.
    async fn volumes(&self) -> Vec<aws_sdk_ec2::types::Volume> {
        let out = ok(
            "DescribeInstances",
            self.ec2.describe_instances().send().await,
        );
        let roots: BTreeSet<String> = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .flat_map(|i| i.block_device_mappings())
            .filter_map(|m| m.ebs())
            .filter(|e| e.delete_on_termination() == Some(true))
            .filter_map(|e| e.volume_id().map(str::to_string))
            .collect();
        ok("DescribeVolumes", self.ec2.describe_volumes().send().await)
            .volumes()
            .iter()
            .filter(|v| !v.volume_id().is_some_and(|id| roots.contains(id)))
            .filter(|v| {
                !v.attachments()
                    .iter()
                    .any(|a| a.delete_on_termination() == Some(true))
            })
            .cloned()
            .collect()
    }

    async fn addresses(&self) -> Vec<aws_sdk_ec2::types::Address> {
        ok(
            "DescribeAddresses",
            self.ec2.describe_addresses().send().await,
        )
        .addresses()
        .to_vec()
    }

    async fn roles(&self) -> Vec<String> {
        ok(
            "ListRoles",
            self.iam.list_roles().max_items(1000).send().await,
        )
        .roles()
        .iter()
        .filter(|r| !r.path().starts_with("/aws-service-role/"))
        .map(|r| r.role_name().to_string())
        .collect()
    }

    /// Every EC2 resource tagged as this stack's, by the address it claims:
    /// (resource type, id) pairs.
    async fn owned_ec2_types(
        &self,
        stack: &Stack,
    ) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
        use devstack::aws::tags::{ADDRESS_TAG, ENV_TAG, STACK_TAG};
        let mut by_resource: BTreeMap<String, (String, BTreeMap<String, String>)> = BTreeMap::new();
        let mut token: Option<String> = None;
        loop {
            let out = ok(
                "DescribeTags",
                self.ec2
                    .describe_tags()
                    .filters(
                        aws_sdk_ec2::types::Filter::builder()
                            .name("key")
                            .values(STACK_TAG)
                            .values(ENV_TAG)
                            .values(ADDRESS_TAG)
                            .build(),
                    )
                    .set_next_token(token.clone())
                    .send()
                    .await,
            );
            for t in out.tags() {
                let (Some(id), Some(key)) = (t.resource_id(), t.key()) else {
                    continue;
                };
                let entry = by_resource.entry(id.to_string()).or_insert_with(|| {
                    (
                        t.resource_type()
                            .map(|r| r.as_str().to_string())
                            .unwrap_or_default(),
                        BTreeMap::new(),
                    )
                });
                entry
                    .1
                    .insert(key.to_string(), t.value().unwrap_or_default().to_string());
            }
            token = out
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        // WHERE MOTO DIFFERS FROM AWS: moto keeps a deleted resource's tags
        // in DescribeTags; AWS drops them with the resource. Only resources
        // that still exist count (the kinds a plan deletes as duplicates).
        let mut existing: BTreeSet<String> = BTreeSet::new();
        existing.extend(
            self.vpcs()
                .await
                .iter()
                .filter_map(|v| v.vpc_id().map(str::to_string)),
        );
        let subnets = ok("DescribeSubnets", self.ec2.describe_subnets().send().await);
        existing.extend(
            subnets
                .subnets()
                .iter()
                .filter_map(|x| x.subnet_id().map(str::to_string)),
        );
        let igws = ok(
            "DescribeInternetGateways",
            self.ec2.describe_internet_gateways().send().await,
        );
        existing.extend(
            igws.internet_gateways()
                .iter()
                .filter_map(|g| g.internet_gateway_id().map(str::to_string)),
        );
        existing.extend(
            self.volumes()
                .await
                .iter()
                .filter_map(|v| v.volume_id().map(str::to_string)),
        );
        let checked = ["vpc", "subnet", "internet-gateway", "volume"];
        by_resource
            .retain(|id, (rtype, _)| !checked.contains(&rtype.as_str()) || existing.contains(id));
        let mut owned: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
        for (id, (rtype, tags)) in by_resource {
            let ours =
                tags.get(STACK_TAG) == Some(&stack.name) && tags.get(ENV_TAG) == Some(&stack.env);
            if let (true, Some(addr)) = (ours, tags.get(ADDRESS_TAG)) {
                owned
                    .entry(addr.clone())
                    .or_default()
                    .entry(rtype)
                    .or_default()
                    .push(id);
            }
        }
        owned
    }

    /// Every EC2 resource tagged as this stack's: address -> ids.
    async fn owned_ec2(&self, stack: &Stack) -> BTreeMap<String, Vec<String>> {
        self.owned_ec2_types(stack)
            .await
            .into_iter()
            .map(|(addr, types)| (addr, types.into_values().flatten().collect()))
            .collect()
    }
}
