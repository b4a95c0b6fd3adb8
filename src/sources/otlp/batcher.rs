//! The batch processor: gathers the span records of accepted requests into batches, merging
//! requests of the same resource and scope, and sends each batch to the trace sinks.
//!
//! A batch is closed when it reaches `send_batch_size` spans (`size`), when adding a span would
//! pass `send_batch_max_size` spans or `max_bytes` (`max_size`: a large request is split), when
//! its first span waited `timeout` (`timeout`), or when the receiver stops (`shutdown`).
//!
//! Every accepted request charged its bytes to the receiver's [`Memory`]; a batch carries the
//! charges of the spans it holds in its acknowledgement token, which gives them back when every
//! sink is done with the batch.

use super::Memory;
use super::config::BatchConfig;
use crate::event::spans::{ResourceGroup, ScopeGroup};
use crate::event::{AckSet, AckToken, SpanBatch};
use crate::telemetry::metrics::{OtlpMetrics, SourceTrigger};
use crate::topology::SignalEmitter;
use prometheus_client::metrics::counter::Counter;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The kept records of one accepted request.
#[derive(Debug)]
pub struct Accepted {
    pub groups: Vec<ResourceGroup>,
    pub spans: usize,
    /// What the request charged to the memory bound.
    pub bytes: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct BatcherSettings {
    pub send_batch_size: usize,
    pub timeout: Duration,
    /// 0: no limit.
    pub send_batch_max_size: usize,
    pub max_bytes: usize,
}

impl From<&BatchConfig> for BatcherSettings {
    fn from(c: &BatchConfig) -> Self {
        BatcherSettings {
            send_batch_size: c.send_batch_size.max(1),
            timeout: c.timeout.0,
            send_batch_max_size: c.send_batch_max_size,
            max_bytes: c.max_bytes.as_usize(),
        }
    }
}

/// Why a batch was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Size,
    MaxSize,
    Timeout,
    Shutdown,
}

const TRIGGERS: [Trigger; 4] = [Trigger::Size, Trigger::MaxSize, Trigger::Timeout, Trigger::Shutdown];

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Size => "size",
            Trigger::MaxSize => "max_size",
            Trigger::Timeout => "timeout",
            Trigger::Shutdown => "shutdown",
        }
    }
}

/// The batch being filled.
#[derive(Default)]
struct Pending {
    resources: Vec<ResourceGroup>,
    /// Resource key → indices of `resources` with that key.
    index: HashMap<u64, Vec<usize>>,
    spans: usize,
    /// A bound on the encoded size (record sizes plus room for the group headers).
    bytes: usize,
    /// Memory charged by what the batch holds.
    charge: usize,
    started: Option<Instant>,
}

/// Room for the key and length of a group's record.
const GROUP_OVERHEAD: usize = 12;

/// A closed batch on its way out.
pub struct Closed {
    pub resources: Vec<ResourceGroup>,
    pub charge: usize,
    pub trigger: Trigger,
}

/// Gathers accepted requests into batches.
pub struct Batcher {
    settings: BatcherSettings,
    memory: Arc<Memory>,
    hasher: foldhash::fast::FixedState,
    pending: Pending,
    closed: Vec<Closed>,
    batches: [Counter; 4],
    sink_closed: Option<Counter>,
}

impl Batcher {
    pub fn new(settings: BatcherSettings, memory: Arc<Memory>, metrics: &OtlpMetrics, source: &str) -> Batcher {
        let batches = TRIGGERS.map(|t| {
            metrics.batches.get_or_create_owned(&SourceTrigger { source: source.into(), trigger: t.as_str().into() })
        });
        Batcher {
            settings,
            memory,
            hasher: foldhash::fast::FixedState::with_seed(0xba7c4),
            pending: Pending::default(),
            closed: Vec::new(),
            batches,
            sink_closed: None,
        }
    }

