//! One module per subcommand.

pub mod affected;
pub mod build;
pub mod cache;
pub mod ci;
pub mod clean;
pub mod explain;
pub mod help;
pub mod hooks;
pub mod init;
pub mod ledger;
pub mod log;
pub mod metrics;
pub mod query;
pub mod remote;
pub mod report;
pub mod rollback;
pub mod run;
pub mod test;
pub mod watch;
