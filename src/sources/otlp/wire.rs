//! A validating scanner of OTLP trace requests in their protobuf form.
//!
//! One pass over an `ExportTraceServiceRequest` checks everything a strict decoder (prost, or
//! Go's protobuf in Jaeger) would check: well-formed varints and lengths, the wire type of every
//! known field, UTF-8 in string fields, nesting depth. What it keeps are slices of the body:
//! resource, scope and span records, ready for [`crate::event::SpanBatch`]; only a span or
//! resource that an attribute action changes is written anew. From each span it reads what span
//! metrics need (name, kind, status, duration).
//!
//! A body that is not well-formed protobuf is refused whole ([`WireError`]). A well-formed span
//! with ids of the wrong length is left out and counted as rejected (OTLP partial success), so
//! that one bad span does not make the exporter's next hop refuse the whole batch.

use super::attributes::AttrActions;
use crate::event::spans::{ResourceGroup, ScopeGroup, put_key_len, record};
use bytes::Bytes;

/// AnyValue nesting (arrays and key-value lists) allowed in an attribute value.
const MAX_DEPTH: u32 = 32;

/// Why a body is not a well-formed OTLP trace request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed OTLP protobuf: {problem} in {message}")]
pub struct WireError {
    /// The message being read (`Span`, `KeyValue`...).
    pub message: &'static str,
    pub problem: Problem,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("a field runs past the end of its message")]
    Truncated,
    #[error("a varint longer than 10 bytes or over 64 bits")]
    LongVarint,
    #[error("field number 0")]
    FieldZero,
    #[error("field key {0} over 32 bits")]
    KeyTooLarge(u64),
    #[error("wire type {wire_type} for field {field}, which takes wire type {expected}")]
    WireType { field: u32, wire_type: u8, expected: u8 },
    #[error("unsupported wire type {0}")]
    BadWireType(u8),
    #[error("invalid UTF-8 in string field {0}")]
    Utf8(u32),
    #[error("values nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

type Result<T> = std::result::Result<T, WireError>;

const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const I32: u8 = 5;

/// A cursor over one message.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    msg: &'static str,
}

impl<'a> Reader<'a> {
    #[inline]
    fn new(buf: &'a [u8], msg: &'static str) -> Self {
        Reader { buf, pos: 0, msg }
    }

    #[cold]
    #[inline(never)]
    fn err(&self, problem: Problem) -> WireError {
        WireError { message: self.msg, problem }
    }

    #[inline]
    fn more(&self) -> bool {
        self.pos < self.buf.len()
    }

    /// A varint; most (keys, short lengths, small numbers) are one byte.
    #[inline(always)]
    fn varint(&mut self) -> Result<u64> {
        if let Some(&byte) = self.buf.get(self.pos)
            && byte < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(byte));
        }
        self.long_varint()
    }

    #[inline(never)]
    fn long_varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err(self.err(Problem::Truncated));
            };
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                // The tenth byte holds the 64th bit only; more overflows (prost and Go refuse it).
                return if i == 9 && byte > 1 { Err(self.err(Problem::LongVarint)) } else { Ok(value) };
            }
        }
        Err(self.err(Problem::LongVarint))
    }

    /// The next key: (field number, wire type).
    #[inline(always)]
    fn key(&mut self) -> Result<(u32, u8)> {
        let key = self.varint()?;
        let Ok(key) = u32::try_from(key) else {
            return Err(self.err(Problem::KeyTooLarge(key)));
        };
        let field = key >> 3;
        if field == 0 {
            return Err(self.err(Problem::FieldZero));
        }
        Ok((field, (key & 7) as u8))
    }

    /// The payload of a length-delimited field, as a range of the message.
    #[inline]
    fn len_delimited(&mut self) -> Result<std::ops::Range<usize>> {
        let len = self.varint()?;
        let start = self.pos;
        let end = usize::try_from(len).ok().and_then(|l| start.checked_add(l)).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(self.err(Problem::Truncated));
        };
        self.pos = end;
        Ok(start..end)
    }

    #[inline]
    fn fixed(&mut self, width: usize) -> Result<u64> {
        let Some(bytes) = self.buf.get(self.pos..self.pos + width) else {
            return Err(self.err(Problem::Truncated));
        };
        self.pos += width;
        let mut le = [0u8; 8];
        le[..width].copy_from_slice(bytes);
        Ok(u64::from_le_bytes(le))
    }

    /// Skips a field of an unknown number.
    #[inline]
    fn skip(&mut self, wire_type: u8) -> Result<()> {
        match wire_type {
            VARINT => self.varint().map(drop),
            I64 => self.fixed(8).map(drop),
            LEN => self.len_delimited().map(drop),
            I32 => self.fixed(4).map(drop),
            other => Err(self.err(Problem::BadWireType(other))),
        }
    }

    #[inline]
    fn expect(&self, field: u32, wire_type: u8, expected: u8) -> Result<()> {
        if wire_type == expected { Ok(()) } else { Err(self.err(Problem::WireType { field, wire_type, expected })) }
    }

    /// A length-delimited field that must hold UTF-8.
    #[inline]
    fn string(&mut self, field: u32, wire_type: u8) -> Result<&'a [u8]> {
        self.expect(field, wire_type, LEN)?;
        let range = self.len_delimited()?;
        let bytes = &self.buf[range];
        if !bytes.is_ascii() && std::str::from_utf8(bytes).is_err() {
            return Err(self.err(Problem::Utf8(field)));
        }
        Ok(bytes)
    }

    #[inline]
    fn bytes(&mut self, field: u32, wire_type: u8) -> Result<&'a [u8]> {
        self.expect(field, wire_type, LEN)?;
        let range = self.len_delimited()?;
        Ok(&self.buf[range])
    }

    #[inline]
    fn message(&mut self, field: u32, wire_type: u8) -> Result<&'a [u8]> {
        self.bytes(field, wire_type)
    }

    #[inline]
    fn scalar(&mut self, field: u32, wire_type: u8, expected: u8) -> Result<u64> {
        self.expect(field, wire_type, expected)?;
        match expected {
            VARINT => self.varint(),
            I64 => self.fixed(8),
            _ => self.fixed(4),
        }
    }
}

