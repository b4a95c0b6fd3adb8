//! A YAML tree that keeps where each node was written, and a writer for it.
//!
//! Contract:
//! - [`parse`] reads any YAML document into [`Node`]s, each with the 1-based line and column of
//!   its first character (for a mapping entry, of its key). Plain scalars that YAML would read as
//!   numbers or booleans keep their text exactly as written (`1.10` stays `1.10`, `on` stays
//!   `on`), so that copying a value never changes what a later parser sees. Anchors, aliases and
//!   merge keys are resolved by the parser.
//! - [`emit`] writes a tree in block style, two spaces per level, one mapping entry or sequence
//!   item per line, with comments above the entries that carry one. Strings are quoted only
//!   when YAML would read them as something else. Every `${...}` that sluice's own `${VAR}`
//!   expansion would refuse (a regex group such as `${1}`) is written as `$${...}`, so that the
//!   value that reaches the parser is the one written here.
//! - [`Emitted::lines`] says which node starts on each written line, as a [`Path`] from the root:
//!   an error that sluice reports on a line of the written text leads back to the node, and from
//!   it to the place in the input.

use crate::config::Position;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// One node of the tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    /// Where the node was written in the input; for a node made by the converter, where what it
    /// was made from was written.
    pub position: Position,
    /// Written as `# ...` lines above the entry or item holding this node.
    pub comment: Option<String>,
    /// What this node stands for in the input, in words (used to report what was left out).
    pub what: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    /// A string, quoted when written if YAML would otherwise read it as something else.
    Str(String),
    /// A scalar written as it is: a number or a boolean, with the input's spelling.
    Plain(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

/// A mapping entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_position: Position,
    pub value: Node,
}

/// One step from a node to one of its children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

pub type Path = Vec<Step>;

impl Node {
    pub fn new(value: Value, position: Position) -> Node {
        Node { value, position, comment: None, what: None }
    }

    pub fn str(text: impl Into<String>, position: Position) -> Node {
        Node::new(Value::Str(text.into()), position)
    }

    pub fn map(position: Position) -> Node {
        Node::new(Value::Map(Vec::new()), position)
    }

    pub fn seq(items: Vec<Node>, position: Position) -> Node {
        Node::new(Value::Seq(items), position)
    }

    pub fn with_comment(mut self, comment: impl Into<String>) -> Node {
        self.comment = Some(comment.into());
        self
    }

    pub fn with_what(mut self, what: impl Into<String>) -> Node {
        self.what = Some(what.into());
        self
    }

    /// The entries of a mapping (none for other nodes).
    pub fn entries(&self) -> &[Entry] {
        match &self.value {
            Value::Map(entries) => entries,
            _ => &[],
        }
    }

    /// The items of a sequence (none for other nodes).
    pub fn items(&self) -> &[Node] {
        match &self.value {
            Value::Seq(items) => items,
            _ => &[],
        }
    }

