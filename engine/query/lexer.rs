//! The query lexer: an expression string → tokens with byte spans.
//!
//! Token rules (Bazel's, simplified):
//! 1. whitespace separates tokens and is dropped;
//! 2. `(`, `)` and `,` are always tokens of their own;
//! 3. `+`, `-` and `^` are operators only when standalone, i.e. followed by whitespace, a
//!    parenthesis, a comma or the end (they start a token, so what precedes them is already a
//!    separator); elsewhere they are word characters, so `//a-b:c` is one word;
//! 4. `'...'` and `"..."` are quoted words, never keywords or operators (no escapes);
//! 5. any other run of characters up to whitespace, a parenthesis or a comma is a word; the
//!    unquoted words `union`, `except` and `intersect` are operators.

use super::QueryError;

/// A half-open byte range of the expression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    /// The span from the start of `self` to the end of `other`.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start, other.end)
    }
}

/// The set operators; all have the same precedence and associate to the left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetOp {
    Union,
    Except,
    Intersect,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// A word; `quoted` when it was written between quotes (the text excludes them).
    Word {
        text: String,
        quoted: bool,
    },
    LParen,
    RParen,
    Comma,
    /// An operator and whether it was written as a keyword (`union`) or a symbol (`+`).
    Op(SetOp, &'static str),
    Eof,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    pub span: Span,
}

impl Token {
    /// How the token reads in an error message: `` `)` ``, `` `//a:b` ``, "end of expression".
    pub fn describe(&self) -> String {
        match &self.kind {
            TokenKind::Word {
                text,
                quoted: false,
            } => format!("`{text}`"),
            TokenKind::Word { text, quoted: true } => format!("`\"{text}\"`"),
            TokenKind::LParen => "`(`".into(),
            TokenKind::RParen => "`)`".into(),
            TokenKind::Comma => "`,`".into(),
            TokenKind::Op(_, text) => format!("`{text}`"),
            TokenKind::Eof => "end of expression".into(),
        }
    }
}

fn is_separator(c: char) -> bool {
    c.is_whitespace() || matches!(c, '(' | ')' | ',')
}

/// Splits `input` into tokens, ending with one `Eof` token whose span is empty at the end.
pub fn lex(input: &str) -> Result<Vec<Token>, QueryError> {
    let mut tokens = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let single = match c {
            '(' => Some(TokenKind::LParen),
            ')' => Some(TokenKind::RParen),
            ',' => Some(TokenKind::Comma),
            '+' | '-' | '^' => {
                let next = input[start + 1..].chars().next();
                next.is_none_or(is_separator).then_some(match c {
                    '+' => TokenKind::Op(SetOp::Union, "+"),
                    '-' => TokenKind::Op(SetOp::Except, "-"),
                    _ => TokenKind::Op(SetOp::Intersect, "^"),
                })
            }
            _ => None,
        };
        if let Some(kind) = single {
            chars.next();
            tokens.push(Token {
                kind,
                span: Span::new(start, start + 1),
            });
            continue;
        }
        if c == '\'' || c == '"' {
            chars.next();
            let Some(len) = input[start + 1..].find(c) else {
                return Err(QueryError::new(
                    Span::new(start, input.len()),
                    format!("unterminated quoted word: no closing {c}"),
                )
                .with_help(format!("add a closing {c}")));
            };
            let end = start + 1 + len + 1;
            while chars.peek().is_some_and(|&(i, _)| i < end) {
                chars.next();
            }
            tokens.push(Token {
                kind: TokenKind::Word {
                    text: input[start + 1..end - 1].to_owned(),
                    quoted: true,
                },
                span: Span::new(start, end),
            });
            continue;
        }
        let mut end = input.len();
        while let Some(&(i, c)) = chars.peek() {
            if is_separator(c) {
                end = i;
                break;
            }
            chars.next();
        }
        let text = &input[start..end];
        let kind = match text {
            "union" => TokenKind::Op(SetOp::Union, "union"),
            "except" => TokenKind::Op(SetOp::Except, "except"),
            "intersect" => TokenKind::Op(SetOp::Intersect, "intersect"),
            _ => TokenKind::Word {
                text: text.to_owned(),
                quoted: false,
            },
        };
        tokens.push(Token {
            kind,
            span: Span::new(start, end),
        });
    }
    tokens.push(Token {
        kind: TokenKind::Eof,
        span: Span::new(input.len(), input.len()),
    });
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(input: &str) -> Vec<(String, usize, usize)> {
        lex(input)
            .unwrap()
            .into_iter()
            .map(|t| (t.describe(), t.span.start, t.span.end))
            .collect()
    }

    #[test]
    fn operators_need_separators() {
        let k = |s: &str, a, b| (s.to_owned(), a, b);
        assert_eq!(
            kinds("//a-b:c - //d +(//e)^//f"),
            vec![
                k("`//a-b:c`", 0, 7),
                k("`-`", 8, 9),
                k("`//d`", 10, 13),
                k("`+`", 14, 15),
                k("`(`", 15, 16),
                k("`//e`", 16, 19),
                k("`)`", 19, 20),
                k("`^//f`", 20, 24),
                k("end of expression", 24, 24),
            ]
        );
    }

    #[test]
    fn keywords_and_quotes() {
        let k = |s: &str, a, b| (s.to_owned(), a, b);
        assert_eq!(
            kinds("a union 'union' except \"b c\",intersect"),
            vec![
                k("`a`", 0, 1),
                k("`union`", 2, 7),
                k("`\"union\"`", 8, 15),
                k("`except`", 16, 22),
                k("`\"b c\"`", 23, 28),
                k("`,`", 28, 29),
                k("`intersect`", 29, 38),
                k("end of expression", 38, 38),
            ]
        );
        let t = lex("'union'").unwrap();
        assert_eq!(
            t[0].kind,
            TokenKind::Word {
                text: "union".into(),
                quoted: true
            }
        );
    }

    #[test]
    fn unterminated_quote_points_at_the_opening_quote() {
        let e = lex("deps('//a:b)").unwrap_err();
        assert_eq!((e.offset, e.len), (5, 7));
        assert_eq!(e.message, "unterminated quoted word: no closing '");
    }
}
