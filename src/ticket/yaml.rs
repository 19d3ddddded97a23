//! Finding the frontmatter block and reading it as plain YAML data.
//!
//! The frontmatter is read into [`Node`], an untyped tree, rather than
//! straight into a struct: the validator then says exactly which key is
//! wrong and what it held, where a derived `Deserialize` would stop at the
//! first mismatch with serde's generic wording.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A YAML value with its kind kept (a quoted `"5"` stays a string).
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Keys in document order.
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// What the value is, for an error message ("found ...").
    pub fn describe(&self) -> String {
        match self {
            Node::Null => "an empty value".into(),
            Node::Bool(b) => format!("`{b}`"),
            Node::Int(i) => format!("the number {i}"),
            Node::Float(x) => format!("the number {x}"),
            Node::Str(s) if s.trim().is_empty() => "a blank string".into(),
            Node::Str(s) => format!("\"{}\"", shorten(s).escape_debug()),
            Node::Seq(_) => "a list".into(),
            Node::Map(_) => "a mapping".into(),
        }
    }

    /// The value under `key` in a mapping (string keys only).
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries) => entries.iter().find_map(|(k, v)| match k {
                Node::Str(s) if s == key => Some(v),
                _ => None,
            }),
            _ => None,
        }
    }
}

/// Long values are cut in messages so an error stays one readable line.
fn shorten(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let mut cut: String = s.chars().take(MAX).collect();
        cut.push('…');
        cut
    }
}

/// Why the frontmatter block could not be found or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrontmatterError {
    #[error("the file is not UTF-8 text")]
    NotUtf8,
    #[error("no frontmatter: a ticket must start with a `---` line, then YAML, then a closing `---` line")]
    Missing,
    #[error("the frontmatter is never closed: add a `---` line after the YAML")]
    Unclosed,
    #[error("the frontmatter is not valid YAML: {0}")]
    InvalidYaml(String),
}

/// The YAML text between the opening `---` line (the file's first line,
/// after an optional byte-order mark) and the next `---` line.
pub fn frontmatter_text(text: &str) -> Result<&str, FrontmatterError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.split_inclusive('\n');
    let is_fence = |line: &str| line.trim_end_matches(['\n', '\r']).trim_end() == "---";
    match lines.next() {
        Some(first) if is_fence(first) => {}
        _ => return Err(FrontmatterError::Missing),
    }
    let start = text.find('\n').map_or(text.len(), |i| i + 1);
    let mut offset = start;
    for line in lines {
        if is_fence(line) {
            return Ok(&text[start..offset]);
        }
        offset += line.len();
    }
    Err(FrontmatterError::Unclosed)
}

/// Reads the frontmatter of a ticket into a [`Node`].
pub fn parse_frontmatter(text: &str) -> Result<Node, FrontmatterError> {
    // A blank line in place of the opening fence, so the parser's line
    // numbers are the file's.
    let yaml = format!("\n{}", frontmatter_text(text)?);
    let mut options = serde_saphyr::Options::default();
    // One-line errors: no source snippet under the message.
    options.with_snippet = false;
    // YAML 1.2 booleans: `yes`, `no`, `on` and `off` stay strings.
    options.strict_booleans = true;
    serde_saphyr::from_str_with_options::<Node>(&yaml, options).map_err(|e| {
        let message = match e.without_snippet() {
            serde_saphyr::Error::DuplicateMappingKey {
                key: Some(key),
                location,
            } => format!(
                "the key `{}` appears twice (line {}): keep one",
                key.escape_debug(),
                location.line()
            ),
            serde_saphyr::Error::Budget { breach, .. } => budget_sentence(breach),
            other => one_line(&other.to_string()),
        };
        FrontmatterError::InvalidYaml(message)
    })
}

