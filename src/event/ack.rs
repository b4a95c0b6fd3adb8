//! End-to-end acknowledgements: how a source learns that the sinks are done with its lines.
//!
//! A source that keeps positions attaches an [`AckToken`] to each batch it sends. Every component
//! that passes the batch on keeps the token with the entries (cloning it when it splits them);
//! a sink *settles* its token once it is done with the entries: delivered, or refused for good
//! (and counted). When the last holder lets go, the source's callback runs once with
//! [`AckStatus::Settled`] if every holder settled, [`AckStatus::Abandoned`] otherwise.
//!
//! The safe default is built in: a token dropped without being settled (an aborted sink, a
//! shutdown deadline, a panic) marks the whole batch abandoned, so its position never advances
//! and the lines are read again after a restart.

use parking_lot::Mutex;
use smallvec::SmallVec;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The outcome of a batch once every holder has let go of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckStatus {
    /// Every holder finished with the entries (delivered, or refused for good and counted).
    Settled,
    /// At least one holder dropped the entries without finishing: the source must read them again.
    Abandoned,
}

type Callback = Box<dyn FnOnce(AckStatus) + Send>;

struct AckState {
    abandoned: AtomicBool,
    callback: Mutex<Option<Callback>>,
}

impl Drop for AckState {
    fn drop(&mut self) {
        if let Some(callback) = self.callback.get_mut().take() {
            let status = if *self.abandoned.get_mut() { AckStatus::Abandoned } else { AckStatus::Settled };
            callback(status);
        }
    }
}

/// One holder's share of a batch's acknowledgement. Cloning makes a new, unsettled share.
pub struct AckToken {
    state: Arc<AckState>,
    settled: bool,
}

impl AckToken {
    /// A token whose `callback` runs once, when the last share is gone.
    pub fn new(callback: impl FnOnce(AckStatus) + Send + 'static) -> Self {
        let state = AckState { abandoned: AtomicBool::new(false), callback: Mutex::new(Some(Box::new(callback))) };
        AckToken { state: Arc::new(state), settled: false }
    }

    /// This holder is done with the entries.
    pub fn settle(mut self) {
        self.settled = true;
    }
}

impl Clone for AckToken {
    fn clone(&self) -> Self {
        AckToken { state: Arc::clone(&self.state), settled: false }
    }
}

impl Drop for AckToken {
    fn drop(&mut self) {
        if !self.settled {
            self.state.abandoned.store(true, Ordering::Relaxed);
        }
    }
}

impl fmt::Debug for AckToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AckToken").field("settled", &self.settled).finish()
    }
}

/// The tokens of every batch whose entries a holder carries. Usually one.
#[derive(Debug, Default, Clone)]
pub struct AckSet(SmallVec<[AckToken; 1]>);

impl AckSet {
    pub fn new() -> Self {
        AckSet(SmallVec::new())
    }
    pub fn one(token: AckToken) -> Self {
        AckSet(smallvec::smallvec![token])
    }
    pub fn push(&mut self, token: AckToken) {
        self.0.push(token);
    }
    pub fn append(&mut self, other: &mut AckSet) {
        self.0.extend(other.0.drain(..));
    }
    pub fn extend_cloned(&mut self, other: &AckSet) {
        self.0.extend(other.0.iter().cloned());
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Settles every token: this holder is done with all of their entries.
    pub fn settle(self) {
        for token in self.0 {
            token.settle();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn token() -> (AckToken, mpsc::Receiver<AckStatus>) {
        let (tx, rx) = mpsc::channel();
        (AckToken::new(move |s| tx.send(s).unwrap()), rx)
    }

    #[test]
    fn settles_when_every_share_settles() {
        let (t, rx) = token();
        let a = t.clone();
        let b = t.clone();
        t.settle();
        a.settle();
        assert!(rx.try_recv().is_err(), "one share still held");
        b.settle();
        assert_eq!(rx.try_recv().unwrap(), AckStatus::Settled);
    }

    #[test]
    fn one_dropped_share_abandons_the_batch() {
        let (t, rx) = token();
        let a = t.clone();
        t.settle();
        drop(a);
        assert_eq!(rx.try_recv().unwrap(), AckStatus::Abandoned);
    }

    #[test]
    fn ack_sets_carry_several_batches() {
        let (t1, rx1) = token();
        let (t2, rx2) = token();
        let mut set = AckSet::one(t1);
        let mut other = AckSet::one(t2);
        set.append(&mut other);
        assert!(other.is_empty());
        let copy = set.clone();
        set.settle();
        copy.settle();
        assert_eq!(rx1.try_recv().unwrap(), AckStatus::Settled);
        assert_eq!(rx2.try_recv().unwrap(), AckStatus::Settled);
    }
}
