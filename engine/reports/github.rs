//! GitHub Actions' own interface: annotations (workflow commands on stdout,
//! `::error file=F,line=L,title=T::MESSAGE`) and the job summary (Markdown appended to
//! `$GITHUB_STEP_SUMMARY`). Both are on by themselves when `GITHUB_ACTIONS=true`, and
//! available everywhere by flag (`--annotations`, `--summary FILE`).
//!
//! While flow runs, workflow commands are stopped (`::stop-commands::TOKEN`, TOKEN random,
//! [`CommandsStopped`]): a line a BUILD file or an action prints (`::error::`, `::add-mask::`,
//! `::stop-commands::`) is text, never a command; `::TOKEN::` resumes them just before flow
//! prints its own annotations, or when flow ends.
//!
//! Annotations: one error per failed target at its BUILD file's line, one per failure found at
//! a source line (a JUnit test case, a SARIF result, a `file:line:` line of its log), and a
//! warning per flaky target. GitHub shows at most [`MAX_PER_LEVEL`] errors and as many warnings
//! per step, so they are ranked (files in the change first, then source lines before BUILD
//! lines, then by file and line) and the ones left out are counted in the summary.

use std::time::Duration;

use super::found::{Found, Level};
use super::{Context, Outcome, Record};
use crate::reporter::Summary;

/// Annotations of one level GitHub shows per step.
pub const MAX_PER_LEVEL: usize = 10;

/// Log lines in an annotation's message, and in the summary's collapsed block.
const ANNOTATION_LOG_LINES: usize = 10;
const SUMMARY_LOG_LINES: usize = 40;

/// Actions listed under "Slowest actions".
const SLOWEST: usize = 10;

/// The job summary stays well within GitHub's 1 MiB per step: at most this many failed targets
/// with their logs, this many more named, log lines of at most this many characters.
const MAX_FAILED_SHOWN: usize = 25;
const MAX_FAILED_NAMED: usize = 200;
const MAX_LINE: usize = 400;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Annotation {
    pub level: Level,
    /// Repository-relative (GitHub resolves annotation paths from the repository's root).
    pub file: String,
    pub line: u32,
    pub col: Option<u32>,
    pub title: String,
    pub message: String,
    /// At a source line (`false`: at the BUILD line of a target).
    source: bool,
    in_change: bool,
}

/// The annotations shown, and how many of each level were left out.
pub struct Annotations {
    pub shown: Vec<Annotation>,
    pub left_out_errors: usize,
    pub left_out_warnings: usize,
}

impl Annotations {
    pub fn rank(records: &[&Record], found: &Found, ctx: &Context) -> Annotations {
        let changed = |f: &str| ctx.changed.contains(f);
        let mut all: Vec<Annotation> = Vec::new();
        for r in records {
            let (level, title, message) = match &r.outcome {
                Outcome::Failed { why } => {
                    let (_, tail) = super::tail(&r.log, ANNOTATION_LOG_LINES);
                    let mut message = cut(why);
                    for l in tail {
                        message.push('\n');
                        message.push_str(&cut(l));
                    }
                    (Level::Error, format!("{} failed", r.label), message)
                }
                Outcome::Flaky { attempts } => (
                    Level::Warning,
                    format!("{} is flaky", r.label),
                    format!("it failed, then passed on attempt {attempts}"),
                ),
                _ => continue,
            };
            let (file, line) = (ctx.locate)(&r.label).unwrap_or_else(|| {
                let package = r.label.trim_start_matches("//").split(':').next();
                (crate::expand::join_path(package.unwrap_or(""), "BUILD"), 1)
            });
            all.push(Annotation {
                level,
                in_change: changed(&file),
                file,
                line,
                col: None,
                title,
                message,
                source: false,
            });
        }
        for d in &found.diagnostics {
            all.push(Annotation {
                level: d.level,
                in_change: changed(&d.file),
                file: d.file.clone(),
                line: d.line,
                col: d.col,
                title: d.title.clone(),
                message: d.message.clone(),
                source: true,
            });
        }
        for a in &mut all {
            a.file = format!("{}{}", ctx.repo_prefix, a.file);
        }
        all.sort_by(|a, b| {
            (a.level, !a.in_change, !a.source, &a.file, a.line, &a.title).cmp(&(
                b.level,
                !b.in_change,
                !b.source,
                &b.file,
                b.line,
                &b.title,
            ))
        });
        all.dedup_by(|a, b| a.file == b.file && a.line == b.line && a.title == b.title);
        let mut shown = Vec::new();
        let (mut left_out_errors, mut left_out_warnings) = (0, 0);
        let (mut errors, mut warnings) = (0, 0);
        for a in all {
            let (count, left_out) = match a.level {
                Level::Error => (&mut errors, &mut left_out_errors),
                Level::Warning => (&mut warnings, &mut left_out_warnings),
            };
            if *count < MAX_PER_LEVEL {
                *count += 1;
                shown.push(a);
            } else {
                *left_out += 1;
            }
        }
        Annotations {
            shown,
            left_out_errors,
            left_out_warnings,
        }
    }

