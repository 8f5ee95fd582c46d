//! The collector's `redaction` processor: an allow-list of keys (fail closed), value masking by
//! regular expressions, optional digests instead of `****`, and summary attributes.
//!
//! ```yaml
//! allow_all_keys: false
//! allowed_keys: [http.method, http.route, user.id]
//! ignored_keys: [safe_attribute]
//! blocked_values: ['4[0-9]{12}(?:[0-9]{3})?']
//! hash_function: sha3
//! summary: debug
//! ```
//!
//! It runs on resource, span, span-event and span-link attributes. Per attribute, in order:
//!
//! 1. keys in `ignored_keys` or matching `ignored_key_patterns` are left alone (counted as
//!    ignored); the processor's own `redaction.*` keys are skipped silently;
//! 2. unless `allow_all_keys`, a key not in `allowed_keys` is deleted (**an empty
//!    `allowed_keys` deletes everything**);
//! 3. only string values are inspected, unless `redact_all_types` (then the value's string
//!    rendering is, and a masked value becomes a string);
//! 4. a value matching any `allowed_values` pattern is kept (counted as allowed);
//! 5. a key matching any `blocked_key_patterns` has its whole value masked;
//! 6. otherwise every match of every `blocked_values` pattern is masked — only the matching
//!    part — with `****`, or with the lowercase hex digest of the matched text when
//!    `hash_function` is set. Matches of all patterns are found on the original value and
//!    overlapping matches merged before replacing, so a digest is never itself re-masked.
//!
//! Regular expressions are unanchored (a substring match), as in the collector.
//!
//! With `summary: debug` or `info` the record gets `redaction.{redacted,masked,allowed}.count`
//! and `redaction.ignored.count` (debug adds `redaction.{redacted,masked,allowed}.keys`, sorted
//! and comma-joined), only when non-zero. When they already exist (the processor ran twice)
//! key lists are merged (union, sorted) and counts added.

use std::collections::HashSet;
use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use regex::{Regex, RegexSet};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use sha2::{Sha256, Sha512};
use spoor_model::otlp::{AnyValue, ExportTraceServiceRequest, KeyValue, any_value::Value};

use crate::attributes::{de_checked_seq, hex, string_value, value_to_string};
use crate::{Counts, Error};

/// The `redaction` processor's configuration, in the collector's shape.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct RedactionConfig {
    #[serde(default)]
    pub allow_all_keys: bool,
    #[serde(default)]
    pub allowed_keys: Vec<String>,
    #[serde(default)]
    pub ignored_keys: Vec<String>,
    #[serde(default, deserialize_with = "de_ignored_key_patterns")]
    pub ignored_key_patterns: Vec<String>,
    #[serde(default, deserialize_with = "de_blocked_key_patterns")]
    pub blocked_key_patterns: Vec<String>,
    #[serde(default, deserialize_with = "de_blocked_values")]
    pub blocked_values: Vec<String>,
    #[serde(default, deserialize_with = "de_allowed_values")]
    pub allowed_values: Vec<String>,
    /// Digest replacing masked text instead of `****`; `""` means none.
    #[serde(default, deserialize_with = "de_hash_function")]
    pub hash_function: Option<HashFunction>,
    /// Key for `hmac-sha256` / `hmac-sha512` (required by them).
    #[serde(default)]
    pub hmac_key: Option<String>,
    #[serde(default, deserialize_with = "de_summary")]
    pub summary: Summary,
    #[serde(default)]
    pub redact_all_types: bool,
}

impl<'de> Deserialize<'de> for RedactionConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let c = RedactionConfig::deserialize(d)?;
        check_hmac_key(&c).map_err(de::Error::custom)?;
        Ok(c)
    }
}

impl Serialize for RedactionConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        RedactionConfig::serialize(self, s)
    }
}

impl Serialize for HashFunction {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            HashFunction::Md5 => "md5",
            HashFunction::Sha1 => "sha1",
            HashFunction::Sha3 => "sha3",
            HashFunction::HmacSha256 => "hmac-sha256",
            HashFunction::HmacSha512 => "hmac-sha512",
        })
    }
}

