//! The report readers on real outputs of the pinned tools (`tests/fixtures/gates/`, with how
//! each was made) and on malformed files; the evaluation of checks over them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::evaluate;
use super::reports::{read, Found, Metric};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gates")
        .join(name)
}

/// The reports of fixture `name`, by kind.
fn found(name: &str, denied: &[&str]) -> BTreeMap<&'static str, Found> {
    let bytes = std::fs::read(fixture(name)).unwrap();
    let denied: Vec<String> = denied.iter().map(|d| d.to_string()).collect();
    read(&bytes, &denied)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .into_iter()
        .map(|f| (f.kind, f))
        .collect()
}

fn num(f: &Found, metric: &str) -> f64 {
    match f.metrics.get(metric) {
        Some(Metric::Number(n)) => *n,
        other => panic!("{}.{metric}: {other:?}", f.kind),
    }
}

fn names(f: &Found, metric: &str) -> Vec<String> {
    match f.metrics.get(metric) {
        Some(Metric::Names(v)) => v.clone(),
        other => panic!("{}.{metric}: {other:?}", f.kind),
    }
}

#[test]
fn coverage_py_json() {
    let f = &found("coverage.json", &[])["coverage"];
    // The figures coverage.py printed for that run: 57 statements, all covered.
    assert_eq!(
        (
            num(f, "percent"),
            num(f, "statements"),
            num(f, "covered"),
            num(f, "missing")
        ),
        (100.0, 57.0, 57.0, 0.0)
    );
}

#[test]
fn junit_xml_from_pytest() {
    let f = &found("junit.xml", &[])["tests"];
    // pytest said `4 passed`.
    assert_eq!(
        (num(f, "total"), num(f, "passed"), num(f, "failed")),
        (4.0, 4.0, 0.0)
    );
    assert_eq!(num(f, "pass_rate"), 1.0);
}

#[test]
fn bandit_json_by_severity() {
    let f = &found("bandit.json", &[])["vulnerabilities"];
    // bandit's own totals in that file: SEVERITY.HIGH 2, MEDIUM 2, LOW 3.
    assert_eq!(
        (
            num(f, "critical"),
            num(f, "high"),
            num(f, "medium"),
            num(f, "low"),
            num(f, "total")
        ),
        (0.0, 2.0, 2.0, 3.0, 7.0)
    );
    // 100 - 2.5 * 2 - 1 * 2 - 0.25 * 3, by hand.
    assert_eq!(num(f, "score"), 92.25);
    let clean = &found("bandit_clean.json", &[])["vulnerabilities"];
    assert_eq!(num(clean, "total"), 0.0);
    assert_eq!(num(clean, "score"), 100.0);
}

#[test]
fn sarif_by_level_and_severity() {
    let all = found("ruff.sarif", &[]);
    // Five results (S105, S602, S301, S324, S307), all `error`: ruff's SARIF has no
    // security-severity, so a level `error` counts as high.
    assert_eq!(
        (
            num(&all["findings"], "total"),
            num(&all["findings"], "error")
        ),
        (5.0, 5.0)
    );
    assert_eq!(num(&all["vulnerabilities"], "high"), 5.0);
}

#[test]
fn ruff_json() {
    let f = &found("ruff.json", &[])["lint"];
    assert_eq!((num(f, "violations"), num(f, "fixable")), (10.0, 8.0));
    // An empty list: no violation (and, as far as a list can say, no license either).
    let empty = found("ruff_empty.json", &[]);
    assert_eq!(num(&empty["lint"], "violations"), 0.0);
}

#[test]
fn radon_complexity_and_maintainability() {
    let cc = &found("radon_cc.json", &[])["complexity"];
    // `radon cc -s -a` said: 12 blocks, average 3.08; `tangled` is the one above 10 (14).
    // The gate counts functions and methods and the closures in them (in_range's `check`, 3),
    // not the 3 classes (radon gives a class the sum of its methods'): 10 blocks, 33 in all.
    assert_eq!(
        (num(cc, "max"), num(cc, "blocks"), num(cc, "over_10")),
        (14.0, 10.0, 1.0)
    );
    assert!((num(cc, "average") - 3.3).abs() < 1e-9);
    let mi = &found("radon_mi.json", &[])["maintainability"];
    assert_eq!(num(mi, "files"), 8.0);
    assert!((num(mi, "min") - 53.88).abs() < 1e-2);
}

#[test]
fn pip_licenses_with_a_denied_list() {
    let f = &found(
        "licenses.json",
        &["Mozilla Public License 2.0 (MPL 2.0)", "GPL*"],
    )["licenses"];
    assert_eq!(num(f, "count"), 23.0);
    assert_eq!(
        names(f, "denied"),
        ["pathspec (Mozilla Public License 2.0 (MPL 2.0))"]
    );
    assert_eq!(names(f, "unknown").len(), 6);
}

