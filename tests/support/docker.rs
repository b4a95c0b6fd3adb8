//! Real Docker containers for the tests: the test images are built here (a static log
//! generator compiled from `loggen.rs`, plus Debian's busybox-static) and imported with
//! `docker import`, as no image can be pulled. Containers carry the label `sluice-test` and are
//! removed when their handle drops.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

static IMAGE: OnceLock<String> = OnceLock::new();

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The test image (`/loggen`, `/bin/sh` and busybox tools), built once per test run.
pub fn image() -> &'static str {
    IMAGE.get_or_init(|| {
        let source = include_str!("loggen.rs");
        let hash = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            source.hash(&mut h);
            h.finish()
        };
        let tag = format!("sluice-test/loggen:{hash:016x}");
        let exists = Command::new("docker")
            .args(["image", "inspect", &tag])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if exists {
            return tag;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        let src = dir.path().join("loggen.rs");
        std::fs::write(&src, source).unwrap();
        run(Command::new("rustc")
            .args(["--edition", "2021", "-O", "-C", "target-feature=+crt-static", "-o"])
            .arg(root.join("loggen"))
            .arg(&src));
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect("busybox-static is installed");
        std::fs::copy(&busybox, root.join("bin/busybox")).unwrap();
        for tool in ["sh", "sleep", "echo", "cat", "seq", "yes", "head", "printf", "true", "kill"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(tool)).unwrap();
        }
        let tar = dir.path().join("image.tar");
        run(Command::new("tar").arg("-C").arg(&root).arg("-cf").arg(&tar).arg("."));
        run(Command::new("docker").args(["import", "--change", "ENV PATH=/bin"]).arg(&tar).arg(&tag));
        tag
    })
}

/// A container started by a test; removed on drop.
pub struct Container {
    pub name: String,
    pub id: String,
}

/// `docker run -d` options.
#[derive(Default)]
pub struct RunOptions<'a> {
    pub tty: bool,
    pub labels: &'a [(&'a str, &'a str)],
    pub log_opts: &'a [&'a str],
}

impl Container {
    /// Starts `command` (e.g. `["/loggen", "--lines", "10"]`) in a new container.
    pub fn run(name: &str, command: &[&str], options: RunOptions<'_>) -> Container {
        let _ = Command::new("docker").args(["rm", "-f", name]).output();
        let mut cmd = Command::new("docker");
        cmd.args(["run", "-d", "--name", name, "--label", "sluice-test=1"]);
        if options.tty {
            cmd.arg("-t");
        }
        for (k, v) in options.labels {
            cmd.args(["--label", &format!("{k}={v}")]);
        }
        for o in options.log_opts {
            cmd.args(["--log-opt", o]);
        }
        cmd.arg(image()).args(command);
        let id = run(&mut cmd);
        Container { name: name.to_string(), id }
    }

    pub fn docker(&self, args: &[&str]) -> String {
        run(Command::new("docker").args(args).arg(&self.name))
    }

    pub fn restart(&self) {
        self.docker(&["restart", "-t", "1"]);
    }

    pub fn start(&self) {
        self.docker(&["start"]);
    }

    pub fn stop(&self) {
        self.docker(&["stop", "-t", "1"]);
    }

    pub fn remove(&self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.name]).output();
    }

    /// Waits until the container exited (or panics after `timeout`).
    pub async fn wait_exit(&self, timeout: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let running = run(Command::new("docker").args(["inspect", "-f", "{{.State.Running}}", &self.name]));
            if running == "false" {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{} still running after {timeout:?}", self.name);
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.remove();
    }
}

/// The Docker socket path.
pub fn socket() -> &'static Path {
    Path::new("/var/run/docker.sock")
}
