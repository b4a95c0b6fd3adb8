//! Strings from pipeline files (label names, static values, extracted keys), interned for the
//! life of the process, so that the per-line records that name them ([`super::work::Name`],
//! [`super::work::Value`]) copy a reference instead of touching a reference count (an atomic
//! increment and decrement per name per line: with `Arc<str>` names, the criterion pipeline
//! bench of `docker` + `json` + `labels` ran 12% slower).
//!
//! Invariant: only text written in configuration is interned, never text from log lines. Each
//! distinct string is kept once and never freed; a reload that brings new strings adds them,
//! so the table is bounded by what operators ever wrote, a few kilobytes.

use parking_lot::Mutex;
use std::collections::HashSet;
use std::fmt;
use std::sync::LazyLock;

/// An interned configuration string: `Copy`, compared by content.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConfigStr(&'static str);

static TABLE: LazyLock<Mutex<HashSet<&'static str>>> = LazyLock::new(Mutex::default);

impl ConfigStr {
    /// The interned copy of `s` (made on first use). For configuration text only.
    pub fn new(s: &str) -> Self {
        let mut table = TABLE.lock();
        if let Some(&kept) = table.get(s) {
            return ConfigStr(kept);
        }
        let kept: &'static str = Box::leak(s.into());
        table.insert(kept);
        ConfigStr(kept)
    }

    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl std::ops::Deref for ConfigStr {
    type Target = str;
    fn deref(&self) -> &str {
        self.0
    }
}

impl fmt::Debug for ConfigStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_strings_share_one_copy() {
        let a = ConfigStr::new("service");
        let b = ConfigStr::new(&String::from("service"));
        assert!(std::ptr::eq(a.as_str(), b.as_str()));
        assert_ne!(a, ConfigStr::new("level"));
        assert_eq!(&*a, "service");
    }
}
