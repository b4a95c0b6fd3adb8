//! The label interner: one shared allocation per distinct label set, and Loki's label limits.
//!
//! Each pipeline worker keeps a [`LabelCache`] (no lock) in front of the shared
//! [`LabelInterner`] (one mutex). A line whose label set was seen before costs one hash of its
//! candidate pairs and one comparison; only a new set takes the lock.
//!
//! Creating a set is where Loki's limits are applied, so that Loki never refuses a push for its
//! labels (a refusal would drop the whole batch, see PROTOCOLS.md):
//! - a label that already has `max_values_per_label` distinct values gets no new value: that
//!   pair goes to structured metadata instead, counted in
//!   `sluice_label_cardinality_capped_total{label}` and logged once per label;
//! - values longer than `max_value_length`, and the pairs beyond `max_names` (the last ones in
//!   name order), go to structured metadata too, counted in `sluice_label_limited_total`.
//!
//! Distinct values are counted over the sets in use: every `sweep` (driven by the topology) ages
//! the sets, and a set that no cache asked for during two sweeps and that no entry holds any
//! more is forgotten, with its values. Containers that come and go therefore do not use up a
//! label's allowance forever.

use super::labels::{LabelPair, LabelSet, hash_pairs, sanitize_name};
use crate::telemetry::metrics::{LabelMetrics, LabelName, LabelReason};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use smallvec::SmallVec;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Loki's label limits, as the interner enforces them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelLimits {
    pub max_values_per_label: usize,
    pub max_names: usize,
    pub max_value_length: usize,
}

impl Default for LabelLimits {
    fn default() -> Self {
        // Loki 3 defaults: 15 label names per series, values up to 2048 bytes.
        LabelLimits { max_values_per_label: 1000, max_names: 15, max_value_length: 2048 }
    }
}

/// Why a pair went to structured metadata instead of the label set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MoveReason {
    Cardinality,
    TooManyLabels,
    ValueTooLong,
}

impl MoveReason {
    fn as_str(self) -> &'static str {
        match self {
            MoveReason::Cardinality => "cardinality",
            MoveReason::TooManyLabels => "too_many_labels",
            MoveReason::ValueTooLong => "value_too_long",
        }
    }
}

/// The label set of an entry, and the pairs that limits moved to structured metadata.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub set: LabelSet,
    pub moved: SmallVec<[LabelPair; 1]>,
}

struct Interned {
    set: LabelSet,
    last_used: u64,
}

#[derive(Default)]
struct State {
    sets: HashMap<u64, SmallVec<[Interned; 1]>>,
    /// name → value → number of interned sets using that pair.
    values: HashMap<Arc<str>, HashMap<Arc<str>, u32>>,
    names: HashSet<Arc<str>>,
    warned: HashSet<Arc<str>>,
    count: usize,
}

/// The shared interner. Cheap to share (`Arc`).
pub struct LabelInterner {
    limits: LabelLimits,
    state: Mutex<State>,
    generation: AtomicU64,
    capped: Family<LabelName, Counter>,
    limited: Family<LabelReason, Counter>,
    interned_sets: Gauge,
}

impl LabelInterner {
    pub fn new(limits: LabelLimits, metrics: &LabelMetrics) -> Arc<Self> {
        Arc::new(LabelInterner {
            limits,
            state: Mutex::new(State::default()),
            generation: AtomicU64::new(0),
            capped: metrics.cardinality_capped.clone(),
            limited: metrics.limited.clone(),
            interned_sets: metrics.interned_sets.clone(),
        })
    }

