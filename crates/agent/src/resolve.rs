//! Where the downstreams are (the load-balancing exporter's `resolver` block, collector.md §6):
//! a fixed list, a DNS name re-resolved every `interval` into one `ip:port` per address, or a
//! Kubernetes Service's ready endpoints (`k8s`, listed from its EndpointSlices every
//! `interval`). The current list, sorted, is published on a watch channel; a failed or empty
//! lookup keeps the last good list.

mod k8s;
mod publish;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;

use spoor_server::config::agent::{DnsResolverConfig, ResolverConfig};
use spoor_server::error::StartupError;

use k8s::K8sLookup;
use publish::Publisher;
pub use publish::ResolverStats;

/// Publishes the current endpoint list; dropping it stops the polling task (DNS, k8s).
pub struct Resolver {
    kind: &'static str,
    rx: watch::Receiver<Vec<String>>,
    stats: Arc<ResolverStats>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// Static: held so receivers' `changed()` waits (rather than fails) while the resolver lives.
    _static: Option<watch::Sender<Vec<String>>>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").field("kind", &self.kind).field("endpoints", &*self.rx.borrow()).finish()
    }
}

impl Resolver {
    /// Checks the configuration (an invalid one is [`StartupError::new`]). Static: the list is
    /// there at once. DNS and k8s: a task (needs a Tokio runtime) looks the backends up right
    /// away and then every `interval`; the list is empty until the first lookup succeeds.
    pub fn start(cfg: ResolverConfig) -> Result<Resolver, StartupError> {
        cfg.validate().map_err(StartupError::new)?;
        let stats = Arc::new(ResolverStats::default());
        let kind = cfg.kind();
        let (source, interval) = match (cfg.k8s, cfg.dns) {
            (Some(k8s), _) => (Source::K8s(Box::new(K8sLookup::new(&k8s).map_err(StartupError::new)?)), k8s.interval),
            (None, Some(dns)) => {
                let interval = dns.interval;
                (Source::Dns(dns), interval)
            }
            (None, None) => {
                let mut list = cfg.static_.map(|s| s.hostnames).unwrap_or_default();
                list.iter_mut().for_each(|h| *h = h.trim().to_string());
                list.sort();
                list.dedup();
                stats.resolutions_ok.fetch_add(1, Ordering::Relaxed);
                stats.backend_updates.fetch_add(1, Ordering::Relaxed);
                let (tx, rx) = watch::channel(list);
                return Ok(Resolver { kind, rx, stats, task: None, _static: Some(tx) });
            }
        };
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| StartupError::new(format!("the {kind} resolver needs a Tokio runtime")))?;
        let (tx, rx) = watch::channel(Vec::new());
        let publisher = Publisher { tx, stats: stats.clone() };
        let task = handle.spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                publisher.publish(source.name(), source.lookup().await);
            }
        });
        Ok(Resolver { kind, rx, stats, task: Some(task), _static: None })
    }

    /// A receiver of the sorted endpoint list; `changed()` fires when it changes, and fails
    /// once the resolver is dropped.
    pub fn subscribe(&self) -> watch::Receiver<Vec<String>> {
        self.rx.clone()
    }

    /// The list now.
    pub fn endpoints(&self) -> Vec<String> {
        self.rx.borrow().clone()
    }

    pub fn stats(&self) -> &Arc<ResolverStats> {
        &self.stats
    }

    /// `"k8s"`, `"dns"` or `"static"`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// What a polling resolver asks.
enum Source {
    Dns(DnsResolverConfig),
    /// Boxed: it holds an HTTP client, the DNS settings are a few words.
    K8s(Box<K8sLookup>),
}

impl Source {
    /// For the log: the name looked up, or the URL listed.
    fn name(&self) -> &str {
        match self {
            Source::Dns(dns) => &dns.hostname,
            Source::K8s(k8s) => k8s.url(),
        }
    }

    async fn lookup(&self) -> Result<Vec<String>, String> {
        match self {
            Source::Dns(dns) => dns_lookup(&dns.hostname, dns.port, dns.timeout).await,
            Source::K8s(k8s) => k8s.lookup().await,
        }
    }
}

