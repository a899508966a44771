//! `flow build --events FILE`: the build as JSON lines, written as it happens (a FIFO reader
//! sees each event when it occurs). The schema is documented in docs/reports.md and versioned:
//! within schema [`SCHEMA`], fields are only ever added, never renamed, removed or given another
//! meaning; anything else is a new schema number.
//!
//! Every line is one object with `event` and `at_ms` (milliseconds since the build began):
//! `build_started` (`schema`, `flow`, `unix_ms`, `actions`), then per action `decision`
//! (`label`, `decision`, `key`), `started` (`label`, `key`, `slot`) when it gets a job slot,
//! `finished` (`label`, `key`, `decision`, `outcome`, `duration_ms`, and `why` or `attempts`
//! where they apply); `warning` (`text`) at any time; and `build_finished` (`outcome` and the
//! summary's counts) last.

use std::io::Write;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::{Outcome, Record};
use crate::reporter::Summary;

/// The schema of the event stream.
pub const SCHEMA: u32 = 1;

pub struct Stream {
    out: std::io::BufWriter<std::fs::File>,
    error: Option<std::io::Error>,
}

impl Stream {
    pub fn new(file: std::fs::File) -> Stream {
        Stream {
            out: std::io::BufWriter::new(file),
            error: None,
        }
    }

    fn emit(&mut self, event: &str, at: Duration, fields: Value) {
        if self.error.is_some() {
            return;
        }
        let mut line = Map::new();
        line.insert("event".into(), json!(event));
        line.insert("at_ms".into(), json!(millis(at)));
        if let Value::Object(fields) = fields {
            line.extend(fields.into_iter().filter(|(_, v)| !v.is_null()));
        }
        let written = writeln!(self.out, "{}", Value::Object(line)).and_then(|_| self.out.flush());
        if let Err(e) = written {
            self.error = Some(e);
        }
    }

    pub fn build_started(&mut self, actions: usize) {
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, millis);
        let fields = json!({
            "schema": SCHEMA,
            "flow": env!("CARGO_PKG_VERSION"),
            "unix_ms": unix_ms,
            "actions": actions,
        });
        self.emit("build_started", Duration::ZERO, fields);
    }

    pub fn decision(&mut self, label: &str, decision: &str, key: Option<&str>, at: Duration) {
        let fields = json!({"label": label, "decision": decision, "key": key});
        self.emit("decision", at, fields);
    }

    pub fn started(&mut self, label: &str, key: Option<&str>, slot: usize, at: Duration) {
        let fields = json!({"label": label, "key": key, "slot": slot});
        self.emit("started", at, fields);
    }

    pub fn finished(&mut self, r: &Record, at: Duration) {
        let (why, attempts) = match &r.outcome {
            Outcome::Failed { why } | Outcome::Skipped { why } | Outcome::Quarantined { why } => {
                (Some(why.as_str()), None)
            }
            Outcome::Flaky { attempts } => (None, Some(*attempts)),
            _ => (None, None),
        };
        let fields = json!({
            "label": r.label,
            "key": r.key,
            "decision": r.decision,
            "outcome": r.outcome.name(),
            "duration_ms": millis(r.took),
            "why": why,
            "attempts": attempts,
        });
        self.emit("finished", at, fields);
    }

    /// A gate's table (`reports/gates.rs`), once the build ended.
    pub fn gate(&mut self, t: &super::gates::Table, at: Duration) {
        let fields = json!({
            "label": t.gate,
            "passed": t.passed,
            "checks": t.checks,
            "errors": t.errors,
        });
        self.emit("gate", at, fields);
    }

    pub fn warning(&mut self, text: &str, at: Duration) {
        self.emit("warning", at, json!({ "text": text }));
    }

    pub fn build_finished(&mut self, s: &Summary, took: Duration) {
        let fields = json!({
            "outcome": outcome(s),
            "ran": s.ran,
            "cached": s.cached,
            "failed": s.failed,
            "skipped": s.skipped,
            "flaky": s.flaky,
            "live": s.live,
            "not_started": s.not_started,
            "duration_ms": millis(took),
        });
        self.emit("build_finished", took, fields);
    }

    /// Flushes; the first write error of the stream, if any.
    pub fn close(mut self) -> std::io::Result<()> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.out.flush()
    }
}

/// The build's outcome in one word: `ok`, `failed`, `interrupted`.
pub fn outcome(s: &Summary) -> &'static str {
    if s.interrupted {
        "interrupted"
    } else if s.failed > 0 {
        "failed"
    } else {
        "ok"
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
