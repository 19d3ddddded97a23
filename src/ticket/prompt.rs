//! The prompt a worker gives the agent: one template per work type
//! (`worker/prompt-*.md.tpl`, compiled in), with `__TOKEN__` placeholders.
//!
//! The templates carry every numbered obligation of worker-contracts.md §3
//! (SOW) and §4 (DX); docs/worker.md maps each to where the prompt states
//! it, and the tests below check each one's concrete markers.
//!
//! Substitution is one pass over the template: a value is never scanned
//! for tokens, so a ticket whose idiom happens to read `__SURFACE__` cannot
//! change the prompt's shape. A template token that nothing substitutes is
//! an error, never a literal `__FOO__` handed to the agent.

use time::Date;

use super::{check_ticket_path, slug, Ticket, TicketPathError, TicketType};

/// The SOW contract: `feat/<slug>`, a PR per repo, the docs status flip.
pub const SOW_TEMPLATE: &str = include_str!("../../worker/prompt-sow.md.tpl");
/// The DX contract: `dx/<surface>`, one route, one variant per idiom, a draft PR.
pub const DX_TEMPLATE: &str = include_str!("../../worker/prompt-dx.md.tpl");

/// Why a prompt could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Path(#[from] TicketPathError),
    #[error("the {kind} prompt template has the token `__{token}__`, which nothing substitutes")]
    UnknownToken { kind: TicketType, token: String },
}

/// The template a ticket of this type renders.
pub fn template(kind: TicketType) -> &'static str {
    match kind {
        TicketType::Sow => SOW_TEMPLATE,
        TicketType::Dx => DX_TEMPLATE,
    }
}

/// Renders the prompt for `ticket`, which lives at `sow_path` in the docs
/// repository. `today` is the UTC date the run starts.
pub fn render_prompt(
    ticket: &Ticket,
    sow_path: &str,
    today: Date,
    github_org: &str,
) -> Result<String, RenderError> {
    check_ticket_path(sow_path)?;
    let today = format!(
        "{:04}-{:02}-{:02}",
        today.year(),
        u8::from(today.month()),
        today.day()
    );
    let mut values: Vec<(&str, String)> = vec![
        ("SOW_PATH", sow_path.to_string()),
        ("SOW_SLUG", slug(sow_path)),
        ("GITHUB_ORG", github_org.to_string()),
        ("TODAY", today),
        ("REPOS", one_line_list(&ticket.repos)),
    ];
    if let Some(dx) = &ticket.dx {
        values.extend([
            ("SURFACE", dx.surface.clone()),
            ("IDIOMS", one_line_list(&dx.idioms)),
            ("REFERENCES", one_line_list(&dx.references)),
            ("SCOPE", dx.scope.to_string()),
            ("VARIANT_COUNT", dx.variant_count.to_string()),
        ]);
    }
    substitute(template(ticket.kind), |name| {
        values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    })
    .map_err(|token| RenderError::UnknownToken {
        kind: ticket.kind,
        token,
    })
}

