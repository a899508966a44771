//! A terminal for tests: a command run in a detached tmux session (its own server, on a socket
//! of its own), its screen read as text with `capture-pane`, keys sent with `send-keys`. The
//! progress rows and the watch screen are only drawn on a terminal, and this is how they are
//! checked (issue 18).
//!
//! Without tmux the test is skipped with a note, unless `FLOW_REQUIRE_TMUX` is set (`.ci/run`
//! installs tmux and sets it).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub struct Screen {
    socket: String,
}

/// What the pane prints once the command ended: `[exit CODE]`.
pub const EXIT_MARK: &str = "[exit ";

impl Screen {
    /// Runs `command` (a shell command line) in `dir` on a `width` × `height` terminal, with
    /// `CI` and `GITHUB_ACTIONS` unset (flow draws no progress rows under CI). `None` when tmux
    /// is not installed and not required.
    pub fn start(dir: &Path, command: &str, width: u16, height: u16) -> Option<Screen> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let socket = format!(
            "flow-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        // The pane stays open after the command, showing how it ended.
        let line = format!("{command}; echo \"{EXIT_MARK}$?]\"; sleep 600");
        let started = Command::new("tmux")
            .args(["-L", &socket, "-f", "/dev/null", "new-session", "-d"])
            .args(["-x", &width.to_string(), "-y", &height.to_string()])
            .arg("-c")
            .arg(dir)
            .arg(line)
            .env_remove("CI")
            .env_remove("GITHUB_ACTIONS")
            .env("TERM", "xterm-256color")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output();
        match started {
            Ok(out) if out.status.success() => Some(Screen { socket }),
            Ok(out) => panic!(
                "tmux new-session failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(_) if std::env::var_os("FLOW_REQUIRE_TMUX").is_none() => {
                eprintln!("skipping a terminal test: tmux is not installed (.ci/run installs it)");
                None
            }
            Err(e) => panic!("tmux is required (FLOW_REQUIRE_TMUX is set): {e}"),
        }
    }

    /// The screen's text now, one line a row, trailing blank rows taken out.
    pub fn text(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p"])
            .output()
            .expect("tmux capture-pane");
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim_end().to_owned()
    }

    /// Polls the screen until `ready` holds; panics with the last screen after `within`, or
    /// once the command ended without `ready` holding.
    #[track_caller]
    pub fn wait_for(&self, within: Duration, ready: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + within;
        loop {
            let text = self.text();
            if ready(&text) {
                return text;
            }
            // The command ended without getting there: it never will.
            if Instant::now() > end || text.contains(EXIT_MARK) {
                panic!("the screen never got there; it shows:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(40));
        }
    }

    /// Sends keys the way `tmux send-keys` names them (`C-c`, `Enter`).
    pub fn keys(&self, keys: &str) {
        let ok = Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", keys])
            .status()
            .expect("tmux send-keys")
            .success();
        assert!(ok, "tmux send-keys {keys}");
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .stderr(Stdio::null())
            .status();
    }
}
