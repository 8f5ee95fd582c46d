//! Retrying a peer that did not answer: the collector's `retry_on_failure` settings and the
//! exponential backoff with jitter that the agent's exporters and remote_write share.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The collector's `retry_on_failure` block.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    pub enabled: bool,
    /// The first backoff delay.
    #[serde(with = "spoor_process::duration")]
    pub initial_interval: Duration,
    /// Each delay is the previous one times this (before jitter).
    pub multiplier: f64,
    /// Each delay is drawn from delay × (1 ± this).
    pub randomization_factor: f64,
    /// No backoff delay is longer (a server's throttle hint may be).
    #[serde(with = "spoor_process::duration")]
    pub max_interval: Duration,
    /// Give up this long after the first attempt; 0 = never.
    #[serde(with = "spoor_process::duration")]
    pub max_elapsed_time: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            enabled: true,
            initial_interval: Duration::from_secs(5),
            multiplier: 1.5,
            randomization_factor: 0.5,
            max_interval: Duration::from_secs(30),
            max_elapsed_time: Duration::from_secs(300),
        }
    }
}

impl RetryConfig {
    /// The collector's checks (only when enabled), plus a positive initial interval so a retry
    /// loop cannot spin.
    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        if self.initial_interval.is_zero() {
            return Err("retry_on_failure.initial_interval must be positive".into());
        }
        if !(self.multiplier.is_finite() && self.multiplier > 0.0) {
            return Err(format!("retry_on_failure.multiplier must be positive, not {}", self.multiplier));
        }
        if !(0.0..=1.0).contains(&self.randomization_factor) {
            return Err(format!(
                "retry_on_failure.randomization_factor must be within [0, 1], not {}",
                self.randomization_factor
            ));
        }
        if self.max_interval.is_zero() {
            return Err("retry_on_failure.max_interval must be positive".into());
        }
        if !self.max_elapsed_time.is_zero()
            && (self.max_elapsed_time < self.initial_interval || self.max_elapsed_time < self.max_interval)
        {
            return Err("retry_on_failure.max_elapsed_time must not be shorter than initial_interval or max_interval \
                 (0 retries forever)"
                .into());
        }
        Ok(())
    }
}

/// Exponential backoff with jitter (the collector's, capped at `max_interval` after jitter).
pub struct Backoff {
    current: Duration,
    multiplier: f64,
    randomization: f64,
    max: Duration,
    rng: Rng,
}

impl Backoff {
    pub fn new(cfg: &RetryConfig, rng: Rng) -> Backoff {
        Backoff {
            current: cfg.initial_interval.min(cfg.max_interval),
            multiplier: cfg.multiplier,
            randomization: cfg.randomization_factor,
            max: cfg.max_interval,
            rng,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = base.mul_f64(self.multiplier).min(self.max);
        let factor = 1.0 - self.randomization + 2.0 * self.randomization * self.rng.unit();
        base.mul_f64(factor.max(0.0)).min(self.max)
    }
}

/// xorshift64* — jitter needs spread, not quality.
pub struct Rng(u64);

impl Rng {
    pub fn seeded() -> Rng {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let time = spoor_model::time::now_nanos();
        // splitmix64 of time and a per-call counter, so concurrent senders do not move in step.
        let mut z = time ^ COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(z.max(1))
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `Retry-After` (RFC 9110 §10.2.3): delay-seconds, or an HTTP-date turned into the whole
/// seconds (rounded up) from `now` until then; a date in the past means 0.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<u64> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(secs);
    }
    let at = spoor_model::time::parse_http_date(value)?;
    let now = now.duration_since(std::time::UNIX_EPOCH).ok()?;
    let wait = std::time::Duration::from_secs(at).saturating_sub(now);
    Some(wait.as_secs() + (wait.subsec_nanos() > 0) as u64)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn retry_after_seconds_or_date() {
        let now = UNIX_EPOCH + Duration::from_millis(784_111_777_000 - 2_500);
        assert_eq!(parse_retry_after("3", now), Some(3));
        assert_eq!(parse_retry_after(" 120 ", now), Some(120));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now), Some(3));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:40:00 GMT", now), Some(0));
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn backoff_grows_by_multiplier_up_to_max_interval() {
        let cfg = RetryConfig { randomization_factor: 0.0, ..RetryConfig::default() };
        let mut b = Backoff::new(&cfg, Rng(1));
        let got: Vec<f64> = (0..8).map(|_| b.next_delay().as_secs_f64()).collect();
        let want = [5.0, 7.5, 11.25, 16.875, 25.3125, 30.0, 30.0, 30.0];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?}");
        }
        // With ±50 % jitter: each within its band, never above max_interval, and actually spread.
        let mut b = Backoff::new(&RetryConfig::default(), Rng::seeded());
        let mut seen = Vec::new();
        for w in want {
            let d = b.next_delay().as_secs_f64();
            assert!(d >= w * 0.5 - 1e-6 && d <= (w * 1.5).min(30.0) + 1e-6, "{d} for {w}");
            seen.push(d);
        }
        let mut firsts: Vec<u64> = (0..20)
            .map(|_| Backoff::new(&RetryConfig::default(), Rng::seeded()).next_delay().as_millis() as u64)
            .collect();
        firsts.sort();
        firsts.dedup();
        assert!(firsts.len() > 10, "jitter should vary: {firsts:?}");
    }

    #[test]
    fn rng_is_uniform_enough() {
        let mut r = Rng::seeded();
        let xs: Vec<f64> = (0..10_000).map(|_| r.unit()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }
}