/// `a, b, c`, with any run of whitespace inside an item folded to a space.
fn one_line_list(items: &[String]) -> String {
    items
        .iter()
        .map(|item| item.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Replaces every `__NAME__` token of `template` by `lookup(NAME)`; the
/// first name `lookup` does not know is the error.
fn substitute<'a>(
    template: &str,
    lookup: impl Fn(&str) -> Option<&'a str>,
) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 512);
    let mut rest = template;
    while let Some(at) = rest.find("__") {
        match token_name(&rest[at..]) {
            Some(name) => {
                let value = lookup(name).ok_or_else(|| name.to_string())?;
                out.push_str(&rest[..at]);
                out.push_str(value);
                rest = &rest[at + name.len() + 4..];
            }
            None => {
                // `_` is one byte: step past it and look again.
                out.push_str(&rest[..=at]);
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The tokens a text contains, in order.
pub fn tokens(text: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("__") {
        match token_name(&rest[at..]) {
            Some(name) => {
                found.push(name);
                rest = &rest[at + name.len() + 4..];
            }
            None => rest = &rest[at + 1..],
        }
    }
    found
}

/// If `s` starts with a token, its name: `__` + upper-case words joined by
/// single `_` + `__` (`__SOW_PATH__` names `SOW_PATH`).
fn token_name(s: &str) -> Option<&str> {
    let body = s.strip_prefix("__")?;
    let bytes = body.as_bytes();
    let mut end = 0;
    loop {
        let word = bytes[end..]
            .iter()
            .take_while(|b| b.is_ascii_uppercase())
            .count();
        if word == 0 {
            return None;
        }
        end += word;
        match (bytes.get(end), bytes.get(end + 1)) {
            (Some(b'_'), Some(next)) if next.is_ascii_uppercase() => end += 1,
            _ => break,
        }
    }
    body[end..].starts_with("__").then(|| &body[..end])
}

#[cfg(test)]
mod tests {
    use time::macros::date;

    use super::*;
    use crate::ticket::{DxFields, Scope};

    const SOW_TOKENS: &[&str] = &["SOW_PATH", "SOW_SLUG", "GITHUB_ORG", "TODAY", "REPOS"];
    const DX_TOKENS: &[&str] = &[
        "SOW_PATH",
        "SOW_SLUG",
        "GITHUB_ORG",
        "TODAY",
        "REPOS",
        "SURFACE",
        "IDIOMS",
        "REFERENCES",
        "SCOPE",
        "VARIANT_COUNT",
    ];

    fn sow() -> Ticket {
        Ticket {
            kind: TicketType::Sow,
            repos: vec!["prog-strength-api".into()],
            dx: None,
        }
    }

    fn dx() -> Ticket {
        Ticket {
            kind: TicketType::Dx,
            repos: vec!["prog-strength-web".into()],
            dx: Some(DxFields {
                surface: "workout-log".into(),
                variant_count: 3,
                idioms: vec!["brutalist".into(), "swiss  grid".into(), "editorial".into()],
                references: vec!["https://example.com/a".into(), "Dieter Rams".into()],
                scope: Scope::Greenfield,
            }),
        }
    }

    #[test]
    fn token_names_are_upper_case_words() {
        assert_eq!(token_name("__SOW_PATH__ x"), Some("SOW_PATH"));
        assert_eq!(token_name("__A__"), Some("A"));
        assert_eq!(token_name("__SOW_PATH_ x"), None);
        assert_eq!(token_name("___SOW__"), None);
        assert_eq!(token_name("__SOW___"), Some("SOW"));
        assert_eq!(token_name("__bold__"), None);
        assert_eq!(tokens("___SOW_PATH__ and __X__Y__"), vec!["SOW_PATH", "X"]);
    }

    #[test]
    fn each_template_uses_only_its_types_tokens_and_all_it_needs() {
        let sow = tokens(SOW_TEMPLATE);
        for token in &sow {
            assert!(
                SOW_TOKENS.contains(token),
                "SOW template: unknown token {token}"
            );
        }
        for token in SOW_TOKENS {
            assert!(sow.contains(token), "SOW template never uses {token}");
        }
        let dx = tokens(DX_TEMPLATE);
        for token in &dx {
            assert!(
                DX_TOKENS.contains(token),
                "DX template: unknown token {token}"
            );
        }
        // The slug names SOW branches; a DX branch is named after its surface.
        for token in DX_TOKENS.iter().filter(|t| **t != "SOW_SLUG") {
            assert!(dx.contains(token), "DX template never uses {token}");
        }
    }

    #[test]
    fn sow_prompt_substitutes_every_token() {
        let out = render_prompt(
            &sow(),
            "sows/rest-timer.md",
            date!(2026 - 03 - 07),
            "Prog-Strength",
        )
        .unwrap();
        assert!(tokens(&out).is_empty(), "{out}");
        assert!(out.contains("sows/rest-timer.md"), "{out}");
        assert!(out.contains("feat/rest-timer"), "{out}");
        assert!(out.contains("Prog-Strength"), "{out}");
        assert!(out.contains("2026-03-07"), "{out}");
        assert!(out.contains("status: shipped"), "{out}");
    }

    #[test]
    fn dx_prompt_substitutes_every_token_and_lists_on_one_line() {
        let out = render_prompt(
            &dx(),
            "dx/workout-log.md",
            date!(2026 - 01 - 02),
            "Prog-Strength",
        )
        .unwrap();
        assert!(tokens(&out).is_empty(), "{out}");
        assert!(out.contains("dx/workout-log"), "{out}");
        assert!(out.contains("/design-explore/workout-log"), "{out}");
        assert!(out.contains("brutalist, swiss grid, editorial"), "{out}");
        assert!(out.contains("https://example.com/a, Dieter Rams"), "{out}");
        assert!(out.contains("greenfield"), "{out}");
        assert!(out.contains("[DX — DO NOT MERGE]"), "{out}");
        assert!(out.contains("2026-01-02"), "{out}");
    }

    #[test]
    fn values_are_not_rescanned_for_tokens() {
        let mut ticket = dx();
        if let Some(dx) = ticket.dx.as_mut() {
            dx.idioms[0] = "__SURFACE__".into();
        }
        let out = render_prompt(&ticket, "dx/workout-log.md", date!(2026 - 01 - 02), "O").unwrap();
        assert!(out.contains("__SURFACE__, swiss grid"), "{out}");
    }

    #[test]
    fn an_unknown_template_token_is_an_error() {
        let err = substitute("a __SOW_PATH__ b __NOPE__", |n| {
            (n == "SOW_PATH").then_some("x")
        })
        .unwrap_err();
        assert_eq!(err, "NOPE");
        let ok = substitute("a __SOW_PATH__ b __bold__ ___", |_| Some("x")).unwrap();
        assert_eq!(ok, "a x b __bold__ ___");
    }

    /// Asserts each marker is in `text`, and in this order.
    fn in_order(text: &str, markers: &[&str]) {
        let mut from = 0;
        for m in markers {
            match text[from..].find(m) {
                Some(at) => from += at + m.len(),
                None => panic!("{m:?} is missing (or out of order) in\n{text}"),
            }
        }
    }

    fn sow_prompt() -> String {
        let ticket = Ticket {
            kind: TicketType::Sow,
            repos: vec!["prog-strength-api".into(), "prog-strength-web".into()],
            dx: None,
        };
        render_prompt(
            &ticket,
            "sows/rest-timer.md",
            date!(2026 - 03 - 07),
            "Prog-Strength",
        )
        .unwrap()
    }

    fn dx_prompt() -> String {
        render_prompt(
            &dx(),
            "dx/workout-log.md",
            date!(2026 - 01 - 02),
            "Prog-Strength",
        )
        .unwrap()
    }

    #[test]
    fn the_sow_prompt_states_every_obligation_of_section_3() {
        let p = sow_prompt();
        // 1. unattended; say when blocked.
        in_order(&p, &["unattended", "No one will answer", "truly blocked"]);
        // 2. paths.
        in_order(
            &p,
            &[
                "./<docs repository>/sows/rest-timer.md",
                "prog-strength-api, prog-strength-web",
                "`./<name>` on its `main` branch",
            ],
        );
        // 3. design system.
        in_order(
            &p,
            &[
                "frontend",
                "`design-system.md`",
                "palette, accent, type",
                "extends the system",
            ],
        );
        // 4. plan; 5. execution.
        in_order(
            &p,
            &["`plans/*-rest-timer.md`", "`superpowers:writing-plans`"],
        );
        in_order(
            &p,
            &[
                "`superpowers:subagent-driven-development`",
                "subagent",
                "spec-reviewed",
                "quality-reviewed",
            ],
        );
        // 6. branches and PRs in the repository's style.
        in_order(
            &p,
            &[
                "`feat/rest-timer`",
                "one pull request per changed repository",
                "against `main`",
                "recent merged pull requests",
            ],
        );
        // 7. the ticket marked shipped, the docs PR always opened.
        in_order(
            &p,
            &[
                "`status: shipped`",
                "`**Status**:` line to `Shipped`",
                "`**Last updated**:` line to 2026-03-07",
                "Always open this docs pull request",
                "not in `repos`",
            ],
        );
        // 8. the local gate.
        in_order(
            &p,
            &[
                "AGENTS.md or CONTRIBUTING.md",
                "`golangci-lint run`",
                "`go vet ./...`",
                "`go mod tidy`",
                "`go test ./...`",
                "Never `--no-verify`",
                "never `//nolint`",
                "disabled lint rule",
                "skipped",
            ],
        );
        // 9. the docs PR template, sections in order.
        in_order(
            &p,
            &[
                "## Shipped: rest-timer",
                "Ticket: [sows/rest-timer.md]",
                "## Implementation PRs",
                "in `repos` order",
                "docs-only",
                "## Deployment",
                "No coordination window",
                "## Verification after rollout",
                "Merging this pull request flips the ticket's status",
            ],
        );
        // 10. the hard rules.
        in_order(
            &p,
            &[
                "Never merge",
                "No force-push",
                "`git reset --hard` on",
                "no `rm -rf` outside the workspace",
                "no repository outside `repos`",
            ],
        );
        // 11. blocked: a draft PR in the docs repository.
        in_order(
            &p,
            &[
                "blocked",
                "**draft** pull request in the docs repository",
                "clarification",
                "exit",
            ],
        );
        // 12. the budget and progress markers.
        in_order(
            &p,
            &[
                "six hours",
                "five-hour mark",
                "backstop",
                "progress markers",
            ],
        );
    }

    #[test]
    fn the_dx_prompt_states_every_obligation_of_section_4() {
        let p = dx_prompt();
        // 1. the spread is the value.
        in_order(
            &p,
            &[
                "Design Exploration",
                "3",
                "genuinely different variants",
                "side by side on one screen",
                "never converge",
                "never pick a winner",
                "never merge",
            ],
        );
        // 2. scope.
        in_order(
            &p,
            &[
                "`in-system`",
                "palette",
                "single accent",
                "type family",
                "layout",
                "`greenfield`",
                "brand",
                "dark theme",
                "ticket\n   alone",
            ],
        );
        // 3. the skill; 4. AGENTS.md.
        assert!(p.contains("Use the `frontend-design` skill."), "{p}");
        assert!(
            p.contains("Follow the web repository's AGENTS.md conventions."),
            "{p}"
        );
        // 5. one route, the one flag.
        in_order(
            &p,
            &[
                "ONE comparison route, `/design-explore/workout-log`",
                "labelled with its idiom",
                "`config.designExploreEnabled`",
                "`lib/config.ts`",
                "`NEXT_PUBLIC_ENABLE_DESIGN_EXPLORE`",
                "`if (!config.designExploreEnabled) notFound()`",
                "Never add a new flag",
            ],
        );
        // 6. throwaway variants mapped to their idiom.
        in_order(
            &p,
            &[
                "self-contained throwaway component",
                "type scale, colour logic and spacing rhythm",
                "comment at",
                "No tests for mockups",
                "static, realistic fixtures",
            ],
        );
        // 7. branch, exact title, the selection artifact.
        in_order(
            &p,
            &[
                "`dx/workout-log`",
                "never\n   `feat/`",
                "**draft** pull request in the web",
            ],
        );
        assert!(
            p.contains("`[DX — DO NOT MERGE] workout-log — 3 design variants`"),
            "{p}"
        );
        in_order(
            &p,
            &[
                "a heading",
                "one\n   sentence",
                "link to the ticket `dx/workout-log.md`",
                "preview link",
                "scope",
                "one `###` section per idiom",
                "## Selection",
                "one\n   checkbox per idiom",
                "brutalist, swiss grid, editorial",
            ],
        );
        // 8. the docs repository awaits the selection.
        in_order(
            &p,
            &[
                "docs repository",
                "`dx/workout-log`",
                "`status: awaiting_selection`",
                "**draft**",
                "Never set `shipped`",
                "never open the SOW-style docs pull",
            ],
        );
        // 9. the checks, the hooks, the budget.
        in_order(
            &p,
            &[
                "local checks",
                "never bypass hooks",
                "five-hour mark",
                "draft pull\n   request",
            ],
        );
    }

    #[test]
    fn a_bad_sow_path_is_refused() {
        let err = render_prompt(&sow(), "../sows/x.md", date!(2026 - 01 - 02), "O").unwrap_err();
        assert!(matches!(err, RenderError::Path(_)), "{err}");
    }
}
