//! `devstack init|plan|apply|destroy|output|import|state`: the infrastructure
//! commands. Each resolves its settings, opens state, and drives the engine.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::sync::Arc;

use anyhow::Context as _;
use serde_json::Value;

use super::progress::StepReporter;
use super::Context;
use crate::aws::AwsProvider;
use crate::cli::{
    ApplyArgs, DestroyArgs, ImportArgs, OutputArgs, PlanArgs, PlanFormat, SafetyArgs, StateCommand,
};
use crate::engine::apply::apply as run_apply;
use crate::engine::plan::{plan as make_plan, Plan, PlanError, PlanOptions};
use crate::engine::render;
use crate::engine::snapshot::Snapshot;
use crate::exit::{self, CodedError};
use crate::import::terraform;
use crate::state::lock::{Held, StoreJournal};
use crate::state::{self, StateError, StateKey, StateStore};

/// The opened pieces every infrastructure command needs.
struct Infra {
    key: StateKey,
    store: Arc<dyn StateStore>,
    provider: AwsProvider,
    /// The stack. Until [`Infra::finish_stack`] its manager user data
    /// installs no devstack binary: the release's checksums are fetched
    /// (`manager`) alongside the state read and the refresh's first round,
    /// which only need the stack's names, not that user data.
    stack: crate::engine::resource::Stack,
    env: crate::stack::env::Env,
    manager: Option<ManagerRelease>,
}

type ManagerRelease =
    tokio::task::JoinHandle<anyhow::Result<Option<crate::stack::manager::ManagerBinary>>>;

/// The stack's guardrails: every violation printed, the first as the error.
fn guarded(
    ctx: &Context,
    stack: crate::engine::resource::Stack,
) -> anyhow::Result<crate::engine::resource::Stack> {
    let violations = crate::stack::guardrails::check(&stack);
    if let Some(first) = violations.first() {
        let more = violations.len() - 1;
        for v in &violations[1..] {
            ctx.printer.error(&anyhow::anyhow!("{v}"));
        }
        let hint = if more > 0 {
            format!("{more} more violation(s) above; fix the stack in stack/ and plan again")
        } else {
            "fix the stack in stack/ and plan again".to_string()
        };
        return Err(exit::hint(first.to_string(), hint));
    }
    Ok(stack)
}

async fn open(ctx: &Context) -> anyhow::Result<Infra> {
    let env = ctx.env()?.clone();
    let manager = {
        let env = env.clone();
        tokio::spawn(async move { manager_release(&env).await })
    };
    let stack = guarded(ctx, crate::stack::stack_with(&env, None))?;
    let aws = ctx.aws().await?;
    let store: Arc<dyn StateStore> = state::open(&ctx.global.state, Some(aws)).await?.into();
    Ok(Infra {
        key: StateKey {
            stack: env.name.clone(),
            env: env.env_name.clone(),
        },
        store,
        provider: AwsProvider::new(aws),
        stack,
        env,
        manager: Some(manager),
    })
}

/// The manager's release, once its fetch (started by [`open`]) is done.
async fn manager_binary(
    handle: Option<ManagerRelease>,
) -> anyhow::Result<Option<crate::stack::manager::ManagerBinary>> {
    match handle {
        Some(h) => h
            .await
            .map_err(|e| anyhow::anyhow!("resolving the manager's release failed: {e}"))?,
        None => Ok(None),
    }
}

impl Infra {
    /// Rebuilds the stack with the manager's release (when the fetch found
    /// one) and checks it again. Call before the stack is planned.
    fn finish_stack(
        &mut self,
        ctx: &Context,
        binary: Option<crate::stack::manager::ManagerBinary>,
    ) -> anyhow::Result<()> {
        if binary.is_some() {
            self.stack = guarded(ctx, crate::stack::stack_with(&self.env, binary.as_ref()))?;
        }
        Ok(())
    }

    /// [`Infra::finish_stack`] after waiting for the fetch: for commands
    /// with nothing to overlap it with.
    async fn ready(&mut self, ctx: &Context) -> anyhow::Result<()> {
        let binary = manager_binary(self.manager.take()).await?;
        self.finish_stack(ctx, binary)
    }
}

