//! What the fleet tests share on top of `tests/common`: the runs table as
//! the stack creates it, a launch template for dispatch, raw item helpers
//! for wire-format checks, and ([`iam`]) the worker role's permissions.
#![allow(dead_code)]

pub mod iam;

use std::collections::HashMap;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};

use crate::common::REGION;

/// The prod runs table name: the CLI's default when no `--table` is given.
pub const RUNS_TABLE: &str = "prog-strength-developer-runs";
/// The prod worker `Name` tag.
pub const WORKER_NAME: &str = "prog-strength-developer-worker";

/// An SDK config for `endpoint` (what `common::Moto::sdk_config` builds).
pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    let creds =
        aws_sdk_dynamodb::config::Credentials::new("testing", "testing", None, None, "test");
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(creds)
        .load()
        .await
}

pub async fn dynamodb(endpoint: &str) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&sdk_config(endpoint).await)
}

pub async fn ec2(endpoint: &str) -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::new(&sdk_config(endpoint).await)
}

/// moto's server, with every request handled under one lock.
///
/// WHERE MOTO DIFFERS FROM AWS: the stock server (`common::Moto`) handles
/// requests on parallel threads, and its TransactWriteItems deep-copies
/// the table first and restores that copy when the transaction is
/// cancelled, with no lock. A cancelled transaction can therefore undo a
/// concurrent one that committed; under 15 racing acquires with cap 10
/// that let 11 win in 2 of 15 runs. DynamoDB serializes conflicting
/// transactions, which is what the cap relies on. Tests that race use this
/// server: the clients still race for real; the server just keeps the
/// isolation DynamoDB documents.
pub struct SerialMoto {
    child: Child,
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

const SERIAL_SERVER: &str = r#"
import sys, threading
from moto import server
from moto.moto_server.werkzeug_app import DomainDispatcherApplication
lock = threading.Lock()
call = DomainDispatcherApplication.__call__
def serial(self, environ, start_response):
    with lock:
        return list(call(self, environ, start_response))
DomainDispatcherApplication.__call__ = serial
server.main(sys.argv[1:])
"#;

impl SerialMoto {
    pub fn start() -> SerialMoto {
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        for _attempt in 0..5 {
            let dir = tempfile::tempdir().expect("tempdir");
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port");
            let child = Command::new(&python)
                .args([
                    "-c",
                    SERIAL_SERVER,
                    "-H",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                ])
                .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(dir.path().join("moto.log")).expect("log"))
                .stderr(std::fs::File::create(dir.path().join("moto.err")).expect("log"))
                .spawn()
                .expect("start moto");
            let mut moto = SerialMoto {
                child,
                endpoint: format!("http://127.0.0.1:{port}"),
                _dir: dir,
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = moto.child.try_wait() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return moto;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = moto.child.kill();
        }
        panic!("moto did not start after 5 attempts");
    }

    /// A `devstack` command wired to this endpoint (as `common::devstack`).
    pub fn devstack(&self, dir: &Path) -> assert_cmd::Command {
        let mut cmd = assert_cmd::Command::cargo_bin("devstack").expect("devstack binary");
        cmd.current_dir(dir);
        for (k, v) in endpoint_env(&self.endpoint) {
            cmd.env(k, v);
        }
        cmd.env_remove("AWS_PROFILE");
        cmd.env_remove("RUST_LOG");
        cmd
    }
}

impl Drop for SerialMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The environment `common::Moto::env` gives a process, for any endpoint.
pub fn endpoint_env(endpoint: &str) -> Vec<(String, String)> {
    vec![
        ("AWS_ENDPOINT_URL".into(), endpoint.to_string()),
        ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
        ("AWS_REGION".into(), REGION.into()),
        ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ("AWS_CONFIG_FILE".into(), "/nonexistent".into()),
        ("AWS_SHARED_CREDENTIALS_FILE".into(), "/nonexistent".into()),
        ("NO_COLOR".into(), "1".into()),
    ]
}

/// Creates the runs table as platform.md §1 describes it: hash `sow` (S),
/// range `sk` (S), on-demand, TTL on `expires_at`, and the stack's sparse lock
/// index (hash `sk`, range `expires_at`).
pub async fn create_runs_table(client: &aws_sdk_dynamodb::Client, name: &str) {
    create_table(client, name, true).await
}

/// The runs table as Terraform made it: no lock index (the fleet falls
/// back to scanning it).
pub async fn create_runs_table_without_index(client: &aws_sdk_dynamodb::Client, name: &str) {
    create_table(client, name, false).await
}

async fn create_table(client: &aws_sdk_dynamodb::Client, name: &str, lock_index: bool) {
    let attr = |n: &str, t: ScalarAttributeType| {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(t)
            .build()
            .unwrap()
    };
    let key = |n: &str, t: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(n)
            .key_type(t)
            .build()
            .unwrap()
    };
    let mut create = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("sow", ScalarAttributeType::S))
        .attribute_definitions(attr("sk", ScalarAttributeType::S))
        .key_schema(key("sow", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range));
    if lock_index {
        create = create
            .attribute_definitions(attr("expires_at", ScalarAttributeType::N))
            .global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(devstack::fleet::dynamo::LOCK_INDEX)
                    .key_schema(key("sk", KeyType::Hash))
                    .key_schema(key("expires_at", KeyType::Range))
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::All)
                            .build(),
                    )
                    .build()
                    .unwrap(),
            );
    }
    create.send().await.expect("create the runs table");
    client
        .update_time_to_live()
        .table_name(name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name("expires_at")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("enable TTL");
}

