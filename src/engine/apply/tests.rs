//! Engine tests with a small in-memory provider: no AWS here, only the
//! ordering, journaling and failure rules of plan and apply.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::Serialize;
use serde_json::{json, Value};

use super::*;
use crate::engine::plan::{plan, PlanOptions};
use crate::engine::provider::{FindRequest, Kind, ProviderResult, ReadRequest, Schema};
use crate::engine::resource::{Handle, Ref, Resource, Stack};

#[derive(Default)]
struct World {
    next: u32,
    items: BTreeMap<String, Value>,
    log: Vec<String>,
    fail_create: Option<String>,
    /// `find` matches resources by their whole body (a natural key).
    findable: bool,
}

#[derive(Clone, Default)]
struct TestProvider(Arc<Mutex<World>>);

struct TestKind(Arc<Mutex<World>>, &'static str);

#[async_trait]
impl Kind for TestKind {
    fn name(&self) -> &'static str {
        self.1
    }
    fn schema(&self) -> Schema {
        Schema {
            force_new: &["cidr", "net"],
            ..Default::default()
        }
    }
    async fn read(&self, items: &[ReadRequest]) -> ProviderResult<Vec<Option<Live>>> {
        let w = self.0.lock().unwrap();
        Ok(items
            .iter()
            .map(|i| {
                w.items.get(&i.id).map(|a| Live {
                    id: i.id.clone(),
                    attrs: a.clone(),
                    outputs: BTreeMap::from([("id".into(), Value::from(i.id.clone()))]),
                })
            })
            .collect())
    }
    async fn find(&self, _m: &Meta, items: &[FindRequest]) -> ProviderResult<Vec<Option<Live>>> {
        let w = self.0.lock().unwrap();
        Ok(items
            .iter()
            .map(|i| {
                if !w.findable || crate::engine::resource::is_unknown(&i.desired) {
                    return None;
                }
                let (id, attrs) = w
                    .items
                    .iter()
                    .find(|(id, a)| id.starts_with(self.1) && **a == i.desired)?;
                Some(Live {
                    id: id.clone(),
                    attrs: attrs.clone(),
                    outputs: BTreeMap::from([("id".into(), Value::from(id.clone()))]),
                })
            })
            .collect())
    }
    async fn create(&self, _m: &Meta, address: &str, desired: &Value) -> ProviderResult<Live> {
        let mut w = self.0.lock().unwrap();
        if w.fail_create.as_deref() == Some(address) {
            return Err(ProviderError::new("InvalidParameterValue: boom"));
        }
        w.next += 1;
        let id = format!("{}-{}", self.1, w.next);
        w.items.insert(id.clone(), desired.clone());
        w.log.push(format!("create {address}"));
        Ok(Live {
            id: id.clone(),
            attrs: desired.clone(),
            outputs: BTreeMap::from([("id".into(), Value::from(id))]),
        })
    }
    async fn update(
        &self,
        _m: &Meta,
        address: &str,
        id: &str,
        _l: &Value,
        desired: &Value,
    ) -> ProviderResult<Live> {
        let mut w = self.0.lock().unwrap();
        w.items.insert(id.to_string(), desired.clone());
        w.log.push(format!("update {address}"));
        Ok(Live {
            id: id.to_string(),
            attrs: desired.clone(),
            outputs: BTreeMap::from([("id".into(), Value::from(id))]),
        })
    }
    async fn delete(&self, id: &str, _l: &Value) -> ProviderResult<()> {
        let mut w = self.0.lock().unwrap();
        w.items.remove(id);
        w.log.push(format!("delete {id}"));
        Ok(())
    }
}

impl Provider for TestProvider {
    fn kind(&self, name: &str) -> Option<Arc<dyn Kind>> {
        let n: &'static str = match name {
            "t_net" => "t_net",
            "t_host" => "t_host",
            _ => return None,
        };
        Some(Arc::new(TestKind(self.0.clone(), n)))
    }
}

