//! The native functions of the BUILD language: `task`, `group`, `glob`, `package_name`, `config`.
//!
//! `task` and `group` take their attributes as keyword arguments and check them here rather than
//! through Starlark's signature matching, so that every mistake in a call is collected (unknown
//! attribute with "did you mean", wrong type, bad label, missing file) instead of only the first,
//! and each points at the attribute in the BUILD file. Errors are pushed into the context and
//! evaluation goes on; the caller reports them all at the end.

use std::collections::BTreeMap;
use std::time::Duration;

use starlark::collections::SmallMap;
use starlark::environment::GlobalsBuilder;
use starlark::eval::Evaluator;
use starlark::starlark_module;
use starlark::values::dict::DictRef;
use starlark::values::list_or_tuple::UnpackListOrTuple;
use starlark::values::none::NoneType;
use starlark::values::{UnpackValue, Value};

pub(crate) use crate::context::{BuildState, Declared, EvalContext};
use crate::error::{AnalysisError, AnalysisErrorKind as K, SourceSpan};
use crate::glob::glob;
use crate::label::Label;
use crate::suggest::closest;
use crate::target::{GlobCall, Target, TargetKind};
use crate::visibility::VisibilityRule;

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
                    "task" | "group" => None,
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

/// The span of `name = ` inside a call's text, or the whole call.
fn attr_span(call: &SourceSpan, name: &str) -> SourceSpan {
    let text = call.text();
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(i) = text[from..].find(name) {
        let start = from + i;
        let end = start + name.len();
        let before_ok = start == 0 || !is_ident(bytes[start - 1]);
        let rest = text[end..].trim_start();
        let after_ok = rest.starts_with('=') && !rest.starts_with("==");
        if before_ok && after_ok {
            return call.sub(start, end);
        }
        from = end;
    }
    call.clone()
}

