//! `flow cache stats`, `flow cache gc [--max-size SIZE]` and `flow cache verify [--fix]`.

use std::path::Path;

use crate::analysis::{cache_dir, open_cache};
use crate::config::parse_size;
use crate::error::Error;
use crate::workspace::Workspace;

/// `flow cache SUBCOMMAND`.
#[derive(Debug, clap::Subcommand)]
pub enum CacheCommand {
    /// Sizes and counts
    Stats,
    /// Remove least recently used results until the cache fits in SIZE
    Gc {
        /// e.g. `500MiB`, `10GiB` (default: `[cache] max_size` of flow.toml)
        #[arg(long, value_name = "SIZE")]
        max_size: Option<String>,
    },
    /// Check every cached result, blob and leftover; exit 1 if anything is wrong
    Verify {
        /// Remove bad results (they become misses), corrupt blobs and what dead processes left
        #[arg(long)]
        fix: bool,
    },
}

fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

pub fn stats(start: &Path, cache_flag: Option<&Path>) -> Result<i32, Error> {
    let ws = Workspace::discover(start)?;
    let dir = cache_dir(&ws, cache_flag);
    let cache = open_cache(&dir)?;
    let s = cache.stats().map_err(|e| Error::Cache {
        path: dir.clone(),
        error: e.to_string(),
    })?;
    println!("cache:          {}", dir.display());
    println!("blobs:          {} ({})", s.blobs, human(s.blob_bytes));
    println!("action results: {}", s.action_results);
    println!("file states:    {}", s.file_states);
    println!("builds:         {}", s.builds);
    println!("action runs:    {}", s.action_runs);
    println!("database:       {}", human(s.db_bytes));
    if s.moved_aside > 0 {
        println!(
            "moved aside:    {} damaged database(s), {} (`{}`)",
            s.moved_aside,
            human(s.moved_aside_bytes),
            dir.join(format!("{}.corrupt-*", flow_cache::DB_FILE))
                .display()
        );
        println!(
            "                kept for a post-mortem: delete them by hand, or `flow clean --cache` \
             removes them with the rest of the cache"
        );
    }
    Ok(0)
}

pub fn gc(start: &Path, max_size: Option<&str>, cache_flag: Option<&Path>) -> Result<i32, Error> {
    let ws = Workspace::discover(start)?;
    let max = match max_size {
        Some(text) => parse_size(text).ok_or_else(|| Error::Usage {
            message: format!("invalid size `{text}`"),
            help: Some("write a size such as `500MiB`, `10GiB` or `2GB`".into()),
        })?,
        None => ws.config.cache_max_size.ok_or_else(|| Error::Usage {
            message: "no size limit given".into(),
            help: Some(
                "pass `--max-size SIZE` or set `max_size` in the `[cache]` table of `flow.toml`"
                    .into(),
            ),
        })?,
    };
    let dir = cache_dir(&ws, cache_flag);
    let cache = open_cache(&dir)?;
    // Build records carry results that gc may remove: the next build goes the long way.
    crate::record::forget_all(&dir);
    // What the deploy ledger names stays, for rollbacks.
    crate::delivery::ledger::Ledger::pin_local(&ws.root, &ws.config.ledger, &cache)?;
    let r = cache.gc(max).map_err(|e| Error::Cache {
        path: dir.clone(),
        error: e.to_string(),
    })?;
    println!(
        "flow: removed {} result(s) and {} blob(s) ({}); the cache now holds {} (limit {})",
        r.removed_results,
        r.removed_blobs,
        human(r.removed_bytes),
        human(r.remaining_bytes),
        human(max)
    );
    if r.removed_runs > 0 {
        println!(
            "flow: pruned {} old action run(s) from the history (each target keeps its last {} \
             and its last success)",
            r.removed_runs,
            flow_cache::RUNS_KEPT_PER_LABEL
        );
    }
    Ok(0)
}

/// Checks the cache (`Cache::verify`), the evaluation snapshots in it (`snapshot_file`) and
/// this workspace's `flow-out/` for leftovers of interrupted restores. One line per problem on stdout (`problem: …`, or `fixed: …` with
/// `--fix`), then a summary. Exit 1 if anything is (still) wrong.
pub fn verify(start: &Path, fix: bool, cache_flag: Option<&Path>) -> Result<i32, Error> {
    let ws = Workspace::discover(start)?;
    let dir = cache_dir(&ws, cache_flag);
    let cache = open_cache(&dir)?;
    if fix {
        // Build records may carry results that the repair removes.
        crate::record::forget_all(&dir);
    }
    let mut report = cache.verify(fix).map_err(|e| Error::Cache {
        path: dir.clone(),
        error: e.to_string(),
    })?;
    report
        .problems
        .extend(crate::snapshot_file::check_all(&dir, fix));
    report.problems.extend(flow_cache::sweep_leftovers(
        &crate::session::out_root(&ws.root),
        fix,
    ));
    let sandboxes = crate::executor::sandbox_root(&dir, ws.config.sandbox_dir.as_deref());
    if sandboxes != dir.join("sandbox") {
        report
            .problems
            .extend(flow_cache::sweep_sandboxes(&sandboxes, fix));
    }
    for p in &report.problems {
        println!("{}: {p}", if p.fixed { "fixed" } else { "problem" });
    }
    let left = report.problems.iter().filter(|p| !p.fixed).count();
    let fixed = report.problems.len() - left;
    let checked = format!(
        "{} action result(s) and {} blob(s) in {}",
        report.results,
        report.blobs,
        dir.display()
    );
    match (left, fixed) {
        (0, 0) => println!("flow: verified {checked}: no problems"),
        (0, _) => println!("flow: verified {checked}: {fixed} problem(s), all fixed"),
        (_, 0) if fix => println!("flow: verified {checked}: {left} problem(s) could not be fixed"),
        (_, 0) => println!(
            "flow: verified {checked}: {left} problem(s); `flow cache verify --fix` repairs what it can"
        ),
        _ => println!(
            "flow: verified {checked}: {fixed} problem(s) fixed, {left} could not be"
        ),
    }
    Ok(if left == 0 { 0 } else { 1 })
}
