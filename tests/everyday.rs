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
    // And in a query expression, as Bazel's `query ...` (issue 18's docs test found it).
    let q = ws.run_in(&app, &["query", "..."]);
    assert_eq!(q.code, 0, "{}", q.stderr);
    assert_eq!(q.stdout, "//app:lint\n//app:test\n//app/sub:deep\n");
    let q = ws.run_in(&app, &["query", ":lint + sub:deep"]);
    assert_eq!(q.stdout, "//app:lint\n//app/sub:deep\n", "{}", q.stderr);
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

/// `flow help --help` is help, not a usage error; `flow help COMMAND` is that command's help;
/// an unknown one names the commands there are (issue 18: `flow help --help` exited 2).
#[test]
fn help_about_help_and_about_commands() {
    let ws = Ws::bare();
    let help = ws.run(&["help", "--help"]);
    assert_eq!(help.code, 0, "{}", help.stderr);
    assert!(help.stdout.contains("Usage: flow help"), "{}", help.stdout);
    let build = ws.run(&["help", "build"]);
    assert_eq!(build.code, 0);
    assert!(
        build
            .stdout
            .contains("Usage: flow build [OPTIONS] [PATTERNS]..."),
        "{}",
        build.stdout
    );
    let gc = ws.run(&["help", "cache", "gc"]);
    assert!(gc.stdout.contains("Usage: flow cache gc"), "{}", gc.stdout);
    let nope = ws.run(&["help", "nope"]);
    assert_eq!(nope.code, 2);
    crate::support::golden("help_unknown_command", &nope.stderr);
}

