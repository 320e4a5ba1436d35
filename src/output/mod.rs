//! The only place that writes to stdout or stderr directly (logs go through `tracing`).
//!
//! Reports are rendered to strings elsewhere, where they are tested; this module only
//! writes them, so a closed pipe never panics the agent.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write as _;

/// Writes a report to stdout.
pub fn report(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    if !text.ends_with('\n') {
        let _ = out.write_all(b"\n");
    }
    let _ = out.flush();
}

/// Writes an error message to stderr.
pub fn error(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{text}");
}

pub mod table;
