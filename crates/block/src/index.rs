//! The value index: per row group, which span and resource attribute keys occur, with which
//! value types, their exact distinct values when there are few, and a binary fuse filter over
//! (key, value) for the rest. A search asks it before reading a row group, so an equality that
//! matches nothing there (or a regex / range / `!=` over a low-cardinality key) skips the row
//! group without decoding a byte of it, whether the key has a dedicated column or sits in the
//! generic list: the index is built from the spans, not from the columns.
//!
//! It is stored after the trace-ID filter in `filter.bin` (version 2, see `filter.rs`):
//! `u32` group count, then per row group: `u32` key count, per key (sorted by scope, key)
//! `u8` scope (0 span, 1 resource), `u16` key length, key, `u8` kinds (bits below), `u8` flags
//! (bit 0: exact strings follow, bit 1: exact ints follow), then `u8` count + (`u32` length,
//! bytes) per string and `u8` count + `i64` per int; then the group's filter (`u8` kind 0 none /
//! 1 BinaryFuse8, as in the trace-ID filter). A key whose values are not listed exactly is in the
//! filter, or, without a filter, may hold anything.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;

use xorf::{BinaryFuse8, Filter};

use crate::codec::{Reader, mix, read_fuse, write_fuse};
use crate::error::{Error, Result};
use crate::schema::AttrScope;
use crate::write::view::{Kv, Val};

/// Value types present for a key, as bits.
pub mod kinds {
    pub const STR: u8 = 1;
    pub const INT: u8 = 2;
    pub const DOUBLE: u8 = 4;
    pub const BOOL: u8 = 8;
    pub const BYTES: u8 = 16;
    /// Arrays and key-value lists: their elements may compare with anything.
    pub const LIST: u8 = 32;
    /// No value, or an empty `AnyValue`: never satisfies a comparison.
    pub const NONE: u8 = 64;
}

/// Values listed exactly per key and row group; a key with more distinct values (or longer
/// ones) goes to the filter. Small enough that a regex over them costs nothing, large enough for
/// enums (methods, status codes, environments, regions).
const EXACT_MAX: usize = 16;
const EXACT_MAX_LEN: usize = 128;

const TAG_STR: u64 = 0x5354_5200;
const TAG_INT: u64 = 0x494e_5400;

/// A stable 64-bit hash (the index is persisted, so this may never change for version 2):
/// multiply-rotate over little-endian words, SplitMix64's finalizer. Not collision resistant;
/// a collision only costs reading a row group.
fn hash_bytes(tag: u64, bytes: &[u8]) -> u64 {
    const P: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = tag ^ (bytes.len() as u64).wrapping_mul(P);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        h = (h ^ u64::from_le_bytes(c.try_into().expect("8 bytes"))).wrapping_mul(P).rotate_left(31);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(P).rotate_left(31);
    }
    mix(h)
}

fn str_hash(s: &str) -> u64 {
    hash_bytes(TAG_STR, s.as_bytes())
}

fn int_hash(i: i64) -> u64 {
    hash_bytes(TAG_INT, &i.to_le_bytes())
}

fn key_seed(scope: AttrScope, key: &str) -> u64 {
    hash_bytes(scope_byte(scope) as u64 + 1, key.as_bytes())
}

/// The filter key of one (key, value) pair.
fn pair(seed: u64, value: u64) -> u64 {
    mix(seed.rotate_left(23) ^ value)
}

fn scope_byte(scope: AttrScope) -> u8 {
    match scope {
        AttrScope::Span => 0,
        AttrScope::Resource => 1,
    }
}

/// A quick hasher for the builder's maps: string keys get a multiply-rotate hash (a handful of
/// keys per block, so colliding input costs little), value hashes pass through.
#[derive(Default)]
struct QuickHasher(u64);

impl std::hash::Hasher for QuickHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 ^= v;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type Quick = BuildHasherDefault<QuickHasher>;

