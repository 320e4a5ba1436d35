//! The one Kafka request the broker probe sends itself: ApiVersions, which every broker
//! answers before authentication.
//!
//! Version 3 is tried first. A broker that does not support it answers in the version 0
//! format with error 35 and the versions it does support; the probe retries with the
//! highest of those on the same connection. Frames are size-checked, so a peer that is not
//! Kafka (an HTTP server, a TLS front end spoken to in plaintext) is a protocol error, not a
//! huge allocation.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const API_VERSIONS: i16 = 18;
const UNSUPPORTED_VERSION: i16 = 35;
/// Largest response accepted: an ApiVersions answer is a few hundred bytes.
const MAX_RESPONSE: usize = 1 << 20;
const CLIENT_ID: &str = "cc-heartbeat-probe";

/// What a broker said about its APIs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiVersions {
    /// The request version the broker answered.
    pub version: i16,
    /// (api key, min version, max version) for every API the broker supports.
    pub apis: Vec<(i16, i16, i16)>,
    pub throttle: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the peer closed the connection without a Kafka answer")]
    Closed,
    #[error("not a Kafka answer: {0}")]
    Protocol(String),
    #[error("the broker answered ApiVersions with error code {0}")]
    Broker(i16),
}

/// The version tried first when nothing is known about the broker.
pub const LATEST: i16 = 3;

/// Sends ApiVersions (version `first`, at most [`LATEST`]) on `stream` and reads the answer,
/// falling back once to the highest version the broker says it supports.
pub async fn api_versions<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    first: i16,
) -> Result<ApiVersions, WireError> {
    match exchange(stream, first.clamp(0, LATEST), 1).await? {
        Answer::Versions(v) => Ok(v),
        Answer::Unsupported { max } => match exchange(stream, max.clamp(0, 2), 2).await? {
            Answer::Versions(v) => Ok(v),
            Answer::Unsupported { .. } => Err(WireError::Broker(UNSUPPORTED_VERSION)),
        },
    }
}

enum Answer {
    Versions(ApiVersions),
    /// The broker does not speak the version asked; `max` is its highest ApiVersions version.
    Unsupported {
        max: i16,
    },
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    version: i16,
    correlation: i32,
) -> Result<Answer, WireError> {
    stream
        .write_all(&encode_request(version, correlation))
        .await?;
    stream.flush().await?;
    let mut size = [0u8; 4];
    read_exact(stream, &mut size).await?;
    let size = i32::from_be_bytes(size);
    let size = usize::try_from(size)
        .ok()
        .filter(|s| (4..=MAX_RESPONSE).contains(s))
        .ok_or_else(|| {
            WireError::Protocol(format!(
                "frame size {size} (first bytes {:?})",
                printable(&size.to_be_bytes())
            ))
        })?;
    let mut body = vec![0u8; size];
    read_exact(stream, &mut body).await?;
    decode_response(&body, version, correlation)
}

async fn read_exact<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut [u8]) -> Result<(), WireError> {
    match stream.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(WireError::Closed),
        Err(e) => Err(WireError::Io(e)),
    }
}

fn printable(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| {
            if b.is_ascii_graphic() {
                *b as char
            } else {
                '.'
            }
        })
        .collect()
}

/// A size-prefixed ApiVersions request.
pub fn encode_request(version: i16, correlation: i32) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    b.extend_from_slice(&[0; 4]); // size, filled in below
    b.extend_from_slice(&API_VERSIONS.to_be_bytes());
    b.extend_from_slice(&version.to_be_bytes());
    b.extend_from_slice(&correlation.to_be_bytes());
    // Request header: client id as a nullable string (i16 length) in every version.
    b.extend_from_slice(&(CLIENT_ID.len() as i16).to_be_bytes());
    b.extend_from_slice(CLIENT_ID.as_bytes());
    if version >= 3 {
        b.push(0); // header tagged fields
        for s in ["cc-heartbeat", env!("CARGO_PKG_VERSION")] {
            b.push(s.len() as u8 + 1); // compact string length (uvarint, short strings)
            b.extend_from_slice(s.as_bytes());
        }
        b.push(0); // body tagged fields
    }
    let size = (b.len() - 4) as i32;
    b[..4].copy_from_slice(&size.to_be_bytes());
    b
}

