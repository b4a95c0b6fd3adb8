//! Stages that decide whether an entry goes on: `drop`, `match` and `limit`.

use super::selector::Selector;
use super::work::Work;
use super::{Dropped, Flow, StageCtx, StageInfo, StageNode, apply_all};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use regex::bytes::Regex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A drop with its counter, resolved when the stage is built.
pub(crate) struct DropCount {
    pub dropped: Dropped,
    pub counter: Counter,
}

impl DropCount {
    fn drop(&self) -> Flow {
        self.counter.inc();
        Flow::Drop(self.dropped.clone())
    }
}

/// `drop`: drops the entry when every configured condition holds (Promtail's semantics).
pub(crate) struct DropStage {
    pub sources: Vec<String>,
    pub separator: String,
    pub value: Option<String>,
    pub expression: Option<Regex>,
    pub older_than: Option<Duration>,
    pub longer_than: Option<usize>,
    pub count: DropCount,
}

impl DropStage {
    pub fn apply(&self, w: &mut Work, ctx: &mut StageCtx<'_>, _info: &StageInfo) -> Flow {
        if let Some(age) = self.older_than {
            let limit = ctx.now.saturating_sub(i64::try_from(age.as_nanos()).unwrap_or(i64::MAX));
            if w.entry.timestamp >= limit {
                return Flow::Continue;
            }
        }
        if let Some(max) = self.longer_than
            && w.entry.line.len() <= max
        {
            return Flow::Continue;
        }
        if self.sources.is_empty() {
            if let Some(re) = &self.expression
                && !re.is_match(&w.entry.line)
            {
                return Flow::Continue;
            }
        } else {
            let mut joined: Vec<u8> = Vec::new();
            for (i, source) in self.sources.iter().enumerate() {
                let Some(v) = w.extracted(source) else {
                    return Flow::Continue;
                };
                if i > 0 {
                    joined.extend_from_slice(self.separator.as_bytes());
                }
                joined.extend_from_slice(v);
            }
            if let Some(value) = &self.value
                && joined != value.as_bytes()
            {
                return Flow::Continue;
            }
            if let Some(re) = &self.expression
                && !re.is_match(&joined)
            {
                return Flow::Continue;
            }
        }
        self.count.drop()
    }
}

/// What `match` does with the entries its selector picks.
pub(crate) enum MatchAction {
    Keep(Vec<StageNode>),
    Drop(DropCount),
}

/// `match`: runs nested stages on (or drops) the entries its selector picks.
pub(crate) struct MatchStage {
    pub selector: Selector,
    pub action: MatchAction,
}

impl MatchStage {
    pub fn apply(&self, w: &mut Work, ctx: &mut StageCtx<'_>) -> Flow {
        if !self.selector.matches(&w.current_labels(), &w.entry.line) {
            return Flow::Continue;
        }
        match &self.action {
            MatchAction::Drop(count) => count.drop(),
            MatchAction::Keep(stages) => apply_all(stages, w, ctx),
        }
    }
}

/// A token bucket: `rate` tokens per second, at most `burst`.
pub(crate) struct Bucket {
    tokens: f64,
    last: Instant,
}

/// `limit`: a rate limit, per stage or per value of one label. Over the limit, entries are
/// dropped (`drop: true`) or the source is made to wait (the default), which is backpressure:
/// for Docker and files, nothing is lost.
pub(crate) struct LimitStage {
    pub rate: f64,
    pub burst: f64,
    pub by_label: Option<String>,
    pub max_distinct: usize,
    pub drop: Option<DropCount>,
    pub buckets: Arc<Mutex<HashMap<String, Bucket>>>,
}

impl LimitStage {
    pub fn new(rate: f64, burst: u32, by_label: Option<String>, max_distinct: usize, drop: Option<DropCount>) -> Self {
        LimitStage { rate, burst: f64::from(burst.max(1)), by_label, max_distinct, drop, buckets: Arc::default() }
    }

    pub fn apply(&self, w: &mut Work, ctx: &mut StageCtx<'_>) -> Flow {
        let key = match &self.by_label {
            None => String::new(),
            Some(label) => match w.label(label) {
                Some(v) => v.to_string(),
                // Entries without the label are not limited (as in Promtail).
                None => return Flow::Continue,
            },
        };
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if !buckets.contains_key(&key) && buckets.len() >= self.max_distinct {
            // Forget the least recently used bucket.
            if let Some(oldest) = buckets.iter().min_by_key(|(_, b)| b.last).map(|(k, _)| k.clone()) {
                buckets.remove(&oldest);
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket { tokens: self.burst, last: now });
        let elapsed = now.duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Flow::Continue;
        }
        match &self.drop {
            Some(count) => count.drop(),
            None => {
                // Take the token on credit and make the source wait until it exists.
                bucket.tokens -= 1.0;
                let wait = Duration::from_secs_f64((-bucket.tokens / self.rate).max(0.0));
                ctx.throttle = ctx.throttle.max(wait);
                Flow::Continue
            }
        }
    }
}