/// One key's values in the row group being written.
struct Entry {
    kinds: u8,
    /// Distinct values while few; `None` once spilled to `hashes`.
    strings: Option<Vec<String>>,
    ints: Option<Vec<i64>>,
    hashes: HashSet<u64, Quick>,
}

impl Entry {
    fn new() -> Entry {
        Entry { kinds: 0, strings: Some(Vec::new()), ints: Some(Vec::new()), hashes: HashSet::default() }
    }

    fn add(&mut self, kv: &Kv<'_>) {
        match &kv.value {
            Val::Str(s) => {
                self.kinds |= kinds::STR;
                match &mut self.strings {
                    Some(list) if list.iter().any(|x| x == s) => {}
                    Some(list) if list.len() < EXACT_MAX && s.len() <= EXACT_MAX_LEN => list.push((*s).to_owned()),
                    Some(_) => {
                        let list = self.strings.take().expect("matched Some");
                        self.hashes.extend(list.iter().map(|x| str_hash(x)));
                        self.hashes.insert(str_hash(s));
                    }
                    None => {
                        self.hashes.insert(str_hash(s));
                    }
                }
            }
            Val::Int(i) => {
                self.kinds |= kinds::INT;
                match &mut self.ints {
                    Some(list) if list.contains(i) => {}
                    Some(list) if list.len() < EXACT_MAX => list.push(*i),
                    Some(_) => {
                        let list = self.ints.take().expect("matched Some");
                        self.hashes.extend(list.iter().map(|&x| int_hash(x)));
                        self.hashes.insert(int_hash(*i));
                    }
                    None => {
                        self.hashes.insert(int_hash(*i));
                    }
                }
            }
            Val::Double(_) => self.kinds |= kinds::DOUBLE,
            Val::Bool(_) => self.kinds |= kinds::BOOL,
            Val::Bytes(_) => self.kinds |= kinds::BYTES,
            Val::Nested(_) => self.kinds |= kinds::LIST,
            Val::Empty | Val::Absent => self.kinds |= kinds::NONE,
        }
    }
}

/// Builds the index a row group at a time, as the writer appends spans.
#[derive(Default)]
pub(crate) struct IndexBuilder {
    /// Per scope (span, resource): key → position in `entries`.
    keys: [HashMap<String, usize, Quick>; 2],
    entries: Vec<(AttrScope, Entry)>,
    groups: u32,
    out: Vec<u8>,
    /// The resource seen last (by address, as the key catalog does): the spans of one resource
    /// come together, and indexing its attributes again per span costs without adding anything.
    last_resource: usize,
}

impl IndexBuilder {
    /// Addresses of the previous trace's resources mean nothing once it is dropped.
    pub fn new_trace(&mut self) {
        self.last_resource = 0;
    }

    pub fn span(&mut self, attrs: &[Kv<'_>], resource: &[Kv<'_>]) {
        self.add(AttrScope::Span, attrs);
        let address = resource.as_ptr() as usize;
        if std::mem::replace(&mut self.last_resource, address) != address {
            self.add(AttrScope::Resource, resource);
        }
    }

