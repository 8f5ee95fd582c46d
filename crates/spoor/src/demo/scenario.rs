//! The faults `spoor demo --scenario` injects. What each fault hits (which query is slow, which
//! service starts the errors, which one stalls, which deployment fails) is drawn from the seed,
//! so the answer to a lab differs from run to run and has to be found in the data.
//! Faults are applied to a flow's call tree after the flow built it healthy, so every flow that
//! passes through the faulty place shows the fault, the way a real outage spreads.

use std::str::FromStr;

use spoor_model::otlp::any_value::Value;
use spoor_model::synth::Rng;

use super::span::{Kind, MS, Node};
use super::{cicd, collab, deploy, dojo, portal};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    SlowDatabase,
    ErrorOrigin,
    CascadingFailure,
    BadDeploy,
    NoisyTenant,
}

impl Scenario {
    pub const ALL: [Scenario; 5] = [
        Scenario::SlowDatabase,
        Scenario::ErrorOrigin,
        Scenario::CascadingFailure,
        Scenario::BadDeploy,
        Scenario::NoisyTenant,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::SlowDatabase => "slow-database",
            Scenario::ErrorOrigin => "error-origin",
            Scenario::CascadingFailure => "cascading-failure",
            Scenario::BadDeploy => "bad-deploy",
            Scenario::NoisyTenant => "noisy-tenant",
        }
    }
}

impl FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Scenario, String> {
        Scenario::ALL.into_iter().find(|c| c.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Scenario::ALL.iter().map(|c| c.name()).collect();
            format!("unknown scenario {s:?}; one of: {}", names.join(", "))
        })
    }
}

/// Services other services call synchronously: where an error can start and surface upstream,
/// and where a stall makes callers time out.
pub const CALLEES: &[&str] = &["argocd-server", "kube-apiserver", "harbor", "lab-service", "terraform-runner"];

/// Every PostgreSQL statement the flows run: (flow, table, statement).
pub fn statements() -> impl Iterator<Item = (&'static str, &'static str)> {
    [portal::STATEMENTS, dojo::STATEMENTS, collab::STATEMENTS, deploy::STATEMENTS].into_iter().flatten().copied()
}

/// What this run's scenario hits, decided from the seed alone.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// slow-database: (table, statement) of the query that takes over a second.
    pub slow: Option<(&'static str, &'static str)>,
    /// error-origin: the service whose server spans fail first.
    pub origin: Option<&'static str>,
    /// cascading-failure: the service that stops answering in time.
    pub stalled: Option<&'static str>,
    /// bad-deploy: the service whose deployment fails.
    pub bad_service: Option<&'static str>,
    /// noisy-tenant: the second tenant that sends most of the traffic.
    pub noisy_tenant: Option<String>,
}

impl Plan {
    pub fn new(scenario: Option<Scenario>, seed: u64) -> Plan {
        // Its own stream, so the choice depends on the seed and not on how many flows ran.
        let mut rng = Rng::new(seed ^ 0x5ce7_a410);
        let mut pick = |n: usize| rng.below(n as u64) as usize;
        let mut plan = Plan::default();
        match scenario {
            Some(Scenario::SlowDatabase) => plan.slow = statements().nth(pick(statements().count())),
            Some(Scenario::ErrorOrigin) => plan.origin = Some(CALLEES[pick(CALLEES.len())]),
            Some(Scenario::CascadingFailure) => plan.stalled = Some(CALLEES[pick(CALLEES.len())]),
            Some(Scenario::BadDeploy) => plan.bad_service = Some(cicd::APPS[pick(cicd::APPS.len())]),
            Some(Scenario::NoisyTenant) => {
                const TEAMS: &[&str] = &["atlas", "borealis", "cobalt", "dune", "ember", "fjord", "granite"];
                plan.noisy_tenant = Some(format!("team-{}", TEAMS[pick(TEAMS.len())]));
            }
            None => {}
        }
        plan
    }

    /// Whether a flow through `services` running `statements` shows this run's fault (such
    /// flows are sent more often, so a short run shows the fault plainly).
    pub fn touches(&self, services: &[&str], statements: &[(&str, &str)]) -> bool {
        let service = self.origin.or(self.stalled);
        service.is_some_and(|s| services.contains(&s))
            || self.slow.is_some_and(|(_, q)| statements.iter().any(|(_, s)| *s == q))
    }

    /// Applies the run's fault to one flow.
    pub fn apply(&self, rng: &mut Rng, root: &mut Node) {
        if let Some((_, statement)) = self.slow {
            slow_query(rng, root, statement);
        }
        // Not every request fails: the fault is frequent, not total, as real ones are.
        if let Some(origin) = self.origin
            && rng.below(10) < 7
        {
            fail_first(root, origin, &mut |n| fault(n, origin));
        }
        if let Some(stalled) = self.stalled {
            stall(rng, root, stalled);
        }
    }
}

fn slow_query(rng: &mut Rng, node: &mut Node, statement: &str) {
    if node.get("db.query.text") == Some(statement) {
        node.work = 1_100 * MS + rng.below(1_400) * MS;
    }
    for c in &mut node.children {
        slow_query(rng, c, statement);
    }
}

