//! The `k8s` resolver: a Service's ready endpoints, listed from the API server's EndpointSlices
//! (`discovery.k8s.io/v1`, selected by the `kubernetes.io/service-name` label) with the pod's
//! service-account token. Every ready address × every configured port (or the slice's port of
//! `port_name`) becomes one `host:port` backend. Polling rather than a watch: one small list
//! per interval is enough for a ring that changes when pods come and go, and it needs no
//! reconnect logic.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use spoor_server::config::agent::{K8sResolverConfig, SERVICE_ACCOUNT_DIR};
use spoor_server::tls::ClientTlsConfig;
use spoor_server::tls::client::with_causes;

/// The largest list response read.
const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// A ready-to-poll view of one Service.
pub(crate) struct K8sLookup {
    /// The list URL, selector included.
    url: String,
    token_file: Option<PathBuf>,
    ports: PortChoice,
    timeout: Duration,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

/// Which ports each ready address is used with.
#[derive(Clone, Debug, PartialEq)]
enum PortChoice {
    Fixed(Vec<u16>),
    Named(String),
}

impl K8sLookup {
    /// Everything that can be known wrong before the first request: the API server's address,
    /// the namespace, the CA and the token file (each error names what to set or fix).
    pub fn new(cfg: &K8sResolverConfig) -> Result<K8sLookup, String> {
        cfg.validate()?;
        let api = match cfg.api_server.trim() {
            "" => in_cluster_api_server()?,
            url => url.trim_end_matches('/').to_string(),
        };
        let (service, namespace) = cfg.service_and_namespace();
        let namespace = match namespace {
            Some(ns) => ns.to_string(),
            None => {
                let path = std::path::Path::new(SERVICE_ACCOUNT_DIR).join("namespace");
                let ns = std::fs::read_to_string(&path).map_err(|e| {
                    format!(
                        "resolver.k8s.namespace is not set and {} cannot be read (not in a pod?): {e}",
                        path.display()
                    )
                })?;
                let ns = ns.trim();
                // It goes into the URL: a Kubernetes name or nothing.
                if ns.is_empty() || !ns.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
                    return Err(format!("{}: {ns:?} is not a namespace name", path.display()));
                }
                ns.to_string()
            }
        };
        let tls = if api.starts_with("https://") {
            ClientTlsConfig { ca_file: cfg.ca_file.clone(), ..ClientTlsConfig::default() }
        } else {
            ClientTlsConfig::default()
        };
        let connector = spoor_server::tls::client::connector(false, &tls).map_err(|e| format!("resolver.k8s: {e}"))?;
        let token_file = Some(cfg.token_file.clone()).filter(|p| !p.as_os_str().is_empty());
        if let Some(path) = &token_file {
            read_token(path)?;
        }
        let ports = if cfg.port_name.trim().is_empty() {
            PortChoice::Fixed(cfg.ports.clone())
        } else {
            PortChoice::Named(cfg.port_name.trim().to_string())
        };
        Ok(K8sLookup {
            url: format!(
                "{api}/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3D{service}"
            ),
            token_file,
            ports,
            timeout: cfg.timeout,
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// The URL listed, for logs.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Lists the slices once: the endpoints, sorted, or why not.
    pub async fn lookup(&self) -> Result<Vec<String>, String> {
        match tokio::time::timeout(self.timeout, self.list()).await {
            Ok(answer) => answer,
            Err(_) => Err(format!("{}: no answer within {:?}", self.url, self.timeout)),
        }
    }

    async fn list(&self) -> Result<Vec<String>, String> {
        let mut req = hyper::Request::get(&self.url).header("accept", "application/json");
        if let Some(path) = &self.token_file {
            // Projected service-account tokens are rotated on disk: read it every time.
            req = req.header("authorization", format!("Bearer {}", read_token(path)?));
        }
        let req = req.body(Empty::new()).map_err(|e| format!("{}: {e}", self.url))?;
        let resp = self.client.request(req).await.map_err(|e| format!("{}: {}", self.url, with_causes(&e)))?;
        let status = resp.status();
        // A Service's slices are kilobytes; a cap keeps a misdirected URL from filling memory.
        let body = http_body_util::Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| format!("{}: {e}", self.url))?
            .to_bytes();
        if !status.is_success() {
            // The API server explains refusals (RBAC, a missing namespace) in a Status object.
            let message = serde_json::from_slice::<ApiStatus>(&body)
                .map(|s| s.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned());
            return Err(format!("{}: HTTP {status}: {message}", self.url));
        }
        let list: SliceList =
            serde_json::from_slice(&body).map_err(|e| format!("{}: not an EndpointSliceList: {e}", self.url))?;
        let found = endpoints(&list, &self.ports);
        if found.is_empty() {
            // Said here, where it is known why; the caller keeps the last list either way.
            return Err(format!(
                "{}: no ready endpoints with the port(s) asked for in {} slice(s)",
                self.url,
                list.items.len()
            ));
        }
        Ok(found)
    }
}

fn in_cluster_api_server() -> Result<String, String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    match (var("KUBERNETES_SERVICE_HOST"), var("KUBERNETES_SERVICE_PORT")) {
        (Some(host), Some(port)) => {
            let host = host.trim();
            // An IPv6 service IP needs brackets in a URL.
            let host = if host.contains(':') { format!("[{host}]") } else { host.to_string() };
            Ok(format!("https://{host}:{}", port.trim()))
        }
        _ => Err("resolver.k8s.api_server is not set and KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT are not \
                  in the environment (not in a pod?)"
            .into()),
    }
}

fn read_token(path: &std::path::Path) -> Result<String, String> {
    let token = std::fs::read_to_string(path)
        .map_err(|e| format!("resolver.k8s.token_file {}: cannot read it: {e}", path.display()))?;
    let token = token.trim();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("resolver.k8s.token_file {}: not a bearer token", path.display()));
    }
    Ok(token.to_string())
}

