//! Stages that rewrite values: `output` (the line becomes an extracted value), `template`
//! (an extracted value from a Go template) and `replace` (regex replacement in the line or a
//! value).

use super::config_str::ConfigStr;
use super::template::Template;
use super::work::{Name, Work};
use super::{Flow, StageInfo};
use bytes::BufMut;
use regex::bytes::Regex;

/// Template fields over a [`Work`]: `.Value` is `value`, `.Entry` the line, others extracted.
struct WorkFields<'a> {
    w: &'a Work,
    value: Option<&'a [u8]>,
}

impl super::template::Fields for WorkFields<'_> {
    fn field(&self, name: &str) -> Option<String> {
        let bytes = match name {
            "Value" => self.value?,
            "Entry" => &self.w.entry.line[..],
            _ => self.w.extracted(name)?,
        };
        Some(String::from_utf8_lossy(bytes).into_owned())
    }
}

/// `output`: the line becomes the extracted value `source` (missing: unchanged).
pub(crate) struct OutputStage {
    pub source: String,
}

impl OutputStage {
    pub fn apply(&self, w: &mut Work, _info: &StageInfo) -> Flow {
        if let Some(value) = w.extracted_bytes(&self.source) {
            w.entry.line = value;
        }
        Flow::Continue
    }
}

/// `template`: the extracted value `source` becomes the template's result.
pub(crate) struct TemplateStage {
    pub source: ConfigStr,
    pub template: Template,
}

impl TemplateStage {
    pub fn apply(&self, w: &mut Work, info: &StageInfo) -> Flow {
        let rendered = {
            let fields = WorkFields { w, value: w.extracted(&self.source) };
            self.template.render(&fields)
        };
        match rendered {
            Ok(text) => w.extract_bytes(Name::Static(self.source), text.as_bytes()),
            Err(e) => info.error(|| e),
        }
        Flow::Continue
    }
}

/// `replace`: every match of `regex` in the source (the line by default) is rewritten with the
/// template; with capture groups, each group's text is replaced and the rest of the match kept.
/// Named groups of the first match are extracted too, with the value the template gave them (as
/// in Promtail).
pub(crate) struct ReplaceStage {
    pub source: Option<ConfigStr>,
    pub regex: Regex,
    pub template: Template,
    pub names: Vec<(usize, ConfigStr)>,
}

impl ReplaceStage {
    pub fn apply(&self, w: &mut Work, info: &StageInfo) -> Flow {
        let Some(text) = w.source_value(self.source.map(ConfigStr::as_str)) else {
            return Flow::Continue;
        };
        let text = text.to_vec();
        let mut out: Vec<u8> = Vec::with_capacity(text.len());
        let mut last = 0;
        let mut matched = false;
        let mut named: Vec<(ConfigStr, Vec<u8>)> = Vec::new();
        for caps in self.regex.captures_iter(&text) {
            let first = !matched;
            matched = true;
            let groups: Vec<(usize, regex::bytes::Match<'_>)> = if caps.len() > 1 {
                caps.iter().enumerate().skip(1).filter_map(|(i, m)| Some((i, m?))).collect()
            } else {
                caps.get(0).into_iter().map(|m| (0, m)).collect()
            };
            for (index, m) in groups {
                let name = first.then(|| self.names.iter().find(|(i, _)| *i == index)).flatten();
                // A group inside a group already replaced is not replaced again (but still named).
                let inside = m.start() < last;
                if inside && name.is_none() {
                    continue;
                }
                let fields = WorkFields { w, value: Some(m.as_bytes()) };
                let rendered = match self.template.render(&fields) {
                    Ok(r) => r,
                    Err(e) => {
                        info.error(|| e);
                        return Flow::Continue;
                    }
                };
                if let Some((_, name)) = name {
                    named.push((*name, rendered.as_bytes().to_vec()));
                }
                if inside {
                    continue;
                }
                out.extend_from_slice(&text[last..m.start()]);
                out.extend_from_slice(rendered.as_bytes());
                last = m.end();
            }
        }
        if !matched {
            return Flow::Continue;
        }
        out.extend_from_slice(&text[last..]);
        for (name, value) in named {
            w.extract_bytes(Name::Static(name), &value);
        }
        match self.source {
            None => w.entry.line = w.new_line(|b| b.put_slice(&out)),
            Some(key) => w.extract_bytes(Name::Static(key), &out),
        }
        Flow::Continue
    }
}