/// The span of a string literal `"value"` inside an attribute's text, or the attribute.
fn literal_span(call: &SourceSpan, attr: &SourceSpan, value: &str) -> SourceSpan {
    let text = call.text();
    let from = attr.start.saturating_sub(call.start).min(text.len());
    for quote in ['"', '\''] {
        let needle = format!("{quote}{value}{quote}");
        if let Some(i) = text[from..].find(&needle) {
            return call.sub(from + i, from + i + needle.len());
        }
    }
    attr.clone()
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn describe(v: Value) -> String {
    let mut repr = v.to_repr();
    if repr.len() > 40 {
        let mut cut = 37;
        while !repr.is_char_boundary(cut) {
            cut -= 1;
        }
        repr.truncate(cut);
        repr.push_str("...");
    }
    format!("`{}` ({repr})", v.get_type())
}

/// Reads and type-checks attributes out of keyword arguments, collecting errors.
struct Attrs<'a, 'v> {
    rule: &'static str,
    kwargs: &'a SmallMap<String, Value<'v>>,
    call: &'a SourceSpan,
    errors: Vec<AnalysisError>,
}

impl<'v> Attrs<'_, 'v> {
    fn get(&self, name: &str) -> Option<Value<'v>> {
        self.kwargs.get(name).copied().filter(|v| !v.is_none())
    }

    fn span(&self, name: &str) -> SourceSpan {
        attr_span(self.call, name)
    }

    fn type_error(&mut self, name: &str, expected: &'static str, got: Value) {
        self.errors.push(AnalysisError::new(
            K::AttributeType {
                rule: self.rule,
                attr: name.to_owned(),
                expected,
                got: describe(got),
            },
            Some(self.span(name)),
        ));
    }

    fn bad_value(&mut self, name: &str, reason: String) {
        self.errors.push(AnalysisError::new(
            K::BadValue {
                attr: name.to_owned(),
                reason,
            },
            Some(self.span(name)),
        ));
    }

    fn string(&mut self, name: &str) -> Option<String> {
        let v = self.get(name)?;
        match v.unpack_str() {
            Some(s) => Some(s.to_owned()),
            None => {
                self.type_error(name, "a string", v);
                None
            }
        }
    }

    fn strings(&mut self, name: &str) -> Vec<String> {
        let Some(v) = self.get(name) else {
            return Vec::new();
        };
        match UnpackListOrTuple::<String>::unpack_value(v) {
            Ok(Some(list)) => list.items,
            _ => {
                self.type_error(name, "a list of strings", v);
                Vec::new()
            }
        }
    }

    fn string_dict(&mut self, name: &str) -> BTreeMap<String, String> {
        let Some(v) = self.get(name) else {
            return BTreeMap::new();
        };
        let Some(dict) = DictRef::from_value(v) else {
            self.type_error(name, "a dict of strings to strings", v);
            return BTreeMap::new();
        };
        let mut out = BTreeMap::new();
        for (k, val) in dict.iter() {
            match (k.unpack_str(), val.unpack_str()) {
                (Some(k), Some(val)) => {
                    out.insert(k.to_owned(), val.to_owned());
                }
                _ => {
                    self.type_error(name, "a dict of strings to strings", v);
                    return BTreeMap::new();
                }
            }
        }
        out
    }

    fn bool(&mut self, name: &str, default: bool) -> bool {
        let Some(v) = self.get(name) else {
            return default;
        };
        match v.unpack_bool() {
            Some(b) => b,
            None => {
                self.type_error(name, "`True` or `False`", v);
                default
            }
        }
    }

    fn count(&mut self, name: &str) -> u32 {
        let Some(v) = self.get(name) else {
            return 0;
        };
        match v.unpack_i32() {
            Some(n) if n >= 0 => n as u32,
            Some(n) => {
                self.bad_value(name, format!("must not be negative, got {n}"));
                0
            }
            None => {
                self.type_error(name, "a non-negative int", v);
                0
            }
        }
    }

    fn duration(&mut self, name: &str) -> Option<Duration> {
        let v = self.get(name)?;
        if let Some(n) = v.unpack_i32() {
            if n <= 0 {
                self.bad_value(name, format!("must be positive, got {n}"));
                return None;
            }
            return Some(Duration::from_secs(n as u64));
        }
        if let Some(s) = v.unpack_str() {
            return match parse_duration(s) {
                Some(d) => Some(d),
                None => {
                    self.bad_value(
                        name,
                        format!(
                            "`{s}` is not a duration; write seconds (`90`) or `30s`, `5m`, `1h`"
                        ),
                    );
                    None
                }
            };
        }
        self.type_error(name, "seconds as an int, or a string such as `5m`", v);
        None
    }
}

/// `90`, `30s`, `5m`, `1h`, `1.5m` → a duration.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num.trim().parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    (secs > 0.0 && secs.is_finite()).then(|| Duration::from_secs_f64(secs))
}