impl Serialize for Summary {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            Summary::Debug => "debug",
            Summary::Info => "info",
            Summary::Silent => "silent",
        })
    }
}

/// `hash_function`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashFunction {
    Md5,
    Sha1,
    /// SHA3-256.
    Sha3,
    HmacSha256,
    HmacSha512,
}

const HASH_NAMES: &str = "md5, sha1, sha3, hmac-sha256, hmac-sha512";

impl HashFunction {
    pub fn parse(s: &str) -> Result<Option<HashFunction>, Error> {
        Ok(Some(match s.to_ascii_lowercase().as_str() {
            "" | "none" => return Ok(None),
            "md5" => HashFunction::Md5,
            "sha1" => HashFunction::Sha1,
            "sha3" => HashFunction::Sha3,
            "hmac-sha256" => HashFunction::HmacSha256,
            "hmac-sha512" => HashFunction::HmacSha512,
            _ => {
                return Err(Error::config("hash_function", format!("{s:?} is not supported; use one of {HASH_NAMES}")));
            }
        }))
    }
}

/// `summary`: which `redaction.*` attributes are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Summary {
    /// Key lists and counts.
    Debug,
    /// Counts only.
    Info,
    /// Nothing (the default).
    #[default]
    Silent,
}

fn de_hash_function<'de, D: Deserializer<'de>>(d: D) -> Result<Option<HashFunction>, D::Error> {
    let s = Option::<String>::deserialize(d)?.unwrap_or_default();
    HashFunction::parse(&s).map_err(de::Error::custom)
}

fn de_summary<'de, D: Deserializer<'de>>(d: D) -> Result<Summary, D::Error> {
    let s = Option::<String>::deserialize(d)?.unwrap_or_default();
    match s.to_ascii_lowercase().as_str() {
        "debug" => Ok(Summary::Debug),
        "info" => Ok(Summary::Info),
        "silent" | "" => Ok(Summary::Silent),
        _ => Err(de::Error::custom(Error::config("summary", format!("{s:?} is not one of debug, info, silent")))),
    }
}

fn check_regex(p: &str, at: &str) -> Result<(), Error> {
    compile(p, at).map(drop)
}

fn compile(p: &str, at: &str) -> Result<Regex, Error> {
    Regex::new(p).map_err(|e| Error::config(at, format!("bad regular expression {p:?}: {e}")))
}

fn de_ignored_key_patterns<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    de_checked_seq(d, "ignored_key_patterns", |p: &String, at| check_regex(p, at))
}
fn de_blocked_key_patterns<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    de_checked_seq(d, "blocked_key_patterns", |p: &String, at| check_regex(p, at))
}
fn de_blocked_values<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    de_checked_seq(d, "blocked_values", |p: &String, at| check_regex(p, at))
}
fn de_allowed_values<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    de_checked_seq(d, "allowed_values", |p: &String, at| check_regex(p, at))
}

