//! The Spoor server: receivers, the ingest pipeline, the Tempo query API, tenancy and self
//! metrics, plus the OTLP client that `spoor loadgen` and the tests use.

pub mod agent;
pub mod background;
pub mod body;
pub mod client;
pub mod config;
pub mod error;
pub mod generated;
pub mod limits;
pub mod metrics;
pub mod metrics_query;
pub mod pipeline;
pub mod processors;
pub mod query;
pub mod receive;
pub mod remote_write;
pub mod sampling;
pub mod search;
pub mod tags;
pub mod tenant;

use std::future::Future;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub use config::Config;
pub use error::Error;
use pipeline::Pipeline;

/// Runs the server until `shutdown` resolves, then drains in-flight requests, syncs the WAL
/// and returns.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let data_dir = config.storage.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| Error::Startup(format!("cannot create data dir {}: {e}", data_dir.display())))?;
    // The WAL is what must not be shared; a query-only process writes none.
    let _lock = if config.ingest.enabled { Some(lock_data_dir(&data_dir)?) } else { None };

    let bind = |addr: String, what: &'static str| async move {
        let l = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|e| Error::Startup(format!("cannot listen for {what} on {addr}: {e}")))?;
        tracing::info!(address = %l.local_addr().map(|a| a.to_string()).unwrap_or(addr), "listening for {what}");
        Ok::<_, Error>(l)
    };
    let ingest = config.ingest.enabled;
    let api = bind(config.server.http_listen.clone(), "the query API (Tempo HTTP API, /metrics, /ready)").await?;
    let receivers = if ingest {
        let grpc = bind(config.server.otlp_grpc_listen.clone(), "OTLP/gRPC").await?;
        let http = bind(config.server.otlp_http_listen.clone(), "OTLP/HTTP").await?;
        Some((grpc, http))
    } else {
        tracing::info!("ingest disabled: serving queries over the backend's blocks only");
        None
    };
    let timeout = Duration::from_secs(config.server.shutdown_timeout_secs);
    let header_timeout = Duration::from_secs(config.server.header_read_timeout_secs);

    let p = Arc::new(Pipeline::new(config)?);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    let mut listeners = vec![(api, query::router(p.clone()))];
    if let Some((grpc, http)) = receivers {
        listeners.push((grpc, receive::grpc_router(p.clone())));
        listeners.push((http, receive::http_router(p.clone())));
    }
    for (listener, router) in listeners {
        servers.spawn(serve_http(listener, router, stop_rx.clone(), header_timeout));
    }

    // Replay runs while the listeners answer: /ready says 503 and ingest asks clients to retry.
    let replayer = p.clone();
    let mut replay = tokio::task::spawn_blocking(move || if ingest { replayer.replay() } else { Ok(()) });
    tokio::pin!(shutdown);
    let mut tasks = tokio::task::JoinSet::new();
    let failed = tokio::select! {
        r = &mut replay => match r {
            Ok(Ok(())) => {
                p.start_serving().await;
                background::spawn(&p, &mut tasks);
                tracing::info!("ready");
                shutdown.await;
                None
            }
            Ok(Err(e)) => Some(Error::Startup(format!("WAL replay failed: {e}"))),
            Err(e) => Some(Error::Startup(format!("WAL replay panicked: {e}"))),
        },
        _ = &mut shutdown => None,
    };

    tracing::info!("shutting down: refusing new requests, finishing in-flight ones");
    p.begin_shutdown();
    // A flush or compaction cut short leaves only files without a meta; the WAL still has it all.
    tasks.abort_all();
    let _ = stop_tx.send(true);
    if tokio::time::timeout(timeout, async { while servers.join_next().await.is_some() {} }).await.is_err() {
        tracing::warn!("in-flight requests did not finish within {timeout:?}; closing anyway");
        servers.abort_all();
    }
    let closer = p.clone();
    let _ = tokio::task::spawn_blocking(move || closer.close()).await;
    tracing::info!("WAL synced; bye");
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
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
/// Used by `spoor serve` and `spoor agent` for every listener.
pub async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    mut stop: watch::Receiver<bool>,
    header_read_timeout: Duration,
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
        let service = TowerToHyperService::new(router.clone());
        let mut stop = stop.clone();
        let conns_rx = conns_rx.clone();
        tokio::spawn(async move {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            let timeout = (!header_read_timeout.is_zero()).then_some(header_read_timeout);
            builder.http1().timer(TokioTimer::new()).header_read_timeout(timeout);
            builder.http2().max_concurrent_streams(HTTP2_MAX_CONCURRENT_STREAMS);
            let io = TokioIo::new(DetectDeadline::new(tcp, timeout));
            let conn = builder.serve_connection_with_upgrades(io, service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(conns_rx);
        });
    }
    drop(listener);
    drop(conns_rx);
    conns_tx.closed().await;
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
pub struct DetectDeadline {
    io: TcpStream,
    matched: usize,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl DetectDeadline {
    /// `None`: no deadline.
    pub fn new(io: TcpStream, timeout: Option<Duration>) -> DetectDeadline {
        DetectDeadline { io, matched: 0, deadline: timeout.map(|t| Box::pin(tokio::time::sleep(t))) }
    }
}

impl AsyncRead for DetectDeadline {
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

impl AsyncWrite for DetectDeadline {
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
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, Error> {
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::Startup(format!("cannot open {}: {e}", path.display())))?;
    // SAFETY: flock on a valid, owned file descriptor.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(Error::Startup(format!(
            "data dir {} is in use by another spoor process (cannot lock {})",
            dir.display(),
            path.display()
        )));
    }
    Ok(file)
}
