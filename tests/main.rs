//! flow's integration tests: one binary (as ripgrep does it) that drives the real `flow`
//! executable on fixture workspaces written into temporary directories.

mod support;

mod build;
mod ci;
mod corruption;
mod crash;
mod delivery;
mod docs;
mod everyday;
mod example;
mod failed_outputs;
mod fuzz_smoke;
mod gates;
mod golden;
mod hermetic;
mod hooks;
mod hostile;
mod incremental;
mod junit;
mod layout;
mod ledger;
mod listing;
mod materialize;
mod metrics;
mod orphans;
mod prelude;
mod query;
mod races;
mod record;
mod remote;
mod remote_fake;
mod report;
mod reports;
mod robustness;
mod screens;
mod secrets;
mod session;
mod shard;
mod since;
mod snapshot;
mod watch;
mod workspace;