    fn add(&mut self, scope: AttrScope, attrs: &[Kv<'_>]) {
        let map = &mut self.keys[scope_byte(scope) as usize];
        for kv in attrs {
            let i = match map.get(kv.key) {
                Some(&i) => i,
                None => {
                    map.insert(kv.key.to_owned(), self.entries.len());
                    self.entries.push((scope, Entry::new()));
                    self.entries.len() - 1
                }
            };
            self.entries[i].1.add(kv);
        }
    }

    /// Closes the current row group (its spans were all added).
    pub fn end_group(&mut self) {
        let mut keys: Vec<(AttrScope, &str, usize)> = Vec::new();
        for (s, map) in self.keys.iter().enumerate() {
            let scope = if s == 0 { AttrScope::Span } else { AttrScope::Resource };
            keys.extend(map.iter().map(|(k, &i)| (scope, k.as_str(), i)));
        }
        keys.sort_by(|a, b| (scope_byte(a.0), a.1).cmp(&(scope_byte(b.0), b.1)));
        let out = &mut self.out;
        out.extend_from_slice(&(keys.len() as u32).to_le_bytes());
        let mut filtered: Vec<u64> = Vec::new();
        for &(scope, key, i) in &keys {
            let e = &self.entries[i].1;
            // Keys longer than a u16 cannot be written; none is that long in practice, and
            // leaving it out would make a search skip row groups that hold it.
            let key_bytes = &key.as_bytes()[..key.len().min(u16::MAX as usize)];
            out.push(scope_byte(scope));
            out.extend_from_slice(&(key_bytes.len() as u16).to_le_bytes());
            out.extend_from_slice(key_bytes);
            let truncated = key_bytes.len() < key.len();
            // A truncated key is looked up by nobody; mark it as holding anything.
            out.push(if truncated { 0xff } else { e.kinds });
            let exact_strings = e.strings.as_ref().filter(|_| e.kinds & kinds::STR != 0);
            let exact_ints = e.ints.as_ref().filter(|_| e.kinds & kinds::INT != 0);
            out.push(exact_strings.is_some() as u8 | (exact_ints.is_some() as u8) << 1);
            if let Some(list) = exact_strings {
                out.push(list.len() as u8);
                for s in list {
                    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                    out.extend_from_slice(s.as_bytes());
                }
            }
            if let Some(list) = exact_ints {
                out.push(list.len() as u8);
                list.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
            }
            if !e.hashes.is_empty() {
                let seed = key_seed(scope, key);
                filtered.extend(e.hashes.iter().map(|&h| pair(seed, h)));
            }
        }
        filtered.sort_unstable();
        filtered.dedup();
        match (!filtered.is_empty()).then(|| BinaryFuse8::try_from(&filtered)) {
            Some(Ok(filter)) => {
                out.push(1);
                write_fuse(out, &filter);
            }
            // No filter: every value not listed exactly may be there (the reader's default).
            _ => out.push(0),
        }
        self.groups += 1;
        self.keys.iter_mut().for_each(HashMap::clear);
        self.entries.clear();
        self.last_resource = 0;
    }

    /// The encoded index of `groups` row groups; `None` if the groups closed do not match the
    /// file's (the block is then written without an index, and searched without skipping).
    pub fn finish(self, groups: usize) -> Option<Vec<u8>> {
        if self.groups as usize != groups {
            return None;
        }
        let mut out = self.groups.to_le_bytes().to_vec();
        out.extend_from_slice(&self.out);
        Some(out)
    }
}

/// The parsed index of a block: one entry per row group.
#[derive(Debug, Default)]
pub struct ValueIndex {
    groups: Vec<GroupIndex>,
}

/// One row group's keys and filter.
#[derive(Debug, Default)]
pub struct GroupIndex {
    keys: Vec<KeyIndex>,
    filter: Option<BinaryFuse8>,
}

#[derive(Debug)]
struct KeyIndex {
    scope: AttrScope,
    key: String,
    kinds: u8,
    strings: Option<Vec<String>>,
    ints: Option<Vec<i64>>,
}

/// What a row group holds for one key.
#[derive(Clone, Copy)]
pub struct KeyValues<'a> {
    key: &'a KeyIndex,
    filter: Option<&'a BinaryFuse8>,
}

impl ValueIndex {
    pub(crate) fn parse(r: &mut Reader<'_>) -> Result<ValueIndex> {
        let count = r.u32()? as usize;
        // Each group takes at least 5 bytes: a bound before allocating for a corrupt count.
        if count > r.remaining() / 5 {
            return Err(Error::Filter("value index: group count past the end".into()));
        }
        let mut groups = Vec::with_capacity(count);
        for _ in 0..count {
            groups.push(GroupIndex::parse(r)?);
        }
        Ok(ValueIndex { groups })
    }

