//! flow: a declarative, content-hashed build-graph engine for monorepo CI/CD pipelines.
//!
//! ```text
//! BUILD files → rules (Starlark eval → Package{Target}) → engine::graph (target DAG → action DAG,
//! cycle check) → action key (input content digests) → scheduler (ready queue, -j N) → rebuilder
//! (cache hit? restore : run) → executor → cache (CAS + SQLite) → reporter
//! ```
//!
//! This crate is the engine and the command line: it finds the workspace and reads `flow.toml`
//! (`workspace`, `config`), evaluates BUILD files through `flow_rules`, builds and validates the
//! target graph (`graph`), answers queries (`query`) and renders every user-facing error with a
//! code frame (`diagnostics`). Execution, caching and watching arrive in later stages.

pub mod analysis;
pub mod cli;
pub mod commands;
pub mod config;
pub mod diagnostics;
pub mod error;
pub mod graph;
pub mod query;
pub mod workspace;
