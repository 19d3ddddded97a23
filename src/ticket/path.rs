//! Ticket paths: which paths can be dispatched, and the names derived from
//! a path (the slug that names branches and log streams, the `doc_type`
//! that the run history records).
//!
//! A ticket path is relative to the docs repository (`sows/foo.md`). It
//! ends up in a DynamoDB key, an EC2 tag, a Loki label, a git branch and a
//! shell script, so the characters it may use are few on purpose.

use std::fmt;

use super::TicketType;

/// The directories of the docs repository that hold tickets, and the work
/// type each one holds.
pub const WORK_TYPE_DIRS: &[(&str, TicketType)] =
    &[("sows", TicketType::Sow), ("dx", TicketType::Dx)];

/// The slug of a ticket (platform.md §2): the file's base name without
/// `.md`, every character outside `[A-Za-z0-9._-]` replaced by `_`, trailing
/// `_` trimmed. It names the `feat/<slug>` branch and the log streams.
pub fn slug(path: &str) -> String {
    let base = path.rsplit_once('/').map_or(path, |(_, base)| base);
    let stem = base.strip_suffix(".md").unwrap_or(base);
    let replaced: String = stem
        .chars()
        .map(|c| if is_slug_char(c) { c } else { '_' })
        .collect();
    replaced.trim_end_matches('_').to_string()
}

/// The run history's `doc_type` (platform.md §3): `sow` for `sows/…`, `dx`
/// for `dx/…`, otherwise the path's first segment.
pub fn doc_type(path: &str) -> &str {
    for (dir, kind) in WORK_TYPE_DIRS {
        if path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
        {
            return kind.as_str();
        }
    }
    path.split('/').next().unwrap_or(path)
}

fn is_slug_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn is_path_char(c: char) -> bool {
    is_slug_char(c) || c == '/'
}

/// Longest ticket path: it is stored as the partition key of the runs
/// table (DynamoDB allows 2048 bytes) and as the value of the worker's EC2
/// tag (AWS allows 256 characters), the stricter of the two.
pub const MAX_TICKET_PATH: usize = 256;

/// Longest `--sow` the fleet commands accept: DynamoDB's partition key
/// limit.
pub const MAX_PARTITION_KEY: usize = 2048;

/// Why a path cannot be dispatched. Each renders as one line that names
/// the path and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketPathError {
    #[error("the ticket path is empty: give it relative to the docs repository, e.g. `sows/<feature>.md`")]
    Empty,
    #[error("ticket path {path} contains {ch:?}: use only letters, digits, `.`, `_`, `-` and `/`")]
    BadCharacter { path: Quoted, ch: char },
    #[error("ticket path {path} is absolute: give it relative to the docs repository, e.g. `sows/<feature>.md`")]
    Absolute { path: Quoted },
    #[error("ticket path {path} contains `..`: a ticket must stay inside the docs repository")]
    ParentDir { path: Quoted },
    #[error("ticket path {path} has an empty segment or one that starts with `.`")]
    BadSegment { path: Quoted },
    #[error("ticket path {path} is not under a work-type directory: SOW tickets live in `sows/`, DX tickets in `dx/`")]
    UnknownWorkType { path: Quoted },
    #[error("ticket path {path} does not end in `.md`: a ticket is a Markdown file")]
    NotMarkdown { path: Quoted },
    #[error("the ticket path is {len} bytes long; at most {max} are allowed (it becomes an EC2 tag value, AWS's limit)")]
    TooLong { len: usize, max: usize },
    #[error("ticket path {path} has no usable file name: its slug (the name without `.md` and trailing `_`) is empty")]
    EmptySlug { path: Quoted },
}

/// A path shown in an error: backquoted, with anything unprintable escaped
/// so the message stays on one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quoted(pub String);

