//! Finding the workspace and `flow init`.

use crate::support::{golden, Ws};

#[test]
fn found_by_walking_up_from_a_subdirectory() {
    let ws = Ws::new()
        .file("app/BUILD", "task(name = \"x\", cmd = \"true\")\n")
        .file("app/deep/dir/f.txt", "");
    let run = ws.run_in(&ws.path().join("app/deep/dir"), &["query", "//..."]);
    assert_eq!(run.ok(), "//app:x\n");
}

#[test]
fn dash_c_names_the_start_directory() {
    let ws = Ws::new().file("app/BUILD", "task(name = \"x\", cmd = \"true\")\n");
    let elsewhere = Ws::bare();
    let dir = ws.path().join("app");
    let run = elsewhere.run_in(
        elsewhere.path(),
        &["-C", dir.to_str().unwrap(), "query", "//..."],
    );
    assert_eq!(run.ok(), "//app:x\n");
}

#[test]
fn nested_workspace_is_not_part_of_the_outer_one() {
    let ws = Ws::new()
        .file("app/BUILD", "task(name = \"x\", cmd = \"true\")\n")
        .file("vendor/other/flow.toml", "")
        .file(
            "vendor/other/lib/BUILD",
            "task(name = \"y\", cmd = \"true\")\n",
        );
    assert_eq!(ws.run(&["query", "//..."]).ok(), "//app:x\n");
    let inner = ws.run_in(&ws.path().join("vendor/other"), &["query", "//..."]);
    assert_eq!(inner.ok(), "//lib:y\n");
}

#[test]
fn init_creates_a_workspace_and_refuses_to_overwrite() {
    let ws = Ws::bare();
    let run = ws.run(&["init"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(ws.path().join("flow.toml").is_file());
    std::fs::write(
        ws.path().join("BUILD"),
        "task(name = \"x\", cmd = \"true\")\n",
    )
    .unwrap();
    assert_eq!(ws.run(&["query", "//..."]).ok(), "//:x\n");
    golden("init_exists", ws.run(&["init"]).bad_input());
}

#[test]
fn usage_errors_exit_2() {
    let ws = Ws::new();
    assert_eq!(ws.run(&["frobnicate"]).code, 2);
    assert_eq!(ws.run(&["query"]).code, 2);
    assert_eq!(ws.run(&["query", "//...", "--output", "yaml"]).code, 2);
}

#[test]
fn config_vars_feed_a_matrix() {
    let ws = Ws::new()
        .file("flow.toml", "[vars]\npython_versions = [\"3.10\", \"3.11\"]\n")
        .file(
            "app/BUILD",
            "for v in config(\"python_versions\"):\n    task(name = \"test_py\" + v, cmd = \"python\" + v + \" -m pytest\")\n",
        );
    assert_eq!(
        ws.run(&["query", "//..."]).ok(),
        "//app:test_py3.10\n//app:test_py3.11\n"
    );
}

#[test]
fn gitignored_and_flow_dirs_are_not_packages() {
    let ws = Ws::new()
        .file(".gitignore", "build/\n")
        .file(
            "app/BUILD",
            "task(name = \"x\", cmd = \"true\", srcs = glob([\"**/*.py\"]))\n",
        )
        .file("app/a.py", "")
        .file("app/build/gen.py", "")
        .file("build/BUILD", "task(name = \"ignored\", cmd = \"true\")\n")
        .file(
            "flow-out/app/BUILD",
            "task(name = \"ignored\", cmd = \"true\")\n",
        )
        .file(".flow/BUILD", "task(name = \"ignored\", cmd = \"true\")\n");
    assert_eq!(ws.run(&["query", "//..."]).ok(), "//app:x\n");
    let json = ws.run(&["query", "//app:x", "--output", "json"]);
    assert!(json.ok().contains("\"a.py\""), "{}", json.stdout);
    assert!(!json.stdout.contains("gen.py"), "{}", json.stdout);
}
