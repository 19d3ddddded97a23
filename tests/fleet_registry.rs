//! The registry contract, run against both implementations: the in-memory
//! one and the DynamoDB one on a real moto server through the real SDK.
//! Then the wire format: rows the Python `fleet` tool wrote read here, and
//! rows written here have exactly its attribute names and types (the lock
//! adds one, `fleet_slot`, which the old tool ignores).

mod common;
mod fleet_support;

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use common::Moto;
use devstack::fleet::dynamo::{slot_sk, FLEET_PARTITION, LOCK_SLOT_ATTR};
use devstack::fleet::{
    AcquireError, AcquireRequest, AttachError, AttachRequest, DynamoRegistry, LockItem,
    MemoryRegistry, Outcome, Registry, ReleaseBy, ReleaseRequest, Released, Status,
};
use fleet_support::{create_runs_table, n, raw_item, s, SerialMoto, RUNS_TABLE};

/// A registry, and the moto it talks to (kept alive for the test).
struct Fixture {
    registry: Arc<dyn Registry>,
    client: Option<aws_sdk_dynamodb::Client>,
    _moto: Option<Box<dyn std::any::Any + Send>>,
}

fn memory(cap: u32) -> Fixture {
    Fixture {
        registry: Arc::new(MemoryRegistry::new(cap)),
        client: None,
        _moto: None,
    }
}

async fn dynamo_at(endpoint: &str, cap: u32, moto: Box<dyn std::any::Any + Send>) -> Fixture {
    let client = fleet_support::dynamodb(endpoint).await;
    create_runs_table(&client, RUNS_TABLE).await;
    Fixture {
        registry: Arc::new(DynamoRegistry::new(client.clone(), RUNS_TABLE, cap)),
        client: Some(client),
        _moto: Some(moto),
    }
}

/// On the harness's moto.
async fn dynamo(cap: u32) -> Fixture {
    let moto = Moto::start();
    let endpoint = moto.endpoint.clone();
    dynamo_at(&endpoint, cap, Box::new(moto)).await
}

/// On a moto that keeps DynamoDB's transaction isolation (see `SerialMoto`).
async fn dynamo_serial(cap: u32) -> Fixture {
    let moto = SerialMoto::start();
    let endpoint = moto.endpoint.clone();
    dynamo_at(&endpoint, cap, Box::new(moto)).await
}

/// Runs each contract case against both implementations. `races` are the
/// cases whose clients race each other.
macro_rules! contract {
    (
        cases { $($case:ident(cap = $cap:expr);)* }
        races { $($race:ident(cap = $rcap:expr);)* }
    ) => {
        mod memory_registry {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(super::memory($cap).registry).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $race() {
                    super::$race(super::memory($rcap).registry).await;
                }
            )*
        }
        mod dynamo_registry {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let f = super::dynamo($cap).await;
                    super::$case(f.registry.clone()).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $race() {
                    let f = super::dynamo_serial($rcap).await;
                    super::$race(f.registry.clone()).await;
                }
            )*
        }
    };
}

contract! {
  cases {
    acquire_writes_lock_history_and_slot(cap = 10);
    held_ticket_is_refused_with_its_holder(cap = 10);
    released_ticket_can_be_acquired_again(cap = 10);
    expired_lock_is_reclaimed(cap = 10);
    expired_slot_is_reclaimed(cap = 1);
    at_cap_refuses_until_a_release_frees_a_slot(cap = 2);
    held_wins_over_at_cap(cap = 1);
    attach_records_instance_and_compute_type(cap = 10);
    attach_with_another_dispatch_id_fails(cap = 10);
    superseded_workers_release_is_a_no_op(cap = 10);
    release_none_frees_only_a_lock_without_instance(cap = 10);
    force_release_ignores_the_instance(cap = 10);
    release_finalizes_the_run(cap = 10);
    release_without_a_lock_is_a_no_op(cap = 10);
    second_release_is_a_no_op(cap = 10);
    dispatch_release_gives_back_only_its_own_lock(cap = 10);
    list_active_is_oldest_first_and_only_live(cap = 10);
    history_per_ticket_and_across_tickets(cap = 10);
  }
  races {
    twenty_concurrent_acquires_of_one_ticket_one_wins(cap = 10);
    fifteen_concurrent_acquires_with_cap_ten_ten_win(cap = 10);
    releases_racing_acquires_never_exceed_the_cap(cap = 3);
  }
}

const T0: i64 = 1_750_000_000;

fn req(sow: &str, dispatch_id: &str) -> AcquireRequest {
    AcquireRequest::new(sow, dispatch_id)
}

fn release(sow: &str, by: ReleaseBy, outcome: Outcome) -> ReleaseRequest {
    ReleaseRequest {
        sow: sow.into(),
        by,
        outcome,
        prs_opened: 0,
        model: None,
    }
}

async fn attach(r: &dyn Registry, sow: &str, dispatch_id: &str, instance: &str, now: i64) {
    r.attach(
        &AttachRequest {
            sow: sow.into(),
            dispatch_id: dispatch_id.into(),
            instance_id: instance.into(),
            compute_type: None,
        },
        now,
    )
    .await
    .expect("attach");
}

async fn held_slots(r: &dyn Registry, now: i64) -> Vec<(String, String)> {
    r.list_slots()
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.is_held(now))
        .map(|s| (s.sow, s.dispatch_id))
        .collect()
}

