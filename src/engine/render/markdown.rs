//! The sticky PR comment. The first line is a hidden marker so CI can find
//! and update its own comment; the summary and any destroy/replace warning
//! are always visible; the detail sits in a collapsed block and is cut so
//! the whole comment stays under GitHub's limit.

use std::fmt::Write;

use super::{destructive, summary_line, text};
use crate::engine::plan::{Action, Plan};

/// Marker line CI searches for to update its comment in place.
pub const MARKER: &str = "<!-- devstack-plan -->";
/// Comments cap at about 65,000 characters; leave room for the frame.
pub const MAX_CHARS: usize = 60_000;

pub fn render(plan: &Plan, log_url: Option<&str>) -> String {
    let mut head = String::new();
    let _ = writeln!(head, "{MARKER}");
    let _ = writeln!(
        head,
        "### devstack {}: `{}` ({})\n",
        if plan.destroy { "destroy plan" } else { "plan" },
        plan.stack,
        plan.env
    );
    if !plan.has_changes() {
        let _ = writeln!(
            head,
            "**No changes.** Live infrastructure matches the stack."
        );
        return head;
    }
    let _ = writeln!(head, "**{}**\n", summary_line(plan));
    let drifted = plan.summary().drifted;
    if drifted > 0 {
        let _ = writeln!(
            head,
            "{drifted} resource(s) drifted outside devstack; apply puts them back.\n"
        );
    }
    let bad = destructive(plan);
    if !bad.is_empty() {
        let _ = writeln!(head, "> [!CAUTION]");
        let _ = writeln!(
            head,
            "> **This plan destroys or replaces {} resource(s):**",
            bad.len()
        );
        for r in &bad {
            let what = if r.action == Action::Delete {
                "destroy"
            } else {
                "replace"
            };
            let _ = writeln!(head, "> - `{}` ({what})", r.address);
        }
        head.push('\n');
    }
    let open = "<details><summary>Plan details</summary>\n\n```diff\n";
    let close = "```\n\n</details>\n";
    let mut detail = diff_lines(&text::render(plan));
    let budget = MAX_CHARS.saturating_sub(head.len() + open.len() + close.len() + 400);
    let mut tail = String::new();
    if detail.len() > budget {
        let mut cut = budget;
        while !detail.is_char_boundary(cut) {
            cut -= 1;
        }
        let cut = detail[..cut].rfind('\n').map(|i| i + 1).unwrap_or(cut);
        let dropped = detail.len() - cut;
        detail.truncate(cut);
        let pointer = match log_url {
            Some(url) => format!("[the full plan in the job log]({url})"),
            None => "the full plan in the job log".to_string(),
        };
        let _ = writeln!(
            tail,
            "\n**The plan was cut here ({dropped} more characters).** See {pointer}."
        );
    }
    format!("{head}{open}{detail}{close}{tail}")
}

/// Puts each line's change symbol in the first column so GitHub's `diff`
/// highlighting colours it.
fn diff_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let t = line.trim_start();
        let sym = if t.starts_with("-/+") {
            "!"
        } else if t.starts_with('+') {
            "+"
        } else if t.starts_with('-') {
            "-"
        } else if t.starts_with('~') {
            "!"
        } else {
            " "
        };
        let _ = writeln!(out, "{sym}{line}");
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::engine::plan::{ResourceChange, PLAN_FORMAT};

    fn change(address: String, action: Action) -> ResourceChange {
        ResourceChange {
            address,
            kind: "test_thing".into(),
            action,
            id: (action != Action::Create).then(|| "thing-1".to_string()),
            changes: vec![],
            before: None,
            after: Some(json!({
                "description": "x".repeat(200),
                "tags": {"Name": "a-rather-long-name-for-a-thing", "Project": "p"},
            })),
            config: None,
            prior_outputs: BTreeMap::new(),
            deps: vec![],
            prior_deps: vec![],
            protected: false,
            adopted: false,
            reason: None,
            twin_of: None,
        }
    }

    /// 2,000 creates (about 700 KB of text) and one replace.
    fn huge_plan() -> Plan {
        let mut resources: Vec<ResourceChange> = (0..2000)
            .map(|i| change(format!("thing.n{i:04}"), Action::Create))
            .collect();
        resources.push(change("thing.old".into(), Action::Replace));
        Plan {
            format_version: PLAN_FORMAT,
            stack: "s".into(),
            env: "prod".into(),
            lineage: None,
            serial: 0,
            destroy: false,
            resources,
            data: BTreeMap::new(),
            outputs: BTreeMap::new(),
        }
    }

    #[test]
    fn a_huge_plan_is_cut_under_the_comment_limit_with_a_pointer_to_the_log() {
        let plan = huge_plan();
        assert!(text::render(&plan).len() > 10 * MAX_CHARS);
        let out = render(&plan, Some("https://ci.example/run/42"));
        assert!(out.len() <= MAX_CHARS, "{} bytes", out.len());
        assert!(out.chars().count() <= MAX_CHARS);
        // What a reviewer needs stays visible: marker, summary, warning.
        assert!(out.starts_with(MARKER));
        assert!(out.contains("**Plan: 2000 to add, 0 to change, 1 to replace, 0 to destroy.**"));
        assert!(out.contains("> [!CAUTION]") && out.contains("`thing.old` (replace)"));
        // The details are cut at a line end, the block still closes, and the
        // pointer says how much is missing and where the rest is.
        assert!(out.contains("```\n\n</details>\n"));
        assert!(out.contains("**The plan was cut here ("));
        assert!(out.contains("[the full plan in the job log](https://ci.example/run/42)"));
        let details = out
            .split("```diff\n")
            .nth(1)
            .and_then(|d| d.split("```\n").next())
            .unwrap();
        assert!(details.ends_with('\n'));
        assert!(details.lines().all(|l| !l.is_empty()), "no half lines");
    }

    #[test]
    fn a_cut_plan_without_a_log_url_still_points_at_the_log() {
        let out = render(&huge_plan(), None);
        assert!(out.len() <= MAX_CHARS);
        assert!(
            out.contains("See the full plan in the job log."),
            "{}",
            &out[out.len() - 300..]
        );
    }

    #[test]
    fn a_small_plan_is_not_cut() {
        let mut plan = huge_plan();
        plan.resources.truncate(3);
        let out = render(&plan, Some("https://ci.example/run/42"));
        assert!(!out.contains("The plan was cut"));
        assert!(out.contains("thing.n0002"));
    }
}
