//! `task`, `group` and the delivery natives: one call's keyword arguments checked and recorded as a `Target`.
//!
//! Outline of `declare`:
//! 1. Unknown attributes (with "did you mean"); `name` present and a valid target name.
//! 2. Every attribute read and type-checked (`Attrs`): a task's `cmd` is required, the labels in
//!    `deps` and the rules in `visibility` are parsed, `env` and `secrets` names are checked.
//! 3. A task's `srcs` and `outs` are checked against the package's files (`paths`).
//! 4. The target is recorded under its name. A second target of the same name is an error that
//!    points at the first; a declaration with errors is recorded as *broken* (the target exists,
//!    so a dependency on it is not reported again as unknown).
//!
//! Every error goes into the file's context and evaluation goes on.

use std::collections::BTreeMap;
use std::time::Duration;

use starlark::collections::SmallMap;
use starlark::eval::Evaluator;
use starlark::values::Value;

use super::attrs::{attr_span, literal_span, Attrs};
use super::delivery;
use super::paths::{check_outs, check_srcs};
use super::{build_state, call_site, GATE_ATTRS, GROUP_ATTRS, TASK_ATTRS};
use crate::error::{AnalysisError, AnalysisErrorKind as K, SourceSpan};
use crate::label::Label;
use crate::natives::BuildState;
use crate::suggest::closest;
use crate::target::{Target, TargetKind};
use crate::visibility::VisibilityRule;

/// Checks one call of `task` or `group` and records its target (or its errors).
pub(super) fn declare<'v>(
    eval: &Evaluator<'v, '_, '_>,
    kind: TargetKind,
    kwargs: &SmallMap<String, Value<'v>>,
) -> anyhow::Result<()> {
    let (ctx, build) = build_state(eval, kind.native())?;
    let (call, generator) = call_site(eval, build);
    let mut a = Attrs {
        rule: kind.native(),
        kwargs,
        call: &call,
        errors: Vec::new(),
    };
    check_known(&mut a, kind);
    let name = a.string("name");
    if name.is_none() && a.get("name").is_none() {
        a.errors.push(AnalysisError::new(
            K::MissingAttribute {
                rule: kind.native(),
                attr: "name",
            },
            Some(call.clone()),
        ));
    }
    let label = name.as_ref().and_then(|n| name_label(&mut a, build, n));

    let mut cmd = delivery::command(&mut a, kind);
    let (mut deps, mut dep_spans) = read_deps(&mut a, build);
    let delivery = delivery::read(&mut a, build, kind, &mut deps, &mut dep_spans);
    let visibility = read_visibility(&mut a);
    let tags = a.strings("tags");
    let doc = a.string("doc");
    let cache = kind != TargetKind::Task || a.bool("cache", true);
    let mut task = match kind {
        TargetKind::Group | TargetKind::Gate => TaskAttrs::of_group(),
        _ => TaskAttrs::read(&mut a),
    };
    if kind == TargetKind::Gate {
        cmd = super::gate::command(&mut a, &deps);
        task.outs = name.iter().map(|n| super::gate::output(n)).collect();
    }

    let mut errors = std::mem::take(&mut a.errors);
    if let (Some(label), Some(name)) = (label, name) {
        check_srcs(build, &call, &label, &task.srcs, &mut errors);
        check_outs(build, &call, &label, &task.outs, &task.srcs, &mut errors);
        let target = Target {
            label,
            kind,
            generator,
            cmd,
            srcs: task.srcs,
            deps,
            outs: task.outs,
            env: task.env,
            secrets: task.secrets,
            tools: task.tools,
            timeout: task.timeout,
            retries: task.retries,
            tags,
            visibility,
            sandbox: task.sandbox,
            cache,
            doc,
            delivery,
            at: call.clone(),
            dep_spans,
        };
        record(build, &call, &name, target, &mut errors);
    }
    ctx.errors.borrow_mut().extend(errors);
    Ok(())
}

/// Reports every keyword that is not an attribute of `kind`, with the closest one.
fn check_known(a: &mut Attrs<'_, '_>, kind: TargetKind) {
    let allowed = match kind {
        TargetKind::Task => TASK_ATTRS,
        TargetKind::Group => GROUP_ATTRS,
        TargetKind::Deploy => delivery::DEPLOY_ATTRS,
        TargetKind::Monitor => delivery::MONITOR_ATTRS,
        TargetKind::Notify => delivery::NOTIFY_ATTRS,
        TargetKind::Service => delivery::SERVICE_ATTRS,
        TargetKind::Gate => GATE_ATTRS,
    };
    for key in a.kwargs.keys() {
        if !allowed.contains(&key.as_str()) {
            let suggestion = closest(key, allowed.iter().copied());
            a.errors.push(AnalysisError::new(
                K::UnknownAttribute {
                    rule: kind.native(),
                    attr: key.clone(),
                    suggestion,
                    allowed: allowed.to_vec(),
                },
                Some(attr_span(a.call, key)),
            ));
        }
    }
}

