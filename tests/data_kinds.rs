//! The data kinds (`aws_dynamodb_table`, `aws_cloudwatch_log_group`)
//! against moto through the provider's own `Kind` API: what `create`
//! makes, `read` returns unchanged (so a fresh apply plans a no-op), an
//! update lands, `find` adopts by name, and `delete` removes.

mod common;

use common::Moto;
use devstack::aws::dynamodb_table::{BillingMode, DynamoDbTable, KeyAttribute};
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
        tags: [("Name", "devstack-test-runs"), ("ManagedBy", "devstack")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
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
