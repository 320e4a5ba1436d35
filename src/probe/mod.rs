//! The probes: each owns its schedule and records into the shared instruments.

pub mod heartbeat;
pub mod metadata;