    /// The entry `key` of a mapping.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries().iter().find(|e| e.key == key)
    }

    /// The text of a scalar (strings, numbers and booleans); `None` for null and collections.
    pub fn as_text(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) | Value::Plain(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// Empty: null, an empty mapping or an empty sequence.
    pub fn is_empty(&self) -> bool {
        match &self.value {
            Value::Null => true,
            Value::Map(e) => e.is_empty(),
            Value::Seq(i) => i.is_empty(),
            _ => false,
        }
    }

    /// Adds an entry to a mapping node (a non-mapping node becomes an empty mapping first).
    pub fn push(&mut self, key: impl Into<String>, value: Node) {
        let position = value.position;
        self.push_at(key, position, value);
    }

    pub fn push_at(&mut self, key: impl Into<String>, key_position: Position, value: Node) {
        if !matches!(self.value, Value::Map(_)) {
            self.value = Value::Map(Vec::new());
        }
        if let Value::Map(entries) = &mut self.value {
            entries.push(Entry { key: key.into(), key_position, value });
        }
    }

    /// The node at `path`.
    pub fn at(&self, path: &[Step]) -> Option<&Node> {
        let Some((first, rest)) = path.split_first() else { return Some(self) };
        let child = match (first, &self.value) {
            (Step::Key(k), Value::Map(entries)) => &entries.iter().find(|e| &e.key == k)?.value,
            (Step::Index(i), Value::Seq(items)) => items.get(*i)?,
            _ => return None,
        };
        child.at(rest)
    }

    /// Removes the node at `path` (a mapping entry or a sequence item); `false` when there is none.
    pub fn remove(&mut self, path: &[Step]) -> bool {
        let Some((last, parent_path)) = path.split_last() else { return false };
        let Some(parent) = self.at_mut(parent_path) else { return false };
        match (last, &mut parent.value) {
            (Step::Key(k), Value::Map(entries)) => {
                let before = entries.len();
                entries.retain(|e| &e.key != k);
                entries.len() != before
            }
            (Step::Index(i), Value::Seq(items)) if *i < items.len() => {
                items.remove(*i);
                true
            }
            _ => false,
        }
    }

    pub fn at_mut(&mut self, path: &[Step]) -> Option<&mut Node> {
        let Some((first, rest)) = path.split_first() else { return Some(self) };
        let child = match (first, &mut self.value) {
            (Step::Key(k), Value::Map(entries)) => &mut entries.iter_mut().find(|e| &e.key == k)?.value,
            (Step::Index(i), Value::Seq(items)) => items.get_mut(*i)?,
            _ => return None,
        };
        child.at_mut(rest)
    }

    /// Whether any scalar in this subtree holds a `${` (an environment reference whose value is
    /// only known where the agent runs).
    pub fn mentions_env(&self) -> bool {
        match &self.value {
            Value::Str(s) | Value::Plain(s) => s.contains("${"),
            Value::Null => false,
            Value::Seq(items) => items.iter().any(Node::mentions_env),
            Value::Map(entries) => entries.iter().any(|e| e.key.contains("${") || e.value.mentions_env()),
        }
    }
}

/// A YAML syntax error with its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub position: Position,
    pub message: String,
}

/// Reads a YAML document. An empty document is a null node.
pub fn parse(text: &str) -> Result<Node, ParseError> {
    if text.trim().is_empty() {
        return Ok(Node::new(Value::Null, Position::START));
    }
    let raw: Spanned = serde_saphyr::from_str(text).map_err(|e| ParseError {
        position: e
            .location()
            .map(|l| Position { line: to_u32(l.line()), column: to_u32(l.column()) })
            .unwrap_or(Position::START),
        message: e.without_snippet().to_string(),
    })?;
    Ok(raw.into_node(text))
}

fn to_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// What serde-saphyr gives: a value with the location of its reference and of its definition
/// (they differ for aliases).
struct Spanned {
    value: RawValue,
    position: Position,
    /// Byte range of the scalar's text as written (its definition, for an alias).
    text: Option<(usize, usize)>,
}

enum RawValue {
    Null,
    Str(String),
    Typed(String),
    Seq(Vec<Spanned>),
    Map(Vec<(Spanned, Spanned)>),
}

impl<'de> Deserialize<'de> for Spanned {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = serde_saphyr::Spanned::<RawValue>::deserialize(d)?;
        let r = s.referenced;
        let span = s.defined.span();
        let text = match (span.byte_offset(), span.byte_len()) {
            (Some(o), Some(l)) => Some((o as usize, l as usize)),
            _ => None,
        };
        Ok(Spanned { value: s.value, position: Position { line: to_u32(r.line()), column: to_u32(r.column()) }, text })
    }
}

