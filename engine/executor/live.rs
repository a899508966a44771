//! The last line a running action printed, for the progress rows on a terminal
//! (`reporter/board.rs`). Fed by the pipe readers (`process.rs`), read by the progress bar's
//! ticker.
//!
//! What is shown is masked as a log is (`capture.rs`): the line is kept raw, bounded to
//! [`LINE_CAP`] bytes plus the overlap a secret cut by the bound needs, and masked when read.
//! A line ends at `\n` or `\r` (a progress line redrawn in place shows its latest state); blank
//! lines do not replace the last one. A line still being written (no end yet, `Downloading...`)
//! is shown while it is the latest output.

use std::sync::{Arc, Mutex};

use super::capture::Masker;

/// The most of one line kept for display (a terminal row is far shorter).
pub const LINE_CAP: usize = 512;

/// Shared between the action's pipe readers and the progress rows; clones share the line.
#[derive(Clone, Debug, Default)]
pub struct LiveTail(Arc<Mutex<Lines>>);

#[derive(Debug, Default)]
struct Lines {
    /// The line being written on each stream (stdout, stderr), not yet ended.
    partial: [Line; 2],
    /// The last complete non-blank line of either stream.
    last: Line,
    /// The stream whose unfinished line is the latest output, if it is not blank.
    writing: Option<usize>,
    masker: Masker,
}

#[derive(Clone, Debug, Default)]
struct Line {
    raw: Vec<u8>,
    /// The head was dropped (the line was longer than what is kept).
    cut: bool,
}

impl Line {
    fn push(&mut self, bytes: &[u8], keep: usize) {
        self.raw.extend_from_slice(bytes);
        if self.raw.len() > 2 * keep {
            let excess = self.raw.len() - keep;
            self.raw.drain(..excess);
            self.cut = true;
        }
    }

    fn is_blank(&self) -> bool {
        self.raw.iter().all(u8::is_ascii_whitespace)
    }
}

impl LiveTail {
    /// What `stream` (0: stdout, 1: stderr) delivered; `masker` is the action's.
    pub(super) fn push(&self, stream: usize, bytes: &[u8], masker: &Masker) {
        let Ok(mut lines) = self.0.lock() else {
            return;
        };
        let keep = LINE_CAP + masker.longest().saturating_sub(1);
        let lines = &mut *lines;
        if lines.masker.longest() != masker.longest() {
            lines.masker = masker.clone();
        }
        let mut rest = bytes;
        while let Some(end) = rest.iter().position(|b| *b == b'\n' || *b == b'\r') {
            let partial = &mut lines.partial[stream];
            partial.push(&rest[..end], keep);
            let line = std::mem::take(partial);
            if !line.is_blank() {
                lines.last = line;
                lines.writing = None;
            }
            rest = &rest[end + 1..];
        }
        lines.partial[stream].push(rest, keep);
        if !lines.partial[stream].is_blank() {
            lines.writing = Some(stream);
        }
    }

    /// The last complete line, masked, with control characters and escape sequences taken out;
    /// `None` before the action printed one.
    pub fn last_line(&self) -> Option<String> {
        let lines = self.0.lock().ok()?;
        let last = match lines.writing {
            Some(stream) => &lines.partial[stream],
            None => &lines.last,
        };
        if last.raw.is_empty() {
            return None;
        }
        let from = last.raw.len().saturating_sub(LINE_CAP);
        let masked = lines.masker.mask_from(&last.raw, from);
        let text = String::from_utf8_lossy(&masked);
        let text = printable(&text);
        if text.is_empty() {
            return None;
        }
        let mut shown = String::with_capacity(text.len() + 1);
        if last.cut || from > 0 {
            shown.push('…');
        }
        shown.push_str(&text);
        Some(shown)
    }
}

