//! The AWS provider: one file per resource kind.
pub mod clients;
