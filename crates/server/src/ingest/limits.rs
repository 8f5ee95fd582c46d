//! Admission limits in front of the WAL: per-tenant ingestion rates (token buckets over spans
//! and bytes, with per-tenant overrides re-read from a file while running) and a memory limiter
//! (soft and hard limits on the process's resident memory).
//!
//! Refusals are explicit and carry a retry hint: a tenant over its rate gets 429 /
//! RESOURCE_EXHAUSTED (the client slows down, other tenants are unaffected); a server over its
//! memory limit answers 503 / UNAVAILABLE to everyone until usage falls.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::{Error, StartupError};
use crate::metrics::names;

/// A tenant's ingestion limits; 0 means unlimited.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IngestionLimits {
    /// Sustained decompressed request bytes per second.
    pub rate_limit_bytes: u64,
    /// Bytes a tenant may send at once above its rate.
    pub burst_size_bytes: u64,
    pub rate_limit_spans: u64,
    pub burst_size_spans: u64,
}

/// One tenant's entry in the overrides file (Tempo's layout: `overrides: {tenant: {ingestion:
/// …, metrics_generator: …}}`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TenantOverrides {
    pub ingestion: IngestionLimits,
    pub metrics_generator: GeneratorOverrides,
    /// Read by the compactor (`retention.tiers`, `retention.sampled_keep`).
    pub retention: Option<crate::retention::TenantRetention>,
}

/// A tenant's own metrics-generator limits.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GeneratorOverrides {
    /// Replaces `metrics_generator.registry.max_active_series` for this tenant (0: unlimited).
    pub max_active_series: Option<usize>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OverridesFile {
    pub overrides: HashMap<String, TenantOverrides>,
}

impl OverridesFile {
    pub fn load(path: &Path) -> Result<OverridesFile, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Per tenant.
    pub max_live_traces: usize,
    pub max_bytes_per_trace: usize,
    /// Per tenant: encoded bytes of all its live traces.
    pub max_bytes_per_tenant: usize,
    /// All tenants together; over it: 503 / UNAVAILABLE (server-wide overload).
    pub max_live_bytes: usize,
    /// Retry hint sent with 429/503 refusals (the smallest one, for rate limits).
    pub retry_after_secs: u64,
    /// Per-tenant ingestion rates and bursts (0: unlimited); the overrides file sets them per
    /// tenant. Bytes are measured after decompression.
    pub ingestion_rate_limit_bytes: u64,
    pub ingestion_burst_size_bytes: u64,
    pub ingestion_rate_limit_spans: u64,
    pub ingestion_burst_size_spans: u64,
    /// Tempo-style per-tenant overrides (`overrides: {tenant: {ingestion: {...}}}`), re-read
    /// when the file changes; empty: none.
    pub overrides_file: PathBuf,
    pub overrides_poll_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_live_traces: 1_000_000,
            max_bytes_per_trace: 5 << 20,
            max_bytes_per_tenant: 400 << 20,
            max_live_bytes: 400 << 20,
            retry_after_secs: 5,
            ingestion_rate_limit_bytes: 0,
            ingestion_burst_size_bytes: 0,
            ingestion_rate_limit_spans: 0,
            ingestion_burst_size_spans: 0,
            overrides_file: PathBuf::new(),
            overrides_poll_secs: 10,
        }
    }
}

impl LimitsConfig {
    pub fn ingestion(&self) -> IngestionLimits {
        IngestionLimits {
            rate_limit_bytes: self.ingestion_rate_limit_bytes,
            burst_size_bytes: self.ingestion_burst_size_bytes,
            rate_limit_spans: self.ingestion_rate_limit_spans,
            burst_size_spans: self.ingestion_burst_size_spans,
        }
    }
}

/// The limits every receiving process applies before it spends work on a request (the
/// server's pipeline and the agent share it).
pub struct Admission {
    pub rate: RateLimiter,
    pub memory: Option<MemoryLimiter>,
}

impl Admission {
    pub fn new(l: &LimitsConfig, memory: &MemoryLimiterConfig) -> Result<Admission, StartupError> {
        let overrides = (!l.overrides_file.as_os_str().is_empty()).then(|| l.overrides_file.clone());
        Ok(Admission {
            rate: RateLimiter::new(l.ingestion(), overrides, l.retry_after_secs)?,
            memory: MemoryLimiter::new(memory)?,
        })
    }

    /// Before the body is read: refuses while memory is over the soft limit.
    pub fn early(&self, tenant: &str, m: &crate::metrics::Metrics) -> Result<(), Error> {
        match &self.memory {
            Some(limiter) => limiter.check_refusing().inspect_err(|_| refused_for_memory(m, tenant)),
            None => Ok(()),
        }
    }

