//! The subset of Go's `text/template` that Promtail's `template`, `replace` and `output`-style
//! stages are written in.
//!
//! Supported: text and `{{ }}` actions with `{{-`/`-}}` trimming; fields `.Value`, `.Entry` and
//! any extracted key (`.level`), missing ones printing `<no value>` as Go does; string, integer and
//! boolean literals; function calls, pipes (`.x | ToUpper`) and parentheses; `if` / `else if` /
//! `else` / `end`. Functions: `ToUpper`, `ToLower`, `upper`, `lower`, `Replace`, `Trim`, `TrimLeft`,
//! `TrimRight`, `TrimPrefix`, `TrimSuffix`, `TrimSpace`, `trim`, `default`, `regexReplaceAll`,
//! `regexReplaceAllLiteral`, `regexMatch`, `contains`, `hasPrefix`, `hasSuffix`, `eq`, `ne`, `and`,
//! `or`, `not`. Not supported (a parse error says so): `range`, `with`, `define`, `template`,
//! `block`, variables, and the other Sprig functions.

use regex::Regex;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq)]
enum TValue {
    Str(String),
    Int(i64),
    Bool(bool),
    Nil,
}

impl TValue {
    fn truthy(&self) -> bool {
        match self {
            TValue::Str(s) => !s.is_empty(),
            TValue::Int(i) => *i != 0,
            TValue::Bool(b) => *b,
            TValue::Nil => false,
        }
    }

    fn into_string(self) -> String {
        match self {
            TValue::Str(s) => s,
            TValue::Int(i) => i.to_string(),
            TValue::Bool(b) => b.to_string(),
            TValue::Nil => "<no value>".to_string(),
        }
    }

    fn as_str(&self) -> std::borrow::Cow<'_, str> {
        match self {
            TValue::Str(s) => std::borrow::Cow::Borrowed(s),
            other => std::borrow::Cow::Owned(other.clone().into_string()),
        }
    }
}

#[derive(Debug, Clone)]
enum Expr {
    Field(String),
    Lit(TValue),
    Call { func: Func, args: Vec<Expr>, regex: Option<Arc<Regex>> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    Upper,
    Lower,
    Replace,
    Trim,
    TrimLeft,
    TrimRight,
    TrimPrefix,
    TrimSuffix,
    TrimSpace,
    Default,
    RegexReplaceAll,
    RegexReplaceAllLiteral,
    RegexMatch,
    Contains,
    HasPrefix,
    HasSuffix,
    Eq,
    Ne,
    And,
    Or,
    Not,
}

impl Func {
    fn lookup(name: &str) -> Option<(Func, usize)> {
        Some(match name {
            "ToUpper" | "upper" => (Func::Upper, 1),
            "ToLower" | "lower" => (Func::Lower, 1),
            "Replace" => (Func::Replace, 4),
            "Trim" => (Func::Trim, 2),
            "TrimLeft" => (Func::TrimLeft, 2),
            "TrimRight" => (Func::TrimRight, 2),
            "TrimPrefix" => (Func::TrimPrefix, 2),
            "TrimSuffix" => (Func::TrimSuffix, 2),
            "TrimSpace" | "trim" => (Func::TrimSpace, 1),
            "default" => (Func::Default, 2),
            "regexReplaceAll" => (Func::RegexReplaceAll, 3),
            "regexReplaceAllLiteral" => (Func::RegexReplaceAllLiteral, 3),
            "regexMatch" => (Func::RegexMatch, 2),
            "contains" => (Func::Contains, 2),
            "hasPrefix" => (Func::HasPrefix, 2),
            "hasSuffix" => (Func::HasSuffix, 2),
            "eq" => (Func::Eq, 2),
            "ne" => (Func::Ne, 2),
            "and" => (Func::And, 2),
            "or" => (Func::Or, 2),
            "not" => (Func::Not, 1),
            _ => return None,
        })
    }