#[test]
fn malformed_or_foreign_files_are_no_reports_or_a_clear_error() {
    for text in [
        &b""[..],
        b"not json",
        b"{\"a\": \"b\"}",
        b"[1, 2]",
        b"\x00\xff\x00",
        b"{",
    ] {
        assert_eq!(read(text, &[]), Ok(Vec::new()), "{text:?}");
    }
    // It starts as JUnit and breaks: an error naming why, not a panic.
    let e = read(b"<testsuite><testcase name=\"a\">", &[]).unwrap_err();
    assert!(!e.is_empty());
    // A report of a known shape with a value of the wrong kind is an error naming it, never a
    // 0 that could pass a gate.
    for (text, why) in [
        (
            &b"{\"totals\": {\"percent_covered\": \"x\"}, \"files\": {}}"[..],
            "`totals.percent_covered` is \"x\", not a number",
        ),
        (
            b"{\"totals\": {\"percent_covered\": 90, \"missing_lines\": \"30\"}, \"files\": {}}",
            "`totals.missing_lines` is \"30\", not a number",
        ),
        (
            b"{\"version\": \"2.1.0\", \"runs\": [{\"tool\": {}, \"results\": \"x\"}]}",
            "SARIF: `runs[0].results` is \"x\", not a list",
        ),
        (
            b"{\"version\": \"2.1.0\", \"runs\": [{\"results\": [5]}]}",
            "SARIF: `runs[0].results[0]` is 5, not a result",
        ),
        (
            b"{\"version\": \"2.1.0\", \"runs\": [{\"results\": [{\"level\": \"bogus\"}]}]}",
            "has level `bogus`, not none, note, warning or error",
        ),
        (
            b"{\"a.py\": [{\"type\": \"function\", \"complexity\": 3}], \"b.py\": {\"error\": \"invalid syntax\"}}",
            "radon cc could not read 1 file(s): b.py: invalid syntax",
        ),
    ] {
        let e = read(text, &[]).unwrap_err();
        assert!(e.contains(why), "{e}");
    }
    // A UTF-8 byte-order mark before the JSON is skipped.
    let bom = read(b"\xEF\xBB\xBF{\"p95_ms\": 3}", &[]).unwrap();
    assert_eq!(bom[0].kind, "metrics");
    // A security-severity as a number counts like the string; a NaN, negative or out-of-range
    // one is no score, and the level decides (it is never dropped).
    let sarif = |sev: &str| {
        format!("{{\"version\": \"2.1.0\", \"runs\": [{{\"results\": [{{\"level\": \"note\", \"properties\": {{\"security-severity\": {sev}}}}}]}}]}}")
    };
    let vulns = |sev: &str| {
        let found = read(sarif(sev).as_bytes(), &[]).unwrap();
        let v = found
            .into_iter()
            .find(|f| f.kind == "vulnerabilities")
            .unwrap();
        ["critical", "low"].map(|k| match &v.metrics[k] {
            Metric::Number(n) => *n,
            Metric::Names(_) => -1.0,
        })
    };
    assert_eq!(vulns("9.5"), [1.0, 0.0]);
    assert_eq!(vulns("\"9.5\""), [1.0, 0.0]);
    for bad in ["\"NaN\"", "\"-1\"", "11", "\"-inf\""] {
        assert_eq!(vulns(bad), [0.0, 1.0], "{bad}");
    }
}

fn inputs(names: &[&str]) -> Vec<(String, PathBuf)> {
    names
        .iter()
        .map(|n| (format!("p/{n}"), fixture(n)))
        .collect()
}

fn canonical(checks: &[&str], denied: &[&str]) -> String {
    let checks: Vec<_> = checks
        .iter()
        .map(|c| flow_rules::gate::parse_check(c).unwrap())
        .collect();
    let denied: Vec<String> = denied.iter().map(|d| d.to_string()).collect();
    flow_rules::gate::canonical(&checks, &denied)
}

#[test]
fn a_gate_passes_fails_and_says_what_it_could_not_read() {
    let reports = inputs(&["coverage.json", "junit.xml", "bandit.json", "licenses.json"]);
    let pass = evaluate(
        "//p:gate",
        &canonical(
            &[
                "coverage.percent >= 80",
                "tests.failed == 0",
                "vulnerabilities.critical == 0",
            ],
            &[],
        ),
        &reports,
    );
    assert_eq!(pass.status, 0, "{}", pass.log);
    assert!(
        pass.log
            .starts_with("gate //p:gate: 3 check(s), all passed\n"),
        "{}",
        pass.log
    );
    let fail = evaluate(
        "//p:gate",
        &canonical(
            &["vulnerabilities.high <= 1", "licenses.denied == []"],
            &["Mozilla*"],
        ),
        &reports,
    );
    assert_eq!(fail.status, 1, "{}", fail.log);
    assert_eq!(
        fail.log,
        "gate //p:gate: 2 check(s), 2 failed\n\
         \x20 metric                threshold  value                                              verdict\n\
         \x20 vulnerabilities.high  <= 1       2                                                  FAIL\n\
         \x20 licenses.denied       == []      [pathspec (Mozilla Public License 2.0 (MPL 2.0))]  FAIL\n"
    );
    let json: serde_json::Value = serde_json::from_str(&fail.json).unwrap();
    assert_eq!(json["passed"], false);
    assert_eq!(json["checks"][0]["value"], "2");
    assert_eq!(json["checks"][0]["from"][0], "p/bandit.json");
    // A kind no input has, and a metrics name no metrics.json has: the gate's own error (2),
    // saying what the inputs hold.
    let missing = evaluate(
        "//p:gate",
        &canonical(&["complexity.max <= 10"], &[]),
        &reports,
    );
    assert_eq!(missing.status, 2);
    assert!(missing.log.contains("error: `complexity.max`: no complexity report among the gate's inputs (it reads radon cc JSON (`radon cc -j`)); the inputs hold `p/coverage.json` (coverage.py JSON: coverage)"), "{}", missing.log);
}