/// The devstack arm64 release the manager's user data installs: the
/// `DEVSTACK_MANAGER_BINARY_URL`/`_SHA256` overrides, else this version's
/// published release. A dev build with nothing published still plans: the
/// user data then leaves the binary to `devstack manager deploy`. The user
/// data is ignored as drift, so this only matters when the manager is
/// created or replaced. A malformed override is an error.
async fn manager_release(
    env: &crate::stack::env::Env,
) -> anyhow::Result<Option<crate::stack::manager::ManagerBinary>> {
    use crate::release::{self, Arch, Overrides, ReleaseError, MANAGER_OVERRIDES};
    let overrides = Overrides::from_flags_or_env(MANAGER_OVERRIDES, None, None);
    match release::resolve(&release::release_url(env), Arch::Aarch64, overrides).await {
        Ok(a) => Ok(Some(crate::stack::manager::ManagerBinary {
            url: a.url,
            sha256: a.sha256,
        })),
        Err(e @ (ReleaseError::NotPublished { .. } | ReleaseError::Fetch { .. })) => {
            tracing::info!("the manager's user data installs no devstack binary: {e}");
            Ok(None)
        }
        Err(e) => Err(exit::hint(
            e.to_string(),
            "fix the manager binary override, or unset both to use the release",
        )),
    }
}

/// Reads state and, at the same time, whatever the refresh can read
/// without it (engine::plan::prefetch): a no-op plan is then one round trip.
async fn load_and_prefetch(infra: &Infra) -> anyhow::Result<Option<Snapshot>> {
    let (snapshot, ()) = tokio::join!(
        infra.store.load(&infra.key),
        crate::engine::plan::prefetch(&infra.stack, &infra.provider)
    );
    snapshot.map_err(|e| {
        crate::engine::provider::Provider::end_refresh(&infra.provider);
        state_err(e)
    })
}

/// Turns state errors into one clear line with a hint.
fn state_err(e: StateError) -> anyhow::Error {
    match e {
        StateError::Locked(held) => CodedError::new(exit::ERROR, format!("state is locked by {}", held.describe()))
            .with_hint(format!(
                "wait for it to finish; if that process is gone, its lease expires by itself (at {}), or break it: devstack state unlock {} --force",
                state::format_epoch(held.lease_expires_at),
                held.id
            ))
            .into(),
        StateError::Missing(what) => CodedError::new(exit::ERROR, format!("the state store {what} does not exist"))
            .with_hint("run `devstack init` once to create it")
            .into(),
        StateError::Newer { .. } => CodedError::new(exit::ERROR, e.to_string())
            .with_hint("use the devstack release that wrote it (or a newer one); an older build must not rewrite it")
            .into(),
        StateError::Corrupt { .. } => CodedError::new(exit::ERROR, e.to_string())
            .with_hint("state was changed outside devstack and nothing will be changed while it is unreadable; restore the item (the DynamoDB state table keeps point-in-time recovery) or the file from a backup")
            .into(),
        other => anyhow::Error::new(other),
    }
}

fn plan_err(e: PlanError) -> anyhow::Error {
    match e {
        PlanError::Stale { .. } => CodedError::new(exit::ERROR, e.to_string())
            .with_hint("run `devstack plan --out FILE` again and apply the new file")
            .into(),
        PlanError::Mismatch(_) => CodedError::new(exit::ERROR, format!("{e}; nothing was changed"))
            .with_hint("the plan file was altered, or AWS or the stack changed since it was made (a replacement asked with --replace needs the same --replace on apply): run `devstack plan --out FILE` again and review it")
            .into(),
        PlanError::Protected { .. } | PlanError::ProtectedMany(_) => {
            CodedError::new(exit::ERROR, format!("{e}; nothing was changed")).into()
        }
        other => anyhow::Error::new(other),
    }
}

fn options(safety: &SafetyArgs) -> PlanOptions {
    PlanOptions {
        replace: safety.replace.iter().cloned().collect::<BTreeSet<_>>(),
        allow_destroy: safety.allow_destroy.iter().cloned().collect(),
        destroy: false,
    }
}

