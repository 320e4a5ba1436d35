//! The listener's open connections, so that a newcomer over the cap takes the place of the
//! connection idle the longest instead of being turned away.
//!
//! A client that keeps many half-sent requests open (or re-opens them as they time out) would
//! otherwise hold every slot, and the kubelet's probes, arriving among them, would be refused:
//! a liveness probe failed by anyone who can reach the port. A connection is idle while it
//! waits for a request head (or for the next one, kept alive). A probe sends its head at once,
//! so until it is read its bytes wait in the socket: a connection with unread bytes is never
//! pushed out, however fast others arrive.

use std::collections::HashMap;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// `idle_since` of a connection answering a request: never chosen to make room.
const BUSY: u64 = u64::MAX;

/// The open connections, at most `limit`.
pub(super) struct Connections {
    limit: usize,
    epoch: Instant,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    next_id: u64,
    by_id: HashMap<u64, Arc<Connection>>,
}

/// One open connection.
pub(super) struct Connection {
    id: u64,
    stream: Arc<TcpStream>,
    /// Nanoseconds after the registry's epoch at which it became idle, or [`BUSY`].
    idle_since: AtomicU64,
    /// Cancelled when it is closed to make room.
    closed: CancellationToken,
}

/// What became of a newcomer.
pub(super) enum Admission {
    /// It has a slot (`made_room`: an idle connection was closed for it).
    Admitted { slot: Slot, made_room: bool },
    /// Every slot is answering a request: it is turned away.
    Full,
}

impl Connections {
    pub(super) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            epoch: Instant::now(),
            open: Mutex::new(Open::default()),
        })
    }

    pub(super) fn limit(&self) -> usize {
        self.limit
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(BUSY - 1)
    }

    /// Gives a newcomer a slot, closing the connection idle the longest when all are taken
    /// (one with bytes not yet read is not idle: its request is on its way in).
    pub(super) fn admit(self: &Arc<Self>, stream: Arc<TcpStream>) -> Admission {
        let now = self.now();
        let Ok(mut open) = self.open.lock() else {
            return Admission::Full;
        };
        let mut made_room = false;
        if open.by_id.len() >= self.limit {
            let mut idle: Vec<(u64, u64)> = open
                .by_id
                .values()
                .map(|c| (c.idle_since.load(Ordering::Relaxed), c.id))
                .filter(|(since, _)| *since != BUSY)
                .collect();
            idle.sort_unstable();
            let idlest = idle
                .into_iter()
                .map(|(_, id)| id)
                .find(|id| open.by_id.get(id).is_some_and(|c| !c.has_unread()));
            let Some(id) = idlest else {
                return Admission::Full;
            };
            if let Some(evicted) = open.by_id.remove(&id) {
                evicted.closed.cancel();
            }
            made_room = true;
        }
        let id = open.next_id;
        open.next_id += 1;
        let connection = Arc::new(Connection {
            id,
            stream,
            idle_since: AtomicU64::new(now),
            closed: CancellationToken::new(),
        });
        open.by_id.insert(id, Arc::clone(&connection));
        Admission::Admitted {
            slot: Slot {
                registry: Arc::clone(self),
                connection,
            },
            made_room,
        }
    }
}

impl Connection {
    /// Whether bytes wait in the socket that the connection has not read yet (or it hung up).
    fn has_unread(&self) -> bool {
        let mut byte = [MaybeUninit::<u8>::uninit()];
        // try_io: a peek that finds nothing clears the readiness flag without taking the
        // waker the connection's own read registered.
        match self.stream.try_io(Interest::READABLE, || {
            socket2::SockRef::from(&*self.stream).peek(&mut byte)
        }) {
            Ok(n) => n > 0,
            Err(_) => false,
        }
    }
}

/// The connection's socket as hyper reads and writes it, shared with the registry that peeks
/// into it.
pub(super) struct SharedStream(pub(super) Arc<TcpStream>);

impl AsyncRead for SharedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

impl AsyncWrite for SharedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                written => return Poll::Ready(written),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(&*self.0).shutdown(std::net::Shutdown::Write))
    }
}

/// A connection's place in the registry, given back when dropped.
pub(super) struct Slot {
    registry: Arc<Connections>,
    connection: Arc<Connection>,
}

