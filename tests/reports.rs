//! The build's reports through the binary (docs/reports.md): the event stream, the Chrome
//! trace, the merged JUnit file, GitHub annotations and the job summary.

use std::collections::{BTreeMap, BTreeSet};

use crate::support::{git, golden, Ws};

/// A package whose `:unit` writes pytest's JUnit XML (one passing, one failing case, the
/// failure's traceback pointing at `z/test_a.py:2`) and exits 1, as a failing `py_test` does;
/// `:lint` prints a `file:line:col:` diagnostic and fails; `:fine` passes.
fn failing_package() -> Ws {
    let junit = r#"<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" failures="1" skipped="0" tests="2" time="0.3"><testcase classname="test_a" name="test_ok" time="0.001" /><testcase classname="test_a" name="test_bad" time="0.002"><failure message="assert 1 == 2">def test_bad():
&gt;       assert 1 == 2
E       assert 1 == 2

test_a.py:2: AssertionError</failure></testcase></testsuite></testsuites>"#;
    Ws::new()
        .file("z/test_a.py", "def test_bad():\n    assert 1 == 2\n")
        .file("z/lib.py", "import os\nx = 1\n")
        .file("z/junit.xml.in", junit)
        .file(
            "z/BUILD",
            "task(name = \"unit\", srcs = [\"test_a.py\", \"junit.xml.in\"], outs = [\"reports/unit.xml\"],\n\
             \x20    cmd = \"sleep 0.4; mkdir -p reports && cp junit.xml.in reports/unit.xml && echo '1 failed' && exit 1\")\n\
             task(name = \"lint\", srcs = [\"lib.py\"],\n\
             \x20    cmd = \"sleep 0.2; echo 'lib.py:1:8: F401 [*] `os` imported but unused'; exit 1\")\n\
             task(name = \"fine\", cmd = \"true\")\n",
        )
}

