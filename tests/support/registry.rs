//! Small HTTP servers that answer as a Confluent Schema Registry does for the one request the
//! probe makes (`GET /schemas/types`), or refuse, or are something else. No real registry runs
//! on the test machines (it needs a JVM and Kafka).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// How a test server answers.
#[derive(Clone, Copy)]
pub enum Behaviour {
    /// A registry: 200 with the schema formats when the credentials match, else 401.
    Registry,
    /// Always 401.
    Refuses,
    /// A web page, whatever is asked.
    WebPage,
    /// Reads the request and never answers.
    Silent,
}

/// A server on loopback; returns its URL and the request heads it received.
pub async fn serve(behaviour: Behaviour) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
                    if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                log.lock().unwrap().push(head.clone());
                // "user:secret", base64.
                let authorized = head.contains("\r\nAuthorization: Basic dXNlcjpzZWNyZXQ=\r\n");
                let answer = match behaviour {
                    Behaviour::Registry
                        if authorized && head.starts_with("GET /schemas/types HTTP/1.1\r\n") =>
                    {
                        let body = r#"["JSON","PROTOBUF","AVRO"]"#;
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        )
                    }
                    Behaviour::Registry | Behaviour::Refuses => {
                        let body = r#"{"error_code":401,"message":"Unauthorized"}"#;
                        format!(
                            "HTTP/1.1 401 Unauthorized\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        )
                    }
                    Behaviour::WebPage => {
                        let body = "<html><body>It works!</body></html>";
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        )
                    }
                    Behaviour::Silent => {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        return;
                    }
                };
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    (url, seen)
}
