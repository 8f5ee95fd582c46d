//! The Spoor server: receivers, the ingest pipeline, the Tempo query API, tenancy and self
//! metrics, plus the OTLP client that `spoor loadgen` and the tests use.

pub mod agent;
pub mod background;
pub mod body;
pub mod client;
pub mod config;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod pipeline;
pub mod processors;
pub mod query;
pub mod receive;
pub mod sampling;
pub mod search;
pub mod tags;
pub mod tenant;

use std::future::Future;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;

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

    let p = Arc::new(Pipeline::new(config)?);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    let mut listeners = vec![(api, query::router(p.clone()))];
    if let Some((grpc, http)) = receivers {
        listeners.push((grpc, receive::grpc_router(p.clone())));
        listeners.push((http, receive::http_router(p.clone())));
    }
    for (listener, router) in listeners {
        let mut rx = stop_rx.clone();
        servers.spawn(async move {
            // Small request/response exchanges: without TCP_NODELAY, Nagle plus delayed ACKs
            // add ~40 ms to a fraction of replies.
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|stop| *stop).await;
                })
                .await;
        });
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
