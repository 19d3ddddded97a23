//! What the engine knows about a resource: an address, a kind, a JSON body
//! of desired attributes, and typed references to other resources'
//! outputs. The stack declares resources through [`Stack::add`]; the
//! provider implements [`Kind`] for each resource kind.
//!
//! References are the only way to express a dependency: a [`Ref<T>`]
//! serializes into the body as `{"$ref": "address#output"}`, and the graph
//! is built by finding those markers, so the graph cannot disagree with the
//! code. `T` is a marker type (`VpcId`, `SubnetId`, ...) so that a subnet id
//! cannot be passed where a VPC id belongs: that does not compile.

use std::collections::{BTreeMap, BTreeSet};
use std::marker::PhantomData;

use serde::{Serialize, Serializer};
use serde_json::Value;

/// Key of a reference marker inside a resource body.
pub const REF_KEY: &str = "$ref";
/// Key of a value that is only known after apply.
pub const UNKNOWN_KEY: &str = "$unknown";
/// Key of a string built from literal pieces and references ([`Template`]).
pub const FORMAT_KEY: &str = "$format";

/// A resource as the stack declares it.
pub trait Resource: Serialize {
    /// The provider kind that manages it (`aws_vpc`, ...).
    const KIND: &'static str;
}

/// A typed reference to an output of another resource.
pub struct Ref<T> {
    address: String,
    output: &'static str,
    _kind: PhantomData<fn() -> T>,
}

impl<T> Clone for Ref<T> {
    fn clone(&self) -> Self {
        Ref {
            address: self.address.clone(),
            output: self.output,
            _kind: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Ref<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ref({}#{})", self.address, self.output)
    }
}

impl<T> Ref<T> {
    pub fn address(&self) -> &str {
        &self.address
    }
    pub fn output(&self) -> &str {
        self.output
    }
    /// The marker this reference serializes to.
    pub fn marker(&self) -> Value {
        ref_marker(&self.address, self.output)
    }
}

impl<T> Serialize for Ref<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.marker().serialize(serializer)
    }
}

pub fn ref_marker(address: &str, output: &str) -> Value {
    let mut m = serde_json::Map::new();
    m.insert(REF_KEY.into(), Value::String(format!("{address}#{output}")));
    Value::Object(m)
}

/// If `v` is a reference marker, its (address, output).
pub fn as_ref(v: &Value) -> Option<(&str, &str)> {
    let obj = v.as_object()?;
    if obj.len() != 1 {
        return None;
    }
    obj.get(REF_KEY)?.as_str()?.split_once('#')
}

/// True when `v` is (or contains) a value only known after apply.
pub fn is_unknown(v: &Value) -> bool {
    match v {
        Value::Object(o) => o.contains_key(UNKNOWN_KEY) || o.values().any(is_unknown),
        Value::Array(a) => a.iter().any(is_unknown),
        _ => false,
    }
}

pub fn unknown_marker(what: &str) -> Value {
    let mut m = serde_json::Map::new();
    m.insert(UNKNOWN_KEY.into(), Value::String(what.to_string()));
    Value::Object(m)
}

/// A string assembled from literal pieces and references, resolved like a
/// reference: `arn:aws:logs:<region>:<account>:log-group:/x` where region
/// and account come from a data source. It serializes to
/// `{"$format": [piece, ...]}`, so the references inside it are
/// dependencies like any other; it stays unknown while any piece is.
#[derive(Debug, Clone, Default)]
pub struct Template {
    parts: Vec<Value>,
}

impl Template {
    pub fn new() -> Template {
        Template::default()
    }
    /// Appends literal text.
    pub fn lit(mut self, text: impl Into<String>) -> Template {
        self.parts.push(Value::String(text.into()));
        self
    }
    /// Appends the (string) value of a reference.
    pub fn var<T>(mut self, r: &Ref<T>) -> Template {
        self.parts.push(r.marker());
        self
    }
}

impl Serialize for Template {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut m = serde_json::Map::new();
        m.insert(FORMAT_KEY.into(), Value::Array(self.parts.clone()));
        Value::Object(m).serialize(serializer)
    }
}

/// If `v` is a template marker, its pieces.
fn as_template(v: &Value) -> Option<&Vec<Value>> {
    let obj = v.as_object()?;
    if obj.len() != 1 {
        return None;
    }
    obj.get(FORMAT_KEY)?.as_array()
}

