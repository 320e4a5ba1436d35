//! Small HTTP servers that answer as a Confluent Schema Registry does for the one request the
//! probe makes (`GET /schemas/types`), or refuse, or are something else. No real registry runs
//! on the test machines (it needs a JVM and Kafka).

use super::http::{self, Requests, answer};

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

/// A server on loopback; returns its URL and the requests it received.
pub async fn serve(behaviour: Behaviour) -> (String, Requests) {
    let (port, requests) = http::serve(move |request| {
        // "user:secret", base64; header names are case-insensitive.
        let authorized = request
            .lines()
            .any(|l| l.eq_ignore_ascii_case("authorization: basic dXNlcjpzZWNyZXQ="));
        match behaviour {
            Behaviour::Registry
                if authorized && request.starts_with("GET /schemas/types HTTP/1.1\r\n") =>
            {
                Some(answer(
                    "200 OK",
                    "application/vnd.schemaregistry.v1+json",
                    r#"["JSON","PROTOBUF","AVRO"]"#,
                ))
            }
            Behaviour::Registry | Behaviour::Refuses => Some(answer(
                "401 Unauthorized",
                "application/json",
                r#"{"error_code":401,"message":"Unauthorized"}"#,
            )),
            Behaviour::WebPage => Some(answer(
                "200 OK",
                "text/html",
                "<html><body>It works!</body></html>",
            )),
            Behaviour::Silent => None,
        }
    })
    .await;
    (format!("http://127.0.0.1:{port}"), requests)
}
