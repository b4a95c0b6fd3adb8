//! The rotated generations of a followed path, and which of them are still to be read.
//!
//! A rotation renames `0.log` to a sibling named `0.log.<suffix>` (the kubelet's
//! `0.log.20240101-120000`, logrotate's `app.log.1`) and may gzip older ones
//! (`0.log.20240101-110000.gz`). When rotations outrun the follower, the generations it has not
//! read are among those siblings. A [`History`] tells them apart from the ones already read:
//!
//! - siblings last modified before the history's horizon are older history (written before the
//!   path was followed, or before its saved position);
//! - the others are matched against what was read: a plain file by identity, a gzipped one by
//!   the fingerprint of its decompressed start and its decompressed length (the gzip trailer).
//!   A plain file that grew after it was read is read on from where it was left.
//!
//! A gzip file still being written (the trailer does not match, and the data does not decompress
//! to its end) is not a generation yet: its plain source is still there, and is read instead.
//! Names ending in `.tmp` (the kubelet compresses into `<name>.gz.tmp` and renames) are never
//! generations.
//!
//! Ambiguity errs on the side of reading twice, never on the side of losing lines.

use super::discover::{FINGERPRINT_BYTES, FileId, Fingerprint};
use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Modification times come from the kernel's coarse clock, a tick behind the precise one.
const CLOCK_SLACK: Duration = Duration::from_millis(20);
/// Generations remembered per path (the kubelet keeps 5 files per container by default).
const REMEMBERED: usize = 32;

/// A rotated file next to a followed path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    pub path: PathBuf,
    pub id: FileId,
    pub compressed: bool,
    pub modified: SystemTime,
    pub len: u64,
}

impl Generation {
    fn at(path: PathBuf) -> Option<Generation> {
        let meta = std::fs::metadata(&path).ok()?;
        let compressed = path.extension().is_some_and(|e| e == "gz");
        meta.is_file().then(|| Generation {
            id: FileId::of(&meta),
            compressed,
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            len: meta.len(),
            path,
        })
    }

    /// The number of a logrotate-style name (`app.log.3`, `app.log.3.gz`).
    fn rotation_number(&self) -> Option<u64> {
        let name = self.path.file_name()?.to_str()?;
        let name = name.strip_suffix(".gz").unwrap_or(name);
        name.rsplit_once('.')?.1.parse().ok()
    }

    /// The fingerprint of its content's first bytes (decompressed when gzipped).
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        self.fingerprint_of(FINGERPRINT_BYTES)
    }

    /// The fingerprint of its content's first `len` bytes (fewer if it is shorter).
    pub fn fingerprint_of(&self, len: usize) -> Option<Fingerprint> {
        if !self.compressed {
            return Fingerprint::read(&self.path, len).ok();
        }
        let mut reader = flate2::read::MultiGzDecoder::new(std::fs::File::open(&self.path).ok()?);
        let mut buf = vec![0u8; len.min(FINGERPRINT_BYTES)];
        let mut filled = 0;
        while filled < buf.len() {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(_) => return None,
            }
        }
        Some(Fingerprint::of(&buf[..filled]))
    }

    /// Whether it is a gzip file that decompresses to its end (not one still being written).
    fn is_complete_gzip(&self) -> bool {
        let Ok(file) = std::fs::File::open(&self.path) else { return false };
        let mut reader = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(file));
        std::io::copy(&mut reader, &mut std::io::sink()).is_ok()
    }

    /// The length of its content: the file's, or the one a gzip trailer records (modulo 2³²).
    fn content_len(&self) -> Option<u64> {
        if !self.compressed {
            return Some(self.len);
        }
        let mut f = std::fs::File::open(&self.path).ok()?;
        f.seek(SeekFrom::End(-4)).ok()?;
        let mut trailer = [0u8; 4];
        f.read_exact(&mut trailer).ok()?;
        Some(u64::from(u32::from_le_bytes(trailer)))
    }
}