/// Every address `body` references.
pub fn references(body: &Value) -> BTreeSet<String> {
    fn walk(v: &Value, out: &mut BTreeSet<String>) {
        if let Some((addr, _)) = as_ref(v) {
            out.insert(addr.to_string());
            return;
        }
        match v {
            Value::Object(o) => o.values().for_each(|v| walk(v, out)),
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(body, &mut out);
    out
}

/// Replaces every reference in `body` by `lookup(address, output)`; a
/// lookup that returns `None` leaves an unknown marker.
pub fn resolve(body: &Value, lookup: &dyn Fn(&str, &str) -> Option<Value>) -> Value {
    if let Some((addr, out)) = as_ref(body) {
        return lookup(addr, out).unwrap_or_else(|| unknown_marker(&format!("{addr}#{out}")));
    }
    if let Some(parts) = as_template(body) {
        let mut text = String::new();
        for part in parts {
            match resolve(part, lookup) {
                Value::String(s) => text.push_str(&s),
                v if is_unknown(&v) => return v,
                v => text.push_str(&v.to_string()),
            }
        }
        return Value::String(text);
    }
    match body {
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), resolve(v, lookup)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|v| resolve(v, lookup)).collect()),
        other => other.clone(),
    }
}

/// A handle on a declared resource, used to take typed references to its
/// outputs. Provider modules add the accessors (`Handle<Vpc>::id()`).
pub struct Handle<R> {
    address: String,
    _resource: PhantomData<fn() -> R>,
}

impl<R> Handle<R> {
    pub fn address(&self) -> &str {
        &self.address
    }

    /// A reference to one of this resource's outputs. Provider modules wrap
    /// this in typed accessors; the stack never calls it directly.
    pub fn output_ref<T>(&self, output: &'static str) -> Ref<T> {
        Ref {
            address: self.address.clone(),
            output,
            _kind: PhantomData,
        }
    }
}

/// One declared resource, type-erased for the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct Declared {
    pub address: String,
    pub kind: String,
    pub body: Value,
    /// Destroying or replacing it needs `--allow-destroy ADDRESS`.
    pub protected: bool,
}

impl Declared {
    pub fn deps(&self) -> BTreeSet<String> {
        references(&self.body)
    }
}

/// A data source: a value read from AWS on every plan, never created.
#[derive(Debug, Clone, PartialEq)]
pub struct DataSource {
    pub name: String,
    pub kind: String,
    pub query: Value,
}

/// A data source as the stack declares it.
pub trait Data: Serialize {
    const KIND: &'static str;
}

/// Prefix of data source addresses (`data.ami_worker`).
pub const DATA_PREFIX: &str = "data.";

/// A stack output: a name and a value that may hold references.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputDecl {
    pub name: String,
    pub value: Value,
}

/// A whole stack: what the code declares for one environment.
#[derive(Debug, Clone, Default)]
pub struct Stack {
    pub name: String,
    pub env: String,
    pub resources: Vec<Declared>,
    pub data: Vec<DataSource>,
    pub outputs: Vec<OutputDecl>,
}

/// Why a stack is malformed (duplicate address, dangling reference, cycle).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StackError {
    #[error("resource address '{0}' is declared twice")]
    Duplicate(String),
    #[error("'{from}' references '{to}', which the stack does not declare")]
    Dangling { from: String, to: String },
    #[error("dependency cycle: {0}")]
    Cycle(String),
}

impl Stack {
    pub fn new(name: &str, env: &str) -> Stack {
        Stack {
            name: name.to_string(),
            env: env.to_string(),
            ..Default::default()
        }
    }

    /// Declares a resource and returns a handle to reference it.
    pub fn add<R: Resource>(&mut self, address: &str, resource: R) -> Handle<R> {
        self.push(address, resource, false)
    }

    /// Declares a resource that must never be destroyed or replaced by
    /// accident (it holds data or an address the outside world knows).
    pub fn add_protected<R: Resource>(&mut self, address: &str, resource: R) -> Handle<R> {
        self.push(address, resource, true)
    }

    fn push<R: Resource>(&mut self, address: &str, resource: R, protected: bool) -> Handle<R> {
        // Serializing a plain struct of strings, numbers and refs cannot
        // fail; a body that did would be a bug in a resource type, and the
        // stack validation reports a Null body as an empty resource.
        let body = serde_json::to_value(&resource).unwrap_or(Value::Null);
        self.resources.push(Declared {
            address: address.to_string(),
            kind: R::KIND.to_string(),
            body,
            protected,
        });
        Handle {
            address: address.to_string(),
            _resource: PhantomData,
        }
    }