async fn acquire_writes_lock_history_and_slot(r: Arc<dyn Registry>) {
    let request = AcquireRequest {
        dispatched_by: Some("octocat".into()),
        model: Some("claude-opus-5".into()),
        ttl_seconds: 3600,
        ..req("sows/a.md", "d1")
    };
    let lock = r.acquire(&request, T0).await.unwrap();
    assert_eq!(lock.status, Status::Working);
    assert_eq!(
        (lock.started_at, lock.updated_at, lock.expires_at),
        (T0, T0, T0 + 3600)
    );
    assert_eq!(lock.instance_id, None);
    assert_eq!(lock.dispatched_by.as_deref(), Some("octocat"));
    assert_eq!(r.get("sows/a.md").await.unwrap(), Some(lock.clone()));
    assert_eq!(r.list_active(T0).await.unwrap(), vec![lock]);

    let runs = r.list_history("sows/a.md").await.unwrap();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(run.dispatch_id, "d1");
    assert_eq!(run.doc_type, "sow");
    assert_eq!(run.compute_type, "ec2");
    assert_eq!(run.model, "claude-opus-5");
    assert_eq!(run.status, Status::Working);
    assert_eq!(run.started_at, T0);
    assert_eq!(run.outcome, None);
    assert_eq!(run.sk(), format!("RUN#{T0:020}#d1"));

    assert_eq!(
        held_slots(&*r, T0).await,
        [("sows/a.md".to_string(), "d1".to_string())]
    );
}

async fn held_ticket_is_refused_with_its_holder(r: Arc<dyn Registry>) {
    r.acquire(&req("sows/a.md", "d1"), T0).await.unwrap();
    attach(&*r, "sows/a.md", "d1", "i-aaa", T0 + 1).await;
    match r.acquire(&req("sows/a.md", "d2"), T0 + 100).await {
        Err(AcquireError::Held { holder }) => {
            assert_eq!(holder.dispatch_id, "d1");
            assert_eq!(holder.instance_id.as_deref(), Some("i-aaa"));
            assert!(holder.holder_description().contains("i-aaa"));
        }
        other => panic!("expected Held, got {other:?}"),
    }
    // The refusal wrote nothing: one run, one slot.
    assert_eq!(r.list_history("sows/a.md").await.unwrap().len(), 1);
    assert_eq!(held_slots(&*r, T0 + 100).await.len(), 1);
}

async fn released_ticket_can_be_acquired_again(r: Arc<dyn Registry>) {
    r.acquire(&req("sows/a.md", "d1"), T0).await.unwrap();
    attach(&*r, "sows/a.md", "d1", "i-1", T0).await;
    let out = r
        .release(
            &release(
                "sows/a.md",
                ReleaseBy::Instance("i-1".into()),
                Outcome::Success,
            ),
            T0 + 10,
        )
        .await
        .unwrap();
    assert!(matches!(out, Released::Released { .. }), "{out:?}");
    assert!(
        held_slots(&*r, T0 + 10).await.is_empty(),
        "release frees the slot"
    );

    let lock = r.acquire(&req("sows/a.md", "d2"), T0 + 20).await.unwrap();
    assert_eq!(lock.dispatch_id, "d2");
    let runs = r.list_history("sows/a.md").await.unwrap();
    let ids: Vec<_> = runs
        .iter()
        .map(|r| (r.dispatch_id.as_str(), r.status))
        .collect();
    assert_eq!(ids, [("d1", Status::Done), ("d2", Status::Working)]);
}

async fn expired_lock_is_reclaimed(r: Arc<dyn Registry>) {
    let request = AcquireRequest {
        ttl_seconds: 100,
        ..req("sows/a.md", "d1")
    };
    r.acquire(&request, T0).await.unwrap();
    assert!(matches!(
        r.acquire(&req("sows/a.md", "d2"), T0 + 99).await,
        Err(AcquireError::Held { .. })
    ));
    assert!(
        r.list_active(T0 + 100).await.unwrap().is_empty(),
        "expired at expires_at"
    );
    // Exactly at expires_at the lock is stale: the condition is `expires_at <= now`.
    let lock = r.acquire(&req("sows/a.md", "d2"), T0 + 100).await.unwrap();
    assert_eq!(lock.dispatch_id, "d2");
    // The stale lock's run stays as it was: a dead worker never finalized it.
    let runs = r.list_history("sows/a.md").await.unwrap();
    assert_eq!(runs[0].status, Status::Working);
    assert_eq!(runs.len(), 2);
}

async fn expired_slot_is_reclaimed(r: Arc<dyn Registry>) {
    // cap = 1: a dead worker's slot must free itself like its lock does.
    let request = AcquireRequest {
        ttl_seconds: 100,
        ..req("sows/dead.md", "d1")
    };
    r.acquire(&request, T0).await.unwrap();
    match r.acquire(&req("sows/b.md", "d2"), T0 + 50).await {
        Err(AcquireError::AtCap { cap }) => assert_eq!(cap, 1),
        other => panic!("expected AtCap, got {other:?}"),
    }
    r.acquire(&req("sows/b.md", "d2"), T0 + 100).await.unwrap();
    assert_eq!(
        held_slots(&*r, T0 + 100).await,
        [("sows/b.md".to_string(), "d2".to_string())]
    );
    // The dead worker's late release frees nothing of b's.
    r.attach(
        &AttachRequest {
            sow: "sows/dead.md".into(),
            dispatch_id: "d1".into(),
            instance_id: "i-dead".into(),
            compute_type: None,
        },
        T0 + 101,
    )
    .await
    .unwrap();
    r.release(
        &release(
            "sows/dead.md",
            ReleaseBy::Instance("i-dead".into()),
            Outcome::Error,
        ),
        T0 + 102,
    )
    .await
    .unwrap();
    assert_eq!(held_slots(&*r, T0 + 102).await.len(), 1);
    assert!(matches!(
        r.acquire(&req("sows/c.md", "d3"), T0 + 103).await,
        Err(AcquireError::AtCap { .. })
    ));
}