    fn takes_regex_first(self) -> bool {
        matches!(self, Func::RegexReplaceAll | Func::RegexReplaceAllLiteral | Func::RegexMatch)
    }
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Print(Expr),
    If { branches: Vec<(Expr, Vec<Node>)>, otherwise: Vec<Node> },
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
    reads_fields: bool,
}

/// What a template can read while it runs.
pub trait Fields {
    /// The value of `.name`, or `None` when it is missing.
    fn field(&self, name: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> Fields for F {
    fn field(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// A template that does not parse, with the byte offset in its text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template error at offset {offset}: {message}")]
pub struct TemplateError {
    pub offset: usize,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Field(String),
    Ident(String),
    Str(String),
    Int(i64),
    Pipe,
    LParen,
    RParen,
}

fn tokenize(action: &str, base: usize) -> Result<Vec<(Tok, usize)>, TemplateError> {
    let err = |offset: usize, message: String| TemplateError { offset: base + offset, message };
    let bytes = action.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        match c {
            b'|' => {
                toks.push((Tok::Pipe, start));
                i += 1;
            }
            b'(' => {
                toks.push((Tok::LParen, start));
                i += 1;
            }
            b')' => {
                toks.push((Tok::RParen, start));
                i += 1;
            }
            b'"' => {
                let mut out = String::new();
                i += 1;
                loop {
                    let Some(&c) = bytes.get(i) else {
                        return Err(err(start, "unterminated string".into()));
                    };
                    match c {
                        b'"' => {
                            i += 1;
                            break;
                        }
                        b'\\' => {
                            let esc = bytes.get(i + 1).copied();
                            out.push(match esc {
                                Some(b'n') => '\n',
                                Some(b't') => '\t',
                                Some(b'r') => '\r',
                                Some(b'\\') => '\\',
                                Some(b'"') => '"',
                                _ => return Err(err(i, "unsupported escape in string".into())),
                            });
                            i += 2;
                        }
                        _ => {
                            let ch = action[i..].chars().next().unwrap_or('\u{FFFD}');
                            out.push(ch);
                            i += ch.len_utf8();
                        }
                    }
                }
                toks.push((Tok::Str(out), start));
            }
            b'`' => {
                let Some(end) = action[i + 1..].find('`') else {
                    return Err(err(start, "unterminated raw string".into()));
                };
                toks.push((Tok::Str(action[i + 1..i + 1 + end].to_string()), start));
                i += end + 2;
            }
            b'.' => {
                i += 1;
                while i < bytes.len() && (bytes[i] == b'_' || bytes[i].is_ascii_alphanumeric()) {
                    i += 1;
                }
                if i == start + 1 {
                    return Err(err(
                        start,
                        "`.` alone (the whole data) is not supported; name a field such as .Value".into(),
                    ));
                }
                if bytes.get(i) == Some(&b'.') {
                    return Err(err(i, "nested fields are not supported".into()));
                }
                toks.push((Tok::Field(action[start + 1..i].to_string()), start));
            }
            b'-' | b'0'..=b'9' => {
                i += 1;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                let n = action[start..i].parse().map_err(|_| err(start, "invalid number".into()))?;
                toks.push((Tok::Int(n), start));
            }
            b'$' => return Err(err(start, "template variables are not supported".into())),
            c if c == b'_' || c.is_ascii_alphabetic() => {
                while i < bytes.len() && (bytes[i] == b'_' || bytes[i].is_ascii_alphanumeric()) {
                    i += 1;
                }
                toks.push((Tok::Ident(action[start..i].to_string()), start));
            }
            _ => return Err(err(start, format!("unexpected character `{}`", c as char))),
        }
    }
    // Offsets in the whole template, not in this action.
    for (_, offset) in &mut toks {
        *offset += base;
    }
    Ok(toks)
}

struct ExprParser<'t> {
    toks: &'t [(Tok, usize)],
    pos: usize,
    end_offset: usize,
}

impl ExprParser<'_> {
    fn offset(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end_offset, |(_, o)| *o)
    }

    fn error<T>(&self, message: impl Into<String>) -> Result<T, TemplateError> {
        Err(TemplateError { offset: self.offset(), message: message.into() })
    }

    /// pipeline := command ('|' command)*
    fn pipeline(&mut self) -> Result<Expr, TemplateError> {
        let mut expr = self.command(None)?;
        while matches!(self.toks.get(self.pos), Some((Tok::Pipe, _))) {
            self.pos += 1;
            expr = self.command(Some(expr))?;
        }
        Ok(expr)
    }