// The few fields read from the API's JSON; everything else is ignored, so newer servers' additions
// do not break the resolver.

#[derive(Deserialize, Default)]
#[serde(default)]
struct ApiStatus {
    message: String,
}

/// Go writes an empty list as `null`: read it as empty.
fn null_is_empty<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SliceList {
    #[serde(deserialize_with = "null_is_empty")]
    items: Vec<Slice>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Slice {
    #[serde(deserialize_with = "null_is_empty")]
    endpoints: Vec<SliceEndpoint>,
    #[serde(deserialize_with = "null_is_empty")]
    ports: Vec<SlicePort>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SliceEndpoint {
    #[serde(deserialize_with = "null_is_empty")]
    addresses: Vec<String>,
    conditions: Conditions,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Conditions {
    /// The API's rule: unset means ready. A terminating pod is not ready.
    ready: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SlicePort {
    name: Option<String>,
    port: Option<u16>,
}

/// Every ready address of every slice with the chosen ports, as `host:port` (IPv6 in
/// brackets), sorted, without duplicates. With `Named`, a slice without a port of that name
/// contributes nothing (its pods do not serve it).
fn endpoints(list: &SliceList, choice: &PortChoice) -> Vec<String> {
    let mut out = Vec::new();
    for slice in &list.items {
        let ports: Vec<u16> = match choice {
            PortChoice::Fixed(ports) => ports.clone(),
            PortChoice::Named(name) => {
                slice.ports.iter().filter(|p| p.name.as_deref() == Some(name.as_str())).filter_map(|p| p.port).collect()
            }
        };
        for endpoint in slice.endpoints.iter().filter(|e| e.conditions.ready.unwrap_or(true)) {
            for address in &endpoint.addresses {
                for &port in &ports {
                    out.push(match address.parse::<IpAddr>() {
                        Ok(ip) => SocketAddr::new(ip, port).to_string(),
                        // addressType FQDN
                        Err(_) => format!("{address}:{port}"),
                    });
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> SliceList {
        serde_json::from_str(json).unwrap()
    }

    const TWO_SLICES: &str = r#"{"kind":"EndpointSliceList","apiVersion":"discovery.k8s.io/v1","metadata":{},"items":[
        {"metadata":{"name":"spoor-abc"},"addressType":"IPv4",
         "endpoints":[
           {"addresses":["10.0.0.2"],"conditions":{"ready":true,"serving":true,"terminating":false},"hostname":"spoor-0"},
           {"addresses":["10.0.0.10"]},
           {"addresses":["10.0.0.3"],"conditions":{"ready":false,"serving":true,"terminating":true}}],
         "ports":[{"name":"otlp-grpc","port":4317,"protocol":"TCP"},{"name":"api","port":3200}]},
        {"metadata":{"name":"spoor-v6"},"addressType":"IPv6",
         "endpoints":[{"addresses":["fd00::1"],"conditions":{"ready":true}}],
         "ports":[{"name":"otlp-grpc","port":14317}]},
        {"metadata":{"name":"spoor-empty"},"addressType":"IPv4","endpoints":null,"ports":null}]}"#;

    #[test]
    fn ready_addresses_times_ports() {
        let list = parse(TWO_SLICES);
        assert_eq!(
            endpoints(&list, &PortChoice::Fixed(vec![4317])),
            ["10.0.0.10:4317", "10.0.0.2:4317", "[fd00::1]:4317"]
        );
        assert_eq!(
            endpoints(&list, &PortChoice::Fixed(vec![4318, 4317])),
            ["10.0.0.10:4317", "10.0.0.10:4318", "10.0.0.2:4317", "10.0.0.2:4318", "[fd00::1]:4317", "[fd00::1]:4318"]
        );
        // Named: each slice's own port of that name.
        assert_eq!(
            endpoints(&list, &PortChoice::Named("otlp-grpc".into())),
            ["10.0.0.10:4317", "10.0.0.2:4317", "[fd00::1]:14317"]
        );
        assert!(endpoints(&list, &PortChoice::Named("zipkin".into())).is_empty());
        assert!(endpoints(&parse(r#"{"items":[]}"#), &PortChoice::Fixed(vec![4317])).is_empty());
    }

    fn config(service: &str, namespace: &str) -> K8sResolverConfig {
        K8sResolverConfig {
            service: service.into(),
            namespace: namespace.into(),
            api_server: "http://127.0.0.1:1".into(),
            token_file: PathBuf::new(),
            ..K8sResolverConfig::default()
        }
    }

    #[test]
    fn url_names_the_service_and_namespace() {
        let l = K8sLookup::new(&config("spoor-headless", "observability")).unwrap();
        assert_eq!(
            l.url(),
            "http://127.0.0.1:1/apis/discovery.k8s.io/v1/namespaces/observability/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Dspoor-headless"
        );
        // The collector's `name.namespace` form; an explicit namespace wins.
        assert!(K8sLookup::new(&config("spoor.tracing", "")).unwrap().url().contains("/namespaces/tracing/"));
        assert!(K8sLookup::new(&config("spoor.tracing", "obs")).unwrap().url().contains("/namespaces/obs/"));
    }

    #[test]
    fn bad_settings_are_named() {
        let err = |c: K8sResolverConfig| K8sLookup::new(&c).err().unwrap();
        assert!(err(config("", "ns")).contains("resolver.k8s.service is empty"));
        assert!(err(config("Spoor", "ns")).contains("not a Kubernetes name"));
        assert!(err(config("spoor", "a/b")).contains("resolver.k8s.namespace \"a/b\""));
        assert!(err(K8sResolverConfig { ports: vec![], ..config("s", "ns") }).contains("resolver.k8s.ports"));
        assert!(err(K8sResolverConfig { api_server: "ftp://x".into(), ..config("s", "ns") }).contains("api_server"));
        let clear = err(K8sResolverConfig { token_file: "/t".into(), ..config("s", "ns") });
        assert!(clear.contains("is plaintext: a token is only sent over https"), "{clear}");
        let missing = err(K8sResolverConfig {
            api_server: "https://127.0.0.1:1".into(),
            token_file: "/nonexistent/token".into(),
            ca_file: PathBuf::new(),
            ..config("s", "ns")
        });
        assert!(missing.contains("resolver.k8s.token_file /nonexistent/token"), "{missing}");
        let ca = err(K8sResolverConfig {
            api_server: "https://127.0.0.1:1".into(),
            ca_file: "/nonexistent/ca.crt".into(),
            ..config("s", "ns")
        });
        assert!(ca.contains("/nonexistent/ca.crt"), "{ca}");
    }

    /// A plaintext API stand-in that answers every request with `status` and `body`.
    async fn api(status: &'static str, body: &'static str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = vec![0; 4096];
                let _ = conn.read(&mut buf).await;
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(response.as_bytes()).await;
            }
        });
        url
    }

    #[tokio::test]
    async fn answers_become_lists_or_named_errors() {
        let lookup =
            |url: String| K8sLookup::new(&K8sResolverConfig { api_server: url, ..config("spoor", "ns") }).unwrap();
        let ok = lookup(api("200 OK", TWO_SLICES).await).lookup().await.unwrap();
        assert_eq!(ok, ["10.0.0.10:4317", "10.0.0.2:4317", "[fd00::1]:4317"]);
        let forbidden = r#"{"kind":"Status","status":"Failure","message":"endpointslices.discovery.k8s.io is forbidden: User \"system:serviceaccount:ns:x\" cannot list resource","code":403}"#;
        let e = lookup(api("403 Forbidden", forbidden).await).lookup().await.unwrap_err();
        assert!(e.contains("HTTP 403 Forbidden: endpointslices.discovery.k8s.io is forbidden"), "{e}");
        let e = lookup(api("200 OK", "<html>proxy</html>").await).lookup().await.unwrap_err();
        assert!(e.contains("not an EndpointSliceList"), "{e}");
        let e = lookup(
            api("200 OK", r#"{"items":[{"endpoints":[{"addresses":["10.0.0.1"],"conditions":{"ready":false}}]}]}"#)
                .await,
        )
        .lookup()
        .await
        .unwrap_err();
        assert!(e.contains("no ready endpoints with the port(s) asked for in 1 slice(s)"), "{e}");
    }

    #[tokio::test]
    async fn an_unreachable_api_server_is_an_error_not_a_list() {
        let l = K8sLookup::new(&config("spoor", "ns")).unwrap();
        let e = l.lookup().await.unwrap_err();
        assert!(e.starts_with("http://127.0.0.1:1/apis/"), "{e}");
    }
}
