//! A fake kube-apiserver for the pods of one node: `GET /api/v1/pods` as a list and as a watch,
//! as strict as the real one for what a client of this node's pods uses, and stricter where a
//! mistake would cost a cluster: every request must carry `fieldSelector=spec.nodeName=<node>`.
//!
//! - Authentication: `Authorization: Bearer <token>` (the token of [`FakeKubeApi::kubeconfig`])
//!   or 401. Every error is a `Status` object (`kind: Status`, `status: Failure`, `reason`,
//!   `code`), as the API server writes it.
//! - List: a `PodList` with `metadata.resourceVersion`; pods without `kind`/`apiVersion` (as the
//!   server writes list items); `limit` and `continue` paginate (a `continue` token from before a
//!   compaction is 410 `Expired`), `resourceVersion` with `continue` is 400, as is
//!   `resourceVersionMatch` without `resourceVersion`; unknown query parameters are 400.
//! - Watch (`watch=true` or `1`): newline-delimited `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR",
//!   "object":{...}}` events after the `resourceVersion` asked for, with increasing
//!   resourceVersions, ended after `timeoutSeconds`; a resourceVersion older than the last
//!   [`FakeKubeApi::compact`] gets an `ERROR` event with a 410 `Expired` status. A pod moving onto
//!   or off the node is `ADDED`/`DELETED` to the watch, as the server filters by field.
//! - Modes: serving, refusing with 403 (RBAC) or 401 (token revoked), or down (the port closed,
//!   open watches cut).

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Serve,
    /// 403: the service account may not list pods.
    Forbidden,
    /// 401: the token is not accepted any more.
    Unauthorized,
    /// The port is closed and open watches are cut.
    Down,
}

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub status: u16,
    pub watch: bool,
}

/// A pod as tests write it; [`FakeKubeApi::add_pod`] makes the full object.
#[derive(Debug, Clone)]
pub struct PodSpec<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    pub node: &'a str,
    pub labels: &'a [(&'a str, &'a str)],
    pub annotations: &'a [(&'a str, &'a str)],
    /// The controlling owner: (kind, name).
    pub owner: Option<(&'a str, &'a str)>,
}

struct Event {
    rv: u64,
    kind: &'static str,
    object: Value,
}

struct State {
    rv: u64,
    /// Every pod of the cluster by uid, with `kind`/`apiVersion`.
    pods: BTreeMap<String, Value>,
    /// What a watch on this node's pods sees, oldest first.
    events: Vec<Event>,
    /// Resource versions older than this one are compacted: watching or continuing from them is 410.
    compacted: u64,
    mode: Mode,
    requests: Vec<Recorded>,
    open_watches: usize,
    /// The newest resourceVersion written to any watch.
    delivered: u64,
}

struct Inner {
    node: String,
    token: String,
    state: Mutex<State>,
    changes: tokio::sync::watch::Sender<()>,
    accept: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[derive(Clone)]
pub struct FakeKubeApi {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code
    })
}

type Body = BoxBody<Bytes, Infallible>;

fn json_response(code: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).expect("status"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .expect("response")
}

fn matches_node(pod: &Value, node: &str) -> bool {
    pod["spec"]["nodeName"].as_str() == Some(node)
}

/// A list item: the server leaves `kind` and `apiVersion` to the list.
fn list_item(pod: &Value) -> Value {
    let mut item = pod.clone();
    if let Some(o) = item.as_object_mut() {
        o.remove("kind");
        o.remove("apiVersion");
    }
    item
}

const KNOWN_PARAMETERS: &[&str] = &[
    "fieldSelector",
    "labelSelector",
    "limit",
    "continue",
    "resourceVersion",
    "resourceVersionMatch",
    "watch",
    "timeoutSeconds",
    "allowWatchBookmarks",
    "sendInitialEvents",
];