    /// Declares a data source, read on every plan; its outputs are known
    /// at plan time.
    pub fn add_data<D: Data>(&mut self, name: &str, query: D) -> Handle<D> {
        let address = format!("{DATA_PREFIX}{name}");
        let query = serde_json::to_value(&query).unwrap_or(Value::Null);
        self.data.push(DataSource {
            name: address.clone(),
            kind: D::KIND.to_string(),
            query,
        });
        Handle {
            address,
            _resource: PhantomData,
        }
    }

    /// Declares a stack output.
    pub fn output<T: Serialize>(&mut self, name: &str, value: T) {
        let value = serde_json::to_value(value).unwrap_or(Value::Null);
        self.outputs.push(OutputDecl {
            name: name.to_string(),
            value,
        });
    }

    pub fn get(&self, address: &str) -> Option<&Declared> {
        self.resources.iter().find(|r| r.address == address)
    }

    /// Checks addresses are unique, references resolve, and there is no cycle.
    pub fn validate(&self) -> Result<(), StackError> {
        let mut seen = BTreeSet::new();
        for r in &self.resources {
            if !seen.insert(r.address.as_str()) {
                return Err(StackError::Duplicate(r.address.clone()));
            }
        }
        let data: BTreeSet<&str> = self.data.iter().map(|d| d.name.as_str()).collect();
        for r in &self.resources {
            for d in r.deps() {
                if !seen.contains(d.as_str()) && !data.contains(d.as_str()) {
                    return Err(StackError::Dangling {
                        from: r.address.clone(),
                        to: d,
                    });
                }
            }
        }
        let edges: BTreeMap<String, BTreeSet<String>> = self
            .resources
            .iter()
            .map(|r| {
                let deps = r.deps().into_iter().filter(|d| !data.contains(d.as_str()));
                (r.address.clone(), deps.collect())
            })
            .collect();
        crate::engine::graph::topo_order(&edges).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    struct NetId;
    #[derive(Serialize)]
    struct Net {
        cidr: String,
    }
    impl Resource for Net {
        const KIND: &'static str = "test_net";
    }
    #[derive(Serialize)]
    struct Host {
        net: Ref<NetId>,
        name: String,
    }
    impl Resource for Host {
        const KIND: &'static str = "test_host";
    }

    #[test]
    fn references_become_dependencies() {
        let mut s = Stack::new("t", "dev");
        let net = s.add(
            "net",
            Net {
                cidr: "10.0.0.0/16".into(),
            },
        );
        s.add(
            "host",
            Host {
                net: net.output_ref("id"),
                name: "a".into(),
            },
        );
        assert_eq!(
            s.get("host").unwrap().deps(),
            BTreeSet::from(["net".to_string()])
        );
        assert!(s.validate().is_ok());
    }

    #[test]
    fn unresolvable_references_become_unknown() {
        let body = serde_json::json!({"a": {"$ref": "net#id"}, "b": [{"$ref": "x#arn"}]});
        let out = resolve(&body, &|addr, _| {
            (addr == "net").then(|| Value::from("net-1"))
        });
        assert_eq!(out["a"], "net-1");
        assert!(is_unknown(&out["b"]));
        assert!(!is_unknown(&out["a"]));
    }

    #[test]
    fn templates_resolve_to_one_string_and_stay_unknown_until_every_piece_is_known() {
        let mut s = Stack::new("t", "dev");
        let net = s.add("net", Net { cidr: "a".into() });
        let t = Template::new()
            .lit("arn:")
            .var(&net.output_ref::<NetId>("id"))
            .lit(":*");
        let body = serde_json::to_value(&t).unwrap();
        assert_eq!(references(&body), BTreeSet::from(["net".to_string()]));
        let known = resolve(&body, &|_, _| Some(Value::from("net-1")));
        assert_eq!(known, Value::from("arn:net-1:*"));
        let unknown = resolve(&body, &|_, _| None);
        assert!(is_unknown(&unknown));
    }

    #[test]
    fn duplicate_addresses_are_refused() {
        let mut s = Stack::new("t", "dev");
        s.add("net", Net { cidr: "a".into() });
        s.add("net", Net { cidr: "b".into() });
        assert_eq!(s.validate(), Err(StackError::Duplicate("net".into())));
    }
}
