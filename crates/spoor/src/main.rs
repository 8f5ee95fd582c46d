//! `spoor`: the tracing backend in one binary.

mod blocks;
mod demo;
mod dora;
mod http;
mod keys;
mod lab;
mod loadgen;
mod query;
mod target;
mod trace;

// Ingest allocates and frees many small strings per span across threads; glibc's malloc spent
// about half the server's CPU on that under load, mimalloc a small fraction (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use spoor_server::Config;

#[derive(Parser)]
#[command(name = "spoor", version, about = "A distributed-tracing backend: OTLP in, Tempo API out")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: OTLP receivers, WAL, live traces and the Tempo-compatible query API.
    Serve(ServeArgs),
    /// Run the agent: OTLP receivers, scrubbing, a persistent queue, and forwarding to one or more
    /// OTLP endpoints (load-balanced by trace ID).
    Agent(ServeArgs),
    /// Send realistic multi-service traces to an OTLP endpoint and report throughput and latency.
    Loadgen(loadgen::Args),
    /// Send an internal developer platform's request flows as OTLP, with log lines on stdout and
    /// an optional fault (`--scenario`), for learning to read traces (docs/dojo/).
    Demo(demo::Args),
    /// The dojo's labs: run a scenario, find the answer in the traces, check it (docs/dojo/).
    #[command(subcommand)]
    Lab(lab::Command),
    /// Print the effective configuration (defaults, file, environment and flags merged).
    Config(ServeArgs),
    /// Look at the blocks in a data dir or bucket.
    #[command(subcommand)]
    Blocks(blocks::Command),
    /// Search with TraceQL, against a running server or straight against the blocks.
    Query(query::Args),
    /// Print one trace as a tree of spans, from a running server or straight from the blocks.
    Trace(trace::Args),
    /// The four DORA metrics and their levels, from a server's CI/CD traces (docs/dora.md).
    Dora(dora::Args),
    /// Manage the encryption-at-rest keys of a data dir.
    #[command(subcommand)]
    Keys(keys::Command),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// YAML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the WAL (and local blocks) live [default: ./data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// OTLP/gRPC listen address [default: 127.0.0.1:4317].
    #[arg(long)]
    otlp_grpc_listen: Option<String>,
    /// OTLP/HTTP listen address [default: 127.0.0.1:4318].
    #[arg(long)]
    otlp_http_listen: Option<String>,
    /// Query API listen address [default: 127.0.0.1:3200].
    #[arg(long)]
    http_listen: Option<String>,
    /// What this process runs: distributor, ingester, querier, compactor (comma-separated) or
    /// all [default: all, the single node]. Split roles meet through `kafka:` (docs/scale-out.md).
    #[arg(long)]
    roles: Option<String>,
}

impl ServeArgs {
    fn load(&self) -> anyhow::Result<Config> {
        let mut overrides = Vec::new();
        if let Some(d) = &self.data_dir {
            overrides.push(("storage.data_dir", d.display().to_string()));
        }
        for (key, v) in [
            ("server.otlp_grpc_listen", &self.otlp_grpc_listen),
            ("server.otlp_http_listen", &self.otlp_http_listen),
            ("server.http_listen", &self.http_listen),
        ] {
            if let Some(v) = v {
                overrides.push((key, v.clone()));
            }
        }
        if let Some(r) = &self.roles {
            let roles = spoor_server::config::Role::parse_list(r).map_err(|e| anyhow::anyhow!("--roles: {e}"))?;
            let names: Vec<String> = roles.iter().map(|r| format!("{r:?}").to_lowercase()).collect();
            overrides.push(("roles", names.join(",")));
        }
        Ok(Config::load(self.config.as_deref(), std::env::vars(), &overrides)?)
    }
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => {
                let config = args.load()?;
                spoor_server::serve(config, shutdown_signal()).await?;
                Ok(())
            }
            Command::Agent(args) => {
                let config = args.load()?;
                spoor_agent::run(config, shutdown_signal()).await?;
                Ok(())
            }
            Command::Loadgen(args) => loadgen::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Lab(command) => lab::run(command).await,
            Command::Blocks(command) => blocks::run(command).await,
            Command::Query(args) => query::run(args).await,
            Command::Trace(args) => trace::run(args).await,
            Command::Dora(args) => dora::run(args).await,
            Command::Keys(command) => keys::run(command),
            Command::Config(args) => {
                print!("{}", args.load()?.to_yaml());
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if e.is::<lab::Wrong>() => {
            println!("{e}");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("spoor: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
    }
}