    pub fn limits(&self) -> LabelLimits {
        self.limits
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Resolves sorted, unique, filtered candidate pairs (see [`LabelCache::resolve`]).
    fn intern(&self, candidate: &[(&str, &str)], hash: u64) -> Resolved {
        let generation = self.generation();
        let mut state = self.state.lock();
        if let Some(found) = find(&mut state, candidate, hash, generation) {
            return Resolved { set: found, moved: SmallVec::new() };
        }
        let mut kept: Vec<LabelPair> = Vec::with_capacity(candidate.len());
        let mut moved: SmallVec<[LabelPair; 1]> = SmallVec::new();
        for &(name, value) in candidate {
            let name = intern_name(&mut state, name);
            let value: Arc<str> = Arc::from(value);
            if value.len() > self.limits.max_value_length {
                self.count_move(&name, MoveReason::ValueTooLong);
                moved.push((name, value));
                continue;
            }
            let known = state.values.get(&name).is_some_and(|values| values.contains_key(&value));
            let distinct = state.values.get(&name).map_or(0, HashMap::len);
            if !known && distinct >= self.limits.max_values_per_label {
                if state.warned.insert(Arc::clone(&name)) {
                    tracing::warn!(
                        label = %name,
                        limit = self.limits.max_values_per_label,
                        "label reached its cap of distinct values; new values go to structured metadata"
                    );
                }
                self.count_move(&name, MoveReason::Cardinality);
                moved.push((name, value));
                continue;
            }
            kept.push((name, value));
        }
        // Sanitizing can map two names to one: keep the last, as a later stage would win.
        kept.sort_by(|a, b| a.0.cmp(&b.0));
        kept.dedup_by(|later, earlier| {
            if later.0 == earlier.0 {
                std::mem::swap(later, earlier);
                true
            } else {
                false
            }
        });
        while kept.len() > self.limits.max_names {
            if let Some(pair) = kept.pop() {
                self.count_move(&pair.0, MoveReason::TooManyLabels);
                moved.push(pair);
            }
        }
        let reduced_hash = hash_pairs(kept.iter().map(|(n, v)| (&**n, &**v)));
        let existing = {
            let reduced: SmallVec<[(&str, &str); 16]> = kept.iter().map(|(n, v)| (&**n, &**v)).collect();
            find(&mut state, &reduced, reduced_hash, generation)
        };
        if let Some(found) = existing {
            return Resolved { set: found, moved };
        }
        for (name, value) in &kept {
            *state.values.entry(Arc::clone(name)).or_default().entry(Arc::clone(value)).or_insert(0) += 1;
        }
        let set = LabelSet::from_sorted_unchecked(kept);
        state.sets.entry(reduced_hash).or_default().push(Interned { set: set.clone(), last_used: generation });
        state.count += 1;
        self.interned_sets.set(state.count as i64);
        Resolved { set, moved }
    }

    fn count_move(&self, name: &Arc<str>, reason: MoveReason) {
        if reason == MoveReason::Cardinality {
            self.capped.get_or_create(&LabelName { label: name.to_string() }).inc();
        } else {
            let labels = LabelReason { label: name.to_string(), reason: reason.as_str().to_string() };
            self.limited.get_or_create(&labels).inc();
        }
    }

    /// Ages the interned sets: forgets those no cache asked for during the last two sweeps and
    /// that nothing else holds, and makes every [`LabelCache`] start afresh.
    pub fn sweep(&self) {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let mut state = self.state.lock();
        let State { sets, values, count, .. } = &mut *state;
        sets.retain(|_, bucket| {
            bucket.retain(|interned| {
                let keep = interned.last_used + 2 > generation || interned.set.handle_count() > 1;
                if !keep {
                    *count -= 1;
                    for (name, value) in interned.set.pairs() {
                        if let Some(by_value) = values.get_mut(name)
                            && let Some(n) = by_value.get_mut(value)
                        {
                            *n -= 1;
                            if *n == 0 {
                                by_value.remove(value);
                            }
                        }
                    }
                }
                keep
            });
            !bucket.is_empty()
        });
        values.retain(|_, by_value| !by_value.is_empty());
        self.interned_sets.set(*count as i64);
    }

    /// Number of distinct values a label has among the sets in use.
    pub fn distinct_values(&self, name: &str) -> usize {
        self.state.lock().values.get(name).map_or(0, HashMap::len)
    }
}

fn find(state: &mut State, candidate: &[(&str, &str)], hash: u64, generation: u64) -> Option<LabelSet> {
    let bucket = state.sets.get_mut(&hash)?;
    let interned = bucket.iter_mut().find(|i| i.set.equals_pairs(candidate))?;
    interned.last_used = generation;
    Some(interned.set.clone())
}

fn intern_name(state: &mut State, name: &str) -> Arc<str> {
    let name = sanitize_name(name);
    if let Some(existing) = state.names.get(name.as_str()) {
        return Arc::clone(existing);
    }
    let name: Arc<str> = Arc::from(name);
    state.names.insert(Arc::clone(&name));
    name
}

/// A worker's lock-free cache in front of the interner.
pub struct LabelCache {
    interner: Arc<LabelInterner>,
    sets: HashMap<u64, SmallVec<[LabelSet; 1]>, foldhash::fast::FixedState>,
    changes: ChangeCache,
    generation: u64,
    scratch: Vec<(usize, usize)>,
}

/// Results of label changes already seen: (base set, the changes written as a key) → the set
/// they gave. A hit costs one hash of the key and one comparison, where resolving the pairs
/// sorts and hashes them all. Emptied at [`MAX_CHANGES`] entries (changes whose values are
/// dropped again later, such as a per-request id, would make every key new) and whenever the
/// interner sweeps, as `sets` is.
#[derive(Default)]
struct ChangeCache {
    map: HashMap<u64, SmallVec<[ChangeResult; 1]>, foldhash::fast::FixedState>,
    len: usize,
    key: Vec<u8>,
}

struct ChangeResult {
    /// Held, so that its address cannot be reused by another set while this entry lives.
    base: LabelSet,
    key: Box<[u8]>,
    set: LabelSet,
}

/// The most change results a cache keeps.
const MAX_CHANGES: usize = 4096;

impl ChangeCache {
    fn hash(base: &LabelSet, key: &[u8]) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = foldhash::fast::FixedState::default().build_hasher();
        h.write_usize(base.identity());
        h.write(key);
        h.finish()
    }