/// The rotated siblings of `base` (`<name>.<anything>`), oldest first.
pub fn siblings(base: &Path) -> Vec<Generation> {
    list(base).0
}

/// The rotated siblings of `base`, oldest first, and whether one of the names listed was gone
/// before it could be looked at (a rotation or compression was under way).
fn list(base: &Path) -> (Vec<Generation>, bool) {
    let (Some(dir), Some(name)) = (base.parent(), base.file_name()) else { return (Vec::new(), false) };
    let mut prefix = name.as_encoded_bytes().to_vec();
    prefix.push(b'.');
    let Ok(entries) = std::fs::read_dir(dir) else { return (Vec::new(), false) };
    let mut vanished = false;
    let mut found: Vec<Generation> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.as_encoded_bytes();
            name.starts_with(&prefix) && !name.ends_with(b".tmp")
        })
        .filter_map(|e| {
            let generation = Generation::at(e.path());
            vanished |= generation.is_none();
            generation
        })
        .collect();
    found.sort_by(|a, b| {
        // Rotations within one tick of the coarse clock share a modification time: then the
        // name tells, where logrotate's numbers count down (`app.log.2` is older than
        // `app.log.1`) and other suffixes (the kubelet's timestamps) count up.
        a.modified.cmp(&b.modified).then_with(|| match (a.rotation_number(), b.rotation_number()) {
            (Some(x), Some(y)) => y.cmp(&x),
            _ => a.path.cmp(&b.path),
        })
    });
    (found, vanished)
}

/// One generation read by this process.
#[derive(Debug, Clone, Copy)]
struct ReadGeneration {
    id: FileId,
    compressed: bool,
    fingerprint: Fingerprint,
    /// Content bytes read.
    len: u64,
}

/// What was read of one path: tells its unread rotated generations apart.
#[derive(Debug, Clone)]
pub struct History {
    horizon: SystemTime,
    read: VecDeque<ReadGeneration>,
}

impl History {
    /// Rotated files modified before `horizon` count as read.
    pub fn since(horizon: SystemTime) -> History {
        History { horizon, read: VecDeque::new() }
    }

    /// Records a generation read up to `len` bytes of content.
    pub fn record(&mut self, id: FileId, compressed: bool, fingerprint: Fingerprint, len: u64) {
        // (Identities are not unique over time: a gzip frees an inode for the next file.)
        if self.read.len() == REMEMBERED {
            self.read.pop_front();
        }
        self.read.push_back(ReadGeneration { id, compressed, fingerprint, len });
    }

    /// The rotated generations of `base` not read yet, oldest first, each with the content
    /// offset to read it from.
    pub fn unread(&self, base: &Path) -> Unread {
        let (siblings, vanished) = list(base);
        let mut unread = Unread { generations: Vec::new(), settled: !vanished };
        for g in siblings.iter().filter(|g| g.modified + CLOCK_SLACK >= self.horizon) {
            match self.standing_of(g) {
                Standing::From(start) => unread.generations.push((g.clone(), start)),
                Standing::Read => {}
                Standing::UnfinishedGzip => {
                    // An unfinished gzip stands for its plain source, which must be there.
                    let source = g.path.with_extension("");
                    unread.settled &= siblings.iter().any(|p| !p.compressed && p.path == source);
                }
            }
        }
        unread
    }

    /// Whether `g` was read, and where to read it from if not.
    fn standing_of(&self, g: &Generation) -> Standing {
        let same_start = |r: &ReadGeneration| g.fingerprint_of(r.fingerprint.len as usize) == Some(r.fingerprint);
        // The same file, unless its inode was recycled for another one: read on from where it
        // was left if it grew.
        if let Some(known) =
            self.read.iter().rev().find(|r| r.compressed == g.compressed && r.id == g.id && same_start(r))
        {
            let grew = g.content_len().is_some_and(|len| len > known.len);
            return if grew { Standing::From(known.len) } else { Standing::Read };
        }
        if !g.compressed {
            return Standing::From(0);
        }
        // A plain generation read, gzipped since: the same start and length.
        let len = g.content_len();
        if self.read.iter().any(|r| !r.compressed && Some(r.len % (1 << 32)) == len && same_start(r)) {
            return Standing::Read;
        }
        // Another content, or a gzip still being written (its trailer is not there yet).
        if g.is_complete_gzip() { Standing::From(0) } else { Standing::UnfinishedGzip }
    }
}

