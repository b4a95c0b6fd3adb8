//! Readiness: `/ready` answers 200 once every component that registered a check is ready
//! (for example the Docker source once it reached the engine), 503 with the names of the others.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The readiness registry, shared by the server and the components.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Arc<Mutex<BTreeMap<String, Arc<AtomicBool>>>>,
}

/// One component's readiness flag; removed from the registry when dropped.
pub struct ReadyFlag {
    name: String,
    flag: Arc<AtomicBool>,
    registry: Readiness,
}

impl ReadyFlag {
    pub fn set(&self, ready: bool) {
        self.flag.store(ready, Ordering::Relaxed);
    }
}

impl Drop for ReadyFlag {
    fn drop(&mut self) {
        let mut checks = self.registry.checks.lock();
        if checks.get(&self.name).is_some_and(|f| Arc::ptr_eq(f, &self.flag)) {
            checks.remove(&self.name);
        }
    }
}

impl Readiness {
    /// Registers a component, not ready until it says so.
    pub fn register(&self, name: &str) -> ReadyFlag {
        let flag = Arc::new(AtomicBool::new(false));
        self.checks.lock().insert(name.to_string(), Arc::clone(&flag));
        ReadyFlag { name: name.to_string(), flag, registry: self.clone() }
    }

    /// The components that are not ready (empty when all are).
    pub fn not_ready(&self) -> Vec<String> {
        self.checks.lock().iter().filter(|(_, f)| !f.load(Ordering::Relaxed)).map(|(n, _)| n.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_when_every_flag_is() {
        let r = Readiness::default();
        assert!(r.not_ready().is_empty());
        let a = r.register("docker");
        assert_eq!(r.not_ready(), ["docker"]);
        a.set(true);
        assert!(r.not_ready().is_empty());
        let b = r.register("files");
        drop(b);
        assert!(r.not_ready().is_empty());
    }
}
