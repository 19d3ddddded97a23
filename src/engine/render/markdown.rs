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
