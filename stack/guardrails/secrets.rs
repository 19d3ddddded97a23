//! Guardrails: secrets. No secret VALUE anywhere in the declared stack:
//! resource bodies, data source queries and outputs all end up in plan
//! output, saved plans and state, and user data is readable by anyone
//! who can describe an instance. Secrets live in Secrets Manager; the
//! stack names them by ARN only.
//!
//! Detected: PEM private keys, Anthropic API keys (`sk-ant-`), GitHub
//! tokens (`ghp_`, `ghs_`, ... and `github_pat_`), AWS access key ids and
//! secret access keys. Strings that are base64 (user data) are decoded,
//! and gunzipped when gzip, before they are searched, so a token pasted
//! into a compressed user data script is still found. The violation names
//! where the value is and what it looks like, never the value itself.

use std::io::Read;
use std::sync::LazyLock;

use base64::Engine as _;
use regex::Regex;
use serde_json::Value;

use super::Violation;
use crate::engine::resource::Stack;

const RULE: &str = "no-secret-values";

/// What a secret looks like, and a pattern that finds it in any text.
static PATTERNS: LazyLock<Vec<(&'static str, Regex)>> = LazyLock::new(|| {
    [
        (
            "a PEM private key",
            r"-----BEGIN ([A-Z0-9]+ )*PRIVATE KEY-----",
        ),
        ("an Anthropic API key", r"sk-ant-[A-Za-z0-9_-]{8,}"),
        ("a GitHub token", r"\bgh[pousr]_[A-Za-z0-9]{30,}"),
        ("a GitHub token", r"\bgithub_pat_[A-Za-z0-9_]{20,}"),
        ("an AWS access key id", r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
        (
            "an AWS secret access key",
            r#"(?i)aws.{0,20}secret.{0,20}?[:=\s"']+[A-Za-z0-9/+]{40}([^A-Za-z0-9/+=]|$)"#,
        ),
    ]
    .into_iter()
    .filter_map(|(what, re)| Regex::new(re).ok().map(|re| (what, re)))
    .collect()
});

/// A whole value that is exactly an AWS secret access key: 40 characters
/// of base64 alphabet with upper case, lower case and digits (which a hex
/// digest or a word never has all of).
static BARE_AWS_SECRET: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9/+]{40}$").ok());

/// Decoded text larger than this is not searched (user data is <= 16 KB).
const MAX_DECODED: u64 = 1 << 20;

pub fn check(stack: &Stack, out: &mut Vec<Violation>) {
    for r in &stack.resources {
        walk(&r.address, &r.body, String::new(), out);
    }
    for d in &stack.data {
        walk(&d.name, &d.query, String::new(), out);
    }
    for o in &stack.outputs {
        walk(&format!("output.{}", o.name), &o.value, String::new(), out);
    }
}

fn walk(address: &str, v: &Value, path: String, out: &mut Vec<Violation>) {
    match v {
        Value::String(s) => {
            if let Some((what, how)) = find_secret(s) {
                let at = if path.is_empty() { "its body" } else { &path };
                out.push(Violation {
                    rule: RULE,
                    address: address.to_string(),
                    message: format!(
                        "{at} holds what looks like {what}{how}; never put a secret value in the stack: keep it in Secrets Manager and reference its ARN"
                    ),
                });
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                walk(address, v, format!("{path}[{i}]"), out);
            }
        }
        Value::Object(o) => {
            for (k, v) in o {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(address, v, p, out);
            }
        }
        _ => {}
    }
}

/// What secret `s` seems to hold, and where ("" or " (base64...)").
fn find_secret(s: &str) -> Option<(&'static str, &'static str)> {
    if let Some(what) = search(s) {
        return Some((what, ""));
    }
    if is_bare_aws_secret(s) {
        return Some(("an AWS secret access key", ""));
    }
    let decoded = decode_base64(s)?;
    if let Some(text) = gunzip(&decoded) {
        return search(&text).map(|w| (w, " (inside gzip+base64)"));
    }
    let text = String::from_utf8(decoded).ok()?;
    search(&text).map(|w| (w, " (inside base64)"))
}

fn search(text: &str) -> Option<&'static str> {
    PATTERNS
        .iter()
        .find(|(_, re)| re.is_match(text))
        .map(|(what, _)| *what)
}

fn is_bare_aws_secret(s: &str) -> bool {
    BARE_AWS_SECRET.as_ref().is_some_and(|re| re.is_match(s))
        && s.chars().any(|c| c.is_ascii_uppercase())
        && s.chars().any(|c| c.is_ascii_lowercase())
        && s.chars().any(|c| c.is_ascii_digit())
}

