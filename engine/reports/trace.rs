//! `flow build --profile FILE`: the build as a Chrome trace (the JSON object format that
//! Perfetto, `chrome://tracing` and speedscope load). One process, `flow build`; one track
//! (thread) per job slot, holding a complete event (`ph: X`) for each action that ran in it;
//! a `reused` track with an instant event for each action taken from the cache or carried
//! over; and a `critical path` track repeating the actions of the build's critical path.
//!
//! The critical path is the chain of dependencies with the longest total run time in this
//! build (reused actions count zero): the actions that bound the build's wall time whatever
//! the number of jobs. Its actions carry `"critical": true` in their `args`, and the trace's
//! `otherData` gives its length.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{Outcome, Record};
use crate::plan::Plan;

const PID: u32 = 1;

/// The trace of the build, as JSON bytes.
pub fn trace(records: &[&Record], plan: Option<&Plan>, began: Instant) -> Vec<u8> {
    let by_label: HashMap<&str, &Record> = records.iter().map(|r| (r.label.as_str(), *r)).collect();
    let critical = plan
        .map(|p| critical_path(p, &by_label))
        .unwrap_or_default();
    let slots = records
        .iter()
        .filter_map(|r| r.slot)
        .max()
        .map_or(0, |s| s + 1);
    let reused_tid = slots + 1;
    let critical_tid = slots + 2;
    let mut events = vec![
        meta("process_name", None, "flow build"),
        meta("thread_name", Some(reused_tid), "reused"),
        meta("thread_name", Some(critical_tid), "critical path"),
    ];
    for s in 0..slots {
        events.push(meta(
            "thread_name",
            Some(s + 1),
            &format!("job slot {}", s + 1),
        ));
        events.push(
            json!({"name": "thread_sort_index", "ph": "M", "pid": PID, "tid": s + 1,
                           "args": {"sort_index": s + 1}}),
        );
    }
    let mut sorted: Vec<&&Record> = records.iter().collect();
    sorted.sort_by_key(|r| (r.start.unwrap_or(r.end), r.label.as_str()));
    for r in sorted {
        let on_path = critical.contains_key(r.label.as_str());
        let args = json!({
            "outcome": r.outcome.name(),
            "key": r.key,
            "decision": r.decision,
            "critical": on_path,
        });
        match (r.start, r.slot) {
            (Some(start), Some(slot)) => {
                let dur = r.end.saturating_sub(start);
                events.push(complete(&r.label, start, dur, slot + 1, &args));
                if on_path {
                    events.push(complete(&r.label, start, dur, critical_tid, &args));
                }
            }
            _ if matches!(r.outcome, Outcome::Cached) => events.push(json!({
                "name": r.label, "cat": "reused", "ph": "i", "s": "t", "pid": PID,
                "tid": reused_tid, "ts": micros(r.end), "args": args,
            })),
            _ => {}
        }
    }
    let length: Duration = critical.values().sum();
    let doc = json!({
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {
            "flow": env!("CARGO_PKG_VERSION"),
            "started_unix_ms": unix_ms(began),
            "critical_path_ms": length.as_millis() as u64,
            "critical_path": ordered(&critical, records),
        },
    });
    let mut out = serde_json::to_vec_pretty(&doc).unwrap_or_default();
    out.push(b'\n');
    out
}

fn meta(name: &str, tid: Option<usize>, value: &str) -> Value {
    let mut m = json!({"name": name, "ph": "M", "pid": PID, "args": {"name": value}});
    if let Some(t) = tid {
        m["tid"] = json!(t);
    }
    m
}

fn complete(label: &str, start: Duration, dur: Duration, tid: usize, args: &Value) -> Value {
    json!({
        "name": label, "cat": "action", "ph": "X", "pid": PID, "tid": tid,
        "ts": micros(start), "dur": micros(dur), "args": args,
    })
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn unix_ms(began: Instant) -> u64 {
    let now = std::time::SystemTime::now();
    let then = now.checked_sub(began.elapsed()).unwrap_or(now);
    then.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The labels of the critical path in the order they ran.
fn ordered(critical: &BTreeMap<String, Duration>, records: &[&Record]) -> Vec<String> {
    let mut on: Vec<&&Record> = records
        .iter()
        .filter(|r| critical.contains_key(r.label.as_str()))
        .collect();
    on.sort_by_key(|r| (r.start.unwrap_or(r.end), r.label.as_str()));
    on.iter().map(|r| r.label.clone()).collect()
}

/// The chain of dependencies with the longest total run time, label → its run time; empty
/// when nothing ran.
pub fn critical_path(plan: &Plan, records: &HashMap<&str, &Record>) -> BTreeMap<String, Duration> {
    let labels: Vec<String> = plan.nodes.iter().map(|a| a.label.to_string()).collect();
    let own: Vec<Duration> = labels
        .iter()
        .map(|l| match records.get(l.as_str()) {
            Some(r) => match r.start {
                Some(s) => r.end.saturating_sub(s),
                None => Duration::ZERO,
            },
            None => Duration::ZERO,
        })
        .collect();
    let deps: Vec<&[usize]> = plan.nodes.iter().map(|a| a.deps.as_slice()).collect();
    longest_chain(&deps, &own)
        .into_iter()
        .map(|i| (labels[i].clone(), own[i]))
        .collect()
}

/// The nodes of the chain of dependencies with the longest total time (`own[i]` is node `i`'s;
/// `deps[i]` the nodes it depends on, a DAG), from its end back to its start, leaving out the
/// nodes of no time (a group, a reused action); empty when no node took time. Ties go to the
/// lower index, so the answer is stable.
pub fn longest_chain(deps: &[&[usize]], own: &[Duration]) -> Vec<usize> {
    let n = deps.len();
    // Dependencies before dependents (Kahn's algorithm over the reversed edges).
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut waiting: Vec<usize> = vec![0; n];
    for (i, ds) in deps.iter().enumerate() {
        waiting[i] = ds.len();
        for &d in *ds {
            dependents[d].push(i);
        }
    }
    let mut order: Vec<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
    let mut next = 0;
    while next < order.len() {
        let at = order[next];
        next += 1;
        for &d in &dependents[at] {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                order.push(d);
            }
        }
    }
    // Longest chain ending at each node, and the dependency it came through.
    let mut best = vec![Duration::ZERO; n];
    let mut via: Vec<Option<usize>> = vec![None; n];
    for i in order {
        let from = deps[i]
            .iter()
            .copied()
            .max_by_key(|&d| (best[d], std::cmp::Reverse(d)));
        best[i] = own[i] + from.map_or(Duration::ZERO, |d| best[d]);
        via[i] = from;
    }
    let mut path = Vec::new();
    let Some(mut at) = (0..n).max_by_key(|&i| (best[i], std::cmp::Reverse(i))) else {
        return path;
    };
    if best[at].is_zero() {
        return path;
    }
    loop {
        if !own[at].is_zero() {
            path.push(at);
        }
        match via[at] {
            Some(d) => at = d,
            None => break,
        }
    }
    path
}