    /// The workflow commands, one a line.
    pub fn commands(&self) -> String {
        let mut out = String::new();
        for a in &self.shown {
            let level = match a.level {
                Level::Error => "error",
                Level::Warning => "warning",
            };
            let mut props = vec![
                format!("file={}", property(&a.file)),
                format!("line={}", a.line),
            ];
            if let Some(c) = a.col {
                props.push(format!("col={c}"));
            }
            props.push(format!("title={}", property(&a.title)));
            out.push_str(&format!(
                "::{level} {}::{}\n",
                props.join(","),
                data(&a.message)
            ));
        }
        out
    }

    pub fn print(&self) {
        print_command(&self.commands());
    }
}

/// Writes `text` (workflow commands) to stdout at once.
pub fn print_command(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    if !text.ends_with('\n') {
        let _ = out.write_all(b"\n");
    }
    let _ = out.flush();
}

/// A token no action can guess, for `::stop-commands::TOKEN` (GitHub's way to print text that
/// holds `::` lines without running them): 128 bits of the clock, the pid and a hasher's
/// random keys.
fn stop_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = blake3::Hasher::new();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.update(&nanos.to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    let mut random = std::collections::hash_map::RandomState::new().build_hasher();
    random.write_u128(nanos);
    h.update(&random.finish().to_le_bytes());
    format!("flow-{}", &h.finalize().to_hex()[..32])
}

/// The token of the `::stop-commands::` in force, if any (one per process).
static STOPPED: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Whether flow runs in GitHub Actions (`GITHUB_ACTIONS=true`): its reports and the stop of
/// workflow commands are then on by themselves.
pub fn in_github_actions() -> bool {
    std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true")
}

/// While alive, GitHub's workflow commands are stopped (`::stop-commands::TOKEN`, TOKEN random):
/// whatever flow, a BUILD file's `print()` or an action prints is text, never a command. Made
/// before anything is printed (`main.rs`); [`resume_commands`] ends it, at the latest on drop.
pub struct CommandsStopped(());

impl CommandsStopped {
    pub fn start() -> CommandsStopped {
        let token = stop_token();
        print_command(&format!("::stop-commands::{token}"));
        *STOPPED.lock().unwrap_or_else(|e| e.into_inner()) = Some(token);
        CommandsStopped(())
    }
}

impl Drop for CommandsStopped {
    fn drop(&mut self) {
        resume_commands();
    }
}

/// Ends the stop of workflow commands, if one is in force (before flow prints its own).
pub fn resume_commands() {
    let token = STOPPED.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(token) = token {
        print_command(&format!("::{token}::"));
    }
}

/// A workflow command's message, escaped (GitHub's `escapeData`).
fn data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// A workflow command's property value, escaped (GitHub's `escapeProperty`).
fn property(s: &str) -> String {
    data(s).replace(':', "%3A").replace(',', "%2C")
}

