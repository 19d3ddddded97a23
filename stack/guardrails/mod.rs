//! Guardrails: checks on the planned stack, run before every plan. Each
//! violation is one line naming the resource, the rule and what to do. A
//! stack that breaks one never reaches AWS.
//!
//! One file per family: `network.rs` (ingress, SSH), `compute.rs` (IMDSv2,
//! user data size), `iam.rs` (wildcards), `secrets.rs` (no secret values).

use crate::engine::resource::Stack;

pub mod compute;
pub mod iam;
pub mod network;
pub mod secrets;

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Short rule name, e.g. `no-ssh`.
    pub rule: &'static str,
    pub address: String,
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "guardrail {}: {}: {}",
            self.rule, self.address, self.message
        )
    }
}

/// Every violation in the stack (empty when it is safe to plan).
pub fn check(stack: &Stack) -> Vec<Violation> {
    let mut out = Vec::new();
    network::check(stack, &mut out);
    compute::check(stack, &mut out);
    iam::check(stack, &mut out);
    secrets::check(stack, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::env::{Env, ENVIRONMENTS};

    #[test]
    fn the_platform_stack_passes_every_guardrail() {
        for (name, _) in ENVIRONMENTS {
            let stack = crate::stack::stack(&Env::load(name).unwrap());
            assert_eq!(check(&stack), vec![], "{name}");
        }
    }
}
