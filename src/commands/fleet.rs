//! `devstack fleet`: the run registry from the command line, with the old
//! `python -m fleet` tool's flags and exit codes (0 ok, 1 error, 3 already
//! in progress, 4 fleet at cap).
//!
//! Data goes to stdout (`--json`, `list`, `history`, `resolve-model`'s
//! model); confirmations and refusals go to stderr.

use std::fmt::Write as _;

use anyhow::Context as _;
use serde_json::json;

use super::Context;
use crate::cli::{FleetArgs, FleetCommand};
use crate::dispatch::resolve_model;
use crate::exit::{self, CodedError};
use crate::fleet::reconcile::{self, GhostReason, ReconcileSettings};
use crate::fleet::workers::Workers;
use crate::fleet::{
    AcquireError, AcquireRequest, AttachError, AttachRequest, DynamoRegistry, LockItem, Outcome,
    Registry, ReleaseBy, ReleaseRequest, Released, RunItem, SlotItem,
};

pub async fn run(ctx: &Context, args: FleetArgs) -> anyhow::Result<u8> {
    // Opened per command, so `resolve-model` never touches AWS.
    let registry = || open_registry(ctx, args.table.as_deref());
    let now = crate::fleet::now();
    match args.command {
        FleetCommand::Acquire {
            sow,
            dispatch_id,
            dispatched_by,
            ttl,
            model,
            json,
        } => {
            let req = AcquireRequest {
                sow,
                dispatch_id: dispatch_id.unwrap_or_else(crate::fleet::new_dispatch_id),
                ttl_seconds: ttl,
                dispatched_by,
                model,
            };
            acquire(ctx, &registry().await?, &req, json, now).await
        }
        FleetCommand::Attach {
            sow,
            dispatch_id,
            instance_id,
            compute_type,
        } => {
            let req = AttachRequest {
                sow,
                dispatch_id,
                instance_id,
                compute_type,
            };
            match registry().await?.attach(&req, now).await {
                Ok(_) => {
                    ctx.printer
                        .info(&format!("Attached {} to {}.", req.instance_id, req.sow));
                    Ok(exit::OK)
                }
                Err(AttachError::NotHolder { .. }) => Err(exit::hint(
                    format!(
                        "cannot attach {} to {}: its lock is not held by dispatch {}",
                        req.instance_id, req.sow, req.dispatch_id
                    ),
                    "`devstack fleet list` shows who holds it",
                )),
                Err(AttachError::Backend(e)) => Err(e.context(format!("attaching to {}", req.sow))),
            }
        }
        FleetCommand::Release {
            sow,
            instance_id,
            outcome,
            force,
            prs_opened,
            model,
        } => {
            let outcome: Outcome = outcome.parse()?;
            let req = ReleaseRequest {
                sow,
                by: ReleaseBy::from_cli(&instance_id, force),
                outcome,
                prs_opened,
                model,
            };
            release(ctx, &registry().await?, &req, now).await
        }
        FleetCommand::List { json } => {
            let registry = registry().await?;
            let (locks, slots) =
                tokio::try_join!(registry.list_active(now), registry.list_slots())?;
            if json {
                let rows: Vec<_> = locks.iter().map(lock_json).collect();
                ctx.printer.out(&serde_json::to_string(&rows)?);
            } else {
                ctx.printer
                    .out(&render_active(&locks, &slots, registry.cap(), now));
            }
            Ok(exit::OK)
        }
        FleetCommand::History { sow, json } => {
            let registry = registry().await?;
            let runs = match &sow {
                Some(sow) => registry.list_history(sow).await?,
                None => registry.scan_history().await?,
            };
            if json {
                ctx.printer.out(&serde_json::to_string(&runs)?);
            } else {
                ctx.printer.out(&render_history(&runs));
            }
            Ok(exit::OK)
        }
        FleetCommand::Reconcile { apply } => {
            let env = ctx.env()?;
            let workers = Workers::new(
                aws_sdk_ec2::Client::new(ctx.aws().await?),
                env.worker_name(),
            );
            let (report, applied) = reconcile::reconcile(
                &registry().await?,
                &workers,
                &ReconcileSettings::default(),
                apply,
                now,
            )
            .await
            .context("reconciling workers with locks")?;
            ctx.printer
                .out(&render_reconcile(&report, applied.as_ref(), now));
            Ok(exit::OK)
        }
        // No AWS: this gates a dispatch before anything else happens.
        FleetCommand::ResolveModel { model } => {
            let env = ctx.env()?;
            // The same precedence as dispatch: --model, else the variable.
            let requested = crate::dispatch::requested_model(
                model.as_deref(),
                std::env::var(crate::dispatch::MODEL_VARIABLE)
                    .ok()
                    .as_deref(),
            );
            let model = resolve_model(requested.as_deref(), &env.models, &env.default_model)
                .map_err(|e| {
                    exit::hint(
                        e.to_string(),
                        "pass one of the listed models, or none for the default",
                    )
                })?;
            ctx.printer.out(&model);
            Ok(exit::OK)
        }
    }
}

