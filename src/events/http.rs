//! Events of the HTTP listener: listening, a failed accept, connections over the cap.

use tracing::{debug, info, warn};

/// The listener is up.
pub struct HttpListening<'a> {
    pub listen: std::net::SocketAddr,
    pub routes: &'a str,
}

impl HttpListening<'_> {
    pub fn emit(self) {
        info!(name: "http.http_listening", listen = %self.listen, "HTTP endpoints listening: {}.", self.routes);
    }
}

/// Accepting a connection failed (out of file descriptors, most likely); retried shortly.
pub struct HttpAcceptFailed<'a> {
    pub error: &'a std::io::Error,
}

impl HttpAcceptFailed<'_> {
    pub fn emit(self) {
        debug!(name: "http.http_accept_failed", error = %self.error, "HTTP accept failed.");
    }
}

/// Every connection is answering a request: a newcomer is closed at once; said at the 1st,
/// 2nd, 4th, 8th… of them.
pub struct HttpOverLimit {
    /// Connections refused so far.
    pub refused: u64,
    pub limit: usize,
}

impl HttpOverLimit {
    pub fn emit(self) {
        if self.refused.is_power_of_two() {
            warn!(
                name: "http.http_over_limit",
                refused = self.refused,
                limit = self.limit,
                "HTTP connections over the limit while every one is answering a request: closed at once."
            );
        }
    }
}

/// At the cap, the connection idle the longest was closed to make room for a newcomer; said at
/// the 1st, 2nd, 4th, 8th… of them.
pub struct HttpIdleShed {
    /// Connections closed so far.
    pub shed: u64,
    pub limit: usize,
}

impl HttpIdleShed {
    pub fn emit(self) {
        if self.shed.is_power_of_two() {
            warn!(
                name: "http.http_idle_shed",
                shed = self.shed,
                limit = self.limit,
                "HTTP connections at the limit: the one idle the longest is closed to make room for a new one."
            );
        }
    }
}
