//! The ledger: what is live, what came before, what is pinned; the local store; sharing through
//! a bare git repository standing in for the team's remote.

use std::path::Path;

use super::*;

fn artifact(digest: char) -> Artifact {
    Artifact {
        digest: digest.to_string().repeat(64),
        kind: ArtifactKind::File,
        size: 3,
        executable: false,
        name: "app.tar".into(),
        label: "//app:bundle".into(),
    }
}

fn entry(env: &str, kind: EntryKind, outcome: Verdict, digest: char, at: i64) -> Entry {
    Entry {
        id: new_id(),
        environment: env.into(),
        label: format!("//:deploy_{env}"),
        kind,
        outcome,
        artifact: artifact(digest),
        commit: None,
        commit_time: None,
        branch: Some("main".into()),
        user: "ci".into(),
        started_ms: at,
        ended_ms: at + 5,
        reason: None,
        approved_by: None,
    }
}

fn no_warnings() -> impl FnMut(String) {
    |w| panic!("unexpected warning: {w}")
}

fn local(dir: &Path) -> Ledger {
    Ledger::open(dir, &LedgerConfig::default(), &mut no_warnings()).unwrap()
}

fn digests(entries: &[&Entry]) -> String {
    entries.iter().map(|e| &e.artifact.digest[..1]).collect()
}

#[test]
fn live_previous_and_pinned() {
    use EntryKind::*;
    use Verdict::*;
    let ws = tempfile::tempdir().unwrap();
    let mut ledger = local(ws.path());
    assert!(
        ledger.live("staging", None).is_none()
            && ledger.previous("staging", "//:deploy_staging").is_empty()
    );
    let history = [
        entry("staging", Deploy, Succeeded, 'a', 10),
        entry("staging", Deploy, Succeeded, 'b', 20),
        entry("staging", Deploy, Succeeded, 'a', 30),
        entry("staging", Deploy, Succeeded, 'c', 40),
        entry("staging", Monitor, Succeeded, 'c', 45),
        entry("staging", Deploy, Failed, 'd', 50),
        entry("staging", Emergency, Succeeded, 'e', 60),
        entry("staging", AutomaticRollback, Succeeded, 'c', 70),
        entry("staging", Monitor, Failed, 'f', 80),
        entry("production", Deploy, Succeeded, '9', 15),
    ];
    // Recorded out of order: the ledger orders by start.
    for e in history.iter().rev() {
        ledger.record(e.clone(), &mut no_warnings()).unwrap();
    }
    let order: Vec<i64> = ledger.entries().iter().map(|e| e.started_ms).collect();
    assert_eq!(order, [10, 15, 20, 30, 40, 45, 50, 60, 70, 80]);
    assert_eq!(ledger.live("staging", None).unwrap().started_ms, 70);
    // Distinct, newest first, never the live one; failed and monitor entries made nothing live;
    // `e`, which the automatic rollback left, is no longer before anything; `a`, deployed
    // again after `b`, comes first.
    assert_eq!(
        digests(&ledger.previous("staging", "//:deploy_staging")),
        "ab"
    );
    assert_eq!(
        ledger.live("production", None).unwrap().artifact.digest,
        "9".repeat(64)
    );
    assert!(ledger
        .previous("production", "//:deploy_production")
        .is_empty());
    assert!(ledger.live("qa", None).is_none());
    assert_eq!(ledger.environments(), ["production", "staging"]);

    let pinned: String = ledger.pinned().iter().map(|a| &a.digest[..1]).collect();
    assert_eq!(pinned, "9ceab");
    let mut ledger = Ledger::open(
        ws.path(),
        &LedgerConfig {
            remote: None,
            keep: 1,
        },
        &mut no_warnings(),
    )
    .unwrap();
    let pinned: String = ledger.pinned().iter().map(|a| &a.digest[..1]).collect();
    assert_eq!(
        pinned, "9cea",
        "the live one, the last `keep` live before it, and the first `keep` a rollback offers"
    );

    // Read back from disk, the same entries.
    assert_eq!(local(ws.path()).entries(), ledger.entries());
    // And pinned in a cache.
    let cache = flow_cache::Cache::open(&ws.path().join("cache")).unwrap();
    assert_eq!(ledger.pin_in(&cache).unwrap(), 4);
    let kinds: Vec<bool> = cache.pins().unwrap().iter().map(|p| p.1).collect();
    assert_eq!(kinds, [false; 4]);
    ledger
        .record(entry("qa", Deploy, Succeeded, '8', 90), &mut no_warnings())
        .unwrap();
    assert_eq!(ledger.pin_in(&cache).unwrap(), 5);
}

