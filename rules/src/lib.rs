//! flow's build language: labels and target patterns, targets, and the evaluation of Starlark
//! `BUILD` files into plain Rust data.
//!
//! Pipeline position: BUILD files → **rules** (Starlark eval → `Package { Target }`) → engine.
//!
//! This crate sees files and Starlark only: no processes, no cache, no async runtime. Its errors
//! are data (`AnalysisError`), rendered by the binary.

mod context;
pub mod error;
pub mod eval;
pub mod gate;
pub mod glob;
pub mod label;
pub mod listing;
pub mod module_id;
mod natives;
pub mod pattern;
pub mod prelude;
pub mod snapshot;
pub mod suggest;
pub mod target;
pub mod visibility;

pub use error::{AnalysisError, AnalysisErrorKind, SourceSpan};
pub use eval::{evaluate_listing, evaluate_workspace, EvalOptions, Evaluation};
pub use label::{Label, LabelError, LabelErrorKind};
pub use listing::Listing;
pub use natives::{
    parse_duration, valid_env_name, DEPLOY_ATTRS, GROUP_ATTRS, MONITOR_ATTRS, NOTIFY_ATTRS,
    SERVICE_ATTRS, TASK_ATTRS,
};
pub use pattern::{PatternTerm, TargetPattern};
pub use target::{Delivery, GlobCall, OnFailure, Package, Target, TargetKind, NOTIFY_EVENTS};
pub use visibility::VisibilityRule;
