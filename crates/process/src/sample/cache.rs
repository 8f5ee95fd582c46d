//! Trace keys (tenant, trace ID) that can be looked up without allocating, and the LRU used
//! for decision caches.

use std::borrow::Borrow;
use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use spoor_model::TraceId;

/// A buffered trace's identity. The tenant is shared by the map and the queues that name it.
#[derive(Clone, Debug)]
pub(crate) struct Key {
    pub tenant: Arc<str>,
    pub id: TraceId,
}

/// (tenant, trace ID) in borrowed or owned form, so maps keyed by [`Key`] can be searched with
/// a `&str` (the `Borrow<dyn ...>` pattern).
pub(crate) trait AsKey {
    fn tenant(&self) -> &str;
    fn id(&self) -> &TraceId;
}

impl AsKey for Key {
    fn tenant(&self) -> &str {
        &self.tenant
    }
    fn id(&self) -> &TraceId {
        &self.id
    }
}

/// A borrowed key for look-ups.
pub(crate) struct KeyRef<'a>(pub &'a str, pub TraceId);

impl AsKey for KeyRef<'_> {
    fn tenant(&self) -> &str {
        self.0
    }
    fn id(&self) -> &TraceId {
        &self.1
    }
}

impl<'a> Borrow<dyn AsKey + 'a> for Key {
    fn borrow(&self) -> &(dyn AsKey + 'a) {
        self
    }
}

impl Hash for dyn AsKey + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.tenant().hash(state);
        self.id().hash(state);
    }
}

impl PartialEq for dyn AsKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id() && self.tenant() == other.tenant()
    }
}

impl Eq for dyn AsKey + '_ {}

// Must hash and compare exactly like `dyn AsKey`.
impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self as &dyn AsKey).hash(state)
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        (self as &dyn AsKey) == (other as &dyn AsKey)
    }
}

impl Eq for Key {}

/// A least-recently-used set of keys with a fixed capacity (`0`: always empty).
///
/// Recency is kept lazily: a touch appends a new stamp to the queue and the stale entry is
/// skipped when it reaches the front; the queue is compacted when it grows past twice the
/// capacity, so every operation is amortised O(1) and memory stays O(capacity).
#[derive(Debug)]
pub(crate) struct Lru {
    capacity: usize,
    stamps: HashMap<Key, Cell<u64>>,
    queue: VecDeque<(u64, Key)>,
    clock: u64,
}

impl Lru {
    pub fn new(capacity: usize) -> Lru {
        Lru { capacity, stamps: HashMap::new(), queue: VecDeque::new(), clock: 0 }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.stamps.len()
    }

    /// Whether `key` is cached; a hit makes it the most recently used.
    pub fn touch(&mut self, key: &dyn AsKey) -> bool {
        let Some((k, stamp)) = self.stamps.get_key_value(key) else { return false };
        self.clock += 1;
        stamp.set(self.clock);
        self.queue.push_back((self.clock, k.clone()));
        self.compact();
        true
    }

    pub fn insert(&mut self, key: &Key) {
        if self.capacity == 0 || self.touch(key) {
            return;
        }
        self.clock += 1;
        self.stamps.insert(key.clone(), Cell::new(self.clock));
        self.queue.push_back((self.clock, key.clone()));
        while self.stamps.len() > self.capacity {
            let Some((stamp, k)) = self.queue.pop_front() else { break };
            if self.stamps.get(&k).is_some_and(|s| s.get() == stamp) {
                self.stamps.remove(&k);
            }
        }
        self.compact();
    }

    pub fn remove(&mut self, key: &dyn AsKey) {
        self.stamps.remove(key);
    }

    fn compact(&mut self) {
        if self.queue.len() > 2 * self.capacity + 16 {
            let stamps = &self.stamps;
            self.queue.retain(|(stamp, k)| stamps.get(k).is_some_and(|s| s.get() == *stamp));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(t: &str, b: u8) -> Key {
        Key { tenant: t.into(), id: TraceId([b; 16]) }
    }

    #[test]
    fn borrowed_lookups_find_owned_keys() {
        let mut m: HashMap<Key, u32> = HashMap::new();
        m.insert(key("a", 1), 1);
        m.insert(key("b", 1), 2);
        assert_eq!(m.get(&KeyRef("a", TraceId([1; 16])) as &dyn AsKey), Some(&1));
        assert_eq!(m.get(&KeyRef("b", TraceId([1; 16])) as &dyn AsKey), Some(&2));
        assert_eq!(m.get(&KeyRef("c", TraceId([1; 16])) as &dyn AsKey), None);
    }

    #[test]
    fn lru_evicts_least_recently_used() {
        let mut c = Lru::new(2);
        c.insert(&key("t", 1));
        c.insert(&key("t", 2));
        assert!(c.touch(&key("t", 1)));
        c.insert(&key("t", 3));
        assert!(c.touch(&key("t", 1)));
        assert!(!c.touch(&key("t", 2)));
        assert!(c.touch(&key("t", 3)));
        for _ in 0..1000 {
            c.touch(&key("t", 1));
        }
        assert!(c.queue.len() <= 2 * 2 + 17);
        assert_eq!(c.len(), 2);
        let mut off = Lru::new(0);
        off.insert(&key("t", 1));
        assert!(!off.touch(&key("t", 1)));
    }
}
