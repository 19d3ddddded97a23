//! The dispatch sequence (platform.md §4): what launching a worker for a
//! ticket means, as one library call the CLI and tests share.
//!
//! check the path → validate the ticket (when a docs checkout is given) →
//! resolve the model → refuse unless the manager runs → free the locks of
//! workers that are gone (ghosts) → acquire (lock + fleet slot,
//! atomically) → render the user data → RunInstances → attach the
//! instance → summary.
//!
//! Nothing is spent before the acquire succeeds, and nothing is left held
//! when the launch fails: any failure after the acquire and before an
//! instance exists releases the lock and its slot with outcome `error`.
//! If RunInstances fails ambiguously (the instance may exist), the worker
//! is looked up by its dispatch tag first, so a launched worker is attached
//! rather than orphaned beside a released lock.
//!
//! This module does not know where the launch template or the manager come
//! from (stack outputs), how tickets are parsed (the `validate` seam) or
//! what the worker's user data says (the `render` seam).

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::exit;
use crate::fleet::workers::{Launch, Worker, Workers, USER_DATA_LIMIT};
use crate::fleet::{
    AcquireError, AcquireRequest, AttachRequest, LockItem, Outcome, Registry, ReleaseBy,
    ReleaseRequest, Released,
};

/// What a dispatch needs from the environment and the stack.
#[derive(Debug, Clone)]
pub struct DispatchSettings {
    pub launch_template_id: String,
    pub log_group: String,
    pub public_hostname: String,
    /// The models dispatch accepts.
    pub models: Vec<String>,
    pub default_model: String,
    pub ttl_seconds: i64,
    /// The manager instance: dispatch refuses unless it is running (the
    /// workers push and ship logs to it). `None` skips the check.
    pub manager_instance_id: Option<String>,
}

/// What the operator asked for.
#[derive(Debug, Clone, Default)]
pub struct DispatchRequest {
    /// Relative to the docs repository, e.g. `sows/foo.md`.
    pub ticket: String,
    pub model: Option<String>,
    /// A fresh one when absent.
    pub dispatch_id: Option<String>,
    pub dispatched_by: Option<String>,
    /// A docs checkout: the ticket is validated there before anything is spent.
    pub docs_dir: Option<PathBuf>,
}

/// What the user-data renderer gets: everything that varies per dispatch.
#[derive(Debug, Clone, Copy)]
pub struct LaunchContext<'a> {
    pub ticket: &'a str,
    pub dispatch_id: &'a str,
    pub model: &'a str,
}

/// A launched, attached worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatched {
    pub ticket: String,
    pub dispatch_id: String,
    pub model: String,
    pub instance_id: String,
    pub instance_type: Option<String>,
}

/// A model outside the allowlist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("model '{model}' is not allowed; choose one of: {allowed}")]
pub struct ModelError {
    pub model: String,
    pub allowed: String,
}

/// Why a dispatch did not launch (or launched but could not be recorded).
/// [`DispatchError::exit_code`] maps it onto the CLI contract.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("invalid ticket path '{ticket}': {reason}")]
    InvalidTicket { ticket: String, reason: String },
    #[error("invalid dispatch id '{id}': use 1 to 64 letters, digits, '.', '_' or '-'")]
    InvalidDispatchId { id: String },
    #[error("ticket {ticket} is not valid")]
    Invalid {
        ticket: String,
        #[source]
        source: anyhow::Error,
    },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{}; refusing to dispatch a second worker", holder.holder_description())]
    Held { holder: LockItem },
    #[error("the fleet is at its cap of {cap} concurrent workers; nothing was launched")]
    AtCap { cap: u32 },
    #[error("the manager {instance_id} is {state}, not running: a worker would report and ship its logs into nothing; nothing was launched")]
    ManagerNotRunning { instance_id: String, state: String },
    #[error("cannot tell whether the manager {instance_id} is running")]
    ManagerUnknown {
        instance_id: String,
        #[source]
        source: anyhow::Error,
    },
    #[error("could not acquire {ticket}")]
    Registry {
        ticket: String,
        #[source]
        source: anyhow::Error,
    },
    /// No worker exists; `released` says whether the lock and slot were given back.
    #[error("could not launch a worker for {ticket}")]
    Launch {
        ticket: String,
        released: bool,
        #[source]
        source: anyhow::Error,
    },
    /// A worker runs, but its lock does not name it.
    #[error(
        "worker {instance_id} was launched for {ticket} but could not be attached to its lock"
    )]
    Attach {
        ticket: String,
        dispatch_id: String,
        instance_id: String,
        #[source]
        source: anyhow::Error,
    },
}

