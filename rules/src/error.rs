//! Errors of the build language, as data: each variant carries what the renderer needs, and
//! `SourceSpan` says where in which file. Only the binary turns them into text with code frames.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use crate::label::{Label, LabelError};

/// A byte range in a source file (`BUILD`, `.star`, `flow.toml`), with the file's text so that a
/// renderer can draw a code frame without reading the disk again.
#[derive(Clone, Debug)]
pub struct SourceSpan {
    /// Workspace-relative path, or `@flow//rules:x.star` for the embedded prelude.
    pub file: String,
    pub source: Arc<str>,
    pub start: usize,
    pub end: usize,
}

impl SourceSpan {
    pub fn new(file: impl Into<String>, source: Arc<str>, start: usize, end: usize) -> Self {
        let end = end.min(source.len());
        let start = start.min(end);
        SourceSpan {
            file: file.into(),
            source,
            start,
            end,
        }
    }

    /// 1-based line and column (in characters) of the start.
    pub fn line_col(&self) -> (usize, usize) {
        let before = &self.source[..floor_char_boundary(&self.source, self.start)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before[line_start..].chars().count() + 1;
        (line, col)
    }

    /// The text the span covers.
    pub fn text(&self) -> &str {
        let s = floor_char_boundary(&self.source, self.start);
        let e = floor_char_boundary(&self.source, self.end);
        &self.source[s..e]
    }

    /// A narrower span inside this one, by offsets relative to its start.
    pub fn sub(&self, start: usize, end: usize) -> SourceSpan {
        SourceSpan::new(
            self.file.clone(),
            self.source.clone(),
            self.start + start,
            self.start + end,
        )
    }
}

/// ` (and of `//p:b`)`, ` (and of 3 more targets)`: the other targets an error is about.
fn and_more(also: &[Label]) -> String {
    match also {
        [] => String::new(),
        [one] => format!(" (and of `{one}`)"),
        more => format!(" (and of {} more targets)", more.len()),
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl fmt::Display for SourceSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (line, col) = self.line_col();
        write!(f, "{}:{}:{}", self.file, line, col)
    }
}

/// One error found while evaluating or validating BUILD files.
#[derive(Clone, Debug)]
pub struct AnalysisError {
    pub kind: Box<AnalysisErrorKind>,
    /// Where the problem is; `None` when it has no place in a file.
    pub at: Option<SourceSpan>,
    /// Other places worth showing (the first definition of a duplicate, each edge of a cycle,
    /// the macro call that led into a `.star` file).
    pub related: Vec<(SourceSpan, String)>,
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum AnalysisErrorKind {
    /// Syntax, name or type errors reported by the Starlark interpreter.
    #[error("{message}")]
    Starlark {
        message: String,
        /// A hint flow adds to the interpreter's message ("did you mean", how to fix it).
        hint: Option<String>,
    },
    #[error("cannot read `{path}`: {error}")]
    Io { path: String, error: String },
    #[error("unknown attribute `{attr}` for `{rule}`")]
    UnknownAttribute {
        rule: &'static str,
        attr: String,
        suggestion: Option<String>,
        allowed: Vec<&'static str>,
    },
    #[error("attribute `{attr}` of `{rule}` must be {expected}, got {got}")]
    AttributeType {
        rule: &'static str,
        attr: String,
        expected: &'static str,
        got: String,
    },
    #[error("`{rule}` requires the attribute `{attr}`")]
    MissingAttribute {
        rule: &'static str,
        attr: &'static str,
    },
    #[error("invalid value for attribute `{attr}`: {reason}")]
    BadValue { attr: String, reason: String },
    #[error("invalid gate check `{check}`: {message}")]
    BadCheck {
        check: String,
        message: String,
        help: Option<String>,
    },
    #[error("invalid label `{}`: {error}", error.input)]
    BadLabel { error: LabelError },
    #[error("duplicate target name `{name}` in package `//{package}`")]
    DuplicateTarget { package: String, name: String },
    #[error("source file `{path}` of `{label}`{more} does not exist", more = and_more(.also))]
    MissingSource {
        label: Label,
        path: String,
        suggestion: Option<String>,
        /// Other targets with the same bad element (a list they share): one error for all.
        also: Vec<Label>,
    },
    #[error("source `{path}` of `{label}`{more} {reason}", more = and_more(.also))]
    BadSource {
        label: Label,
        path: String,
        reason: String,
        also: Vec<Label>,
    },
    #[error("output `{path}` of `{label}` {reason}")]
    BadOutput {
        label: Label,
        path: String,
        reason: String,
    },
    #[error("invalid glob pattern `{pattern}`: {reason}")]
    BadGlob { pattern: String, reason: String },
    #[error("cannot load `{module}`: {reason}")]
    LoadFailed { module: String, reason: String },
    #[error("`load()` cycle: {}", cycle.join(" -> "))]
    LoadCycle { cycle: Vec<String> },
    #[error("unknown configuration value `{key}`")]
    UnknownConfig {
        key: String,
        suggestion: Option<String>,
    },
    #[error("`{native}` can only be called while a BUILD file is evaluated, not at the top level of a `.star` file")]
    NativeOutsideBuild { native: &'static str },
    #[error("`{label}` depends on `{dep}`, which does not exist")]
    UnknownDep {
        label: Label,
        dep: Label,
        suggestions: Vec<Label>,
        package_exists: bool,
    },
    #[error("`{label}` depends on `{dep}`, which is not visible to it")]
    NotVisible {
        label: Label,
        dep: Label,
        visibility: Vec<String>,
    },
    #[error("`{label}` depends on itself")]
    SelfDependency { label: Label },
    #[error("dependency cycle: {}", cycle.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(" -> "))]
    Cycle { cycle: Vec<Label> },
    #[error("in the command of `{label}`: {message}")]
    Expansion {
        label: Label,
        message: String,
        hint: Option<String>,
    },
    /// A deploy, monitor, notification or service that cannot work as declared (its artifact
    /// has no single output, its environment is not declared, ...).
    #[error("`{label}`: {message}")]
    Delivery {
        label: Label,
        message: String,
        hint: Option<String>,
    },
    #[error("output `{path}` is declared by both `{first}` and `{second}`")]
    DuplicateOutput {
        path: String,
        first: Label,
        second: Label,
    },
    /// Two outputs of different targets land at the same place under `flow-out/`, or one
    /// inside the other (a directory output holds everything below it), in one package or
    /// across packages: `place` is the workspace-relative path they share.
    #[error(
        "output `{path}` of `{label}` is {} the output `{other_path}` of `{other}` (`flow-out/{place}`)",
        overlap(.inside)
    )]
    OverlappingOutput {
        label: Label,
        path: String,
        other: Label,
        other_path: String,
        place: String,
        /// Inside the other output, rather than the same path.
        inside: bool,
    },
}

fn overlap(inside: &bool) -> &'static str {
    if *inside {
        "inside"
    } else {
        "also"
    }
}

