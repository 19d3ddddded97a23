//! The generic plan/apply engine. It knows nothing of AWS: a provider
//! implements [`provider::Kind`] per resource kind, the stack declares
//! resources with typed references ([`resource::Ref`]), and the engine
//! refreshes, diffs, plans and applies over the dependency graph.
//!
//! Shape borrowed from Pulumi's engine: the step is the unit of work, the
//! plan decides the steps, the executor runs independent steps in parallel
//! and dependent ones in order, and a step is done only once state has
//! recorded it. The engine emits events; it never draws.

pub mod apply;
pub mod diff;
pub mod graph;
pub mod plan;
pub mod provider;
pub mod render;
pub mod resource;
pub mod snapshot;
