//! The benchmark proxy (bench/proxy.rs) against a real moto through the
//! real AWS SDK: pass-through, counting per action, delay, and faults the
//! SDK classifies as retryable.

mod common;
#[path = "../bench/proxy.rs"]
mod proxy;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use common::{Moto, REGION};
use proxy::{Fault, Proxy, ProxyConfig};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// An SDK config aimed at `endpoint` with the given retry behaviour.
async fn sdk_config(endpoint: &str, retry: RetryConfig) -> aws_config::SdkConfig {
    let creds =
        aws_sdk_dynamodb::config::Credentials::new("testing", "testing", None, None, "test");
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(creds)
        .retry_config(retry)
        .load()
        .await
}

/// The SDK's standard retry mode, with a short backoff to keep tests fast.
fn standard(max_attempts: u32) -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(max_attempts)
        .with_initial_backoff(Duration::from_millis(10))
}

/// VPCs with exactly this CIDR, read straight from moto (not via a proxy).
async fn vpcs_with_cidr(moto: &Moto, cidr: &str) -> usize {
    let ec2 = aws_sdk_ec2::Client::new(&moto.sdk_config().await);
    let out = ec2
        .describe_vpcs()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("cidr")
                .values(cidr)
                .build(),
        )
        .send()
        .await
        .expect("DescribeVpcs straight to moto");
    out.vpcs().len()
}

fn status_of<E>(err: &SdkError<E, aws_sdk_ec2::config::http::HttpResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

#[tokio::test]
async fn passes_through_and_counts_actions() {
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.endpoint, ProxyConfig::transparent()).await;
    let cfg = sdk_config(proxy.url(), RetryConfig::disabled()).await;
    let ec2 = aws_sdk_ec2::Client::new(&cfg);
    let ddb = aws_sdk_dynamodb::Client::new(&cfg);

    let vpcs = ec2
        .describe_vpcs()
        .send()
        .await
        .expect("DescribeVpcs via proxy");
    assert!(!vpcs.vpcs().is_empty(), "moto's default VPC is visible");
    let tables = ddb
        .list_tables()
        .send()
        .await
        .expect("ListTables via proxy");
    assert!(tables.table_names().is_empty());

    assert_eq!(proxy.request_count(), 2);
    assert_eq!(proxy.forwarded_count(), 2);
    assert_eq!(
        proxy.action_counts(),
        BTreeMap::from([
            ("DescribeVpcs".to_string(), 1),
            ("ListTables".to_string(), 1)
        ])
    );
    let records = proxy.requests();
    assert_eq!(records[0].action, "DescribeVpcs");
    assert_eq!(records[0].service.as_deref(), Some("ec2"));
    assert_eq!(records[1].action, "ListTables");
    assert_eq!(records[1].service.as_deref(), Some("dynamodb"));
    assert!(records.iter().all(|r| r.forwarded && r.fault.is_none()));
    assert!(records[0].received <= records[1].received);

    // Writes go through too, and land in moto.
    ec2.create_vpc()
        .cidr_block("10.42.0.0/16")
        .send()
        .await
        .expect("CreateVpc via proxy");
    assert_eq!(vpcs_with_cidr(&moto, "10.42.0.0/16").await, 1);
    assert_eq!(proxy.action_counts()["CreateVpc"], 1);

    proxy.reset_count();
    assert_eq!(proxy.request_count(), 0);
    assert_eq!(proxy.forwarded_count(), 0);
    assert!(proxy.requests().is_empty());
}

#[tokio::test]
async fn delay_is_added_to_every_request() {
    assert_eq!(ProxyConfig::default().delay, Duration::from_millis(50));
    let moto = Moto::start();
    let proxy = Proxy::start(
        &moto.endpoint,
        ProxyConfig::transparent().with_delay(Duration::from_millis(100)),
    )
    .await;
    let ec2 = aws_sdk_ec2::Client::new(&sdk_config(proxy.url(), RetryConfig::disabled()).await);
    let started = Instant::now();
    ec2.describe_vpcs()
        .send()
        .await
        .expect("DescribeVpcs via proxy");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(100), "took {took:?}");
    assert_eq!(proxy.request_count(), 1);
}

