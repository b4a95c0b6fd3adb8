//! The one interface between a source and the rest of the agent.
//!
//! A source builds batches and calls [`Emitter::send`]; the emitter runs the pipelines in force
//! (loaded once per batch, so every entry of a batch sees one version) on the source's own task,
//! then queues the result for every sink that reads this source, waiting when a queue is full.
//! When `send` returns, the batch is queued, not delivered: delivery is reported through the
//! batch's acknowledgement token.

use super::queue::SendError;
use super::{RouteTable, Routed, Routes, Shared};
use crate::event::{AckSet, LabelSet, LogBatch, LogEntry};
use crate::pipeline::{RunOutput, Runner};
use crate::telemetry::metrics::SourceHandles;
use prometheus_client::metrics::counter::Counter;
use std::sync::Arc;

pub struct Emitter {
    source: Arc<str>,
    shared: Arc<Shared>,
    runner: Runner,
    handles: SourceHandles,
    no_sink: Counter,
    base_labels: LabelSet,
}

impl Emitter {
    pub(crate) fn new(source: &str, shared: Arc<Shared>, base_labels: LabelSet) -> Emitter {
        let handles = SourceHandles::new(&shared.telemetry.metrics.source, source);
        let no_sink = handles.dropped("no_sink");
        let runner = Runner::new(crate::event::LabelCache::new(Arc::clone(&shared.interner)));
        Emitter { source: Arc::from(source), shared, runner, handles, no_sink, base_labels }
    }

    /// The source's name.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The labels the source's config puts on every entry.
    pub fn base_labels(&self) -> &LabelSet {
        &self.base_labels
    }

    /// The source's self-metric handles.
    pub fn handles(&self) -> &SourceHandles {
        &self.handles
    }

    /// The telemetry (readiness, metrics) of the agent.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Runs the pipelines on `batch` and queues the result for the sinks; once the topology
    /// shuts down, refuses it ([`SendError::Closed`]) with its acknowledgement abandoned.
    pub async fn send(&mut self, mut batch: LogBatch) -> Result<(), SendError> {
        if batch.entries.is_empty() {
            batch.acks.settle();
            return Ok(());
        }
        self.handles.lines.inc_by(batch.entries.len() as u64);
        self.handles.bytes.inc_by(batch.entries.iter().map(|e| e.line.len() as u64).sum());
        let set = self.shared.pipelines.load_full();
        let RunOutput { entries, acks: mut released, throttle, .. } =
            self.runner.run_batch(&set, &self.source, &mut batch, false);
        drop(set);
        let mut acks = batch.acks;
        acks.append(&mut released);
        let routes = open_routes(&self.shared)?;
        deliver(&routes.logs, &self.source, entries, acks, &self.no_sink).await?;
        if !throttle.is_zero() {
            tokio::time::sleep(throttle).await;
        }
        Ok(())
    }
}

/// Queues `entries` for every sink that reads `source`.
pub(crate) async fn deliver(
    routes: &RouteTable,
    source: &str,
    entries: Vec<LogEntry>,
    acks: AckSet,
    no_sink: &Counter,
) -> Result<(), SendError> {
    if entries.is_empty() {
        // Everything was dropped (and counted) or held by a stage with its own tokens.
        acks.settle();
        return Ok(());
    }
    let queues = routes.get(source).map(Vec::as_slice).unwrap_or(&[]);
    let Some((last, others)) = queues.split_last() else {
        no_sink.inc_by(entries.len() as u64);
        acks.settle();
        return Ok(());
    };
    for queue in others {
        queue.send(LogBatch::new(entries.clone(), acks.clone())).await?;
    }
    last.send(LogBatch::new(entries, acks)).await
}

/// The interface of a span or sample source: queues each batch for every sink of its signal
/// that reads the source (no pipelines: those signals have their own short chains).
pub struct SignalEmitter<B> {
    source: Arc<str>,
    shared: Arc<Shared>,
    handles: SourceHandles,
    no_sink: Counter,
    _batch: std::marker::PhantomData<fn(B)>,
}

impl<B: Routed> SignalEmitter<B> {
    pub(crate) fn new(source: &str, shared: Arc<Shared>) -> Self {
        let handles = SourceHandles::new(&shared.telemetry.metrics.source, source);
        let no_sink = handles.dropped("no_sink");
        SignalEmitter { source: Arc::from(source), shared, handles, no_sink, _batch: std::marker::PhantomData }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn handles(&self) -> &SourceHandles {
        &self.handles
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Queues `batch` for every sink that reads this source, waiting while a queue is full.
    pub async fn send(&self, batch: B) -> Result<(), SendError> {
        self.handles.lines.inc_by(batch.records() as u64);
        let routes = open_routes(&self.shared)?;
        let queues = B::table(&routes).get(&*self.source).map(Vec::as_slice).unwrap_or(&[]);
        let Some((last, others)) = queues.split_last() else {
            self.no_sink.inc_by(batch.records() as u64);
            batch.into_acks().settle();
            return Ok(());
        };
        for queue in others {
            queue.send(batch.clone()).await?;
        }
        last.send(batch).await
    }
}

/// The routes batches go by, or [`SendError::Closed`] once the topology shuts down (the
/// batch's acknowledgement is then abandoned by its drop, never settled).
fn open_routes(shared: &Shared) -> Result<Arc<Routes>, SendError> {
    let routes = shared.routes.load_full();
    if routes.closed { Err(SendError::Closed) } else { Ok(routes) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AckStatus, AckToken, LabelInterner, LabelLimits};
    use crate::pipeline::PipelineSet;
    use crate::telemetry::Telemetry;
    use arc_swap::ArcSwap;

    #[tokio::test]
    async fn a_batch_sent_while_shutting_down_is_abandoned_not_settled() {
        let telemetry = Arc::new(Telemetry::new());
        let shared = Arc::new(Shared {
            interner: LabelInterner::new(LabelLimits::default(), &telemetry.metrics.labels),
            telemetry,
            pipelines: ArcSwap::from_pointee(PipelineSet::empty()),
            routes: ArcSwap::from_pointee(Routes { closed: true, ..Routes::default() }),
            data_dir: std::path::PathBuf::from("."),
        });
        let mut emitter = Emitter::new("files", shared, LabelSet::from_pairs([("job", "x".to_string())]));
        let (tx, rx) = std::sync::mpsc::channel();
        let token = AckToken::new(move |status| tx.send(status).unwrap());
        let labels = LabelSet::from_pairs([("job", "x".to_string())]);
        let batch = LogBatch::new(vec![LogEntry::new(1, "line".into(), labels)], AckSet::one(token));
        assert!(matches!(emitter.send(batch).await, Err(SendError::Closed)));
        // Its position must not advance: the lines are read again after a restart.
        assert_eq!(rx.try_recv(), Ok(AckStatus::Abandoned));
        assert_eq!(emitter.no_sink.get(), 0);
    }
}
