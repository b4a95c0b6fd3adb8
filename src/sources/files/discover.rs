//! Finding files: glob patterns, exclusions, file identity and what a Kubernetes log path says.

use glob::Pattern;
use std::hash::Hasher;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A file's identity: device and inode, plus a fingerprint of its first bytes so that an inode
/// reused by a new file is not taken for the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(metadata: &std::fs::Metadata) -> FileId {
        FileId { dev: metadata.dev(), ino: metadata.ino() }
    }
}

/// How many leading bytes identify a file's content.
pub const FINGERPRINT_BYTES: usize = 256;

/// A hash of a file's first bytes, and how many there were.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fingerprint {
    pub len: u32,
    pub hash: u64,
}

impl Fingerprint {
    pub fn of(bytes: &[u8]) -> Fingerprint {
        let bytes = &bytes[..bytes.len().min(FINGERPRINT_BYTES)];
        let mut h = std::hash::BuildHasher::build_hasher(&foldhash::fast::FixedState::with_seed(0x5eed));
        h.write(bytes);
        Fingerprint { len: bytes.len() as u32, hash: h.finish() }
    }

    /// Reads the fingerprint of the first `len` bytes of `path` (fewer if the file is shorter).
    pub fn read(path: &Path, len: usize) -> std::io::Result<Fingerprint> {
        use std::io::Read;
        let mut buf = vec![0u8; len.min(FINGERPRINT_BYTES)];
        let mut f = std::fs::File::open(path)?;
        let mut filled = 0;
        while filled < buf.len() {
            let n = f.read(&mut buf[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        Ok(Fingerprint::of(&buf[..filled]))
    }
}

/// Compiled include and exclude patterns.
pub struct Globs {
    include: Vec<String>,
    exclude: Vec<Pattern>,
}

impl Globs {
    pub fn new(include: &[String], exclude: &[String]) -> Result<Globs, String> {
        for p in include {
            Pattern::new(p).map_err(|e| format!("invalid glob `{p}`: {e}"))?;
        }
        let exclude = exclude
            .iter()
            .map(|p| Pattern::new(p).map_err(|e| format!("invalid glob `{p}`: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(Globs { include: include.to_vec(), exclude })
    }

    /// Every regular file the patterns match now, sorted, without the excluded ones.
    pub fn expand(&self) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = self
            .include
            .iter()
            .filter_map(|p| glob::glob(p).ok())
            .flatten()
            .filter_map(Result::ok)
            .filter(|p| p.is_file() && !self.exclude.iter().any(|x| x.matches_path(p)))
            .collect();
        found.sort();
        found.dedup();
        found
    }

    /// The directories to watch for changes: each pattern's longest prefix without wildcards.
    pub fn roots(&self) -> Vec<PathBuf> {
        let mut roots: Vec<PathBuf> = self
            .include
            .iter()
            .map(|p| {
                let prefix: PathBuf = Path::new(p)
                    .components()
                    .take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[']))
                    .collect();
                if prefix == Path::new(p) { prefix.parent().map(Path::to_path_buf).unwrap_or_default() } else { prefix }
            })
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        roots.sort();
        roots.dedup();
        roots
    }
}

/// What a kubelet log path says: `/var/log/pods/<namespace>_<pod>_<uid>/<container>/<n>.log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPath {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    pub container: String,
}

impl PodPath {
    pub fn parse(path: &Path) -> Option<PodPath> {
        let mut parts = path.components().rev().map(|c| c.as_os_str().to_string_lossy());
        let _file = parts.next()?;
        let container = parts.next()?.into_owned();
        let pod_dir = parts.next()?;
        // Namespaces and pod names cannot hold `_`; the uid comes last.
        let mut fields = pod_dir.splitn(3, '_');
        let (namespace, pod, uid) = (fields.next()?, fields.next()?, fields.next()?);
        if namespace.is_empty() || pod.is_empty() || uid.is_empty() || container.is_empty() {
            return None;
        }
        Some(PodPath { namespace: namespace.into(), pod: pod.into(), uid: uid.into(), container })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_paths() {
        let p = PodPath::parse(Path::new("/var/log/pods/shop_api-7d4b9c-xk2lp_1f0e-22aa/api/0.log")).unwrap();
        assert_eq!(
            p,
            PodPath {
                namespace: "shop".into(),
                pod: "api-7d4b9c-xk2lp".into(),
                uid: "1f0e-22aa".into(),
                container: "api".into()
            }
        );
        assert_eq!(PodPath::parse(Path::new("/var/log/app.log")), None);
    }

    #[test]
    fn globs_expand_exclude_and_give_roots() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["ns_a_1/c/0.log", "ns_b_2/c/0.log", "ns_b_2/c/0.log.20240101-000000", "ns_b_2/skip/0.log"] {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "x").unwrap();
        }
        let root = dir.path().display().to_string();
        let g = Globs::new(&[format!("{root}/*/*/*.log")], &[format!("{root}/*/skip/*")]).unwrap();
        let found: Vec<String> =
            g.expand().iter().map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string()).collect();
        assert_eq!(found, ["ns_a_1/c/0.log", "ns_b_2/c/0.log"]);
        assert_eq!(g.roots(), [dir.path().to_path_buf()]);
        assert!(Globs::new(&["[".into()], &[]).is_err());
    }

    #[test]
    fn fingerprints_tell_files_apart() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, "hello world").unwrap();
        let fp = Fingerprint::read(&p, FINGERPRINT_BYTES).unwrap();
        assert_eq!(fp, Fingerprint::of(b"hello world"));
        assert_eq!(Fingerprint::read(&p, 5).unwrap(), Fingerprint::of(b"hello"));
        assert_ne!(fp, Fingerprint::of(b"hello there"));
    }
}
