//! A Kafka-protocol proxy in front of the brokers of a cluster, one listener per broker, that
//! can hide partitions of one topic from Metadata answers until the test reveals them: what
//! a client sees when partitions are added to a topic (neither tansu nor librdkafka's mock
//! can add partitions). Everything else passes through untouched; Metadata answers point
//! the clients at the proxy's listeners.
//!
//! It can also put SASL (PLAIN, or OAUTHBEARER with one valid token) in front of brokers that
//! have none (librdkafka's mock has no SASL, and tansu's needs PostgreSQL storage, which its
//! prebuilt binary lacks): it answers SaslHandshake and SaslAuthenticate itself as a broker
//! does, and relays the connection once the client has authenticated.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const METADATA: i16 = 3;
const FIND_COORDINATOR: i16 = 10;
const SASL_HANDSHAKE: i16 = 17;
const API_VERSIONS: i16 = 18;
const SASL_AUTHENTICATE: i16 = 36;

/// The one SASL mechanism and account the proxy accepts.
#[derive(Clone, Debug)]
pub enum SaslAccount {
    Plain {
        username: String,
        password: String,
    },
    /// A bearer token, and the SASL extensions (RFC 7628) of every authentication, in order.
    OAuthBearer {
        token: String,
        extensions: Arc<Mutex<Vec<String>>>,
    },
}

impl SaslAccount {
    fn mechanism(&self) -> &'static str {
        match self {
            Self::Plain { .. } => "PLAIN",
            Self::OAuthBearer { .. } => "OAUTHBEARER",
        }
    }

    /// Whether the client's first (and only) SASL message proves this account.
    fn accepts(&self, message: &[u8]) -> bool {
        match self {
            Self::Plain { username, password } => {
                // Authorization id, user name, password, separated by NUL.
                let parts: Vec<&[u8]> = message.split(|b| *b == 0).collect();
                parts.len() == 3
                    && parts[1] == username.as_bytes()
                    && parts[2] == password.as_bytes()
            }
            Self::OAuthBearer { token, extensions } => {
                // `n,,\x01auth=Bearer <token>\x01key=value\x01…\x01`
                let text = String::from_utf8_lossy(message);
                let mut fields = text.split('\x01').skip(1).filter(|f| !f.is_empty());
                let bearer = fields.next().and_then(|f| f.strip_prefix("auth=Bearer "));
                extensions
                    .lock()
                    .unwrap()
                    .push(fields.collect::<Vec<_>>().join(","));
                bearer == Some(token.as_str())
            }
        }
    }
}

