//! `flow report`: the workspace's quality as its last build left it, as Markdown, JSON, and an
//! HTML page opened in headless Chromium (installed by `.ci/run`; skipped with a note when it
//! is missing, unless `FLOW_REQUIRE_CHROMIUM` is set). The screenshot is left at
//! `target/report-screenshot.png`, for CI to keep.

use std::process::Command;

use crate::support::Ws;

fn workspace() -> Ws {
    Ws::new().file(
        "p/BUILD",
        r#"task(name = "cov", outs = ["cov.json"], cmd = "echo '{\"files\": {}, \"totals\": {\"percent_covered\": 83.5, \"num_statements\": 200, \"covered_lines\": 167, \"missing_lines\": 33}}' > cov.json")
task(name = "tests", outs = ["junit.xml"], cmd = "sleep 0.2; echo '<testsuite><testcase name=\"a\"/><testcase name=\"b\"/></testsuite>' > junit.xml")
task(name = "scan", outs = ["bandit.json"], cmd = "echo '{\"errors\": [], \"metrics\": {}, \"results\": [{\"issue_severity\": \"HIGH\"}]}' > bandit.json")
gate(name = "quality", deps = [":cov", ":tests", ":scan"], checks = ["coverage.percent >= 80", "tests.failed == 0", "vulnerabilities.high <= 0"])
"#,
    )
}