fn check_hmac_key(c: &RedactionConfig) -> Result<(), Error> {
    let hmac = matches!(c.hash_function, Some(HashFunction::HmacSha256 | HashFunction::HmacSha512));
    match (&c.hmac_key, hmac) {
        (None, true) => Err(Error::config("hmac_key", "is required by hash_function hmac-sha256 / hmac-sha512")),
        (Some(k), true) if k.is_empty() => Err(Error::config("hmac_key", "is empty")),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
enum Hasher {
    Md5,
    Sha1,
    Sha3,
    HmacSha256(Hmac<Sha256>),
    HmacSha512(Hmac<Sha512>),
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        // Never print the HMAC key.
        f.write_str(match self {
            Hasher::Md5 => "md5",
            Hasher::Sha1 => "sha1",
            Hasher::Sha3 => "sha3",
            Hasher::HmacSha256(_) => "hmac-sha256",
            Hasher::HmacSha512(_) => "hmac-sha512",
        })
    }
}

impl Hasher {
    fn digest(&self, text: &str) -> String {
        use sha2::Digest;
        let b = text.as_bytes();
        match self {
            Hasher::Md5 => hex(&md5::Md5::digest(b)),
            Hasher::Sha1 => hex(&sha1::Sha1::digest(b)),
            Hasher::Sha3 => hex(&sha3::Sha3_256::digest(b)),
            Hasher::HmacSha256(m) => {
                let mut m = m.clone();
                m.update(b);
                hex(&m.finalize().into_bytes())
            }
            Hasher::HmacSha512(m) => {
                let mut m = m.clone();
                m.update(b);
                hex(&m.finalize().into_bytes())
            }
        }
    }
}

/// A compiled `redaction` processor.
#[derive(Clone, Debug)]
pub struct Redaction {
    allow_all: bool,
    allowed: HashSet<String>,
    ignored: HashSet<String>,
    ignored_patterns: RegexSet,
    blocked_key_patterns: RegexSet,
    blocked_values: Vec<Regex>,
    allowed_values: RegexSet,
    hasher: Option<Hasher>,
    summary: Summary,
    all_types: bool,
}

fn set(items: &[String], field: &str) -> Result<RegexSet, Error> {
    for (i, p) in items.iter().enumerate() {
        compile(p, &format!("{field}[{i}]"))?;
    }
    RegexSet::new(items).map_err(|e| Error::config(field, e.to_string()))
}

const SUMMARY_PREFIX: &str = "redaction.";

impl Redaction {
    pub fn new(cfg: &RedactionConfig) -> Result<Redaction, Error> {
        check_hmac_key(cfg)?;
        let key = cfg.hmac_key.as_deref().unwrap_or_default().as_bytes();
        let hasher = cfg.hash_function.map(|h| match h {
            HashFunction::Md5 => Hasher::Md5,
            HashFunction::Sha1 => Hasher::Sha1,
            HashFunction::Sha3 => Hasher::Sha3,
            HashFunction::HmacSha256 => Hasher::HmacSha256(Hmac::new_from_slice(key).expect("HMAC takes any key")),
            HashFunction::HmacSha512 => Hasher::HmacSha512(Hmac::new_from_slice(key).expect("HMAC takes any key")),
        });
        Ok(Redaction {
            allow_all: cfg.allow_all_keys,
            allowed: cfg.allowed_keys.iter().cloned().collect(),
            ignored: cfg.ignored_keys.iter().cloned().collect(),
            ignored_patterns: set(&cfg.ignored_key_patterns, "ignored_key_patterns")?,
            blocked_key_patterns: set(&cfg.blocked_key_patterns, "blocked_key_patterns")?,
            blocked_values: cfg
                .blocked_values
                .iter()
                .enumerate()
                .map(|(i, p)| compile(p, &format!("blocked_values[{i}]")))
                .collect::<Result<_, _>>()?,
            allowed_values: set(&cfg.allowed_values, "allowed_values")?,
            hasher,
            summary: cfg.summary,
            all_types: cfg.redact_all_types,
        })
    }

    /// Redacts resource, span, event and link attributes. `deleted` counts keys removed by the
    /// allow-list, `masked` values changed by a blocked pattern (masked or digested).
    pub fn apply(&self, req: &mut ExportTraceServiceRequest) -> Counts {
        let mut c = Counts::default();
        for rs in &mut req.resource_spans {
            if let Some(r) = rs.resource.as_mut() {
                c += self.redact(&mut r.attributes);
            }
            for ss in &mut rs.scope_spans {
                for span in &mut ss.spans {
                    c += self.redact(&mut span.attributes);
                    for e in &mut span.events {
                        c += self.redact(&mut e.attributes);
                    }
                    for l in &mut span.links {
                        c += self.redact(&mut l.attributes);
                    }
                }
            }
        }
        c
    }

    fn mask(&self, text: &str) -> String {
        match &self.hasher {
            Some(h) => h.digest(text),
            None => "****".to_owned(),
        }
    }

    /// Masks every match of every blocked value pattern; `None` when nothing matched.
    fn mask_blocked(&self, s: &str) -> Option<String> {
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for r in &self.blocked_values {
            spans.extend(r.find_iter(s).filter(|m| !m.is_empty()).map(|m| (m.start(), m.end())));
        }
        if spans.is_empty() {
            return None;
        }
        spans.sort_unstable();
        let mut out = String::with_capacity(s.len());
        let mut at = 0;
        let mut i = 0;
        while i < spans.len() {
            let (start, mut end) = spans[i];
            i += 1;
            while i < spans.len() && spans[i].0 < end {
                end = end.max(spans[i].1);
                i += 1;
            }
            out.push_str(&s[at..start]);
            out.push_str(&self.mask(&s[start..end]));
            at = end;
        }
        out.push_str(&s[at..]);
        Some(out)
    }

    fn redact(&self, attrs: &mut Vec<KeyValue>) -> Counts {
        let mut redacted: Vec<String> = Vec::new();
        let mut masked: Vec<String> = Vec::new();
        let mut allowed: Vec<String> = Vec::new();
        let mut ignored = 0i64;
        attrs.retain_mut(|kv| {
            if kv.key.starts_with(SUMMARY_PREFIX) {
                return true;
            }
            if self.ignored.contains(&kv.key) || self.ignored_patterns.is_match(&kv.key) {
                ignored += 1;
                return true;
            }
            if !self.allow_all && !self.allowed.contains(&kv.key) {
                redacted.push(kv.key.clone());
                return false;
            }
            let rendered;
            let s: &str = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s,
                Some(_) if self.all_types => {
                    rendered = value_to_string(kv.value.as_ref().expect("has a value"));
                    &rendered
                }
                _ => return true,
            };
            if self.allowed_values.is_match(s) {
                allowed.push(kv.key.clone());
                return true;
            }
            let new =
                if self.blocked_key_patterns.is_match(&kv.key) { Some(self.mask(s)) } else { self.mask_blocked(s) };
            if let Some(new) = new {
                kv.value = Some(string_value(new));
                masked.push(kv.key.clone());
            }
            true
        });
        let counts = Counts { deleted: redacted.len() as u64, masked: masked.len() as u64, ..Counts::default() };
        if self.summary != Summary::Silent {
            let debug = self.summary == Summary::Debug;
            for (name, keys) in [("redacted", redacted), ("masked", masked), ("allowed", allowed)] {
                if keys.is_empty() {
                    continue;
                }
                if debug {
                    merge_keys(attrs, &format!("redaction.{name}.keys"), keys.iter().map(String::as_str));
                }
                add_count(attrs, &format!("redaction.{name}.count"), keys.len() as i64);
            }
            if ignored > 0 {
                add_count(attrs, "redaction.ignored.count", ignored);
            }
        }
        counts
    }
}

