//! Reading what `flow build` (and a `flow watch` cycle) prints: status lines
//! `[TAG] //pkg:name (0.12s)` and the summary line. Status lines carry timings, so tests compare
//! labels per tag and the summary without its time.

use std::collections::{BTreeMap, BTreeSet};

use super::Run;

/// `(tag, label)` of one status line `[TAG] LABEL ...`; `None` for any other line (log tails are
/// indented, the summary starts with `flow:`).
pub fn status_line(line: &str) -> Option<(&str, &str)> {
    let (tag, rest) = line.strip_prefix('[')?.split_once("] ")?;
    Some((tag, rest.split(' ').next().unwrap_or_default()))
}

/// Tag (`RAN`, `CACHED`, ...) → the labels printed with it, sorted. Panics if a label is
/// reported twice.
pub fn tags(stdout: &str) -> BTreeMap<String, Vec<String>> {
    let mut tags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for (tag, label) in stdout.lines().filter_map(status_line) {
        assert!(seen.insert(label), "`{label}` reported twice:\n{stdout}");
        tags.entry(tag.to_owned())
            .or_default()
            .push(label.to_owned());
    }
    for labels in tags.values_mut() {
        labels.sort();
    }
    tags
}

/// Label → the tag it was printed with (the last one, if several).
pub fn label_tags(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(status_line)
        .map(|(tag, label)| (label.to_owned(), tag.to_owned()))
        .collect()
}

/// The labels printed with `[TAG]` in `lines`, sorted.
pub fn tagged<S: AsRef<str>>(lines: impl IntoIterator<Item = S>, tag: &str) -> Vec<String> {
    let mut out: Vec<String> = lines
        .into_iter()
        .filter_map(|line| {
            let (t, label) = status_line(line.as_ref())?;
            (t == tag).then(|| label.to_owned())
        })
        .collect();
    out.sort();
    out
}

/// The summary line (`flow: ok: 3 ran, 0 cached, 0 failed, 0 skipped, 0 flaky in 0.01s
/// (3 actions)`) split around its time: what comes before ` in `, and what comes after the time.
#[track_caller]
fn summary_parts(run: &Run) -> (&str, &str) {
    let line = run
        .stdout
        .lines()
        .rfind(|l| l.starts_with("flow: "))
        .unwrap_or_else(|| panic!("no summary line:\n{}", run.stdout));
    let (head, tail) = line.rsplit_once(" in ").expect("` in TIME` in the summary");
    let (time, rest) = tail.split_once(' ').expect("`(N actions)` after the time");
    assert!(
        time.ends_with('s') && time[..time.len() - 1].parse::<f64>().is_ok(),
        "bad time in `{line}`"
    );
    (head, rest)
}

/// The summary line without its time: `flow: ok: 3 ran, 0 cached, 0 failed, 0 skipped, 0 flaky
/// (3 actions)`.
#[track_caller]
pub fn summary(run: &Run) -> String {
    let (head, rest) = summary_parts(run);
    format!("{head} {rest}")
}

/// The counts of the summary line alone: `flow: ok: 3 ran, 0 cached, 0 failed, 0 skipped, 0
/// flaky`.
#[track_caller]
pub fn summary_counts(run: &Run) -> String {
    summary_parts(run).0.to_owned()
}

impl Run {
    /// The labels this run printed with `[TAG]` on stdout, sorted.
    pub fn tagged(&self, tag: &str) -> Vec<String> {
        tagged(self.stdout.lines(), tag)
    }
}
