//! Tickets: the Markdown files in the docs repository that say what a worker
//! builds (platform.md §2).
//!
//! This module owns the ticket format and every rule it must satisfy, the
//! rules for ticket paths ([`path`]), and turning a valid ticket into the
//! prompt the agent reads ([`prompt`]). It knows nothing about AWS, the
//! fleet or the CLI: dispatch calls [`parse`] before any compute is spent,
//! and the worker calls it again on the copy it cloned.
//!
//! Validation reports every problem it finds, not only the first, so one
//! run of `devstack ticket validate` is enough to fix a ticket; each
//! problem is one line ([`Problem`]), and a whole invalid file is one line
//! too ([`TicketError`]).

use std::fmt;

pub mod path;
pub mod prompt;
mod yaml;

pub use path::{check_ticket_path, doc_type, slug, TicketPathError};
pub use prompt::{render_prompt, RenderError};
pub use yaml::FrontmatterError;

use yaml::Node;

/// The work type a ticket asks for (the `type` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TicketType {
    /// A statement of work: one spec, one implementation, PRs that merge.
    Sow,
    /// A design exploration: N visual variants of one surface, never merged.
    Dx,
}

impl TicketType {
    pub fn as_str(self) -> &'static str {
        match self {
            TicketType::Sow => "sow",
            TicketType::Dx => "dx",
        }
    }
}

