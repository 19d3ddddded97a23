//! Shared test context: a real AWS API (moto's server) on a free loopback
//! port, started by the test itself and stopped when the context drops.
//!
//! Every test gets its own moto process, so tests run in parallel without
//! sharing any AWS state, and an assertion like "exactly these VPCs exist"
//! means what it says.
#![allow(dead_code)]

pub mod inventory;
pub mod network;
pub mod seed;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Region every test uses (the stack's own region).
pub const REGION: &str = "us-east-2";

/// A running moto server, killed on drop.
pub struct Moto {
    child: Child,
    pub port: u16,
    pub endpoint: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Moto {
    /// Starts moto on a free port, waits until it answers, and seeds what an
    /// operator creates by hand in a real account before the first plan
    /// (the two secrets; see [`seed`]).
    pub fn start() -> Moto {
        let moto = Moto::start_bare();
        let endpoint = moto.endpoint.clone();
        // Seeding is async; run it on a runtime of its own so start() works
        // from sync tests and from inside #[tokio::test] alike.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to seed moto");
            rt.block_on(async {
                let cfg = sdk_config_for(&endpoint).await;
                seed::seed_platform_prereqs(&cfg).await;
            });
        })
        .join()
        .expect("seeding moto");
        moto
    }

    /// Starts moto with nothing in it (for tests of a missing prerequisite).
    pub fn start_bare() -> Moto {
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        for _attempt in 0..5 {
            let dir = tempfile::tempdir().expect("tempdir");
            let log = dir.path().join("moto.log");
            let port = free_port();
            let child = Command::new(&python)
                .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
                .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&log).expect("log file"))
                .stderr(std::fs::File::create(dir.path().join("moto.err")).expect("log"))
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot start moto ({python} -m moto.server): {e}; run: pip install 'moto[server]'")
                });
            let mut moto = Moto {
                child,
                port,
                endpoint: format!("http://127.0.0.1:{port}"),
                log,
                _dir: dir,
            };
            if moto.wait_ready(Duration::from_secs(30)) {
                return moto;
            }
            // Lost the port to someone else, or moto died: try another port.
            let _ = moto.child.kill();
        }
        panic!("moto did not start after 5 attempts; is 'moto[server]' installed?");
    }

    fn wait_ready(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::Write;
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = s.write_all(
                    b"GET /moto-api/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                );
                let mut buf = [0u8; 12];
                if s.read(&mut buf).map(|n| n > 0).unwrap_or(false) {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Environment for a process that should talk to this endpoint.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL".into(), self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
            ("AWS_REGION".into(), REGION.into()),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
            ("AWS_CONFIG_FILE".into(), "/nonexistent".into()),
            ("AWS_SHARED_CREDENTIALS_FILE".into(), "/nonexistent".into()),
            ("NO_COLOR".into(), "1".into()),
        ]
    }

    /// An SDK config for the test's own checks against the endpoint.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        sdk_config_for(&self.endpoint).await
    }

    /// moto's own log, for failure messages.
    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An SDK config for checks against `endpoint`.
pub async fn sdk_config_for(endpoint: &str) -> aws_config::SdkConfig {
    let creds =
        aws_sdk_dynamodb::config::Credentials::new("testing", "testing", None, None, "test");
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(creds)
        .load()
        .await
}

/// A `devstack` command wired to the given endpoint, run in `dir`.
pub fn devstack(moto: &Moto, dir: &Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("devstack").expect("devstack binary");
    cmd.current_dir(dir);
    for (k, v) in moto.env() {
        cmd.env(k, v);
    }
    cmd.env_remove("AWS_PROFILE");
    cmd.env_remove("RUST_LOG");
    cmd
}

/// Runs `devstack ARGS` in `dir` against `endpoint` (moto, or a proxy in
/// front of it): the exit code and stdout followed by stderr.
pub fn run_at(moto: &Moto, dir: &Path, endpoint: &str, args: &[&str]) -> (i32, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_devstack"));
    cmd.current_dir(dir);
    for (k, v) in moto.env() {
        cmd.env(k, v);
    }
    let out = cmd
        .env("AWS_ENDPOINT_URL", endpoint)
        .env_remove("AWS_PROFILE")
        .env_remove("RUST_LOG")
        .env_remove("DEVSTACK_ENV")
        .env_remove("DEVSTACK_STATE")
        .stdin(Stdio::null())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run devstack {args:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The stack's protected resources: a full destroy must name each one.
pub const PROTECTED: [&str; 3] = [
    "dynamodb_table.runs",
    "ebs_volume.manager_data",
    "eip.manager",
];

/// `destroy --auto-approve` with `--allow-destroy` for every protected
/// resource: what an operator types to really tear the platform down.
pub fn destroy_everything() -> Vec<String> {
    let mut args = vec!["destroy".to_string(), "--auto-approve".to_string()];
    for p in PROTECTED {
        args.push("--allow-destroy".into());
        args.push(p.into());
    }
    args
}