async fn at_cap_refuses_until_a_release_frees_a_slot(r: Arc<dyn Registry>) {
    r.acquire(&req("sows/a.md", "da"), T0).await.unwrap();
    r.acquire(&req("sows/b.md", "db"), T0).await.unwrap();
    match r.acquire(&req("sows/c.md", "dc"), T0 + 1).await {
        Err(AcquireError::AtCap { cap }) => assert_eq!(cap, 2),
        other => panic!("expected AtCap, got {other:?}"),
    }
    assert_eq!(
        r.get("sows/c.md").await.unwrap(),
        None,
        "refusal writes no lock"
    );
    assert!(r.list_history("sows/c.md").await.unwrap().is_empty());

    r.release(
        &release("sows/a.md", ReleaseBy::NoInstance, Outcome::Error),
        T0 + 2,
    )
    .await
    .unwrap();
    r.acquire(&req("sows/c.md", "dc"), T0 + 3).await.unwrap();
    assert_eq!(r.list_active(T0 + 3).await.unwrap().len(), 2);
}

async fn held_wins_over_at_cap(r: Arc<dyn Registry>) {
    r.acquire(&req("sows/a.md", "d1"), T0).await.unwrap();
    assert!(matches!(
        r.acquire(&req("sows/a.md", "d2"), T0 + 1).await,
        Err(AcquireError::Held { .. })
    ));
}

async fn attach_records_instance_and_compute_type(r: Arc<dyn Registry>) {
    r.acquire(&req("sows/a.md", "d1"), T0).await.unwrap();
    let lock = r
        .attach(
            &AttachRequest {
                sow: "sows/a.md".into(),
                dispatch_id: "d1".into(),
                instance_id: "i-123".into(),
                compute_type: Some("ec2:t3.xlarge".into()),
            },
            T0 + 5,
        )
        .await
        .unwrap();
    assert_eq!(lock.instance_id.as_deref(), Some("i-123"));
    assert_eq!(lock.updated_at, T0 + 5);
    assert_eq!(r.get("sows/a.md").await.unwrap(), Some(lock));
    let run = &r.list_history("sows/a.md").await.unwrap()[0];
    assert_eq!(run.instance_id.as_deref(), Some("i-123"));
    assert_eq!(run.compute_type, "ec2:t3.xlarge");
    assert_eq!(run.updated_at, T0 + 5);
}

async fn attach_with_another_dispatch_id_fails(r: Arc<dyn Registry>) {
    r.acquire(&req("sows/a.md", "d1"), T0).await.unwrap();
    let wrong = AttachRequest {
        sow: "sows/a.md".into(),
        dispatch_id: "dX".into(),
        instance_id: "i-evil".into(),
        compute_type: None,
    };
    assert!(matches!(
        r.attach(&wrong, T0 + 1).await,
        Err(AttachError::NotHolder { .. })
    ));
    let lock = r.get("sows/a.md").await.unwrap().unwrap();
    assert_eq!(lock.instance_id, None, "the lock is untouched");
    let missing = AttachRequest {
        sow: "sows/none.md".into(),
        ..wrong
    };
    assert!(matches!(
        r.attach(&missing, T0 + 1).await,
        Err(AttachError::NotHolder { .. })
    ));
    assert_eq!(
        r.get("sows/none.md").await.unwrap(),
        None,
        "attach creates no lock"
    );
}

async fn superseded_workers_release_is_a_no_op(r: Arc<dyn Registry>) {
    let old = AcquireRequest {
        ttl_seconds: 100,
        ..req("sows/a.md", "d-old")
    };
    r.acquire(&old, T0).await.unwrap();
    attach(&*r, "sows/a.md", "d-old", "i-old", T0).await;
    // The old worker looks dead; its lock expires and a new dispatch takes over.
    r.acquire(&req("sows/a.md", "d-new"), T0 + 200)
        .await
        .unwrap();
    attach(&*r, "sows/a.md", "d-new", "i-new", T0 + 201).await;

    let out = r
        .release(
            &release(
                "sows/a.md",
                ReleaseBy::Instance("i-old".into()),
                Outcome::Error,
            ),
            T0 + 300,
        )
        .await
        .unwrap();
    match out {
        Released::NotHeld {
            current: Some(current),
        } => assert_eq!(current.dispatch_id, "d-new"),
        other => panic!("expected a no-op, got {other:?}"),
    }
    let lock = r.get("sows/a.md").await.unwrap().unwrap();
    assert!(lock.is_active(T0 + 300));
    assert_eq!(lock.instance_id.as_deref(), Some("i-new"));
    let runs = r.list_history("sows/a.md").await.unwrap();
    assert!(
        runs.iter().all(|run| run.outcome.is_none()),
        "no history touched"
    );
    assert_eq!(
        held_slots(&*r, T0 + 300).await.len(),
        1,
        "the new owner's slot stays"
    );
}

async fn release_none_frees_only_a_lock_without_instance(r: Arc<dyn Registry>) {
    r.acquire(&req("sows/a.md", "d1"), T0).await.unwrap();
    attach(&*r, "sows/a.md", "d1", "i-1", T0).await;
    let out = r
        .release(
            &release("sows/a.md", ReleaseBy::NoInstance, Outcome::Error),
            T0 + 1,
        )
        .await
        .unwrap();
    assert!(matches!(out, Released::NotHeld { .. }), "{out:?}");

    r.acquire(&req("sows/b.md", "d2"), T0).await.unwrap();
    let out = r
        .release(
            &release("sows/b.md", ReleaseBy::NoInstance, Outcome::Error),
            T0 + 1,
        )
        .await
        .unwrap();
    assert!(matches!(out, Released::Released { .. }), "{out:?}");
    assert_eq!(
        r.get("sows/b.md").await.unwrap().unwrap().status,
        Status::Error
    );
}

