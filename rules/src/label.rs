//! `Label`: the name of one target, `//path/to/pkg:name`.
//!
//! Grammar (a subset of Bazel's):
//!
//! ```text
//! label    = "//" package [ ":" name ]      // `//a/b` is short for `//a/b:b`
//!          | ":" name                       // relative to the current package
//!          | name                           // bare, relative (only inside a BUILD file)
//! package  = "" | segment { "/" segment }   // no empty, `.` or `..` segment
//! name     = name-char { name-char | "/" }  // no empty, `.` or `..` segment
//! ```
//!
//! Invariants: a parsed `Label` always displays as `//package:name` and parses back to itself.

use std::fmt;

use serde::{Serialize, Serializer};

/// The name of one target: its package (a workspace-relative directory, `""` for the root) and
/// its name inside that package.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Label {
    package: String,
    name: String,
}

/// Why a label or a package path did not parse. `offset` is the byte offset in the input where
/// the problem is, for a caret under it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct LabelError {
    pub input: String,
    pub offset: usize,
    pub kind: LabelErrorKind,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LabelErrorKind {
    #[error("a label cannot be empty")]
    Empty,
    #[error("a label starts with `//` (absolute) or `:` (relative to the package)")]
    NotALabel,
    #[error("relative label used where no package is known; write it as `//package:name`")]
    RelativeOutsidePackage,
    #[error("a target name cannot be empty")]
    EmptyName,
    #[error("`//` names the root package but no target; write `//:name`")]
    RootWithoutName,
    #[error("invalid character {ch:?} in {what}")]
    InvalidChar { ch: char, what: &'static str },
    #[error("empty path segment in {what} (two `/` in a row, or a leading or trailing `/`)")]
    EmptySegment { what: &'static str },
    #[error("`{segment}` segments are not allowed in {what}")]
    DotSegment { segment: String, what: &'static str },
    #[error("a label has at most one `:`")]
    ExtraColon,
    #[error("external repositories (`@repo//`) are only allowed in `load()`")]
    ExternalRepo,
    #[error("visibility names packages, not targets: write `//pkg:__pkg__` (that package) or `//pkg/...` (it and its sub-packages)")]
    VisibilityNamesTarget,
}

impl Label {
    /// A label from parts that are already known to be valid (used after validation).
    pub fn new(package: &str, name: &str) -> Result<Self, LabelError> {
        let text = format!("//{package}:{name}");
        Self::parse(&text, None)
    }

    /// Parses `input`; `current` is the package a relative label (`:x` or `x`) is relative to.
    pub fn parse(input: &str, current: Option<&str>) -> Result<Self, LabelError> {
        let err = |offset: usize, kind: LabelErrorKind| LabelError {
            input: input.to_owned(),
            offset,
            kind,
        };
        if input.is_empty() {
            return Err(err(0, LabelErrorKind::Empty));
        }
        if input.starts_with('@') {
            return Err(err(0, LabelErrorKind::ExternalRepo));
        }
        if let Some(rest) = input.strip_prefix("//") {
            let (package, name, name_offset) = match rest.find(':') {
                Some(i) => (&rest[..i], &rest[i + 1..], 2 + i + 1),
                None => {
                    if rest.is_empty() {
                        return Err(err(0, LabelErrorKind::RootWithoutName));
                    }
                    let last = rest.rsplit('/').next().unwrap_or(rest);
                    (rest, last, 2 + rest.len() - last.len())
                }
            };
            check_package(package).map_err(|(o, k)| err(2 + o, k))?;
            check_name(name).map_err(|(o, k)| err(name_offset + o, k))?;
            return Ok(Label {
                package: package.to_owned(),
                name: name.to_owned(),
            });
        }
        let Some(current) = current else {
            if input.starts_with(':') {
                return Err(err(0, LabelErrorKind::RelativeOutsidePackage));
            }
            return Err(err(0, LabelErrorKind::NotALabel));
        };
        let (name, offset) = match input.strip_prefix(':') {
            Some(name) => (name, 1),
            None => (input, 0),
        };
        check_name(name).map_err(|(o, k)| err(offset + o, k))?;
        Ok(Label {
            package: current.to_owned(),
            name: name.to_owned(),
        })
    }

    /// The workspace-relative directory of the package (`""` for the root package).
    pub fn package(&self) -> &str {
        &self.package
    }

    /// The target's name inside its package.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The shortest form of this label as written inside `package`: `:name` there, else the full
    /// label.
    pub fn relative_to(&self, package: &str) -> String {
        if self.package == package {
            format!(":{}", self.name)
        } else {
            self.to_string()
        }
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "//{}:{}", self.package, self.name)
    }
}

impl Serialize for Label {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A label reads back from its text (`//pkg:name`), checked as when parsed.
impl<'de> serde::Deserialize<'de> for Label {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Label, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Label::parse(&text, None).map_err(|e| serde::de::Error::custom(format!("{e:?}")))
    }
}

fn valid_package_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '+')
}

