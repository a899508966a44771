//! The query parser: tokens → `Expr`, with every argument checked before evaluation starts.
//!
//! Grammar:
//!
//! ```text
//! expr    = primary { op primary }                 // one precedence level, left-associative
//! op      = "+" | "union" | "-" | "except" | "^" | "intersect"
//! primary = "(" expr ")"
//!         | NAME "(" arg { "," arg } ")"           // a function, see `FUNCTIONS`
//!         | WORD                                   // a target pattern
//! arg     = expr | WORD                            // by position: an expression, a depth, a regex
//! ```
//!
//! Everything that can be checked without the graph is checked here, so that a typo in the last
//! argument is reported before a slow evaluation: function names and arities, depths, regular
//! expressions, attribute names and the syntax of target patterns. Each error carries the span of
//! the token that caused it.

use flow_rules::suggest::closest;
use flow_rules::TargetPattern;
use regex::Regex;

use super::lexer::{lex, SetOp, Span, Token, TokenKind};
use super::{attr, QueryError};

/// A parsed query expression.
#[derive(Debug)]
pub enum Expr {
    /// A target pattern (`//a/...`) and where it is written.
    Pattern {
        pattern: TargetPattern,
        span: Span,
    },
    Deps {
        of: Box<Expr>,
        depth: Option<usize>,
    },
    Rdeps {
        universe: Box<Expr>,
        of: Box<Expr>,
        depth: Option<usize>,
    },
    Somepath {
        from: Box<Expr>,
        to: Box<Expr>,
    },
    Allpaths {
        from: Box<Expr>,
        to: Box<Expr>,
    },
    Kind {
        regex: Regex,
        of: Box<Expr>,
    },
    Attr {
        name: &'static str,
        regex: Regex,
        of: Box<Expr>,
    },
    Filter {
        regex: Regex,
        of: Box<Expr>,
    },
    Set {
        op: SetOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
}

/// What one argument position of a function takes.
#[derive(Clone, Copy, Debug)]
enum Param {
    /// A query expression; the name is for the usage line.
    Expr(&'static str),
    /// A non-negative integer.
    Depth,
    /// A regular expression (a word or a quoted string).
    Regex,
    /// An attribute name.
    AttrName,
}

impl Param {
    fn name(self) -> &'static str {
        match self {
            Param::Expr(name) => name,
            Param::Depth => "depth",
            Param::Regex => "regex",
            Param::AttrName => "name",
        }
    }
}

struct Function {
    name: &'static str,
    params: &'static [Param],
    /// How many of `params` are required; the rest are optional.
    required: usize,
}

const FUNCTIONS: &[Function] = &[
    Function {
        name: "allpaths",
        params: &[Param::Expr("from"), Param::Expr("to")],
        required: 2,
    },
    Function {
        name: "attr",
        params: &[Param::AttrName, Param::Regex, Param::Expr("expr")],
        required: 3,
    },
    Function {
        name: "deps",
        params: &[Param::Expr("expr"), Param::Depth],
        required: 1,
    },
    Function {
        name: "filter",
        params: &[Param::Regex, Param::Expr("expr")],
        required: 2,
    },
    Function {
        name: "kind",
        params: &[Param::Regex, Param::Expr("expr")],
        required: 2,
    },
    Function {
        name: "rdeps",
        params: &[Param::Expr("universe"), Param::Expr("expr"), Param::Depth],
        required: 2,
    },
    Function {
        name: "somepath",
        params: &[Param::Expr("from"), Param::Expr("to")],
        required: 2,
    },
];

impl Function {
    fn call(&self, n: usize) -> String {
        let args: Vec<&str> = self.params[..n].iter().map(|p| p.name()).collect();
        format!("`{}({})`", self.name, args.join(", "))
    }

    /// "1 or 2 arguments", "2 arguments".
    fn arity(&self) -> String {
        let n = self.params.len();
        let plural = |k: usize| if k == 1 { "argument" } else { "arguments" };
        if self.required == n {
            format!("{n} {}", plural(n))
        } else {
            format!("{} or {n} {}", self.required, plural(n))
        }
    }

