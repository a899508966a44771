//! `flow affected --since REF [PATTERN...]`: the labels of the selected targets (default
//! `//...`) whose definition or inputs differ from those at the git commit `REF`, one a line,
//! for scripts; what `flow build --since REF` would build (`affected.rs`).

use std::io::Write;
use std::path::Path;

use crate::analysis::{load_graph, parse_patterns};
use crate::error::Error;

pub fn run(
    start: &Path,
    since: &str,
    patterns: &[String],
    cache_flag: Option<&Path>,
) -> Result<i32, Error> {
    let terms = parse_patterns(patterns)?;
    let (ws, graph, cache_dir) = load_graph(start, cache_flag)?;
    let selected = graph.resolve_terms(&terms).map_err(Error::Unmatched)?;
    let commit = crate::affected::resolve(&ws.root, since)?;
    let cache = crate::analysis::open_cache(&cache_dir)?;
    // What a killed `flow affected` left (its copy of REF) goes, as before a build.
    let _ = cache.sweep_orphans();
    let scratch = cache.cas().temp_path();
    let affected = crate::affected::affected(&ws, &graph, &commit, &scratch, &cache_dir)?;
    let text: String = selected
        .intersection(&affected)
        .map(|&i| format!("{}\n", graph.target(i).label))
        .collect();
    let mut out = std::io::stdout().lock();
    // A closed pipe (`| head`) is not an error worth reporting.
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
    Ok(0)
}
