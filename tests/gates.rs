//! `gate()` end to end: a gate over the reports its dependencies write passes, fails with its
//! table, is cached while its inputs are unaffected, and says plainly what it cannot read.

use crate::support::{golden, tagged, Ws};

fn reports(coverage: f64, failures: usize) -> Ws {
    let failing =
        "<testcase name=\\\"f\\\"><failure message=\\\"x\\\"/></testcase>".repeat(failures);
    Ws::new().file(
        "q/BUILD",
        &format!(
            r#"task(name = "cov", outs = ["cov.json"], cmd = "echo '{{\"files\": {{}}, \"totals\": {{\"percent_covered\": {coverage}, \"num_statements\": 10, \"covered_lines\": 8, \"missing_lines\": 2}}}}' > cov.json")
task(name = "test", outs = ["junit.xml"], cmd = "echo '<testsuite><testcase name=\"a\"/>{failing}</testsuite>' > junit.xml")
task(name = "unrelated", srcs = ["notes.txt"], cmd = "true")
gate(
    name = "quality",
    deps = [":cov", ":test"],
    checks = ["coverage.percent >= 80", "tests.failed == 0"],
)
"#
        ),
    )
    .file("q/notes.txt", "1\n")
}

#[test]
fn a_gate_passes_and_stays_cached_while_its_reports_do() {
    let ws = reports(85.0, 0);
    let run = ws.run(&["build", "//q:all"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(tagged(run.stdout.lines(), "RAN").len(), 4);
    let log = ws.run(&["log", "//q:quality"]);
    assert_eq!(
        log.stdout,
        "gate //q:quality: 2 check(s), all passed\n\
         \x20 metric            threshold  value  verdict\n\
         \x20 coverage.percent  >= 80      85     pass\n\
         \x20 tests.failed      == 0       0      pass\n"
    );
    let table: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(ws.path().join("flow-out/q/quality.gate.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(table["passed"], true);
    assert_eq!(table["checks"][0]["from"][0], "q/cov.json");
    // An edit that does not reach its reports: the gate is not evaluated again.
    ws.write("q/notes.txt", b"2\n");
    let again = ws.run(&["build", "//q:all"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    let ran = tagged(again.stdout.lines(), "RAN");
    assert_eq!(ran, ["//q:unrelated"], "{}", again.stdout);
}

#[test]
fn a_failing_gate_shows_its_table_and_fails_the_build() {
    let ws = reports(72.5, 2);
    let run = ws.run(&["build", "//q:quality"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout
            .contains("[FAILED] //q:quality (gate failed: 2 check(s), 2 failed)"),
        "{}",
        run.stdout
    );
    for line in [
        "    gate //q:quality: 2 check(s), 2 failed",
        "      coverage.percent  >= 80      72.5   FAIL",
        "      tests.failed      == 0       2      FAIL",
    ] {
        assert!(run.stdout.contains(line), "{line}\n{}", run.stdout);
    }
}

#[test]
fn a_gate_with_nothing_to_read_says_what_its_inputs_hold() {
    let ws = Ws::new().file(
        "q/BUILD",
        "task(name = \"t\", outs = [\"junit.xml\"], cmd = \"echo '<testsuite><testcase name=\\\"a\\\"/></testsuite>' > junit.xml\")\n\
         gate(name = \"g\", deps = [\":t\"], checks = [\"coverage.percent >= 80\"])\n",
    );
    let run = ws.run(&["build", "//q:g"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.contains("error: `coverage.percent`: no coverage report among the gate's inputs (it reads coverage.py JSON (`coverage json`, `pytest --cov-report json:FILE`)); the inputs hold `q/junit.xml` (JUnit XML: tests)"),
        "{}",
        run.stdout
    );
}

/// A wrong metric name, a wrong kind, a list compared with a number, `=>` for `>=`, a gate
/// without deps:
/// analysis errors at the bad part of each string, with what exists.
#[test]
fn bad_gate_checks() {
    let ws = Ws::new().file(
        "q/BUILD",
        "task(name = \"t\", outs = [\"c.json\"], cmd = \"true\")\n\
         gate(\n    name = \"g\",\n    deps = [\":t\"],\n    checks = [\n        \"coverage.percnt >= 80\",\n        \"vulnerabilites.high <= 2\",\n        \"licenses.denied == 0\",\n        \"coverage.percent => 80\",\n    ],\n)\n\
         gate(name = \"lonely\", checks = [\"tests.failed == 0\"])\n",
    );
    let run = ws.run(&["query", "//..."]);
    assert_eq!(run.code, 2);
    golden("gate_bad_checks", run.bad_input());
}

/// A gate's table reaches the reports: a `gate` event in the stream (also when the gate is
/// reused) and a "Gates" section in the job summary.
#[test]
fn the_table_is_in_the_events_and_the_summary() {
    let ws = reports(85.0, 1);
    let events = ws.path().join("events.jsonl");
    let summary = ws.path().join("summary.md");
    let run = ws.run(&[
        "build",
        "//q:quality",
        "--events",
        events.to_str().unwrap(),
        "--summary",
        summary.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let gate_events = |path: &std::path::Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|e| e["event"] == "gate")
            .collect()
    };
    let g = gate_events(&events);
    assert_eq!(g.len(), 1);
    assert_eq!(g[0]["label"], "//q:quality");
    assert_eq!(g[0]["passed"], false);
    assert_eq!(g[0]["checks"][1]["metric"], "tests.failed");
    assert_eq!(g[0]["checks"][1]["value"], "1");
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(
        md.contains("**`//q:quality`**: **failed**\n\n| Metric | Threshold | Value | Verdict |"),
        "{md}"
    );
    assert!(
        md.contains("| `tests.failed` | == 0 | 1 | **FAIL** |"),
        "{md}"
    );
    // And in JUnit: a suite per gate, a case per check.
    let junit = ws.path().join("junit.xml");
    let run = ws.run(&["build", "//q:quality", "--junit", junit.to_str().unwrap()]);
    assert_eq!(run.code, 1);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("<testsuite name=\"//q:quality (gate)\""),
        "{xml}"
    );
    assert!(
        xml.contains("<testcase name=\"tests.failed == 0\" classname=\"//q:quality\""),
        "{xml}"
    );
    assert!(xml.contains("tests.failed is 1, not == 0"), "{xml}");
    // Reused (the same failure is not run again, but a passing gate is cached): still reported.
    let fixed = reports(85.0, 0);
    assert_eq!(fixed.run(&["build", "//q:quality"]).code, 0);
    let again = fixed.path().join("again.jsonl");
    let run = fixed.run(&["build", "//q:quality", "--events", again.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let g = gate_events(&again);
    assert_eq!((g.len(), &g[0]["passed"]), (1, &serde_json::json!(true)));
}

/// Regressions of the adversarial run: reports in a directory output are read; a value next to
/// its threshold is never rounded into a contradiction; a threshold keeps its digits; names
/// from reports lose their escapes; a broken report is named with why; license patterns ignore
/// case and take `*` at either end.
#[test]
fn adversarial_regressions() {
    let ws = Ws::new().file(
        "q/BUILD",
        r#"task(name = "dir", outs = ["rep/"], cmd = "mkdir -p rep/sub && echo '{\"totals\":{\"percent_covered\":79.996,\"num_statements\":10,\"covered_lines\":7,\"missing_lines\":3},\"files\":{}}' > rep/sub/c.json")
task(name = "lic", outs = ["lic.json"], cmd = "printf '[{\"Name\":\"x\\\\u001b[31m\",\"License\":\"GNU General Public License v3 (GPLv3)\"}]' > lic.json")
task(name = "broken", outs = ["m.json"], cmd = "echo '{\"totals\": ' > m.json")
gate(name = "cov", deps = [":dir"], checks = ["coverage.percent >= 80", "coverage.percent < 0.12345678"])
gate(name = "lic_gate", deps = [":lic"], checks = ["licenses.denied == []"], licenses_denied = ["*gpl*"])
gate(name = "nothing", deps = [":broken"], checks = ["coverage.percent >= 80"])
"#,
    );
    let run = ws.run(&["build", "-k", "//q:all"]);
    assert_eq!(run.code, 1);
    let log = |label: &str| ws.run(&["log", label]).stdout;
    let cov = log("//q:cov");
    // Rounded only where the rounding cannot seem to contradict the verdict.
    assert!(
        cov.contains("coverage.percent  >= 80         79.996  FAIL"),
        "{cov}"
    );
    assert!(
        cov.contains("coverage.percent  < 0.12345678  80      FAIL"),
        "{cov}"
    );
    let lic = log("//q:lic_gate");
    assert!(
        lic.contains("[x (GNU General Public License v3 (GPLv3))]"),
        "{lic}"
    );
    assert!(!lic.contains('\u{1b}'), "{lic:?}");
    let nothing = log("//q:nothing");
    assert!(
        nothing.contains(
            "no input is a report; not read: `q/m.json` (not valid JSON: EOF while parsing"
        ),
        "{nothing}"
    );
    // A `*` inside a pattern is an error at analysis.
    ws.write(
        "q/BUILD",
        b"task(name = \"lic\", outs = [\"l.json\"], cmd = \"true\")\ngate(name = \"g\", deps = [\":lic\"], checks = [\"licenses.denied == []\"], licenses_denied = [\"G*L\"])\n",
    );
    let bad = ws.run(&["query", "//..."]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr
            .contains("`G*L`: a `*` matches only at the start or the end of a name"),
        "{}",
        bad.stderr
    );
}
