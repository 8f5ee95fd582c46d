//! A block's files and its `meta.json`: what a block holds, written last so a block without it
//! does not exist.

use parquet::file::metadata::ParquetMetaData;
use serde::{Deserialize, Serialize};
use spoor_model::time::now_nanos;

pub const DATA_FILE: &str = "data.parquet";
pub const FILTER_FILE: &str = "filter.bin";
pub const META_FILE: &str = "meta.json";
/// `meta.format` of blocks this crate writes.
pub const FORMAT: &str = "spoor-1";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockMeta {
    pub format: String,
    pub block_id: String,
    pub tenant: String,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub spans: u64,
    pub traces: u64,
    pub row_groups: u32,
    pub data_bytes: u64,
    pub filter_bytes: u64,
    pub compaction_level: u32,
    #[serde(default)]
    pub replaces: Vec<String>,
    pub created_unix_nano: u64,
    #[serde(default)]
    pub dedicated_columns: Vec<DedicatedColumn>,
    #[serde(default)]
    pub columns: Vec<ColumnSize>,
    /// Attribute keys in the block per scope, sorted: tag-name queries answer from here
    /// instead of reading data.
    #[serde(default)]
    pub keys: AttributeKeys,
    /// The retention tier: `full` (every span, the default and absent in older metas) or
    /// `sampled` (whole traces kept by the tenant's sampling rules once the block aged out of
    /// `full`). Compaction never merges blocks of different tiers.
    #[serde(default, skip_serializing_if = "Tier::is_full")]
    pub tier: Tier,
    /// With the Kafka-API log (the scale-out): per partition, the first and last offset of the
    /// log records whose spans this block holds (this tenant's records only). An ingester that
    /// restarts skips the records a block already holds, so a replay writes nothing twice.
    #[serde(default, skip_serializing_if = "LogOffsets::is_empty")]
    pub log: LogOffsets,
}

/// Partition -> (first offset, last offset) of the log records in a block.
pub type LogOffsets = std::collections::BTreeMap<u32, (i64, i64)>;

/// Merges `other` into `into` (a compacted block covers its inputs' ranges).
pub fn merge_log_offsets(into: &mut LogOffsets, other: &LogOffsets) {
    for (p, (first, last)) in other {
        let e = into.entry(*p).or_insert((*first, *last));
        *e = (e.0.min(*first), e.1.max(*last));
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    #[default]
    Full,
    Sampled,
}

impl Tier {
    pub fn is_full(&self) -> bool {
        *self == Tier::Full
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Tier::Full => "full",
            Tier::Sampled => "sampled",
        }
    }
}

/// Distinct attribute keys per scope, at most [`AttributeKeys::MAX_PER_SCOPE`] each.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributeKeys {
    #[serde(default)]
    pub span: Vec<String>,
    #[serde(default)]
    pub resource: Vec<String>,
    #[serde(default)]
    pub event: Vec<String>,
    #[serde(default)]
    pub link: Vec<String>,
    #[serde(default)]
    pub instrumentation: Vec<String>,
    /// Some scope had more keys than the cap (the lists are then incomplete).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// Keys with values in the generic `attrs` / `resource_attrs` lists (the rest are only in
    /// dedicated columns, or absent). None: unknown, the list may hold any key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generic_span: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generic_resource: Option<Vec<String>>,
}

impl AttributeKeys {
    /// A runaway key space (IDs in keys) must not bloat every meta.json.
    pub const MAX_PER_SCOPE: usize = 5_000;
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedicatedColumn {
    /// `span` or `resource`.
    pub scope: String,
    pub key: String,
    /// `string` or `int`.
    pub kind: String,
    /// The top-level parquet column holding the values.
    pub column: String,
}

impl DedicatedColumn {
    /// A column to ask for with `DedicatedPolicy::Fixed` (the writer names the column).
    pub fn new(scope: &str, key: &str, kind: &str) -> DedicatedColumn {
        DedicatedColumn { scope: scope.into(), key: key.into(), kind: kind.into(), column: String::new() }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnSize {
    pub name: String,
    pub compressed_bytes: u64,
    pub uncompressed_bytes: u64,
}

/// 64 unpredictable bits. std's `RandomState` is seeded from the OS per thread and stepped per
/// instance; block IDs need uniqueness, not secrecy, so this spares a dependency.
fn random_u64(salt: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    h.write_u64(now_nanos());
    h.write_u32(std::process::id());
    h.write_u64(salt);
    h.finish()
}

/// A new block ID: a UUIDv7 string (48-bit unix milliseconds, then random bits), so IDs sort by
/// creation time.
pub fn new_block_id() -> String {
    let ms = now_nanos() / 1_000_000;
    let (a, b) = (random_u64(1), random_u64(2));
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    bytes[6..].copy_from_slice(&a.to_be_bytes()[..2].iter().chain(&b.to_be_bytes()).copied().collect::<Vec<_>>());
    bytes[6] = 0x70 | (bytes[6] & 0x0f); // version 7
    bytes[8] = 0x80 | (bytes[8] & 0x3f); // RFC 9562 variant
    let hex = spoor_model::ids::hex(&bytes);
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// The ID of the block cut from exactly these log records of `tenant`: a cut replayed after a
/// crash gets the same ID, so it overwrites the same block instead of adding a second copy.
/// UUID-shaped (version 8, RFC 9562's custom version) from a SHA-256 of the tenant and ranges.
pub fn log_block_id(tenant: &str, log: &LogOffsets) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(tenant.as_bytes());
    for (p, (first, last)) in log {
        h.update(p.to_be_bytes());
        h.update(first.to_be_bytes());
        h.update(last.to_be_bytes());
    }
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&h.finalize()[..16]);
    bytes[6] = 0x80 | (bytes[6] & 0x0f); // version 8
    bytes[8] = 0x80 | (bytes[8] & 0x3f); // RFC 9562 variant
    let hex = spoor_model::ids::hex(&bytes);
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// Per top-level column sizes summed over row groups, for `meta.columns`.
pub(crate) fn column_sizes(metadata: &ParquetMetaData) -> Vec<ColumnSize> {
    let mut columns: Vec<ColumnSize> = Vec::new();
    for rg in metadata.row_groups() {
        for col in rg.columns() {
            let name = &col.column_path().parts()[0];
            let (c, u) = (col.compressed_size().max(0) as u64, col.uncompressed_size().max(0) as u64);
            match columns.iter_mut().find(|x| &x.name == name) {
                Some(x) => {
                    x.compressed_bytes += c;
                    x.uncompressed_bytes += u;
                }
                None => columns.push(ColumnSize { name: name.clone(), compressed_bytes: c, uncompressed_bytes: u }),
            }
        }
    }
    columns
}