    fn usage(&self) -> String {
        let forms: Vec<String> = (self.required..=self.params.len())
            .map(|n| self.call(n))
            .collect();
        format!("usage: {}", forms.join(" or "))
    }
}

const QUOTE_REGEX: &str =
    "quote a regular expression that contains spaces, parentheses or commas: '(a|b) c'";

/// One parsed argument, before it is given its place in an `Expr`.
enum Arg {
    Expr(Expr),
    Depth(usize),
    Regex(Regex),
    AttrName(&'static str),
}

/// Parses a whole query expression; relative patterns (`:name`, `...`, `sub/...`) are
/// relative to `package` (the one flow started in), as on the command line.
pub fn parse(input: &str, package: &str) -> Result<Expr, QueryError> {
    let mut parser = Parser {
        tokens: lex(input)?,
        pos: 0,
        package: package.to_owned(),
    };
    let expr = parser.expr(None)?;
    let next = parser.peek();
    match next.kind {
        TokenKind::Eof => Ok(expr),
        TokenKind::RParen => Err(QueryError::new(next.span, "unexpected `)`")
            .with_help("there is no `(` for it to close")),
        _ => Err(
            QueryError::new(next.span, format!("unexpected {}", next.describe())).with_help(
                "combine sets with `+`, `-` or `^` (also written `union`, `except`, `intersect`)",
            ),
        ),
    }
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    package: String,
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.tokens[self.pos]
    }

    fn next(&mut self) -> Token {
        let token = self.tokens[self.pos].clone();
        if token.kind != TokenKind::Eof {
            self.pos += 1;
        }
        token
    }

    /// `primary { op primary }`; `after` names what precedes, for "expected an expression".
    fn expr(&mut self, after: Option<&str>) -> Result<Expr, QueryError> {
        let mut left = self.primary(after)?;
        while let TokenKind::Op(op, text) = self.peek().kind {
            self.next();
            let right = self.primary(Some(text))?;
            left = Expr::Set {
                op,
                left: Box::new(left),
                right: Box::new(right),
            };
        }
        Ok(left)
    }

    fn primary(&mut self, after: Option<&str>) -> Result<Expr, QueryError> {
        let token = self.next();
        match token.kind {
            TokenKind::LParen => {
                let inner = self.expr(Some("("))?;
                self.expect_close(token.span)?;
                Ok(inner)
            }
            TokenKind::Word { text, quoted } => {
                if !quoted && self.peek().kind == TokenKind::LParen {
                    return self.call(&text, token.span);
                }
                pattern(&text, quoted, token.span, &self.package)
            }
            _ => {
                let after = after.map(|a| format!(" after `{a}`")).unwrap_or_default();
                Err(QueryError::new(
                    token.span,
                    format!("expected an expression{after}, found {}", token.describe()),
                ))
            }
        }
    }

    fn expect_close(&mut self, open: Span) -> Result<(), QueryError> {
        let token = self.next();
        if token.kind == TokenKind::RParen {
            return Ok(());
        }
        Err(QueryError::new(
            token.span,
            format!("expected `)`, found {}", token.describe()),
        )
        .with_help(format!("to close the `(` at offset {}", open.start)))
    }

