//! The IAM side of the fleet tests: which `dynamodb:` actions the stack's
//! worker role allows on the runs table, and which actions a DynamoDB
//! request captured on the wire needs. Tests use the two to prove that
//! what the worker asks of the table fits its role (platform.md §1).
//!
//! WHERE MOTO DIFFERS FROM AWS: moto authorizes nothing by default, and its
//! opt-in IAM checks would authorize a `TransactWriteItems` as one action
//! of that name. AWS has no such action: it authorizes every item of a
//! transaction as the single-item action it stands for (`Update` as
//! `dynamodb:UpdateItem`, `Delete` as `dynamodb:DeleteItem`,
//! `ConditionCheck` as `dynamodb:ConditionCheckItem`, …). So the check is
//! made here, against the policy as the stack declares it.

use std::collections::BTreeSet;

use devstack::stack::env::Env;
use serde_json::Value;

/// The `dynamodb:` actions the worker role's inline policy allows on the
/// runs table, read from the stack itself (not a copy of it).
pub fn worker_runs_table_actions() -> BTreeSet<String> {
    let env = Env::load("prod").expect("the prod environment");
    let stack = devstack::stack::stack(&env);
    let policy = &stack
        .get("iam_role_policy.worker")
        .expect("the worker's inline policy")
        .body["policy"];
    let table = format!(":table/{}\"", env.runs_table());
    let mut actions = BTreeSet::new();
    for statement in policy["Statement"].as_array().expect("statements") {
        let on_table = statement["Resource"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r.to_string().contains(&table));
        if statement["Effect"] == "Allow" && on_table {
            for action in statement["Action"].as_array().expect("actions") {
                let action = action.as_str().expect("an action name");
                if action.starts_with("dynamodb:") {
                    actions.insert(action.to_string());
                }
            }
        }
    }
    actions
}

/// The IAM actions AWS authorizes a DynamoDB request as, from its action
/// name and JSON body: a transaction's items one by one, anything else as
/// `dynamodb:<Action>`.
pub fn required_actions(action: &str, body: &[u8]) -> Vec<String> {
    let per_item: &[(&str, &str)] = match action {
        "TransactWriteItems" => &[
            ("Put", "PutItem"),
            ("Update", "UpdateItem"),
            ("Delete", "DeleteItem"),
            ("ConditionCheck", "ConditionCheckItem"),
        ],
        "TransactGetItems" => &[("Get", "GetItem")],
        _ => return vec![format!("dynamodb:{action}")],
    };
    let request: Value = serde_json::from_slice(body).expect("a JSON request body");
    let items = request["TransactItems"]
        .as_array()
        .expect("TransactItems in a transaction");
    assert!(!items.is_empty(), "an empty transaction");
    items
        .iter()
        .map(|item| {
            let kind = item
                .as_object()
                .and_then(|o| o.keys().next())
                .expect("a transaction item names its kind");
            per_item
                .iter()
                .find(|(k, _)| k == kind)
                .map(|(_, a)| format!("dynamodb:{a}"))
                // Unknown kinds are kept visible: a test then fails on them.
                .unwrap_or_else(|| format!("dynamodb:{action}.{kind}"))
        })
        .collect()
}
