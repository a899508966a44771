//! `flow query` through the binary on fixtures with a diamond, a chain and sub-packages.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::Ws;

/// ```text
/// //app:bin -> //lib/a:a -> //base:base
///           -> //lib/b:b -> //base:base        (a diamond)
/// //chain:c1 -> //chain:c2 -> //chain:c3 -> //chain:c4   (a chain)
/// //lib/a/sub:x (a sub-package of lib/a) -> //lib/a:a
/// //deploy:prod (manual) -> //app:bin
/// ```
fn fixture() -> Ws {
    Ws::new()
        .file("base/BUILD", "task(name = \"base\", cmd = \"true\")\n")
        .file("lib/a/BUILD", "task(name = \"a\", cmd = \"true\", deps = [\"//base\"])\n")
        .file("lib/b/BUILD", "task(name = \"b\", cmd = \"true\", deps = [\"//base\"])\n")
        .file("lib/a/sub/BUILD", "task(name = \"x\", cmd = \"true\", deps = [\"//lib/a\"])\n")
        .file(
            "app/BUILD",
            "task(name = \"bin\", cmd = \"true\", deps = [\"//lib/a\", \"//lib/b\"])\ngroup(name = \"all\", deps = [\":bin\"])\n",
        )
        .file(
            "chain/BUILD",
            "task(name = \"c1\", cmd = \"true\", deps = [\":c2\"])\ntask(name = \"c2\", cmd = \"true\", deps = [\":c3\"])\ntask(name = \"c3\", cmd = \"true\", deps = [\":c4\"])\ntask(name = \"c4\", cmd = \"true\", tags = [\"slow\"])\n",
        )
        .file("deploy/BUILD", "task(name = \"prod\", cmd = \"true\", deps = [\"//app:bin\"], tags = [\"manual\"])\n")
}

