//! The bounded queue in front of each sink.
//!
//! Bounded in bytes, not in batches: a sender takes permits for the bytes it queues and the
//! permits are released only when the sink is done with those entries (delivered or dropped),
//! so the bound covers everything between the sources and the wire, not just the channel.
//! When the bound is reached, `when_full: block` makes the sender wait (backpressure to the
//! source) and `drop_newest` drops the batch for this sink, counted as `queue_full`.

use crate::config::common::WhenFull;
use crate::event::{AckSet, LogBatch, SampleBatch, SpanBatch};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// Bytes of queue a batch holds until the sink lets go of its last entry.
#[derive(Debug)]
pub struct QueuePermit {
    _permit: OwnedSemaphorePermit,
    bytes: usize,
    gauge: Gauge,
}

impl Drop for QueuePermit {
    fn drop(&mut self) {
        self.gauge.dec_by(self.bytes as i64);
    }
}

/// What a queue carries: log, span and sample batches.
pub trait Queued: Send + 'static {
    /// Memory the batch holds, for the queue's bound.
    fn byte_size(&self) -> usize;
    /// Records (lines, spans, samples) in the batch, for drop counters.
    fn records(&self) -> usize;
    /// Gives up the batch's acknowledgement tokens.
    fn into_acks(self) -> AckSet;
}

impl Queued for LogBatch {
    fn byte_size(&self) -> usize {
        LogBatch::byte_size(self)
    }
    fn records(&self) -> usize {
        self.entries.len()
    }
    fn into_acks(self) -> AckSet {
        self.acks
    }
}

impl Queued for SpanBatch {
    fn byte_size(&self) -> usize {
        self.bytes
    }
    fn records(&self) -> usize {
        self.spans
    }
    fn into_acks(self) -> AckSet {
        self.acks
    }
}

impl Queued for SampleBatch {
    fn byte_size(&self) -> usize {
        SampleBatch::byte_size(self)
    }
    fn records(&self) -> usize {
        self.samples.len()
    }
    fn into_acks(self) -> AckSet {
        self.acks
    }
}

/// A batch on its way to a sink, with the queue space it holds.
#[derive(Debug)]
pub struct QueuedBatch<B = LogBatch> {
    pub batch: B,
    pub permit: Arc<QueuePermit>,
}

/// The sending side (cloned into every route that feeds the sink).
pub struct SinkQueue<B = LogBatch> {
    pub sink: Arc<str>,
    tx: mpsc::UnboundedSender<QueuedBatch<B>>,
    permits: Arc<Semaphore>,
    capacity: usize,
    when_full: WhenFull,
    queued_bytes: Gauge,
    dropped_full: Counter,
}

impl<B> Clone for SinkQueue<B> {
    fn clone(&self) -> Self {
        SinkQueue {
            sink: Arc::clone(&self.sink),
            tx: self.tx.clone(),
            permits: Arc::clone(&self.permits),
            capacity: self.capacity,
            when_full: self.when_full,
            queued_bytes: self.queued_bytes.clone(),
            dropped_full: self.dropped_full.clone(),
        }
    }
}

/// The sink's receiving side.
pub type QueueReceiver<B = LogBatch> = mpsc::UnboundedReceiver<QueuedBatch<B>>;

/// Why a batch did not enter the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The sink is gone (shutting down or replaced).
    Closed,
}

impl<B: Queued> SinkQueue<B> {
    /// A queue of `capacity` bytes for `sink`.
    pub fn new(
        sink: &str,
        capacity: usize,
        when_full: WhenFull,
        queued_bytes: Gauge,
        capacity_gauge: Gauge,
        dropped_full: Counter,
    ) -> (SinkQueue<B>, QueueReceiver<B>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let capacity = capacity.clamp(1, u32::MAX as usize);
        capacity_gauge.set(capacity as i64);
        let queue = SinkQueue {
            sink: Arc::from(sink),
            tx,
            permits: Arc::new(Semaphore::new(capacity)),
            capacity,
            when_full,
            queued_bytes,
            dropped_full,
        };
        (queue, rx)
    }

    /// Queues `batch`, waiting for room (or dropping it, per `when_full`). A batch larger than
    /// the whole queue waits for an empty queue.
    pub async fn send(&self, batch: B) -> Result<(), SendError> {
        let bytes = batch.byte_size().max(1);
        let wanted = bytes.min(self.capacity) as u32;
        let permit = match self.when_full {
            WhenFull::Block => {
                Arc::clone(&self.permits).acquire_many_owned(wanted).await.map_err(|_| SendError::Closed)?
            }
            WhenFull::DropNewest => match Arc::clone(&self.permits).try_acquire_many_owned(wanted) {
                Ok(p) => p,
                Err(tokio::sync::TryAcquireError::Closed) => return Err(SendError::Closed),
                Err(tokio::sync::TryAcquireError::NoPermits) => {
                    self.dropped_full.inc_by(batch.records() as u64);
                    // Dropped on purpose and counted: the source may go on.
                    batch.into_acks().settle();
                    return Ok(());
                }
            },
        };
        self.queued_bytes.inc_by(bytes as i64);
        let permit = Arc::new(QueuePermit { _permit: permit, bytes, gauge: self.queued_bytes.clone() });
        self.tx.send(QueuedBatch { batch, permit }).map_err(|_| SendError::Closed)
    }

    /// Bytes the queue may hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether the sink's receiver is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AckSet, LabelSet, LogEntry};
    use bytes::Bytes;
    use std::time::Duration;

    fn batch(lines: usize, len: usize) -> LogBatch {
        let entries =
            (0..lines).map(|i| LogEntry::new(i as i64, Bytes::from(vec![b'x'; len]), LabelSet::empty())).collect();
        LogBatch::new(entries, AckSet::new())
    }

    fn queue(capacity: usize, when_full: WhenFull) -> (SinkQueue<LogBatch>, QueueReceiver<LogBatch>, Gauge, Counter) {
        let (gauge, dropped) = (Gauge::default(), Counter::default());
        let (q, rx) = SinkQueue::new("s", capacity, when_full, gauge.clone(), Gauge::default(), dropped.clone());
        (q, rx, gauge, dropped)
    }

    #[tokio::test]
    async fn a_full_queue_blocks_until_the_sink_lets_go() {
        let one = batch(1, 1000).byte_size();
        let (q, mut rx, gauge, _) = queue(one * 2, WhenFull::Block);
        q.send(batch(1, 1000)).await.unwrap();
        q.send(batch(1, 1000)).await.unwrap();
        assert_eq!(gauge.get() as usize, one * 2);
        let blocked = tokio::time::timeout(Duration::from_millis(50), q.send(batch(1, 1000))).await;
        assert!(blocked.is_err(), "the third batch waits");
        let first = rx.recv().await.unwrap();
        drop(first.batch);
        let q2 = q.clone();
        let pending = tokio::spawn(async move { q2.send(batch(1, 1000)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!pending.is_finished(), "receiving is not enough: the permit is held until the sink is done");
        drop(first.permit);
        pending.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn drop_newest_counts_what_it_drops() {
        let one = batch(3, 100).byte_size();
        let (q, _rx, _, dropped) = queue(one, WhenFull::DropNewest);
        q.send(batch(3, 100)).await.unwrap();
        q.send(batch(3, 100)).await.unwrap();
        assert_eq!(dropped.get(), 3);
    }
}
