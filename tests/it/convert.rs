//! `sluice convert --from promtail`: realistic Promtail configs (written from Promtail's
//! documentation: a compose host's Docker job, a Kubernetes DaemonSet's pod job, a VM's static
//! file job with a multi-stage pipeline) converted, compared with the exact output, then
//! accepted by `sluice check`; and a config with parts sluice cannot take, each listed with its
//! place, exit status 2.

use crate::support::agent::{BINARY, run_cli};
use std::path::Path;

/// Replaces the conversion date in the headers (`on 2026-11-25.`) with `on DATE.`.
fn without_date(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        match line.find("` on ") {
            Some(i)
                if line[i + 5..].len() >= 11
                    && line[i + 5..i + 15].bytes().all(|b| b.is_ascii_digit() || b == b'-') =>
            {
                out.push_str(&line[..i + 5]);
                out.push_str("DATE");
                out.push_str(&line[i + 15..]);
            }
            _ => out.push_str(line),
        }
    }
    out
}

/// Writes `promtail.yaml` into a new directory and runs the conversion into `out/`.
fn convert(promtail: &str) -> (tempfile::TempDir, i32, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("promtail.yaml"), promtail).expect("write promtail.yaml");
    let (code, stdout, stderr) =
        run_cli(&["convert", "--from", "promtail", "promtail.yaml", "--out", "out"], dir.path());
    (dir, code, stdout, stderr)
}

fn output(dir: &Path, file: &str) -> String {
    let text = std::fs::read_to_string(dir.join("out").join(file)).unwrap_or_else(|e| panic!("out/{file}: {e}"));
    without_date(&text)
}

/// The files written under `out/`, sorted.
fn written(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut stack = vec![dir.join("out")];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read out/") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path.strip_prefix(dir).expect("under dir").display().to_string());
            }
        }
    }
    files.sort();
    files
}

