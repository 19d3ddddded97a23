//! Exit codes are a contract with scripts and CI: they never change meaning.

/// Success; for `plan --detailed-exitcode`, "no changes".
pub const OK: u8 = 0;
/// Any error.
pub const ERROR: u8 = 1;
/// `plan --detailed-exitcode`: the plan has changes.
pub const CHANGES: u8 = 2;
/// Acquire or dispatch refused: the ticket is already in progress.
pub const IN_PROGRESS: u8 = 3;
/// Acquire or dispatch refused: the fleet is at its cap.
pub const AT_CAP: u8 = 4;

/// An error that carries its own exit code and, optionally, a hint that
/// tells the user what to do. Commands return it (inside `anyhow::Error`)
/// when the code is part of the contract; `main` finds it by downcasting.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CodedError {
    pub code: u8,
    pub message: String,
    pub hint: Option<String>,
}

impl CodedError {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        CodedError {
            code,
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// An error with a hint but the generic exit code.
pub fn hint(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    CodedError::new(ERROR, message).with_hint(hint).into()
}
