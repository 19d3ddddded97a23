//! What the run registry holds: the per-ticket lock, the per-dispatch
//! run-history row and the fleet slot, plus the rules that are pure
//! functions of them (outcome → status, `doc_type`, the history sort key,
//! who may release a lock, how a run is finalized).
//!
//! Nothing here knows DynamoDB; `dynamo.rs` owns the wire format and
//! `memory.rs` keeps these types as they are. Times are epoch seconds.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// Sort key of a ticket's lock item.
pub const LOCK_SK: &str = "LOCK";
/// Sort-key prefix of run-history items.
pub const RUN_PREFIX: &str = "RUN#";
/// Lock lifetime when none is given: the worker's 6 h backstop plus one
/// hour, so a lock only goes stale once its worker is surely gone.
pub const DEFAULT_TTL_SECONDS: i64 = 7 * 3600;
/// `model` of a history row that never recorded one (rows older than the
/// model column read this way in the old tool too).
pub const UNKNOWN_MODEL: &str = "unknown";
/// `compute_type` of a run whose instance type is not known yet.
pub const COARSE_COMPUTE_TYPE: &str = "ec2";

/// A lock's or a run's lifecycle state, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Working,
    Done,
    Error,
    Timeout,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Working => "working",
            Status::Done => "done",
            Status::Error => "error",
            Status::Timeout => "timeout",
        }
    }

    pub fn is_terminal(self) -> bool {
        self != Status::Working
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value that is not one of a closed set of words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} '{value}': expected one of {expected}")]
pub struct UnknownWord {
    pub what: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl FromStr for Status {
    type Err = UnknownWord;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "working" => Ok(Status::Working),
            "done" => Ok(Status::Done),
            "error" => Ok(Status::Error),
            "timeout" => Ok(Status::Timeout),
            _ => Err(UnknownWord {
                what: "status",
                value: s.to_string(),
                expected: "working, done, error, timeout",
            }),
        }
    }
}

/// How a run ended, as the worker (or an operator) reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Error,
    Timeout,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
        }
    }

    /// The terminal status an outcome leaves: `success` is the one word
    /// that differs (`done`).
    pub fn status(self) -> Status {
        match self {
            Outcome::Success => Status::Done,
            Outcome::Error => Status::Error,
            Outcome::Timeout => Status::Timeout,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Outcome {
    type Err = UnknownWord;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            // `done` is what the old tool's library API also accepted.
            "success" | "done" => Ok(Outcome::Success),
            "error" => Ok(Outcome::Error),
            "timeout" => Ok(Outcome::Timeout),
            _ => Err(UnknownWord {
                what: "outcome",
                value: s.to_string(),
                expected: "success, error, timeout",
            }),
        }
    }
}

/// The lock on one ticket (`sk = "LOCK"`): who holds it and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockItem {
    pub sow: String,
    pub status: Status,
    pub dispatch_id: String,
    pub started_at: i64,
    pub updated_at: i64,
    pub expires_at: i64,
    pub instance_id: Option<String>,
    pub dispatched_by: Option<String>,
    /// The fleet slot this lock took. devstack records it at acquire so
    /// that a release can free the slot by its key, without searching the
    /// slots (the worker may only get and update items). Locks the old
    /// tool took, or devstack took before it recorded this, have none.
    pub slot: Option<u32>,
}

impl LockItem {
    /// A lock holds its ticket iff it is working and not past expiry.
    pub fn is_active(&self, now: i64) -> bool {
        self.status == Status::Working && self.expires_at > now
    }

    /// The sort key of the history row this lock's dispatch appended.
    pub fn run_sk(&self) -> String {
        run_sk(self.started_at, &self.dispatch_id)
    }

    /// One line naming who holds the ticket, for a refused acquire.
    pub fn holder_description(&self) -> String {
        let who = match &self.instance_id {
            Some(id) => format!("instance {id}"),
            None => "a launching worker".to_string(),
        };
        format!(
            "{} is already being built by {who} (dispatch {}, started {})",
            self.sow,
            self.dispatch_id,
            utc(self.started_at)
        )
    }
}

