//! The Spoor server, by role: `ingest/` (receivers, the front door, the pipeline, the WAL,
//! the flusher), `tempo/` (the Tempo-compatible query API over a reader of live traces and
//! blocks), `jaeger/` (Jaeger's query API over the same reader), `ui` (the embedded web UI),
//! `generated/` (metrics from traces, scraped or pushed), `dora/` (DORA metrics from CI/CD
//! traces), and the plumbing they share (`config`, `error`, `http`, `retry`, `metrics`,
//! `background`).

pub mod auth;
pub mod background;
pub mod cluster;
pub mod config;
pub mod dora;
pub mod encryption;
pub mod error;
pub mod generated;
pub mod http;
pub mod ingest;
pub mod jaeger;
pub mod metrics;
pub mod reload;
pub mod retention;
pub mod retry;
pub mod tempo;
pub mod tls;
pub mod ui;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use spoor_store::{Head, Limits};

use crate::metrics::names;
use auth::guard::{Auth, Surface, protect};
pub use config::Config;
use config::Listener;
use dora::store::Store as DoraStore;
pub use error::{Error, StartupError};
use generated::Generated;
use http::Readiness;
use ingest::flush::Flusher;
use ingest::pipeline::Pipeline;
use ingest::sampling::Sampling;
use ingest::wal::WalSlot;
use metrics::Metrics;
use tempo::admin::Admin;
use tempo::reader::Reader;

