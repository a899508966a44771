//! `TargetPattern`: what a user names on the command line or in a query: `//...`, `//a/b/...`,
//! `//a:all`, `//a:name`, and `-PATTERN` to exclude.
//!
//! Matching rule (as in Bazel): a target tagged `manual` is matched only by a pattern that names it
//! exactly, never by `...` or `:all`. A pattern that matches nothing is an error at the caller.

use std::fmt;

use crate::label::{check_package, Label, LabelError, LabelErrorKind};

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TargetPattern {
    /// `//a:b`: exactly one target.
    Label(Label),
    /// `//a:all` (also `//a:*`): every target of one package.
    Package(String),
    /// `//a/...`: every target in the package `a` and below (`//...` for all).
    Recursive(String),
}

/// One entry of a pattern list: a pattern and whether it adds (`//a/...`) or removes (`-//a:b`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatternTerm {
    pub exclude: bool,
    pub pattern: TargetPattern,
}

impl TargetPattern {
    /// Parses one pattern (without a leading `-`).
    pub fn parse(input: &str) -> Result<Self, LabelError> {
        let err = |offset: usize, kind: LabelErrorKind| LabelError {
            input: input.to_owned(),
            offset,
            kind,
        };
        let Some(rest) = input.strip_prefix("//") else {
            if input.is_empty() {
                return Err(err(0, LabelErrorKind::Empty));
            }
            return Err(err(0, LabelErrorKind::NotALabel));
        };
        if rest == "..." {
            return Ok(TargetPattern::Recursive(String::new()));
        }
        if let Some(prefix) = rest.strip_suffix("/...") {
            check_package(prefix).map_err(|(o, k)| err(2 + o, k))?;
            if prefix.is_empty() {
                return Err(err(
                    2,
                    LabelErrorKind::EmptySegment {
                        what: "a package path",
                    },
                ));
            }
            return Ok(TargetPattern::Recursive(prefix.to_owned()));
        }
        if let Some((package, name)) = rest.split_once(':') {
            if name == "all" || name == "*" {
                check_package(package).map_err(|(o, k)| err(2 + o, k))?;
                return Ok(TargetPattern::Package(package.to_owned()));
            }
        }
        let label = Label::parse(input, None)?;
        // `//pkg:all` is the wildcard; `//x/all` (short for `//x/all:all`) is written the same
        // way, so it is the wildcard too, and every pattern prints as text that parses back.
        if label.name() == "all" || label.name() == "*" {
            return Ok(TargetPattern::Package(label.package().to_owned()));
        }
        Ok(TargetPattern::Label(label))
    }

    /// Whether this pattern selects `label` (a target tagged `manual` when `manual`).
    pub fn matches(&self, label: &Label, manual: bool) -> bool {
        match self {
            TargetPattern::Label(l) => l == label,
            TargetPattern::Package(p) => !manual && label.package() == p,
            TargetPattern::Recursive(prefix) => {
                !manual && package_is_under(label.package(), prefix)
            }
        }
    }

    /// Whether the pattern could select targets of `package` (ignoring `manual`).
    pub fn covers_package(&self, package: &str) -> bool {
        match self {
            TargetPattern::Label(l) => l.package() == package,
            TargetPattern::Package(p) => p == package,
            TargetPattern::Recursive(prefix) => package_is_under(package, prefix),
        }
    }
}

/// Whether `package` is `prefix` or below it (`a/b` is under `a`, `ab` is not).
pub fn package_is_under(package: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || package == prefix
        || (package.starts_with(prefix) && package.as_bytes().get(prefix.len()) == Some(&b'/'))
}

impl PatternTerm {
    /// Parses `PATTERN` or `-PATTERN`.
    pub fn parse(input: &str) -> Result<Self, LabelError> {
        match input.strip_prefix('-') {
            Some(rest) => TargetPattern::parse(rest)
                .map(|pattern| PatternTerm {
                    exclude: true,
                    pattern,
                })
                .map_err(|mut e| {
                    e.input = input.to_owned();
                    e.offset += 1;
                    e
                }),
            None => TargetPattern::parse(input).map(|pattern| PatternTerm {
                exclude: false,
                pattern,
            }),
        }
    }
}

impl fmt::Display for TargetPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetPattern::Label(l) => write!(f, "{l}"),
            TargetPattern::Package(p) => write!(f, "//{p}:all"),
            TargetPattern::Recursive(p) if p.is_empty() => write!(f, "//..."),
            TargetPattern::Recursive(p) => write!(f, "//{p}/..."),
        }
    }
}

impl fmt::Display for PatternTerm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.exclude {
            write!(f, "-")?;
        }
        write!(f, "{}", self.pattern)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        for text in [
            "//...",
            "//a/b/...",
            "//a:all",
            "//:all",
            "//a:b",
            "-//a/...",
        ] {
            let term = PatternTerm::parse(text).unwrap();
            assert_eq!(term.to_string(), text);
        }
        assert_eq!(
            TargetPattern::parse("//a:*").unwrap().to_string(),
            "//a:all"
        );
        assert_eq!(TargetPattern::parse("//a").unwrap().to_string(), "//a:a");
    }

    #[test]
    fn matching_respects_manual_and_package_boundaries() {
        let l = |s: &str| Label::parse(s, None).unwrap();
        let all = TargetPattern::parse("//...").unwrap();
        let sub = TargetPattern::parse("//a/...").unwrap();
        assert!(all.matches(&l("//x:y"), false));
        assert!(!all.matches(&l("//x:y"), true));
        assert!(sub.matches(&l("//a:y"), false));
        assert!(sub.matches(&l("//a/b:y"), false));
        assert!(!sub.matches(&l("//ab:y"), false));
        assert!(TargetPattern::parse("//x:y")
            .unwrap()
            .matches(&l("//x:y"), true));
        assert!(!TargetPattern::parse("//x:all")
            .unwrap()
            .matches(&l("//x:y"), true));
    }

    #[test]
    fn bad_patterns_point_at_the_problem() {
        let e = PatternTerm::parse("-//a/../...").unwrap_err();
        assert_eq!(e.offset, 5);
        let e = TargetPattern::parse("a/...").unwrap_err();
        assert_eq!(e.kind, LabelErrorKind::NotALabel);
        let e = TargetPattern::parse("///...").unwrap_err();
        assert_eq!(e.offset, 2);
    }
}
