//! Tests of the executor: `SandboxExecutor` with real `/bin/sh` processes on temporary
//! workspaces, and `FakeExecutor` on paused (virtual) tokio time.
//!
//! Liveness of a background process is read from `/proc/<pid>/stat` (gone, or a zombie, counts as
//! dead) rather than `kill -0`: where PID 1 does not reap orphans, as in this container, a killed
//! orphan stays a zombie and `kill -0` keeps succeeding.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use super::*;

/// A temporary workspace with package `app`, a sandbox root beside it, and a spec builder.
struct Fixture {
    _dir: TempDir,
    ws: PathBuf,
    executor: SandboxExecutor,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        fs::create_dir_all(ws.join("app")).unwrap();
        fs::write(ws.join("app/input.txt"), "declared input\n").unwrap();
        fs::write(ws.join("app/undeclared.txt"), "secret sauce\n").unwrap();
        let executor = SandboxExecutor::new(dir.path().join("cache/sandbox"));
        Fixture {
            _dir: dir,
            ws,
            executor,
        }
    }

    fn spec(&self, cmd: &str) -> ActionSpec {
        ActionSpec {
            label: "//app:t".into(),
            cmd: cmd.into(),
            srcs_file: None,
            package: "app".into(),
            inputs: vec![Input {
                dest: "app/input.txt".into(),
                source: self.ws.join("app/input.txt"),
                executable: false,
                is_dir: false,
                digest: None,
            }],
            outputs: Vec::new(),
            env: BTreeMap::from([("PATH".into(), "/usr/bin:/bin".into())]),
            secrets: BTreeMap::new(),
            timeout: None,
            sandbox: true,
            workspace_root: self.ws.clone(),
            live: None,
            gate: None,
        }
    }

    async fn run(&self, spec: ActionSpec) -> ExecResult {
        self.executor
            .run(spec, Cancel::never(), Slots::new(1).ticket().await)
            .await
    }

    async fn run_in(&self, spec: ActionSpec, slots: &Slots) -> ExecResult {
        let r = self
            .executor
            .run(spec, Cancel::never(), slots.ticket().await)
            .await;
        self.executor.cleanup(&r);
        r
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Alive: exists and is not a zombie.
/// Whether `pid` is still alive 2 s after it was killed: SIGKILL is delivered asynchronously,
/// so a check right after the kill can see it still running on a busy machine.
async fn alive_after_grace(pid: i32) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while alive(pid) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    alive(pid)
}

fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().chars().next());
            !matches!(state, Some(Some('Z' | 'X')))
        }
        Err(_) => false,
    }
}

