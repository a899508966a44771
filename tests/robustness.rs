//! Malformed input never makes flow panic or hang: random bytes as BUILD files, truncated and
//! mangled BUILD files, deep nesting, a 10,000-deep load chain, a self-loading file.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{flow_bin, Rng, Ws};

/// Runs `flow query //...` in `ws`, failing the test on a crash, a panic or a run over 60 s.
fn run_bounded(ws: &Ws) -> (i32, String) {
    let mut child = Command::new(flow_bin())
        .args(["--color", "never", "-C"])
        .arg(ws.path())
        .args(["query", "//..."])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drain stderr while waiting, so a long message cannot block the child on a full pipe.
    let mut pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut stderr = String::new();
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
        stderr
    });
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let stderr = reader.join().unwrap();
            let code = status.code().unwrap_or(-1);
            assert!(
                !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
                "flow panicked:\n{stderr}"
            );
            assert!(
                code == 0 || code == 2,
                "flow crashed with {status}:\n{stderr}"
            );
            return (code, stderr);
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("flow hung for 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

const VALID: &str = "load(\"@flow//rules:python.star\", \"py_test\")\n\ntask(\n    name = \"lint\",\n    srcs = glob([\"**/*.py\"]),\n    cmd = \"ruff $(SRCS)\",\n    outs = [\"report.txt\"],\n    env = {\"A\": \"b\"},\n    deps = [\":gen\", \"//lib:x\"],\n)\n\ngroup(name = \"all\", deps = [\":lint\"])\npy_test(name = \"t\", python = [\"3.11\"])\n";

#[test]
fn random_bytes_never_crash() {
    let mut rng = Rng(0x5eed_f10e);
    for _ in 0..12 {
        let ws = Ws::new();
        let len = rng.below(400);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        ws.write("app/BUILD", &bytes);
        ws.write("lib/BUILD", b"task(name = \"x\", cmd = \"true\")\n");
        let (code, _) = run_bounded(&ws);
        assert_eq!(code, 2, "random bytes should be rejected");
    }
}

#[test]
fn mangled_build_files_never_crash() {
    let mut rng = Rng(0xdead_beef);
    let valid = VALID.as_bytes();
    for _ in 0..16 {
        let ws = Ws::new();
        let mut text = valid.to_vec();
        match rng.below(3) {
            0 => text.truncate(rng.below(valid.len())),
            1 => {
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(text.len());
                    let alphabet = b"()[]{},=\":\n #\\'";
                    text[i] = alphabet[rng.below(alphabet.len())];
                }
            }
            _ => {
                let i = rng.below(text.len());
                let j = rng.below(text.len());
                let (a, b) = (i.min(j), i.max(j));
                text.drain(a..b);
            }
        }
        ws.write("app/BUILD", &text);
        ws.write("lib/BUILD", b"task(name = \"x\", cmd = \"true\")\n");
        run_bounded(&ws);
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let ws = Ws::new();
    let depth = 100_000;
    let text = format!("x = {}{}\n", "[".repeat(depth), "]".repeat(depth));
    ws.write("app/BUILD", text.as_bytes());
    let (code, stderr) = run_bounded(&ws);
    assert_eq!(code, 2);
    assert!(stderr.contains("nested too deeply"), "{stderr}");
}

#[test]
fn ten_thousand_deep_load_chain() {
    let ws = Ws::new();
    let n = 10_000;
    for i in 0..n {
        let text = if i + 1 < n {
            format!("load(\":m{}.star\", \"v\")\n", i + 1)
        } else {
            "v = 0\n".to_owned()
        };
        ws.write(&format!("tools/m{i}.star"), text.as_bytes());
    }
    ws.write(
        "app/BUILD",
        b"load(\"//tools:m0.star\", \"v\")\ntask(name = \"x\", cmd = \"echo %d\" % v)\n",
    );
    let (code, stderr) = run_bounded(&ws);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn long_load_cycle_is_reported_whole() {
    let ws = Ws::new();
    let n = 50;
    for i in 0..n {
        ws.write(
            &format!("tools/m{i}.star"),
            format!("load(\":m{}.star\", \"v\")\n", (i + 1) % n).as_bytes(),
        );
    }
    ws.write("app/BUILD", b"load(\"//tools:m0.star\", \"v\")\n");
    let (code, stderr) = run_bounded(&ws);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("`load()` cycle: //tools:m0.star -> //tools:m1.star"),
        "{stderr}"
    );
    assert!(
        stderr.contains("//tools:m49.star -> //tools:m0.star"),
        "{stderr}"
    );
}

/// Regression (issue 15, item 8): a BUILD file linked to a FIFO made flow wait forever, and one
/// linked to `/dev/zero` or `/dev/urandom` was read without end (memory grew ~300 MB/s). Each is
/// refused at once, with the path and what it is; a BUILD file linked to a regular file is read
/// through the link as before, and so is a `.star` file.
#[test]
fn build_files_linked_to_fifos_and_devices_are_refused_at_once() {
    let targets: &[(&str, &str)] = &[
        ("fifo", "a FIFO"),
        ("/dev/zero", "a character device"),
        ("/dev/urandom", "a character device"),
    ];
    for (target, kind) in targets {
        let ws = Ws::new();
        ws.write("ok/real.build", b"task(name = \"x\", cmd = \"true\")\n");
        std::os::unix::fs::symlink("real.build", ws.path().join("ok/BUILD")).unwrap();
        std::fs::create_dir_all(ws.path().join("bad")).unwrap();
        if *target == "fifo" {
            nix::unistd::mkfifo(&ws.path().join("bad/fifo"), nix::sys::stat::Mode::S_IRWXU)
                .unwrap();
        }
        std::os::unix::fs::symlink(target, ws.path().join("bad/BUILD")).unwrap();
        let (code, stderr) = run_bounded(&ws);
        assert_eq!(code, 2, "{target}: {stderr}");
        assert!(
            stderr.contains(&format!("cannot read `bad/BUILD`: it is {kind}")),
            "{target}: {stderr}"
        );
        assert_eq!(stderr.matches("error: cannot read").count(), 1, "{stderr}");
    }
    // A `.star` file linked to a FIFO, loaded by a BUILD file that is fine.
    let ws = Ws::new();
    ws.write("app/BUILD", b"load(\":defs.star\", \"v\")\n");
    nix::unistd::mkfifo(&ws.path().join("app/pipe"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    std::os::unix::fs::symlink("pipe", ws.path().join("app/defs.star")).unwrap();
    let (code, stderr) = run_bounded(&ws);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("cannot read `app/defs.star`: it is a FIFO, not a regular file"),
        "{stderr}"
    );
}

/// Regression (issue 15, item 8): a source swapped for a FIFO after it was hashed and before
/// its action was staged (staging opened it and waited for a writer forever) fails its action
/// with a clear error and never blocks the build. (A FIFO, or a link to one or to a device, is
/// not a file to the workspace listing: named as a source, it is an analysis error, see
/// `golden::sources_that_are_not_regular_files`.)
#[test]
fn sources_that_are_fifos_or_devices_fail_their_action_without_blocking() {
    let ws = Ws::new();
    ws.write("p/in.txt", b"in\n");
    let marker = tempfile::tempdir().unwrap();
    let started = marker.path().join("started");
    ws.write(
        "p/BUILD",
        format!(
            r#"task(name = "slow", outs = ["s.txt"], cmd = "touch {}; sleep 3; echo s > s.txt")
task(name = "late", deps = [":slow"], srcs = ["in.txt"], outs = ["c.txt"], cmd = "cat in.txt > c.txt")
"#,
            started.display()
        )
        .as_bytes(),
    );
    let mut child = Command::new(flow_bin())
        .args(["--color", "never", "-C"])
        .arg(ws.path())
        .args(["build", "-k"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // While `//p:slow` runs, `in.txt` (already hashed) becomes a FIFO.
    let t = Instant::now();
    while !started.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "//p:slow never started"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "flow ended before //p:slow started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::remove_file(ws.path().join("p/in.txt")).unwrap();
    nix::unistd::mkfifo(&ws.path().join("p/in.txt"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if t.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("flow hung for 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("[RAN] //p:slow"), "{stdout}");
    let late = stdout
        .lines()
        .find(|l| l.contains("//p:late"))
        .unwrap_or_default();
    assert!(
        late.starts_with("[FAILED] //p:late") && late.contains("it is a FIFO, not a regular file"),
        "{stdout}"
    );
}
