//! Pod metadata from the Kubernetes API for the `files` source, and the labels of a kubelet path.
//!
//! Contract:
//! - With `kubernetes.api: true`, one watch per source: a list, then a watch, of the pods with
//!   `fieldSelector=spec.nodeName=<kubernetes.node>` (never the whole cluster), with the client
//!   from `kubernetes.kubeconfig`, else `KUBECONFIG` or `~/.kube/config`, else the pod's service
//!   account. The cache keeps, per pod uid, only what labels need ([`PodMeta`]); a static pod is
//!   found by the uid of its files too (its mirror pod's `kubernetes.io/config.mirror`). Deleted
//!   pods stay [`DELETED_KEPT`] for files found late.
//! - The labels of a kubelet path (`<namespace>_<pod>_<uid>/<container>/N.log`) are fixed when
//!   its task starts: the source's labels, `namespace`, `pod`, `container`, `node` and the meta
//!   labels below go through `kubernetes.relabel_configs`; the names not starting with `__` are
//!   the stream labels (plus `stream`). The pod uid is structured metadata (`pod_uid`). A pod
//!   label changed later applies to files started later only.
//! - Meta labels, as Prometheus' `kubernetes_sd_configs` (role `pod`) names them:
//!   `__meta_kubernetes_namespace`, `__meta_kubernetes_pod_name`, `__meta_kubernetes_pod_uid`,
//!   `__meta_kubernetes_pod_node_name`, `__meta_kubernetes_pod_container_name`,
//!   `__meta_kubernetes_pod_label_<name>` and `__meta_kubernetes_pod_labelpresent_<name>`,
//!   `__meta_kubernetes_pod_annotation_<name>` and `..._annotationpresent_<name>` (names with
//!   every character outside `[a-zA-Z0-9_]` made `_`), `__meta_kubernetes_pod_controller_kind`
//!   and `__meta_kubernetes_pod_controller_name`. The first five come from the path, so they are
//!   there without the API too.
//! - A path whose pod is not in the cache waits for it up to `kubernetes.wait_for_pod`, then goes
//!   on with what its path says, counted in `sluice_files_pod_metadata_missing_total`. While the
//!   cache has never synced (API unreachable, refused, no credentials) nothing waits. Without the
//!   pod's metadata the `keep` and `drop` rules are not applied: a file is left out only on what
//!   its pod says, never because the API could not be asked.
//! - A target a rule drops is a file not shipped (`sluice_files_dropped_by_relabel_total`).
//! - A failed list or watch is logged once per attempt (error for the first of a series, then
//!   warn), attempts spaced by an exponential backoff from 1 s to 30 s, and counted in
//!   `sluice_files_kubernetes_api_errors_total{source, reason}`.

use super::discover::PodPath;
use super::tailer::FileLabels;
use crate::event::labels::sanitize_name;
use crate::relabel::{Labels, Relabeler};
use crate::telemetry::metrics::SourceReason;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a deleted pod stays in the cache.
pub const DELETED_KEPT: Duration = Duration::from_secs(60);
/// Annotations never kept: too big to be a label, and not about the pod.
const SKIPPED_ANNOTATIONS: &[&str] = &["kubectl.kubernetes.io/last-applied-configuration"];
/// The mirror pod of a static pod carries the uid its files are written under.
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What the labels of a pod's files need from the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodMeta {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The owner reference marked `controller`: (kind, name).
    pub controller: Option<(String, String)>,
}

impl PodMeta {
    /// `None` for a pod without a uid (never from a real API server).
    pub fn from_pod(pod: &Pod) -> Option<PodMeta> {
        let m = &pod.metadata;
        let uid = m.uid.clone().filter(|u| !u.is_empty())?;
        let mut annotations = m.annotations.clone().unwrap_or_default();
        annotations.retain(|k, _| !SKIPPED_ANNOTATIONS.contains(&k.as_str()));
        Some(PodMeta {
            namespace: m.namespace.clone().unwrap_or_default(),
            name: m.name.clone().unwrap_or_default(),
            uid,
            node: pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default(),
            labels: m.labels.clone().unwrap_or_default(),
            annotations,
            controller: m
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true))
                .map(|o| (o.kind.clone(), o.name.clone())),
        })
    }

    /// The uid the kubelet writes this pod's files under, when it differs from the pod's own.
    fn file_uid(&self) -> Option<&str> {
        self.annotations.get(MIRROR_ANNOTATION).map(String::as_str).filter(|u| !u.is_empty() && *u != self.uid)
    }
}

