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
    /// An effect: ships an artifact to an environment (`deploy`).
    Deploy,
    /// An effect: probes a deployed environment for a while, rolling it back on failure.
    Monitor,
    /// An effect: tells people the outcome of a build (`notify`).
    Notify,
    /// A process its dependents need while they run (`service`).
    Service,
    /// Thresholds over the typed reports its dependencies produce (`gate`): a pure action,
    /// cached as a task is, that flow evaluates itself (`engine/gates/`).
    Gate,
}

impl TargetKind {
    /// The name of the native that declares this kind (`task`, `group`).
    pub fn native(self) -> &'static str {
        match self {
            TargetKind::Task => "task",
            TargetKind::Group => "group",
            TargetKind::Deploy => "deploy",
            TargetKind::Monitor => "monitor",
            TargetKind::Notify => "notify",
            TargetKind::Service => "service",
            TargetKind::Gate => "gate",
        }
    }

    /// Whether the kind changes the world (deploy, monitor, notify): never reused, never
    /// selected by a wildcard pattern.
    pub fn is_effect(self) -> bool {
        matches!(
            self,
            TargetKind::Deploy | TargetKind::Monitor | TargetKind::Notify
        )
    }
}

/// What a monitor does when a probe fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// The monitor fails; the environment stays as it is.
    Fail,
    /// The environment goes back to its previous live artifact, then the monitor fails.
    Rollback,
}

/// The outcomes a `notify` target can be told about.
pub const NOTIFY_EVENTS: &[&str] = &["failure", "success", "deploy", "rollback"];

/// The attributes only the delivery kinds have (their `cmd` is `Target::cmd`: a deploy's
/// command, a notification's command, a service's `start`).
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Delivery {
    Deploy {
        environment: String,
        /// The target whose one output is shipped (also in `deps`).
        artifact: Label,
        /// Branches it may be deployed from (empty: any).
        branches: Vec<String>,
        /// A probe that must pass after `cmd` for the deploy to succeed.
        health: Option<String>,
        #[serde(with = "secs")]
        health_timeout: Duration,
        /// A command printing the artifact digest live in the environment.
        live: Option<String>,
    },
    Monitor {
        /// The deploy it watches (also in `deps`).
        target: Label,
        probe: String,
        #[serde(with = "secs")]
        interval: Duration,
        #[serde(with = "secs")]
        duration: Duration,
        on_failure: OnFailure,
    },
    Notify {
        /// A subset of [`NOTIFY_EVENTS`].
        on: Vec<String>,
    },
    Service {
        ready: String,
        stop: Option<String>,
        #[serde(with = "secs")]
        timeout: Duration,
    },
}

/// A duration as seconds (`1.5`), both ways.
mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
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
    /// The attributes of a deploy, monitor, notify or service.
    pub delivery: Option<Delivery>,
    /// The call in the BUILD file that declared the target (the macro call for a macro).
    #[serde(skip)]
    pub at: SourceSpan,
    /// Where each entry of `deps` is written, parallel to `deps`.
    #[serde(skip)]
    pub dep_spans: Vec<SourceSpan>,
}

impl Target {
    /// Whether a wildcard pattern (`//...`, `:all`) skips the target: it carries the `manual`
    /// tag, or it is an effect. Such a target is built only when named, or when a named
    /// target depends on it.
    pub fn is_manual(&self) -> bool {
        self.kind.is_effect() || self.tags.iter().any(|t| t == "manual")
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