async fn read_pid(path: &Path) -> i32 {
    for _ in 0..100 {
        if let Ok(s) = fs::read_to_string(path) {
            if let Ok(pid) = s.trim().parse() {
                return pid;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no pid in `{}`", path.display());
}

#[tokio::test]
async fn output_is_collected_under_exec_root_and_package() {
    let f = Fixture::new();
    let mut spec = f.spec("mkdir -p gen && tr a-z A-Z < input.txt > gen/out.txt");
    spec.outputs = vec!["gen/out.txt".into()];
    let r = f.run(spec).await;
    assert_eq!(r.status, Status::Exited(0), "{}", text(&r.stderr));
    assert!(r.missing_outputs.is_empty(), "{:?}", r.output_problems);
    assert_eq!(
        fs::read_to_string(r.exec_root.join("app/gen/out.txt")).unwrap(),
        "DECLARED INPUT\n"
    );
    assert!(r.stray_writes.is_empty(), "{:?}", r.stray_writes);
    let dir = r.sandbox_dir.clone().unwrap();
    assert!(dir.starts_with(&f.executor.sandbox_root));
    f.executor.cleanup(&r);
    assert!(!dir.exists());
}

#[tokio::test]
async fn large_and_interleaved_output_is_captured_whole() {
    // The pipe readers start with a small buffer and grow it: 300,000 numbered lines on stdout
    // (~2 MB, many reads) and a few on stderr arrive complete and in order.
    let f = Fixture::new();
    let r = f
        .run(f.spec("seq 1 300000; echo err1 >&2; seq 5 | tr -d '\\n'; echo err2 >&2"))
        .await;
    assert_eq!(r.status, Status::Exited(0), "{}", text(&r.stderr));
    let mut expected: String = (1..=300_000).map(|n| format!("{n}\n")).collect();
    expected.push_str("12345");
    assert_eq!(text(&r.stdout).len(), expected.len());
    assert!(text(&r.stdout) == expected);
    assert_eq!(text(&r.stderr), "err1\nerr2\n");
}

#[tokio::test]
async fn output_parent_directories_are_created_first() {
    let f = Fixture::new();
    let mut spec = f.spec("echo hi > a/b/out.txt");
    spec.outputs = vec!["a/b/out.txt".into()];
    let r = f.run(spec).await;
    assert_eq!(r.status, Status::Exited(0), "{}", text(&r.stderr));
    assert!(r.missing_outputs.is_empty());
    assert!(r.stray_writes.is_empty(), "{:?}", r.stray_writes);
}

#[tokio::test]
async fn declared_input_is_readable_and_undeclared_file_is_not() {
    let f = Fixture::new();
    let r = f.run(f.spec("cat input.txt")).await;
    assert_eq!(r.status, Status::Exited(0), "{}", text(&r.stderr));
    assert_eq!(text(&r.stdout), "declared input\n");

    let r = f.run(f.spec("cat undeclared.txt")).await;
    assert_ne!(r.status, Status::Exited(0));
    assert!(
        text(&r.stderr).contains("undeclared.txt"),
        "{}",
        text(&r.stderr)
    );
    assert!(!text(&r.stdout).contains("secret sauce"));
}

#[tokio::test]
async fn writing_into_an_input_does_not_change_the_workspace_source() {
    let f = Fixture::new();
    let r = f
        .run(f.spec("echo clobbered > input.txt; echo more >> input.txt; chmod 777 input.txt"))
        .await;
    assert_eq!(r.status, Status::Exited(0), "{}", text(&r.stderr));
    assert_eq!(
        fs::read_to_string(f.ws.join("app/input.txt")).unwrap(),
        "declared input\n"
    );
    // The edit of the private copy is reported.
    assert_eq!(r.stray_writes, vec!["app/input.txt".to_string()]);
}

#[tokio::test]
async fn executable_inputs_can_be_run() {
    let f = Fixture::new();
    fs::create_dir_all(f.ws.join("tools")).unwrap();
    fs::write(
        f.ws.join("tools/hello.sh"),
        "#!/bin/sh\necho hello from tool\n",
    )
    .unwrap();
    let mut spec = f.spec("../tools/hello.sh");
    spec.inputs.push(Input {
        dest: "tools/hello.sh".into(),
        source: f.ws.join("tools/hello.sh"),
        executable: true,
        is_dir: false,
        digest: None,
    });
    let r = f.run(spec.clone()).await;
    assert_eq!(r.status, Status::Exited(0), "{}", text(&r.stderr));
    assert_eq!(text(&r.stdout), "hello from tool\n");

    // Not declared executable: not executable in the sandbox, whatever the source's mode is by
    // now (the flag is what the action key holds; issue 14: a `chmod` under flow-out/ reached
    // a dependent this way).
    spec.inputs[1].executable = false;
    let r = f.run(spec.clone()).await;
    assert_eq!(r.status, Status::Exited(126), "{}", text(&r.stderr));
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    fs::set_permissions(f.ws.join("tools/hello.sh"), mode).unwrap();
    let r = f.run(spec).await;
    assert_eq!(r.status, Status::Exited(126), "{}", text(&r.stderr));
}

/// A dependency's tree at `flow-out/dep/site` (with `flow-out/dep/secret.txt` beside it) and a
/// spec running `cmd` with the tree staged at `dep/site`; directory inputs bound if `bind`.
fn tree_fixture(bind: bool, cmd: &str) -> (Fixture, ActionSpec, PathBuf) {
    let mut f = Fixture::new();
    f.executor.bind_dir_inputs = bind;
    let tree = f.ws.join("flow-out/dep/site");
    fs::create_dir_all(tree.join("css")).unwrap();
    fs::write(tree.join("index.html"), "<html>").unwrap();
    fs::write(tree.join("css/a.css"), "body{}").unwrap();
    std::os::unix::fs::symlink("index.html", tree.join("home.html")).unwrap();
    fs::write(f.ws.join("flow-out/dep/secret.txt"), "not an input").unwrap();
    let mut spec = f.spec(cmd);
    spec.inputs.push(Input {
        dest: "dep/site".into(),
        source: tree.clone(),
        executable: false,
        is_dir: true,
        digest: None,
    });
    (f, spec, tree)
}

/// Every file below `dir`, relative, with its content.
fn files_of(dir: &Path) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let path = e.path();
            let rel = path.strip_prefix(dir).unwrap().display().to_string();
            let kind = e.file_type().unwrap();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_symlink() {
                files.insert(
                    rel,
                    format!("-> {}", fs::read_link(&path).unwrap().display()),
                );
            } else {
                files.insert(rel, fs::read_to_string(&path).unwrap());
            }
        }
    }
    files
}