#[tokio::test]
async fn fault_before_forward_never_reaches_moto() {
    let moto = Moto::start();
    let proxy = Proxy::start(
        &moto.endpoint,
        ProxyConfig::transparent().with_faults(1.0, &[Fault::Status503]),
    )
    .await;
    let cfg = sdk_config(proxy.url(), RetryConfig::disabled()).await;
    let ec2 = aws_sdk_ec2::Client::new(&cfg);
    let ddb = aws_sdk_dynamodb::Client::new(&cfg);

    let err = ec2
        .create_vpc()
        .cidr_block("10.99.0.0/16")
        .send()
        .await
        .expect_err("CreateVpc must fail with a 503");
    assert_eq!(status_of(&err), Some(503), "{err:?}");
    assert_eq!(err.code(), Some("ServiceUnavailable"), "{err:?}");

    let err = ddb
        .list_tables()
        .send()
        .await
        .expect_err("ListTables must fail with a 503");
    assert_eq!(status_of(&err), Some(503), "{err:?}");
    assert_eq!(err.code(), Some("ServiceUnavailable"), "{err:?}");

    assert_eq!(proxy.request_count(), 2);
    assert_eq!(proxy.forwarded_count(), 0);
    assert!(proxy
        .requests()
        .iter()
        .all(|r| r.fault == Some(Fault::Status503) && !r.forwarded));
    assert_eq!(
        vpcs_with_cidr(&moto, "10.99.0.0/16").await,
        0,
        "moto never saw CreateVpc"
    );

    // Reconfigured at runtime: the same call now goes through.
    proxy.set_config(ProxyConfig::transparent());
    ec2.create_vpc()
        .cidr_block("10.99.0.0/16")
        .send()
        .await
        .expect("CreateVpc once faults are off");
    assert_eq!(vpcs_with_cidr(&moto, "10.99.0.0/16").await, 1);
    assert_eq!(proxy.forwarded_count(), 1);
}

#[tokio::test]
async fn fault_after_forward_loses_the_response_not_the_effect() {
    let moto = Moto::start();
    let proxy = Proxy::start(
        &moto.endpoint,
        ProxyConfig::transparent()
            .with_faults(1.0, &[Fault::Drop])
            .after_forward(true),
    )
    .await;
    let ec2 = aws_sdk_ec2::Client::new(&sdk_config(proxy.url(), RetryConfig::disabled()).await);

    let err = ec2
        .create_vpc()
        .cidr_block("10.77.0.0/16")
        .send()
        .await
        .expect_err("the response is dropped");
    assert!(matches!(err, SdkError::DispatchFailure(_)), "{err:?}");
    assert_eq!(
        vpcs_with_cidr(&moto, "10.77.0.0/16").await,
        1,
        "moto created it"
    );

    proxy.set_config(
        ProxyConfig::transparent()
            .with_faults(1.0, &[Fault::Status503])
            .after_forward(true),
    );
    let err = ec2
        .create_vpc()
        .cidr_block("10.78.0.0/16")
        .send()
        .await
        .expect_err("the response is replaced by a 503");
    assert_eq!(status_of(&err), Some(503), "{err:?}");
    assert_eq!(
        vpcs_with_cidr(&moto, "10.78.0.0/16").await,
        1,
        "moto created it"
    );

    assert_eq!(proxy.request_count(), 2);
    assert_eq!(proxy.forwarded_count(), 2);
    assert!(proxy
        .requests()
        .iter()
        .all(|r| r.forwarded && r.fault.is_some()));
}

