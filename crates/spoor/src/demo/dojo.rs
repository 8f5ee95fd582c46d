//! Dojo lab provisioning: Backstage asks the lab service (gRPC) for a lab, the lab service has
//! Terraform create the cloud resources (the cloud provider's API) and then creates the lab's
//! namespace and workload through the Kubernetes API.

use spoor_model::synth::Rng;

use super::span::{Kind, Node, grpc, http, ms, postgres};

pub const SERVICES: &[&str] = &["backstage", "lab-service", "terraform-runner", "kube-apiserver"];
pub const STATEMENTS: &[(&str, &str)] = &[(
    "lab_sessions",
    "INSERT INTO lab_sessions (id, user_ref, lab_id, state, created_at) VALUES ($1, $2, $3, $4, now())",
)];

const LABS: &[&str] = &["tracing-101", "k8s-networking", "gitops-basics", "observability-slos"];

/// A call to the cloud provider's API, which is not ours to trace: a CLIENT span only.
fn cloud(rng: &mut Rng, service: &str, method: &str, median_ms: f64) -> Node {
    Node::new("terraform-runner", Kind::Client, format!("{service}.{method}"))
        .s("rpc.system", "aws-api")
        .s("rpc.service", service)
        .s("rpc.method", method)
        .s("cloud.provider", "aws")
        .s("cloud.region", "eu-west-1")
        .s("server.address", format!("{}.eu-west-1.amazonaws.com", service.to_lowercase()))
        .s("peer.service", "aws-api")
        .s("http.request.method", "POST")
        .i("http.response.status_code", 200)
        .work(ms(rng, median_ms))
}

pub fn build(rng: &mut Rng) -> Node {
    let lab = LABS[rng.below(LABS.len() as u64) as usize];
    let namespace = format!("lab-{:06x}", rng.below(1 << 24));
    let apply = Node::new("terraform-runner", Kind::Internal, "terraform apply")
        .s("terraform.workspace", namespace.clone())
        .work(ms(rng, 400.0))
        .child(cloud(rng, "EC2", "CreateSecurityGroup", 180.0))
        .child(cloud(rng, "EC2", "RunInstances", 900.0))
        .child(cloud(rng, "Route53", "ChangeResourceRecordSets", 250.0));
    let terraform = Node::new("terraform-runner", Kind::Server, "").work(ms(rng, 20.0)).child(apply);
    let k8s = |rng: &mut Rng, route: &str| {
        let server = Node::new("kube-apiserver", Kind::Server, "")
            .s("k8s.namespace.name", namespace.clone())
            .work(ms(rng, 12.0));
        http(rng, "lab-service", "POST", "kubernetes.default.svc", route, server)
            .s("k8s.namespace.name", namespace.clone())
    };
    let ns = k8s(rng, "/api/v1/namespaces");
    let workload = k8s(rng, "/apis/apps/v1/namespaces/{namespace}/deployments");
    let lab_service = Node::new("lab-service", Kind::Server, "")
        .s("dojo.lab.id", lab)
        .work(ms(rng, 6.0))
        .child(postgres(rng, "lab-service", "dojo", STATEMENTS[0].0, STATEMENTS[0].1))
        .child(grpc(rng, "lab-service", "terraform.v1.Runner", "Apply", "terraform-runner.dojo.svc", terraform))
        .child(ns)
        .child(workload);
    Node::new("backstage", Kind::Server, "POST /api/dojo/labs")
        .s("http.request.method", "POST")
        .s("http.route", "/api/dojo/labs")
        .s("url.scheme", "https")
        .s("server.address", "portal.acme.dev")
        .i("http.response.status_code", 201)
        .s("dojo.lab.id", lab)
        .work(ms(rng, 5.0))
        .child(grpc(rng, "backstage", "dojo.v1.LabService", "ProvisionLab", "lab-service.dojo.svc", lab_service))
}
