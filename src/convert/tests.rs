//! Conversions of whole Promtail configs, compared with the exact output.

use super::*;

const DATE: &str = "2026-01-02";

fn convert(text: &str) -> Conversion {
    convert_promtail(Path::new("promtail.yaml"), text, DATE).unwrap()
}

fn file<'a>(c: &'a Conversion, path: &str) -> &'a str {
    let found = c.files.iter().find(|f| f.path == Path::new(path));
    found.map(|f| f.text.as_str()).unwrap_or_else(|| panic!("no {path} in {:?}", c.files))
}

fn issues(c: &Conversion) -> Vec<String> {
    c.issues.iter().map(ToString::to_string).collect()
}

/// The text after the header (the first blank line).
fn body(text: &str) -> &str {
    text.split_once("\n\n").map_or(text, |(_, b)| b)
}

/// Writes the conversion to a temporary directory and runs `sluice check`'s loading on it.
fn assert_sluice_accepts(c: &Conversion) {
    let dir = tempfile::tempdir().unwrap();
    write(c, dir.path()).unwrap();
    if let Err(e) = crate::app::check(&dir.path().join(AGENT_FILE)) {
        panic!("sluice refuses the conversion:\n{e}\n{:#?}", c.files);
    }
}

const DOCKER: &str = r#"
server:
  http_listen_port: 9080
  grpc_listen_port: 0
positions:
  filename: /var/lib/promtail/positions.yaml
clients:
  - url: http://loki:3100/loki/api/v1/push
    batchwait: 2s
    batchsize: 524288
scrape_configs:
  - job_name: compose
    docker_sd_configs:
      - host: unix:///var/run/docker.sock
        refresh_interval: 5s
        filters:
          - name: label
            values: ["com.docker.compose.project=shop"]
          - name: name
            values: [api, worker]
    relabel_configs:
      - source_labels: ['__meta_docker_container_name']
        regex: '/(.*)'
        target_label: container
    pipeline_stages:
      - docker: {}
      - json:
          expressions:
            level:
      - labels:
          level:
"#;

#[test]
fn a_docker_job_becomes_a_docker_source_and_a_pipeline() {
    let c = convert(DOCKER);
    assert_eq!(issues(&c), Vec::<String>::new());
    assert_eq!(
        file(&c, "sluice.yaml"),
        r#"# sluice agent config, converted from promtail.yaml by `sluice convert --from promtail` on 2026-01-02.
# Review it before use: docs/MIGRATING.md lists what sluice does differently.

# Promtail's gRPC settings are left out: sluice serves no gRPC.
server:
  # Promtail listened on every interface when no address was set.
  http_listen_address: '0.0.0.0:9080'
# Promtail kept its positions in /var/lib/promtail/positions.yaml.
# They are not migrated: sluice keeps its own here, so on its first start it reads
# files and containers from their beginning (set `start_at: end` on a source to
# skip what Promtail already sent).
data_dir: /var/lib/promtail
pipelines_dir: pipelines
sources:
  # sluice also labels a container's entries with container_name, compose_project,
  # compose_service, image and job (the source's name) unless relabel_configs set them.
  compose:
    type: docker
    host: unix:///var/run/docker.sock
    refresh_interval: 5s
    filters:
      labels:
        - com.docker.compose.project=shop
      name: .*(?:api|worker).*
    relabel_configs:
      - source_labels:
          - __meta_docker_container_name
        regex: /(.*)
        target_label: container
sinks:
  # Promtail gave up on a batch after 10 retries by default; sluice retries until it is
  # delivered unless backoff.max_retries is set.
  loki:
    type: loki
    url: http://loki:3100/loki/api/v1/push
    batch_wait: 2s
    batch_size: 524288
"#
    );
    assert_eq!(
        file(&c, "pipelines/compose.yaml"),
        r#"# Pipeline of Promtail job `compose` (promtail.yaml:12),
# converted by `sluice convert --from promtail` on 2026-01-02.
# Review it before use: docs/MIGRATING.md lists what sluice does differently.

match:
  sources:
    - compose
# Promtail's leading `docker` stage is left out: the docker source reads lines unwrapped.
stages:
  - json:
      expressions:
        level:
  - labels:
      level:
"#
    );
    assert_sluice_accepts(&c);
}

