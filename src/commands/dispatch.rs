//! `devstack dispatch`.

use super::Context;
use crate::cli::DispatchArgs;

pub async fn run(_ctx: &Context, _args: DispatchArgs) -> anyhow::Result<u8> {
    super::not_yet("dispatch")
}