#[tokio::test]
async fn directory_input_is_a_directory_of_its_files() {
    for bind in [true, false] {
        let cmd =
            "find ../dep/site -type f | sort; cat ../dep/site/home.html ../dep/site/css/a.css";
        let (f, spec, _) = tree_fixture(bind, cmd);
        let r = f.run_in(spec, &Slots::new(1)).await;
        assert_eq!(r.status, Status::Exited(0), "{}", text(&r.stderr));
        assert_eq!(
            text(&r.stdout),
            "../dep/site/css/a.css\n../dep/site/index.html\n<html>body{}",
            "bind: {bind}"
        );
    }
}

#[tokio::test]
async fn directory_input_cannot_be_changed_through_the_sandbox() {
    for bind in [true, false] {
        let cmd = "echo x >> ../dep/site/index.html; echo y > ../dep/site/css/a.css; \
                   rm -f ../dep/site/home.html; mkdir ../dep/site/new; chmod 777 ../dep/site/css; \
                   echo z >> ../dep/site/index.html && echo written";
        let (f, spec, tree) = tree_fixture(bind, cmd);
        let before = files_of(&tree);
        let r = f.run_in(spec, &Slots::new(1)).await;
        assert_eq!(files_of(&tree), before, "bind: {bind}: the tree changed");
        if bind {
            // Read-only for root too: each write fails.
            assert_eq!(text(&r.stdout), "", "bind: a write went through");
            assert!(
                text(&r.stderr).contains("Read-only file system"),
                "{}",
                text(&r.stderr)
            );
        } else {
            // Root writes into its private copy; the writes are reported, never kept.
            assert!(!r.stray_writes.is_empty() || !text(&r.stderr).is_empty());
        }
    }
}

#[tokio::test]
async fn no_path_through_a_directory_input_leads_outside_it() {
    for bind in [true, false] {
        let cmd = "ls ../dep/site/..; cat ../dep/site/../secret.txt || echo refused";
        let (f, spec, _) = tree_fixture(bind, cmd);
        let r = f.run_in(spec, &Slots::new(1)).await;
        assert_eq!(text(&r.stdout), "site\nrefused\n", "bind: {bind}");
    }
}

#[tokio::test]
async fn binds_are_gone_with_the_action() {
    let (f, spec, _) = tree_fixture(true, "cat ../dep/site/index.html");
    let r = f.run(spec).await;
    assert_eq!(r.status, Status::Exited(0), "{}", text(&r.stderr));
    let exec = r.exec_root.display().to_string();
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&exec),
        "a bind leaked into flow's namespace"
    );
    assert_eq!(
        fs::read_dir(r.exec_root.join("dep/site")).unwrap().count(),
        0,
        "flow sees the staged input as an empty directory"
    );
    f.executor.cleanup(&r);
    assert!(!r.exec_root.exists());
}

