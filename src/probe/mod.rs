//! The probes: each owns its schedule and records into the shared instruments.

pub mod broker;
pub mod heartbeat;
pub mod metadata;
pub mod topic;