impl Slot {
    /// Resolves when the connection was closed to make room for another.
    pub(super) fn closed(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.connection.closed.cancelled()
    }

    /// A handle the request service marks busy and idle through.
    pub(super) fn activity(&self) -> Activity {
        Activity {
            registry: Arc::clone(&self.registry),
            connection: Arc::clone(&self.connection),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.registry.open.lock() {
            open.by_id.remove(&self.connection.id);
        }
    }
}

/// Marks a connection busy while a request is answered, idle again after.
#[derive(Clone)]
pub(super) struct Activity {
    registry: Arc<Connections>,
    connection: Arc<Connection>,
}

impl Activity {
    pub(super) fn busy(&self) {
        self.connection.idle_since.store(BUSY, Ordering::Relaxed);
    }

    pub(super) fn idle(&self) {
        self.connection
            .idle_since
            .store(self.registry.now(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    /// A connected pair on loopback: the client's end, and the server's end shared.
    async fn pair() -> (TcpStream, Arc<TcpStream>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, Arc::new(server))
    }

    fn admitted(admission: Admission) -> (Slot, bool) {
        match admission {
            Admission::Admitted { slot, made_room } => (slot, made_room),
            Admission::Full => panic!("turned away"),
        }
    }

    fn closed(slot: &Slot) -> bool {
        slot.connection.closed.is_cancelled()
    }

    #[tokio::test]
    async fn a_newcomer_over_the_cap_takes_the_idlest_place() {
        let connections = Connections::new(2);
        let (_c1, s1) = pair().await;
        let (_c2, s2) = pair().await;
        let (_c3, s3) = pair().await;
        let (first, room) = admitted(connections.admit(s1));
        assert!(!room);
        let (second, _) = admitted(connections.admit(s2));
        let (third, room) = admitted(connections.admit(s3));
        assert!(room, "the cap is 2");
        assert!(closed(&first), "the oldest idle one");
        assert!(!closed(&second));
        assert!(!closed(&third));
        drop(first);
        assert_eq!(connections.open.lock().unwrap().by_id.len(), 2);
    }

    #[tokio::test]
    async fn a_connection_answering_a_request_is_never_closed_for_room() {
        let connections = Connections::new(2);
        let mut ends = Vec::new();
        for _ in 0..4 {
            ends.push(pair().await);
        }
        let mut servers = ends.iter().map(|(_, s)| Arc::clone(s));
        let (first, _) = admitted(connections.admit(servers.next().unwrap()));
        let (second, _) = admitted(connections.admit(servers.next().unwrap()));
        first.activity().busy();
        let (third, room) = admitted(connections.admit(servers.next().unwrap()));
        assert!(room);
        assert!(!closed(&first), "busy");
        assert!(closed(&second));
        // The newcomer and the busy one both answering: the next is turned away.
        third.activity().busy();
        let fourth = servers.next().unwrap();
        assert!(matches!(
            connections.admit(Arc::clone(&fourth)),
            Admission::Full
        ));
        first.activity().idle();
        let (_, room) = admitted(connections.admit(fourth));
        assert!(room, "idle again, so it can make room");
        assert!(closed(&first));
    }

    #[tokio::test]
    async fn a_request_waiting_to_be_read_is_not_pushed_out() {
        let connections = Connections::new(2);
        let (mut c1, s1) = pair().await;
        let (_c2, s2) = pair().await;
        let (_c3, s3) = pair().await;
        let (first, _) = admitted(connections.admit(s1));
        let (second, _) = admitted(connections.admit(s2));
        c1.write_all(b"GET /healthz HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        // Until the bytes are in the server's socket.
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while !first.connection.has_unread() {
            assert!(Instant::now() < deadline, "the bytes arrive");
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let (_third, room) = admitted(connections.admit(s3));
        assert!(room);
        assert!(!closed(&first), "its request waits to be read");
        assert!(closed(&second), "nothing to read: idle");
    }

    #[tokio::test]
    async fn a_dropped_slot_frees_its_place() {
        let connections = Connections::new(1);
        let (_c1, s1) = pair().await;
        let (_c2, s2) = pair().await;
        let (only, _) = admitted(connections.admit(s1));
        drop(only);
        let (_, room) = admitted(connections.admit(s2));
        assert!(!room);
    }
}
