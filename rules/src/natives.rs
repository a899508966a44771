//! The native functions of the BUILD language: `task`, `group`, `glob`, `package_name`, `config`.
//!
//! `task` and `group` take their attributes as keyword arguments and check them here rather than
//! through Starlark's signature matching, so that every mistake in a call is collected (unknown
//! attribute with "did you mean", wrong type, bad label, missing file) instead of only the first,
//! and each points at the attribute in the BUILD file. Errors are pushed into the context and
//! evaluation goes on; the caller reports them all at the end.
//!
//! Here: the natives themselves, and how they reach the file's context and the call site. The
//! checks of `task` and `group` live beside: `declare` (one call → one `Target`), `attrs`
//! (reading and type-checking one attribute, spans inside the call) and `paths` (`srcs` and
//! `outs` against the package's files).

mod attrs;
mod declare;
mod delivery;
mod gate;
mod paths;

use starlark::collections::SmallMap;
use starlark::environment::GlobalsBuilder;
use starlark::eval::Evaluator;
use starlark::starlark_module;
use starlark::values::list_or_tuple::UnpackListOrTuple;
use starlark::values::none::NoneType;
use starlark::values::Value;

pub(crate) use crate::context::{BuildState, Declared, EvalContext};
use crate::error::{AnalysisError, AnalysisErrorKind as K, SourceSpan};
use crate::glob::glob;
use crate::suggest::closest;
use crate::target::{GlobCall, TargetKind};
use attrs::literal_span;
pub use attrs::parse_duration;
use declare::declare;
pub use declare::valid_env_name;
pub use delivery::{DEPLOY_ATTRS, MONITOR_ATTRS, NOTIFY_ATTRS, SERVICE_ATTRS};

/// Attributes of `task`.
pub const TASK_ATTRS: &[&str] = &[
    "name",
    "cmd",
    "srcs",
    "deps",
    "outs",
    "env",
    "secrets",
    "tools",
    "timeout",
    "retries",
    "tags",
    "visibility",
    "sandbox",
    "cache",
    "doc",
];

/// Attributes of `group`.
pub const GROUP_ATTRS: &[&str] = &["name", "deps", "tags", "visibility", "doc"];

pub const GATE_ATTRS: &[&str] = &[
    "name",
    "deps",
    "checks",
    "licenses_denied",
    "tags",
    "visibility",
    "doc",
];

fn context<'a>(eval: &'a Evaluator<'_, '_, '_>) -> anyhow::Result<&'a EvalContext> {
    eval.extra
        .and_then(|e| e.downcast_ref::<EvalContext>())
        .ok_or_else(|| {
            anyhow::anyhow!("internal error: no evaluation context (this is a bug in flow)")
        })
}

fn build_state<'a>(
    eval: &'a Evaluator<'_, '_, '_>,
    native: &'static str,
) -> anyhow::Result<(&'a EvalContext, &'a BuildState)> {
    let ctx = context(eval)?;
    match &ctx.build {
        Some(b) => Ok((ctx, b)),
        None => Err(anyhow::anyhow!(K::NativeOutsideBuild { native }.to_string())),
    }
}

/// The span of the call in the BUILD file that led here (the macro call when a macro declared the
/// target) and the name of that macro, if any.
fn call_site(eval: &Evaluator<'_, '_, '_>, build: &BuildState) -> (SourceSpan, Option<String>) {
    let stack = eval.call_stack();
    for frame in &stack.frames {
        if let Some(loc) = &frame.location {
            if loc.file.filename() == build.build_file {
                let span = SourceSpan::new(
                    build.build_file.clone(),
                    build.source.clone(),
                    loc.span.begin().get() as usize,
                    loc.span.end().get() as usize,
                );
                let generator = match frame.name.as_str() {
                    "task" | "group" | "deploy" | "monitor" | "notify" | "service" => None,
                    other => Some(other.to_owned()),
                };
                return (span, generator);
            }
        }
    }
    (
        SourceSpan::new(build.build_file.clone(), build.source.clone(), 0, 0),
        None,
    )
}