impl fmt::Display for TicketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How far a DX may stray from the existing design system (`scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Scope {
    /// Variants stay inside the existing design system.
    #[default]
    InSystem,
    /// Variants may ignore it.
    Greenfield,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::InSystem => "in-system",
            Scope::Greenfield => "greenfield",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The variant count a DX gets when it names none.
pub const DEFAULT_VARIANT_COUNT: u32 = 5;

/// The keys only a DX ticket has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DxFields {
    pub surface: String,
    pub variant_count: u32,
    pub idioms: Vec<String>,
    pub references: Vec<String>,
    pub scope: Scope,
}

/// A valid ticket: what a worker needs from the frontmatter. Other keys
/// (`status`, titles, ...) belong to the humans and are not kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub kind: TicketType,
    /// Repository names, without the organization.
    pub repos: Vec<String>,
    /// Present exactly when `kind` is [`TicketType::Dx`].
    pub dx: Option<DxFields>,
}

/// What a value was, for "...; found X" ("it is missing" when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found(String);

impl Found {
    fn missing() -> Found {
        Found("it is missing".into())
    }
    fn empty_list() -> Found {
        Found("it is an empty list".into())
    }
    fn node(node: &Node) -> Found {
        Found(format!("found {}", node.describe()))
    }
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One thing wrong with a ticket; its `Display` is one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The file could not be read (the I/O error's message).
    #[error("cannot read the file: {0}")]
    Unreadable(String),
    #[error(transparent)]
    Frontmatter(#[from] FrontmatterError),
    #[error("the frontmatter must be a YAML mapping of keys to values; {0}")]
    NotAMapping(Found),
    /// A key is missing or holds the wrong kind of value.
    #[error("`{key}` must be {expected}; {found}")]
    Field {
        key: &'static str,
        expected: &'static str,
        found: Found,
    },
    /// One element of a list key is wrong (`item` counts from 1).
    #[error("`{key}` item {item} must be {expected}; {found}")]
    Item {
        key: &'static str,
        item: usize,
        expected: &'static str,
        found: Found,
    },
    /// `repos` or `idioms` repeats an entry.
    #[error("`{key}` lists \"{value}\" more than once: each entry must be different")]
    Duplicate { key: &'static str, value: String },
    #[error(
        "`idioms` lists {idioms} but `variant_count` is {variant_count}: \
         list at least one idiom per variant, or lower `variant_count`"
    )]
    TooFewIdioms { idioms: usize, variant_count: u32 },
}

/// Every problem with one ticket file; `Display` is one line naming the
/// file: `sows/foo.md: problem; problem`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TicketError {
    /// The file as the user named it.
    pub file: String,
    /// Never empty.
    pub problems: Vec<Problem>,
}

impl fmt::Display for TicketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file.escape_debug())?;
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

const REPOS: &str = "a non-empty list of repository names";
const REPO_NAME: &str =
    "a repository name without the organization (letters, digits, `.`, `_`, `-`)";
const TYPE: &str = "`sow` or `dx`";
const SURFACE: &str = "a non-empty surface name (letters, digits, `.`, `_`, `-`)";
const VARIANT_COUNT: &str = "a whole number of at least 1 (default 5)";
const IDIOMS: &str = "a non-empty list of idioms, one per variant";
const REFERENCES: &str = "a non-empty list of references";
const NON_EMPTY_STRING: &str = "a non-empty string";
const SCOPE: &str = "`in-system` (the default) or `greenfield`";

/// Parses and validates a ticket's text. `file` names it in the error.
pub fn parse(file: &str, text: &str) -> Result<Ticket, TicketError> {
    validate(text).map_err(|problems| TicketError {
        file: file.to_string(),
        problems,
    })
}

/// Like [`parse`], for raw bytes (a file read from disk).
pub fn parse_bytes(file: &str, bytes: &[u8]) -> Result<Ticket, TicketError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse(file, text),
        Err(_) => Err(TicketError {
            file: file.to_string(),
            problems: vec![FrontmatterError::NotUtf8.into()],
        }),
    }
}

/// Every rule of platform.md §2, collecting all problems.
fn validate(text: &str) -> Result<Ticket, Vec<Problem>> {
    let root = yaml::parse_frontmatter(text).map_err(|e| vec![Problem::from(e)])?;
    if !matches!(root, Node::Map(_)) {
        let found = match root {
            Node::Null => Found("it is empty".into()),
            ref other => Found::node(other),
        };
        return Err(vec![Problem::NotAMapping(found)]);
    }
    let mut problems = Vec::new();

    let kind = match root.get("type") {
        None | Some(Node::Null) => Some(TicketType::Sow),
        Some(Node::Str(s)) if s == "sow" => Some(TicketType::Sow),
        Some(Node::Str(s)) if s == "dx" => Some(TicketType::Dx),
        Some(other) => {
            problems.push(field("type", TYPE, Found::node(other)));
            None
        }
    };

    let repos = string_list(&root, "repos", REPOS, REPO_NAME, is_name, &mut problems);
    if let Some(repos) = &repos {
        find_duplicates("repos", repos, &mut problems);
    }

    let dx = match kind {
        Some(TicketType::Dx) => dx_fields(&root, &mut problems),
        _ => None,
    };

    match (kind, repos) {
        (Some(kind), Some(repos)) if problems.is_empty() => Ok(Ticket { kind, repos, dx }),
        _ => Err(problems),
    }
}

fn dx_fields(root: &Node, problems: &mut Vec<Problem>) -> Option<DxFields> {
    let surface = match root.get("surface") {
        None | Some(Node::Null) => {
            problems.push(field("surface", SURFACE, Found::missing()));
            None
        }
        Some(Node::Str(s)) if is_name(s) => Some(s.clone()),
        Some(other) => {
            problems.push(field("surface", SURFACE, Found::node(other)));
            None
        }
    };

    let variant_count = match root.get("variant_count") {
        None | Some(Node::Null) => Some(DEFAULT_VARIANT_COUNT),
        Some(node) => {
            let number = match node {
                Node::Int(i) => Some(*i),
                Node::Str(s) => s.trim().parse::<i128>().ok(),
                _ => None,
            };
            match number
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n >= 1)
            {
                Some(n) => Some(n),
                None => {
                    problems.push(field("variant_count", VARIANT_COUNT, Found::node(node)));
                    None
                }
            }
        }
    };

    let idioms = string_list(root, "idioms", IDIOMS, NON_EMPTY_STRING, is_text, problems);
    if let Some(idioms) = &idioms {
        // Two variants of the same idiom defeat the point of a DX: a spread.
        find_duplicates("idioms", idioms, problems);
    }
    let references = string_list(
        root,
        "references",
        REFERENCES,
        NON_EMPTY_STRING,
        is_text,
        problems,
    );

    let scope = match root.get("scope") {
        None | Some(Node::Null) => Some(Scope::InSystem),
        Some(Node::Str(s)) if s == "in-system" => Some(Scope::InSystem),
        Some(Node::Str(s)) if s == "greenfield" => Some(Scope::Greenfield),
        Some(other) => {
            problems.push(field("scope", SCOPE, Found::node(other)));
            None
        }
    };

    if let (Some(idioms), Some(variant_count)) = (&idioms, variant_count) {
        if idioms.len() < variant_count as usize {
            problems.push(Problem::TooFewIdioms {
                idioms: idioms.len(),
                variant_count,
            });
        }
    }

    Some(DxFields {
        surface: surface?,
        variant_count: variant_count?,
        idioms: idioms?,
        references: references?,
        scope: scope?,
    })
}

/// A required non-empty list of strings, each accepted by `ok`.
fn string_list(
    root: &Node,
    key: &'static str,
    expected: &'static str,
    item_expected: &'static str,
    ok: fn(&str) -> bool,
    problems: &mut Vec<Problem>,
) -> Option<Vec<String>> {
    let items = match root.get(key) {
        None | Some(Node::Null) => {
            problems.push(field(key, expected, Found::missing()));
            return None;
        }
        Some(Node::Seq(items)) if items.is_empty() => {
            problems.push(field(key, expected, Found::empty_list()));
            return None;
        }
        Some(Node::Seq(items)) => items,
        Some(other) => {
            problems.push(field(key, expected, Found::node(other)));
            return None;
        }
    };
    let before = problems.len();
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match item {
            Node::Str(s) if ok(s) => out.push(s.trim().to_string()),
            other => problems.push(Problem::Item {
                key,
                item: i + 1,
                expected: item_expected,
                found: Found::node(other),
            }),
        }
    }
    (problems.len() == before).then_some(out)
}

fn find_duplicates(key: &'static str, values: &[String], problems: &mut Vec<Problem>) {
    let mut seen = std::collections::BTreeSet::new();
    let mut reported = std::collections::BTreeSet::new();
    for value in values {
        if !seen.insert(value.as_str()) && reported.insert(value.as_str()) {
            problems.push(Problem::Duplicate {
                key,
                value: value.escape_debug().to_string(),
            });
        }
    }
}

fn field(key: &'static str, expected: &'static str, found: Found) -> Problem {
    Problem::Field {
        key,
        expected,
        found,
    }
}

/// A name that is safe in a URL, a git branch and a clone path.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && !s.contains("..")
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Free text that fits on one line of the prompt.
fn is_text(s: &str) -> bool {
    let s = s.trim();
    !s.is_empty() && !s.chars().any(char::is_control)
}

#[cfg(test)]
mod tests;
