//! Where state lives.