/// A fresh `flow init` workspace builds nothing, successfully (issue 18: `flow build` answered
/// "no package `//`").
#[test]
fn a_new_workspace_builds_nothing_and_says_so() {
    let ws = Ws::bare();
    assert_eq!(ws.run(&["init"]).code, 0);
    let run = ws.run(&["build"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "flow: ok: the workspace has no target yet (declare some in a `BUILD` file: \
         docs/build-language.md); nothing to do\n"
    );
    // A pattern that names something still must match it.
    assert_eq!(ws.run(&["build", "//a:b"]).code, 2);
    // `flow query //...` answers nothing, successfully, as `bazel query //...` (adversarial
    // run: "no package `//`").
    let q = ws.run(&["query", "//..."]);
    assert_eq!((q.code, q.stdout.as_str()), (0, ""), "{}", q.stderr);
    // `flow explain` (no pattern: `//...`, as `flow build`) and `--dry-run` say so too, rather
    // than nothing (adversarial run).
    for args in [&["explain"][..], &["build", "--dry-run"][..]] {
        let run = ws.run(args);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        assert_eq!(
            run.stdout,
            "flow: the workspace has no target yet (declare some in a `BUILD` file: \
             docs/build-language.md)\n",
            "{args:?}"
        );
    }
}

/// `flow log :name` inside a package is that package's target (adversarial run: the label was
/// refused as relative).
#[test]
fn log_takes_a_label_relative_to_the_package() {
    let ws = Ws::new().file("app/BUILD", "task(name = \"a\", cmd = \"echo from-a\")\n");
    assert_eq!(ws.run(&["build", "//app:a"]).code, 0);
    let log = ws.run_in(&ws.path().join("app"), &["log", ":a"]);
    assert_eq!(log.code, 0, "{}", log.stderr);
    assert_eq!(log.stdout, "from-a\n");
}

/// `flow log` of a group replays the last run of each action it stands for (issue 18: it said
/// the group had no recorded run).
#[test]
fn the_log_of_a_group_is_its_actions_logs() {
    let ws = Ws::new().file(
        "g/BUILD",
        "task(name = \"a\", cmd = \"echo from-a\")\ntask(name = \"b\", cmd = \"echo from-b\")\n\
         group(name = \"all_of_it\", deps = [\":a\", \":grouped\"])\ngroup(name = \"grouped\", deps = [\":b\"])\n",
    );
    assert_eq!(ws.run(&["build", "//g:all_of_it"]).code, 0);
    let log = ws.run(&["log", "//g:all_of_it"]);
    assert_eq!(log.code, 0, "{}", log.stderr);
    assert_eq!(log.stdout, "from-a\nfrom-b\n");
    assert!(
        log.stderr.contains("flow: last run of //g:a: ran"),
        "{}",
        log.stderr
    );
    assert!(
        log.stderr.contains("flow: last run of //g:b: ran"),
        "{}",
        log.stderr
    );
}

/// `-q`: failures, warnings and the summary line only (issue 18: a no-op CI log printed a
/// `[CACHED]` line per action).
#[test]
fn quiet_prints_failures_and_the_summary_only() {
    let ws = Ws::new().file(
        "q/BUILD",
        "task(name = \"good\", cmd = \"true\")\ntask(name = \"bad\", cmd = \"echo broken; exit 1\")\n\
         task(name = \"after\", deps = [\":bad\"], cmd = \"true\")\n",
    );
    let run = ws.run(&["build", "-q", "-k"]);
    assert_eq!(run.code, 1);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(
        lines[0].starts_with("[FAILED] //q:bad (exit 1, "),
        "{}",
        run.stdout
    );
    assert_eq!(lines[1], "    broken");
    assert!(
        lines[2].starts_with("flow: FAILED: 1 ran, 0 cached, 1 failed, 1 skipped"),
        "{}",
        run.stdout
    );
    assert_eq!(lines.len(), 3, "{}", run.stdout);
    // A no-op: the summary line alone.
    let ok = Ws::new().file("p/BUILD", "task(name = \"a\", cmd = \"true\")\n");
    ok.run(&["build"]);
    let noop = ok.run(&["build", "--quiet"]);
    assert_eq!(noop.code, 0);
    assert_eq!(noop.stdout.lines().count(), 1, "{}", noop.stdout);
    assert!(
        noop.stdout.starts_with("flow: ok: 0 ran, 1 cached"),
        "{}",
        noop.stdout
    );
}

/// `flow explain` says that the last run failed, and whether with the same key (issue 18: it
/// only said the target would run).
#[test]
fn explain_says_the_last_run_failed() {
    let ws = Ws::new().file(
        "p/BUILD",
        "task(name = \"bad\", cmd = \"echo nope; exit 3\")\n",
    );
    assert_eq!(ws.run(&["build"]).code, 1);
    let same = ws.run(&["explain", "//p:bad"]);
    assert!(
        same.stdout.contains(
            "its last run failed, exit 3, with this same key: it would fail again unless \
             something outside its key changed; `flow log //p:bad` shows it"
        ),
        "{}",
        same.stdout
    );
    ws.write(
        "p/BUILD",
        b"task(name = \"bad\", cmd = \"echo nope; exit 4\")\n",
    );
    let other = ws.run(&["explain", "//p:bad"]);
    assert!(
        other
            .stdout
            .contains("its last run failed, exit 3, with another key"),
        "{}",
        other.stdout
    );
}

/// `py_lint(args = ["--output-format", "github"])`: the user's flag replaces the rule's default
/// instead of repeating it (issue 18: ruff refused the flag twice).
#[test]
fn a_flag_in_py_lint_args_replaces_the_default() {
    let ws = Ws::new().file(
        "p/BUILD",
        "load(\"@flow//rules:python.star\", \"py_lint\")\n\
         py_lint(name = \"lint\", srcs = [\"a.py\"], args = [\"--output-format\", \"github\", \"--line-length=100\"])\n",
    )
    .file("p/a.py", "x = 1\n");
    // `attr(cmd, REGEX, ...)` selects the target when its command matches.
    let matches = |regex: &str| {
        let run = ws.run(&["query", &format!("attr(cmd, '{regex}', //p:lint)")]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        run.stdout == "//p:lint\n"
    };
    assert!(matches("--output-format github"));
    assert!(!matches("--output-format.*--output-format"));
    assert!(!matches("concise"));
    assert!(!matches("--line-length.*--line-length"));
    assert!(matches("--line-length=100"));
}

/// An unpinned requirements file is refused with the lines to pin (issue 18: it was accepted
/// silently, and the cached install kept whatever version the first one found);
/// `allow_unpinned = True` accepts it.
#[test]
fn unpinned_requirements_are_refused_unless_allowed() {
    let build = |allow: &str| {
        format!(
            "load(\"@flow//rules:python.star\", \"py_requirements\")\n\
             py_requirements(name = \"tools\", srcs = [\"requirements.txt\"], python = [\"3.11\"],\n\
             \x20   pip = \"system\", pip_args = [\"--no-index\", \"--find-links\", \"nowhere\"]{allow})\n"
        )
    };
    let ws = Ws::new()
        .file(
            "r/requirements.txt",
            "# tools\nruff==0.6.9\nrequests>=2  # loose\n--hash=sha256:abc\n",
        )
        .file("r/BUILD", &build(""));
    let run = ws.run(&["build"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout
            .contains("error: requirements not pinned to one version (write NAME==VERSION):")
            && run.stdout.contains("requirements.txt:3: requests>=2"),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains("ruff==0.6.9"),
        "a pinned line is not listed: {}",
        run.stdout
    );
    ws.write("r/BUILD", build(", allow_unpinned = True").as_bytes());
    let run = ws.run(&["build"]);
    assert!(!run.stdout.contains("not pinned"), "{}", run.stdout);
}

/// `flow build --dry-run` runs nothing and says what the build would do, as `flow explain`
/// does (issue 18: there was no dry run).
#[test]
fn a_dry_run_runs_nothing_and_says_what_would() {
    let ws = Ws::new().file(
        "d/BUILD",
        "task(name = \"gen\", outs = [\"g.txt\"], cmd = \"echo g > g.txt\")\n",
    );
    let dry = ws.run(&["build", "--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(
        dry.stdout.starts_with("[RUN] //d:gen (key "),
        "{}",
        dry.stdout
    );
    assert!(!ws.path().join("flow-out/d/g.txt").exists(), "nothing ran");
    assert_eq!(ws.run(&["build"]).code, 0);
    let again = ws.run(&["build", "--dry-run", "//d:gen"]);
    assert!(!again.stdout.contains("would run"), "{}", again.stdout);
    let explain = ws.run(&["explain", "//d:gen"]);
    assert_eq!(
        again.stdout, explain.stdout,
        "the same answer as flow explain"
    );
    // With --since or --shard it is refused (clap: exit 2).
    assert_eq!(ws.run(&["build", "--dry-run", "--shard", "1/2"]).code, 2);
    // A report flag would write nothing: refused too.
    assert_eq!(ws.run(&["build", "--dry-run", "--junit", "j.xml"]).code, 2);
}

/// Every `$ flow ...` line of a ```` ```text ```` block in docs/query.md runs against
/// `examples/monorepo` and prints what the block shows after it (a `...` line stands for any
/// lines): a renamed target breaks this test, not the reader (issue 18: query.md named
/// `//tools:boundary_check`, `py_zip`, `dist/data_quality.zip`, which no longer existed).
#[test]
fn query_md_examples_print_what_they_show() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/query.md")).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let bin = flow_bin();
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut checked = 0;
    for block in doc.split("```text\n").skip(1) {
        let block = block.split("```").next().unwrap_or("");
        let lines: Vec<&str> = block.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let Some(command) = lines[i].strip_prefix("$ ") else {
                i += 1;
                continue;
            };
            let mut expected = Vec::new();
            i += 1;
            while i < lines.len() && !lines[i].starts_with("$ ") {
                if !lines[i].is_empty() {
                    expected.push(lines[i]);
                }
                i += 1;
            }
            let out = Command::new("sh")
                .args(["-c", command])
                .current_dir(root.join("examples/monorepo"))
                .env("PATH", &path)
                .env("FLOW_CACHE_DIR", cache.path())
                .output()
                .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let actual: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
            assert!(
                matches_with_ellipsis(&expected, &actual),
                "docs/query.md: `{command}` shows\n{}\nbut prints\n{}",
                expected.join("\n"),
                actual.join("\n")
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "{checked} commands checked");
}

/// Whether `actual` is `expected`, each `...` line of which stands for any number of lines.
fn matches_with_ellipsis(expected: &[&str], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((&"...", rest)) => {
            (0..=actual.len()).any(|k| matches_with_ellipsis(rest, &actual[k..]))
        }
        Some((line, rest)) => {
            actual.first() == Some(line) && matches_with_ellipsis(rest, &actual[1..])
        }
    }
}

/// One evaluation error in a package is reported once, at its cause: the packages that use
/// its targets do not add errors of their own (issue 18: `//deployment:bundle`'s
/// `$(location //mlops:lib)` was reported, first, as "declares no outputs").
#[test]
fn a_package_that_fails_to_evaluate_does_not_cascade() {
    let ws = Ws::new()
        .file(
            "a/BUILD",
            "task(name = \"lib\", outs = [\"l.txt\"], cmd = \"echo > l.txt\")\nundefined_fn()\n",
        )
        .file(
            "b/BUILD",
            "task(name = \"use\", deps = [\"//a:lib\"], cmd = \"cat $(location //a:lib)\")\n",
        );
    let run = ws.run(&["query", "//..."]);
    assert_eq!(run.code, 2);
    crate::support::golden("failed_package_does_not_cascade", &run.stderr);
}

/// A per-package `python` version the workspace's tools are not installed for says what to add
/// to `python_versions` (issue 18: it suggested `//:dev_tools_py3_11`).
#[test]
fn a_python_version_without_tools_says_what_to_add() {
    let ws = Ws::bare()
        .file(
            "flow.toml",
            "[vars]\npython_versions = [\"3.11\"]\npython_requirements = \"//:dev_tools\"\n",
        )
        .file(
            "BUILD",
            "load(\"@flow//rules:python.star\", \"py_requirements\")\npy_requirements(name = \"dev_tools\", srcs = [\"r.txt\"])\n",
        )
        .file("r.txt", "pytest==8.3.4\n")
        .file(
            "m/BUILD",
            "load(\"@flow//rules:python.star\", \"py_test\")\npy_test(name = \"test\", srcs = [\"test_a.py\"], python = [\"3.11\", \"3.12\"])\n",
        )
        .file("m/test_a.py", "");
    let run = ws.run(&["query", "//..."]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains(
            "Python 3.12 of `py_test` is not in `python_versions` of flow.toml ([vars]), so the \
             workspace's tools (`//:dev_tools`, `python_requirements`) are not installed for it \
             (only for 3.11); add \"3.12\" to python_versions"
        ),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("dev_tools_py3_11`?"), "{}", run.stderr);
    let first = run.stderr.lines().next().unwrap_or("");
    crate::support::golden("python_version_without_tools", first);
}

/// `flow test`: builds the tests among the patterns (a `py_test`'s tasks, targets tagged
/// `test`), only those, then a summary per target from their JUnit outputs, a failing one's
/// included (issue 18: there was no `flow test`).
#[test]
fn flow_test_builds_the_tests_and_sums_them_up() {
    let ws = Ws::new()
        .file(
            "t/ok.xml.in",
            "<testsuite name=\"s\"><testcase name=\"a\"/><testcase name=\"b\"/></testsuite>",
        )
        .file(
            "t/bad.xml.in",
            "<testsuite name=\"s\"><testcase name=\"a\"/><testcase name=\"b\"><failure message=\"no\"/></testcase><testcase name=\"c\"><skipped/></testcase></testsuite>",
        )
        .file(
            "t/BUILD",
            "task(name = \"good\", srcs = [\"ok.xml.in\"], outs = [\"good.xml\"], tags = [\"test\"], cmd = \"cp ok.xml.in good.xml\")\n\
             task(name = \"bad\", srcs = [\"bad.xml.in\"], outs = [\"bad.xml\"], tags = [\"test\"], cmd = \"cp bad.xml.in bad.xml; exit 1\")\n\
             task(name = \"lint\", cmd = \"echo linted\")\n\
             group(name = \"all_tests\", deps = [\":good\", \":bad\"])\n",
        );
    let run = ws.run(&["test"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        !run.stdout.contains("//t:lint"),
        "only tests run: {}",
        run.stdout
    );
    let summary: Vec<&str> = run
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("flow test:"))
        .collect();
    assert_eq!(
        summary,
        [
            "flow test: 2 test target(s)",
            "  //t:bad  1 passed, 1 failed, 1 skipped",
            "  //t:good  2 passed",
        ],
        "{}",
        run.stdout
    );
    // A group stands for its tests; a pattern without tests says so.
    let group = ws.run(&["test", "//t:all_tests"]);
    assert!(
        group.stdout.contains("flow test: 2 test target(s)"),
        "{}",
        group.stdout
    );
    let none = ws.run(&["test", "//t:lint"]);
    assert_eq!(none.code, 0);
    assert_eq!(
        none.stdout,
        "flow test: no test among the selected targets (py_test, or tagged `test`)\n"
    );
}

/// Each line of `flow test`'s summary says what happened to that target: a malformed JUnit
/// report is named with why (it was hidden), a test skipped for a failed dependency says so (it
/// said "no JUnit"), a test without a JUnit output says whether it passed, and one error is
/// not "1 errors" (adversarial run).
#[test]
fn flow_test_says_what_happened_to_each_test() {
    let ws = Ws::new()
        .file("t/broken.xml.in", "<testsuite name=\"s\"><testcase name=\"a\">")
        .file(
            "t/one_error.xml.in",
            "<testsuite name=\"s\"><testcase name=\"a\"><error message=\"boom\"/></testcase></testsuite>",
        )
        .file(
            "t/BUILD",
            "task(name = \"broken\", srcs = [\"broken.xml.in\"], outs = [\"broken.xml\"], tags = [\"test\"], cmd = \"cp broken.xml.in broken.xml\")\n\
             task(name = \"one_error\", srcs = [\"one_error.xml.in\"], outs = [\"e.xml\"], tags = [\"test\"], cmd = \"cp one_error.xml.in e.xml; exit 1\")\n\
             task(name = \"gen\", cmd = \"exit 3\")\n\
             task(name = \"after_gen\", deps = [\":gen\"], outs = [\"a.xml\"], tags = [\"test\"], cmd = \"true\")\n\
             task(name = \"plain\", tags = [\"test\"], cmd = \"true\")\n\
             task(name = \"green_but_exit_1\", srcs = [\"two.xml.in\"], outs = [\"g.xml\"], tags = [\"test\"], cmd = \"cp two.xml.in g.xml; exit 1\")\n\
             task(name = \"red_but_exit_0\", srcs = [\"red.xml.in\"], outs = [\"r.xml\"], tags = [\"test\"], cmd = \"cp red.xml.in r.xml\")\n\
             task(name = \"slow\", tags = [\"test\"], cmd = \"sleep 20\", timeout = \"1s\")\n\
             task(name = \"no_case\", srcs = [\"none.xml.in\"], outs = [\"n.xml\"], tags = [\"test\"], cmd = \"cp none.xml.in n.xml\")\n",
        )
        .file(
            "t/two.xml.in",
            "<testsuite name=\"s\"><testcase name=\"a\"/><testcase name=\"b\"/></testsuite>",
        )
        .file(
            "t/red.xml.in",
            "<testsuite name=\"s\"><testcase name=\"a\"><failure message=\"x\"/></testcase></testsuite>",
        )
        .file("t/none.xml.in", "<testsuite name=\"s\"/>");
    let run = ws.run(&["test"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let summary: Vec<&str> = run
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("flow test:"))
        .collect();
    assert_eq!(
        summary[1..]
            .iter()
            .filter(|l| !l.contains("//t:broken"))
            .copied()
            .collect::<Vec<_>>(),
        [
            "  //t:after_gen  skipped: dependency failed",
            // The command and its cases disagree: both are said (adversarial run: a failed
            // target showed `2 passed`).
            "  //t:green_but_exit_1  2 passed; the target failed: exit 1",
            "  //t:no_case  passed (no test case in its JUnit report)",
            "  //t:one_error  0 passed, 1 error",
            "  //t:plain  passed (no JUnit report)",
            "  //t:red_but_exit_0  0 passed, 1 failed; the target passed",
            "  //t:slow  failed: timed out after 1.0s (no JUnit report)",
        ],
        "{}",
        run.stdout
    );
    let broken = summary.iter().find(|l| l.contains("//t:broken")).unwrap();
    assert!(
        broken.starts_with("  //t:broken  passed (`broken.xml` is not valid JUnit XML: "),
        "{broken}"
    );
}

/// `flow run LABEL -- COMMAND`: builds the target, then runs a program it provides in the
/// current directory, its directory output's `bin/` first on `PATH`; without a command, its
/// executable output. The program's output is its own (the build's lines go to stderr), and so
/// is its exit code (issue 18: no way to run a tool the build installed).
#[test]
fn flow_run_runs_a_program_a_target_provides() {
    let ws = Ws::new().file(
        "t/BUILD",
        "task(name = \"tools\", outs = [\"kit/\"], cmd = \"mkdir -p kit/bin && printf '#!/bin/sh\\\\necho hello from kit in $$(basename $$PWD) $$@\\\\nexit 3\\\\n' > kit/bin/hello && chmod +x kit/bin/hello\")\n\
         task(name = \"script\", outs = [\"run.sh\"], cmd = \"printf '#!/bin/sh\\\\necho script ran$${1:+ with $$# args: $$*}\\\\n' > run.sh && chmod +x run.sh\")\n",
    )
    .file("somewhere/x.txt", "x\n");
    let here = ws.path().join("somewhere");
    let run = ws.run_in(&here, &["run", "//t:tools", "--", "hello", "a", "b"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert_eq!(run.stdout, "hello from kit in somewhere a b\n");
    assert!(
        run.stderr.contains("flow: ok: 1 ran"),
        "the build's lines on stderr: {}",
        run.stderr
    );
    let script = ws.run(&["run", "//t:script"]);
    assert_eq!((script.code, script.stdout.as_str()), (0, "script ran\n"));
    // A target that is one executable file is the program: the words after `--` are its
    // arguments, as with `bazel run` (adversarial run: they were taken for the command).
    let args = ws.run(&["run", "//t:script", "--", "--flag", "x y"]);
    assert_eq!(
        (args.code, args.stdout.as_str()),
        (0, "script ran with 2 args: --flag x y\n"),
        "{}",
        args.stderr
    );
    let missing = ws.run(&["run", "//t:tools", "--", "no-such-program"]);
    assert_eq!(missing.code, 127, "as a shell says a program is not found");
    assert!(
        missing.stderr.contains("cannot run `no-such-program`"),
        "{}",
        missing.stderr
    );
}

/// The formatting check's fix hint is a command that runs as written: `flow run` of the tools
/// the build installed (issue 18: it said `ruff format FILES`, and ruff was only in flow-out/).
#[test]
fn the_format_fix_hint_uses_flow_run() {
    let ws = Ws::bare()
        .file(
            "flow.toml",
            "[vars]\npython_versions = [\"3.11\"]\npython_requirements = \"//:dev_tools\"\n",
        )
        .file(
            "BUILD",
            "load(\"@flow//rules:python.star\", \"py_requirements\")\npy_requirements(name = \"dev_tools\", srcs = [\"r.txt\"])\n",
        )
        .file("r.txt", "ruff==0.6.9\n")
        .file(
            "m/BUILD",
            "load(\"@flow//rules:python.star\", \"py_format_check\")\npy_format_check(name = \"format\", srcs = [\"a.py\"])\n",
        )
        .file("m/a.py", "x=1\n");
    let hint = "flow run //:dev_tools_py3_11 -- ruff format --line-length 88 [.] && flow run //:dev_tools_py3_11 -- ruff check --select I --fix";
    let run = ws.run(&["query", &format!("attr(cmd, '{hint}', //m:format)")]);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "//m:format\n"),
        "{}",
        run.stderr
    );
}

/// Regressions (adversarial run): SIGTERM to `flow run` (a CI cancel) left its program
/// running; `flow test` in a new workspace was an error; `flow log` of a group none of whose
/// actions ran exited 0.
#[test]
fn flow_run_ends_its_program_on_sigterm_and_other_edges() {
    let ws = Ws::new().file(
        "t/BUILD",
        "task(name = \"sleeper\", outs = [\"s.sh\"], cmd = \"printf '#!/bin/sh\\\\necho $$$$ > \\\"$$1\\\"\\\\nexec sleep 30\\\\n' > s.sh && chmod +x s.sh\")\n\
         task(name = \"never\", cmd = \"true\")\ngroup(name = \"g\", deps = [\":never\"])\n",
    );
    assert_eq!(ws.run(&["build", "//t:sleeper"]).code, 0);
    let pid_file = ws.path().join("child.pid");
    let mut flow = Command::new(flow_bin())
        .current_dir(ws.path())
        .args(["run", "//t:sleeper", "--"])
        .arg(&pid_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !pid_file.exists()
        || std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the program never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let child: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(flow.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = flow.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let mut gone = false;
    for _ in 0..200 {
        if !crate::support::alive(child) {
            gone = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(gone, "the program outlived flow run");
    let log = ws.run(&["log", "//t:g"]);
    assert_eq!(log.code, 2, "{}", log.stderr);
    let fresh = Ws::bare();
    fresh.run(&["init"]);
    let test = fresh.run(&["test"]);
    assert_eq!(test.code, 0, "{}", test.stderr);
    assert!(
        test.stdout.starts_with("flow test: no test"),
        "{}",
        test.stdout
    );
}

/// An exclusion removes a target from the selection, not from the graph: `py_test`'s group
/// still needs the excluded version, as in Bazel, and leaving the group out too drops it (what
/// docs/build-language.md says; the adversarial run took the first for a bug).
#[test]
fn an_excluded_version_still_runs_for_its_selected_group() {
    let ws = Ws::bare()
        .file("flow.toml", "[vars]\npython_versions = [\"3.11\", \"3.12\"]\n")
        .file(
            "pkg/BUILD",
            "load(\"@flow//rules:python.star\", \"py_test\")\npy_test(name = \"test\", srcs = [\"test_a.py\"])\n",
        )
        .file("pkg/test_a.py", "");
    let dry = |args: &[&str]| {
        let mut all = vec!["build", "--dry-run", "--"];
        all.extend_from_slice(args);
        let run = ws.run(&all);
        assert_eq!(run.code, 0, "{}", run.stderr);
        run.stdout
    };
    let with_group = dry(&["//pkg/...", "-//pkg:test_py3_12"]);
    assert!(with_group.contains("//pkg:test_py3_12"), "{with_group}");
    let without = dry(&["//pkg/...", "-//pkg:test", "-//pkg:test_py3_12"]);
    assert!(!without.contains("//pkg:test_py3_12"), "{without}");
    assert!(without.contains("//pkg:test_py3_11"), "{without}");
}

/// `flow log`'s header says a run `timed out` in words, not the stored `timedout`
/// (adversarial run).
#[test]
fn the_log_header_of_a_timeout_is_in_words() {
    let ws = Ws::new().file(
        "p/BUILD",
        "task(name = \"slow\", cmd = \"echo started; sleep 30\", timeout = \"1s\")\n",
    );
    assert_eq!(ws.run(&["build", "//p:slow"]).code, 1);
    let log = ws.run(&["log", "//p:slow"]);
    assert!(
        log.stderr
            .starts_with("flow: last run of //p:slow: timed out ("),
        "{}",
        log.stderr
    );
    assert_eq!(log.stdout, "started\n");
}

/// Under a dependency that would run first, a changed command's `was:`/`now:` lines sit under
/// their bullet, as they do at the top (adversarial run: they were at the bullet's level).
#[test]
fn explain_indents_a_changed_command_under_its_bullet_at_any_depth() {
    let ws = Ws::new().file("p/a.txt", "1\n").file(
        "p/BUILD",
        "task(name = \"u\", srcs = [\"a.txt\"], outs = [\"o\"], cmd = \"cp a.txt o\")\n\
         task(name = \"v\", deps = [\":u\"], cmd = \"cat $(location :u)\")\n",
    );
    assert_eq!(ws.run(&["build", "//p:v"]).code, 0);
    ws.write(
        "p/BUILD",
        b"task(name = \"u\", srcs = [\"a.txt\"], outs = [\"o\"], cmd = \"cp a.txt o; true\")\n\
          task(name = \"v\", deps = [\":u\"], cmd = \"cat $(location :u)\")\n",
    );
    let run = ws.run(&["explain", "//p:v"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains(
            "    - command changed:\n      was: cp a.txt o\n      now: cp a.txt o; true\n"
        ),
        "{}",
        run.stdout
    );
}