/// What a [`History`] knows of one rotated generation.
enum Standing {
    /// Read to its end.
    Read,
    /// Not read (further) yet: read it from this content offset.
    From(u64),
    /// A gzip still being written: its plain source stands for it.
    UnfinishedGzip,
}

/// The rotated generations of a path not read yet.
#[derive(Debug)]
pub struct Unread {
    /// Oldest first, each with the content offset to read it from.
    pub generations: Vec<(Generation, u64)>,
    /// False when the listing raced a rotation or compression under way (a file gone before it
    /// was looked at, a gzip unfinished without its plain source beside it): an older
    /// generation may be missing from the list, so reading the newer ones now could reorder
    /// the path's lines. Listing again a moment later settles it.
    pub settled: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(path: &Path, content: &[u8]) -> Generation {
        std::fs::write(path, content).unwrap();
        Generation::at(path.to_path_buf()).unwrap()
    }

    fn gzip(path: &Path, content: &[u8]) -> Generation {
        let mut enc = flate2::write::GzEncoder::new(std::fs::File::create(path).unwrap(), flate2::Compression::fast());
        enc.write_all(content).unwrap();
        enc.finish().unwrap();
        Generation::at(path.to_path_buf()).unwrap()
    }

    /// The unread generations of a settled listing.
    fn names(unread: &Unread) -> Vec<(String, u64)> {
        assert!(unread.settled, "{unread:?}");
        unread
            .generations
            .iter()
            .map(|(g, start)| (g.path.file_name().unwrap().to_string_lossy().into_owned(), *start))
            .collect()
    }

    #[test]
    fn siblings_are_rotated_files_of_the_path_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("0.log");
        write(&base, b"current\n");
        write(&dir.path().join("0.log.2"), b"b\n");
        std::thread::sleep(Duration::from_millis(30));
        write(&dir.path().join("0.log.1"), b"a\n");
        write(&dir.path().join("1.log.1"), b"other\n");
        let found: Vec<String> =
            siblings(&base).iter().map(|g| g.path.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(found, ["0.log.2", "0.log.1"], "by modification time, not by name");
    }

