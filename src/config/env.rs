//! `${VAR}` and `${VAR:-default}` expansion of config text, before YAML parsing.
//!
//! Contract: expansion never adds or removes a line, so the line numbers that the YAML parser
//! reports stay true for the file on disk. `$$` is a literal `$`. A `$` not followed by `{` or
//! `$` is kept as it is. A variable that is unset and has no default is an error that names the
//! place of its `${`; a variable set to the empty string expands to the empty string, except with
//! `:-`, whose default also replaces an empty value (as in the shell). A value holding a newline
//! is refused: it would shift every line below it.

use super::Position;

/// An expansion failure, with the place of the `${` that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandError {
    pub position: Position,
    pub message: String,
}

/// Expands variables in `text`, looking them up with `lookup`.
pub fn expand(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut line = 1u32;
    let mut line_start = 0usize;
    let mut consumed = 0usize;
    while let Some(i) = rest.find('$') {
        let before = &rest[..i];
        for (j, c) in before.char_indices() {
            if c == '\n' {
                line += 1;
                line_start = consumed + j + 1;
            }
        }
        out.push_str(before);
        let at = &rest[i..];
        let position = Position { line, column: (text[line_start..consumed + i].chars().count() + 1) as u32 };
        if let Some(tail) = at.strip_prefix("$$") {
            out.push('$');
            consumed += i + 2;
            rest = tail;
            continue;
        }
        let Some(body_start) = at.strip_prefix("${") else {
            out.push('$');
            consumed += i + 1;
            rest = &at[1..];
            continue;
        };
        let Some(end) = body_start.find('}') else {
            return Err(ExpandError { position, message: "unterminated `${`: missing `}`".into() });
        };
        let body = &body_start[..end];
        if body.contains('\n') {
            return Err(ExpandError { position, message: "unterminated `${`: missing `}` on the same line".into() });
        }
        let (name, default) = match body.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (body, None),
        };
        if !is_var_name(name) {
            return Err(ExpandError { position, message: format!("invalid variable name `{name}` in `${{{body}}}`") });
        }
        let value = match (lookup(name), default) {
            (Some(v), Some(d)) if v.is_empty() => d.to_string(),
            (Some(v), _) => v,
            (None, Some(d)) => d.to_string(),
            (None, None) => {
                return Err(ExpandError {
                    position,
                    message: format!(
                        "environment variable `{name}` is not set and `${{{name}}}` has no default (write `${{{name}:-default}}`)"
                    ),
                });
            }
        };
        if value.contains('\n') {
            return Err(ExpandError {
                position,
                message: format!(
                    "environment variable `{name}` holds a newline, which config expansion does not allow"
                ),
            });
        }
        out.push_str(&value);
        consumed += i + 2 + end + 1;
        rest = &body_start[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("loki".into()),
            "EMPTY" => Some(String::new()),
            "MULTI" => Some("a\nb".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_set_unset_and_defaults() {
        assert_eq!(expand("url: http://${HOST}:3100", env).unwrap(), "url: http://loki:3100");
        assert_eq!(expand("a: ${NOPE:-x y}", env).unwrap(), "a: x y");
        assert_eq!(expand("a: ${EMPTY:-d}", env).unwrap(), "a: d");
        assert_eq!(expand("a: '${EMPTY}'", env).unwrap(), "a: ''");
        assert_eq!(expand("a: $$HOST $HOST $", env).unwrap(), "a: $HOST $HOST $");
        assert_eq!(expand("a: ${NOPE:-}", env).unwrap(), "a: ");
    }

    #[test]
    fn errors_name_the_place() {
        let err = expand("a: 1\nb: x ${NOPE}\n", env).unwrap_err();
        assert_eq!(err.position, Position { line: 2, column: 6 });
        assert!(err.message.contains("`NOPE` is not set"), "{}", err.message);
        let err = expand("a: ${HOST", env).unwrap_err();
        assert_eq!(err.position, Position { line: 1, column: 4 });
        let err = expand("é: ${MULTI}", env).unwrap_err();
        assert_eq!(err.position, Position { line: 1, column: 4 });
        assert!(expand("a: ${1X}", env).is_err());
    }

    #[test]
    fn keeps_line_count() {
        let text = "a: ${HOST}\n\nb: ${NOPE:-z}\nc: $$\n";
        assert_eq!(expand(text, env).unwrap().lines().count(), text.lines().count());
    }
}
