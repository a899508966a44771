//! flow's cache: bytes and digests only. It never sees labels' meaning, Starlark or processes.
//!
//! Pipeline position: action key (input content digests) → rebuilder → **cache (CAS + SQLite)**.
//!
//! One cache directory (`.flow/`, `--cache-dir` or `FLOW_CACHE_DIR`) holds:
//! - `cas/`: the content-addressed store ([`Cas`]): files, tree manifests, logs, named by
//!   [`Digest`] (blake3);
//! - `flow.db`: SQLite in WAL mode ([`Cache`]) with the action cache (key → [`ActionResult`]),
//!   the file-state table (path → [`FileState`]), and the history of builds and action runs;
//! - `tmp/`: files on their way into `cas/`.
//!
//! [`Cache::verify`] checks all of it (`flow cache verify`), and [`failpoint`] lets the crash
//! tests stop a process at the moments that matter.
//!
//! How the engine uses it, per build:
//! 1. hash inputs, skipping files whose [`FileState`] is unchanged; save new states;
//! 2. compute action keys; look them all up at once ([`Cache::get_actions`]);
//! 3. restore hits ([`Cas::materialize_file`], [`Cas::materialize_tree`]), run misses and store
//!    their outputs ([`Cas::put_file`], [`Cas::put_tree`]) and results ([`Cache::put_actions`], many in one transaction);
//! 4. record the history ([`Cache::record_runs`]) and mark the hits as used
//!    ([`Cache::touch_actions`]); now and then [`Cache::gc`].
//!
//! Invariants: a blob is named by the digest of its content and is never changed in place; every
//! path read from the cache is checked before it is joined to a directory
//! ([`check_relative_path`], tree manifest validation); every database write is one IMMEDIATE
//! transaction; several processes may share one directory. The format is specified in
//! `docs/cache-format.md` and, next to the code, in `db.rs`, `cas.rs` and `manifest.rs`.

mod action_cache;
mod blob_writer;
mod cache;
mod cas;
mod cases;
mod db;
mod digest;
mod error;
mod failpoint;
mod file_state;
mod gc;
mod history;
mod manifest;
mod materialize;
mod outcome;
mod paths;
mod pins;
pub mod regular;
mod sha256;
mod stats;
mod tree;
mod tree_stamp;
mod verify;

#[cfg(test)]
mod tests;

pub use action_cache::{ActionResult, OutputEntry, OutputKind, TOUCH_AFTER_MS};
pub use blob_writer::BlobWriter;
pub use cache::{Cache, DB_FILE};
pub use cas::{Cas, REFRESH_AFTER};
pub use cases::CaseRun;
pub use db::{BUSY_TIMEOUT, MIGRATIONS};
pub use digest::{Digest, LARGE_FILE};
pub use error::CacheError;
pub use failpoint::failpoint;
pub use file_state::FileState;
pub use gc::{GcReport, GRACE, PROTECTED_RUNS, STALE_TEMP};
pub use history::{ActionRun, BuildRow, BuildSummary, Pruned, BUILDS_KEPT, RUNS_KEPT_PER_LABEL};
pub use manifest::{TreeEntry, TreeEntryKind};
pub use materialize::{output_mode, real_dest};
pub use outcome::Outcome;
pub use paths::{check_relative_path, MAX_PATH_BYTES};
pub use stats::CacheStats;
pub use tree_stamp::TreeStamp;
pub use verify::{sweep_leftovers, sweep_sandboxes, Problem, ProblemKind, VerifyReport};