    #[test]
    fn rotations_within_one_clock_tick_are_ordered_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("0.log");
        let tick = SystemTime::now();
        let names_in_order = |names: &[&str]| {
            for name in names {
                let path = dir.path().join(name);
                std::fs::write(&path, name.as_bytes()).unwrap();
                std::fs::File::options().write(true).open(&path).unwrap().set_modified(tick).unwrap();
            }
            let found: Vec<String> =
                siblings(&base).iter().map(|g| g.path.file_name().unwrap().to_string_lossy().into_owned()).collect();
            for name in names {
                std::fs::remove_file(dir.path().join(name)).unwrap();
            }
            found
        };
        assert_eq!(names_in_order(&["0.log.1", "0.log.10", "0.log.2.gz"]), ["0.log.10", "0.log.2.gz", "0.log.1"]);
        assert_eq!(
            names_in_order(&["0.log.20240101-120001", "0.log.20240101-120000.gz"]),
            ["0.log.20240101-120000.gz", "0.log.20240101-120001"]
        );
    }

    #[test]
    fn read_generations_and_older_history_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("0.log");
        let old = gzip(&dir.path().join("0.log.0.gz"), b"long ago\n");
        std::thread::sleep(Duration::from_millis(50));
        let mut history = History::since(SystemTime::now());
        let first = write(&dir.path().join("0.log.1"), b"first generation\n");
        history.record(first.id, false, first.fingerprint().unwrap(), first.len);
        let second = write(&dir.path().join("0.log.2"), b"second generation\n");
        assert_eq!(names(&history.unread(&base)), [("0.log.2".to_string(), 0)]);
        assert!(old.modified < history.horizon);
        // The first one gets gzipped: still read, known by its content.
        std::fs::remove_file(&first.path).unwrap();
        gzip(&dir.path().join("0.log.1.gz"), b"first generation\n");
        assert_eq!(names(&history.unread(&base)), [("0.log.2".to_string(), 0)]);
        history.record(second.id, false, second.fingerprint().unwrap(), second.len);
        assert!(names(&history.unread(&base)).is_empty());
        // With an older horizon, every rotated file is unread.
        assert_eq!(names(&History::since(SystemTime::UNIX_EPOCH).unread(&base)).len(), 3);
    }

    #[test]
    fn a_generation_written_after_it_was_read_is_read_on() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("0.log");
        let mut history = History::since(SystemTime::UNIX_EPOCH);
        let g = write(&dir.path().join("0.log.1"), b"read\n");
        history.record(g.id, false, g.fingerprint().unwrap(), g.len);
        std::fs::OpenOptions::new().append(true).open(&g.path).unwrap().write_all(b"late\n").unwrap();
        assert_eq!(names(&history.unread(&base)), [("0.log.1".to_string(), 5)]);
    }

    #[test]
    fn a_gzip_being_written_is_not_a_generation_yet() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("0.log");
        let mut history = History::since(SystemTime::UNIX_EPOCH);
        let content: Vec<u8> = (0..2000).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
        let g = write(&dir.path().join("0.log.1"), &content);
        history.record(g.id, false, g.fingerprint().unwrap(), g.len);
        // gzip writes 0.log.1.gz as it goes and removes 0.log.1 when done.
        let whole = std::fs::read(gzip(&dir.path().join("whole.gz"), &content).path).unwrap();
        std::fs::remove_file(dir.path().join("whole.gz")).unwrap();
        std::fs::write(dir.path().join("0.log.1.gz"), &whole[..whole.len() / 2]).unwrap();
        assert!(names(&history.unread(&base)).is_empty());
        // One never read, being compressed: its plain source is the generation.
        let h = write(&dir.path().join("0.log.2"), b"second\n");
        std::fs::write(dir.path().join("0.log.2.gz"), &whole[..10]).unwrap();
        // The kubelet's temporary file is never one.
        std::fs::write(dir.path().join("0.log.3.gz.tmp"), &whole).unwrap();
        assert_eq!(names(&history.unread(&base)), [("0.log.2".to_string(), 0)]);
        history.record(h.id, false, h.fingerprint().unwrap(), h.len);
        // Complete now.
        std::fs::write(dir.path().join("0.log.1.gz"), &whole).unwrap();
        assert!(names(&history.unread(&base)).is_empty());
        // An unfinished gzip whose source is gone already (listed in between): not settled.
        std::fs::remove_file(&h.path).unwrap();
        let racing = history.unread(&base);
        assert!(!racing.settled && racing.generations.is_empty(), "{racing:?}");
    }

    #[test]
    fn a_gzipped_generation_with_the_same_start_but_other_content_is_unread() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("0.log");
        let mut history = History::since(SystemTime::UNIX_EPOCH);
        let line = b"GET /health 200\n";
        let g = write(&dir.path().join("0.log.1"), &line.repeat(20));
        let fingerprint = g.fingerprint().unwrap();
        history.record(g.id, false, fingerprint, g.len);
        std::fs::remove_file(&g.path).unwrap();
        let longer = gzip(&dir.path().join("0.log.2.gz"), &line.repeat(40));
        assert_eq!(longer.fingerprint(), Some(fingerprint), "the same first 256 bytes");
        assert_eq!(names(&history.unread(&base)), [("0.log.2.gz".to_string(), 0)]);
    }
}