/// Only flow's annotations in `stdout`: the workflow commands after the `::TOKEN::` that
/// resumes the commands stopped while the build ran (checked: the build's own lines come
/// between `::stop-commands::TOKEN` and it).
fn commands(stdout: &str) -> String {
    let lines: Vec<&str> = stdout.lines().collect();
    let Some(first) = lines.iter().position(|l| l.starts_with("::")) else {
        return String::new();
    };
    let token = lines[first]
        .strip_prefix("::stop-commands::")
        .unwrap_or_else(|| panic!("the first command stops commands: {stdout}"));
    assert_eq!(
        first, 0,
        "nothing is printed before commands are stopped: {stdout}"
    );
    let resume = format!("::{token}::");
    let at = lines
        .iter()
        .position(|l| *l == resume)
        .unwrap_or_else(|| panic!("commands are resumed: {stdout}"));
    lines[at + 1..]
        .iter()
        .filter(|l| l.starts_with("::"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Durations (`0.12s`) replaced by `Ns`: they differ from run to run.
fn no_times(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        let starts = b[i].is_ascii_digit() && (i == 0 || !b[i - 1].is_ascii_alphanumeric());
        let mut j = i;
        while starts && j < b.len() && (b[j].is_ascii_digit() || b[j] == b'.') {
            j += 1;
        }
        let unit = j < b.len() && b[j] == b's' && b[i..j].contains(&b'.');
        if starts && unit && !b.get(j + 1).is_some_and(|c| c.is_ascii_alphanumeric()) {
            out.push_str("Ns");
            i = j + 1;
        } else {
            let c = text[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// `GITHUB_ACTIONS=true` turns on the annotations (at the failing assertion's line from the
/// JUnit output, at the diagnostic's line from the log, and at each failed target's BUILD
/// line) and the job summary appended to `$GITHUB_STEP_SUMMARY`, without any flag.
#[test]
fn github_actions_get_annotations_and_a_job_summary_by_themselves() {
    let ws = failing_package();
    let summary = ws.path().join("summary.md");
    std::fs::write(&summary, "earlier step\n").unwrap();
    let run = ws.run_env(
        ws.path(),
        &["build", "-k", "-j", "1", "//..."],
        &[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_STEP_SUMMARY", summary.to_str().unwrap()),
        ],
    );
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    golden("github_annotations", &no_times(&commands(&run.stdout)));
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(md.starts_with("earlier step\n"), "appended, not replaced");
    golden("github_job_summary", &no_times(&md));
    // Without the variable, and without flags: no annotations.
    let quiet = ws.run(&["build", "-k", "//..."]);
    assert_eq!(commands(&quiet.stdout), "");
}

/// Regression (adversarial run): a failing action's log printed workflow commands that GitHub
/// ran (`::stop-commands::` in a log even hid flow's annotations). Now the build's output is
/// inside `::stop-commands::TOKEN` ... `::TOKEN::`, TOKEN random, and flow's annotations after.
#[test]
fn a_log_cannot_run_workflow_commands() {
    let ws = Ws::new().file(
        "x/BUILD",
        "task(name = \"t\", cmd = \"echo ::stop-commands::tok; echo ::error::injected; \
         echo ::add-mask::x; exit 1\")\n",
    );
    let run = ws.run_env(
        ws.path(),
        &["build", "-k", "//..."],
        &[("GITHUB_ACTIONS", "true")],
    );
    assert_eq!(run.code, 1);
    let shown = commands(&run.stdout);
    assert_eq!(shown.lines().count(), 1, "{}", run.stdout);
    assert!(
        shown.starts_with("::error file=x/BUILD,line=1,title=//x%3At failed::"),
        "{shown}"
    );
    let lines: Vec<&str> = run.stdout.lines().collect();
    let injected = lines
        .iter()
        .position(|l| l.contains("::error::injected"))
        .unwrap();
    let resumed = lines.iter().position(|l| l.starts_with("::flow-")).unwrap();
    assert!(0 < injected && injected < resumed, "{}", run.stdout);
    let token = lines[0].strip_prefix("::stop-commands::").unwrap();
    assert_eq!(token.len(), 37, "flow- and 128 bits: {token}");
    assert_ne!(token, "tok");
}

/// GitHub shows 10 errors per step: 24 candidates (a source line and a BUILD line for each of
/// 12 failed targets) are cut to 10, the files in the change (`--since`) first, and the
/// summary counts the 14 left out.
#[test]
fn annotations_are_capped_and_ranked_with_the_change_first() {
    let mut build = String::new();
    let ws = Ws::new().file("z/common.txt", "v1\n");
    for i in 0..12 {
        ws.write(&format!("z/f{i:02}.py"), b"x = 1\n");
        build.push_str(&format!(
            "task(name = \"t{i:02}\", srcs = [\"f{i:02}.py\", \"common.txt\"], \
             cmd = \"echo 'f{i:02}.py:1: E999 broken'; exit 1\")\n"
        ));
    }
    ws.write("z/BUILD", build.as_bytes());
    git(ws.path(), &["init", "-q", "-b", "main"]);
    git(ws.path(), &["add", "."]);
    git(ws.path(), &["commit", "-q", "-m", "base"]);
    ws.write("z/common.txt", b"v2\n");
    ws.write("z/f07.py", b"x = 2\n");
    let summary = ws.path().join("s.md");
    let run = ws.run(&[
        "build",
        "-k",
        "--since",
        "HEAD",
        "--annotations",
        "--summary",
        summary.to_str().unwrap(),
        "//...",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let shown = commands(&run.stdout);
    let shown: Vec<&str> = shown.lines().collect();
    assert_eq!(shown.len(), 10, "{}", run.stdout);
    // z/common.txt is in the change but no annotation is there; z/f07.py is, and comes first.
    assert!(
        shown[0].starts_with("::error file=z/f07.py,line=1,"),
        "{shown:?}"
    );
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(
        md.contains("10 annotation(s) shown; 14 more not shown (14 error(s), 0 warning(s)"),
        "{md}"
    );
}

/// `--events`: the documented schema (docs/reports.md), one JSON object a line, read back: a
/// `build_started` first, a `build_finished` last, and for each action its decision, its start
/// (with the job slot) when it ran, and its outcome with key and duration.
#[test]
fn the_event_stream_follows_its_schema() {
    let ws = failing_package();
    let events = ws.path().join("events.jsonl");
    let run = ws.run(&[
        "build",
        "-k",
        "-j",
        "1",
        "--events",
        events.to_str().unwrap(),
        "//...",
    ]);
    assert_eq!(run.code, 1);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines[0]["event"], "build_started");
    assert_eq!(lines[0]["schema"], 1);
    assert_eq!(lines[0]["actions"], 3);
    let last = lines.last().unwrap();
    assert_eq!(last["event"], "build_finished");
    assert_eq!(last["outcome"], "failed");
    assert_eq!(
        (last["ran"].as_u64(), last["failed"].as_u64()),
        (Some(1), Some(2))
    );
    let mut at = 0;
    for l in &lines {
        let t = l["at_ms"].as_u64().expect("at_ms on every line");
        assert!(t >= at, "at_ms never goes back: {l}");
        at = t;
    }
    // Each action's events in causal order: decided, started, finished. Between actions the
    // order depends on timing (a slot freed by one command can start the next before the
    // first one's `finished` is written), so the golden below sorts the middle of the stream.
    for label in ["//z:fine", "//z:lint", "//z:unit"] {
        let at = |event: &str| {
            lines
                .iter()
                .position(|l| l["label"] == label && l["event"] == event)
                .unwrap_or_else(|| panic!("no {event} for {label}"))
        };
        assert!(at("decision") < at("started") && at("started") < at("finished"));
    }
    // The shape of the stream, without its times, keys and job slots, the actions' events
    // sorted between the first line and the last.
    let mut shape: Vec<String> = lines
        .iter()
        .map(|l| {
            let mut l = l.clone();
            let o = l.as_object_mut().unwrap();
            if let Some(slot) = o.get("slot") {
                assert!(slot.as_u64().is_some_and(|s| s < 2), "a job slot: {slot}");
                o.insert("slot".into(), "S".into());
            }
            for k in ["at_ms", "unix_ms", "duration_ms", "flow"] {
                if o.contains_key(k) {
                    o.insert(k.into(), "N".into());
                }
            }
            if let Some(k) = o.get("key") {
                assert_eq!(k.as_str().map(str::len), Some(64), "a key is a digest: {k}");
                o.insert("key".into(), "K".into());
            }
            if let Some(w) = o.get("why").and_then(|w| w.as_str()) {
                o.insert("why".into(), no_times(w).into());
            }
            format!("{l}\n")
        })
        .collect();
    let end = shape.len() - 1;
    shape[1..end].sort();
    golden("events_stream", &shape.concat());
    // A build with nothing to run is a stream too: every action reused.
    let again = ws.path().join("again.jsonl");
    let ok = Ws::new().file("p/BUILD", "task(name = \"a\", cmd = \"true\")\n");
    ok.run(&["build"]);
    let run = ok.run(&["build", "--events", again.to_str().unwrap()]);
    assert_eq!(run.code, 0);
    let text = std::fs::read_to_string(&again).unwrap();
    assert!(text.contains("\"outcome\":\"cached\""), "{text}");
    assert!(text.lines().last().unwrap().contains("\"build_finished\""));
}

/// `--profile`: a Chrome trace, parsed back: each action that ran is a complete event on a job
/// slot's track, no two overlap on one track, and the critical path (the chain a → b → c, not
/// the short side action) is marked and repeated on its own track.
#[test]
fn the_profile_is_a_chrome_trace_with_the_critical_path() {
    let ws = Ws::new().file(
        "p/BUILD",
        "task(name = \"a\", cmd = \"sleep 0.3; echo a\")\n\
         task(name = \"b\", deps = [\":a\"], cmd = \"sleep 0.3; echo b\")\n\
         task(name = \"c\", deps = [\":b\"], cmd = \"sleep 0.3; echo c\")\n\
         task(name = \"side\", cmd = \"sleep 0.1\")\n",
    );
    let trace = ws.path().join("out/trace.json");
    let run = ws.run(&[
        "build",
        "-j",
        "2",
        "--profile",
        trace.to_str().unwrap(),
        "//...",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&trace).unwrap()).expect("JSON");
    let events = doc["traceEvents"].as_array().unwrap();
    let names: BTreeMap<u64, String> = events
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "thread_name")
        .map(|e| {
            let name = e["args"]["name"].as_str().unwrap().to_owned();
            (e["tid"].as_u64().unwrap(), name)
        })
        .collect();
    let mut spans: BTreeMap<String, Vec<(u64, u64, String)>> = BTreeMap::new();
    for e in events.iter().filter(|e| e["ph"] == "X") {
        let track = names[&e["tid"].as_u64().unwrap()].clone();
        let ts = e["ts"].as_u64().unwrap();
        let dur = e["dur"].as_u64().unwrap();
        spans
            .entry(track)
            .or_default()
            .push((ts, ts + dur, e["name"].as_str().unwrap().into()));
    }
    let on_slots: BTreeSet<String> = spans
        .iter()
        .filter(|(t, _)| t.starts_with("job slot"))
        .flat_map(|(_, s)| s.iter().map(|(_, _, n)| n.clone()))
        .collect();
    assert_eq!(
        on_slots,
        ["//p:a", "//p:b", "//p:c", "//p:side"]
            .map(String::from)
            .into()
    );
    for (track, s) in &spans {
        let mut s = s.clone();
        s.sort();
        for w in s.windows(2) {
            assert!(w[0].1 <= w[1].0, "{track}: {w:?} overlap");
        }
    }
    let critical: Vec<String> = spans["critical path"].iter().map(|s| s.2.clone()).collect();
    assert_eq!(critical, ["//p:a", "//p:b", "//p:c"]);
    assert_eq!(
        doc["otherData"]["critical_path"],
        serde_json::json!(["//p:a", "//p:b", "//p:c"])
    );
    assert!(doc["otherData"]["critical_path_ms"].as_u64().unwrap() >= 900);
}

/// `--junit`: the test cases of a failing test's own JUnit output (kept from the failed run)
/// appear under its target, with the failing case placed at the assertion's line.
#[test]
fn junit_merges_the_test_cases_of_a_failing_test() {
    let ws = failing_package();
    let report = ws.path().join("junit.xml");
    let run = ws.run(&[
        "build",
        "-k",
        "--junit",
        report.to_str().unwrap(),
        "//z:unit",
    ]);
    assert_eq!(run.code, 1);
    let xml = std::fs::read_to_string(&report).unwrap();
    // Parsed back: suites and cases by name.
    let mut reader = quick_xml::Reader::from_str(&xml);
    let mut suites = Vec::new();
    let mut cases = Vec::new();
    loop {
        match reader.read_event().expect("well-formed XML") {
            quick_xml::events::Event::Eof => break,
            quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e) => {
                let attr = |n: &str| {
                    e.try_get_attribute(n)
                        .unwrap()
                        .map(|a| a.unescape_value().unwrap().into_owned())
                };
                match e.name().as_ref() {
                    b"testsuite" => suites.push(attr("name").unwrap()),
                    b"testcase" => cases.push((
                        suites.last().cloned().unwrap(),
                        attr("name").unwrap(),
                        attr("file"),
                        attr("line"),
                    )),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    assert_eq!(suites, ["flow", "//z:unit"]);
    assert_eq!(
        cases,
        [
            ("flow".into(), "//z:unit".into(), None, None),
            ("//z:unit".into(), "test_ok".into(), None, None),
            (
                "//z:unit".into(),
                "test_bad".into(),
                Some("z/test_a.py".into()),
                Some("2".into())
            ),
        ]
    );
}

/// A real failing `py_test` (pytest installed offline from the wheels `.ci/run` downloads to
/// `$FLOW_TEST_WHEELS`): its JUnit cases are merged under its target, and the failing case is
/// annotated at the failing assertion's line. Without the wheels the test says so and passes,
/// unless `FLOW_REQUIRE_PYTEST=1` (set by `.ci/run`).
#[test]
fn a_failing_py_test_is_merged_and_annotated_at_its_assertion() {
    let Some(wheels) = std::env::var_os("FLOW_TEST_WHEELS").filter(|w| !w.is_empty()) else {
        assert!(
            std::env::var_os("FLOW_REQUIRE_PYTEST").is_none(),
            "FLOW_REQUIRE_PYTEST is set but FLOW_TEST_WHEELS (pytest's wheels) is not"
        );
        eprintln!("skipped: FLOW_TEST_WHEELS is not set (.ci/run sets it)");
        return;
    };
    let wheels = wheels.to_str().unwrap().to_owned();
    let ws = Ws::new()
        .file("flow.toml", "[vars]\npython_versions = [\"3.11\"]\n")
        .file(
            "calc/BUILD",
            &format!(
                "load(\"@flow//rules:python.star\", \"py_requirements\", \"py_test\")\n\
                 py_requirements(name = \"reqs\", srcs = [\"requirements.txt\"], pip = \"system\",\n\
                 \x20   pip_args = [\"--no-index\", \"--find-links\", \"{wheels}\"])\n\
                 py_test(name = \"test\", srcs = [\"calc.py\", \"tests/test_calc.py\"],\n\
                 \x20   requirements = \":reqs\", cov = [])\n"
            ),
        )
        .file("calc/requirements.txt", "pytest==8.3.4\n")
        .file("calc/calc.py", "def add(a, b):\n    return a - b\n")
        .file(
            "calc/tests/test_calc.py",
            "from calc import add\n\n\ndef test_ok():\n    assert add(0, 0) == 0\n\n\n\
             def test_add():\n    assert add(1, 2) == 3\n",
        );
    let report = ws.path().join("junit.xml");
    let run = ws.run(&[
        "build",
        "-k",
        "--annotations",
        "--junit",
        report.to_str().unwrap(),
        "//calc:test",
    ]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let first = commands(&run.stdout);
    let first = first.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(
            "::error file=calc/tests/test_calc.py,line=9,title=tests.test_calc.test_add failed"
        ),
        "{}",
        run.stdout
    );
    let xml = std::fs::read_to_string(&report).unwrap();
    assert!(
        xml.contains("<testsuite name=\"//calc:test_py3_11\" tests=\"2\" failures=\"1\""),
        "{xml}"
    );
    assert!(
        xml.contains("name=\"test_add\" classname=\"tests.test_calc\"")
            && xml.contains("file=\"calc/tests/test_calc.py\" line=\"9\""),
        "{xml}"
    );
}

/// The trace of a one-job build reads like the golden file once its times and keys are zeroed.
#[test]
fn the_profile_of_a_small_build_reads_like_its_golden() {
    let ws = Ws::new().file(
        "p/BUILD",
        "task(name = \"x\", cmd = \"echo x\")\n\
         task(name = \"y\", deps = [\":x\"], cmd = \"sleep 0.05; echo y\")\n",
    );
    ws.run(&["build", "//p:x"]);
    let trace = ws.path().join("trace.json");
    let run = ws.run(&["build", "-j", "1", "--profile", trace.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&trace).unwrap()).expect("JSON");
    fn zero(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(o) => {
                for (k, v) in o.iter_mut() {
                    match k.as_str() {
                        "ts" | "dur" | "started_unix_ms" | "critical_path_ms" | "flow" => {
                            *v = 0.into()
                        }
                        "key" if v.is_string() => *v = "K".into(),
                        _ => zero(v),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(zero),
            _ => {}
        }
    }
    zero(&mut doc);
    golden(
        "profile_trace",
        &serde_json::to_string_pretty(&doc).unwrap(),
    );
}

/// Regression (adversarial run): a JUnit output that is not well-formed was dropped silently
/// (and merged as an empty suite with `time="-0.000"`); the report files were mode 0600.
/// Now it is a warning naming it, nothing of it is merged, and every report is 0644.
#[test]
fn a_broken_junit_output_is_a_warning_and_reports_are_readable() {
    use std::os::unix::fs::PermissionsExt;
    let ws = Ws::new().file(
        "j/BUILD",
        "task(name = \"t\", outs = [\"r.xml\"], \
         cmd = \"printf '<testsuites><testsuite name=s><testcase name=a>' > r.xml; exit 1\")\n",
    );
    let junit = ws.path().join("out/junit.xml");
    let profile = ws.path().join("out/trace.json");
    let run = ws.run(&[
        "build",
        "--junit",
        junit.to_str().unwrap(),
        "--profile",
        profile.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains(
            "warning: `j/r.xml` of //j:t is not well-formed JUnit XML (it ends inside 3 open \
             element(s)): its test cases are not in the reports"
        ),
        "{}",
        run.stderr
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(!xml.contains("<testsuite name=\"//j:t\""), "{xml}");
    assert!(!xml.contains("-0.000"), "{xml}");
    for f in [&junit, &profile] {
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "{}", f.display());
    }
}

/// GitHub takes at most 1 MiB of summary per step: with 30 failing targets printing long
/// lines, the summary details 25 of them, names the other 5, cuts the lines, and stays small.
#[test]
fn the_job_summary_stays_small_with_many_failures() {
    let mut build = String::new();
    for i in 0..30 {
        build.push_str(&format!(
            "task(name = \"t{i:02}\", cmd = \"for i in $$(seq 60); do printf '%05000d\\\\n' 0; done; exit 1\")\n"
        ));
    }
    let ws = Ws::new().file("m/BUILD", &build);
    let summary = ws.path().join("s.md");
    let run = ws.run(&["build", "-k", "--summary", summary.to_str().unwrap()]);
    assert_eq!(run.code, 1);
    let md = std::fs::read_to_string(&summary).unwrap();
    assert_eq!(md.matches("<details>").count(), 25);
    assert!(
        md.contains("5 more failed: `//m:t25`, `//m:t26`, `//m:t27`, `//m:t28`, `//m:t29`."),
        "{}",
        &md[md.len() - 600..]
    );
    assert!(md.len() < 25 * 40 * 410 + 10_000, "{} bytes", md.len());
}

/// Regression (adversarial run): a BUILD file's `print()` and an analysis error's text reached
/// the output before commands were stopped. The stop is now the first line flow prints, and
/// the resume the last, whatever the exit code.
#[test]
fn commands_are_stopped_from_the_first_line_to_the_last() {
    let ws = Ws::new().file(
        "p/BUILD",
        "print(\"a\\n::error::from print\")\ntask(name = \"t\", cmd = \"true\")\n",
    );
    let env = [("GITHUB_ACTIONS", "true")];
    let run = ws.run_env(ws.path(), &["build"], &env);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let first = run.stdout.lines().next().unwrap();
    let token = first
        .strip_prefix("::stop-commands::")
        .expect("stopped first");
    assert!(run.stderr.contains("::error::from print"), "{}", run.stderr);
    assert!(
        run.stdout.contains(&format!("\n::{token}::\n")),
        "{}",
        run.stdout
    );
    // An analysis error (exit 2) whose text holds a command line.
    ws.write("p/BUILD", b"fail(\"x\\n::error title=Injected::y\")\n");
    let run = ws.run_env(ws.path(), &["build"], &env);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("::error title=Injected::y"),
        "{}",
        run.stderr
    );
    let lines: Vec<&str> = run.stdout.lines().collect();
    let token = lines[0]
        .strip_prefix("::stop-commands::")
        .expect("stopped first");
    assert_eq!(lines, [lines[0], &format!("::{token}::")]);
}

/// Every action that ran has its `started` event before its `finished` one, however fast it
/// is (CI run: the owner loop picked a completion before the slot message that preceded it, and
/// the stream lost the `started` event).
#[test]
fn every_run_action_is_started_before_it_finishes() {
    let ws = Ws::new();
    for round in 0..3 {
        // Other commands each round: every action runs.
        let mut build = String::new();
        for i in 0..300 {
            build.push_str(&format!(
                "task(name = \"t{i}\", cmd = \"true {round} {i}\")\n"
            ));
        }
        ws.write("p/BUILD", build.as_bytes());
        let events = ws.path().join(format!("e{round}.jsonl"));
        let run = ws.run(&[
            "build",
            "-j",
            "16",
            "//p:all",
            "--events",
            events.to_str().unwrap(),
        ]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let mut started = std::collections::HashSet::new();
        let mut finished = 0;
        for line in std::fs::read_to_string(&events).unwrap().lines() {
            let e: serde_json::Value = serde_json::from_str(line).unwrap();
            let label = e["label"].as_str().unwrap_or("").to_owned();
            match e["event"].as_str() {
                Some("started") => {
                    started.insert(label);
                }
                Some("finished") if e["decision"] == "ran" => {
                    finished += 1;
                    assert!(
                        started.contains(&label),
                        "round {round}: {label} finished unstarted"
                    );
                }
                _ => {}
            }
        }
        assert_eq!(finished, 300, "round {round}");
    }
}
