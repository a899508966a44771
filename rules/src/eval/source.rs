//! Reading and parsing one file (BUILD or `.star`): its source as UTF-8, a bracket-depth guard,
//! the parse in the file's dialect, and each `load()` resolved to a `ModuleId`.
//!
//! Two dialects: BUILD files allow top-level `for` and `if` but not `def` or `lambda`; `.star`
//! files allow `def`. Reading and parsing never evaluate anything.

use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;
use starlark::syntax::{AstModule, Dialect};

use super::starlark_error::starlark_error;
use crate::error::{AnalysisError, AnalysisErrorKind as K, SourceSpan};
use crate::listing::{Listing, BUILD_FILE};
use crate::module_id::ModuleId;

/// A `load()` as written: the string, what it resolved to, and where it is.
pub(super) struct LoadSite {
    pub text: String,
    pub target: Result<ModuleId, String>,
    pub at: SourceSpan,
}

/// A parsed file (BUILD or `.star`) whose loads are resolved.
pub(super) struct ParsedFile {
    pub ast: AstModule,
    pub loads: Vec<LoadSite>,
}

impl ParsedFile {
    /// The modules this file loads, as `ModuleId` strings (unresolvable loads left out).
    pub fn load_names(&self) -> Vec<String> {
        self.loads
            .iter()
            .filter_map(|l| l.target.as_ref().ok().map(|t| t.to_string()))
            .collect()
    }
}

/// A BUILD file after reading and parsing: package, path, and the parse (or why it failed).
pub(super) type ParsedBuild = (
    String,
    String,
    Result<(Arc<str>, ParsedFile), AnalysisError>,
);

fn build_dialect() -> Dialect {
    Dialect {
        enable_def: false,
        enable_lambda: false,
        enable_top_level_stmt: true,
        enable_f_strings: true,
        ..Dialect::Standard
    }
}

pub(super) fn star_dialect() -> Dialect {
    Dialect {
        enable_top_level_stmt: true,
        enable_f_strings: true,
        enable_keyword_only_arguments: true,
        ..Dialect::Standard
    }
}

/// Where BUILD and `.star` files are read: the workspace at `root`, except the files
/// `overrides` holds (`EvalOptions::overrides`).
pub(super) struct Sources<'a> {
    pub root: &'a Path,
    pub overrides: &'a std::collections::BTreeMap<String, Arc<str>>,
}

impl Sources<'_> {
    /// The text of the workspace-relative file `rel`.
    pub fn read(&self, rel: &str) -> Result<Arc<str>, AnalysisError> {
        match self.overrides.get(rel) {
            Some(text) => Ok(text.clone()),
            None => read_source(self.root, rel),
        }
    }
}

/// Step 2: reads and parses every BUILD file of the listing, in parallel.
pub(super) fn parse_build_files(sources: &Sources, listing: &Listing) -> Vec<ParsedBuild> {
    let dialect = build_dialect();
    listing
        .packages
        .keys()
        .collect::<Vec<_>>()
        .par_iter()
        .map(|pkg| {
            let rel = if pkg.is_empty() {
                BUILD_FILE.to_owned()
            } else {
                format!("{pkg}/{BUILD_FILE}")
            };
            let result = sources.read(&rel).and_then(|source| {
                parse_file(&rel, &source, &dialect, None, pkg).map(|p| (source, p))
            });
            ((*pkg).clone(), rel, result)
        })
        .collect()
}

pub(super) fn parse_file(
    path_for_errors: &str,
    source: &Arc<str>,
    dialect: &Dialect,
    from: Option<&ModuleId>,
    package: &str,
) -> Result<ParsedFile, AnalysisError> {
    check_nesting(path_for_errors, source)?;
    let ast =
        AstModule::parse(path_for_errors, source.to_string(), dialect).map_err(starlark_error)?;
    let loads = ast
        .loads()
        .into_iter()
        .map(|l| {
            let at = SourceSpan::new(
                path_for_errors,
                source.clone(),
                l.span.span.begin().get() as usize,
                l.span.span.end().get() as usize,
            );
            LoadSite {
                text: l.module_id.to_owned(),
                target: ModuleId::resolve(l.module_id, from, package),
                at,
            }
        })
        .collect();
    Ok(ParsedFile { ast, loads })
}

/// Deepest bracket nesting accepted. The parser is recursive: refusing absurd nesting up front
/// keeps hostile input from overflowing the stack. Real BUILD files nest a handful of levels.
const MAX_NESTING: usize = 200;

fn check_nesting(file: &str, source: &Arc<str>) -> Result<(), AnalysisError> {
    let mut depth = 0usize;
    for (i, b) in source.bytes().enumerate() {
        match b {
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(AnalysisError::new(
                        K::Starlark {
                            message: format!(
                                "brackets nested too deeply (more than {MAX_NESTING} levels)"
                            ),
                            hint: None,
                        },
                        Some(SourceSpan::new(file, source.clone(), i, i + 1)),
                    ));
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// The most flow reads of one BUILD or `.star` file. Real ones are a few KiB; the limit is far
/// above any of them and keeps a link to `/dev/zero`-like content, or a huge generated file,
/// from being read into memory without end.
pub const MAX_SOURCE_BYTES: u64 = 16 << 20;

/// The file at `rel` under `root`, which must be UTF-8.
pub(super) fn read_source(root: &Path, rel: &str) -> Result<Arc<str>, AnalysisError> {
    let io_error = |error: String| {
        AnalysisError::new(
            K::Io {
                path: rel.to_owned(),
                error,
            },
            None,
        )
    };
    match read_bounded(&root.join(rel)) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(s) => Ok(Arc::from(s)),
            Err(e) => Err(io_error(format!(
                "not valid UTF-8 (first bad byte at offset {})",
                e.utf8_error().valid_up_to()
            ))),
        },
        Err(e) => Err(io_error(e.to_string())),
    }
}

/// Why a BUILD or `.star` file cannot be read.
#[derive(Debug)]
pub(super) enum ReadError {
    /// `stat` or `open` failed (missing, no permission, a loop of links).
    Io(std::io::Error),
    /// Not a regular file, after following links: a FIFO (reading it would wait for a writer
    /// forever), a device (`/dev/zero` never ends), a directory, a socket.
    NotRegular(&'static str),
    TooLarge,
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::NotRegular(kind) => write!(f, "it is {kind}, not a regular file"),
            ReadError::TooLarge => write!(
                f,
                "it is larger than {} MiB, the most flow reads of a BUILD or `.star` file",
                MAX_SOURCE_BYTES >> 20
            ),
        }
    }
}

/// The content of the regular file at `path` (a symlink is followed to it), at most
/// [`MAX_SOURCE_BYTES`]. Never blocks: anything but a regular file is refused after a `stat`,
/// and the file is opened `O_NONBLOCK` and checked again with `fstat` (it could have been
/// swapped for a FIFO in between), so no BUILD file makes flow wait or read without end.
pub(super) fn read_bounded(path: &Path) -> Result<Vec<u8>, ReadError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let regular = |meta: &std::fs::Metadata| {
        if meta.is_file() {
            Ok(())
        } else {
            Err(ReadError::NotRegular(kind_of(meta)))
        }
    };
    regular(&std::fs::metadata(path).map_err(ReadError::Io)?)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .map_err(ReadError::Io)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    regular(&meta)?;
    if meta.len() > MAX_SOURCE_BYTES {
        return Err(ReadError::TooLarge);
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_SOURCE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > MAX_SOURCE_BYTES {
        return Err(ReadError::TooLarge);
    }
    Ok(bytes)
}

/// "a FIFO", "a character device", ... for messages.
pub(crate) fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}
