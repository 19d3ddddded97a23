//! `devstack fleet`.

use super::Context;
use crate::cli::FleetArgs;

pub async fn run(_ctx: &Context, _args: FleetArgs) -> anyhow::Result<u8> {
    super::not_yet("fleet")
}
