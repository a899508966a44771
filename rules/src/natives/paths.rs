//! `srcs` and `outs` of a task checked against its package: normalized package-relative paths;
//! sources that are files of this package (not labels, not a sub-package's files; otherwise "did
//! you mean"); outputs that are new files, each declared once and none inside another.

use super::attrs::{attr_span, literal_span};
use crate::error::{AnalysisError, AnalysisErrorKind as K, SourceSpan};
use crate::label::Label;
use crate::natives::BuildState;
use crate::suggest::closest;

/// Why a package-relative path is unusable, if it is.
fn path_problem(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        Some("is empty")
    } else if path.starts_with('/') {
        Some("is an absolute path; paths are relative to the package")
    } else if path.split('/').any(|s| s == "..") {
        Some("contains `..`: it would escape its package")
    } else if path.split('/').any(|s| s == ".") || path.contains("//") {
        Some("is not a normalized path (it has a `.` or an empty segment)")
    } else if path.contains('\0') {
        Some("contains a NUL byte")
    } else {
        None
    }
}

/// Whether an output path segment has a name flow gives its own files under `flow-out/`: the
/// marker of a directory output (`.NAME.flow-tree`), the lock, temp files (`.flow-*`).
fn reserved(segment: &str) -> bool {
    segment.starts_with('.') && (segment.ends_with(".flow-tree") || segment.starts_with(".flow-"))
}

/// Checks that each of `srcs` is a normalized path naming a file of the package.
pub(super) fn check_srcs(
    build: &BuildState,
    call: &SourceSpan,
    label: &Label,
    srcs: &[String],
    errors: &mut Vec<AnalysisError>,
) {
    let span = attr_span(call, "srcs");
    for src in srcs {
        let at = literal_span(call, &span, src);
        let bad = |reason: &str| {
            AnalysisError::new(
                K::BadSource {
                    label: label.clone(),
                    path: src.clone(),
                    reason: reason.to_owned(),
                    also: Vec::new(),
                },
                Some(at.clone()),
            )
        };
        if src.starts_with("//") || src.starts_with(':') {
            errors.push(bad(
                "is a label: `srcs` holds files of the package; put targets in `deps`",
            ));
            continue;
        }
        if let Some(problem) = path_problem(src) {
            errors.push(bad(problem));
            continue;
        }
        if build.files.binary_search(src).is_ok() {
            continue;
        }
        if build.links_to_non_files.iter().any(|l| l == src) {
            errors.push(bad(
                "is a symlink that does not lead to a regular file (but to a directory, a FIFO, \
                 a device, or nothing); a source must be a file",
            ));
            continue;
        }
        if let Some(sub) = build
            .subpackages
            .iter()
            .find(|p| src.starts_with(p.as_str()) && src.as_bytes().get(p.len()) == Some(&b'/'))
        {
            let pkg = if build.package.is_empty() {
                sub.clone()
            } else {
                format!("{}/{sub}", build.package)
            };
            errors.push(bad(&format!(
                "belongs to the sub-package `//{pkg}`; depend on a target there instead"
            )));
            continue;
        }
        let suggestion = closest(src, build.files.iter().map(|s| s.as_str()));
        errors.push(AnalysisError::new(
            K::MissingSource {
                label: label.clone(),
                path: src.clone(),
                suggestion,
                also: Vec::new(),
            },
            Some(at),
        ));
    }
}

/// Checks that each of `outs` (a trailing `/` declares a directory) is a normalized path that is
/// neither a source nor a file of the package, declared once, and not inside another output.
pub(super) fn check_outs(
    build: &BuildState,
    call: &SourceSpan,
    label: &Label,
    outs: &[String],
    srcs: &[String],
    errors: &mut Vec<AnalysisError>,
) {
    let span = attr_span(call, "outs");
    let mut seen: Vec<&str> = Vec::new();
    for (k, out) in outs.iter().enumerate() {
        // Point at this occurrence, also when the same path is written twice.
        let nth = outs[..k].iter().filter(|o| *o == out).count();
        let mut at = literal_span(call, &span, out);
        for _ in 0..nth {
            let after = SourceSpan::new(at.file.clone(), at.source.clone(), at.end, call.end);
            let next = literal_span(call, &after, out);
            if next.start <= at.start {
                break;
            }
            at = next;
        }
        let path = out.strip_suffix('/').unwrap_or(out);
        let reason = if let Some(p) = path_problem(path) {
            Some(p.to_owned())
        } else if let Some(name) = path.split('/').find(|s| reserved(s)) {
            Some(format!(
                "uses the name `{name}`, which flow keeps for its own files under flow-out/ \
                 (`.NAME.flow-tree` marks the directory output `NAME/`; `.flow-*` are flow's)"
            ))
        } else if srcs.iter().any(|s| s == path) {
            Some("is also a source of the target; outputs must be new files".to_owned())
        } else if build.files.binary_search(&path.to_owned()).is_ok() {
            Some("collides with a source file of the package; outputs must be new files".to_owned())
        } else if seen.contains(&path) {
            Some("is declared twice".to_owned())
        } else {
            seen.iter()
                .find(|s| {
                    path.starts_with(*s) && path.as_bytes().get(s.len()) == Some(&b'/')
                        || s.starts_with(path) && s.as_bytes().get(path.len()) == Some(&b'/')
                })
                .map(|other| format!("overlaps the output `{other}`"))
        };
        seen.push(path);
        if let Some(reason) = reason {
            errors.push(AnalysisError::new(
                K::BadOutput {
                    label: label.clone(),
                    path: out.clone(),
                    reason,
                },
                Some(at),
            ));
        }
    }
}
