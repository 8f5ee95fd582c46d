//! `spoor demo`: an internal developer platform's request flows as real OTLP, for learning
//! to read traces (the dojo, docs/dojo/). Five flows (developer portal, CI/CD, dojo lab
//! provisioning, collaboration, deployment) cross services over HTTP, gRPC and a message queue
//! with correct parent/child context, and `--scenario` injects one fault whose details come from
//! the seed. Where `spoor loadgen` replays a pool of requests as fast as it can, the demo builds
//! every trace anew at a human rate and prints each span as a log line with its trace ID.

mod cicd;
mod collab;
mod deploy;
mod dojo;
mod logs;
mod portal;
pub mod scenario;
mod span;

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use prost::Message;
use spoor_agent::client::{OtlpClient, Outcome};
use spoor_model::otlp::{
    AnyValue, ExportTraceServiceRequest, InstrumentationScope, KeyValue, Resource, ResourceSpans, ScopeSpans, Span,
    any_value,
};
use spoor_model::synth::Rng;

use scenario::{Plan, Scenario};
use span::{Kind, Laid, lay_out};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub target: crate::target::Target,
    /// A fault to inject: slow-database, error-origin, cascading-failure, bad-deploy or
    /// noisy-tenant [default: healthy traffic].
    #[arg(long)]
    pub scenario: Option<Scenario>,
    /// How long to send: `60s`, `5m`, `1m30s`.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Flows (traces) per second.
    #[arg(long, default_value_t = 2.0)]
    pub rate: f64,
    /// Seed of everything random, the fault's details included; the same seed sends the same
    /// flows [default: from the clock].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Tenant to send as X-Scope-OrgID (noisy-tenant sends most traffic as a second one).
    #[arg(long)]
    pub tenant: Option<String>,
    #[command(flatten)]
    pub access: crate::http::Access,
    /// No log lines on stdout.
    #[arg(long)]
    pub quiet: bool,
}

/// `60s`, `5m`, `1m30s`, `1.5s`: a positive Go-style duration.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    match spoor_model::duration::parse(v) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(format!("{v:?} is not a duration such as 60s or 5m")),
    }
}

/// What a run sent.
#[derive(Debug, Default)]
pub struct Summary {
    pub seed: u64,
    pub start_ns: u64,
    pub end_ns: u64,
    pub traces: u64,
    pub spans: u64,
    pub refused: u64,
    /// Traces per tenant sent to (`-` without a tenant header).
    pub by_tenant: BTreeMap<String, u64>,
    pub plan: Plan,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let summary = send(&args).await?;
    let tenants: Vec<String> = summary.by_tenant.iter().map(|(t, n)| format!("{t}: {n}")).collect();
    eprintln!(
        "spoor demo: {} traces, {} spans sent ({} refused) in {:.1}s; scenario {}, seed {}; traces per tenant {}",
        summary.traces,
        summary.spans,
        summary.refused,
        (summary.end_ns - summary.start_ns) as f64 / 1e9,
        args.scenario.map_or("none", Scenario::name),
        summary.seed,
        tenants.join(", "),
    );
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    Portal,
    Cicd,
    Dojo,
    Collab,
    Deploy,
}

impl Flow {
    const ALL: [Flow; 5] = [Flow::Portal, Flow::Cicd, Flow::Dojo, Flow::Collab, Flow::Deploy];

    fn services(self) -> &'static [&'static str] {
        match self {
            Flow::Portal => portal::SERVICES,
            Flow::Cicd => cicd::SERVICES,
            Flow::Dojo => dojo::SERVICES,
            Flow::Collab => collab::SERVICES,
            Flow::Deploy => deploy::SERVICES,
        }
    }

    fn statements(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Flow::Portal => portal::STATEMENTS,
            Flow::Dojo => dojo::STATEMENTS,
            Flow::Collab => collab::STATEMENTS,
            Flow::Deploy => deploy::STATEMENTS,
            Flow::Cicd => &[],
        }
    }
}

/// The flows' state between traces: pipeline run numbers, the messages waiting in the
/// indexer's next batch, whether the bad deployment went out.
struct World {
    rng: Rng,
    plan: Plan,
    run: u64,
    queued: VecDeque<([u8; 16], [u8; 8])>,
    bad_deploy_sent: bool,
}