/// `sluice check --config out/sluice.yaml` with `env` set: (exit code, stdout, stderr).
fn check(dir: &Path, env: &[(&str, &str)]) -> (i32, String, String) {
    let out = std::process::Command::new(BINARY)
        .args(["check", "--config", "out/sluice.yaml"])
        .current_dir(dir)
        .env_remove("HOSTNAME")
        .envs(env.iter().copied())
        .output()
        .expect("run sluice check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const COMPOSE: &str = r#"# Promtail beside a compose stack: it follows the containers of project `shop`
# through the Docker socket, mounted read-only.
server:
  http_listen_port: 9080
  grpc_listen_port: 0

positions:
  filename: /var/lib/promtail/positions.yaml

clients:
  - url: http://loki:3100/loki/api/v1/push
    batchwait: 2s
    batchsize: 524288
    external_labels:
      host: ${HOSTNAME:-compose-host}

scrape_configs:
  - job_name: compose
    docker_sd_configs:
      - host: unix:///var/run/docker.sock
        refresh_interval: 5s
        filters:
          - name: label
            values: ["com.docker.compose.project=shop"]
    relabel_configs:
      - source_labels: ['__meta_docker_container_name']
        regex: '/(.*)'
        target_label: container
      - source_labels: ['__meta_docker_container_label_com_docker_compose_service']
        target_label: service
      - source_labels: ['__meta_docker_container_label_logging']
        regex: 'off'
        action: drop
    pipeline_stages:
      - docker: {}
      - json:
          expressions:
            level: level
            msg: message
            ts: time
      - labels:
          level:
      - timestamp:
          source: ts
          format: RFC3339Nano
      - output:
          source: msg
"#;

#[test]
fn a_compose_docker_job_converts_and_passes_check() {
    let (dir, code, stdout, stderr) = convert(COMPOSE);
    assert_eq!((code, stderr.as_str()), (0, ""), "{stdout}");
    assert_eq!(
        stdout,
        "wrote out/sluice.yaml, out/pipelines/compose.yaml\n\
         everything was converted: review the files, then run `sluice check --config out/sluice.yaml`\n"
    );
    assert_eq!(written(dir.path()), ["out/pipelines/compose.yaml", "out/sluice.yaml"]);
    assert_eq!(
        output(dir.path(), "sluice.yaml"),
        r#"# sluice agent config, converted from promtail.yaml by `sluice convert --from promtail` on DATE.
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
    relabel_configs:
      - source_labels:
          - __meta_docker_container_name
        regex: /(.*)
        target_label: container
      - source_labels:
          - __meta_docker_container_label_com_docker_compose_service
        target_label: service
      - source_labels:
          - __meta_docker_container_label_logging
        regex: 'off'
        action: drop
sinks:
  # Promtail gave up on a batch after 10 retries by default; sluice retries until it is
  # delivered unless backoff.max_retries is set.
  loki:
    type: loki
    url: http://loki:3100/loki/api/v1/push
    batch_wait: 2s
    batch_size: 524288
    external_labels:
      host: ${HOSTNAME:-compose-host}
"#
    );
    assert_eq!(
        output(dir.path(), "pipelines/compose.yaml"),
        r#"# Pipeline of Promtail job `compose` (promtail.yaml:18),
# converted by `sluice convert --from promtail` on DATE.
# Review it before use: docs/MIGRATING.md lists what sluice does differently.

match:
  sources:
    - compose
# Promtail's leading `docker` stage is left out: the docker source reads lines unwrapped.
stages:
  - json:
      expressions:
        level: level
        msg: message
        ts: time
  - labels:
      level:
  - timestamp:
      source: ts
      format: RFC3339Nano
  - output:
      source: msg
"#
    );
    let (code, stdout, stderr) = check(dir.path(), &[]);
    assert_eq!((code, stderr.as_str()), (0, ""));
    assert_eq!(stdout, "out/sluice.yaml: OK (1 sources, 1 sinks, 1 pipelines, 0 pipeline test cases passed)\n");
}

const DAEMONSET: &str = r#"# Promtail as a Kubernetes DaemonSet: HOSTNAME is the node's name from the downward API
# (fieldRef spec.nodeName), and /var/log/pods is mounted from the host.
server:
  http_listen_port: 3101
  log_level: info

clients:
  - url: https://logs.example.com/loki/api/v1/push
    tenant_id: platform
    basic_auth:
      username: promtail
      password_file: /etc/promtail/secrets/password
    tls_config:
      ca_file: /etc/promtail/tls/ca.crt
    backoff_config:
      min_period: 1s
      max_period: 2m
      max_retries: 20
    timeout: 15s

positions:
  filename: /run/promtail/positions.yaml

target_config:
  sync_period: 15s

scrape_configs:
  - job_name: kubernetes-pods
    pipeline_stages:
      - cri: {}
      - match:
          selector: '{app="ingress-nginx"}'
          stages:
            - regex:
                expression: '^(?P<remote_addr>[\w\.]+) - (?P<user>\S+) \[(?P<time_local>[^\]]+)\] "(?P<method>\S+) (?P<path>\S+) \S+" (?P<status>\d{3})'
            - labels:
                method:
                status:
    kubernetes_sd_configs:
      - role: pod
        selectors:
          - role: pod
            field: spec.nodeName=${HOSTNAME}
    relabel_configs:
      - source_labels: [__meta_kubernetes_pod_label_logging]
        regex: disabled
        action: drop
      - action: labelmap
        regex: __meta_kubernetes_pod_label_(app|team)
      - source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_name, __meta_kubernetes_pod_label_app]
        regex: ^;*([^;]+)(;.*)?$
        target_label: app
        replacement: $1
      - source_labels: [__meta_kubernetes_namespace]
        target_label: namespace
      - source_labels: [__meta_kubernetes_pod_name]
        target_label: pod
      - source_labels: [__meta_kubernetes_pod_container_name]
        target_label: container
      - source_labels: [__meta_kubernetes_pod_node_name]
        target_label: node
      - source_labels: [__meta_kubernetes_pod_uid, __meta_kubernetes_pod_container_name]
        separator: /
        target_label: __path__
        replacement: /var/log/pods/*$1/*.log
"#;

#[test]
fn a_kubernetes_daemonset_job_converts_and_passes_check() {
    let (dir, code, stdout, stderr) = convert(DAEMONSET);
    assert_eq!((code, stderr.as_str()), (0, ""), "{stdout}");
    assert_eq!(written(dir.path()), ["out/pipelines/kubernetes-pods.yaml", "out/sluice.yaml"]);
    assert_eq!(
        output(dir.path(), "sluice.yaml"),
        r#"# sluice agent config, converted from promtail.yaml by `sluice convert --from promtail` on DATE.
# Review it before use: docs/MIGRATING.md lists what sluice does differently.

server:
  # Promtail listened on every interface when no address was set.
  http_listen_address: '0.0.0.0:3101'
# Promtail kept its positions in /run/promtail/positions.yaml.
# They are not migrated: sluice keeps its own here, so on its first start it reads
# files and containers from their beginning (set `start_at: end` on a source to
# skip what Promtail already sent).
data_dir: /run/promtail
pipelines_dir: pipelines
sources:
  # namespace, pod and container come from each file's path, node from kubernetes.node;
  # job is the source's name unless labels set it.
  kubernetes-pods:
    type: files
    include:
      - /var/log/pods/*/*/*.log
    format: cri
    kubernetes:
      node: ${HOSTNAME}
      api: true
      relabel_configs:
        - source_labels:
            - __meta_kubernetes_pod_label_logging
          regex: disabled
          action: drop
        - action: labelmap
          regex: __meta_kubernetes_pod_label_(app|team)
        - source_labels:
            - __meta_kubernetes_pod_label_app_kubernetes_io_name
            - __meta_kubernetes_pod_label_app
          regex: ^;*([^;]+)(;.*)?$
          target_label: app
          replacement: $1
    scan_interval: 15s
sinks:
  loki:
    type: loki
    url: https://logs.example.com/loki/api/v1/push
    tenant_id: platform
    basic_auth:
      username: promtail
      password_file: /etc/promtail/secrets/password
    tls:
      ca_file: /etc/promtail/tls/ca.crt
    backoff:
      min_period: 1s
      max_period: 2m
      max_retries: 20
    timeout: 15s
"#
    );
    assert_eq!(
        output(dir.path(), "pipelines/kubernetes-pods.yaml"),
        r#"# Pipeline of Promtail job `kubernetes-pods` (promtail.yaml:28),
# converted by `sluice convert --from promtail` on DATE.
# Review it before use: docs/MIGRATING.md lists what sluice does differently.

match:
  sources:
    - kubernetes-pods
# Promtail's leading `cri` stage is done by the source (`format: cri`).
stages:
  - match:
      selector: '{app="ingress-nginx"}'
      stages:
        - regex:
            expression: ^(?P<remote_addr>[\w\.]+) - (?P<user>\S+) \[(?P<time_local>[^\]]+)\] "(?P<method>\S+) (?P<path>\S+) \S+" (?P<status>\d{3})
        - labels:
            method:
            status:
"#
    );
    // The node's name comes from the environment, as in the DaemonSet.
    let (code, stdout, stderr) = check(dir.path(), &[("HOSTNAME", "node-1")]);
    assert_eq!((code, stderr.as_str()), (0, ""));
    assert_eq!(stdout, "out/sluice.yaml: OK (1 sources, 1 sinks, 1 pipelines, 0 pipeline test cases passed)\n");
    let (code, _, stderr) = check(dir.path(), &[]);
    assert_eq!(code, 1);
    assert_eq!(
        stderr,
        "out/sluice.yaml:22:13: environment variable `HOSTNAME` is not set and `${HOSTNAME}` has no default (write `${HOSTNAME:-default}`)\n"
    );
}

const STATIC: &str = r#"# A VM running a shop application that writes plain-text logs, one directory per process.
server:
  http_listen_address: 127.0.0.1
  http_listen_port: 9080

positions:
  filename: /var/lib/promtail/positions.yaml
  sync_period: 5s

clients:
  - url: http://loki-a:3100/loki/api/v1/push
  - url: http://loki-b:3100/loki/api/v1/push
    tenant_id: backup

scrape_configs:
  - job_name: app
    static_configs:
      - targets: [localhost]
        labels:
          job: shop
          env: prod
          __path__: /var/log/shop/{api,worker}/*.log
          __path_exclude__: /var/log/shop/**/*.gz
    pipeline_stages:
      - regex:
          expression: '^(?P<ts>\S+ \S+) (?P<level>[A-Z]+) \[(?P<component>[^\]]+)\] (?P<msg>.*)$'
      - labels:
          level:
          component:
      - timestamp:
          source: ts
          format: '2006-01-02 15:04:05.000'
          location: Europe/Berlin
      - drop:
          source: level
          value: DEBUG
          drop_counter_reason: debug_noise
      - match:
          selector: '{component="payments"}'
          stages:
            - regex:
                expression: 'amount=(?P<amount>[0-9.]+)'
                source: msg
            - metrics:
                payment_amount_total:
                  type: Counter
                  description: sum of payment amounts
                  source: amount
                  config:
                    action: add
      - metrics:
          log_lines_total:
            type: Counter
            description: lines read
            config:
              match_all: true
              action: inc
          error_lines_total:
            type: Counter
            source: level
            config:
              value: ERROR
              action: inc
      - output:
          source: msg
"#;

#[test]
fn a_static_file_job_with_a_multi_stage_pipeline_converts_and_passes_check() {
    let (dir, code, _, stderr) = convert(STATIC);
    assert_eq!((code, stderr.as_str()), (0, ""));
    assert_eq!(written(dir.path()), ["out/pipelines/app.yaml", "out/sluice.yaml"]);
    assert_eq!(
        output(dir.path(), "sluice.yaml"),
        r#"# sluice agent config, converted from promtail.yaml by `sluice convert --from promtail` on DATE.
# Review it before use: docs/MIGRATING.md lists what sluice does differently.

server:
  http_listen_address: '127.0.0.1:9080'
# Promtail kept its positions in /var/lib/promtail/positions.yaml.
# They are not migrated: sluice keeps its own here, so on its first start it reads
# files and containers from their beginning (set `start_at: end` on a source to
# skip what Promtail already sent).
data_dir: /var/lib/promtail
pipelines_dir: pipelines
sources:
  app:
    type: files
    include:
      - /var/log/shop/api/*.log
      - /var/log/shop/worker/*.log
    exclude:
      - /var/log/shop/**/*.gz
    format: raw
    labels:
      job: shop
      env: prod
    sync_period: 5s
sinks:
  # Promtail gave up on a batch after 10 retries by default; sluice retries until it is
  # delivered unless backoff.max_retries is set.
  loki_1:
    type: loki
    url: http://loki-a:3100/loki/api/v1/push
  # Promtail gave up on a batch after 10 retries by default; sluice retries until it is
  # delivered unless backoff.max_retries is set.
  loki_2:
    type: loki
    url: http://loki-b:3100/loki/api/v1/push
    tenant_id: backup
"#
    );
    assert_eq!(
        output(dir.path(), "pipelines/app.yaml"),
        r#"# Pipeline of Promtail job `app` (promtail.yaml:16),
# converted by `sluice convert --from promtail` on DATE.
# Review it before use: docs/MIGRATING.md lists what sluice does differently.

match:
  sources:
    - app
stages:
  - regex:
      expression: ^(?P<ts>\S+ \S+) (?P<level>[A-Z]+) \[(?P<component>[^\]]+)\] (?P<msg>.*)$
  - labels:
      level:
      component:
  - timestamp:
      source: ts
      format: '2006-01-02 15:04:05.000'
      location: Europe/Berlin
  - drop:
      source: level
      value: DEBUG
      drop_counter_reason: debug_noise
  - match:
      selector: '{component="payments"}'
      stages:
        - regex:
            expression: amount=(?P<amount>[0-9.]+)
            source: msg
        # prefix: promtail_custom_ keeps Promtail's metric names (sluice's default is sluice_custom_).
        - metrics:
            payment_amount_total:
              type: Counter
              description: sum of payment amounts
              source: amount
              config:
                action: add
              prefix: promtail_custom_
  # prefix: promtail_custom_ keeps Promtail's metric names (sluice's default is sluice_custom_).
  - metrics:
      log_lines_total:
        type: Counter
        description: lines read
        config:
          match_all: true
          action: inc
        prefix: promtail_custom_
      error_lines_total:
        type: Counter
        source: level
        config:
          value: ERROR
          action: inc
        prefix: promtail_custom_
  - output:
      source: msg
"#
    );
    let (code, stdout, stderr) = check(dir.path(), &[]);
    assert_eq!((code, stderr.as_str()), (0, ""));
    assert_eq!(stdout, "out/sluice.yaml: OK (1 sources, 2 sinks, 1 pipelines, 0 pipeline test cases passed)\n");
}

