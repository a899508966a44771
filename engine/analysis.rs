//! Analysis: from a starting directory to a validated `TargetGraph` (find the workspace, read
//! `flow.toml`, evaluate every BUILD file, build and check the graph). Any error stops here,
//! with all errors of all files reported together. Also where the cache directory is decided.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use flow_cache::Cache;
use flow_rules::snapshot::{self, Snapshot, Stamp};
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
    load_graph_fresh(start, cache_flag).map(|(ws, graph, cache, _)| (ws, graph, cache))
}

/// `load_graph`, also saying whether the evaluation was computed afresh (`false`: it came from
/// the snapshot, so the declared targets and outputs are those of the last clean evaluation).
pub fn load_graph_fresh(
    start: &Path,
    cache_flag: Option<&Path>,
) -> Result<(Workspace, TargetGraph, PathBuf, bool), Error> {
    let ws = Workspace::discover(start)?;
    let cache = cache_dir(&ws, cache_flag);
    let (graph, analyzed) = analyze(&ws, &cache)?;
    Ok((ws, graph, cache, analyzed.fresh))
}

/// How an analysis went, besides its graph.
pub struct Analyzed {
    /// The evaluation was computed afresh rather than taken from the snapshot.
    pub fresh: bool,
    /// What the evaluation depended on, as the snapshot recorded it (`None`: no snapshot could
    /// be taken). A build record keeps it to tell by `stat` alone that analysis would repeat.
    pub inputs: Option<AnalysisInputs>,
}

/// The stamps an evaluation depended on (see `flow_rules::snapshot`).
#[derive(Clone, Debug)]
pub struct AnalysisInputs {
    pub stamps: Vec<(String, Stamp)>,
    pub taken_at_ns: i64,
    pub root_entries: Vec<String>,
    /// Every symlink the walk met, and whether it led to a file.
    pub links: Vec<(String, bool)>,
}

/// Evaluates the workspace `ws` (through the snapshot in `cache` when valid) and builds the
/// validated graph.
pub fn analyze(ws: &Workspace, cache: &Path) -> Result<(TargetGraph, Analyzed), Error> {
    let opts = EvalOptions {
        root: ws.root.clone(),
        vars: ws.config.vars.clone(),
        skip_dirs: vec![cache.to_path_buf()],
        ..Default::default()
    };
    let (evaluation, analyzed) = evaluate_cached(ws, &opts, cache)?;
    Ok((graph_of(ws, evaluation)?, analyzed))
}

/// The graph of the workspace `ws` with the BUILD and `.star` files of `overrides` in place of
/// its own (their text at another commit), evaluated afresh over the same files, without a
/// snapshot: the base of `--since` when only such files and sources changed (`affected/`).
/// Also the workspace-relative `.star` files the evaluation loaded.
pub fn analyze_with(
    ws: &Workspace,
    cache: &Path,
    overrides: BTreeMap<String, std::sync::Arc<str>>,
) -> Result<(TargetGraph, Vec<String>), Error> {
    let opts = EvalOptions {
        root: ws.root.clone(),
        vars: ws.config.vars.clone(),
        skip_dirs: vec![cache.to_path_buf()],
        overrides,
    };
    let evaluation = evaluate_workspace(&opts).map_err(|e| Error::Io {
        path: ws.root.clone(),
        action: "walk the workspace",
        error: e.to_string(),
    })?;
    let loaded = evaluation
        .module_loads
        .keys()
        .filter_map(|m| snapshot::workspace_module_path(m))
        .collect();
    Ok((graph_of(ws, evaluation)?, loaded))
}

/// The validated graph of an evaluation of `ws`.
fn graph_of(ws: &Workspace, evaluation: flow_rules::Evaluation) -> Result<TargetGraph, Error> {
    let (graph, mut errors) = TargetGraph::build(evaluation, &ws.config.default_visibility);
    let declared: Vec<&str> = ws.config.environments.keys().map(|k| k.as_str()).collect();
    crate::delivery::checks::check_environments(graph.targets().iter(), &declared, &mut errors);
    if !errors.is_empty() {
        flow_rules::error::sort_errors(&mut errors);
        return Err(Error::Analysis(errors));
    }
    Ok(graph)
}

