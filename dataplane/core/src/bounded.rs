//! In-memory structures that grow with traffic, kept bounded.
//!
//! [`BoundedMap`] is a map with a hard cap on entries and approximate
//! bytes, and a time to live: entries older than the TTL are dropped as
//! new ones come in, and at the cap the oldest entry is evicted (counted)
//! to make room. Work per insert is O(1) amortised (a FIFO of insertion
//! order beside the map), so a full map under sustained load does not
//! rescan itself on every insert.
//!
//! [`MemoryUse`] is what each structure reports for the
//! `smsgw_memory_*` gauges (METRICS.md).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// What one bounded structure holds now, for the `smsgw_memory_*` gauges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryUse {
    /// The structure's name (the `structure` label), e.g. `late_responses`.
    pub structure: &'static str,
    /// Entries held.
    pub entries: u64,
    /// Approximate bytes held (keys, values and per-entry overhead).
    pub bytes: u64,
    /// Entry bound.
    pub capacity: u64,
    /// Entries dropped at the bound before their time to live ran out,
    /// since start.
    pub evicted: u64,
}

impl MemoryUse {
    /// One structure `structure` made of `parts` (e.g. the same buffer of
    /// every link): entries, bytes, bounds and evictions summed.
    pub fn total(structure: &'static str, parts: impl IntoIterator<Item = MemoryUse>) -> Self {
        parts.into_iter().fold(
            MemoryUse {
                structure,
                entries: 0,
                bytes: 0,
                capacity: 0,
                evicted: 0,
            },
            |mut m, p| {
                m.entries += p.entries;
                m.bytes += p.bytes;
                m.capacity += p.capacity;
                m.evicted += p.evicted;
                m
            },
        )
    }
}

/// Approximate per-entry overhead of a hash map entry plus its FIFO slot
/// (hash, control bytes, insertion time, generation), added to what the
/// caller says a key and value take.
pub const ENTRY_OVERHEAD: usize = 64;

struct Slot<V> {
    value: V,
    at: Instant,
    bytes: usize,
    generation: u64,
}

/// A map with a hard bound on entries and bytes and a time to live; see
/// the module documentation.
pub struct BoundedMap<K, V> {
    name: &'static str,
    capacity: usize,
    max_bytes: usize,
    ttl: Duration,
    map: HashMap<K, Slot<V>>,
    /// Keys in insertion order with the generation they were inserted
    /// with; a key replaced or removed since leaves a stale slot here,
    /// skipped when reached and compacted when they pile up.
    order: VecDeque<(K, u64)>,
    generation: u64,
    bytes: usize,
    evicted: u64,
}

impl<K: Hash + Eq + Clone, V> BoundedMap<K, V> {
    /// An empty map named `name` holding at most `capacity` entries (at
    /// least 1) of at most `max_bytes` approximate bytes in all, each kept
    /// for `ttl`.
    pub fn new(name: &'static str, capacity: usize, max_bytes: usize, ttl: Duration) -> Self {
        Self {
            name,
            capacity: capacity.max(1),
            max_bytes,
            ttl,
            map: HashMap::new(),
            order: VecDeque::new(),
            generation: 0,
            bytes: 0,
            evicted: 0,
        }
    }

    /// Inserts `key` (replacing any entry of it) with `bytes`, the
    /// approximate size of key and value (see [`ENTRY_OVERHEAD`]), at
    /// `now`. Expired entries are dropped first; then, while the map is
    /// at its entry or byte bound, the oldest entry is evicted. Returns
    /// how many entries were evicted before their time.
    pub fn insert(&mut self, key: K, value: V, bytes: usize, now: Instant) -> usize {
        self.remove(&key);
        self.expire(now);
        let bytes = bytes + ENTRY_OVERHEAD;
        let mut evicted = 0;
        while !self.map.is_empty()
            && (self.map.len() >= self.capacity || self.bytes + bytes > self.max_bytes)
        {
            if self.pop_oldest().is_none() {
                break;
            }
            evicted += 1;
        }
        self.evicted += evicted as u64;
        self.generation += 1;
        self.order.push_back((key.clone(), self.generation));
        self.map.insert(
            key,
            Slot {
                value,
                at: now,
                bytes,
                generation: self.generation,
            },
        );
        self.bytes += bytes;
        self.compact();
        evicted
    }

    /// The value of `key` if present and younger than the TTL at `now`.
    pub fn get(&self, key: &K, now: Instant) -> Option<&V> {
        self.map
            .get(key)
            .filter(|s| now.saturating_duration_since(s.at) < self.ttl)
            .map(|s| &s.value)
    }

    /// The value of `key`, to change in place, if present and younger than
    /// the TTL at `now` (its age is not reset: insert it again for that).
    pub fn get_mut(&mut self, key: &K, now: Instant) -> Option<&mut V> {
        let ttl = self.ttl;
        self.map
            .get_mut(key)
            .filter(|s| now.saturating_duration_since(s.at) < ttl)
            .map(|s| &mut s.value)
    }

    /// The value of `key` and when it was inserted, whatever its age.
    pub fn get_with_time(&self, key: &K) -> Option<(&V, Instant)> {
        self.map.get(key).map(|s| (&s.value, s.at))
    }

    /// Removes `key`, returning its value if it was present and younger
    /// than the TTL at `now` (an expired entry is removed and `None`).
    pub fn take(&mut self, key: &K, now: Instant) -> Option<V> {
        let s = self.remove_slot(key)?;
        (now.saturating_duration_since(s.at) < self.ttl).then_some(s.value)
    }

