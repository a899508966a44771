//! The Python rules of the prelude (`@flow//rules:python.star`) on the real example
//! (`examples/monorepo`) with the real tools: planting a lint error, a failing test, a type
//! error, a bandit finding or an undeclared cross-package import fails exactly the target that
//! should fail, with the tool's message in the output; fixing it passes again; changing
//! `requirements-dev.txt` reruns what uses the tools and nothing else. Bad arguments to the
//! macros, and a Python version that is not installed, are clear errors.
//!
//! The tools come from PyPI, installed by the example's own `py_requirements` target. All tests
//! share one cache directory under `CARGO_TARGET_TMPDIR`, kept between runs; the first test that
//! needs the tools builds the whole example into it once per run (`warm_cache`), so every other
//! test finds everything that it does not change cached. One test reinstalls the tools on every
//! run (a comment in `requirements-dev.txt` that is new each run), so these tests always reach
//! the package index: without it they fail, saying so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::support::{status_line, Run, Ws, NOT_COPIED};

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

pub(crate) fn shared_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("prelude-example-cache")
}

fn copy_tree(from: &Path, ws: &Ws, rel: &str) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if NOT_COPIED.contains(&name.as_str()) {
            continue;
        }
        let child = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), ws, &child);
        } else {
            ws.write(&child, &std::fs::read(entry.path()).unwrap());
        }
    }
}

/// A fresh copy of `examples/monorepo`.
pub(crate) fn example() -> Ws {
    let ws = Ws::bare();
    copy_tree(&repo("examples/monorepo"), &ws, "");
    ws
}

/// `flow build -k PATTERNS` in `ws`, on the shared cache.
fn build(ws: &Ws, patterns: &[&str]) -> Run {
    let cache = shared_cache();
    let mut args = vec![
        "--cache-dir",
        cache.to_str().unwrap(),
        "build",
        "-k",
        "-j",
        "2",
    ];
    args.extend_from_slice(patterns);
    ws.run(&args)
}

/// What happened to each action of a build: `RAN`, `CACHED`, `FAILED`, ... and, for a failure,
/// the lines of its log that `flow build` showed.
fn outcomes(run: &Run) -> BTreeMap<String, (String, String)> {
    let mut map: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut last: Option<String> = None;
    for line in run.stdout.lines() {
        if let Some((status, label)) = status_line(line) {
            map.insert(label.to_owned(), (status.to_owned(), String::new()));
            last = Some(label.to_owned());
            continue;
        }
        if let (Some(label), Some(text)) = (&last, line.strip_prefix("    ")) {
            let tail = &mut map.get_mut(label).unwrap().1;
            tail.push_str(text);
            tail.push('\n');
        } else {
            last = None;
        }
    }
    map
}

fn with_status(run: &Run, status: &str) -> Vec<String> {
    outcomes(run)
        .into_iter()
        .filter(|(_, (s, _))| s == status)
        .map(|(l, _)| l)
        .collect()
}