/// Where the evaluation snapshot of the workspace at `root` is kept.
fn snapshot_path(cache: &Path, root: &Path) -> PathBuf {
    cache
        .join("analysis")
        .join(format!("{}.json", workspace_id(root)))
}

/// A short, stable name for the workspace at `root` (files about it in the shared cache).
pub fn workspace_id(root: &Path) -> String {
    let id = blake3::hash(root.as_os_str().as_encoded_bytes()).to_hex();
    id[..32].to_owned()
}

/// The workspace's evaluation: from the snapshot of the last clean evaluation when nothing it
/// depends on changed (stats only), else evaluated afresh (and, when clean, snapshotted).
fn evaluate_cached(
    ws: &Workspace,
    opts: &EvalOptions,
    cache: &Path,
) -> Result<(flow_rules::Evaluation, Analyzed), Error> {
    let fingerprint = snapshot::fingerprint(&ws.config.vars);
    let path = snapshot_path(cache, &ws.root);
    // Sound (it matches its checksum) or not used: a damaged one is written over below.
    if let Some(json) = crate::snapshot_file::read(&path) {
        if let Ok(snap) = serde_json::from_slice::<Snapshot>(&json) {
            if snap.is_valid(&ws.root, &fingerprint) {
                let inputs = inputs_of(&snap);
                if let Some(evaluation) = snap.into_evaluation() {
                    let analyzed = Analyzed {
                        fresh: false,
                        inputs: Some(inputs),
                    };
                    return Ok((evaluation, analyzed));
                }
            }
        }
    }
    let started_at_ns = snapshot::now_ns();
    let evaluation = evaluate_workspace(opts).map_err(|e| Error::Io {
        path: ws.root.clone(),
        action: "walk the workspace",
        error: e.to_string(),
    })?;
    let mut inputs = None;
    if let Some(snap) = Snapshot::capture(&ws.root, &evaluation, fingerprint, started_at_ns) {
        inputs = Some(inputs_of(&snap));
        // Best effort: a snapshot that cannot be written only costs the next run time.
        // Never through a link planted at the directory, the temp file or the snapshot.
        if let (Some(dir), Ok(json)) = (path.parent(), serde_json::to_vec(&snap)) {
            let tmp = dir.join(format!(".{}.tmp", std::process::id()));
            let bytes = crate::snapshot_file::seal(&json);
            let _ = flow_cache::regular::write_replacing(&path, &tmp, &bytes);
        }
    }
    let analyzed = Analyzed {
        fresh: true,
        inputs,
    };
    Ok((evaluation, analyzed))
}

fn inputs_of(snap: &Snapshot) -> AnalysisInputs {
    AnalysisInputs {
        stamps: snap.stamps().iter().map(|(p, s)| (p.clone(), *s)).collect(),
        taken_at_ns: snap.taken_at_ns(),
        root_entries: snap.root_entries().to_vec(),
        links: snap.links().to_vec(),
    }
}

/// Opens (creating) the cache directory. What the cache repairs (a damaged database moved
/// aside, at open or when a statement first meets the damage; an unusable write-ahead log) is
/// printed as one warning line each, on stderr, when it happens.
pub fn open_cache(dir: &Path) -> Result<Cache, Error> {
    let cache = Cache::open(dir).map_err(|e| Error::Cache {
        path: dir.to_path_buf(),
        error: e.to_string(),
    })?;
    cache.report_notices(|notice| eprintln!("warning: {notice}"));
    Ok(cache)
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

/// `pattern` relative to `package` made absolute, as in Bazel: `:name`, `...`, `sub/...`,
/// `sub:name`, and `-` before any of them (`Cli::absolute_patterns` finds the package).
pub fn absolute_pattern(pattern: &str, package: &str) -> String {
    let (minus, body) = match pattern.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", pattern),
    };
    let body = body.strip_prefix("./").unwrap_or(body);
    let absolute = if body.starts_with("//") {
        body.to_owned()
    } else if let Some(name) = body.strip_prefix(':') {
        format!("//{package}:{name}")
    } else if body == "..." {
        match package {
            "" => "//...".to_owned(),
            _ => format!("//{package}/..."),
        }
    } else {
        match package {
            "" => format!("//{body}"),
            _ => format!("//{package}/{body}"),
        }
    };
    format!("{minus}{absolute}")
}
