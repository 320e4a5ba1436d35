//! What the harness takes from this machine: loopback ports for servers that must be told
//! theirs, and child processes that end with the test process.

use std::process::{Child, Command};
use std::sync::{Mutex, OnceLock, mpsc};

/// A loopback port for a server that must be told its port (a broker, the agent's listener).
///
/// Race-free where binding port 0 and letting go is not: the ports come from below the
/// kernel's ephemeral range (32768 and up), so no outgoing connection can take one between
/// now and its use, and no port is handed out twice in one process. Each is checked free now.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    // Test binaries run one after another; each starts elsewhere in the span all the same.
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id() % 100) * 113,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let offset = NEXT.fetch_add(1, Ordering::SeqCst) % SPAN;
        let port = u16::try_from(FIRST + offset).expect("port in range");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {FIRST} and {}", FIRST + SPAN);
}

/// Spawns `cmd` from one thread that lives as long as the process, with `PR_SET_PDEATHSIG`,
/// so the child is killed when the test process ends (a static cluster is never dropped).
pub fn spawn(cmd: Command) -> Child {
    type Request = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("spawner".to_owned())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(spawn_dying_with_parent(&mut cmd));
                }
                // The sender lives in a static: this thread never ends before the process.
            })
            .expect("spawner thread");
        Mutex::new(tx)
    });
    let (tx, rx) = mpsc::channel();
    sender
        .lock()
        .unwrap()
        .send((cmd, tx))
        .expect("spawner alive");
    rx.recv().expect("spawner answers").expect("spawn")
}

#[allow(unsafe_code)]
fn spawn_dying_with_parent(cmd: &mut Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: the closure runs in the child between fork and exec and only makes one
    // async-signal-safe system call.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
    cmd.spawn()
}

/// A server that takes connections and never reads or answers (a frozen collector, a proxy
/// that black-holes): its address. It holds every connection until the test process ends.
pub fn silent_listener() -> std::net::SocketAddr {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a silent listener");
    let address = silent.local_addr().expect("its address");
    std::thread::spawn(move || {
        let held: Vec<_> = silent.incoming().collect();
        drop(held);
    });
    address
}
