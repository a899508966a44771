//! Results waiting to be written to the action cache, many in one transaction.
//!
//! A transaction per stored run wrote each page it touched again: about 20 KB of write-ahead
//! log and 60 system calls per action (locks, seeks, page writes), measured with `strace` on
//! the 1,000-package cold build. Results are held here instead and written [`BATCH`] at a
//! time, or with the first one stored after the oldest has waited [`HOLD`], and at the end of
//! the run
//! (`Rebuilder::flush`, which the runner calls before it saves the history; dropping the
//! rebuilder flushes what is left).
//!
//! What a kill costs: the results still held are not recorded, so their actions run again in
//! the next build, whose outputs the build clears first as for any run. A result is never
//! recorded before its blobs are stored (they are stored before it is held), and a batch is
//! one transaction: all of it or none.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use flow_cache::{ActionResult, Digest};

/// Results written together, at most.
pub const BATCH: usize = 64;

/// How long a result waits for others before it is written anyway.
pub const HOLD: Duration = Duration::from_millis(100);

#[derive(Default)]
pub struct Pending {
    inner: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    results: Vec<(Digest, ActionResult)>,
    oldest: Option<Instant>,
}

impl Pending {
    /// Holds `result`; returns the results to write now (none, or every one held: the batch is
    /// full or its oldest has waited [`HOLD`]).
    pub fn push(&self, key: Digest, result: ActionResult) -> Vec<(Digest, ActionResult)> {
        let mut held = self.inner.lock().expect("pending results lock poisoned");
        let oldest = *held.oldest.get_or_insert_with(Instant::now);
        held.results.push((key, result));
        if held.results.len() >= BATCH || oldest.elapsed() >= HOLD {
            held.oldest = None;
            return std::mem::take(&mut held.results);
        }
        Vec::new()
    }

    /// Every result held.
    pub fn take(&self) -> Vec<(Digest, ActionResult)> {
        let mut held = self.inner.lock().expect("pending results lock poisoned");
        held.oldest = None;
        std::mem::take(&mut held.results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(n: u8) -> (Digest, ActionResult) {
        let r = ActionResult {
            exit_code: 0,
            outputs: Vec::new(),
            stdout: None,
            stderr: None,
            duration_ms: u64::from(n),
        };
        (Digest::of(&[n]), r)
    }

    #[test]
    fn a_full_batch_is_handed_back_whole_and_the_rest_is_taken_at_the_end() {
        let p = Pending::default();
        for n in 0..BATCH as u8 - 1 {
            let (k, r) = result(n);
            assert!(p.push(k, r).is_empty(), "held until the batch is full");
        }
        let (k, r) = result(200);
        let batch = p.push(k, r);
        assert_eq!(batch.len(), BATCH);
        assert_eq!(batch.last().map(|b| b.0), Some(Digest::of(&[200])));
        let (k, r) = result(201);
        assert!(p.push(k, r).is_empty());
        assert_eq!(p.take().len(), 1);
        assert!(p.take().is_empty());
    }

    #[test]
    fn a_result_that_waited_long_enough_is_handed_back_with_the_next() {
        let p = Pending::default();
        let (k, r) = result(1);
        assert!(p.push(k, r).is_empty());
        std::thread::sleep(HOLD + Duration::from_millis(5));
        let (k, r) = result(2);
        assert_eq!(p.push(k, r).len(), 2);
    }
}