/// `s` decoded, when it is plausibly base64 (long enough, base64 alphabet,
/// padded length) and decodes.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let s: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if s.len() < 16 || !s.len().is_multiple_of(4) {
        return None;
    }
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

fn gunzip(bytes: &[u8]) -> Option<String> {
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return None;
    }
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes)
        .take(MAX_DECODED)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::resource::{Data, Resource};
    use serde::Serialize;
    use std::io::Write;

    #[derive(Serialize)]
    struct Thing {
        name: String,
        user_data: String,
    }
    impl Resource for Thing {
        const KIND: &'static str = "test_thing";
    }
    #[derive(Serialize)]
    struct Lookup {
        name: String,
    }
    impl Data for Lookup {
        const KIND: &'static str = "test_lookup";
    }

    fn stack_with_user_data(user_data: &str) -> Stack {
        let mut s = Stack::new("t", "dev");
        s.add(
            "thing",
            Thing {
                name: "thing".into(),
                user_data: user_data.into(),
            },
        );
        s
    }

    fn violations(s: &Stack) -> Vec<Violation> {
        let mut out = Vec::new();
        check(s, &mut out);
        out
    }

    /// Builds secret-looking strings at run time, so this file itself
    /// holds none for a scanner to trip on.
    fn fake(prefix: &str, body: &str, n: usize) -> String {
        format!("{prefix}{}", body.repeat(n))
    }

    fn assert_found(text: &str, what: &str) {
        let v = violations(&stack_with_user_data(text));
        assert_eq!(v.len(), 1, "{text:?} was not flagged");
        assert_eq!(v[0].rule, RULE);
        assert_eq!(v[0].address, "thing");
        assert!(v[0].message.contains(what), "{}", v[0]);
        assert!(v[0].message.contains("user_data"), "{}", v[0]);
        assert!(!v[0].message.contains(text), "the value must not be shown");
    }

    #[test]
    fn each_kind_of_secret_is_found() {
        let pem = format!("-----{} RSA PRIVATE KEY-----\nMIIEow...\n", "BEGIN");
        assert_found(&pem, "PEM private key");
        assert_found(
            &format!("export KEY={}", fake("sk-", "ant-api03-Abc", 2)),
            "Anthropic",
        );
        assert_found(&fake("ghp_", "Ab1Cd2", 6), "GitHub token");
        assert_found(&fake("ghs_", "Ab1Cd2", 6), "GitHub token");
        assert_found(&fake("github_pat_", "11ABcd_", 4), "GitHub token");
        assert_found(&fake("AKIA", "ABCDEFGH", 2), "AWS access key id");
        assert_found(
            &format!("aws_secret_access_key = {}", fake("", "wJalrXUt9/", 4)),
            "AWS secret access key",
        );
        assert_found(&fake("", "wJalrXUt9+", 4), "AWS secret access key");
    }

    #[test]
    fn a_token_inside_gzipped_base64_user_data_is_found() {
        let script = format!(
            "#!/bin/bash\nexport GH_TOKEN={}\n",
            fake("ghp_", "Ab1Cd2", 6)
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(script.as_bytes()).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap());
        let v = violations(&stack_with_user_data(&b64));
        assert_eq!(v.len(), 1);
        assert!(v[0].message.contains("inside gzip+base64"), "{}", v[0]);
    }

    #[test]
    fn data_queries_and_outputs_are_searched_too() {
        let mut s = Stack::new("t", "dev");
        s.add_data(
            "lookup",
            Lookup {
                name: fake("sk-", "ant-api03-Abc", 2),
            },
        );
        s.output("token", fake("ghs_", "Ab1Cd2", 6));
        let v = violations(&s);
        let addresses: Vec<&str> = v.iter().map(|v| v.address.as_str()).collect();
        assert_eq!(addresses, vec!["data.lookup", "output.token"]);
    }

    #[test]
    fn ordinary_values_pass() {
        for ok in [
            "arn:aws:secretsmanager:us-east-2:123456789012:secret:p/github-app-*",
            "ami-018d49b53eee64386",
            "da39a3ee5e6b4b0d3255bfef95601890afd80709", // a SHA-1: hex only
            "#!/bin/bash\necho hello\n",
            // base64 of an ordinary script
            "IyEvYmluL2Jhc2gKZWNobyBoZWxsbwo=",
            "sk-ant- keys are read from the secret at boot",
        ] {
            assert_eq!(violations(&stack_with_user_data(ok)), vec![], "{ok}");
        }
        let platform = crate::stack::stack(&crate::stack::env::Env::load("prod").unwrap());
        assert_eq!(violations(&platform), vec![]);
    }
}
