//! Parsers for the container log formats, shared by pipeline stages (`docker`, `cri`) and the
//! sources that read those formats from disk. Pure functions over byte slices: no allocation
//! beyond what the caller passes in, no I/O, never a panic on any input (fuzzed and
//! property-tested).

pub mod cri;
pub mod docker_json;
pub mod json_object;
pub mod json_string;
pub mod time;

/// Which output stream of a container a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    Stdout,
    Stderr,
}

impl StreamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Stdout => "stdout",
            StreamKind::Stderr => "stderr",
        }
    }

    pub fn parse(text: &[u8]) -> Option<StreamKind> {
        match text {
            b"stdout" => Some(StreamKind::Stdout),
            b"stderr" => Some(StreamKind::Stderr),
            _ => None,
        }
    }
}