/// Fails the first server span of `origin` (depth first) with `fault`, and every span on the
/// way up with the error it surfaces as; answers whether the caller should fail too. A message
/// queue stops the surfacing: a producer does not wait for its consumer.
fn fail_first(node: &mut Node, origin: &str, fault: &mut dyn FnMut(&mut Node)) -> Option<bool> {
    if node.kind == Kind::Server && node.service == origin {
        fault(node);
        return Some(true);
    }
    for i in 0..node.children.len() {
        match fail_first(&mut node.children[i], origin, fault) {
            Some(true) if node.children[i].detached.is_none() => {
                // A failed call ends the request: what would have come after it never runs.
                node.children.truncate(i + 1);
                surface(node, "500", "upstream service failed");
                return Some(true);
            }
            Some(_) => return Some(false),
            None => {}
        }
    }
    None
}

/// Where the error starts: an exception, and the status a real service of that kind returns.
fn fault(node: &mut Node, service: &str) {
    let (kind, message) = match service {
        "argocd-server" => ("rpc error", "repository not accessible: authentication required"),
        "kube-apiserver" => ("StatusError", "Internal error occurred: failed calling webhook \"validate.kyverno.svc\""),
        "harbor" => ("BlobUploadInvalid", "blob upload invalid: storage backend returned 500"),
        "lab-service" => ("ProvisioningError", "lab quota exceeded for pool eu-west-1"),
        _ => ("TerraformError", "Error acquiring the state lock: ConditionalCheckFailedException"),
    };
    node.exception = Some((kind.into(), message.into()));
    surface(node, "500", message);
}

/// Marks a span failed: status error, and the HTTP or gRPC status that says so.
fn surface(node: &mut Node, http_status: &str, message: &str) {
    node.error = Some(message.into());
    if node.is_grpc() {
        let code = if http_status == "504" { 4 } else { 13 };
        node.set("rpc.grpc.status_code", Value::IntValue(code));
        if node.get("error.type").is_none() {
            node.set("error.type", Value::StringValue(if code == 4 { "DEADLINE_EXCEEDED" } else { "INTERNAL" }.into()));
        }
    } else if node.is_http() {
        node.set("http.response.status_code", Value::IntValue(http_status.parse().unwrap_or(500)));
        if node.get("error.type").is_none() {
            node.set("error.type", Value::StringValue(http_status.into()));
        }
    }
}

/// Every call to `stalled` times out after a second and is retried twice; the callers up the
/// chain then fail with timeouts of their own. The stalled server keeps working after its
/// callers gave up (its spans outlive their parents).
fn stall(rng: &mut Rng, node: &mut Node, stalled: &str) -> bool {
    let mut timed_out = false;
    let mut children = Vec::with_capacity(node.children.len());
    for mut c in std::mem::take(&mut node.children) {
        let calls_stalled = c.kind == Kind::Client && c.children.iter().any(|s| s.service == stalled);
        if calls_stalled {
            for attempt in 0..3 {
                let mut call = c.clone();
                for s in &mut call.children {
                    s.work = 4_000 * MS + rng.below(2_000) * MS;
                }
                call.fixed = Some(1_000 * MS);
                call.error = Some("context deadline exceeded".into());
                call.set("error.type", Value::StringValue("timeout".into()));
                if attempt > 0 {
                    call.gap = attempt * 100 * MS;
                    call.set("http.request.resend_count", Value::IntValue(attempt as i64));
                }
                children.push(call);
            }
            timed_out = true;
        } else {
            // A stall behind a queue slows the consumer, not the producer.
            if stall(rng, &mut c, stalled) && c.detached.is_none() {
                timed_out = true;
            }
            children.push(c);
        }
    }
    node.children = children;
    if timed_out {
        surface(node, "504", "upstream request timeout");
        node.set("error.type", Value::StringValue("timeout".into()));
    }
    timed_out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_refused() {
        for s in Scenario::ALL {
            assert_eq!(s.name().parse::<Scenario>(), Ok(s));
        }
        let e = "slow-db".parse::<Scenario>().unwrap_err();
        assert!(e.contains("slow-db") && e.contains("error-origin"), "{e}");
    }

    #[test]
    fn the_seed_decides_what_breaks() {
        let origins: std::collections::BTreeSet<_> =
            (0..40).map(|seed| Plan::new(Some(Scenario::ErrorOrigin), seed).origin.unwrap()).collect();
        assert_eq!(origins.len(), CALLEES.len(), "every callee is chosen for some seed");
        let slow: std::collections::BTreeSet<_> =
            (0..40).map(|seed| Plan::new(Some(Scenario::SlowDatabase), seed).slow.unwrap().0).collect();
        assert!(slow.len() > 3, "{slow:?}");
        for seed in [1, 99, 12345] {
            let (a, b) =
                (Plan::new(Some(Scenario::CascadingFailure), seed), Plan::new(Some(Scenario::CascadingFailure), seed));
            assert_eq!(a.stalled, b.stalled);
        }
        assert!(Plan::new(None, 5).origin.is_none());
    }

    #[test]
    fn an_error_surfaces_from_its_origin_to_the_root() {
        let mut rng = Rng::new(1);
        let mut root = dojo::build(&mut rng);
        fail_first(&mut root, "terraform-runner", &mut |n| fault(n, "terraform-runner"));
        assert!(root.error.is_some());
        fn deepest(n: &Node) -> Option<&Node> {
            n.children.iter().find_map(deepest).or(n.error.as_ref().map(|_| n))
        }
        let origin = deepest(&root).unwrap();
        assert_eq!((origin.service, origin.kind), ("terraform-runner", Kind::Server));
        assert!(origin.exception.is_some());
    }
}