/// Validates a `KeyValue` and returns its key.
pub(crate) fn key_value(buf: &[u8], depth: u32) -> Result<&[u8]> {
    let mut r = Reader::new(buf, "KeyValue");
    let mut key: &[u8] = &[];
    while r.more() {
        let (field, wt) = r.key()?;
        match field {
            1 => key = r.string(field, wt)?,
            2 => drop(any_value(r.message(field, wt)?, depth + 1)?),
            3 => drop(r.scalar(field, wt, VARINT)?),
            _ => r.skip(wt)?,
        }
    }
    Ok(key)
}

/// Validates an `AnyValue`; returns its string value when it is one.
fn any_value(buf: &[u8], depth: u32) -> Result<Option<&[u8]>> {
    let mut r = Reader::new(buf, "AnyValue");
    if depth > MAX_DEPTH {
        return Err(r.err(Problem::TooDeep));
    }
    let mut string = None;
    while r.more() {
        let (field, wt) = r.key()?;
        match field {
            1 => string = Some(r.string(field, wt)?),
            2 | 3 | 8 => drop(r.scalar(field, wt, VARINT)?),
            4 => drop(r.scalar(field, wt, I64)?),
            5 => {
                let mut array = Reader::new(r.message(field, wt)?, "ArrayValue");
                while array.more() {
                    let (f, w) = array.key()?;
                    match f {
                        1 => drop(any_value(array.message(f, w)?, depth + 1)?),
                        _ => array.skip(w)?,
                    }
                }
            }
            6 => {
                let mut list = Reader::new(r.message(field, wt)?, "KeyValueList");
                while list.more() {
                    let (f, w) = list.key()?;
                    match f {
                        1 => drop(key_value(list.message(f, w)?, depth + 1)?),
                        _ => list.skip(w)?,
                    }
                }
            }
            7 => drop(r.bytes(field, wt)?),
            _ => r.skip(wt)?,
        }
    }
    Ok(string)
}

/// Validates the `KeyValue` at `field` of `r`'s message and returns its key.
fn attribute<'a>(r: &mut Reader<'a>, field: u32, wt: u8) -> Result<&'a [u8]> {
    key_value(r.message(field, wt)?, 0)
}

/// Validates an `InstrumentationScope`.
fn scope(buf: &[u8]) -> Result<()> {
    let mut r = Reader::new(buf, "InstrumentationScope");
    while r.more() {
        let (field, wt) = r.key()?;
        match field {
            1 | 2 => drop(r.string(field, wt)?),
            3 => drop(attribute(&mut r, field, wt)?),
            4 => drop(r.scalar(field, wt, VARINT)?),
            _ => r.skip(wt)?,
        }
    }
    Ok(())
}