#[tokio::test]
async fn missing_and_wrong_kind_outputs_are_reported() {
    let f = Fixture::new();
    // flow created `not_a_dir/` before the run; the command replaces it with a file.
    let mut spec = f.spec("mkdir not_a_file && rmdir not_a_dir && echo x > not_a_dir");
    spec.outputs = vec!["never.txt".into(), "not_a_file".into(), "not_a_dir/".into()];
    let r = f.run(spec).await;
    assert_eq!(r.status, Status::Exited(0));
    assert_eq!(
        r.missing_outputs,
        vec!["never.txt", "not_a_file", "not_a_dir/"]
    );
    let problems = r.output_problems.join("\n");
    assert!(
        problems.contains("`never.txt` was not created"),
        "{problems}"
    );
    assert!(
        problems.contains("`not_a_file` is a directory"),
        "{problems}"
    );
    assert!(
        problems.contains("`not_a_dir/` is a file, not a directory"),
        "{problems}"
    );
}

#[tokio::test]
async fn directory_output_is_created_and_collected() {
    let f = Fixture::new();
    let mut spec = f.spec("echo a > site/a.html && mkdir site/sub && echo b > site/sub/b.html");
    spec.outputs = vec!["site/".into()];
    let r = f.run(spec).await;
    assert_eq!(r.status, Status::Exited(0), "{}", text(&r.stderr));
    assert!(r.missing_outputs.is_empty(), "{:?}", r.output_problems);
    assert_eq!(
        fs::read_to_string(r.exec_root.join("app/site/sub/b.html")).unwrap(),
        "b\n"
    );
    assert!(r.stray_writes.is_empty(), "{:?}", r.stray_writes);
}

#[tokio::test]
async fn secrets_are_masked_in_stdout_and_stderr() {
    let f = Fixture::new();
    let mut spec =
        f.spec("echo token=$API_TOKEN; echo \"err $API_TOKEN$API_TOKEN\" >&2; echo pin=$PIN");
    spec.secrets = BTreeMap::from([
        ("API_TOKEN".into(), "s3cr3t-value".into()),
        ("PIN".into(), "123".into()),
    ]);
    let r = f.run(spec).await;
    assert_eq!(r.status, Status::Exited(0));
    assert_eq!(text(&r.stdout), "token=***\npin=123\n");
    assert_eq!(text(&r.stderr), "err ******\n");
}

