//! Fail points: named places where a test can make flow die as a crash or `kill -9` would.
//!
//! `failpoint(name)` does nothing unless the environment variable `FLOW_FAILPOINT` equals `name`
//! (read once per process). Then it prints `flow: failpoint `name` reached` on stderr and calls
//! `std::process::abort()`: no destructor runs, no buffer is flushed, no transaction is rolled
//! back by flow, exactly what a crash leaves. The crash tests (`tests/crash.rs`) use them to
//! prove that the next build repairs everything and that `flow cache verify` finds nothing.
//!
//! The points (one line each where they are):
//! - `after-run` (`engine/runner.rs`, `finish_run`): the command finished, nothing is stored;
//! - `mid-blob` (`cas.rs`, `write_new`): a blob's temp file is half written, not yet renamed;
//! - `before-commit` (`action_cache.rs`, `put_actions`): the result rows of a batch are
//!   inserted in a transaction that is not committed;
//! - `mid-output` (`materialize.rs`, `copy_verified`): half of the temp file of a file restored
//!   into `flow-out/` is written;
//! - `mid-materialize` (`engine/rebuilder.rs`, `restore`): an output was written into
//!   `flow-out/`, the next one (or its recorded state) was not.
//!
//! Cost when unset: one `OnceLock` read and a comparison.

use std::sync::OnceLock;

/// The name armed by `FLOW_FAILPOINT`, read once.
fn armed() -> Option<&'static str> {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            std::env::var("FLOW_FAILPOINT")
                .ok()
                .filter(|v| !v.is_empty())
        })
        .as_deref()
}

/// Aborts the process here when `FLOW_FAILPOINT` equals `name` (see the module docs).
pub fn failpoint(name: &str) {
    if armed() == Some(name) {
        eprintln!("flow: failpoint `{name}` reached");
        std::process::abort();
    }
}
