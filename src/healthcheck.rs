//! `cc-heartbeat healthcheck`: asks a running agent's `/healthz`, for a container's
//! HEALTHCHECK (the distroless image has no curl). Exit 0 when it answers 200 within the
//! timeout; 1 otherwise, saying why.

use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;

/// Why the agent is not healthy, as far as the check can tell.
#[derive(Debug, Error)]
pub enum Unhealthy {
    #[error("nothing answers at {addr}: {source}")]
    Unreachable {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("no answer from {addr} within {}", humantime::format_duration(*.timeout))]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("{addr} did not answer HTTP: {source}")]
    NotHttp {
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[error("/healthz at {addr} answered {status}")]
    Status {
        addr: SocketAddr,
        status: hyper::StatusCode,
    },
    #[error("cannot start the check: {0}")]
    Runtime(std::io::Error),
}

/// The address to ask for `listen` (`http.listen`): the unspecified address is asked on
/// loopback.
pub fn target(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// GET /healthz at `addr`, all of it within `timeout`.
pub fn check(addr: SocketAddr, timeout: Duration) -> Result<(), Unhealthy> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Unhealthy::Runtime)?;
    runtime.block_on(async {
        tokio::time::timeout(timeout, ask(addr))
            .await
            .unwrap_or(Err(Unhealthy::Timeout { addr, timeout }))
    })
}

async fn ask(addr: SocketAddr) -> Result<(), Unhealthy> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| Unhealthy::Unreachable { addr, source })?;
    let not_http = |source| Unhealthy::NotHttp { addr, source };
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(not_http)?;
    tokio::spawn(connection);
    let request = hyper::Request::get("/healthz")
        .header(hyper::header::HOST, addr.to_string())
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .map_err(|e| Unhealthy::Runtime(std::io::Error::other(e)))?;
    let answer = sender.send_request(request).await.map_err(not_http)?;
    match answer.status() {
        hyper::StatusCode::OK => Ok(()),
        status => Err(Unhealthy::Status { addr, status }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_listen_address_is_asked_on_loopback() {
        assert_eq!(
            target("0.0.0.0:8080".parse().unwrap()),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            target("[::]:9".parse().unwrap()),
            "[::1]:9".parse().unwrap()
        );
        assert_eq!(
            target("10.1.2.3:8080".parse().unwrap()),
            "10.1.2.3:8080".parse().unwrap()
        );
    }
}