#[test]
fn reports_of_one_kind_combine() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        (name.to_owned(), p)
    };
    let cov = |pct: f64, n: f64| {
        format!("{{\"files\": {{}}, \"totals\": {{\"percent_covered\": {pct}, \"num_statements\": {n}, \"covered_lines\": 0, \"missing_lines\": 0}}}}")
    };
    let files = vec![
        write("a.json", &cov(90.0, 300.0)),
        write("b.json", &cov(50.0, 100.0)),
        write("m1.json", "{\"p95_ms\": 120}"),
        write("m2.json", "{\"p95_ms\": 130}"),
    ];
    let r = evaluate(
        "//p:g",
        &canonical(&["coverage.percent >= 80"], &[]),
        &files,
    );
    // Weighted by statements: (90 × 300 + 50 × 100) / 400 = 80.
    assert_eq!(r.status, 0, "{}", r.log);
    assert!(
        r.log.contains("coverage.percent  >= 80      80     pass"),
        "{}",
        r.log
    );
    let r = evaluate("//p:g", &canonical(&["metrics.p95_ms < 250"], &[]), &files);
    assert_eq!(r.status, 2, "{}", r.log);
    assert!(r.log.contains("disagree"), "{}", r.log);
}

#[test]
fn the_security_score_is_of_the_combined_counts() {
    // bandit.json (2 high, 2 medium, 3 low) and ruff.sarif (5 results at level `error`,
    // counted high): 7 high, 2 medium, 3 low in all, so 100 - 17.5 - 2 - 0.75 = 79.75 (an
    // average of the two files' scores would be 92.25 and 87.5: not the gate's value).
    let r = evaluate(
        "//p:g",
        &canonical(&["vulnerabilities.score >= 95"], &[]),
        &inputs(&["bandit.json", "ruff.sarif"]),
    );
    assert_eq!(r.status, 1, "{}", r.log);
    let json: serde_json::Value = serde_json::from_str(&r.json).unwrap();
    assert_eq!(json["checks"][0]["value"], "79.75");
    assert_eq!(
        crate::gates::reports::security_score(0.0, 2.0, 0.0, 0.0),
        95.0
    );
    assert_eq!(
        crate::gates::reports::security_score(20.0, 0.0, 0.0, 0.0),
        0.0
    );
}

#[test]
fn semgrep_sarif_takes_the_level_of_its_rules() {
    // semgrep's results carry no level: each rule's `defaultConfiguration.level` (`error` for
    // the example's rules) is theirs. Three rules fire on the insecure app: shell=True,
    // pickle.loads and eval.
    let all = found("semgrep.sarif", &[]);
    assert_eq!(
        (
            num(&all["findings"], "total"),
            num(&all["findings"], "error")
        ),
        (3.0, 3.0)
    );
    assert_eq!(num(&all["vulnerabilities"], "high"), 3.0);
    assert_eq!(num(&all["vulnerabilities"], "score"), 92.5);
}

#[test]
fn a_sarif_result_may_name_its_rule_by_index() {
    // CodeQL and others give `ruleIndex` (into the driver's rules) instead of, or beside,
    // `ruleId`; the rule's level and security-severity apply either way.
    let sarif = r#"{"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "x", "rules": [
        {"id": "a", "defaultConfiguration": {"level": "note"}},
        {"id": "b", "properties": {"security-severity": "9.8"}, "defaultConfiguration": {"level": "error"}}
    ]}}, "results": [{"ruleIndex": 1, "message": {"text": "m"}}, {"ruleIndex": 0, "message": {"text": "n"}}]}]}"#;
    let all: BTreeMap<&str, Found> = crate::gates::reports::read(sarif.as_bytes(), &[])
        .unwrap()
        .into_iter()
        .map(|f| (f.kind, f))
        .collect();
    assert_eq!(num(&all["vulnerabilities"], "critical"), 1.0);
    assert_eq!(num(&all["vulnerabilities"], "low"), 1.0);
    assert_eq!(num(&all["findings"], "note"), 1.0);
}
