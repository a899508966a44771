//! `flow hooks install`, `flow hooks uninstall`: flow's git pre-commit hook, and `flow hooks
//! run pre-commit`, what it runs (`pre_commit.rs`).
//!
//! The hook is a small `sh` script in the directory git reads hooks from (`git rev-parse
//! --git-path hooks`: `core.hooksPath` and linked worktrees are git's to resolve). It is known
//! as flow's by its [`MARKER`] line, and nothing else: a hook without it is the user's.
//!
//! Invariants:
//! - a hook that is not flow's is never deleted nor overwritten: install moves it aside to
//!   `pre-commit.flow-saved` (a rename: bytes, mode and a symlink kept as they are), and flow's
//!   hook runs it first, failing when it fails; uninstall renames it back;
//! - installing again rewrites flow's hook (the binary's path may have moved) and never takes
//!   flow's own hook for the user's;
//! - a `pre-commit.flow-saved` already there is never overwritten.

mod pre_commit;

pub use pre_commit::run_pre_commit;

use std::path::{Path, PathBuf};

use crate::delivery::git::git;
use crate::error::Error;
use crate::workspace::Workspace;

/// The line that marks a hook as written by flow.
pub const MARKER: &str = "# flow: pre-commit hook written by `flow hooks install`";

/// Where the hook flow's replaced is kept, beside it.
pub const SAVED: &str = "pre-commit.flow-saved";

const HOOK: &str = "pre-commit";

/// `flow hooks install`.
pub fn install(start: &Path, cache_flag: Option<&Path>) -> Result<i32, Error> {
    let ws = Workspace::discover(start)?;
    let (_, within) = repository(&ws.root, "install a pre-commit hook")?;
    let dir = hooks_dir(&ws.root)?;
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, "create the git hooks directory", e))?;
    let hook = dir.join(HOOK);
    let saved = dir.join(SAVED);
    let mut kept = false;
    match read_hook(&hook) {
        Hook::Absent | Hook::Flow => {}
        Hook::Other => {
            if saved.symlink_metadata().is_ok() {
                return Err(Error::Usage {
                    message: format!(
                        "`{}` is not flow's hook, and `{}` already holds the hook flow kept \
                         aside before: flow will not overwrite either",
                        hook.display(),
                        saved.display()
                    ),
                    help: Some(
                        "merge them into one hook by hand (or remove one), then install again"
                            .into(),
                    ),
                });
            }
            std::fs::rename(&hook, &saved)
                .map_err(|e| io(&hook, "move aside the existing hook", e))?;
            kept = true;
        }
    }
    let cache = cache_flag.map(|f| crate::analysis::cache_dir(&ws, Some(f)));
    let text = script(&binary(), &within, cache.as_deref());
    if let Err(e) = write_executable(&dir, &hook, &text) {
        if kept {
            // Put the user's hook back as it was.
            let _ = std::fs::rename(&saved, &hook);
        }
        return Err(e);
    }
    println!("flow: installed the pre-commit hook `{}`", hook.display());
    if kept || saved.symlink_metadata().is_ok() {
        println!(
            "flow: it runs the hook it replaced first (kept as `{}`; `flow hooks uninstall` \
             puts it back)",
            saved.display()
        );
    }
    Ok(0)
}

/// `flow hooks uninstall`.
pub fn uninstall(start: &Path) -> Result<i32, Error> {
    let ws = Workspace::discover(start)?;
    repository(&ws.root, "uninstall a pre-commit hook")?;
    let dir = hooks_dir(&ws.root)?;
    let hook = dir.join(HOOK);
    let saved = dir.join(SAVED);
    let has_saved = saved.symlink_metadata().is_ok();
    match read_hook(&hook) {
        Hook::Other => {
            println!(
                "flow: the pre-commit hook `{}` is not flow's: left as it is",
                hook.display()
            );
            if has_saved {
                println!(
                    "flow: the hook flow kept aside is still at `{}`",
                    saved.display()
                );
            }
            return Ok(0);
        }
        Hook::Flow => {
            std::fs::remove_file(&hook).map_err(|e| io(&hook, "remove", e))?;
            println!("flow: removed flow's pre-commit hook `{}`", hook.display());
        }
        Hook::Absent if !has_saved => {
            println!(
                "flow: no pre-commit hook of flow's is installed in `{}`; nothing to do",
                dir.display()
            );
            return Ok(0);
        }
        Hook::Absent => {}
    }
    if has_saved {
        std::fs::rename(&saved, &hook).map_err(|e| io(&saved, "restore", e))?;
        println!(
            "flow: restored the pre-commit hook it had replaced `{}`",
            hook.display()
        );
    }
    Ok(0)
}

