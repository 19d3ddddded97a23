//! The worker user data: size, escaping, what it writes, and shellcheck.

use std::io::Read as _;

use base64::Engine as _;
use std::process::Command;

use proptest::prelude::*;

use super::*;

fn prod() -> Env {
    Env::load("prod").unwrap()
}

fn binary() -> DevstackBinary {
    DevstackBinary {
        url: "https://github.com/Prog-Strength/devstack/releases/download/v0.4.0/devstack-x86_64-unknown-linux-musl".into(),
        sha256: "9f2c".repeat(16),
    }
}

fn params() -> UserDataParams {
    UserDataParams::new(
        &prod(),
        "sows/rest-timer.md",
        "6a1f3c9e-1b2d-4c5e-8f70-112233445566",
        "claude-opus-5",
        Ipv4Addr::new(10, 20, 2, 15),
        binary(),
    )
}

fn render() -> RenderedUserData {
    render_user_data(&params()).unwrap()
}

/// The body of the heredoc that writes `path`.
fn embedded_file(script: &str, path: &str) -> String {
    let open = format!("put {path} <<'DEVSTACK_EOF'\n");
    let start = script
        .find(&open)
        .unwrap_or_else(|| panic!("no heredoc for {path}"))
        + open.len();
    let len = script[start..].find("\nDEVSTACK_EOF\n").unwrap();
    script[start..start + len].to_string()
}

fn gunzip_base64(encoded: &str) -> String {
    let gz = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut text)
        .unwrap();
    text
}