/// What the cache says about a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found(Arc<PodMeta>),
    /// Not there within the wait, or the cache never synced.
    Missing,
}

#[derive(Default)]
struct CacheState {
    /// By the uid of the pod's files (its own, or its mirror annotation's).
    pods: HashMap<String, Arc<PodMeta>>,
    /// The pods of a list in progress; they replace `pods` when it completes.
    listing: Option<HashMap<String, Arc<PodMeta>>>,
    /// Deleted pods, oldest first, removed from `pods` after [`DELETED_KEPT`].
    deleted: VecDeque<(Instant, Arc<PodMeta>)>,
    synced: bool,
}

impl CacheState {
    fn insert_into(map: &mut HashMap<String, Arc<PodMeta>>, meta: &Arc<PodMeta>) {
        map.insert(meta.uid.clone(), Arc::clone(meta));
        if let Some(uid) = meta.file_uid() {
            map.insert(uid.to_string(), Arc::clone(meta));
        }
    }

    /// Pods held, each once (a static pod is also held under the uid of its files).
    fn pod_count(&self) -> usize {
        self.pods.iter().filter(|(uid, meta)| **uid == meta.uid).count()
    }

    fn remove(&mut self, meta: &PodMeta) {
        let same = |p: &Arc<PodMeta>| p.uid == meta.uid;
        if self.pods.get(&meta.uid).is_some_and(same) {
            self.pods.remove(&meta.uid);
        }
        if let Some(uid) = meta.file_uid()
            && self.pods.get(uid).is_some_and(same)
        {
            self.pods.remove(uid);
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.deleted.front() {
            if now.duration_since(*at) < DELETED_KEPT {
                break;
            }
            if let Some((_, meta)) = self.deleted.pop_front() {
                self.remove(&meta);
            }
        }
    }
}

/// The pods of this node, as the watch last saw them.
pub struct PodCache {
    state: Mutex<CacheState>,
    /// Bumped on every change, for the paths waiting for their pod.
    changed: tokio::sync::watch::Sender<()>,
    size: Gauge,
}

impl PodCache {
    pub fn new(size: Gauge) -> Arc<PodCache> {
        Arc::new(PodCache { state: Mutex::default(), changed: tokio::sync::watch::channel(()).0, size })
    }

    /// Whether a complete list has been had at least once.
    pub fn synced(&self) -> bool {
        self.state.lock().synced
    }

    /// Pods held (deleted ones kept for late files included; a static pod counts once).
    pub fn len(&self) -> usize {
        self.state.lock().pod_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, uid: &str) -> Option<Arc<PodMeta>> {
        self.state.lock().pods.get(uid).cloned()
    }

    /// The pod of `uid`, waiting up to `limit` for it when the cache has synced once.
    pub async fn wait_for(&self, uid: &str, limit: Duration) -> Lookup {
        let mut changes = self.changed.subscribe();
        let deadline = Instant::now() + limit;
        loop {
            {
                let s = self.state.lock();
                if let Some(meta) = s.pods.get(uid) {
                    return Lookup::Found(Arc::clone(meta));
                }
                if !s.synced {
                    return Lookup::Missing;
                }
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return Lookup::Missing,
            }
        }
    }

    fn changed(&self, s: &CacheState) {
        self.size.set(i64::try_from(s.pod_count()).unwrap_or(i64::MAX));
        self.changed.send_replace(());
    }

