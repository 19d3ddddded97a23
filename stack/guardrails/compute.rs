//! Guardrails: compute.

use super::Violation;
use crate::engine::resource::Stack;

pub fn check(_stack: &Stack, _out: &mut Vec<Violation>) {}
