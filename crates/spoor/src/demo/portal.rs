//! The developer portal: a page of the software catalog through NGINX to Backstage, which reads
//! PostgreSQL, asks the GitHub API about the repository and ArgoCD's API about the deployments.

use spoor_model::synth::Rng;

use super::span::{Kind, Node, http, ms, net, postgres};

pub const SERVICES: &[&str] = &["nginx", "backstage", "argocd-server"];
pub const STATEMENTS: &[(&str, &str)] = &[
    (
        "final_entities",
        "SELECT entity_id, kind, namespace, name, final_entity FROM final_entities WHERE kind = $1 ORDER BY name LIMIT $2",
    ),
    ("relations", "SELECT source_entity_ref, type, target_entity_ref FROM relations WHERE source_entity_ref = ANY($1)"),
];

const KINDS: &[&str] = &["component", "api", "system", "group"];

pub fn build(rng: &mut Rng) -> Node {
    let kind = KINDS[rng.below(KINDS.len() as u64) as usize];
    let repo = super::cicd::APPS[rng.below(super::cicd::APPS.len() as u64) as usize];
    let github = Node::new("backstage", Kind::Client, "GET")
        .s("http.request.method", "GET")
        .s("server.address", "api.github.com")
        .i("server.port", 443)
        .s("peer.service", "github-api")
        .s("url.full", format!("https://api.github.com/repos/acme/{repo}"))
        .i("http.response.status_code", 200)
        .work(ms(rng, 120.0));
    let argocd = Node::new("argocd-server", Kind::Server, "")
        .s("argocd.app.name", repo)
        .work(ms(rng, 15.0))
        .child(Node::new("argocd-server", Kind::Client, "GET redis").s("db.system", "redis").work(net(rng)));
    let backstage = Node::new("backstage", Kind::Server, "")
        .s("user.id", format!("user:default/dev{}", rng.below(40)))
        .work(ms(rng, 8.0))
        .child(postgres(rng, "backstage", "backstage_catalog", STATEMENTS[0].0, STATEMENTS[0].1))
        .child(postgres(rng, "backstage", "backstage_catalog", STATEMENTS[1].0, STATEMENTS[1].1))
        .child(github)
        .child(http(rng, "backstage", "GET", "argocd-server.argocd.svc", "/api/v1/applications", argocd));
    let root = Node::new("nginx", Kind::Server, format!("GET /catalog/{kind}"))
        .s("http.request.method", "GET")
        .s("http.route", "/catalog/{kind}")
        .s("url.path", format!("/catalog/{kind}"))
        .s("url.scheme", "https")
        .s("server.address", "portal.acme.dev")
        .s("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0")
        .i("http.response.status_code", 200)
        .work(net(rng));
    root.child(http(rng, "nginx", "GET", "backstage.platform.svc", "/api/catalog/entities", backstage))
}