    /// Applies one event of the watch.
    pub fn apply(&self, event: watcher::Event<Pod>) {
        let now = Instant::now();
        let mut s = self.state.lock();
        s.expire(now);
        match event {
            watcher::Event::Init => s.listing = Some(HashMap::new()),
            watcher::Event::InitApply(pod) => {
                let Some(meta) = PodMeta::from_pod(&pod).map(Arc::new) else { return };
                // Visible at once to the paths waiting; the complete list replaces the rest.
                CacheState::insert_into(&mut s.pods, &meta);
                if let Some(listing) = s.listing.as_mut() {
                    CacheState::insert_into(listing, &meta);
                }
            }
            watcher::Event::InitDone => {
                if let Some(listing) = s.listing.take() {
                    s.pods = listing;
                }
                s.deleted.clear();
                s.synced = true;
            }
            watcher::Event::Apply(pod) => {
                let Some(meta) = PodMeta::from_pod(&pod).map(Arc::new) else { return };
                CacheState::insert_into(&mut s.pods, &meta);
            }
            watcher::Event::Delete(pod) => {
                let Some(meta) = PodMeta::from_pod(&pod).map(Arc::new) else { return };
                // Kept a while for its files found late; a relist forgets it.
                CacheState::insert_into(&mut s.pods, &meta);
                s.deleted.push_back((now, meta));
            }
        }
        self.changed(&s);
    }
}

/// Where the watch gets its client and what it reports to.
pub struct WatchSettings {
    pub source: String,
    pub node: String,
    pub kubeconfig: Option<PathBuf>,
    pub errors: Family<SourceReason, Counter>,
}

async fn client(kubeconfig: Option<&PathBuf>) -> Result<kube::Client, String> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path).map_err(|e| format!("{e}"))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| format!("{e}"))?
        }
        None => kube::Config::infer().await.map_err(|e| format!("{e}"))?,
    };
    kube::Client::try_from(config).map_err(|e| format!("{e}"))
}

/// `(reason, hint)` of a failed attempt, `reason` for the metric.
fn classify(e: &watcher::Error) -> (&'static str, &'static str) {
    let by_status = |code: u16| match code {
        401 => ("unauthorized", "the API refused the credentials (service account token or kubeconfig)"),
        403 => ("forbidden", "the service account needs get, list and watch on pods (deploy/kubernetes/rbac.yaml)"),
        _ => ("refused", "the API answered with an error"),
    };
    let client = match e {
        watcher::Error::InitialListFailed(c) | watcher::Error::WatchStartFailed(c) | watcher::Error::WatchFailed(c) => {
            c
        }
        watcher::Error::WatchError(status) => return by_status(status.code),
        watcher::Error::NoResourceVersion => return ("invalid_response", "the API sent no resourceVersion"),
    };
    match client {
        kube::Error::Api(status) => by_status(status.code),
        kube::Error::SerdeError(_) => ("invalid_response", "the API's answer did not parse"),
        _ => ("unreachable", "the API could not be reached"),
    }
}

