//! Where the downstreams are (the load-balancing exporter's `resolver` block, collector.md §6):
//! a fixed list, or a DNS name re-resolved every `interval` into one `ip:port` per address.
//! The current list, sorted, is published on a watch channel; a failed or empty lookup keeps
//! the last good list.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use spoor_server::config::agent::ResolverConfig;
use spoor_server::error::StartupError;

/// Counters for self metrics (`otelcol_loadbalancer_num_resolutions{success}`,
/// `..._num_backend_updates`).
#[derive(Debug, Default)]
pub struct ResolverStats {
    pub resolutions_ok: AtomicU64,
    pub resolutions_failed: AtomicU64,
    /// Times the published list changed.
    pub backend_updates: AtomicU64,
}

/// Publishes the current endpoint list; dropping it stops the DNS task.
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
    /// there at once. DNS: a task (needs a Tokio runtime) looks the name up right away and then
    /// every `interval`; the list is empty until the first lookup succeeds.
    pub fn start(cfg: ResolverConfig) -> Result<Resolver, StartupError> {
        cfg.validate().map_err(StartupError::new)?;
        let stats = Arc::new(ResolverStats::default());
        let kind = cfg.kind();
        let Some(dns) = cfg.dns else {
            let mut list = cfg.static_.map(|s| s.hostnames).unwrap_or_default();
            list.iter_mut().for_each(|h| *h = h.trim().to_string());
            list.sort();
            list.dedup();
            stats.resolutions_ok.fetch_add(1, Ordering::Relaxed);
            stats.backend_updates.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = watch::channel(list);
            return Ok(Resolver { kind, rx, stats, task: None, _static: Some(tx) });
        };
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| StartupError::new("the DNS resolver needs a Tokio runtime"))?;
        let (tx, rx) = watch::channel(Vec::new());
        let publisher = Publisher { tx, stats: stats.clone() };
        let task = handle.spawn(async move {
            let mut tick = tokio::time::interval(dns.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                publisher.refresh(&dns.hostname, dns.port, dns.timeout).await;
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

    /// `"dns"` or `"static"`.
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

/// One DNS resolver's state: the channel it publishes on and its counters.
struct Publisher {
    tx: watch::Sender<Vec<String>>,
    stats: Arc<ResolverStats>,
}

impl Publisher {
    /// Looks `hostname` up once; publishes the answer when it is non-empty and differs.
    async fn refresh(&self, hostname: &str, port: u16, timeout: Duration) {
        let answer = match tokio::time::timeout(timeout, tokio::net::lookup_host((hostname, port))).await {
            Ok(Ok(addrs)) => Ok(endpoint_list(addrs)),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        };
        match answer {
            Ok(list) if !list.is_empty() => {
                self.stats.resolutions_ok.fetch_add(1, Ordering::Relaxed);
                let changed = self.tx.send_if_modified(|current| {
                    if *current == list {
                        return false;
                    }
                    *current = list.clone();
                    true
                });
                if changed {
                    self.stats.backend_updates.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(hostname, backends = ?list, "load-balancing backends changed");
                }
            }
            other => {
                self.stats.resolutions_failed.fetch_add(1, Ordering::Relaxed);
                let error = other.err().unwrap_or_else(|| "no addresses".into());
                tracing::warn!(hostname, %error, kept = ?*self.tx.borrow(), "DNS lookup failed; keeping the last good backends");
            }
        }
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
    use spoor_server::config::agent::{DnsResolverConfig, StaticResolverConfig};

    use super::*;

    fn dns(hostname: &str, port: u16, interval_ms: u64) -> ResolverConfig {
        ResolverConfig {
            static_: None,
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
        assert!(serde_saphyr::from_str::<ResolverConfig>("k8s: {service: x}\n").is_err());
    }

    #[tokio::test]
    async fn static_list_is_sorted_and_fixed() {
        let cfg = ResolverConfig {
            static_: Some(StaticResolverConfig { hostnames: vec!["b:4317".into(), "a:4317".into(), "b:4317".into()] }),
            dns: None,
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
        p.refresh("localhost", 4317, Duration::from_secs(1)).await;
        let good = rx.borrow().clone();
        assert!(!good.is_empty());
        p.refresh("no-such-host.invalid", 4317, Duration::from_secs(1)).await;
        assert_eq!(*rx.borrow(), good);
        assert_eq!(stats.resolutions_failed.load(Ordering::Relaxed), 1);
        assert_eq!(stats.resolutions_ok.load(Ordering::Relaxed), 1);
        assert_eq!(stats.backend_updates.load(Ordering::Relaxed), 1);
        // An address literal resolves to itself: the list changes.
        p.refresh("::1", 4317, Duration::from_secs(1)).await;
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
