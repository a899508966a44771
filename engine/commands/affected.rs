//! `flow affected --since REF [PATTERN...]`: the labels of the selected targets (default
//! `//...`) whose definition or inputs differ from those at the git commit `REF`, one a line,
//! for scripts; what `flow build --since REF` would build (`affected.rs`).

use std::io::Write;
use std::path::Path;

use crate::analysis::parse_patterns;
use crate::error::Error;

pub fn run(
    start: &Path,
    since: &str,
    patterns: &[String],
    cache_flag: Option<&Path>,
) -> Result<i32, Error> {
    let terms = parse_patterns(patterns)?;
    let ws = crate::workspace::Workspace::discover(start)?;
    let cache_dir = crate::analysis::cache_dir(&ws, cache_flag);
    let (graph, analyzed) = crate::analysis::analyze(&ws, &cache_dir)?;
    let selected = graph.resolve_terms(&terms).map_err(Error::Unmatched)?;
    let commit = crate::affected::resolve(&ws.root, since)?;
    let cache = crate::analysis::open_cache(&cache_dir)?;
    // What a killed `flow affected` left (its copy of REF) goes, as before a build.
    let _ = cache.sweep_orphans();
    let scratch = cache.cas().temp_path();
    let inputs = analyzed.inputs.as_ref();
    let affected = crate::affected::affected(&ws, &graph, &commit, &scratch, &cache_dir, inputs)?;
    let text: String = selected
        .intersection(&affected)
        .map(|&i| format!("{}\n", graph.target(i).label))
        .collect();
    let mut out = std::io::stdout().lock();
    // A closed pipe (`| head`) is not an error worth reporting.
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
    Ok(0)
}
