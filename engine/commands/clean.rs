//! `flow clean`: removes the materialized outputs (`flow-out/`); `--cache` also empties the
//! cache (results, blobs, file states, history), but for the artifacts the deploy ledger pins
//! (live or previously live in an environment, `delivery::ledger`); the ledger itself, in
//! `.flow/ledger/`, is history and stays. It holds the workspace lock while it does
//! (`lock.rs`), so it never removes outputs under a running build or watch cycle: it waits for
//! them, saying so.

use std::path::Path;

use crate::delivery::ledger::Ledger;
use crate::error::Error;
use crate::lock::LOCK_FILE;
use crate::runner::runtime_with_sigint;
use crate::session::{Session, SessionArgs};

pub fn run(start: &Path, cache: bool, cache_flag: Option<&Path>) -> Result<i32, Error> {
    let mut session = Session::open(start, SessionArgs::cache_dir(cache_flag))?;
    let (runtime, mut sigint) = runtime_with_sigint(start)?;
    if session
        .lock("clean", runtime.handle(), &mut sigint)
        .is_err()
    {
        return Ok(130);
    }
    let out = session.out_root.clone();
    remove_outputs(&out)?;
    eprintln!("flow: removed `{}`", out.display());
    if cache {
        let dir = session.cache_dir.clone();
        let mut pinned = 0;
        if dir.exists() {
            crate::record::forget_all(&dir);
            let cache = session.cache()?;
            // The artifacts the deploy ledger names stay, for rollbacks (`delivery::ledger`).
            Ledger::pin_local(&session.ws.root, &session.ws.config.ledger, &cache)?;
            pinned = cache.clear().map_err(|e| session.cache_error(e))?;
        }
        match pinned {
            0 => eprintln!("flow: emptied the cache at `{}`", dir.display()),
            n => eprintln!(
                "flow: emptied the cache at `{}`, but for the {n} artifact{} the deploy ledger \
                 pins for rollbacks",
                dir.display(),
                if n == 1 { "" } else { "s" }
            ),
        }
    }
    // Unlocking removes the lock file, then `flow-out/` itself once empty.
    session.close(Some(runtime));
    Ok(0)
}

/// Removes everything in `out` but the lock file this command holds.
fn remove_outputs(out: &Path) -> Result<(), Error> {
    let io = |path: &Path, e: std::io::Error| Error::Io {
        path: path.to_path_buf(),
        action: "remove",
        error: e.to_string(),
    };
    // A link in place of `flow-out/` is removed as a link, never followed; a file there is
    // removed too (the name is flow's).
    if std::fs::symlink_metadata(out).is_ok_and(|m| !m.is_dir()) {
        return std::fs::remove_file(out).map_err(|e| io(out, e));
    }
    let entries = match std::fs::read_dir(out) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(out, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io(out, e))?;
        if entry.file_name() == LOCK_FILE {
            continue;
        }
        let path = entry.path();
        let removed = match entry.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
        match removed {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&path, e)),
            _ => {}
        }
    }
    Ok(())
}