/// A cursor that turns running out of bytes into a protocol error.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError::Protocol("response ended early".into()));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn i16(&mut self) -> Result<i16, WireError> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32, WireError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn uvarint(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for shift in (0..35).step_by(7) {
            let byte = self.take(1)?[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(WireError::Protocol("varint too long".into()))
    }

    fn skip_tagged_fields(&mut self) -> Result<(), WireError> {
        for _ in 0..self.uvarint()? {
            self.uvarint()?; // tag
            let size = usize::try_from(self.uvarint()?)
                .map_err(|_| WireError::Protocol("tagged field size".into()))?;
            self.take(size)?;
        }
        Ok(())
    }
}

fn decode_response(body: &[u8], version: i16, correlation: i32) -> Result<Answer, WireError> {
    let mut r = Reader { buf: body };
    // ApiVersions responses always use header version 0: just the correlation id.
    let got = r.i32()?;
    if got != correlation {
        return Err(WireError::Protocol(format!(
            "correlation id {got}, expected {correlation}"
        )));
    }
    let error = r.i16()?;
    if error == UNSUPPORTED_VERSION {
        return Ok(Answer::Unsupported {
            max: supported_max(r.buf),
        });
    }
    if error != 0 {
        return Err(WireError::Broker(error));
    }
    let apis = if version >= 3 {
        let n = r
            .uvarint()?
            .checked_sub(1)
            .ok_or_else(|| WireError::Protocol("null api list".into()))?;
        let mut apis = Vec::new();
        for _ in 0..n {
            apis.push((r.i16()?, r.i16()?, r.i16()?));
            r.skip_tagged_fields()?;
        }
        apis
    } else {
        read_array_v0(&mut r)?
    };
    let throttle_ms = if version >= 1 { r.i32()? } else { 0 };
    if version >= 3 {
        r.skip_tagged_fields()?;
    }
    if apis.is_empty() || !apis.iter().any(|(k, _, _)| *k == API_VERSIONS) {
        return Err(WireError::Protocol(
            "the API list does not include ApiVersions".into(),
        ));
    }
    Ok(Answer::Versions(ApiVersions {
        version,
        apis,
        throttle: Duration::from_millis(u64::try_from(throttle_ms).unwrap_or(0)),
    }))
}

/// The highest ApiVersions version an UNSUPPORTED_VERSION answer lists. Kafka uses the
/// version 0 layout (i32 count); librdkafka's mock a one-byte count. Anything else: 0,
/// which every broker supports.
fn supported_max(body: &[u8]) -> i16 {
    let v0 = read_array_v0(&mut Reader { buf: body }).ok();
    let one_byte_count = || {
        let (&count, rest) = body.split_first()?;
        let mut r = Reader { buf: rest };
        (0..count)
            .map(|_| Ok((r.i16()?, r.i16()?, r.i16()?)))
            .collect::<Result<Vec<_>, WireError>>()
            .ok()
    };
    v0.or_else(one_byte_count)
        .and_then(|apis| {
            apis.iter()
                .find(|(k, _, _)| *k == API_VERSIONS)
                .map(|(_, _, max)| *max)
        })
        .unwrap_or(0)
}

