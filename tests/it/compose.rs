//! The stack's compose file, for real: its `sluice` service (image built on the host from the
//! Dockerfile's `prebuilt` stage) follows a compose service's logs through the Docker socket and
//! ships them to the test Loki. The other images of the stack cannot be pulled here.

use crate::support::docker::image;
use crate::support::loki::TestLoki;
use std::process::Command;
use std::time::Duration;

const PROJECT: &str = "sluiceit";

fn repo() -> &'static str {
    env!("CARGO_MANIFEST_DIR")
}

fn compose(env: &[(&str, String)], args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new("docker-compose");
    cmd.current_dir(repo())
        .args(["-p", PROJECT, "-f", "docker-compose.yaml", "-f", "tests/compose/docker-compose.test.yaml"])
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    cmd.output().expect("docker-compose runs")
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

struct Cleanup(Vec<(&'static str, String)>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", "sluiceit_sluice", "sluiceit_loggen"]).output();
        let _ = compose(&self.0, &["down", "-v", "--remove-orphans"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_sluice_service_ships_a_compose_services_logs() {
    let loki = TestLoki::start_on_all_interfaces().await;
    let tag = "sluice:it-compose";
    let built = Command::new(format!("{}/docker/build-runtime-image.sh", repo()))
        .args([env!("CARGO_BIN_EXE_sluice"), tag])
        .output()
        .expect("build the runtime image");
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    let env = vec![
        ("SLUICE_TEST_IMAGE", tag.to_string()),
        ("TEST_LOKI_PORT", loki.addr.port().to_string()),
        ("LOGGEN_IMAGE", image().to_string()),
    ];
    let _cleanup = Cleanup(env.clone());
    let config = compose(&env, &["config", "-q"]);
    assert!(config.status.success(), "{}", String::from_utf8_lossy(&config.stderr));
    for (name, service) in [("sluiceit_sluice", "sluice"), ("sluiceit_loggen", "loggen")] {
        let out = compose(&env, &["run", "-d", "--no-deps", "--name", name, service]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        if service == "sluice" {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let lines = loop {
        let lines: Vec<_> = loki
            .stored()
            .into_iter()
            .filter(|e| e.labels.get("container_name").map(String::as_str) == Some("sluiceit_loggen"))
            .collect();
        if lines.len() >= 5000 {
            break lines;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of 5000 lines; sluice logs:\n{}",
            lines.len(),
            docker(&["logs", "--tail", "30", "sluiceit_sluice"])
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(lines.len(), 5000);
    assert_eq!(lines.iter().filter(|e| e.labels["stream"] == "stderr").count(), 1000);
    let mut seqs: Vec<u64> = lines
        .iter()
        .map(|e| serde_json::from_str::<serde_json::Value>(&e.line).unwrap()["seq"].as_u64().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..5000).collect::<Vec<_>>(), "every line once");
    for e in &lines {
        assert_eq!(e.labels["compose_project"], PROJECT);
        assert_eq!(e.labels["compose_service"], "loggen");
    }
    assert!(
        !loki.stored().iter().any(|e| e.labels.get("container_name").map(String::as_str) == Some("sluiceit_sluice")),
        "sluice leaves its own container out"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while docker(&["inspect", "-f", "{{.State.Health.Status}}", "sluiceit_sluice"]) != "healthy" {
        assert!(tokio::time::Instant::now() < deadline, "the image's health check (sluice healthcheck) never passed");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    docker(&["stop", "-t", "20", "sluiceit_sluice"]);
    assert_eq!(docker(&["inspect", "-f", "{{.State.ExitCode}}", "sluiceit_sluice"]), "0", "SIGTERM: a clean exit");
}
