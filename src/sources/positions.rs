//! Positions: where each stream a source reads (a container, a file) is up to, kept in one JSON
//! file per source in the data directory.
//!
//! Writes are atomic (temporary file, fsync, rename, fsync of the directory): after a crash the
//! file holds either the old or the new positions, never a torn mix. Positions only ever hold
//! what the sinks acknowledged (see [`Checkpoints`]).

use crate::event::AckStatus;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::VecDeque;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// A positions file.
#[derive(Debug, Clone)]
pub struct PositionsFile {
    path: PathBuf,
}

impl PositionsFile {
    pub fn new(data_dir: &Path, source: &str) -> PositionsFile {
        let name: String =
            source.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
        PositionsFile { path: data_dir.join(format!("positions-{name}.json")) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved positions; `None` when there is no file yet.
    pub fn load<T: DeserializeOwned>(&self) -> std::io::Result<Option<T>> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", self.path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces the file atomically.
    pub fn save<T: Serialize>(&self, value: &T) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = self.path.with_extension("json.tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        std::fs::File::open(dir)?.sync_all()
    }

    /// [`PositionsFile::save`] on the blocking pool.
    pub async fn save_async<T: Serialize + Send + 'static>(&self, value: T) -> std::io::Result<()> {
        let file = self.clone();
        tokio::task::spawn_blocking(move || file.save(&value)).await.map_err(std::io::Error::other)?
    }
}

/// The checkpoints of one stream's batches, committed in order as their acknowledgements arrive:
/// the committed position is the one after the longest run of settled batches from the start.
/// An abandoned batch stops the run for good (until a restart reads those lines again).
#[derive(Debug)]
pub struct Checkpoints<P> {
    pending: VecDeque<(u64, P, Option<AckStatus>)>,
    next: u64,
    blocked: bool,
}

impl<P: Clone> Default for Checkpoints<P> {
    fn default() -> Self {
        Checkpoints { pending: VecDeque::new(), next: 0, blocked: false }
    }
}

impl<P: Clone> Checkpoints<P> {
    /// Registers the position a batch reaches; returns its sequence number for the ack.
    pub fn push(&mut self, position: P) -> u64 {
        let seq = self.next;
        self.next += 1;
        self.pending.push_back((seq, position, None));
        seq
    }

    /// Records an acknowledgement; returns the new committed position if it moved.
    pub fn ack(&mut self, seq: u64, status: AckStatus) -> Option<P> {
        if let Some(slot) = self.pending.iter_mut().find(|(s, ..)| *s == seq) {
            slot.2 = Some(status);
        }
        if status == AckStatus::Abandoned {
            self.blocked = true;
        }
        let mut committed = None;
        while !self.blocked {
            match self.pending.front() {
                Some((_, _, Some(AckStatus::Settled))) => committed = self.pending.pop_front().map(|(_, p, _)| p),
                _ => break,
            }
        }
        committed
    }

    /// Batches sent and not yet committed.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Batches whose acknowledgement has not arrived (neither settled nor abandoned).
    pub fn unresolved(&self) -> usize {
        self.pending.iter().filter(|(.., status)| status.is_none()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_in_order_as_acks_arrive() {
        let mut c = Checkpoints::default();
        let a = c.push(10);
        let b = c.push(20);
        let d = c.push(30);
        assert_eq!(c.ack(b, AckStatus::Settled), None, "20 waits for 10");
        assert_eq!(c.ack(a, AckStatus::Settled), Some(20));
        assert_eq!(c.in_flight(), 1);
        assert_eq!(c.ack(d, AckStatus::Settled), Some(30));
    }

    #[test]
    fn an_abandoned_batch_stops_the_position() {
        let mut c = Checkpoints::default();
        let a = c.push(1);
        let b = c.push(2);
        assert_eq!(c.ack(a, AckStatus::Abandoned), None);
        assert_eq!(c.ack(b, AckStatus::Settled), None);
    }

    #[test]
    fn saves_atomically_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let file = PositionsFile::new(dir.path(), "docker/main");
        assert_eq!(file.load::<Vec<u32>>().unwrap(), None);
        file.save(&vec![1u32, 2, 3]).unwrap();
        assert_eq!(file.load::<Vec<u32>>().unwrap(), Some(vec![1, 2, 3]));
        assert!(file.path().ends_with("positions-docker_main.json"));
        assert!(!file.path().with_extension("json.tmp").exists());
        std::fs::write(file.path(), b"{not json").unwrap();
        assert!(file.load::<Vec<u32>>().is_err());
    }
}
