//! `devstack manager deploy`: the manager's files and devstack version,
//! installed over SSM Run Command (no SSH, no clone, no token on the
//! manager).
//!
//! Design:
//!
//! - **What ships.** build.rs embeds every file under `manager-files/`
//!   ([`MANAGER_FILES`]), so whatever is added there deploys with no code
//!   change. They travel as one gzip'd ustar archive, base64 in a quoted
//!   heredoc of the script, with a `sha256sum` manifest of them
//!   ([`MANIFEST`]) inside the archive.
//! - **One command.** One `AWS-RunShellScript` `SendCommand` to the manager
//!   instance (its id from the stack outputs in state, as dispatch reads
//!   them), whose script ([`deploy_script`]) runs named steps, each
//!   announced as `devstack-deploy: step NAME: …`; a failing step ends the
//!   script with `devstack-deploy: FAILED at step NAME`, which the CLI
//!   reports. Steps: `preflight` (docker and compose are there),
//!   `binary` (the arm64 devstack of this version, sha256-verified,
//!   skipped when already installed), `files` (unpack, verify against the
//!   manifest, work out which files changed, install them into
//!   [`STACK_DIR`], delete files an earlier deploy shipped that are gone
//!   now; `.env` and `secrets/`, written by the user data, are never
//!   touched), `compose` (`docker compose up -d`: recreates only services
//!   whose definition changed), `restart` (a service whose directory holds a
//!   changed file, or that mounts the devstack binary when it changed, is
//!   restarted: a bind-mounted config change does not recreate a
//!   container), `prometheus` (`promtool check config` inside the compose
//!   service, then a reload through the lifecycle API, also through the
//!   compose service: never a container-name guess).
//! - **Size.** SSM caps a command's parameters (the document plus its
//!   parameters must stay well under 64 KB), so the base64 payload is
//!   capped at [`MAX_PAYLOAD_BASE64`]; today's files compress to a
//!   fraction of that. A deploy over the cap is refused before anything is
//!   sent, with the figure. GetCommandInvocation returns at most 24 000
//!   characters of each stream: the script keeps its own output short.
//! - **Dry run.** The manifest left in [`STACK_DIR`] is the record of what
//!   is installed. `--dry-run` sends one read-only command that prints it
//!   and the installed binary's sha256, and lists the files that would be
//!   added, changed or removed, and whether the binary changes. Nothing is
//!   written.
//! - **Waiting.** [`ssm`] polls GetCommandInvocation until the command
//!   ends or the bounded timeout passes, prints the remote output, and
//!   says which step failed; on timeout it prints what is known and how to
//!   look later.

pub mod ssm;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// Where the stack's files live on the manager: on the data volume, next
/// to the `.env` and `secrets/` the user data writes (manager-user-data.sh
/// `STACK_DIR`).
pub const STACK_DIR: &str = "/var/lib/manager/stack";
/// Where the devstack binary is installed (the exporter service mounts it).
pub const BINARY_PATH: &str = "/usr/local/bin/devstack";
/// The manifest of shipped files, `sha256sum` format, kept in [`STACK_DIR`].
pub const MANIFEST: &str = ".devstack-manifest";
/// The largest base64 payload sent in one command.
pub const MAX_PAYLOAD_BASE64: usize = 40 * 1024;
/// The prefix of every line the script uses to report progress.
pub const MARKER: &str = "devstack-deploy:";

/// One file of `manager-files/`, embedded at build time.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedFile {
    /// Relative to `manager-files/`, `/`-separated.
    pub path: &'static str,
    pub bytes: &'static [u8],
    pub executable: bool,
}

include!(concat!(env!("OUT_DIR"), "/manager_files.rs"));

/// A file to ship (owned, so tests can build bundles of their own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleFile {
    pub path: String,
    pub bytes: Vec<u8>,
    pub executable: bool,
}

/// The files of this build.
pub fn embedded() -> Vec<BundleFile> {
    MANAGER_FILES
        .iter()
        .map(|f| BundleFile {
            path: f.path.to_string(),
            bytes: f.bytes.to_vec(),
            executable: f.executable,
        })
        .collect()
}