impl World {
    fn pick(&mut self) -> Flow {
        if self.plan.bad_service.is_some() && !self.bad_deploy_sent {
            return Flow::Cicd;
        }
        let touched: Vec<Flow> =
            Flow::ALL.into_iter().filter(|f| self.plan.touches(f.services(), f.statements())).collect();
        // Half the flows go where the fault is, so a short run shows it plainly.
        if !touched.is_empty() && self.rng.below(2) == 0 {
            return touched[self.rng.below(touched.len() as u64) as usize];
        }
        Flow::ALL[self.rng.below(Flow::ALL.len() as u64) as usize]
    }

    /// One flow's traces (a failed deployment brings its incident along), ending by `now`.
    fn traces(&mut self, now: u64) -> Vec<Laid> {
        let flow = self.pick();
        let rng = &mut self.rng;
        let mut root = match flow {
            Flow::Portal => portal::build(rng),
            Flow::Dojo => dojo::build(rng),
            Flow::Deploy => deploy::build(rng),
            Flow::Collab => {
                // Each batch holds this message and up to two queued before it.
                let take = rng.below(3) as usize;
                let batch: Vec<_> = self.queued.iter().rev().take(take).copied().collect();
                collab::build(rng, &batch)
            }
            Flow::Cicd => {
                self.run += 1 + rng.below(3);
                if let (Some(app), false) = (self.plan.bad_service, self.bad_deploy_sent) {
                    self.bad_deploy_sent = true;
                    let release = cicd::Release::new(rng, app, self.run, true);
                    let pipeline = cicd::build(rng, &release);
                    let failed = lay_out(rng, &pipeline, now - 300 * 1_000_000_000);
                    let id = format!("INC-{}", 1000 + rng.below(9000));
                    let incident = cicd::incident(rng, &release, &id, 270 * 1_000_000_000);
                    let incident = lay_out(rng, &incident, now);
                    return vec![failed, incident];
                }
                let app = cicd::APPS[rng.below(cicd::APPS.len() as u64) as usize];
                let release = cicd::Release::new(rng, app, self.run, false);
                cicd::build(rng, &release)
            }
        };
        self.plan.apply(&mut self.rng, &mut root);
        let laid = lay_out(&mut self.rng, &root, now);
        if flow == Flow::Collab
            && let Some((_, p)) = laid.spans.iter().find(|(_, s)| s.kind == Kind::Producer as i32)
        {
            self.queued.push_back((laid.trace_id, p.span_id.as_slice().try_into().expect("8-byte span ID")));
            if self.queued.len() > 8 {
                self.queued.pop_front();
            }
        }
        vec![laid]
    }
}

/// Sends flows for `--duration` at `--rate`; the run's summary.
pub async fn send(args: &Args) -> anyhow::Result<Summary> {
    anyhow::ensure!(
        args.rate.is_finite() && args.rate > 0.0 && args.rate <= 10_000.0,
        "--rate must be a number of flows per second above 0 and at most 10000, not {}",
        args.rate
    );
    let seed = args.seed.unwrap_or_else(|| spoor_model::time::now_nanos() ^ u64::from(std::process::id()));
    let plan = Plan::new(args.scenario, seed);
    let main = args.target.client(args.tenant.clone(), &args.access)?;
    let noisy = match &plan.noisy_tenant {
        Some(t) => Some((t.clone(), args.target.client(Some(t.clone()), &args.access)?)),
        None => None,
    };
    let mut world = World { rng: Rng::new(seed), plan, run: 100, queued: VecDeque::new(), bad_deploy_sent: false };
    world.run += world.rng.below(800);
    let mut summary = Summary { seed, start_ns: spoor_model::time::now_nanos(), ..Summary::default() };
    let start = Instant::now();
    let deadline = start + args.duration;
    let mut stdout = std::io::stdout().lock();
    for n in 0u64.. {
        let due = start + Duration::from_secs_f64(n as f64 / args.rate);
        if due >= deadline {
            break;
        }
        // Ctrl-C ends the run early, still with its summary (and seed).
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        let traces = world.traces(spoor_model::time::now_nanos());
        // The noisy tenant's share: seven flows in ten.
        let (tenant, client): (String, &OtlpClient) = match &noisy {
            Some((t, c)) if world.rng.below(10) < 7 => (t.clone(), c),
            _ => (args.tenant.clone().unwrap_or_else(|| "-".into()), &main),
        };
        let spans: u64 = traces.iter().map(|t| t.spans.len() as u64).sum();
        let outcome = client.export(request(&traces).encode_to_vec().into()).await;
        match outcome {
            Ok(Outcome::Accepted { rejected, .. }) => {
                summary.refused += rejected as u64;
                summary.spans += spans - rejected as u64;
                summary.traces += traces.len() as u64;
                *summary.by_tenant.entry(tenant).or_default() += traces.len() as u64;
            }
            Ok(Outcome::Refused { code, message, .. }) => {
                anyhow::ensure!(
                    summary.traces > 0,
                    "{} refused the first export ({code}): {message}",
                    args.target.endpoint
                );
                summary.refused += spans;
            }
            Err(e) if summary.traces == 0 => {
                return Err(e).with_context(|| format!("cannot send to {}", args.target.endpoint));
            }
            Err(e) => {
                tracing::warn!("export failed: {e}");
                summary.refused += spans;
            }
        }
        if !args.quiet {
            for t in &traces {
                let _ = stdout.write_all(logs::lines(t).as_bytes());
            }
            let _ = stdout.flush();
        }
    }
    summary.end_ns = spoor_model::time::now_nanos();
    summary.plan = world.plan;
    Ok(summary)
}

