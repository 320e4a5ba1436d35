//! A Kafka-protocol proxy in front of the brokers of a cluster, one listener per broker, that
//! can hide partitions of one topic from Metadata answers until the test reveals them: the
//! clients learn of partitions only through the metadata they are shown (librdkafka's mock
//! cannot add partitions; Apache Kafka's CreatePartitions is tested without a proxy).
//! Everything else passes through untouched; Metadata answers point the clients at the
//! proxy's listeners. It can also hold each new connection for a while before connecting it
//! upstream, as a remote cluster's TLS and SASL handshakes would.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const METADATA: i16 = 3;
const FIND_COORDINATOR: i16 = 10;

pub struct KafkaProxy {
    /// Upstream port → proxy port.
    ports: Arc<HashMap<u16, u16>>,
    /// Partitions of the topic with an index below this are shown.
    visible: Arc<AtomicI32>,
    /// Milliseconds each new connection waits before it is connected upstream.
    connect_delay: Arc<AtomicU64>,
    /// Milliseconds each answer of a broker (by upstream port) is held, on every connection.
    answer_delays: Arc<HashMap<u16, AtomicU64>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl KafkaProxy {
    /// Listens in front of every broker of `bootstrap` (`host:port,...`), showing only the
    /// first `visible` partitions of `topic`.
    pub async fn start(bootstrap: &str, topic: &str, visible: i32) -> Self {
        let mut listeners = Vec::new();
        let mut ports = HashMap::new();
        for address in bootstrap.split(',') {
            let upstream: u16 = address.rsplit_once(':').unwrap().1.parse().unwrap();
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            ports.insert(upstream, listener.local_addr().unwrap().port());
            listeners.push((listener, upstream));
        }
        let answer_delays: Arc<HashMap<u16, AtomicU64>> = Arc::new(
            ports
                .keys()
                .map(|upstream| (*upstream, AtomicU64::new(0)))
                .collect(),
        );
        let ports = Arc::new(ports);
        let visible = Arc::new(AtomicI32::new(visible));
        let connect_delay = Arc::new(AtomicU64::new(0));
        let topic = Arc::new(topic.to_owned());
        let tasks = listeners
            .into_iter()
            .map(|(listener, upstream)| {
                let (ports, visible, topic) = (ports.clone(), visible.clone(), topic.clone());
                let connect_delay = connect_delay.clone();
                let answer_delays = answer_delays.clone();
                tokio::spawn(async move {
                    while let Ok((client, _)) = listener.accept().await {
                        let rewrite = Rewrite {
                            ports: ports.clone(),
                            visible: visible.clone(),
                            topic: topic.clone(),
                            answer_delays: answer_delays.clone(),
                        };
                        let delay = Duration::from_millis(connect_delay.load(Ordering::SeqCst));
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            serve(client, upstream, rewrite).await;
                        });
                    }
                })
            })
            .collect();
        Self {
            ports,
            visible,
            connect_delay,
            answer_delays,
            tasks,
        }
    }

    /// Holds every answer of the broker listening on `upstream` for `delay` from the moment it
    /// arrives (in order, on every connection to it): a slow path to that broker alone.
    pub fn delay_answers(&self, upstream: u16, delay: Duration) {
        let millis = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.answer_delays
            .get(&upstream)
            .expect("a broker behind the proxy")
            .store(millis, Ordering::SeqCst);
    }

    /// Holds every connection made from now on for `delay` before relaying it.
    pub fn delay_new_connections(&self, delay: Duration) {
        let millis = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.connect_delay.store(millis, Ordering::SeqCst);
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
    answer_delays: Arc<HashMap<u16, AtomicU64>>,
}

/// Relays one client connection to `upstream`, rewriting Metadata answers.
async fn serve(client: TcpStream, upstream: u16, rewrite: Rewrite) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
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
    // Answers are read as they come and written once their delay (if any) has passed since
    // they arrived, so a delay adds to each answer and does not pile up behind the one before.
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel();
    let answer_delays = rewrite.answer_delays.clone();
    let read_answers = async move {
        while let Some(frame) = read_frame(&mut server_read).await {
            let delay = answer_delays
                .get(&upstream)
                .map_or(0, |d| d.load(Ordering::SeqCst));
            let due = tokio::time::Instant::now() + Duration::from_millis(delay);
            if arrived_tx.send((due, frame)).is_err() {
                break;
            }
        }
    };
    let responses = async move {
        while let Some((due, mut frame)) = arrived.recv().await {
            tokio::time::sleep_until(due).await;
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
    tokio::join!(requests, read_answers, responses);
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
    // One write: the length and the frame in two would wait on Nagle and a delayed ACK.
    let size = i32::try_from(frame.len()).unwrap();
    let mut out = Vec::with_capacity(4 + frame.len());
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(frame);
    stream.write_all(&out).await
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

    /// A Metadata answer (versions 9 to 13, the flexible ones librdkafka, its mock and Kafka 4
    /// speak):
    /// brokers point at the proxy, and the topic shows only its visible partitions.
    fn metadata(&self, frame: &[u8], version: i16) -> Vec<u8> {
        assert!(
            (9..=13).contains(&version),
            "the proxy rewrites Metadata v9 to v13, not v{version}"
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
        // The rest (cluster authorized operations up to v10, the error code from v13, tags)
        // passes through.
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