/// `text` without ANSI escape sequences and control characters (a tab becomes a space): what
/// an action prints must not move the cursor or recolour the progress rows. Trimmed: a row
/// has no room for indentation.
pub fn printable(text: &str) -> String {
    let plain = console::strip_ansi_codes(text);
    plain
        .chars()
        .filter_map(|c| match c {
            '\t' => Some(' '),
            c if c.is_control() || invisible(c) => None,
            c => Some(c),
        })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Format characters that reorder or hide text: bidirectional overrides and isolates (U+202A
/// to U+202E, U+2066 to U+2069), zero-width and directional marks (U+200B to U+200F, U+2060,
/// U+FEFF).
fn invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

#[cfg(test)]
mod tests {
    use super::super::capture::masker;
    use super::*;

    #[test]
    fn the_last_complete_non_blank_line_of_either_stream() {
        let m = Masker::default();
        let t = LiveTail::default();
        assert_eq!(t.last_line(), None);
        t.push(0, b"step 1\n", &m);
        assert_eq!(t.last_line().as_deref(), Some("step 1"));
        t.push(0, b"step", &m);
        assert_eq!(t.last_line().as_deref(), Some("step"));
        t.push(1, b"warning: x\n\n  \n", &m);
        assert_eq!(t.last_line().as_deref(), Some("warning: x"));
        t.push(0, b" 2\n", &m);
        assert_eq!(t.last_line().as_deref(), Some("step 2"));
        // A progress line redrawn with `\r` shows its latest state.
        t.push(0, b" 10%\r 50%\r", &m);
        assert_eq!(t.last_line().as_deref(), Some("50%"));
    }

    #[test]
    fn escapes_and_control_characters_are_taken_out() {
        let m = Masker::default();
        let t = LiveTail::default();
        t.push(0, b"\x1b[31mred\x1b[0m\tand\x07 \x1b[2Kdone\n", &m);
        assert_eq!(t.last_line().as_deref(), Some("red and done"));
        t.push(0, "a\u{202E}b\u{200B}c\n".as_bytes(), &m);
        assert_eq!(t.last_line().as_deref(), Some("abc"));
        // Nothing printable: nothing shown (not a lone `…`).
        let nul = LiveTail::default();
        nul.push(0, &[0u8; 2000], &m);
        nul.push(0, b"\n", &m);
        assert_eq!(nul.last_line(), None);
    }

    #[test]
    fn a_line_still_being_written_is_shown_while_it_is_the_latest() {
        let m = Masker::default();
        let t = LiveTail::default();
        t.push(0, b"done 1\nDownloading", &m);
        assert_eq!(t.last_line().as_deref(), Some("Downloading"));
        t.push(1, b"warn\n", &m);
        assert_eq!(t.last_line().as_deref(), Some("warn"));
    }

    #[test]
    fn secrets_are_masked_even_when_a_long_line_cuts_them() {
        let m = masker(&["SECRETVALUE"]);
        let t = LiveTail::default();
        t.push(0, b"token=SECRETVALUE ok\n", &m);
        assert_eq!(t.last_line().as_deref(), Some("token=*** ok"));
        // A line longer than what is kept, with the secret across the cut, in small writes.
        let mut long = vec![b'x'; 3 * LINE_CAP];
        let at = long.len() - LINE_CAP - 4;
        long[at..at + 11].copy_from_slice(b"SECRETVALUE");
        for chunk in long.chunks(7) {
            t.push(0, chunk, &m);
        }
        t.push(0, b"\n", &m);
        let shown = t.last_line().unwrap();
        assert!(shown.starts_with('…'), "{shown}");
        for piece in ["SECRET", "VALUE", "ALUE"] {
            assert!(!shown.contains(piece), "{piece} in {shown}");
        }
    }

    #[test]
    fn memory_stays_bounded_on_a_line_without_end() {
        let m = Masker::default();
        let t = LiveTail::default();
        for _ in 0..10_000 {
            t.push(1, &[b'a'; 1000], &m);
        }
        assert!(t.0.lock().unwrap().partial[1].raw.len() <= 2 * LINE_CAP + 1000);
    }
}
