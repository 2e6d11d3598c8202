//! Where each policy sits in its text, to name and locate it in error messages.
//!
//! Cedar decides what the text means; this only splits it into top-level statements
//! (each ends with `;` outside strings and `//` comments) so that an error can say
//! "policy `x`, line 12" rather than just what went wrong.

/// One top-level statement (a policy or template) of Cedar text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Statement<'a> {
    /// From its first token to its `;` (or the end of the text, if unterminated).
    pub text: &'a str,
    /// The 1-based line of its first token.
    pub line: usize,
    /// The value of its leading `@id("...")` annotation, if it has one.
    pub id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    /// An identifier or number.
    Word(&'a str),
    /// A string literal's contents, escapes not undone.
    Str(&'a str),
    /// Any other character.
    Punct(char),
}

/// Splits `text` into statements. Comments and blank text between statements are not
/// part of any statement.
pub(super) fn statements(text: &str) -> Vec<Statement<'_>> {
    let mut out = Vec::new();
    let mut current: Vec<Token<'_>> = Vec::new();
    let mut start = None;
    for (offset, end, token) in tokens(text) {
        let first = *start.get_or_insert(offset);
        if token == Token::Punct(';') {
            out.push(statement(text, first, end, &current));
            current.clear();
            start = None;
        } else {
            current.push(token);
        }
    }
    if let Some(first) = start {
        out.push(statement(text, first, text.len(), &current));
    }
    out
}

fn statement<'a>(text: &'a str, start: usize, end: usize, tokens: &[Token<'_>]) -> Statement<'a> {
    Statement {
        text: text.get(start..end).unwrap_or_default(),
        line: 1 + text
            .get(..start)
            .unwrap_or_default()
            .bytes()
            .filter(|&b| b == b'\n')
            .count(),
        id: leading_id(tokens),
    }
}

/// The `@id("...")` among the annotations `@name("value")` that open a statement.
fn leading_id(tokens: &[Token<'_>]) -> Option<String> {
    let mut rest = tokens;
    while let [Token::Punct('@'), Token::Word(name), after @ ..] = rest {
        match after {
            [
                Token::Punct('('),
                Token::Str(value),
                Token::Punct(')'),
                tail @ ..,
            ] => {
                if *name == "id" {
                    return Some(unescape(value));
                }
                rest = tail;
            }
            _ => rest = after,
        }
    }
    None
}

/// Undoes the common escapes; good enough to name a policy in an error message.
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('0') => out.push('\0'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// The tokens of `text` with their byte ranges, skipping whitespace and `//` comments.
fn tokens(text: &str) -> Vec<(usize, usize, Token<'_>)> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if c.is_whitespace() {
            continue;
        }
        if c == '/' && chars.peek().is_some_and(|&(_, n)| n == '/') {
            for (_, n) in chars.by_ref() {
                if n == '\n' {
                    break;
                }
            }
            continue;
        }
        if c == '"' {
            let mut end = text.len();
            let mut escaped = false;
            for (i, n) in chars.by_ref() {
                if escaped {
                    escaped = false;
                } else if n == '\\' {
                    escaped = true;
                } else if n == '"' {
                    end = i;
                    break;
                }
            }
            let contents = text.get(at + 1..end).unwrap_or_default();
            out.push((at, (end + 1).min(text.len()), Token::Str(contents)));
            continue;
        }
        if c.is_alphanumeric() || c == '_' {
            let mut end = at + c.len_utf8();
            while let Some(&(i, n)) = chars.peek() {
                if !(n.is_alphanumeric() || n == '_') {
                    break;
                }
                end = i + n.len_utf8();
                chars.next();
            }
            out.push((at, end, Token::Word(text.get(at..end).unwrap_or_default())));
            continue;
        }
        out.push((at, at + c.len_utf8(), Token::Punct(c)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_at_semicolons_outside_strings_and_comments() {
        let text = "// a comment; with a semicolon\n\
                    @id(\"first;\") @other(\"x\")\npermit(principal, action, resource)\n\
                    when { \"a;b\" == \"a;b\" };\n\n\
                    forbid(principal, action, resource); // trailing; comment\n\
                    @id(\"unterminated\\\"q\") permit(";
        let found = statements(text);
        assert_eq!(found.len(), 3);
        assert_eq!(found[0].id.as_deref(), Some("first;"));
        assert_eq!(found[0].line, 2);
        assert!(found[0].text.starts_with("@id("));
        assert!(found[0].text.ends_with("};"));
        assert_eq!(found[1].id, None);
        assert_eq!(found[1].line, 6);
        assert_eq!(found[1].text, "forbid(principal, action, resource);");
        assert_eq!(found[2].id.as_deref(), Some("unterminated\"q"));
        assert_eq!(found[2].line, 7);
    }

    #[test]
    fn id_is_found_after_other_annotations_only() {
        let found = statements("@note(\"n\") @id(\"x\") permit(principal, action, resource);");
        assert_eq!(found[0].id.as_deref(), Some("x"));
        let found = statements("permit(principal, action, resource) when { @id };");
        assert_eq!(found[0].id, None);
        assert!(statements("  // nothing\n").is_empty());
    }
}
