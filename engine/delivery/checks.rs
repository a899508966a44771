//! What the graph can tell about delivery targets, checked with every analysis:
//! - a deploy's `artifact` declares exactly one output (the thing shipped);
//! - a monitor's `target` is a deploy;
//! - a task (cached, a pure function of its key) does not depend on an effect: its result
//!   would be reused while the world the effect changed moved on;
//! - a deploy's environment is declared in `flow.toml` (`[environments.NAME]`), with the
//!   closest name as "did you mean" ([`check_environments`], given the configuration).

use std::collections::HashMap;

use flow_rules::suggest::closest;
use flow_rules::{AnalysisError, AnalysisErrorKind as K, Delivery, Label, Target, TargetKind};

/// Checks the delivery targets of `targets` (indexed by `index`); see the module doc.
pub fn check_targets(
    targets: &[Target],
    index: &HashMap<Label, usize>,
    errors: &mut Vec<AnalysisError>,
) {
    let error = |t: &Target, message: String, hint: Option<String>, at: &flow_rules::SourceSpan| {
        AnalysisError::new(
            K::Delivery {
                label: t.label.clone(),
                message,
                hint,
            },
            Some(at.clone()),
        )
    };
    for t in targets {
        let span_of = |dep: &Label| {
            t.deps
                .iter()
                .position(|d| d == dep)
                .and_then(|i| t.dep_spans.get(i))
                .unwrap_or(&t.at)
                .clone()
        };
        match &t.delivery {
            Some(Delivery::Deploy { artifact, .. }) => {
                let Some(a) = index.get(artifact).map(|&i| &targets[i]) else {
                    continue; // An unknown label: reported with the dependencies.
                };
                if a.outs.len() != 1 {
                    let message = match a.outs.len() {
                        0 => format!("its artifact `{artifact}` declares no outputs: nothing to ship"),
                        n => format!("its artifact `{artifact}` declares {n} outputs; a deploy ships exactly one"),
                    };
                    let hint = "make the artifact a target with one output: a file (a wheel, an \
                                image tarball) or a directory (`outs = [\"dist/\"]`)";
                    errors.push(error(t, message, Some(hint.into()), &span_of(artifact)));
                }
            }
            Some(Delivery::Monitor { target, .. }) => {
                if let Some(d) = index.get(target).map(|&i| &targets[i]) {
                    if d.kind != TargetKind::Deploy {
                        let message = format!(
                            "its target `{target}` is a {}, not a deploy",
                            d.kind.native()
                        );
                        errors.push(error(t, message, None, &span_of(target)));
                    }
                }
            }
            _ => {}
        }
        if t.kind == TargetKind::Task && t.cache {
            for dep in &t.deps {
                let Some(d) = effect_through_groups(targets, index, dep) else {
                    continue;
                };
                let through = match &d.label == dep {
                    true => String::new(),
                    false => format!(" (through `{dep}`)"),
                };
                let message = format!(
                    "a cached task cannot depend on the {} `{}`{through}: its result would be \
                     reused while what the {} changed moves on",
                    d.kind.native(),
                    d.label,
                    d.kind.native()
                );
                let hint = "make the check the deploy's `health` probe or a `monitor`, or \
                            declare the task with `cache = False`";
                errors.push(error(t, message, Some(hint.into()), &span_of(dep)));
            }
        }
    }
}

/// The effect `dep` is, or one a group `dep` reaches through groups only.
fn effect_through_groups<'a>(
    targets: &'a [Target],
    index: &HashMap<Label, usize>,
    dep: &Label,
) -> Option<&'a Target> {
    let mut stack = vec![dep];
    let mut seen = std::collections::HashSet::new();
    while let Some(l) = stack.pop() {
        let Some(t) = index.get(l).map(|&i| &targets[i]) else {
            continue;
        };
        if t.kind.is_effect() {
            return Some(t);
        }
        if t.kind == TargetKind::Group && seen.insert(l) {
            stack.extend(t.deps.iter());
        }
    }
    None
}

/// Every deploy's environment must be one of `declared` (`flow.toml`'s `[environments]`).
pub fn check_environments<'a>(
    targets: impl Iterator<Item = &'a Target>,
    declared: &[&str],
    errors: &mut Vec<AnalysisError>,
) {
    for t in targets {
        let Some(Delivery::Deploy { environment, .. }) = &t.delivery else {
            continue;
        };
        if declared.contains(&environment.as_str()) {
            continue;
        }
        let at = find_value(&t.at, "environment", environment);
        let hint = match closest(environment, declared.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None if declared.is_empty() => format!(
                "declare it in `flow.toml`: `[environments.{environment}]` (docs/delivery.md)"
            ),
            None => format!(
                "declared environments: {}; or add `[environments.{environment}]` to `flow.toml`",
                declared
                    .iter()
                    .map(|e| format!("`{e}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        errors.push(AnalysisError::new(
            K::Delivery {
                label: t.label.clone(),
                message: format!("environment `{environment}` is not declared in `flow.toml`"),
                hint: Some(hint),
            },
            Some(at),
        ));
    }
}

/// The span of the string `value` given to `attr` in the call `at`, or the call.
fn find_value(at: &flow_rules::SourceSpan, attr: &str, value: &str) -> flow_rules::SourceSpan {
    let text = at.text();
    let quoted = [format!("\"{value}\""), format!("'{value}'")];
    let Some(from) = text.find(attr) else {
        return at.clone();
    };
    quoted
        .iter()
        .find_map(|q| text[from..].find(q.as_str()).map(|i| from + i))
        .map_or_else(|| at.clone(), |i| at.sub(i, i + value.len() + 2))
}