pub struct KafkaProxy {
    /// Upstream port → proxy port.
    ports: Arc<HashMap<u16, u16>>,
    /// Partitions of the topic with an index below this are shown.
    visible: Arc<AtomicI32>,
    sasl: Option<Arc<Mutex<SaslAccount>>>,
    /// Bumped to drop every connection.
    disconnect: tokio::sync::watch::Sender<u64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl KafkaProxy {
    /// Listens in front of every broker of `bootstrap` (`host:port,...`), showing only the
    /// first `visible` partitions of `topic`.
    pub async fn start(bootstrap: &str, topic: &str, visible: i32) -> Self {
        Self::start_with(bootstrap, topic, visible, None).await
    }

    /// Listens in front of every broker of `bootstrap`, letting in only clients that
    /// authenticate as `account`.
    pub async fn with_sasl(bootstrap: &str, account: SaslAccount) -> Self {
        Self::start_with(bootstrap, "", i32::MAX, Some(account)).await
    }

    async fn start_with(
        bootstrap: &str,
        topic: &str,
        visible: i32,
        sasl: Option<SaslAccount>,
    ) -> Self {
        let mut listeners = Vec::new();
        let mut ports = HashMap::new();
        for address in bootstrap.split(',') {
            let upstream: u16 = address.rsplit_once(':').unwrap().1.parse().unwrap();
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            ports.insert(upstream, listener.local_addr().unwrap().port());
            listeners.push((listener, upstream));
        }
        let ports = Arc::new(ports);
        let visible = Arc::new(AtomicI32::new(visible));
        let topic = Arc::new(topic.to_owned());
        let sasl = sasl.map(|account| Arc::new(Mutex::new(account)));
        let (disconnect, disconnected) = tokio::sync::watch::channel(0u64);
        let tasks = listeners
            .into_iter()
            .map(|(listener, upstream)| {
                let (ports, visible, topic) = (ports.clone(), visible.clone(), topic.clone());
                let (sasl, disconnected) = (sasl.clone(), disconnected.clone());
                tokio::spawn(async move {
                    while let Ok((client, _)) = listener.accept().await {
                        let rewrite = Rewrite {
                            ports: ports.clone(),
                            visible: visible.clone(),
                            topic: topic.clone(),
                            sasl: sasl.clone(),
                            disconnected: disconnected.clone(),
                        };
                        tokio::spawn(relay(client, upstream, rewrite));
                    }
                })
            })
            .collect();
        Self {
            ports,
            visible,
            sasl,
            disconnect,
            tasks,
        }
    }

    /// The proxy's addresses, as bootstrap servers.
    pub fn bootstrap(&self) -> String {
        let mut ports: Vec<u16> = self.ports.values().copied().collect();
        ports.sort_unstable();
        ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Shows the first `visible` partitions from now on.
    pub fn reveal(&self, visible: i32) {
        self.visible.store(visible, Ordering::SeqCst);
    }

    /// Accepts only `account` from now on, and drops every connection, as a cluster does when
    /// an API key is deleted: clients must authenticate again.
    pub fn revoke(&self, account: SaslAccount) {
        if let Some(sasl) = &self.sasl {
            *sasl.lock().unwrap() = account;
        }
        self.disconnect.send_modify(|n| *n += 1);
    }
}

impl Drop for KafkaProxy {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[derive(Clone)]
struct Rewrite {
    ports: Arc<HashMap<u16, u16>>,
    visible: Arc<AtomicI32>,
    topic: Arc<String>,
    sasl: Option<Arc<Mutex<SaslAccount>>>,
    disconnected: tokio::sync::watch::Receiver<u64>,
}

/// Relays one client connection to `upstream`, rewriting Metadata answers.
async fn relay(client: TcpStream, upstream: u16, rewrite: Rewrite) {
    let mut disconnected = rewrite.disconnected.clone();
    disconnected.mark_unchanged();
    tokio::select! {
        () = serve(client, upstream, rewrite) => {}
        _ = disconnected.changed() => {}
    }
}

async fn serve(mut client: TcpStream, upstream: u16, rewrite: Rewrite) {
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    if let Some(account) = &rewrite.sasl {
        let account = account.lock().unwrap().clone();
        if !authenticate(&mut client, &mut server, &account).await {
            return;
        }
    }
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // Correlation id → (api key, api version) of requests in flight.
    let pending: Arc<Mutex<HashMap<i32, (i16, i16)>>> = Arc::default();
    let requests = {
        let pending = pending.clone();
        async move {
            while let Some(frame) = read_frame(&mut client_read).await {
                if frame.len() >= 8 {
                    let key = i16::from_be_bytes([frame[0], frame[1]]);
                    let version = i16::from_be_bytes([frame[2], frame[3]]);
                    let correlation = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
                    pending.lock().unwrap().insert(correlation, (key, version));
                }
                if write_frame(&mut server_write, &frame).await.is_err() {
                    break;
                }
            }
        }
    };
    let responses = async move {
        while let Some(mut frame) = read_frame(&mut server_read).await {
            if frame.len() >= 4 {
                let correlation = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
                let api = pending.lock().unwrap().remove(&correlation);
                match api {
                    Some((METADATA, version)) => frame = rewrite.metadata(&frame, version),
                    Some((FIND_COORDINATOR, version)) => {
                        frame = rewrite.find_coordinator(&frame, version);
                    }
                    _ => {}
                }
            }
            if write_frame(&mut client_write, &frame).await.is_err() {
                break;
            }
        }
    };
    tokio::join!(requests, responses);
}

/// The SASL exchange a broker with a SASL_PLAINTEXT listener runs before anything else:
/// ApiVersions (relayed, with the SASL requests added to the answer), SaslHandshake and
/// SaslAuthenticate (answered here, versions 0 and 1). Whether the client got in; a client
/// that did not is answered with the broker's error and then disconnected, as a broker does.
async fn authenticate(
    client: &mut TcpStream,
    server: &mut TcpStream,
    account: &SaslAccount,
) -> bool {
    loop {
        let Some(request) = read_frame(client).await else {
            return false;
        };
        if request.len() < 10 {
            return false;
        }
        let key = i16::from_be_bytes([request[0], request[1]]);
        let version = i16::from_be_bytes([request[2], request[3]]);
        let correlation = &request[4..8];
        // Request header v1: then the client id (a nullable string).
        let client_id = i16::from_be_bytes([request[8], request[9]]);
        let mut body = Reader {
            buf: &request,
            at: 10 + usize::try_from(client_id.max(0)).unwrap(),
        };
        let mut answer = correlation.to_vec();
        match key {
            API_VERSIONS => {
                if write_frame(server, &request).await.is_err() {
                    return false;
                }
                let Some(response) = read_frame(server).await else {
                    return false;
                };
                if write_frame(client, &with_sasl_versions(&response, version))
                    .await
                    .is_err()
                {
                    return false;
                }
                continue;
            }
            SASL_HANDSHAKE => {
                let length = i16::from_be_bytes(body.take(2).try_into().unwrap());
                let mechanism = body.take(usize::try_from(length).unwrap());
                let ours = account.mechanism().as_bytes();
                let offered = mechanism == ours;
                // Error 33 is UNSUPPORTED_SASL_MECHANISM; the answer lists what is offered.
                answer.extend_from_slice(&(if offered { 0i16 } else { 33 }).to_be_bytes());
                answer.extend_from_slice(&1i32.to_be_bytes());
                answer.extend_from_slice(&i16::try_from(ours.len()).unwrap().to_be_bytes());
                answer.extend_from_slice(ours);
                if write_frame(client, &answer).await.is_err() || !offered {
                    return false;
                }
            }
            SASL_AUTHENTICATE => {
                let length = i32::from_be_bytes(body.take(4).try_into().unwrap());
                let token = body.take(usize::try_from(length).unwrap());
                let accepted = account.accepts(token);
                // Error 58 is SASL_AUTHENTICATION_FAILED, with the broker's message.
                let message: &[u8] = match account {
                    SaslAccount::Plain { .. } => {
                        b"Authentication failed: Invalid username or password"
                    }
                    SaslAccount::OAuthBearer { .. } => b"Authentication failed: invalid token",
                };
                if accepted {
                    answer.extend_from_slice(&0i16.to_be_bytes());
                    answer.extend_from_slice(&(-1i16).to_be_bytes());
                } else {
                    answer.extend_from_slice(&58i16.to_be_bytes());
                    answer.extend_from_slice(&i16::try_from(message.len()).unwrap().to_be_bytes());
                    answer.extend_from_slice(message);
                }
                answer.extend_from_slice(&0i32.to_be_bytes()); // no auth bytes back
                if version >= 1 {
                    answer.extend_from_slice(&0i64.to_be_bytes()); // no session lifetime
                }
                if write_frame(client, &answer).await.is_err() || !accepted {
                    return false;
                }
                return true;
            }
            // Anything else before authenticating is a client that does not speak SASL.
            _ => return false,
        }
    }
}

/// An ApiVersions answer with SaslHandshake and SaslAuthenticate offered at versions 0 to 1
/// (the broker behind the proxy may list them with other versions, or not at all).
fn with_sasl_versions(response: &[u8], version: i16) -> Vec<u8> {
    let flexible = version >= 3;
    let mut r = Reader {
        buf: response,
        at: 0,
    };
    let mut w = r.take(6).to_vec(); // correlation id (header v0 always), error code
    let count = if flexible {
        r.uvarint().saturating_sub(1)
    } else {
        u64::try_from(i32::from_be_bytes(r.take(4).try_into().unwrap())).unwrap()
    };
    let mut entries = Vec::new();
    let mut kept = 0u64;
    for _ in 0..count {
        let start = r.at;
        let key = i16::from_be_bytes(r.take(2).try_into().unwrap());
        r.take(4);
        if flexible {
            r.skip_tags();
        }
        if key != SASL_HANDSHAKE && key != SASL_AUTHENTICATE {
            entries.extend_from_slice(&response[start..r.at]);
            kept += 1;
        }
    }
    for key in [SASL_HANDSHAKE, SASL_AUTHENTICATE] {
        entries.extend_from_slice(&key.to_be_bytes());
        entries.extend_from_slice(&0i16.to_be_bytes());
        entries.extend_from_slice(&1i16.to_be_bytes());
        if flexible {
            entries.push(0); // no tags
        }
        kept += 1;
    }
    if flexible {
        put_uvarint(&mut w, kept + 1);
    } else {
        w.extend_from_slice(&i32::try_from(kept).unwrap().to_be_bytes());
    }
    w.extend_from_slice(&entries);
    w.extend_from_slice(&response[r.at..]); // throttle time, tags
    w
}

async fn read_frame(stream: &mut (impl AsyncReadExt + Unpin)) -> Option<Vec<u8>> {
    let size = stream.read_i32().await.ok()?;
    let mut frame = vec![0; usize::try_from(size).ok()?];
    stream.read_exact(&mut frame).await.ok()?;
    Some(frame)
}

async fn write_frame(
    stream: &mut (impl AsyncWriteExt + Unpin),
    frame: &[u8],
) -> std::io::Result<()> {
    let size = i32::try_from(frame.len()).unwrap();
    stream.write_all(&size.to_be_bytes()).await?;
    stream.write_all(frame).await
}

impl Rewrite {
    /// A FindCoordinator answer (versions 0 to 2, which librdkafka speaks) pointing at the
    /// proxy: a client learning a broker's real address would go round the proxy.
    fn find_coordinator(&self, frame: &[u8], version: i16) -> Vec<u8> {
        assert!(
            (0..=2).contains(&version),
            "the proxy rewrites FindCoordinator v0 to v2, not v{version}"
        );
        let mut r = Reader { buf: frame, at: 4 };
        if version >= 1 {
            r.take(4); // throttle time
        }
        r.take(2); // error code
        if version >= 1 {
            let message = i16::from_be_bytes(r.take(2).try_into().unwrap());
            r.take(usize::try_from(message.max(0)).unwrap());
        }
        r.take(4); // node id
        let host = i16::from_be_bytes(r.take(2).try_into().unwrap());
        r.take(usize::try_from(host.max(0)).unwrap());
        let at = r.at;
        let port = i32::from_be_bytes(r.take(4).try_into().unwrap());
        let mut out = frame.to_vec();
        if let Some(proxied) = u16::try_from(port).ok().and_then(|p| self.ports.get(&p)) {
            out[at..at + 4].copy_from_slice(&i32::from(*proxied).to_be_bytes());
        }
        out
    }

    /// A Metadata answer (versions 9 to 12, the flexible ones librdkafka and its mock speak):
    /// brokers point at the proxy, and the topic shows only its visible partitions.
    fn metadata(&self, frame: &[u8], version: i16) -> Vec<u8> {
        assert!(
            (9..=12).contains(&version),
            "the proxy rewrites Metadata v9 to v12, not v{version}"
        );
        let mut r = Reader { buf: frame, at: 0 };
        let mut w = Vec::with_capacity(frame.len());
        w.extend_from_slice(r.take(4)); // correlation id
        r.tags(&mut w); // response header tags
        w.extend_from_slice(r.take(4)); // throttle time
        let brokers = r.uvarint();
        put_uvarint(&mut w, brokers);
        for _ in 0..brokers.saturating_sub(1) {
            w.extend_from_slice(r.take(4)); // node id
            let host = r.compact_bytes();
            put_compact_bytes(&mut w, host);
            let port = i32::from_be_bytes(r.take(4).try_into().unwrap());
            let proxied = u16::try_from(port)
                .ok()
                .and_then(|p| self.ports.get(&p).copied())
                .map_or(port, i32::from);
            w.extend_from_slice(&proxied.to_be_bytes());
            let rack = r.compact_bytes();
            put_compact_bytes(&mut w, rack);
            r.tags(&mut w);
        }
        let cluster_id = r.compact_bytes();
        put_compact_bytes(&mut w, cluster_id);
        w.extend_from_slice(r.take(4)); // controller id
        let topics = r.uvarint();
        put_uvarint(&mut w, topics);
        let visible = self.visible.load(Ordering::SeqCst);
        for _ in 0..topics.saturating_sub(1) {
            w.extend_from_slice(r.take(2)); // error code
            let name = r.compact_bytes();
            put_compact_bytes(&mut w, name);
            let ours = name == Some(self.topic.as_bytes());
            if version >= 10 {
                w.extend_from_slice(r.take(16)); // topic id
            }
            w.extend_from_slice(r.take(1)); // is internal
            let partitions = r.uvarint();
            let mut kept = Vec::new();
            let mut count = 0u64;
            for _ in 0..partitions.saturating_sub(1) {
                let start = r.at;
                let index = {
                    let p = r.take(6);
                    i32::from_be_bytes(p[2..6].try_into().unwrap())
                };
                r.take(8); // leader id, leader epoch
                for _ in 0..3 {
                    let n = r.uvarint(); // replicas, isr, offline replicas
                    r.take(4 * n.saturating_sub(1) as usize);
                }
                r.skip_tags();
                if !ours || index < visible {
                    kept.extend_from_slice(&frame[start..r.at]);
                    count += 1;
                }
            }
            put_uvarint(&mut w, count + 1);
            w.extend_from_slice(&kept);
            w.extend_from_slice(r.take(4)); // topic authorized operations
            r.tags(&mut w);
        }
        // The rest (cluster authorized operations up to v10, tags) passes through.
        w.extend_from_slice(&frame[r.at..]);
        w
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let out = &self.buf[self.at..self.at + n];
        self.at += n;
        out
    }

    fn uvarint(&mut self) -> u64 {
        let mut value = 0u64;
        let mut shift = 0;
        loop {
            let b = self.take(1)[0];
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return value;
            }
            shift += 7;
        }
    }

    /// A compact (nullable) string or bytes; `None` for null.
    fn compact_bytes(&mut self) -> Option<&'a [u8]> {
        match self.uvarint() {
            0 => None,
            n => Some(self.take(n as usize - 1)),
        }
    }

    fn skip_tags(&mut self) {
        for _ in 0..self.uvarint() {
            self.uvarint();
            let size = self.uvarint();
            self.take(size as usize);
        }
    }

    /// Copies a tagged-field section to `w`.
    fn tags(&mut self, w: &mut Vec<u8>) {
        let start = self.at;
        self.skip_tags();
        w.extend_from_slice(&self.buf[start..self.at]);
    }
}

fn put_uvarint(w: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        w.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    w.push(v as u8);
}

fn put_compact_bytes(w: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_uvarint(w, 0),
        Some(b) => {
            put_uvarint(w, b.len() as u64 + 1);
            w.extend_from_slice(b);
        }
    }
}