const PARTLY: &str = r#"server:
  http_listen_port: 9080
  log_level: debug

clients:
  - url: http://loki:3100/loki/api/v1/push
    proxy_url: http://proxy:3128
    batchwait: 1x

limits_config:
  readline_rate_enabled: true
  readline_rate: 500

scrape_configs:
  - job_name: journal
    journal:
      max_age: 12h
  - job_name: containers
    docker_sd_configs:
      - host: unix:///var/run/docker.sock
        filters:
          - name: status
            values: [running]
    relabel_configs:
      - source_labels: [__meta_docker_network_ip]
        target_label: ip
      - source_labels: [__meta_docker_container_name]
        regex: '/(.*)'
        target_label: container
    pipeline_stages:
      - json:
          expressions:
            level: level
            first_user: 'users[*].name'
      - pack:
          labels: [level]
      - template:
          source: msg
          template: '{{ printf "%s" .Value }}'
      - tenant:
          source: org
"#;

#[test]
fn parts_sluice_cannot_take_are_listed_with_their_places_and_exit_2() {
    let (dir, code, stdout, stderr) = convert(PARTLY);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert_eq!(
        stderr,
        "promtail.yaml:3:3: not converted: server.log_level (set it with sluice's --log.level flag)\n\
         promtail.yaml:7:5: not converted: clients[0].proxy_url (sluice's loki sink has no such setting)\n\
         promtail.yaml:8:16: not converted: clients[0]: `batch_wait` (sluice refuses it: invalid duration `1x`: unknown unit `x` (use ns, us, ms, s, m, h, d, w))\n\
         promtail.yaml:11:3: not converted: limits_config.readline_rate_enabled (sluice has no agent-wide rate limit; a `limit` stage limits a pipeline)\n\
         promtail.yaml:12:3: not converted: limits_config.readline_rate (sluice has no agent-wide rate limit; a `limit` stage limits a pipeline)\n\
         promtail.yaml:16:5: not converted: job `journal` (sluice has no journal source)\n\
         promtail.yaml:22:13: not converted: job `containers`: docker filter `status` (the docker source filters containers by label and by name only)\n\
         promtail.yaml:25:9: not converted: job `containers`: relabel rule setting `ip` (the docker source exposes no __meta_docker_network_* or __meta_docker_port_* labels)\n\
         promtail.yaml:34:25: not converted: job `containers`: stage `json`: `expressions.first_user` (sluice refuses it: json: `users[*].name`: `[*]` is not an array index (only dotted paths, [n] and \"quoted\" keys are supported))\n\
         promtail.yaml:35:9: not converted: job `containers`: stage `pack` (sluice has no `pack` stage)\n\
         promtail.yaml:39:21: not converted: job `containers`: stage `template` (sluice refuses it: invalid template: template error at offset 3: function `printf` is not supported)\n\
         promtail.yaml:40:9: not converted: job `containers`: stage `tenant` (sluice has no `tenant` stage: the loki sink's `tenant_label` sends each entry to the tenant a label names)\n"
    );
    assert_eq!(
        stdout,
        "wrote out/sluice.yaml, out/pipelines/containers.yaml\n\
         12 part(s) not converted (listed on stderr): review the files, then run `sluice check --config out/sluice.yaml`\n"
    );
    // The files are written all the same, without what was left out, and sluice takes them.
    assert_eq!(
        output(dir.path(), "pipelines/containers.yaml"),
        r#"# Pipeline of Promtail job `containers` (promtail.yaml:18),
# converted by `sluice convert --from promtail` on DATE.
# Review it before use: 12 parts of the input were not converted (`sluice convert` listed
# them with their places); docs/MIGRATING.md lists what sluice does differently.

match:
  sources:
    - containers
stages:
  - json:
      expressions:
        level: level
"#
    );
    let (code, stdout, stderr) = check(dir.path(), &[]);
    assert_eq!((code, stderr.as_str()), (0, ""));
    assert_eq!(stdout, "out/sluice.yaml: OK (1 sources, 1 sinks, 1 pipelines, 0 pipeline test cases passed)\n");
}

#[test]
fn convert_refuses_other_agents_broken_yaml_and_an_existing_config() {
    let (dir, code, _, stderr) = convert(COMPOSE);
    assert_eq!((code, stderr.as_str()), (0, ""));
    let (code, _, stderr) = run_cli(&["convert", "--from", "promtail", "promtail.yaml", "--out", "out"], dir.path());
    assert_eq!(code, 1);
    assert_eq!(stderr, "error: out already holds a sluice config; convert into an empty or new directory\n");

    let (code, _, stderr) = run_cli(&["convert", "--from", "fluentbit", "promtail.yaml", "--out", "x"], dir.path());
    assert_eq!(code, 2);
    assert!(stderr.contains("invalid value 'fluentbit'") && stderr.contains("possible values: promtail"), "{stderr}");

    let (dir, code, stdout, stderr) = convert("scrape_configs:\n  - job_name: [a\n");
    assert_eq!((code, stdout.as_str()), (1, ""));
    assert!(stderr.starts_with("promtail.yaml:"), "{stderr}");
    assert!(!dir.path().join("out").exists());
}
