//! `sluice convert`: writes a sluice agent file and pipeline files from another agent's config.
//!
//! Only Promtail's config is read for now ([`promtail`]). The contract:
//! - The input is read with the place of every node ([`yaml`]); nothing of it is silently
//!   dropped. Each part that the output does not carry is an [`Issue`], printed as
//!   `FILE:LINE:COL: not converted: <what> (<why>)`, in input order.
//! - The output is a set of files ([`Conversion::files`]) relative to the output directory:
//!   `sluice.yaml` and `pipelines/<job>.yaml`, each with a header comment that says what it was
//!   converted from, when, and that it needs a review.
//! - The output is checked with sluice's own parser, validation and pipeline build before it is
//!   returned: a part that sluice would refuse (a regex RE2 reads but Rust's `regex` does not, a
//!   template function sluice lacks, a JMESPath expression beyond sluice's paths, a field sluice
//!   does not have) is taken out of the output and reported, so that what is written passes
//!   `sluice check`. The one exception: a part whose text holds a `${VAR}` reference is kept,
//!   since its value is only known where the agent runs.
//! - Converting never touches the disk; [`write`] does, and refuses to write over an existing
//!   sluice config.

pub mod promtail;
pub mod yaml;

use crate::config::{self, AgentConfig, ConfigError, Position};
use crate::pipeline::{BuildContext, LoadedPipeline, build_set};
use crate::telemetry::Telemetry;
use std::fmt;
use std::path::{Path, PathBuf};
use yaml::{Node, Path as NodePath, Step};

/// The agent file's name in the output directory.
pub const AGENT_FILE: &str = "sluice.yaml";
/// The pipelines directory in the output directory.
pub const PIPELINES_DIR: &str = "pipelines";

/// A part of the input that the output does not carry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Issue {
    pub file: PathBuf,
    pub position: Position,
    pub what: String,
    pub why: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: not converted: {} ({})",
            self.file.display(),
            self.position.line,
            self.position.column,
            self.what,
            self.why
        )
    }
}

/// One file of the output, relative to the output directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFile {
    pub path: PathBuf,
    pub text: String,
}

/// The result of a conversion: the files to write and what was left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversion {
    pub files: Vec<OutputFile>,
    /// In input order.
    pub issues: Vec<Issue>,
}

/// The output before it is checked and written: the agent file and the pipeline files, as trees
/// whose nodes remember where in the input they came from.
#[derive(Debug, Clone)]
pub struct Draft {
    pub agent: Node,
    pub pipelines: Vec<PipelineDraft>,
}

#[derive(Debug, Clone)]
pub struct PipelineDraft {
    /// The file name in `pipelines/`.
    pub file_name: String,
    /// The first header line (what the pipeline was converted from).
    pub origin: String,
    pub root: Node,
}

/// Converts a Promtail config. `input` names the file in issues and headers; `date` is written
/// in the headers. Fails only when `text` is not YAML.
pub fn convert_promtail(input: &Path, text: &str, date: &str) -> Result<Conversion, ConfigError> {
    let root = yaml::parse(text).map_err(|e| ConfigError::new(input, e.position, e.message))?;
    let (mut draft, mut issues) = promtail::convert(input, &root);
    issues.extend(settle(input, &mut draft));
    issues.sort();
    issues.dedup();
    Ok(finish(input, draft, issues, date, "promtail"))
}

/// Today's date (UTC), for headers.
pub fn today() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%d").to_string()
}

/// Why [`write`] failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{0} already holds a sluice config; convert into an empty or new directory")]
    Exists(PathBuf),
    #[error("cannot write {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Writes the files under `dir` (created if needed). Refuses when `dir` already holds
/// `sluice.yaml` or a non-empty `pipelines/`, so that nothing is overwritten.
pub fn write(conversion: &Conversion, dir: &Path) -> Result<Vec<PathBuf>, WriteError> {
    let agent = dir.join(AGENT_FILE);
    let pipelines = dir.join(PIPELINES_DIR);
    let pipelines_used = std::fs::read_dir(&pipelines).map(|mut d| d.next().is_some()).unwrap_or(false);
    if agent.exists() || pipelines_used {
        return Err(WriteError::Exists(dir.to_path_buf()));
    }
    let mut written = Vec::new();
    for file in &conversion.files {
        let path = dir.join(&file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| WriteError::Io { path: parent.to_path_buf(), source })?;
        }
        std::fs::write(&path, &file.text).map_err(|source| WriteError::Io { path: path.clone(), source })?;
        written.push(path);
    }
    Ok(written)
}

