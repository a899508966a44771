//! The bundled example workspace and `BUILD.example` stay evaluable: they are documentation, and
//! documentation that no test reads rots.

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
    ] {
        assert!(
            out.contains(&format!("//src/packages/{package}:")),
            "no targets of `{package}` in:\n{out}"
        );
    }
    // Deploys are `manual`: never matched by `//...`, found when named.
    assert!(!out.contains("deploy_production"), "{out}");
    let named = ws.run_in(
        ws.path(),
        &[
            "-C",
            dir.to_str().unwrap(),
            "query",
            "//src/packages/deployment:deploy_production",
        ],
    );
    named.ok();
}

#[test]
fn build_example_evaluates() {
    let text = std::fs::read_to_string(repo("BUILD.example")).unwrap();
    let ws = Ws::new()
        .file(
            "flow.toml",
            "[vars]\npython_versions = [\"3.9\", \"3.10\", \"3.11\"]\n",
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
        assert!(
            run.stdout.contains(&suffix),
            "no test target for Python {v}:\n{}",
            run.stdout
        );
    }
}
