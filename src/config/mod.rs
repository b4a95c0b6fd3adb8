//! Configuration: the agent file and the pipeline files.
//!
//! Three steps, each with one job:
//! 1. **parse**: read a file, expand `${VAR}` (see [`env`]) and deserialize it into the plain serde
//!    types of this module and of each component's `config.rs` (`deny_unknown_fields` everywhere,
//!    so a typo is an error, not a silent default);
//! 2. **validate**: pure checks that serde cannot express (references between components, label
//!    names, regexes, selectors). Every error carries its file, line and column and all of them are
//!    reported at once;
//! 3. **build** (in `topology` and the components): turn validated config into running parts. Only
//!    that step does I/O.
//!
//! Config types derive `PartialEq` so that a reload can diff the old and the new set and rebuild
//! only what changed; positions ([`Located`]) never take part in that comparison.

pub mod agent;
pub mod common;
pub mod duration;
pub mod env;
pub mod pipeline;
pub mod tagged;

use serde::{Deserialize, Deserializer};
use std::fmt;
use std::path::{Path, PathBuf};

pub use agent::AgentConfig;
pub use duration::{ByteSize, HumanDuration};
pub use pipeline::PipelineFile;

/// A place in a config file, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    pub line: u32,
    pub column: u32,
}

impl Position {
    pub const START: Position = Position { line: 1, column: 1 };
}

/// A value with the place it was written. Equality ignores the place.
#[derive(Debug, Clone, Default)]
pub struct Located<T> {
    pub value: T,
    pub position: Position,
}

impl<T> Located<T> {
    pub fn new(value: T, position: Position) -> Self {
        Self { value, position }
    }
}

impl<T: PartialEq> PartialEq for Located<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<T> std::ops::Deref for Located<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = serde_saphyr::Spanned::<T>::deserialize(d)?;
        let position = Position {
            line: u32::try_from(spanned.referenced.line()).unwrap_or(u32::MAX),
            column: u32::try_from(spanned.referenced.column()).unwrap_or(u32::MAX),
        };
        Ok(Located { value: spanned.value, position })
    }
}

/// One config error: `FILE:LINE:COL: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub position: Position,
    pub message: String,
}

impl ConfigError {
    pub fn new(file: impl Into<PathBuf>, position: Position, message: impl Into<String>) -> Self {
        Self { file: file.into(), position, message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file.display(), self.position.line, self.position.column, self.message)
    }
}

/// Every error found in a set of config files, in file and line order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn push(&mut self, error: ConfigError) {
        self.0.push(error);
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn extend(&mut self, other: ConfigErrors) {
        self.0.extend(other.0);
    }
    /// `Ok(value)` when no error was collected, all of them otherwise (sorted by place).
    pub fn into_result<T>(mut self, value: T) -> Result<T, ConfigErrors> {
        if self.0.is_empty() {
            return Ok(value);
        }
        self.0.sort_by(|a, b| (&a.file, a.position).cmp(&(&b.file, b.position)));
        Err(self)
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads `path` as UTF-8 text.
pub fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError::new(path, Position::START, format!("cannot read file: {e}")))
}

/// Expands `${VAR}` in `text` (from the process environment) and deserializes it.
pub fn parse_yaml<T: for<'de> Deserialize<'de>>(file: &Path, text: &str) -> Result<T, ConfigError> {
    let expanded = env::expand(text, |name| std::env::var(name).ok())
        .map_err(|e| ConfigError::new(file, e.position, e.message))?;
    parse_yaml_expanded(file, &expanded)
}

/// Deserializes YAML text that needs no expansion.
pub fn parse_yaml_expanded<T: for<'de> Deserialize<'de>>(file: &Path, text: &str) -> Result<T, ConfigError> {
    serde_saphyr::from_str(text).map_err(|e| {
        let position = e
            .location()
            .map(|l| Position {
                line: u32::try_from(l.line()).unwrap_or(u32::MAX),
                column: u32::try_from(l.column()).unwrap_or(u32::MAX),
            })
            .unwrap_or(Position::START);
        ConfigError::new(file, position, yaml_message(&e.without_snippet().to_string()))
    })
}

/// The YAML library's message without the place (reported separately) and without advice that
/// names the library's own options.
fn yaml_message(rendered: &str) -> String {
    let mut message = rendered.trim();
    if let Some(i) = message.rfind(" at line ")
        && message[i + 9..].split(", column ").all(|part| part.trim().chars().all(|c| c.is_ascii_digit()))
    {
        message = &message[..i];
    }
    let message = message.strip_prefix("error: ").unwrap_or(message);
    message.replace(", set DuplicateKeyPolicy in Options if acceptable", "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        a: u32,
        b: Option<Located<String>>,
    }

    fn err(text: &str) -> ConfigError {
        parse_yaml_expanded::<Sample>(Path::new("f.yaml"), text).unwrap_err()
    }

    #[test]
    fn errors_carry_file_line_and_column() {
        assert_eq!(err("a: 1\nc: 2\n").to_string(), "f.yaml:2:1: unknown field `c`, expected one of a, b");
        assert_eq!(err("a: 1\na: 2\n").to_string(), "f.yaml:2:1: duplicate mapping key: a");
        assert_eq!(err("b: x\n").position, Position { line: 1, column: 1 });
        assert!(err("b: x\n").message.contains("missing field `a`"));
    }

    #[test]
    fn located_records_place_and_ignores_it_in_eq() {
        let s: Sample = parse_yaml_expanded(Path::new("f"), "a: 1\nb: hello\n").unwrap();
        let b = s.b.unwrap();
        assert_eq!((b.value.as_str(), b.position), ("hello", Position { line: 2, column: 4 }));
        assert_eq!(b, Located::new("hello".to_string(), Position::START));
    }
}