    /// command := operand | Func operand* ; a piped value is the last argument.
    fn command(&mut self, piped: Option<Expr>) -> Result<Expr, TemplateError> {
        let Some((tok, offset)) = self.toks.get(self.pos).cloned() else {
            return self.error("expected an expression");
        };
        if let Tok::Ident(name) = &tok {
            if let Some((func, arity)) = Func::lookup(name) {
                self.pos += 1;
                let mut args = Vec::new();
                while let Some((t, _)) = self.toks.get(self.pos) {
                    if matches!(t, Tok::Pipe | Tok::RParen) {
                        break;
                    }
                    args.push(self.operand()?);
                }
                if let Some(p) = piped {
                    args.push(p);
                }
                if args.len() != arity && !(matches!(func, Func::And | Func::Or) && args.len() >= 2) {
                    return Err(TemplateError {
                        offset,
                        message: format!("{name} takes {arity} arguments, got {}", args.len()),
                    });
                }
                let regex = match (func.takes_regex_first(), args.first()) {
                    (true, Some(Expr::Lit(TValue::Str(pattern)))) => {
                        Some(Arc::new(Regex::new(pattern).map_err(|e| TemplateError {
                            offset,
                            message: format!("invalid regex `{pattern}`: {e}"),
                        })?))
                    }
                    _ => None,
                };
                return Ok(Expr::Call { func, args, regex });
            }
            if matches!(name.as_str(), "true" | "false") {
                self.pos += 1;
                return if piped.is_some() {
                    self.error("cannot pipe into a literal")
                } else {
                    Ok(Expr::Lit(TValue::Bool(name == "true")))
                };
            }
            return Err(TemplateError { offset, message: format!("function `{name}` is not supported") });
        }
        if piped.is_some() {
            return self.error("only a function can follow `|`");
        }
        self.operand()
    }