/// Each fault, on EC2 (EC2 query), DynamoDB (awsJson 1.0) and IAM (awsQuery):
/// the SDK parses the error code it expects, and its standard retry mode
/// retries it.
#[tokio::test]
async fn every_fault_is_understood_and_retried_by_the_sdk() {
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.endpoint, ProxyConfig::transparent()).await;
    let no_retry = sdk_config(proxy.url(), RetryConfig::disabled()).await;
    let retry3 = sdk_config(proxy.url(), standard(3)).await;

    let cases = [
        (Fault::Status503, ["ServiceUnavailable"; 3]),
        (
            Fault::Throttling,
            ["RequestLimitExceeded", "ThrottlingException", "Throttling"],
        ),
        (Fault::Drop, [""; 3]),
    ];
    for (fault, codes) in cases {
        proxy.set_config(ProxyConfig::transparent().with_faults(1.0, &[fault]));

        // No retries: one attempt each, and the error the SDK reports.
        proxy.reset_count();
        let ec2 = aws_sdk_ec2::Client::new(&no_retry);
        let ddb = aws_sdk_dynamodb::Client::new(&no_retry);
        let iam = aws_sdk_iam::Client::new(&no_retry);
        let e1 = ec2.describe_vpcs().send().await.expect_err("ec2 faulted");
        let e2 = ddb
            .list_tables()
            .send()
            .await
            .expect_err("dynamodb faulted");
        let e3 = iam.list_roles().send().await.expect_err("iam faulted");
        let got = [
            (
                e1.code().map(str::to_string),
                matches!(e1, SdkError::DispatchFailure(_)),
                format!("{e1:?}"),
            ),
            (
                e2.code().map(str::to_string),
                matches!(e2, SdkError::DispatchFailure(_)),
                format!("{e2:?}"),
            ),
            (
                e3.code().map(str::to_string),
                matches!(e3, SdkError::DispatchFailure(_)),
                format!("{e3:?}"),
            ),
        ];
        for ((code, dispatch_failure, debug), want) in got.into_iter().zip(codes) {
            if fault == Fault::Drop {
                assert!(dispatch_failure, "{fault:?}: {debug}");
            } else {
                assert_eq!(code.as_deref(), Some(want), "{fault:?}: {debug}");
            }
        }
        assert_eq!(proxy.request_count(), 3, "{fault:?}: one attempt each");

        // Standard retries: every attempt is used, so each was retryable.
        proxy.reset_count();
        let ec2 = aws_sdk_ec2::Client::new(&retry3);
        let ddb = aws_sdk_dynamodb::Client::new(&retry3);
        let iam = aws_sdk_iam::Client::new(&retry3);
        ec2.describe_vpcs().send().await.expect_err("ec2 faulted");
        ddb.list_tables()
            .send()
            .await
            .expect_err("dynamodb faulted");
        iam.list_roles().send().await.expect_err("iam faulted");
        assert_eq!(
            proxy.action_counts(),
            BTreeMap::from([
                ("DescribeVpcs".to_string(), 3),
                ("ListRoles".to_string(), 3),
                ("ListTables".to_string(), 3),
            ]),
            "{fault:?}: three attempts each"
        );
        assert_eq!(proxy.forwarded_count(), 0);
    }
}

#[tokio::test]
async fn standard_retries_ride_out_30_percent_faults() {
    let moto = Moto::start();
    let proxy = Proxy::start(
        &moto.endpoint,
        ProxyConfig::transparent()
            .with_faults(0.3, &[Fault::Status503, Fault::Throttling, Fault::Drop])
            .with_seed(42),
    )
    .await;
    let cfg = sdk_config(proxy.url(), standard(8)).await;
    let ec2 = aws_sdk_ec2::Client::new(&cfg);
    let ddb = aws_sdk_dynamodb::Client::new(&cfg);

    for i in 0..20 {
        if i % 2 == 0 {
            ec2.describe_vpcs()
                .send()
                .await
                .unwrap_or_else(|e| panic!("DescribeVpcs #{i}: {e:?}"));
        } else {
            ddb.list_tables()
                .send()
                .await
                .unwrap_or_else(|e| panic!("ListTables #{i}: {e:?}"));
        }
    }
    let records = proxy.requests();
    let clean = records.iter().filter(|r| r.fault.is_none()).count();
    assert_eq!(clean, 20, "exactly one successful attempt per call");
    for kind in [Fault::Status503, Fault::Throttling, Fault::Drop] {
        assert!(
            records.iter().any(|r| r.fault == Some(kind)),
            "seed 42 injects {kind:?} at least once: {records:#?}"
        );
    }
    assert_eq!(proxy.request_count(), 20 + proxy.fault_count());
    assert_eq!(proxy.forwarded_count(), 20);
}