fn read_array_v0(r: &mut Reader<'_>) -> Result<Vec<(i16, i16, i16)>, WireError> {
    let n = r.i32()?;
    if !(0..=1000).contains(&n) {
        return Err(WireError::Protocol(format!("api list length {n}")));
    }
    (0..n).map(|_| Ok((r.i16()?, r.i16()?, r.i16()?))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v3_response(correlation: i32, apis: &[(i16, i16, i16)]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&correlation.to_be_bytes());
        b.extend_from_slice(&0i16.to_be_bytes());
        b.push(apis.len() as u8 + 1);
        for (k, min, max) in apis {
            for v in [k, min, max] {
                b.extend_from_slice(&v.to_be_bytes());
            }
            b.push(0);
        }
        b.extend_from_slice(&7i32.to_be_bytes());
        b.push(0);
        b
    }

    fn v0_body(correlation: i32, error: i16, apis: &[(i16, i16, i16)]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&correlation.to_be_bytes());
        b.extend_from_slice(&error.to_be_bytes());
        b.extend_from_slice(&(apis.len() as i32).to_be_bytes());
        for (k, min, max) in apis {
            for v in [k, min, max] {
                b.extend_from_slice(&v.to_be_bytes());
            }
        }
        b
    }

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut f = (body.len() as i32).to_be_bytes().to_vec();
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn v3_request_has_the_flexible_layout() {
        let req = encode_request(3, 9);
        let size = i32::from_be_bytes([req[0], req[1], req[2], req[3]]) as usize;
        assert_eq!(size, req.len() - 4);
        assert_eq!(&req[4..8], &[0, 18, 0, 3]);
        assert_eq!(&req[8..12], &9i32.to_be_bytes());
        assert_eq!(req.last(), Some(&0), "body tagged fields");
        let v0 = encode_request(0, 1);
        assert_eq!(v0.len(), 4 + 2 + 2 + 4 + 2 + CLIENT_ID.len());
    }

    #[tokio::test]
    async fn a_modern_broker_answers_v3() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let mut req = vec![0u8; encode_request(3, 1).len()];
            server.read_exact(&mut req).await.unwrap();
            server
                .write_all(&framed(&v3_response(1, &[(0, 0, 11), (18, 0, 4)])))
                .await
                .unwrap();
        });
        let v = api_versions(&mut client, LATEST).await.unwrap();
        assert_eq!(v.version, 3);
        assert_eq!(v.apis, [(0, 0, 11), (18, 0, 4)]);
        assert_eq!(v.throttle, Duration::from_millis(7));
    }

    #[tokio::test]
    async fn an_old_broker_gets_a_retry_in_its_own_version() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let mut req = vec![0u8; encode_request(3, 1).len()];
            server.read_exact(&mut req).await.unwrap();
            server
                .write_all(&framed(&v0_body(1, 35, &[(18, 0, 2)])))
                .await
                .unwrap();
            let mut retry = vec![0u8; encode_request(2, 2).len()];
            server.read_exact(&mut retry).await.unwrap();
            assert_eq!(&retry[4..8], &[0, 18, 0, 2], "retried with version 2");
            let mut body = v0_body(2, 0, &[(0, 0, 7), (18, 0, 2)]);
            body.extend_from_slice(&0i32.to_be_bytes()); // throttle (v1+)
            server.write_all(&framed(&body)).await.unwrap();
        });
        let v = api_versions(&mut client, LATEST).await.unwrap();
        assert_eq!((v.version, v.apis.len()), (2, 2));
    }

    #[test]
    fn unsupported_version_answers_name_the_supported_maximum() {
        // Kafka: version 0 layout.
        let kafka = v0_body(1, 35, &[(18, 0, 2)]);
        assert!(matches!(
            decode_response(&kafka, 3, 1),
            Ok(Answer::Unsupported { max: 2 })
        ));
        // librdkafka's mock: one-byte count, then the entries and a throttle time.
        let mock = [0, 0, 0, 1, 0, 0x23, 1, 0, 0x12, 0, 0, 0, 2, 0, 0, 0, 0];
        assert!(matches!(
            decode_response(&mock, 3, 1),
            Ok(Answer::Unsupported { max: 2 })
        ));
        // Unreadable: fall back to version 0.
        assert!(matches!(
            decode_response(&[0, 0, 0, 1, 0, 0x23, 9], 3, 1),
            Ok(Answer::Unsupported { max: 0 })
        ));
    }

    #[tokio::test]
    async fn an_http_server_is_a_protocol_error() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let mut req = [0u8; 16];
            let _ = server.read(&mut req).await;
            let _ = server
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
        });
        let err = api_versions(&mut client, LATEST).await.unwrap_err();
        assert!(matches!(err, WireError::Protocol(_)), "{err}");
        assert!(err.to_string().contains("HTTP"), "{err}");
    }

    #[tokio::test]
    async fn a_peer_that_hangs_up_is_reported_as_closed() {
        let (mut client, server) = tokio::io::duplex(4096);
        drop(server);
        assert!(matches!(
            api_versions(&mut client, LATEST).await,
            Err(WireError::Closed | WireError::Io(_))
        ));
    }

    #[test]
    fn truncated_and_mismatched_answers_are_protocol_errors() {
        let full = v3_response(1, &[(18, 0, 3)]);
        for cut in 0..full.len() {
            assert!(decode_response(&full[..cut], 3, 1).is_err(), "cut at {cut}");
        }
        assert!(matches!(
            decode_response(&full, 3, 2),
            Err(WireError::Protocol(_))
        ));
        assert!(matches!(
            decode_response(&v0_body(1, 58, &[]), 0, 1),
            Err(WireError::Broker(58))
        ));
    }
}