/// The job summary, in Markdown.
pub fn summary(
    records: &[&Record],
    s: &Summary,
    took: Duration,
    annotations: &Annotations,
    ctx: &Context,
    gates: &[super::gates::Table],
) -> String {
    let mut md = String::new();
    let head = match super::events::outcome(s) {
        "ok" => "ok",
        "failed" => "FAILED",
        _ => "interrupted",
    };
    md.push_str(&format!("### flow build: {head}\n\n"));
    if let Some(why) = ctx.nothing {
        md.push_str(&format!("Nothing to do: {}.\n\n", escape(why)));
        return md;
    }
    md.push_str("| Outcome | Actions |\n|---|---:|\n");
    for (name, n) in [
        ("ran", s.ran),
        ("cached", s.cached),
        ("failed", s.failed),
        ("skipped", s.skipped),
        ("flaky", s.flaky),
        ("live", s.live),
        ("not started", s.not_started),
    ] {
        if n > 0 || matches!(name, "ran" | "cached" | "failed") {
            md.push_str(&format!("| {name} | {n} |\n"));
        }
    }
    let decided = s.ran + s.cached + s.failed + s.flaky;
    md.push_str(&format!(
        "\n{} actions in {:.2}s; cache hit rate {} ({} of {} actions reused).\n",
        records.len(),
        took.as_secs_f64(),
        match (s.cached * 100).checked_div(decided) {
            Some(rate) => format!("{rate}%"),
            None => "-".to_owned(),
        },
        s.cached,
        decided
    ));
    let failed: Vec<&&Record> = records
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Failed { .. }))
        .collect();
    failed_section(&mut md, &failed);
    md.push_str(&super::gates::markdown(gates, escape));
    let mut slow: Vec<&&Record> = records.iter().filter(|r| !r.took.is_zero()).collect();
    slow.sort_by(|a, b| b.took.cmp(&a.took).then(a.label.cmp(&b.label)));
    if !slow.is_empty() {
        md.push_str("\n#### Slowest actions\n\n| Action | Time | Outcome |\n|---|---:|---|\n");
        for r in slow.iter().take(SLOWEST) {
            md.push_str(&format!(
                "| `{}` | {:.2}s | {} |\n",
                escape(&r.label),
                r.took.as_secs_f64(),
                r.outcome.name()
            ));
        }
    }
    let left_out = annotations.left_out_errors + annotations.left_out_warnings;
    if left_out > 0 {
        md.push_str(&format!(
            "\n{} annotation(s) shown; {} more not shown ({} error(s), {} warning(s): GitHub \
             shows {MAX_PER_LEVEL} errors and {MAX_PER_LEVEL} warnings per step).\n",
            annotations.shown.len(),
            left_out,
            annotations.left_out_errors,
            annotations.left_out_warnings
        ));
    }
    md.push('\n');
    md
}

/// The failed targets, each with the tail of its log in a collapsed block: the first
/// [`MAX_FAILED_SHOWN`] of them, the others named; log lines cut at [`MAX_LINE`] characters.
fn failed_section(md: &mut String, failed: &[&&Record]) {
    if failed.is_empty() {
        return;
    }
    md.push_str("\n#### Failed\n\n");
    for r in failed.iter().take(MAX_FAILED_SHOWN) {
        let Outcome::Failed { why } = &r.outcome else {
            continue;
        };
        let (before, tail) = super::tail(&r.log, SUMMARY_LOG_LINES);
        md.push_str(&format!(
            "<details><summary><code>{}</code>: {}</summary>\n\n",
            html(&r.label),
            html(&cut(why))
        ));
        if tail.is_empty() {
            md.push_str("(it printed nothing)\n\n");
        } else {
            if before > 0 {
                md.push_str(&format!(
                    "{before} earlier line(s); `flow log {}` shows all.\n\n",
                    r.label
                ));
            }
            let lines: Vec<String> = tail.iter().map(|l| cut(l)).collect();
            let text = lines.join("\n");
            let fence = "`".repeat(longest_backtick_run(&text).max(2) + 1);
            md.push_str(&format!("{fence}text\n{text}\n{fence}\n\n"));
        }
        md.push_str("</details>\n\n");
    }
    if failed.len() > MAX_FAILED_SHOWN {
        let named: Vec<String> = failed[MAX_FAILED_SHOWN..]
            .iter()
            .take(MAX_FAILED_NAMED)
            .map(|r| format!("`{}`", escape(&r.label)))
            .collect();
        let unnamed = failed.len() - MAX_FAILED_SHOWN - named.len();
        md.push_str(&format!(
            "{} more failed: {}{}.\n\n",
            failed.len() - MAX_FAILED_SHOWN,
            named.join(", "),
            if unnamed > 0 {
                format!(" and {unnamed} others")
            } else {
                String::new()
            }
        ));
    }
}

/// `line` cut at [`MAX_LINE`] characters.
fn cut(line: &str) -> String {
    match line.char_indices().nth(MAX_LINE) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_owned(),
    }
}

/// Text safe in a Markdown table cell or line.
fn escape(s: &str) -> String {
    crate::report::markdown::cell(s)
}

/// Text safe inside HTML.
fn html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\n', " ")
}

fn longest_backtick_run(s: &str) -> usize {
    let (mut best, mut run) = (0, 0);
    for c in s.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        best = best.max(run);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_and_data_are_escaped_as_github_does() {
        assert_eq!(property("a:b,c%\nd"), "a%3Ab%2Cc%25%0Ad");
        assert_eq!(data("50%: a,b\r\nc"), "50%25: a,b%0D%0Ac");
    }

    #[test]
    fn a_fence_is_longer_than_any_backtick_run_in_the_log() {
        assert_eq!(longest_backtick_run("a ```` b `` c"), 4);
    }
}