/// Validates a `Resource`; returns the value of `service.name` when it is a string.
pub(crate) fn resource<'a>(buf: &'a [u8], actions: &AttrActions) -> Result<ResourceFacts<'a>> {
    let mut r = Reader::new(buf, "Resource");
    let mut facts = ResourceFacts { service_name: None, touched: false };
    while r.more() {
        let (field, wt) = r.key()?;
        match field {
            1 => {
                let kv = r.message(field, wt)?;
                let key = key_value(kv, 0)?;
                facts.touched |= actions.acts_on(key);
                if key == b"service.name" {
                    facts.service_name = string_value_of(kv);
                }
            }
            2 => drop(r.scalar(field, wt, VARINT)?),
            3 => {
                let mut entity = Reader::new(r.message(field, wt)?, "EntityRef");
                while entity.more() {
                    let (f, w) = entity.key()?;
                    match f {
                        1..=4 => drop(entity.string(f, w)?),
                        _ => entity.skip(w)?,
                    }
                }
            }
            _ => r.skip(wt)?,
        }
    }
    Ok(facts)
}

/// The string value of a validated `KeyValue`, if it has one.
fn string_value_of(kv: &[u8]) -> Option<&[u8]> {
    let mut r = Reader::new(kv, "KeyValue");
    let mut value = None;
    while r.more() {
        let (field, wt) = r.key().ok()?;
        if field == 2 && wt == LEN {
            value = any_value(&kv[r.len_delimited().ok()?], 1).ok()?;
        } else {
            r.skip(wt).ok()?;
        }
    }
    value
}

pub(crate) struct ResourceFacts<'a> {
    pub service_name: Option<&'a [u8]>,
    /// An attribute action names one of its keys.
    pub touched: bool,
}

/// What span metrics and validation need from a span.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanFacts<'a> {
    pub name: &'a [u8],
    pub kind: i32,
    pub status_code: i32,
    pub start: u64,
    pub end: u64,
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub parent_span_id: &'a [u8],
    /// A link's ids have the wrong length.
    pub bad_link: bool,
    /// An attribute action names one of its attribute keys.
    pub touched: bool,
}

impl SpanFacts<'_> {
    /// Why the span cannot be forwarded, if it cannot.
    pub fn invalid(&self) -> Option<&'static str> {
        if self.trace_id.len() != 16 {
            Some("trace_id is not 16 bytes")
        } else if self.span_id.len() != 8 {
            Some("span_id is not 8 bytes")
        } else if !(self.parent_span_id.is_empty() || self.parent_span_id.len() == 8) {
            Some("parent_span_id is neither empty nor 8 bytes")
        } else if self.bad_link {
            Some("a link's trace_id or span_id has the wrong length")
        } else {
            None
        }
    }

    pub fn duration_nanos(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }
}

/// Validates a `Span` and reads its facts.
pub fn span<'a>(buf: &'a [u8], actions: &AttrActions) -> Result<SpanFacts<'a>> {
    let mut r = Reader::new(buf, "Span");
    let mut facts = SpanFacts::default();
    while r.more() {
        let (field, wt) = r.key()?;
        match field {
            1 => facts.trace_id = r.bytes(field, wt)?,
            2 => facts.span_id = r.bytes(field, wt)?,
            3 => drop(r.string(field, wt)?),
            4 => facts.parent_span_id = r.bytes(field, wt)?,
            5 => facts.name = r.string(field, wt)?,
            6 => facts.kind = r.scalar(field, wt, VARINT)? as i32,
            7 => facts.start = r.scalar(field, wt, I64)?,
            8 => facts.end = r.scalar(field, wt, I64)?,
            9 => {
                let key = attribute(&mut r, field, wt)?;
                facts.touched |= actions.acts_on(key);
            }
            10 | 12 | 14 => drop(r.scalar(field, wt, VARINT)?),
            11 => event(r.message(field, wt)?)?,
            13 => facts.bad_link |= !link(r.message(field, wt)?)?,
            15 => {
                let mut status = Reader::new(r.message(field, wt)?, "Status");
                while status.more() {
                    let (f, w) = status.key()?;
                    match f {
                        2 => drop(status.string(f, w)?),
                        3 => facts.status_code = status.scalar(f, w, VARINT)? as i32,
                        _ => status.skip(w)?,
                    }
                }
            }
            16 => drop(r.scalar(field, wt, I32)?),
            _ => r.skip(wt)?,
        }
    }
    Ok(facts)
}