#[test]
fn entries_are_files_and_a_bad_one_is_skipped_with_a_warning() {
    let ws = tempfile::tempdir().unwrap();
    let mut ledger = local(ws.path());
    let e = entry("staging", EntryKind::Deploy, Verdict::Succeeded, 'a', 10);
    ledger.record(e.clone(), &mut no_warnings()).unwrap();
    let entries = ledger_dir(ws.path()).join("entries");
    let names = store::names(&ledger_dir(ws.path())).unwrap();
    assert_eq!(names, [format!("10-{}.json", e.id)]);
    let text = std::fs::read_to_string(entries.join(&names[0])).unwrap();
    assert!(text.contains("\"kind\": \"deploy\"") && text.contains("\"outcome\": \"succeeded\""));
    std::fs::write(entries.join("11-broken.json"), "{").unwrap();
    std::fs::write(entries.join(".tmp-x"), "{").unwrap();
    let mut warnings = Vec::new();
    let again = Ledger::open(ws.path(), &LedgerConfig::default(), &mut |w| {
        warnings.push(w)
    })
    .unwrap();
    assert_eq!(again.entries(), [e]);
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("11-broken.json"), "{}", warnings[0]);
}

#[test]
fn ids_are_unique() {
    let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_id()).collect();
    assert_eq!(ids.len(), 1000);
}

/// `git ARGS` in `dir`, which must succeed.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = crate::delivery::git::git(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A bare remote with one commit on `main`, and `n` fresh clones of it (CI runners with an empty
/// `.flow/`).
fn remote_and_clones(root: &Path, n: usize) -> Vec<std::path::PathBuf> {
    let remote = root.join("remote.git");
    let seed = root.join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    git(
        root,
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            remote.to_str().unwrap(),
        ],
    );
    git(&seed, &["init", "-q", "-b", "main"]);
    std::fs::write(seed.join("flow.toml"), "").unwrap();
    git(&seed, &["add", "flow.toml"]);
    git(&seed, &["commit", "-q", "-m", "seed"]);
    git(&seed, &["push", "-q", remote.to_str().unwrap(), "main"]);
    (0..n)
        .map(|i| {
            let clone = root.join(format!("runner{i}"));
            git(
                root,
                &[
                    "clone",
                    "-q",
                    remote.to_str().unwrap(),
                    clone.to_str().unwrap(),
                ],
            );
            clone
        })
        .collect()
}

fn shared() -> LedgerConfig {
    LedgerConfig {
        remote: Some("origin".into()),
        keep: DEFAULT_KEEP,
    }
}

#[test]
fn two_runners_share_the_ledger_through_a_bare_remote() {
    let root = tempfile::tempdir().unwrap();
    let runners = remote_and_clones(root.path(), 3);
    let (a, b, c) = (&runners[0], &runners[1], &runners[2]);
    let mut ledger_a = Ledger::open(a, &shared(), &mut no_warnings()).unwrap();
    let mut ledger_b = Ledger::open(b, &shared(), &mut no_warnings()).unwrap();
    let ea = entry("staging", EntryKind::Deploy, Verdict::Succeeded, 'a', 10);
    let eb = entry("production", EntryKind::Deploy, Verdict::Succeeded, 'b', 20);
    ledger_a.record(ea.clone(), &mut no_warnings()).unwrap();
    ledger_b.record(eb.clone(), &mut no_warnings()).unwrap();
    // B's record fetched A's entry on its way.
    assert_eq!(ledger_b.entries(), [ea.clone(), eb.clone()]);
    for runner in [a, b, c] {
        let ledger = Ledger::open(runner, &shared(), &mut no_warnings()).unwrap();
        assert_eq!(
            ledger.entries(),
            [ea.clone(), eb.clone()],
            "{}",
            runner.display()
        );
    }
    // The user's branches and working tree are untouched; the ledger is its own ref.
    assert_eq!(
        git(a, &["status", "--porcelain", "--untracked-files=no"]),
        ""
    );
    let tree = git(b, &["ls-tree", "-r", "--name-only", "origin/main"]);
    assert_eq!(tree, "flow.toml");
    let files = git(c, &["ls-tree", "-r", "--name-only", "refs/flow/ledger"]);
    assert_eq!(files.lines().count(), 2);
    assert!(files.lines().all(|f| f.starts_with("entries/")), "{files}");
}

