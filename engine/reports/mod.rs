//! The reports of one `flow build` for programs and CI: the build's action outcomes, collected
//! once here and written in each format asked for (docs/reports.md):
//! - `--events FILE`: JSON lines as the build goes (`events.rs`, a documented, versioned schema);
//! - `--junit FILE`: JUnit XML, with the test cases of the actions' own JUnit outputs merged in
//!   under their target (`junit.rs`, `found.rs`);
//! - `--profile FILE`: a Chrome trace, one track per job slot and the critical path (`trace.rs`);
//! - `--annotations` and `--summary FILE`: GitHub workflow commands and a Markdown job summary
//!   (`github.rs`), on by themselves when `GITHUB_ACTIONS=true`.
//!
//! The reporter (`reporter.rs`) feeds [`Reports`] as it prints; the files are written once the
//! build ended, by [`Reports::write`], each through a temp file and a rename (never half a
//! report). A report that cannot be written is a warning, never a failed build.

pub mod events;
pub mod found;
pub mod gates;
pub mod github;
pub mod junit;
pub mod junit_file;
pub mod trace;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::plan::Plan;
use crate::reporter::Summary;

/// How one action ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ran,
    /// Reused: carried over, found in the cache, or restored from it (`decision` says which).
    Cached,
    Flaky {
        attempts: u32,
    },
    Failed {
        why: String,
    },
    Skipped {
        why: String,
    },
    /// A failure of a quarantined target (`[test] quarantine`): reported, not failing.
    Quarantined {
        why: String,
    },
    /// An effect that succeeded: its line's tag (`deployed`, `live`, `monitored`, ...).
    Effect {
        tag: String,
    },
}

impl Outcome {
    /// The outcome's name in the event stream and the reports.
    pub fn name(&self) -> &str {
        match self {
            Outcome::Ran => "ran",
            Outcome::Cached => "cached",
            Outcome::Flaky { .. } => "flaky",
            Outcome::Failed { .. } => "failed",
            Outcome::Skipped { .. } => "skipped",
            Outcome::Quarantined { .. } => "quarantined",
            Outcome::Effect { tag } => tag,
        }
    }

    pub fn passed(&self) -> bool {
        !matches!(self, Outcome::Failed { .. } | Outcome::Skipped { .. })
    }
}

/// One action of the build, as the reports see it.
#[derive(Clone, Debug)]
pub struct Record {
    pub label: String,
    /// The digest of its action key (hex), when it was keyed.
    pub key: Option<String>,
    /// The reuse decision: `carried`, `cached`, `restored`, `ran`, `failed`.
    pub decision: Option<String>,
    pub outcome: Outcome,
    /// When it got a job slot, since the build began; `None` when it never ran.
    pub start: Option<Duration>,
    /// How long it ran (zero when reused).
    pub took: Duration,
    /// When it ended, since the build began.
    pub end: Duration,
    /// The job slot it ran in (0-based).
    pub slot: Option<usize>,
    /// What it printed (both streams), for a failure: the reports show its tail.
    pub log: String,
}

/// Which reports to write, from the flags and the environment.
#[derive(Clone, Debug, Default)]
pub struct Wanted {
    pub events: Option<PathBuf>,
    pub junit: Option<PathBuf>,
    pub profile: Option<PathBuf>,
    /// Print GitHub annotations (workflow commands) on stdout.
    pub annotations: bool,
    /// Append the Markdown job summary to this file.
    pub summary: Option<PathBuf>,
}

impl Wanted {
    /// The flags, completed by `GITHUB_ACTIONS=true` (annotations on, the summary appended to
    /// `$GITHUB_STEP_SUMMARY`).
    pub fn with_github_env(mut self) -> Wanted {
        if github::in_github_actions() {
            self.annotations = true;
            if self.summary.is_none() {
                self.summary = std::env::var_os("GITHUB_STEP_SUMMARY")
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from);
            }
        }
        self
    }

    /// Whether any report needs the actions' outcomes collected.
    pub fn any(&self) -> bool {
        self.events.is_some()
            || self.junit.is_some()
            || self.profile.is_some()
            || self.annotations
            || self.summary.is_some()
    }
}

/// What the end-of-build reports need besides the outcomes.
pub struct Context<'a> {
    pub root: &'a Path,
    pub out_root: &'a Path,
    /// The plan that ran (`None`: nothing was planned, as in a no-op or an empty selection).
    pub plan: Option<&'a Plan>,
    /// Where each target is declared (`pkg/BUILD`, line), for annotations.
    pub locate: &'a dyn Fn(&str) -> Option<(String, u32)>,
    /// Files in the change (`--since`), ranked first among annotations.
    pub changed: &'a std::collections::BTreeSet<String>,
    /// The workspace's path in its git repository (`sub/dir/`, or empty): annotation paths are
    /// repository-relative.
    pub repo_prefix: &'a str,
    /// One line when nothing ran because nothing was selected (`--since`, `--shard`).
    pub nothing: Option<&'a str>,
}

/// The collector.
pub struct Reports {
    wanted: Wanted,
    began: Instant,
    events: Option<events::Stream>,
    records: BTreeMap<String, Record>,
    /// Keys and decisions seen before the outcome.
    pending: BTreeMap<String, (Option<String>, String)>,
    running: BTreeMap<String, (Duration, usize)>,
    busy_slots: Vec<bool>,
    warnings: Vec<String>,
}