fn event(buf: &[u8]) -> Result<()> {
    let mut r = Reader::new(buf, "Span.Event");
    while r.more() {
        let (field, wt) = r.key()?;
        match field {
            1 => drop(r.scalar(field, wt, I64)?),
            2 => drop(r.string(field, wt)?),
            3 => drop(attribute(&mut r, field, wt)?),
            4 => drop(r.scalar(field, wt, VARINT)?),
            _ => r.skip(wt)?,
        }
    }
    Ok(())
}

/// Validates a `Span.Link`; `false` when its ids have the wrong length.
fn link(buf: &[u8]) -> Result<bool> {
    let mut r = Reader::new(buf, "Span.Link");
    let (mut trace_id, mut span_id): (&[u8], &[u8]) = (&[], &[]);
    while r.more() {
        let (field, wt) = r.key()?;
        match field {
            1 => trace_id = r.bytes(field, wt)?,
            2 => span_id = r.bytes(field, wt)?,
            3 => drop(r.string(field, wt)?),
            4 => drop(attribute(&mut r, field, wt)?),
            5 => drop(r.scalar(field, wt, VARINT)?),
            6 => drop(r.scalar(field, wt, I32)?),
            _ => r.skip(wt)?,
        }
    }
    Ok(trace_id.len() == 16 && span_id.len() == 8)
}

/// A span kept for span metrics: where its name is in the body, and its labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Index into [`Scanned::services`].
    pub service: u32,
    /// The span's name, a range of the request body (validated UTF-8).
    pub name: std::ops::Range<u32>,
    pub kind: i32,
    pub status_code: i32,
    pub duration_nanos: u64,
}

/// The result of scanning one request.
#[derive(Debug, Default)]
pub struct Scanned {
    pub groups: Vec<ResourceGroup>,
    /// Spans kept.
    pub spans: usize,
    /// Bytes of the records kept (what the request costs in memory until it is exported).
    pub bytes: usize,
    /// Spans left out, and why the first one was.
    pub rejected: usize,
    pub rejection: Option<String>,
    /// Service names of the resources, as span metrics label them.
    pub services: Vec<String>,
    pub observations: Vec<Observation>,
}

/// What the scanner does besides validating.
#[derive(Debug, Default)]
pub struct ScanOptions {
    pub resource_actions: AttrActions,
    pub span_actions: AttrActions,
    /// Keep span metric observations.
    pub observe: bool,
}

/// The service name of a span whose resource names none (what the SDKs use).
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// Scans an `ExportTraceServiceRequest`.
pub fn scan_request(body: &Bytes, options: &ScanOptions) -> Result<Scanned> {
    let mut out = Scanned::default();
    let mut r = Reader::new(body, "ExportTraceServiceRequest");
    while r.more() {
        let (field, wt) = r.key()?;
        if field != 1 {
            r.skip(wt)?;
            continue;
        }
        r.expect(field, wt, LEN)?;
        let range = r.len_delimited()?;
        scan_resource_spans(body, range, options, &mut out)?;
    }
    Ok(out)
}

/// Offset of `inner` inside `outer` (a subslice).
fn offset_in(outer: &[u8], inner: &[u8]) -> usize {
    inner.as_ptr() as usize - outer.as_ptr() as usize
}

fn scan_resource_spans(
    body: &Bytes,
    range: std::ops::Range<usize>,
    options: &ScanOptions,
    out: &mut Scanned,
) -> Result<()> {
    let base = range.start;
    let buf = &body[range];
    let mut r = Reader::new(buf, "ResourceSpans");
    let mut group = ResourceGroup::default();
    let mut resource_payload: Option<&[u8]> = None;
    let mut scope_ranges: Vec<std::ops::Range<usize>> = Vec::new();
    while r.more() {
        let start = r.pos;
        let (field, wt) = r.key()?;
        match field {
            1 => {
                resource_payload = Some(r.message(field, wt)?);
                group.resource = body.slice(base + start..base + r.pos);
            }
            2 => {
                r.expect(field, wt, LEN)?;
                let inner = r.len_delimited()?;
                scope_ranges.push(base + inner.start..base + inner.end);
            }
            3 => {
                r.string(field, wt)?;
                group.schema_url = body.slice(base + start..base + r.pos);
            }
            _ => r.skip(wt)?,
        }
    }
    // The resource, changed by the configured actions when they apply.
    let facts = resource(resource_payload.unwrap_or(&[]), &options.resource_actions)?;
    let mut service_name = facts.service_name.map(|s| String::from_utf8_lossy(s).into_owned());
    if facts.touched || options.resource_actions.always_rewrites() {
        let mut rewritten = Vec::with_capacity(resource_payload.map_or(0, <[u8]>::len) + 64);
        options.resource_actions.rewrite(resource_payload.unwrap_or(&[]), 1, &mut rewritten)?;
        service_name = resource(&rewritten, &AttrActions::default())?
            .service_name
            .map(|s| String::from_utf8_lossy(s).into_owned());
        group.resource = record(1, &rewritten);
    }
    let service = out.services.len() as u32;
    out.services.push(service_name.unwrap_or_else(|| UNKNOWN_SERVICE.to_string()));
    let kept_before = out.spans;
    for range in scope_ranges {
        if let Some(scope) = scan_scope_spans(body, range, options, service, out)? {
            group.scopes.push(scope);
        }
    }
    if out.spans > kept_before {
        out.bytes += group.resource.len() + group.schema_url.len();
        out.groups.push(group);
    }
    Ok(())
}

