//! The worker's permission surface on the runs table. Its role may only
//! `dynamodb:GetItem` and `dynamodb:UpdateItem` there (platform.md §1), and
//! what the worker asks of the table is the release of its lock, so every
//! release a worker can meet must need nothing more: a plain one, one
//! whose slot was taken over meanwhile, one of a lock that names no slot,
//! one of a lock with no history row, one that is not its to make.
//!
//! The worker's registry talks to moto through bench/proxy.rs, which
//! records every request with its body; each is mapped to the IAM actions
//! AWS authorizes it as (`fleet_support::iam`), and those must be allowed
//! by the worker role's policy as the stack declares it. The releases must
//! also still do their job: the ticket and its fleet slot are free after.

mod common;
mod fleet_support;
#[path = "../bench/proxy.rs"]
mod proxy;

use std::collections::BTreeSet;

use common::Moto;
use devstack::fleet::dynamo::{LOCK_SLOT_ATTR, RELEASED_AT_ATTR};
use devstack::fleet::{
    AcquireError, AcquireRequest, AttachRequest, DynamoRegistry, Outcome, Registry, ReleaseBy,
    ReleaseRequest, Released, Status,
};
use fleet_support::iam::{required_actions, worker_runs_table_actions};
use fleet_support::{create_runs_table, n, raw_item, s, RUNS_TABLE};
use proxy::{Proxy, ProxyConfig};

const T0: i64 = 1_750_000_000;

/// The table seen two ways: by dispatch (straight to moto, full rights,
/// the given cap) and by a worker (through the recording proxy, built as
/// `devstack worker run` builds it).
struct Fleet {
    dispatch: DynamoRegistry,
    worker: DynamoRegistry,
    client: aws_sdk_dynamodb::Client,
    proxy: Proxy,
    _moto: Moto,
}

impl Fleet {
    async fn start(cap: u32) -> Fleet {
        let moto = Moto::start();
        let client = fleet_support::dynamodb(&moto.endpoint).await;
        create_runs_table(&client, RUNS_TABLE).await;
        let proxy = Proxy::start(&moto.endpoint, ProxyConfig::transparent()).await;
        let worker_client = fleet_support::dynamodb(proxy.url()).await;
        Fleet {
            dispatch: DynamoRegistry::new(client.clone(), RUNS_TABLE, cap),
            // commands/worker.rs: the worker's handle has cap 0.
            worker: DynamoRegistry::new(worker_client, RUNS_TABLE, 0),
            client,
            proxy,
            _moto: moto,
        }
    }

    /// What dispatch does: acquire, then attach the instance.
    async fn dispatch(&self, sow: &str, dispatch_id: &str, ttl: i64, instance: &str, now: i64) {
        let request = AcquireRequest {
            ttl_seconds: ttl,
            ..AcquireRequest::new(sow, dispatch_id)
        };
        self.dispatch.acquire(&request, now).await.expect("acquire");
        self.dispatch
            .attach(
                &AttachRequest {
                    sow: sow.into(),
                    dispatch_id: dispatch_id.into(),
                    instance_id: instance.into(),
                    compute_type: Some("ec2:t3.xlarge".into()),
                },
                now,
            )
            .await
            .expect("attach");
    }

    /// The worker's release, as src/worker/lifecycle.rs makes it.
    async fn worker_release(&self, sow: &str, instance: &str, now: i64) -> Released {
        self.proxy.reset_count();
        self.worker
            .release(
                &ReleaseRequest {
                    sow: sow.into(),
                    by: ReleaseBy::Instance(instance.into()),
                    outcome: Outcome::Success,
                    prs_opened: 1,
                    model: None,
                },
                now,
            )
            .await
            .expect("the worker's release")
    }

    /// The IAM actions the worker's requests since the last release need,
    /// after checking that the worker role allows every one of them.
    fn assert_within_worker_role(&self) -> BTreeSet<String> {
        let requests = self.proxy.requests();
        assert!(
            requests.iter().all(|r| r.forwarded),
            "the proxy is transparent"
        );
        let needed: BTreeSet<String> = requests
            .iter()
            .filter(|r| r.service.as_deref() == Some("dynamodb"))
            .flat_map(|r| required_actions(&r.action, &r.body))
            .collect();
        let allowed = worker_runs_table_actions();
        let denied: Vec<&String> = needed.difference(&allowed).collect();
        assert!(
            denied.is_empty(),
            "AWS would deny the worker {denied:?}: its release needs {needed:?}, \
             its role allows {allowed:?}"
        );
        needed
    }