#[tokio::test]
async fn environment_is_exactly_the_declared_one() {
    let f = Fixture::new();
    let mut spec = f.spec("env");
    spec.env.insert("MODE".into(), "ci".into());
    spec.env.insert("HOME".into(), "/root".into());
    spec.secrets.insert("TOKEN".into(), "abcdefgh".into());
    let r = f.run(spec).await;
    assert_eq!(r.status, Status::Exited(0));
    let dir = r.sandbox_dir.clone().unwrap();
    let vars: BTreeMap<String, String> = text(&r.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let names: Vec<&str> = vars.keys().map(String::as_str).collect();
    // `PWD` is set by the shell itself.
    assert_eq!(names, ["HOME", "MODE", "PATH", "PWD", "TMPDIR", "TOKEN"]);
    assert_eq!(vars["HOME"], dir.join("home").display().to_string());
    assert_eq!(vars["TMPDIR"], dir.join("tmp").display().to_string());
    assert_eq!(vars["TOKEN"], "***");
    assert_eq!(vars["PWD"], dir.join("exec/app").display().to_string());
}

#[tokio::test]
async fn home_and_tmpdir_are_writable_and_not_stray() {
    let f = Fixture::new();
    let r = f
        .run(f.spec("echo x > $HOME/.rc && echo y > $TMPDIR/scratch"))
        .await;
    assert_eq!(r.status, Status::Exited(0), "{}", text(&r.stderr));
    assert!(r.stray_writes.is_empty(), "{:?}", r.stray_writes);
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let f = Fixture::new();
    let mut spec = f.spec("sleep 30 & echo $! > $TMPDIR/bg.pid; sleep 30");
    spec.timeout = Some(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let r = f.run(spec).await;
    let took = started.elapsed();
    assert_eq!(r.status, Status::TimedOut);
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let pid = read_pid(&r.sandbox_dir.clone().unwrap().join("tmp/bg.pid")).await;
    assert!(
        !alive_after_grace(pid).await,
        "background sleep {pid} survived the timeout"
    );
}

#[tokio::test]
async fn a_command_ignoring_sigterm_is_killed_after_the_grace() {
    let f = Fixture::new();
    let mut spec = f.spec("trap '' TERM; echo started; while :; do sleep 0.05; done");
    spec.timeout = Some(Duration::from_millis(200));
    let started = std::time::Instant::now();
    let r = f.run(spec).await;
    let took = started.elapsed();
    assert_eq!(r.status, Status::TimedOut);
    assert!(took >= KILL_GRACE, "took {took:?}");
    assert!(took < KILL_GRACE + Duration::from_secs(2), "took {took:?}");
    assert_eq!(text(&r.stdout), "started\n");
}

#[tokio::test]
async fn cancel_kills_the_whole_process_group() {
    let f = Fixture::new();
    let spec = f.spec("sleep 30 & echo $! > $TMPDIR/bg.pid; sleep 30");
    let (handle, cancel) = Cancel::new();
    let started = std::time::Instant::now();
    let run = f.executor.run(spec, cancel, Slots::new(1).ticket().await);
    let canceller = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        handle.cancel();
    };
    let (r, ()) = tokio::join!(run, canceller);
    assert_eq!(r.status, Status::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(3));
    let pid = read_pid(&r.sandbox_dir.clone().unwrap().join("tmp/bg.pid")).await;
    assert!(
        !alive_after_grace(pid).await,
        "background sleep {pid} survived the cancel"
    );
}

#[tokio::test]
async fn orphans_do_not_outlive_a_normal_exit() {
    let f = Fixture::new();
    let spec = f.spec("sleep 30 > /dev/null 2>&1 & echo $! > $TMPDIR/bg.pid; echo done");
    let started = std::time::Instant::now();
    let r = f.run(spec).await;
    assert_eq!(r.status, Status::Exited(0));
    assert_eq!(text(&r.stdout), "done\n");
    assert!(started.elapsed() < Duration::from_secs(2));
    let pid = read_pid(&r.sandbox_dir.clone().unwrap().join("tmp/bg.pid")).await;
    assert!(
        !alive_after_grace(pid).await,
        "orphan {pid} survived the action"
    );
}

#[tokio::test]
async fn an_orphan_holding_stdout_does_not_hang_the_run() {
    let f = Fixture::new();
    // The background sleep inherits stdout; killing the group closes the pipe.
    let r = f.run(f.spec("sleep 30 & echo out")).await;
    assert_eq!(r.status, Status::Exited(0));
    assert_eq!(text(&r.stdout), "out\n");
}

#[tokio::test]
async fn exit_codes_and_signals_are_reported() {
    let f = Fixture::new();
    assert_eq!(f.run(f.spec("exit 3")).await.status, Status::Exited(3));
    assert_eq!(
        f.run(f.spec("kill -9 $$")).await.status,
        Status::Signaled(9)
    );
}

#[tokio::test]
async fn stray_writes_are_reported_but_outputs_and_inputs_are_not() {
    let f = Fixture::new();
    let mut spec = f.spec("echo o > out.txt; echo s > stray.txt; mkdir -p cache/x; echo c > cache/x/f; echo r > ../root.txt; cat input.txt");
    spec.outputs = vec!["out.txt".into()];
    let r = f.run(spec).await;
    assert_eq!(r.status, Status::Exited(0), "{}", text(&r.stderr));
    assert_eq!(
        r.stray_writes,
        vec!["app/cache/", "app/stray.txt", "root.txt"]
    );
}

#[tokio::test]
async fn bad_paths_and_missing_inputs_fail_before_running() {
    let f = Fixture::new();
    let mut spec = f.spec("echo ran");
    spec.outputs = vec!["../escape.txt".into()];
    let r = f.run(spec).await;
    assert!(
        matches!(&r.status, Status::SpawnFailed(m) if m.contains("`../escape.txt`")),
        "{:?}",
        r.status
    );

    let mut spec = f.spec("echo ran");
    spec.inputs[0].source = f.ws.join("app/absent.txt");
    let r = f.run(spec).await;
    assert!(
        matches!(&r.status, Status::SpawnFailed(m) if m.contains("cannot stage input `app/input.txt`")),
        "{:?}",
        r.status
    );
    assert!(r.stdout.is_empty());
    assert!(r.sandbox_dir.is_none());
    // The failed sandbox was removed at once.
    let left: Vec<_> = fs::read_dir(&f.executor.sandbox_root).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn without_sandbox_the_command_runs_in_the_real_package_dir() {
    let f = Fixture::new();
    fs::write(f.ws.join("app/stale.txt"), "from an earlier run").unwrap();
    let mut spec =
        f.spec("cat undeclared.txt > out/copy.txt; pwd; test ! -e stale.txt && echo stale-gone");
    spec.sandbox = false;
    spec.outputs = vec!["out/copy.txt".into(), "stale.txt".into()];
    let r = f.run(spec).await;
    assert_eq!(r.status, Status::Exited(0), "{}", text(&r.stderr));
    assert_eq!(r.exec_root, f.ws);
    assert_eq!(
        text(&r.stdout),
        format!("{}\nstale-gone\n", f.ws.join("app").display())
    );
    assert_eq!(
        fs::read_to_string(f.ws.join("app/out/copy.txt")).unwrap(),
        "secret sauce\n"
    );
    assert_eq!(r.missing_outputs, vec!["stale.txt"]);
    assert!(r.stray_writes.is_empty());
    assert!(r.sandbox_dir.is_none());
    // HOME and TMPDIR were private and are gone.
    let left: Vec<_> = fs::read_dir(&f.executor.sandbox_root).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn concurrent_sandboxes_are_distinct() {
    let f = Fixture::new();
    let (a, b) = tokio::join!(f.run(f.spec("pwd")), f.run(f.spec("pwd")));
    assert_ne!(a.sandbox_dir, b.sandbox_dir);
    assert_ne!(a.stdout, b.stdout);
}

/// A spec for the fake: only the label, outputs and timeout matter.
fn fake_spec(label: &str, outputs: &[&str]) -> ActionSpec {
    ActionSpec {
        label: label.into(),
        cmd: String::new(),
        srcs_file: None,
        package: String::new(),
        inputs: Vec::new(),
        outputs: outputs.iter().map(|o| o.to_string()).collect(),
        env: BTreeMap::new(),
        secrets: BTreeMap::new(),
        timeout: None,
        sandbox: true,
        workspace_root: PathBuf::from("/nonexistent"),
        live: None,
        gate: None,
    }
}

#[tokio::test(start_paused = true)]
async fn fake_executor_records_virtual_start_and_finish_times() {
    let secs = Duration::from_secs;
    let fake = FakeExecutor::new()
        .with(
            "//a:slow",
            FakeAction {
                duration: secs(10),
                outputs: BTreeMap::from([("out.txt".into(), b"A".to_vec())]),
                ..FakeAction::default()
            },
        )
        .with(
            "//b:fails",
            FakeAction {
                duration: secs(3),
                exit: 1,
                stderr: b"boom".to_vec(),
                ..FakeAction::default()
            },
        )
        .with(
            "//d:tree",
            FakeAction {
                outputs: BTreeMap::from([("site".into(), b"tree".to_vec())]),
                ..FakeAction::default()
            },
        );
    let log = fake.log();
    let t0 = tokio::time::Instant::now();
    let (slow, fails, instant, tree) = tokio::join!(
        fake.run(
            fake_spec("//a:slow", &["out.txt"]),
            Cancel::never(),
            Slots::new(4).ticket().await
        ),
        fake.run(
            fake_spec("//b:fails", &["x/"]),
            Cancel::never(),
            Slots::new(4).ticket().await
        ),
        fake.run(
            fake_spec("//c:unconfigured", &[]),
            Cancel::never(),
            Slots::new(4).ticket().await
        ),
        fake.run(
            fake_spec("//d:tree", &["site/"]),
            Cancel::never(),
            Slots::new(4).ticket().await
        ),
    );
    assert_eq!(t0.elapsed(), secs(10));
    assert_eq!(slow.status, Status::Exited(0));
    assert_eq!(slow.fake_outputs["out.txt"], b"A");
    assert!(slow.missing_outputs.is_empty());
    assert_eq!(slow.duration, secs(10));
    assert_eq!(fails.status, Status::Exited(1));
    assert_eq!(fails.stderr, b"boom");
    assert_eq!(fails.missing_outputs, vec!["x/"]);
    assert_eq!(instant.status, Status::Exited(0));
    assert!(instant.fake_outputs.is_empty());
    assert!(
        tree.missing_outputs.is_empty(),
        "{:?}",
        tree.output_problems
    );

    let events: Vec<(&str, String, Duration)> = log
        .lock()
        .unwrap()
        .iter()
        .map(|e| match e {
            FakeEvent::Started(l, at) => ("start", l.clone(), *at - t0),
            FakeEvent::Finished(l, at) => ("end", l.clone(), *at - t0),
        })
        .collect();
    let e = |kind, label: &str, at| (kind, label.to_string(), secs(at));
    assert_eq!(
        events,
        [
            e("start", "//a:slow", 0),
            e("start", "//b:fails", 0),
            e("start", "//c:unconfigured", 0),
            e("end", "//c:unconfigured", 0),
            e("start", "//d:tree", 0),
            e("end", "//d:tree", 0),
            e("end", "//b:fails", 3),
            e("end", "//a:slow", 10),
        ]
    );
    assert_eq!(fake.specs().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn fake_executor_honours_cancel_and_timeout() {
    let secs = Duration::from_secs;
    let fake = FakeExecutor::new().with(
        "//a:long",
        FakeAction {
            duration: secs(60),
            ..FakeAction::default()
        },
    );
    let (handle, cancel) = Cancel::new();
    let canceller = async {
        tokio::time::sleep(secs(5)).await;
        handle.cancel();
    };
    let (r, ()) = tokio::join!(
        fake.run(
            fake_spec("//a:long", &[]),
            cancel,
            Slots::new(4).ticket().await
        ),
        canceller
    );
    assert_eq!(r.status, Status::Cancelled);
    assert_eq!(r.duration, secs(5));

    let mut spec = fake_spec("//a:long", &[]);
    spec.timeout = Some(secs(2));
    let r = fake
        .run(spec, Cancel::never(), Slots::new(1).ticket().await)
        .await;
    assert_eq!(r.status, Status::TimedOut);
    assert_eq!(r.duration, secs(2));
    assert_eq!(fake.events().len(), 4);
}

#[test]
fn cancel_is_sticky_and_seen_by_late_tokens() {
    let (handle, token) = Cancel::new();
    let late = handle.token();
    assert!(!token.is_cancelled());
    handle.cancel();
    assert!(token.is_cancelled() && late.is_cancelled() && handle.token().is_cancelled());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(late.cancelled());
}

#[test]
fn debug_output_hides_secret_values() {
    let f = Fixture::new();
    let mut spec = f.spec("true");
    spec.secrets
        .insert("TOKEN".into(), "hunter2-hunter2".into());
    let debug = format!("{spec:?}");
    assert!(
        debug.contains("TOKEN") && !debug.contains("hunter2"),
        "{debug}"
    );
}

/// A command runs only with a free slot: while one holds the only slot, a second action is
/// staged and waits; closing the slots, or a cancel, turns it away unstarted (its sandbox
/// removed). A success gives its slot back, a failure keeps it.
#[tokio::test]
async fn commands_wait_for_a_slot_and_a_closed_slots_turns_them_away() {
    let f = Fixture::new();
    let sandboxes = f._dir.path().join("cache/sandbox");
    let slots = Slots::new(1);
    let running = f._dir.path().join("first-running");
    let started = f._dir.path().join("second-started");
    let wait_for = |what: &'static str, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting: {what}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let first = f.executor.run(
        f.spec(&format!("touch {}; sleep 3; echo one", running.display())),
        Cancel::never(),
        slots.ticket().await,
    );
    let second = async {
        // Staged only once the first command holds the slot.
        while !running.exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        f.executor
            .run(
                f.spec(&format!("touch {}", started.display())),
                Cancel::never(),
                slots.ticket().await,
            )
            .await
    };
    let closer = async {
        while !running.exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Both sandboxes exist once the second is staged and waiting.
        let staged = || {
            fs::read_dir(&sandboxes)
                .map(|d| {
                    d.flatten()
                        .filter(|e| e.path().join("exec/app").exists())
                        .count()
                })
                .unwrap_or(0)
                == 2
        };
        while !staged() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        slots.close();
    };
    let (one, two, ()) = tokio::join!(first, second, closer);
    assert_eq!(one.status, Status::Exited(0));
    assert_eq!(text(&one.stdout), "one\n");
    assert!(!one.holds_slot, "a success gives its slot back");
    assert_eq!(two.status, Status::NotStarted);
    assert!(!started.exists(), "the second command never ran");
    assert!(!two.holds_slot);
    f.executor.cleanup(&one);
    wait_for("sandboxes removed", &|| {
        fs::read_dir(&sandboxes).map_or(0, |d| d.count()) == 0
    });

    // A failure keeps its slot until it is released; a waiting action can be cancelled.
    let slots = Slots::new(1);
    let failed = f.run_in(f.spec("exit 3"), &slots).await;
    assert_eq!(failed.status, Status::Exited(3));
    assert!(failed.holds_slot, "a failure keeps its slot for the runner");
    let (handle, cancel) = Cancel::new();
    let waiting = f.executor.run(f.spec("true"), cancel, slots.ticket().await);
    let canceller = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        handle.cancel();
    };
    let (r, ()) = tokio::join!(waiting, canceller);
    assert_eq!(
        r.status,
        Status::NotStarted,
        "cancelled while waiting: never started"
    );
    slots.release();
    let ok = f.run_in(f.spec("true"), &slots).await;
    assert_eq!(
        ok.status,
        Status::Exited(0),
        "the released slot is used again"
    );
}

/// Regression (issue 14): actions waiting for a job slot were reported running. A ticket's
/// `on_enter` fires when its slot is granted, not before, and never for a ticket turned away.
#[tokio::test]
async fn a_ticket_says_when_its_slot_is_granted_not_before() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let slots = Slots::new(1);
    let fired = Arc::new(AtomicUsize::new(0));
    let counter = |n: usize| {
        let fired = fired.clone();
        move || {
            fired.fetch_add(n, Ordering::SeqCst);
        }
    };
    let first = slots.ticket().await.on_enter(counter(1));
    let second = slots.ticket().await.on_enter(counter(10));
    let held = first.enter(&Cancel::never()).await.expect("a free slot");
    assert_eq!(fired.load(Ordering::SeqCst), 1);
    let waiting = tokio::spawn(async move { second.enter(&Cancel::never()).await.is_some() });
    tokio::task::yield_now().await;
    assert_eq!(
        fired.load(Ordering::SeqCst),
        1,
        "the second fired while it waited"
    );
    drop(held);
    assert!(waiting.await.unwrap());
    assert_eq!(fired.load(Ordering::SeqCst), 11);
    let closed = slots.ticket().await.on_enter(counter(100));
    slots.close();
    assert!(closed.enter(&Cancel::never()).await.is_none());
    assert_eq!(
        fired.load(Ordering::SeqCst),
        11,
        "a ticket turned away fired"
    );
}

/// The digest `copy_file` returns is the digest of the bytes it wrote, in one piece or in
/// chunks (issue 15, item 1: the staged copy is what the key must describe).
#[test]
fn a_staged_copy_is_hashed_as_it_is_written() {
    let dir = TempDir::new().unwrap();
    for size in [0usize, 1, 4096, (1 << 20) - 1, 1 << 20, (3 << 20) + 7] {
        let bytes: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        let source = dir.path().join(format!("s{size}"));
        let dest = dir.path().join(format!("d{size}"));
        fs::write(&source, &bytes).unwrap();
        let digest = super::stage::copy_file(&source, &dest, size % 2 == 1).unwrap();
        assert_eq!(digest, flow_cache::Digest::of(&bytes), "size {size}");
        assert_eq!(fs::read(&dest).unwrap(), bytes, "size {size}");
    }
}
