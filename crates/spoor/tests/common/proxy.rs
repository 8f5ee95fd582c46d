//! A TCP proxy that can fail on demand, to put an outage between the server and its object store.
//!
//! Plain threads rather than a runtime, so it works the same from `#[test]` and `#[tokio::test]`.
//! While down, new connections are accepted and reset at once (the client sees its connection
//! refused mid-request, as through a load balancer with no backend) and open ones are cut.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    upstream: String,
    state: Mutex<State>,
    accepted: AtomicUsize,
}

#[derive(Default)]
struct State {
    down: bool,
    stopping: bool,
    next_id: u64,
    /// Open proxied connections: both sockets and how many of the two pipe threads still run.
    conns: HashMap<u64, Conn>,
}

struct Conn {
    client: TcpStream,
    upstream: TcpStream,
    pipes: u8,
}

impl FaultProxy {
    /// A proxy on a free 127.0.0.1 port forwarding to `upstream` (`host:port`), up.
    pub fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream: upstream.to_owned(),
            state: Mutex::new(State::default()),
            accepted: AtomicUsize::new(0),
        });
        let acceptor = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("fault-proxy".into())
                .spawn(move || accept_loop(listener, shared))
                .expect("spawn proxy thread")
        };
        FaultProxy { addr, shared, acceptor: Some(acceptor) }
    }

    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT`, for an endpoint setting.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Down: cut every open connection and reset new ones until set up again.
    pub fn set_down(&self, down: bool) {
        let mut state = self.shared.state.lock().unwrap();
        state.down = down;
        if down {
            cut_all(&mut state);
        }
    }

    pub fn is_down(&self) -> bool {
        self.shared.state.lock().unwrap().down
    }

    /// Connections accepted so far, up or down: shows a client really goes through the proxy.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        {
            let mut state = self.shared.state.lock().unwrap();
            state.stopping = true;
            cut_all(&mut state);
        }
        // Wake the blocking accept so the thread sees `stopping`.
        let _ = TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        if shared.state.lock().unwrap().stopping {
            return;
        }
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        if shared.state.lock().unwrap().down {
            reset(&client);
            continue;
        }
        // Connect outside the lock; the state is checked again before the pair goes live.
        let upstream = match connect(&shared.upstream) {
            Ok(s) => s,
            Err(_) => {
                reset(&client);
                continue;
            }
        };
        let (Ok(c2), Ok(u2), Ok(c3), Ok(u3)) =
            (client.try_clone(), upstream.try_clone(), client.try_clone(), upstream.try_clone())
        else {
            reset(&client);
            reset(&upstream);
            continue;
        };
        let id = {
            let mut state = shared.state.lock().unwrap();
            if state.down || state.stopping {
                reset(&client);
                reset(&upstream);
                continue;
            }
            let id = state.next_id;
            state.next_id += 1;
            state.conns.insert(id, Conn { client, upstream, pipes: 2 });
            id
        };
        spawn_pipe(shared.clone(), id, c2, u2);
        spawn_pipe(shared.clone(), id, u3, c3);
    }
}

fn connect(upstream: &str) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, format!("{upstream} resolves to nothing"));
    for addr in upstream.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Copies `from` to `to` until EOF or an error, then passes the EOF on.
fn spawn_pipe(shared: Arc<Shared>, id: u64, mut from: TcpStream, mut to: TcpStream) {
    let spawned = std::thread::Builder::new().name("fault-proxy-pipe".into()).spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
        let mut state = shared.state.lock().unwrap();
        if let Some(conn) = state.conns.get_mut(&id) {
            conn.pipes -= 1;
            if conn.pipes == 0 {
                // Dropping the last handles closes both sockets.
                state.conns.remove(&id);
            }
        }
    });
    spawned.expect("spawn proxy pipe thread");
}

fn cut_all(state: &mut State) {
    for (_, conn) in state.conns.drain() {
        reset(&conn.client);
        reset(&conn.upstream);
    }
}

/// Makes the socket's close an abortive one (RST) and shuts it down now, which also wakes any
/// thread blocked reading it.
fn reset(s: &TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: a valid socket descriptor and a correctly sized `linger` value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    let _ = s.shutdown(Shutdown::Both);
}
