//! The bundled example workspace and `BUILD.example` stay evaluable: they are documentation, and
//! documentation that no test reads rots. (tests/prelude.rs builds the example with its real
//! tools.)

use std::path::Path;

use crate::support::Ws;

fn repo(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[test]
fn example_monorepo_evaluates() {
    let ws = Ws::bare();
    let dir = repo("examples/monorepo");
    let run = ws.run_in(ws.path(), &["-C", dir.to_str().unwrap(), "query", "//..."]);
    let out = run.ok();
    for package in [
        "data_quality",
        "machine_learning",
        "mlops",
        "anomaly_detection",
        "deployment",
    ] {
        // Every check of the pipeline, from the prelude, in every domain package.
        for target in [
            "lint",
            "format",
            "typecheck",
            "test",
            "test_py3_11",
            "security_scan",
            "boundary_check",
            "checks",
        ] {
            let label = format!("//src/packages/{package}:{target}\n");
            assert!(out.contains(&label), "no `{label}` in:\n{out}");
        }
    }
    // The toolchain check and the tools, per Python version of flow.toml.
    assert!(out.contains("//:python_py3_11\n"), "{out}");
    assert!(out.contains("//:dev_tools_py3_11\n"), "{out}");
    // Deploys and the (online) dependency audit are `manual`: never matched by `//...`, found
    // when named.
    assert!(!out.contains("deploy_production"), "{out}");
    assert!(!out.contains("dependency_audit"), "{out}");
    for named in [
        "//src/packages/deployment:deploy_production",
        "//:dependency_audit",
    ] {
        ws.run_in(ws.path(), &["-C", dir.to_str().unwrap(), "query", named])
            .ok();
    }
    // The checks are the prelude's macros.
    let kinds = ws.run_in(
        ws.path(),
        &[
            "-C",
            dir.to_str().unwrap(),
            "query",
            "kind(py_boundary_check, //...)",
        ],
    );
    assert_eq!(kinds.ok().lines().count(), 5, "{}", kinds.stdout);
}

#[test]
fn build_example_evaluates() {
    let text = std::fs::read_to_string(repo("BUILD.example")).unwrap();
    let ws = Ws::new()
        .file(
            "flow.toml",
            "[vars]\npython_versions = [\"3.9\", \"3.10\", \"3.11\"]\n\
             [environments.staging]\n[environments.production]\n",
        )
        .file("BUILD", &text);
    let run = ws.run(&["query", "//..."]);
    let targets = run.ok().lines().count();
    assert!(
        targets >= 20,
        "BUILD.example should declare the whole pipeline; got {targets} targets"
    );
    for v in ["3.9", "3.10", "3.11"] {
        let suffix = format!("py{}", v.replace('.', "_"));
        for prefix in ["//:python_", "//:dev_tools_", "//:unit_data_quality_"] {
            let label = format!("{prefix}{suffix}\n");
            assert!(
                run.stdout.contains(&label),
                "no `{label}` for Python {v}:\n{}",
                run.stdout
            );
        }
    }
    // The Python stages use the prelude's rules.
    for macro_name in [
        "py_toolchain",
        "py_requirements",
        "py_library",
        "py_lint",
        "py_format_check",
        "py_typecheck",
        "py_test",
        "py_security_scan",
        "py_boundary_check",
        "py_dependency_audit",
    ] {
        // `//...` leaves out `manual` targets such as the (online) dependency audit.
        let query = format!("kind({macro_name}, //... + //:dependency_audit)");
        let found = ws.run(&["query", &query]);
        assert!(
            !found.ok().trim().is_empty(),
            "BUILD.example declares no `{macro_name}` target"
        );
    }
}

/// The README's CI lines run as written, in a git repository holding a copy of the example:
/// with nothing changed since `HEAD`, nothing is affected and the build says so (and writes its
/// reports); after an edit of one package's source, `affected` lists that package's targets.
#[test]
fn readme_ci_lines_run_on_the_example() {
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let lines: Vec<&str> = readme
        .lines()
        .filter(|l| l.starts_with("flow -C examples/monorepo ") && l.contains("--since"))
        .collect();
    assert_eq!(lines.len(), 2, "the README's CI lines: {lines:?}");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("examples/monorepo");
    crate::support::copy_source_tree(&repo("examples/monorepo"), &copy);
    crate::support::git(dir.path(), &["init", "-q", "-b", "main"]);
    crate::support::git(dir.path(), &["add", "-A"]);
    crate::support::git(dir.path(), &["commit", "-q", "-m", "example"]);
    let bin = crate::support::flow_bin();
    let run = |line: &str| {
        let args: Vec<&str> = line.split_whitespace().skip(1).collect();
        let out = std::process::Command::new(&bin)
            .current_dir(dir.path())
            .args(&args)
            .env_remove("GITHUB_ACTIONS")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{line}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(run(lines[0]), "");
    assert!(run(lines[1]).contains("is affected since"), "nothing to do");
    let source = copy.join("src/packages/mlops/mlops/__init__.py");
    assert!(
        source.is_file(),
        "the example's mlops package moved: update this test"
    );
    let mut text = std::fs::read_to_string(&source).unwrap();
    text.push_str("\n# edited\n");
    std::fs::write(&source, text).unwrap();
    let affected = run(lines[0]);
    assert!(
        affected
            .lines()
            .any(|l| l.starts_with("//src/packages/mlops:")),
        "{affected}"
    );
}
