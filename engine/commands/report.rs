//! `flow report [--html FILE] [--json]`: the quality report of the workspace as its last build
//! left it (`report/`, docs/report.md): Markdown on stdout, or one HTML page written to FILE.

use std::path::{Path, PathBuf};

use crate::analysis::{load_graph, open_cache};
use crate::error::Error;

pub struct Options<'a> {
    pub html: Option<&'a PathBuf>,
    pub json: bool,
    /// A `flow report --json` of the base build: list what is new against it.
    pub base: Option<&'a Path>,
}

pub fn run(start: &Path, options: Options, cache_flag: Option<&Path>) -> Result<i32, Error> {
    let Options { html, json, base } = options;
    // The base first: a wrong file is an error before anything is read.
    let base = base.map(base_findings).transpose()?;
    let (ws, graph, dir) = load_graph(start, cache_flag)?;
    let workspace = ws.root.display().to_string();
    let build = match dir.join("flow.db").exists() {
        true => {
            crate::report::last_build(&open_cache(&dir)?, &workspace).map_err(|e| Error::Cache {
                path: dir.clone(),
                error: e.to_string(),
            })?
        }
        false => None,
    };
    let out_root = crate::session::out_root(&ws.root);
    if let Some(holder) = crate::lock::held_by(&out_root) {
        eprintln!(
            "warning: another flow command is writing flow-out/ ({holder}): this report may mix \
             its results with the last build's; run it again when that command is done"
        );
    }
    let mut report = crate::report::collect(&graph, &out_root, &workspace, build);
    // The charts over time: the ledger's deployments, the history's cache hits.
    let now = crate::clock::Clock::from_env().now_ms();
    let ledger = crate::delivery::ledger::Ledger::open(&ws.root, &ws.config.ledger, &mut |w| {
        eprintln!("warning: {w}")
    })?;
    report.deployments = crate::report::trends::deployments(ledger.entries(), now);
    if dir.join("flow.db").exists() {
        let since = crate::report::trends::start(now);
        let runs = open_cache(&dir)?
            .runs_since(&workspace, since)
            .map_err(|e| Error::Cache {
                path: dir.clone(),
                error: e.to_string(),
            })?;
        report.hit_rate = Some(crate::report::trends::hit_rate(&runs, now));
    }
    if let Some(base) = base {
        let new = crate::report::findings::new_against(&report.finding_items, &base);
        report.new_findings = Some(new);
    }
    if let Some(path) = html.filter(|p| p.as_os_str() != "-") {
        crate::reports::write_atomically(path, crate::report::html::html(&report).as_bytes())
            .map_err(|e| Error::Io {
                path: path.clone(),
                action: "write",
                error: e.to_string(),
            })?;
        return Ok(0);
    }
    let text = match json {
        _ if html.is_some() => crate::report::html::html(&report),
        true => serde_json::to_string_pretty(&report).expect("the report serializes") + "\n",
        false => crate::report::markdown::markdown(&report),
    };
    let mut out = std::io::stdout().lock();
    let _ = std::io::Write::write_all(&mut out, text.as_bytes());
    Ok(0)
}

/// The largest base report read: the findings of a very large workspace.
const BASE_MAX_BYTES: u64 = 256 << 20;

/// The findings of a base report (`flow report --json`).
fn base_findings(path: &Path) -> Result<Vec<crate::report::findings::Item>, Error> {
    let usage = |why: String| Error::Usage {
        message: format!("--base {}: {why}", path.display()),
        help: Some(
            "write it on the base branch with `flow report --json > base.json` after its build"
                .into(),
        ),
    };
    // A regular file of a bounded size: not a device (`/dev/zero`), not a 10 GB mistake.
    let meta = std::fs::metadata(path).map_err(|e| usage(e.to_string()))?;
    if !meta.is_file() {
        return Err(usage("not a regular file".into()));
    }
    if meta.len() > BASE_MAX_BYTES {
        return Err(usage(format!(
            "{} bytes, more than a report holds ({} MiB at most)",
            meta.len(),
            BASE_MAX_BYTES >> 20
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| usage(e.to_string()))?;
    let json: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| usage(format!("not JSON: {e}")))?;
    let Some(items) = json.get("finding_items").and_then(|v| v.as_array()) else {
        return Err(usage(
            "not a `flow report --json` (it has no list `finding_items`)".into(),
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            serde_json::from_value(item.clone()).map_err(|_| {
                usage(format!(
                    "`finding_items[{i}]` is not a finding (an object with label, rule, file, \
                     line, severity and message)"
                ))
            })
        })
        .collect()
}