pub async fn init(ctx: &Context) -> anyhow::Result<u8> {
    let aws = ctx.aws().await?;
    let store = state::open(&ctx.global.state, Some(aws)).await?;
    let created = store.init().await.map_err(state_err)?;
    ctx.printer.info(&if created {
        format!("Created the state store {}.", store.location())
    } else {
        format!("The state store {} is ready.", store.location())
    });
    Ok(exit::OK)
}

pub async fn plan(ctx: &Context, args: PlanArgs) -> anyhow::Result<u8> {
    let mut infra = open(ctx).await?;
    let release = infra.manager.take();
    let lock = if args.lock {
        Some(
            Held::acquire(infra.store.clone(), &infra.key, "plan")
                .await
                .map_err(state_err)?,
        )
    } else {
        None
    };
    let result = async {
        let (snapshot, held, binary) = futures::join!(
            load_and_prefetch(&infra),
            async {
                match &lock {
                    Some(_) => None,
                    None => infra.store.current_lock(&infra.key).await.ok().flatten(),
                }
            },
            manager_binary(release)
        );
        let snapshot = snapshot?;
        infra.finish_stack(ctx, binary?)?;
        if let Some(held) = held.filter(|h| h.lease_expires_at > state::now_epoch()) {
            ctx.printer.warn(&format!(
                "the state is locked by {}: that {} is in progress, so this plan may show a half-done view; plan again when it finishes",
                held.describe(),
                held.operation
            ));
        }
        make_plan(
            &infra.stack,
            snapshot.as_ref(),
            &infra.provider,
            &options(&args.safety),
        )
        .await
        .map_err(plan_err)
    }
    .await;
    if let Some(lock) = lock {
        lock.release().await.map_err(state_err)?;
    }
    let plan = result?;
    let rendered = match args.format {
        PlanFormat::Text => render::text::render(&plan),
        PlanFormat::Markdown => render::markdown::render(&plan, args.log_url.as_deref()),
        PlanFormat::Json => render::json::render(&plan),
    };
    ctx.printer.out(&rendered);
    if let Some(path) = &args.out {
        let text = serde_json::to_string_pretty(&plan)?;
        std::fs::write(path, text)
            .with_context(|| format!("cannot write the plan to {}", path.display()))?;
        ctx.printer.info(&format!(
            "Saved the plan to {}; apply it with: devstack apply {}",
            path.display(),
            path.display()
        ));
    }
    Ok(if args.detailed_exitcode && plan.has_changes() {
        exit::CHANGES
    } else {
        exit::OK
    })
}

pub async fn apply(ctx: &Context, args: ApplyArgs) -> anyhow::Result<u8> {
    let mut infra = open(ctx).await?;
    let saved = match &args.plan_file {
        Some(path) => {
            let text =
                crate::bounded::read_text(path, "a saved plan", crate::bounded::MAX_PLAN_BYTES)
                    .map_err(|e| {
                        exit::hint(
                            format!("cannot read the plan file {}: {e}", path.display()),
                            "pass the file `devstack plan --out FILE` wrote",
                        )
                    })?;
            let plan: Plan = serde_json::from_str(&text).map_err(|e| {
                exit::hint(
                    format!("{} is not a devstack plan: {e}", path.display()),
                    "make one with `devstack plan --out FILE`",
                )
            })?;
            if plan.stack != infra.key.stack || plan.env != infra.key.env {
                return Err(exit::hint(
                    format!(
                        "{} is a plan for {}/{}, not {}",
                        path.display(),
                        plan.stack,
                        plan.env,
                        infra.key
                    ),
                    "pass the matching --env",
                ));
            }
            Some(plan)
        }
        None => None,
    };
    let lock = Held::acquire(infra.store.clone(), &infra.key, "apply")
        .await
        .map_err(state_err)?;
    let result = apply_locked(
        ctx,
        &mut infra,
        saved,
        options(&args.safety),
        args.auto_approve,
        args.concurrency,
    )
    .await;
    let released = lock.release().await;
    let code = result?;
    released.map_err(state_err)?;
    Ok(code)
}