/// The label `//package:name`, or `None` (and an error at the literal) for a bad name.
fn name_label(a: &mut Attrs<'_, '_>, build: &BuildState, name: &str) -> Option<Label> {
    match Label::parse(&format!(":{name}"), Some(&build.package)) {
        Ok(l) => Some(l),
        Err(mut e) => {
            e.input = name.to_owned();
            e.offset = e.offset.saturating_sub(1);
            let at = literal_span(a.call, &a.span("name"), name);
            a.errors
                .push(AnalysisError::new(K::BadLabel { error: e }, Some(at)));
            None
        }
    }
}

/// `deps` as labels, duplicates dropped, each with the span of its literal.
fn read_deps(a: &mut Attrs<'_, '_>, build: &BuildState) -> (Vec<Label>, Vec<SourceSpan>) {
    let deps_span = a.span("deps");
    let mut deps = Vec::new();
    let mut dep_spans = Vec::new();
    for d in a.strings("deps") {
        let at = literal_span(a.call, &deps_span, &d);
        match Label::parse(&d, Some(&build.package)) {
            Ok(l) => {
                if !deps.contains(&l) {
                    deps.push(l);
                    dep_spans.push(at);
                }
            }
            Err(e) => a
                .errors
                .push(AnalysisError::new(K::BadLabel { error: e }, Some(at))),
        }
    }
    (deps, dep_spans)
}

/// `visibility` as rules; `None` when absent (the workspace's default applies).
fn read_visibility(a: &mut Attrs<'_, '_>) -> Option<Vec<VisibilityRule>> {
    a.get("visibility")?;
    let span = a.span("visibility");
    let mut rules = Vec::new();
    for v in a.strings("visibility") {
        match VisibilityRule::parse(&v) {
            Ok(r) => rules.push(r),
            Err(e) => {
                let at = literal_span(a.call, &span, &v);
                a.errors
                    .push(AnalysisError::new(K::BadLabel { error: e }, Some(at)));
            }
        }
    }
    Some(rules)
}

/// The attributes only a task has.
struct TaskAttrs {
    srcs: Vec<String>,
    outs: Vec<String>,
    env: BTreeMap<String, String>,
    secrets: Vec<String>,
    tools: Vec<String>,
    timeout: Option<Duration>,
    retries: u32,
    sandbox: bool,
}

impl TaskAttrs {
    /// A group's: nothing to run, nothing to read or write.
    fn of_group() -> TaskAttrs {
        TaskAttrs {
            srcs: Vec::new(),
            outs: Vec::new(),
            env: BTreeMap::new(),
            secrets: Vec::new(),
            tools: Vec::new(),
            timeout: None,
            retries: 0,
            sandbox: true,
        }
    }

    /// Reads and checks a task's attributes (`env` and `secrets` must be variable names, and no
    /// name may be in both).
    fn read(a: &mut Attrs<'_, '_>) -> TaskAttrs {
        let srcs = a.strings("srcs");
        let outs = a.strings("outs");
        let env = a.string_dict("env");
        for key in env.keys() {
            if !valid_env_name(key) {
                a.bad_value(
                    "env",
                    format!("`{key}` is not a valid environment variable name"),
                );
            }
        }
        let secrets = a.strings("secrets");
        for s in &secrets {
            if !valid_env_name(s) {
                a.bad_value(
                    "secrets",
                    format!("`{s}` is not a valid environment variable name"),
                );
            } else if env.contains_key(s) {
                a.bad_value(
                    "secrets",
                    format!("`{s}` is both in `env` and in `secrets`"),
                );
            }
        }
        TaskAttrs {
            srcs,
            outs,
            env,
            secrets,
            tools: a.strings("tools"),
            timeout: a.duration("timeout"),
            retries: a.count("retries"),
            sandbox: a.bool("sandbox", true),
        }
    }
}

/// Whether `s` can name an environment variable: letters, digits and `_`, not starting with a digit.
pub fn valid_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.as_bytes()[0].is_ascii_digit()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Records `target` under `name`, unless the package already has a target of that name; a
/// declaration with `errors` is recorded as broken.
fn record(
    build: &BuildState,
    call: &SourceSpan,
    name: &str,
    target: Target,
    errors: &mut Vec<AnalysisError>,
) {
    let mut declared = build.declared.borrow_mut();
    let name_span = literal_span(call, &attr_span(call, "name"), name);
    if let Some(first) = declared.names.get(name) {
        errors.push(
            AnalysisError::new(
                K::DuplicateTarget {
                    package: build.package.clone(),
                    name: name.to_owned(),
                },
                Some(name_span),
            )
            .with_related(first.clone(), "first declared here"),
        );
    } else {
        declared.names.insert(name.to_owned(), name_span);
        if !errors.is_empty() {
            declared.broken.push(target.label);
        } else {
            declared.targets.push(target);
        }
    }
}