    fn clear(&mut self) {
        self.map.clear();
        self.len = 0;
    }
}

impl LabelCache {
    pub fn new(interner: Arc<LabelInterner>) -> Self {
        let generation = interner.generation();
        LabelCache {
            interner,
            sets: HashMap::default(),
            changes: ChangeCache::default(),
            generation,
            scratch: Vec::new(),
        }
    }

    /// Resolves `base` with changes applied. `write_key` writes the changes as bytes that
    /// identify them exactly (same bytes, same changes, on any base); `pairs` gives the changed
    /// pairs for [`LabelCache::resolve`] when this base and key were not seen before.
    pub fn resolve_changes<'a>(
        &mut self,
        base: &LabelSet,
        write_key: impl FnOnce(&mut Vec<u8>),
        pairs: impl FnOnce() -> SmallVec<[(&'a str, &'a str); 16]>,
    ) -> Resolved {
        let mut key = std::mem::take(&mut self.changes.key);
        key.clear();
        write_key(&mut key);
        let hash = ChangeCache::hash(base, &key);
        let seen =
            self.changes.map.get(&hash).and_then(|bucket| {
                bucket.iter().find(|r| r.base.ptr_eq(base) && *r.key == *key).map(|r| r.set.clone())
            });
        let resolved = match seen {
            Some(set) => Resolved { set, moved: SmallVec::new() },
            None => {
                let resolved = self.resolve(&mut pairs());
                // A result that moved pairs away is not kept: it counted them, and must again.
                if resolved.moved.is_empty() {
                    if self.changes.len >= MAX_CHANGES {
                        self.changes.clear();
                    }
                    let result =
                        ChangeResult { base: base.clone(), key: key.as_slice().into(), set: resolved.set.clone() };
                    self.changes.map.entry(hash).or_default().push(result);
                    self.changes.len += 1;
                }
                resolved
            }
        };
        self.changes.key = key;
        resolved
    }

    pub fn interner(&self) -> &Arc<LabelInterner> {
        &self.interner
    }

    /// Resolves the label pairs of one entry. `pairs` may be unsorted and may repeat a name (the
    /// last one wins); pairs with an empty value or an internal `__` name are left out.
    pub fn resolve(&mut self, pairs: &mut SmallVec<[(&str, &str); 16]>) -> Resolved {
        pairs.retain(|(n, v)| !v.is_empty() && !n.starts_with("__"));
        // Stable sort keeps the order of equal names; then keep the last of each run.
        pairs.sort_by(|a, b| a.0.cmp(b.0));
        self.scratch.clear();
        let mut i = 0;
        while i < pairs.len() {
            let mut j = i;
            while j + 1 < pairs.len() && pairs[j + 1].0 == pairs[i].0 {
                j += 1;
            }
            self.scratch.push((i, j));
            i = j + 1;
        }
        if self.scratch.len() != pairs.len() {
            let deduped: SmallVec<[(&str, &str); 16]> = self.scratch.iter().map(|&(_, last)| pairs[last]).collect();
            *pairs = deduped;
        }
        let hash = hash_pairs(pairs.iter().copied());
        if let Some(bucket) = self.sets.get(&hash)
            && let Some(set) = bucket.iter().find(|s| s.equals_pairs(pairs))
        {
            return Resolved { set: set.clone(), moved: SmallVec::new() };
        }
        let resolved = self.interner.intern(pairs, hash);
        if resolved.moved.is_empty() && resolved.set.equals_pairs(pairs) {
            self.sets.entry(hash).or_default().push(resolved.set.clone());
        }
        resolved
    }

    /// Starts afresh if the interner swept since the last call. Call once per batch.
    pub fn refresh(&mut self) {
        let generation = self.interner.generation();
        if generation != self.generation {
            self.sets.clear();
            self.changes.clear();
            self.generation = generation;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::metrics::LabelMetrics;

    fn cache(limits: LabelLimits) -> (LabelCache, LabelMetrics) {
        let metrics = LabelMetrics::default();
        let interner = LabelInterner::new(limits, &metrics);
        (LabelCache::new(interner), metrics)
    }

    fn resolve<'a>(cache: &mut LabelCache, pairs: &[(&'a str, &'a str)]) -> Resolved {
        let mut v: SmallVec<[(&str, &str); 16]> = pairs.iter().copied().collect();
        cache.resolve(&mut v)
    }

    #[test]
    fn same_pairs_share_one_allocation() {
        let (mut c, _) = cache(LabelLimits::default());
        let a = resolve(&mut c, &[("b", "2"), ("a", "1")]);
        let b = resolve(&mut c, &[("a", "1"), ("b", "2")]);
        assert!(a.set.ptr_eq(&b.set));
        assert_eq!(a.set.rendered(), r#"{a="1", b="2"}"#);
        let other_cache_result = {
            let mut c2 = LabelCache::new(Arc::clone(c.interner()));
            resolve(&mut c2, &[("a", "1"), ("b", "2")])
        };
        assert!(a.set.ptr_eq(&other_cache_result.set));
    }

    /// Resolves `base` changed by `changes` (set these pairs) through the change cache.
    fn change(cache: &mut LabelCache, base: &LabelSet, changes: &[(&str, &str)]) -> Resolved {
        let key = |key: &mut Vec<u8>| {
            for (n, v) in changes {
                key.extend_from_slice(format!("{}:{n}={v};", n.len()).as_bytes());
            }
        };
        let pairs = || base.pairs().iter().map(|(n, v)| (&**n, &**v)).chain(changes.iter().copied()).collect();
        cache.resolve_changes(base, key, pairs)
    }

    #[test]
    fn seen_changes_give_the_same_set_and_new_ones_a_new_set() {
        let (mut c, _) = cache(LabelLimits::default());
        let base = resolve(&mut c, &[("job", "docker")]).set;
        let info = change(&mut c, &base, &[("level", "INFO")]);
        assert_eq!(info.set.rendered(), r#"{job="docker", level="INFO"}"#);
        assert!(change(&mut c, &base, &[("level", "INFO")]).set.ptr_eq(&info.set));
        assert_eq!(c.changes.len, 1);
        let warn = change(&mut c, &base, &[("level", "WARN")]);
        assert_eq!(warn.set.rendered(), r#"{job="docker", level="WARN"}"#);
        // The same changes on another base are another entry.
        let other = resolve(&mut c, &[("job", "files")]).set;
        assert_eq!(change(&mut c, &other, &[("level", "INFO")]).set.rendered(), r#"{job="files", level="INFO"}"#);
        assert_eq!(c.changes.len, 3);
        // Equal to what resolving the pairs gives.
        assert!(resolve(&mut c, &[("level", "INFO"), ("job", "docker")]).set.ptr_eq(&info.set));
    }

    #[test]
    fn changes_that_moved_pairs_are_resolved_again_and_counted_again() {
        let (mut c, metrics) = cache(LabelLimits { max_values_per_label: 1, ..LabelLimits::default() });
        let base = resolve(&mut c, &[("job", "x")]).set;
        assert!(change(&mut c, &base, &[("user", "a")]).moved.is_empty());
        for _ in 0..2 {
            let r = change(&mut c, &base, &[("user", "b")]);
            assert_eq!((r.set.rendered(), r.moved.len()), (r#"{job="x"}"#, 1));
        }
        assert_eq!(metrics.cardinality_capped.get_or_create(&LabelName { label: "user".into() }).get(), 2);
        assert_eq!(c.changes.len, 1);
    }

    #[test]
    fn the_change_cache_is_bounded_and_emptied_by_a_sweep() {
        let (mut c, _) = cache(LabelLimits { max_values_per_label: usize::MAX, ..LabelLimits::default() });
        let base = resolve(&mut c, &[("job", "x")]).set;
        for i in 0..MAX_CHANGES + 10 {
            change(&mut c, &base, &[("id", &i.to_string())]);
        }
        assert_eq!(c.changes.len, 10);
        assert_eq!(c.changes.map.values().map(SmallVec::len).sum::<usize>(), 10);
        c.interner().sweep();
        c.refresh();
        assert_eq!((c.changes.len, c.changes.map.len()), (0, 0));
    }

    #[test]
    fn last_duplicate_wins_and_internal_or_empty_pairs_go() {
        let (mut c, _) = cache(LabelLimits::default());
        let r = resolve(&mut c, &[("a", "1"), ("__x", "y"), ("a", "2"), ("e", "")]);
        assert_eq!(r.set.rendered(), r#"{a="2"}"#);
        assert!(r.moved.is_empty());
    }

    #[test]
    fn cardinality_cap_moves_new_values_to_metadata() {
        let (mut c, metrics) = cache(LabelLimits { max_values_per_label: 3, ..LabelLimits::default() });
        for v in ["a", "b", "c"] {
            assert!(resolve(&mut c, &[("user", v), ("job", "x")]).moved.is_empty());
        }
        let r = resolve(&mut c, &[("user", "d"), ("job", "x")]);
        assert_eq!(r.set.rendered(), r#"{job="x"}"#);
        assert_eq!(r.moved.len(), 1);
        assert_eq!((&*r.moved[0].0, &*r.moved[0].1), ("user", "d"));
        // Known values still work.
        assert!(resolve(&mut c, &[("user", "b"), ("job", "x")]).moved.is_empty());
        assert_eq!(metrics.cardinality_capped.get_or_create(&LabelName { label: "user".into() }).get(), 1);
        assert_eq!(c.interner().distinct_values("user"), 3);
    }

    #[test]
    fn too_many_names_and_long_values_move() {
        let (mut c, metrics) = cache(LabelLimits { max_names: 2, max_value_length: 4, ..LabelLimits::default() });
        let r = resolve(&mut c, &[("a", "1"), ("b", "2"), ("c", "3"), ("d", "12345")]);
        assert_eq!(r.set.rendered(), r#"{a="1", b="2"}"#);
        let moved: Vec<_> = r.moved.iter().map(|(n, v)| format!("{n}={v}")).collect();
        assert_eq!(moved, ["d=12345", "c=3"]);
        let reason = |label: &str, reason: &str| {
            metrics.limited.get_or_create(&LabelReason { label: label.into(), reason: reason.into() }).get()
        };
        assert_eq!((reason("d", "value_too_long"), reason("c", "too_many_labels")), (1, 1));
    }

    #[test]
    fn sweeping_forgets_unused_sets_and_frees_their_values() {
        let (mut c, _) = cache(LabelLimits { max_values_per_label: 2, ..LabelLimits::default() });
        drop(resolve(&mut c, &[("container", "a")]));
        drop(resolve(&mut c, &[("container", "b")]));
        assert_eq!(c.interner().distinct_values("container"), 2);
        let interner = Arc::clone(c.interner());
        interner.sweep();
        c.refresh();
        interner.sweep();
        assert_eq!(interner.distinct_values("container"), 0);
        assert!(resolve(&mut c, &[("container", "c")]).moved.is_empty());
    }

    #[test]
    fn sweeping_keeps_sets_still_held() {
        let (mut c, _) = cache(LabelLimits::default());
        let held = resolve(&mut c, &[("container", "a")]).set;
        let interner = Arc::clone(c.interner());
        for _ in 0..3 {
            interner.sweep();
        }
        c.refresh();
        assert!(resolve(&mut c, &[("container", "a")]).set.ptr_eq(&held));
    }
}