/// Follows the pods of `settings.node` into `cache` until cancelled, retrying with backoff.
pub async fn watch(cache: Arc<PodCache>, settings: WatchSettings, cancel: CancellationToken) {
    let WatchSettings { source, node, kubeconfig, errors } = settings;
    let fields = format!("spec.nodeName={node}");
    let mut backoff = BACKOFF_MIN;
    let mut failing = false;
    let count = |reason: &str| {
        errors.get_or_create(&SourceReason { source: source.clone(), reason: reason.to_string() }).inc();
    };
    let pause = |backoff: Duration| {
        let jitter = 0.8 + 0.4 * rand::random::<f64>();
        backoff.mul_f64(jitter)
    };
    'connect: loop {
        let client = match client(kubeconfig.as_ref()).await {
            Ok(c) => c,
            Err(e) => {
                count("config");
                let retry = pause(backoff);
                let hint = "no kubeconfig and not running in a pod with a service account";
                if failing {
                    tracing::warn!(source = %source, node = %node, reason = "config", error = %e, retry_in_ms = retry.as_millis() as u64, "kubernetes api: no client configuration; files are labeled from their paths only");
                } else {
                    tracing::error!(source = %source, node = %node, reason = "config", error = %e, hint, retry_in_ms = retry.as_millis() as u64, "kubernetes api: no client configuration; files are labeled from their paths only");
                }
                failing = true;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(retry) => continue 'connect,
                }
            }
        };
        // resourceVersion=0 for lists: served from the API server's cache, not etcd (every
        // node's agent lists at once after a rollout). The API server ignores `limit` then,
        // and kube leaves resourceVersion out when a page size is set: no pages.
        let mut config = watcher::Config::default().fields(&fields).any_semantic();
        config.page_size = None;
        let stream = watcher::watcher(kube::Api::<Pod>::all(client), config);
        let mut stream = std::pin::pin!(stream);
        loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => return,
                next = stream.next() => next,
            };
            match next {
                None => continue 'connect,
                Some(Ok(event)) => {
                    let done = matches!(event, watcher::Event::InitDone);
                    let progress = !matches!(event, watcher::Event::Init | watcher::Event::InitApply(_));
                    let first_sync = done && !cache.synced();
                    cache.apply(event);
                    if done && (first_sync || failing) {
                        tracing::info!(source = %source, node = %node, pods = cache.len(), "kubernetes api: pod metadata synced");
                    }
                    if progress {
                        failing = false;
                        backoff = BACKOFF_MIN;
                    }
                }
                Some(Err(e)) => {
                    let (reason, hint) = classify(&e);
                    if let watcher::Error::WatchError(status) = &e
                        && status.code == 410
                    {
                        // Too old a resourceVersion: the watcher lists again at once.
                        tracing::debug!(source = %source, "kubernetes api: watch expired, listing again");
                        continue;
                    }
                    count(reason);
                    let retry = pause(backoff);
                    let synced = cache.synced();
                    if failing {
                        tracing::warn!(source = %source, node = %node, reason, error = %e, retry_in_ms = retry.as_millis() as u64, "kubernetes api: still failing");
                    } else {
                        tracing::error!(source = %source, node = %node, reason, error = %e, hint, synced, retry_in_ms = retry.as_millis() as u64, "kubernetes api: cannot list or watch the pods of this node; new files get the labels of their paths only until it answers");
                    }
                    failing = true;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(retry) => {}
                    }
                }
            }
        }
    }
}

/// The labels of kubelet paths, for one source.
pub struct PodLabeler {
    /// The source's labels.
    pub base: Vec<(String, String)>,
    pub node: Option<String>,
    pub relabel: Relabeler,
    /// `relabel` without `keep` and `drop`, for pods whose metadata could not be had.
    pub without_filters: Relabeler,
    /// `None` without `api: true`.
    pub pods: Option<Arc<PodCache>>,
    pub wait: Duration,
    pub missing: Counter,
    pub dropped: Counter,
}

/// What a path's labels came to.
pub enum Labeled {
    Labels(FileLabels),
    /// A relabel rule dropped the file's target: it is not shipped.
    Dropped,
    Cancelled,
}

fn put(labels: &mut Labels, name: String, value: &str) {
    labels.retain(|(n, _)| *n != name);
    labels.push((name, value.to_string()));
}

