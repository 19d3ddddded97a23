//! One `AWS-RunShellScript` command on one instance, and the wait for its
//! end: polling GetCommandInvocation until the invocation reaches a final
//! status or a bounded timeout passes.
//!
//! Right after SendCommand, AWS may answer GetCommandInvocation with
//! `InvocationDoesNotExist` for a moment: that reads as "not yet".

use std::time::{Duration, Instant};

use anyhow::anyhow;
use async_trait::async_trait;
use aws_sdk_ssm::types::CommandInvocationStatus;
use aws_smithy_types::error::display::DisplayErrorContext;

/// The SSM document every command uses.
pub const DOCUMENT: &str = "AWS-RunShellScript";

/// Where an invocation stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// SSM's status word (`Pending`, `InProgress`, `Success`, `Failed`, …).
    pub status: String,
    pub response_code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Invocation {
    pub fn is_final(&self) -> bool {
        !matches!(
            self.status.as_str(),
            "Pending" | "InProgress" | "Delayed" | "Cancelling"
        )
    }

    pub fn succeeded(&self) -> bool {
        self.status == "Success"
    }
}

/// How a wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waited {
    Done(Invocation),
    /// The timeout passed; the last state seen, if any.
    TimedOut(Option<Invocation>),
}

/// Reads one command's invocation (the seam the poller is tested through).
#[async_trait]
pub trait Invocations: Send + Sync {
    /// `None` while SSM does not know the invocation yet.
    async fn get(&self) -> anyhow::Result<Option<Invocation>>;
}

/// Polls `src` every `every` until the invocation is final or `timeout`
/// has passed since the call.
pub async fn wait(
    src: &dyn Invocations,
    timeout: Duration,
    every: Duration,
) -> anyhow::Result<Waited> {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        if let Some(inv) = src.get().await? {
            if inv.is_final() {
                return Ok(Waited::Done(inv));
            }
            last = Some(inv);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(Waited::TimedOut(last));
        }
        tokio::time::sleep(every.min(deadline - now)).await;
    }
}

/// One command sent to one instance.
pub struct Command {
    client: aws_sdk_ssm::Client,
    pub command_id: String,
    pub instance_id: String,
}

impl Command {
    /// Sends `script` to `instance_id`; SSM stops it after
    /// `execution_timeout` seconds on the instance.
    pub async fn send(
        client: aws_sdk_ssm::Client,
        instance_id: &str,
        script: &str,
        comment: &str,
        execution_timeout: u64,
    ) -> anyhow::Result<Command> {
        let out = client
            .send_command()
            .document_name(DOCUMENT)
            .instance_ids(instance_id)
            .comment(comment.chars().take(100).collect::<String>())
            .parameters("commands", vec![script.to_string()])
            .parameters(
                "executionTimeout",
                vec![execution_timeout.max(1).to_string()],
            )
            .send()
            .await
            .map_err(|e| anyhow!("SendCommand to {instance_id}: {}", DisplayErrorContext(&e)))?;
        let command_id = out
            .command
            .and_then(|c| c.command_id)
            .ok_or_else(|| anyhow!("SendCommand to {instance_id} returned no command id"))?;
        Ok(Command {
            client,
            command_id,
            instance_id: instance_id.to_string(),
        })
    }
}

#[async_trait]
impl Invocations for Command {
    async fn get(&self) -> anyhow::Result<Option<Invocation>> {
        match self
            .client
            .get_command_invocation()
            .command_id(&self.command_id)
            .instance_id(&self.instance_id)
            .send()
            .await
        {
            Ok(out) => Ok(Some(Invocation {
                status: out
                    .status
                    .as_ref()
                    .map_or("Pending", CommandInvocationStatus::as_str)
                    .to_string(),
                response_code: out.response_code,
                stdout: out.standard_output_content.unwrap_or_default(),
                stderr: out.standard_error_content.unwrap_or_default(),
            })),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_invocation_does_not_exist()) =>
            {
                Ok(None)
            }
            Err(e) => Err(anyhow!(
                "GetCommandInvocation {} on {}: {}",
                self.command_id,
                self.instance_id,
                DisplayErrorContext(&e)
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Invocation states in order; the last one repeats.
    struct Script(Mutex<Vec<Option<Invocation>>>);

    #[async_trait]
    impl Invocations for Script {
        async fn get(&self) -> anyhow::Result<Option<Invocation>> {
            let mut states = self.0.lock().unwrap();
            Ok(if states.len() > 1 {
                states.remove(0)
            } else {
                states[0].clone()
            })
        }
    }

    fn inv(status: &str, code: i32, stdout: &str) -> Option<Invocation> {
        Some(Invocation {
            status: status.into(),
            response_code: code,
            stdout: stdout.into(),
            stderr: String::new(),
        })
    }

    #[tokio::test]
    async fn waits_through_unknown_and_in_progress_to_the_final_state() {
        let src = Script(Mutex::new(vec![
            None,
            inv("Pending", -1, ""),
            inv("InProgress", -1, "step 1"),
            inv("Failed", 3, "step 1\nstep 2"),
        ]));
        let got = wait(&src, Duration::from_secs(10), Duration::from_millis(1))
            .await
            .unwrap();
        assert_eq!(
            got,
            Waited::Done(inv("Failed", 3, "step 1\nstep 2").unwrap())
        );
    }

    #[tokio::test]
    async fn gives_up_at_the_timeout_with_the_last_state_seen() {
        let src = Script(Mutex::new(vec![inv("InProgress", -1, "step 1")]));
        let started = Instant::now();
        let got = wait(&src, Duration::from_millis(300), Duration::from_millis(50))
            .await
            .unwrap();
        assert_eq!(got, Waited::TimedOut(inv("InProgress", -1, "step 1")));
        assert!(started.elapsed() >= Duration::from_millis(300));
        let never = Script(Mutex::new(vec![None]));
        let got = wait(
            &never,
            Duration::from_millis(100),
            Duration::from_millis(20),
        )
        .await
        .unwrap();
        assert_eq!(got, Waited::TimedOut(None));
    }
}