fn finish(input: &Path, draft: Draft, issues: Vec<Issue>, date: &str, from: &str) -> Conversion {
    let review = match issues.len() {
        0 => "Review it before use: docs/MIGRATING.md lists what sluice does differently.".to_string(),
        1 => "Review it before use: 1 part of the input was not converted (`sluice convert` listed it\n\
              with its place); docs/MIGRATING.md lists what sluice does differently."
            .to_string(),
        n => format!(
            "Review it before use: {n} parts of the input were not converted (`sluice convert` listed\n\
             them with their places); docs/MIGRATING.md lists what sluice does differently."
        ),
    };
    let agent_header = vec![
        format!("sluice agent config, converted from {} by `sluice convert --from {from}` on {date}.", input.display()),
        review.clone(),
    ];
    let mut files =
        vec![OutputFile { path: PathBuf::from(AGENT_FILE), text: yaml::emit(&draft.agent, &agent_header).text }];
    for p in &draft.pipelines {
        let header = vec![
            format!("{},", p.origin),
            format!("converted by `sluice convert --from {from}` on {date}."),
            review.clone(),
        ];
        files.push(OutputFile {
            path: Path::new(PIPELINES_DIR).join(&p.file_name),
            text: yaml::emit(&p.root, &header).text,
        });
    }
    Conversion { files, issues }
}

/// Which output file an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Agent,
    Pipeline(usize),
}

/// Checks the draft with sluice's parser, validation and pipeline build, taking out each part
/// sluice refuses, until what remains passes; returns what was taken out.
fn settle(input: &Path, draft: &mut Draft) -> Vec<Issue> {
    let mut issues = Vec::new();
    // Each round takes out at least one node, so the number of nodes bounds the rounds.
    for _ in 0..10_000 {
        let Some((target, path, message)) = first_refusal(draft) else { break };
        let root = match target {
            Target::Agent => &mut draft.agent,
            Target::Pipeline(i) => &mut draft.pipelines[i].root,
        };
        let unit = removal_unit(target, &path, &message);
        let issue = describe(input, root, &path, &unit, &message);
        if !root.remove(&unit) {
            break;
        }
        issues.push(issue);
        // A list of relabel rules left empty goes too.
        if let Some((Step::Index(_), list)) = unit.split_last()
            && matches!(list.last(), Some(Step::Key(k)) if k == "relabel_configs")
            && root.at(list).is_some_and(Node::is_empty)
        {
            root.remove(list);
        }
        if let Target::Pipeline(i) = target
            && draft.pipelines[i].root.get("stages").is_none_or(|s| s.value.is_empty())
        {
            draft.pipelines.remove(i);
        }
    }
    issues
}

/// The first error sluice reports on the draft that can be traced to a node and whose node does
/// not depend on the environment: (file, path of the node, message).
fn first_refusal(draft: &Draft) -> Option<(Target, NodePath, String)> {
    let agent = yaml::emit(&draft.agent, &[]);
    let pipelines: Vec<yaml::Emitted> = draft.pipelines.iter().map(|p| yaml::emit(&p.root, &[])).collect();
    let agent_path = Path::new(AGENT_FILE);
    let pipeline_paths: Vec<PathBuf> =
        draft.pipelines.iter().map(|p| Path::new(PIPELINES_DIR).join(&p.file_name)).collect();

    let mut errors: Vec<ConfigError> = Vec::new();
    match parse_expanded::<AgentConfig>(agent_path, &agent.text) {
        Ok(config) => {
            if let Err(e) = config.validate(agent_path) {
                errors.extend(e.0);
            }
        }
        Err(e) => errors.push(e),
    }
    let mut loaded = Vec::new();
    for (emitted, path) in pipelines.iter().zip(&pipeline_paths) {
        match parse_expanded(path, &emitted.text) {
            Ok(file) => loaded.push(LoadedPipeline { path: path.clone(), file }),
            Err(e) => errors.push(e),
        }
    }
    let telemetry = Telemetry::new();
    if let Err(e) = build_set(&loaded, &BuildContext { metrics: &telemetry.metrics.pipeline, previous: None }) {
        errors.extend(e.0);
    }
    errors.into_iter().find_map(|e| {
        let (target, emitted, root) = if e.file == agent_path {
            (Target::Agent, &agent, &draft.agent)
        } else {
            let i = pipeline_paths.iter().position(|p| *p == e.file)?;
            (Target::Pipeline(i), &pipelines[i], &draft.pipelines[i].root)
        };
        // An error at the very start is about the file as a whole (no sources, say).
        if e.position == Position::START && !e.message.starts_with("unknown field") {
            return None;
        }
        let path = emitted.path_at(e.position.line)?.clone();
        let unit = removal_unit(target, &path, &e.message);
        if unit.is_empty() || root.at(&unit).is_none_or(Node::mentions_env) {
            return None;
        }
        Some((target, path, e.message))
    })
}