#[test]
fn a_kubernetes_pod_job_reads_pod_log_files() {
    let c = convert(
        r#"
clients:
  - url: https://logs.example.com/loki/api/v1/push
    authorization:
      credentials_file: /var/run/secrets/loki-token
scrape_configs:
  - job_name: pods
    pipeline_stages:
      - cri: {}
    kubernetes_sd_configs:
      - role: pod
        namespaces:
          names: [shop, payments]
    relabel_configs:
      - action: labelmap
        regex: __meta_kubernetes_pod_label_(.+)
      - source_labels: [__meta_kubernetes_namespace]
        target_label: namespace
      - source_labels: [__meta_kubernetes_pod_node_name]
        target_label: __host__
      - source_labels: [__meta_kubernetes_pod_annotation_team]
        target_label: team
      - source_labels: [__meta_kubernetes_namespace, __meta_kubernetes_pod_label_app]
        separator: /
        target_label: job
      - source_labels: [team]
        target_label: owner
      - replacement: /var/log/pods/*$1/*.log
        separator: /
        source_labels: [__meta_kubernetes_pod_uid, __meta_kubernetes_pod_container_name]
        target_label: __path__
"#,
    );
    assert_eq!(
        issues(&c),
        [
            "promtail.yaml:21:9: not converted: job `pods`: relabel rule setting `team` (sluice's files source offers only __meta_kubernetes_pod_label_* to relabeling, not `__meta_kubernetes_pod_annotation_team`)",
            "promtail.yaml:23:9: not converted: job `pods`: relabel rule setting `job` (sluice sets namespace, pod and container from the file path, under these names only; `__meta_kubernetes_namespace` is not offered to relabeling)",
            "promtail.yaml:26:9: not converted: job `pods`: relabel rule setting `owner` (it reads `team`, which sluice sets from the file path or which a rule left out set)",
        ]
    );
    assert_eq!(
        body(file(&c, "sluice.yaml")),
        r#"server:
  # Promtail listened on every interface when no address was set.
  http_listen_address: '0.0.0.0:9080'
sources:
  # namespace, pod and container come from each file's path, node from kubernetes.node;
  # job is the source's name unless labels set it.
  pods:
    type: files
    include:
      - /var/log/pods/shop_*/*/*.log
      - /var/log/pods/payments_*/*/*.log
    format: cri
    kubernetes:
      node: ${NODE_NAME}
      api: true
      relabel_configs:
        - action: labelmap
          regex: __meta_kubernetes_pod_label_(.+)
sinks:
  # Promtail gave up on a batch after 10 retries by default; sluice retries until it is
  # delivered unless backoff.max_retries is set.
  loki:
    type: loki
    url: https://logs.example.com/loki/api/v1/push
    bearer_token_file: /var/run/secrets/loki-token
"#
    );
    // The cri stage was the whole pipeline: the source does it.
    assert_eq!(c.files.len(), 1);
}

#[test]
fn static_labels_are_relabeled_now_and_globs_expanded() {
    let c = convert(
        r#"
server:
  http_listen_address: '::1'
clients:
  - url: http://loki:3100/loki/api/v1/push
limits_config:
  max_line_size: 64kb
target_config:
  sync_period: 30s
scrape_configs:
  - job_name: var/logs
    static_configs:
      - targets: [localhost]
        labels:
          __path__: /var/log/{nginx,app}/*.log
          host: web-1
      - labels:
          __path__: /var/log/debug/*.log
    relabel_configs:
      - source_labels: [__path__]
        regex: '/var/log/debug/.*'
        action: drop
      - source_labels: [__path__]
        regex: '/var/log/\{(\w+),.*'
        target_label: first
      - target_label: team
        replacement: web
"#,
    );
    assert_eq!(issues(&c), Vec::<String>::new());
    assert_eq!(
        body(file(&c, "sluice.yaml")),
        r#"server:
  http_listen_address: '[::1]:9080'
sources:
  var_logs:
    type: files
    include:
      - /var/log/nginx/*.log
      - /var/log/app/*.log
    format: raw
    labels:
      host: web-1
      first: nginx
      team: web
    scan_interval: 30s
sinks:
  # Promtail gave up on a batch after 10 retries by default; sluice retries until it is
  # delivered unless backoff.max_retries is set.
  loki:
    type: loki
    url: http://loki:3100/loki/api/v1/push
    max_line_size: 64kb
    max_line_size_truncate: false
"#
    );
    assert_sluice_accepts(&c);
}

#[test]
fn stages_sluice_refuses_are_taken_out_and_reported() {
    let c = convert(
        r#"
clients:
  - url: http://loki:3100/loki/api/v1/push
scrape_configs:
  - job_name: app
    static_configs:
      - labels: {__path__: /var/log/app.log}
    pipeline_stages:
      - cri:
          max_partial_lines: 50
      - regex:
          expression: '^\Qlevel=\E(?P<level>\w+)'
      - regex:
          expression: '${PATTERN}'
      - json:
          expressions:
            user: user.id
            names: 'users[*].name'
      - match:
          selector: '{job="app"}'
          stages:
            - multiline:
                firstline: '^\d{4}'
            - static_labels:
                tier: front
            - pack:
                labels: [tier]
      - decolorize:
      - metrics:
          lines_total:
            type: Counter
            config: {match_all: true, action: inc}
          bad:
            type: Summary
"#,
    );
    assert_eq!(
        issues(&c),
        [
            "promtail.yaml:10:11: not converted: job `app`: `max_partial_lines` of stage `cri` (the files source joins partial CRI lines itself)",
            "promtail.yaml:12:23: not converted: job `app`: stage `regex` (sluice refuses it: invalid regex `^\\Qlevel=\\E(?P<level>\\w+)`: error: unrecognized escape sequence)",
            "promtail.yaml:18:20: not converted: job `app`: stage `json`: `expressions.names` (sluice refuses it: json: `users[*].name`: `[*]` is not an array index (only dotted paths, [n] and \"quoted\" keys are supported))",
            "promtail.yaml:22:15: not converted: job `app`: stage `multiline` (sluice refuses it: `multiline` holds lines and must be a top-level stage, not inside `match`)",
            "promtail.yaml:26:15: not converted: job `app`: stage `pack` (sluice has no `pack` stage)",
            "promtail.yaml:28:9: not converted: job `app`: stage `decolorize` (sluice has no `decolorize` stage)",
            "promtail.yaml:34:19: not converted: job `app`: stage `metrics`: `bad` (sluice refuses it: metrics: `bad`: type `summary` is not Counter, Gauge or Histogram)",
        ]
    );
    assert_eq!(
        body(file(&c, "pipelines/app.yaml")),
        r#"match:
  sources:
    - app
# Promtail's leading `cri` stage is done by the source (`format: cri`).
stages:
  - regex:
      expression: ${PATTERN}
  - json:
      expressions:
        user: user.id
  - match:
      selector: '{job="app"}'
      stages:
        - static_labels:
            tier: front
  # prefix: promtail_custom_ keeps Promtail's metric names (sluice's default is sluice_custom_).
  - metrics:
      lines_total:
        type: Counter
        config:
          match_all: true
          action: inc
        prefix: promtail_custom_
"#
    );
}

#[test]
fn sections_and_jobs_sluice_lacks_are_reported_in_input_order() {
    let c = convert(
        r#"
server:
  http_listen_port: 3101
  log_level: debug
  http_server_read_timeout: 30s
clients:
  - url: http://loki:3100/loki/api/v1/push
    proxy_url: http://proxy:3128
    batchwait: 1x
    basic_auth:
      password: secret
    tls_config:
      cert: inline-pem
limits_config:
  readline_rate_enabled: true
  max_streams: 100
options:
  stream_lag_labels: filename
scrape_configs:
  - job_name: journal
    journal:
      max_age: 12h
  - job_name: nodes
    kubernetes_sd_configs:
      - role: node
  - job_name: docker
    docker_sd_configs:
      - host: tcp://docker:2376
        tls_config:
          ca_file: /ca.pem
        filters:
          - name: status
            values: [running]
          - name: name
            values: ['^/web']
    relabel_configs:
      - source_labels: [__meta_docker_network_ip]
        target_label: ip
      - source_labels: [__meta_docker_container_log_stream]
        target_label: stream
      - source_labels: [__meta_docker_container_name]
        target_label: container
        action: keepequal
  - static_configs:
      - labels: {__path__: /x.log}
  - job_name: nopath
    static_configs:
      - labels: {job: x}
"#,
    );
    assert_eq!(
        issues(&c),
        [
            "promtail.yaml:4:3: not converted: server.log_level (set it with sluice's --log.level flag)",
            "promtail.yaml:5:3: not converted: server.http_server_read_timeout (sluice's HTTP server has no such setting)",
            "promtail.yaml:8:5: not converted: clients[0].proxy_url (sluice's loki sink has no such setting)",
            "promtail.yaml:9:16: not converted: clients[0]: `batch_wait` (sluice refuses it: invalid duration `1x`: unknown unit `x` (use ns, us, ms, s, m, h, d, w))",
            "promtail.yaml:10:5: not converted: clients[0].basic_auth (sluice's basic_auth needs a `username`)",
            "promtail.yaml:13:7: not converted: clients[0].tls_config.cert (sluice reads certificates from files: write it to a file and set `cert_file`)",
            "promtail.yaml:15:3: not converted: limits_config.readline_rate_enabled (sluice has no agent-wide rate limit; a `limit` stage limits a pipeline)",
            "promtail.yaml:16:3: not converted: limits_config.max_streams (sluice has no such setting)",
            "promtail.yaml:18:3: not converted: options.stream_lag_labels (sluice has no such setting)",
            "promtail.yaml:21:5: not converted: job `journal` (sluice has no journal source)",
            "promtail.yaml:25:9: not converted: job `nodes`: kubernetes_sd_configs role `node` (sluice reads the logs of pods (role `pod`) from their files)",
            "promtail.yaml:29:9: not converted: job `docker`: docker_sd_configs `tls_config` (the docker source reaches the engine through a local socket or plain TCP only)",
            "promtail.yaml:32:13: not converted: job `docker`: docker filter `status` (the docker source filters containers by label and by name only)",
            "promtail.yaml:35:22: not converted: job `docker`: docker filter name `^/web` (Docker matches it against `/name` without anchors; write the source's `filters.name` regex by hand)",
            "promtail.yaml:37:9: not converted: job `docker`: relabel rule setting `ip` (the docker source exposes no __meta_docker_network_* or __meta_docker_port_* labels)",
            "promtail.yaml:39:9: not converted: job `docker`: relabel rule setting `stream` (sluice adds the `stream` label after relabeling: select on it in a pipeline's `match`)",
            "promtail.yaml:43:17: not converted: job `docker`: relabel rule (action `keepequal`) (sluice refuses it: unknown variant `keepequal`, expected one of replace, keep, drop, labelmap, labeldrop, labelkeep, lowercase, uppercase, hashmod)",
            "promtail.yaml:44:5: not converted: scrape_configs[3] (a job needs a `job_name`)",
            "promtail.yaml:48:9: not converted: job `nopath`: static_configs entry (it has no `__path__`: Promtail read no file for it)",
        ]
    );
    assert_eq!(
        body(file(&c, "sluice.yaml")),
        r#"server:
  # Promtail listened on every interface when no address was set.
  http_listen_address: '0.0.0.0:3101'
sources:
  # sluice also labels a container's entries with container_name, compose_project,
  # compose_service, image and job (the source's name) unless relabel_configs set them.
  docker:
    type: docker
    host: tcp://docker:2376
sinks:
  # Promtail gave up on a batch after 10 retries by default; sluice retries until it is
  # delivered unless backoff.max_retries is set.
  loki:
    type: loki
    url: http://loki:3100/loki/api/v1/push
"#
    );
    assert_sluice_accepts(&c);
}

#[test]
fn an_empty_or_foreign_file_converts_to_nothing() {
    let c = convert("");
    assert_eq!(issues(&c), ["promtail.yaml:1:1: not converted: the file (it is empty)"]);
    let c = convert("- a\n- b\n");
    assert_eq!(issues(&c), ["promtail.yaml:1:1: not converted: the file (a Promtail config is a mapping of sections)"]);
    let err = convert_promtail(Path::new("p.yaml"), "a: [1,\n", DATE).unwrap_err();
    assert_eq!(err.file, Path::new("p.yaml"));
}

#[test]
fn environment_references_are_kept_as_written() {
    let c = convert(
        r#"
clients:
  - url: ${LOKI_URL}/loki/api/v1/push
    external_labels: {host: '${HOSTNAME}'}
scrape_configs:
  - job_name: k8s
    kubernetes_sd_configs:
      - role: pod
        selectors:
          - role: pod
            field: spec.nodeName=${HOSTNAME}
    relabel_configs:
      - source_labels: [__meta_kubernetes_pod_label_app]
        regex: '(.+)'
        target_label: app
        replacement: '${1}'
      - source_labels: [__meta_kubernetes_pod_uid, __meta_kubernetes_pod_container_name]
        separator: /
        target_label: __path__
        replacement: /var/log/pods/*$1/*.log
"#,
    );
    assert_eq!(issues(&c), Vec::<String>::new());
    let agent = file(&c, "sluice.yaml");
    for line in ["    url: ${LOKI_URL}/loki/api/v1/push", "      host: ${HOSTNAME}", "      node: ${HOSTNAME}"] {
        assert!(agent.contains(&format!("{line}\n")), "{line:?} in\n{agent}");
    }
    // A regex group reference is escaped from sluice's own `${VAR}` expansion.
    assert!(agent.contains("          replacement: $${1}\n"), "{agent}");
}

#[test]
fn write_never_overwrites_a_config() {
    let c = convert(DOCKER);
    let dir = tempfile::tempdir().unwrap();
    let written = write(&c, dir.path()).unwrap();
    assert_eq!(written, [dir.path().join("sluice.yaml"), dir.path().join("pipelines/compose.yaml")]);
    assert!(matches!(write(&c, dir.path()), Err(WriteError::Exists(_))));
}
