//! Rendering of every user-facing error, in one place: a headline, a code frame with
//! `file:line:col` where there is source text, and `help:` lines ("did you mean ...").
//!
//! Built on `codespan-reporting`; colors only when stderr is a terminal and `NO_COLOR` is unset
//! (or `--color always`). Output without colors is stable and is what the golden tests compare.

use std::io::IsTerminal;
use std::ops::Range;
use std::sync::Arc;

use codespan_reporting::diagnostic::{Diagnostic, Label as CsLabel};
use codespan_reporting::files::SimpleFiles;
use codespan_reporting::term::termcolor::{Buffer, ColorChoice};
use codespan_reporting::term::{self, Config as TermConfig};
use flow_rules::{AnalysisError, LabelError};

use crate::error::Error;

/// When to use colors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorMode {
    #[default]
    Auto,
    Always,
    Never,
}

impl ColorMode {
    /// Whether to color output written to stderr.
    pub fn stderr_colors(self) -> bool {
        match self {
            ColorMode::Always => true,
            ColorMode::Never => false,
            ColorMode::Auto => {
                std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            }
        }
    }
}

/// Collects diagnostics and renders them into one buffer.
struct Report {
    files: SimpleFiles<String, Arc<str>>,
    ids: Vec<(String, usize, usize)>, // (name, source pointer, id)
    out: Buffer,
    config: TermConfig,
}

impl Report {
    fn new(colors: bool) -> Self {
        let _ = ColorChoice::Never;
        Report {
            files: SimpleFiles::new(),
            ids: Vec::new(),
            out: if colors {
                Buffer::ansi()
            } else {
                Buffer::no_color()
            },
            config: TermConfig::default(),
        }
    }

    fn file(&mut self, name: &str, source: &Arc<str>) -> usize {
        let ptr = Arc::as_ptr(source) as *const u8 as usize;
        if let Some((_, _, id)) = self.ids.iter().find(|(n, p, _)| n == name && *p == ptr) {
            return *id;
        }
        let id = self.files.add(name.to_owned(), source.clone());
        self.ids.push((name.to_owned(), ptr, id));
        id
    }

    fn emit(&mut self, d: &Diagnostic<usize>) {
        // Rendering into memory only fails on an out-of-range span, which `SourceSpan` clamps.
        let _ = term::emit(&mut self.out, &self.config, &self.files, d);
    }

    fn finish(self) -> String {
        String::from_utf8_lossy(self.out.as_slice()).into_owned()
    }
}

fn notes(help: impl IntoIterator<Item = String>) -> Vec<String> {
    help.into_iter().map(|h| format!("help: {h}")).collect()
}

fn analysis_diagnostic(report: &mut Report, e: &AnalysisError) -> Diagnostic<usize> {
    let mut d = Diagnostic::error().with_message(e.kind.to_string());
    let mut labels = Vec::new();
    if let Some(at) = &e.at {
        let id = report.file(&at.file, &at.source);
        let end = if at.end > at.start { at.end } else { at.start };
        labels.push(CsLabel::primary(id, at.start..end).with_message(e.caret()));
    }
    for (span, note) in &e.related {
        let id = report.file(&span.file, &span.source);
        labels.push(CsLabel::secondary(id, span.start..span.end).with_message(note.clone()));
    }
    d = d.with_labels(labels);
    d.with_notes(notes(e.help()))
}

fn input_diagnostic(
    report: &mut Report,
    what: &str,
    input: &str,
    span: Range<usize>,
    message: String,
    caret: String,
    help: Vec<String>,
) -> Diagnostic<usize> {
    let source: Arc<str> = Arc::from(input);
    let id = report.file(what, &source);
    let end = span.end.max(span.start).min(input.len());
    let start = span.start.min(end);
    Diagnostic::error()
        .with_message(message)
        .with_labels(vec![CsLabel::primary(id, start..end).with_message(caret)])
        .with_notes(notes(help))
}

fn label_error_span(e: &LabelError) -> Range<usize> {
    let start = e.offset.min(e.input.len());
    let len = e.input[start..].chars().next().map_or(0, |c| c.len_utf8());
    start..start + len
}

/// Renders `err` as the text to print on stderr.
pub fn render(err: &Error, colors: bool) -> String {
    let mut report = Report::new(colors);
    match err {
        Error::Analysis(errors) => {
            for e in errors {
                let d = analysis_diagnostic(&mut report, e);
                report.emit(&d);
            }
            let n = errors.len();
            let d = Diagnostic::error().with_message(format!(
                "found {n} error{} in BUILD files",
                if n == 1 { "" } else { "s" }
            ));
            report.emit(&d);
        }
        Error::Config(c) => {
            let mut d =
                Diagnostic::error().with_message(format!("invalid `{}`: {}", c.file, c.message));
            if let Some(span) = &c.span {
                let id = report.file(&c.file, &c.text);
                d = d.with_labels(vec![CsLabel::primary(id, span.clone())]);
            }
            d = d.with_notes(notes(c.help.clone()));
            report.emit(&d);
        }
        Error::NoWorkspace { .. } => {
            let d = Diagnostic::error().with_message(err.to_string()).with_notes(notes([
                "a workspace is the directory tree under a `flow.toml` file".to_string(),
                "run `flow init` to create one in the current directory, or pass `-C DIR` to use the workspace at DIR".to_string(),
            ]));
            report.emit(&d);
        }
        Error::BadPattern { error } => {
            let d = input_diagnostic(
                &mut report,
                "<target pattern>",
                &error.input,
                label_error_span(error),
                err.to_string(),
                error.kind.to_string(),
                vec!["patterns look like `//...`, `//pkg/...`, `//pkg:all`, `//pkg:name` or `-//pkg:name`".into()],
            );
            report.emit(&d);
        }
        Error::Unmatched(list) => {
            for (term, e) in list {
                let d = Diagnostic::error()
                    .with_message(format!("`{term}`: {e}"))
                    .with_notes(notes(e.help()));
                report.emit(&d);
            }
        }
        Error::Query { expr, error } => {
            let d = input_diagnostic(
                &mut report,
                "<query>",
                expr,
                error.offset..error.offset + error.len,
                format!("invalid query: {}", error.message),
                String::new(),
                error.help.clone().into_iter().collect(),
            );
            report.emit(&d);
        }
        Error::Usage { message, help } => {
            let d = Diagnostic::error()
                .with_message(message.clone())
                .with_notes(notes(help.clone()));
            report.emit(&d);
        }
        Error::Io { .. } | Error::Cache { .. } | Error::AlreadyInitialized { .. } => {
            let d = Diagnostic::error().with_message(err.to_string());
            report.emit(&d);
        }
    }
    report.finish()
}