async fn force_release_ignores_the_instance(r: Arc<dyn Registry>) {
    r.acquire(&req("sows/a.md", "d1"), T0).await.unwrap();
    attach(&*r, "sows/a.md", "d1", "i-1", T0).await;
    let out = r
        .release(
            &release("sows/a.md", ReleaseBy::Force, Outcome::Error),
            T0 + 1,
        )
        .await
        .unwrap();
    assert!(matches!(out, Released::Released { .. }), "{out:?}");
    assert_eq!(
        r.get("sows/a.md").await.unwrap().unwrap().status,
        Status::Error
    );
    assert!(held_slots(&*r, T0 + 1).await.is_empty());
}

async fn release_finalizes_the_run(r: Arc<dyn Registry>) {
    let request = AcquireRequest {
        model: Some("claude-opus-5".into()),
        ..req("dx/surface.md", "d1")
    };
    r.acquire(&request, T0).await.unwrap();
    attach(&*r, "dx/surface.md", "d1", "i-1", T0 + 30).await;
    let out = r
        .release(
            &ReleaseRequest {
                sow: "dx/surface.md".into(),
                by: ReleaseBy::Instance("i-1".into()),
                outcome: Outcome::Success,
                prs_opened: 3,
                model: Some("claude-sonnet-5".into()),
            },
            T0 + 600,
        )
        .await
        .unwrap();
    match out {
        Released::Released { lock } => {
            assert_eq!(lock.status, Status::Done);
            assert_eq!(lock.updated_at, T0 + 600);
        }
        other => panic!("expected a release, got {other:?}"),
    }
    assert_eq!(
        r.get("dx/surface.md").await.unwrap().unwrap().status,
        Status::Done
    );
    let run = &r.list_history("dx/surface.md").await.unwrap()[0];
    assert_eq!(run.doc_type, "dx");
    assert_eq!(run.status, Status::Done);
    assert_eq!(run.outcome, Some(Outcome::Success));
    assert_eq!(run.finished_at, Some(T0 + 600));
    assert_eq!(run.duration_seconds, Some(600));
    assert_eq!(run.prs_opened, Some(3));
    assert_eq!(
        run.model, "claude-sonnet-5",
        "the observed model replaces the dispatched one"
    );
    assert_eq!(run.instance_id.as_deref(), Some("i-1"));
}

async fn release_without_a_lock_is_a_no_op(r: Arc<dyn Registry>) {
    let out = r
        .release(
            &release("sows/nothing.md", ReleaseBy::Force, Outcome::Error),
            T0,
        )
        .await
        .unwrap();
    assert_eq!(out, Released::NotHeld { current: None });
    assert_eq!(r.get("sows/nothing.md").await.unwrap(), None);
}

async fn second_release_is_a_no_op(r: Arc<dyn Registry>) {
    r.acquire(&req("sows/a.md", "d1"), T0).await.unwrap();
    attach(&*r, "sows/a.md", "d1", "i-1", T0).await;
    let by = ReleaseBy::Instance("i-1".into());
    r.release(&release("sows/a.md", by.clone(), Outcome::Success), T0 + 10)
        .await
        .unwrap();
    let again = r
        .release(&release("sows/a.md", by, Outcome::Error), T0 + 20)
        .await
        .unwrap();
    assert!(matches!(again, Released::NotHeld { .. }), "{again:?}");
    let run = &r.list_history("sows/a.md").await.unwrap()[0];
    assert_eq!(
        (run.outcome, run.finished_at),
        (Some(Outcome::Success), Some(T0 + 10))
    );
}

async fn dispatch_release_gives_back_only_its_own_lock(r: Arc<dyn Registry>) {
    r.acquire(&req("sows/a.md", "d1"), T0).await.unwrap();
    let other = r
        .release(
            &release(
                "sows/a.md",
                ReleaseBy::Dispatch("d2".into()),
                Outcome::Error,
            ),
            T0 + 1,
        )
        .await
        .unwrap();
    assert!(matches!(other, Released::NotHeld { .. }));
    let own = r
        .release(
            &release(
                "sows/a.md",
                ReleaseBy::Dispatch("d1".into()),
                Outcome::Error,
            ),
            T0 + 1,
        )
        .await
        .unwrap();
    assert!(matches!(own, Released::Released { .. }));
    assert!(held_slots(&*r, T0 + 1).await.is_empty());
}

async fn list_active_is_oldest_first_and_only_live(r: Arc<dyn Registry>) {
    r.acquire(&req("sows/c.md", "dc"), T0 + 30).await.unwrap();
    r.acquire(&req("sows/a.md", "da"), T0 + 10).await.unwrap();
    r.acquire(&req("sows/b.md", "db"), T0 + 20).await.unwrap();
    let short = AcquireRequest {
        ttl_seconds: 10,
        ..req("sows/expired.md", "dx")
    };
    r.acquire(&short, T0).await.unwrap();
    r.acquire(&req("sows/done.md", "dd"), T0).await.unwrap();
    r.release(
        &release("sows/done.md", ReleaseBy::NoInstance, Outcome::Success),
        T0 + 1,
    )
    .await
    .unwrap();
    let active: Vec<String> = r
        .list_active(T0 + 40)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.sow)
        .collect();
    assert_eq!(active, ["sows/a.md", "sows/b.md", "sows/c.md"]);
}

