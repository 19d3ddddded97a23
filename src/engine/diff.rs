//! Attribute diffs: per attribute, whether it changes, whether that forces
//! replacement, and whether the change comes from code or from drift.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::provider::Schema;
use super::resource::is_unknown;

/// Where a difference comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The code asks for something new.
    Code,
    /// Someone changed the live resource; the code did not change.
    Drift,
}

/// One attribute that differs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttrChange {
    pub name: String,
    /// Live value (None when the attribute is absent).
    pub before: Option<Value>,
    /// Desired value; may contain unknown markers.
    pub after: Value,
    pub forces_replacement: bool,
    pub source: Source,
}

/// Diffs a desired body against a live body, attribute by attribute.
/// `recorded` is what devstack last applied (None for an adopted or new
/// resource); it tells drift from code changes and serves attributes whose
/// drift the kind ignores.
pub fn diff(
    schema: &Schema,
    desired: &Value,
    live: &Value,
    recorded: Option<&Value>,
) -> Vec<AttrChange> {
    let mut out = Vec::new();
    let Some(desired) = desired.as_object() else {
        return out;
    };
    for (name, want) in desired {
        let have = live.get(name);
        let last = recorded.and_then(|r| r.get(name));
        let unknown = is_unknown(want);
        if !unknown && have == Some(want) {
            continue;
        }
        if schema.ignores_drift(name) && !unknown {
            // Neither drift nor a new desired value counts: the desired value
            // of these can move without anyone touching the code (the latest
            // AMI), and following it would replace a running server. Only
            // `--replace` applies it.
            continue;
        }
        let source = match last {
            Some(last) if last == want && !unknown => Source::Drift,
            _ => Source::Code,
        };
        out.push(AttrChange {
            name: name.clone(),
            before: have.cloned(),
            after: want.clone(),
            forces_replacement: schema.forces_new(name),
            source,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SCHEMA: Schema = Schema {
        force_new: &["cidr"],
        ignore_drift: &["ami"],
        sensitive: &[],
    };

    #[test]
    fn equal_bodies_have_no_changes() {
        let b = json!({"cidr": "10.0.0.0/16", "tags": {"a": "b"}});
        assert!(diff(&SCHEMA, &b, &b, Some(&b)).is_empty());
    }

    #[test]
    fn force_new_attributes_are_marked() {
        let d = json!({"cidr": "10.1.0.0/16", "tags": {"a": "c"}});
        let l = json!({"cidr": "10.0.0.0/16", "tags": {"a": "b"}});
        let c = diff(&SCHEMA, &d, &l, Some(&l));
        assert_eq!(c.len(), 2);
        assert!(
            c.iter()
                .find(|c| c.name == "cidr")
                .unwrap()
                .forces_replacement
        );
        assert!(
            !c.iter()
                .find(|c| c.name == "tags")
                .unwrap()
                .forces_replacement
        );
    }

    #[test]
    fn live_change_with_unchanged_code_is_drift() {
        let d = json!({"tags": {"a": "b"}});
        let l = json!({"tags": {"a": "hacked"}});
        let c = diff(&SCHEMA, &d, &l, Some(&d));
        assert_eq!(c[0].source, Source::Drift);
        let c = diff(&SCHEMA, &json!({"tags": {"a": "new"}}), &l, Some(&d));
        assert_eq!(c[0].source, Source::Code);
    }

    #[test]
    fn ignored_attributes_change_neither_by_drift_nor_by_a_new_desired_value() {
        let recorded = json!({"ami": "ami-1"});
        let live = json!({"ami": "ami-0"});
        assert!(diff(&SCHEMA, &recorded, &live, Some(&recorded)).is_empty());
        // A newer AMI (from a setting or a data source) is not a change
        // either: replacing the server is a deliberate `--replace`.
        assert!(diff(&SCHEMA, &json!({"ami": "ami-2"}), &live, Some(&recorded)).is_empty());
        assert!(diff(&SCHEMA, &json!({"ami": "ami-2"}), &live, None).is_empty());
    }

    #[test]
    fn ignored_attributes_still_change_when_unknown() {
        let d = json!({"ami": {"$unknown": "data.ami#id"}});
        let c = diff(&SCHEMA, &d, &json!({"ami": "ami-0"}), None);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn unknown_values_always_change() {
        let d = json!({"vpc": {"$unknown": "vpc#id"}});
        let l = json!({"vpc": "vpc-1"});
        let c = diff(&SCHEMA, &d, &l, Some(&l));
        assert_eq!(c.len(), 1);
    }
}