#[test]
fn a_push_rejected_because_another_runner_pushed_first_is_retried() {
    let root = tempfile::tempdir().unwrap();
    let runners = remote_and_clones(root.path(), 2);
    let (a, b) = (runners[0].clone(), runners[1].clone());
    let mut ledger_a = Ledger::open(&a, &shared(), &mut no_warnings()).unwrap();
    let mut ledger_b = Ledger::open(&b, &shared(), &mut no_warnings()).unwrap();
    let first = entry("staging", EntryKind::Deploy, Verdict::Succeeded, 'a', 10);
    ledger_a.record(first.clone(), &mut no_warnings()).unwrap();
    let ea = entry("staging", EntryKind::Deploy, Verdict::Succeeded, 'c', 30);
    let eb = entry("staging", EntryKind::Rollback, Verdict::Succeeded, 'b', 20);
    // B records between A's fetch and A's push: A's first push is not a fast-forward.
    let eb2 = eb.clone();
    ledger_a.share_mut().unwrap().before_push = Some(Box::new(move || {
        ledger_b.record(eb2.clone(), &mut no_warnings()).unwrap();
    }));
    ledger_a.record(ea.clone(), &mut no_warnings()).unwrap();
    let all = [first, eb, ea];
    assert_eq!(ledger_a.entries(), all, "A merged B's entry");
    let fresh = Ledger::open(&b, &shared(), &mut no_warnings()).unwrap();
    assert_eq!(fresh.entries(), all);
    // Three commits on the remote's ref: A's first, B's, and A's retry on top of B's.
    assert_eq!(git(&b, &["rev-list", "--count", "refs/flow/ledger"]), "3");
}

#[test]
fn an_unreachable_remote_is_a_warning_and_the_entry_is_pushed_later() {
    let root = tempfile::tempdir().unwrap();
    let runners = remote_and_clones(root.path(), 2);
    let (a, b) = (&runners[0], &runners[1]);
    let remote = root.path().join("remote.git");
    let away = root.path().join("away.git");
    std::fs::rename(&remote, &away).unwrap();
    let mut warnings = Vec::new();
    let mut ledger = Ledger::open(a, &shared(), &mut |w| warnings.push(w)).unwrap();
    let e = entry("staging", EntryKind::Deploy, Verdict::Succeeded, 'a', 10);
    ledger.record(e.clone(), &mut |w| warnings.push(w)).unwrap();
    // Once in a command: the record does not wait for the remote again.
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings
        .iter()
        .all(|w| w.contains("could not reach the ledger's remote `origin`")));
    assert_eq!(local(a).entries(), std::slice::from_ref(&e), "kept locally");
    std::fs::rename(&away, &remote).unwrap();
    // The next command pushes both.
    let mut ledger = Ledger::open(a, &shared(), &mut no_warnings()).unwrap();
    let later = entry("staging", EntryKind::Deploy, Verdict::Succeeded, 'b', 20);
    ledger.record(later.clone(), &mut no_warnings()).unwrap();
    let other = Ledger::open(b, &shared(), &mut no_warnings()).unwrap();
    assert_eq!(other.entries(), [e, later]);
}

#[test]
fn a_remote_outside_a_git_checkout_is_an_error() {
    let ws = tempfile::tempdir().unwrap();
    let err = Ledger::open(ws.path(), &shared(), &mut no_warnings())
        .err()
        .unwrap();
    assert!(err.to_string().contains("needs a git checkout"), "{err}");
}
