//! The shutdown trigger: SIGINT or SIGTERM, whichever comes first.

use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

/// Completes when SIGINT or SIGTERM arrives, and logs which.
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
}