    async fn lock_status(&self, sow: &str) -> Status {
        self.dispatch
            .get(sow)
            .await
            .unwrap()
            .expect("a lock")
            .status
    }
}

fn get_and_update() -> BTreeSet<String> {
    ["dynamodb:GetItem", "dynamodb:UpdateItem"]
        .map(String::from)
        .into()
}

#[test]
fn the_worker_role_may_only_get_and_update_on_the_runs_table() {
    // platform.md §1. The release is designed for exactly this; widening
    // the role is not the fix for a release that needs more.
    assert_eq!(worker_runs_table_actions(), get_and_update());
}

#[test]
fn transaction_items_are_authorized_one_by_one() {
    let body =
        br#"{"TransactItems":[{"Update":{}},{"ConditionCheck":{}},{"Delete":{}},{"Put":{}}]}"#;
    assert_eq!(
        required_actions("TransactWriteItems", body),
        [
            "dynamodb:UpdateItem",
            "dynamodb:ConditionCheckItem",
            "dynamodb:DeleteItem",
            "dynamodb:PutItem"
        ]
    );
    assert_eq!(required_actions("Query", b"{}"), ["dynamodb:Query"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_release_needs_only_get_and_update_and_frees_the_slot() {
    let fleet = Fleet::start(1).await;
    fleet.dispatch("sows/a.md", "da", 3600, "i-a", T0).await;

    let out = fleet.worker_release("sows/a.md", "i-a", T0 + 600).await;
    assert!(matches!(out, Released::Released { .. }), "{out:?}");
    assert_eq!(fleet.assert_within_worker_role(), get_and_update());
    let actions = fleet.proxy.action_counts();
    assert_eq!(actions.get("GetItem"), Some(&1), "{actions:?}");
    assert_eq!(actions.get("TransactWriteItems"), Some(&1), "{actions:?}");

    assert_eq!(fleet.lock_status("sows/a.md").await, Status::Done);
    let run = &fleet.dispatch.list_history("sows/a.md").await.unwrap()[0];
    assert_eq!(
        (run.outcome, run.duration_seconds, run.prs_opened),
        (Some(Outcome::Success), Some(600), Some(1))
    );
    // The slot item stays, marked released; the fleet counts it free.
    let lock = raw_item(&fleet.client, "sows/a.md", "LOCK").await.unwrap();
    let slot_sk = match &lock[LOCK_SLOT_ATTR] {
        aws_sdk_dynamodb::types::AttributeValue::S(sk) => sk.clone(),
        other => panic!("{LOCK_SLOT_ATTR} is {other:?}"),
    };
    let slot = raw_item(&fleet.client, "#fleet", &slot_sk).await.unwrap();
    assert_eq!(slot[RELEASED_AT_ATTR], n(T0 + 600));
    assert!(fleet.dispatch.list_slots().await.unwrap().is_empty());
    // cap = 1: the next dispatch gets the freed slot at once, long before
    // the released lock would have expired.
    fleet
        .dispatch("sows/b.md", "db", 3600, "i-b", T0 + 601)
        .await;
    assert!(matches!(
        fleet
            .dispatch
            .acquire(&AcquireRequest::new("sows/c.md", "dc"), T0 + 602)
            .await,
        Err(AcquireError::AtCap { cap: 1 })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_release_after_its_slot_was_taken_over_needs_only_get_and_update() {
    let fleet = Fleet::start(1).await;
    // A worker that looked dead: its lock and slot expire, and another
    // ticket takes the slot.
    fleet
        .dispatch("sows/slow.md", "d1", 100, "i-slow", T0)
        .await;
    fleet
        .dispatch("sows/b.md", "d2", 3600, "i-b", T0 + 100)
        .await;

    let out = fleet
        .worker_release("sows/slow.md", "i-slow", T0 + 150)
        .await;
    assert!(matches!(out, Released::Released { .. }), "{out:?}");
    assert_eq!(fleet.assert_within_worker_role(), get_and_update());
    // Its first transaction failed on the slot's condition and the second
    // went without the slot.
    assert_eq!(
        fleet.proxy.action_counts().get("TransactWriteItems"),
        Some(&2)
    );

    assert_eq!(fleet.lock_status("sows/slow.md").await, Status::Done);
    // b keeps the slot: the cap still holds.
    let slots = fleet.dispatch.list_slots().await.unwrap();
    assert_eq!(slots.len(), 1);
    assert_eq!(slots[0].sow, "sows/b.md");
    assert!(matches!(
        fleet
            .dispatch
            .acquire(&AcquireRequest::new("sows/c.md", "dc"), T0 + 160)
            .await,
        Err(AcquireError::AtCap { cap: 1 })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_of_locks_that_name_no_slot_need_only_get_and_update() {
    let fleet = Fleet::start(1).await;
    // A lock devstack took before it recorded the slot on the lock: the
    // slot item exists, the lock does not name it.
    fleet
        .dispatch("sows/before.md", "d1", 3600, "i-1", T0)
        .await;
    fleet
        .client
        .update_item()
        .table_name(RUNS_TABLE)
        .key("sow", s("sows/before.md"))
        .key("sk", s("LOCK"))
        .update_expression("REMOVE #slot")
        .expression_attribute_names("#slot", LOCK_SLOT_ATTR)
        .send()
        .await
        .unwrap();

    let out = fleet.worker_release("sows/before.md", "i-1", T0 + 60).await;
    assert!(matches!(out, Released::Released { .. }), "{out:?}");
    assert_eq!(fleet.assert_within_worker_role(), get_and_update());
    assert_eq!(fleet.lock_status("sows/before.md").await, Status::Done);
    // The release could not name the slot, so it stays taken by a released
    // lock, and the next acquire at the cap reclaims it.
    assert_eq!(fleet.dispatch.list_slots().await.unwrap().len(), 1);
    fleet
        .dispatch("sows/next.md", "d2", 3600, "i-2", T0 + 61)
        .await;
    assert_eq!(
        fleet.dispatch.list_slots().await.unwrap()[0].sow,
        "sows/next.md"
    );

    // A lock the Python tool wrote before history rows existed: no slot,
    // no history row to finalize.
    fleet
        .client
        .put_item()
        .table_name(RUNS_TABLE)
        .item("sow", s("sows/old.md"))
        .item("sk", s("LOCK"))
        .item("status", s("working"))
        .item("dispatch_id", s("0123abcd"))
        .item("started_at", n(T0))
        .item("updated_at", n(T0))
        .item("expires_at", n(T0 + 7 * 3600))
        .item("instance_id", s("i-old"))
        .send()
        .await
        .unwrap();
    let out = fleet.worker_release("sows/old.md", "i-old", T0 + 90).await;
    assert!(matches!(out, Released::Released { .. }), "{out:?}");
    assert_eq!(fleet.assert_within_worker_role(), get_and_update());
    assert_eq!(fleet.lock_status("sows/old.md").await, Status::Done);
    assert!(fleet
        .dispatch
        .list_history("sows/old.md")
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superseded_workers_release_only_reads() {
    let fleet = Fleet::start(2).await;
    fleet.dispatch("sows/a.md", "d-old", 100, "i-old", T0).await;
    fleet
        .dispatch("sows/a.md", "d-new", 3600, "i-new", T0 + 200)
        .await;

    let out = fleet.worker_release("sows/a.md", "i-old", T0 + 300).await;
    assert!(matches!(out, Released::NotHeld { .. }), "{out:?}");
    assert_eq!(
        fleet.assert_within_worker_role(),
        BTreeSet::from(["dynamodb:GetItem".to_string()])
    );
    let lock = fleet.dispatch.get("sows/a.md").await.unwrap().unwrap();
    assert_eq!(
        (lock.dispatch_id.as_str(), lock.status),
        ("d-new", Status::Working)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_sees_what_only_dispatch_may_do() {
    // The same capture applied to an acquire: it needs actions the worker
    // role lacks, so a release that needed them would be caught too.
    let fleet = Fleet::start(2).await;
    let through_proxy = DynamoRegistry::new(
        fleet_support::dynamodb(fleet.proxy.url()).await,
        RUNS_TABLE,
        2,
    );
    fleet.proxy.reset_count();
    through_proxy
        .acquire(&AcquireRequest::new("sows/a.md", "d1"), T0)
        .await
        .unwrap();
    let needed: BTreeSet<String> = fleet
        .proxy
        .requests()
        .iter()
        .flat_map(|r| required_actions(&r.action, &r.body))
        .collect();
    assert!(
        needed.contains("dynamodb:PutItem") && needed.contains("dynamodb:Query"),
        "{needed:?}"
    );
    assert!(!needed.is_subset(&worker_runs_table_actions()));
}