    /// A body of `bytes` about to be decoded; its share of the estimate lasts as long as the guard.
    pub fn request<'a>(
        &'a self,
        tenant: &str,
        bytes: usize,
        m: &crate::metrics::Metrics,
    ) -> Result<Option<InFlight<'a>>, Error> {
        match &self.memory {
            Some(limiter) => limiter.admit(bytes).map(Some).inspect_err(|_| refused_for_memory(m, tenant)),
            None => Ok(None),
        }
    }
}

fn refused_for_memory(m: &crate::metrics::Metrics, tenant: &str) {
    m.inc(names::REQUESTS_REFUSED_TOTAL, &[("tenant", tenant), ("reason", "memory_limited")], 1.0);
}

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: u64, now: Instant) -> Bucket {
        Bucket { tokens: burst as f64, at: now }
    }

    fn refill(&mut self, rate: u64, burst: u64, now: Instant) {
        let secs = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + secs * rate as f64).min(burst as f64);
        self.at = now;
    }

    /// Seconds until `n` tokens are there (0 when they are).
    fn wait_for(&self, n: u64, rate: u64) -> f64 {
        let missing = n as f64 - self.tokens;
        if missing <= 0.0 { 0.0 } else { missing / rate.max(1) as f64 }
    }
}

#[derive(Debug)]
struct TenantBuckets {
    limits: IngestionLimits,
    spans: Bucket,
    bytes: Bucket,
}

/// Per-tenant rate limits, with overrides that can change while the server runs.
pub struct RateLimiter {
    defaults: IngestionLimits,
    overrides_path: Option<PathBuf>,
    overrides: RwLock<HashMap<String, IngestionLimits>>,
    /// Per-tenant generator series budgets from the same file.
    series_limits: RwLock<HashMap<String, usize>>,
    /// The overrides file's modification time when last read.
    loaded_mtime: Mutex<Option<SystemTime>>,
    buckets: Mutex<HashMap<String, TenantBuckets>>,
    /// The smallest retry hint given (Tempo's is 5 s).
    retry_after_secs: u64,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
}

impl RateLimiter {
    /// Reads the overrides file once; a file that cannot be read or parsed is a start-up error.
    pub fn new(
        defaults: IngestionLimits,
        overrides_path: Option<PathBuf>,
        retry_after_secs: u64,
    ) -> Result<RateLimiter, StartupError> {
        let limiter = RateLimiter {
            defaults,
            retry_after_secs: retry_after_secs.max(1),
            overrides_path,
            overrides: RwLock::new(HashMap::new()),
            series_limits: RwLock::new(HashMap::new()),
            loaded_mtime: Mutex::new(None),
            buckets: Mutex::new(HashMap::new()),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
        };
        limiter.reload().map_err(|e| StartupError::new(format!("limits.overrides_file: {e}")))?;
        Ok(limiter)
    }

    /// The limits in force for `tenant`: its override where set, else the defaults.
    pub fn limits(&self, tenant: &str) -> IngestionLimits {
        self.overrides.read().unwrap().get(tenant).copied().unwrap_or(self.defaults)
    }

    /// Tenants whose generator series budget is overridden, and their budgets.
    pub fn series_limits(&self) -> HashMap<String, usize> {
        self.series_limits.read().unwrap().clone()
    }

