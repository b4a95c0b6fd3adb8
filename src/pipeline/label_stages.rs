//! Stages that change labels and structured metadata: `labels`, `static_labels`, `labeldrop`,
//! `labelallow`, `structured_metadata`. Label changes are recorded, not applied: the set is
//! interned once at the end of the pipelines (see `work`).

use super::Flow;
use super::config_str::ConfigStr;
use super::work::{LabelOp, Name, Value, Work};
use std::sync::Arc;

/// `labels`: label name ← extracted key. A missing key sets nothing.
pub(crate) struct LabelsStage {
    pub pairs: Vec<(ConfigStr, String)>,
}

impl LabelsStage {
    pub fn apply(&self, w: &mut Work) -> Flow {
        for (label, source) in &self.pairs {
            if let Some(span) = w.extracted_span(source) {
                w.push_label_op(LabelOp::Set(Name::Static(*label), Value::Buf(span)));
            }
        }
        Flow::Continue
    }
}

/// `static_labels`: fixed pairs.
pub(crate) struct StaticLabelsStage {
    pub pairs: Vec<(ConfigStr, ConfigStr)>,
}

impl StaticLabelsStage {
    pub fn apply(&self, w: &mut Work) -> Flow {
        for (name, value) in &self.pairs {
            w.push_label_op(LabelOp::Set(Name::Static(*name), Value::Static(*value)));
        }
        Flow::Continue
    }
}

/// `labeldrop`: remove these labels.
pub(crate) struct LabeldropStage {
    pub names: Vec<ConfigStr>,
}

impl LabeldropStage {
    pub fn apply(&self, w: &mut Work) -> Flow {
        for name in &self.names {
            w.push_label_op(LabelOp::Remove(*name));
        }
        Flow::Continue
    }
}

/// `labelallow`: keep only these labels.
pub(crate) struct LabelallowStage {
    pub names: Arc<[Arc<str>]>,
}

impl LabelallowStage {
    pub fn apply(&self, w: &mut Work) -> Flow {
        w.push_label_op(LabelOp::KeepOnly(Arc::clone(&self.names)));
        Flow::Continue
    }
}

/// `structured_metadata`: metadata name ← extracted key. Values taken verbatim from the line
/// share its buffer.
pub(crate) struct StructuredMetadataStage {
    pub pairs: Vec<(Arc<str>, String)>,
}

impl StructuredMetadataStage {
    pub fn apply(&self, w: &mut Work) -> Flow {
        for (name, source) in &self.pairs {
            if let Some(value) = w.extracted_bytes(source)
                && !value.is_empty()
            {
                w.entry.metadata.set(Arc::clone(name), value);
            }
        }
        Flow::Continue
    }
}
