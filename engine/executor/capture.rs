//! Captured stdout/stderr: a capped tail buffer and the secret masker.
//!
//! 1. [`Capture::push`] appends what the pipe delivered and, when the buffer grows past twice
//!    what it must keep, drops the head (amortized O(1) per byte, memory ≤ 2 × keep).
//! 2. [`Capture::finish`] masks every occurrence of a secret value, keeps the last
//!    [`OUTPUT_CAP`] raw bytes, and prepends a one-line note when anything was dropped.
//!
//! Invariant: no complete secret value survives `finish`, not even one cut by the truncation.
//! The buffer keeps `longest secret - 1` bytes before the cut, so a secret straddling the cut is
//! found whole and masked; its bytes before the cut are then dropped with the rest of the head.
//! Limits: values shorter than [`MIN_SECRET_LEN`] bytes are not masked (they would mask half of
//! every log); a secret printed in another encoding (base64, split over lines) is not recognized.

use regex::bytes::{Regex, RegexBuilder};

/// Each of stdout and stderr keeps at most this many bytes: the tail.
pub const OUTPUT_CAP: usize = 16 << 20;

/// Secret values shorter than this are not masked.
pub(super) const MIN_SECRET_LEN: usize = 4;

const MASK: &[u8] = b"***";

/// Replaces every occurrence of a secret value with `***`.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    /// Alternation of the escaped values, longest first; `None` without secrets to mask.
    pattern: Option<Regex>,
    longest: usize,
}

impl Masker {
    pub fn new<'a>(values: impl IntoIterator<Item = &'a String>) -> Masker {
        let mut values: Vec<&str> = values
            .into_iter()
            .map(String::as_str)
            .filter(|v| v.len() >= MIN_SECRET_LEN)
            .collect();
        values.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        values.dedup();
        let Some(longest) = values.first().map(|v| v.len()) else {
            return Masker::default();
        };
        let alternation: Vec<String> = values.iter().map(|v| regex::escape(v)).collect();
        // Literals only: building cannot fail short of the size limit, which we lift.
        let pattern = RegexBuilder::new(&alternation.join("|"))
            .size_limit(1 << 30)
            .build()
            .expect("an alternation of escaped literals is a valid regex");
        Masker {
            pattern: Some(pattern),
            longest,
        }
    }

    /// The length of the longest secret value (0 without secrets).
    pub(super) fn longest(&self) -> usize {
        self.longest
    }

    /// `text` with every secret value replaced by `***`: for names the command chose (files it
    /// wrote), which flow prints as it prints the command's logs.
    pub fn mask_text(&self, text: &str) -> String {
        // A secret is valid UTF-8, so a match never splits a character of `text`.
        String::from_utf8_lossy(&self.mask_from(text.as_bytes(), 0)).into_owned()
    }

    /// Masks `raw` and returns the part from byte `from` on; a match that starts before `from`
    /// and ends after it becomes one `***` at the start.
    pub(super) fn mask_from(&self, raw: &[u8], from: usize) -> Vec<u8> {
        let Some(pattern) = &self.pattern else {
            return raw[from..].to_vec();
        };
        let mut out = Vec::with_capacity(raw.len() - from);
        let mut at = from;
        for m in pattern.find_iter(raw) {
            if m.end() <= from {
                continue;
            }
            out.extend_from_slice(&raw[at..m.start().max(at)]);
            out.extend_from_slice(MASK);
            at = m.end();
        }
        out.extend_from_slice(&raw[at..]);
        out
    }
}

/// The tail of one output stream.
#[derive(Debug)]
pub(super) struct Capture {
    buf: Vec<u8>,
    cap: usize,
    /// `cap` plus the overlap needed to recognize a secret cut by the truncation.
    keep: usize,
    /// Bytes already dropped from the head of `buf`.
    dropped: u64,
}

impl Capture {
    pub(super) fn new(cap: usize, masker: &Masker) -> Capture {
        Capture {
            buf: Vec::new(),
            cap,
            keep: cap + masker.longest.saturating_sub(1),
            dropped: 0,
        }
    }

    pub(super) fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        if self.buf.len() > 2 * self.keep.max(64 << 10) {
            self.trim();
        }
    }

    fn trim(&mut self) {
        let excess = self.buf.len().saturating_sub(self.keep);
        if excess > 0 {
            self.buf.drain(..excess);
            self.dropped += excess as u64;
        }
    }

    /// The masked tail, with a note on the first line when the head was dropped.
    pub(super) fn finish(mut self, masker: &Masker) -> Vec<u8> {
        self.trim();
        let cut = self.buf.len().saturating_sub(self.cap);
        let dropped = self.dropped + cut as u64;
        let masked = masker.mask_from(&self.buf, cut);
        if dropped == 0 {
            return masked;
        }
        let mut out = format!(
            "[flow: output truncated: the first {dropped} bytes were dropped, the last {} kept]\n",
            self.cap
        )
        .into_bytes();
        out.extend_from_slice(&masked);
        out
    }
}

/// A masker of `values`, for the tests of this module and of `live.rs`.
#[cfg(test)]
pub(super) fn masker(values: &[&str]) -> Masker {
    let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
    Masker::new(&values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_every_occurrence_longest_first_and_skips_short_values() {
        let m = masker(&["hunter2", "hunter22", "abc"]);
        let mut c = Capture::new(1000, &m);
        c.push(b"pw=hunter22 again hunter2, abc");
        assert_eq!(c.finish(&m), b"pw=*** again ***, abc");
    }

    #[test]
    fn truncation_keeps_the_tail_and_masks_a_secret_cut_by_it() {
        let m = masker(&["SECRETVALUE"]);
        let mut c = Capture::new(8, &m);
        c.push(b"xxxxxxSECRET");
        c.push(b"VALUE-tail");
        let out = String::from_utf8(c.finish(&m)).unwrap();
        // The last 8 raw bytes are "LUE-tail": the secret straddles the cut.
        assert!(out.starts_with("[flow: output truncated"), "{out}");
        assert!(out.ends_with("\n***-tail"), "{out}");
        assert!(!out.contains("VALUE"), "{out}");
    }

    #[test]
    fn large_streams_stay_bounded() {
        let m = Masker::default();
        let mut c = Capture::new(1 << 10, &m);
        for _ in 0..1000 {
            c.push(&[b'a'; 1000]);
            assert!(c.buf.len() <= 2 * (64 << 10) + 1000);
        }
        c.push(b"END");
        let out = c.finish(&m);
        assert!(out.ends_with(b"aaEND"));
        let body = out.split(|b| *b == b'\n').nth(1).unwrap();
        assert_eq!(body.len(), 1 << 10);
    }
}
