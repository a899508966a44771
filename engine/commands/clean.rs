//! `flow clean`: removes the materialized outputs (`flow-out/`); `--cache` also empties the
//! cache (results, blobs, file states, history).

use std::path::Path;

use crate::analysis::{cache_dir, open_cache};
use crate::error::Error;
use crate::workspace::Workspace;

pub fn run(start: &Path, cache: bool, cache_flag: Option<&Path>) -> Result<i32, Error> {
    let ws = Workspace::discover(start)?;
    let out = ws.root.join("flow-out");
    if out.exists() {
        std::fs::remove_dir_all(&out).map_err(|e| Error::Io {
            path: out.clone(),
            action: "remove",
            error: e.to_string(),
        })?;
    }
    eprintln!("flow: removed `{}`", out.display());
    if cache {
        let dir = cache_dir(&ws, cache_flag);
        if dir.exists() {
            crate::record::forget_all(&dir);
            open_cache(&dir)?.clear().map_err(|e| Error::Cache {
                path: dir.clone(),
                error: e.to_string(),
            })?;
        }
        eprintln!("flow: emptied the cache at `{}`", dir.display());
    }
    Ok(0)
}