    fn resource_key(&self, resource: &[u8], schema_url: &[u8]) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write(resource);
        h.write_u8(0);
        h.write(schema_url);
        h.finish()
    }

    /// Whether one more span of `len` bytes would pass a maximum.
    fn full(&self, len: usize) -> bool {
        let p = &self.pending;
        p.spans > 0
            && ((self.settings.send_batch_max_size != 0 && p.spans >= self.settings.send_batch_max_size)
                || p.bytes + len > self.settings.max_bytes)
    }

    /// Adds a request; closes the batches it fills.
    pub fn add(&mut self, accepted: Accepted) {
        let span_bytes: usize =
            accepted.groups.iter().flat_map(|g| &g.scopes).flat_map(|s| &s.spans).map(|s| s.len()).sum();
        // The request's headers are charged with its first span.
        let mut header_charge = accepted.bytes.saturating_sub(span_bytes);
        let mut uncharged = accepted.bytes;
        for group in accepted.groups {
            let ResourceGroup { resource, schema_url, scopes } = group;
            let key = self.resource_key(&resource, &schema_url);
            for scope in scopes {
                let ScopeGroup { scope: scope_record, schema_url: scope_schema, spans } = scope;
                // Where this scope's spans go in the pending batch: found once, and again only
                // after a close (comparing the resource and scope per span cost 13% of the CPU
                // with 512-span requests).
                let mut slot: Option<(usize, usize)> = None;
                for span in spans {
                    if self.full(span.len()) {
                        self.close(Trigger::MaxSize);
                        slot = None;
                    }
                    let (r, s) = *slot.get_or_insert_with(|| {
                        let r = self.resource_slot(key, &resource, &schema_url);
                        let s = scope_slot(
                            &mut self.pending.resources[r],
                            &scope_record,
                            &scope_schema,
                            &mut self.pending.bytes,
                        );
                        (r, s)
                    });
                    let charge = span.len() + std::mem::take(&mut header_charge);
                    self.pending.bytes += span.len();
                    self.pending.resources[r].scopes[s].spans.push(span);
                    self.pending.spans += 1;
                    self.pending.charge += charge;
                    uncharged -= charge.min(uncharged);
                    self.pending.started.get_or_insert_with(Instant::now);
                }
            }
        }
        // Rounding cannot leave anything behind, but a charge must never leak.
        self.pending.charge += uncharged;
        if self.pending.spans >= self.settings.send_batch_size {
            self.close(Trigger::Size);
        }
    }

    /// The index of the pending resource group equal to this one, added when missing.
    fn resource_slot(&mut self, key: u64, resource: &bytes::Bytes, schema_url: &bytes::Bytes) -> usize {
        let p = &mut self.pending;
        let slots = p.index.entry(key).or_default();
        if let Some(&i) =
            slots.iter().find(|&&i| p.resources[i].resource == *resource && p.resources[i].schema_url == *schema_url)
        {
            return i;
        }
        p.resources.push(ResourceGroup {
            resource: resource.clone(),
            schema_url: schema_url.clone(),
            scopes: Vec::new(),
        });
        p.bytes += resource.len() + schema_url.len() + GROUP_OVERHEAD;
        slots.push(p.resources.len() - 1);
        p.resources.len() - 1
    }

    /// Closes the pending batch (if it holds anything).
    pub fn close(&mut self, trigger: Trigger) {
        if self.pending.spans == 0 {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        self.closed.push(Closed { resources: pending.resources, charge: pending.charge, trigger });
    }

    /// When the pending batch times out.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending.started.map(|s| s + self.settings.timeout)
    }

    /// The closed batches, ready to send.
    pub fn take_closed(&mut self) -> Vec<Closed> {
        std::mem::take(&mut self.closed)
    }

    /// Spans in the pending batch.
    pub fn pending_spans(&self) -> usize {
        self.pending.spans
    }

    /// A closed batch as the sinks take it; its token gives the charge back.
    pub fn seal(&self, closed: Closed) -> SpanBatch {
        self.batches[TRIGGERS.iter().position(|t| *t == closed.trigger).unwrap_or(0)].inc();
        let memory = Arc::clone(&self.memory);
        let charge = closed.charge;
        let token = AckToken::new(move |_| memory.release(charge));
        SpanBatch::new(closed.resources, AckSet::one(token))
    }

    /// Runs until every receiver is gone, then sends what is left. `flush` sends the pending
    /// batch at once (the source is stopping: the sinks' queues may close soon).
    pub async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Accepted>,
        emitter: SignalEmitter<SpanBatch>,
        flush: Arc<tokio::sync::Notify>,
    ) {
        self.sink_closed = Some(emitter.handles().dropped("sink_closed"));
        loop {
            let deadline = self.deadline();
            tokio::select! {
                biased;
                _ = flush.notified() => self.close(Trigger::Shutdown),
                accepted = rx.recv() => match accepted {
                    Some(a) => self.add(a),
                    None => break,
                },
                _ = sleep_until(deadline) => self.close(Trigger::Timeout),
            }
            self.send_closed(&emitter).await;
        }
        self.close(Trigger::Shutdown);
        self.send_closed(&emitter).await;
    }

    async fn send_closed(&mut self, emitter: &SignalEmitter<SpanBatch>) {
        for closed in self.take_closed() {
            let batch = self.seal(closed);
            let spans = batch.spans;
            if emitter.send(batch).await.is_err() {
                if let Some(c) = &self.sink_closed {
                    c.inc_by(spans as u64);
                }
                tracing::warn!(source = %emitter.source(), spans, "a trace sink closed its queue: batch dropped");
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The index of the scope group equal to this one in `resource`, added when missing.
fn scope_slot(
    resource: &mut ResourceGroup,
    scope: &bytes::Bytes,
    schema_url: &bytes::Bytes,
    bytes: &mut usize,
) -> usize {
    if let Some(i) = resource.scopes.iter().position(|s| s.scope == *scope && s.schema_url == *schema_url) {
        return i;
    }
    resource.scopes.push(ScopeGroup { scope: scope.clone(), schema_url: schema_url.clone(), spans: Vec::new() });
    *bytes += scope.len() + schema_url.len() + GROUP_OVERHEAD;
    resource.scopes.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::spans::record;
    use bytes::Bytes;

    fn settings(size: usize, max: usize, max_bytes: usize) -> BatcherSettings {
        BatcherSettings {
            send_batch_size: size,
            timeout: Duration::from_millis(200),
            send_batch_max_size: max,
            max_bytes,
        }
    }

    fn batcher(s: BatcherSettings) -> (Batcher, Arc<Memory>) {
        let memory = Memory::new(1 << 30, Default::default());
        (Batcher::new(s, Arc::clone(&memory), &OtlpMetrics::default(), "t"), memory)
    }

    /// A request of one resource and scope with `n` spans of `len` bytes each.
    fn request(resource: &str, scope: &str, n: usize, len: usize, memory: &Memory) -> Accepted {
        let spans: Vec<Bytes> = (0..n).map(|i| record(2, &vec![i as u8; len - 3])).collect();
        let group = ResourceGroup {
            resource: record(1, resource.as_bytes()),
            schema_url: Bytes::new(),
            scopes: vec![ScopeGroup { scope: record(1, scope.as_bytes()), schema_url: Bytes::new(), spans }],
        };
        let bytes = group.resource.len() + group.scopes[0].scope.len() + n * len;
        memory.add(bytes);
        Accepted { groups: vec![group], spans: n, bytes }
    }

    #[test]
    fn merges_requests_per_resource_and_scope() {
        let (mut b, memory) = batcher(settings(8192, 0, 1 << 20));
        b.add(request("svc-a", "lib", 3, 50, &memory));
        b.add(request("svc-b", "lib", 2, 50, &memory));
        b.add(request("svc-a", "lib", 4, 50, &memory));
        b.add(request("svc-a", "other", 1, 50, &memory));
        assert!(b.take_closed().is_empty(), "below every limit");
        b.close(Trigger::Timeout);
        let closed = b.take_closed();
        assert_eq!(closed.len(), 1);
        let batch = b.seal(closed.into_iter().next().unwrap());
        assert_eq!(batch.spans, 10);
        assert_eq!(batch.resources.len(), 2, "two resources");
        let a = &batch.resources[0];
        assert_eq!(a.scopes.len(), 2);
        assert_eq!(a.scopes[0].spans.len(), 7, "the two requests of svc-a/lib merged");
        assert_eq!(batch.resources[1].span_count(), 2);
        assert!(memory.used() > 0);
        drop(batch);
        assert_eq!(memory.used(), 0, "every charge is given back when the sinks let go");
    }

    #[test]
    fn closes_at_the_batch_size_and_splits_at_the_maximum() {
        let (mut b, memory) = batcher(settings(10, 12, 1 << 20));
        b.add(request("r", "s", 7, 40, &memory));
        assert!(b.take_closed().is_empty());
        b.add(request("r", "s", 30, 40, &memory));
        let closed = b.take_closed();
        let sizes: Vec<(usize, Trigger)> =
            closed.iter().map(|c| (c.resources.iter().map(ResourceGroup::span_count).sum(), c.trigger)).collect();
        assert_eq!(
            sizes,
            [(12, Trigger::MaxSize), (12, Trigger::MaxSize), (12, Trigger::MaxSize)],
            "a large request is split"
        );
        assert_eq!(b.pending_spans(), 1);
        b.add(request("r", "s", 9, 40, &memory));
        let closed_at_size: Vec<Closed> = b.take_closed();
        assert_eq!(closed_at_size.len(), 1);
        assert_eq!(closed_at_size[0].trigger, Trigger::Size);
        assert_eq!(closed_at_size[0].resources[0].span_count(), 10);
        let closed: Vec<Closed> = closed.into_iter().chain(closed_at_size).collect();
        let batches: Vec<SpanBatch> = closed.into_iter().map(|c| b.seal(c)).collect();
        b.close(Trigger::Shutdown);
        let last: Vec<SpanBatch> = b.take_closed().into_iter().map(|c| b.seal(c)).collect();
        drop(batches);
        drop(last);
        assert_eq!(memory.used(), 0);
    }

    #[test]
    fn keeps_batches_under_max_bytes() {
        let (mut b, memory) = batcher(settings(8192, 0, 4096));
        b.add(request("r", "s", 100, 100, &memory));
        b.close(Trigger::Shutdown);
        let closed = b.take_closed();
        assert!(closed.len() >= 3);
        let mut total = 0;
        for c in closed {
            let batch = b.seal(c);
            assert!(batch.bytes <= 4096, "{}", batch.bytes);
            total += batch.spans;
        }
        assert_eq!(total, 100);
        assert_eq!(memory.used(), 0);
    }
}