/// Runs the server until `shutdown` resolves, then drains in-flight requests, syncs the WAL
/// and returns. With `ingest.enabled: false` it is a query-only process: a reader over the
/// backend's blocks, no receivers, no WAL.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartupError> {
    let data_dir = config.storage.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| StartupError::new(format!("cannot create data dir {}: {e}", data_dir.display())).with_source(e))?;
    let ingest = config.ingests();
    let role = |r| config.roles.has(r);
    // The WAL is what must not be shared; a query-only process writes none.
    let _lock = if ingest { Some(http::lock_data_dir(&data_dir)?) } else { None };
    // The key is checked against the data before anything is read or written.
    let seal = config.storage.encryption.load()?;
    if ingest {
        encryption::check_dir(&data_dir, &[data_dir.clone(), config.storage.local_path()], seal.as_deref())?;
    } else if data_dir.join(encryption::MARKER).exists() {
        encryption::check_dir(&data_dir, &[], seal.as_deref())?;
    }
    if seal.is_some() && config.storage.backend != spoor_store::BackendKind::Local {
        tracing::info!(
            "encryption at rest covers the WAL and temp files; blocks in the {:?} backend rely on its server-side encryption",
            config.storage.backend
        );
    }
    // Certificates and tokens are checked before any port opens: a bad file stops the start.
    let api_tls = tls::load(config.server.tls_for(Listener::Api).0, "the query API")?;
    let grpc_tls = tls::load(config.server.tls_for(Listener::OtlpGrpc).0, "OTLP/gRPC")?;
    let http_tls = tls::load(config.server.tls_for(Listener::OtlpHttp).0, "OTLP/HTTP")?;
    // The Zipkin and Jaeger listeners serve with `server.tls`.
    let foreign_tls = tls::load(&config.server.tls, "the Zipkin and Jaeger receivers")?;
    let metrics = Arc::new(Metrics::default());
    let auth = Auth::open(
        &config.auth,
        config.tenancy.multitenancy_enabled,
        config.ingest.max_request_bytes,
        metrics.clone(),
    )?;
    let api = http::bind(&config.server.http_listen, "the query API (Tempo HTTP API, /metrics, /ready)").await?;
    let receivers = if ingest && role(cluster::Role::Distributor) {
        let grpc = http::bind(&config.server.otlp_grpc_listen, "OTLP/gRPC").await?;
        let http = http::bind(&config.server.otlp_http_listen, "OTLP/HTTP").await?;
        Some((grpc, http, bind_foreign(&config).await?))
    } else {
        tracing::info!("ingest disabled: serving queries over the backend's blocks only");
        None
    };
    let timeout = Duration::from_secs(config.server.shutdown_timeout_secs);
    let header_timeout = Duration::from_secs(config.server.header_read_timeout_secs);

    // The data dir belongs to the ingesting process (it holds the lock); a query-only one may
    // share it, so it keeps its scratch files elsewhere.
    let tmp =
        if ingest { data_dir.join("tmp") } else { std::env::temp_dir().join(format!("spoor-{}", std::process::id())) };
    // Leftovers of a crash: temporary block files are never reused.
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)
        .map_err(|e| StartupError::new(format!("cannot create {}: {e}", tmp.display())).with_source(e))?;
    let ready = Arc::new(Readiness::default());
    let blocks = Arc::new(tempo::reader::open_blocks(&config, tmp)?);
    let l = &config.limits;
    let head = Arc::new(Head::new(Limits {
        max_live_traces: l.max_live_traces,
        max_bytes_per_trace: l.max_bytes_per_trace,
        max_bytes_per_tenant: l.max_bytes_per_tenant,
        max_bytes_total: l.max_live_bytes,
    }));
    let mut reader = Reader::new(head.clone(), blocks.clone(), &config, metrics.clone());
    if role(cluster::Role::Querier) && config.kafka.is_some() {
        reader.live = cluster::live::Ingesters::new(&config.querier, metrics.clone())?;
    }
    let reader = Arc::new(reader);
    let dora_store = if ingest && config.dora.enabled {
        let now = spoor_model::time::now_nanos();
        Some(Arc::new(DoraStore::open(
            &data_dir,
            &config.dora,
            config.wal.durability,
            seal.clone(),
            metrics.clone(),
            now,
        )?))
    } else {
        None
    };
    let generated = Generated::new(&config, metrics.clone(), dora_store.clone())?.map(Arc::new);
    let (write, wal) = if ingest {
        let wal = Arc::new(WalSlot::new(&config, seal.clone()));
        let sampling = config.processors.tail_sampling().map(Sampling::new).transpose()?.map(Arc::new);
        let pipeline = Arc::new(Pipeline::new(
            &config,
            head.clone(),
            wal.clone(),
            sampling.clone(),
            generated.clone(),
            dora_store.clone(),
            metrics.clone(),
            ready.clone(),
        )?);
        let flusher = Arc::new(Flusher::new(
            head,
            blocks,
            wal.clone(),
            sampling,
            metrics.clone(),
            config.blocks.clone(),
            config.limits.max_live_bytes,
        ));
        (Some((pipeline, flusher)), Some(wal))
    } else {
        (None, None)
    };

    let mut servers = http::Servers::new(header_timeout);
    let compactor =
        Arc::new(background::Compactor::new(reader.clone(), metrics.clone(), config.clone(), dora_store.clone()));
    let admin = Admin {
        compactor: compactor.clone(),
        reader: reader.clone(),
        ready: ready.clone(),
        flusher: write.as_ref().map(|(_, f)| f.clone()),
        wal,
        generated: generated.clone(),
        dora: dora_store.clone(),
    };
    let a = auth.as_ref();
    let ui =
        ui::Ui { config: config.ui.clone(), auth: auth.is_some(), multitenancy: config.tenancy.multitenancy_enabled };
    let dora_api = dora::api::Api {
        store: dora_store.clone(),
        reader: reader.clone(),
        max_hinted_deployments: config.dora.max_hinted_deployments,
    };
    let api_router = tempo::router(admin)
        .merge(jaeger::router(reader.clone()))
        .merge(dora::api::router(dora_api))
        .merge(ui::router(ui))
        .merge(tempo::live::router(reader.clone()));
    servers.serve_tls(api, protect(a, Surface::Api, api_router), api_tls);
    if let (Some((grpc, http, foreign)), Some((pipeline, _))) = (receivers, &write) {
        let grpc_router = protect(a, Surface::OtlpGrpc, ingest::receive::grpc_router(pipeline.clone()));
        servers.serve_tls(grpc, grpc_router, grpc_tls);
        servers.serve_tls(
            http,
            protect(a, Surface::OtlpHttp, ingest::receive::http_router(pipeline.clone())),
            http_tls,
        );
        let Foreign { zipkin, jaeger_thrift, jaeger_grpc } = foreign;
        if let (Some(l), Some(z)) = (zipkin, &config.zipkin) {
            let router = ingest::foreign::zipkin_router(pipeline.clone(), z);
            servers.serve_tls(l, protect(a, Surface::Zipkin, router), foreign_tls.clone());
        }
        if let Some(l) = jaeger_thrift {
            let router = ingest::foreign::jaeger_thrift_router(pipeline.clone());
            servers.serve_tls(l, protect(a, Surface::JaegerThrift, router), foreign_tls.clone());
        }
        if let Some(l) = jaeger_grpc {
            let router = ingest::receive::grpc_router(pipeline.clone());
            servers.serve_tls(l, protect(a, Surface::JaegerGrpc, router), foreign_tls);
        }
    }
    if let Some(a) = &auth {
        a.watch(&servers.stopping());
    }

    // Replay runs while the listeners answer: /ready says 503 and ingest asks clients to retry.
    // With the Kafka-API log there is nothing to replay: connect instead.
    let replayer = write.as_ref().map(|(p, _)| p.clone());
    let (kafka, ingester_role) = (config.kafka.clone(), role(cluster::Role::Ingester));
    let producing = role(cluster::Role::Distributor);
    let ingester_parts = match &kafka {
        Some(k) if ingester_role && ingest => {
            let host = cluster::hostname();
            Some(config.ingester.owned(k.partitions, &host).map_err(|e| StartupError::new(format!("ingester: {e}")))?)
        }
        _ => None,
    };
    let mut replay = tokio::spawn(async move {
        let Some(k) = kafka else {
            return tokio::task::spawn_blocking(move || replayer.map_or(Ok(()), |p| p.replay()))
                .await
                .map_err(|e| StartupError::new(format!("WAL replay panicked: {e}")))?
                .map_err(|e| StartupError::new(format!("WAL replay failed: {e}")).with_source(e))
                .map(|()| None);
        };
        let log = Arc::new(cluster::log::Log::connect(&k, producing).await?);
        if let Some(p) = &replayer {
            p.set_log(log.clone());
        }
        tracing::info!(brokers = ?k.brokers, topic = k.topic, "connected to the Kafka-API log");
        Ok(Some(log))
    });
    tokio::pin!(shutdown);
    let mut tasks = tokio::task::JoinSet::new();
    let failed = tokio::select! {
        r = &mut replay => match r {
            Ok(Ok(log)) => {
                read_blocklist(&reader, config.storage.request_timeout_secs).await;
                if let (Some(log), Some(parts)) = (log, ingester_parts) {
                    tracing::info!(partitions = ?parts, "ingester: reading the log");
                    let i = cluster::ingester::Ingester::new(log, reader.head.clone(), reader.blocks.clone(), metrics.clone(), &config, parts);
                    Arc::new(i).spawn(&mut tasks);
                }
                ready.set_ready();
                metrics.set(names::READY, &[], 1.0);
                let ingest = write.as_ref().map(|(p, f)| (p, f));
                let roles = background::Roles { config: &config, reader: &reader, metrics: &metrics, ingest, generated: generated.as_ref(), compactor: &compactor };
                background::spawn(roles, &mut tasks);
                if let Some(d) = &dora_store {
                    tasks.spawn(prune_dora(d.clone()));
                }
                tracing::info!("ready");
                shutdown.await;
                None
            }
            Ok(Err(e)) => Some(e),
            Err(e) => Some(StartupError::new(format!("start-up task panicked: {e}"))),
        },
        _ = &mut shutdown => None,
    };

    tracing::info!("shutting down: refusing new requests, finishing in-flight ones");
    ready.set_stopping();
    metrics.set(names::READY, &[], 0.0);
    // A flush or compaction cut short leaves only files without a meta; the WAL still has it all.
    tasks.abort_all();
    servers.stop(timeout).await;
    if let Some((pipeline, _)) = write {
        let _ = tokio::task::spawn_blocking(move || pipeline.close()).await;
    }
    tracing::info!("WAL synced; bye");
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Drops DORA events past their retention, hourly.
async fn prune_dora(store: Arc<DoraStore>) {
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let s = store.clone();
        let pruned = tokio::task::spawn_blocking(move || s.prune(spoor_model::time::now_nanos())).await;
        if let Ok(Err(e)) = pruned {
            tracing::warn!(error = %e, "cannot prune the DORA store; will retry");
        }
    }
}

