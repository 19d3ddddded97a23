//! The rules of platform.md §2, one test per rule, valid and broken, for
//! both work types; then properties over generated input.

use proptest::prelude::*;

use super::*;

fn ok(text: &str) -> Ticket {
    match parse("t.md", text) {
        Ok(ticket) => ticket,
        Err(e) => panic!("expected a valid ticket, got: {e}\n{text}"),
    }
}

/// The one-line error for an invalid ticket.
fn err(text: &str) -> String {
    match parse("sows/foo.md", text) {
        Ok(ticket) => panic!("expected an invalid ticket, got {ticket:?}\n{text}"),
        Err(e) => {
            let line = e.to_string();
            assert!(!line.contains('\n'), "error spans lines: {line}");
            assert!(line.starts_with("sows/foo.md: "), "{line}");
            line
        }
    }
}

fn assert_err(text: &str, want: &str) {
    let line = err(text);
    assert!(line.contains(want), "want {want:?} in: {line}");
}

const DX: &str = "---
type: dx
repos: [prog-strength-web]
surface: workout-log
variant_count: 3
idioms: [brutalist, swiss grid, editorial]
references:
  - https://example.com/ref
scope: greenfield
---
# Workout log exploration
";

/// A valid DX ticket with one line replaced (or removed when `with` is empty).
fn dx_with(key: &str, with: &str) -> String {
    let mut out = String::new();
    let mut lines = DX.lines().peekable();
    while let Some(line) = lines.next() {
        if line.starts_with(&format!("{key}:")) {
            // Drop the key's block-list continuation lines too.
            while lines.peek().is_some_and(|l| l.starts_with("  ")) {
                lines.next();
            }
            if !with.is_empty() {
                out.push_str(with);
                out.push('\n');
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

// --- the frontmatter block -------------------------------------------------

#[test]
fn a_minimal_sow_is_valid_and_type_defaults_to_sow() {
    let t = ok("---\nrepos: [prog-strength-api]\n---\n# Body\n");
    assert_eq!(
        t,
        Ticket {
            kind: TicketType::Sow,
            repos: vec!["prog-strength-api".into()],
            dx: None
        }
    );
}

#[test]
fn an_explicit_sow_type_is_valid() {
    let t = ok("---\ntype: sow\nrepos:\n  - a\n  - b\n---\n");
    assert_eq!(t.kind, TicketType::Sow);
    assert_eq!(t.repos, ["a", "b"]);
}

#[test]
fn a_file_without_frontmatter_is_an_error() {
    assert_err("# Just a title\n\nrepos: [a]\n", "no frontmatter");
    assert_err("", "no frontmatter");
    assert_err("\n---\nrepos: [a]\n---\n", "no frontmatter");
}

#[test]
fn an_unclosed_frontmatter_is_an_error() {
    assert_err("---\nrepos: [a]\n# Title\n", "never closed");
}

#[test]
fn frontmatter_that_is_not_a_mapping_is_an_error() {
    assert_err(
        "---\n- a\n- b\n---\n",
        "must be a YAML mapping of keys to values; found a list",
    );
    assert_err(
        "---\njust text\n---\n",
        "must be a YAML mapping of keys to values; found \"just text\"",
    );
    assert_err(
        "---\n---\n",
        "must be a YAML mapping of keys to values; it is empty",
    );
    assert_err("---\n# only a comment\n---\n", "must be a YAML mapping");
}

#[test]
fn invalid_yaml_is_one_line() {
    assert_err("---\nrepos: [a\n---\n", "not valid YAML");
    assert_err("---\nrepos: a\nrepos: b\n---\n", "not valid YAML");
}

#[test]
fn bytes_that_are_not_utf8_are_an_error() {
    let e = parse_bytes("sows/x.md", b"---\nrepos: [\xff]\n---\n").unwrap_err();
    assert_eq!(e.to_string(), "sows/x.md: the file is not UTF-8 text");
}

// --- type --------------------------------------------------------------------

#[test]
fn an_unknown_type_is_an_error() {
    assert_err(
        "---\ntype: story\nrepos: [a]\n---\n",
        "`type` must be `sow` or `dx`; found \"story\"",
    );
    assert_err(
        "---\ntype: SOW\nrepos: [a]\n---\n",
        "`type` must be `sow` or `dx`",
    );
    assert_err(
        "---\ntype: 3\nrepos: [a]\n---\n",
        "`type` must be `sow` or `dx`; found the number 3",
    );
    assert_err("---\ntype: [dx]\nrepos: [a]\n---\n", "found a list");
}

#[test]
fn an_empty_type_means_the_default() {
    assert_eq!(ok("---\ntype:\nrepos: [a]\n---\n").kind, TicketType::Sow);
}

// --- repos -------------------------------------------------------------------

#[test]
fn repos_must_be_present() {
    assert_eq!(
        err("---\nstatus: draft\n---\n"),
        "sows/foo.md: `repos` must be a non-empty list of repository names; it is missing"
    );
    assert_err(
        "---\nrepos:\n---\n",
        "`repos` must be a non-empty list of repository names; it is missing",
    );
}

#[test]
fn repos_must_be_a_non_empty_list() {
    assert_err(
        "---\nrepos: []\n---\n",
        "`repos` must be a non-empty list of repository names; it is an empty list",
    );
    assert_err(
        "---\nrepos: prog-strength-api\n---\n",
        "found \"prog-strength-api\"",
    );
    assert_err("---\nrepos: {a: 1}\n---\n", "found a mapping");
}

#[test]
fn each_repo_must_be_a_plain_name() {
    assert_err(
        "---\nrepos: [a, '']\n---\n",
        "`repos` item 2 must be a repository name",
    );
    assert_err("---\nrepos: [a, 42]\n---\n", "`repos` item 2 must be a repository name without the organization (letters, digits, `.`, `_`, `-`); found the number 42");
    assert_err(
        "---\nrepos: [Prog-Strength/web]\n---\n",
        "`repos` item 1 must be a repository name without the organization",
    );
    assert_err("---\nrepos: ['a b']\n---\n", "found \"a b\"");
    assert_err("---\nrepos: ['../etc']\n---\n", "`repos` item 1");
    assert_err("---\nrepos: [[a]]\n---\n", "found a list");
}

#[test]
fn a_repo_listed_twice_is_an_error() {
    assert_err(
        "---\nrepos: [a, b, a]\n---\n",
        "`repos` lists \"a\" more than once",
    );
}

// --- other keys ----------------------------------------------------------------

#[test]
fn unknown_keys_are_ignored() {
    let t = ok(
        "---\nstatus: shipped\ntitle: Rest timer\nowner: {name: x}\n42: odd key\nrepos: [a]\n---\n",
    );
    assert_eq!(t.repos, ["a"]);
}

#[test]
fn dx_keys_on_a_sow_are_ignored() {
    let t = ok("---\nrepos: [a]\nsurface: ''\nvariant_count: lots\nidioms: []\n---\n");
    assert_eq!(t.kind, TicketType::Sow);
    assert_eq!(t.dx, None);
}

// --- DX ------------------------------------------------------------------------

#[test]
fn a_full_dx_ticket_is_valid() {
    let t = ok(DX);
    assert_eq!(t.kind, TicketType::Dx);
    assert_eq!(t.repos, ["prog-strength-web"]);
    assert_eq!(
        t.dx,
        Some(DxFields {
            surface: "workout-log".into(),
            variant_count: 3,
            idioms: vec!["brutalist".into(), "swiss grid".into(), "editorial".into()],
            references: vec!["https://example.com/ref".into()],
            scope: Scope::Greenfield,
        })
    );
}

#[test]
fn dx_variant_count_defaults_to_5_and_scope_to_in_system() {
    let t = ok(&dx_with("variant_count", "")
        .replace(
            "idioms: [brutalist, swiss grid, editorial]",
            "idioms: [a, b, c, d, e]",
        )
        .replace("scope: greenfield\n", ""));
    let dx = t.dx.unwrap();
    assert_eq!(dx.variant_count, DEFAULT_VARIANT_COUNT);
    assert_eq!(dx.variant_count, 5);
    assert_eq!(dx.scope, Scope::InSystem);
}

#[test]
fn dx_surface_is_required_and_non_empty() {
    assert_err(&dx_with("surface", ""), "`surface` must be a non-empty surface name (letters, digits, `.`, `_`, `-`); it is missing");
    assert_err(
        &dx_with("surface", "surface:"),
        "`surface` must be a non-empty surface name",
    );
    assert_err(&dx_with("surface", "surface: ''"), "`surface` must be a non-empty surface name (letters, digits, `.`, `_`, `-`); found a blank string");
    assert_err(&dx_with("surface", "surface: [a]"), "found a list");
}

#[test]
fn dx_surface_must_fit_a_branch_name_and_a_route() {
    assert_err(&dx_with("surface", "surface: workout log"), "`surface` must be a non-empty surface name (letters, digits, `.`, `_`, `-`); found \"workout log\"");
    assert_err(&dx_with("surface", "surface: a/b"), "`surface` must be");
    assert_eq!(
        ok(&dx_with("surface", "surface: Workout_Log.v2"))
            .dx
            .unwrap()
            .surface,
        "Workout_Log.v2"
    );
}

#[test]
fn dx_variant_count_accepts_a_number_or_a_numeric_string() {
    assert_eq!(
        ok(&dx_with("variant_count", "variant_count: 2"))
            .dx
            .unwrap()
            .variant_count,
        2
    );
    assert_eq!(
        ok(&dx_with("variant_count", "variant_count: \"3\""))
            .dx
            .unwrap()
            .variant_count,
        3
    );
    assert_eq!(
        ok(&dx_with("variant_count", "variant_count: ' 1 '"))
            .dx
            .unwrap()
            .variant_count,
        1
    );
}

#[test]
fn dx_variant_count_that_is_not_a_whole_number_is_an_error() {
    let want = "`variant_count` must be a whole number of at least 1 (default 5); found";
    assert_err(
        &dx_with("variant_count", "variant_count: five"),
        &format!("{want} \"five\""),
    );
    assert_err(
        &dx_with("variant_count", "variant_count: 2.5"),
        &format!("{want} the number 2.5"),
    );
    assert_err(
        &dx_with("variant_count", "variant_count: true"),
        &format!("{want} `true`"),
    );
    assert_err(
        &dx_with("variant_count", "variant_count: 0"),
        &format!("{want} the number 0"),
    );
    assert_err(
        &dx_with("variant_count", "variant_count: -2"),
        &format!("{want} the number -2"),
    );
    assert_err(&dx_with("variant_count", "variant_count: '0x5'"), want);
    assert_err(
        &dx_with("variant_count", "variant_count: 99999999999999999999"),
        want,
    );
}

#[test]
fn dx_idioms_are_a_required_non_empty_list() {
    assert_err(
        &dx_with("idioms", ""),
        "`idioms` must be a non-empty list of idioms, one per variant; it is missing",
    );
    assert_err(
        &dx_with("idioms", "idioms: []"),
        "`idioms` must be a non-empty list of idioms, one per variant; it is an empty list",
    );
    assert_err(
        &dx_with("idioms", "idioms: brutalist"),
        "found \"brutalist\"",
    );
    assert_err(
        &dx_with("idioms", "idioms: [a, b, '  ']"),
        "`idioms` item 3 must be a non-empty string; found a blank string",
    );
    assert_err(
        &dx_with("idioms", "idioms: [a, {b: c}, d]"),
        "`idioms` item 2 must be a non-empty string; found a mapping",
    );
}

#[test]
fn dx_needs_at_least_one_idiom_per_variant() {
    assert_err(
        &dx_with("idioms", "idioms: [a, b]"),
        "`idioms` lists 2 but `variant_count` is 3: list at least one idiom per variant, or lower `variant_count`",
    );
    // More idioms than variants is fine.
    let t = ok(&dx_with("idioms", "idioms: [a, b, c, d]"));
    assert_eq!(t.dx.unwrap().idioms.len(), 4);
    // The default count applies to the comparison.
    assert_err(
        &dx_with("variant_count", ""),
        "`idioms` lists 3 but `variant_count` is 5",
    );
}

#[test]
fn dx_idioms_must_differ() {
    assert_err(
        &dx_with("idioms", "idioms: [a, b, a]"),
        "`idioms` lists \"a\" more than once",
    );
}

#[test]
fn dx_references_are_a_required_non_empty_list() {
    assert_err(
        &dx_with("references", ""),
        "`references` must be a non-empty list of references; it is missing",
    );
    assert_err(
        &dx_with("references", "references: []"),
        "`references` must be a non-empty list of references; it is an empty list",
    );
    assert_err(
        &dx_with("references", "references: https://x"),
        "found \"https://x\"",
    );
    assert_err(
        &dx_with("references", "references: [ok, '']"),
        "`references` item 2 must be a non-empty string; found a blank string",
    );
}

#[test]
fn dx_scope_is_in_system_or_greenfield() {
    assert_eq!(
        ok(&dx_with("scope", "scope: in-system")).dx.unwrap().scope,
        Scope::InSystem
    );
    assert_eq!(
        ok(&dx_with("scope", "scope: greenfield")).dx.unwrap().scope,
        Scope::Greenfield
    );
    assert_err(
        &dx_with("scope", "scope: brownfield"),
        "`scope` must be `in-system` (the default) or `greenfield`; found \"brownfield\"",
    );
    assert_err(&dx_with("scope", "scope: in_system"), "`scope` must be");
}

#[test]
fn dx_repos_follow_the_same_rules() {
    assert_err(
        &dx_with("repos", ""),
        "`repos` must be a non-empty list of repository names; it is missing",
    );
}

#[test]
fn every_problem_is_reported_on_one_line() {
    let line = err("---\ntype: dx\nrepos: []\nvariant_count: x\nidioms: [a]\nscope: wide\n---\n");
    for want in [
        "`repos` must be",
        "`surface` must be",
        "`variant_count` must be",
        "`references` must be",
        "`scope` must be",
    ] {
        assert!(line.contains(want), "want {want:?} in: {line}");
    }
    assert!(line.matches("; ").count() >= 4, "{line}");
}

#[test]
fn problems_are_typed_for_callers() {
    let e = parse("dx/x.md", &dx_with("idioms", "idioms: [a]")).unwrap_err();
    assert_eq!(
        e.problems,
        vec![Problem::TooFewIdioms {
            idioms: 1,
            variant_count: 3
        }]
    );
}

// --- properties ----------------------------------------------------------------

/// Names the validator accepts.
fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,12}"
}

/// Free text the validator accepts (one line, not blank, YAML-quoted below).
fn text() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9 ,:/.#-]{0,20}"
}

fn yaml_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn yaml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| yaml_str(s)).collect();
    format!("[{}]", quoted.join(", "))
}