pub async fn destroy(ctx: &Context, args: DestroyArgs) -> anyhow::Result<u8> {
    let mut infra = open(ctx).await?;
    let lock = Held::acquire(infra.store.clone(), &infra.key, "destroy")
        .await
        .map_err(state_err)?;
    let opts = PlanOptions {
        destroy: true,
        allow_destroy: args.allow_destroy.iter().cloned().collect(),
        ..Default::default()
    };
    let result = apply_locked(
        ctx,
        &mut infra,
        None,
        opts,
        args.auto_approve,
        args.concurrency,
    )
    .await;
    let released = lock.release().await;
    let code = result?;
    released.map_err(state_err)?;
    Ok(code)
}

/// Plans (or checks the saved plan), confirms, applies; the lock is held.
async fn apply_locked(
    ctx: &Context,
    infra: &mut Infra,
    saved: Option<Plan>,
    opts: PlanOptions,
    auto_approve: bool,
    concurrency: usize,
) -> anyhow::Result<u8> {
    let release = infra.manager.take();
    let (snapshot, binary) = if saved.is_some() {
        futures::join!(
            async { infra.store.load(&infra.key).await.map_err(state_err) },
            manager_binary(release)
        )
    } else {
        futures::join!(load_and_prefetch(infra), manager_binary(release))
    };
    let snapshot = snapshot?;
    infra.finish_stack(ctx, binary?)?;
    let infra = &*infra;
    let plan = match saved {
        Some(saved) => verified(infra, &saved, snapshot.as_ref(), &opts).await?,
        None => make_plan(&infra.stack, snapshot.as_ref(), &infra.provider, &opts)
            .await
            .map_err(plan_err)?,
    };
    ctx.printer.info(&render::text::render(&plan));
    let changes = plan.has_changes();
    if !changes && (plan.destroy || snapshot.is_none()) {
        return Ok(exit::OK);
    }
    if changes && !auto_approve {
        confirm(ctx, &plan)?;
    }
    // With no resource to change, the engine still records the stack
    // outputs if state lacks them: an apply killed after its last step but
    // before its outputs were written leaves every resource recorded and
    // the outputs missing, and only this brings them back.
    let mut snap = snapshot.unwrap_or_else(|| Snapshot::empty(&infra.key.stack, &infra.key.env));
    let mut journal = StoreJournal {
        store: infra.store.clone(),
        key: infra.key.clone(),
        writes: 0,
    };
    let reporter = StepReporter::new(ctx.printer.interactive());
    let report = run_apply(
        &plan,
        &mut snap,
        &infra.provider,
        &mut journal,
        &reporter,
        concurrency,
    )
    .await;
    if let Some(e) = report.journal_error {
        return Err(CodedError::new(exit::ERROR, e)
            .with_hint(
                "nothing is lost: the next plan finds what was created by its tags; re-run apply",
            )
            .into());
    }
    if let Some((address, op, error)) = report.failure {
        let skipped = report.skipped.len();
        return Err(CodedError::new(
            exit::ERROR,
            format!("{address}: {} failed: {error}", op.verb()),
        )
        .with_hint(format!(
            "{} step(s) done and recorded, {skipped} not started; fix the cause and run apply again",
            report.done.len()
        ))
        .into());
    }
    if !changes {
        if journal.writes > 0 {
            ctx.printer.info(&format!(
                "Recorded the stack outputs, which an interrupted apply had not; state serial {}.",
                snap.serial
            ));
        }
        return Ok(exit::OK);
    }
    ctx.printer.info(&format!(
        "Apply complete: {} step(s), state serial {}.",
        report.done.len(),
        snap.serial
    ));
    Ok(exit::OK)
}