struct NetId;
#[derive(Serialize)]
struct Net {
    cidr: String,
    tag: String,
}
impl Resource for Net {
    const KIND: &'static str = "t_net";
}
#[derive(Serialize)]
struct Host {
    net: Ref<NetId>,
}
impl Resource for Host {
    const KIND: &'static str = "t_host";
}
fn net_id(h: &Handle<Net>) -> Ref<NetId> {
    h.output_ref("id")
}

fn stack(cidr: &str, tag: &str, hosts: usize) -> Stack {
    let mut s = Stack::new("t", "dev");
    let net = s.add(
        "net",
        Net {
            cidr: cidr.into(),
            tag: tag.into(),
        },
    );
    for i in 0..hosts {
        s.add(&format!("host.{i}"), Host { net: net_id(&net) });
    }
    s.output("net_id", net_id(&net));
    s
}

/// Records every snapshot and checks its integrity at each step.
#[derive(Default)]
struct CheckingJournal {
    writes: usize,
}
#[async_trait]
impl Journal for CheckingJournal {
    async fn record(&mut self, snapshot: &mut Snapshot) -> anyhow::Result<()> {
        snapshot.verify_integrity().map_err(anyhow::Error::msg)?;
        snapshot.serial += 1;
        self.writes += 1;
        Ok(())
    }
}

async fn converge(p: &TestProvider, s: &Stack, snap: &mut Snapshot) -> ApplyReport {
    let pl = plan(s, Some(snap), p, &PlanOptions::default())
        .await
        .unwrap();
    let mut j = CheckingJournal::default();
    apply(&pl, snap, p, &mut j, &Silent, 4).await
}

#[tokio::test]
async fn apply_from_empty_creates_in_dependency_order_and_journals_each_step() {
    let p = TestProvider::default();
    let mut snap = Snapshot::empty("t", "dev");
    let s = stack("10.0.0.0/16", "a", 3);
    let pl = plan(&s, Some(&snap), &p, &PlanOptions::default())
        .await
        .unwrap();
    assert_eq!(pl.summary().add, 4);
    let mut j = CheckingJournal::default();
    let r = apply(&pl, &mut snap, &p, &mut j, &Silent, 4).await;
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.done.len(), 4, "every step done, and done means recorded");
    assert!(
        (1..=5).contains(&j.writes),
        "group commit: at most one write per step, outputs riding on the last: {}",
        j.writes
    );
    let log = p.0.lock().unwrap().log.clone();
    assert_eq!(log[0], "create net");
    assert_eq!(snap.outputs["net_id"], json!("t_net-1"));
    assert_eq!(snap.resources["host.0"].attrs["net"], json!("t_net-1"));
    let again = plan(&s, Some(&snap), &p, &PlanOptions::default())
        .await
        .unwrap();
    assert!(!again.has_changes(), "second plan is a no-op");
}

/// Regression: a resource found by natural key (an inline policy by its
/// role's name) was looked for while what it references was still being
/// looked for, so it was planned as a create and applied twice.
#[tokio::test]
async fn lost_state_adopts_dependents_found_by_what_they_reference() {
    let p = TestProvider::default();
    p.0.lock().unwrap().findable = true;
    let s = stack("10.0.0.0/16", "a", 1);
    let mut snap = Snapshot::empty("t", "dev");
    assert!(converge(&p, &s, &mut snap).await.ok());
    let lost = Snapshot::empty("t", "dev");
    let pl = plan(&s, Some(&lost), &p, &PlanOptions::default())
        .await
        .unwrap();
    assert_eq!(pl.summary().add, 0, "{:?}", pl.resources);
    assert_eq!(pl.summary().adopt, 2);
}

