//! Git facts about the workspace's checkout, for the ledger: the commit, its time and the
//! branch; and who runs flow. Read by shelling out to `git` (never prompting); outside a git
//! checkout, or without `git`, there are no facts, which is not an error.

use std::path::Path;
use std::process::Command;

/// What the checkout is at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitFacts {
    /// The full hex id of `HEAD`.
    pub commit: String,
    /// `HEAD`'s committer time, in seconds since the Unix epoch.
    pub commit_time: i64,
    /// The branch checked out; when `HEAD` is detached (as in CI), the branch CI names in
    /// `GITHUB_HEAD_REF` (pull requests) or `GITHUB_REF_NAME`.
    pub branch: Option<String>,
}

/// A `git` command run in `dir`, never prompting for credentials.
pub fn git(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null());
    cmd
}

/// The trimmed standard output of a successful `git ARGS` in `dir`.
fn output(dir: &Path, args: &[&str]) -> Option<String> {
    let out = git(dir).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The checkout's facts; `None` outside a git checkout (or one without a commit yet).
pub fn facts(workspace_root: &Path) -> Option<GitFacts> {
    let line = output(workspace_root, &["log", "-1", "--format=%H %ct", "HEAD"])?;
    let (commit, time) = line.split_once(' ')?;
    let branch = output(
        workspace_root,
        &["symbolic-ref", "--quiet", "--short", "HEAD"],
    )
    .filter(|b| !b.is_empty())
    .or_else(ci_branch);
    Some(GitFacts {
        commit: commit.to_owned(),
        commit_time: time.parse().ok()?,
        branch,
    })
}

/// The branch a CI run names for a detached `HEAD`.
fn ci_branch() -> Option<String> {
    ["GITHUB_HEAD_REF", "GITHUB_REF_NAME"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|b| !b.trim().is_empty())
}

/// Who runs flow: `$USER`, else the account name of the process's uid, else the uid.
pub fn current_user() -> String {
    if let Ok(user) = std::env::var("USER") {
        if !user.trim().is_empty() {
            return user;
        }
    }
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => user.name,
        _ => uid.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(dir: &Path, args: &[&str]) {
        let status = git(dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_DATE", "1700000000 +0000")
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    }

    #[test]
    fn facts_of_a_checkout_and_of_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(facts(dir.path()), None, "not a checkout");
        run(dir.path(), &["init", "-q", "-b", "main"]);
        assert_eq!(facts(dir.path()), None, "no commit yet");
        std::fs::write(dir.path().join("f"), "x").unwrap();
        run(dir.path(), &["add", "f"]);
        run(dir.path(), &["commit", "-q", "-m", "one"]);
        let f = facts(dir.path()).unwrap();
        assert_eq!(f.commit.len(), 40);
        assert_eq!(f.commit_time, 1_700_000_000);
        assert_eq!(f.branch.as_deref(), Some("main"));
        // Detached: the branch comes from CI's variables, when set (this process's environment
        // is not changed here, so only the absence of a local branch is checked).
        run(dir.path(), &["checkout", "-q", "--detach"]);
        let detached = facts(dir.path()).unwrap();
        assert_eq!(detached.commit, f.commit);
        assert_eq!(detached.branch, ci_branch());
    }

    #[test]
    fn a_user_is_always_named() {
        assert!(!current_user().is_empty());
    }
}