/// Writes (or merges into) a sorted, comma-joined, de-duplicated key list.
fn merge_keys<'a>(attrs: &mut Vec<KeyValue>, key: &str, new: impl Iterator<Item = &'a str>) {
    let existing = attrs.iter_mut().find(|kv| kv.key == key);
    let mut all: Vec<String> = new.map(str::to_owned).collect();
    if let Some(Value::StringValue(old)) = existing.as_ref().and_then(|kv| kv.value.as_ref()?.value.as_ref()) {
        all.extend(old.split(',').filter(|s| !s.is_empty()).map(str::to_owned));
    }
    all.sort_unstable();
    all.dedup();
    let v = string_value(all.join(","));
    match existing {
        Some(kv) => kv.value = Some(v),
        None => attrs.push(KeyValue { key: key.to_owned(), value: Some(v) }),
    }
}

/// Writes (or adds to) an integer count.
fn add_count(attrs: &mut Vec<KeyValue>, key: &str, n: i64) {
    let v = |n| Some(AnyValue { value: Some(Value::IntValue(n)) });
    match attrs.iter_mut().find(|kv| kv.key == key) {
        Some(kv) => {
            let old = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::IntValue(i)) => *i,
                _ => 0,
            };
            kv.value = v(old + n);
        }
        None => attrs.push(KeyValue { key: key.to_owned(), value: v(n) }),
    }
}