/// The registry the fleet commands use: `--table`, else `FLEET_TABLE_NAME`
/// (clap reads both into `table`), else the environment's runs table,
/// capped at the environment's `fleet_cap`.
pub async fn open_registry(ctx: &Context, table: Option<&str>) -> anyhow::Result<DynamoRegistry> {
    let env = ctx.env()?;
    let table = table.map_or_else(|| env.runs_table(), str::to_string);
    let client = aws_sdk_dynamodb::Client::new(ctx.aws().await?);
    Ok(DynamoRegistry::new(client, table, env.fleet_cap))
}

async fn acquire(
    ctx: &Context,
    registry: &dyn Registry,
    req: &AcquireRequest,
    json: bool,
    now: i64,
) -> anyhow::Result<u8> {
    let refusal = match registry.acquire(req, now).await {
        Ok(lock) => {
            if json {
                let out =
                    json!({"acquired": true, "sow": lock.sow, "dispatch_id": lock.dispatch_id});
                ctx.printer.out(&out.to_string());
            } else {
                ctx.printer.info(&format!(
                    "Acquired {} (dispatch_id={}).",
                    lock.sow, lock.dispatch_id
                ));
            }
            return Ok(exit::OK);
        }
        Err(AcquireError::Backend(e)) => return Err(e.context(format!("acquiring {}", req.sow))),
        Err(refusal) => refusal,
    };
    let (code, hint, body) = match &refusal {
        AcquireError::Held { holder } => (
            exit::IN_PROGRESS,
            format!(
                "wait for it to finish, or free a stuck lock with `devstack fleet release --sow {} \
                 --instance-id {} --outcome error --force`",
                holder.sow,
                holder.instance_id.as_deref().unwrap_or("none")
            ),
            json!({
                "acquired": false,
                "sow": req.sow,
                "reason": "held",
                "holder_instance_id": holder.instance_id,
                "holder_started_at": holder.started_at,
                "holder_dispatch_id": holder.dispatch_id,
            }),
        ),
        _ => (
            exit::AT_CAP,
            "wait for a worker to finish; `devstack fleet reconcile` finds locks that hold a slot \
             for nothing"
                .to_string(),
            json!({"acquired": false, "sow": req.sow, "reason": "at_cap", "cap": registry.cap()}),
        ),
    };
    if json {
        ctx.printer.out(&body.to_string());
        return Ok(code);
    }
    Err(CodedError::new(code, refusal.to_string())
        .with_hint(hint)
        .into())
}

async fn release(
    ctx: &Context,
    registry: &dyn Registry,
    req: &ReleaseRequest,
    now: i64,
) -> anyhow::Result<u8> {
    match registry
        .release(req, now)
        .await
        .with_context(|| format!("releasing {}", req.sow))?
    {
        Released::Released { lock } => {
            ctx.printer.info(&format!(
                "Released {} (outcome={}, ran {}).",
                lock.sow,
                req.outcome,
                duration(now - lock.started_at)
            ));
        }
        // Best effort: a superseded worker must not fail; the lock's
        // expiry is the backstop.
        Released::NotHeld { current } => {
            let why = match current {
                None => "there is no lock".to_string(),
                Some(lock) if lock.status.is_terminal() => {
                    format!("it is already released ({})", lock.status)
                }
                Some(lock) => format!(
                    "it is held by {} (dispatch {})",
                    lock.instance_id.as_deref().unwrap_or("a launching worker"),
                    lock.dispatch_id
                ),
            };
            ctx.printer.info(&format!(
                "Skipped release of {} by {}: {why}. Nothing changed.",
                req.sow, req.by
            ));
        }
    }
    Ok(exit::OK)
}

/// The old tool's `list --json` row, plus the dispatch id.
fn lock_json(lock: &LockItem) -> serde_json::Value {
    json!({
        "sow": lock.sow,
        "instance_id": lock.instance_id,
        "started_at": lock.started_at,
        "expires_at": lock.expires_at,
        "status": lock.status,
        "dispatch_id": lock.dispatch_id,
    })
}

