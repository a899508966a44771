//! `Reporter`: everything a build prints. Only the runner's owner loop calls it.
//!
//! Not on a terminal (or with `CI` set): stable lines a script or a test can follow, one per
//! action, `[RAN] //a:x (1.20s)`, `[CACHED] //a:y`, `[FAILED] //a:z (exit 1, 0.30s)` followed by
//! the tail of its log, `[FLAKY] //a:t (passed on attempt 2, 0.50s)`, `[SKIPPED] //a:w
//! (dependency failed)`, then a summary line. On a terminal: the same lines except `[CACHED]`,
//! above the progress rows (`board.rs`: done/total, a row per running action with its time
//! and last line, the waiting ones counted).

mod board;

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::ProgressBar;

use crate::executor::LiveTail;
use crate::reports::{Outcome, Reports};
use board::Board;

/// Lines of a failed action's log shown under `[FAILED]`.
pub const LOG_TAIL_LINES: usize = 20;

/// Counts for the summary line and the exit code.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub ran: usize,
    pub cached: usize,
    pub failed: usize,
    pub skipped: usize,
    pub flaky: usize,
    /// Deploys whose artifact was live already: nothing ran.
    pub live: usize,
    pub not_started: usize,
    /// Failures of quarantined targets (`[test] quarantine`): reported, recorded, not failing.
    pub quarantined: usize,
    pub interrupted: bool,
    /// A watch cycle cut short because files changed under it.
    pub superseded: bool,
}

pub struct Reporter {
    /// Printed before the first line, if any (a watch cycle's "what changed").
    header: Option<String>,
    /// Lines printed so far.
    printed: std::cell::Cell<usize>,
    header_shown: std::cell::Cell<bool>,
    /// Print no summary when nothing was printed (a watch cycle that had nothing to do).
    quiet_when_idle: bool,
    /// `-q`: only failures, warnings and the summary line.
    quiet: bool,
    bar: Option<ProgressBar>,
    stdout_is_terminal: bool,
    /// What the progress rows show (drawn by the bar's ticker).
    board: Arc<Mutex<Board>>,
    total: usize,
    done: usize,
    cached: usize,
    /// Lines not yet written to stdout (without a progress bar): written by `flush`, which the
    /// runner calls before it waits, so that a line is never held while nothing happens.
    pending: std::cell::RefCell<Vec<u8>>,
    /// `flow build`'s reports (`--events`, `--junit`, `--profile`, GitHub's): fed here, written
    /// by the build once it ended (`reports/`).
    reports: std::cell::RefCell<Option<Reports>>,
}

impl Reporter {
    /// `total` is the number of actions (groups excluded).
    pub fn new(total: usize) -> Reporter {
        let interactive = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
        let board = Arc::new(Mutex::new(Board::default()));
        let bar = interactive.then(|| board::progress_bar(total, board.clone()));
        Reporter {
            header: None,
            printed: std::cell::Cell::new(0),
            header_shown: std::cell::Cell::new(false),
            quiet_when_idle: false,
            quiet: false,
            bar,
            stdout_is_terminal: std::io::stdout().is_terminal(),
            board,
            total,
            done: 0,
            cached: 0,
            pending: std::cell::RefCell::new(Vec::new()),
            reports: std::cell::RefCell::new(None),
        }
    }

    /// Feeds `reports` as well (`flow build`'s `--events`, `--junit`, ...).
    pub fn with_reports(self, mut reports: Reports) -> Reporter {
        reports.build_started(self.total);
        *self.reports.borrow_mut() = Some(reports);
        self
    }

    /// `-q`: prints only failures, warnings and the summary line.
    pub fn quiet(mut self, quiet: bool) -> Reporter {
        self.quiet = quiet;
        self
    }

    /// A line about an action that went as hoped (`[RAN]`, `[CACHED]`, ...): not with `-q`.
    fn status(&self, text: &str) {
        if !self.quiet {
            self.line(text);
        }
    }

    /// The reports fed so far, to be written once the build ended.
    pub fn take_reports(&mut self) -> Option<Reports> {
        self.reports.get_mut().take()
    }

    /// The reuse decision for `label` (`carried`, `cached`, `restored`, `ran`, `failed`), with
    /// the digest of its key when it was keyed: an event of the stream (`reports/events.rs`).
    pub fn decided(&mut self, label: &str, decision: &str, key: Option<&flow_cache::Digest>) {
        if let Some(r) = self.reports.get_mut() {
            r.decided(label, decision, key.map(|k| k.to_string()));
        }
    }

    fn report(&mut self, label: &str, outcome: Outcome, took: Duration, log: &[u8]) {
        if let Some(r) = self.reports.get_mut() {
            r.finished(label, outcome, took, log);
        }
    }

