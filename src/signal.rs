//! The shutdown trigger: SIGINT or SIGTERM, whichever comes first. A second one ends the
//! process at once.

use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

/// Exit status after a second signal: 128 + the signal's number, as a shell reports a process
/// a signal ended.
const EXIT_SIGINT: i32 = 128 + 2;
const EXIT_SIGTERM: i32 = 128 + 15;

/// Completes when SIGINT or SIGTERM arrives, and logs which. From then on, a second SIGINT or
/// SIGTERM ends the process at once, without waiting for the probes to stop or the final
/// export (an operator pressing Ctrl-C again while a collector that does not answer holds
/// the exit).
pub async fn shutdown() {
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        _ => {
            warn!(name: "agent.no_sigterm", "Cannot listen for SIGTERM/SIGINT; falling back to Ctrl-C only.");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => info!(name: "agent.signal", "SIGTERM received."),
        _ = int.recv() => info!(name: "agent.signal", "SIGINT received."),
    }
    tokio::spawn(async move {
        let (name, status) = tokio::select! {
            _ = term.recv() => ("SIGTERM", EXIT_SIGTERM),
            _ = int.recv() => ("SIGINT", EXIT_SIGINT),
        };
        warn!(
            name: "agent.signal_again",
            signal = name,
            "Second signal: exiting now, without waiting for the probes or the final export."
        );
        exit_now(status);
    });
}

/// Ends the process without running exit handlers: `exit` would run OpenSSL's clean-up while
/// librdkafka's threads may still be in a TLS call, and a forced exit must not crash.
#[allow(unsafe_code)]
fn exit_now(status: i32) -> ! {
    // SAFETY: _exit takes an integer and never returns; it is async-signal-safe and touches no
    // memory of the process.
    unsafe { libc::_exit(status) }
}
