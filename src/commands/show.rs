//! `devstack show PLANFILE --format text|markdown|json`: renders a plan
//! saved by `devstack plan --out`, without AWS, state or credentials. CI
//! plans ONCE and renders the log, the PR comment and any JSON from that
//! one file, so the comment can never differ from what was planned (and
//! from what `devstack apply PLANFILE` would do).

use std::path::Path;

use anyhow::Context as _;

use super::Context;
use crate::cli::{PlanFormat, ShowArgs};
use crate::engine::plan::Plan;
use crate::engine::render;
use crate::exit;

pub async fn run(ctx: &Context, args: ShowArgs) -> anyhow::Result<u8> {
    let plan = read_plan(&args.plan_file)?;
    let rendered = match args.format {
        PlanFormat::Text => render::text::render(&plan),
        PlanFormat::Markdown => render::markdown::render(&plan, args.log_url.as_deref()),
        PlanFormat::Json => render::json::render(&plan),
    };
    ctx.printer.out(&rendered);
    Ok(exit::OK)
}

/// A plan file as `devstack plan --out` writes it.
pub fn read_plan(path: &Path) -> anyhow::Result<Plan> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the plan file {}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| {
        exit::hint(
            format!("{} is not a devstack plan: {e}", path.display()),
            "make one with `devstack plan --out FILE`",
        )
    })
}