#[tokio::test]
async fn replacement_cascades_to_dependents_and_deletes_them_first() {
    let p = TestProvider::default();
    let mut snap = Snapshot::empty("t", "dev");
    assert!(converge(&p, &stack("10.0.0.0/16", "a", 2), &mut snap)
        .await
        .ok());
    p.0.lock().unwrap().log.clear();
    let s2 = stack("10.1.0.0/16", "a", 2);
    let pl = plan(&s2, Some(&snap), &p, &PlanOptions::default())
        .await
        .unwrap();
    assert_eq!(
        pl.summary().replace,
        3,
        "net replaced, hosts follow: {pl:#?}"
    );
    let mut j = CheckingJournal::default();
    assert!(apply(&pl, &mut snap, &p, &mut j, &Silent, 4).await.ok());
    let log = p.0.lock().unwrap().log.clone();
    let pos = |s: &str| log.iter().position(|l| l == s).unwrap();
    assert!(pos("delete t_host-2") < pos("delete t_net-1"));
    assert!(pos("delete t_host-3") < pos("delete t_net-1"));
    assert!(pos("delete t_net-1") < pos("create net"));
    assert!(pos("create net") < pos("create host.0"));
}

#[tokio::test]
async fn first_failure_stops_scheduling_and_skips_dependents() {
    let p = TestProvider::default();
    p.0.lock().unwrap().fail_create = Some("net".into());
    let mut snap = Snapshot::empty("t", "dev");
    let r = converge(&p, &stack("10.0.0.0/16", "a", 2), &mut snap).await;
    let (addr, op, err) = r.failure.clone().unwrap();
    assert_eq!((addr.as_str(), op), ("net", Op::Create));
    assert!(err.contains("boom"));
    assert_eq!(r.skipped.len(), 2, "both hosts skipped, not failed");
    assert!(snap.resources.is_empty());
}

#[tokio::test]
async fn drift_is_reported_apart_from_code_changes_and_repaired() {
    let p = TestProvider::default();
    let mut snap = Snapshot::empty("t", "dev");
    let s = stack("10.0.0.0/16", "a", 0);
    assert!(converge(&p, &s, &mut snap).await.ok());
    let id = snap.resources["net"].id.clone();
    p.0.lock().unwrap().items.get_mut(&id).unwrap()["tag"] = json!("changed-by-hand");
    let pl = plan(&s, Some(&snap), &p, &PlanOptions::default())
        .await
        .unwrap();
    let net = &pl.resources[0];
    assert_eq!(net.action, Action::Update);
    assert!(net.is_drift());
    assert_eq!(pl.summary().drifted, 1);
    assert!(converge(&p, &s, &mut snap).await.ok());
    assert_eq!(p.0.lock().unwrap().items[&id]["tag"], json!("a"));
}

#[tokio::test]
async fn removed_resources_are_deleted_before_what_they_depend_on() {
    let p = TestProvider::default();
    let mut snap = Snapshot::empty("t", "dev");
    assert!(converge(&p, &stack("10.0.0.0/16", "a", 1), &mut snap)
        .await
        .ok());
    let destroy = PlanOptions {
        destroy: true,
        ..Default::default()
    };
    let pl = plan(&stack("10.0.0.0/16", "a", 1), Some(&snap), &p, &destroy)
        .await
        .unwrap();
    assert_eq!(pl.summary().destroy, 2);
    let mut j = CheckingJournal::default();
    assert!(apply(&pl, &mut snap, &p, &mut j, &Silent, 4).await.ok());
    assert!(snap.resources.is_empty());
    assert!(p.0.lock().unwrap().items.is_empty());
}

#[tokio::test]
async fn protected_resources_are_not_destroyed_without_being_named() {
    let p = TestProvider::default();
    let mut s = Stack::new("t", "dev");
    s.add_protected(
        "net",
        Net {
            cidr: "10.0.0.0/16".into(),
            tag: "a".into(),
        },
    );
    let mut snap = Snapshot::empty("t", "dev");
    assert!(converge(&p, &s, &mut snap).await.ok());
    let destroy = PlanOptions {
        destroy: true,
        ..Default::default()
    };
    let err = plan(&s, Some(&snap), &p, &destroy).await.unwrap_err();
    assert!(err.to_string().contains("--allow-destroy net"), "{err}");
    let allowed = PlanOptions {
        destroy: true,
        allow_destroy: ["net".to_string()].into(),
        ..Default::default()
    };
    assert!(plan(&s, Some(&snap), &p, &allowed).await.is_ok());
}

