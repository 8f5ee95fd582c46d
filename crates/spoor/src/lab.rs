//! `spoor lab`: the dojo's labs (docs/dojo/). `start` runs `spoor demo` with the lab's scenario
//! against a running Spoor, records the run (seed, time window, tenant, API) in a small state
//! file and asks the question; `check` works the right answer out from what the server stored
//! over that window (TraceQL search, traces by ID, `/api/dora`), never from the seed, so an
//! answer is judged against the data the learner could see.

mod check;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

use crate::demo::scenario::Scenario;

#[derive(clap::Subcommand)]
pub enum Command {
    /// List the labs.
    List,
    /// Run a lab's scenario against a running Spoor and print its question.
    Start(StartArgs),
    /// Check an answer against the data the lab's last run stored; exit 0 when right, 1 when not.
    Check(CheckArgs),
}

#[derive(clap::Args)]
pub struct StartArgs {
    /// The lab's number (`spoor lab list`).
    number: u32,
    #[command(flatten)]
    target: crate::target::Target,
    /// The server's HTTP API, where `check` will look.
    #[arg(long, default_value = "http://127.0.0.1:3200")]
    api: String,
    /// Tenant (X-Scope-OrgID) to send and check as.
    #[arg(long)]
    tenant: Option<String>,
    /// How long the demo sends.
    #[arg(long, default_value = "30s", value_parser = crate::demo::parse_duration)]
    duration: Duration,
    /// Flows (traces) per second.
    #[arg(long, default_value_t = 3.0)]
    rate: f64,
    /// Seed of the run [default: from the clock].
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    state: State,
    #[command(flatten)]
    access: crate::http::Access,
}

#[derive(clap::Args)]
pub struct CheckArgs {
    /// The lab's number.
    number: u32,
    /// Your answer.
    answer: String,
    #[command(flatten)]
    state: State,
    #[command(flatten)]
    access: crate::http::Access,
}

#[derive(clap::Args)]
struct State {
    /// The file that remembers each lab's last run [default: $XDG_STATE_HOME/spoor/lab.json,
    /// else ~/.local/state/spoor/lab.json, else ./.spoor-lab/lab.json].
    #[arg(long = "state", env = "SPOOR_LAB_STATE")]
    path: Option<PathBuf>,
}

impl State {
    fn path(&self) -> PathBuf {
        if let Some(p) = &self.path {
            return p.clone();
        }
        let dir = std::env::var_os("XDG_STATE_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| Path::new(&h).join(".local/state")));
        match dir {
            Some(d) => d.join("spoor/lab.json"),
            None => PathBuf::from(".spoor-lab/lab.json"),
        }
    }

    fn load(&self) -> anyhow::Result<BTreeMap<String, Value>> {
        let path = self.path();
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).with_context(|| format!("{}: not a lab state file", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(e).with_context(|| path.display().to_string()),
        }
    }

    fn save(&self, runs: &BTreeMap<String, Value>) -> anyhow::Result<()> {
        let path = self.path();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
        }
        // Written aside and renamed, so an interrupted save leaves the old state whole.
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(runs)?).with_context(|| tmp.display().to_string())?;
        std::fs::rename(&tmp, &path).with_context(|| path.display().to_string())
    }
}

/// What a lab asks, and where the answer is found.
pub struct Lab {
    pub number: u32,
    pub title: &'static str,
    pub scenario: Option<Scenario>,
    pub question: &'static str,
    /// Where to look: TraceQL and the UI.
    pub hint: &'static str,
}

pub const LABS: &[Lab] = &[
    Lab {
        number: 1,
        title: "Where do the errors start?",
        scenario: Some(Scenario::ErrorOrigin),
        question: "Requests fail all over the platform. Which service starts the errors? (its service.name)",
        hint: "TraceQL `{ status = error }`, open a failing trace and follow the red spans down to the \
               deepest one; or `{ status = error } | by(resource.service.name)` and compare with the \
               waterfall: the origin is the error span with no failing child.",
    },
    Lab {
        number: 2,
        title: "Which query makes the portal slow?",
        scenario: Some(Scenario::SlowDatabase),
        question: "Some pages take over a second. Which PostgreSQL query is to blame? (its table, \
                   db.collection.name, or the whole statement)",
        hint: "TraceQL `{ span.db.system = \"postgresql\" && duration > 1s } | select(span.db.query.text)`; \
               in the UI, a slow trace's critical path ends in the query.",
    },
    Lab {
        number: 3,
        title: "Lead time of the last deployment",
        scenario: None,
        question: "What was the lead time of the last deployment to production? (a duration such as 5m12s \
                   or seconds; within 2 s)",
        hint: "The delivery page (http://127.0.0.1:3200/delivery), `spoor dora`, `/api/dora/deployments`; \
               or by hand: the ArgoCD sync span's end minus the `git push` root span's start, in \
               `{ span.argocd.sync.phase != nil }`'s newest trace.",
    },
    Lab {
        number: 4,
        title: "The first timeout of a cascade",
        scenario: Some(Scenario::CascadingFailure),
        question: "Timeouts and retries spread through the platform. Which service did the first call \
                   that timed out go to? (its service.name)",
        hint: "TraceQL `{ span.error.type = \"timeout\" }`; in a trace, the deepest timed-out client span \
               (with retries: http.request.resend_count) names the service it waited for in peer.service, \
               and that service's server span outlives it.",
    },
    Lab {
        number: 5,
        title: "The deployment behind the incident",
        scenario: Some(Scenario::BadDeploy),
        question: "A deployment failed and an incident followed. Which deployment caused it? (its deployment.id)",
        hint: "The delivery page's timeline, `/api/dora/deployments` (incidents name their cause), or \
               TraceQL `{ span.incident.id != nil }` and `{ span.deployment.status = \"failed\" }`.",
    },
    Lab {
        number: 6,
        title: "Who is flooding the platform?",
        scenario: Some(Scenario::NoisyTenant),
        question: "Most of the traffic during the run was not sent as your tenant. Which tenant sent it? \
                   (its X-Scope-OrgID; needs a server with tenancy.multitenancy_enabled)",
        hint: "Spoor's own metrics count spans per tenant: `curl -s http://127.0.0.1:3200/metrics | grep \
               spoor_spans_received_total` (compare with a minute ago); then search as that tenant \
               (`X-Scope-OrgID`, or Grafana's data source header) to see what it sends.",
    },
];

