//! The wall clock of one command: when a build started, when a result was last used, when an
//! action finished. One home, so that tests can set it: `FLOW_NOW_MS` (milliseconds since the
//! Unix epoch) fixes it for a whole process; it is meant for flow's own tests and says so in
//! docs/configuration.md. File-state trust (the racy-edit window) compares file mtimes with the
//! real time, never with this clock (`hasher::now_ns`).

use std::time::{SystemTime, UNIX_EPOCH};

/// The environment variable that fixes the clock.
pub const FIXED_CLOCK_VAR: &str = "FLOW_NOW_MS";

#[derive(Clone, Copy, Debug, Default)]
pub struct Clock {
    /// Set: every reading returns it.
    fixed_ms: Option<i64>,
}

impl Clock {
    /// The system clock, unless `FLOW_NOW_MS` fixes it.
    pub fn from_env() -> Clock {
        Clock {
            fixed_ms: std::env::var(FIXED_CLOCK_VAR)
                .ok()
                .and_then(|v| v.trim().parse().ok()),
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        self.fixed_ms.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        })
    }

    /// Seconds since the Unix epoch.
    pub fn now_secs(&self) -> u64 {
        (self.now_ms() / 1000).max(0) as u64
    }
}
