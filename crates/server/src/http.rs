//! What every process that serves HTTP shares (`spoor serve` in any role, `spoor agent`):
//! binding a listener, serving a router with a header deadline and graceful shutdown, the
//! lock that keeps one writer per data dir, and readiness.

use std::future::Future;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::error::StartupError;
use crate::tls::Reloading;
use crate::tls::peer::PeerNames;

/// Binds `addr` for `what` (named in the log line and in the error).
pub async fn bind(addr: &str, what: &str) -> Result<TcpListener, StartupError> {
    let l = TcpListener::bind(addr)
        .await
        .map_err(|e| StartupError::new(format!("cannot listen for {what} on {addr}: {e}")).with_source(e))?;
    tracing::info!(address = %l.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| addr.to_owned()), "listening for {what}");
    Ok(l)
}

const STARTING: u8 = 0;
const READY: u8 = 1;
const STOPPING: u8 = 2;

/// Where a process is in its life: starting (replaying the WAL), ready, or stopping. Ingest
/// refuses and `/ready` answers 503 unless ready.
pub struct Readiness(AtomicU8);

impl Default for Readiness {
    fn default() -> Self {
        Readiness(AtomicU8::new(STARTING))
    }
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst) == READY
    }

    pub fn set_ready(&self) {
        self.0.store(READY, Ordering::SeqCst);
    }

    pub fn set_stopping(&self) {
        self.0.store(STOPPING, Ordering::SeqCst);
    }

    /// Why not ready, for error messages and `/ready`.
    pub fn reason(&self) -> &'static str {
        match self.0.load(Ordering::SeqCst) {
            STARTING => "replaying the WAL",
            STOPPING => "shutting down",
            _ => "ready",
        }
    }
}

/// A process's listeners, each serving its router until [`Servers::stop`].
pub struct Servers {
    tasks: tokio::task::JoinSet<()>,
    stop: watch::Sender<bool>,
    header_read_timeout: Duration,
}

impl Servers {
    /// `header_read_timeout`: see [`serve_http`].
    pub fn new(header_read_timeout: Duration) -> Servers {
        Servers { tasks: tokio::task::JoinSet::new(), stop: watch::channel(false).0, header_read_timeout }
    }

    pub fn serve(&mut self, listener: TcpListener, router: axum::Router) {
        self.serve_tls(listener, router, None);
    }

    /// Serves `router` over TLS when `tls` is given (and keeps its certificates fresh).
    pub fn serve_tls(&mut self, listener: TcpListener, router: axum::Router, tls: Option<Arc<Reloading>>) {
        if let Some(t) = &tls {
            self.tasks.spawn(t.clone().watch(self.stop.subscribe()));
        }
        self.tasks.spawn(serve_http(listener, router, self.stop.subscribe(), self.header_read_timeout, tls));
    }

    /// Turns true when the servers stop: for other loops that should end with them.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Stops accepting, lets in-flight requests finish within `timeout`, then closes what is
    /// left.
    pub async fn stop(mut self, timeout: Duration) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(timeout, async { while self.tasks.join_next().await.is_some() {} }).await.is_err() {
            tracing::warn!("in-flight requests did not finish within {timeout:?}; closing anyway");
            self.tasks.abort_all();
        }
    }
}

/// Streams one HTTP/2 client may have open at once on a connection; more are refused
/// (`REFUSED_STREAM`) and well-behaved clients queue them. hyper's default today, pinned
/// because hyper does not promise to keep it.
pub const HTTP2_MAX_CONCURRENT_STREAMS: u32 = 200;

