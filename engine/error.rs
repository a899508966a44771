//! The engine's errors, as data. `diagnostics` renders them; `exit_code` classifies them.

use std::path::PathBuf;

use flow_rules::{AnalysisError, LabelError, PatternTerm};

use crate::config::ConfigError;
use crate::graph::PatternMatchError;
use crate::query::QueryError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No `flow.toml` in the starting directory or any parent.
    #[error("no `flow.toml` found in `{}` or any parent directory", start.display())]
    NoWorkspace { start: PathBuf },
    #[error("{0}")]
    Config(ConfigError),
    /// An operating-system error on a path.
    #[error("cannot {action} `{}`: {error}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        error: String,
    },
    /// Errors in BUILD or `.star` files, all of them, sorted.
    #[error("{} error(s) in BUILD files", .0.len())]
    Analysis(Vec<AnalysisError>),
    /// A target pattern on the command line that does not parse.
    #[error("invalid target pattern `{}`: {}", error.input, error.kind)]
    BadPattern { error: LabelError },
    /// Target patterns that select nothing.
    #[error("target patterns match nothing")]
    Unmatched(Vec<(PatternTerm, PatternMatchError)>),
    #[error("invalid query: {error}")]
    Query { expr: String, error: QueryError },
    /// The cache directory cannot be used.
    #[error("cannot use the cache at `{}`: {error}", path.display())]
    Cache { path: PathBuf, error: String },
    /// A command about one target named something that is not a single target.
    #[error("{message}")]
    Usage {
        message: String,
        help: Option<String>,
    },
    /// `flow init` where a `flow.toml` exists already.
    #[error("`{}` already exists", path.display())]
    AlreadyInitialized { path: PathBuf },
}

impl Error {
    /// The process exit code: 2 for bad input and usage, as for every error here. (1 is kept for
    /// a target that failed, 130 for an interrupted run.)
    pub fn exit_code(&self) -> i32 {
        2
    }
}
