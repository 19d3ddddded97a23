//! Drawing apply progress. On a terminal, each step in flight is a tracing
//! span that tracing-indicatif draws as a spinner; elsewhere (CI logs), one
//! plain line per step event. The engine only emits events; this is the
//! only place that draws them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tracing_indicatif::span_ext::IndicatifSpanExt;

use super::STEP_TARGET;
use crate::engine::apply::{Event, Op, Reporter};

pub struct StepReporter {
    /// Spans of steps in flight (terminal only).
    spans: Option<Mutex<HashMap<String, tracing::Span>>>,
}

impl StepReporter {
    pub fn new(interactive: bool) -> StepReporter {
        StepReporter {
            spans: interactive.then(|| Mutex::new(HashMap::new())),
        }
    }

    fn line(&self, text: String) {
        if self.spans.is_some() {
            tracing_indicatif::indicatif_eprintln!("{text}");
        } else {
            eprintln!("{text}");
        }
    }

    fn finish(&self, address: &str, op: Op) {
        if let Some(spans) = &self.spans {
            if let Ok(mut s) = spans.lock() {
                s.remove(&format!("{address}/{op:?}"));
            }
        }
    }
}

/// What a step in flight looks like on a terminal: a spinner, the human
/// message (`vpc: creating…`) and the time so far.
pub const SPINNER_TEMPLATE: &str = "{spinner} {msg} {elapsed}";

fn spinner_style() -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(SPINNER_TEMPLATE)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner())
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

impl Reporter for StepReporter {
    fn event(&self, event: Event) {
        match event {
            Event::Started { address, op } => match &self.spans {
                Some(spans) => {
                    let span = tracing::info_span!(target: STEP_TARGET, "step", address = %address);
                    // The spinner shows the message, never the span's name
                    // and fields (`step{address=…}`).
                    span.pb_set_style(&spinner_style());
                    span.pb_set_message(&format!("{address}: {}…", op.verb()));
                    span.pb_start();
                    if let Ok(mut s) = spans.lock() {
                        s.insert(format!("{address}/{op:?}"), span);
                    }
                }
                None => eprintln!("{address}: {}…", op.verb()),
            },
            Event::Finished {
                address,
                op,
                id,
                elapsed,
            } => {
                self.finish(&address, op);
                let id = id
                    .filter(|_| op != Op::Delete)
                    .map(|i| format!(" [{i}]"))
                    .unwrap_or_default();
                self.line(format!(
                    "{address}: {}{id} after {}",
                    op.done(),
                    secs(elapsed)
                ));
            }
            Event::Failed { address, op, error } => {
                self.finish(&address, op);
                self.line(format!("{address}: {} FAILED: {error}", op.verb()));
            }
            Event::Skipped { address, op } => {
                self.line(format!(
                    "{address}: not {} (an earlier step failed)",
                    op.done()
                ));
            }
        }
    }
}
