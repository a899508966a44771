//! flow: a declarative, content-hashed build-graph engine for monorepo CI/CD pipelines.
//!
//! ```text
//! BUILD files → rules (Starlark eval → Package{Target}) → engine::graph (target DAG → action DAG,
//! cycle check) → session (workspace, cache, lock, flow-out/) → build record | watcher (what
//! changed since the last results) → action key (input content digests) → scheduler (ready
//! queue, -j N) → rebuilder (the one reuse decision: carried? cached (restore)? run) → executor →
//! cache (CAS + SQLite) → reporter
//! ```
//!
//! This crate is the engine and the command line: every command opens a `session` (workspace,
//! `config`, cache, `lock`, output root, `clock`); it evaluates BUILD files through
//! `flow_rules`, builds and validates the target graph (`graph`), answers queries (`query`),
//! turns the selected targets into a `plan`, learns what changed (`record`, the watcher in
//! `commands::watch`), keys each action (`action_key`, `hasher`), schedules (`scheduler`), asks
//! the one reuse decision (`rebuilder::reuse`), runs commands (`executor`) in one owner loop
//! (`runner`) and reports (`reporter`). Every user-facing error is rendered once, with a code frame (`diagnostics`).

pub mod action_key;
pub mod affected;
pub mod analysis;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod delivery;
pub mod diagnostics;
pub mod error;
pub mod executor;
pub mod expand;
pub mod failed;
pub mod gates;
pub mod graph;
pub mod hasher;
pub mod interrupts;

pub mod lock;
pub mod metrics;
pub mod pipeline;
pub mod plan;
pub mod profile;
pub mod query;
pub mod rebuilder;
pub mod record;
pub mod remote;
pub mod report;
pub mod reporter;
pub mod reports;
pub mod runner;
pub mod scheduler;
pub mod session;
pub mod shard;
pub mod snapshot_file;
pub mod stale;
pub mod workspace;