/// Epoch seconds as a readable UTC time (`2026-03-07 14:05:09 UTC`).
pub fn utc(epoch: i64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time::OffsetDateTime::from_unix_timestamp(epoch)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| format!("at epoch {epoch}"))
}

/// One dispatch's permanent record (`sk = "RUN#…"`). Never carries
/// `expires_at`, so the table's TTL never reaps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunItem {
    pub sow: String,
    pub dispatch_id: String,
    pub doc_type: String,
    pub compute_type: String,
    pub model: String,
    pub status: Status,
    pub started_at: i64,
    pub updated_at: i64,
    pub instance_id: Option<String>,
    pub dispatched_by: Option<String>,
    pub outcome: Option<Outcome>,
    pub finished_at: Option<i64>,
    pub duration_seconds: Option<i64>,
    pub prs_opened: Option<i64>,
}

impl RunItem {
    pub fn sk(&self) -> String {
        run_sk(self.started_at, &self.dispatch_id)
    }

    /// Applies a release to this row: the terminal status and outcome, the
    /// end time, the duration, PRs opened and, when the worker observed
    /// one, the model that actually ran.
    pub fn finalize(&mut self, release: &ReleaseRequest, now: i64) {
        let status = release.outcome.status();
        self.status = status;
        self.outcome = Some(release.outcome);
        self.finished_at = Some(now);
        self.duration_seconds = Some(now - self.started_at);
        self.prs_opened = Some(release.prs_opened);
        self.updated_at = now;
        if let Some(model) = release.observed_model() {
            self.model = model.to_string();
        }
    }
}

/// One of the fleet's `cap` slots: taken with the lock, freed with it,
/// free again by itself once `expires_at` passes (the lock's own expiry).
/// A slot that was freed is not a `SlotItem` at all: only taken slots are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotItem {
    pub slot: u32,
    /// The ticket whose lock holds this slot.
    pub sow: String,
    pub dispatch_id: String,
    pub acquired_at: i64,
    pub expires_at: i64,
}

impl SlotItem {
    pub fn is_held(&self, now: i64) -> bool {
        self.expires_at > now
    }

    pub fn belongs_to(&self, lock: &LockItem) -> bool {
        self.sow == lock.sow && self.dispatch_id == lock.dispatch_id
    }
}

/// Sort key of a run-history row: `RUN#` + `started_at` zero-padded to 20
/// digits (lexical order is chronological order) + `#` + dispatch id.
pub fn run_sk(started_at: i64, dispatch_id: &str) -> String {
    format!("{RUN_PREFIX}{started_at:020}#{dispatch_id}")
}

pub use crate::ticket::doc_type;

/// What an acquire asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcquireRequest {
    pub sow: String,
    pub dispatch_id: String,
    pub ttl_seconds: i64,
    pub dispatched_by: Option<String>,
    /// The model dispatched with; the history row records `unknown` without one.
    pub model: Option<String>,
}

impl AcquireRequest {
    pub fn new(sow: impl Into<String>, dispatch_id: impl Into<String>) -> Self {
        AcquireRequest {
            sow: sow.into(),
            dispatch_id: dispatch_id.into(),
            ttl_seconds: DEFAULT_TTL_SECONDS,
            dispatched_by: None,
            model: None,
        }
    }

    /// The lock an acquire at `now` writes, before it has chosen a slot.
    pub fn lock(&self, now: i64) -> LockItem {
        LockItem {
            sow: self.sow.clone(),
            status: Status::Working,
            dispatch_id: self.dispatch_id.clone(),
            started_at: now,
            updated_at: now,
            expires_at: now + self.ttl_seconds,
            instance_id: None,
            dispatched_by: self.dispatched_by.clone(),
            slot: None,
        }
    }