    fn operand(&mut self) -> Result<Expr, TemplateError> {
        let Some((tok, _)) = self.toks.get(self.pos).cloned() else {
            return self.error("expected an operand");
        };
        self.pos += 1;
        Ok(match tok {
            Tok::Field(name) => Expr::Field(name),
            Tok::Str(s) => Expr::Lit(TValue::Str(s)),
            Tok::Int(i) => Expr::Lit(TValue::Int(i)),
            Tok::Ident(name) if name == "true" || name == "false" => Expr::Lit(TValue::Bool(name == "true")),
            Tok::Ident(name) => {
                self.pos -= 1;
                return self.error(format!("function `{name}` needs parentheses when used as an argument"));
            }
            Tok::LParen => {
                let inner = self.pipeline()?;
                if !matches!(self.toks.get(self.pos), Some((Tok::RParen, _))) {
                    return self.error("expected `)`");
                }
                self.pos += 1;
                inner
            }
            Tok::Pipe | Tok::RParen => {
                self.pos -= 1;
                return self.error("expected an operand");
            }
        })
    }
}

fn parse_expr(action: &str, base: usize) -> Result<Expr, TemplateError> {
    let toks = tokenize(action, base)?;
    let mut p = ExprParser { toks: &toks, pos: 0, end_offset: base + action.len() };
    let expr = p.pipeline()?;
    if p.pos != toks.len() {
        return p.error("unexpected tokens after the expression");
    }
    Ok(expr)
}

enum Frame {
    Root(Vec<Node>),
    If { branches: Vec<(Expr, Vec<Node>)>, otherwise: Option<Vec<Node>>, current: Vec<Node>, offset: usize },
}

impl Template {
    /// Parses a template.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut stack: Vec<Frame> = vec![Frame::Root(Vec::new())];
        let push = |stack: &mut Vec<Frame>, node: Node| match stack.last_mut() {
            Some(Frame::Root(nodes)) | Some(Frame::If { current: nodes, .. }) => nodes.push(node),
            None => {}
        };
        let mut rest = 0usize;
        let mut trim_next_left = false;
        let mut reads_fields = false;
        while rest < text.len() {
            let open = text[rest..].find("{{").map(|i| rest + i);
            let text_end = open.unwrap_or(text.len());
            let mut chunk = &text[rest..text_end];
            if trim_next_left {
                chunk = chunk.trim_start();
            }
            let Some(open) = open else {
                if !chunk.is_empty() {
                    push(&mut stack, Node::Text(chunk.to_string()));
                }
                break;
            };
            let trim_left =
                text[open + 2..].starts_with('-') && text[open + 3..].starts_with(|c: char| c.is_whitespace());
            if trim_left {
                chunk = chunk.trim_end();
            }
            if !chunk.is_empty() {
                push(&mut stack, Node::Text(chunk.to_string()));
            }
            let body_start = if trim_left { open + 3 } else { open + 2 };
            let Some(close) = text[body_start..].find("}}").map(|i| body_start + i) else {
                return Err(TemplateError { offset: open, message: "unclosed action: missing `}}`".into() });
            };
            let trim_right = close > body_start
                && text[..close].ends_with('-')
                && text[..close - 1].ends_with(|c: char| c.is_whitespace());
            let body_end = if trim_right { close - 1 } else { close };
            let body = &text[body_start..body_end];
            let trimmed = body.trim();
            let base = body_start + (body.len() - body.trim_start().len());
            let keyword = trimmed.split_whitespace().next().unwrap_or("");
            reads_fields |= trimmed.contains('.');
            match keyword {
                "" => {
                    return Err(TemplateError { offset: open, message: "empty action".into() });
                }
                "if" => {
                    let cond = parse_expr(&trimmed[2..], base + 2)?;
                    stack.push(Frame::If {
                        branches: vec![(cond, Vec::new())],
                        otherwise: None,
                        current: Vec::new(),
                        offset: open,
                    });
                }
                "else" => {
                    let Some(Frame::If { branches, otherwise, current, .. }) = stack.last_mut() else {
                        return Err(TemplateError { offset: open, message: "`else` outside `if`".into() });
                    };
                    if otherwise.is_some() {
                        return Err(TemplateError { offset: open, message: "`else` after `else`".into() });
                    }
                    // The nodes so far belong to the last branch.
                    if let Some(last) = branches.last_mut() {
                        last.1 = std::mem::take(current);
                    }
                    let after = trimmed[4..].trim();
                    if let Some(cond) = after.strip_prefix("if") {
                        let cond_base = base + trimmed.len() - cond.len();
                        branches.push((parse_expr(cond, cond_base)?, Vec::new()));
                    } else if after.is_empty() {
                        *otherwise = Some(Vec::new());
                    } else {
                        return Err(TemplateError { offset: base, message: "expected `else` or `else if`".into() });
                    }
                }
                "end" => {
                    if trimmed != "end" {
                        return Err(TemplateError { offset: base, message: "unexpected tokens after `end`".into() });
                    }
                    let Some(Frame::If { mut branches, otherwise, current, .. }) =
                        stack.pop().filter(|f| matches!(f, Frame::If { .. }))
                    else {
                        return Err(TemplateError { offset: open, message: "`end` without `if`".into() });
                    };
                    let otherwise = match otherwise {
                        Some(_) => current,
                        None => {
                            if let Some(last) = branches.last_mut() {
                                last.1 = current;
                            }
                            Vec::new()
                        }
                    };
                    push(&mut stack, Node::If { branches, otherwise });
                }
                "range" | "with" | "define" | "template" | "block" | "break" | "continue" => {
                    return Err(TemplateError {
                        offset: base,
                        message: format!("`{keyword}` is not supported in sluice templates"),
                    });
                }
                _ => {
                    if trimmed.starts_with("/*") {
                        // a comment
                    } else {
                        push(&mut stack, Node::Print(parse_expr(body, body_start)?));
                    }
                }
            }
            rest = close + 2;
            trim_next_left = trim_right;
        }
        match stack.pop() {
            Some(Frame::Root(nodes)) if stack.is_empty() => Ok(Template { nodes, reads_fields }),
            Some(Frame::If { offset, .. }) => Err(TemplateError { offset, message: "`if` without `end`".into() }),
            _ => Err(TemplateError { offset: 0, message: "unbalanced actions".into() }),
        }
    }