/// A journal whose writes block until the test lets them through.
struct GatedJournal {
    gate: std::sync::Arc<tokio::sync::Semaphore>,
    written: std::sync::Arc<std::sync::Mutex<Vec<Snapshot>>>,
}
#[async_trait]
impl Journal for GatedJournal {
    async fn record(&mut self, snapshot: &mut Snapshot) -> anyhow::Result<()> {
        self.gate.acquire().await?.forget();
        snapshot.verify_integrity().map_err(anyhow::Error::msg)?;
        snapshot.serial += 1;
        self.written.lock().unwrap().push(snapshot.clone());
        Ok(())
    }
}

/// Group commit: a dependent starts while its dependency's state write is
/// still in flight, and the apply returns only once state holds every step.
#[tokio::test]
async fn dependents_do_not_wait_for_state_writes_but_apply_waits_for_the_last() {
    let p = TestProvider::default();
    let mut snap = Snapshot::empty("t", "dev");
    let s = stack("10.0.0.0/16", "a", 2);
    let pl = plan(&s, Some(&snap), &p, &PlanOptions::default())
        .await
        .unwrap();
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let written = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut j = GatedJournal {
        gate: gate.clone(),
        written: written.clone(),
    };
    let probe = p.0.clone();
    let opener = async {
        // Let writes through only once both hosts were created: had the
        // apply waited for the net's write, it would never get here.
        for _ in 0..2000 {
            if probe
                .lock()
                .unwrap()
                .log
                .iter()
                .filter(|l| l.starts_with("create host"))
                .count()
                == 2
            {
                gate.add_permits(100);
                return true;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        gate.add_permits(100);
        false
    };
    let (r, opened) = futures::join!(apply(&pl, &mut snap, &p, &mut j, &Silent, 4), opener);
    assert!(opened, "the hosts waited for the net's state write");
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.done.len(), 3);
    let last = written
        .lock()
        .unwrap()
        .last()
        .cloned()
        .expect("state was written");
    assert_eq!(last.resources.len(), 3, "the last write holds every step");
    assert_eq!(last.outputs["net_id"], json!("t_net-1"), "and the outputs");
    assert_eq!(last.serial, snap.serial);
}

/// Untracked duplicates are deleted in the stack's reverse order, like any
/// removal: a duplicate host inside a duplicate net goes first.
#[test]
fn twins_are_deleted_dependents_first() {
    use crate::engine::plan::{twin_address, Action, Plan, ResourceChange, PLAN_FORMAT};
    let change =
        |address: &str, action: Action, deps: &[&str], twin_of: Option<&str>| ResourceChange {
            address: address.into(),
            kind: "test_net".into(),
            action,
            id: Some(format!("id-{address}")),
            changes: vec![],
            before: None,
            after: None,
            config: None,
            prior_outputs: BTreeMap::new(),
            deps: deps.iter().map(|d| d.to_string()).collect(),
            prior_deps: vec![],
            protected: false,
            adopted: false,
            reason: None,
            twin_of: twin_of.map(str::to_string),
        };
    let (net_twin, host_twin) = (twin_address("net", "n2"), twin_address("host", "h2"));
    let plan = Plan {
        format_version: PLAN_FORMAT,
        stack: "t".into(),
        env: "dev".into(),
        lineage: None,
        serial: 0,
        destroy: false,
        resources: vec![
            change("net", Action::NoOp, &[], None),
            change("host", Action::NoOp, &["net"], None),
            change(&net_twin, Action::Delete, &[], Some("net")),
            change(&host_twin, Action::Delete, &[], Some("host")),
        ],
        data: BTreeMap::new(),
        outputs: BTreeMap::new(),
    };
    let steps = steps(&plan);
    let index = |a: &str| steps.iter().position(|s| s.address == a).unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[index(&net_twin)].after, vec![index(&host_twin)]);
    assert!(steps[index(&host_twin)].after.is_empty());
}
