//! The agent's session, as Claude Code writes it (JSONL under
//! `~/.claude/projects/<project>/<uuid>.jsonl`), turned into what people
//! and dashboards read:
//!
//! - the readable log: one timestamped line per text, tool use and
//!   (truncated) tool result, shipped to CloudWatch and Loki;
//! - counts: tool calls per tool, messages per role (the exporter's
//!   counters);
//! - the PRs the agent opened: URLs in the results of its `gh pr create`
//!   calls (the old worker never counted them);
//! - the model that actually ran: the last assistant `message.model` that
//!   is not `<synthetic>` (Claude's marker for its own error events).
//!
//! [`SessionTail`] follows the files as they grow; [`SessionReader`] folds
//! each complete line into [`SessionStats`] and returns its log lines. A
//! line that is not JSON, or an event of a type nobody reads (`summary`,
//! `system`), is skipped: the session format belongs to Claude Code and
//! gains fields over time.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};

use serde_json::Value;

/// `message.model` on Claude's own error events: not a model.
pub const SYNTHETIC_MODEL: &str = "<synthetic>";
/// Longest text line kept, in characters.
const TEXT_MAX: usize = 2000;
/// Longest tool-use summary kept.
const TOOL_USE_MAX: usize = 500;
/// Longest tool result kept: results are whole files and command outputs.
const TOOL_RESULT_MAX: usize = 300;

/// Where a PR URL starts.
const PR_URL_PREFIX: &str = "https://github.com/";

/// What the session has shown so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Tool calls by tool name.
    pub tool_calls: BTreeMap<String, u64>,
    /// Messages by role (`assistant`, `user`).
    pub messages: BTreeMap<String, u64>,
    /// URLs of the PRs the agent opened, normalized.
    pub prs: BTreeSet<String>,
    /// The last real model an assistant message named.
    pub model: Option<String>,
}

/// Folds session lines into [`SessionStats`] and readable log lines.
#[derive(Debug)]
pub struct SessionReader {
    github_org: String,
    stats: SessionStats,
    /// Claude writes one line per content block of a message, all with the
    /// message's id: a message is counted once.
    seen_messages: HashSet<String>,
    /// Ids of tool uses that ran `gh pr create`, awaiting their result.
    pr_creates: HashSet<String>,
}

impl SessionReader {
    /// PRs count only in `github_org` (compared without case, as GitHub does).
    pub fn new(github_org: &str) -> Self {
        SessionReader {
            github_org: github_org.to_string(),
            stats: SessionStats::default(),
            seen_messages: HashSet::new(),
            pr_creates: HashSet::new(),
        }
    }

    pub fn stats(&self) -> &SessionStats {
        &self.stats
    }

    /// Reads one JSONL line; returns the readable lines it renders to.
    pub fn feed(&mut self, line: &str) -> Vec<String> {
        let Ok(event) = serde_json::from_str::<Value>(line.trim()) else {
            return Vec::new();
        };
        let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
        if kind != "assistant" && kind != "user" {
            return Vec::new();
        }
        let message = event.get("message").unwrap_or(&Value::Null);
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or(kind)
            .to_string();
        let first_block = match message.get("id").and_then(Value::as_str) {
            Some(id) => self.seen_messages.insert(id.to_string()),
            None => true,
        };
        if first_block {
            *self.stats.messages.entry(role.clone()).or_default() += 1;
        }
        if kind == "assistant" {
            if let Some(model) = message.get("model").and_then(Value::as_str) {
                if model != SYNTHETIC_MODEL && !model.is_empty() {
                    self.stats.model = Some(model.to_string());
                }
            }
        }
        let stamp = event
            .get("timestamp")
            .and_then(Value::as_str)
            .unwrap_or("-");
        let mut lines = Vec::new();
        match message.get("content") {
            Some(Value::String(text)) => {
                lines.push(format!("{stamp} {role}: {}", one_line(text, TEXT_MAX)));
            }
            Some(Value::Array(blocks)) => {
                for block in blocks {
                    if let Some(line) = self.block(stamp, &role, block) {
                        lines.push(line);
                    }
                }
            }
            _ => {}
        }
        lines
    }

    fn block(&mut self, stamp: &str, role: &str, block: &Value) -> Option<String> {
        match block.get("type").and_then(Value::as_str)? {
            "text" => {
                let text = block.get("text").and_then(Value::as_str)?;
                Some(format!("{stamp} {role}: {}", one_line(text, TEXT_MAX)))
            }
            "tool_use" => {
                let name = block.get("name").and_then(Value::as_str).unwrap_or("?");
                let input = block.get("input").unwrap_or(&Value::Null);
                *self.stats.tool_calls.entry(name.to_string()).or_default() += 1;
                if is_pr_create(name, input) {
                    if let Some(id) = block.get("id").and_then(Value::as_str) {
                        self.pr_creates.insert(id.to_string());
                    }
                }
                Some(format!(
                    "{stamp} tool_use {name}: {}",
                    one_line(&summarize_input(input), TOOL_USE_MAX)
                ))
            }
            "tool_result" => {
                let text = result_text(block.get("content"));
                let failed = block.get("is_error").and_then(Value::as_bool) == Some(true);
                let id = block.get("tool_use_id").and_then(Value::as_str);
                if let Some(id) = id {
                    if self.pr_creates.remove(id) && !failed {
                        self.collect_prs(&text);
                    }
                }
                let label = if failed {
                    "tool_result (error)"
                } else {
                    "tool_result"
                };
                Some(format!(
                    "{stamp} {label}: {}",
                    one_line(&text, TOOL_RESULT_MAX)
                ))
            }
            _ => None,
        }
    }

