//! Attribute actions on resources and spans: the collector's `resource` and `attributes`
//! processors' `insert`, `update`, `upsert` and `delete`, applied in their configured order.
//!
//! Actions work on the wire form: a message that no action concerns is not touched; one that
//! is gets its untouched fields copied as they are, and the attributes the actions leave or set
//! appended after them. Values set from config are encoded once, when the actions are built.

use super::config::{ActionKind, AttributeAction, AttributeValue};
use super::wire::{WireError, put_record, split_attributes};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;

#[derive(Debug, Clone)]
struct Compiled {
    key: Box<[u8]>,
    kind: ActionKind,
    /// The encoded `KeyValue` this action sets (empty for `delete`).
    key_value: Vec<u8>,
}

/// A compiled list of actions.
#[derive(Debug, Clone, Default)]
pub struct AttrActions {
    actions: Vec<Compiled>,
    /// Some action adds an attribute that may be absent (`insert`, `upsert`): every message is
    /// rewritten.
    always: bool,
}

fn any_value(value: &AttributeValue) -> AnyValue {
    let value = match value {
        AttributeValue::String(s) => any_value::Value::StringValue(s.clone()),
        AttributeValue::Bool(b) => any_value::Value::BoolValue(*b),
        AttributeValue::Int(i) => any_value::Value::IntValue(*i),
        AttributeValue::Double(d) => any_value::Value::DoubleValue(*d),
    };
    AnyValue { value: Some(value) }
}

impl AttrActions {
    pub fn new(actions: &[AttributeAction]) -> AttrActions {
        let actions: Vec<Compiled> = actions
            .iter()
            .map(|a| Compiled {
                key: a.key.as_bytes().into(),
                kind: a.action,
                key_value: match (&a.value, a.action) {
                    (Some(v), ActionKind::Insert | ActionKind::Update | ActionKind::Upsert) => {
                        KeyValue { key: a.key.clone(), value: Some(any_value(v)), key_strindex: 0 }.encode_to_vec()
                    }
                    _ => Vec::new(),
                },
            })
            .collect();
        let always = actions.iter().any(|a| matches!(a.kind, ActionKind::Insert | ActionKind::Upsert));
        AttrActions { actions, always }
    }

    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// Every message has to be rewritten.
    pub fn always_rewrites(&self) -> bool {
        self.always
    }

    /// Some action concerns attribute `key`.
    #[inline]
    pub fn acts_on(&self, key: &[u8]) -> bool {
        self.actions.iter().any(|a| *a.key == *key)
    }

    /// Writes `message` with the actions applied to its attributes (field `attr_field`).
    pub fn rewrite(&self, message: &[u8], attr_field: u32, out: &mut Vec<u8>) -> Result<(), WireError> {
        let touched = split_attributes(message, attr_field, |key| self.acts_on(key), out)?;
        // The state of every key an action names: its current KeyValue payload, if present.
        let mut state: Vec<(&[u8], Option<&[u8]>)> = Vec::new();
        for (key, payload) in touched {
            match state.iter_mut().find(|(k, _)| *k == key) {
                // A repeated key: the last one wins, as in a decoder's map.
                Some(slot) => slot.1 = Some(payload),
                None => state.push((key, Some(payload))),
            }
        }
        for action in &self.actions {
            let index = match state.iter().position(|(k, _)| **k == *action.key) {
                Some(i) => i,
                None => {
                    state.push((&action.key, None));
                    state.len() - 1
                }
            };
            let slot = &mut state[index].1;
            match action.kind {
                ActionKind::Insert if slot.is_none() => *slot = Some(&action.key_value),
                ActionKind::Update if slot.is_some() => *slot = Some(&action.key_value),
                ActionKind::Upsert => *slot = Some(&action.key_value),
                ActionKind::Delete => *slot = None,
                _ => {}
            }
        }
        for (_, payload) in state {
            if let Some(payload) = payload {
                put_record(out, attr_field, payload);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::resource::v1::Resource;

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
            key_strindex: 0,
        }
    }

    fn action(key: &str, kind: ActionKind, value: Option<&str>) -> AttributeAction {
        AttributeAction { key: key.into(), action: kind, value: value.map(|v| AttributeValue::String(v.into())) }
    }

    fn apply(actions: &[AttributeAction], attributes: Vec<KeyValue>) -> Vec<(String, String)> {
        let resource = Resource { attributes, dropped_attributes_count: 2, entity_refs: vec![] };
        let mut out = Vec::new();
        AttrActions::new(actions).rewrite(&resource.encode_to_vec(), 1, &mut out).unwrap();
        let decoded = Resource::decode(out.as_slice()).unwrap();
        assert_eq!(decoded.dropped_attributes_count, 2, "other fields are kept");
        decoded
            .attributes
            .into_iter()
            .map(|kv| {
                let value = match kv.value.and_then(|v| v.value) {
                    Some(any_value::Value::StringValue(s)) => s,
                    other => format!("{other:?}"),
                };
                (kv.key, value)
            })
            .collect()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn insert_update_upsert_delete_like_the_collector() {
        let attrs = || vec![kv("service.name", "gateway"), kv("host.name", "laptop"), kv("secret", "s3cr3t")];
        let actions = [
            action("deployment.environment", ActionKind::Upsert, Some("prod")),
            action("host.name", ActionKind::Upsert, Some("node-1")),
            action("service.name", ActionKind::Insert, Some("ignored: present")),
            action("missing", ActionKind::Update, Some("ignored: absent")),
            action("secret", ActionKind::Delete, None),
        ];
        assert_eq!(
            apply(&actions, attrs()),
            pairs(&[("service.name", "gateway"), ("host.name", "node-1"), ("deployment.environment", "prod"),])
        );
        let later_wins = [action("a", ActionKind::Delete, None), action("a", ActionKind::Insert, Some("new"))];
        assert_eq!(apply(&later_wins, vec![kv("a", "old")]), pairs(&[("a", "new")]));
        assert_eq!(apply(&[action("x", ActionKind::Update, Some("y"))], vec![kv("x", "1")]), pairs(&[("x", "y")]));
    }

    #[test]
    fn untouched_keys_need_no_rewrite() {
        let actions = AttrActions::new(&[action("secret", ActionKind::Delete, None)]);
        assert!(!actions.always_rewrites());
        assert!(actions.acts_on(b"secret"));
        assert!(!actions.acts_on(b"secrets"));
        let insert = AttrActions::new(&[action("k", ActionKind::Insert, Some("v"))]);
        assert!(insert.always_rewrites());
    }
}
