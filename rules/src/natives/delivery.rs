//! The attributes only `deploy`, `monitor`, `notify` and `service` have, read into
//! [`Delivery`]; the labels they name (`artifact`, `target`) become dependencies too.
//!
//! What is checked here is what one call can tell: required attributes, the values of `on`
//! and `on_failure`, durations, label syntax. What needs other packages or `flow.toml` (the
//! artifact has exactly one output, the environment is declared, a monitor watches a deploy)
//! is checked with the whole graph (`engine/graph.rs`).

use std::time::Duration;

use super::attrs::{literal_span, Attrs};
use crate::error::{AnalysisError, AnalysisErrorKind as K, SourceSpan};
use crate::label::Label;
use crate::natives::BuildState;
use crate::suggest::closest;
use crate::target::{Delivery, OnFailure, TargetKind, NOTIFY_EVENTS};

/// Attributes of `deploy`.
pub const DEPLOY_ATTRS: &[&str] = &[
    "name",
    "environment",
    "artifact",
    "cmd",
    "srcs",
    "deps",
    "env",
    "secrets",
    "tools",
    "timeout",
    "branches",
    "health",
    "health_timeout",
    "live",
    "tags",
    "visibility",
    "doc",
];

/// Attributes of `monitor`.
pub const MONITOR_ATTRS: &[&str] = &[
    "name",
    "target",
    "probe",
    "interval",
    "duration",
    "on_failure",
    "srcs",
    "deps",
    "env",
    "secrets",
    "tools",
    "tags",
    "visibility",
    "doc",
];

/// Attributes of `notify`.
pub const NOTIFY_ATTRS: &[&str] = &[
    "name",
    "on",
    "cmd",
    "srcs",
    "deps",
    "env",
    "secrets",
    "tools",
    "timeout",
    "tags",
    "visibility",
    "doc",
];

/// Attributes of `service`.
pub const SERVICE_ATTRS: &[&str] = &[
    "name",
    "start",
    "ready",
    "stop",
    "timeout",
    "srcs",
    "deps",
    "env",
    "tools",
    "tags",
    "visibility",
    "doc",
];

/// How long a deploy's health probe may take to pass, by default.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
/// A monitor's probe interval and duration, by default.
pub const MONITOR_INTERVAL: Duration = Duration::from_secs(10);
pub const MONITOR_DURATION: Duration = Duration::from_secs(60);
/// How long a service may take to get ready, by default.
pub const SERVICE_TIMEOUT: Duration = Duration::from_secs(30);

/// A string attribute the call must have; `None` (and an error at the call) when it is absent.
pub(super) fn required(a: &mut Attrs<'_, '_>, attr: &'static str) -> Option<String> {
    let value = a.string(attr);
    if value.is_none() && a.get(attr).is_none() {
        a.errors.push(AnalysisError::new(
            K::MissingAttribute { rule: a.rule, attr },
            Some(a.call.clone()),
        ));
    }
    value
}

/// The command of a call of `kind`: `cmd`, or a service's `start`; `None` for a monitor.
pub(super) fn command(a: &mut Attrs<'_, '_>, kind: TargetKind) -> Option<String> {
    match kind {
        TargetKind::Group | TargetKind::Monitor | TargetKind::Gate => None,
        TargetKind::Service => required(a, "start"),
        TargetKind::Task | TargetKind::Deploy | TargetKind::Notify => required(a, "cmd"),
    }
}

/// Reads the delivery attributes of a call of `kind` (`None` for a task or a group); labels
/// it names are pushed onto `deps` (with their spans) unless already there.
pub(super) fn read(
    a: &mut Attrs<'_, '_>,
    build: &BuildState,
    kind: TargetKind,
    deps: &mut Vec<Label>,
    dep_spans: &mut Vec<SourceSpan>,
) -> Option<Delivery> {
    let mut label_attr = |a: &mut Attrs<'_, '_>, attr: &'static str| {
        let text = required(a, attr)?;
        let at = literal_span(a.call, &a.span(attr), &text);
        match Label::parse(&text, Some(&build.package)) {
            Ok(l) => {
                if !deps.contains(&l) {
                    deps.push(l.clone());
                    dep_spans.push(at);
                }
                Some(l)
            }
            Err(e) => {
                a.errors
                    .push(AnalysisError::new(K::BadLabel { error: e }, Some(at)));
                None
            }
        }
    };
    Some(match kind {
        TargetKind::Task | TargetKind::Group | TargetKind::Gate => return None,
        TargetKind::Deploy => {
            let environment = required(a, "environment");
            let artifact = label_attr(a, "artifact");
            Delivery::Deploy {
                environment: environment.unwrap_or_default(),
                artifact: artifact?,
                branches: a.strings("branches"),
                health: a.string("health"),
                health_timeout: a.duration("health_timeout").unwrap_or(HEALTH_TIMEOUT),
                live: a.string("live"),
            }
        }
        TargetKind::Monitor => {
            let target = label_attr(a, "target");
            let probe = required(a, "probe");
            Delivery::Monitor {
                target: target?,
                probe: probe.unwrap_or_default(),
                interval: a.duration("interval").unwrap_or(MONITOR_INTERVAL),
                duration: a.duration("duration").unwrap_or(MONITOR_DURATION),
                on_failure: on_failure(a),
            }
        }
        TargetKind::Notify => Delivery::Notify { on: events(a) },
        TargetKind::Service => Delivery::Service {
            ready: required(a, "ready").unwrap_or_default(),
            stop: a.string("stop"),
            timeout: a.duration("timeout").unwrap_or(SERVICE_TIMEOUT),
        },
    })
}

fn on_failure(a: &mut Attrs<'_, '_>) -> OnFailure {
    match a.string("on_failure").as_deref() {
        None | Some("fail") => OnFailure::Fail,
        Some("rollback") => OnFailure::Rollback,
        Some(other) => {
            a.bad_value(
                "on_failure",
                format!("`{other}` is not `\"fail\"` or `\"rollback\"`"),
            );
            OnFailure::Fail
        }
    }
}

/// `on`: required, not empty, each one of [`NOTIFY_EVENTS`] (with the closest for a typo).
fn events(a: &mut Attrs<'_, '_>) -> Vec<String> {
    if a.get("on").is_none() {
        a.errors.push(AnalysisError::new(
            K::MissingAttribute {
                rule: "notify",
                attr: "on",
            },
            Some(a.call.clone()),
        ));
        return Vec::new();
    }
    let on = a.strings("on");
    if on.is_empty() {
        a.bad_value(
            "on",
            format!("names no event; give some of {}", quoted(NOTIFY_EVENTS)),
        );
    }
    for event in &on {
        if !NOTIFY_EVENTS.contains(&event.as_str()) {
            let hint = match closest(event, NOTIFY_EVENTS.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("the events are {}", quoted(NOTIFY_EVENTS)),
            };
            a.bad_value("on", format!("`{event}` is not an event; {hint}"));
        }
    }
    on
}

fn quoted(words: &[&str]) -> String {
    words
        .iter()
        .map(|w| format!("`{w}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