/// A launch template like the stack's (instance type, worker Name tag),
/// with an AMI moto knows. Returns its id.
pub async fn create_launch_template(client: &aws_sdk_ec2::Client) -> String {
    use aws_sdk_ec2::types::{
        InstanceType, LaunchTemplateTagSpecificationRequest, RequestLaunchTemplateData,
        ResourceType, Tag,
    };
    let images = client
        .describe_images()
        .owners("amazon")
        .send()
        .await
        .expect("describe images");
    let image = images
        .images()
        .iter()
        .find_map(|i| i.image_id())
        .expect("moto knows an AMI")
        .to_string();
    let out = client
        .create_launch_template()
        .launch_template_name("prog-strength-developer-worker")
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id(image)
                .instance_type(InstanceType::T3Xlarge)
                .tag_specifications(
                    LaunchTemplateTagSpecificationRequest::builder()
                        .resource_type(ResourceType::Instance)
                        .tags(Tag::builder().key("Name").value(WORKER_NAME).build())
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("create the launch template");
    out.launch_template()
        .and_then(|t| t.launch_template_id())
        .expect("a launch template id")
        .to_string()
}

/// Live (pending or running) instances carrying `Name=<worker name>`.
pub async fn live_workers(client: &aws_sdk_ec2::Client) -> Vec<aws_sdk_ec2::types::Instance> {
    let out = client
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:Name")
                .values(WORKER_NAME)
                .build(),
        )
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .build(),
        )
        .send()
        .await
        .expect("describe instances");
    out.reservations()
        .iter()
        .flat_map(|r| r.instances().to_vec())
        .collect()
}

pub fn tag<'a>(instance: &'a aws_sdk_ec2::types::Instance, key: &str) -> Option<&'a str> {
    instance
        .tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

/// One stored item, raw.
pub async fn raw_item(
    client: &aws_sdk_dynamodb::Client,
    sow: &str,
    sk: &str,
) -> Option<HashMap<String, AttributeValue>> {
    client
        .get_item()
        .table_name(RUNS_TABLE)
        .key("sow", AttributeValue::S(sow.into()))
        .key("sk", AttributeValue::S(sk.into()))
        .consistent_read(true)
        .send()
        .await
        .expect("get item")
        .item
}

pub fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// A table that has seen months of work, in the Python tool's wire format:
/// finished history rows `rows` spread over `tickets` tickets, and for each
/// ticket first seen in `rows`, a lock a worker that died long ago left
/// `working`: expired, so not active whatever its status says.
pub async fn seed_past(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    rows: std::ops::Range<usize>,
    tickets: usize,
) {
    use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
    let ticket = |i: usize| format!("sows/old-{}.md", i % tickets);
    let mut items: Vec<HashMap<String, AttributeValue>> = Vec::new();
    for i in rows.clone() {
        let started = 1_700_000_000 + i as i64 * 3_600;
        items.push(HashMap::from([
            ("sow".to_string(), s(&ticket(i))),
            ("sk".to_string(), s(&format!("RUN#{started:020}#seed{i}"))),
            ("dispatch_id".to_string(), s(&format!("seed{i}"))),
            ("doc_type".to_string(), s("sow")),
            ("compute_type".to_string(), s("ec2:t3.xlarge")),
            ("model".to_string(), s("claude-opus-5")),
            ("status".to_string(), s("done")),
            ("started_at".to_string(), n(started)),
            ("updated_at".to_string(), n(started + 1_800)),
            ("outcome".to_string(), s("success")),
            ("finished_at".to_string(), n(started + 1_800)),
            ("duration_seconds".to_string(), n(1_800)),
            ("prs_opened".to_string(), n(2)),
        ]));
    }
    for t in rows.start.min(tickets)..rows.end.min(tickets) {
        items.push(HashMap::from([
            ("sow".to_string(), s(&ticket(t))),
            ("sk".to_string(), s("LOCK")),
            ("dispatch_id".to_string(), s(&format!("seed{t}"))),
            ("status".to_string(), s("working")),
            ("started_at".to_string(), n(1_700_000_000)),
            ("updated_at".to_string(), n(1_700_000_000)),
            ("expires_at".to_string(), n(1_700_025_200)),
        ]));
    }
    for chunk in items.chunks(25) {
        let writes = chunk
            .iter()
            .map(|item| {
                WriteRequest::builder()
                    .put_request(
                        PutRequest::builder()
                            .set_item(Some(item.clone()))
                            .build()
                            .expect("a put request"),
                    )
                    .build()
            })
            .collect();
        client
            .batch_write_item()
            .request_items(table, writes)
            .send()
            .await
            .expect("seed the history");
    }
}