impl FakeKubeApi {
    /// A server for the pods of `node`, accepting `token`.
    pub async fn start(node: &str, token: &str) -> FakeKubeApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fake kube api");
        let addr = listener.local_addr().expect("address");
        let api = FakeKubeApi {
            addr,
            inner: Arc::new(Inner {
                node: node.to_string(),
                token: token.to_string(),
                state: Mutex::new(State {
                    rv: 1000,
                    pods: BTreeMap::new(),
                    events: Vec::new(),
                    compacted: 0,
                    mode: Mode::Serve,
                    requests: Vec::new(),
                    open_watches: 0,
                    delivered: 0,
                }),
                changes: tokio::sync::watch::channel(()).0,
                accept: Mutex::new(None),
            }),
        };
        api.serve(listener);
        api
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let api = self.clone();
        // The connections belong to the accept task: aborting it (mode `Down`) closes them all,
        // as a stopped API server would.
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                while connections.try_join_next().is_some() {}
                let api = api.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| {
                        let api = api.clone();
                        async move { Ok::<_, Infallible>(api.handle(req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        if let Some(old) = self.inner.accept.lock().replace(task) {
            old.abort();
        }
    }

    /// Writes a kubeconfig for this server into `dir` (with `token`, the right one or not).
    pub fn kubeconfig_with(&self, dir: &Path, token: &str) -> PathBuf {
        let path = dir.join("kubeconfig.yaml");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: sluice\ncurrent-context: fake\nusers:\n- name: sluice\n  user:\n    token: {token}\n",
            self.addr
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        self.kubeconfig_with(dir, &self.inner.token)
    }

    /// Switches how the server answers; `Down` closes the port, leaving it reopens it.
    pub async fn set_mode(&self, mode: Mode) {
        let was = std::mem::replace(&mut self.inner.state.lock().mode, mode);
        self.inner.changes.send_replace(());
        if mode == Mode::Down
            && was != Mode::Down
            && let Some(task) = self.inner.accept.lock().take()
        {
            task.abort();
        }
        if was == Mode::Down && mode != Mode::Down {
            let listener = tokio::net::TcpListener::bind(self.addr).await.expect("bind the fake kube api again");
            self.serve(listener);
        }
    }

    fn record_event(s: &mut State, kind: &'static str, object: Value) -> u64 {
        let rv = s.rv;
        s.events.push(Event { rv, kind, object });
        rv
    }

    /// Stores `pod` (a full object) at a new resourceVersion; returns it.
    fn store(&self, uid: &str, pod: Option<Value>) -> u64 {
        let mut s = self.inner.state.lock();
        s.rv += 1;
        let rv = s.rv;
        let node = &self.inner.node;
        let before = s.pods.get(uid).cloned();
        let was = before.as_ref().is_some_and(|p| matches_node(p, node));
        match pod {
            Some(mut pod) => {
                pod["metadata"]["resourceVersion"] = json!(rv.to_string());
                let is = matches_node(&pod, node);
                s.pods.insert(uid.to_string(), pod.clone());
                match (was, is) {
                    (false, true) => Self::record_event(&mut s, "ADDED", pod),
                    (true, true) => Self::record_event(&mut s, "MODIFIED", pod),
                    (true, false) => Self::record_event(&mut s, "DELETED", pod),
                    (false, false) => rv,
                };
            }
            None => {
                if let Some(mut pod) = s.pods.remove(uid) {
                    pod["metadata"]["resourceVersion"] = json!(rv.to_string());
                    if was {
                        Self::record_event(&mut s, "DELETED", pod);
                    }
                }
            }
        }
        drop(s);
        self.inner.changes.send_replace(());
        rv
    }

    /// Creates a pod; returns its resourceVersion.
    pub fn add_pod(&self, spec: &PodSpec<'_>) -> u64 {
        let labels: serde_json::Map<String, Value> =
            spec.labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
        let annotations: serde_json::Map<String, Value> =
            spec.annotations.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
        let mut metadata = json!({
            "name": spec.name,
            "namespace": spec.namespace,
            "uid": spec.uid,
            "creationTimestamp": "2026-11-24T22:28:35Z",
            "labels": labels,
            "annotations": annotations,
        });
        if let Some((kind, name)) = spec.owner {
            metadata["ownerReferences"] = json!([{
                "apiVersion": "apps/v1", "kind": kind, "name": name, "uid": format!("owner-{name}"),
                "controller": true, "blockOwnerDeletion": true
            }]);
        }
        let pod = json!({
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": metadata,
            "spec": {
                "nodeName": spec.node,
                "containers": [{"name": "app", "image": "registry.example/app:1.0"}],
                "serviceAccountName": "default"
            },
            "status": {"phase": "Running", "podIP": "10.1.2.3", "hostIP": "192.168.1.10"}
        });
        self.store(spec.uid, Some(pod))
    }

    /// Replaces a pod's labels; returns the new resourceVersion.
    pub fn set_labels(&self, uid: &str, labels: &[(&str, &str)]) -> u64 {
        let mut pod = self.inner.state.lock().pods.get(uid).cloned().expect("no such pod");
        pod["metadata"]["labels"] = labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
        self.store(uid, Some(pod))
    }

    pub fn delete_pod(&self, uid: &str) -> u64 {
        self.store(uid, None)
    }

    /// Sends a `BOOKMARK` at the current resourceVersion to the watches.
    pub fn bookmark(&self) {
        let mut s = self.inner.state.lock();
        s.rv += 1;
        let rv = s.rv;
        let object = json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": rv.to_string()}});
        Self::record_event(&mut s, "BOOKMARK", object);
        drop(s);
        self.inner.changes.send_replace(());
    }

    /// Forgets the history: watches from an older resourceVersion get 410 and must list again;
    /// the open ones are told so.
    pub fn compact(&self) {
        let mut s = self.inner.state.lock();
        s.rv += 1;
        s.compacted = s.rv;
        drop(s);
        self.inner.changes.send_replace(());
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.state.lock().requests.clone()
    }

    pub fn open_watches(&self) -> usize {
        self.inner.state.lock().open_watches
    }

    /// The newest resourceVersion written to a watch.
    pub fn delivered(&self) -> u64 {
        self.inner.state.lock().delivered
    }

    /// Waits until a watch is open and has been sent everything up to `rv`.
    pub async fn wait_delivered(&self, rv: u64, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            {
                let s = self.inner.state.lock();
                if s.open_watches > 0 && s.delivered >= rv {
                    return;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "no watch received resourceVersion {rv}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn handle(&self, req: hyper::Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let query: BTreeMap<String, String> =
            req.uri().query().map(form_urlencoded_pairs).unwrap_or_default().into_iter().collect();
        let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
        let (code, response) = self.answer(&req, &path, &query, watch);
        self.inner.state.lock().requests.push(Recorded { path, query, status: code, watch });
        response
    }

    fn answer(
        &self,
        req: &hyper::Request<Incoming>,
        path: &str,
        query: &BTreeMap<String, String>,
        watch: bool,
    ) -> (u16, Response<Body>) {
        let refuse =
            |code: u16, reason: &str, message: &str| (code, json_response(code, &status(code, reason, message)));
        let bearer = format!("Bearer {}", self.inner.token);
        let authorized = req.headers().get("authorization").and_then(|v| v.to_str().ok()) == Some(bearer.as_str());
        let mode = self.inner.state.lock().mode;
        if !authorized || mode == Mode::Unauthorized {
            return refuse(401, "Unauthorized", "Unauthorized");
        }
        if req.method() != http::Method::GET || path != "/api/v1/pods" {
            return refuse(404, "NotFound", "the server could not find the requested resource");
        }
        if mode == Mode::Forbidden {
            let verb = if watch { "watch" } else { "list" };
            return refuse(
                403,
                "Forbidden",
                &format!(
                    "pods is forbidden: User \"system:serviceaccount:observability:sluice\" cannot {verb} resource \"pods\" in API group \"\" at the cluster scope"
                ),
            );
        }
        if let Some(unknown) = query.keys().find(|k| !KNOWN_PARAMETERS.contains(&k.as_str())) {
            return refuse(400, "BadRequest", &format!("unknown query parameter {unknown:?}"));
        }
        let wanted = format!("spec.nodeName={}", self.inner.node);
        if query.get("fieldSelector") != Some(&wanted) {
            return refuse(
                400,
                "BadRequest",
                &format!("this test API serves only fieldSelector={wanted}, got {:?}", query.get("fieldSelector")),
            );
        }
        if query.contains_key("resourceVersionMatch") && !query.contains_key("resourceVersion") {
            return refuse(400, "BadRequest", "resourceVersionMatch is forbidden unless resourceVersion is provided");
        }
        if query.contains_key("continue") && query.get("resourceVersion").is_some_and(|v| !v.is_empty()) {
            return refuse(400, "BadRequest", "specifying resource version is not allowed when using continue");
        }
        let number = |name: &str| -> Result<Option<u64>, String> {
            query
                .get(name)
                .filter(|v| !v.is_empty())
                .map(|v| v.parse::<u64>().map_err(|_| format!("invalid {name} {v:?}")))
                .transpose()
        };
        let (rv, limit, timeout) = match (number("resourceVersion"), number("limit"), number("timeoutSeconds")) {
            (Ok(rv), Ok(limit), Ok(timeout)) => (rv, limit, timeout),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return refuse(400, "BadRequest", &e),
        };
        if watch {
            return (200, self.watch(rv, timeout.map(Duration::from_secs)));
        }
        self.list(query.get("continue").map(String::as_str), limit)
            .unwrap_or_else(|(code, reason, message)| refuse(code, reason, &message))
    }

    fn list(
        &self,
        cont: Option<&str>,
        limit: Option<u64>,
    ) -> Result<(u16, Response<Body>), (u16, &'static str, String)> {
        let s = self.inner.state.lock();
        let (list_rv, offset) = match cont {
            None => (s.rv, 0usize),
            Some(token) => {
                let (rv, offset) = token
                    .split_once(':')
                    .and_then(|(rv, o)| Some((rv.parse::<u64>().ok()?, o.parse::<usize>().ok()?)))
                    .ok_or((400, "BadRequest", format!("invalid continue token {token:?}")))?;
                if rv < s.compacted {
                    return Err((410, "Expired", "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.".into()));
                }
                (rv, offset)
            }
        };
        // The pods as they were at `list_rv` would need history; the test lists are short.
        let mine: Vec<Value> = s.pods.values().filter(|p| matches_node(p, &self.inner.node)).map(list_item).collect();
        let end = match limit {
            Some(l) if l > 0 => (offset + l as usize).min(mine.len()),
            _ => mine.len(),
        };
        let mut metadata = json!({"resourceVersion": list_rv.to_string()});
        if end < mine.len() {
            metadata["continue"] = json!(format!("{list_rv}:{end}"));
            metadata["remainingItemCount"] = json!(mine.len() - end);
        }
        let items: Vec<Value> = mine.get(offset..end).map(<[Value]>::to_vec).unwrap_or_default();
        let body = json!({"kind": "PodList", "apiVersion": "v1", "metadata": metadata, "items": items});
        Ok((200, json_response(200, &body)))
    }

    fn watch(&self, from: Option<u64>, timeout: Option<Duration>) -> Response<Body> {
        let inner = Arc::clone(&self.inner);
        let deadline = tokio::time::Instant::now() + timeout.unwrap_or(Duration::from_secs(3600));
        {
            let mut s = inner.state.lock();
            s.open_watches += 1;
        }
        // Without a resourceVersion (or 0), the watch starts with the pods there are now.
        let mut initial: Vec<Bytes> = Vec::new();
        let start = match from {
            Some(rv) if rv > 0 => rv,
            _ => {
                let s = inner.state.lock();
                for pod in s.pods.values().filter(|p| matches_node(p, &inner.node)) {
                    initial.push(Bytes::from(format!("{}\n", json!({"type": "ADDED", "object": pod}))));
                }
                s.rv
            }
        };
        struct Watch {
            inner: Arc<Inner>,
            last: u64,
            initial: std::vec::IntoIter<Bytes>,
            deadline: tokio::time::Instant,
            done: bool,
        }
        impl Drop for Watch {
            fn drop(&mut self) {
                self.inner.state.lock().open_watches -= 1;
            }
        }
        let watch = Watch { inner, last: start, initial: initial.into_iter(), deadline, done: false };
        let stream = futures_util::stream::unfold(watch, |mut w| async move {
            if w.done {
                return None;
            }
            if let Some(line) = w.initial.next() {
                return Some((Ok::<_, Infallible>(Frame::data(line)), w));
            }
            loop {
                let mut changes = w.inner.changes.subscribe();
                let line = {
                    let mut s = w.inner.state.lock();
                    if s.mode == Mode::Down {
                        return None;
                    }
                    if w.last < s.compacted {
                        w.done = true;
                        let expired =
                            status(410, "Expired", &format!("too old resource version: {} ({})", w.last, s.compacted));
                        Some(format!("{}\n", json!({"type": "ERROR", "object": expired})))
                    } else if let Some(e) = s.events.iter().find(|e| e.rv > w.last) {
                        let (rv, line) = (e.rv, format!("{}\n", json!({"type": e.kind, "object": e.object})));
                        w.last = rv;
                        s.delivered = s.delivered.max(rv);
                        Some(line)
                    } else {
                        None
                    }
                };
                if let Some(line) = line {
                    return Some((Ok(Frame::data(Bytes::from(line))), w));
                }
                tokio::select! {
                    _ = changes.changed() => {}
                    _ = tokio::time::sleep_until(w.deadline) => return None,
                }
            }
        });
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .header("transfer-encoding", "chunked")
            .body(StreamBody::new(stream).boxed())
            .expect("response")
    }
}

/// `a=b&c=d%3De` → pairs, percent-decoded (`+` is a space).
fn form_urlencoded_pairs(query: &str) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let hex = |b: u8| (b as char).to_digit(16);
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                },
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}
