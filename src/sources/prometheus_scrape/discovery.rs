//! Docker discovery: running containers labelled `prometheus.io/scrape=true`.
//!
//! A container's target is `<address>:<port>`: its IP on the configured network (or on the
//! first network with an address, by name), or `host_network_address` for containers on the
//! host's network; the port of `prometheus.io/port`, or the container's only exposed port. A
//! container with neither is skipped (logged at debug). `prometheus.io/path` and
//! `prometheus.io/scheme` override the job's. Relabeling sees `__meta_docker_container_id`,
//! `__meta_docker_container_name` (with its leading `/`), `__meta_docker_container_label_<name>`,
//! `__meta_docker_container_network_mode`, `__meta_docker_network_name` and
//! `__meta_docker_network_ip`.
//!
//! The container list is read every `refresh_interval`; that keeps discovery to one request per
//! interval and no long-lived stream.

use super::config::DockerDiscovery;
use super::target::Discovered;
use crate::event::labels::sanitize_name;
use bollard::models::ContainerSummary;
use bollard::query_parameters::ListContainersOptions;
use std::collections::{BTreeSet, HashMap};

pub const SCRAPE: &str = "prometheus.io/scrape";
pub const PORT: &str = "prometheus.io/port";
pub const PATH: &str = "prometheus.io/path";
pub const SCHEME: &str = "prometheus.io/scheme";

/// Connects to the engine of `config` (or `DOCKER_HOST`, or the local socket).
pub async fn connect(config: &DockerDiscovery) -> Result<bollard::Docker, String> {
    let docker = match &config.host {
        Some(host) => {
            let endpoint = crate::sources::docker::client::Endpoint::parse(host)?;
            bollard::Docker::connect_with_host(&endpoint.as_host()).map_err(|e| e.to_string())?
        }
        None => bollard::Docker::connect_with_defaults().map_err(|e| e.to_string())?,
    };
    docker.negotiate_version().await.map_err(|e| e.to_string())
}

/// The targets among the running containers.
pub async fn discover(docker: &bollard::Docker, config: &DockerDiscovery) -> Result<Vec<Discovered>, String> {
    let filters = HashMap::from([
        ("label".to_string(), vec![format!("{SCRAPE}=true")]),
        ("status".to_string(), vec!["running".to_string()]),
    ]);
    let list = docker
        .list_containers(Some(ListContainersOptions { all: false, filters: Some(filters), ..Default::default() }))
        .await
        .map_err(|e| format!("listing containers: {e}"))?;
    Ok(list.iter().filter_map(|c| target_of(c, config)).collect())
}

