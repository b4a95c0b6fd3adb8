//! LogQL stream selectors, as `match` stages and pipeline files use them:
//! `{name="v", name!="v", name=~"re", name!~"re"}` optionally followed by line filters
//! `|= "text"`, `!= "text"`, `|~ "re"`, `!~ "re"`.
//!
//! Semantics are LogQL's: label regexes are anchored at both ends, a missing label reads as the
//! empty string, line-filter regexes are not anchored. An empty selector `{}` matches everything.

use regex::Regex;
use regex::bytes::Regex as BytesRegex;

#[derive(Debug, Clone)]
enum MatchOp {
    Eq(String),
    Ne(String),
    Re(Regex),
    NotRe(Regex),
}

#[derive(Debug, Clone)]
struct LabelMatcher {
    name: String,
    op: MatchOp,
}

#[derive(Debug, Clone)]
enum LineFilter {
    Contains(memchr::memmem::Finder<'static>),
    NotContains(memchr::memmem::Finder<'static>),
    Re(BytesRegex),
    NotRe(BytesRegex),
}

/// A compiled selector.
#[derive(Debug, Clone)]
pub struct Selector {
    matchers: Vec<LabelMatcher>,
    filters: Vec<LineFilter>,
}

/// Why a selector does not parse, with the byte offset in the selector text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector at offset {offset}: {message}")]
pub struct SelectorError {
    pub offset: usize,
    pub message: String,
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn error<T>(&self, message: impl Into<String>) -> Result<T, SelectorError> {
        Err(SelectorError { offset: self.pos, message: message.into() })
    }

    fn skip_ws(&mut self) {
        while self.text[self.pos..].starts_with(|c: char| c.is_whitespace()) {
            self.pos += self.text[self.pos..].chars().next().map_or(1, char::len_utf8);
        }
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        if self.text[self.pos..].starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    fn name(&mut self) -> Result<&'a str, SelectorError> {
        self.skip_ws();
        let rest = &self.text[self.pos..];
        let len = rest.find(|c: char| !(c == '_' || c.is_ascii_alphanumeric())).unwrap_or(rest.len());
        if len == 0 || rest.starts_with(|c: char| c.is_ascii_digit()) {
            return self.error("expected a label name");
        }
        self.pos += len;
        Ok(&rest[..len])
    }

    fn string(&mut self) -> Result<String, SelectorError> {
        self.skip_ws();
        let rest = &self.text[self.pos..];
        if let Some(raw) = rest.strip_prefix('`') {
            let Some(end) = raw.find('`') else {
                return self.error("unterminated raw string");
            };
            self.pos += end + 2;
            return Ok(raw[..end].to_string());
        }
        let Some(body) = rest.strip_prefix('"') else {
            return self.error("expected a quoted string");
        };
        let mut out = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 2;
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 't')) => out.push('\t'),
                    Some((_, 'r')) => out.push('\r'),
                    Some((_, c @ ('\\' | '"' | '\''))) => out.push(c),
                    // Regex escapes such as `\.` or `\d` pass through for the regex to read.
                    Some((_, c)) => {
                        out.push('\\');
                        out.push(c);
                    }
                    None => break,
                },
                c => out.push(c),
            }
        }
        self.error("unterminated string")
    }
}