    /// A reporter for one watch cycle: `header` is printed before the first line; with
    /// `quiet_when_idle`, a cycle that printed nothing prints no summary either (the screen's
    /// last summary is still true). Without it, the summary is printed in any case: the first
    /// cycle (`all up to date` is news), and the one after a failure (a revert to content that
    /// passed is reused silently, and the `FAILED` line on screen would lie).
    pub fn for_watch_cycle(total: usize, header: String, quiet_when_idle: bool) -> Reporter {
        let mut r = Reporter::new(total);
        r.header = Some(header);
        r.quiet_when_idle = quiet_when_idle;
        r
    }

    fn line(&self, text: &str) {
        self.show_header();
        self.printed.set(self.printed.get() + 1);
        self.raw_line(text);
    }

    /// Prints the header (a watch cycle's "what changed") unless it was printed already: before
    /// the first line, or when the first action starts (a long cycle says at once why it runs).
    fn show_header(&self) {
        if let Some(h) = self.header.as_ref().filter(|_| !self.header_shown.get()) {
            self.header_shown.set(true);
            self.raw_line(h);
        }
    }

    fn raw_line(&self, text: &str) {
        match &self.bar {
            // Above the progress rows, when stdout is that terminal too; otherwise stdout is a
            // file or a pipe (`flow build | tee log`), where the lines belong.
            Some(bar) if self.stdout_is_terminal => bar.println(text),
            _ => {
                let mut pending = self.pending.borrow_mut();
                pending.extend_from_slice(text.as_bytes());
                pending.push(b'\n');
            }
        }
    }

    /// Writes the pending lines to stdout.
    pub fn flush(&self) {
        let mut pending = self.pending.borrow_mut();
        if !pending.is_empty() {
            write_stdout(&pending);
            pending.clear();
        }
    }

    fn board(&self) -> std::sync::MutexGuard<'_, Board> {
        // The ticker only reads it: a poisoned lock still holds a consistent board.
        self.board.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn refresh(&self) {
        if let Some(bar) = &self.bar {
            self.board().cached = self.cached;
            bar.set_position(self.done as u64);
        }
    }

    /// Whether the status lines go to a terminal with progress rows, where `[CACHED]` lines
    /// are left out (the rows count them).
    fn lines_on_terminal(&self) -> bool {
        self.bar.is_some() && self.stdout_is_terminal
    }

    /// A live tail for an action about to run, when there are progress rows to show it in.
    pub fn live_tail(&self) -> Option<LiveTail> {
        self.bar.is_some().then(LiveTail::default)
    }

    /// `label` is staged and waits for a job slot: counted, not listed.
    pub fn waiting(&mut self, label: &str) {
        self.board().waiting(label);
    }

    /// `label`'s command started; `tail` is the live tail its command feeds.
    pub fn started(&mut self, label: &str, tail: Option<LiveTail>) {
        if let Some(r) = self.reports.get_mut() {
            r.started(label);
        }
        self.board().running(label, tail);
        self.refresh();
        self.show_header();
    }

    /// `label` is no longer waiting or running, without an outcome to print (cancelled, or
    /// never started); the outcomes below do this too.
    pub fn settled(&mut self, label: &str) {
        self.board().settled(label);
    }

    fn finished(&mut self, label: &str) {
        self.settled(label);
        self.done += 1;
        self.refresh();
    }

    pub fn ran(&mut self, label: &str, took: Duration) {
        self.finished(label);
        self.report(label, Outcome::Ran, took, b"");
        self.status(&format!("[RAN] {label} ({})", secs(took)));
    }

    pub fn cached(&mut self, label: &str) {
        self.finished(label);
        self.report(label, Outcome::Cached, Duration::ZERO, b"");
        self.cached += 1;
        if !self.lines_on_terminal() {
            self.status(&format!("[CACHED] {label}"));
        }
    }

    /// `cached` for each of `labels`, written at once (a no-op build's report).
    pub fn replay_cached(&mut self, labels: &[String]) {
        self.done += labels.len();
        self.cached += labels.len();
        for l in labels {
            self.report(l, Outcome::Cached, Duration::ZERO, b"");
        }
        if self.lines_on_terminal() || labels.is_empty() {
            return;
        }
        for l in labels {
            self.status(&format!("[CACHED] {l}"));
        }
    }

    /// A cached action that was already up to date, reported silently (watch cycles).
    pub fn up_to_date(&mut self, label: &str) {
        self.finished(label);
        self.report(label, Outcome::Cached, Duration::ZERO, b"");
        self.cached += 1;
    }