prop_compose! {
    /// The key lines of a valid DX ticket, in canonical order.
    fn dx_lines()(
        repos in prop::collection::btree_set(name(), 1..4),
        surface in name(),
        variant_count in 1u32..6,
        extra_idioms in 0usize..3,
        references in prop::collection::vec(text(), 1..4),
        scope in prop::option::of(prop::bool::ANY),
        count_as_string in prop::bool::ANY,
        status in prop::option::of(text()),
    )(
        idioms in prop::collection::btree_set(text(), (variant_count as usize + extra_idioms)..=(variant_count as usize + extra_idioms)),
        repos in Just(repos), surface in Just(surface), variant_count in Just(variant_count),
        references in Just(references), scope in Just(scope),
        count_as_string in Just(count_as_string), status in Just(status),
    ) -> Vec<String> {
        let repos: Vec<String> = repos.into_iter().collect();
        let idioms: Vec<String> = idioms.into_iter().collect();
        let mut lines = vec![
            "type: dx".to_string(),
            format!("repos: {}", yaml_list(&repos)),
            format!("surface: {surface}"),
            if count_as_string {
                format!("variant_count: \"{variant_count}\"")
            } else {
                format!("variant_count: {variant_count}")
            },
            format!("idioms: {}", yaml_list(&idioms)),
            format!("references: {}", yaml_list(&references)),
        ];
        match scope {
            Some(true) => lines.push("scope: greenfield".into()),
            Some(false) => lines.push("scope: in-system".into()),
            None => {}
        }
        if let Some(status) = status {
            lines.push(format!("status: {}", yaml_str(&status)));
        }
        lines
    }
}