fn valid_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '+' | '=' | ',' | '@' | '~')
}

/// Checks a package path (`""` or `a/b/c`); on error, the offset inside `package` and the kind.
pub fn check_package(package: &str) -> Result<(), (usize, LabelErrorKind)> {
    check_segments(package, "a package path", valid_package_char, true)
}

/// Checks a target name (`x`, `gen/x.txt`); on error, the offset inside `name` and the kind.
pub fn check_name(name: &str) -> Result<(), (usize, LabelErrorKind)> {
    if name.is_empty() {
        return Err((0, LabelErrorKind::EmptyName));
    }
    check_segments(name, "a target name", valid_name_char, false)
}

fn check_segments(
    text: &str,
    what: &'static str,
    valid: fn(char) -> bool,
    allow_empty: bool,
) -> Result<(), (usize, LabelErrorKind)> {
    if text.is_empty() && allow_empty {
        return Ok(());
    }
    if let Some((i, ch)) = text.char_indices().find(|&(_, c)| c != '/' && !valid(c)) {
        if ch == ':' {
            return Err((i, LabelErrorKind::ExtraColon));
        }
        return Err((i, LabelErrorKind::InvalidChar { ch, what }));
    }
    let mut offset = 0;
    for segment in text.split('/') {
        match segment {
            "" => return Err((offset, LabelErrorKind::EmptySegment { what })),
            "." | ".." => {
                return Err((
                    offset,
                    LabelErrorKind::DotSegment {
                        segment: segment.to_owned(),
                        what,
                    },
                ))
            }
            _ => {}
        }
        offset += segment.len() + 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for text in [
            "//a/b:c",
            "//:root",
            "//a:b/c.txt",
            "//src/packages/x-y:lint_py3.11",
        ] {
            let label = Label::parse(text, None).unwrap();
            assert_eq!(label.to_string(), text);
            assert_eq!(Label::parse(&label.to_string(), None).unwrap(), label);
        }
    }

    #[test]
    fn short_forms() {
        assert_eq!(Label::parse("//a/b", None).unwrap().to_string(), "//a/b:b");
        assert_eq!(
            Label::parse(":x", Some("p/q")).unwrap().to_string(),
            "//p/q:x"
        );
        assert_eq!(Label::parse("x", Some("p")).unwrap().to_string(), "//p:x");
        assert_eq!(Label::parse(":x", Some("")).unwrap().to_string(), "//:x");
    }

    #[test]
    fn errors_point_at_the_problem() {
        let cases = [
            ("", 0, LabelErrorKind::Empty),
            ("//", 0, LabelErrorKind::RootWithoutName),
            ("//a:", 4, LabelErrorKind::EmptyName),
            (
                "//a//b:c",
                4,
                LabelErrorKind::EmptySegment {
                    what: "a package path",
                },
            ),
            (
                "//a/../b:c",
                4,
                LabelErrorKind::DotSegment {
                    segment: "..".into(),
                    what: "a package path",
                },
            ),
            ("//a:b:c", 5, LabelErrorKind::ExtraColon),
            (
                "//a b:c",
                3,
                LabelErrorKind::InvalidChar {
                    ch: ' ',
                    what: "a package path",
                },
            ),
            (
                "//a:b$",
                5,
                LabelErrorKind::InvalidChar {
                    ch: '$',
                    what: "a target name",
                },
            ),
            ("a:b", 0, LabelErrorKind::NotALabel),
            (":b", 0, LabelErrorKind::RelativeOutsidePackage),
            ("@x//a:b", 0, LabelErrorKind::ExternalRepo),
        ];
        for (input, offset, kind) in cases {
            let e = Label::parse(input, None).unwrap_err();
            assert_eq!((e.offset, e.kind), (offset, kind), "input {input:?}");
        }
    }
}
