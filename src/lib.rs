//! cc-heartbeat: a Kafka heartbeat agent, native to OpenTelemetry.
//!
//! It tells teams running Kafka clients whether their cluster is reachable and working end to
//! end from where their clients run: it sends a heartbeat through every partition of a
//! heartbeat topic and reads it back (ack and end-to-end latency; lost, duplicated and
//! out-of-order heartbeats), watches cluster metadata, and pushes it all over OTLP.

pub mod app;
pub mod check;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod error;
pub mod events;
pub mod health;
pub mod healthcheck;
pub mod heap;
pub mod kafka;
pub mod output;
pub mod probe;
pub mod signal;
pub mod telemetry;
pub mod tracker;