fn q(ws: &Ws, expr: &str) -> Vec<String> {
    ws.run(&["query", expr])
        .ok()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn patterns_and_manual() {
    let ws = fixture();
    let all = q(&ws, "//...");
    assert_eq!(all.len(), 10, "{all:?}");
    assert!(
        !all.contains(&"//deploy:prod".to_owned()),
        "manual targets are not matched by //..."
    );
    assert_eq!(q(&ws, "//deploy:prod"), ["//deploy:prod"]);
    assert_eq!(
        q(&ws, "//lib/..."),
        ["//lib/a:a", "//lib/a/sub:x", "//lib/b:b"]
    );
    assert_eq!(q(&ws, "//lib/a:all"), ["//lib/a:a"]);
    // `//base` is short for `//base:base`; `//app` would be `//app:app`, which does not exist.
    assert_eq!(q(&ws, "//base"), ["//base:base"]);
    let missing = ws.run(&["query", "//app"]);
    assert!(
        missing.bad_input().contains("no target `//app:app`"),
        "{}",
        missing.stderr
    );
    // An exclusion removes what the patterns before it added.
    assert_eq!(q(&ws, "//lib/... - //lib/a/..."), ["//lib/b:b"]);
}

#[test]
fn deps_on_a_diamond() {
    let ws = fixture();
    assert_eq!(
        q(&ws, "deps(//app:bin)"),
        ["//app:bin", "//base:base", "//lib/a:a", "//lib/b:b"]
    );
    assert_eq!(
        q(&ws, "deps(//app:bin, 1)"),
        ["//app:bin", "//lib/a:a", "//lib/b:b"]
    );
    assert_eq!(q(&ws, "deps(//app:bin, 0)"), ["//app:bin"]);
}

#[test]
fn rdeps_with_universe_and_depth() {
    let ws = fixture();
    assert_eq!(
        q(&ws, "rdeps(//..., //base)"),
        [
            "//app:all",
            "//app:bin",
            "//base:base",
            "//lib/a:a",
            "//lib/a/sub:x",
            "//lib/b:b"
        ]
    );
    assert_eq!(
        q(&ws, "rdeps(//..., //base, 1)"),
        ["//base:base", "//lib/a:a", "//lib/b:b"]
    );
    // The universe limits the answer: the manual deploy target is only there when named.
    assert!(!q(&ws, "rdeps(//..., //app:bin)").contains(&"//deploy:prod".to_owned()));
    assert!(q(&ws, "rdeps(//... + //deploy:prod, //app:bin)").contains(&"//deploy:prod".to_owned()));
}

#[test]
fn somepath_and_allpaths() {
    let ws = fixture();
    let some = q(&ws, "somepath(//app:bin, //base)");
    assert_eq!(some.len(), 3, "{some:?}");
    assert!(some.contains(&"//app:bin".to_owned()) && some.contains(&"//base:base".to_owned()));
    assert_eq!(
        q(&ws, "allpaths(//app:bin, //base)"),
        ["//app:bin", "//base:base", "//lib/a:a", "//lib/b:b"]
    );
    assert_eq!(q(&ws, "somepath(//base, //app:bin)"), Vec::<String>::new());
    assert_eq!(
        q(&ws, "allpaths(//chain:c1, //chain:c4)"),
        ["//chain:c1", "//chain:c2", "//chain:c3", "//chain:c4"]
    );
}

#[test]
fn set_operators() {
    let ws = fixture();
    assert_eq!(
        q(&ws, "deps(//chain:c2) - //chain:c4"),
        ["//chain:c2", "//chain:c3"]
    );
    assert_eq!(
        q(&ws, "deps(//chain:c2) except //chain:c4"),
        ["//chain:c2", "//chain:c3"]
    );
    assert_eq!(q(&ws, "deps(//lib/a) ^ deps(//lib/b)"), ["//base:base"]);
    assert_eq!(
        q(&ws, "deps(//lib/a) intersect deps(//lib/b)"),
        ["//base:base"]
    );
    assert_eq!(q(&ws, "//lib/a + //lib/b"), ["//lib/a:a", "//lib/b:b"]);
    assert_eq!(q(&ws, "//lib/a union //lib/b"), ["//lib/a:a", "//lib/b:b"]);
    // Left-associative, one precedence level: (a + b) - a.
    assert_eq!(q(&ws, "//lib/a + //lib/b - //lib/a"), ["//lib/b:b"]);
    assert_eq!(
        q(&ws, "//lib/a + (//lib/b - //lib/a)"),
        ["//lib/a:a", "//lib/b:b"]
    );
}

#[test]
fn kind_attr_filter() {
    let ws = fixture();
    assert_eq!(q(&ws, "kind(group, //...)"), ["//app:all"]);
    assert_eq!(q(&ws, "attr(tags, slow, //...)"), ["//chain:c4"]);
    assert_eq!(
        q(&ws, "filter(chain:c[12], //...)"),
        ["//chain:c1", "//chain:c2"]
    );
}

#[test]
fn dot_output_renders_with_graphviz() {
    let ws = fixture();
    let run = ws.run(&["query", "deps(//app:bin)", "--output", "dot"]);
    let dot_text = run.ok();
    assert!(
        dot_text.contains("\"//app:bin\" -> \"//lib/a:a\""),
        "{dot_text}"
    );
    let spawned = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(_) if std::env::var_os("FLOW_REQUIRE_GRAPHVIZ").is_none() => {
            eprintln!("skipping the Graphviz check: `dot` is not installed (.ci/run installs it)");
            return;
        }
        Err(e) => panic!("Graphviz `dot` is required (FLOW_REQUIRE_GRAPHVIZ is set): {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(dot_text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "dot failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = String::from_utf8_lossy(&out.stdout);
    assert!(svg.contains("<svg") && svg.contains("//base:base"), "{svg}");
}

#[test]
fn json_and_mermaid_outputs() {
    let ws = fixture();
    let json = ws.run(&["query", "deps(//lib/a)", "--output", "json"]);
    let v: serde_json::Value = serde_json::from_str(json.ok()).unwrap();
    let labels: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["//base:base", "//lib/a:a"]);
    let mermaid = ws.run(&["query", "deps(//lib/a)", "--output", "mermaid"]);
    assert!(mermaid.ok().starts_with("graph LR"), "{}", mermaid.stdout);
    assert!(mermaid.stdout.contains("-->"), "{}", mermaid.stdout);
}

#[test]
fn query_keeps_its_evaluation_snapshot_in_the_cache_dir_given() {
    // `--cache-dir` is global: query's evaluation snapshot goes there, not into `.flow/`.
    let ws = fixture();
    let elsewhere = tempfile::tempdir().unwrap();
    let dir = elsewhere.path().join("cache");
    let out = ws.run(&["--cache-dir", dir.to_str().unwrap(), "query", "//base"]);
    assert_eq!(out.ok().trim(), "//base:base");
    let snapshots: Vec<_> = std::fs::read_dir(dir.join("analysis"))
        .expect("the snapshot directory in the given cache dir")
        .collect();
    assert_eq!(snapshots.len(), 1, "{snapshots:?}");
    assert!(
        !ws.path().join(".flow").exists(),
        "nothing written to the default cache dir"
    );
}