fn declare<'v>(
    eval: &Evaluator<'v, '_, '_>,
    kind: TargetKind,
    kwargs: &SmallMap<String, Value<'v>>,
) -> anyhow::Result<()> {
    let (ctx, build) = build_state(eval, kind.native())?;
    let (call, generator) = call_site(eval, build);
    let allowed = match kind {
        TargetKind::Task => TASK_ATTRS,
        TargetKind::Group => GROUP_ATTRS,
    };
    let mut a = Attrs {
        rule: kind.native(),
        kwargs,
        call: &call,
        errors: Vec::new(),
    };
    for key in kwargs.keys() {
        if !allowed.contains(&key.as_str()) {
            let suggestion = closest(key, allowed.iter().copied());
            a.errors.push(AnalysisError::new(
                K::UnknownAttribute {
                    rule: kind.native(),
                    attr: key.clone(),
                    suggestion,
                    allowed: allowed.to_vec(),
                },
                Some(attr_span(&call, key)),
            ));
        }
    }
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
    let label =
        name.as_ref().and_then(
            |n| match Label::parse(&format!(":{n}"), Some(&build.package)) {
                Ok(l) => Some(l),
                Err(mut e) => {
                    e.input = n.clone();
                    e.offset = e.offset.saturating_sub(1);
                    let at = literal_span(&call, &a.span("name"), n);
                    a.errors
                        .push(AnalysisError::new(K::BadLabel { error: e }, Some(at)));
                    None
                }
            },
        );

    let cmd = if kind == TargetKind::Task {
        let cmd = a.string("cmd");
        if cmd.is_none() && a.get("cmd").is_none() {
            a.errors.push(AnalysisError::new(
                K::MissingAttribute {
                    rule: "task",
                    attr: "cmd",
                },
                Some(call.clone()),
            ));
        }
        cmd
    } else {
        None
    };

    let deps_span = a.span("deps");
    let mut deps = Vec::new();
    let mut dep_spans = Vec::new();
    for d in a.strings("deps") {
        let at = literal_span(&call, &deps_span, &d);
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

    let visibility = if a.get("visibility").is_some() {
        let span = a.span("visibility");
        let mut rules = Vec::new();
        for v in a.strings("visibility") {
            match VisibilityRule::parse(&v) {
                Ok(r) => rules.push(r),
                Err(e) => {
                    let at = literal_span(&call, &span, &v);
                    a.errors
                        .push(AnalysisError::new(K::BadLabel { error: e }, Some(at)));
                }
            }
        }
        Some(rules)
    } else {
        None
    };

    let tags = a.strings("tags");
    let doc = a.string("doc");
    let cache = kind != TargetKind::Task || a.bool("cache", true);
    let (srcs, outs, env, secrets, tools, timeout, retries, sandbox) = if kind == TargetKind::Task {
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
        let tools = a.strings("tools");
        let timeout = a.duration("timeout");
        let retries = a.count("retries");
        let sandbox = a.bool("sandbox", true);
        (srcs, outs, env, secrets, tools, timeout, retries, sandbox)
    } else {
        let (srcs, outs, env, secrets, tools, timeout, retries) = Default::default();
        (srcs, outs, env, secrets, tools, timeout, retries, true)
    };

    let mut errors = std::mem::take(&mut a.errors);
    if let Some(label) = &label {
        check_srcs(build, &call, label, &srcs, &mut errors);
        check_outs(build, &call, label, &outs, &srcs, &mut errors);
    }

    let mut declared = build.declared.borrow_mut();
    if let (Some(label), Some(name)) = (&label, &name) {
        let name_span = literal_span(&call, &attr_span(&call, "name"), name);
        if let Some(first) = declared.names.get(name) {
            errors.push(
                AnalysisError::new(
                    K::DuplicateTarget {
                        package: build.package.clone(),
                        name: name.clone(),
                    },
                    Some(name_span),
                )
                .with_related(first.clone(), "first declared here"),
            );
        } else {
            declared.names.insert(name.clone(), name_span);
            if !errors.is_empty() {
                declared.broken.push(label.clone());
            } else {
                declared.targets.push(Target {
                    label: label.clone(),
                    kind,
                    generator,
                    cmd,
                    srcs,
                    deps,
                    outs,
                    env,
                    secrets,
                    tools,
                    timeout,
                    retries,
                    tags,
                    visibility,
                    sandbox,
                    cache,
                    doc,
                    at: call.clone(),
                    dep_spans,
                });
            }
        }
    }
    ctx.errors.borrow_mut().extend(errors);
    Ok(())
}

fn valid_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.as_bytes()[0].is_ascii_digit()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Why a package-relative path is unusable, if it is.
fn path_problem(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        Some("is empty")
    } else if path.starts_with('/') {
        Some("is an absolute path; paths are relative to the package")
    } else if path.split('/').any(|s| s == "..") {
        Some("contains `..`: it would escape its package")
    } else if path.split('/').any(|s| s == ".") || path.contains("//") {
        Some("is not a normalized path (it has a `.` or an empty segment)")
    } else if path.contains('\0') {
        Some("contains a NUL byte")
    } else {
        None
    }
}

