//! The progress rows on a terminal, the way Bazel and cargo draw them:
//!
//! ```text
//! ⠋ [12/37] 2 running, 3 waiting, 9 cached
//!   //ml:test_py3_12   14s  tests/test_train.py::test_fit PASSED
//!   //api:lint          1s
//! ```
//!
//! - a row per running action (the oldest first, at most [`MAX_ROWS`]), with its time so far,
//!   redrawn by indicatif's ticker (10 times a second), and the last line it printed;
//! - the actions staged but waiting for a job slot are counted, not listed;
//! - the rows never leave anything behind when they are cleared, not even after a Ctrl-C:
//!   see [`RowTerm`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle, TermLike};

use crate::executor::LiveTail;

/// Running actions shown a row each; the others are counted on one more row.
pub const MAX_ROWS: usize = 8;

/// What the rows show: shared by the reporter (which updates it) and the ticker (which draws).
#[derive(Default)]
pub struct Board {
    running: BTreeMap<String, Running>,
    waiting: BTreeSet<String>,
    pub cached: usize,
}

struct Running {
    since: Instant,
    tail: Option<LiveTail>,
}

impl Board {
    /// Staged, waiting for a job slot.
    pub fn waiting(&mut self, label: &str) {
        self.waiting.insert(label.to_owned());
    }

    /// Its command started.
    pub fn running(&mut self, label: &str, tail: Option<LiveTail>) {
        self.waiting.remove(label);
        let since = Instant::now();
        self.running
            .insert(label.to_owned(), Running { since, tail });
    }

    /// It ended, whichever way (or never started).
    pub fn settled(&mut self, label: &str) {
        self.waiting.remove(label);
        self.running.remove(label);
    }

    /// The text after `[done/total] `: a head line (at most `head_width` columns), then a row
    /// per running action (at most `rows` of them, each at most `width` columns wide).
    pub fn render(&self, head_width: usize, width: usize, rows: usize, now: Instant) -> String {
        let mut head = format!("{} running", self.running.len());
        if !self.waiting.is_empty() {
            let _ = write!(head, ", {} waiting", self.waiting.len());
        }
        if self.cached > 0 {
            let _ = write!(head, ", {} cached", self.cached);
        }
        let head = console::truncate_str(&head, head_width, "…").into_owned();
        let max_rows = rows;
        let mut rows: Vec<(&String, &Running)> = self.running.iter().collect();
        rows.sort_by_key(|(label, r)| (r.since, *label));
        // Room for the `… and N more` row when some are left out.
        let room = match rows.len() > max_rows {
            true => max_rows.saturating_sub(1),
            false => max_rows,
        };
        let shown = &rows[..rows.len().min(room)];
        let label_width = shown.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        let mut text = head;
        for (label, r) in shown {
            let took = elapsed(now.saturating_duration_since(r.since));
            let mut row = format!("  {label:<label_width$} {took:>6}");
            if let Some(line) = r.tail.as_ref().and_then(LiveTail::last_line) {
                row.push_str("  ");
                row.push_str(&line);
            }
            text.push('\n');
            text.push_str(&console::truncate_str(&row, width, "…"));
        }
        if rows.len() > shown.len() {
            let _ = write!(text, "\n  … and {} more running", rows.len() - shown.len());
        }
        text
    }
}