/// The target of one container, when it has an address and a port.
pub fn target_of(c: &ContainerSummary, config: &DockerDiscovery) -> Option<Discovered> {
    let labels = c.labels.as_ref()?;
    if labels.get(SCRAPE).map(String::as_str) != Some("true") {
        return None;
    }
    let id = c.id.clone().unwrap_or_default();
    let name = c.names.as_ref().and_then(|n| n.first()).cloned().unwrap_or_default();
    let port = match labels.get(PORT) {
        Some(p) => match p.trim().parse::<u16>() {
            Ok(p) => p,
            Err(_) => {
                tracing::debug!(container = %name, port = %p, "prometheus.io/port is not a port number; container skipped");
                return None;
            }
        },
        None => {
            let ports: BTreeSet<u16> = c.ports.iter().flatten().map(|p| p.private_port).collect();
            if ports.len() != 1 {
                tracing::debug!(container = %name, "no prometheus.io/port label and not exactly one exposed port; container skipped");
                return None;
            }
            *ports.first()?
        }
    };
    let network_mode = c.host_config.as_ref().and_then(|h| h.network_mode.clone()).unwrap_or_default();
    let networks = c.network_settings.as_ref().and_then(|n| n.networks.as_ref());
    let mut candidates: Vec<(&String, String)> = networks
        .into_iter()
        .flatten()
        .filter_map(|(net, settings)| Some((net, settings.ip_address.clone().filter(|ip| !ip.is_empty())?)))
        .collect();
    candidates.sort();
    let chosen = match &config.network {
        Some(wanted) => candidates.iter().find(|(net, _)| *net == wanted).cloned(),
        None => candidates.first().cloned(),
    };
    let (network, ip) = match chosen {
        Some((net, ip)) => (net.clone(), ip),
        None if network_mode == "host" => ("host".to_string(), config.host_network_address.clone()),
        None => {
            tracing::debug!(container = %name, "no address on the wanted network; container skipped");
            return None;
        }
    };
    let address = if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") };
    let mut meta = vec![
        ("__meta_docker_container_id".to_string(), id),
        ("__meta_docker_container_name".to_string(), name),
        ("__meta_docker_container_network_mode".to_string(), network_mode),
        ("__meta_docker_network_name".to_string(), network),
        ("__meta_docker_network_ip".to_string(), ip),
    ];
    let mut container_labels: Vec<(&String, &String)> = labels.iter().collect();
    container_labels.sort();
    for (k, v) in container_labels {
        meta.push((format!("__meta_docker_container_label_{}", sanitize_name(k)), v.clone()));
    }
    Some(Discovered { address, scheme: labels.get(SCHEME).cloned(), path: labels.get(PATH).cloned(), labels: meta })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerSummaryHostConfig, ContainerSummaryNetworkSettings, EndpointSettings, PortSummary};

    fn config(network: Option<&str>) -> DockerDiscovery {
        DockerDiscovery {
            host: None,
            refresh_interval: crate::config::HumanDuration::from_secs(15),
            network: network.map(String::from),
            host_network_address: "127.0.0.1".into(),
        }
    }

    fn container(labels: &[(&str, &str)], networks: &[(&str, &str)], ports: &[u16], mode: &str) -> ContainerSummary {
        ContainerSummary {
            id: Some("c0ffee".into()),
            names: Some(vec!["/gpu-exporter-1".into()]),
            labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ports: Some(ports.iter().map(|p| PortSummary { private_port: *p, ..Default::default() }).collect()),
            host_config: Some(ContainerSummaryHostConfig { network_mode: Some(mode.into()), ..Default::default() }),
            network_settings: Some(ContainerSummaryNetworkSettings {
                networks: Some(
                    networks
                        .iter()
                        .map(|(n, ip)| {
                            (n.to_string(), EndpointSettings { ip_address: Some(ip.to_string()), ..Default::default() })
                        })
                        .collect(),
                ),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn labelled_containers_become_targets() {
        let c = container(
            &[(SCRAPE, "true"), (PORT, "9835"), (PATH, "/gpu"), ("com.docker.compose.service", "nvidia-gpu-exporter")],
            &[("stack_default", "172.20.0.4"), ("bridge", "172.17.0.3")],
            &[9835, 22],
            "stack_default",
        );
        let t = target_of(&c, &config(None)).unwrap();
        assert_eq!(t.address, "172.17.0.3:9835", "the first network by name");
        assert_eq!(t.path.as_deref(), Some("/gpu"));
        assert!(t.labels.contains(&("__meta_docker_container_name".into(), "/gpu-exporter-1".into())));
        assert!(t.labels.contains(&(
            "__meta_docker_container_label_com_docker_compose_service".into(),
            "nvidia-gpu-exporter".into()
        )));
        assert_eq!(target_of(&c, &config(Some("stack_default"))).unwrap().address, "172.20.0.4:9835");
        assert_eq!(target_of(&c, &config(Some("elsewhere"))), None);
    }

    #[test]
    fn ports_and_networks() {
        let one_port = container(&[(SCRAPE, "true")], &[("bridge", "172.17.0.9")], &[9100, 9100], "bridge");
        assert_eq!(target_of(&one_port, &config(None)).unwrap().address, "172.17.0.9:9100");
        let two_ports = container(&[(SCRAPE, "true")], &[("bridge", "172.17.0.9")], &[9100, 9200], "bridge");
        assert_eq!(target_of(&two_ports, &config(None)), None);
        let host = container(&[(SCRAPE, "true"), (PORT, "9835")], &[("host", "")], &[], "host");
        assert_eq!(target_of(&host, &config(None)).unwrap().address, "127.0.0.1:9835");
        let off = container(&[(SCRAPE, "false"), (PORT, "9835")], &[("bridge", "172.17.0.9")], &[], "bridge");
        assert_eq!(target_of(&off, &config(None)), None);
        let bad_port = container(&[(SCRAPE, "true"), (PORT, "http")], &[("bridge", "172.17.0.9")], &[], "bridge");
        assert_eq!(target_of(&bad_port, &config(None)), None);
    }
}