/// A saved plan is never applied as read: it must be fresh (same state
/// lineage and serial), must not destroy or replace anything protected
/// without `--allow-destroy` given now, and must list exactly the actions
/// a plan computed now from the stack, state and live AWS decides. What is
/// applied is that fresh plan: nothing in the file (bodies, ids, addresses
/// in neither stack nor state) reaches AWS. See docs/state-and-locking.md.
async fn verified(
    infra: &Infra,
    saved: &Plan,
    snapshot: Option<&Snapshot>,
    opts: &PlanOptions,
) -> anyhow::Result<Plan> {
    saved.check_fresh(snapshot).map_err(plan_err)?;
    saved
        .check_protection(&infra.stack, snapshot, &opts.allow_destroy)
        .map_err(plan_err)?;
    let fresh = make_plan(&infra.stack, snapshot, &infra.provider, opts)
        .await
        .map_err(plan_err)?;
    saved.verify_against(&fresh).map_err(plan_err)?;
    Ok(fresh)
}

fn confirm(ctx: &Context, plan: &Plan) -> anyhow::Result<()> {
    if !ctx.printer.interactive() {
        return Err(exit::hint(
            "refusing to change infrastructure without confirmation (not a terminal)",
            "review the plan and pass --auto-approve",
        ));
    }
    let bad = render::destructive(plan);
    if !bad.is_empty() {
        ctx.printer.warn(&format!(
            "this destroys or replaces: {}",
            bad.iter()
                .map(|r| r.address.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    eprint!(
        "Apply these changes to {}/{}? Only 'yes' is accepted: ",
        plan.stack, plan.env
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != "yes" {
        return Err(CodedError::new(exit::ERROR, "apply cancelled; nothing was changed").into());
    }
    Ok(())
}

/// Stack outputs as recorded by the last apply (for dispatch and
/// `devstack output`): plain strings.
pub async fn stack_outputs(ctx: &Context) -> anyhow::Result<BTreeMap<String, String>> {
    let env = ctx.env()?;
    let aws = ctx.aws().await?;
    let store = state::open(&ctx.global.state, Some(aws)).await?;
    let key = StateKey {
        stack: env.name.clone(),
        env: env.env_name.clone(),
    };
    let snap = store.load(&key).await.map_err(state_err)?.ok_or_else(|| {
        exit::hint(
            format!("no state for {key} in {}", store.location()),
            "run `devstack apply` first",
        )
    })?;
    Ok(snap
        .outputs
        .into_iter()
        .map(|(k, v)| {
            let s = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (k, s)
        })
        .collect())
}

pub async fn output(ctx: &Context, args: OutputArgs) -> anyhow::Result<u8> {
    let outputs = stack_outputs(ctx).await?;
    match (&args.name, args.json) {
        (Some(name), json) => {
            let value = outputs.get(name).ok_or_else(|| {
                exit::hint(
                    format!("no output named '{name}'"),
                    format!(
                        "known outputs: {}",
                        outputs.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                )
            })?;
            ctx.printer.out(&if json {
                serde_json::to_string(value)?
            } else {
                value.clone()
            });
        }
        (None, true) => ctx.printer.out(&serde_json::to_string_pretty(&outputs)?),
        (None, false) => {
            let width = outputs.keys().map(|k| k.len()).max().unwrap_or(0);
            let text: String = outputs
                .iter()
                .map(|(k, v)| format!("{k:<width$} = {v}\n"))
                .collect();
            ctx.printer.out(&text);
        }
    }
    Ok(exit::OK)
}

/// `devstack import --from-terraform FILE`: records what Terraform built as
/// devstack state (see `crate::import`), once, into an empty state.
pub async fn import(ctx: &Context, args: ImportArgs) -> anyhow::Result<u8> {
    let path = &args.from_terraform;
    let text =
        crate::bounded::read_text(path, "a Terraform state", crate::bounded::MAX_TFSTATE_BYTES)
            .map_err(|e| {
                anyhow::anyhow!("cannot read the Terraform state {}: {e}", path.display())
            })?;
    let tf = terraform::parse(&text).map_err(|e| {
        exit::hint(
            format!("{}: {e}", path.display()),
            "pull the current state with `terraform state pull > terraform.tfstate`",
        )
    })?;
    let mut infra = open(ctx).await?;
    infra.ready(ctx).await?;
    let mapping = terraform::map(&tf, ctx.env()?);
    let lock = Held::acquire(infra.store.clone(), &infra.key, "import")
        .await
        .map_err(state_err)?;
    let result = import_locked(ctx, &infra, &mapping, path).await;
    let released = lock.release().await;
    let code = result?;
    released.map_err(state_err)?;
    Ok(code)
}

async fn import_locked(
    ctx: &Context,
    infra: &Infra,
    mapping: &terraform::Mapping,
    path: &std::path::Path,
) -> anyhow::Result<u8> {
    let current = infra.store.load(&infra.key).await.map_err(state_err)?;
    if let Some(snap) = current.as_ref().filter(|s| !s.resources.is_empty()) {
        return Err(exit::hint(
            format!(
                "state for {} already records {} resource(s); import only fills an empty state",
                infra.key,
                snap.resources.len()
            ),
            "import runs once, before devstack's first apply; `devstack plan` shows where this state stands",
        ));
    }
    let adoption = crate::import::adopt(&infra.stack, &infra.provider, &mapping.targets).await?;
    let report = &adoption.report;
    let p = &ctx.printer;

    for u in &mapping.unmapped {
        p.warn(&format!(
            "{} ({}): {}; devstack leaves it as it is",
            u.tf_address, u.id, u.reason
        ));
    }
    for (tf, into) in &mapping.folded {
        p.info(&format!("{tf} is part of {into} in devstack"));
    }
    for note in &mapping.notes {
        p.info(note);
    }
    for t in &report.not_managed {
        p.warn(&format!(
            "{} ({}, {}): this build of devstack does not manage {} yet; not imported",
            t.from.join(", "),
            t.id,
            t.address,
            t.address
        ));
    }
    for (name, e) in &report.data_errors {
        p.warn(&format!("reading {name} failed: {e}"));
    }
    let unverified: Vec<_> = report
        .missing
        .iter()
        .filter(|m| m.error.is_some())
        .collect();
    if let Some(first) = unverified.first() {
        for m in &unverified {
            p.warn(&format!(
                "{} ({}, {}): {}",
                m.address,
                m.from.join(", "),
                m.id,
                m.error.as_deref().unwrap_or_default()
            ));
        }
        return Err(exit::hint(
            format!(
                "could not verify {} resource(s), starting with {}; nothing was written",
                unverified.len(),
                first.address
            ),
            "fix the cause (credentials, permissions, region) and run the import again",
        ));
    }
    for m in &report.missing {
        p.warn(&format!(
            "{}: Terraform records {} ({}) but it does not exist; the next apply creates it",
            m.address,
            m.id,
            m.from.join(", ")
        ));
    }
    for a in &report.not_in_source {
        p.warn(&format!(
            "{a}: no counterpart in {}; the next apply creates it",
            path.display()
        ));
    }
    for r in &report.replacements {
        let live = r
            .live
            .as_ref()
            .map_or("(none)".to_string(), Value::to_string);
        let setting = crate::stack::ENV_SETTINGS
            .iter()
            .find(|(a, attr, _)| *a == r.address && *attr == r.attribute)
            .map(|(_, _, s)| *s);
        let file = match &ctx.global.env_file {
            Some(f) => f.display().to_string(),
            None => format!("stack/{}.toml", infra.key.env),
        };
        let fix = match setting {
            Some(s) => format!("set `{s} = {live}` in {file} so the stack matches what is live"),
            None => "change the stack to match what is live, or accept the replacement".to_string(),
        };
        p.warn(&format!(
            "{}: live {} is {live} but the stack says {}; it cannot change in place, so the next plan would REPLACE {}. To keep it, {fix}",
            r.address, r.attribute, r.desired, r.address
        ));
    }
    for i in &report.ignored {
        // User data is a whole script: say that it differs, not how.
        let values = match (&i.live, i.attribute.as_str()) {
            (_, "user_data") => String::new(),
            (Some(live), _) => format!(" ({live} live, {} in the stack)", i.desired),
            (None, _) => format!(" (none live, {} in the stack)", i.desired),
        };
        p.info(&format!(
            "{}: live {} differs from the stack's{values}; devstack never changes it by plan (`apply --replace {}` does, deliberately)",
            i.address, i.attribute, i.address
        ));
    }
    if adoption.resources.is_empty() {
        return Err(exit::hint(
            format!(
                "nothing in {} matches {}; nothing was written",
                path.display(),
                infra.key
            ),
            "check --env (or --env-file): names and CIDRs come from the environment",
        ));
    }

    let mut snap = current.unwrap_or_else(|| Snapshot::empty(&infra.key.stack, &infra.key.env));
    let expected = snap.serial;
    snap.resources = adoption.resources;
    snap.outputs = adoption.outputs;
    snap.serial += 1;
    snap.verify_integrity()
        .map_err(|e| anyhow::anyhow!("the imported state is inconsistent: {e}"))?;
    infra
        .store
        .save(&infra.key, &snap, expected)
        .await
        .map_err(state_err)?;

    let width = report
        .imported
        .iter()
        .map(|i| i.address.len())
        .max()
        .unwrap_or(0);
    let id_width = report
        .imported
        .iter()
        .map(|i| i.id.len())
        .max()
        .unwrap_or(0);
    let table: String = report
        .imported
        .iter()
        .map(|i| {
            format!(
                "{:<width$}  {:<id_width$}  <- {}\n",
                i.address,
                i.id,
                i.from.join(", ")
            )
        })
        .collect();
    p.out(&table);
    let next = if report.replacements.is_empty() {
        "Next: `devstack plan`; expect only tag changes (ManagedBy), never a create or replace of an imported resource.".to_string()
    } else {
        format!(
            "Next: settle the {} replacement warning(s) above, then `devstack plan`.",
            report.replacements.len()
        )
    };
    p.info(&format!(
        "Imported {} resource(s) into {} ({}, serial {}). {next}",
        report.imported.len(),
        infra.store.location(),
        infra.key,
        snap.serial
    ));
    Ok(exit::OK)
}

pub async fn state(ctx: &Context, cmd: StateCommand) -> anyhow::Result<u8> {
    let env = ctx.env()?;
    let aws = ctx.aws().await?;
    let store = state::open(&ctx.global.state, Some(aws)).await?;
    let key = StateKey {
        stack: env.name.clone(),
        env: env.env_name.clone(),
    };
    match cmd {
        StateCommand::List => {
            let snap = store.load(&key).await.map_err(state_err)?;
            let Some(snap) = snap else {
                ctx.printer.info(&format!("No state for {key} yet."));
                return Ok(exit::OK);
            };
            let width = snap.resources.keys().map(|k| k.len()).max().unwrap_or(0);
            let text: String = snap
                .resources
                .iter()
                .map(|(a, r)| format!("{a:<width$}  {:<28} {}\n", r.kind, r.id))
                .collect();
            ctx.printer.out(&text);
        }
        StateCommand::Show { address } => {
            let snap = store.load(&key).await.map_err(state_err)?;
            let r = snap
                .as_ref()
                .and_then(|s| s.resources.get(&address))
                .ok_or_else(|| {
                    exit::hint(
                        format!("'{address}' is not in state for {key}"),
                        "list what is with `devstack state list`",
                    )
                })?;
            let mut doc = serde_json::to_value(r)?;
            if let Some(o) = doc.as_object_mut() {
                o.insert("address".into(), address.clone().into());
            }
            ctx.printer.out(&serde_json::to_string_pretty(&doc)?);
        }
        StateCommand::Unlock { lock_id, force } => {
            if !force {
                let held = store.current_lock(&key).await.map_err(state_err)?;
                let what = held
                    .map(|h| h.describe())
                    .unwrap_or_else(|| "nobody".into());
                return Err(exit::hint(
                    format!("refusing to break the state lock without --force (held by {what})"),
                    "breaking a lock held by a live apply can corrupt state; pass --force if its holder is gone",
                ));
            }
            match store
                .unlock(&key, lock_id.as_deref())
                .await
                .map_err(state_err)?
            {
                Some(held) => ctx
                    .printer
                    .info(&format!("Broke the lock held by {}.", held.describe())),
                None => ctx.printer.info("The state was not locked."),
            }
        }
    }
    Ok(exit::OK)
}