/// The files of this build as the manager of `env` runs them: each passed
/// through [`crate::stack::manager::render_file`] (prometheus.yml carries the
/// environment's worker Name tag and region as placeholders).
pub fn rendered(env: &crate::stack::env::Env) -> Vec<BundleFile> {
    embedded()
        .into_iter()
        .map(|f| BundleFile {
            bytes: crate::stack::manager::render_file(env, &f.path, &f.bytes),
            ..f
        })
        .collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// `path → sha256` of the files.
pub fn manifest(files: &[BundleFile]) -> BTreeMap<String, String> {
    files
        .iter()
        .map(|f| (f.path.clone(), sha256_hex(&f.bytes)))
        .collect()
}

/// The manifest in `sha256sum` format (`<sha>  <path>`), sorted by path.
pub fn manifest_text(files: &[BundleFile]) -> String {
    manifest(files)
        .iter()
        .map(|(path, sha)| format!("{sha}  {path}\n"))
        .collect()
}

/// Reads a `sha256sum`-format manifest; lines that are not one are skipped.
pub fn parse_manifest(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let (sha, path) = line.split_once("  ")?;
            (sha.len() == 64 && sha.chars().all(|c| c.is_ascii_hexdigit()))
                .then(|| (path.to_string(), sha.to_string()))
        })
        .collect()
}

/// What a deploy would change, file by file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

impl Changes {
    pub fn between(installed: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> Self {
        let mut c = Changes::default();
        for (path, sha) in new {
            match installed.get(path) {
                None => c.added.push(path.clone()),
                Some(old) if old != sha => c.changed.push(path.clone()),
                Some(_) => {}
            }
        }
        c.removed = installed
            .keys()
            .filter(|p| !new.contains_key(*p))
            .cloned()
            .collect();
        c
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

/// A ustar archive of `files` (regular files, mode 0644 or 0755, owner
/// root, mtime 0: the same files give the same bytes).
pub fn tar(files: &[BundleFile]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in files {
        let mut header = [0u8; 512];
        let put = |h: &mut [u8; 512], at: usize, len: usize, value: &[u8]| {
            let n = value.len().min(len);
            h[at..at + n].copy_from_slice(&value[..n]);
        };
        let octal = |value: u64, width: usize| format!("{value:0w$o}\0", w = width - 1);
        put(&mut header, 0, 100, f.path.as_bytes());
        let mode = if f.executable { 0o755 } else { 0o644 };
        put(&mut header, 100, 8, octal(mode, 8).as_bytes());
        put(&mut header, 108, 8, octal(0, 8).as_bytes());
        put(&mut header, 116, 8, octal(0, 8).as_bytes());
        put(
            &mut header,
            124,
            12,
            octal(f.bytes.len() as u64, 12).as_bytes(),
        );
        put(&mut header, 136, 12, octal(0, 12).as_bytes());
        put(&mut header, 148, 8, b"        ");
        header[156] = b'0';
        put(&mut header, 257, 6, b"ustar\0");
        put(&mut header, 263, 2, b"00");
        put(&mut header, 265, 32, b"root");
        put(&mut header, 297, 32, b"root");
        let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
        put(&mut header, 148, 8, format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&f.bytes);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// The files plus their manifest, tarred, gzip'd, base64'd.
pub fn payload(files: &[BundleFile]) -> anyhow::Result<String> {
    let mut all = files.to_vec();
    all.push(BundleFile {
        path: MANIFEST.to_string(),
        bytes: manifest_text(files).into_bytes(),
        executable: false,
    });
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&tar(&all))?;
    let compressed = gz.finish()?;
    Ok(base64::engine::general_purpose::STANDARD.encode(compressed))
}

/// The devstack binary the manager must run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binary {
    pub version: String,
    pub url: String,
    pub sha256: String,
}

/// Why a deploy cannot be sent.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(
        "the manager files compress to {size} bytes of base64, over the {limit}-byte limit of one SSM command"
    )]
    TooLarge { size: usize, limit: usize },
    #[error("cannot package the manager files: {0}")]
    Package(String),
}

fn shell_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', r"'\''"))
}

/// Wraps base64 at 76 columns (the heredoc stays readable in SSM's console).
fn wrap(b64: &str) -> String {
    b64.as_bytes()
        .chunks(76)
        .map(|c| String::from_utf8_lossy(c).into_owned() + "\n")
        .collect()
}