impl AnalysisError {
    pub fn new(kind: AnalysisErrorKind, at: Option<SourceSpan>) -> Self {
        AnalysisError {
            kind: Box::new(kind),
            at,
            related: Vec::new(),
        }
    }

    pub fn with_related(mut self, at: SourceSpan, note: impl Into<String>) -> Self {
        self.related.push((at, note.into()));
        self
    }

    /// A short label for the caret under the primary span.
    pub fn caret(&self) -> String {
        use AnalysisErrorKind::*;
        match &*self.kind {
            UnknownAttribute { .. } => "unknown attribute".into(),
            AttributeType { expected, .. } => format!("expected {expected}"),
            MissingAttribute { attr, .. } => format!("`{attr}` missing here"),
            BadLabel { error } => error.kind.to_string(),
            DuplicateTarget { .. } => "declared again here".into(),
            MissingSource { .. } => "no such file".into(),
            BadCheck { .. } => "here".into(),
            UnknownDep { .. } => "no such target".into(),
            NotVisible { .. } => "not visible".into(),
            Cycle { .. } => "this edge closes the cycle".into(),
            LoadCycle { .. } => "this load closes the cycle".into(),
            SelfDependency { .. } => "depends on itself".into(),
            OverlappingOutput { inside: true, .. } => "inside another output".into(),
            OverlappingOutput { inside: false, .. } => "declared again here".into(),
            _ => String::new(),
        }
    }