impl PodLabeler {
    /// The labels before relabeling: the source's, the path's, and the pod's meta labels.
    pub fn targets(&self, path: &PodPath, pod: Option<&PodMeta>) -> Labels {
        let mut labels: Labels = Vec::with_capacity(self.base.len() + 12);
        for (n, v) in &self.base {
            put(&mut labels, n.clone(), v);
        }
        put(&mut labels, "namespace".into(), &path.namespace);
        put(&mut labels, "pod".into(), &path.pod);
        put(&mut labels, "container".into(), &path.container);
        if let Some(node) = &self.node {
            put(&mut labels, "node".into(), node);
        }
        put(&mut labels, "__meta_kubernetes_namespace".into(), &path.namespace);
        put(&mut labels, "__meta_kubernetes_pod_name".into(), &path.pod);
        put(&mut labels, "__meta_kubernetes_pod_uid".into(), &path.uid);
        put(&mut labels, "__meta_kubernetes_pod_container_name".into(), &path.container);
        let node = pod.map(|p| p.node.as_str()).filter(|n| !n.is_empty()).or(self.node.as_deref());
        if let Some(node) = node {
            put(&mut labels, "__meta_kubernetes_pod_node_name".into(), node);
        }
        let Some(pod) = pod else { return labels };
        for (k, v) in &pod.labels {
            if !v.is_empty() {
                labels.push((sanitize_name(&format!("__meta_kubernetes_pod_label_{k}")), v.clone()));
            }
            labels.push((sanitize_name(&format!("__meta_kubernetes_pod_labelpresent_{k}")), "true".into()));
        }
        for (k, v) in &pod.annotations {
            if !v.is_empty() {
                labels.push((sanitize_name(&format!("__meta_kubernetes_pod_annotation_{k}")), v.clone()));
            }
            labels.push((sanitize_name(&format!("__meta_kubernetes_pod_annotationpresent_{k}")), "true".into()));
        }
        if let Some((kind, name)) = &pod.controller {
            labels.push(("__meta_kubernetes_pod_controller_kind".into(), kind.clone()));
            labels.push(("__meta_kubernetes_pod_controller_name".into(), name.clone()));
        }
        // Two keys may sanitize to one name (`a.b` and `a_b`): the last wins, as Prometheus.
        let mut seen = std::collections::HashSet::new();
        let mut unique: Labels = labels.into_iter().rev().filter(|(n, _)| seen.insert(n.clone())).collect();
        unique.reverse();
        unique
    }

    /// The stream labels of a path after relabeling; `None` when a rule dropped it.
    /// `metadata_missing`: the pod was asked for and not found (`keep`/`drop` are skipped).
    pub fn relabeled(&self, path: &PodPath, pod: Option<&PodMeta>, metadata_missing: bool) -> Option<Labels> {
        let targets = self.targets(path, pod);
        let rules = if metadata_missing { &self.without_filters } else { &self.relabel };
        rules.apply(targets)
    }

    /// Resolves a path's labels, waiting for its pod when the API is asked (see the module docs).
    pub async fn labels(&self, path: &PodPath, cancel: &CancellationToken) -> Labeled {
        let (pod, missing) = match &self.pods {
            None => (None, false),
            Some(cache) => {
                let lookup = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return Labeled::Cancelled,
                    lookup = cache.wait_for(&path.uid, self.wait) => lookup,
                };
                match lookup {
                    Lookup::Found(meta) => (Some(meta), false),
                    Lookup::Missing => (None, true),
                }
            }
        };
        if missing {
            self.missing.inc();
            tracing::debug!(namespace = %path.namespace, pod = %path.pod, uid = %path.uid, "no metadata for this pod: labels from its path only");
        }
        match self.relabeled(path, pod.as_deref(), missing) {
            Some(labels) => Labeled::Labels(super::file_labels(&labels, &path.uid)),
            None => {
                self.dropped.inc();
                tracing::debug!(namespace = %path.namespace, pod = %path.pod, container = %path.container, "a relabel rule dropped this file: not shipped");
                Labeled::Dropped
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Located, parse_yaml_expanded};
    use crate::relabel::RelabelConfig;

    fn pod_json(uid: &str, name: &str, labels: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name, "namespace": "shop", "uid": uid, "resourceVersion": "7",
                "labels": labels,
                "annotations": {
                    "prometheus.io/scrape": "true",
                    "kubectl.kubernetes.io/last-applied-configuration": "{\"huge\":true}"
                },
                "ownerReferences": [
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-7d4b9c", "uid": "rs-1", "controller": true}
                ]
            },
            "spec": {"nodeName": "node-1", "containers": [{"name": "api"}]}
        }))
        .unwrap()
    }

    fn labeler(rules: &str, pods: Option<Arc<PodCache>>) -> PodLabeler {
        let configs: Vec<Located<RelabelConfig>> = parse_yaml_expanded(std::path::Path::new("r"), rules).unwrap();
        let k8s = super::super::config::KubernetesConfig { relabel_configs: configs, ..Default::default() };
        PodLabeler {
            base: vec![("job".into(), "pods".into())],
            node: Some("node-1".into()),
            relabel: Relabeler::compile(&k8s.relabel_configs).unwrap(),
            without_filters: Relabeler::compile(&k8s.relabel_without_filters()).unwrap(),
            pods,
            wait: Duration::from_secs(5),
            missing: Counter::default(),
            dropped: Counter::default(),
        }
    }

    fn path() -> PodPath {
        PodPath { namespace: "shop".into(), pod: "api-1".into(), uid: "u-1".into(), container: "api".into() }
    }

    fn sorted(mut l: Labels) -> Labels {
        l.sort();
        l
    }

    fn pairs(p: &[(&str, &str)]) -> Labels {
        sorted(p.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect())
    }

    const RULES: &str = "
