//! `devstack worker`.

use super::Context;
use crate::cli::WorkerCommand;

pub async fn run(_ctx: &Context, _args: WorkerCommand) -> anyhow::Result<u8> {
    super::not_yet("worker")
}