/// `14s`, `2m05s`, `1h02m`: the time an action has run so far.
fn elapsed(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The progress bar drawing `board` on standard error, its rows redrawn every 100 ms.
pub fn progress_bar(total: usize, board: Arc<Mutex<Board>>) -> ProgressBar {
    let term = RowTerm(console::Term::stderr());
    let bar = ProgressBar::with_draw_target(
        Some(total as u64),
        ProgressDrawTarget::term_like(Box::new(term)),
    );
    let style = ProgressStyle::with_template("{spinner} [{pos}/{len}] {board}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key(
            "board",
            move |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let (height, width) = console::Term::stderr().size();
                // Rows take the whole width but a column; the head line follows `⠋ [12/37] `.
                let width = usize::from(width).max(20) - 1;
                let prefix = format!("⠋ [{}/{}] ", state.pos(), state.len().unwrap_or(0));
                let head_width = width.saturating_sub(console::measure_text_width(&prefix));
                // The head, the rows and the prompt's row fit the screen.
                let rows = MAX_ROWS.min(usize::from(height).saturating_sub(2)).max(1);
                if let Ok(board) = board.lock() {
                    let _ = w.write_str(&board.render(head_width, width, rows, Instant::now()));
                }
            },
        );
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// Standard error as indicatif's draw target, with one difference: each draw ends with the
/// cursor at the start of its last row rather than past its end.
///
/// indicatif pads every row to the terminal's width and leaves the cursor there, so that the
/// next write wraps to a new row. A Ctrl-C echoed by the terminal (`^C`) then wraps too, and
/// the clear that follows erases the wrong row: the last progress row stayed on screen above
/// the summary. From the row's start, `^C` overwrites the spinner instead, and is cleared with
/// the rows. (Every indicatif draw starts with a carriage return or a full-row clear, so the
/// column it starts from does not matter to it.)
#[derive(Debug)]
struct RowTerm(console::Term);

impl TermLike for RowTerm {
    fn width(&self) -> u16 {
        self.0.size().1
    }

    fn height(&self) -> u16 {
        self.0.size().0
    }

    fn move_cursor_up(&self, n: usize) -> io::Result<()> {
        self.0.move_cursor_up(n)
    }

    fn move_cursor_down(&self, n: usize) -> io::Result<()> {
        self.0.move_cursor_down(n)
    }

    fn move_cursor_right(&self, n: usize) -> io::Result<()> {
        self.0.move_cursor_right(n)
    }

    fn move_cursor_left(&self, n: usize) -> io::Result<()> {
        self.0.move_cursor_left(n)
    }

    fn write_line(&self, s: &str) -> io::Result<()> {
        self.0.write_line(s)
    }

    fn write_str(&self, s: &str) -> io::Result<()> {
        self.0.write_str(s)
    }

    fn clear_line(&self) -> io::Result<()> {
        self.0.clear_line()
    }

    fn flush(&self) -> io::Result<()> {
        self.0.write_str("\r")?;
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_show_running_actions_oldest_first_and_count_the_waiting() {
        let mut b = Board::default();
        b.waiting("//a:one");
        b.waiting("//a:two");
        b.waiting("//a:three");
        b.running("//a:one", None);
        std::thread::sleep(Duration::from_millis(5));
        b.running("//a:longer_name", None);
        b.cached = 4;
        let text = b.render(80, 80, MAX_ROWS, Instant::now() + Duration::from_secs(75));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "2 running, 2 waiting, 4 cached");
        assert_eq!(lines[1], "  //a:one          1m15s");
        assert_eq!(lines[2], "  //a:longer_name  1m15s");
        assert_eq!(lines.len(), 3);
        b.settled("//a:one");
        b.settled("//a:two");
        assert!(b
            .render(80, 80, MAX_ROWS, Instant::now())
            .starts_with("1 running, 1 waiting, 4 cached"));
    }

    #[test]
    fn rows_are_cut_to_the_width_and_beyond_the_limit_counted() {
        let mut b = Board::default();
        for i in 0..MAX_ROWS + 3 {
            b.running(&format!("//p:a_rather_long_target_name_{i:02}"), None);
        }
        let text = b.render(30, 30, MAX_ROWS, Instant::now());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1 + MAX_ROWS);
        assert!(lines[1..MAX_ROWS]
            .iter()
            .all(|l| console::measure_text_width(l) <= 30));
        assert_eq!(lines[MAX_ROWS], "  … and 4 more running");
        // A low terminal: fewer rows, still the count of the others; a narrow one: a cut head.
        let text = b.render(8, 30, 3, Instant::now());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1 + 3, "{text}");
        assert_eq!(lines[0], "11 runn…");
        assert_eq!(lines[3], "  … and 9 more running");
    }

    #[test]
    fn elapsed_reads_like_a_clock() {
        assert_eq!(elapsed(Duration::from_millis(900)), "0s");
        assert_eq!(elapsed(Duration::from_secs(14)), "14s");
        assert_eq!(elapsed(Duration::from_secs(125)), "2m05s");
        assert_eq!(elapsed(Duration::from_secs(3720)), "1h02m");
    }
}