fn render_active(locks: &[LockItem], slots: &[SlotItem], cap: u32, now: i64) -> String {
    let unexpired: Vec<&SlotItem> = slots.iter().filter(|s| s.is_held(now)).collect();
    let held = unexpired
        .iter()
        .filter(|s| locks.iter().any(|l| s.belongs_to(l)))
        .count();
    let mut slots_line = format!("{held} of {cap} fleet slots held");
    if unexpired.len() > held {
        let _ = write!(
            slots_line,
            "; {} more held by released locks, reclaimed when the fleet is full",
            unexpired.len() - held
        );
    }
    if locks.is_empty() {
        return format!("No workers are building a ticket ({slots_line}).");
    }
    let mut out = format!("{} active run(s), {slots_line}:\n", locks.len());
    let rows: Vec<[String; 5]> = locks
        .iter()
        .map(|l| {
            [
                l.sow.clone(),
                l.instance_id
                    .clone()
                    .unwrap_or_else(|| "(launching)".into()),
                format!("{} ago", duration(now - l.started_at)),
                format!("in {}", duration(l.expires_at - now)),
                l.dispatch_id.clone(),
            ]
        })
        .collect();
    out.push_str(&table(
        ["TICKET", "INSTANCE", "STARTED", "EXPIRES", "DISPATCH"],
        &rows,
    ));
    out
}

fn render_history(runs: &[RunItem]) -> String {
    if runs.is_empty() {
        return "No runs recorded.".to_string();
    }
    let rows: Vec<[String; 8]> = runs
        .iter()
        .map(|r| {
            [
                timestamp(r.started_at),
                r.sow.clone(),
                r.outcome
                    .map_or_else(|| r.status.to_string(), |o| o.to_string()),
                r.duration_seconds.map(duration).unwrap_or_default(),
                r.compute_type.clone(),
                r.model.clone(),
                r.prs_opened.map(|p| p.to_string()).unwrap_or_default(),
                r.instance_id.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        [
            "STARTED", "TICKET", "OUTCOME", "DURATION", "COMPUTE", "MODEL", "PRS", "INSTANCE",
        ],
        &rows,
    )
}

fn render_reconcile(
    report: &reconcile::Report,
    applied: Option<&reconcile::Applied>,
    now: i64,
) -> String {
    let mut out = format!(
        "{} live worker(s), {} active lock(s).\n",
        report.workers, report.locks
    );
    if report.is_clean() {
        out.push_str("Workers and locks agree.\n");
    }
    for w in &report.orphans {
        let _ = writeln!(
            out,
            "orphan   {}  ticket {}: no live lock names this worker",
            w.instance_id,
            w.sow.as_deref().unwrap_or("(no SOW tag)")
        );
    }
    for g in &report.ghosts {
        let why = match &g.reason {
            GhostReason::InstanceGone { instance_id } => {
                format!("its instance {instance_id} is gone")
            }
            GhostReason::NeverLaunched => format!(
                "no instance after {} (dispatch {})",
                duration(now - g.lock.started_at),
                g.lock.dispatch_id
            ),
        };
        let _ = writeln!(out, "ghost    {}: {why}", g.lock.sow);
    }
    for o in &report.overdue {
        let _ = writeln!(
            out,
            "overdue  {}  ticket {}: running for {}",
            o.worker.instance_id,
            o.worker.sow.as_deref().unwrap_or("(no SOW tag)"),
            duration(o.running_seconds)
        );
    }
    match applied {
        None if !report.ghosts.is_empty() || !report.overdue.is_empty() => {
            out.push_str("Nothing changed; run with --apply to release ghosts and terminate overdue workers.\n");
        }
        None => {}
        Some(a) => {
            for sow in &a.released {
                let _ = writeln!(out, "released {sow} (outcome error)");
            }
            for id in &a.terminated {
                let _ = writeln!(out, "terminated {id}");
            }
            for sow in &a.timed_out {
                let _ = writeln!(out, "released {sow} (outcome timeout)");
            }
            for line in &a.skipped {
                let _ = writeln!(out, "skipped  {line}");
            }
        }
    }
    out
}

/// Left-aligned columns, two spaces apart.
fn table<const N: usize>(headers: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = headers.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let text = cells
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

fn timestamp(epoch: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(epoch)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| epoch.to_string())
}

/// `3h05m`, `12m03s`, `40s`.
fn duration(seconds: i64) -> String {
    let s = seconds.max(0);
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, min, sec) => format!("{min}m{sec:02}s"),
        (h, min, _) => format!("{h}h{min:02}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(duration(40), "40s");
        assert_eq!(duration(723), "12m03s");
        assert_eq!(duration(3 * 3600 + 5 * 60 + 9), "3h05m");
        assert_eq!(duration(-5), "0s");
    }

    #[test]
    fn tables_align_columns() {
        let t = table(["A", "LONGER"], &[["xyz".to_string(), "1".to_string()]]);
        assert_eq!(t, "A    LONGER\nxyz  1\n");
    }
}
