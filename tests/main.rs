//! flow's integration tests: one binary (as ripgrep does it) that drives the real `flow`
//! executable on fixture workspaces written into temporary directories.

mod support;

mod build;
mod example;
mod golden;
mod layout;
mod query;
mod robustness;
mod workspace;