/// The gate: after `hold_after(2)`, two CreateVpc calls reach moto and the
/// third is held (moto never sees it, the client gets no answer) until
/// `release_hold`, after which it completes normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_holds_requests_after_n_until_released() {
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.endpoint, ProxyConfig::transparent()).await;
    let ec2 = aws_sdk_ec2::Client::new(&sdk_config(proxy.url(), RetryConfig::disabled()).await);
    proxy.hold_after(2);

    let client = tokio::spawn(async move {
        for cidr in ["10.61.0.0/16", "10.62.0.0/16", "10.63.0.0/16"] {
            ec2.create_vpc()
                .cidr_block(cidr)
                .send()
                .await
                .unwrap_or_else(|e| panic!("CreateVpc {cidr}: {e:?}"));
        }
    });
    let p = std::sync::Arc::new(proxy);
    let waiter = std::sync::Arc::clone(&p);
    let held = tokio::task::spawn_blocking(move || waiter.wait_held(Duration::from_secs(30)))
        .await
        .expect("wait_held");
    assert!(held, "the third CreateVpc is held");
    assert_eq!(p.forwarded_count(), 2);
    assert_eq!(p.held_count(), 1);
    assert!(
        !client.is_finished(),
        "the client is still waiting for its answer"
    );
    assert_eq!(vpcs_with_cidr(&moto, "10.62.0.0/16").await, 1);
    assert_eq!(
        vpcs_with_cidr(&moto, "10.63.0.0/16").await,
        0,
        "moto never saw the held request"
    );
    let records = p.requests();
    assert_eq!(
        records
            .iter()
            .map(|r| (r.held, r.forwarded))
            .collect::<Vec<_>>(),
        vec![(false, true), (false, true), (true, false)]
    );

    p.release_hold();
    client.await.expect("the client finishes once released");
    assert_eq!(vpcs_with_cidr(&moto, "10.63.0.0/16").await, 1);
    assert_eq!(p.held_count(), 0);
    assert_eq!(p.forwarded_count(), 3);
    assert!(p.requests()[2].forwarded, "released, then forwarded");

    // The gate stays open after a release.
    let ec2 = aws_sdk_ec2::Client::new(&sdk_config(p.url(), RetryConfig::disabled()).await);
    ec2.describe_vpcs().send().await.expect("DescribeVpcs");
    assert!(!p.wait_held(Duration::from_millis(50)), "nothing held");
}

/// What a crash test relies on: a request held when the proxy is dropped
/// never reaches moto, and the client sees its connection fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_request_is_never_forwarded_when_the_proxy_is_dropped() {
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.endpoint, ProxyConfig::transparent()).await;
    proxy.hold_after(0);
    let ec2 = aws_sdk_ec2::Client::new(&sdk_config(proxy.url(), RetryConfig::disabled()).await);
    let client =
        tokio::spawn(async move { ec2.create_vpc().cidr_block("10.64.0.0/16").send().await });
    let proxy = tokio::task::spawn_blocking(move || {
        assert!(proxy.wait_held(Duration::from_secs(30)), "held at once");
        assert_eq!(proxy.forwarded_count(), 0);
        proxy
    })
    .await
    .expect("wait_held");
    drop(proxy);
    let err = client
        .await
        .expect("client task")
        .expect_err("the connection is closed without an answer");
    assert!(matches!(err, SdkError::DispatchFailure(_)), "{err:?}");
    assert_eq!(vpcs_with_cidr(&moto, "10.64.0.0/16").await, 0);
}

