//! A test Loki: `POST /loki/api/v1/push` decoded and validated as strictly as Loki does
//! (PROTOCOLS.md), recording every entry it stores, and scriptable to refuse (429, 500, 400,
//! 260...) or to hang.
//!
//! Validation, as Loki: any content type other than `application/json` is read as snappy
//! (block) protobuf; label strings must parse (`{a="x", b="y"}` with Go escapes), names must be
//! valid and unique, a stream needs at least one label; lines over `max_line_size`, timestamps
//! more than 10 minutes ahead or older than 7 days, too many label names, names or values too
//! long, structured metadata when it is not allowed, and (with `ordered`) entries older than
//! the newest of their stream are refused. As Loki does, the valid entries of a push are
//! stored even when the push is answered 400, and an exact duplicate of a stored entry (same
//! stream, nanosecond timestamp, line and metadata) is dropped and counted.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use prost::Message;
use sluice::proto::logproto;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One stored entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub labels: BTreeMap<String, String>,
    pub timestamp: i64,
    pub line: String,
    pub metadata: BTreeMap<String, String>,
    pub tenant: Option<String>,
}

/// What the receiver answers to the next pushes.
#[derive(Debug, Clone)]
pub enum Answer {
    /// Validate and store (the default).
    Accept,
    /// Answer this status and store nothing (429, 500, 503, 260...), with an optional Retry-After.
    Status(u16, Option<u64>),
    /// Never answer.
    Hang,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_line_size: usize,
    pub max_label_names: usize,
    pub structured_metadata: bool,
    /// Refuse entries older than the newest of their stream (Loki's ordered mode).
    pub ordered: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_line_size: 256 * 1024, max_label_names: 15, structured_metadata: true, ordered: false }
    }
}

/// What makes two entries the same to Loki: stream, time, line and structured metadata.
type Identity = (String, i64, Vec<u8>, Vec<(String, Vec<u8>)>);

#[derive(Default)]
struct State {
    stored: Vec<Stored>,
    /// Identity of every stored entry: Loki drops exact duplicates (stream, time, line, metadata).
    seen: std::collections::HashSet<Identity>,
    duplicates: usize,
    /// The first duplicates, to show in failures.
    duplicate_samples: Vec<String>,
    /// Answers for the next pushes, in order; then `default_answer`.
    script: VecDeque<Answer>,
    default_answer: Option<Answer>,
    newest: HashMap<String, i64>,
    rejections: Vec<String>,
    bodies: usize,
}

#[derive(Clone)]
pub struct TestLoki {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    limits: Arc<Mutex<Limits>>,
    pushes: Arc<AtomicUsize>,
}

fn now_nanos() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// Parses a Loki label string strictly.
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let s = s.trim();
    let inner = s
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .ok_or_else(|| format!("parse error: `{s}` is not {{...}}"))?;
    let mut out = BTreeMap::new();
    let mut rest = inner.trim_start();
    while !rest.is_empty() {
        let name_len = rest.find(|c: char| !(c == '_' || c.is_ascii_alphanumeric())).unwrap_or(rest.len());
        let name = &rest[..name_len];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!("parse error: invalid label name at `{rest}`"));
        }
        rest = rest[name_len..].trim_start();
        rest = rest.strip_prefix('=').ok_or_else(|| format!("parse error: expected = after {name}"))?.trim_start();
        let body = rest.strip_prefix('"').ok_or_else(|| format!("parse error: expected a quoted value for {name}"))?;
        let mut value = String::new();
        let mut chars = body.char_indices();
        let end = loop {
            let Some((i, c)) = chars.next() else { return Err("parse error: unterminated value".into()) };
            match c {
                '"' => break i,
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('n') => value.push('\n'),
                    Some('t') => value.push('\t'),
                    Some('r') => value.push('\r'),
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('u') => {
                        let hex: String = (0..4).filter_map(|_| chars.next().map(|(_, c)| c)).collect();
                        let code = u32::from_str_radix(&hex, 16).map_err(|_| "parse error: bad \\u escape")?;
                        value.push(char::from_u32(code).ok_or("parse error: bad code point")?);
                    }
                    other => return Err(format!("parse error: unknown escape {other:?}")),
                },
                c => value.push(c),
            }
        };
        if out.insert(name.to_string(), value).is_some() {
            return Err(format!("duplicate label name: {name}"));
        }
        rest = body[end + 1..].trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
        } else if !rest.is_empty() {
            return Err(format!("parse error: expected , at `{rest}`"));
        }
    }
    Ok(out)
}