/// The Zipkin and Jaeger listeners a configuration asks for.
struct Foreign {
    zipkin: Option<tokio::net::TcpListener>,
    jaeger_thrift: Option<tokio::net::TcpListener>,
    jaeger_grpc: Option<tokio::net::TcpListener>,
}

async fn bind_foreign(config: &Config) -> Result<Foreign, StartupError> {
    let mut f = Foreign { zipkin: None, jaeger_thrift: None, jaeger_grpc: None };
    if let Some(z) = &config.zipkin {
        f.zipkin = Some(http::bind(&z.listen, "Zipkin (POST /api/v2/spans)").await?);
    }
    if let Some(j) = &config.jaeger {
        f.jaeger_thrift = Some(http::bind(&j.thrift_http_listen, "Jaeger Thrift over HTTP (POST /api/traces)").await?);
        if !j.grpc_listen.is_empty() {
            f.jaeger_grpc = Some(http::bind(&j.grpc_listen, "Jaeger gRPC (and OTLP/gRPC)").await?);
        }
    }
    Ok(f)
}

/// Reads the blocklist for the first time. A backend that cannot be reached does not stop
/// ingest (the WAL holds everything): polling retries.
async fn read_blocklist(reader: &Reader, request_timeout_secs: u64) {
    // Bounded: an unreachable backend must not keep ingest from starting.
    let limit = Duration::from_secs(request_timeout_secs.max(1));
    match tokio::time::timeout(limit, reader.blocks.poll()).await {
        Ok(Ok(n)) => tracing::info!(blocks = n, "blocklist read"),
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot read the blocklist yet; will retry"),
        Err(_) => tracing::warn!("reading the blocklist takes over {limit:?}; serving meanwhile, will retry"),
    }
}
