//! CI/CD: a push to GitHub triggers a Jenkins pipeline (checkout, image build, tests, push to
//! Harbor), whose deploy stage asks ArgoCD to sync; ArgoCD's application controller patches the
//! Deployment through the Kubernetes API and waits for the rollout. The sync span carries the
//! attributes Spoor's DORA extractor reads (docs/dora.md): it is the deployment, the push is the
//! change, so the lead time is the sync's end minus the push's start.
//! Only the sync span names an environment: a Jenkins stage of type `deploy` with an
//! environment would count as a second deployment of the same change.

use spoor_model::synth::Rng;

use super::span::{Kind, MS, Node, grpc, http, ms};

/// The platform's own services, which the pipelines build and deploy.
pub const APPS: &[&str] = &["backstage", "lab-service", "mattermost", "terraform-runner"];
pub const SERVICES: &[&str] =
    &["github", "jenkins", "harbor", "argocd-server", "argocd-application-controller", "kube-apiserver"];
pub const ENVIRONMENT: &str = "production";
const S: u64 = 1_000 * MS;

/// One run of a pipeline: what it deploys and how that ends.
pub struct Release {
    pub app: &'static str,
    pub run: u64,
    pub revision: String,
    pub deployment_id: String,
    pub failed: bool,
}

impl Release {
    pub fn new(rng: &mut Rng, app: &'static str, run: u64, failed: bool) -> Release {
        let revision = format!("{:016x}{:016x}{:08x}", rng.next_u64(), rng.next_u64(), rng.below(1 << 32));
        let deployment_id = format!("{app}-{run}-{}", &revision[..7]);
        Release { app, run, revision, deployment_id, failed }
    }
}

pub fn namespace(app: &str) -> &'static str {
    match app {
        "lab-service" | "terraform-runner" => "dojo",
        "mattermost" => "collab",
        _ => "platform",
    }
}

fn stage(name: &str, task_type: &str, work: u64) -> Node {
    Node::new("jenkins", Kind::Internal, format!("Stage: {name}"))
        .s("cicd.pipeline.task.name", name)
        .s("cicd.pipeline.task.type", task_type)
        .work(work)
}

fn secs(rng: &mut Rng, median: f64) -> u64 {
    (rng.lognormal(median, 0.3) * S as f64) as u64
}

pub fn build(rng: &mut Rng, r: &Release) -> Node {
    let (app, repo) = (r.app, format!("https://github.com/acme/{}", r.app));
    let ns = namespace(app);
    let tag = &r.revision[..12];
    let patched = Node::new("kube-apiserver", Kind::Server, "").s("k8s.namespace.name", ns).work(ms(rng, 20.0));
    let patch = http(
        rng,
        "argocd-application-controller",
        "PATCH",
        "kubernetes.default.svc",
        "/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
        patched,
    );
    let status = Node::new("kube-apiserver", Kind::Server, "").s("k8s.namespace.name", ns).work(ms(rng, 8.0));
    let mut rollout = Node::new("argocd-application-controller", Kind::Internal, "wait for rollout")
        .s("k8s.namespace.name", ns)
        .s("k8s.deployment.name", app)
        .s("container.image.name", format!("harbor.acme.dev/platform/{app}"))
        .s("container.image.tag", tag)
        .work(secs(rng, 40.0))
        .child(http(
            rng,
            "argocd-application-controller",
            "GET",
            "kubernetes.default.svc",
            "/apis/apps/v1/namespaces/{namespace}/deployments/{name}/status",
            status,
        ));
    let mut sync = Node::new("argocd-application-controller", Kind::Internal, format!("sync {app}"))
        .s("argocd.app.name", app)
        .s("argocd.app.source.repo_url", repo.clone())
        .s("argocd.app.destination.namespace", ns)
        .s("argocd.sync.revision", r.revision.clone())
        .s("argocd.sync.id", format!("{app}-sync-{}", r.run))
        .s("deployment.id", r.deployment_id.clone())
        .s("deployment.name", app)
        .s("deployment.environment.name", ENVIRONMENT)
        .s("argocd.sync.phase", if r.failed { "Failed" } else { "Succeeded" })
        .s("deployment.status", if r.failed { "failed" } else { "succeeded" })
        .work(secs(rng, 3.0))
        .child(patch);
    if r.failed {
        rollout.error = Some("Deployment exceeded its progress deadline".into());
        rollout.exception = Some((
            "ProgressDeadlineExceeded".into(),
            format!("deployment {app}: pods in CrashLoopBackOff after image {tag}"),
        ));
        sync.error = Some(format!("sync failed: rollout of {app} did not complete"));
    }
    let mut sync = sync.child(rollout);
    sync.detached = Some(secs(rng, 2.0));
    let argocd = Node::new("argocd-server", Kind::Server, "").s("argocd.app.name", app).work(ms(rng, 30.0)).child(sync);
    let harbor = Node::new("harbor", Kind::Server, "").s("harbor.project", "platform").work(secs(rng, 4.0));
    let push = stage("push image", "build", secs(rng, 2.0)).child(http(
        rng,
        "jenkins",
        "PUT",
        "harbor.acme.dev",
        "/v2/{name}/manifests/{reference}",
        harbor,
    ));
    let deploy = stage("deploy", "deploy", secs(rng, 1.0)).child(grpc(
        rng,
        "jenkins",
        "application.ApplicationService",
        "Sync",
        "argocd-server.argocd.svc",
        argocd,
    ));
    let mut pipeline = Node::new("jenkins", Kind::Internal, format!("{app}/main #{}", r.run))
        .s("cicd.pipeline.name", format!("{app}/main"))
        .s("cicd.pipeline.run.id", r.run.to_string())
        .s("cicd.pipeline.result", "success")
        .s("vcs.ref.head.revision", r.revision.clone())
        .s("vcs.repository.url.full", repo.clone())
        .work(secs(rng, 2.0))
        .children([
            stage("checkout", "build", secs(rng, 6.0)),
            stage("build image", "build", secs(rng, 120.0)).s("container.image.tag", tag),
            stage("test", "test", secs(rng, 70.0)),
            push,
            deploy,
        ]);
    pipeline.detached = Some(secs(rng, 3.0));
    let webhook = Node::new("jenkins", Kind::Server, "").work(ms(rng, 15.0)).child(pipeline);
    Node::new("github", Kind::Server, "git push")
        .s("vcs.repository.url.full", repo)
        .s("vcs.ref.head.name", "main")
        .s("vcs.ref.head.revision", r.revision.clone())
        .s("vcs.change.id", format!("{}", 1000 + r.run))
        .work(ms(rng, 80.0))
        .child(http(rng, "github", "POST", "jenkins.acme.dev", "/github-webhook/", webhook))
}

/// The incident a failed deployment causes: a span open from when it was raised until it was
/// resolved, naming the deployment as its cause.
pub fn incident(rng: &mut Rng, r: &Release, id: &str, open_for_ns: u64) -> Node {
    let mut n = Node::new(r.app, Kind::Internal, format!("incident {id}"))
        .s("incident.id", id)
        .s("incident.cause.deployment.id", r.deployment_id.clone())
        .s("incident.severity", "SEV2")
        .s("deployment.environment.name", ENVIRONMENT)
        .s("incident.title", format!("{} returning 5xx after deploy", r.app))
        .work(MS);
    n.fixed = Some(open_for_ns + rng.below(10) * S);
    n
}
