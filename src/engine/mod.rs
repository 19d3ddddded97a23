//! Generic plan/apply engine: knows nothing of AWS.