impl Selector {
    /// Parses a selector.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        let mut p = Parser { text, pos: 0 };
        if !p.eat("{") {
            return p.error("a selector starts with `{`");
        }
        let mut matchers = Vec::new();
        if !p.eat("}") {
            loop {
                let name = p.name()?.to_string();
                let start = p.pos;
                let op = if p.eat("=~") {
                    "=~"
                } else if p.eat("!~") {
                    "!~"
                } else if p.eat("!=") {
                    "!="
                } else if p.eat("=") {
                    "="
                } else {
                    return p.error(format!("expected =, !=, =~ or !~ after `{name}`"));
                };
                let value = p.string()?;
                let op = match op {
                    "=" => MatchOp::Eq(value),
                    "!=" => MatchOp::Ne(value),
                    re => {
                        let compiled = Regex::new(&format!("^(?:{value})$")).map_err(|e| SelectorError {
                            offset: start,
                            message: format!("invalid regex `{value}`: {e}"),
                        })?;
                        if re == "=~" { MatchOp::Re(compiled) } else { MatchOp::NotRe(compiled) }
                    }
                };
                matchers.push(LabelMatcher { name, op });
                if p.eat("}") {
                    break;
                }
                if !p.eat(",") {
                    return p.error("expected `,` or `}`");
                }
            }
        }
        let mut filters = Vec::new();
        loop {
            p.skip_ws();
            if p.pos == text.len() {
                break;
            }
            let start = p.pos;
            let kind = ["|=", "!=", "|~", "!~"].into_iter().find(|t| p.eat(t));
            let Some(kind) = kind else {
                return p.error("expected a line filter (|=, !=, |~, !~) or the end");
            };
            let value = p.string()?;
            let regex = || {
                BytesRegex::new(&value)
                    .map_err(|e| SelectorError { offset: start, message: format!("invalid regex `{value}`: {e}") })
            };
            filters.push(match kind {
                "|=" => LineFilter::Contains(memchr::memmem::Finder::new(value.as_bytes()).into_owned()),
                "!=" => LineFilter::NotContains(memchr::memmem::Finder::new(value.as_bytes()).into_owned()),
                "|~" => LineFilter::Re(regex()?),
                _ => LineFilter::NotRe(regex()?),
            });
        }
        Ok(Selector { matchers, filters })
    }

    /// Whether an entry with these labels and this line is selected.
    pub fn matches(&self, labels: &[(&str, &str)], line: &[u8]) -> bool {
        self.matches_labels(labels) && self.matches_line(line)
    }

    pub fn matches_labels(&self, labels: &[(&str, &str)]) -> bool {
        self.matchers.iter().all(|m| {
            let value = labels.iter().find(|(n, _)| *n == m.name).map_or("", |(_, v)| *v);
            match &m.op {
                MatchOp::Eq(want) => value == want,
                MatchOp::Ne(want) => value != want,
                MatchOp::Re(re) => re.is_match(value),
                MatchOp::NotRe(re) => !re.is_match(value),
            }
        })
    }

    pub fn matches_line(&self, line: &[u8]) -> bool {
        self.filters.iter().all(|f| match f {
            LineFilter::Contains(finder) => finder.find(line).is_some(),
            LineFilter::NotContains(finder) => finder.find(line).is_none(),
            LineFilter::Re(re) => re.is_match(line),
            LineFilter::NotRe(re) => !re.is_match(line),
        })
    }

    /// Whether the selector reads the line (has line filters).
    pub fn has_line_filters(&self) -> bool {
        !self.filters.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LABELS: &[(&str, &str)] = &[("compose_service", "gateway"), ("level", "ERROR")];

    fn sel(s: &str) -> Selector {
        Selector::parse(s).unwrap()
    }

    #[test]
    fn label_matchers() {
        assert!(sel("{}").matches(LABELS, b""));
        assert!(sel(r#"{compose_service=~"gateway|router"}"#).matches(LABELS, b""));
        assert!(!sel(r#"{compose_service=~"gate"}"#).matches(LABELS, b""), "regexes are anchored");
        assert!(sel(r#"{level="ERROR", compose_service!="router"}"#).matches(LABELS, b""));
        assert!(sel(r#"{missing=""}"#).matches(LABELS, b""), "a missing label is the empty string");
        assert!(sel(r#"{level!~"DEBUG|INFO"}"#).matches(LABELS, b""));
        assert!(!sel(r#"{level="INFO"}"#).matches(LABELS, b""));
        assert!(sel("{level=`ERROR`}").matches(LABELS, b""));
        assert!(sel(r#"{compose_service=~"gate\\w+"}"#).matches(LABELS, b""));
        assert!(sel(r#"{compose_service=~"gate\w+"}"#).matches(LABELS, b""));
    }

    #[test]
    fn line_filters() {
        let s = sel(r#"{level="ERROR"} |= "timeout" != "retry" |~ "up(stream)?" !~ "^DEBUG""#);
        assert!(s.has_line_filters());
        assert!(s.matches(LABELS, b"upstream timeout"));
        assert!(!s.matches(LABELS, b"upstream timeout, retry"));
        assert!(!s.matches(LABELS, b"timeout"));
    }

    #[test]
    fn errors_say_where() {
        for (text, offset) in [
            ("level=\"x\"", 0),
            ("{level}", 6),
            ("{level=x}", 7),
            ("{level=~\"(\"}", 6),
            ("{a=\"b\"} |= x", 11),
            ("{a=\"b\" b=\"c\"}", 7),
            ("{a=\"b", 3),
        ] {
            let err = Selector::parse(text).unwrap_err();
            assert_eq!(err.offset, offset, "{text}: {err}");
        }
    }
}