async fn history_per_ticket_and_across_tickets(r: Arc<dyn Registry>) {
    for (i, sow) in ["sows/a.md", "dx/b.md", "sows/a.md"].iter().enumerate() {
        let now = T0 + i as i64 * 100;
        let id = format!("d{i}");
        r.acquire(&req(sow, &id), now).await.unwrap();
        r.release(
            &release(sow, ReleaseBy::Dispatch(id), Outcome::Success),
            now + 50,
        )
        .await
        .unwrap();
    }
    let a: Vec<_> = r
        .list_history("sows/a.md")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.dispatch_id)
        .collect();
    assert_eq!(a, ["d0", "d2"]);
    let all: Vec<_> = r
        .scan_history()
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.sow, r.dispatch_id, r.duration_seconds))
        .collect();
    assert_eq!(
        all,
        [
            ("sows/a.md".to_string(), "d0".to_string(), Some(50)),
            ("dx/b.md".to_string(), "d1".to_string(), Some(50)),
            ("sows/a.md".to_string(), "d2".to_string(), Some(50)),
        ]
    );
}

async fn twenty_concurrent_acquires_of_one_ticket_one_wins(r: Arc<dyn Registry>) {
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let r = r.clone();
            tokio::spawn(async move {
                r.acquire(&req("sows/race.md", &format!("d{i:02}")), T0)
                    .await
            })
        })
        .collect();
    let mut won = Vec::new();
    let mut held = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(lock) => won.push(lock),
            Err(AcquireError::Held { holder }) => held.push(holder),
            Err(other) => panic!("unexpected refusal: {other:?}"),
        }
    }
    assert_eq!(won.len(), 1, "exactly one acquire wins");
    assert_eq!(held.len(), 19);
    assert!(held.iter().all(|h| h.dispatch_id == won[0].dispatch_id));
    assert_eq!(r.list_history("sows/race.md").await.unwrap().len(), 1);
    assert_eq!(held_slots(&*r, T0).await.len(), 1);
}

async fn fifteen_concurrent_acquires_with_cap_ten_ten_win(r: Arc<dyn Registry>) {
    let tasks: Vec<_> = (0..15)
        .map(|i| {
            let r = r.clone();
            tokio::spawn(async move {
                r.acquire(&req(&format!("sows/t{i:02}.md"), &format!("d{i:02}")), T0)
                    .await
            })
        })
        .collect();
    let (mut won, mut at_cap) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => won += 1,
            Err(AcquireError::AtCap { cap: 10 }) => at_cap += 1,
            Err(other) => panic!("unexpected refusal: {other:?}"),
        }
    }
    assert_eq!((won, at_cap), (10, 5));
    assert_eq!(r.list_active(T0).await.unwrap().len(), 10);
    let slots = held_slots(&*r, T0).await;
    assert_eq!(slots.len(), 10);
    // Every slot belongs to a live lock.
    let active: Vec<_> = r.list_active(T0).await.unwrap();
    for (sow, dispatch_id) in slots {
        assert!(active
            .iter()
            .any(|l| l.sow == sow && l.dispatch_id == dispatch_id));
    }
}

async fn releases_racing_acquires_never_exceed_the_cap(r: Arc<dyn Registry>) {
    for i in 0..3 {
        let (sow, id) = (format!("sows/old{i}.md"), format!("old{i}"));
        r.acquire(&req(&sow, &id), T0).await.unwrap();
        attach(&*r, &sow, &id, &format!("i-old{i}"), T0).await;
    }
    // The three workers release while six dispatches race for their slots.
    let releases: Vec<_> = (0..3)
        .map(|i| {
            let r = r.clone();
            tokio::spawn(async move {
                let by = ReleaseBy::Instance(format!("i-old{i}"));
                r.release(
                    &release(&format!("sows/old{i}.md"), by, Outcome::Success),
                    T0 + 10,
                )
                .await
            })
        })
        .collect();
    let acquires: Vec<_> = (0..6)
        .map(|i| {
            let r = r.clone();
            tokio::spawn(async move {
                r.acquire(
                    &req(&format!("sows/new{i}.md"), &format!("new{i}")),
                    T0 + 10,
                )
                .await
            })
        })
        .collect();
    for task in releases {
        let out = task.await.unwrap().unwrap();
        assert!(matches!(out, Released::Released { .. }), "{out:?}");
    }
    let mut won = 0;
    for task in acquires {
        match task.await.unwrap() {
            Ok(_) => won += 1,
            Err(AcquireError::AtCap { cap: 3 }) => {}
            Err(other) => panic!("unexpected refusal: {other:?}"),
        }
    }
    assert!(won <= 3, "{won} acquires won with cap 3");
    // Every freed slot is usable again, and no more than that: acquiring
    // until refused ends with exactly the cap live.
    let mut i = 0;
    loop {
        let request = req(&format!("sows/late{i}.md"), &format!("late{i}"));
        match r.acquire(&request, T0 + 20).await {
            Ok(_) => i += 1,
            Err(AcquireError::AtCap { cap: 3 }) => break,
            Err(other) => panic!("unexpected refusal: {other:?}"),
        }
        assert!(i <= 3, "more than the cap acquired");
    }
    let active = r.list_active(T0 + 20).await.unwrap();
    assert_eq!(active.len(), 3);
    let slots = held_slots(&*r, T0 + 20).await;
    assert_eq!(slots.len(), 3);
    for (sow, dispatch_id) in slots {
        assert!(active
            .iter()
            .any(|l| l.sow == sow && l.dispatch_id == dispatch_id));
    }
}