    /// Hints printed under the code frame: "did you mean", how to fix it.
    pub fn help(&self) -> Vec<String> {
        use AnalysisErrorKind::*;
        let mut out = Vec::new();
        match &*self.kind {
            UnknownAttribute {
                suggestion,
                allowed,
                ..
            } => {
                if let Some(s) = suggestion {
                    out.push(format!("did you mean `{s}`?"));
                }
                out.push(format!(
                    "allowed attributes: {}",
                    allowed
                        .iter()
                        .map(|a| format!("`{a}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            MissingSource {
                suggestion: Some(s),
                ..
            } => out.push(format!("did you mean `{s}`?")),
            BadCheck { help: Some(h), .. } => out.push(h.clone()),
            UnknownDep {
                suggestions,
                package_exists,
                dep,
                ..
            } => {
                if !suggestions.is_empty() {
                    out.push(format!(
                        "did you mean {}?",
                        suggestions
                            .iter()
                            .map(|l| format!("`{l}`"))
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ));
                } else if !package_exists {
                    out.push(format!(
                        "there is no package `//{}` (no `BUILD` file in `{}`)",
                        dep.package(),
                        if dep.package().is_empty() {
                            "."
                        } else {
                            dep.package()
                        }
                    ));
                }
            }
            NotVisible {
                dep, visibility, ..
            } => {
                out.push(format!(
                    "`{dep}` has visibility [{}]",
                    visibility
                        .iter()
                        .map(|v| format!("`{v}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                out.push(format!(
                    "to allow it, add the depending package to `visibility` of `{dep}`"
                ));
            }
            UnknownConfig { suggestion, .. } => {
                if let Some(s) = suggestion {
                    out.push(format!("did you mean `{s}`?"));
                }
                out.push(
                    "values come from the `[vars]` table of `flow.toml`; pass a default as `config(\"key\", default)`"
                        .into(),
                );
            }
            Starlark { hint: Some(h), .. }
            | Expansion { hint: Some(h), .. }
            | Delivery { hint: Some(h), .. } => out.push(h.clone()),
            BadLabel { .. } => {
                out.push("labels look like `//path/to/pkg:name`, `//path/to/pkg` or `:name`".into())
            }
            Cycle { .. } => {
                out.push("break the cycle by removing one of these dependencies".into())
            }
            OverlappingOutput { .. } => out.push(
                "outputs land in `flow-out/<package>/`, and a directory output holds everything \
                 below it there: give each output a place of its own"
                    .into(),
            ),
            _ => {}
        }
        out
    }

    fn sort_key(&self) -> (Option<&str>, usize, String) {
        (
            self.at.as_ref().map(|s| s.file.as_str()),
            self.at.as_ref().map_or(0, |s| s.start),
            self.kind.to_string(),
        )
    }
}

impl fmt::Display for AnalysisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.at {
            Some(at) => write!(f, "{at}: {}", self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

/// Sorts errors by file and position (then message) and drops exact duplicates, so that a report
/// is stable from run to run whatever the evaluation order.
pub fn sort_errors(errors: &mut Vec<AnalysisError>) {
    errors.sort_by(|a, b| match a.sort_key().cmp(&b.sort_key()) {
        Ordering::Equal => Ordering::Equal,
        o => o,
    });
    errors.dedup_by(|a, b| a.sort_key() == b.sort_key());
}