    /// Removes `key` whatever its age.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.remove_slot(key).map(|s| s.value)
    }

    fn remove_slot(&mut self, key: &K) -> Option<Slot<V>> {
        let s = self.map.remove(key)?;
        self.bytes -= s.bytes;
        Some(s)
    }

    /// Drops every entry older than the TTL at `now` (they are the oldest,
    /// so this stops at the first young one).
    pub fn expire(&mut self, now: Instant) {
        while let Some((k, g)) = self.order.front() {
            match self.map.get(k) {
                Some(s) if s.generation == *g => {
                    if now.saturating_duration_since(s.at) < self.ttl {
                        break;
                    }
                    let (k, _) = self.order.pop_front().expect("front exists");
                    self.remove_slot(&k);
                }
                _ => {
                    self.order.pop_front();
                }
            }
        }
    }

    /// Removes the oldest live entry.
    fn pop_oldest(&mut self) -> Option<V> {
        while let Some((k, g)) = self.order.pop_front() {
            if self.map.get(&k).is_some_and(|s| s.generation == g) {
                return self.remove(&k);
            }
        }
        None
    }

    /// Rebuilds the FIFO when stale slots (keys since replaced or removed)
    /// outnumber live ones, so it stays within twice the entry bound.
    fn compact(&mut self) {
        if self.order.len() > 2 * self.map.len() + 16 {
            let map = &self.map;
            self.order
                .retain(|(k, g)| map.get(k).is_some_and(|s| s.generation == *g));
        }
    }

    /// Every value held, in no particular order (expired ones included
    /// until they are dropped).
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.map.values().map(|s| &s.value)
    }

    /// Entries held (some may have expired and not been dropped yet).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when the map holds nothing.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The entry bound.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The time to live.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// What the map holds, for the gauges.
    pub fn memory(&self) -> MemoryUse {
        MemoryUse {
            structure: self.name,
            entries: self.map.len() as u64,
            bytes: (self.bytes + self.order.len() * std::mem::size_of::<(K, u64)>()) as u64,
            capacity: self.capacity as u64,
            evicted: self.evicted,
        }
    }
}

impl<K, V> std::fmt::Debug for BoundedMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundedMap")
            .field("name", &self.name)
            .field("entries", &self.map.len())
            .field("capacity", &self.capacity)
            .field("bytes", &self.bytes)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(600);

    #[test]
    fn filling_past_the_entry_bound_evicts_the_oldest_and_counts_them() {
        let t0 = Instant::now();
        let mut m = BoundedMap::new("t", 1000, usize::MAX, TTL);
        for i in 0..5000u32 {
            m.insert(i, i, 4, t0);
            assert!(m.len() <= 1000);
        }
        assert_eq!(m.len(), 1000);
        assert_eq!(m.memory().evicted, 4000);
        assert_eq!(m.get(&3999, t0), None, "evicted before its time");
        assert_eq!(m.get(&4000, t0), Some(&4000));
        assert_eq!(m.get(&4999, t0), Some(&4999));
        assert!(m.order.len() <= 2 * m.len() + 16);
    }

    #[test]
    fn the_byte_bound_holds_with_entries_of_any_size() {
        let t0 = Instant::now();
        let mut m = BoundedMap::new("t", usize::MAX, 100_000, TTL);
        for i in 0..10_000u32 {
            m.insert(i, vec![0u8; (i % 500) as usize], (i % 500) as usize, t0);
            assert!(m.bytes <= 100_000, "{} bytes", m.bytes);
        }
        assert!(m.memory().evicted > 0);
        assert!(m.len() < 10_000);
    }

    #[test]
    fn entries_past_their_ttl_are_dropped_and_not_returned() {
        let t0 = Instant::now();
        let mut m = BoundedMap::new("t", 100, usize::MAX, Duration::from_secs(5));
        m.insert("a", 1, 1, t0);
        m.insert("b", 2, 1, t0 + Duration::from_secs(3));
        assert_eq!(m.get(&"a", t0 + Duration::from_secs(6)), None);
        assert_eq!(m.get(&"b", t0 + Duration::from_secs(6)), Some(&2));
        m.insert("c", 3, 1, t0 + Duration::from_secs(6));
        assert_eq!(m.len(), 2, "a expired and was dropped on insert");
        assert_eq!(m.memory().evicted, 0, "expiry is not eviction");
        assert_eq!(m.take(&"b", t0 + Duration::from_secs(9)), None);
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn replacing_and_removing_keys_keeps_the_fifo_and_bytes_in_step() {
        let t0 = Instant::now();
        let mut m = BoundedMap::new("t", 10, usize::MAX, TTL);
        for round in 0..1000u32 {
            for k in 0..10u32 {
                m.insert(k, round, 10, t0);
            }
            m.remove(&(round % 10));
        }
        assert_eq!(m.len(), 9);
        assert_eq!(m.bytes, 9 * (10 + ENTRY_OVERHEAD));
        assert_eq!(m.memory().evicted, 0, "refreshing a key never evicts");
        assert!(m.order.len() <= 2 * m.len() + 16);
        // A refreshed key is young again: the oldest is the one not refreshed.
        m.insert(100, 0, 10, t0);
        m.insert(101, 0, 10, t0);
        assert_eq!(m.len(), 10);
        assert_eq!(m.memory().evicted, 1);
    }
}
