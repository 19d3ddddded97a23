//! The `devstack` binary: parse arguments, run one command, map the result
//! to an exit code. Everything else lives in the library.

use clap::Parser;
use devstack::{cli::Cli, commands, exit, printer::Printer};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let printer = Printer::detect();
    devstack::commands::init_tracing(&cli, &printer);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            printer.error(&anyhow::Error::new(e).context("cannot start the async runtime"));
            return std::process::ExitCode::from(exit::ERROR);
        }
    };
    let code = match runtime.block_on(commands::run(cli, printer)) {
        Ok(code) => code,
        Err(err) => {
            printer.error(&err);
            err.downcast_ref::<exit::CodedError>()
                .map(|e| e.code)
                .unwrap_or(exit::ERROR)
        }
    };
    std::process::ExitCode::from(code)
}
