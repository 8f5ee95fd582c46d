//! Deployment: someone syncs an application in ArgoCD's UI; ArgoCD's API server asks the
//! Kubernetes API for the application's pods and then checks a pod's readiness, which reads the
//! application's database.

use spoor_model::synth::Rng;

use super::span::{Kind, Node, http, ms, postgres};

pub const SERVICES: &[&str] = &["argocd-ui", "argocd-server", "kube-apiserver"];
pub const STATEMENTS: &[(&str, &str)] =
    &[("schema_migrations", "SELECT version, applied_at FROM schema_migrations ORDER BY version DESC LIMIT $1")];

pub fn build(rng: &mut Rng) -> Node {
    let app = super::cicd::APPS[rng.below(super::cicd::APPS.len() as u64) as usize];
    let namespace = super::cicd::namespace(app);
    let pods = Node::new("kube-apiserver", Kind::Server, "").s("k8s.namespace.name", namespace).work(ms(rng, 15.0));
    let ready = Node::new(app, Kind::Server, "").work(ms(rng, 2.0)).child(postgres(
        rng,
        app,
        &app.replace('-', "_"),
        STATEMENTS[0].0,
        STATEMENTS[0].1,
    ));
    let server = Node::new("argocd-server", Kind::Server, "")
        .s("argocd.app.name", app)
        .work(ms(rng, 10.0))
        .child(http(rng, "argocd-server", "GET", "kubernetes.default.svc", "/api/v1/namespaces/{namespace}/pods", pods))
        .child(http(rng, "argocd-server", "GET", &format!("{app}.{namespace}.svc"), "/readyz", ready));
    http(rng, "argocd-ui", "GET", "argocd.acme.dev", "/api/v1/applications/{name}/resource-tree", server)
        .s("argocd.app.name", app)
}
