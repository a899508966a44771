//! `flow hooks install / uninstall` and the pre-commit check, through real `git commit`s in
//! fixture repositories made here: a staged bad file blocks the commit (HEAD does not move),
//! bad content left unstaged does not, an unrelated commit runs nothing; a user's hook is
//! chained and restored byte for byte, mode included.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::support::{flow_bin, git, Ws};

/// A repository whose `//lib:check` (tagged `precommit`) fails when `lib/a.txt` says `bad`,
/// and whose `//other:o` is not tagged; committed on `main`.
fn repo() -> Ws {
    let ws = Ws::bare()
        .file("flow.toml", "")
        .file(".gitignore", ".flow/\nflow-out/\n")
        .file("lib/a.txt", "good\n")
        .file(
            "lib/BUILD",
            "task(name = \"check\", srcs = [\"a.txt\"], tags = [\"precommit\"],\n     \
             cmd = \"if grep -q bad a.txt; then echo 'a.txt: bad line'; exit 1; fi\")\n",
        )
        .file("other/o.txt", "o\n")
        .file(
            "other/BUILD",
            "task(name = \"o\", srcs = [\"o.txt\"], cmd = \"cat o.txt\")\n",
        );
    git(ws.path(), &["init", "-q", "-b", "main"]);
    git(ws.path(), &["add", "-A"]);
    git(ws.path(), &["commit", "-q", "-m", "base"]);
    ws
}

