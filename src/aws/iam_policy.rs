//! IAM policy documents: how the stack writes them, and the one canonical
//! form that desired and live documents are compared in.
//!
//! IAM stores a document as it was sent and returns it URL-encoded, so a
//! byte comparison would call a re-indented or re-ordered document drift.
//! Two documents are the same policy when their canonical forms are equal:
//! object keys sorted, whitespace gone, every `Action`/`Resource`/
//! `Principal`/condition value a sorted list (a single string equals a
//! one-element list, as IAM evaluates them the same), statements sorted.
//! The canonical form is itself a valid policy, so it is also what
//! devstack sends.

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

/// The policy language version every document declares.
pub const VERSION: &str = "2012-10-17";

/// A policy document as the stack declares it. Values may be references
/// or templates; the engine resolves them before the kind sees them.
#[derive(Debug, Clone)]
pub struct PolicyDocument {
    pub statements: Vec<Statement>,
}

/// One statement. `resources` and condition values are JSON so they can
/// hold references (`Ref<T>`, `Template`) as well as literal strings.
#[derive(Debug, Clone)]
pub struct Statement {
    pub effect: &'static str,
    pub principal: Option<Value>,
    pub actions: Vec<String>,
    pub resources: Vec<Value>,
    /// operator -> condition key -> value.
    pub condition: BTreeMap<String, BTreeMap<String, Value>>,
}

impl PolicyDocument {
    pub fn new(statements: Vec<Statement>) -> PolicyDocument {
        PolicyDocument { statements }
    }

    /// A trust policy that lets an AWS service (`ec2.amazonaws.com`)
    /// assume the role.
    pub fn trust_service(service: &str) -> PolicyDocument {
        let mut principal = Map::new();
        principal.insert("Service".into(), Value::from(service));
        PolicyDocument::new(vec![Statement {
            effect: "Allow",
            principal: Some(Value::Object(principal)),
            actions: vec!["sts:AssumeRole".into()],
            resources: vec![],
            condition: BTreeMap::new(),
        }])
    }
}

impl Statement {
    /// Allows these actions (add resources with [`Statement::on`]).
    pub fn allow<I, S>(actions: I) -> Statement
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Statement {
            effect: "Allow",
            principal: None,
            actions: actions.into_iter().map(Into::into).collect(),
            resources: vec![],
            condition: BTreeMap::new(),
        }
    }

    /// Adds a resource: an ARN string, a reference or a template.
    pub fn on(mut self, resource: impl Serialize) -> Statement {
        self.resources
            .push(serde_json::to_value(resource).unwrap_or(Value::Null));
        self
    }

    /// Adds a condition: `operator` (`ArnEquals`) on `key` (`ec2:InstanceProfile`).
    pub fn when(mut self, operator: &str, key: &str, value: impl Serialize) -> Statement {
        self.condition
            .entry(operator.to_string())
            .or_default()
            .insert(
                key.to_string(),
                serde_json::to_value(value).unwrap_or(Value::Null),
            );
        self
    }

    fn to_json(&self) -> Value {
        let mut s = Map::new();
        s.insert("Effect".into(), Value::from(self.effect));
        if let Some(p) = &self.principal {
            s.insert("Principal".into(), p.clone());
        }
        s.insert(
            "Action".into(),
            Value::Array(self.actions.iter().cloned().map(Value::from).collect()),
        );
        if !self.resources.is_empty() {
            s.insert("Resource".into(), Value::Array(self.resources.clone()));
        }
        if !self.condition.is_empty() {
            let c = self
                .condition
                .iter()
                .map(|(op, keys)| {
                    let keys = keys.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                    (op.clone(), Value::Object(keys))
                })
                .collect();
            s.insert("Condition".into(), Value::Object(c));
        }
        Value::Object(s)
    }
}

impl Serialize for PolicyDocument {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut doc = Map::new();
        doc.insert("Version".into(), Value::from(VERSION));
        doc.insert(
            "Statement".into(),
            Value::Array(self.statements.iter().map(Statement::to_json).collect()),
        );
        Value::Object(doc).serialize(serializer)
    }
}

/// Statement keys whose value is a set of strings.
const SET_KEYS: &[&str] = &["Action", "NotAction", "Resource", "NotResource"];
/// Statement keys whose value is `"*"` or a map of sets.
const PRINCIPAL_KEYS: &[&str] = &["Principal", "NotPrincipal"];

/// The canonical form of a policy document (see the module docs). Values
/// it does not understand are kept, with their keys sorted.
pub fn canonical(doc: &Value) -> Value {
    let Some(obj) = doc.as_object() else {
        return sorted(doc);
    };
    let mut out = Map::new();
    for key in sorted_keys(obj) {
        let v = &obj[key.as_str()];
        let v = if key == "Statement" {
            let mut statements: Vec<Value> = as_list(v).iter().map(canonical_statement).collect();
            statements.sort_by_key(|s| s.to_string());
            statements.dedup();
            Value::Array(statements)
        } else {
            sorted(v)
        };
        out.insert(key, v);
    }
    Value::Object(out)
}

