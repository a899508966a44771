//! The one small builder every integration test uses: write a workspace, run `flow` in it,
//! assert on exit code and output. Golden files live in `tests/golden/`; run with
//! `UPDATE_GOLDEN=1` to rewrite them after an intended change (and review the diff).
//!
//! The helpers the test files share live beside it, one concept a file: reading status and
//! summary lines (`status.rs`), walking files (`files.rs`), seeded randomness (`random.rs`).

mod files;
mod random;
mod screen;
mod status;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use files::{file_tree, files_under, wait_for_file};
pub use random::{env_number, seeded_rng, Rng};
pub use screen::{Screen, EXIT_MARK};
pub use status::{label_tags, status_line, summary, summary_counts, tagged, tags};

/// Waits until the ctimes set by now are settled: a test that *ages* files (sets their mtimes
/// back, so that flow trusts their states at once) cannot set their ctimes back, which the
/// aging itself just set; flow trusts a state only once its ctime is older than the recording
/// by `CTIME_WINDOW_NS` (`flow_rules::snapshot::settled`). A sleep lasts at least as long as
/// asked, and flow reads the clock after it: the margin is only for the clock's resolution.
pub fn settle() {
    let window = std::time::Duration::from_nanos(flow_rules::snapshot::CTIME_WINDOW_NS as u64);
    std::thread::sleep(window + std::time::Duration::from_millis(10));
}

/// A temporary workspace.
pub struct Ws {
    dir: tempfile::TempDir,
}

/// The result of one run of `flow`.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ws {
    /// An empty workspace with a minimal `flow.toml`.
    pub fn new() -> Ws {
        Ws::bare().file("flow.toml", "")
    }

    /// A temporary directory without `flow.toml`.
    pub fn bare() -> Ws {
        Ws {
            dir: tempfile::Builder::new()
                .prefix("flow-test")
                .tempdir()
                .expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `contents` to `rel`, creating parent directories.
    pub fn file(self, rel: &str, contents: &str) -> Ws {
        self.write(rel, contents.as_bytes());
        self
    }

    pub fn write(&self, rel: &str, contents: &[u8]) {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, contents).unwrap();
    }

    /// Runs `flow -C <ws> ARGS` with colors off.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_in(self.dir.path(), args)
    }

    /// Runs `flow ARGS` with `dir` as the current directory.
    pub fn run_in(&self, dir: &Path, args: &[&str]) -> Run {
        self.run_env(dir, args, &[])
    }

    /// Runs `flow ARGS` in `dir` with the variables `env` set (e.g. `FLOW_NOW_MS`).
    pub fn run_env(&self, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
        let out = Command::new(flow_bin())
            .current_dir(dir)
            .args(["--color", "never"])
            .args(args)
            .env_remove("FLOW_CACHE_DIR")
            // A CI machine's own GitHub variables would turn on the GitHub reports.
            .env_remove("GITHUB_ACTIONS")
            .env_remove("GITHUB_STEP_SUMMARY")
            .envs(env.iter().copied())
            .output()
            .expect("run flow");
        Run::from(out, self.dir.path())
    }
}

pub fn flow_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_flow"))
}

impl Run {
    fn from(out: Output, root: &Path) -> Run {
        let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        let clean = |b: &[u8]| {
            String::from_utf8_lossy(b)
                .replace(&root.display().to_string(), "$WS")
                .replace(&std::env::temp_dir().display().to_string(), "$TMP")
        };
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: clean(&out.stdout),
            stderr: clean(&out.stderr),
        }
    }

    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "flow failed:\n{}", self.stderr);
        &self.stdout
    }

    /// Asserts exit code 2 (bad input) and returns stderr.
    #[track_caller]
    pub fn bad_input(&self) -> &str {
        assert_eq!(
            self.code, 2,
            "expected exit 2; stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        &self.stderr
    }
}

/// Compares `actual` with `tests/golden/NAME.txt` (or rewrites it under `UPDATE_GOLDEN=1`).
#[track_caller]
pub fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "missing golden file {}; run with UPDATE_GOLDEN=1 to create it. Actual:\n{actual}",
            path.display()
        )
    });
    if expected != actual {
        panic!(
            "golden mismatch for {name} ({}); run with UPDATE_GOLDEN=1 to accept.\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        );
    }
}

/// Whether process `pid` is alive. A zombie is not: where PID 1 does not reap orphans (some
/// containers), a killed orphan stays a zombie and `kill -0` keeps succeeding.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_ascii_whitespace().next());
            !matches!(state, Some("Z" | "X"))
        }
        Err(_) if Path::new("/proc/self").exists() => false,
        Err(_) => std::process::Command::new("kill")
            .args(["-0", &pid.to_string()])
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success(),
    }
}

/// `git ARGS` in `dir`, which must succeed; with a fixed identity and dates, never prompting.
pub fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .env("GIT_AUTHOR_DATE", "1715000000 +0000")
        .env("GIT_COMMITTER_DATE", "1715000000 +0000")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A bare repository `root/remote.git` whose `main` holds `files` (path, contents), and a
/// clone of it per name in `clones` (`root/<name>`), as CI runners checking out one
/// repository: their paths, in order.
pub fn remote_and_clones(root: &Path, files: &[(&str, &str)], clones: &[&str]) -> Vec<PathBuf> {
    let remote = root.join("remote.git");
    let remote_s = remote.to_str().unwrap();
    git(root, &["init", "-q", "--bare", "-b", "main", remote_s]);
    let seed = root.join("seed");
    for (rel, contents) in files {
        let path = seed.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }
    git(&seed, &["init", "-q", "-b", "main"]);
    git(&seed, &["add", "-A"]);
    git(&seed, &["commit", "-q", "-m", "seed"]);
    git(&seed, &["push", "-q", remote_s, "main"]);
    clones
        .iter()
        .map(|name| {
            let dir = root.join(name);
            git(root, &["clone", "-q", remote_s, dir.to_str().unwrap()]);
            dir
        })
        .collect()
}

/// What copies of the example leave out: caches and outputs of runs made in the repository.
pub const NOT_COPIED: &[&str] = &[
    ".flow",
    "flow-out",
    "__pycache__",
    ".deploy-state",
    ".environments",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".coverage",
];

/// Copies the tree `from` to `to` (created), files with their modes, leaving out
/// [`NOT_COPIED`] (a build of the example in the repository leaves ~1 GB there).
pub fn copy_source_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if NOT_COPIED.iter().any(|n| name == *n) {
            continue;
        }
        let target = to.join(&name);
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_source_tree(&entry.path(), &target);
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).unwrap(), &target).unwrap();
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
