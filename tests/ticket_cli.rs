//! `devstack ticket validate` and `devstack ticket render`, run as the
//! operator and the worker run them: exit codes, what reaches stdout and
//! stderr, and the rendered prompt on disk.

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::cargo::cargo_bin_cmd;

const SOW: &str = "---
status: draft
repos: [prog-strength-api, prog-strength-web]
---
# Rest timer
";

const DX: &str = "---
type: dx
repos: [prog-strength-web]
surface: workout-log
variant_count: \"3\"
idioms: [brutalist, swiss grid, editorial, playful]
references: [https://example.com/a, Dieter Rams]
---
# Workout log, explored
";

const BROKEN_SOW: &str = "---\nstatus: draft\nrepos: []\n---\n# No repos\n";
const BROKEN_DX: &str =
    "---\ntype: dx\nrepos: [prog-strength-web]\nsurface: workout-log\nidioms: [a, b]\nreferences: [r]\n---\n";

/// A docs-repository checkout in a temporary directory.
struct Docs {
    dir: tempfile::TempDir,
}

impl Docs {
    fn new(files: &[(&str, &str)]) -> Docs {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let full = dir.path().join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, text).unwrap();
        }
        Docs { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Runs devstack in the checkout, like an operator with relative paths.
    fn run(&self, args: &[&str]) -> Output {
        cargo_bin_cmd!("devstack")
            .current_dir(self.dir.path())
            .env_remove("DEVSTACK_ENV")
            .env("NO_COLOR", "1")
            .args(args)
            .output()
            .unwrap()
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `__TOKEN__` placeholders left in a text.
fn leftover_tokens(text: &str) -> Vec<String> {
    let re = regex::Regex::new(r"__[A-Z_]+__").unwrap();
    re.find_iter(text).map(|m| m.as_str().to_string()).collect()
}

#[test]
fn valid_tickets_of_both_types_pass_silently() {
    let docs = Docs::new(&[("sows/rest-timer.md", SOW), ("dx/workout-log.md", DX)]);
    let out = docs.run(&[
        "ticket",
        "validate",
        "sows/rest-timer.md",
        "dx/workout-log.md",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    assert_eq!(stderr(&out), "");
}

#[test]
fn each_invalid_file_is_one_line_on_stderr_and_exit_is_1() {
    let docs = Docs::new(&[
        ("sows/ok.md", SOW),
        ("sows/no-repos.md", BROKEN_SOW),
        ("dx/few-idioms.md", BROKEN_DX),
        ("sows/plain.md", "# No frontmatter at all\n"),
    ]);
    let out = docs.run(&[
        "ticket",
        "validate",
        "sows/ok.md",
        "sows/no-repos.md",
        "dx/few-idioms.md",
        "sows/plain.md",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines,
        [
            "sows/no-repos.md: `repos` must be a non-empty list of repository names; it is an empty list",
            "dx/few-idioms.md: `idioms` lists 2 but `variant_count` is 5: list at least one idiom per variant, or lower `variant_count`",
            "sows/plain.md: no frontmatter: a ticket must start with a `---` line, then YAML, then a closing `---` line",
        ],
        "{err}"
    );
}

#[test]
fn a_ticket_with_several_problems_is_still_one_line() {
    let docs = Docs::new(&[("dx/bad.md", "---\ntype: dx\nrepos: [a]\nscope: wide\n---\n")]);
    let out = docs.run(&["ticket", "validate", "dx/bad.md"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    for key in ["`surface`", "`idioms`", "`references`", "`scope`"] {
        assert!(err.contains(key), "{key} missing from: {err}");
    }
}

#[test]
fn a_missing_file_is_reported_like_an_invalid_one() {
    let docs = Docs::new(&[]);
    let out = docs.run(&["ticket", "validate", "sows/nope.md"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("sows/nope.md: cannot read the file: "),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn validate_needs_at_least_one_file() {
    let docs = Docs::new(&[]);
    let out = docs.run(&["ticket", "validate"]);
    assert_eq!(out.status.code(), Some(2), "clap usage error");
}

fn render(docs: &Docs, ticket: &str, sow_path: &str, today: &str, out: &Path) -> Output {
    docs.run(&[
        "ticket",
        "render",
        "--ticket",
        ticket,
        "--sow-path",
        sow_path,
        "--today",
        today,
        "--out",
        out.to_str().unwrap(),
    ])
}

#[test]
fn render_sow_substitutes_every_token() {
    let docs = Docs::new(&[("sows/rest-timer.md", SOW)]);
    let prompt = docs.path("prompt.md");
    let out = render(
        &docs,
        "sows/rest-timer.md",
        "sows/rest-timer.md",
        "2026-03-07",
        &prompt,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    let text = std::fs::read_to_string(&prompt).unwrap();
    assert_eq!(leftover_tokens(&text), Vec::<String>::new());
    assert!(text.contains("`sows/rest-timer.md`"), "{text}");
    assert!(text.contains("feat/rest-timer"), "{text}");
    assert!(
        text.contains("`Prog-Strength`"),
        "org from the prod settings: {text}"
    );
    assert!(text.contains("2026-03-07"), "{text}");
    assert!(text.contains("status: shipped"), "{text}");
}

#[test]
fn render_dx_substitutes_every_token() {
    let docs = Docs::new(&[("dx/workout-log.md", DX)]);
    let prompt = docs.path("prompt.md");
    let out = render(
        &docs,
        "dx/workout-log.md",
        "dx/workout-log.md",
        "2026-01-02",
        &prompt,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = std::fs::read_to_string(&prompt).unwrap();
    assert_eq!(leftover_tokens(&text), Vec::<String>::new());
    for want in [
        "`dx/workout-log`",
        "/design-explore/workout-log",
        "brutalist, swiss grid, editorial, playful",
        "https://example.com/a, Dieter Rams",
        "`in-system`",
        "Variants: 3,",
        "`[DX — DO NOT MERGE] workout-log — 3 design variants`",
        "`Prog-Strength`",
        "2026-01-02",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
}

#[test]
fn render_refuses_a_bad_date_before_reading_the_ticket() {
    let docs = Docs::new(&[("sows/rest-timer.md", SOW)]);
    let prompt = docs.path("prompt.md");
    for bad in ["2026-3-7", "2026-02-30", "today"] {
        let out = render(
            &docs,
            "sows/rest-timer.md",
            "sows/rest-timer.md",
            bad,
            &prompt,
        );
        assert_eq!(out.status.code(), Some(1), "{bad}");
        assert!(
            stderr(&out).contains("is not a date written YYYY-MM-DD"),
            "{}",
            stderr(&out)
        );
        assert!(!prompt.exists());
    }
}

#[test]
fn render_refuses_an_invalid_ticket_or_sow_path() {
    let docs = Docs::new(&[("sows/broken.md", BROKEN_SOW), ("sows/ok.md", SOW)]);
    let prompt = docs.path("prompt.md");

    let out = render(
        &docs,
        "sows/broken.md",
        "sows/broken.md",
        "2026-03-07",
        &prompt,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("sows/broken.md: `repos` must be"),
        "{}",
        stderr(&out)
    );

    let out = render(&docs, "sows/ok.md", "../ok.md", "2026-03-07", &prompt);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--sow-path: ticket path `../ok.md`"),
        "{}",
        stderr(&out)
    );
    assert!(!prompt.exists());
}