// -- wire format ---------------------------------------------------------

type Item = std::collections::HashMap<String, AttributeValue>;

/// Attribute name → DynamoDB type letter, for comparing shapes.
fn shape(item: &Item) -> BTreeMap<String, &'static str> {
    item.iter()
        .map(|(k, v)| {
            let t = match v {
                AttributeValue::S(_) => "S",
                AttributeValue::N(_) => "N",
                AttributeValue::Null(_) => "NULL",
                _ => "other",
            };
            (k.clone(), t)
        })
        .collect()
}

fn expected(pairs: &[(&str, &'static str)]) -> BTreeMap<String, &'static str> {
    pairs.iter().map(|(k, t)| (k.to_string(), *t)).collect()
}

async fn put(client: &aws_sdk_dynamodb::Client, item: Item) {
    client
        .put_item()
        .table_name(RUNS_TABLE)
        .set_item(Some(item))
        .send()
        .await
        .expect("put item");
}

#[tokio::test]
async fn rows_the_python_tool_wrote_read_correctly() {
    let f = dynamo(10).await;
    let client = f.client.clone().unwrap();
    let r = &*f.registry;
    // As boto3 writes them: ints become N, None-valued keys are omitted
    // (except prs_opened, which release wrote as NULL when not given).
    put(
        &client,
        Item::from([
            ("sow".into(), s("sows/old.md")),
            ("sk".into(), s("LOCK")),
            ("status".into(), s("working")),
            ("dispatch_id".into(), s("0123abcd")),
            ("started_at".into(), n(T0)),
            ("updated_at".into(), n(T0 + 5)),
            ("expires_at".into(), n(T0 + 7 * 3600)),
            ("instance_id".into(), s("i-0old")),
            ("dispatched_by".into(), s("octocat")),
        ]),
    )
    .await;
    put(
        &client,
        Item::from([
            ("sow".into(), s("sows/old.md")),
            ("sk".into(), s(&format!("RUN#{T0:020}#0123abcd"))),
            ("dispatch_id".into(), s("0123abcd")),
            ("doc_type".into(), s("sow")),
            ("compute_type".into(), s("ec2:t3.xlarge")),
            ("model".into(), s("claude-fable-5")),
            ("status".into(), s("working")),
            ("started_at".into(), n(T0)),
            ("updated_at".into(), n(T0 + 5)),
            ("instance_id".into(), s("i-0old")),
            ("dispatched_by".into(), s("octocat")),
        ]),
    )
    .await;
    // A finished run from before the model and compute_type columns.
    put(
        &client,
        Item::from([
            ("sow".into(), s("sows/old.md")),
            ("sk".into(), s(&format!("RUN#{:020}#ffff", T0 - 9000))),
            ("dispatch_id".into(), s("ffff")),
            ("doc_type".into(), s("sow")),
            ("status".into(), s("error")),
            ("started_at".into(), n(T0 - 9000)),
            ("updated_at".into(), n(T0 - 8000)),
            ("outcome".into(), s("error")),
            ("finished_at".into(), n(T0 - 8000)),
            ("duration_seconds".into(), n(1000)),
            ("prs_opened".into(), AttributeValue::Null(true)),
        ]),
    )
    .await;

    let lock = r.get("sows/old.md").await.unwrap().unwrap();
    assert_eq!(
        lock,
        LockItem {
            sow: "sows/old.md".into(),
            status: Status::Working,
            dispatch_id: "0123abcd".into(),
            started_at: T0,
            updated_at: T0 + 5,
            expires_at: T0 + 7 * 3600,
            instance_id: Some("i-0old".into()),
            dispatched_by: Some("octocat".into()),
            slot: None,
        }
    );
    assert_eq!(r.list_active(T0 + 10).await.unwrap(), vec![lock]);
    let runs = r.list_history("sows/old.md").await.unwrap();
    assert_eq!(runs.len(), 2);
    let (old, current) = (&runs[0], &runs[1]);
    assert_eq!(old.model, "unknown");
    assert_eq!(old.compute_type, "ec2");
    assert_eq!(old.outcome, Some(Outcome::Error));
    assert_eq!(old.duration_seconds, Some(1000));
    assert_eq!(old.prs_opened, None);
    assert_eq!(current.model, "claude-fable-5");
    assert_eq!(current.compute_type, "ec2:t3.xlarge");
    assert_eq!(r.scan_history().await.unwrap().len(), 2);

    // The old tool's lock is honoured and its worker's release finalizes
    // its row; the lock never had a slot, and that is fine.
    assert!(matches!(
        r.acquire(&req("sows/old.md", "new"), T0 + 10).await,
        Err(AcquireError::Held { .. })
    ));
    let out = r
        .release(
            &ReleaseRequest {
                sow: "sows/old.md".into(),
                by: ReleaseBy::Instance("i-0old".into()),
                outcome: Outcome::Success,
                prs_opened: 2,
                model: None,
            },
            T0 + 3600,
        )
        .await
        .unwrap();
    assert!(matches!(out, Released::Released { .. }), "{out:?}");
    let run = &r.list_history("sows/old.md").await.unwrap()[1];
    assert_eq!(run.duration_seconds, Some(3600));
    assert_eq!(run.model, "claude-fable-5");
}

#[tokio::test]
async fn rows_devstack_writes_have_the_old_attributes_and_the_locks_slot() {
    let f = dynamo(10).await;
    let client = f.client.clone().unwrap();
    let r = &*f.registry;
    let request = AcquireRequest {
        dispatched_by: Some("octocat".into()),
        model: Some("claude-opus-5".into()),
        ..req("sows/a.md", "d1")
    };
    r.acquire(&request, T0).await.unwrap();
    let run_sk = format!("RUN#{T0:020}#d1");

    // The old tool's attributes, plus `fleet_slot`: the slot the lock took,
    // so the worker's release can free it by key. The old tool ignores
    // attributes it does not know.
    let lock_shape = expected(&[
        ("sow", "S"),
        ("sk", "S"),
        ("status", "S"),
        ("dispatch_id", "S"),
        ("started_at", "N"),
        ("updated_at", "N"),
        ("expires_at", "N"),
        ("dispatched_by", "S"),
        (LOCK_SLOT_ATTR, "S"),
    ]);
    let lock = raw_item(&client, "sows/a.md", "LOCK").await.unwrap();
    assert_eq!(shape(&lock), lock_shape);
    assert_eq!(lock["status"], s("working"));
    assert_eq!(lock["expires_at"], n(T0 + 7 * 3600));
    let slot = r.list_slots().await.unwrap()[0].slot;
    assert_eq!(lock[LOCK_SLOT_ATTR], s(&slot_sk(slot)));

    let run_shape = expected(&[
        ("sow", "S"),
        ("sk", "S"),
        ("dispatch_id", "S"),
        ("doc_type", "S"),
        ("compute_type", "S"),
        ("model", "S"),
        ("status", "S"),
        ("started_at", "N"),
        ("updated_at", "N"),
        ("dispatched_by", "S"),
    ]);
    let run = raw_item(&client, "sows/a.md", &run_sk).await.unwrap();
    assert_eq!(shape(&run), run_shape);
    assert_eq!(run["compute_type"], s("ec2"));

    r.attach(
        &AttachRequest {
            sow: "sows/a.md".into(),
            dispatch_id: "d1".into(),
            instance_id: "i-1".into(),
            compute_type: Some("ec2:t3.xlarge".into()),
        },
        T0 + 1,
    )
    .await
    .unwrap();
    r.release(
        &ReleaseRequest {
            sow: "sows/a.md".into(),
            by: ReleaseBy::Instance("i-1".into()),
            outcome: Outcome::Success,
            prs_opened: 1,
            model: Some("claude-sonnet-5".into()),
        },
        T0 + 100,
    )
    .await
    .unwrap();

    let mut lock_shape = lock_shape;
    lock_shape.insert("instance_id".into(), "S");
    let lock = raw_item(&client, "sows/a.md", "LOCK").await.unwrap();
    assert_eq!(shape(&lock), lock_shape);
    assert_eq!(lock["status"], s("done"), "success is stored as done");

    let mut run_shape = run_shape;
    for (k, t) in [
        ("instance_id", "S"),
        ("outcome", "S"),
        ("finished_at", "N"),
        ("duration_seconds", "N"),
        ("prs_opened", "N"),
    ] {
        run_shape.insert(k.into(), t);
    }
    let run = raw_item(&client, "sows/a.md", &run_sk).await.unwrap();
    assert_eq!(shape(&run), run_shape, "no expires_at, nothing new");
    assert_eq!(run["outcome"], s("success"));
    assert_eq!(run["status"], s("done"));
    assert_eq!(run["duration_seconds"], n(100));
    assert_eq!(run["model"], s("claude-sonnet-5"));
    assert_eq!(run["compute_type"], s("ec2:t3.xlarge"));
}

#[tokio::test]
async fn slot_items_are_invisible_to_the_old_tools_reads() {
    let f = dynamo(10).await;
    let client = f.client.clone().unwrap();
    let r = &*f.registry;
    r.acquire(&req("sows/a.md", "d1"), T0).await.unwrap();
    r.acquire(&req("sows/b.md", "d2"), T0).await.unwrap();
    let slots = r.list_slots().await.unwrap();
    assert_eq!(slots.len(), 2);
    let slot = raw_item(&client, FLEET_PARTITION, &slot_sk(slots[0].slot))
        .await
        .unwrap();
    assert!(slot.contains_key("expires_at"), "slots expire like locks");

    // The old tool's `list` scan and history scan, verbatim.
    let list = client
        .scan()
        .table_name(RUNS_TABLE)
        .filter_expression("sk = :lock AND #status = :working AND expires_at > :now")
        .expression_attribute_names("#status", "status")
        .expression_attribute_values(":lock", s("LOCK"))
        .expression_attribute_values(":working", s("working"))
        .expression_attribute_values(":now", n(T0))
        .send()
        .await
        .unwrap();
    let listed: Vec<_> = list.items().iter().map(|i| i["sow"].clone()).collect();
    assert_eq!(listed.len(), 2);
    assert!(!listed.contains(&s(FLEET_PARTITION)));
    let history = client
        .scan()
        .table_name(RUNS_TABLE)
        .filter_expression("begins_with(sk, :run)")
        .expression_attribute_values(":run", s("RUN#"))
        .send()
        .await
        .unwrap();
    assert_eq!(history.items().len(), 2);
    assert!(history
        .items()
        .iter()
        .all(|i| i["sow"] != s(FLEET_PARTITION)));
}

#[tokio::test]
async fn a_slot_leaked_by_the_python_tools_release_is_reclaimed_at_cap() {
    let f = dynamo(1).await;
    let client = f.client.clone().unwrap();
    let r = &*f.registry;
    r.acquire(&req("sows/a.md", "da"), T0).await.unwrap();
    attach(r, "sows/a.md", "da", "i-a", T0).await;
    // The Python tool's release (an operator's `release --force`): it sets
    // the lock's status and knows nothing of slots.
    client
        .update_item()
        .table_name(RUNS_TABLE)
        .key("sow", s("sows/a.md"))
        .key("sk", s("LOCK"))
        .update_expression("SET #status = :status, updated_at = :now")
        .condition_expression("attribute_exists(sow)")
        .expression_attribute_names("#status", "status")
        .expression_attribute_values(":status", s("error"))
        .expression_attribute_values(":now", n(T0 + 60))
        .send()
        .await
        .unwrap();
    assert_eq!(r.list_slots().await.unwrap().len(), 1, "the slot leaked");

    // cap = 1 and the only slot is leaked: the next acquire takes it over.
    r.acquire(&req("sows/b.md", "db"), T0 + 120).await.unwrap();
    assert_eq!(
        held_slots(r, T0 + 120).await,
        [("sows/b.md".to_string(), "db".to_string())]
    );
    // And the cap still holds against a live lock.
    assert!(matches!(
        r.acquire(&req("sows/c.md", "dc"), T0 + 130).await,
        Err(AcquireError::AtCap { cap: 1 })
    ));
    // A leaked slot of the ticket being acquired is reclaimed too.
    client
        .update_item()
        .table_name(RUNS_TABLE)
        .key("sow", s("sows/b.md"))
        .key("sk", s("LOCK"))
        .update_expression("SET #status = :status")
        .expression_attribute_names("#status", "status")
        .expression_attribute_values(":status", s("done"))
        .send()
        .await
        .unwrap();
    r.acquire(&req("sows/b.md", "db2"), T0 + 140).await.unwrap();
    assert_eq!(
        held_slots(r, T0 + 140).await,
        [("sows/b.md".to_string(), "db2".to_string())]
    );
}

/// Reads that span several pages (DynamoDB answers at most 1 MB per
/// Query or Scan) return every row: the history of one ticket (Query), the
/// whole history (Scan), the exporter's whole table, and the active locks
/// from the lock index.
#[tokio::test]
async fn reads_past_one_page_return_every_row() {
    let f = dynamo(10).await;
    let client = f.client.clone().unwrap();
    let r = f.registry.clone();
    let now = 1_800_000_000;
    // 150 finished runs of one ticket, 10 KB each: about 1.5 MB.
    let pad = "x".repeat(10_000);
    for chunk in (0..150).collect::<Vec<i64>>().chunks(25) {
        let writes = chunk
            .iter()
            .map(|i| {
                let started = 1_700_000_000 + i * 3_600;
                let item = std::collections::HashMap::from([
                    ("sow".to_string(), s("sows/big.md")),
                    ("sk".to_string(), s(&format!("RUN#{started:020}#d{i}"))),
                    ("dispatch_id".to_string(), s(&format!("d{i}"))),
                    ("doc_type".to_string(), s("sow")),
                    ("compute_type".to_string(), s("ec2")),
                    ("model".to_string(), s("claude-opus-5")),
                    ("status".to_string(), s("done")),
                    ("started_at".to_string(), n(started)),
                    ("updated_at".to_string(), n(started)),
                    ("notes".to_string(), s(&pad)),
                ]);
                aws_sdk_dynamodb::types::WriteRequest::builder()
                    .put_request(
                        aws_sdk_dynamodb::types::PutRequest::builder()
                            .set_item(Some(item))
                            .build()
                            .unwrap(),
                    )
                    .build()
            })
            .collect();
        client
            .batch_write_item()
            .request_items(RUNS_TABLE, writes)
            .send()
            .await
            .unwrap();
    }
    // 30 live locks, 40 KB each: the lock index pages too.
    for i in 0..30 {
        let item = std::collections::HashMap::from([
            ("sow".to_string(), s(&format!("sows/live-{i}.md"))),
            ("sk".to_string(), s("LOCK")),
            ("status".to_string(), s("working")),
            ("dispatch_id".to_string(), s(&format!("l{i}"))),
            ("started_at".to_string(), n(now - 60)),
            ("updated_at".to_string(), n(now - 60)),
            ("expires_at".to_string(), n(now + 3_600)),
            ("notes".to_string(), s(&"y".repeat(40_000))),
        ]);
        client
            .put_item()
            .table_name(RUNS_TABLE)
            .set_item(Some(item))
            .send()
            .await
            .unwrap();
    }
    let pages = client
        .scan()
        .table_name(RUNS_TABLE)
        .send()
        .await
        .unwrap()
        .last_evaluated_key
        .is_some();
    assert!(pages, "the table must span more than one Scan page");
    let index_pages = client
        .query()
        .table_name(RUNS_TABLE)
        .index_name(devstack::fleet::dynamo::LOCK_INDEX)
        .key_condition_expression("sk = :lock AND expires_at > :now")
        .expression_attribute_values(":lock", s("LOCK"))
        .expression_attribute_values(":now", n(now))
        .send()
        .await
        .unwrap()
        .last_evaluated_key
        .is_some();
    assert!(index_pages, "the lock index must span more than one page");
    assert_eq!(r.list_history("sows/big.md").await.unwrap().len(), 150);
    assert_eq!(r.scan_history().await.unwrap().len(), 150);
    assert_eq!(r.list_active(now).await.unwrap().len(), 30);
    let dynamo = DynamoRegistry::new(client.clone(), RUNS_TABLE, 10);
    let rows = dynamo.scan_table().await.unwrap();
    assert_eq!(rows.runs.len(), 150);
    assert_eq!(rows.locks.len(), 30);
}