fn scan_scope_spans(
    body: &Bytes,
    range: std::ops::Range<usize>,
    options: &ScanOptions,
    service: u32,
    out: &mut Scanned,
) -> Result<Option<ScopeGroup>> {
    let base = range.start;
    let buf = &body[range];
    let mut r = Reader::new(buf, "ScopeSpans");
    let mut group = ScopeGroup::default();
    while r.more() {
        let start = r.pos;
        let (field, wt) = r.key()?;
        match field {
            1 => {
                scope(r.message(field, wt)?)?;
                group.scope = body.slice(base + start..base + r.pos);
            }
            2 => {
                let payload = r.message(field, wt)?;
                let facts = span(payload, &options.span_actions)?;
                if let Some(why) = facts.invalid() {
                    out.rejected += 1;
                    if out.rejection.is_none() {
                        out.rejection = Some(format!("span {:?} left out: {why}", String::from_utf8_lossy(facts.name)));
                    }
                    continue;
                }
                if options.observe {
                    // An empty name is absent from the body (proto3 omits it): no offset.
                    let name_start = if facts.name.is_empty() { 0 } else { offset_in(body, facts.name) as u32 };
                    out.observations.push(Observation {
                        service,
                        name: name_start..name_start + facts.name.len() as u32,
                        kind: facts.kind,
                        status_code: facts.status_code,
                        duration_nanos: facts.duration_nanos(),
                    });
                }
                let span_record = if facts.touched || options.span_actions.always_rewrites() {
                    let mut rewritten = Vec::with_capacity(payload.len() + 64);
                    options.span_actions.rewrite(payload, 9, &mut rewritten)?;
                    record(2, &rewritten)
                } else {
                    body.slice(base + start..base + r.pos)
                };
                out.bytes += span_record.len();
                out.spans += 1;
                group.spans.push(span_record);
            }
            3 => {
                r.string(field, wt)?;
                group.schema_url = body.slice(base + start..base + r.pos);
            }
            _ => r.skip(wt)?,
        }
    }
    if group.spans.is_empty() {
        return Ok(None);
    }
    out.bytes += group.scope.len() + group.schema_url.len();
    Ok(Some(group))
}

/// Copies the fields of `message` except the attribute records (field `attr_field`) whose key
/// `keep` refuses; returns those records' keys and payloads in order.
pub(crate) fn split_attributes<'a>(
    message: &'a [u8],
    attr_field: u32,
    mut is_touched: impl FnMut(&[u8]) -> bool,
    out: &mut Vec<u8>,
) -> Result<Vec<(&'a [u8], &'a [u8])>> {
    let mut r = Reader::new(message, "attributes");
    let mut touched = Vec::new();
    while r.more() {
        let start = r.pos;
        let (field, wt) = r.key()?;
        if field == attr_field && wt == LEN {
            let payload = &message[r.len_delimited()?];
            let key = key_value(payload, 0)?;
            if is_touched(key) {
                touched.push((key, payload));
                continue;
            }
        } else {
            r.skip(wt)?;
        }
        out.extend_from_slice(&message[start..r.pos]);
    }
    Ok(touched)
}

/// Appends a length-delimited record to `out`.
pub(crate) fn put_record(out: &mut Vec<u8>, field: u32, payload: &[u8]) {
    put_key_len(out, field, payload.len());
    out.extend_from_slice(payload);
}

#[cfg(test)]
pub(crate) mod tests;