impl Reports {
    /// Starts collecting; `events` is the `--events` file, already open (a FIFO needs a reader).
    pub fn new(wanted: Wanted, events: Option<std::fs::File>, began: Instant) -> Reports {
        Reports {
            wanted,
            began,
            events: events.map(events::Stream::new),
            records: BTreeMap::new(),
            pending: BTreeMap::new(),
            running: BTreeMap::new(),
            busy_slots: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn now(&self) -> Duration {
        self.began.elapsed()
    }

    /// The build is about to run `actions` actions.
    pub fn build_started(&mut self, actions: usize) {
        if let Some(s) = &mut self.events {
            s.build_started(actions);
        }
    }

    /// The reuse decision for `label`, with its key when keyed.
    pub fn decided(&mut self, label: &str, decision: &str, key: Option<String>) {
        let at = self.now();
        if let Some(s) = &mut self.events {
            s.decision(label, decision, key.as_deref(), at);
        }
        self.pending
            .insert(label.to_owned(), (key, decision.to_owned()));
    }

    /// `label` got a job slot and runs.
    pub fn started(&mut self, label: &str) {
        let at = self.now();
        let slot = match self.busy_slots.iter().position(|b| !b) {
            Some(s) => s,
            None => {
                self.busy_slots.push(false);
                self.busy_slots.len() - 1
            }
        };
        self.busy_slots[slot] = true;
        self.running.insert(label.to_owned(), (at, slot));
        let key = self.pending.get(label).and_then(|(k, _)| k.clone());
        if let Some(s) = &mut self.events {
            s.started(label, key.as_deref(), slot, at);
        }
    }

    /// `label` ended with `outcome`, after running `took` (zero: the time since it got its
    /// slot, or none when it never ran); `log` is what it printed, for a failure.
    pub fn finished(&mut self, label: &str, outcome: Outcome, took: Duration, log: &[u8]) {
        let at = self.now();
        let (start, slot) = match self.running.remove(label) {
            Some((start, slot)) => {
                self.busy_slots[slot] = false;
                (Some(start), Some(slot))
            }
            None => (None, None),
        };
        let took = match start {
            Some(s) if took.is_zero() && outcome != Outcome::Cached => at.saturating_sub(s),
            _ => took,
        };
        let (key, decision) = match self.pending.remove(label) {
            Some((key, decision)) => (key, Some(decision)),
            None => (None, None),
        };
        let record = Record {
            label: label.to_owned(),
            key,
            decision,
            outcome,
            start,
            took,
            end: at,
            slot,
            log: if log.is_empty() {
                String::new()
            } else {
                String::from_utf8_lossy(log).into_owned()
            },
        };
        if let Some(s) = &mut self.events {
            s.finished(&record, at);
        }
        self.records.insert(label.to_owned(), record);
    }

    pub fn warning(&mut self, text: &str) {
        let at = self.now();
        if let Some(s) = &mut self.events {
            s.warning(text, at);
        }
        self.warnings.push(text.to_owned());
    }

    /// The build ended: the last event, then every report file. Returns what could not be
    /// written, one warning each.
    pub fn write(mut self, summary: &Summary, ctx: &Context) -> Vec<String> {
        let took = self.now();
        let mut problems = Vec::new();
        let records: Vec<&Record> = self.records.values().collect();
        let tables = gates::tables(&records, ctx);
        if let Some(mut s) = self.events.take() {
            for t in &tables {
                s.gate(t, took);
            }
            s.build_finished(summary, took);
            if let Err(e) = s.close() {
                let path = self.wanted.events.as_deref().unwrap_or(Path::new("-"));
                problems.push(format!(
                    "could not write the event stream `{}`: {e}",
                    path.display()
                ));
            }
        }
        let mut found = found::Found::collect(&records, ctx);
        problems.append(&mut found.problems);
        let failed = |what: &str, path: &Path, e: std::io::Error| {
            format!("could not write the {what} `{}`: {e}", path.display())
        };
        if let Some(path) = &self.wanted.junit {
            let report = junit::JunitReport::new(&records, &found, &tables);
            if let Err(e) = write_atomically(path, &report.xml(took)) {
                problems.push(failed("JUnit report", path, e));
            }
        }
        if let Some(path) = &self.wanted.profile {
            let trace = trace::trace(&records, ctx.plan, self.began);
            if let Err(e) = write_atomically(path, &trace) {
                problems.push(failed("profile", path, e));
            }
        }
        let shown = github::Annotations::rank(&records, &found, ctx);
        if self.wanted.annotations {
            // Workflow commands were stopped since flow started (`main.rs`).
            github::resume_commands();
            shown.print();
        }
        if let Some(path) = &self.wanted.summary {
            let text = github::summary(&records, summary, took, &shown, ctx, &tables);
            if let Err(e) = append(path, &text) {
                problems.push(failed("job summary", path, e));
            }
        }
        problems
    }
}

/// Writes `bytes` to `path` through a temp file beside it and a rename, creating the directory;
/// the file is readable by all (0644), as the other reports are.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    // The rename would replace whatever is there: a device (`/dev/full`), a FIFO, a symbolic
    // link (`/dev/stdout`). Only a regular file, or nothing, is replaced (adversarial run: a
    // report written to a device node as root deleted the device).
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.is_file() {
            return Err(std::io::Error::other(format!(
                "it is {}, not a regular file; flow writes a report only to a regular file (or \
                 a new path), which it replaces whole",
                flow_cache::regular::kind_of(&meta)
            )));
        }
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Appends `text` to `path` (GitHub's step summary file is shared by the job's steps).
fn append(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// The last `n` lines of `log`, and how many came before them.
pub fn tail(log: &str, n: usize) -> (usize, Vec<&str>) {
    let lines: Vec<&str> = log.lines().collect();
    let start = lines.len().saturating_sub(n);
    (start, lines[start..].to_vec())
}
