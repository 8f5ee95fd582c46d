//! The `processors:` block, in the OpenTelemetry Collector's shape so existing collector
//! configs paste unchanged (keys are `type` or `type/name`), and the scrubbing stages built
//! from it.
//!
//! Spoor runs them in a fixed order, the only one that keeps its promises: `memory_limiter`
//! at admission, then `attributes`, `redaction` and the default `scrub` policy before the WAL
//! (scrubbed data never touches disk), then `tail_sampling` after the WAL (decisions survive
//! a crash). Several instances of one type (`attributes/a`, `attributes/b`) run in name order.
//! `batch` shapes the agent's forwarding batches; the server batches by group commit instead.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use spoor_model::otlp::ExportTraceServiceRequest;
use spoor_process::Counts;
use spoor_process::attributes::{Attributes, AttributesConfig, Context};
use spoor_process::redact::{Redaction, RedactionConfig};
use spoor_process::sample::TailSamplingConfig;
use spoor_process::scrub::{ScrubConfig, Scrubber};

use crate::error::StartupError;
use crate::ingest::limits::MemoryLimiterConfig;
use crate::metrics::Metrics;
use crate::metrics::names;

/// The collector's `batch` processor settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// Spans that trigger a send (a trigger, not a cap).
    pub send_batch_size: usize,
    #[serde(with = "spoor_process::duration")]
    pub timeout: std::time::Duration,
    /// Larger batches are split; 0: no cap.
    pub send_batch_max_size: usize,
    /// Accepted for compatibility: Spoor always batches per tenant.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub metadata_keys: Vec<String>,
    pub metadata_cardinality_limit: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            send_batch_size: 8192,
            timeout: std::time::Duration::from_millis(200),
            send_batch_max_size: 0,
            metadata_keys: Vec::new(),
            metadata_cardinality_limit: 1000,
        }
    }
}

// Built once from the config file; boxing the big variants would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Processor {
    Attributes(AttributesConfig),
    Redaction(RedactionConfig),
    Scrub(ScrubConfig),
    TailSampling(TailSamplingConfig),
    MemoryLimiter(MemoryLimiterConfig),
    Batch(BatchConfig),
}

const KINDS: &str = "attributes, redaction, scrub, tail_sampling, memory_limiter, batch";

/// `processors:`: name → settings, in the collector's shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Processors(pub BTreeMap<String, Processor>);

impl Default for Processors {
    /// The default scrubbing policy is on unless a config turns it off.
    fn default() -> Self {
        Processors(BTreeMap::from([("scrub".to_owned(), Processor::Scrub(ScrubConfig::default()))]))
    }
}