    /// The index of row group `i`, if there is one.
    pub fn group(&self, i: usize) -> Option<&GroupIndex> {
        self.groups.get(i)
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

impl GroupIndex {
    fn parse(r: &mut Reader<'_>) -> Result<GroupIndex> {
        let count = r.u32()? as usize;
        if count > r.remaining() / 5 {
            return Err(Error::Filter("value index: key count past the end".into()));
        }
        let text = |b: &[u8]| {
            String::from_utf8(b.to_vec()).map_err(|_| Error::Filter("value index: a key is not UTF-8".into()))
        };
        let mut keys = Vec::with_capacity(count);
        for _ in 0..count {
            let scope = match r.u8()? {
                0 => AttrScope::Span,
                1 => AttrScope::Resource,
                s => return Err(Error::Filter(format!("value index: unknown scope {s}"))),
            };
            let len = r.u16()? as usize;
            let key = text(r.take(len)?)?;
            let kinds = r.u8()?;
            let flags = r.u8()?;
            let strings = if flags & 1 != 0 {
                let n = r.u8()? as usize;
                let mut list = Vec::with_capacity(n);
                for _ in 0..n {
                    let len = r.u32()? as usize;
                    list.push(text(r.take(len)?)?);
                }
                Some(list)
            } else {
                None
            };
            let ints = if flags & 2 != 0 {
                let n = r.u8()? as usize;
                (0..n).map(|_| r.u64().map(|v| v as i64)).collect::<Result<Vec<_>>>().map(Some)?
            } else {
                None
            };
            keys.push(KeyIndex { scope, key, kinds, strings, ints });
        }
        // Non-decreasing: two keys cut to the same u16-long prefix are both kept.
        let ordered =
            keys.windows(2).all(|w| (scope_byte(w[0].scope), &w[0].key) <= (scope_byte(w[1].scope), &w[1].key));
        if !ordered {
            return Err(Error::Filter("value index: keys out of order".into()));
        }
        let filter = match r.u8()? {
            0 => None,
            1 => Some(read_fuse(r)?),
            kind => return Err(Error::Filter(format!("value index: unknown filter kind {kind}"))),
        };
        Ok(GroupIndex { keys, filter })
    }

    /// What the row group holds for `key` in `scope`; `None`: no span of it has the key.
    pub fn key(&self, scope: AttrScope, key: &str) -> Option<KeyValues<'_>> {
        let i = self
            .keys
            .binary_search_by(|k| (scope_byte(k.scope), k.key.as_str()).cmp(&(scope_byte(scope), key)))
            .ok()?;
        Some(KeyValues { key: &self.keys[i], filter: self.filter.as_ref() })
    }

    /// Every key of one scope in the row group, with its value kinds (for tests and tools).
    pub fn keys(&self, scope: AttrScope) -> impl Iterator<Item = (&str, u8)> {
        self.keys.iter().filter(move |k| k.scope == scope).map(|k| (k.key.as_str(), k.kinds))
    }
}

impl<'a> KeyValues<'a> {
    /// The value types present (bits of [`kinds`]).
    pub fn kinds(&self) -> u8 {
        self.key.kinds
    }

    /// The distinct string values, when the row group has few enough to list.
    pub fn strings(&self) -> Option<&'a [String]> {
        self.key.strings.as_deref()
    }