/// One export request: the traces' spans grouped by service, each with its resource.
fn request(traces: &[Laid]) -> ExportTraceServiceRequest {
    let mut by_service: BTreeMap<&str, Vec<Span>> = BTreeMap::new();
    for t in traces {
        for (service, s) in &t.spans {
            by_service.entry(service).or_default().push(s.clone());
        }
    }
    let resource_spans = by_service
        .into_iter()
        .map(|(service, spans)| ResourceSpans {
            resource: Some(resource(service)),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "spoor.demo".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

/// What a service's SDK puts on its resource. CI/CD services name no environment: on them it
/// would make a pipeline's deploy stage a deployment of its own (docs/dora.md).
fn resource(service: &str) -> Resource {
    let kv = |k: &str, v: String| KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v)) }),
    };
    let namespace = match service {
        "github" | "jenkins" | "harbor" => "ci",
        s if s.starts_with("argocd") => "argocd",
        s => cicd::namespace(s),
    };
    let mut attributes = vec![
        kv("service.name", service.into()),
        kv("service.namespace", namespace.into()),
        kv("service.version", "1.4.2".into()),
        kv("k8s.namespace.name", namespace.into()),
        kv("k8s.pod.name", format!("{service}-7d9f8b6c5-x2k4p")),
        kv("cloud.provider", "aws".into()),
        kv("cloud.region", "eu-west-1".into()),
    ];
    if !matches!(namespace, "ci" | "argocd") {
        attributes.push(kv("deployment.environment.name", cicd::ENVIRONMENT.into()));
    }
    Resource { attributes, dropped_attributes_count: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_the_flag_documents() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        for bad in ["", "0", "60", "5 minutes", "-1s"] {
            assert!(parse_duration(bad).unwrap_err().contains("not a duration"), "{bad}");
        }
    }

    #[test]
    fn every_flow_links_clients_to_servers_of_other_services() {
        let mut world = World {
            rng: Rng::new(4),
            plan: Plan::new(Some(Scenario::BadDeploy), 4),
            run: 100,
            queued: VecDeque::new(),
            bad_deploy_sent: false,
        };
        let first = world.traces(2_000_000_000_000_000_000);
        assert_eq!(first.len(), 2, "the bad deployment and its incident");
        for _ in 0..40 {
            for t in world.traces(2_000_000_000_000_000_000) {
                let by_id: BTreeMap<&[u8], &(&str, Span)> =
                    t.spans.iter().map(|e| (e.1.span_id.as_slice(), e)).collect();
                for (service, s) in &t.spans {
                    let Some((parent_service, p)) = by_id.get(s.parent_span_id.as_slice()) else {
                        assert!(s.parent_span_id.is_empty(), "a parent outside the trace");
                        continue;
                    };
                    if s.kind == Kind::Server as i32 {
                        assert_eq!(p.kind, Kind::Client as i32, "{}", s.name);
                        assert_ne!(service, parent_service, "{}", s.name);
                    }
                    if s.kind == Kind::Consumer as i32 {
                        assert_eq!(p.kind, Kind::Producer as i32);
                    }
                }
            }
        }
    }
}
