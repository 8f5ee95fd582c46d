//! Retention settings and what they mean for one tenant: the tiers (full → sampled → rollups
//! only → gone, the default) or, when `max_age_hours` is set, one tier deleted whole at that
//! age. Per-tenant tiers come from the overrides file (`overrides.<tenant>.retention`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spoor_store::tier::{KeepRules, TierPolicy};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// A single-tier policy: blocks whose newest span is older than this are deleted whole.
    /// 0 (the default): the tiers apply.
    pub max_age_hours: u64,
    /// Per-tenant single-tier policies (hours), whatever `max_age_hours` says.
    pub tenants: BTreeMap<String, u64>,
    pub tiers: TiersConfig,
    pub sampled_keep: SampledKeepConfig,
}

/// Ages of a block's newest span at which it leaves each tier.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TiersConfig {
    /// Every span until then.
    #[serde(with = "spoor_model::duration")]
    pub full: Duration,
    /// The sampled tier until then.
    #[serde(with = "spoor_model::duration")]
    pub sampled: Duration,
    /// Rollups only until then; then nothing.
    #[serde(with = "spoor_model::duration")]
    pub aggregated: Duration,
}

const HOUR: Duration = Duration::from_secs(3600);

impl Default for TiersConfig {
    fn default() -> Self {
        TiersConfig { full: HOUR * 168, sampled: HOUR * 720, aggregated: HOUR * 2160 }
    }
}

/// Which whole traces the sampled tier keeps.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SampledKeepConfig {
    /// Of the traces no other rule keeps, this share (a stable hash of the trace ID).
    pub ratio: f64,
    /// Every trace with an error span.
    pub errors: bool,
    /// Every trace whose root is slower than this quantile (`p95`, `p99`, `p99.9`) of its
    /// service and root operation that day; `off` keeps none for being slow.
    pub slow: String,
    /// Every trace in the compactor's keep set (exemplars; DORA deployments and incidents).
    pub exemplars: bool,
}

impl Default for SampledKeepConfig {
    fn default() -> Self {
        SampledKeepConfig { ratio: 0.1, errors: true, slow: "p95".into(), exemplars: true }
    }
}

impl SampledKeepConfig {
    fn rules(&self) -> Result<KeepRules, String> {
        if !(0.0..=1.0).contains(&self.ratio) {
            return Err(format!("sampled_keep.ratio must be within 0..1, not {}", self.ratio));
        }
        let slow = match self.slow.trim() {
            "" | "off" | "false" | "none" => None,
            s => {
                let q = s
                    .strip_prefix('p')
                    .and_then(|n| n.parse::<f64>().ok())
                    .filter(|n| *n > 0.0 && *n < 100.0)
                    .ok_or_else(|| format!("sampled_keep.slow must be a quantile like p95 or `off`, not {s:?}"))?;
                Some(q / 100.0)
            }
        };
        Ok(KeepRules { ratio: self.ratio, errors: self.errors, slow_quantile: slow, exemplars: self.exemplars })
    }
}

/// A tenant's section in the overrides file: what is absent takes the main config's value.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TenantRetention {
    pub tiers: Option<TiersConfig>,
    pub sampled_keep: Option<SampledKeepConfig>,
}

/// What retention does for one tenant.
#[derive(Clone, Debug, PartialEq)]
pub enum Policy {
    /// Whole blocks deleted at this age.
    MaxAge(Duration),
    Tiers(TierPolicy),
}

impl RetentionConfig {
    /// Checks the defaults (a broken overrides section is reported when it is read).
    pub fn validate(&self) -> Result<(), String> {
        self.policy("", None).map(|_| ())
    }

    /// The policy for `tenant`: its overrides-file section if any, then a single-tier age
    /// (per tenant or global), then the tiers.
    pub fn policy(&self, tenant: &str, overrides: Option<&TenantRetention>) -> Result<Policy, String> {
        if overrides.is_none() {
            let hours = self.tenants.get(tenant).copied().unwrap_or(self.max_age_hours);
            if hours > 0 {
                return Ok(Policy::MaxAge(HOUR * hours as u32));
            }
        }
        let tiers = overrides.and_then(|o| o.tiers.as_ref()).unwrap_or(&self.tiers);
        let keep = overrides.and_then(|o| o.sampled_keep.as_ref()).unwrap_or(&self.sampled_keep);
        if tiers.full.is_zero() || tiers.full > tiers.sampled || tiers.sampled > tiers.aggregated {
            return Err(format!(
                "retention.tiers must satisfy 0 < full <= sampled <= aggregated (full {}, sampled {}, aggregated {})",
                spoor_model::duration::format(tiers.full),
                spoor_model::duration::format(tiers.sampled),
                spoor_model::duration::format(tiers.aggregated)
            ));
        }
        Ok(Policy::Tiers(TierPolicy {
            full: tiers.full,
            sampled: tiers.sampled,
            aggregated: tiers.aggregated,
            keep: keep.rules()?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_by_default_a_single_tier_when_an_age_is_set() {
        let mut c = RetentionConfig::default();
        let Ok(Policy::Tiers(p)) = c.policy("a", None) else { panic!("tiers by default") };
        assert_eq!((p.full, p.sampled, p.aggregated), (HOUR * 168, HOUR * 720, HOUR * 2160));
        assert_eq!(p.keep.slow_quantile, Some(0.95));
        c.tenants.insert("short".into(), 1);
        assert_eq!(c.policy("short", None), Ok(Policy::MaxAge(HOUR)));
        c.max_age_hours = 48;
        assert_eq!(c.policy("a", None), Ok(Policy::MaxAge(HOUR * 48)));
        // An overrides section puts a tenant on tiers whatever the age says.
        let o = TenantRetention { tiers: Some(TiersConfig { full: HOUR, ..Default::default() }), sampled_keep: None };
        let Ok(Policy::Tiers(p)) = c.policy("a", Some(&o)) else { panic!("tiers from overrides") };
        assert_eq!(p.full, HOUR);
    }

    #[test]
    fn bad_tiers_and_rules_are_refused() {
        let mut c = RetentionConfig::default();
        c.tiers.sampled = HOUR;
        assert!(c.validate().unwrap_err().contains("full <= sampled"));
        let mut c = RetentionConfig::default();
        c.sampled_keep.slow = "fast".into();
        assert!(c.validate().is_err());
        c.sampled_keep.slow = "off".into();
        c.sampled_keep.ratio = 2.0;
        assert!(c.validate().unwrap_err().contains("ratio"));
    }
}