    fn collect_prs(&mut self, text: &str) {
        for (org, repo, number) in pr_urls(text) {
            if org.eq_ignore_ascii_case(&self.github_org) {
                self.stats
                    .prs
                    .insert(format!("{PR_URL_PREFIX}{org}/{repo}/pull/{number}"));
            }
        }
    }
}

/// Every `https://github.com/<org>/<repo>/pull/<n>` in `text`.
fn pr_urls(text: &str) -> Vec<(&str, &str, &str)> {
    let name_end = |s: &str, extra: &[char]| {
        s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || extra.contains(&c)))
            .unwrap_or(s.len())
    };
    let mut found = Vec::new();
    for (at, _) in text.match_indices(PR_URL_PREFIX) {
        let rest = &text[at + PR_URL_PREFIX.len()..];
        let org_len = name_end(rest, &[]);
        let Some(rest2) = rest[org_len..].strip_prefix('/') else {
            continue;
        };
        let repo_len = name_end(rest2, &['.', '_']);
        let Some(digits) = rest2[repo_len..].strip_prefix("/pull/") else {
            continue;
        };
        let number_len = digits
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(digits.len());
        if org_len == 0 || repo_len == 0 || number_len == 0 {
            continue;
        }
        found.push((&rest[..org_len], &rest2[..repo_len], &digits[..number_len]));
    }
    found
}

/// Whether a tool use runs `gh pr create` (Claude runs shell commands with
/// its `Bash` tool).
fn is_pr_create(name: &str, input: &Value) -> bool {
    name == "Bash"
        && input
            .get("command")
            .and_then(Value::as_str)
            .is_some_and(|c| c.contains("gh pr create"))
}

/// What a tool was asked to do, in its most telling field.
fn summarize_input(input: &Value) -> String {
    for key in [
        "command",
        "file_path",
        "path",
        "pattern",
        "url",
        "description",
    ] {
        if let Some(v) = input.get(key).and_then(Value::as_str) {
            return v.to_string();
        }
    }
    match input {
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A tool result's text: a string, or a list of text blocks.
fn result_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| i.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// `text` on one line (line breaks shown as `\n`), cut to `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max) + 8);
    for (count, c) in text.trim().chars().enumerate() {
        if count == max {
            out.push('…');
            return out;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => {}
            '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Follows every `*.jsonl` file under a directory as it grows, handing out
/// complete lines. Files that existed when the tail started are followed
/// from their end: they belong to an earlier session.
#[derive(Debug)]
pub struct SessionTail {
    dir: PathBuf,
    files: HashMap<PathBuf, FileTail>,
}

#[derive(Debug, Default)]
struct FileTail {
    offset: u64,
    partial: Vec<u8>,
}

impl SessionTail {
    pub fn new(dir: &Path) -> Self {
        let mut files = HashMap::new();
        for path in jsonl_files(dir) {
            let offset = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            files.insert(
                path,
                FileTail {
                    offset,
                    partial: Vec::new(),
                },
            );
        }
        SessionTail {
            dir: dir.to_path_buf(),
            files,
        }
    }

    /// The complete lines written since the last poll, file by file.
    pub fn poll(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        for path in jsonl_files(&self.dir) {
            let tail = self.files.entry(path.clone()).or_default();
            if let Err(e) = read_new(&path, tail, &mut lines) {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the session file");
            }
        }
        lines
    }

    /// Like [`SessionTail::poll`], then also the last line of each file if
    /// it has no line break yet: the writer is gone.
    pub fn finish(&mut self) -> Vec<String> {
        let mut lines = self.poll();
        let mut paths: Vec<_> = self.files.keys().cloned().collect();
        paths.sort();
        for path in paths {
            if let Some(tail) = self.files.get_mut(&path) {
                if !tail.partial.is_empty() {
                    lines.push(String::from_utf8_lossy(&tail.partial).into_owned());
                    tail.partial.clear();
                }
            }
        }
        lines
    }
}

fn read_new(path: &Path, tail: &mut FileTail, lines: &mut Vec<String>) -> std::io::Result<()> {
    let mut file = fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len < tail.offset {
        // Truncated or replaced: start again from its beginning.
        tail.offset = 0;
        tail.partial.clear();
    }
    if len == tail.offset {
        return Ok(());
    }
    file.seek(SeekFrom::Start(tail.offset))?;
    let mut buf = Vec::with_capacity((len - tail.offset) as usize);
    file.take(len - tail.offset).read_to_end(&mut buf)?;
    tail.offset += buf.len() as u64;
    tail.partial.extend_from_slice(&buf);
    while let Some(pos) = tail.partial.iter().position(|b| *b == b'\n') {
        let line: Vec<u8> = tail.partial.drain(..=pos).collect();
        let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
        if !text.trim().is_empty() {
            lines.push(text);
        }
    }
    Ok(())
}

/// Every `*.jsonl` under `dir` (any depth: sub-agents write their own
/// files below the session's), sorted so the order is stable.
fn jsonl_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(t) if t.is_file() && path.extension().is_some_and(|e| e == "jsonl") => {
                    out.push(path)
                }
                _ => {}
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests;
