//! `Outcome`: how one action ended in one build, as recorded in `action_runs.outcome`.
//!
//! Stored as lowercase text (`ran`, `cached`, `failed`, `flaky`, `timedout`, `skipped`,
//! `cancelled`) so that the history reads well in `sqlite3` and survives reordering the enum.
//! New outcomes may be added; an older flow reading one it does not know reports a `BadRow`.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Ran,
    Cached,
    Failed,
    Flaky,
    TimedOut,
    Skipped,
    Cancelled,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Ran,
        Outcome::Cached,
        Outcome::Failed,
        Outcome::Flaky,
        Outcome::TimedOut,
        Outcome::Skipped,
        Outcome::Cancelled,
    ];

    /// The stored form: lowercase, `timedout` for `TimedOut`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ran => "ran",
            Outcome::Cached => "cached",
            Outcome::Failed => "failed",
            Outcome::Flaky => "flaky",
            Outcome::TimedOut => "timedout",
            Outcome::Skipped => "skipped",
            Outcome::Cancelled => "cancelled",
        }
    }

    /// The outcome as a message says it: `timed out`, the others as stored.
    pub fn words(self) -> &'static str {
        match self {
            Outcome::TimedOut => "timed out",
            other => other.as_str(),
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// The action's command ran to an end (so its duration measures it).
    pub fn executed(self) -> bool {
        matches!(
            self,
            Outcome::Ran | Outcome::Failed | Outcome::Flaky | Outcome::TimedOut
        )
    }

    /// The action's result is good (ran, restored from the cache, or passed on a retry).
    pub fn succeeded(self) -> bool {
        matches!(self, Outcome::Ran | Outcome::Cached | Outcome::Flaky)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