    /// The history row an acquire at `now` appends.
    pub fn run(&self, now: i64) -> RunItem {
        RunItem {
            sow: self.sow.clone(),
            dispatch_id: self.dispatch_id.clone(),
            doc_type: doc_type(&self.sow).to_string(),
            compute_type: COARSE_COMPUTE_TYPE.to_string(),
            model: self
                .model
                .clone()
                .unwrap_or_else(|| UNKNOWN_MODEL.to_string()),
            status: Status::Working,
            started_at: now,
            updated_at: now,
            instance_id: None,
            dispatched_by: self.dispatched_by.clone(),
            outcome: None,
            finished_at: None,
            duration_seconds: None,
            prs_opened: None,
        }
    }

    /// The slot an acquire at `now` takes.
    pub fn slot(&self, slot: u32, now: i64) -> SlotItem {
        SlotItem {
            slot,
            sow: self.sow.clone(),
            dispatch_id: self.dispatch_id.clone(),
            acquired_at: now,
            expires_at: now + self.ttl_seconds,
        }
    }
}

/// What an attach records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachRequest {
    pub sow: String,
    pub dispatch_id: String,
    pub instance_id: String,
    /// `ec2:<instance type>`; the history row keeps `ec2` without one.
    pub compute_type: Option<String>,
}

/// Who is releasing, which decides whether a lock is theirs to free.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseBy {
    /// A worker: only the lock that names this instance. A superseded
    /// worker therefore cannot free its successor's lock.
    Instance(String),
    /// `--instance-id none`: only a lock with no instance yet.
    NoInstance,
    /// The dispatch that took the lock, giving it back after a failed launch.
    Dispatch(String),
    /// Operator override: whoever holds it.
    Force,
}

impl ReleaseBy {
    /// The CLI's reading of `--instance-id I|none [--force]`.
    pub fn from_cli(instance_id: &str, force: bool) -> ReleaseBy {
        if force {
            ReleaseBy::Force
        } else if instance_id == "none" {
            ReleaseBy::NoInstance
        } else {
            ReleaseBy::Instance(instance_id.to_string())
        }
    }

    /// Whether this releaser may free `lock`. Only a working lock can be
    /// released at all: a finished one has nothing to free and its history
    /// row is already final.
    pub fn may_release(&self, lock: &LockItem) -> bool {
        if lock.status != Status::Working {
            return false;
        }
        match self {
            ReleaseBy::Instance(id) => lock.instance_id.as_deref() == Some(id.as_str()),
            ReleaseBy::NoInstance => lock.instance_id.is_none(),
            ReleaseBy::Dispatch(id) => &lock.dispatch_id == id,
            ReleaseBy::Force => true,
        }
    }
}

impl fmt::Display for ReleaseBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReleaseBy::Instance(id) => write!(f, "instance {id}"),
            ReleaseBy::NoInstance => f.write_str("a lock with no instance"),
            ReleaseBy::Dispatch(id) => write!(f, "dispatch {id}"),
            ReleaseBy::Force => f.write_str("force"),
        }
    }
}

/// What a release asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseRequest {
    pub sow: String,
    pub by: ReleaseBy,
    pub outcome: Outcome,
    pub prs_opened: i64,
    /// The model the worker observed; replaces the dispatched one.
    pub model: Option<String>,
}

impl ReleaseRequest {
    /// The observed model, if one was given (blank counts as none).
    pub fn observed_model(&self) -> Option<&str> {
        self.model
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
    }
}