/// The script the manager runs for a deploy.
pub fn deploy_script(files: &[BundleFile], binary: &Binary) -> Result<String, DeployError> {
    let b64 = payload(files).map_err(|e| DeployError::Package(format!("{e:#}")))?;
    if b64.len() > MAX_PAYLOAD_BASE64 {
        return Err(DeployError::TooLarge {
            size: b64.len(),
            limit: MAX_PAYLOAD_BASE64,
        });
    }
    let mut s = String::new();
    let _ = write!(
        s,
        r#"#!/bin/bash
# devstack manager deploy {version}: {count} files into {stack}.
set -Eeuo pipefail
readonly STACK={stack}
readonly BIN={bin}
readonly URL={url}
readonly SHA={sha}
readonly VERSION={version_q}
step=start
on_error() {{
  local rc=$?
  echo "{marker} FAILED at step $step (exit $rc)" >&2
  exit "$rc"
}}
trap on_error ERR
begin() {{ step=$1; shift; echo "{marker} step $step: $*"; }}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
compose() {{ docker compose --project-directory "$STACK" -f "$STACK/docker-compose.yml" "$@"; }}

begin preflight "docker and the compose plugin"
if ! command -v docker >/dev/null || ! docker compose version >/dev/null; then
  echo "docker or its compose plugin is missing: the manager's user data has not finished (see /var/log/devstack-manager-setup.log)" >&2
  false
fi
mkdir -p "$STACK"

begin binary "devstack $VERSION (sha256 $SHA)"
binary_changed=0
if [ -x "$BIN" ] && echo "$SHA  $BIN" | sha256sum -c --status; then
  echo "already installed"
else
  curl -fsSL --retry 5 -o "$work/devstack" "$URL"
  echo "$SHA  $work/devstack" | sha256sum -c --quiet -
  install -m 0755 "$work/devstack" "$BIN"
  binary_changed=1
fi

begin files "{count} files"
base64 -d >"$work/files.tar.gz" <<'DEVSTACK_PAYLOAD'
{payload}DEVSTACK_PAYLOAD
mkdir "$work/new"
tar -xzf "$work/files.tar.gz" -C "$work/new" --no-same-owner
(cd "$work/new" && sha256sum -c --quiet {manifest})
changed=""
while read -r sum path; do
  if [ ! -f "$STACK/$path" ] || ! echo "$sum  $STACK/$path" | sha256sum -c --status; then
    changed="$changed $path"
  fi
done <"$work/new/{manifest}"
if [ -f "$STACK/{manifest}" ]; then
  while read -r sum path; do
    if ! grep -qF "  $path" "$work/new/{manifest}"; then
      rm -f "$STACK/$path"
      changed="$changed $path"
    fi
  done <"$STACK/{manifest}"
fi
cp -R --preserve=mode "$work/new/." "$STACK/"
echo "changed:${{changed:- nothing}}"

begin compose "docker compose up -d"
compose up -d

begin restart "services whose files changed"
for svc in $(compose config --services); do
  [ "$svc" = prometheus ] && continue
  restart=0
  for path in $changed; do
    case "$path" in "$svc"/*) restart=1 ;; esac
  done
  if [ "$binary_changed" = 1 ] && compose config "$svc" | grep -qF "$BIN"; then
    restart=1
  fi
  if [ "$restart" = 1 ]; then
    echo "restarting $svc"
    compose restart "$svc"
  fi
done

begin prometheus "check the configuration, then reload it"
compose exec -T prometheus promtool check config /etc/prometheus/prometheus.yml
compose exec -T prometheus wget -q -O - --post-data= http://127.0.0.1:9090/-/reload
echo "{marker} done: devstack $VERSION, {count} files"
"#,
        version = binary.version,
        version_q = shell_quote(&binary.version),
        count = files.len(),
        stack = STACK_DIR,
        bin = BINARY_PATH,
        url = shell_quote(&binary.url),
        sha = shell_quote(&binary.sha256),
        marker = MARKER,
        manifest = MANIFEST,
        payload = wrap(&b64),
    );
    Ok(s)
}

/// The read-only script of `--dry-run`: the installed manifest, then the
/// installed binary's sha256 on a line of its own.
pub fn inspect_script() -> String {
    format!(
        "#!/bin/bash\n# devstack manager deploy --dry-run: read what is installed, change nothing.\n\
         cat {STACK_DIR}/{MANIFEST} 2>/dev/null || true\n\
         echo \"binary $(sha256sum {BINARY_PATH} 2>/dev/null | cut -d' ' -f1)\"\n"
    )
}

/// What `inspect_script` printed: the installed manifest and binary sha256.
pub fn parse_inspection(stdout: &str) -> (BTreeMap<String, String>, Option<String>) {
    let binary = stdout
        .lines()
        .find_map(|l| l.strip_prefix("binary "))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    (parse_manifest(stdout), binary)
}

/// The step a failed deploy names (`FAILED at step X`), else the last step
/// it started.
pub fn failed_step(stdout: &str, stderr: &str) -> Option<String> {
    let failed = format!("{MARKER} FAILED at step ");
    let started = format!("{MARKER} step ");
    stderr
        .lines()
        .chain(stdout.lines())
        .find_map(|l| l.strip_prefix(&failed))
        .and_then(|rest| rest.split_whitespace().next())
        .or_else(|| {
            stdout
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix(&started))
                .and_then(|rest| rest.split(':').next())
        })
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, body: &str, executable: bool) -> BundleFile {
        BundleFile {
            path: path.into(),
            bytes: body.as_bytes().to_vec(),
            executable,
        }
    }

    fn binary() -> Binary {
        Binary {
            version: "0.1.0".into(),
            url: "https://example.com/devstack-aarch64".into(),
            sha256: "ab".repeat(32),
        }
    }

    #[test]
    fn deployed_files_carry_no_placeholder() {
        let env = crate::stack::env::Env::load("stg").unwrap();
        let files = rendered(&env);
        let prom = files
            .iter()
            .find(|f| f.path == crate::stack::manager::PROMETHEUS_CONFIG)
            .expect("prometheus.yml is shipped");
        let text = String::from_utf8(prom.bytes.clone()).unwrap();
        assert!(!text.contains("__WORKER_NAME__"), "{text}");
        assert!(!text.contains("__REGION__"), "{text}");
        assert!(text.contains(&env.worker_name()), "{text}");
        assert!(text.contains(&env.region), "{text}");
    }

    #[test]
    fn every_file_under_manager_files_is_embedded() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manager-files");
        let mut on_disk = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p
                        .strip_prefix(&root)
                        .unwrap()
                        .to_string_lossy()
                        .replace('\\', "/");
                    on_disk.push((rel, std::fs::read(&p).unwrap()));
                }
            }
        }
        on_disk.sort();
        let embedded: Vec<(String, Vec<u8>)> =
            embedded().into_iter().map(|f| (f.path, f.bytes)).collect();
        assert!(!embedded.is_empty());
        assert_eq!(embedded, on_disk);
    }

    #[test]
    fn the_archive_unpacks_with_tar_and_matches_its_manifest() {
        let files = vec![
            file("docker-compose.yml", "services: {}\n", false),
            file("prometheus/prometheus.yml", "global: {}\n", false),
            file("bin/run.sh", "#!/bin/sh\necho hi\n", true),
            file("empty", "", false),
        ];
        let b64 = payload(&files).unwrap();
        let gz = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.tar.gz");
        std::fs::write(&archive, gz).unwrap();
        let out = std::process::Command::new("tar")
            .arg("-xzf")
            .arg(&archive)
            .arg("-C")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for f in &files {
            assert_eq!(std::fs::read(dir.path().join(&f.path)).unwrap(), f.bytes);
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| {
            std::fs::metadata(dir.path().join(p))
                .unwrap()
                .permissions()
                .mode()
        };
        assert_eq!(mode("bin/run.sh") & 0o777, 0o755);
        assert_eq!(mode("docker-compose.yml") & 0o777, 0o644);
        let check = std::process::Command::new("sha256sum")
            .args(["-c", "--quiet", MANIFEST])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stdout)
        );
    }

    #[test]
    fn the_script_runs_every_step_in_order_and_passes_shellcheck() {
        let script = deploy_script(&embedded(), &binary()).unwrap();
        let order = [
            "preflight",
            "binary",
            "files",
            "compose",
            "restart",
            "prometheus",
        ];
        let at: Vec<usize> = order
            .iter()
            .map(|s| {
                script
                    .find(&format!("begin {s} "))
                    .unwrap_or_else(|| panic!("no step {s}"))
            })
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{at:?}");
        assert!(script.contains("docker compose --project-directory \"$STACK\""));
        assert!(script.contains("compose up -d\n"));
        assert!(script.contains("compose exec -T prometheus wget"));
        assert!(
            !script.contains("docker kill"),
            "never a container name guess"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deploy.sh");
        std::fs::write(&path, &script).unwrap();
        let out = std::process::Command::new("shellcheck")
            .arg(&path)
            .output()
            .expect("shellcheck is installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    /// The script for real, under bash, on a host without docker: the
    /// first step fails, says why, and the failure names it.
    #[test]
    fn a_failing_step_is_announced_by_name_and_stops_the_script() {
        let script = deploy_script(&embedded(), &binary()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        // Only what the first lines need: no docker on this PATH.
        for tool in ["mktemp", "rm"] {
            let found = ["/usr/bin", "/bin"]
                .iter()
                .map(|d| std::path::Path::new(d).join(tool))
                .find(|p| p.exists())
                .expect("coreutils");
            std::os::unix::fs::symlink(found, bin.join(tool)).unwrap();
        }
        let out = std::process::Command::new("/bin/bash")
            .arg("-c")
            .arg(&script)
            .env_clear()
            .env("PATH", &bin)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
        assert!(
            stdout.starts_with("devstack-deploy: step preflight: "),
            "{stdout}"
        );
        assert!(
            !stdout.contains("step binary"),
            "stops at the failure: {stdout}"
        );
        assert!(
            stderr.contains("docker or its compose plugin is missing"),
            "{stderr}"
        );
        assert!(
            stderr.contains("devstack-deploy: FAILED at step preflight (exit 1)"),
            "{stderr}"
        );
        assert_eq!(failed_step(&stdout, &stderr).as_deref(), Some("preflight"));
    }

    #[test]
    fn a_deploy_over_the_command_size_is_refused() {
        // Incompressible bytes: 64 KiB of them base64 to ~87 KB.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let noise: Vec<u8> = (0..65536)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let files = vec![BundleFile {
            path: "big.bin".into(),
            bytes: noise,
            executable: false,
        }];
        let err = deploy_script(&files, &binary()).unwrap_err();
        assert!(matches!(err, DeployError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn changes_compare_manifests() {
        let installed = parse_manifest(&format!(
            "{}  a.yml\n{}  b.yml\n{}  gone.yml\nbinary {}\n",
            "1".repeat(64),
            "2".repeat(64),
            "3".repeat(64),
            "4".repeat(64)
        ));
        let new = BTreeMap::from([
            ("a.yml".to_string(), "1".repeat(64)),
            ("b.yml".to_string(), "9".repeat(64)),
            ("new.yml".to_string(), "5".repeat(64)),
        ]);
        let c = Changes::between(&installed, &new);
        assert_eq!(c.added, ["new.yml"]);
        assert_eq!(c.changed, ["b.yml"]);
        assert_eq!(c.removed, ["gone.yml"]);
        let (m, bin) = parse_inspection(&format!(
            "{}  a.yml\nbinary {}\n",
            "1".repeat(64),
            "4".repeat(64)
        ));
        assert_eq!(m.len(), 1);
        assert_eq!(bin.as_deref(), Some("4".repeat(64).as_str()));
        assert_eq!(parse_inspection("binary \n").1, None);
    }

    #[test]
    fn the_failing_step_is_named() {
        let out =
            "devstack-deploy: step preflight: x\ndevstack-deploy: step binary: devstack 0.1.0\n";
        assert_eq!(
            failed_step(
                out,
                "curl: (22) 404\ndevstack-deploy: FAILED at step binary (exit 22)\n"
            )
            .as_deref(),
            Some("binary")
        );
        assert_eq!(failed_step(out, "").as_deref(), Some("binary"));
        assert_eq!(failed_step("", ""), None);
    }
}