impl Processors {
    fn of<'a, T: 'a>(
        &'a self,
        pick: impl Fn(&'a Processor) -> Option<&'a T>,
    ) -> impl Iterator<Item = (&'a str, &'a T)> {
        self.0.iter().filter_map(move |(name, p)| pick(p).map(|c| (name.as_str(), c)))
    }

    pub fn tail_sampling(&self) -> Option<&TailSamplingConfig> {
        self.of(|p| if let Processor::TailSampling(c) = p { Some(c) } else { None }).next().map(|(_, c)| c)
    }

    pub fn memory_limiter(&self) -> Option<&MemoryLimiterConfig> {
        self.of(|p| if let Processor::MemoryLimiter(c) = p { Some(c) } else { None }).next().map(|(_, c)| c)
    }

    pub fn batch(&self) -> Option<&BatchConfig> {
        self.of(|p| if let Processor::Batch(c) = p { Some(c) } else { None }).next().map(|(_, c)| c)
    }
}

impl<'de> Deserialize<'de> for Processors {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Processors;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a map of processors keyed by type or type/name ({KINDS})")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Processors, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    let kind = key.split('/').next().unwrap_or_default();
                    // Each value is read straight into its type, so a mistake is reported at
                    // its line with the key that holds it.
                    let p = match kind {
                        "attributes" => Processor::Attributes(map.next_value()?),
                        "redaction" => Processor::Redaction(map.next_value()?),
                        "scrub" => Processor::Scrub(map.next_value()?),
                        "tail_sampling" => Processor::TailSampling(map.next_value()?),
                        "memory_limiter" => Processor::MemoryLimiter(map.next_value()?),
                        "batch" => Processor::Batch(map.next_value()?),
                        _ => {
                            return Err(de::Error::custom(format!(
                                "processors.{key}: unknown processor type {kind:?}; Spoor runs {KINDS}"
                            )));
                        }
                    };
                    if out.insert(key.clone(), p).is_some() {
                        return Err(de::Error::custom(format!("processors.{key} is defined twice")));
                    }
                }
                let singletons = ["tail_sampling", "memory_limiter", "batch"];
                for kind in singletons {
                    let n = out.keys().filter(|k| k.split('/').next() == Some(kind)).count();
                    if n > 1 {
                        return Err(de::Error::custom(format!("processors: only one {kind} processor may be defined")));
                    }
                }
                Ok(Processors(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl Serialize for Processors {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, p) in &self.0 {
            match p {
                Processor::Attributes(c) => m.serialize_entry(k, c)?,
                Processor::Redaction(c) => m.serialize_entry(k, c)?,
                Processor::Scrub(c) => m.serialize_entry(k, c)?,
                Processor::TailSampling(c) => m.serialize_entry(k, c)?,
                Processor::MemoryLimiter(c) => m.serialize_entry(k, c)?,
                Processor::Batch(c) => m.serialize_entry(k, c)?,
            }
        }
        m.end()
    }
}

enum Stage {
    Attributes(Attributes),
    Redaction(Redaction),
    Scrub(Scrubber),
}

/// The stages that run before the WAL, in order.
pub struct Scrubbing {
    stages: Vec<(String, Stage)>,
}

impl Scrubbing {
    pub fn new(p: &Processors) -> Result<Scrubbing, StartupError> {
        let startup = |name: &str, e: spoor_process::Error| StartupError::new(format!("processors.{name}: {e}"));
        let mut stages = Vec::new();
        for (name, c) in p.of(|p| if let Processor::Attributes(c) = p { Some(c) } else { None }) {
            stages.push((name.to_owned(), Stage::Attributes(Attributes::new(c).map_err(|e| startup(name, e))?)));
        }
        for (name, c) in p.of(|p| if let Processor::Redaction(c) = p { Some(c) } else { None }) {
            stages.push((name.to_owned(), Stage::Redaction(Redaction::new(c).map_err(|e| startup(name, e))?)));
        }
        for (name, c) in p.of(|p| if let Processor::Scrub(c) = p { Some(c) } else { None }) {
            if c.enabled {
                stages.push((name.to_owned(), Stage::Scrub(Scrubber::new(c).map_err(|e| startup(name, e))?)));
            }
        }
        Ok(Scrubbing { stages })
    }

    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// Runs every stage over the request and counts what each one changed.
    /// Returns the total, so callers can tell an untouched request (and reuse its bytes).
    pub fn apply(&self, req: &mut ExportTraceServiceRequest, ctx: &Context, tenant: &str, m: &Metrics) -> Counts {
        let mut total = Counts::default();
        for (name, stage) in &self.stages {
            let counts: Counts = match stage {
                Stage::Attributes(a) => a.apply(req, ctx),
                Stage::Redaction(r) => r.apply(req),
                Stage::Scrub(s) => s.apply(req),
            };
            for (action, n) in
                [("deleted", counts.deleted), ("masked", counts.masked), ("hashed", counts.hashed), ("set", counts.set)]
            {
                if n > 0 {
                    m.inc(
                        names::PROCESSED_ATTRIBUTES_TOTAL,
                        &[("tenant", tenant), ("processor", name), ("action", action)],
                        n as f64,
                    );
                }
            }
            total += counts;
        }
        total
    }
}