    /// `NAME ( args )`, with the name at `span` and the `(` next.
    fn call(&mut self, name: &str, span: Span) -> Result<Expr, QueryError> {
        let Some(function) = FUNCTIONS.iter().find(|f| f.name == name) else {
            if !is_identifier(name) {
                let paren = self.peek().span;
                return Err(
                    QueryError::new(paren, "unexpected `(` after a target pattern")
                        .with_help("combine sets with `+`, `-` or `^`"),
                );
            }
            let help = match closest(name, FUNCTIONS.iter().map(|f| f.name)) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!(
                    "the functions are {}",
                    FUNCTIONS
                        .iter()
                        .map(|f| format!("`{}`", f.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            return Err(QueryError::new(span, format!("unknown function `{name}`")).with_help(help));
        };
        self.next(); // `(`
        let mut args = Vec::new();
        loop {
            if args.is_empty() && self.peek().kind == TokenKind::RParen && function.required > 0 {
                return Err(self.too_few(function, 0));
            }
            let param = function.params[args.len()];
            args.push(self.arg(param)?);
            let token = self.peek().clone();
            match token.kind {
                TokenKind::RParen if args.len() < function.required => {
                    return Err(self.too_few(function, args.len()));
                }
                TokenKind::RParen => {
                    self.next();
                    break;
                }
                TokenKind::Comma if args.len() == function.params.len() => {
                    return Err(self.too_many(function));
                }
                TokenKind::Comma => {
                    self.next();
                }
                _ => {
                    let expected = if args.len() < function.required {
                        "`,`"
                    } else {
                        "`)`"
                    };
                    let help = match param {
                        Param::Regex => QUOTE_REGEX.to_owned(),
                        _ => function.usage(),
                    };
                    return Err(QueryError::new(
                        token.span,
                        format!("expected {expected}, found {}", token.describe()),
                    )
                    .with_help(help));
                }
            }
        }
        Ok(build(function.name, args))
    }

    fn too_few(&self, function: &Function, found: usize) -> QueryError {
        QueryError::new(
            self.peek().span,
            format!(
                "`{}` takes {}, found {found}",
                function.name,
                function.arity()
            ),
        )
        .with_help(function.usage())
    }

    /// At the `,` after the last allowed argument: counts the extra arguments up to the `)`
    /// that closes the call and points at them.
    fn too_many(&self, function: &Function) -> QueryError {
        let comma = self.peek().span;
        let mut found = function.params.len();
        let mut depth = 0usize;
        let mut last = comma;
        for token in &self.tokens[self.pos..] {
            match token.kind {
                TokenKind::LParen => depth += 1,
                TokenKind::RParen if depth == 0 => break,
                TokenKind::RParen => depth -= 1,
                TokenKind::Comma if depth == 0 => found += 1,
                TokenKind::Eof => break,
                _ => {}
            }
            last = token.span;
        }
        let first = self.tokens[self.pos + 1].span;
        let span = if first.start <= last.start {
            first.to(last)
        } else {
            comma
        };
        QueryError::new(
            span,
            format!(
                "`{}` takes {}, found {found}",
                function.name,
                function.arity()
            ),
        )
        .with_help(function.usage())
    }

    fn arg(&mut self, param: Param) -> Result<Arg, QueryError> {
        if let Param::Expr(_) = param {
            let after = if self.tokens[self.pos - 1].kind == TokenKind::Comma {
                ","
            } else {
                "("
            };
            return Ok(Arg::Expr(self.expr(Some(after))?));
        }
        let token = self.next();
        let TokenKind::Word { text, .. } = &token.kind else {
            let what = match param {
                Param::Depth => "a depth (a non-negative integer)",
                Param::Regex => "a regular expression",
                _ => "an attribute name",
            };
            let mut err = QueryError::new(
                token.span,
                format!("expected {what}, found {}", token.describe()),
            );
            if matches!(param, Param::Regex) && token.kind == TokenKind::LParen {
                err = err.with_help(QUOTE_REGEX);
            }
            return Err(err);
        };
        match param {
            Param::Depth => text.parse::<usize>().map(Arg::Depth).map_err(|_| {
                QueryError::new(
                    token.span,
                    format!(
                        "expected a depth (a non-negative integer), found {}",
                        token.describe()
                    ),
                )
            }),
            Param::Regex => Regex::new(text).map(Arg::Regex).map_err(|e| {
                QueryError::new(
                    token.span,
                    format!("invalid regular expression: {}", regex_message(&e)),
                )
            }),
            Param::AttrName => attr::lookup(text).map(Arg::AttrName).ok_or_else(|| {
                let help = match closest(text, attr::ATTRIBUTES.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!(
                        "the attributes are {}",
                        attr::ATTRIBUTES
                            .iter()
                            .map(|a| format!("`{a}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                QueryError::new(token.span, format!("unknown attribute `{text}`")).with_help(help)
            }),
            Param::Expr(_) => unreachable!("handled above"),
        }
    }
}

/// Puts checked arguments in their places; the arity was checked against `FUNCTIONS`.
fn build(name: &str, args: Vec<Arg>) -> Expr {
    let mut args = args.into_iter();
    let mut expr = || match args.next() {
        Some(Arg::Expr(e)) => Box::new(e),
        _ => unreachable!("argument types follow `FUNCTIONS`"),
    };
    match name {
        "deps" => {
            let of = expr();
            Expr::Deps {
                of,
                depth: depth(args.next()),
            }
        }
        "rdeps" => {
            let universe = expr();
            let of = expr();
            Expr::Rdeps {
                universe,
                of,
                depth: depth(args.next()),
            }
        }
        "somepath" => Expr::Somepath {
            from: expr(),
            to: expr(),
        },
        "allpaths" => Expr::Allpaths {
            from: expr(),
            to: expr(),
        },
        "kind" | "filter" => {
            let Some(Arg::Regex(regex)) = args.next() else {
                unreachable!("argument types follow `FUNCTIONS`")
            };
            let of = match args.next() {
                Some(Arg::Expr(e)) => Box::new(e),
                _ => unreachable!("argument types follow `FUNCTIONS`"),
            };
            if name == "kind" {
                Expr::Kind { regex, of }
            } else {
                Expr::Filter { regex, of }
            }
        }
        "attr" => {
            let (Some(Arg::AttrName(name)), Some(Arg::Regex(regex)), Some(Arg::Expr(of))) =
                (args.next(), args.next(), args.next())
            else {
                unreachable!("argument types follow `FUNCTIONS`")
            };
            Expr::Attr {
                name,
                regex,
                of: Box::new(of),
            }
        }
        other => unreachable!("function `{other}` is in `FUNCTIONS` but not built"),
    }
}

fn depth(arg: Option<Arg>) -> Option<usize> {
    match arg {
        Some(Arg::Depth(d)) => Some(d),
        None => None,
        _ => unreachable!("argument types follow `FUNCTIONS`"),
    }
}

/// A target pattern written at `span`; syntax errors point inside the word.
fn pattern(text: &str, quoted: bool, span: Span, package: &str) -> Result<Expr, QueryError> {
    let start = span.start + usize::from(quoted);
    TargetPattern::parse(text)
        .or_else(|e| {
            // Relative to the package (`:name`, `sub:name`, `...`, `sub/...`): the absolute
            // form, but errors point into `text`. A bare word (`deps`) keeps its error and hint.
            let relative = text.contains(':') || text == "..." || text.ends_with("/...");
            let absolute = crate::analysis::absolute_pattern(text, package);
            match relative && absolute != text {
                true => TargetPattern::parse(&absolute).map_err(|_| e),
                false => Err(e),
            }
        })
        .map(|pattern| Expr::Pattern { pattern, span })
        .map_err(|e| {
            let offset = start + e.offset;
            let len = text[e.offset..].chars().next().map_or(0, char::len_utf8);
            let mut err = QueryError::new(Span::new(offset, offset + len), e.to_string());
            if !quoted && FUNCTIONS.iter().any(|f| f.name == text) {
                err = err.with_help(format!("`{text}` is a function: write `{text}(...)`"));
            } else if e.kind == flow_rules::LabelErrorKind::NotALabel {
                err = err.with_help(
                    "a target pattern is `//pkg:name`, `//pkg:all` or `//pkg/...`".to_owned(),
                );
            }
            err
        })
}

fn is_identifier(word: &str) -> bool {
    let mut chars = word.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The one-line cause of a regex error (`regex::Error` renders a multi-line code frame of its
/// own; the query's code frame already points at the argument).
fn regex_message(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or(&text)
        .to_owned()
}