    pub fn flaky(&mut self, label: &str, attempts: u32, took: Duration) {
        self.finished(label);
        self.report(label, Outcome::Flaky { attempts }, took, b"");
        self.status(&format!(
            "[FLAKY] {label} (passed on attempt {attempts}, {})",
            secs(took)
        ));
    }

    /// A failed action: `why` is the short reason, `log` what it printed (both streams).
    pub fn failed(&mut self, label: &str, why: &str, log: &[u8]) {
        self.finished(label);
        let outcome = Outcome::Failed {
            why: why.to_owned(),
        };
        self.report(label, outcome, Duration::ZERO, log);
        let mut text = format!("[FAILED] {label} ({why})");
        let log = String::from_utf8_lossy(log);
        let lines: Vec<&str> = log.lines().collect();
        if !lines.is_empty() {
            let start = lines.len().saturating_sub(LOG_TAIL_LINES);
            if start > 0 {
                text.push_str(&format!(
                    "\n    ... {start} earlier line(s); `flow log {label}` shows all"
                ));
            }
            for l in &lines[start..] {
                text.push_str("\n    ");
                text.push_str(l);
            }
        }
        self.line(&text);
    }

    /// A failure of a quarantined target: `[QUARANTINED]` and its log's tail, a warning.
    pub fn quarantined(&mut self, label: &str, why: &str, log: &[u8]) {
        self.finished(label);
        let outcome = Outcome::Quarantined {
            why: why.to_owned(),
        };
        self.report(label, outcome, Duration::ZERO, log);
        let mut text = format!("[QUARANTINED] {label} (failed, not failing the build: {why})");
        let log = String::from_utf8_lossy(log);
        let lines: Vec<&str> = log.lines().collect();
        for l in &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..] {
            text.push_str("\n    ");
            text.push_str(l);
        }
        self.line(&text);
    }

    /// An effect that succeeded, with its own line (`[DEPLOYED] ...`, `[LIVE] ...`).
    pub fn effect(&mut self, label: &str, line: &str) {
        self.finished(label);
        // `[DEPLOYED] //a:b ...` → `deployed`.
        let tag = line
            .strip_prefix('[')
            .and_then(|l| l.split(']').next())
            .unwrap_or("done")
            .to_lowercase();
        self.report(label, Outcome::Effect { tag }, Duration::ZERO, b"");
        self.status(line);
    }

    pub fn skipped(&mut self, label: &str, reason: &str) {
        self.finished(label);
        let outcome = Outcome::Skipped {
            why: reason.to_owned(),
        };
        self.report(label, outcome, Duration::ZERO, b"");
        self.status(&format!("[SKIPPED] {label} ({reason})"));
    }

    /// A warning that does not fail the action (stray writes, a corrupt cache entry).
    pub fn warn(&self, text: &str) {
        if let Some(r) = self.reports.borrow_mut().as_mut() {
            r.warning(text);
        }
        self.line(&format!("warning: {text}"));
    }

    pub fn summary(&mut self, s: &Summary, took: Duration) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if self.quiet_when_idle
            && self.printed.get() == 0
            && !self.header_shown.get()
            && !s.interrupted
            && !s.superseded
        {
            return;
        }
        let mut parts = vec![
            format!("{} ran", s.ran),
            format!("{} cached", s.cached),
            format!("{} failed", s.failed),
            format!("{} skipped", s.skipped),
            format!("{} flaky", s.flaky),
        ];
        if s.live > 0 {
            parts.push(format!("{} live", s.live));
        }
        if s.not_started > 0 {
            parts.push(format!("{} not started", s.not_started));
        }
        if s.quarantined > 0 {
            parts.push(format!("{} quarantined", s.quarantined));
        }
        let head = if s.interrupted {
            "flow: interrupted"
        } else if s.superseded {
            "flow: superseded by new changes"
        } else if s.failed > 0 {
            "flow: FAILED"
        } else {
            "flow: ok"
        };
        self.line(&format!(
            "{head}: {} in {} ({} actions)",
            parts.join(", "),
            secs(took),
            self.total
        ));
        self.flush();
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Set once a write to stdout failed because its reader went away (`flow watch | head`).
static STDOUT_GONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether stdout's reader went away: a command that would print on forever (`flow watch`)
/// then ends (exit 141, as a process killed by SIGPIPE), at a point where that is safe.
pub fn stdout_gone() -> bool {
    STDOUT_GONE.load(std::sync::atomic::Ordering::Relaxed)
}

/// Writes `bytes` to stdout; a broken pipe is remembered (`stdout_gone`), never a panic.
pub fn write_stdout(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|_| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            STDOUT_GONE.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// `write_stdout` of `text` and a newline.
pub fn print_line(text: &str) {
    write_stdout(format!("{text}\n").as_bytes());
}

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}
