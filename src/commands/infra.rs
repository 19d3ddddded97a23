//! `devstack init|plan|apply|destroy|output|import|state`.

use super::Context;
use crate::cli::{ApplyArgs, DestroyArgs, ImportArgs, OutputArgs, PlanArgs, StateCommand};

pub async fn init(_ctx: &Context) -> anyhow::Result<u8> {
    super::not_yet("init")
}
pub async fn plan(_ctx: &Context, _args: PlanArgs) -> anyhow::Result<u8> {
    super::not_yet("plan")
}
pub async fn apply(_ctx: &Context, _args: ApplyArgs) -> anyhow::Result<u8> {
    super::not_yet("apply")
}
pub async fn destroy(_ctx: &Context, _args: DestroyArgs) -> anyhow::Result<u8> {
    super::not_yet("destroy")
}
pub async fn output(_ctx: &Context, _args: OutputArgs) -> anyhow::Result<u8> {
    super::not_yet("output")
}
pub async fn import(_ctx: &Context, _args: ImportArgs) -> anyhow::Result<u8> {
    super::not_yet("import")
}
pub async fn state(_ctx: &Context, _cmd: StateCommand) -> anyhow::Result<u8> {
    super::not_yet("state")
}