/// Serves `router` (HTTP/1.1 and h2c) on `listener` until `stop` turns true, then stops
/// accepting and waits for open connections to finish their requests: what
/// `axum::serve(..).with_graceful_shutdown(..)` does, plus a header read timeout, which
/// axum::serve cannot have (hyper's needs a timer and axum installs none), so a client
/// sending its request head a byte at a time held a connection and a task forever.
///
/// `header_read_timeout` (zero: none) bounds, separately: the wait for the first bytes that
/// tell HTTP/1 from HTTP/2 (see [`DetectDeadline`]); an HTTP/1 request head (hyper's timer,
/// which also closes a keep-alive connection idle that long between requests). An HTTP/2
/// connection past its preface may idle: streams are bounded by [`HTTP2_MAX_CONCURRENT_STREAMS`].
/// Used by `spoor serve` and `spoor agent` for every listener. With `tls`, the handshake must
/// also finish within `header_read_timeout`; a failed one (a plaintext client, no client
/// certificate under mTLS, a protocol older than `min_version`) closes the connection.
pub async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    mut stop: watch::Receiver<bool>,
    header_read_timeout: Duration,
    tls: Option<Arc<Reloading>>,
) {
    // Each connection holds a receiver; `closed()` resolves once all are gone.
    let (conns_tx, conns_rx) = watch::channel(());
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                // The peer gave up before we accepted: nothing to do.
                Err(e) if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
                ) => continue,
                // Out of file descriptors and the like: retry without spinning.
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a connection; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        // Small request/response exchanges: without TCP_NODELAY, Nagle plus delayed ACKs add
        // ~40 ms to a fraction of replies.
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let mut stop = stop.clone();
        let conns_rx = conns_rx.clone();
        let acceptor = tls.as_ref().map(|t| t.acceptor());
        tokio::spawn(async move {
            let timeout = (!header_read_timeout.is_zero()).then_some(header_read_timeout);
            match acceptor {
                None => serve_connection(tcp, TowerToHyperService::new(router), timeout, &mut stop).await,
                Some(acceptor) => {
                    let handshake = acceptor.accept(tcp);
                    let done = match timeout {
                        Some(t) => tokio::time::timeout(t, handshake).await.map_err(|_| "timed out".to_string()),
                        None => Ok(handshake.await),
                    };
                    match done {
                        Ok(Ok(stream)) => {
                            // A verified client certificate's names go with every request of
                            // the connection, for the auth guard (mTLS identities).
                            let peer = stream.get_ref().1.peer_certificates().and_then(|c| c.first());
                            let router = match peer.and_then(|c| PeerNames::from_der(c)) {
                                Some(names) => router.layer(axum::Extension(names)),
                                None => router,
                            };
                            serve_connection(stream, TowerToHyperService::new(router), timeout, &mut stop).await
                        }
                        // Debug only: a port scanner or a plaintext client must not fill the log.
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(e) => tracing::debug!(error = %e, "TLS handshake failed"),
                    }
                }
            }
            drop(conns_rx);
        });
    }
    drop(listener);
    drop(conns_rx);
    conns_tx.closed().await;
}

/// Serves one accepted connection (plain or TLS) until it ends or the server stops.
async fn serve_connection<IO>(
    io: IO,
    service: TowerToHyperService<axum::Router>,
    timeout: Option<Duration>,
    stop: &mut watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(timeout);
    // Flow-control windows sized to the connection's bandwidth-delay product (BDP pings) rather
    // than hyper's fixed 1 MiB: a client may send only about a window of its body before it hears
    // the answer, so an early refusal (memory limiter, back-pressure) no longer receives a whole
    // ~300 KB export it will not read; on a long link the windows grow to keep it full.
    builder.http2().max_concurrent_streams(HTTP2_MAX_CONCURRENT_STREAMS).adaptive_window(true);
    let io = TokioIo::new(DetectDeadline::new(io, timeout));
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stopped(stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// hyper-util's `auto` builder reads up to the 24-byte HTTP/2 preface to choose the protocol,
/// without a timer, and hyper's header read timeout only starts after that: a client sending
/// nothing, or the preface a byte at a time, was never closed. This fails the read with
/// `TimedOut` once `timeout` has passed while every byte so far could still be the preface;
/// the first byte that cannot (any HTTP/1 request), or the whole preface, disarms it.
pub struct DetectDeadline<IO = TcpStream> {
    io: IO,
    matched: usize,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl<IO> DetectDeadline<IO> {
    /// `None`: no deadline.
    pub fn new(io: IO, timeout: Option<Duration>) -> DetectDeadline<IO> {
        DetectDeadline { io, matched: 0, deadline: timeout.map(|t| Box::pin(tokio::time::sleep(t))) }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for DetectDeadline<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let Some(deadline) = this.deadline.as_mut() else { return Pin::new(&mut this.io).poll_read(cx, buf) };
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                let n = new.len().min(H2_PREFACE.len() - this.matched);
                let end = this.matched + n;
                if new.is_empty() || new[..n] != H2_PREFACE[this.matched..end] || end == H2_PREFACE.len() {
                    this.deadline = None;
                } else {
                    this.matched = end;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if deadline.as_mut().poll(cx).is_ready() => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no HTTP request started within the header read timeout",
            ))),
            other => other,
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for DetectDeadline<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// One server per data dir: a second one would interleave WAL segments.
pub fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, StartupError> {
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StartupError::new(format!("cannot open {}: {e}", path.display())))?;
    // SAFETY: flock on a valid, owned file descriptor.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(StartupError::new(format!(
            "data dir {} is in use by another spoor process (cannot lock {})",
            dir.display(),
            path.display()
        )));
    }
    Ok(file)
}

/// A query-string value, percent-encoded (RFC 3986: only unreserved characters stay), for the
/// clients that build URLs to Spoor's API (the CLI, DORA's change-failure hints).
pub fn encode_query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// gRPC's percent-encoding of `grpc-message`.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-decoding, lenient: a `%` that starts no escape stays a `%`, and bytes that are not
/// UTF-8 become U+FFFD. `plus_as_space` for query strings (form encoding), not for headers.
pub fn percent_decode(s: &str, plus_as_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' if plus_as_space => out.push(b' '),
            b'%' => match (hex_digit(b.get(i + 1)), hex_digit(b.get(i + 2))) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_digit(c: Option<&u8>) -> Option<u8> {
    (*c? as char).to_digit(16).map(|d| d as u8)
}
