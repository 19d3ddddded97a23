//! Drawing apply progress. On a terminal, one spinner per resource in
//! flight (indicatif); elsewhere (CI logs), one plain line per step event.
//! The engine only emits events; this is the only place that draws them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::engine::apply::{Event, Reporter};

pub struct StepReporter {
    bars: Option<(MultiProgress, Mutex<HashMap<String, ProgressBar>>)>,
}

impl StepReporter {
    pub fn new(interactive: bool) -> StepReporter {
        StepReporter {
            bars: interactive.then(|| (MultiProgress::new(), Mutex::new(HashMap::new()))),
        }
    }

    fn line(&self, text: String) {
        match &self.bars {
            Some((multi, _)) => {
                let _ = multi.println(text);
            }
            None => eprintln!("{text}"),
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

impl Reporter for StepReporter {
    fn event(&self, event: Event) {
        match event {
            Event::Started { address, op } => match &self.bars {
                Some((multi, bars)) => {
                    let bar = multi.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template("  {spinner} {msg} [{elapsed}]")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar.set_message(format!("{address}: {}…", op.verb()));
                    bar.enable_steady_tick(Duration::from_millis(120));
                    if let Ok(mut b) = bars.lock() {
                        b.insert(format!("{address}/{op:?}"), bar);
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
                self.finish_bar(&address, op);
                let id = id.filter(|_| op != crate::engine::apply::Op::Delete);
                let id = id.map(|i| format!(" [{i}]")).unwrap_or_default();
                self.line(format!(
                    "{address}: {}{id} after {}",
                    op.done(),
                    secs(elapsed)
                ));
            }
            Event::Failed { address, op, error } => {
                self.finish_bar(&address, op);
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

impl StepReporter {
    fn finish_bar(&self, address: &str, op: crate::engine::apply::Op) {
        if let Some((_, bars)) = &self.bars {
            if let Some(bar) = bars
                .lock()
                .ok()
                .and_then(|mut b| b.remove(&format!("{address}/{op:?}")))
            {
                bar.finish_and_clear();
            }
        }
    }
}
