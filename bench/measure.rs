//! What the proxy benchmarks share: their settings from the environment,
//! milliseconds, and grouping a request timeline into serial rounds.
//! Included with `#[path = "measure.rs"] mod measure;` next to
//! `mod proxy;`.

use std::time::Duration;

use crate::proxy::RequestRecord;

/// A whole-number setting from the environment, `default` when unset.
pub fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a whole number, not '{v}'")),
        Err(_) => default,
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Requests grouped into serial rounds: a request that arrives less than
/// one delay after the current round began could not have waited for any
/// answer of that round, so it belongs to it.
pub fn rounds<'a>(
    requests: impl IntoIterator<Item = &'a RequestRecord>,
    delay: Duration,
) -> Vec<Vec<&'a RequestRecord>> {
    let mut sorted: Vec<&RequestRecord> = requests.into_iter().collect();
    sorted.sort_by_key(|r| r.received);
    let mut out: Vec<Vec<&RequestRecord>> = Vec::new();
    for r in sorted {
        match out.last_mut() {
            Some(round) if r.received.duration_since(round[0].received) < delay => round.push(r),
            _ => out.push(vec![r]),
        }
    }
    out
}