/// Raw HTTP/1.1 through the proxy: a chunked request body and two requests
/// on one keep-alive connection.
#[tokio::test]
async fn raw_http1_chunked_body_and_keep_alive() {
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.endpoint, ProxyConfig::transparent()).await;
    let stream = tokio::net::TcpStream::connect(proxy.addr())
        .await
        .expect("connect to proxy");
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let auth = "AWS4-HMAC-SHA256 Credential=testing/20250101/us-east-2/ec2/aws4_request, SignedHeaders=host, Signature=0";
    let host = proxy.addr().to_string();

    let first = format!(
        "POST / HTTP/1.1\r\nHost: {host}\r\nAuthorization: {auth}\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n13\r\nAction=DescribeVpcs\r\n13\r\n&Version=2016-11-15\r\n0\r\n\r\n"
    );
    write.write_all(first.as_bytes()).await.expect("write");
    let (status, body) = read_response(&mut reader).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("DescribeVpcsResponse"), "{body}");

    let form = "Action=DescribeRegions&Version=2016-11-15";
    let second = format!(
        "POST / HTTP/1.1\r\nHost: {host}\r\nAuthorization: {auth}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
        form.len()
    );
    write.write_all(second.as_bytes()).await.expect("write");
    let (status, body) = read_response(&mut reader).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("DescribeRegionsResponse"), "{body}");
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).await.expect("read to EOF");
    assert!(rest.is_empty(), "connection closed after Connection: close");

    assert_eq!(
        proxy.action_counts(),
        BTreeMap::from([
            ("DescribeRegions".to_string(), 1),
            ("DescribeVpcs".to_string(), 1)
        ])
    );
}

/// Reads one Content-Length-framed response: status and body.
async fn read_response<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> (u16, String) {
    let mut status_line = String::new();
    reader
        .read_line(&mut status_line)
        .await
        .expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.expect("header line");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().expect("content-length");
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).await.expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Against a bare HTTP upstream that records what it gets: the proxy keeps
/// the client's Host (SigV4 signs it), path, query, headers and body, and
/// hands the response back byte for byte (no decompression).
#[tokio::test]
async fn forwards_host_and_bytes_unchanged() {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let upstream_url = format!("http://{}", upstream.local_addr().expect("addr"));
    let payload: &[u8] = &[0x1f, 0x8b, 0x08, 0x00, 0xff, 0x00, b'\r', b'\n'];
    let seen = tokio::spawn(async move {
        let (stream, _) = upstream.accept().await.expect("accept");
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await.expect("read");
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map(|v| v.trim().parse().expect("length"))
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).await.expect("body");
        let mut response = format!(
            "HTTP/1.1 201 Created\r\ncontent-encoding: gzip\r\nx-amzn-requestid: abc\r\ncontent-length: {}\r\n\r\n",
            payload.len()
        )
        .into_bytes();
        response.extend_from_slice(payload);
        reader
            .get_mut()
            .write_all(&response)
            .await
            .expect("respond");
        (head, body)
    });

    let proxy = Proxy::start(&upstream_url, ProxyConfig::transparent()).await;
    let mut client = tokio::net::TcpStream::connect(proxy.addr())
        .await
        .expect("connect to proxy");
    client
        .write_all(
            b"PUT /a/b%2Fc?x=1&y=%2F HTTP/1.1\r\nHost: signed.example:1234\r\nX-Amz-Date: 20250101T000000Z\r\nAuthorization: AWS4-HMAC-SHA256 Credential=k/20250101/us-east-2/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=f\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        )
        .await
        .expect("write");
    let mut response = Vec::new();
    client.read_to_end(&mut response).await.expect("read");

    let (head, body) = seen.await.expect("upstream task");
    let head_lower = head.to_ascii_lowercase();
    assert!(
        head.starts_with("PUT /a/b%2Fc?x=1&y=%2F HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(
        head_lower.contains("\r\nhost: signed.example:1234\r\n"),
        "{head}"
    );
    assert!(
        head_lower.contains(
            "\r\nx-amz-date: 20250101T000000Z\r\n"
                .to_ascii_lowercase()
                .as_str()
        ),
        "{head}"
    );
    assert!(
        head_lower.contains("\r\nauthorization: aws4-hmac-sha256 credential="),
        "{head}"
    );
    assert_eq!(body, b"hello");

    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of response head")
        + 4;
    let response_head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
    assert!(
        response_head.starts_with("http/1.1 201 created\r\n"),
        "{response_head}"
    );
    assert!(
        response_head.contains("content-encoding: gzip\r\n"),
        "{response_head}"
    );
    assert!(
        response_head.contains("x-amzn-requestid: abc\r\n"),
        "{response_head}"
    );
    assert_eq!(
        &response[split..],
        payload,
        "body passed through byte for byte"
    );
    assert_eq!(proxy.requests()[0].action, "PUT /a/b%2Fc");
    assert_eq!(proxy.requests()[0].service.as_deref(), Some("s3"));
}
