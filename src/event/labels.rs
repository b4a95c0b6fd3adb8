//! Label sets: sorted, unique, interned, with their hash and their Loki rendering computed once.
//!
//! Invariants of a [`LabelSet`]: names are valid Loki label names (`[a-zA-Z_][a-zA-Z0-9_]*`) and
//! never start with `__`; names are unique and sorted; values are non-empty. Two sets with the same
//! pairs are usually the same allocation (see [`super::interner`]), so equality first compares
//! pointers, then the precomputed hash, then the pairs.

use std::fmt::{self, Write as _};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

/// A label name and value.
pub type LabelPair = (Arc<str>, Arc<str>);

/// An immutable, shared label set.
#[derive(Clone)]
pub struct LabelSet(Arc<Inner>);

struct Inner {
    hash: u64,
    pairs: Box<[LabelPair]>,
    rendered: Box<str>,
}

impl LabelSet {
    /// Builds a set from pairs that already satisfy the invariants (sorted, unique, valid).
    /// Callers outside the interner use [`LabelSet::from_pairs`].
    pub(crate) fn from_sorted_unchecked(pairs: Vec<LabelPair>) -> Self {
        debug_assert!(pairs.windows(2).all(|w| w[0].0 < w[1].0), "label names must be sorted and unique");
        debug_assert!(pairs.iter().all(|(n, v)| is_valid_name(n) && !n.starts_with("__") && !v.is_empty()));
        let hash = hash_pairs(pairs.iter().map(|(n, v)| (&**n, &**v)));
        let rendered = render(&pairs);
        LabelSet(Arc::new(Inner { hash, pairs: pairs.into_boxed_slice(), rendered }))
    }

    /// Builds a set from arbitrary pairs: names are sanitized, internal (`__`) names and empty
    /// values removed, later duplicates win. Not interned; meant for config and tests.
    pub fn from_pairs<N: AsRef<str>, V: AsRef<str>>(pairs: impl IntoIterator<Item = (N, V)>) -> Self {
        let mut out: Vec<LabelPair> = Vec::new();
        for (n, v) in pairs {
            let (n, v) = (n.as_ref(), v.as_ref());
            if n.starts_with("__") || v.is_empty() {
                continue;
            }
            let name = sanitize_name(n);
            out.retain(|(existing, _)| **existing != *name);
            out.push((Arc::from(name.as_str()), Arc::from(v)));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Self::from_sorted_unchecked(out)
    }

    pub fn empty() -> Self {
        Self::from_sorted_unchecked(Vec::new())
    }

    pub fn pairs(&self) -> &[LabelPair] {
        &self.0.pairs
    }

    pub fn is_empty(&self) -> bool {
        self.0.pairs.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.pairs.len()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.pairs.binary_search_by(|(n, _)| (**n).cmp(name)).ok().map(|i| &*self.0.pairs[i].1)
    }

    /// The precomputed hash of the pairs (stable within one process).
    pub fn hash_value(&self) -> u64 {
        self.0.hash
    }

    /// The set in Loki's push syntax: `{a="x", b="y"}`.
    pub fn rendered(&self) -> &str {
        &self.0.rendered
    }

    /// True when both handles point at the same allocation.
    pub fn ptr_eq(&self, other: &LabelSet) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The allocation's address: equal for handles of one set, for as long as one is alive.
    pub fn identity(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }

    /// How many handles share this allocation.
    pub(crate) fn handle_count(&self) -> usize {
        Arc::strong_count(&self.0)
    }

    /// Compares with candidate pairs (sorted, unique) without allocating.
    pub fn equals_pairs(&self, candidate: &[(&str, &str)]) -> bool {
        self.0.pairs.len() == candidate.len()
            && self.0.pairs.iter().zip(candidate).all(|((n, v), (cn, cv))| **n == **cn && **v == **cv)
    }
}

impl PartialEq for LabelSet {
    fn eq(&self, other: &Self) -> bool {
        self.ptr_eq(other) || (self.0.hash == other.0.hash && self.0.pairs == other.0.pairs)
    }
}

impl Eq for LabelSet {}

impl Hash for LabelSet {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0.hash);
    }
}

impl fmt::Debug for LabelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.rendered())
    }
}

impl fmt::Display for LabelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.rendered())
    }
}

const HASH_SEED: u64 = 0x5a1c_e000_0000_0001;

/// Hashes sorted, unique pairs. The same pairs always give the same hash within a process.
pub fn hash_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> u64 {
    let mut h = foldhash::fast::FixedState::with_seed(HASH_SEED).build_hasher();
    for (n, v) in pairs {
        h.write(n.as_bytes());
        h.write_u8(0xff);
        h.write(v.as_bytes());
        h.write_u8(0xfe);
    }
    h.finish()
}

/// `true` for names Loki accepts: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b == b'_' || b.is_ascii_alphabetic())
        && bytes.all(|b| b == b'_' || b.is_ascii_alphanumeric())
}

/// Rewrites a name to Loki's rules: every other character becomes `_`, and a leading digit gets
/// a `_` in front (as Prometheus' `labelmap` users expect from `a.b-c` → `a_b_c`).
pub fn sanitize_name(name: &str) -> String {
    if is_valid_name(name) {
        return name.to_string();
    }
    let mut out = String::with_capacity(name.len() + 1);
    if name.chars().next().is_none_or(|c| c.is_ascii_digit()) {
        out.push('_');
    }
    out.extend(name.chars().map(|c| if c == '_' || c.is_ascii_alphanumeric() { c } else { '_' }));
    out
}

fn render(pairs: &[LabelPair]) -> Box<str> {
    let mut s = String::with_capacity(2 + pairs.iter().map(|(n, v)| n.len() + v.len() + 5).sum::<usize>());
    s.push('{');
    for (i, (n, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(n);
        s.push_str("=\"");
        escape_value_into(v, &mut s);
        s.push('"');
    }
    s.push('}');
    s.into_boxed_str()
}

/// Escapes a label value the way Go's `strconv.Quote` does for the characters that matter to
/// Loki's label parser: quotes, backslashes and control characters.
pub fn escape_value_into(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_sorted_and_escaped() {
        let set =
            LabelSet::from_pairs([("stream", "stdout"), ("app", "a\"b\\c\nd"), ("__path__", "/x"), ("empty", "")]);
        assert_eq!(set.rendered(), r#"{app="a\"b\\c\nd", stream="stdout"}"#);
        assert_eq!(set.get("stream"), Some("stdout"));
        assert_eq!(set.get("__path__"), None);
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn later_duplicates_win_and_names_are_sanitized() {
        let set = LabelSet::from_pairs([("a", "1"), ("a", "2"), ("k8s.app-name", "x"), ("1st", "y")]);
        assert_eq!(set.rendered(), r#"{_1st="y", a="2", k8s_app_name="x"}"#);
    }

    #[test]
    fn equality_and_hash_follow_pairs() {
        let a = LabelSet::from_pairs([("a", "1"), ("b", "2")]);
        let b = LabelSet::from_pairs([("b", "2"), ("a", "1")]);
        assert_eq!(a, b);
        assert_eq!(a.hash_value(), b.hash_value());
        assert!(a.equals_pairs(&[("a", "1"), ("b", "2")]));
        assert!(!a.equals_pairs(&[("a", "1")]));
        assert_ne!(a, LabelSet::from_pairs([("a", "1"), ("b", "3")]));
    }

    #[test]
    fn names() {
        assert!(is_valid_name("_a1"));
        assert!(!is_valid_name("1a"));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("a-b"));
        assert_eq!(sanitize_name(""), "_");
    }
}