impl DispatchError {
    /// The CLI exit code: 3 held, 4 at cap, 1 anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            DispatchError::Held { .. } => exit::IN_PROGRESS,
            DispatchError::AtCap { .. } => exit::AT_CAP,
            _ => exit::ERROR,
        }
    }

    /// What the operator can do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            DispatchError::Held { holder } => Some(format!(
                "wait for it to finish (`devstack fleet list`), or free a stuck lock with \
                 `devstack fleet release --sow {} --instance-id {} --outcome error --force`",
                holder.sow,
                holder.instance_id.as_deref().unwrap_or("none")
            )),
            DispatchError::ManagerNotRunning { instance_id, .. } => Some(format!(
                "start it (`aws ec2 start-instances --instance-ids {instance_id}`) or rebuild it \
                 with `devstack apply`, then dispatch again"
            )),
            DispatchError::AtCap { .. } => Some(
                "wait for a worker to finish (`devstack fleet list`); \
                 `devstack fleet reconcile` finds locks that hold a slot for nothing"
                    .into(),
            ),
            DispatchError::Launch {
                ticket,
                released: false,
                ..
            } => Some(format!(
                "the lock on {ticket} may still be held: check `devstack fleet list` and free it \
                 with `devstack fleet release --sow {ticket} --instance-id none --outcome error --force`"
            )),
            DispatchError::Attach {
                ticket,
                dispatch_id,
                instance_id,
                ..
            } => Some(format!(
                "the worker runs; record it with `devstack fleet attach --sow {ticket} \
                 --dispatch-id {dispatch_id} --instance-id {instance_id}`, or terminate it"
            )),
            _ => None,
        }
    }
}

/// The environment variable that carries the repository variable
/// `DEVELOPER_CLAUDE_MODEL` (the dispatch workflow passes it through).
pub const MODEL_VARIABLE: &str = "DEVELOPER_CLAUDE_MODEL";

/// The model asked for (worker-contracts.md §6): the workflow's input,
/// else the repository variable, else none (the platform default). Blank
/// counts as absent at each step.
pub fn requested_model(input: Option<&str>, variable: Option<&str>) -> Option<String> {
    [input, variable]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|m| !m.is_empty())
        .map(str::to_string)
}

/// The model a dispatch uses: the requested one if allowed, the default
/// when none or a blank one is requested. Refused otherwise.
pub fn resolve_model(
    requested: Option<&str>,
    allowed: &[String],
    default: &str,
) -> Result<String, ModelError> {
    let model = requested.map(str::trim).filter(|m| !m.is_empty());
    let Some(model) = model else {
        return Ok(default.to_string());
    };
    if allowed.iter().any(|m| m == model) {
        Ok(model.to_string())
    } else {
        Err(ModelError {
            model: model.to_string(),
            allowed: allowed.join(", "),
        })
    }
}

/// The dispatchable-path rules (relative, under a work-type directory, a
/// `.md` file, no `..`, only `[A-Za-z0-9._/-]`): the ticket module owns them.
pub fn check_ticket_path(ticket: &str) -> Result<(), String> {
    crate::ticket::check_ticket_path(ticket)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

pub use crate::ticket::slug;

fn valid_dispatch_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Runs dispatches against one registry and one environment's workers.
pub struct Dispatcher<'a> {
    pub registry: &'a dyn Registry,
    pub workers: &'a Workers,
    pub settings: &'a DispatchSettings,
}