/// Looks `hostname` up once: one `ip:port` per address.
async fn dns_lookup(hostname: &str, port: u16, timeout: Duration) -> Result<Vec<String>, String> {
    match tokio::time::timeout(timeout, tokio::net::lookup_host((hostname, port))).await {
        Ok(Ok(addrs)) => Ok(endpoint_list(addrs)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// `ip:port` strings (IPv6 in brackets), sorted, without duplicates.
fn endpoint_list(addrs: impl Iterator<Item = SocketAddr>) -> Vec<String> {
    let mut list: Vec<String> = addrs.map(|a| a.to_string()).collect();
    list.sort();
    list.dedup();
    list
}

#[cfg(test)]
mod tests {
    use spoor_server::config::agent::{K8sResolverConfig, StaticResolverConfig};

    use super::*;

    fn dns(hostname: &str, port: u16, interval_ms: u64) -> ResolverConfig {
        ResolverConfig {
            static_: None,
            k8s: None,
            dns: Some(DnsResolverConfig {
                hostname: hostname.into(),
                port,
                interval: Duration::from_millis(interval_ms),
                timeout: Duration::from_secs(1),
            }),
        }
    }

    #[test]
    fn config_collector_shape() {
        let c: ResolverConfig = serde_saphyr::from_str("static:\n  hostnames: [b:4317, a:4317]\n").unwrap();
        assert_eq!(c.static_.as_ref().unwrap().hostnames, ["b:4317", "a:4317"]);
        assert_eq!(c.kind(), "static");
        c.validate().unwrap();
        let c: ResolverConfig = serde_saphyr::from_str("dns:\n  hostname: tier2.svc\n").unwrap();
        assert_eq!(c.dns, Some(DnsResolverConfig { hostname: "tier2.svc".into(), ..DnsResolverConfig::default() }));
        let d = c.dns.as_ref().unwrap();
        assert_eq!((d.port, d.interval, d.timeout), (4317, Duration::from_secs(5), Duration::from_secs(1)));
        let c: ResolverConfig = serde_saphyr::from_str(
            "static: {hostnames: [x:1]}\ndns: {hostname: tier2, port: 4318, interval: 30s, timeout: 500ms}\n",
        )
        .unwrap();
        assert_eq!(c.kind(), "dns");
        assert_eq!(c.dns.as_ref().unwrap().timeout, Duration::from_millis(500));
        let back: ResolverConfig = serde_saphyr::from_str(&serde_saphyr::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        assert!(ResolverConfig::default().validate().is_err());
        assert!(serde_saphyr::from_str::<ResolverConfig>("static: {hostnames: []}\n").unwrap().validate().is_err());
        assert!(serde_saphyr::from_str::<ResolverConfig>("dns: {port: 1}\n").unwrap().validate().is_err());
        // k8s: the collector's `name.namespace` form, its own settings, and alone.
        let c: ResolverConfig = serde_saphyr::from_str("k8s: {service: spoor-headless.observability}\n").unwrap();
        assert_eq!(c.kind(), "k8s");
        c.validate().unwrap();
        let k = c.k8s.as_ref().unwrap();
        assert_eq!(k.service_and_namespace(), ("spoor-headless", Some("observability")));
        assert_eq!((k.ports.as_slice(), k.interval), (&[4317][..], Duration::from_secs(10)));
        assert_eq!(k.token_file, std::path::Path::new("/var/run/secrets/kubernetes.io/serviceaccount/token"));
        let c: ResolverConfig = serde_saphyr::from_str(
            "k8s: {service: s, namespace: obs, port_name: otlp-grpc, interval: 30s, api_server: 'https://10.0.0.1:443'}\n",
        )
        .unwrap();
        assert_eq!(
            c.k8s,
            Some(K8sResolverConfig {
                service: "s".into(),
                namespace: "obs".into(),
                port_name: "otlp-grpc".into(),
                interval: Duration::from_secs(30),
                api_server: "https://10.0.0.1:443".into(),
                ..K8sResolverConfig::default()
            })
        );
        let back: ResolverConfig = serde_saphyr::from_str(&serde_saphyr::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        let both = serde_saphyr::from_str::<ResolverConfig>("k8s: {service: x}\ndns: {hostname: y}\n").unwrap();
        assert_eq!(both.validate().unwrap_err(), "resolver: set only one of static, dns and k8s");
        assert!(serde_saphyr::from_str::<ResolverConfig>("k8s: {service: x, portz: [1]}\n").is_err());
    }

    #[tokio::test]
    async fn static_list_is_sorted_and_fixed() {
        let cfg = ResolverConfig {
            static_: Some(StaticResolverConfig { hostnames: vec!["b:4317".into(), "a:4317".into(), "b:4317".into()] }),
            dns: None,
            k8s: None,
        };
        let r = Resolver::start(cfg).unwrap();
        assert_eq!(r.endpoints(), ["a:4317", "b:4317"]);
        assert_eq!(*r.subscribe().borrow(), ["a:4317", "b:4317"]);
        assert_eq!(r.kind(), "static");
        assert_eq!(r.stats().backend_updates.load(Ordering::Relaxed), 1);
        assert!(Resolver::start(ResolverConfig::default()).is_err());
    }

    #[tokio::test]
    async fn dns_localhost_carries_the_port() {
        let r = Resolver::start(dns("localhost", 4318, 50)).unwrap();
        let mut rx = r.subscribe();
        let list = tokio::time::timeout(Duration::from_secs(3), rx.wait_for(|l| !l.is_empty()))
            .await
            .expect("localhost resolves")
            .unwrap()
            .clone();
        assert!(list.iter().all(|e| e.ends_with(":4318")), "{list:?}");
        assert!(list.iter().any(|e| e == "127.0.0.1:4318" || e == "[::1]:4318"), "{list:?}");
        let mut sorted = list.clone();
        sorted.sort();
        assert_eq!(sorted, list);
        // Re-resolving the same answer is not an update.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let s = r.stats();
        assert!(s.resolutions_ok.load(Ordering::Relaxed) >= 2);
        assert_eq!(s.backend_updates.load(Ordering::Relaxed), 1);
        assert_eq!(s.resolutions_failed.load(Ordering::Relaxed), 0);
        // Dropping the resolver ends the task, and with it the channel.
        drop(r);
        tokio::time::timeout(Duration::from_secs(1), async { while rx.changed().await.is_ok() {} }).await.unwrap();
    }

    #[tokio::test]
    async fn failed_lookup_keeps_the_last_good_list() {
        let stats = Arc::new(ResolverStats::default());
        let (tx, rx) = watch::channel(Vec::new());
        let p = Publisher { tx, stats: stats.clone() };
        let refresh = |host: &'static str| dns_lookup(host, 4317, Duration::from_secs(1));
        p.publish("localhost", refresh("localhost").await);
        let good = rx.borrow().clone();
        assert!(!good.is_empty());
        p.publish("no-such-host.invalid", refresh("no-such-host.invalid").await);
        assert_eq!(*rx.borrow(), good);
        assert_eq!(stats.resolutions_failed.load(Ordering::Relaxed), 1);
        assert_eq!(stats.resolutions_ok.load(Ordering::Relaxed), 1);
        assert_eq!(stats.backend_updates.load(Ordering::Relaxed), 1);
        // An address literal resolves to itself: the list changes.
        p.publish("::1", refresh("::1").await);
        assert_eq!(*rx.borrow(), ["[::1]:4317"]);
        assert_eq!(stats.backend_updates.load(Ordering::Relaxed), 2);

        // Through the resolver: nothing to publish, failures counted.
        let r = Resolver::start(dns("no-such-host.invalid", 4317, 50)).unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            while r.stats().resolutions_failed.load(Ordering::Relaxed) < 2 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap();
        assert!(r.endpoints().is_empty());
        assert_eq!(r.stats().backend_updates.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn endpoint_strings() {
        let addrs = ["[::1]:4317", "10.0.0.2:4317", "10.0.0.10:4317", "10.0.0.2:4317"].map(|a| a.parse().unwrap());
        assert_eq!(endpoint_list(addrs.into_iter()), ["10.0.0.10:4317", "10.0.0.2:4317", "[::1]:4317"]);
    }
}