impl TestLoki {
    pub async fn start() -> TestLoki {
        Self::start_with(Limits::default()).await
    }

    pub async fn start_with(limits: Limits) -> TestLoki {
        Self::serve(tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind test loki"), limits)
    }

    /// A test Loki reachable from containers (on every interface of the host).
    pub async fn start_on_all_interfaces() -> TestLoki {
        Self::serve(tokio::net::TcpListener::bind("0.0.0.0:0").await.expect("bind test loki"), Limits::default())
    }

    /// A test Loki on a given port (to come up where an agent already pushes).
    pub async fn start_on(port: u16) -> TestLoki {
        Self::serve(
            tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind test loki"),
            Limits::default(),
        )
    }

    fn serve(listener: tokio::net::TcpListener, limits: Limits) -> TestLoki {
        let addr = listener.local_addr().expect("address");
        let loki =
            TestLoki { addr, state: Arc::default(), limits: Arc::new(Mutex::new(limits)), pushes: Arc::default() };
        let server = loki.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let server = server.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let server = server.clone();
                        async move { Ok::<_, std::convert::Infallible>(server.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        loki
    }

    pub fn url(&self) -> String {
        format!("http://{}/loki/api/v1/push", self.addr)
    }

    /// Answers for the next pushes, in order.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.state.lock().script.extend(answers);
    }

    /// The answer once the script is used up (`None`: accept).
    pub fn set_default(&self, answer: Option<Answer>) {
        self.state.lock().default_answer = answer;
    }

    pub fn stored(&self) -> Vec<Stored> {
        self.state.lock().stored.clone()
    }

    pub fn stored_count(&self) -> usize {
        self.state.lock().stored.len()
    }

    /// Entries received again and dropped as exact duplicates, as Loki does.
    pub fn duplicates(&self) -> usize {
        self.state.lock().duplicates
    }

    /// A few of the duplicates, for failure messages.
    pub fn duplicate_samples(&self) -> Vec<String> {
        self.state.lock().duplicate_samples.clone()
    }

    pub fn rejections(&self) -> Vec<String> {
        self.state.lock().rejections.clone()
    }

    /// Push requests received (whatever the answer).
    pub fn pushes(&self) -> usize {
        self.pushes.load(Ordering::SeqCst)
    }

    /// Waits until `n` entries are stored (or panics after `timeout`).
    pub async fn wait_for(&self, n: usize, timeout: Duration) {
        assert!(
            self.reached(n, timeout).await,
            "test loki: {} of {n} entries after {timeout:?}; rejections: {:?}",
            self.stored_count(),
            self.rejections()
        );
    }

    /// Waits until `n` entries are stored; false when `timeout` passed first.
    pub async fn reached(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.stored_count() < n {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    fn next_answer(&self) -> Answer {
        let mut state = self.state.lock();
        state.script.pop_front().or_else(|| state.default_answer.clone()).unwrap_or(Answer::Accept)
    }

    async fn handle(&self, req: http::Request<Incoming>) -> Response<Full<Bytes>> {
        let reply = |status: u16, body: String| {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() = StatusCode::from_u16(status).expect("status");
            r
        };
        if req.method() != http::Method::POST || req.uri().path() != "/loki/api/v1/push" {
            return reply(404, "404 page not found\n".into());
        }
        self.pushes.fetch_add(1, Ordering::SeqCst);
        let tenant = req.headers().get("X-Scope-OrgID").and_then(|v| v.to_str().ok()).map(str::to_string);
        let content_type =
            req.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return reply(400, format!("reading body: {e}")),
        };
        match self.next_answer() {
            Answer::Hang => {
                std::future::pending::<()>().await;
                unreachable!()
            }
            Answer::Status(code, retry_after) => {
                let mut r = reply(code, format!("scripted {code}"));
                if let Some(s) = retry_after {
                    r.headers_mut().insert(
                        http::header::RETRY_AFTER,
                        http::HeaderValue::from_str(&s.to_string()).expect("header"),
                    );
                }
                return r;
            }
            Answer::Accept => {}
        }
        if content_type.starts_with("application/json") {
            return reply(400, "the test Loki only decodes protobuf pushes".into());
        }
        let raw = match snap::raw::Decoder::new().decompress_vec(&body) {
            Ok(r) => r,
            Err(_) => return self.reject(reply, "snappy: corrupt input".into()),
        };
        let push = match logproto::PushRequest::decode(&raw[..]) {
            Ok(p) => p,
            Err(e) => return self.reject(reply, format!("proto: {e}")),
        };
        self.state.lock().bodies += 1;
        self.store(push, tenant, reply)
    }

    fn reject(&self, reply: impl Fn(u16, String) -> Response<Full<Bytes>>, why: String) -> Response<Full<Bytes>> {
        self.state.lock().rejections.push(why.clone());
        reply(400, why)
    }

    fn store(
        &self,
        push: logproto::PushRequest,
        tenant: Option<String>,
        reply: impl Fn(u16, String) -> Response<Full<Bytes>>,
    ) -> Response<Full<Bytes>> {
        let limits = self.limits.lock().clone();
        let now = now_nanos();
        let mut errors = Vec::new();
        let mut state = self.state.lock();
        for stream in push.streams {
            let labels = match parse_labels(&stream.labels) {
                Ok(l) => l,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            if labels.is_empty() {
                errors.push("error at least one label pair is required per stream".into());
                continue;
            }
            if labels.len() > limits.max_label_names {
                errors.push(format!("max_label_names_per_series: {} > {}", labels.len(), limits.max_label_names));
                continue;
            }
            if let Some((n, _)) = labels.iter().find(|(n, v)| n.len() > 1024 || v.len() > 2048 || n.starts_with("__")) {
                errors.push(format!("invalid label {n}"));
                continue;
            }
            if stream.entries.is_empty() {
                errors.push(format!("stream {} has no entries", stream.labels));
                continue;
            }
            for e in stream.entries {
                let ts = e.timestamp.map(|t| t.seconds * 1_000_000_000 + i64::from(t.nanos)).unwrap_or(0);
                if e.line.len() > limits.max_line_size {
                    errors.push(format!("line_too_long: {} bytes", e.line.len()));
                    continue;
                }
                if ts > now + 10 * 60 * 1_000_000_000 {
                    errors.push("timestamp too new".into());
                    continue;
                }
                if ts < now - 7 * 24 * 3600 * 1_000_000_000 {
                    errors.push("timestamp too old".into());
                    continue;
                }
                if !e.structured_metadata.is_empty() && !limits.structured_metadata {
                    errors.push("structured metadata is not allowed".into());
                    continue;
                }
                let newest = state.newest.entry(stream.labels.clone()).or_insert(i64::MIN);
                if limits.ordered && ts < *newest {
                    errors.push(format!("entry out of order for stream {}", stream.labels));
                    continue;
                }
                if *newest != i64::MIN && ts < *newest - 3600 * 1_000_000_000 {
                    errors.push(format!("entry too far behind for stream {}", stream.labels));
                    continue;
                }
                *newest = (*newest).max(ts);
                let identity = (
                    stream.labels.clone(),
                    ts,
                    e.line.clone(),
                    e.structured_metadata.iter().map(|p| (p.name.clone(), p.value.clone())).collect(),
                );
                if !state.seen.insert(identity) {
                    state.duplicates += 1;
                    if state.duplicate_samples.len() < 5 {
                        let sample = format!("{} {} {:.120}", stream.labels, ts, String::from_utf8_lossy(&e.line));
                        state.duplicate_samples.push(sample);
                    }
                    continue;
                }
                let metadata = e
                    .structured_metadata
                    .iter()
                    .map(|p| (p.name.clone(), String::from_utf8_lossy(&p.value).into_owned()))
                    .collect();
                state.stored.push(Stored {
                    labels: labels.clone(),
                    timestamp: ts,
                    line: String::from_utf8_lossy(&e.line).into_owned(),
                    metadata,
                    tenant: tenant.clone(),
                });
            }
        }
        if errors.is_empty() {
            return reply(204, String::new());
        }
        state.rejections.extend(errors.iter().cloned());
        drop(state);
        reply(400, errors.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_labels;

    #[test]
    fn label_strings() {
        let l = parse_labels(r#"{a="x", b="q\"uote\\ \n"}"#).unwrap();
        assert_eq!(l["b"], "q\"uote\\ \n");
        assert!(parse_labels(r#"{a="x", a="y"}"#).unwrap_err().contains("duplicate"));
        assert!(parse_labels(r#"{1a="x"}"#).is_err());
        assert!(parse_labels(r#"{a=x}"#).is_err());
        assert!(parse_labels("{}").unwrap().is_empty());
    }
}