impl Dispatcher<'_> {
    /// The whole sequence. `validate` checks the ticket file in the docs
    /// checkout (only called with `docs_dir`); `render` produces the
    /// worker's user data once the lock is held, as EC2 gets it (gzip for
    /// the worker script: EC2's 16 KB limit applies to these bytes, before
    /// base64). `now` is the acquire time.
    pub async fn dispatch(
        &self,
        req: &DispatchRequest,
        validate: impl Fn(&Path) -> anyhow::Result<()>,
        render: impl FnOnce(&LaunchContext<'_>) -> anyhow::Result<Vec<u8>>,
        now: i64,
    ) -> Result<Dispatched, DispatchError> {
        let clock = Instant::now();
        let ticket = req.ticket.as_str();
        check_ticket_path(ticket).map_err(|reason| DispatchError::InvalidTicket {
            ticket: ticket.to_string(),
            reason,
        })?;
        let dispatch_id = match &req.dispatch_id {
            Some(id) if valid_dispatch_id(id) => id.clone(),
            Some(id) => return Err(DispatchError::InvalidDispatchId { id: id.clone() }),
            None => crate::fleet::new_dispatch_id(),
        };
        if let Some(docs) = &req.docs_dir {
            validate(&docs.join(ticket)).map_err(|source| DispatchError::Invalid {
                ticket: ticket.to_string(),
                source,
            })?;
        }
        let model = resolve_model(
            req.model.as_deref(),
            &self.settings.models,
            &self.settings.default_model,
        )?;

        self.check_manager().await?;
        // Before the cap is counted: free what workers that are gone hold.
        match crate::fleet::reconcile::reap_ghosts(
            self.registry,
            self.workers,
            &crate::fleet::reconcile::ReconcileSettings::default(),
            now,
        )
        .await
        {
            Ok(released) => {
                for ticket in released {
                    tracing::warn!(
                        ticket,
                        "freed the lock and slot of a worker that is gone (outcome error)"
                    );
                }
            }
            // The acquire still enforces the cap; a stale lock only costs a slot.
            Err(e) => tracing::warn!("could not look for locks of workers that are gone: {e:#}"),
        }

        let acquire = AcquireRequest {
            sow: ticket.to_string(),
            dispatch_id: dispatch_id.clone(),
            ttl_seconds: self.settings.ttl_seconds,
            dispatched_by: req.dispatched_by.clone(),
            model: Some(model.clone()),
        };
        self.registry
            .acquire(&acquire, now)
            .await
            .map_err(|e| match e {
                AcquireError::Held { holder } => DispatchError::Held { holder },
                AcquireError::AtCap { cap } => DispatchError::AtCap { cap },
                AcquireError::Backend(source) => DispatchError::Registry {
                    ticket: ticket.to_string(),
                    source,
                },
            })?;
        tracing::info!(ticket, dispatch_id, model, "acquired");

        // From here on, a failure before an instance exists gives the lock back.
        let context = LaunchContext {
            ticket,
            dispatch_id: &dispatch_id,
            model: &model,
        };
        let worker = match self.launch(&context, render).await {
            Ok(worker) => worker,
            Err(Failed {
                source,
                maybe_launched,
            }) => {
                let now = now + clock.elapsed().as_secs() as i64;
                let released = !maybe_launched && self.give_back(ticket, &dispatch_id, now).await;
                return Err(DispatchError::Launch {
                    ticket: ticket.to_string(),
                    released,
                    source,
                });
            }
        };
        tracing::info!(ticket, instance_id = worker.instance_id, "launched");

        let attach = AttachRequest {
            sow: ticket.to_string(),
            dispatch_id: dispatch_id.clone(),
            instance_id: worker.instance_id.clone(),
            compute_type: worker.compute_type(),
        };
        let now = now + clock.elapsed().as_secs() as i64;
        if let Err(e) = self.registry.attach(&attach, now).await {
            return Err(DispatchError::Attach {
                ticket: ticket.to_string(),
                dispatch_id,
                instance_id: worker.instance_id,
                source: e.into(),
            });
        }
        Ok(Dispatched {
            ticket: ticket.to_string(),
            dispatch_id,
            model,
            instance_id: worker.instance_id,
            instance_type: worker.instance_type,
        })
    }

    /// Refuses unless the manager instance is running.
    async fn check_manager(&self) -> Result<(), DispatchError> {
        let Some(id) = &self.settings.manager_instance_id else {
            return Ok(());
        };
        let states = self
            .workers
            .states(std::slice::from_ref(id))
            .await
            .map_err(|source| DispatchError::ManagerUnknown {
                instance_id: id.clone(),
                source,
            })?;
        match states.get(id).map(String::as_str) {
            Some("running") => Ok(()),
            state => Err(DispatchError::ManagerNotRunning {
                instance_id: id.clone(),
                state: state.unwrap_or("missing").to_string(),
            }),
        }
    }

    async fn launch(
        &self,
        context: &LaunchContext<'_>,
        render: impl FnOnce(&LaunchContext<'_>) -> anyhow::Result<Vec<u8>>,
    ) -> Result<Worker, Failed> {
        let user_data = render(context)
            .map_err(|e| Failed::nothing_launched(e.context("rendering the user data")))?;
        if user_data.len() > USER_DATA_LIMIT {
            return Err(Failed::nothing_launched(anyhow::anyhow!(
                "the rendered user data is {} bytes; EC2 accepts at most {USER_DATA_LIMIT}",
                user_data.len()
            )));
        }
        let launch = Launch {
            launch_template_id: &self.settings.launch_template_id,
            ticket: context.ticket,
            dispatch_id: context.dispatch_id,
            user_data: &user_data,
        };
        let error = match self.workers.launch(&launch).await {
            Ok(worker) => return Ok(worker),
            Err(e) => e,
        };
        // A timeout can hide a launch that happened: look before giving up.
        match self.workers.find_by_dispatch(context.dispatch_id).await {
            Ok(Some(worker)) => {
                tracing::warn!(
                    instance_id = worker.instance_id,
                    "RunInstances failed but the worker exists: {error:#}"
                );
                Ok(worker)
            }
            Ok(None) => Err(Failed::nothing_launched(error)),
            Err(lookup) => Err(Failed {
                source: error.context(format!(
                    "and whether a worker was launched is unknown: {lookup:#}"
                )),
                maybe_launched: true,
            }),
        }
    }

    /// Releases this dispatch's lock and slot after a failed launch.
    async fn give_back(&self, ticket: &str, dispatch_id: &str, now: i64) -> bool {
        let release = ReleaseRequest {
            sow: ticket.to_string(),
            by: ReleaseBy::Dispatch(dispatch_id.to_string()),
            outcome: Outcome::Error,
            prs_opened: 0,
            model: None,
        };
        match self.registry.release(&release, now).await {
            Ok(Released::Released { .. }) => true,
            Ok(Released::NotHeld { .. }) => false,
            Err(e) => {
                tracing::warn!("could not release {ticket} after a failed launch: {e:#}");
                false
            }
        }
    }
}

/// A launch that did not produce a worker.
struct Failed {
    source: anyhow::Error,
    /// Whether an instance might exist anyway (then the lock is kept).
    maybe_launched: bool,
}

impl Failed {
    fn nothing_launched(source: anyhow::Error) -> Self {
        Failed {
            source,
            maybe_launched: false,
        }
    }
}

impl DispatchSettings {
    /// The Markdown summary (for the terminal and `$GITHUB_STEP_SUMMARY`).
    pub fn summary_markdown(&self, d: &Dispatched) -> String {
        let prefix = format!("{}/{}", slug(&d.ticket), d.instance_id);
        let instance_type = d
            .instance_type
            .as_deref()
            .map(|t| format!(" ({t})"))
            .unwrap_or_default();
        format!(
            "## Worker dispatched\n\
             \n\
             - **Ticket:** `{ticket}`\n\
             - **Instance:** `{instance}`{instance_type}\n\
             - **Model:** `{model}`\n\
             - **Dispatch id:** `{dispatch_id}`\n\
             - **Dashboard:** https://{host}/d/developer-platform\n\
             \n\
             ### CloudWatch log streams (group `{group}`)\n\
             - `{prefix}/claude`: Claude's live progress\n\
             - `{prefix}/claude-debug`: Claude Code's debug log\n\
             - `{prefix}/userdata`: bootstrap progress\n\
             - `{prefix}/cloud-init`: cloud-init's own output\n\
             \n\
             ### Tail Claude live\n\
             ```bash\n\
             aws logs tail {group} --log-stream-names {prefix}/claude --follow\n\
             ```\n\
             \n\
             ### Shell on the worker\n\
             ```bash\n\
             aws ssm start-session --target {instance}\n\
             ```\n",
            ticket = d.ticket,
            instance = d.instance_id,
            model = d.model,
            dispatch_id = d.dispatch_id,
            host = self.public_hostname,
            group = self.log_group,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn models() -> Vec<String> {
        ["claude-fable-5", "claude-opus-5"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn blank_or_absent_model_means_the_default() {
        assert_eq!(
            resolve_model(None, &models(), "claude-opus-5").unwrap(),
            "claude-opus-5"
        );
        assert_eq!(
            resolve_model(Some("  "), &models(), "claude-opus-5").unwrap(),
            "claude-opus-5"
        );
        assert_eq!(
            resolve_model(Some("claude-fable-5"), &models(), "claude-opus-5").unwrap(),
            "claude-fable-5"
        );
        let err = resolve_model(Some("gpt-9"), &models(), "claude-opus-5").unwrap_err();
        assert!(
            err.to_string().contains("claude-fable-5, claude-opus-5"),
            "{err}"
        );
    }

    #[test]
    fn the_input_beats_the_repository_variable_which_beats_the_default() {
        assert_eq!(
            requested_model(Some("claude-fable-5"), Some("claude-opus-5")).as_deref(),
            Some("claude-fable-5")
        );
        assert_eq!(
            requested_model(Some(" "), Some("claude-opus-5")).as_deref(),
            Some("claude-opus-5")
        );
        assert_eq!(
            requested_model(None, Some("claude-opus-5")).as_deref(),
            Some("claude-opus-5")
        );
        assert_eq!(requested_model(None, Some("")), None);
        assert_eq!(requested_model(None, None), None);
    }

    #[test]
    fn ticket_paths() {
        assert!(check_ticket_path("sows/foo.md").is_ok());
        assert!(check_ticket_path("dx/workout-log.md").is_ok());
        for bad in [
            "",
            "/sows/a.md",
            "sows/../a.md",
            "sows/a b.md",
            "sows/a;rm.md",
            "sows//a.md",
            "sows/.a.md",
            "rfcs/a.md",
            "sows/a.txt",
            "sows/___.md",
            "#fleet",
        ] {
            assert!(check_ticket_path(bad).is_err(), "{bad:?} passed");
        }
    }

    #[test]
    fn slug_rules() {
        assert_eq!(slug("sows/foo.md"), "foo");
        assert_eq!(slug("sows/my feature!.md"), "my_feature");
        assert_eq!(slug("dx/v1.2_x.md"), "v1.2_x");
    }

    #[test]
    fn dispatch_ids_fit_a_client_token() {
        assert!(valid_dispatch_id(&crate::fleet::new_dispatch_id()));
        assert!(valid_dispatch_id("run-42.a_b"));
        assert!(!valid_dispatch_id(""));
        assert!(!valid_dispatch_id(&"x".repeat(65)));
        assert!(!valid_dispatch_id("a#b"));
    }

    #[test]
    fn summary_names_streams_and_commands() {
        let settings = DispatchSettings {
            launch_template_id: "lt-1".into(),
            log_group: "/aws/ec2/prog-strength-developer".into(),
            public_hostname: "developers.progstrength.fitness".into(),
            models: models(),
            default_model: "claude-opus-5".into(),
            ttl_seconds: 3600,
            manager_instance_id: None,
        };
        let md = settings.summary_markdown(&Dispatched {
            ticket: "sows/foo.md".into(),
            dispatch_id: "d1".into(),
            model: "claude-opus-5".into(),
            instance_id: "i-0abc".into(),
            instance_type: Some("t3.xlarge".into()),
        });
        for want in [
            "`sows/foo.md`",
            "`i-0abc` (t3.xlarge)",
            "`claude-opus-5`",
            "https://developers.progstrength.fitness/d/developer-platform",
            "`foo/i-0abc/claude`",
            "`foo/i-0abc/userdata`",
            "`foo/i-0abc/claude-debug`",
            "`foo/i-0abc/cloud-init`",
            "aws logs tail /aws/ec2/prog-strength-developer --log-stream-names foo/i-0abc/claude --follow",
            "aws ssm start-session --target i-0abc",
        ] {
            assert!(md.contains(want), "missing {want:?} in\n{md}");
        }
    }
}