    /// Re-reads the overrides file if it changed. A broken file keeps the previous overrides
    /// (and is reported), so a typo never lifts or tightens limits by accident.
    pub fn reload(&self) -> Result<bool, String> {
        let Some(path) = &self.overrides_path else { return Ok(false) };
        let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let mut loaded = self.loaded_mtime.lock().unwrap();
        if mtime.is_some() && *loaded == mtime {
            return Ok(false);
        }
        match OverridesFile::load(path) {
            Ok(file) => {
                let series = file
                    .overrides
                    .iter()
                    .filter_map(|(t, o)| o.metrics_generator.max_active_series.map(|n| (t.clone(), n)))
                    .collect();
                let map: HashMap<String, IngestionLimits> =
                    file.overrides.into_iter().map(|(t, o)| (t, o.ingestion)).collect();
                *self.overrides.write().unwrap() = map;
                *self.series_limits.write().unwrap() = series;
                *loaded = mtime;
                self.reloads_ok.fetch_add(1, Ordering::Relaxed);
                Ok(true)
            }
            Err(e) => {
                self.reloads_failed.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Takes `spans` and `bytes` from the tenant's buckets, or says how long to wait.
    pub fn admit(&self, tenant: &str, spans: u64, bytes: u64, now: Instant) -> Result<(), Error> {
        let limits = self.limits(tenant);
        if limits.rate_limit_spans == 0 && limits.rate_limit_bytes == 0 {
            return Ok(());
        }
        let burst_spans = if limits.burst_size_spans > 0 { limits.burst_size_spans } else { limits.rate_limit_spans };
        let burst_bytes = if limits.burst_size_bytes > 0 { limits.burst_size_bytes } else { limits.rate_limit_bytes };
        let mut all = self.buckets.lock().unwrap();
        let b = all.entry(tenant.to_owned()).or_insert_with(|| TenantBuckets {
            limits,
            spans: Bucket::full(burst_spans, now),
            bytes: Bucket::full(burst_bytes, now),
        });
        if b.limits != limits {
            // New overrides take effect at once, without forgetting what was already used.
            b.limits = limits;
            b.spans.tokens = b.spans.tokens.min(burst_spans as f64);
            b.bytes.tokens = b.bytes.tokens.min(burst_bytes as f64);
        }
        // A request bigger than the burst can never pass: not worth retrying.
        let never = |what: &str, n: u64, burst: u64| {
            Error::too_large(format!(
                "rate_limited: a request of {n} {what} is larger than tenant {tenant}'s burst of {burst} {what}; send smaller batches"
            ))
        };
        let mut wait = 0f64;
        if limits.rate_limit_spans > 0 {
            if spans > burst_spans {
                return Err(never("spans", spans, burst_spans));
            }
            b.spans.refill(limits.rate_limit_spans, burst_spans, now);
            wait = wait.max(b.spans.wait_for(spans, limits.rate_limit_spans));
        }
        if limits.rate_limit_bytes > 0 {
            if bytes > burst_bytes {
                return Err(never("bytes", bytes, burst_bytes));
            }
            b.bytes.refill(limits.rate_limit_bytes, burst_bytes, now);
            wait = wait.max(b.bytes.wait_for(bytes, limits.rate_limit_bytes));
        }
        if wait > 0.0 {
            return Err(Error::rate_limited(
                format!(
                    "rate_limited: tenant {tenant} is over its ingestion rate ({} spans/s, {} bytes/s); retry later",
                    limits.rate_limit_spans, limits.rate_limit_bytes
                ),
                (wait.ceil() as u64).max(self.retry_after_secs),
            ));
        }
        if limits.rate_limit_spans > 0 {
            b.spans.tokens -= spans as f64;
        }
        if limits.rate_limit_bytes > 0 {
            b.bytes.tokens -= bytes as f64;
        }
        Ok(())
    }
}

/// The collector's `memory_limiter` processor settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryLimiterConfig {
    #[serde(with = "spoor_process::duration")]
    pub check_interval: Duration,
    /// Hard limit in MiB of resident memory; 0: use `limit_percentage`.
    pub limit_mib: u64,
    /// Soft limit = hard limit − spike; 0: 20 % of the hard limit.
    pub spike_limit_mib: u64,
    /// Hard limit as a share of the machine's (or cgroup's) memory; 0 with `limit_mib` 0: off.
    pub limit_percentage: u64,
    pub spike_limit_percentage: u64,
    /// Go's GC knobs; accepted so collector configs paste unchanged, and ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_gc_interval_when_soft_limited: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_gc_interval_when_hard_limited: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_gc_interval_when_soft_limited: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_gc_interval_when_hard_limited: Option<String>,
}

impl Default for MemoryLimiterConfig {
    fn default() -> Self {
        MemoryLimiterConfig {
            check_interval: Duration::from_secs(1),
            limit_mib: 0,
            spike_limit_mib: 0,
            limit_percentage: 0,
            spike_limit_percentage: 0,
            min_gc_interval_when_soft_limited: None,
            min_gc_interval_when_hard_limited: None,
            max_gc_interval_when_soft_limited: None,
            max_gc_interval_when_hard_limited: None,
        }
    }
}

impl MemoryLimiterConfig {
    /// (soft, hard) limits in bytes; `None` when the limiter is off.
    pub fn limits(&self, total_memory: u64) -> Result<Option<(u64, u64)>, String> {
        if self.check_interval.is_zero() {
            return Err("memory_limiter.check_interval must be greater than 0".into());
        }
        let (hard, spike) = if self.limit_mib > 0 {
            let spike = if self.spike_limit_mib > 0 { self.spike_limit_mib } else { self.limit_mib / 5 };
            if spike >= self.limit_mib {
                return Err(format!(
                    "memory_limiter.spike_limit_mib ({spike}) must be smaller than limit_mib ({})",
                    self.limit_mib
                ));
            }
            (self.limit_mib << 20, spike << 20)
        } else if self.limit_percentage > 0 {
            if self.limit_percentage > 100 || self.spike_limit_percentage >= self.limit_percentage {
                return Err(format!(
                    "memory_limiter: need 0 < spike_limit_percentage ({}) < limit_percentage ({}) <= 100",
                    self.spike_limit_percentage, self.limit_percentage
                ));
            }
            let spike_pct =
                if self.spike_limit_percentage > 0 { self.spike_limit_percentage } else { self.limit_percentage / 5 };
            (total_memory / 100 * self.limit_percentage, total_memory / 100 * spike_pct)
        } else {
            return Ok(None);
        };
        Ok(Some((hard - spike, hard)))
    }
}

/// Refuses work while resident memory is over the soft limit. Usage is sampled every
/// `check_interval` and, between samples, estimated from the requests being decoded (each
/// costs a few times its size until it is in the WAL), so a burst cannot overshoot in between.
pub struct MemoryLimiter {
    soft: u64,
    hard: u64,
    interval: Duration,
    rss: AtomicU64,
    in_flight: AtomicUsize,
    refusing: AtomicBool,
    pub refused_total: AtomicU64,
}

/// Decoded OTLP takes several times the wire size until it is split and written: a string
/// per key and value, a `Vec` per attribute list, the fragments. Measured: 8 concurrent 2 MiB
/// requests grew RSS by 10–14× what they carried (crates/spoor/tests/overload.rs).
const EXPANSION: u64 = 12;

impl MemoryLimiter {
    pub fn new(cfg: &MemoryLimiterConfig) -> Result<Option<MemoryLimiter>, StartupError> {
        let total = total_memory();
        let Some((soft, hard)) = cfg.limits(total).map_err(StartupError::new)? else { return Ok(None) };
        let m = MemoryLimiter {
            soft,
            hard,
            interval: cfg.check_interval,
            rss: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            refusing: AtomicBool::new(false),
            refused_total: AtomicU64::new(0),
        };
        m.check();
        Ok(Some(m))
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    pub fn soft_limit(&self) -> u64 {
        self.soft
    }

    pub fn hard_limit(&self) -> u64 {
        self.hard
    }

    /// True while usage is over the soft limit (data is being refused).
    pub fn is_refusing(&self) -> bool {
        self.refusing.load(Ordering::Relaxed)
    }

    pub fn rss(&self) -> u64 {
        self.rss.load(Ordering::Relaxed)
    }

    /// Samples resident memory; returns true when over the hard limit (callers shed caches).
    pub fn check(&self) -> bool {
        let rss = resident_bytes().unwrap_or(0);
        self.rss.store(rss, Ordering::Relaxed);
        let refusing = rss >= self.soft;
        if refusing != self.refusing.swap(refusing, Ordering::Relaxed) {
            if refusing {
                tracing::warn!(rss, soft_limit = self.soft, "memory over the soft limit: refusing data until it falls");
            } else {
                tracing::info!(rss, soft_limit = self.soft, "memory back under the soft limit: accepting data");
            }
        }
        rss >= self.hard
    }

    /// Refuses while over the soft limit, before a request's body is even read.
    pub fn check_refusing(&self) -> Result<(), Error> {
        if self.is_refusing() {
            self.refused_total.fetch_add(1, Ordering::Relaxed);
            return Err(self.refusal());
        }
        Ok(())
    }

    fn refusal(&self) -> Error {
        Error::unavailable(
            format!(
                "memory_limited: data refused due to high memory usage ({} MiB resident, soft limit {} MiB); retry later",
                self.rss() >> 20,
                self.soft >> 20
            ),
            self.interval.as_secs().max(1),
        )
    }

    /// Admits a request of `bytes` (decompressed) or refuses it; the guard releases its share.
    pub fn admit(&self, bytes: usize) -> Result<InFlight<'_>, Error> {
        let in_flight = self.in_flight.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let guard = InFlight { limiter: self, bytes };
        let estimate = self.rss() + in_flight as u64 * EXPANSION;
        if self.refusing.load(Ordering::Relaxed) || estimate >= self.soft {
            self.refused_total.fetch_add(1, Ordering::Relaxed);
            return Err(self.refusal());
        }
        Ok(guard)
    }
}

/// A request's share of the memory estimate, released when it is done.
pub struct InFlight<'a> {
    limiter: &'a MemoryLimiter,
    bytes: usize,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.limiter.in_flight.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Resident set size of this process, from /proc/self/statm.
pub fn resident_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(4096) as u64)
}