/// Expands `${VAR}` with a placeholder (values are only known where the agent runs) and parses.
fn parse_expanded<T: for<'de> serde::Deserialize<'de>>(file: &Path, text: &str) -> Result<T, ConfigError> {
    let expanded = config::env::expand(text, |_| Some("x".to_string()))
        .map_err(|e| ConfigError::new(file, e.position, e.message))?;
    config::parse_yaml_expanded(file, &expanded)
}

/// The part to take out for an error on the node at `path`: the smallest part that can go
/// without making its surroundings wrong.
///
/// - a relabel rule, a json expression, a metric: that item alone;
/// - a field sluice does not know: that field;
/// - anything else inside a pipeline stage: the innermost stage;
/// - a source or sink whose `type` or a required field is at fault: the component;
/// - otherwise the field itself (sluice then uses its default).
fn removal_unit(target: Target, path: &[Step], message: &str) -> NodePath {
    let key = |i: usize| match path.get(i) {
        Some(Step::Key(k)) => Some(k.as_str()),
        _ => None,
    };
    if let Some(i) = (0..path.len()).rev().find(|&i| key(i) == Some("relabel_configs"))
        && let Some(Step::Index(_)) = path.get(i + 1)
    {
        return path[..i + 2].to_vec();
    }
    let unknown_field = message.starts_with("unknown field");
    match target {
        Target::Pipeline(_) => {
            let Some(stage) = (0..path.len().saturating_sub(1))
                .rev()
                .find(|&i| key(i) == Some("stages") && matches!(path.get(i + 1), Some(Step::Index(_))))
            else {
                return path.to_vec();
            };
            let stage_end = stage + 2;
            let in_stage = |name: &str, field: &str| key(stage_end) == Some(name) && key(stage_end + 1) == Some(field);
            if in_stage("json", "expressions") && path.len() > stage_end + 2 {
                return path[..stage_end + 3].to_vec();
            }
            if key(stage_end) == Some("metrics") && path.len() > stage_end + 1 && !unknown_field {
                return path[..stage_end + 2].to_vec();
            }
            if unknown_field && path.len() > stage_end + 1 {
                return path.to_vec();
            }
            path[..stage_end].to_vec()
        }
        Target::Agent => {
            let component = matches!(key(0), Some("sources" | "sinks")) && path.len() >= 2;
            if component
                && (path.len() == 2 || key(2) == Some("type") || message.starts_with("missing field") && !unknown_field)
            {
                return path[..2].to_vec();
            }
            path.to_vec()
        }
    }
}

/// The issue for taking out `unit` because of `message` about the node at `path`.
fn describe(input: &Path, root: &Node, path: &[Step], unit: &[Step], message: &str) -> Issue {
    // The innermost node on the way to the unit that says what it stands for.
    let mut what = None;
    let mut depth_of_what = 0;
    for depth in 0..=unit.len() {
        if let Some(w) = root.at(&unit[..depth]).and_then(|n| n.what.clone()) {
            what = Some(w);
            depth_of_what = depth;
        }
    }
    let leaf_keys: Vec<&str> = unit[depth_of_what..]
        .iter()
        .filter_map(|s| match s {
            Step::Key(k) => Some(k.as_str()),
            Step::Index(_) => None,
        })
        .collect();
    // A stage's own name is already in its description.
    let stage_name = root.at(&unit[..depth_of_what]).and_then(|n| match n.entries() {
        [only] if depth_of_what > 0 && matches!(unit.get(depth_of_what - 1), Some(Step::Index(_))) => {
            Some(only.key.as_str())
        }
        _ => None,
    });
    let mut leaf_keys = leaf_keys.as_slice();
    if stage_name.is_some() && leaf_keys.first().copied() == stage_name {
        leaf_keys = &leaf_keys[1..];
    }
    let what = match (what, leaf_keys.is_empty()) {
        (Some(w), true) => w,
        (Some(w), false) => format!("{w}: `{}`", leaf_keys.join(".")),
        (None, _) => format!("`{}`", leaf_keys.join(".")),
    };
    let position = position_of(root, path, !message.starts_with("unknown field"))
        .or_else(|| position_of(root, unit, false))
        .unwrap_or(Position::START);
    Issue { file: input.to_path_buf(), position, what, why: format!("sluice refuses it: {message}") }
}

/// Where the node at `path` came from: for a mapping entry, its key's place, or its value's
/// when `value` is set and the value is a scalar.
fn position_of(root: &Node, path: &[Step], value: bool) -> Option<Position> {
    let (last, parent) = path.split_last()?;
    let parent = root.at(parent)?;
    match last {
        Step::Key(k) => {
            parent.get(k).map(|e| if value && e.value.as_text().is_some() { e.value.position } else { e.key_position })
        }
        Step::Index(i) => parent.items().get(*i).map(|n| n.position),
    }
}

#[cfg(test)]
mod tests;