fn canonical_statement(statement: &Value) -> Value {
    let Some(obj) = statement.as_object() else {
        return sorted(statement);
    };
    let mut out = Map::new();
    for key in sorted_keys(obj) {
        let v = &obj[key.as_str()];
        let v = if SET_KEYS.contains(&key.as_str()) {
            set(v)
        } else if PRINCIPAL_KEYS.contains(&key.as_str()) {
            match v.as_object() {
                Some(p) => map_of_sets(p),
                None => sorted(v),
            }
        } else if key == "Condition" {
            match v.as_object() {
                Some(ops) => Value::Object(
                    sorted_keys(ops)
                        .into_iter()
                        .map(|op| {
                            let keys = match ops[op.as_str()].as_object() {
                                Some(keys) => map_of_sets(keys),
                                None => sorted(&ops[op.as_str()]),
                            };
                            (op, keys)
                        })
                        .collect(),
                ),
                None => sorted(v),
            }
        } else {
            sorted(v)
        };
        out.insert(key, v);
    }
    Value::Object(out)
}

fn map_of_sets(m: &Map<String, Value>) -> Value {
    Value::Object(
        sorted_keys(m)
            .into_iter()
            .map(|k| {
                let v = set(&m[k.as_str()]);
                (k, v)
            })
            .collect(),
    )
}

/// A scalar or a list, as a sorted list without duplicates.
fn set(v: &Value) -> Value {
    let mut items: Vec<Value> = as_list(v).iter().map(sorted).collect();
    items.sort_by_key(|i| match i {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    items.dedup();
    Value::Array(items)
}

fn as_list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    }
}

fn sorted_keys(m: &Map<String, Value>) -> Vec<String> {
    let mut keys: Vec<String> = m.keys().cloned().collect();
    keys.sort();
    keys
}

/// `v` with every object's keys in sorted order (serde_json keeps
/// insertion order here, and the rendered plan should not depend on it).
fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            sorted_keys(m)
                .into_iter()
                .map(|k| {
                    let v = sorted(&m[k.as_str()]);
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// Parses a document as IAM returns it: URL-encoded (RFC 3986) from
/// GetRole and GetRolePolicy, plain JSON in a few other places.
pub fn decode(text: &str) -> Result<Value, String> {
    let trimmed = text.trim_start();
    let json = if trimmed.starts_with('{') {
        trimmed.to_string()
    } else {
        percent_decode(trimmed)?
    };
    serde_json::from_str(&json).map_err(|e| format!("the policy document is not JSON: {e}"))
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape at byte {i} of a policy document"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|e| format!("a policy document is not UTF-8: {e}"))
}

/// The canonical form of a document as IAM returns it.
pub fn canonical_from_aws(text: &str) -> Result<Value, String> {
    decode(text).map(|v| canonical(&v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": ["dynamodb:UpdateItem", "dynamodb:GetItem"],
                 "Resource": "arn:aws:dynamodb:us-east-2:1:table/t"},
                {"Effect": "Allow", "Action": "ec2:TerminateInstances",
                 "Resource": ["arn:aws:ec2:us-east-2:1:instance/*"],
                 "Condition": {"ArnEquals": {"ec2:InstanceProfile": "arn:p"}}}
            ]
        })
    }

    #[test]
    fn key_order_whitespace_single_strings_and_statement_order_are_not_differences() {
        let reordered = r#"{
          "Statement": [
            { "Condition": {"ArnEquals": {"ec2:InstanceProfile": ["arn:p"]}},
              "Resource": "arn:aws:ec2:us-east-2:1:instance/*",
              "Action": ["ec2:TerminateInstances"], "Effect": "Allow" },
            { "Resource": ["arn:aws:dynamodb:us-east-2:1:table/t"],
              "Effect": "Allow",
              "Action": ["dynamodb:GetItem", "dynamodb:UpdateItem"] }
          ],
          "Version": "2012-10-17"
        }"#;
        let reordered: Value = serde_json::from_str(reordered).unwrap();
        assert_eq!(canonical(&doc()), canonical(&reordered));
        assert_eq!(
            canonical(&doc()).to_string(),
            canonical(&reordered).to_string()
        );
    }

    #[test]
    fn a_different_action_or_resource_is_a_difference() {
        let mut other = doc();
        other["Statement"][0]["Action"] = json!(["dynamodb:GetItem", "dynamodb:DeleteItem"]);
        assert_ne!(canonical(&doc()), canonical(&other));
        let mut other = doc();
        other["Statement"][1]["Resource"] = json!("*");
        assert_ne!(canonical(&doc()), canonical(&other));
    }

    #[test]
    fn url_encoded_documents_from_aws_decode_to_the_same_policy() {
        // As GetRolePolicy returns it (RFC 3986, `*` escaped too).
        let encoded = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Action%22%3A%22s3%3AGet%2A%22%2C%22Resource%22%3A%22%2A%22%7D%5D%7D";
        let want = json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["s3:Get*"], "Resource": ["*"]}]});
        assert_eq!(canonical_from_aws(encoded).unwrap(), canonical(&want));
        assert_eq!(
            canonical_from_aws(&want.to_string()).unwrap(),
            canonical(&want)
        );
        assert!(canonical_from_aws("%7B%2").is_err());
    }

    #[test]
    fn the_declared_trust_policy_is_what_iam_expects() {
        let v = serde_json::to_value(PolicyDocument::trust_service("ec2.amazonaws.com")).unwrap();
        assert_eq!(
            canonical(&v),
            canonical(&json!({"Version": "2012-10-17", "Statement": {
                "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                "Action": "sts:AssumeRole"}}))
        );
    }
}