- action: labelmap
  regex: __meta_kubernetes_pod_label_app_kubernetes_io_(.+)
- source_labels: [__meta_kubernetes_pod_controller_kind, __meta_kubernetes_pod_controller_name]
  separator: /
  target_label: owner
- source_labels: [__meta_kubernetes_pod_label_logging]
  regex: 'off'
  action: drop
";

    #[test]
    fn meta_labels_of_a_pod_and_relabeling() {
        let meta = PodMeta::from_pod(&pod_json(
            "u-1",
            "api-1",
            serde_json::json!({"app.kubernetes.io/name": "api", "app.kubernetes.io/part-of": "shop", "empty": ""}),
        ))
        .unwrap();
        assert!(!meta.annotations.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
        let l = labeler(RULES, None);
        let targets = sorted(l.targets(&path(), Some(&meta)));
        assert_eq!(
            targets,
            pairs(&[
                ("__meta_kubernetes_namespace", "shop"),
                ("__meta_kubernetes_pod_annotation_prometheus_io_scrape", "true"),
                ("__meta_kubernetes_pod_annotationpresent_prometheus_io_scrape", "true"),
                ("__meta_kubernetes_pod_container_name", "api"),
                ("__meta_kubernetes_pod_controller_kind", "ReplicaSet"),
                ("__meta_kubernetes_pod_controller_name", "api-7d4b9c"),
                ("__meta_kubernetes_pod_label_app_kubernetes_io_name", "api"),
                ("__meta_kubernetes_pod_label_app_kubernetes_io_part_of", "shop"),
                ("__meta_kubernetes_pod_labelpresent_app_kubernetes_io_name", "true"),
                ("__meta_kubernetes_pod_labelpresent_app_kubernetes_io_part_of", "true"),
                ("__meta_kubernetes_pod_labelpresent_empty", "true"),
                ("__meta_kubernetes_pod_name", "api-1"),
                ("__meta_kubernetes_pod_node_name", "node-1"),
                ("__meta_kubernetes_pod_uid", "u-1"),
                ("container", "api"),
                ("job", "pods"),
                ("namespace", "shop"),
                ("node", "node-1"),
                ("pod", "api-1"),
            ])
        );
        let out = l.relabeled(&path(), Some(&meta), false).unwrap();
        let visible: Labels = sorted(out.into_iter().filter(|(n, _)| !n.starts_with("__")).collect());
        assert_eq!(
            visible,
            pairs(&[
                ("container", "api"),
                ("job", "pods"),
                ("name", "api"),
                ("namespace", "shop"),
                ("node", "node-1"),
                ("owner", "ReplicaSet/api-7d4b9c"),
                ("part_of", "shop"),
                ("pod", "api-1"),
            ])
        );
    }

    #[test]
    fn a_drop_rule_drops_only_on_what_the_pod_says() {
        let l = labeler(RULES, None);
        let off = PodMeta::from_pod(&pod_json("u-1", "api-1", serde_json::json!({"logging": "off"}))).unwrap();
        assert_eq!(l.relabeled(&path(), Some(&off), false), None, "dropped on its label");
        let keep_only_on =
            labeler("- source_labels: [__meta_kubernetes_pod_label_logging]\n  regex: 'on'\n  action: keep\n", None);
        assert_eq!(keep_only_on.relabeled(&path(), None, false), None, "api off: the rules apply to the path");
        let kept = keep_only_on.relabeled(&path(), None, true).expect("metadata missing: keep is not applied");
        assert!(kept.contains(&("pod".to_string(), "api-1".to_string())));
    }

    #[tokio::test(start_paused = true)]
    async fn waits_for_a_pod_only_once_synced() {
        let cache = PodCache::new(Gauge::default());
        assert_eq!(cache.wait_for("u-1", Duration::from_secs(5)).await, Lookup::Missing, "never synced: no wait");
        cache.apply(watcher::Event::Init);
        cache.apply(watcher::Event::InitApply(pod_json("u-0", "a-0", serde_json::json!({}))));
        cache.apply(watcher::Event::InitDone);
        assert!(cache.synced());
        let c = Arc::clone(&cache);
        let started = Instant::now();
        let waiter = tokio::spawn(async move { c.wait_for("u-1", Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_secs(2)).await;
        cache.apply(watcher::Event::Apply(pod_json("u-1", "api-1", serde_json::json!({"app": "x"}))));
        let Lookup::Found(meta) = waiter.await.unwrap() else { panic!("not found") };
        assert_eq!(meta.name, "api-1");
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        let started = Instant::now();
        assert_eq!(cache.wait_for("u-9", Duration::from_secs(5)).await, Lookup::Missing);
        assert_eq!(started.elapsed(), Duration::from_secs(5), "bounded");
    }

    #[tokio::test(start_paused = true)]
    async fn deletes_are_kept_a_while_and_a_relist_replaces_the_pods() {
        let size = Gauge::default();
        let cache = PodCache::new(size.clone());
        cache.apply(watcher::Event::Init);
        for i in 0..3 {
            cache.apply(watcher::Event::InitApply(pod_json(&format!("u-{i}"), "p", serde_json::json!({}))));
        }
        cache.apply(watcher::Event::InitDone);
        assert_eq!(size.get(), 3);
        cache.apply(watcher::Event::Delete(pod_json("u-0", "p", serde_json::json!({}))));
        assert!(cache.get("u-0").is_some(), "kept for late files");
        tokio::time::advance(DELETED_KEPT).await;
        cache.apply(watcher::Event::Apply(pod_json("u-1", "p", serde_json::json!({"v": "2"}))));
        assert!(cache.get("u-0").is_none());
        assert_eq!(cache.get("u-1").unwrap().labels.get("v").map(String::as_str), Some("2"));
        // A relist without u-2.
        cache.apply(watcher::Event::Init);
        cache.apply(watcher::Event::InitApply(pod_json("u-1", "p", serde_json::json!({}))));
        assert!(cache.get("u-2").is_some(), "the old pods stay until the list completes");
        cache.apply(watcher::Event::InitDone);
        assert!(cache.get("u-2").is_none());
        assert_eq!((cache.len(), size.get()), (1, 1));
    }

    #[test]
    fn a_static_pod_is_found_by_the_uid_of_its_files() {
        let mut pod = pod_json("mirror-uid", "etcd-node-1", serde_json::json!({"component": "etcd"}));
        pod.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(MIRROR_ANNOTATION.into(), "static-hash".into());
        let cache = PodCache::new(Gauge::default());
        cache.apply(watcher::Event::Apply(pod.clone()));
        assert_eq!(cache.get("static-hash").unwrap().name, "etcd-node-1");
        assert_eq!(cache.len(), 1);
        cache.apply(watcher::Event::Delete(pod));
        cache.apply(watcher::Event::Init);
        cache.apply(watcher::Event::InitDone);
        assert!(cache.get("static-hash").is_none() && cache.get("mirror-uid").is_none());
    }
}
