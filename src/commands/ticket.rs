//! `devstack ticket`: validate tickets before any compute is spent, and
//! render the prompt a worker would give the agent.
//!
//! `validate` is a linter: silent when every file is valid, otherwise one
//! line per invalid file on stderr (`FILE: problem; problem`) and exit 1.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use time::macros::format_description;
use time::Date;

use super::Context;
use crate::cli::TicketCommand;
use crate::exit;
use crate::ticket::{self, RenderError, Ticket, TicketError};

pub async fn run(ctx: &Context, cmd: TicketCommand) -> anyhow::Result<u8> {
    match cmd {
        TicketCommand::Validate { files } => validate(ctx, &files),
        TicketCommand::Render {
            ticket,
            sow_path,
            today,
            out,
        } => {
            let settings = RenderSettings {
                today: parse_today(&today)?,
                github_org: ctx.env()?.github_org.clone(),
                ticket,
                sow_path,
                out,
            };
            render(&settings)
        }
    }
}

fn validate(ctx: &Context, files: &[PathBuf]) -> anyhow::Result<u8> {
    let mut invalid = 0usize;
    for file in files {
        if let Err(e) = load(file) {
            ctx.printer.info(&e.to_string());
            invalid += 1;
        }
    }
    Ok(if invalid == 0 { exit::OK } else { exit::ERROR })
}

/// Reads and validates one ticket file; a file that cannot be read is
/// reported in the same one-line form as an invalid one.
fn load(file: &Path) -> Result<Ticket, TicketError> {
    let name = file.display().to_string();
    match crate::bounded::read(file, "a ticket", crate::bounded::MAX_TICKET_BYTES, None) {
        Ok(bytes) => ticket::parse_bytes(&name, &bytes),
        Err(e) => Err(TicketError {
            file: name,
            problems: vec![ticket::Problem::Unreadable(e.to_string())],
        }),
    }
}

/// `ticket render`, resolved before any work starts.
struct RenderSettings {
    ticket: PathBuf,
    sow_path: String,
    today: Date,
    github_org: String,
    out: PathBuf,
}

fn render(settings: &RenderSettings) -> anyhow::Result<u8> {
    let parsed = load(&settings.ticket).map_err(|e| {
        exit::hint(
            e.to_string(),
            "fix the ticket; `devstack ticket validate FILE` checks it without rendering",
        )
    })?;
    let prompt = ticket::render_prompt(
        &parsed,
        &settings.sow_path,
        settings.today,
        &settings.github_org,
    )
    .map_err(|e| match e {
        RenderError::Path(e) => exit::hint(
            format!("--sow-path: {e}"),
            "pass the ticket's path inside the docs repository, e.g. `sows/<feature>.md`",
        ),
        other => other.into(),
    })?;
    std::fs::write(&settings.out, prompt)
        .with_context(|| format!("cannot write the prompt to {}", settings.out.display()))?;
    Ok(exit::OK)
}

/// `--today` must be a real date written `YYYY-MM-DD`.
fn parse_today(today: &str) -> anyhow::Result<Date> {
    let format = format_description!("[year]-[month]-[day]");
    Date::parse(today, &format)
        .ok()
        // `[year]` also takes a sign or a fifth digit; YYYY-MM-DD is 10 bytes.
        .filter(|_| today.len() == 10)
        .ok_or_else(|| {
            exit::hint(
                format!("--today {today:?} is not a date written YYYY-MM-DD"),
                "pass the UTC date the run starts, e.g. --today 2026-03-07",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn today_must_be_a_real_iso_date() {
        assert_eq!(parse_today("2026-03-07").unwrap().to_string(), "2026-03-07");
        for bad in [
            "2026-3-7",
            "2026-02-30",
            "07/03/2026",
            "",
            "+2026-03-07",
            "2026-03-07x",
            "12026-03-07",
        ] {
            assert!(parse_today(bad).is_err(), "{bad}");
        }
    }
}
