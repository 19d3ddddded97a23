//! THE platform stack.
pub mod env;
