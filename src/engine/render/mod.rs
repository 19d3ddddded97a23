//! Plan rendering: `text` for terminals and logs, `markdown` for the sticky
//! PR comment, `json` for machines (documented in docs/plan-json.md).
//! Renderers are pure functions of the plan.

use serde_json::Value;

use super::plan::{Action, Plan, ResourceChange};
use super::resource::UNKNOWN_KEY;

pub mod json;
pub mod markdown;
pub mod text;

/// Shown in place of a value only apply will know.
pub const KNOWN_AFTER_APPLY: &str = "(known after apply)";

/// A value for display: scalars on one line, structures as pretty JSON,
/// unknown markers as `(known after apply)`.
pub fn show(v: &Value) -> String {
    fn scrub(v: &Value) -> Value {
        match v {
            Value::Object(o) if o.contains_key(UNKNOWN_KEY) => {
                Value::String(KNOWN_AFTER_APPLY.into())
            }
            Value::Object(o) => {
                Value::Object(o.iter().map(|(k, v)| (k.clone(), scrub(v))).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(scrub).collect()),
            other => other.clone(),
        }
    }
    match scrub(v) {
        Value::String(s) if s == KNOWN_AFTER_APPLY => s,
        Value::String(s) if s.contains('\n') => s,
        // Lists of records (rules, routes): one compact record per line, so
        // a diff shows exactly which record came or went.
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object) => {
            let lines: Vec<String> = items.iter().map(|i| format!("  {i}")).collect();
            format!("[\n{}\n]", lines.join(",\n"))
        }
        v @ (Value::Object(_) | Value::Array(_)) => {
            serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string())
        }
        v => v.to_string(),
    }
}

/// `Plan: 2 to add, 1 to change, 0 to replace, 0 to destroy.`
pub fn summary_line(plan: &Plan) -> String {
    let s = plan.summary();
    let mut line = format!(
        "Plan: {} to add, {} to change, {} to replace, {} to destroy",
        s.add, s.change, s.replace, s.destroy
    );
    if s.adopt > 0 {
        line.push_str(&format!(", {} to adopt", s.adopt));
    }
    line.push('.');
    line
}

/// Resources that will be destroyed or replaced.
pub fn destructive(plan: &Plan) -> Vec<&ResourceChange> {
    plan.resources
        .iter()
        .filter(|r| matches!(r.action, Action::Delete | Action::Replace))
        .collect()
}