/// What a release did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released {
    /// The lock was freed (with its slot) and its run finalized.
    Released { lock: LockItem },
    /// Nothing to release: no lock, a finished one, or someone else's.
    NotHeld { current: Option<LockItem> },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_ticket_names_its_start_as_a_readable_utc_time() {
        let lock = LockItem {
            sow: "sows/foo.md".into(),
            status: Status::Working,
            dispatch_id: "d1".into(),
            started_at: 1_700_000_000,
            updated_at: 1_700_000_000,
            expires_at: 1_700_025_200,
            instance_id: Some("i-0abc".into()),
            dispatched_by: None,
            slot: None,
        };
        assert_eq!(
            lock.holder_description(),
            "sows/foo.md is already being built by instance i-0abc (dispatch d1, started 2023-11-14 22:13:20 UTC)"
        );
    }

    #[test]
    fn run_sort_key_is_zero_padded_to_twenty_digits() {
        assert_eq!(run_sk(1_750_000_000, "abc"), "RUN#00000000001750000000#abc");
        assert!(
            run_sk(99, "z") < run_sk(100, "a"),
            "lexical = chronological"
        );
    }

    #[test]
    fn doc_type_follows_the_first_directory() {
        assert_eq!(doc_type("sows/foo.md"), "sow");
        assert_eq!(doc_type("dx/foo.md"), "dx");
        assert_eq!(doc_type("rfcs/a/b.md"), "rfcs");
        assert_eq!(doc_type("sowsx/foo.md"), "sowsx");
        assert_eq!(doc_type("foo.md"), "foo.md");
    }

    #[test]
    fn success_is_the_one_outcome_whose_status_differs() {
        assert_eq!(Outcome::Success.status(), Status::Done);
        assert_eq!(Outcome::Error.status(), Status::Error);
        assert_eq!(Outcome::Timeout.status(), Status::Timeout);
        assert_eq!("done".parse::<Outcome>(), Ok(Outcome::Success));
        assert!("crashed".parse::<Outcome>().is_err());
    }

    #[test]
    fn release_rules() {
        let mut lock = AcquireRequest::new("sows/a.md", "d1").lock(100);
        assert!(ReleaseBy::NoInstance.may_release(&lock));
        assert!(!ReleaseBy::Instance("i-1".into()).may_release(&lock));
        lock.instance_id = Some("i-1".into());
        assert!(ReleaseBy::Instance("i-1".into()).may_release(&lock));
        assert!(!ReleaseBy::Instance("i-2".into()).may_release(&lock));
        assert!(!ReleaseBy::NoInstance.may_release(&lock));
        assert!(ReleaseBy::Dispatch("d1".into()).may_release(&lock));
        assert!(!ReleaseBy::Dispatch("d2".into()).may_release(&lock));
        assert!(ReleaseBy::Force.may_release(&lock));
        lock.status = Status::Done;
        assert!(!ReleaseBy::Force.may_release(&lock), "nothing left to free");
        assert_eq!(ReleaseBy::from_cli("none", false), ReleaseBy::NoInstance);
        assert_eq!(ReleaseBy::from_cli("i-9", true), ReleaseBy::Force);
    }

    #[test]
    fn finalize_records_duration_and_observed_model() {
        let req = AcquireRequest {
            model: Some("claude-opus-5".into()),
            ..AcquireRequest::new("sows/a.md", "d1")
        };
        let mut run = req.run(1_000);
        let release = ReleaseRequest {
            sow: "sows/a.md".into(),
            by: ReleaseBy::Force,
            outcome: Outcome::Success,
            prs_opened: 2,
            model: Some("claude-sonnet-5".into()),
        };
        run.finalize(&release, 1_600);
        assert_eq!(run.status, Status::Done);
        assert_eq!(run.outcome, Some(Outcome::Success));
        assert_eq!(run.duration_seconds, Some(600));
        assert_eq!(run.finished_at, Some(1_600));
        assert_eq!(run.prs_opened, Some(2));
        assert_eq!(run.model, "claude-sonnet-5");

        let mut run = req.run(1_000);
        run.finalize(
            &ReleaseRequest {
                model: Some("  ".into()),
                ..release
            },
            1_001,
        );
        assert_eq!(
            run.model, "claude-opus-5",
            "blank observed model keeps the dispatched one"
        );
    }
}
