use std::io::Write as _;

use super::*;

/// A session as Claude Code writes it: text, tool uses and results, a
/// `gh pr create`, a `<synthetic>` error event, a system and a summary line.
const SESSION: &str = include_str!("../../../tests/fixtures/claude-session.jsonl");

fn read_all(text: &str) -> (SessionReader, Vec<String>) {
    let mut reader = SessionReader::new("prog-strength");
    let lines = text.lines().flat_map(|l| reader.feed(l)).collect();
    (reader, lines)
}

#[test]
fn every_text_tool_use_and_result_is_one_timestamped_line() {
    let (_, lines) = read_all(SESSION);
    assert_eq!(lines.len(), 14, "{lines:#?}");
    assert!(lines.iter().all(|l| !l.contains('\n')));
    assert_eq!(
        lines[1],
        "2026-05-04T10:00:03.120Z assistant: I'll start by reading the ticket."
    );
    assert_eq!(
        lines[2],
        "2026-05-04T10:00:03.400Z tool_use Read: /home/agent/workspace/prog-strength-docs/sows/rest-timer.md"
    );
    assert!(lines[0].starts_with(
        "2026-05-04T10:00:00.000Z user: Implement sows/rest-timer.md in Prog-Strength.\\nFollow"
    ));
    // A long result is cut.
    assert!(lines[3].starts_with("2026-05-04T10:00:03.900Z tool_result: ---\\nrepos:"));
    assert!(lines[3].ends_with('…'));
    assert!(lines[3].chars().count() < 400);
    assert_eq!(
        lines[6],
        "2026-05-04T10:01:00.000Z assistant: API Error: 529 {\"type\":\"overloaded_error\"}"
    );
}

#[test]
fn tools_messages_prs_and_the_real_model_are_counted() {
    let (reader, _) = read_all(SESSION);
    let stats = reader.stats();
    assert_eq!(
        stats.tool_calls,
        BTreeMap::from([("Bash".into(), 3), ("Edit".into(), 1), ("Read".into(), 1)])
    );
    // One assistant message per message id, however many blocks it has.
    assert_eq!(
        stats.messages,
        BTreeMap::from([("assistant".into(), 7), ("user".into(), 6)])
    );
    // Only the URL from `gh pr create`'s own result: the PR it viewed and
    // the URL the agent repeated in prose are not PRs it opened.
    assert_eq!(
        stats.prs,
        BTreeSet::from(["https://github.com/Prog-Strength/prog-strength-web/pull/42".to_string()])
    );
    // The `<synthetic>` error event came later but is not a model.
    assert_eq!(stats.model.as_deref(), Some("claude-opus-5"));
}

#[test]
fn prs_outside_the_org_and_failed_creates_do_not_count() {
    let mut reader = SessionReader::new("Prog-Strength");
    let use_ = |id: &str| {
        serde_json::json!({"type": "assistant", "message": {"id": id, "role": "assistant", "model": "claude-sonnet-5",
            "content": [{"type": "tool_use", "id": id, "name": "Bash", "input": {"command": "gh pr create --fill"}}]}})
        .to_string()
    };
    let result = |id: &str, text: &str, err: bool| {
        serde_json::json!({"type": "user", "message": {"role": "user",
            "content": [{"type": "tool_result", "tool_use_id": id, "content": text, "is_error": err}]}})
        .to_string()
    };
    for line in [
        use_("a"),
        result("a", "https://github.com/someone-else/x/pull/1", false),
        use_("b"),
        result("b", "a pull request already exists: https://github.com/Prog-Strength/web/pull/3", true),
        use_("c"),
        result("c", "https://github.com/Prog-Strength/web/pull/4\nhttps://github.com/Prog-Strength/web/pull/4", false),
    ] {
        reader.feed(&line);
    }
    assert_eq!(
        reader.stats().prs,
        BTreeSet::from(["https://github.com/Prog-Strength/web/pull/4".to_string()])
    );
    assert_eq!(reader.stats().model.as_deref(), Some("claude-sonnet-5"));
}

#[test]
fn lines_that_are_not_events_are_skipped() {
    let mut reader = SessionReader::new("o");
    assert!(reader.feed("not json").is_empty());
    assert!(reader.feed("{\"type\":\"summary\"}").is_empty());
    assert!(reader.feed("").is_empty());
    assert_eq!(reader.stats(), &SessionStats::default());
}

#[test]
fn pr_urls_are_found_anywhere_in_text() {
    assert_eq!(
        pr_urls("see https://github.com/a-b/c.d_e/pull/12, and https://github.com/x/y/pulls"),
        vec![("a-b", "c.d_e", "12")]
    );
}

#[test]
fn the_tail_hands_out_complete_lines_of_new_sessions_only() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("p/old.jsonl");
    std::fs::create_dir_all(old.parent().unwrap()).unwrap();
    std::fs::write(&old, "{\"old\":1}\n").unwrap();
    let mut tail = SessionTail::new(dir.path());
    assert!(tail.poll().is_empty());

    let new = dir.path().join("p/new.jsonl");
    let mut f = std::fs::File::create(&new).unwrap();
    f.write_all(b"{\"a\":1}\n{\"b\":").unwrap();
    f.flush().unwrap();
    assert_eq!(tail.poll(), vec!["{\"a\":1}"]);
    f.write_all(b"2}\n{\"c\":3}").unwrap();
    f.flush().unwrap();
    assert_eq!(tail.poll(), vec!["{\"b\":2}"]);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&old)
        .unwrap()
        .write_all(b"{\"old\":2}\n")
        .unwrap();
    assert_eq!(tail.finish(), vec!["{\"old\":2}", "{\"c\":3}"]);
}