impl Spanned {
    fn into_node(self, source: &str) -> Node {
        let value = match self.value {
            RawValue::Null => Value::Null,
            RawValue::Str(s) => Value::Str(s),
            RawValue::Typed(shown) => {
                // The input's own spelling, when the span gives it and it is one plain word.
                let written = self
                    .text
                    .and_then(|(o, l)| source.get(o..o.saturating_add(l)))
                    .map(str::trim)
                    .filter(|t| !t.is_empty() && !t.contains(['\n', '#', '*', '&', '!', '\'', '"']));
                Value::Plain(written.map_or(shown, str::to_string))
            }
            RawValue::Seq(items) => Value::Seq(items.into_iter().map(|i| i.into_node(source)).collect()),
            RawValue::Map(entries) => Value::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| {
                        let key_position = k.position;
                        let key = match k.into_node(source).value {
                            Value::Str(s) | Value::Plain(s) => s,
                            Value::Null => "null".to_string(),
                            _ => String::new(),
                        };
                        Entry { key, key_position, value: v.into_node(source) }
                    })
                    .collect(),
            ),
        };
        Node::new(value, self.position)
    }
}

impl<'de> Deserialize<'de> for RawValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = RawValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawValue, E> {
        Ok(RawValue::Typed(v.to_string()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawValue, E> {
        Ok(RawValue::Typed(v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawValue, E> {
        Ok(RawValue::Typed(v.to_string()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<RawValue, E> {
        Ok(RawValue::Typed(v.to_string()))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<RawValue, E> {
        Ok(RawValue::Typed(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawValue, E> {
        Ok(RawValue::Typed(v.to_string()))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawValue, E> {
        Ok(RawValue::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<RawValue, E> {
        Ok(RawValue::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<RawValue, E> {
        Ok(RawValue::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<RawValue, E> {
        Ok(RawValue::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<RawValue, E> {
        Ok(RawValue::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<RawValue, D::Error> {
        d.deserialize_any(RawVisitor)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawValue, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned>()? {
            items.push(item);
        }
        Ok(RawValue::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawValue, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned>()? {
            let value = map.next_value::<Spanned>()?;
            entries.push((key, value));
        }
        Ok(RawValue::Map(entries))
    }
}

/// A written document.
#[derive(Debug, Clone, PartialEq)]
pub struct Emitted {
    pub text: String,
    /// `lines[n - 1]`: the path of the node that starts on line `n` (`None` for comments).
    pub lines: Vec<Option<Path>>,
}

impl Emitted {
    /// The path of the node written on `line` (1-based), or of the closest one above it.
    pub fn path_at(&self, line: u32) -> Option<&Path> {
        let index = usize::try_from(line).ok()?.checked_sub(1)?;
        self.lines.get(..=index.min(self.lines.len().checked_sub(1)?))?.iter().rev().find_map(Option::as_ref)
    }
}

/// Writes `root` (a mapping) after the `header` comment lines.
pub fn emit(root: &Node, header: &[String]) -> Emitted {
    let mut w = Writer { text: String::new(), lines: Vec::new() };
    for line in header {
        w.comment(0, line);
    }
    if !header.is_empty() {
        w.line(String::new(), None);
    }
    let mut path = Vec::new();
    match &root.value {
        Value::Map(entries) => w.entries(entries, 0, &mut path, None),
        _ => {
            let line = scalar_text(root).unwrap_or_else(|| "{}".into());
            w.line(line, Some(Vec::new()));
        }
    }
    Emitted { text: w.text, lines: w.lines }
}

struct Writer {
    text: String,
    lines: Vec<Option<Path>>,
}

impl Writer {
    fn line(&mut self, text: String, path: Option<Path>) {
        self.text.push_str(text.trim_end());
        self.text.push('\n');
        self.lines.push(path);
    }

    fn comment(&mut self, indent: usize, comment: &str) {
        for line in comment.lines() {
            let text = if line.is_empty() { "#".to_string() } else { format!("# {line}") };
            self.line(format!("{:indent$}{text}", ""), None);
        }
    }

    /// Writes mapping entries at `indent`; the first one goes after `first_prefix` when given
    /// (a sequence item's `- `).
    fn entries(&mut self, entries: &[Entry], indent: usize, path: &mut Path, mut first_prefix: Option<String>) {
        for entry in entries {
            path.push(Step::Key(entry.key.clone()));
            let prefix = match first_prefix.take() {
                Some(p) => {
                    // A comment of the item's first entry goes above the item.
                    p
                }
                None => {
                    if let Some(c) = &entry.value.comment {
                        self.comment(indent, c);
                    }
                    " ".repeat(indent)
                }
            };
            let key = format!("{prefix}{}:", quote(&entry.key));
            self.value_after(key, &entry.value, indent, path);
            path.pop();
        }
    }

    /// Writes `node` after `lead` (`key:` or `-`): scalars on the same line, collections below.
    fn value_after(&mut self, lead: String, node: &Node, indent: usize, path: &mut Path) {
        match &node.value {
            Value::Map(entries) if !entries.is_empty() => {
                self.line(lead, Some(path.clone()));
                self.entries(entries, indent + 2, path, None);
            }
            Value::Seq(items) if !items.is_empty() => {
                self.line(lead, Some(path.clone()));
                self.items(items, indent + 2, path);
            }
            _ => {
                let text = scalar_text(node).unwrap_or_default();
                let line = if text.is_empty() { lead } else { format!("{lead} {text}") };
                self.line(line, Some(path.clone()));
            }
        }
    }

    fn items(&mut self, items: &[Node], indent: usize, path: &mut Path) {
        for (i, item) in items.iter().enumerate() {
            path.push(Step::Index(i));
            let first_comment = item.entries().first().and_then(|e| e.value.comment.as_ref());
            for c in item.comment.iter().chain(first_comment) {
                self.comment(indent, c);
            }
            let dash = format!("{:indent$}- ", "");
            match &item.value {
                Value::Map(entries) if !entries.is_empty() => {
                    self.entries(entries, indent + 2, path, Some(dash));
                }
                Value::Seq(inner) if !inner.is_empty() => {
                    self.line(dash, Some(path.clone()));
                    self.items(inner, indent + 2, path);
                }
                Value::Null => self.line(format!("{dash}null"), Some(path.clone())),
                _ => {
                    let text = scalar_text(item).unwrap_or_default();
                    self.line(format!("{dash}{text}"), Some(path.clone()));
                }
            }
            path.pop();
        }
    }
}

/// The one-line text of a scalar or an empty collection; `None` for null and non-empty
/// collections.
fn scalar_text(node: &Node) -> Option<String> {
    match &node.value {
        Value::Null => None,
        Value::Str(s) => Some(quote(s)),
        Value::Plain(s) => Some(escape_dollars(s)),
        Value::Map(_) => Some("{}".into()),
        Value::Seq(_) => Some("[]".into()),
    }
}

/// A string as a YAML scalar: plain when YAML reads it back as the same string, single-quoted
/// when it has no control characters, double-quoted otherwise. `${...}` that sluice's expansion
/// would refuse is escaped as `$${...}`.
pub fn quote(s: &str) -> String {
    let s = escape_dollars(s);
    if plain_is_safe(&s) {
        return s;
    }
    if !s.chars().any(char::is_control) {
        return format!("'{}'", s.replace('\'', "''"));
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn plain_is_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else { return false };
    if s.trim() != s || s.chars().any(char::is_control) {
        return false;
    }
    if "-?:,[]{}#&*!|>'\"%@`".contains(first) {
        return false;
    }
    if s.contains(": ") || s.contains(" #") || s.ends_with(':') {
        return false;
    }
    // Words YAML reads as null, booleans or numbers.
    let lower = s.to_ascii_lowercase();
    if matches!(lower.as_str(), "null" | "~" | "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n") {
        return false;
    }
    if lower.starts_with(".inf") || lower.starts_with(".nan") || lower.starts_with("+.") || lower.starts_with("-.") {
        return false;
    }
    let numeric_start = first.is_ascii_digit()
        || ((first == '+' || first == '-' || first == '.') && s[1..].starts_with(|c: char| c.is_ascii_digit()));
    // Text that starts like a number is read as a string when it holds a character no number,
    // date or time has (`5s`, `256KiB`, `1h30m`).
    !numeric_start || s.chars().any(|c| !(c.is_ascii_hexdigit() || "+-._:xXoOtTzZ ".contains(c)))
}

/// Escapes each `${...}` that sluice's `${VAR}` / `${VAR:-default}` expansion would refuse.
pub fn escape_dollars(s: &str) -> String {
    if !s.contains('$') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 4);
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let at = &rest[i..];
        if let Some(tail) = at.strip_prefix("$$") {
            out.push_str("$$");
            rest = tail;
            continue;
        }
        if let Some(body_start) = at.strip_prefix("${") {
            let valid = body_start.find('}').is_some_and(|end| {
                let body = &body_start[..end];
                let name = body.split_once(":-").map_or(body, |(n, _)| n);
                !body.contains('\n') && is_var_name(name)
            });
            out.push_str(if valid { "$" } else { "$$" });
            rest = &at[1..];
            continue;
        }
        out.push('$');
        rest = &at[1..];
    }
    out.push_str(rest);
    out
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(line: u32, column: u32) -> Position {
        Position { line, column }
    }

    #[test]
    fn keeps_places_and_the_spelling_of_typed_scalars() {
        let text = "a: 1.10\nb:\n  - on\n  - 'on'\n  - x\nc: {d: 0x1F, e: ~, f: }\n";
        let root = parse(text).unwrap();
        let a = &root.get("a").unwrap();
        assert_eq!(
            (a.key_position, &a.value.value, a.value.position),
            (pos(1, 1), &Value::Plain("1.10".into()), pos(1, 4))
        );
        let b = root.get("b").unwrap().value.items();
        assert_eq!(b[0].value, Value::Plain("on".into()));
        assert_eq!(b[1].value, Value::Str("on".into()));
        assert_eq!((b[2].position), pos(5, 5));
        let c = &root.get("c").unwrap().value;
        assert_eq!(c.get("d").unwrap().value.value, Value::Plain("0x1F".into()));
        assert_eq!(c.get("e").unwrap().value.value, Value::Null);
        assert_eq!(c.get("f").unwrap().value.value, Value::Null);
        assert_eq!(c.get("f").unwrap().key_position, pos(6, 20));
    }

    #[test]
    fn resolves_aliases_and_merge_keys() {
        let root = parse("base: &b {x: 1, y: two}\nuse:\n  <<: *b\n  y: three\nref: *b\n").unwrap();
        let merged = &root.get("use").unwrap().value;
        assert_eq!(merged.get("x").unwrap().value.value, Value::Plain("1".into()));
        assert_eq!(merged.get("y").unwrap().value.value, Value::Str("three".into()));
        assert_eq!(root.get("ref").unwrap().value.get("y").unwrap().value.value, Value::Str("two".into()));
    }

    #[test]
    fn reports_syntax_errors_with_their_place() {
        let err = parse("a: [1, 2\nb: c\n").unwrap_err();
        assert!(err.position.line >= 1, "{err:?}");
        assert!(parse("a: b\n  c: d\n").is_err());
    }

    #[test]
    fn quotes_only_what_needs_it() {
        for (s, want) in [
            ("plain", "plain"),
            ("/var/log/*.log", "/var/log/*.log"),
            ("*.log", "'*.log'"),
            ("on", "'on'"),
            ("1.10", "'1.10'"),
            ("5s", "5s"),
            ("1h30m", "1h30m"),
            ("256KiB", "256KiB"),
            ("1e3", "'1e3'"),
            ("0x1F", "'0x1F'"),
            ("2026-01-02", "'2026-01-02'"),
            ("10:30", "'10:30'"),
            ("0.0.0.0:9080", "'0.0.0.0:9080'"),
            ("-1", "'-1'"),
            ("", "''"),
            ("a: b", "'a: b'"),
            ("{job=\"x\"}", "'{job=\"x\"}'"),
            ("it's", "it's"),
            ("'q'", "'''q'''"),
            ("two\nlines", "\"two\\nlines\""),
            ("tab\there", "\"tab\\there\""),
            ("/(.*)", "/(.*)"),
            ("x #y", "'x #y'"),
            ("http://loki:3100/loki/api/v1/push", "http://loki:3100/loki/api/v1/push"),
        ] {
            assert_eq!(quote(s), want, "{s:?}");
        }
    }

    #[test]
    fn escapes_what_env_expansion_would_refuse() {
        assert_eq!(escape_dollars("${1}"), "$${1}");
        assert_eq!(escape_dollars("a${HOST}b${X:-d}"), "a${HOST}b${X:-d}");
        assert_eq!(escape_dollars("$1 $$ ${} ${a b}"), "$1 $$ $${} $${a b}");
        assert_eq!(escape_dollars("${unterminated"), "$${unterminated");
    }

    #[test]
    fn writes_block_style_with_line_paths() {
        let text = "a: 1\nb:\n  - x: 1\n    y: [p, q]\n  - []\n  - ''\nc: {}\nd:\n";
        let root = parse(text).unwrap();
        let mut root2 = root.clone();
        if let Some(Entry { value, .. }) = match &mut root2.value {
            Value::Map(e) => e.get_mut(0),
            _ => None,
        } {
            value.comment = Some("first\nsecond".into());
        }
        let out = emit(&root2, &["header".to_string()]);
        assert_eq!(
            out.text,
            "# header\n\n# first\n# second\na: 1\nb:\n  - x: 1\n    'y':\n      - p\n      - q\n  - []\n  - ''\nc: {}\nd:\n"
        );
        let step = |k: &str| Step::Key(k.into());
        assert_eq!(out.path_at(2), None);
        assert_eq!(out.path_at(4), None);
        assert_eq!(out.path_at(5), Some(&vec![step("a")]));
        assert_eq!(out.path_at(7), Some(&vec![step("b"), Step::Index(0), step("x")]));
        assert_eq!(out.path_at(10), Some(&vec![step("b"), Step::Index(0), step("y"), Step::Index(1)]));
        let reread = parse(&out.text).unwrap().get("b").unwrap().value.clone();
        assert_eq!(reread.relocated(), root.get("b").unwrap().value.clone().relocated());
    }

    #[test]
    fn removes_by_path() {
        let mut root = parse("a:\n  - 1\n  - 2\nb: {c: 1, d: 2}\n").unwrap();
        assert!(root.remove(&[Step::Key("a".into()), Step::Index(0)]));
        assert!(root.remove(&[Step::Key("b".into()), Step::Key("c".into())]));
        assert!(!root.remove(&[Step::Key("z".into())]));
        let out = emit(&root, &[]);
        assert_eq!(out.text, "a:\n  - 2\nb:\n  d: 2\n");
    }

    impl Node {
        /// The same tree with every place set to the start (to compare trees written elsewhere).
        fn relocated(mut self) -> Node {
            fn walk(n: &mut Node) {
                n.position = Position::START;
                match &mut n.value {
                    Value::Seq(items) => items.iter_mut().for_each(walk),
                    Value::Map(entries) => entries.iter_mut().for_each(|e| {
                        e.key_position = Position::START;
                        walk(&mut e.value)
                    }),
                    _ => {}
                }
            }
            walk(&mut self);
            self
        }
    }
}