fn show(run: &Run) -> String {
    format!("stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr)
}

/// Builds the whole example once per test run into the shared cache (the first time on a
/// machine, that installs the tools from PyPI and runs every check).
fn warm_cache() {
    static WARM: OnceLock<Result<(), String>> = OnceLock::new();
    let result = WARM.get_or_init(|| {
        let ws = example();
        let run = build(&ws, &["//..."]);
        if run.code == 0 {
            return Ok(());
        }
        let failed = with_status(&run, "FAILED");
        if failed.iter().any(|l| l.starts_with("//:dev_tools")) {
            return Err(format!(
                "cannot install the example's tools (requirements-dev.txt) from PyPI: is the \
                 package index reachable from this machine?\n{}",
                show(&run)
            ));
        }
        Err(format!(
            "the example does not build cleanly: {failed:?}\n{}",
            show(&run)
        ))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

fn edit(ws: &Ws, rel: &str, f: impl FnOnce(String) -> String) {
    let path = ws.path().join(rel);
    let old = std::fs::read_to_string(&path).unwrap();
    let new = f(old.clone());
    assert_ne!(old, new, "the edit of {rel} changed nothing");
    std::fs::write(&path, new).unwrap();
}

fn replace(ws: &Ws, rel: &str, from: &str, to: &str) {
    edit(ws, rel, |s| {
        assert!(s.contains(from), "`{from}` is not in {rel}");
        s.replacen(from, to, 1)
    });
}

fn restore(ws: &Ws, rel: &str) {
    let original = std::fs::read(repo("examples/monorepo").join(rel)).unwrap();
    std::fs::write(ws.path().join(rel), original).unwrap();
}

/// Plants a problem with `plant`, builds `//...` with `-k`, and checks that `target` fails,
/// showing every one of `messages`, and that nothing else fails but the gates in `gates`; then
/// undoes the edit and checks that all passes.
fn planted(file: &str, plant: impl FnOnce(&Ws), target: &str, gates: &[&str], messages: &[&str]) {
    warm_cache();
    let ws = example();
    plant(&ws);
    let run = build(&ws, &["//..."]);
    assert_eq!(
        run.code,
        1,
        "the planted problem failed nothing\n{}",
        show(&run)
    );
    let all = outcomes(&run);
    let failed = with_status(&run, "FAILED");
    let mut expected: Vec<&str> = gates.iter().copied().chain([target]).collect();
    expected.sort();
    assert_eq!(
        failed,
        expected,
        "exactly {expected:?} should fail\n{}",
        show(&run)
    );
    // A gate whose reports are missing (a failed test writes none) is skipped; no check is.
    assert!(
        with_status(&run, "SKIPPED")
            .iter()
            .all(|l| l.starts_with("//:") && l.ends_with("_gate")),
        "a check should not be skipped\n{}",
        show(&run)
    );
    let tail = &all[target].1;
    for m in messages {
        assert!(
            tail.contains(m),
            "the output of {target} does not show `{m}`:\n{tail}"
        );
    }
    restore(&ws, file);
    let fixed = build(&ws, &["//..."]);
    assert_eq!(
        fixed.code,
        0,
        "fixing it should pass again\n{}",
        show(&fixed)
    );
    assert!(fixed.stdout.contains(" 0 failed"), "{}", fixed.stdout);
}

#[test]
fn example_builds_with_reports_and_a_second_build_is_all_cached() {
    warm_cache();
    let ws = example();
    let first = build(&ws, &["//..."]);
    assert_eq!(first.code, 0, "{}", show(&first));
    let second = build(&ws, &["//..."]);
    assert_eq!(second.code, 0, "{}", show(&second));
    assert!(
        second.stdout.contains("flow: ok: 0 ran, "),
        "a second build should run nothing:\n{}",
        second.stdout
    );
    // The tools, and the declared reports of tests and scans, are outputs under flow-out/.
    let out = ws.path().join("flow-out");
    assert!(out.join("dev_tools_py3_11/ruff").is_dir());
    let reports = out.join("src/packages/mlops/reports");
    let junit = std::fs::read_to_string(reports.join("test_py3_11.junit.xml")).unwrap();
    assert!(junit.contains("<testsuite"), "{junit}");
    let coverage = std::fs::read_to_string(reports.join("test_py3_11.coverage.json")).unwrap();
    assert!(coverage.contains("\"totals\""), "{coverage}");
    let bandit = std::fs::read_to_string(reports.join("security_scan.json")).unwrap();
    assert!(bandit.contains("\"results\""), "{bandit}");
    assert!(out
        .join("src/packages/deployment/dist/release/mlops/domain/registry.py")
        .is_file());
}

#[test]
fn a_lint_error_fails_only_the_lint() {
    let file = "src/packages/mlops/mlops/domain/registry.py";
    planted(
        file,
        |ws| {
            edit(ws, file, |s| {
                s + "\n\ndef _planted() -> None:\n    value = 1\n"
            })
        },
        "//src/packages/mlops:lint",
        &[],
        &["mlops/domain/registry.py:62:5: F841", "`value`"],
    );
}

#[test]
fn a_failing_test_fails_only_that_test() {
    let file = "src/packages/mlops/tests/test_mlops_registry.py";
    planted(
        file,
        |ws| {
            replace(
                ws,
                file,
                "assert registry.register(\"fraud\", {}).version == 1",
                "assert registry.register(\"fraud\", {}).version == 2",
            )
        },
        "//src/packages/mlops:test_py3_11",
        &[],
        &[
            "FAILED tests/test_mlops_registry.py::test_versions_count_up_per_name",
            "AssertionError: assert 1 == 2",
        ],
    );
}

#[test]
fn a_type_error_fails_only_the_type_check() {
    let file = "src/packages/mlops/mlops/domain/registry.py";
    planted(
        file,
        |ws| {
            replace(
                ws,
                file,
                "metrics: Dict[str, float]) -> ModelVersion:",
                "metrics: Dict[str, float]) -> int:",
            )
        },
        "//src/packages/mlops:typecheck",
        &[],
        &[
            "mlops/domain/registry.py:30: error: Incompatible return value type",
            "[return-value]",
        ],
    );
}

#[test]
fn a_bandit_finding_fails_only_the_security_scan() {
    let file = "src/packages/deployment/deployment/infrastructure/cli.py";
    planted(
        file,
        |ws| replace(ws, file, "hashlib.sha256()", "hashlib.md5()"),
        "//src/packages/deployment:security_scan",
        // HIPAA's rules refuse MD5 for security too (tools/quality/compliance.py).
        &["//:compliance_gate"],
        &[
            "deployment/infrastructure/cli.py:38:14: B324 [high severity, high confidence]",
            "bandit: 1 finding(s)",
        ],
    );
}

#[test]
fn an_undeclared_cross_package_import_fails_only_the_boundary_check() {
    // mlops declares machine_learning only; the import is inside a function that no test calls,
    // so the code still passes lint, formatting, types (missing imports are ignored) and tests.
    let file = "src/packages/mlops/mlops/infrastructure/json_registry.py";
    planted(
        file,
        |ws| {
            edit(ws, file, |s| {
                s + "\n\ndef validated(path: Path) -> float:\n    \
                     \"\"\"The pass rate of the registry file's records.\"\"\"\n    \
                     from data_quality import not_null, validate\n\n    \
                     return validate(json.loads(path.read_text()), [not_null(\"name\")]).pass_rate\n"
            })
        },
        "//src/packages/mlops:boundary_check",
        &[],
        &[
            "mlops/infrastructure/json_registry.py:26:5: `mlops` imports `data_quality`, a \
             first-party package it does not declare as a dependency (declared: `machine_learning`)",
            "1 boundary violation(s)",
        ],
    );
}

/// The seed's twelve quality gates, and compliance, run for real on the example: every check
/// passes, with values read from the tools' reports (not constants), and a gate is cached while
/// what it reads is unchanged.
#[test]
fn the_quality_gates_run_every_gate_of_the_seed() {
    warm_cache();
    let ws = example();
    let run = build(&ws, &["//:quality_gates"]);
    assert_eq!(run.code, 0, "{}", show(&run));
    let mut seen = Vec::new();
    for gate in [
        "code_quality_gate",
        "security_gate",
        "performance_gate",
        "compliance_gate",
    ] {
        let path = ws.path().join(format!("flow-out/{gate}.gate.json"));
        let text = std::fs::read_to_string(&path).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["passed"], true, "{text}");
        for check in json["checks"].as_array().unwrap() {
            assert_eq!(check["passed"], true, "{text}");
            assert!(!check["from"].as_array().unwrap().is_empty(), "{text}");
            seen.push((
                check["metric"].as_str().unwrap().to_owned(),
                check["value"].as_str().unwrap().to_owned(),
            ));
        }
    }
    let metrics: Vec<&str> = seen.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(
        metrics,
        [
            "coverage.percent",
            "complexity.max",
            "maintainability.average",
            "metrics.tech_debt_percent",
            "vulnerabilities.critical",
            "vulnerabilities.high",
            "vulnerabilities.score",
            "licenses.denied",
            "licenses.unknown",
            "metrics.p95_ms",
            "metrics.rps",
            "metrics.error_rate_percent",
            "metrics.utilization_percent",
            "findings.total",
        ]
    );
    let value = |name: &str| -> f64 {
        let (_, v) = seen.iter().find(|(m, _)| m == name).unwrap();
        v.parse().unwrap()
    };
    // Real measurements: the tests cover most of the code, some function has a branch, the
    // code has some size and the load test answered requests at some speed.
    assert!(value("coverage.percent") > 80.0 && value("coverage.percent") < 100.0);
    assert!(value("complexity.max") >= 2.0);
    assert!(value("metrics.p95_ms") > 0.0);
    assert!(value("metrics.utilization_percent") > 0.0);

    // Nothing changed: every gate is reused.
    let again = build(&ws, &["//:quality_gates"]);
    assert!(
        again.stdout.contains("flow: ok: 0 ran, "),
        "{}",
        again.stdout
    );
}

/// A function of cyclomatic complexity 11 (radon counts each `or`) fails the code-quality gate,
/// and only it: the table says which check and what value.
#[test]
fn a_complex_function_fails_only_the_code_quality_gate() {
    let file = "src/packages/mlops/mlops/domain/registry.py";
    let operands: Vec<String> = (1..=11).map(|i| format!("a == {i}")).collect();
    let body = format!(
        "\n\ndef _planted(a: int) -> bool:\n    return (\n        {}\n    )\n",
        operands.join("\n        or ")
    );
    planted(
        file,
        |ws| edit(ws, file, |s| s + &body),
        "//:code_quality_gate",
        &[],
        &[
            "gate //:code_quality_gate: 4 check(s), 1 failed",
            "complexity.max",
            "FAIL",
        ],
    );
}

/// Every target that runs a tool of requirements-dev.txt (lint, formatting, types, tests, scans,
/// docstrings, code metrics, the checkers' own checks, the license list) and the gates that read
/// reports that change with a reinstall (test reports have timestamps, the license list has the
/// new package).
fn tool_users() -> Vec<String> {
    let mut users: Vec<String> = [
        "//:dev_tools_py3_11",
        "//:licenses",
        "//:code_quality_gate",
        "//:security_gate",
        "//tools:format",
        "//tools:lint",
        "//tools:typecheck",
    ]
    .map(str::to_owned)
    .to_vec();
    for package in [
        "anomaly_detection",
        "data_quality",
        "deployment",
        "machine_learning",
        "mlops",
    ] {
        for target in [
            "code_metrics",
            "docstrings",
            "format",
            "lint",
            "security_scan",
            "test_py3_11",
            "typecheck",
        ] {
            users.push(format!("//src/packages/{package}:{target}"));
        }
    }
    users.sort();
    users
}

/// The action key of the last run of each of `labels` in `ws` (from `flow log`).
fn keys(ws: &Ws, labels: &[String]) -> BTreeMap<String, String> {
    let cache = shared_cache();
    labels
        .iter()
        .map(|label| {
            let run = ws.run(&["--cache-dir", cache.to_str().unwrap(), "log", label]);
            let key = run
                .stderr
                .split("key ")
                .nth(1)
                .and_then(|k| k.split(')').next())
                .unwrap_or_else(|| panic!("no key for {label}: {}", show(&run)));
            (label.clone(), key.to_owned())
        })
        .collect()
}

#[test]
fn changing_requirements_reruns_what_uses_the_tools_and_nothing_else() {
    warm_cache();
    let ws = example();
    let file = "requirements-dev.txt";

    // A comment: pip reinstalls (from PyPI: the comment is new on every run), the installed tree
    // comes out byte-identical, and nothing that uses it reruns (early cutoff).
    let stamp = format!(
        "\n# {} {:?}\n",
        std::process::id(),
        std::time::SystemTime::now()
    );
    edit(&ws, file, |s| s + &stamp);
    let run = build(&ws, &["//..."]);
    if run.code != 0 {
        panic!(
            "reinstalling the tools failed: is PyPI reachable from this machine?\n{}",
            show(&run)
        );
    }
    assert_eq!(
        with_status(&run, "RAN"),
        ["//:dev_tools_py3_11"],
        "{}",
        run.stdout
    );
    let actions: Vec<String> = outcomes(&run).into_keys().collect();
    let before = keys(&ws, &actions);

    // A different set of packages: the install changes, and exactly the tools' users get new
    // keys; the libraries, the boundary checks (standard library only), the bundle and the
    // toolchain check keep theirs. (Keys, not `[RAN]` lines: the shared cache may hold this
    // variant's results from an earlier run of these tests.)
    restore(&ws, file);
    replace(
        &ws,
        file,
        "tomli==2.3.0; python_version < \"3.11\"",
        "tomli==2.3.0",
    );
    let run = build(&ws, &["//..."]);
    assert_eq!(run.code, 0, "{}", show(&run));
    let after = keys(&ws, &actions);
    let changed: Vec<String> = actions
        .iter()
        .filter(|l| before[*l] != after[*l])
        .cloned()
        .collect();
    assert_eq!(changed, tool_users(), "{}", run.stdout);
    for unchanged in [
        "//:python_py3_11",
        "//src/packages/data_quality:lib",
        "//src/packages/mlops:boundary_check",
        "//src/packages/deployment:bundle",
    ] {
        assert!(actions.iter().any(|l| l == unchanged), "{}", run.stdout);
    }

    // Back to the original file: everything is cached again.
    restore(&ws, file);
    let run = build(&ws, &["//..."]);
    assert_eq!(run.code, 0, "{}", show(&run));
    assert!(run.stdout.contains("flow: ok: 0 ran, "), "{}", run.stdout);
}

// ---------------------------------------------------------------------------------------------
// Without the tools: evaluation errors, the toolchain check and the boundary check alone.
// ---------------------------------------------------------------------------------------------

const LOAD: &str = "load(\"@flow//rules:python.star\", \"py_boundary_check\", \"py_lint\", \
                    \"py_test\", \"py_toolchain\", \"py_typecheck\")\n\n";

#[test]
fn a_wrong_argument_type_names_the_parameter_and_shows_the_call() {
    let ws = Ws::new().file(
        "pkg/BUILD",
        &format!("{LOAD}py_test(\n    name = \"t\",\n    python = \"3.11\",\n    deps = \"//lib:x\",\n)\n"),
    );
    let err = ws.run(&["query", "//..."]).bad_input().to_owned();
    assert!(
        err.contains(
            "parameter `deps` of `py_test` must be a list of strings, got `string` (\"//lib:x\"); \
             write [\"//lib:x\"]"
        ),
        "{err}"
    );
    // The caller's keyword in the BUILD file is the primary location; the prelude's `fail()`
    // is context.
    assert!(err.contains("┌─ pkg/BUILD:6:5"), "{err}");
    assert!(err.contains("raised here, in the prelude"), "{err}");

    let ws = Ws::new().file(
        "pkg/BUILD",
        &format!("{LOAD}py_typecheck(name = \"t\", srcs = [], strict = \"yes\")\n"),
    );
    let err = ws.run(&["query", "//..."]).bad_input().to_owned();
    assert!(
        err.contains("parameter `strict` of `py_typecheck` must be True or False"),
        "{err}"
    );

    let ws = Ws::new().file(
        "pkg/BUILD",
        &format!("{LOAD}py_test(name = \"t\", python = [\"python3.9\"])\n"),
    );
    let err = ws.run(&["query", "//..."]).bad_input().to_owned();
    assert!(
        err.contains(
            "must be a version such as \"3.11\", got `string` (\"python3.9\"); write \"3.9\""
        ),
        "{err}"
    );
}

#[test]
fn an_attribute_passed_through_is_reported_at_the_callers_keyword() {
    let ws = Ws::new().file(
        "pkg/BUILD",
        &format!(
            "{LOAD}py_lint(\n    name = \"l\",\n    srcs = [],\n    timeout = \"5 parsecs\",\n)\n"
        ),
    );
    let err = ws.run(&["query", "//..."]).bad_input().to_owned();
    assert!(
        err.contains("invalid value for attribute `timeout`"),
        "{err}"
    );
    assert!(err.contains("pkg/BUILD:6:5"), "{err}");
}

#[test]
fn an_unknown_macro_parameter_suggests_the_closest() {
    let ws = Ws::new().file(
        "pkg/BUILD",
        &format!("{LOAD}py_lint(name = \"l\", srcs = [], selct = [\"E\"])\n"),
    );
    let err = ws.run(&["query", "//..."]).bad_input().to_owned();
    assert!(
        err.contains("unknown parameter `selct` in a call to `py_lint`"),
        "{err}"
    );
    assert!(err.contains("did you mean `select`?"), "{err}");
}

#[test]
fn the_boundary_check_needs_the_first_party_packages() {
    let ws = Ws::new().file(
        "pkg/BUILD",
        &format!("{LOAD}py_boundary_check(name = \"b\", srcs = [])\n"),
    );
    let err = ws.run(&["query", "//..."]).bad_input().to_owned();
    assert!(err.contains("set `python_first_party = [\"billing\", ...]` in the [vars] table of flow.toml, or pass `first_party`"), "{err}");
}

#[test]
fn a_python_version_that_is_not_installed_is_a_clear_error() {
    let ws = Ws::new()
        .file(
            "flow.toml",
            "[vars]\npython_versions = [\"3.11\", \"3.99\"]\n",
        )
        .file("BUILD", &format!("{LOAD}py_toolchain(name = \"python\")\n"));
    let run = ws.run(&["build", "-k", "//..."]);
    assert_eq!(run.code, 1, "{}", show(&run));
    assert_eq!(
        with_status(&run, "FAILED"),
        ["//:python_py3_99"],
        "{}",
        show(&run)
    );
    let tail = &outcomes(&run)["//:python_py3_99"].1;
    for m in [
        "error: Python 3.99 is not installed: there is no `python3.99` on the action PATH:",
        "/usr/local/bin:/usr/bin:/bin",
        "`action_path` of the [build] table of flow.toml",
        "or remove \"3.99\" from `python_versions` in the [vars] table of flow.toml",
    ] {
        assert!(tail.contains(m), "no `{m}` in:\n{tail}");
    }
    let log = ws.run(&["log", "//:python_py3_11"]);
    assert!(log.stdout.contains("python3.11: /"), "{}", show(&log));
}

#[test]
fn the_boundary_check_reports_undeclared_imports_and_isolated_layers() {
    // Only the standard library: no tools, no network.
    let ws = Ws::new()
        .file(
            "pkg/BUILD",
            &format!(
                "{LOAD}py_boundary_check(\n    name = \"b\",\n    \
                 srcs = glob([\"**/*.py\"]),\n    \
                 allow = [\"billing\"],\n    \
                 first_party = [\"billing\", \"ledger\", \"shop\"],\n    \
                 isolated = [\"domain\"],\n    \
                 format = \"github\",\n)\n"
            ),
        )
        .file(
            "pkg/shop/app.py",
            "import os\nfrom . import domain\nfrom billing import invoice\nimport ledger.accounts\n",
        )
        .file("pkg/shop/domain/model.py", "import billing\nfrom shop.app import x\n");
    let run = ws.run(&["build", "//pkg:b"]);
    assert_eq!(run.code, 1, "{}", show(&run));
    let tail = &outcomes(&run)["//pkg:b"].1;
    assert!(
        tail.contains(
            "::error file=pkg/shop/app.py,line=4,col=1,title=domain boundary::`pkg` imports \
             `ledger`, a first-party package it does not declare as a dependency (declared: \
             `billing`)"
        ),
        "{tail}"
    );
    assert!(
        tail.contains(
            "::error file=pkg/shop/domain/model.py,line=1,col=1,title=domain boundary::the \
             `domain` layer of `pkg` imports `billing`; it may import no other package"
        ),
        "{tail}"
    );
    assert!(
        tail.contains("2 boundary violation(s) in 2 file(s)"),
        "{tail}"
    );
}