fn lab(number: u32) -> anyhow::Result<&'static Lab> {
    LABS.iter()
        .find(|l| l.number == number)
        .ok_or_else(|| anyhow::anyhow!("there is no lab {number}; `spoor lab list` shows labs 1 to {}", LABS.len()))
}

/// A wrong answer: not an error of the tool, so `main` prints it as it is and exits 1.
#[derive(Debug)]
pub struct Wrong(pub String);

impl std::fmt::Display for Wrong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Wrong {}

pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::List => {
            for l in LABS {
                let scenario = l.scenario.map_or("healthy traffic", Scenario::name);
                println!("{}. {} ({scenario})\n   {}", l.number, l.title, l.question);
            }
            Ok(())
        }
        Command::Start(args) => start(args).await,
        Command::Check(args) => check(args).await,
    }
}

async fn start(args: StartArgs) -> anyhow::Result<()> {
    let l = lab(args.number)?;
    let demo = crate::demo::Args {
        target: args.target.clone(),
        scenario: l.scenario,
        duration: args.duration,
        rate: args.rate,
        seed: args.seed,
        tenant: args.tenant.clone(),
        access: args.access.clone(),
        quiet: true,
    };
    eprintln!(
        "lab {}: sending the platform's traffic ({}) to {} for {}…",
        l.number,
        l.scenario.map_or("healthy", Scenario::name),
        args.target.endpoint,
        spoor_model::duration::format(args.duration)
    );
    // The noisy tenant's lab compares the server's per-tenant span counts before and after.
    let received_before = match l.scenario {
        Some(Scenario::NoisyTenant) => {
            let api = crate::http::Api::with_access(args.tenant.as_deref(), &args.access)?;
            Some(check::received(&api, args.api.trim_end_matches('/')).await?)
        }
        _ => None,
    };
    let summary = crate::demo::send(&demo).await?;
    anyhow::ensure!(summary.traces > 0, "the demo sent no traces: is Spoor running at {}?", args.target.endpoint);
    let mut runs = args.state.load()?;
    runs.insert(
        l.number.to_string(),
        json!({
            "seed": summary.seed,
            "scenario": l.scenario.map(Scenario::name),
            "start_ns": summary.start_ns,
            "end_ns": summary.end_ns,
            "tenant": args.tenant,
            "api": args.api.trim_end_matches('/'),
            "traces": summary.traces,
            "received_before": received_before,
        }),
    );
    args.state.save(&runs)?;
    println!(
        "Lab {}: {}\n{} traces ({} spans) sent, seed {}.\n\nQuestion: {}\n\nWhere to look: {}\n\nAnswer with: spoor lab check {} '<answer>'",
        l.number, l.title, summary.traces, summary.spans, summary.seed, l.question, l.hint, l.number
    );
    Ok(())
}

async fn check(args: CheckArgs) -> anyhow::Result<()> {
    let l = lab(args.number)?;
    let runs = args.state.load()?;
    let Some(r) = runs.get(&l.number.to_string()) else {
        anyhow::bail!(
            "lab {} has not been started (no run in {}): `spoor lab start {}` first",
            l.number,
            args.state.path().display(),
            l.number
        );
    };
    let field = |k: &str| r.get(k).and_then(Value::as_u64).with_context(|| format!("the lab state has no {k}"));
    let run = check::Run {
        start_ns: field("start_ns")?,
        end_ns: field("end_ns")?,
        api: r.get("api").and_then(Value::as_str).unwrap_or("http://127.0.0.1:3200").to_owned(),
        tenant: r.get("tenant").and_then(Value::as_str).map(str::to_owned),
        received_before: serde_json::from_value(r.get("received_before").cloned().unwrap_or_default())
            .unwrap_or_default(),
    };
    let tenant = run.tenant.as_deref();
    let api = crate::http::Api::with_access(tenant, &args.access)?;
    let verdict = check::judge(l.number, &run, &api, &args.answer).await?;
    if verdict.right {
        println!("Right! {}", verdict.why);
        Ok(())
    } else {
        Err(Wrong(format!("Not quite: {:?} is not the answer. {}", args.answer, verdict.why)).into())
    }
}