#[test]
fn the_markdown_report_has_the_gates_coverage_tests_and_findings() {
    let ws = workspace();
    assert_eq!(ws.run(&["build", "-k", "//p:all"]).code, 1);
    let run = ws.run(&["report"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let md = run.stdout;
    for part in [
        "## flow quality report\n",
        "Last recorded build: `flow --color never build -k //p:all`,",
        "(failed): 3 ran, 0 cached, 1 failed, 0 skipped",
        "**`//p:quality`**: **failed**\n\n| Metric | Threshold | Value | Verdict |",
        "| `vulnerabilities.high` | &lt;= 0 | 1 | **FAIL** |",
        "| `//p` | 83.5% | 200 |",
        "| `//p:tests` | 2 | 0 | 0 | 0 |",
        "| `//p:scan` | vulnerabilities | 1 | 1 high |",
        "- `//p:quality` (failed; `flow log //p:quality`)",
    ] {
        assert!(md.contains(part), "{part}\n---\n{md}");
    }
    // The slowest chain of the build starts with the tests' 0.2 s sleep (then the gate, when
    // it took a measurable time: actions of no time are left out).
    let critical = md
        .lines()
        .find(|l| l.starts_with("Critical path ("))
        .unwrap_or_else(|| panic!("no critical path in\n{md}"));
    assert!(critical.contains("s): `//p:tests`"), "{critical}");
    let json: serde_json::Value =
        serde_json::from_str(&ws.run(&["report", "--json"]).stdout).unwrap();
    assert_eq!(json["gates"][0]["passed"], false);
    assert_eq!(json["coverage"][0]["percent"], 83.5);
}

#[test]
fn a_new_workspace_reports_that_nothing_is_known_yet() {
    let ws = Ws::new().file("p/BUILD", "task(name = \"t\", cmd = \"true\")\n");
    let run = ws.run(&["report"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("No build recorded in this workspace's history yet."),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("No gate is declared."),
        "{}",
        run.stdout
    );
}

#[test]
fn the_html_report_renders_in_headless_chromium() {
    let ws = workspace();
    assert_eq!(ws.run(&["build", "-k", "//p:all"]).code, 1);
    // A deployment yesterday, for the chart over time.
    let yesterday = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 86_400_000;
    let entry = serde_json::json!({
        "id": "d1", "environment": "production", "label": "//d:deploy", "kind": "deploy",
        "outcome": "succeeded",
        "artifact": {"digest": "a".repeat(64), "kind": "file", "size": 1, "executable": false,
                     "name": "app.whl", "label": "//d:bundle"},
        "commit": null, "commit_time": null, "branch": null, "user": "alice",
        "started_ms": yesterday, "ended_ms": yesterday + 1000, "reason": null, "approved_by": null
    });
    ws.write(
        &format!(".flow/ledger/entries/{yesterday}-d1.json"),
        entry.to_string().as_bytes(),
    );
    let md = ws.run(&["report"]).stdout;
    assert!(md.contains("| production | 1 | 0 |"), "{md}");
    assert!(
        md.contains("- `//p:quality` (failed; `flow log //p:quality`)"),
        "{md}"
    );
    let page = ws.path().join("report.html");
    let run = ws.run(&["report", "--html", page.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let html = std::fs::read_to_string(&page).unwrap();
    // Self-contained: nothing fetched at view time.
    for remote in ["http://", "https://", "<script", "<link"] {
        assert!(
            !html
                .replace("http://www.w3.org/2000/svg", "")
                .contains(remote),
            "{remote} in the page"
        );
    }
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    let Some(chromium) = chromium else {
        assert!(
            std::env::var_os("FLOW_REQUIRE_CHROMIUM").is_none(),
            "Chromium is required (FLOW_REQUIRE_CHROMIUM is set)"
        );
        eprintln!("skipping the browser check: Chromium is not installed (.ci/run installs it)");
        return;
    };
    let url = format!("file://{}", page.display());
    let headless = |extra: &[&str]| {
        Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--enable-logging=stderr",
                "--v=0",
            ])
            .args(extra)
            .arg(&url)
            .output()
            .unwrap()
    };
    let dom = headless(&["--dump-dom"]);
    assert!(dom.status.success());
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    for part in [
        "<table class=\"gate\">",
        "id=\"timeline-chart\"",
        "vulnerabilities.high",
        "//p:tests",
        "deployments to production",
        "class=\"trend\"",
        "id=\"critical-path\"",
        "class=\"critical\"",
    ] {
        assert!(dom_text.contains(part), "{part} not rendered");
    }
    // No console message from the page (it has no script, and nothing may fail to load).
    let log = String::from_utf8_lossy(&dom.stderr);
    assert!(
        !log.lines()
            .any(|l| l.contains("CONSOLE") || l.contains("Failed to load")),
        "{log}"
    );
    let shot =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/report-screenshot.png");
    let shot_arg = format!("--screenshot={}", shot.display());
    let taken = headless(&[&shot_arg, "--window-size=1280,1400"]);
    assert!(
        taken.status.success(),
        "{}",
        String::from_utf8_lossy(&taken.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
}

/// Regressions of the adversarial run: `--html` never replaces what is not a regular file (a
/// device, a FIFO, a symbolic link such as `/dev/stdout`), and the report counts the actions a
/// failure skipped, naming a gate that has no table.
#[test]
fn the_html_is_written_only_to_a_regular_file_and_skips_are_counted() {
    let ws = Ws::new().file(
        "q/BUILD",
        "task(name = \"bad\", outs = [\"coverage.json\"], cmd = \"exit 1\")\n\
         task(name = \"after\", outs = [\"x\"], deps = [\":bad\"], cmd = \"touch x\")\n\
         gate(name = \"g\", deps = [\":bad\"], checks = [\"coverage.percent >= 80\"])\n",
    );
    assert_eq!(ws.run(&["build", "-k", "//q:all"]).code, 1);
    let md = ws.run(&["report"]).stdout;
    assert!(
        md.contains(": 0 ran, 0 cached, 1 failed, 2 skipped"),
        "{md}"
    );
    assert!(
        md.contains("**`//q:g`**: no table under `flow-out/` (not built yet, or skipped"),
        "{md}"
    );
    let link = ws.path().join("out.html");
    std::os::unix::fs::symlink("/dev/null", &link).unwrap();
    let fifo = ws.path().join("fifo.html");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    for path in [&link, &fifo] {
        let run = ws.run(&["report", "--html", path.to_str().unwrap()]);
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert!(run.stderr.contains("not a regular file"), "{}", run.stderr);
    }
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
}

/// `flow report --base FILE` lists the findings that the base report (a `flow report --json`)
/// does not have: a finding that only moved to another line is not new, a second one of the
/// same rule is. A FILE that is not such a report is a clear error.
#[test]
fn findings_new_against_a_base_report() {
    let result = |rule: &str, line: u32| {
        format!(
            "{{\\\"test_id\\\": \\\"{rule}\\\", \\\"filename\\\": \\\"app.py\\\", \\\"line_number\\\": {line}, \\\"issue_severity\\\": \\\"HIGH\\\", \\\"issue_text\\\": \\\"weak hash\\\"}}"
        )
    };
    let build = |results: &[String]| {
        format!(
            "task(name = \"scan\", outs = [\"bandit.json\"], cmd = \"echo '{{\\\"errors\\\": [], \\\"metrics\\\": {{}}, \\\"results\\\": [{}]}}' > bandit.json\")\n",
            results.join(", ")
        )
    };
    let ws = Ws::new().file("p/BUILD", &build(&[result("B324", 3)]));
    assert_eq!(ws.run(&["build", "//p:scan"]).code, 0);
    let base = ws.run(&["report", "--json"]);
    ws.write("base.json", base.stdout.as_bytes());
    // The same finding two lines lower, a second one, and one of another rule.
    ws.write(
        "p/BUILD",
        build(&[result("B324", 5), result("B324", 9), result("B303", 7)]).as_bytes(),
    );
    assert_eq!(ws.run(&["build", "//p:scan"]).code, 0);
    let md = ws.run(&["report", "--base", "base.json"]);
    assert_eq!(md.code, 0, "{}", md.stderr);
    assert!(
        md.stdout.contains(
            "### New findings against the base\n\n2 new finding(s).\n\n\
             | Target | Rule | Where | Severity | Message |\n|---|---|---|---|---|\n\
             | `//p:scan` | `B324` | `app.py:9` | high | weak hash |\n\
             | `//p:scan` | `B303` | `app.py:7` | high | weak hash |\n"
        ),
        "{}",
        md.stdout
    );
    let json: serde_json::Value =
        serde_json::from_str(&ws.run(&["report", "--json", "--base", "base.json"]).stdout).unwrap();
    assert_eq!(json["new_findings"].as_array().unwrap().len(), 2);
    // Not a report: an error naming the file, with how to make one; nothing else is read.
    ws.write("notes.json", b"{\"gates\": []}");
    let bad = ws.run(&["report", "--base", "notes.json"]);
    assert_eq!(bad.code, 2);
    crate::support::golden("report_base_not_a_report", &bad.stderr);
    // A device is refused, not read without end; a finding of the wrong shape is named.
    let zero = ws.run(&["report", "--base", "/dev/zero"]);
    assert_eq!(zero.code, 2);
    assert!(
        zero.stderr.contains("not a regular file"),
        "{}",
        zero.stderr
    );
    ws.write("odd.json", b"{\"finding_items\": [1]}");
    let odd = ws.run(&["report", "--base", "odd.json"]);
    assert_eq!(odd.code, 2);
    assert!(
        odd.stderr
            .contains("`finding_items[0]` is not a finding (an object with label, rule"),
        "{}",
        odd.stderr
    );
}

/// `flow report` while a build writes `flow-out/` says that what it reads may be changing (it
/// does not wait: `flow watch` holds the lock for its whole session).
#[test]
fn a_report_during_a_build_warns_that_outputs_are_changing() {
    let ws = Ws::new().file("p/BUILD", "task(name = \"slow\", cmd = \"sleep 3\")\n");
    let mut build = Command::new(crate::support::flow_bin())
        .current_dir(ws.path())
        .args(["build", "//p:slow"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lock = ws.path().join("flow-out/.flow-lock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !lock.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let during = ws.run(&["report"]);
    assert!(build.wait().unwrap().success());
    assert_eq!(during.code, 0, "{}", during.stderr);
    assert!(
        during
            .stderr
            .contains("warning: another flow command is writing flow-out/ (flow build, pid"),
        "{}",
        during.stderr
    );
    let after = ws.run(&["report"]);
    assert!(!after.stderr.contains("warning"), "{}", after.stderr);
}