/// Runs shellcheck on a script; a missing shellcheck fails the test (CI
/// installs it; so must a developer).
fn shellcheck(script: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("user-data.sh");
    std::fs::write(&file, script).unwrap();
    let out = match Command::new("shellcheck")
        .args(["--shell=bash", "--severity=style"])
        .arg(&file)
        .output()
    {
        Ok(out) => out,
        Err(e) => panic!(
            "shellcheck is required to test the worker user data and could not run ({e}): \
             install it with `apt-get install shellcheck` (CI does)"
        ),
    };
    assert!(
        out.status.success(),
        "shellcheck found problems:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn renders_well_under_the_ec2_limit() {
    let rendered = render();
    assert!(
        rendered.gzip.len() < USER_DATA_LIMIT / 2,
        "{} bytes gzipped",
        rendered.gzip.len()
    );
    assert_eq!(gunzip_base64(&rendered.ec2_base64), rendered.script);
    assert_eq!(
        base64::engine::general_purpose::STANDARD.encode(&rendered.gzip),
        rendered.ec2_base64
    );
}

#[test]
fn rendering_is_deterministic() {
    assert_eq!(render(), render());
    assert_eq!(
        base_user_data(&prod()).unwrap(),
        base_user_data(&prod()).unwrap()
    );
}

#[test]
fn every_placeholder_is_filled() {
    let script = render().script;
    assert!(next_placeholder(&script).is_none(), "{script}");
    assert!(script.starts_with("#!/bin/bash\n"), "{script}");
    // Without -E a failure inside a function would exit without the ERR
    // trap: no report, no release.
    assert!(script.contains("\nset -Eeuo pipefail\n"), "{script}");
    assert!(
        script.contains("readonly TICKET_PATH='sows/rest-timer.md'\n"),
        "{script}"
    );
    assert!(script.contains("readonly REGION='us-east-2'\n"), "{script}");
    assert!(
        script.contains("readonly RUNS_TABLE='prog-strength-developer-runs'\n"),
        "{script}"
    );
    assert!(
        script.contains(&format!(
            "readonly DEVSTACK_SHA256='{}'\n",
            "9f2c".repeat(16)
        )),
        "{script}"
    );
}

#[test]
fn every_tool_is_pinned_to_a_version() {
    let script = render().script;
    for var in [
        "NODE_VERSION",
        "CLAUDE_CODE_VERSION",
        "GH_VERSION",
        "GIT_VERSION",
        "JQ_VERSION",
        "CWAGENT_VERSION",
        "NODE_EXPORTER_VERSION",
        "PROMTAIL_VERSION",
        "GO_VERSION",
        "GOLANGCI_LINT_VERSION",
        "UV_VERSION",
        "PRE_COMMIT_VERSION",
    ] {
        let line = script
            .lines()
            .find(|l| l.starts_with(&format!("readonly {var}=")))
            .unwrap_or_else(|| panic!("{var} is not pinned"));
        let version = line.rsplit('=').next().unwrap();
        assert!(
            version.chars().next().is_some_and(|c| c.is_ascii_digit()) && version.contains('.'),
            "{line}"
        );
        assert!(
            script.contains(&format!("${{{var}}}")),
            "{var} is never used"
        );
    }
    assert!(script.contains("\"@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION}\""));
    assert!(script.contains("sha256sum --check"));
    // worker-contracts.md §1: the exact versions, and the published digests.
    for line in [
        "readonly GO_VERSION=1.22.5",
        "readonly GO_SHA256=904b924d435eaea086515bc63235b192ea441bd8c9b198c507e85009e6e4c7f0",
        "readonly GOLANGCI_LINT_VERSION=2.12.2",
        "readonly GOLANGCI_LINT_SHA256=8df580d2670fed8fa984aac0507099af8df275e665215f5c7a2ae3943893a553",
        "readonly NODE_VERSION=20.",
        "readonly PRE_COMMIT_VERSION=3.",
    ] {
        assert!(script.contains(line), "missing {line}");
    }
    // Every download is checked: a pinned digest or the release's own sums.
    let downloads =
        script.matches("fetch_sha256 \"").count() + script.matches("fetch_sums \"").count();
    assert_eq!(
        downloads, 8,
        "go, golangci-lint, uv, node, gh, jq, node_exporter, promtail"
    );
    for tool in [
        "go${GO_VERSION}.linux-amd64.tar.gz\" \"$GO_SHA256\"",
        "\"$GOLANGCI_LINT_SHA256\"",
        "\"$UV_SHA256\"",
        "SHASUMS256.txt",
        "gh_${GH_VERSION}_checksums.txt",
        "uv tool install --python python3 \"pre-commit==${PRE_COMMIT_VERSION}\"",
        "gcc make python3 python3-pip",
    ] {
        assert!(script.contains(tool), "missing {tool}");
    }
    assert!(!script.contains("curl -fsSL --retry 5 --retry-connrefused \"$gh_release"));
}

#[test]
fn sow_and_dx_user_data_pass_shellcheck_with_tools_plugins_and_reporting() {
    for ticket in ["sows/rest-timer.md", "dx/workout-log.md"] {
        let mut p = params();
        p.ticket_path = ticket.into();
        let script = render_user_data(&p).unwrap().script;
        shellcheck(&script);
        assert!(
            script.contains(&format!("readonly TICKET_PATH='{ticket}'\n")),
            "{script}"
        );
        // The toolchain on the agent's PATH (Go's own directory first).
        assert!(
            script
                .contains("readonly AGENT_PATH='/usr/local/go/bin:/usr/local/bin:/usr/bin:/bin'\n"),
            "{script}"
        );
        // Both plugins, pinned to their commits.
        let plugins = embedded_file(&script, "/etc/devstack/claude-plugins.txt");
        assert!(plugins.contains(
            "superpowers-marketplace obra/superpowers-marketplace 6be22035d873c31ca246db4f4932a1098aea46fc superpowers obra/superpowers@6fd4507659784c351abbd2bc264c7162cfd386dc"
        ), "{plugins}");
        assert!(plugins.contains(
            "claude-plugins-official anthropics/claude-plugins-official de573bd84695c6657b28f05ffe32c37bb54d1f55 frontend-design -"
        ), "{plugins}");
        assert!(script.contains("install_plugins /etc/devstack/claude-plugins.txt"));
        // The pre-push hooks are armed by `devstack worker run` after the
        // clones (src/worker/hooks.rs), with these tools.
        assert!(script.contains("/usr/local/bin --strip-components=1 \"$gcl/golangci-lint\""));
        // A bootstrap failure reports and releases; the boot is timed.
        assert!(script.contains("trap 'on_error $LINENO; terminate' ERR"));
        assert!(script.contains("readonly PUSHGATEWAY_URL='http://10.20.2.15:9091'\n"));
        assert!(script.contains("readonly DISPATCH_ID='6a1f3c9e-1b2d-4c5e-8f70-112233445566'\n"));
        for phase in [
            "instance-id",
            "devstack",
            "packages",
            "observability",
            "toolchain",
            "node-and-claude",
            "plugins",
        ] {
            assert!(
                script.contains(&format!("\nphase {phase}\n")),
                "no phase {phase}"
            );
        }
        assert!(script.contains("--on-boot=6h"));
    }
}

#[test]
fn worker_toml_reads_back_as_the_dispatch_settings() {
    let script = render().script;
    let toml = embedded_file(&script, "/etc/devstack/worker.toml");
    let config = WorkerConfig::from_toml(&toml).unwrap();
    assert_eq!(config, params().worker_config());
    assert_eq!(config.ticket_path, "sows/rest-timer.md");
    assert_eq!(config.dispatch_id, "6a1f3c9e-1b2d-4c5e-8f70-112233445566");
    assert_eq!(config.model, "claude-opus-5");
    assert_eq!(config.manager_private_ip, Ipv4Addr::new(10, 20, 2, 15));
    assert_eq!(config.region, "us-east-2");
    assert_eq!(config.runs_table, "prog-strength-developer-runs");
    assert_eq!(config.log_group, "/aws/ec2/prog-strength-developer");
    assert_eq!(config.github_org, "Prog-Strength");
    assert_eq!(config.docs_repo, "prog-strength-docs");
    assert_eq!(
        config.claude_secret_id,
        "prog-strength-developer/claude-credentials"
    );
    assert_eq!(
        config.github_app_secret_id,
        "prog-strength-developer/github-app"
    );
}

#[test]
fn cloudwatch_agent_streams_the_four_logs_per_instance() {
    let script = render().script;
    let json: serde_json::Value = serde_json::from_str(&embedded_file(
        &script,
        "/etc/devstack/cloudwatch-agent.json",
    ))
    .unwrap();
    let list = json["logs"]["logs_collected"]["files"]["collect_list"]
        .as_array()
        .unwrap();
    let streams: Vec<(&str, &str, &str)> = list
        .iter()
        .map(|f| {
            (
                f["file_path"].as_str().unwrap(),
                f["log_group_name"].as_str().unwrap(),
                f["log_stream_name"].as_str().unwrap(),
            )
        })
        .collect();
    let group = "/aws/ec2/prog-strength-developer";
    assert_eq!(
        streams,
        [
            (
                "/var/log/devstack/claude.log",
                group,
                "rest-timer/{instance_id}/claude"
            ),
            (
                "/var/log/devstack/userdata.log",
                group,
                "rest-timer/{instance_id}/userdata"
            ),
            (
                "/var/log/devstack/claude-debug.log",
                group,
                "rest-timer/{instance_id}/claude-debug"
            ),
            (
                "/var/log/cloud-init-output.log",
                group,
                "rest-timer/{instance_id}/cloud-init"
            ),
        ]
    );
}

#[test]
fn promtail_ships_the_claude_log_to_loki_on_the_manager() {
    let script = render().script;
    let yaml: serde_json::Value =
        serde_saphyr::from_str(&embedded_file(&script, "/etc/promtail/config.yaml")).unwrap();
    assert_eq!(
        yaml["clients"][0]["url"],
        "http://10.20.2.15:3100/loki/api/v1/push"
    );
    let labels = &yaml["scrape_configs"][0]["static_configs"][0]["labels"];
    assert_eq!(labels["job"], "claude");
    assert_eq!(labels["instance_id"], "${INSTANCE_ID}");
    assert_eq!(labels["sow"], "sows/rest-timer.md");
    assert_eq!(labels["__path__"], "/var/log/devstack/claude.log");
    let unit = embedded_file(&script, "/etc/systemd/system/promtail.service");
    assert!(unit.contains("-config.expand-env=true"), "{unit}");
    assert!(
        unit.contains("EnvironmentFile=/etc/devstack/instance.env"),
        "{unit}"
    );
}

#[test]
fn the_units_are_installed_and_the_worker_started() {
    let script = render().script;
    let worker = embedded_file(&script, "/etc/systemd/system/devstack-worker.service");
    assert!(
        worker.contains(
            "ExecStart=/usr/local/bin/devstack worker run --config /etc/devstack/worker.toml"
        ),
        "{worker}"
    );
    assert!(
        worker.contains("StandardOutput=append:/var/log/devstack/userdata.log"),
        "{worker}"
    );
    let node = embedded_file(&script, "/etc/systemd/system/node_exporter.service");
    assert!(node.contains("--web.listen-address=:9100"), "{node}");
    assert!(
        worker.contains("TimeoutStopSec=120"),
        "SIGTERM finalizes within the stop timeout: {worker}"
    );
    assert!(script.contains("systemctl start --no-block devstack-worker.service"));
}

#[test]
fn too_large_user_data_is_refused() {
    // Incompressible filler: a long pseudo-random dispatch id.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let filler: String = (0..24_000)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            char::from(
                b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                    [(seed % 62) as usize],
            )
        })
        .collect();
    let mut p = params();
    p.dispatch_id = filler;
    match render_user_data(&p) {
        Err(UserDataError::TooLarge { bytes, limit }) => {
            assert_eq!(limit, 16_384);
            assert!(bytes > limit, "{bytes}");
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn a_value_with_a_control_character_is_refused() {
    let mut p = params();
    p.env_name = "prod\nrm -rf /".into();
    let err = render_user_data(&p).unwrap_err();
    assert!(
        matches!(
            err,
            UserDataError::UnsafeValue {
                name: "env_name",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn quotes_in_a_value_stay_inside_their_word() {
    let mut p = params();
    p.runs_table = "it's $(touch /tmp/pwned) `id`".into();
    let script = render_user_data(&p).unwrap().script;
    assert!(
        script.contains(r"readonly RUNS_TABLE='it'\''s $(touch /tmp/pwned) `id`'"),
        "{script}"
    );
}

#[test]
fn values_for_the_agent_configurations_must_be_plain() {
    let mut p = params();
    p.log_group = "/aws/ec2/x\"}, {\"evil\": 1".into();
    let err = render_user_data(&p).unwrap_err();
    assert!(
        matches!(
            err,
            UserDataError::UnsafeValue {
                name: "log_group",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_bad_ticket_path_binary_or_region_is_refused() {
    let mut p = params();
    p.ticket_path = "sows/../x.md".into();
    assert!(matches!(
        render_user_data(&p),
        Err(UserDataError::TicketPath(_))
    ));

    let mut p = params();
    p.binary.url = "http://example.com/devstack".into();
    assert!(matches!(
        render_user_data(&p),
        Err(UserDataError::UnsafeValue {
            name: "devstack_url",
            ..
        })
    ));

    let mut p = params();
    p.binary.sha256 = "abc".into();
    assert!(matches!(
        render_user_data(&p),
        Err(UserDataError::UnsafeValue {
            name: "devstack_sha256",
            ..
        })
    ));

    let mut p = params();
    p.region = "us-east-2; reboot".into();
    assert!(matches!(
        render_user_data(&p),
        Err(UserDataError::UnsafeValue { name: "region", .. })
    ));
}

#[test]
fn a_placeholder_without_a_value_is_an_error() {
    let err = fill_script("t", "echo {{nope}}\n", &[], &[]).unwrap_err();
    assert!(
        matches!(err, UserDataError::Unfilled { ref name, .. } if name == "nope"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "`{{nope}}` is left in the rendered t: a placeholder has no value, or a value holds one"
    );
    // A value is not rescanned, but a placeholder it smuggles in is still caught.
    let err = fill_config("t", "a: {{x}}\n", &[("x", "{{y}}")]).unwrap_err();
    assert!(matches!(err, UserDataError::UnsafeValue { .. }), "{err}");
    // Single braces are CloudWatch's own placeholders and stay.
    assert_eq!(
        fill_config("t", "{instance_id}/{{x}}", &[("x", "a")]).unwrap(),
        "{instance_id}/a"
    );
}

#[test]
fn a_file_must_stand_alone_in_its_heredoc() {
    let files = [("f", "line\n".to_string())];
    assert_eq!(
        fill_script(
            "t",
            "cat <<'DEVSTACK_EOF'\n{{f}}\nDEVSTACK_EOF\n",
            &[],
            &files
        )
        .unwrap(),
        "cat <<'DEVSTACK_EOF'\nline\nDEVSTACK_EOF\n"
    );
    let err = fill_script("t", "echo {{f}}\n", &[], &files).unwrap_err();
    assert!(matches!(err, UserDataError::MisplacedFile { .. }), "{err}");
    let evil = [("f", "a\nDEVSTACK_EOF\nrm -rf /\n".to_string())];
    let err = fill_script(
        "t",
        "cat <<'DEVSTACK_EOF'\n{{f}}\nDEVSTACK_EOF\n",
        &[],
        &evil,
    )
    .unwrap_err();
    assert!(matches!(err, UserDataError::UnsafeValue { .. }), "{err}");
}

#[test]
fn the_script_is_valid_bash() {
    let dir = tempfile::tempdir().unwrap();
    for (name, script) in [
        ("worker.sh", render().script),
        ("base.sh", base_user_data(&prod()).unwrap().script),
    ] {
        let file = dir.path().join(name);
        std::fs::write(&file, script).unwrap();
        let out = Command::new("bash").arg("-n").arg(&file).output().unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_rendered_script_passes_shellcheck() {
    shellcheck(&render().script);
}

#[test]
fn the_base_user_data_passes_shellcheck_and_only_terminates() {
    let base = base_user_data(&prod()).unwrap();
    shellcheck(&base.script);
    assert!(base.ec2_base64.len() < 1024, "{}", base.ec2_base64.len());
    assert_eq!(gunzip_base64(&base.ec2_base64), base.script);
    assert!(base.script.contains("readonly REGION='us-east-2'"));
    assert!(base
        .script
        .contains("readonly WORKER_NAME='prog-strength-developer-worker'"));
    assert!(base.script.contains("aws ec2 terminate-instances"));
    assert!(!base.script.contains("devstack worker run"));
}

#[test]
fn dev_renders_with_its_own_names() {
    let dev = Env::load("dev").unwrap();
    let p = UserDataParams::new(
        &dev,
        "dx/workout-log.md",
        "d1",
        "claude-sonnet-5",
        Ipv4Addr::new(10, 30, 2, 9),
        binary(),
    );
    let script = render_user_data(&p).unwrap().script;
    assert!(script.contains("readonly ENV_NAME='dev'"), "{script}");
    assert!(
        script.contains("workout-log/{instance_id}/claude"),
        "{script}"
    );
    assert!(
        script.contains("/aws/ec2/prog-strength-developer-dev"),
        "{script}"
    );
    assert!(
        script.contains("prog-strength-developer-dev-runs"),
        "{script}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Whatever printable text a value holds, bash reads back exactly it.
    #[test]
    fn shell_quoting_round_trips_through_bash(value in "[ -~]{0,40}") {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!("printf %s {}", shell_quote(&value)))
            .output()
            .unwrap();
        prop_assert!(out.status.success());
        prop_assert_eq!(String::from_utf8_lossy(&out.stdout), value);
    }
}

/// The script's functions section (between its markers), which tests run
/// alone with their own settings in front.
pub(crate) fn functions_section(script: &str) -> String {
    let begin = script
        .find("# ==== functions: begin")
        .expect("functions begin marker");
    let end = script
        .find("# ==== functions: end")
        .expect("functions end marker");
    script[begin..end].to_string()
}

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A repository `<base>/<owner>/<name>.git` with `files`, and a second
/// commit on top: the pinned commit is the first, not the tip. Its sha.
fn pinned_repo(base: &std::path::Path, path: &str, files: &[(&str, &str)]) -> String {
    let dir = base.join(format!("{path}.git"));
    std::fs::create_dir_all(&dir).unwrap();
    git(&dir, &["init", "-q"]);
    for (name, text) in files {
        let file = dir.join(name);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text).unwrap();
    }
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-q", "-m", "pinned"]);
    let sha = git(&dir, &["rev-parse", "HEAD"]);
    std::fs::write(dir.join("LATER"), "not pinned\n").unwrap();
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-q", "-m", "later"]);
    sha
}

#[test]
fn a_failing_plugin_install_is_logged_and_the_boot_goes_on() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let git_base = root.join("git");
    let market = pinned_repo(
        &git_base,
        "obra/superpowers-marketplace",
        &[(
            ".claude-plugin/marketplace.json",
            r#"{"name":"superpowers-marketplace","plugins":[{"name":"superpowers","source":{"source":"github","repo":"obra/superpowers"}}]}"#,
        )],
    );
    let source = pinned_repo(&git_base, "obra/superpowers", &[("README.md", "skills\n")]);
    let official = pinned_repo(
        &git_base,
        "anthropics/claude-plugins-official",
        &[(
            ".claude-plugin/marketplace.json",
            r#"{"name":"claude-plugins-official","plugins":[]}"#,
        )],
    );
    let list = root.join("claude-plugins.txt");
    std::fs::write(
        &list,
        format!(
            "# comment\n\nsuperpowers-marketplace obra/superpowers-marketplace {market} superpowers obra/superpowers@{source}\n\
             broken-marketplace obra/no-such-repo {market} nothing -\n\
             claude-plugins-official anthropics/claude-plugins-official {official} frontend-design -\n"
        ),
    )
    .unwrap();
    // A stand-in `claude`: records each call; the superpowers install fails.
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let claude = bin.join("claude");
    std::fs::write(
        &claude,
        format!(
            "#!/bin/bash\necho \"$*\" >>{}\n[ \"$*\" = \"plugin install superpowers@superpowers-marketplace\" ] && {{ echo 'marketplace hiccup' >&2; exit 1; }}\nexit 0\n",
            root.join("calls.log").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&claude, std::fs::Permissions::from_mode(0o755)).unwrap();

    let me = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    let script = format!(
        "set -Eeuo pipefail\ntrap 'echo BOOT FAILED; exit 9' ERR\nBOOT_EPOCH=$(date +%s)\nAGENT_USER={me}\nAGENT_PATH=$PATH\nPLUGIN_GIT_BASE=file://{git}\nPLUGIN_ROOT={plugins}\n{functions}\ninstall_plugins {list}\necho 'the boot goes on'\n",
        me = me.trim(),
        git = git_base.display(),
        plugins = root.join("plugins").display(),
        functions = functions_section(&render().script),
        list = list.display(),
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("the boot goes on"), "{stdout}");
    assert!(!stdout.contains("BOOT FAILED"), "{stdout}");
    assert!(
        stderr.contains("plugin superpowers@superpowers-marketplace was NOT installed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("plugin nothing@broken-marketplace was NOT installed"),
        "{stderr}"
    );
    assert!(
        stdout.contains(&format!(
            "plugin frontend-design@claude-plugins-official installed (anthropics/claude-plugins-official@{official})"
        )),
        "{stdout}"
    );
    // Each marketplace is the pinned commit, not its branch's tip, and
    // superpowers' marketplace points at its own pinned clone.
    let plugins = root.join("plugins");
    assert_eq!(
        git(
            &plugins.join("claude-plugins-official"),
            &["rev-parse", "HEAD"]
        ),
        official
    );
    assert!(!plugins.join("claude-plugins-official/LATER").exists());
    let sp = plugins.join("superpowers-marketplace");
    assert_eq!(git(&sp, &["rev-parse", "HEAD"]), market);
    assert_eq!(
        git(&sp.join("pinned/superpowers"), &["rev-parse", "HEAD"]),
        source
    );
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(sp.join(".claude-plugin/marketplace.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["plugins"][0]["source"], "./pinned/superpowers");
    let calls = std::fs::read_to_string(root.join("calls.log")).unwrap();
    assert_eq!(
        calls,
        format!(
            "plugin marketplace add {sp}\nplugin install superpowers@superpowers-marketplace\n\
             plugin marketplace add {off}\nplugin install frontend-design@claude-plugins-official\n",
            sp = sp.display(),
            off = plugins.join("claude-plugins-official").display()
        )
    );
}
