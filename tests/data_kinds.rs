//! The data kinds (`aws_dynamodb_table`, `aws_cloudwatch_log_group`)
//! against moto through the provider's own `Kind` API: what `create`
//! makes, `read` returns unchanged (so a fresh apply plans a no-op), an
//! update lands, `find` adopts by name, and `delete` removes.

mod common;

use common::Moto;
use devstack::aws::dynamodb_table::{
    BillingMode, DynamoDbTable, GlobalIndex, KeyAttribute, Projection,
};
use devstack::aws::log_group::LogGroup;
use devstack::aws::AwsProvider;
use devstack::engine::provider::{FindRequest, Kind, Live, Meta, Provider, ReadRequest};
use serde_json::Value;

fn meta() -> Meta {
    Meta {
        stack: "devstack-test".into(),
        env: "dev".into(),
    }
}

async fn read_one(kind: &dyn Kind, id: &str) -> Option<Live> {
    let req = ReadRequest {
        address: "x".into(),
        id: id.into(),
        attrs: Value::Null,
    };
    kind.read(&[req]).await.unwrap().pop().unwrap()
}

fn runs_table() -> DynamoDbTable {
    DynamoDbTable {
        name: "devstack-test-runs".into(),
        billing_mode: BillingMode::PayPerRequest,
        hash_key: KeyAttribute::string("sow"),
        range_key: Some(KeyAttribute::string("sk")),
        ttl_attribute: Some("expires_at".into()),
        global_indexes: vec![lock_index()],
        tags: [("Name", "devstack-test-runs"), ("ManagedBy", "devstack")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn lock_index() -> GlobalIndex {
    GlobalIndex {
        name: "locks-by-expiry".into(),
        hash_key: KeyAttribute::string("sk"),
        range_key: Some(KeyAttribute::number("expires_at")),
        projection: Projection::All,
    }
}

#[tokio::test]
async fn a_table_reads_back_as_created_and_updates_ttl_and_tags_in_place() {
    let moto = Moto::start();
    let cfg = moto.sdk_config().await;
    let provider = AwsProvider::new(&cfg);
    let kind = provider.kind("aws_dynamodb_table").unwrap();
    let want = runs_table();
    let desired = serde_json::to_value(&want).unwrap();

    let created = kind
        .create(&meta(), "dynamodb_table.runs", &desired)
        .await
        .unwrap();
    assert_eq!(created.id, want.name);
    assert_eq!(created.outputs["name"], want.name);
    let arn = created.outputs["arn"].as_str().unwrap().to_string();
    assert!(arn.ends_with(":table/devstack-test-runs"), "{arn}");

    // Read back equals what was asked for: a fresh apply plans a no-op
    // (the ownership tags are on the table but never in the body).
    let live = read_one(kind.as_ref(), &want.name).await.unwrap();
    assert_eq!(live.attrs, desired);
    assert_eq!(live.outputs["arn"], arn.as_str());
    let ddb = aws_sdk_dynamodb::Client::new(&cfg);
    let tags = ddb
        .list_tags_of_resource()
        .resource_arn(&arn)
        .send()
        .await
        .unwrap();
    assert!(tags
        .tags()
        .iter()
        .any(|t| t.key() == "devstack:address" && t.value() == "dynamodb_table.runs"));

    // TTL moves to another attribute; a tag goes, another comes.
    let mut next = want.clone();
    next.ttl_attribute = Some("purge_at".into());
    next.tags.remove("Name");
    next.tags.insert("Team".into(), "platform".into());
    let next_body = serde_json::to_value(&next).unwrap();
    kind.update(
        &meta(),
        "dynamodb_table.runs",
        &want.name,
        &live.attrs,
        &next_body,
    )
    .await
    .unwrap();
    let live = read_one(kind.as_ref(), &want.name).await.unwrap();
    assert_eq!(live.attrs, next_body);

    // Found by its name alone (a crashed apply, or a table that predates devstack).
    let found = kind
        .find(
            &meta(),
            &[FindRequest {
                address: "dynamodb_table.runs".into(),
                desired: next_body.clone(),
            }],
        )
        .await
        .unwrap();
    assert_eq!(
        found[0].as_ref().map(|l| l.id.as_str()),
        Some("devstack-test-runs")
    );

    kind.delete(&want.name, &live.attrs).await.unwrap();
    assert!(read_one(kind.as_ref(), &want.name).await.is_none());
}

/// The runs table as Terraform made it (no index, rows in it) gains the
/// lock index in place and loses it again: the same table throughout,
/// every row kept, and the index answers a query for the lock rows only.
#[tokio::test]
async fn an_index_is_added_to_a_live_table_in_place_and_removed_again() {
    let moto = Moto::start();
    let cfg = moto.sdk_config().await;
    let provider = AwsProvider::new(&cfg);
    let kind = provider.kind("aws_dynamodb_table").unwrap();
    let ddb = aws_sdk_dynamodb::Client::new(&cfg);
    let mut old = runs_table();
    old.global_indexes.clear();
    let old_body = serde_json::to_value(&old).unwrap();
    kind.create(&meta(), "dynamodb_table.runs", &old_body)
        .await
        .unwrap();
    let created_at = ddb
        .describe_table()
        .table_name(&old.name)
        .send()
        .await
        .unwrap()
        .table()
        .and_then(|t| t.creation_date_time().cloned())
        .unwrap();
    use aws_sdk_dynamodb::types::AttributeValue::{N, S};
    for (sow, sk, expires) in [
        ("sows/a.md", "LOCK", Some("2000000000")),
        ("sows/a.md", "RUN#00000000001700000000#d1", None),
        ("sows/b.md", "RUN#00000000001700000001#d2", None),
    ] {
        let mut put = ddb
            .put_item()
            .table_name(&old.name)
            .item("sow", S(sow.into()))
            .item("sk", S(sk.into()));
        if let Some(e) = expires {
            put = put.item("expires_at", N(e.into()));
        }
        put.send().await.unwrap();
    }

    let want = runs_table();
    let want_body = serde_json::to_value(&want).unwrap();
    let live = read_one(kind.as_ref(), &old.name).await.unwrap();
    assert_eq!(live.attrs, old_body, "read back without the index");
    kind.update(
        &meta(),
        "dynamodb_table.runs",
        &old.name,
        &live.attrs,
        &want_body,
    )
    .await
    .unwrap();
    let live = read_one(kind.as_ref(), &old.name).await.unwrap();
    assert_eq!(live.attrs, want_body, "the index reads back as declared");
    let table = ddb
        .describe_table()
        .table_name(&old.name)
        .send()
        .await
        .unwrap();
    let table = table.table().unwrap();
    assert_eq!(
        table.creation_date_time(),
        Some(&created_at),
        "not replaced"
    );
    assert_eq!(table.item_count(), Some(3), "every row kept");
    let locks = ddb
        .query()
        .table_name(&old.name)
        .index_name("locks-by-expiry")
        .key_condition_expression("sk = :lock AND expires_at > :now")
        .expression_attribute_values(":lock", S("LOCK".into()))
        .expression_attribute_values(":now", N("1".into()))
        .send()
        .await
        .unwrap();
    assert_eq!(locks.count(), 1, "the index holds the lock row only");
    assert_eq!(locks.items()[0]["sow"], S("sows/a.md".into()));

    kind.update(
        &meta(),
        "dynamodb_table.runs",
        &old.name,
        &live.attrs,
        &old_body,
    )
    .await
    .unwrap();
    let live = read_one(kind.as_ref(), &old.name).await.unwrap();
    assert_eq!(live.attrs, old_body, "the index is gone");
    let table = ddb
        .describe_table()
        .table_name(&old.name)
        .send()
        .await
        .unwrap();
    assert_eq!(table.table().unwrap().item_count(), Some(3));
}

#[tokio::test]
async fn a_log_group_reads_back_as_created_and_updates_retention_and_tags() {
    let moto = Moto::start();
    let cfg = moto.sdk_config().await;
    let provider = AwsProvider::new(&cfg);
    let kind = provider.kind("aws_cloudwatch_log_group").unwrap();
    let want = LogGroup {
        name: "/aws/ec2/devstack-test".into(),
        retention_days: Some(30),
        tags: [("Project".to_string(), "devstack-test".to_string())]
            .into_iter()
            .collect(),
    };
    let desired = serde_json::to_value(&want).unwrap();

    let created = kind
        .create(&meta(), "log_group.workers", &desired)
        .await
        .unwrap();
    assert_eq!(created.id, want.name);
    let arn = created.outputs["arn"].as_str().unwrap();
    assert!(
        arn.ends_with(":log-group:/aws/ec2/devstack-test"),
        "the ARN output has no `:*` suffix: {arn}"
    );

    // A group whose name merely starts with ours is not ours.
    let logs = aws_sdk_cloudwatchlogs::Client::new(&cfg);
    logs.create_log_group()
        .log_group_name("/aws/ec2/devstack-test-other")
        .send()
        .await
        .unwrap();

    let live = read_one(kind.as_ref(), &want.name).await.unwrap();
    assert_eq!(live.attrs, desired);
    assert_eq!(live.outputs["arn"], arn);

    let mut next = want.clone();
    next.retention_days = None;
    next.tags.insert("ManagedBy".into(), "devstack".into());
    let next_body = serde_json::to_value(&next).unwrap();
    kind.update(
        &meta(),
        "log_group.workers",
        &want.name,
        &live.attrs,
        &next_body,
    )
    .await
    .unwrap();
    let live = read_one(kind.as_ref(), &want.name).await.unwrap();
    assert_eq!(live.attrs, next_body);

    let found = kind
        .find(
            &meta(),
            &[FindRequest {
                address: "log_group.workers".into(),
                desired: next_body.clone(),
            }],
        )
        .await
        .unwrap();
    assert!(found[0].is_some());

    kind.delete(&want.name, &live.attrs).await.unwrap();
    assert!(read_one(kind.as_ref(), &want.name).await.is_none());
    assert!(read_one(kind.as_ref(), "/aws/ec2/devstack-test-other")
        .await
        .is_some());
}