/// A YAML budget breach as a sentence (the parser's own text is the Debug
/// form, e.g. `Nodes { nodes: 250001 }`).
fn budget_sentence(breach: &serde_saphyr::budget::BudgetBreach) -> String {
    use serde_saphyr::budget::BudgetBreach as B;
    let what = match breach {
        B::Events { events } => format!("it has over {} parser events", events.saturating_sub(1)),
        B::Aliases { aliases } => format!("it uses over {} aliases", aliases.saturating_sub(1)),
        B::Anchors { anchors } => format!("it defines over {} anchors", anchors.saturating_sub(1)),
        B::Depth { depth } => format!("it nests {depth} levels deep"),
        B::Documents { documents } => format!("it holds {documents} YAML documents"),
        B::Nodes { nodes } => format!("it has over {} values", nodes.saturating_sub(1)),
        B::ScalarBytes { total_scalar_bytes } => {
            format!("its values add up to over {total_scalar_bytes} bytes")
        }
        B::MergeKeys { merge_keys } => format!("it uses {merge_keys} merge keys"),
        B::AliasAnchorRatio { aliases, anchors } => {
            format!("it expands {anchors} anchors through {aliases} aliases")
        }
        _ => "it is too large or too deeply nested".to_string(),
    };
    format!("the frontmatter is too big to read: {what}; a ticket's frontmatter is a few keys, keep it small")
}

/// Folds a multi-line parser message into one line.
fn one_line(message: &str) -> String {
    let joined = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if joined.is_empty() {
        "unreadable YAML".into()
    } else {
        joined
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Int(v.into()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Node, E> {
        Ok(Node::Int(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
        Ok(i128::try_from(v).map_or(Node::Float(v as f64), Node::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Node, E> {
        Ok(Node::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, v)) = map.next_entry::<Node, Node>()? {
            entries.push((k, v));
        }
        Ok(Node::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_block_between_the_fences() {
        let text = "---\nrepos: [a]\n---\n# Title\n---\nmore\n";
        assert_eq!(frontmatter_text(text), Ok("repos: [a]\n"));
    }

    #[test]
    fn accepts_crlf_a_bom_and_trailing_spaces_on_fences() {
        assert_eq!(
            frontmatter_text("\u{feff}---\r\na: 1\r\n--- \r\nbody"),
            Ok("a: 1\r\n")
        );
        assert_eq!(frontmatter_text("---\n---\n"), Ok(""));
        assert_eq!(frontmatter_text("---\na: 1\n---"), Ok("a: 1\n"));
    }

    #[test]
    fn the_block_must_open_on_the_first_line_and_close() {
        assert_eq!(
            frontmatter_text("# Title\n---\na: 1\n---\n"),
            Err(FrontmatterError::Missing)
        );
        assert_eq!(
            frontmatter_text("\n---\na: 1\n---\n"),
            Err(FrontmatterError::Missing)
        );
        assert_eq!(frontmatter_text(""), Err(FrontmatterError::Missing));
        assert_eq!(
            frontmatter_text("----\na: 1\n----\n"),
            Err(FrontmatterError::Missing)
        );
        assert_eq!(
            frontmatter_text("---\na: 1\n"),
            Err(FrontmatterError::Unclosed)
        );
        assert_eq!(frontmatter_text("---"), Err(FrontmatterError::Unclosed));
    }

    #[test]
    fn scalars_keep_their_kind() {
        let node =
            parse_frontmatter("---\na: 5\nb: \"5\"\nc: yes\nd: true\ne:\nf: 1.5\n---\n").unwrap();
        assert_eq!(node.get("a"), Some(&Node::Int(5)));
        assert_eq!(node.get("b"), Some(&Node::Str("5".into())));
        assert_eq!(node.get("c"), Some(&Node::Str("yes".into())));
        assert_eq!(node.get("d"), Some(&Node::Bool(true)));
        assert_eq!(node.get("e"), Some(&Node::Null));
        assert_eq!(node.get("f"), Some(&Node::Float(1.5)));
    }

    #[test]
    fn yaml_errors_are_one_line() {
        let err = parse_frontmatter("---\nrepos: [a\n---\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("the frontmatter is not valid YAML: "),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn yaml_errors_give_the_file_line() {
        let err = parse_frontmatter("---\na: 1\nrepos: [a\n---\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3"), "{err}");
        let err = parse_frontmatter("---\nrepos: a\nrepos: b\n---\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "the frontmatter is not valid YAML: the key `repos` appears twice (line 3): keep one"
        );
    }

    #[test]
    fn describe_keeps_messages_on_one_line() {
        assert_eq!(Node::Str("a\nb".into()).describe(), "\"a\\nb\"");
        assert!(Node::Str("x".repeat(500)).describe().chars().count() < 70);
    }
}
