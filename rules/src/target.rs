//! `Target` and `Package`: the result of evaluating BUILD files, plain Rust data with no Starlark
//! values left in it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::error::SourceSpan;
use crate::label::Label;
use crate::visibility::VisibilityRule;

/// What a target does, which decides which attributes it may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// A command with declared inputs and outputs.
    Task,
    /// A named set of other targets; it runs nothing itself.
    Group,
}

impl TargetKind {
    /// The name of the native that declares this kind (`task`, `group`).
    pub fn native(self) -> &'static str {
        match self {
            TargetKind::Task => "task",
            TargetKind::Group => "group",
        }
    }
}

/// One target as declared in a BUILD file, after validation of everything that can be checked
/// inside its own package. Paths (`srcs`, `outs`) are relative to the package directory.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub label: Label,
    pub kind: TargetKind,
    /// The macro that declared the target (`py_test`), when it was not called directly.
    pub generator: Option<String>,
    pub cmd: Option<String>,
    pub srcs: Vec<String>,
    pub deps: Vec<Label>,
    pub outs: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub secrets: Vec<String>,
    pub tools: Vec<String>,
    #[serde(serialize_with = "ser_timeout")]
    pub timeout: Option<Duration>,
    pub retries: u32,
    pub tags: Vec<String>,
    /// `None` means the workspace's default visibility.
    #[serde(serialize_with = "ser_visibility")]
    pub visibility: Option<Vec<VisibilityRule>>,
    pub sandbox: bool,
    /// `cache = False`: the task's result is never reused (not restored from the cache, not
    /// carried over, not answered by a no-op): it runs in every build that includes it.
    pub cache: bool,
    pub doc: Option<String>,
    /// The call in the BUILD file that declared the target (the macro call for a macro).
    #[serde(skip)]
    pub at: SourceSpan,
    /// Where each entry of `deps` is written, parallel to `deps`.
    #[serde(skip)]
    pub dep_spans: Vec<SourceSpan>,
}

impl Target {
    /// Whether the target carries the `manual` tag (matched only when named exactly).
    pub fn is_manual(&self) -> bool {
        self.tags.iter().any(|t| t == "manual")
    }
}

fn ser_timeout<S: serde::Serializer>(t: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

fn ser_visibility<S: serde::Serializer>(
    v: &Option<Vec<VisibilityRule>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(rules) => s.collect_seq(rules.iter().map(|r| r.to_string())),
        None => s.serialize_none(),
    }
}

/// The include and exclude patterns of one `glob()` call, kept so that a watcher can tell which
/// new or deleted files change a package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobCall {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

/// One evaluated BUILD file.
#[derive(Clone, Debug)]
pub struct Package {
    /// Workspace-relative directory (`""` for the root package).
    pub name: String,
    /// Workspace-relative path of the BUILD file.
    pub build_file: String,
    pub source: Arc<str>,
    pub targets: Vec<Target>,
    pub globs: Vec<GlobCall>,
    /// Canonical ids of every `.star` module the package loads, directly or not.
    pub loads: Vec<String>,
    /// Targets declared with errors (reported already); they are not in `targets`.
    pub broken: Vec<Label>,
}