/// `git commit -m MESSAGE` as a user runs it (hooks on): its exit code and output.
fn commit(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new("git")
        .current_dir(dir)
        .args(["commit", "-q", "-m", "change"])
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .env_remove("FLOW_CACHE_DIR")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn head(dir: &Path) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(["rev-parse", "HEAD"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn a_staged_bad_file_blocks_the_commit() {
    let ws = repo();
    ws.run(&["hooks", "install"]).ok();
    let before = head(ws.path());
    ws.write("lib/a.txt", b"bad\n");
    git(ws.path(), &["add", "lib/a.txt"]);
    let (code, out) = commit(ws.path(), &[]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("[FAILED] //lib:check"), "{out}");
    assert!(out.contains("a.txt: bad line"), "the log is shown: {out}");
    assert!(out.contains("the commit is aborted"), "{out}");
    assert_eq!(head(ws.path()), before, "HEAD did not move");
    // `git commit -a` hands the hook a temporary index: it is the one checked.
    ws.write("lib/a.txt", b"good\nbad\n");
    let (code, out) = commit(ws.path(), &["-a"]);
    assert_ne!(code, 0, "{out}");
    assert_eq!(head(ws.path()), before);
}

#[test]
fn bad_content_left_unstaged_does_not_block() {
    let ws = repo();
    ws.run(&["hooks", "install"]).ok();
    ws.write("lib/a.txt", b"good, edited\n");
    git(ws.path(), &["add", "lib/a.txt"]);
    ws.write("lib/a.txt", b"bad\n");
    ws.write("lib/untracked.txt", b"bad\n");
    let before = head(ws.path());
    let (code, out) = commit(ws.path(), &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("[RAN] //lib:check"), "{out}");
    assert!(out.contains("a copy of the index"), "{out}");
    assert_ne!(head(ws.path()), before);
    // The work tree kept its unstaged edit and untracked file; the copy is gone.
    assert_eq!(
        std::fs::read(ws.path().join("lib/a.txt")).unwrap(),
        b"bad\n"
    );
    assert!(ws.path().join("lib/untracked.txt").exists());
    let tmp = ws.path().join(".flow/tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    let status = Command::new("git")
        .current_dir(ws.path())
        .args(["status", "--porcelain"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&status.stdout),
        " M lib/a.txt\n?? lib/untracked.txt\n"
    );
}

#[test]
fn an_unrelated_commit_runs_nothing() {
    let ws = repo();
    ws.run(&["hooks", "install"]).ok();
    ws.write("other/o.txt", b"o2\n");
    git(ws.path(), &["add", "other/o.txt"]);
    let (code, out) = commit(ws.path(), &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("the staged changes affect none of the 1 target(s) tagged `precommit`"),
        "{out}"
    );
    assert!(!out.contains("[RAN]"), "{out}");
    // A BUILD edit that leaves the tagged target's definition as it was: decided by the
    // static keys (`HEAD` evaluated), still nothing.
    ws.write(
        "other/BUILD",
        b"task(name = \"o\", srcs = [\"o.txt\"], cmd = \"cat -n o.txt\")\n",
    );
    git(ws.path(), &["add", "other/BUILD"]);
    let (code, out) = commit(ws.path(), &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("affect none"), "{out}");
}

#[test]
fn the_first_commit_checks_everything_staged() {
    let ws = Ws::bare()
        .file("flow.toml", "")
        .file(".gitignore", ".flow/\nflow-out/\n")
        .file("lib/a.txt", "bad\n")
        .file(
            "lib/BUILD",
            "task(name = \"check\", srcs = [\"a.txt\"], tags = [\"precommit\"], \
             cmd = \"! grep -q bad a.txt\")\n",
        );
    git(ws.path(), &["init", "-q", "-b", "main"]);
    ws.run(&["hooks", "install"]).ok();
    git(ws.path(), &["add", "-A"]);
    let (code, out) = commit(ws.path(), &[]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("[FAILED] //lib:check"), "{out}");
    ws.write("lib/a.txt", b"good\n");
    git(ws.path(), &["add", "-A"]);
    let (code, out) = commit(ws.path(), &[]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_users_hook_is_chained_and_restored_byte_for_byte() {
    let ws = repo();
    let hooks = ws.path().join(".git/hooks");
    let user = hooks.join("pre-commit");
    let text = b"#!/bin/sh\n# the user's\necho user-hook-ran\n[ ! -e block ]\n";
    std::fs::write(&user, text).unwrap();
    std::fs::set_permissions(&user, std::fs::Permissions::from_mode(0o750)).unwrap();
    let out = ws.run(&["hooks", "install"]).ok().to_owned();
    assert!(out.contains("runs the hook it replaced first"), "{out}");
    assert_eq!(
        std::fs::read(hooks.join("pre-commit.flow-saved")).unwrap(),
        text
    );
    // Installing twice never takes flow's hook for the user's.
    ws.run(&["hooks", "install"]).ok();
    assert_eq!(
        std::fs::read(hooks.join("pre-commit.flow-saved")).unwrap(),
        text
    );
    // Chained: the user's hook runs, and its failure blocks the commit before flow's check.
    ws.write("other/o.txt", b"o2\n");
    git(ws.path(), &["add", "other/o.txt"]);
    ws.write("block", b"");
    let before = head(ws.path());
    let (code, out) = commit(ws.path(), &[]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("user-hook-ran"), "{out}");
    assert!(!out.contains("flow: pre-commit"), "{out}");
    assert_eq!(head(ws.path()), before);
    std::fs::remove_file(ws.path().join("block")).unwrap();
    let (code, out) = commit(ws.path(), &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("user-hook-ran") && out.contains("flow: pre-commit"),
        "{out}"
    );
    // Uninstall: the user's hook is back, bytes and mode.
    let out = ws.run(&["hooks", "uninstall"]).ok().to_owned();
    assert!(out.contains("restored"), "{out}");
    assert_eq!(std::fs::read(&user).unwrap(), text);
    let mode = std::fs::metadata(&user).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o750);
    assert!(!hooks.join("pre-commit.flow-saved").exists());
    // A hook that is not flow's is never removed.
    let out = ws.run(&["hooks", "uninstall"]).ok().to_owned();
    assert!(out.contains("is not flow's: left as it is"), "{out}");
    assert_eq!(std::fs::read(&user).unwrap(), text);
}

#[test]
fn install_twice_then_uninstall_twice() {
    let ws = repo();
    ws.run(&["hooks", "install"]).ok();
    let hook = ws.path().join(".git/hooks/pre-commit");
    let first = std::fs::read(&hook).unwrap();
    let out = ws.run(&["hooks", "install"]).ok().to_owned();
    assert!(!out.contains("replaced"), "{out}");
    assert_eq!(std::fs::read(&hook).unwrap(), first);
    assert!(!ws.path().join(".git/hooks/pre-commit.flow-saved").exists());
    let mode = std::fs::metadata(&hook).unwrap().permissions().mode();
    assert_eq!(mode & 0o111, 0o111, "executable");
    let out = ws.run(&["hooks", "uninstall"]).ok().to_owned();
    assert!(out.contains("removed flow's pre-commit hook"), "{out}");
    assert!(!hook.exists());
    let out = ws.run(&["hooks", "uninstall"]).ok().to_owned();
    assert!(
        out.contains("no pre-commit hook of flow's is installed"),
        "{out}"
    );
}

#[test]
fn core_hooks_path_and_a_workspace_below_the_top() {
    let ws = Ws::bare()
        .file("sub/flow.toml", "")
        .file(".gitignore", ".flow/\nflow-out/\n")
        .file("sub/lib/a.txt", "good\n")
        .file(
            "sub/lib/BUILD",
            "task(name = \"check\", srcs = [\"a.txt\"], tags = [\"precommit\"], \
             cmd = \"! grep -q bad a.txt\")\n",
        );
    git(ws.path(), &["init", "-q", "-b", "main"]);
    git(ws.path(), &["config", "core.hooksPath", "my-hooks"]);
    git(ws.path(), &["add", "-A"]);
    git(ws.path(), &["commit", "-q", "-m", "base"]);
    ws.run_in(&ws.path().join("sub/lib"), &["hooks", "install"])
        .ok();
    assert!(ws.path().join("my-hooks/pre-commit").exists());
    assert!(!ws.path().join(".git/hooks/pre-commit").exists());
    ws.write("sub/lib/a.txt", b"bad\n");
    git(ws.path(), &["add", "-A"]);
    let (code, out) = commit(&ws.path().join("sub"), &[]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("[FAILED] //lib:check"), "{out}");
}

#[test]
fn the_hook_finds_flow_on_path_when_the_installing_binary_is_gone() {
    let ws = repo();
    // Install with a copy of the binary, then remove the copy.
    let bin = tempfile::tempdir().unwrap();
    let copy = bin.path().join("flow-copy");
    std::fs::copy(flow_bin(), &copy).unwrap();
    let run = Command::new(&copy)
        .current_dir(ws.path())
        .args(["hooks", "install"])
        .output()
        .unwrap();
    assert!(run.status.success());
    std::fs::remove_file(&copy).unwrap();
    ws.write("lib/a.txt", b"bad\n");
    git(ws.path(), &["add", "lib/a.txt"]);
    // Neither there nor on PATH (git's and sh's directories only): a clear message, the
    // commit blocked.
    let bare_path = ["git", "sh", "dirname"]
        .iter()
        .filter_map(|tool| {
            let out = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .ok()?;
            let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            Some(Path::new(&path).parent()?.display().to_string())
        })
        .collect::<Vec<_>>()
        .join(":");
    let commit_with = |path: &str| {
        let out = Command::new("git")
            .current_dir(ws.path())
            .args(["commit", "-q", "-m", "bad"])
            .env("PATH", path)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, out) = commit_with(&bare_path);
    if !out.contains("[FAILED]") {
        // (Unless a `flow` is installed beside git: then that one runs.)
        assert!(!ok);
        assert!(out.contains("flow is neither at"), "{out}");
    }
    // On PATH: used.
    let path_dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(flow_bin(), path_dir.path().join("flow")).unwrap();
    let (ok, out) = commit_with(&format!("{}:{bare_path}", path_dir.path().display()));
    assert!(!ok);
    assert!(out.contains("[FAILED] //lib:check"), "{out}");
}

/// Regression (adversarial run): a tagged check reading a symlink: staging a change to the
/// link's target (not the link) was taken as unrelated, and the commit went through.
#[test]
fn a_change_to_a_linked_sources_target_is_checked() {
    let ws = repo().file("data/real.txt", "fine\n").file(
        "link/BUILD",
        "task(name = \"c\", srcs = [\"l.txt\"], tags = [\"precommit\"], \
             cmd = \"! grep -q bad l.txt\")\n",
    );
    std::os::unix::fs::symlink("../data/real.txt", ws.path().join("link/l.txt")).unwrap();
    git(ws.path(), &["add", "-A"]);
    git(ws.path(), &["commit", "-q", "-m", "link"]);
    ws.run(&["hooks", "install"]).ok();
    let before = head(ws.path());
    ws.write("data/real.txt", b"bad\n");
    git(ws.path(), &["add", "data/real.txt"]);
    let (code, out) = commit(ws.path(), &[]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("[FAILED] //link:c"), "{out}");
    assert_eq!(head(ws.path()), before);
}

/// Regression (adversarial run): in the copy of the index the hook builds, a committed link
/// leading out of the repository dangled, so analysis failed and every commit was blocked.
/// It reaches the same file from the copy now.
#[test]
fn a_source_linked_out_of_the_repository_works_in_the_index_copy() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("out.txt"), "fine\n").unwrap();
    let ws = repo().file("g/v.txt", "v1\n").file(
        "g/BUILD",
        "task(name = \"c\", srcs = [\"out.txt\", \"v.txt\"], tags = [\"precommit\"], \
             cmd = \"! grep -q BAD out.txt v.txt\")\n",
    );
    assert_eq!(outside.path().parent(), ws.path().parent());
    let name = outside.path().file_name().unwrap().to_str().unwrap();
    std::os::unix::fs::symlink(format!("../../{name}/out.txt"), ws.path().join("g/out.txt"))
        .unwrap();
    git(ws.path(), &["add", "-A"]);
    git(ws.path(), &["commit", "-q", "-m", "link"]);
    ws.run(&["hooks", "install"]).ok();
    ws.write("g/v.txt", b"v2\n");
    git(ws.path(), &["add", "g/v.txt"]);
    // Untracked: the check runs in a copy of the index.
    ws.write("g/untracked.txt", b"u\n");
    let (code, out) = commit(ws.path(), &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("//g:c"), "the check ran: {out}");
}
