//! `devstack exporter`: the run-history exporter the manager runs (see
//! [`crate::exporter`]).

use std::net::SocketAddr;
use std::time::Duration;

use super::Context;
use crate::cli::ExporterArgs;
use crate::exit;

pub async fn run(ctx: &Context, args: ExporterArgs) -> anyhow::Result<u8> {
    let listen: SocketAddr = args.listen.parse().map_err(|_| {
        exit::hint(
            format!("--listen {} is not an address", args.listen),
            "pass HOST:PORT, e.g. 0.0.0.0:9102",
        )
    })?;
    if args.scan_interval == 0 {
        return Err(exit::hint(
            "--scan-interval must be at least 1 second",
            "pass a number of seconds, e.g. 60",
        ));
    }
    let registry = super::fleet::open_registry(ctx, args.table.as_deref()).await?;
    let settings = crate::exporter::Settings {
        listen,
        interval: Duration::from_secs(args.scan_interval),
        cap: ctx.env()?.fleet_cap,
    };
    crate::exporter::run(registry, settings, |table, bound| {
        ctx.printer.info(&format!(
            "Serving the run history of {table} on http://{bound}/metrics (scanned every {}s).",
            args.scan_interval
        ));
    })
    .await?;
    Ok(exit::OK)
}