/// The memory this process may use: the cgroup limit when there is one, else physical memory.
pub fn total_memory() -> u64 {
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok().and_then(|s| s.trim().parse::<u64>().ok());
    let physical = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib * 1024)
    });
    match (cgroup, physical) {
        (Some(c), Some(p)) => c.min(p),
        (Some(c), None) => c,
        (None, Some(p)) => p,
        (None, None) => u64::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

    fn limits(spans: u64, burst: u64) -> IngestionLimits {
        IngestionLimits { rate_limit_spans: spans, burst_size_spans: burst, ..Default::default() }
    }

    #[test]
    fn token_bucket_refuses_then_refills() {
        let r = RateLimiter::new(limits(100, 200), None, 1).unwrap();
        let t0 = Instant::now();
        assert!(r.admit("a", 150, 0, t0).is_ok());
        let err = r.admit("a", 100, 0, t0).unwrap_err();
        assert!(err.kind() == Kind::RateLimited && err.retry_after_secs() == Some(1), "{err:?}");
        // Another tenant has its own bucket.
        assert!(r.admit("b", 200, 0, t0).is_ok());
        // 50 left + 100/s × 0.5 s = 100.
        assert!(r.admit("a", 100, 0, t0 + Duration::from_millis(500)).is_ok());
        // Bigger than the burst: never passes, and says so.
        let err = r.admit("a", 201, 0, t0 + Duration::from_secs(10)).unwrap_err();
        assert!(err.to_string().contains("larger than tenant a's burst"), "{err}");
    }

    #[test]
    fn overrides_reload_while_running() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("overrides.yaml");
        std::fs::write(&path, "overrides:\n  slow:\n    ingestion:\n      rate_limit_spans: 10\n").unwrap();
        let r = RateLimiter::new(IngestionLimits::default(), Some(path.clone()), 5).unwrap();
        assert_eq!(r.limits("slow").rate_limit_spans, 10);
        assert_eq!(r.limits("other").rate_limit_spans, 0);
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&path, "overrides:\n  slow:\n    ingestion:\n      rate_limit_spans: 1000\n").unwrap();
        // Make sure the mtime moves even on coarse-grained filesystems.
        let later = SystemTime::now() + Duration::from_secs(2);
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(later).unwrap();
        assert_eq!(r.reload(), Ok(true));
        assert_eq!(r.limits("slow").rate_limit_spans, 1000);
        // A broken file keeps the last good overrides.
        std::fs::write(&path, "overrides:\n  slow:\n    ingestion:\n      rate_limit_spanz: 1\n").unwrap();
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(later + Duration::from_secs(2)).unwrap();
        let err = r.reload().unwrap_err();
        assert!(err.contains("rate_limit_spanz"), "{err}");
        assert_eq!(r.limits("slow").rate_limit_spans, 1000);
    }

    #[test]
    fn memory_limiter_config_rules() {
        let mut c = MemoryLimiterConfig { limit_mib: 100, ..Default::default() };
        assert_eq!(c.limits(0).unwrap(), Some((80 << 20, 100 << 20)));
        c.spike_limit_mib = 100;
        assert!(c.limits(0).unwrap_err().contains("spike_limit_mib"));
        c.spike_limit_mib = 0;
        c.check_interval = Duration::ZERO;
        assert!(c.limits(0).unwrap_err().contains("check_interval"));
        let off = MemoryLimiterConfig::default();
        assert_eq!(off.limits(1 << 30).unwrap(), None);
        let pct = MemoryLimiterConfig { limit_percentage: 50, spike_limit_percentage: 10, ..Default::default() };
        assert_eq!(pct.limits(1000 << 20).unwrap(), Some((400 << 20, 500 << 20)));
    }

    #[test]
    fn memory_limiter_refuses_over_the_soft_limit() {
        let rss = resident_bytes().unwrap();
        // A hard limit below what this process already uses: everything is refused.
        let cfg = MemoryLimiterConfig { limit_mib: (rss >> 20).max(2) / 2, ..Default::default() };
        let m = MemoryLimiter::new(&cfg).unwrap().unwrap();
        let err = m.admit(10).err().unwrap();
        assert!(err.kind() == Kind::Unavailable && err.to_string().contains("memory_limited"), "{err}");
        // Far above: accepted; a request big enough to cross the soft limit is not.
        let cfg = MemoryLimiterConfig { limit_mib: (rss >> 20) + 1000, ..Default::default() };
        let m = MemoryLimiter::new(&cfg).unwrap().unwrap();
        assert!(m.admit(10).is_ok());
        assert!(m.admit(1 << 30).is_err());
        assert_eq!(m.refused_total.load(Ordering::Relaxed), 1);
    }
}
