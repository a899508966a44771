//! flow's integration tests: one binary (as ripgrep does it) that drives the real `flow`
//! executable on fixture workspaces written into temporary directories.

mod support;

mod build;
mod crash;
mod example;
mod golden;
mod incremental;
mod layout;
mod query;
mod robustness;
mod watch;
mod workspace;
