//! `FLOW_PROFILE=1`: how long each phase of a build took, on stderr (`flow profile: run: 2.4 ms`).
//! A development aid, documented in docs/cli.md; off, a mark costs one `Cell` read.

/// `FLOW_PROFILE=1`: the time of each phase of a build, on stderr.
pub struct Profile {
    last: std::cell::Cell<Option<std::time::Instant>>,
}

impl Profile {
    pub fn from_env() -> Profile {
        let on = std::env::var_os("FLOW_PROFILE").is_some_and(|v| v != "0");
        Profile {
            last: std::cell::Cell::new(on.then(std::time::Instant::now)),
        }
    }

    pub fn mark(&self, phase: &str) {
        if let Some(t) = self.last.get() {
            eprintln!(
                "flow profile: {phase}: {:.1} ms",
                t.elapsed().as_secs_f64() * 1e3
            );
            self.last.set(Some(std::time::Instant::now()));
        }
    }
}
