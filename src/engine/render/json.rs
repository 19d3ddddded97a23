//! The machine-readable plan (`--format json`). The shape is a contract,
//! documented in docs/plan-json.md; add fields, never rename them.

use serde::Serialize;
use serde_json::Value;

use crate::engine::diff::AttrChange;
use crate::engine::plan::{Action, Plan, Summary};

#[derive(Serialize)]
struct JsonPlan<'a> {
    format_version: u32,
    stack: &'a str,
    env: &'a str,
    state_serial: u64,
    destroy: bool,
    has_changes: bool,
    summary: Summary,
    resources: Vec<JsonResource<'a>>,
}

#[derive(Serialize)]
struct JsonResource<'a> {
    address: &'a str,
    kind: &'a str,
    action: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    drift: bool,
    adopted: bool,
    protected: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    twin_of: Option<&'a str>,
    changes: &'a [AttrChange],
    #[serde(skip_serializing_if = "Option::is_none")]
    after: Option<&'a Value>,
}

pub fn render(plan: &Plan) -> String {
    let doc = JsonPlan {
        format_version: 1,
        stack: &plan.stack,
        env: &plan.env,
        state_serial: plan.serial,
        destroy: plan.destroy,
        has_changes: plan.has_changes(),
        summary: plan.summary(),
        resources: plan
            .resources
            .iter()
            .filter(|r| r.is_change())
            .map(|r| JsonResource {
                address: &r.address,
                kind: &r.kind,
                action: r.action,
                id: r.id.as_deref(),
                drift: r.is_drift(),
                adopted: r.adopted,
                protected: r.protected,
                reason: r.reason.as_deref(),
                twin_of: r.twin_of.as_deref(),
                changes: &r.changes,
                after: if r.action == Action::Create {
                    r.after.as_ref()
                } else {
                    None
                },
            })
            .collect(),
    };
    let mut s =
        serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    s.push('\n');
    s
}