fn ticket_text(lines: &[String]) -> String {
    format!("---\n{}\n---\n# Exploration\n", lines.join("\n"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_the_parser(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_bytes("sows/x.md", &bytes);
    }

    #[test]
    fn arbitrary_frontmatter_never_panics_and_errors_are_one_line(
        body in "[-a-z:\\[\\]{}, '\"\n0-9#&*!|>]{0,200}"
    ) {
        if let Err(e) = parse("sows/x.md", &format!("---\n{body}\n---\n")) {
            let line = e.to_string();
            prop_assert!(!line.contains('\n'), "{}", line);
            prop_assert!(!e.problems.is_empty());
        }
    }

    #[test]
    fn a_valid_dx_ticket_parses_the_same_whatever_the_key_order(
        (lines, shuffled) in dx_lines().prop_flat_map(|lines| {
            let shuffled = Just(lines.clone()).prop_shuffle();
            (Just(lines), shuffled)
        })
    ) {
        let canonical = parse("dx/x.md", &ticket_text(&lines));
        prop_assert!(canonical.is_ok(), "{:?}", canonical);
        let reordered = parse("dx/x.md", &ticket_text(&shuffled));
        prop_assert_eq!(canonical, reordered);
    }
}

#[test]
fn a_frontmatter_over_the_yaml_budget_is_one_sentence_not_debug_text() {
    let items = "a, ".repeat(260_000);
    let text = format!("---\nrepos: [{items}]\n---\n");
    let line = err(&text);
    assert!(
        line.contains("the frontmatter is too big to read: it has over"),
        "{line}"
    );
    assert!(!line.contains('{') && !line.contains("Nodes"), "{line}");
}