    /// The distinct int values, when few enough to list.
    pub fn ints(&self) -> Option<&'a [i64]> {
        self.key.ints.as_deref()
    }

    /// False: no span of the row group has this string value for the key.
    pub fn may_have_str(&self, s: &str) -> bool {
        if self.key.kinds & kinds::STR == 0 {
            return false;
        }
        match &self.key.strings {
            Some(list) => list.iter().any(|x| x == s),
            None => self.filter.is_none_or(|f| f.contains(&pair(key_seed(self.key.scope, &self.key.key), str_hash(s)))),
        }
    }

    /// False: no span of the row group has this int value for the key.
    pub fn may_have_int(&self, i: i64) -> bool {
        if self.key.kinds & kinds::INT == 0 {
            return false;
        }
        match &self.key.ints {
            Some(list) => list.contains(&i),
            None => self.filter.is_none_or(|f| f.contains(&pair(key_seed(self.key.scope, &self.key.key), int_hash(i)))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spoor_model::otlp::{AnyValue, KeyValue, any_value};

    fn kv(key: &str, v: any_value::Value) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(v) }) }
    }

    fn views(attrs: &[KeyValue]) -> Vec<Kv<'_>> {
        crate::write::view::kvs_of(attrs)
    }

    fn parse(bytes: &[u8]) -> Result<ValueIndex> {
        ValueIndex::parse(&mut Reader::new(bytes))
    }

    #[test]
    fn lists_few_values_exactly_and_filters_the_rest() {
        use any_value::Value::*;
        let mut b = IndexBuilder::default();
        let resource = vec![kv("service.name", StringValue("api".into()))];
        for i in 0..1000i64 {
            let attrs = vec![
                kv("http.method", StringValue(["GET", "POST"][i as usize % 2].into())),
                kv("user.id", StringValue(format!("user-{i}"))),
                kv("status", IntValue(200 + i % 3)),
                kv("seq", IntValue(i)),
                kv("mixed", if i % 2 == 0 { StringValue("x".into()) } else { DoubleValue(0.5) }),
            ];
            b.span(&views(&attrs), &views(&resource));
        }
        b.end_group();
        b.span(&views(&[kv("other", BoolValue(true))]), &views(&resource));
        b.end_group();
        let bytes = b.finish(2).unwrap();
        let index = parse(&bytes).unwrap();
        assert_eq!(index.len(), 2);
        let g = index.group(0).unwrap();
        let method = g.key(AttrScope::Span, "http.method").unwrap();
        assert_eq!(method.strings().unwrap(), ["GET", "POST"]);
        assert!(method.may_have_str("GET") && !method.may_have_str("PATCH") && !method.may_have_int(1));
        let user = g.key(AttrScope::Span, "user.id").unwrap();
        assert!(user.strings().is_none());
        assert!((0..1000).all(|i| user.may_have_str(&format!("user-{i}"))));
        let false_positives = (1000..11000).filter(|i| user.may_have_str(&format!("user-{i}"))).count();
        assert!(false_positives < 200, "{false_positives}");
        assert_eq!(g.key(AttrScope::Span, "status").unwrap().ints().unwrap(), [200, 201, 202]);
        let seq = g.key(AttrScope::Span, "seq").unwrap();
        assert!((0..1000).all(|i| seq.may_have_int(i)) && !seq.may_have_str("1"));
        let mixed = g.key(AttrScope::Span, "mixed").unwrap();
        assert_eq!(mixed.kinds(), kinds::STR | kinds::DOUBLE);
        assert!(g.key(AttrScope::Resource, "service.name").unwrap().may_have_str("api"));
        assert!(g.key(AttrScope::Span, "service.name").is_none());
        assert!(g.key(AttrScope::Span, "other").is_none());
        let g1 = index.group(1).unwrap();
        assert_eq!(g1.key(AttrScope::Span, "other").unwrap().kinds(), kinds::BOOL);
        assert!(g1.key(AttrScope::Span, "user.id").is_none());
        // Every strict prefix is refused, never misread.
        for len in 0..bytes.len() {
            assert!(parse(&bytes[..len]).is_err(), "prefix of {len}");
        }
    }

    #[test]
    fn a_group_count_that_does_not_match_the_file_drops_the_index() {
        let mut b = IndexBuilder::default();
        b.end_group();
        assert!(b.finish(2).is_none());
    }
}
