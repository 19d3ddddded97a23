//! The human plan: one block per changed resource, attribute-level
//! `before → after`, multi-line values as unified diffs. Code changes and
//! drift (live changed outside devstack) are listed apart.

use std::fmt::Write;

use similar::TextDiff;

use super::{show, summary_line};
use crate::engine::diff::Source;
use crate::engine::plan::{Action, Plan, ResourceChange};

/// Renders a plan as plain text (no colour; the CLI may colour lines).
pub fn render(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "devstack {}: stack {} (env {}), state serial {}\n",
        if plan.destroy { "destroy plan" } else { "plan" },
        plan.stack,
        plan.env,
        plan.serial
    );
    if !plan.has_changes() {
        let _ = writeln!(out, "No changes. Live infrastructure matches the stack.");
        return out;
    }
    let (drift, code): (Vec<&ResourceChange>, Vec<&ResourceChange>) = plan
        .resources
        .iter()
        .filter(|r| r.is_change())
        .partition(|r| r.is_drift());
    if !code.is_empty() {
        let _ = writeln!(out, "Changes in the stack:\n");
        for r in code {
            resource(&mut out, r);
        }
    }
    if !drift.is_empty() {
        let _ = writeln!(
            out,
            "Drift (changed outside devstack; apply puts it back):\n"
        );
        for r in drift {
            resource(&mut out, r);
        }
    }
    let _ = writeln!(out, "{}", summary_line(plan));
    out
}

fn resource(out: &mut String, r: &ResourceChange) {
    let id = r.id.as_deref().map(|i| format!(" {i}")).unwrap_or_default();
    let mut notes = Vec::new();
    if r.adopted {
        notes.push("adopt: found by its tags, not recorded in state".to_string());
    }
    if let Some(reason) = &r.reason {
        notes.push(reason.clone());
    }
    if r.action == Action::Replace {
        let forced: Vec<&str> = r
            .changes
            .iter()
            .filter(|c| c.forces_replacement)
            .map(|c| c.name.as_str())
            .collect();
        if !forced.is_empty() {
            notes.push(format!("forces replacement: {}", forced.join(", ")));
        }
    }
    if r.protected && matches!(r.action, Action::Replace | Action::Delete) {
        notes.push("PROTECTED".into());
    }
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!("  ({})", notes.join("; "))
    };
    let symbol = if r.action == Action::NoOp {
        "="
    } else {
        r.action.symbol()
    };
    let _ = writeln!(
        out,
        "  {symbol} {} ({}){id} will be {}{notes}",
        r.address,
        r.kind,
        verb(r)
    );
    match r.action {
        Action::Create => {
            if let Some(after) = r.after.as_ref().and_then(|a| a.as_object()) {
                let width = after.keys().map(|k| k.len()).max().unwrap_or(0);
                for (k, v) in after {
                    attr_line(out, "+", k, width, &show(v));
                }
            }
        }
        Action::Delete => {}
        _ => {
            for c in &r.changes {
                let before = c
                    .before
                    .as_ref()
                    .map(show)
                    .unwrap_or_else(|| "(none)".into());
                let after = show(&c.after);
                let mut tail = String::new();
                if c.forces_replacement {
                    tail.push_str("  # forces replacement");
                }
                if c.source == Source::Drift {
                    tail.push_str("  # drift");
                }
                if before.contains('\n') || after.contains('\n') {
                    let _ = writeln!(out, "      ~ {}:{tail}", c.name);
                    let diff = TextDiff::from_lines(&before, &after);
                    // Rendered values never end in a newline; similar's
                    // "\ No newline at end of file" would only be noise.
                    let unified = diff
                        .unified_diff()
                        .context_radius(2)
                        .missing_newline_hint(false)
                        .to_string();
                    for line in unified.lines() {
                        if line.starts_with("@@") {
                            continue;
                        }
                        let _ = writeln!(out, "          {line}");
                    }
                } else {
                    let _ = writeln!(out, "      ~ {}: {before} → {after}{tail}", c.name);
                }
            }
        }
    }
    out.push('\n');
}

fn verb(r: &ResourceChange) -> &'static str {
    match r.action {
        Action::NoOp if r.adopted => "adopted into state",
        Action::NoOp => "forgotten (already gone)",
        a => a.verb(),
    }
}

fn attr_line(out: &mut String, sym: &str, key: &str, width: usize, value: &str) {
    let mut lines = value.lines();
    let first = lines.next().unwrap_or("");
    let _ = writeln!(out, "      {sym} {key:<width$} = {first}");
    for l in lines {
        let _ = writeln!(out, "        {:<width$}   {l}", "");
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::engine::diff::AttrChange;
    use crate::engine::plan::PLAN_FORMAT;

    fn tag_update() -> Plan {
        Plan {
            format_version: PLAN_FORMAT,
            stack: "s".into(),
            env: "prod".into(),
            lineage: Some("l".into()),
            serial: 3,
            destroy: false,
            resources: vec![ResourceChange {
                address: "vpc".into(),
                kind: "aws_vpc".into(),
                action: Action::Update,
                id: Some("vpc-1".into()),
                changes: vec![AttrChange {
                    name: "tags".into(),
                    before: Some(json!({"Name": "a", "Project": "p"})),
                    after: json!({"Name": "a", "Project": "q"}),
                    forces_replacement: false,
                    source: Source::Code,
                }],
                before: None,
                after: None,
                config: None,
                prior_outputs: Default::default(),
                deps: vec![],
                prior_deps: vec![],
                protected: false,
                adopted: false,
                reason: None,
                twin_of: None,
            }],
            data: Default::default(),
            outputs: Default::default(),
        }
    }

    #[test]
    fn multi_line_diff_has_no_missing_newline_marker() {
        let text = render(&tag_update());
        assert!(text.contains("-  \"Project\": \"p\""), "{text}");
        assert!(text.contains("+  \"Project\": \"q\""), "{text}");
        assert!(!text.contains("No newline at end of file"), "{text}");
    }
}
