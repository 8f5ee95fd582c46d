//! The load-balancing exporter's `resolver` block (the collector's shapes): where the agent
//! finds its downstreams. A fixed list, a DNS name, or a Kubernetes Service's EndpointSlices.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The collector's `resolver` block; `dns` wins over `static` when both are set (as before
/// `k8s` existed), and `k8s` goes with neither.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ResolverConfig {
    #[serde(rename = "static", skip_serializing_if = "Option::is_none")]
    pub static_: Option<StaticResolverConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsResolverConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k8s: Option<K8sResolverConfig>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StaticResolverConfig {
    /// Endpoints as the exporter takes them (`host:port`), used as given.
    pub hostnames: Vec<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DnsResolverConfig {
    pub hostname: String,
    pub port: u16,
    /// How often the name is looked up again.
    #[serde(with = "spoor_process::duration")]
    pub interval: Duration,
    /// How long one lookup may take.
    #[serde(with = "spoor_process::duration")]
    pub timeout: Duration,
}

impl Default for DnsResolverConfig {
    fn default() -> Self {
        DnsResolverConfig {
            hostname: String::new(),
            port: 4317,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
        }
    }
}

/// Where the in-cluster service account's files are (every pod gets them unless
/// `automountServiceAccountToken: false`).
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The ready endpoints of a Kubernetes Service, read from the API server's EndpointSlices
/// (`discovery.k8s.io/v1`) every `interval`. Pod IPs rather than DNS: a headless Service's DNS
/// answer is cached by resolvers and lags pods that stop being ready; the slices say it at once.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct K8sResolverConfig {
    /// The Service's name, or `name.namespace` (the collector's form).
    pub service: String,
    /// Empty: the namespace in `service`, else the pod's own (the service account's
    /// `namespace` file).
    pub namespace: String,
    /// The ports to send to at every ready address (the collector's `ports`).
    pub ports: Vec<u16>,
    /// Set: instead of `ports`, the EndpointSlice port of this name (e.g. `otlp-grpc`), so the
    /// agent follows the pods' declared port.
    pub port_name: String,
    /// How often the slices are listed again.
    #[serde(with = "spoor_process::duration")]
    pub interval: Duration,
    /// How long one list request may take.
    #[serde(with = "spoor_process::duration")]
    pub timeout: Duration,
    /// The API server's base URL; empty: `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`
    /// (in-cluster). `http://` only for `kubectl proxy` and tests.
    pub api_server: String,
    /// The bearer token, re-read for every request (projected tokens rotate); empty: none.
    pub token_file: PathBuf,
    /// The CA the API server's certificate chains to.
    pub ca_file: PathBuf,
}

impl Default for K8sResolverConfig {
    fn default() -> Self {
        let sa = std::path::Path::new(SERVICE_ACCOUNT_DIR);
        K8sResolverConfig {
            service: String::new(),
            namespace: String::new(),
            ports: vec![4317],
            port_name: String::new(),
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            api_server: String::new(),
            token_file: sa.join("token"),
            ca_file: sa.join("ca.crt"),
        }
    }
}

impl K8sResolverConfig {
    /// The Service's name and the namespace given in config (`None`: the pod's own).
    pub fn service_and_namespace(&self) -> (&str, Option<&str>) {
        let service = self.service.trim();
        let (name, in_service) = match service.split_once('.') {
            Some((name, ns)) => (name, Some(ns)),
            None => (service, None),
        };
        let explicit = Some(self.namespace.trim()).filter(|n| !n.is_empty());
        (name, explicit.or(in_service))
    }

    pub fn validate(&self) -> Result<(), String> {
        let (name, namespace) = self.service_and_namespace();
        if name.is_empty() {
            return Err("resolver.k8s.service is empty".into());
        }
        // Both are DNS-1123 labels; checking here keeps them out of the URL unescaped.
        for (what, value) in [("service", Some(name)), ("namespace", namespace)] {
            if let Some(v) = value
                && !is_dns_label(v)
            {
                return Err(format!(
                    "resolver.k8s.{what} {v:?} is not a Kubernetes name (lowercase letters, digits and '-', at most 63)"
                ));
            }
        }
        if self.port_name.is_empty() && (self.ports.is_empty() || self.ports.contains(&0)) {
            return Err("resolver.k8s.ports needs at least one port, none of them 0 (or set port_name)".into());
        }
        if self.interval.is_zero() || self.timeout.is_zero() {
            return Err("resolver.k8s.interval and resolver.k8s.timeout must be positive".into());
        }
        let api = self.api_server.trim();
        if !api.is_empty() && !api.starts_with("https://") && !api.starts_with("http://") {
            return Err(format!("resolver.k8s.api_server {api:?}: expected https://host:port"));
        }
        // A service-account token is a credential for the whole namespace: never in the clear.
        if api.starts_with("http://") && !self.token_file.as_os_str().is_empty() {
            return Err(format!(
                "resolver.k8s.api_server {api:?} is plaintext: a token is only sent over https \
                 (for kubectl proxy, set token_file: \"\")"
            ));
        }
        Ok(())
    }
}

/// A DNS-1123 label, what Service and namespace names are.
fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

impl ResolverConfig {
    pub fn validate(&self) -> Result<(), String> {
        match (&self.k8s, &self.dns, &self.static_) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                Err("resolver: set only one of static, dns and k8s".into())
            }
            (Some(k8s), None, None) => k8s.validate(),
            (None, Some(dns), _) => {
                if dns.hostname.trim().is_empty() {
                    return Err("resolver.dns.hostname is empty".into());
                }
                if dns.interval.is_zero() || dns.timeout.is_zero() {
                    return Err("resolver.dns.interval and resolver.dns.timeout must be positive".into());
                }
                Ok(())
            }
            (None, None, Some(s)) if s.hostnames.iter().any(|h| h.trim().is_empty()) => {
                Err("resolver.static.hostnames has an empty entry".into())
            }
            (None, None, Some(s)) if s.hostnames.is_empty() => Err("resolver.static.hostnames is empty".into()),
            (None, None, Some(_)) => Ok(()),
            (None, None, None) => Err("resolver: set static.hostnames, dns.hostname or k8s.service".into()),
        }
    }

    /// `"k8s"`, `"dns"` or `"static"`, for metric labels (the collector's `resolver` label).
    pub fn kind(&self) -> &'static str {
        if self.k8s.is_some() {
            "k8s"
        } else if self.dns.is_some() {
            "dns"
        } else {
            "static"
        }
    }
}
