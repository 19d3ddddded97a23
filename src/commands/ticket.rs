//! `devstack ticket`.

use super::Context;
use crate::cli::TicketCommand;

pub async fn run(_ctx: &Context, _args: TicketCommand) -> anyhow::Result<u8> {
    super::not_yet("ticket")
}
