//! The state natives reach through `Evaluator::extra` while one file is evaluated.
// `#[derive(ProvidesStaticType)]` expands to an `unsafe impl`: it is starlark's sanctioned way to
// hand a Rust value to natives, and the only unsafe code in flow.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use starlark::any::ProvidesStaticType;

use crate::error::{AnalysisError, SourceSpan};
use crate::label::Label;
use crate::target::{GlobCall, Target};

/// What natives can see while a file is evaluated; reached through `Evaluator::extra`.
#[derive(ProvidesStaticType)]
pub(crate) struct EvalContext {
    pub vars: Arc<BTreeMap<String, serde_json::Value>>,
    /// Present while a BUILD file (not a `.star` module) is evaluated.
    pub build: Option<BuildState>,
    pub errors: RefCell<Vec<AnalysisError>>,
}

pub(crate) struct BuildState {
    pub package: String,
    pub build_file: String,
    pub source: Arc<str>,
    /// The package's files, package-relative and sorted.
    pub files: Arc<Vec<String>>,
    /// Sub-packages below this one, package-relative.
    pub subpackages: Vec<String>,
    /// Symlinks below it that lead to no regular file, package-relative (for messages).
    pub links_to_non_files: Vec<String>,
    pub declared: RefCell<Declared>,
}

#[derive(Default)]
pub(crate) struct Declared {
    pub targets: Vec<Target>,
    pub globs: Vec<GlobCall>,
    pub names: HashMap<String, SourceSpan>,
    /// Targets whose declaration had errors: they exist, so depending on them is not reported
    /// again as an unknown target.
    pub broken: Vec<Label>,
}