fn check_srcs(
    build: &BuildState,
    call: &SourceSpan,
    label: &Label,
    srcs: &[String],
    errors: &mut Vec<AnalysisError>,
) {
    let span = attr_span(call, "srcs");
    for src in srcs {
        let at = literal_span(call, &span, src);
        let bad = |reason: &str| {
            AnalysisError::new(
                K::BadSource {
                    label: label.clone(),
                    path: src.clone(),
                    reason: reason.to_owned(),
                },
                Some(at.clone()),
            )
        };
        if src.starts_with("//") || src.starts_with(':') {
            errors.push(bad(
                "is a label: `srcs` holds files of the package; put targets in `deps`",
            ));
            continue;
        }
        if let Some(problem) = path_problem(src) {
            errors.push(bad(problem));
            continue;
        }
        if build.files.binary_search(src).is_ok() {
            continue;
        }
        if let Some(sub) = build
            .subpackages
            .iter()
            .find(|p| src.starts_with(p.as_str()) && src.as_bytes().get(p.len()) == Some(&b'/'))
        {
            let pkg = if build.package.is_empty() {
                sub.clone()
            } else {
                format!("{}/{sub}", build.package)
            };
            errors.push(bad(&format!(
                "belongs to the sub-package `//{pkg}`; depend on a target there instead"
            )));
            continue;
        }
        let suggestion = closest(src, build.files.iter().map(|s| s.as_str()));
        errors.push(AnalysisError::new(
            K::MissingSource {
                label: label.clone(),
                path: src.clone(),
                suggestion,
            },
            Some(at),
        ));
    }
}

fn check_outs(
    build: &BuildState,
    call: &SourceSpan,
    label: &Label,
    outs: &[String],
    srcs: &[String],
    errors: &mut Vec<AnalysisError>,
) {
    let span = attr_span(call, "outs");
    let mut seen: Vec<&str> = Vec::new();
    for (k, out) in outs.iter().enumerate() {
        // Point at this occurrence, also when the same path is written twice.
        let nth = outs[..k].iter().filter(|o| *o == out).count();
        let mut at = literal_span(call, &span, out);
        for _ in 0..nth {
            let after = SourceSpan::new(at.file.clone(), at.source.clone(), at.end, call.end);
            let next = literal_span(call, &after, out);
            if next.start <= at.start {
                break;
            }
            at = next;
        }
        let path = out.strip_suffix('/').unwrap_or(out);
        let reason = if let Some(p) = path_problem(path) {
            Some(p.to_owned())
        } else if srcs.iter().any(|s| s == path) {
            Some("is also a source of the target; outputs must be new files".to_owned())
        } else if build.files.binary_search(&path.to_owned()).is_ok() {
            Some("collides with a source file of the package; outputs must be new files".to_owned())
        } else if seen.contains(&path) {
            Some("is declared twice".to_owned())
        } else {
            seen.iter()
                .find(|s| {
                    path.starts_with(*s) && path.as_bytes().get(s.len()) == Some(&b'/')
                        || s.starts_with(path) && s.as_bytes().get(path.len()) == Some(&b'/')
                })
                .map(|other| format!("overlaps the output `{other}`"))
        };
        seen.push(path);
        if let Some(reason) = reason {
            errors.push(AnalysisError::new(
                K::BadOutput {
                    label: label.clone(),
                    path: out.clone(),
                    reason,
                },
                Some(at),
            ));
        }
    }
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

    /// Declares a group: a named set of targets.
    fn group<'v>(
        #[starlark(kwargs)] kwargs: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<NoneType> {
        declare(eval, TargetKind::Group, &kwargs)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5 parsecs"), None);
        assert_eq!(parse_duration("-1s"), None);
    }
}
