//! Analysis: from a starting directory to a validated `TargetGraph` (find the workspace, read
//! `flow.toml`, evaluate every BUILD file, build and check the graph). Any error stops here,
//! with all errors of all files reported together. Also where the cache directory is decided.

use std::path::{Path, PathBuf};

use flow_cache::Cache;
use flow_rules::{evaluate_workspace, EvalOptions, PatternTerm};

use crate::error::Error;
use crate::graph::TargetGraph;
use crate::workspace::Workspace;

/// The cache directory: `--cache-dir`, else `FLOW_CACHE_DIR`, else `[cache] dir` of `flow.toml`
/// (relative to the workspace root), else `<root>/.flow`.
pub fn cache_dir(ws: &Workspace, flag: Option<&Path>) -> PathBuf {
    let chosen = flag
        .map(Path::to_path_buf)
        .or_else(|| {
            std::env::var_os("FLOW_CACHE_DIR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .or_else(|| ws.config.cache_dir.clone());
    match chosen {
        Some(p) if p.is_absolute() => p,
        Some(p) if flag.is_some() || std::env::var_os("FLOW_CACHE_DIR").is_some() => {
            std::env::current_dir().map(|c| c.join(&p)).unwrap_or(p)
        }
        Some(p) => ws.root.join(p),
        None => ws.root.join(".flow"),
    }
}

/// Discovers the workspace above `start` and analyses it; also returns the cache directory.
pub fn load_graph(
    start: &Path,
    cache_flag: Option<&Path>,
) -> Result<(Workspace, TargetGraph, PathBuf), Error> {
    let ws = Workspace::discover(start)?;
    let cache = cache_dir(&ws, cache_flag);
    let opts = EvalOptions {
        root: ws.root.clone(),
        vars: ws.config.vars.clone(),
        skip_dirs: vec![cache.clone()],
    };
    let evaluation = evaluate_workspace(&opts).map_err(|e| Error::Io {
        path: ws.root.clone(),
        action: "walk the workspace",
        error: e.to_string(),
    })?;
    let (graph, errors) = TargetGraph::build(evaluation, &ws.config.default_visibility);
    if !errors.is_empty() {
        return Err(Error::Analysis(errors));
    }
    Ok((ws, graph, cache))
}

/// Opens (creating) the cache directory.
pub fn open_cache(dir: &Path) -> Result<Cache, Error> {
    Cache::open(dir).map_err(|e| Error::Cache {
        path: dir.to_path_buf(),
        error: e.to_string(),
    })
}

/// Parses command-line target patterns (`//...` when none are given).
pub fn parse_patterns(patterns: &[String]) -> Result<Vec<PatternTerm>, Error> {
    if patterns.is_empty() {
        return Ok(vec![PatternTerm::parse("//...").expect("valid pattern")]);
    }
    patterns
        .iter()
        .map(|p| PatternTerm::parse(p).map_err(|error| Error::BadPattern { error }))
        .collect()
}
