//! Writing log files the way the kubelet and dockerd do: CRI and json-file lines, rotation by
//! rename (with gzip of older files) and by copy-truncate.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The format a writer produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Cri,
    Docker,
}

/// How a writer rotates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// `f` → `f.<n>` then a new `f` (kubelet: `0.log.<timestamp>`, older ones gzipped).
    Rename,
    /// Copy `f` to `f.<n>`, truncate `f` in place.
    CopyTruncate,
}

pub struct LogWriter {
    pub path: PathBuf,
    format: Format,
    file: std::fs::File,
    pub rotations: usize,
}

fn rfc3339(nanos: i64) -> String {
    sluice::formats::time::format_rfc3339_nanos(nanos)
}

impl LogWriter {
    pub fn create(path: &Path, format: Format) -> LogWriter {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
        LogWriter { path: path.to_path_buf(), format, file, rotations: 0 }
    }

    /// Writes one line as the runtime would (split in `P` parts for CRI when `parts` > 1).
    pub fn line(&mut self, time: i64, stream: &str, content: &str) {
        let text = match self.format {
            Format::Cri => format!("{} {stream} F {content}\n", rfc3339(time)),
            Format::Docker => format!(
                "{}\n",
                serde_json::json!({"log": format!("{content}\n"), "stream": stream, "time": rfc3339(time)})
            ),
        };
        self.file.write_all(text.as_bytes()).unwrap();
    }

    /// Writes a line in CRI parts of at most `part` bytes.
    pub fn cri_parts(&mut self, time: i64, stream: &str, content: &str, part: usize) {
        let chunks: Vec<&[u8]> = content.as_bytes().chunks(part).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let tag = if i + 1 == chunks.len() { "F" } else { "P" };
            self.file.write_all(format!("{} {stream} {tag} ", rfc3339(time + i as i64)).as_bytes()).unwrap();
            self.file.write_all(chunk).unwrap();
            self.file.write_all(b"\n").unwrap();
        }
    }

    /// Writes raw bytes.
    pub fn raw(&mut self, bytes: &[u8]) {
        self.file.write_all(bytes).unwrap();
    }

    pub fn rotate(&mut self, how: Rotation) {
        self.rotations += 1;
        let rotated = PathBuf::from(format!("{}.{}", self.path.display(), self.rotations));
        match how {
            Rotation::Rename => {
                std::fs::rename(&self.path, &rotated).unwrap();
                // The previous rotated file is compressed, as the kubelet does.
                if self.rotations > 1 {
                    let older = PathBuf::from(format!("{}.{}", self.path.display(), self.rotations - 1));
                    let status = std::process::Command::new("gzip").arg("-f").arg(&older).status().unwrap();
                    assert!(status.success());
                }
                self.file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path).unwrap();
            }
            Rotation::CopyTruncate => {
                std::fs::copy(&self.path, &rotated).unwrap();
                self.file.set_len(0).unwrap();
            }
        }
    }
}