impl fmt::Display for Quoted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`", self.0.escape_debug())
    }
}

/// Checks that `path` can be dispatched: relative, under `sows/` or `dx/`,
/// a `.md` file, no `..`, only `[A-Za-z0-9._/-]`. Returns the work type its
/// directory holds.
pub fn check_ticket_path(path: &str) -> Result<TicketType, TicketPathError> {
    // First, before anything quotes it: a huge path must not make a huge
    // error line.
    if path.len() > MAX_TICKET_PATH {
        return Err(TicketPathError::TooLong {
            len: path.len(),
            max: MAX_TICKET_PATH,
        });
    }
    let quoted = || Quoted(path.to_string());
    if path.is_empty() {
        return Err(TicketPathError::Empty);
    }
    if let Some(ch) = path.chars().find(|c| !is_path_char(*c)) {
        return Err(TicketPathError::BadCharacter { path: quoted(), ch });
    }
    if path.starts_with('/') {
        return Err(TicketPathError::Absolute { path: quoted() });
    }
    if path.contains("..") {
        return Err(TicketPathError::ParentDir { path: quoted() });
    }
    if path
        .split('/')
        .any(|seg| seg.is_empty() || seg.starts_with('.'))
    {
        return Err(TicketPathError::BadSegment { path: quoted() });
    }
    let Some(kind) = WORK_TYPE_DIRS
        .iter()
        .find(|(dir, _)| {
            path.strip_prefix(dir)
                .is_some_and(|rest| rest.starts_with('/'))
        })
        .map(|(_, kind)| *kind)
    else {
        return Err(TicketPathError::UnknownWorkType { path: quoted() });
    };
    if !path.ends_with(".md") {
        return Err(TicketPathError::NotMarkdown { path: quoted() });
    }
    if slug(path).is_empty() {
        return Err(TicketPathError::EmptySlug { path: quoted() });
    }
    Ok(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_is_the_base_name_without_md() {
        assert_eq!(slug("sows/foo.md"), "foo");
        assert_eq!(slug("dx/workout-log.md"), "workout-log");
        assert_eq!(slug("sows/nested/v1.2_x.md"), "v1.2_x");
        assert_eq!(slug("foo.md"), "foo");
    }

    #[test]
    fn slug_replaces_characters_outside_the_set_and_trims_trailing_underscores() {
        assert_eq!(slug("sows/my feature!.md"), "my_feature");
        assert_eq!(slug("sows/a+b=c.md"), "a_b_c");
        // One `_` per character, not per byte.
        assert_eq!(slug("sows/café x.md"), "caf__x");
        assert_eq!(slug("sows/__lead__.md"), "__lead");
        assert_eq!(slug("sows/???.md"), "");
    }

    #[test]
    fn slug_only_strips_a_md_suffix() {
        assert_eq!(slug("sows/notes.txt"), "notes.txt");
        assert_eq!(slug("sows/foo.md.md"), "foo.md");
    }

    #[test]
    fn doc_type_follows_the_directory() {
        assert_eq!(doc_type("sows/foo.md"), "sow");
        assert_eq!(doc_type("dx/foo.md"), "dx");
        assert_eq!(doc_type("rfcs/foo.md"), "rfcs");
        assert_eq!(doc_type("sowsx/foo.md"), "sowsx");
        assert_eq!(doc_type("foo.md"), "foo.md");
    }

    #[test]
    fn dispatchable_paths_pass_and_name_their_type() {
        assert_eq!(check_ticket_path("sows/foo.md"), Ok(TicketType::Sow));
        assert_eq!(check_ticket_path("dx/workout-log.md"), Ok(TicketType::Dx));
        assert_eq!(
            check_ticket_path("sows/2026/v1.2_x.md"),
            Ok(TicketType::Sow)
        );
    }

    #[test]
    fn each_broken_path_names_the_rule_it_breaks() {
        let cases: &[(&str, &str)] = &[
            ("", "is empty"),
            ("sows/my feature.md", "contains ' '"),
            ("sows/foo;rm -rf.md", "contains ';'"),
            ("sows/fo\no.md", "contains '\\n'"),
            ("/sows/foo.md", "is absolute"),
            ("sows/../secrets.md", "contains `..`"),
            ("sows/foo..md", "contains `..`"),
            ("sows//foo.md", "empty segment"),
            ("sows/.hidden.md", "starts with `.`"),
            ("rfcs/foo.md", "not under a work-type directory"),
            ("sowsfoo.md", "not under a work-type directory"),
            ("foo.md", "not under a work-type directory"),
            ("sows/foo.txt", "does not end in `.md`"),
            ("sows/foo", "does not end in `.md`"),
            ("sows/___.md", "slug"),
        ];
        for (path, want) in cases {
            let err = check_ticket_path(path).expect_err(path).to_string();
            assert!(err.contains(want), "{path:?}: {err}");
            assert!(!err.contains('\n'), "{path:?}: error spans lines: {err}");
        }
    }
}