    /// Whether the template reads any field (a constant template does not).
    pub fn reads_fields(&self) -> bool {
        self.reads_fields
    }

    /// Runs the template.
    pub fn render(&self, fields: &dyn Fields) -> Result<String, String> {
        let mut out = String::new();
        render_nodes(&self.nodes, fields, &mut out)?;
        Ok(out)
    }
}

fn render_nodes(nodes: &[Node], fields: &dyn Fields, out: &mut String) -> Result<(), String> {
    for node in nodes {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Print(e) => out.push_str(&eval(e, fields)?.into_string()),
            Node::If { branches, otherwise } => {
                let mut done = false;
                for (cond, body) in branches {
                    if eval(cond, fields)?.truthy() {
                        render_nodes(body, fields, out)?;
                        done = true;
                        break;
                    }
                }
                if !done {
                    render_nodes(otherwise, fields, out)?;
                }
            }
        }
    }
    Ok(())
}

fn trim_set<'a>(s: &'a str, set: &str, left: bool, right: bool) -> &'a str {
    let f = |c: char| set.contains(c);
    match (left, right) {
        (true, true) => s.trim_matches(f),
        (true, false) => s.trim_start_matches(f),
        _ => s.trim_end_matches(f),
    }
}

fn eval(expr: &Expr, fields: &dyn Fields) -> Result<TValue, String> {
    let (func, args, regex) = match expr {
        Expr::Field(name) => return Ok(fields.field(name).map_or(TValue::Nil, TValue::Str)),
        Expr::Lit(v) => return Ok(v.clone()),
        Expr::Call { func, args, regex } => (*func, args, regex),
    };
    // `and`/`or` short-circuit like Go's.
    if matches!(func, Func::And | Func::Or) {
        let mut last = TValue::Nil;
        for a in args {
            last = eval(a, fields)?;
            if last.truthy() == (func == Func::Or) {
                return Ok(last);
            }
        }
        return Ok(last);
    }
    let vals: Vec<TValue> = args.iter().map(|a| eval(a, fields)).collect::<Result<_, _>>()?;
    let s = |i: usize| vals[i].as_str();
    let compiled = |pattern: &str| -> Result<Arc<Regex>, String> {
        match regex {
            Some(r) => Ok(Arc::clone(r)),
            None => Regex::new(pattern).map(Arc::new).map_err(|e| format!("invalid regex `{pattern}`: {e}")),
        }
    };
    Ok(match func {
        Func::Upper => TValue::Str(s(0).to_uppercase()),
        Func::Lower => TValue::Str(s(0).to_lowercase()),
        Func::Replace => {
            let n = match &vals[3] {
                TValue::Int(n) => *n,
                other => {
                    return Err(format!("Replace: the count must be an integer, got {:?}", other.as_str()));
                }
            };
            let (src, old, new) = (s(0), s(1), s(2));
            TValue::Str(if n < 0 { src.replace(&*old, &new) } else { src.replacen(&*old, &new, n as usize) })
        }
        Func::Trim => TValue::Str(trim_set(&s(0), &s(1), true, true).to_string()),
        Func::TrimLeft => TValue::Str(trim_set(&s(0), &s(1), true, false).to_string()),
        Func::TrimRight => TValue::Str(trim_set(&s(0), &s(1), false, true).to_string()),
        Func::TrimPrefix => TValue::Str(s(0).strip_prefix(&*s(1)).map_or_else(|| s(0).into_owned(), str::to_string)),
        Func::TrimSuffix => TValue::Str(s(0).strip_suffix(&*s(1)).map_or_else(|| s(0).into_owned(), str::to_string)),
        Func::TrimSpace => TValue::Str(s(0).trim().to_string()),
        Func::Default => {
            if vals[1].truthy() {
                vals[1].clone()
            } else {
                vals[0].clone()
            }
        }
        Func::RegexReplaceAll => TValue::Str(compiled(&s(0))?.replace_all(&s(1), &*s(2)).into_owned()),
        Func::RegexReplaceAllLiteral => {
            TValue::Str(compiled(&s(0))?.replace_all(&s(1), regex::NoExpand(&s(2))).into_owned())
        }
        Func::RegexMatch => TValue::Bool(compiled(&s(0))?.is_match(&s(1))),
        Func::Contains => TValue::Bool(s(1).contains(&*s(0))),
        Func::HasPrefix => TValue::Bool(s(1).starts_with(&*s(0))),
        Func::HasSuffix => TValue::Bool(s(1).ends_with(&*s(0))),
        Func::Eq => TValue::Bool(
            vals[0] == vals[1] || (vals[0].as_str() == vals[1].as_str() && !matches!(vals[0], TValue::Nil)),
        ),
        Func::Ne => TValue::Bool(vals[0].as_str() != vals[1].as_str()),
        Func::Not => TValue::Bool(!vals[0].truthy()),
        Func::And | Func::Or => unreachable!("handled above"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(t: &str) -> String {
        let fields = |name: &str| match name {
            "Value" => Some("Hello World".to_string()),
            "level" => Some("WARN".to_string()),
            "app" => Some("  api  ".to_string()),
            "empty" => Some(String::new()),
            _ => None,
        };
        Template::parse(t).unwrap().render(&fields).unwrap()
    }

    #[test]
    fn fields_and_functions() {
        assert_eq!(render("{{ .Value }}"), "Hello World");
        assert_eq!(render("{{ ToUpper .Value }}"), "HELLO WORLD");
        assert_eq!(render("{{ .Value | ToLower }}"), "hello world");
        assert_eq!(render(r#"{{ Replace .Value "o" "0" -1 }}"#), "Hell0 W0rld");
        assert_eq!(render(r#"{{ Replace .Value "o" "0" 1 }}"#), "Hell0 World");
        assert_eq!(render("{{ TrimSpace .app }}|{{ Trim .app \" a\" }}"), "api|pi");
        assert_eq!(render(r#"{{ TrimPrefix .Value "Hello " }}{{ TrimSuffix .Value "World" }}"#), "WorldHello ");
        assert_eq!(
            render(r#"{{ default "none" .missing }} {{ .empty | default "x" }} {{ default "y" .level }}"#),
            "none x WARN"
        );
        assert_eq!(render(r#"{{ regexReplaceAll "(\\w+) (\\w+)" .Value "${2} ${1}" }}"#), "World Hello");
        assert_eq!(render(r#"{{ regexReplaceAllLiteral "o" .Value "$1" }}"#), "Hell$1 W$1rld");
        assert_eq!(render("{{ .missing }}"), "<no value>");
        assert_eq!(render("a {{- .level -}} b"), "aWARNb");
        assert_eq!(render("{{ ToLower (TrimSpace .app) }}"), "api");
    }

    #[test]
    fn conditionals() {
        let t = r#"{{ if eq .level "WARN" }}warning{{ else if eq .level "ERROR" }}error{{ else }}other{{ end }}"#;
        assert_eq!(render(t), "warning");
        assert_eq!(render(r#"{{ if .missing }}yes{{ else }}no{{ end }}"#), "no");
        assert_eq!(render(r#"{{ if and .level (not .empty) }}both{{ end }}"#), "both");
        assert_eq!(render(r#"{{ if or .empty .missing }}x{{ end }}."#), ".");
        assert_eq!(render(r#"{{ if contains "World" .Value }}has{{ end }}"#), "has");
    }

    #[test]
    fn errors_point_at_the_problem() {
        for (t, needle) in [
            ("{{ .Value ", "unclosed"),
            ("{{ Nope .Value }}", "`Nope` is not supported"),
            ("{{ range .x }}{{ end }}", "`range` is not supported"),
            ("{{ if .x }}", "`if` without `end`"),
            ("{{ end }}", "`end` without `if`"),
            ("{{ ToUpper }}", "takes 1 arguments"),
            (r#"{{ regexReplaceAll "(" .Value "" }}"#, "invalid regex"),
            ("{{ $x := 1 }}", "variables are not supported"),
        ] {
            let err = Template::parse(t).unwrap_err();
            assert!(err.message.contains(needle), "{t}: {err}");
        }
    }
}
