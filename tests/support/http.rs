//! A small HTTP/1.1 server on loopback for tests that stand in for HTTP services (a Schema
//! Registry, an OIDC token endpoint): it records every request (head and body) and answers
//! what the test's function says, or nothing at all.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// Every request received so far, as text.
pub type Requests = Arc<Mutex<Vec<String>>>;

/// A full HTTP answer with `status` (e.g. `200 OK`), `content_type` and `body`.
pub fn answer(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Serves on a free port until the test ends: `respond` gets each request and gives the
/// answer to write, or `None` to keep the connection open and say nothing.
pub async fn serve(
    respond: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
) -> (u16, Requests) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Requests::default();
    let log = Arc::clone(&seen);
    let respond = Arc::new(respond);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let (log, respond) = (Arc::clone(&log), Arc::clone(&respond));
            tokio::spawn(async move {
                let Some(request) = read_request(&mut socket).await else {
                    return;
                };
                log.lock().unwrap().push(request.clone());
                match respond(&request) {
                    Some(answer) => {
                        let _ = socket.write_all(answer.as_bytes()).await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(60)).await,
                }
            });
        }
    });
    (port, seen)
}

/// The request head, then as much body as its Content-Length says.
async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<String> {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = socket.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            return None;
        }
        request.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&request).into_owned();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length = text[..head_end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if request.len() >= head_end + 4 + length {
                return Some(text);
            }
        }
        if request.len() > 64 * 1024 {
            return None;
        }
    }
}