#[starlark_module]
pub(crate) fn natives(builder: &mut GlobalsBuilder) {
    /// Declares a task: a command with declared inputs and outputs.
    fn task<'v>(
        #[starlark(kwargs)] kwargs: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<NoneType> {
        declare(eval, TargetKind::Task, &kwargs)?;
        Ok(NoneType)
    }

    /// Declares a gate: thresholds over the typed reports of its dependencies (docs/gates.md).
    fn gate<'v>(
        #[starlark(kwargs)] kwargs: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<NoneType> {
        declare(eval, TargetKind::Gate, &kwargs)?;
        Ok(NoneType)
    }

    /// Declares a group: a named set of targets.
    fn group<'v>(
        #[starlark(kwargs)] kwargs: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<NoneType> {
        declare(eval, TargetKind::Group, &kwargs)?;
        Ok(NoneType)
    }

    /// Declares a deploy: ships `artifact` to `environment` (docs/delivery.md).
    fn deploy<'v>(
        #[starlark(kwargs)] kwargs: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<NoneType> {
        declare(eval, TargetKind::Deploy, &kwargs)?;
        Ok(NoneType)
    }

    /// Declares a monitor: probes a deployed environment, rolling it back on failure.
    fn monitor<'v>(
        #[starlark(kwargs)] kwargs: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<NoneType> {
        declare(eval, TargetKind::Monitor, &kwargs)?;
        Ok(NoneType)
    }

    /// Declares a notification: a command told the outcome of the build.
    fn notify<'v>(
        #[starlark(kwargs)] kwargs: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<NoneType> {
        declare(eval, TargetKind::Notify, &kwargs)?;
        Ok(NoneType)
    }

    /// Declares a service: a process started for the actions that depend on it.
    fn service<'v>(
        #[starlark(kwargs)] kwargs: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<NoneType> {
        declare(eval, TargetKind::Service, &kwargs)?;
        Ok(NoneType)
    }

    /// The package's files matching `include` and none of `exclude`, sorted.
    fn glob<'v>(
        #[starlark(require = pos)] include: UnpackListOrTuple<String>,
        #[starlark(require = named, default = UnpackListOrTuple::default())]
        exclude: UnpackListOrTuple<String>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<Vec<String>> {
        let (ctx, build) = build_state(eval, "glob")?;
        let (call, _) = call_site(eval, build);
        match glob(&build.files, &include.items, &exclude.items) {
            Ok(files) => {
                build.declared.borrow_mut().globs.push(GlobCall {
                    include: include.items,
                    exclude: exclude.items,
                });
                Ok(files)
            }
            Err(e) => {
                let at = literal_span(&call, &call, &e.pattern);
                ctx.errors.borrow_mut().push(AnalysisError::new(
                    K::BadGlob {
                        pattern: e.pattern,
                        reason: e.reason,
                    },
                    Some(at),
                ));
                Ok(Vec::new())
            }
        }
    }

    /// The name of the package being evaluated (`src/packages/billing`; `""` at the root).
    fn package_name(eval: &mut Evaluator<'_, '_, '_>) -> anyhow::Result<String> {
        let (_, build) = build_state(eval, "package_name")?;
        Ok(build.package.clone())
    }

    /// A value of the `[vars]` table of `flow.toml`, or `default` when it is absent.
    fn config<'v>(
        #[starlark(require = pos)] key: &str,
        #[starlark(require = pos)] default: Option<Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<Value<'v>> {
        let ctx = context(eval)?;
        if let Some(v) = ctx.vars.get(key) {
            return Ok(eval.heap().alloc(v.clone()));
        }
        if let Some(d) = default {
            return Ok(d);
        }
        let suggestion = closest(key, ctx.vars.keys().map(|k| k.as_str()));
        Err(anyhow::anyhow!(
            "{}{}",
            K::UnknownConfig {
                key: key.to_owned(),
                suggestion: suggestion.clone()
            },
            match suggestion {
                Some(s) => format!(" in the `[vars]` table of `flow.toml`; did you mean `{s}`?"),
                None => " in the `[vars]` table of `flow.toml`; pass a default as `config(\"key\", default)`".to_owned(),
            }
        ))
    }
}
