//! The everyday loop (issue 18): patterns relative to the package the command starts in, and a
//! printing command whose reader goes away.

use std::process::{Command, Stdio};

use crate::support::{flow_bin, Ws};

fn workspace() -> Ws {
    Ws::new()
        .file(
            "app/BUILD",
            "task(name = \"lint\", cmd = \"true\")\ntask(name = \"test\", cmd = \"true\")\n",
        )
        .file("app/sub/BUILD", "task(name = \"deep\", cmd = \"true\")\n")
        .file("other/BUILD", "task(name = \"o\", cmd = \"true\")\n")
}

/// Built labels of a run, sorted.
fn built(stdout: &str) -> Vec<String> {
    let mut labels: Vec<String> = stdout
        .lines()
        .filter_map(|l| {
            l.strip_prefix("[RAN] ")
                .or_else(|| l.strip_prefix("[CACHED] "))
        })
        .map(|rest| rest.split(' ').next().unwrap_or("").to_owned())
        .collect();
    labels.sort();
    labels
}

/// Inside a package directory, `:name`, `...`, `sub/...`, `sub:name` and `-:name` mean what
/// they mean in Bazel: relative to that package (issue 18: `flow build :lint` answered that a
/// label starts with `//` or `:`).
#[test]
fn patterns_are_relative_to_the_package_flow_starts_in() {
    let ws = workspace();
    let app = ws.path().join("app");
    let run = |args: &[&str]| {
        let run = ws.run_in(&app, args);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        built(&run.stdout)
    };
    assert_eq!(run(&["build", ":lint"]), ["//app:lint"]);
    assert_eq!(
        run(&["build", "..."]),
        ["//app/sub:deep", "//app:lint", "//app:test"]
    );
    assert_eq!(run(&["build", "sub/..."]), ["//app/sub:deep"]);
    assert_eq!(run(&["build", "sub:deep"]), ["//app/sub:deep"]);
    assert_eq!(
        run(&["build", "--", "...", "-:lint"]),
        ["//app/sub:deep", "//app:test"]
    );
    assert_eq!(run(&["build", "//other:o"]), ["//other:o"]);
    let explain = ws.run_in(&app, &["explain", ":test"]);
    assert_eq!(explain.code, 0, "{}", explain.stderr);
    assert!(explain.stdout.contains("//app:test"), "{}", explain.stdout);
    // At the root, `:name` is the root package's.
    let root = ws.run(&["build", ":nothing"]);
    assert_eq!(root.code, 2);
    assert!(root.stderr.contains("//:nothing"), "{}", root.stderr);
}

/// A printing command whose reader goes away (`| head -1`) ends quietly with 141 (as a process
/// killed by SIGPIPE does), never with a panic's backtrace (issue 15's leftover, issue 18).
#[test]
fn a_reader_that_goes_away_ends_a_printing_command_quietly() {
    let mut build = String::new();
    for i in 0..6000 {
        build.push_str(&format!("task(name = \"t{i}\", cmd = \"true\")\n"));
    }
    let ws = Ws::new().file("p/BUILD", &build);
    for args in [&["query", "//..."][..], &["explain", "//..."][..]] {
        let mut child = Command::new(flow_bin())
            .current_dir(ws.path())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Read one line, then go away.
        let mut out = child.stdout.take().unwrap();
        let mut byte = [0u8; 1];
        while std::io::Read::read(&mut out, &mut byte).unwrap() == 1 && byte[0] != b'\n' {}
        drop(out);
        let done = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&done.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(
            matches!(done.status.code(), Some(0) | Some(141)),
            "{args:?}: {:?}",
            done.status
        );
    }
}