/// What is at the hook's path.
#[derive(Debug, PartialEq, Eq)]
enum Hook {
    Absent,
    /// Written by flow (holds [`MARKER`]).
    Flow,
    /// Anything else: the user's.
    Other,
}

fn read_hook(path: &Path) -> Hook {
    if path.symlink_metadata().is_err() {
        return Hook::Absent;
    }
    match std::fs::read(path) {
        Ok(bytes) if is_flows(&bytes) => Hook::Flow,
        _ => Hook::Other,
    }
}

fn is_flows(bytes: &[u8]) -> bool {
    bytes
        .split(|&b| b == b'\n')
        .any(|line| line == MARKER.as_bytes())
}

/// The hook's text: run the hook it replaced first (when executable, as git would have), then
/// `flow -C WITHIN hooks run pre-commit` with the binary that installed it, else `flow` on
/// `PATH`.
fn script(flow: &Path, within: &Path, cache: Option<&Path>) -> String {
    let within = if within.as_os_str().is_empty() {
        Path::new(".")
    } else {
        within
    };
    let cache = cache
        .map(|c| format!(" --cache-dir {}", quote(&c.display().to_string())))
        .unwrap_or_default();
    format!(
        "#!/bin/sh\n\
         {MARKER}\n\
         # `flow hooks uninstall` removes it and restores the hook it replaced ({SAVED}).\n\
         saved=\"$(dirname \"$0\")/{SAVED}\"\n\
         if [ -x \"$saved\" ]; then\n\
         \x20   \"$saved\" \"$@\" || exit $?\n\
         fi\n\
         installed={installed}\n\
         flow=\"$installed\"\n\
         if [ ! -x \"$flow\" ]; then\n\
         \x20   flow=$(command -v flow) || {{\n\
         \x20       echo \"flow pre-commit hook: flow is neither at $installed nor on PATH: install it, or run 'flow hooks uninstall'; 'git commit --no-verify' skips this check\" >&2\n\
         \x20       exit 1\n\
         \x20   }}\n\
         fi\n\
         exec \"$flow\" -C {within}{cache} hooks run pre-commit\n",
        installed = quote(&flow.display().to_string()),
        within = quote(&within.display().to_string()),
    )
}

/// `s` as one `sh` word.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The running binary's absolute path (what the hook runs while it exists).
fn binary() -> PathBuf {
    std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .unwrap_or_else(|_| PathBuf::from("flow"))
}

/// Writes `text` to `path` (mode 0755) through a temporary file in `dir` renamed over it.
fn write_executable(dir: &Path, path: &Path, text: &str) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let mut tmp = tempfile::Builder::new()
        .prefix(".pre-commit.flow-")
        .tempfile_in(dir)
        .map_err(|e| io(dir, "write a hook in", e))?;
    tmp.write_all(text.as_bytes())
        .and_then(|_| {
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o755))
        })
        .map_err(|e| io(dir, "write a hook in", e))?;
    tmp.persist(path)
        .map_err(|e| io(path, "write the hook", e.error))?;
    Ok(())
}

/// The git work tree `root` is in and `root` relative to it, or an error saying that `doing`
/// needs a git repository.
pub(super) fn repository(root: &Path, doing: &str) -> Result<(PathBuf, PathBuf), Error> {
    crate::affected::repository(root).map_err(|_| Error::Usage {
        message: format!(
            "`{}` is not in a git repository: cannot {doing}",
            crate::workspace::display_path(root)
        ),
        help: Some("run `git init` first, or run flow in a git checkout".into()),
    })
}

/// The directory git reads hooks from, as git says (`core.hooksPath`, worktrees).
fn hooks_dir(root: &Path) -> Result<PathBuf, Error> {
    let out = git(root)
        .args(["rev-parse", "--git-path", "hooks"])
        .output()
        .map_err(|e| io(root, "run git in", e))?;
    if !out.status.success() {
        return Err(Error::Io {
            path: root.to_path_buf(),
            action: "find the git hooks directory of",
            error: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(root.join(String::from_utf8_lossy(&out.stdout).trim()))
}

fn io(path: &Path, action: &'static str, e: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        action,
        error: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_is_flows_and_quotes_its_words() {
        let text = script(
            Path::new("/opt/it's/flow"),
            Path::new(""),
            Some(Path::new("/c")),
        );
        assert!(is_flows(text.as_bytes()));
        assert!(text.contains("installed='/opt/it'\\''s/flow'\n"));
        assert!(text.contains("-C '.' --cache-dir '/c' hooks run pre-commit"));
        assert!(!is_flows(b"#!/bin/sh\nexit 0\n"));
        // The marker must be a line of its own, not a mention.
        assert!(!is_flows(format!("echo '{MARKER}'\n").as_bytes()));
    }
}
