//! The bodies of flow's fuzz targets. Two drivers share them:
//! - `fuzz/fuzz_targets/*.rs`: cargo-fuzz (libFuzzer, coverage-guided, long runs; see
//!   `docs/fuzzing.md`);
//! - `tests/fuzz_smoke.rs`: proptest, a few seconds of random inputs in every `cargo test`
//!   (it includes this file as a module, so it has no crate attributes).
//!
//! Each body takes arbitrary bytes and must never panic, and checks the property its input
//! has where one exists:
//! - [`label`]: a label that parses prints as text that parses back to it, from any package;
//! - [`pattern`]: the same for a target pattern (`-` exclusions included), and matching it
//!   against labels never panics;
//! - [`query`]: a query expression evaluated on a small fixed graph (`query::evaluate`, the
//!   parser itself is private) returns indices of that graph, and renders in every format;
//! - [`build_eval`]: the bytes as a BUILD file in a temporary workspace, evaluated
//!   (`flow_rules::evaluate_workspace`) and analysed (`TargetGraph::build`): errors are fine,
//!   panics are not.

use std::path::Path;
use std::sync::OnceLock;

use flow::graph::TargetGraph;
use flow::query::OutputFormat;
use flow_rules::{evaluate_workspace, EvalOptions, Label, PatternTerm};

/// Packages a relative label may be read in.
const PACKAGES: [Option<&str>; 4] = [None, Some(""), Some("pkg"), Some("a/b-c/d.e")];

pub fn label(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for current in PACKAGES {
        let Ok(parsed) = Label::parse(text, current) else {
            continue;
        };
        let shown = parsed.to_string();
        assert_eq!(
            Label::parse(&shown, None).as_ref(),
            Ok(&parsed),
            "{text:?} (in {current:?}) displays as {shown:?}, which does not parse back"
        );
        assert_eq!(
            Label::new(parsed.package(), parsed.name()).as_ref(),
            Ok(&parsed)
        );
        for package in ["", "pkg", parsed.package()] {
            let relative = parsed.relative_to(package);
            assert_eq!(
                Label::parse(&relative, Some(package)).as_ref(),
                Ok(&parsed),
                "{shown} relative to {package:?} is {relative:?}"
            );
        }
    }
}

pub fn pattern(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(term) = PatternTerm::parse(text) else {
        return;
    };
    let shown = term.to_string();
    assert_eq!(
        PatternTerm::parse(&shown).as_ref(),
        Ok(&term),
        "{text:?} displays as {shown:?}, which does not parse back"
    );
    for l in ["//:root", "//pkg:x", "//pkg/sub:all_tests", "//a/b-c/d.e:t"] {
        let l = Label::parse(l, None).expect("a valid label");
        let matched = term.pattern.matches(&l, false);
        if matched {
            assert!(
                term.pattern.covers_package(l.package()),
                "{shown} matches {l}"
            );
        }
        let _ = term.pattern.matches(&l, true);
    }
}

pub fn query(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let graph = query_graph();
    let Ok(set) = flow::query::evaluate(graph, text) else {
        return;
    };
    assert!(set.iter().all(|&i| i < graph.targets().len()), "{text:?}");
    for format in [
        OutputFormat::Label,
        OutputFormat::Json,
        OutputFormat::Dot,
        OutputFormat::Mermaid,
    ] {
        let _ = flow::query::render(graph, &set, format);
    }
}

pub fn build_eval(data: &[u8]) {
    evaluate_build(data);
}

/// [`build_eval`]'s work: the number of targets in the analysed graph, and of errors.
pub fn evaluate_build(data: &[u8]) -> (usize, usize) {
    let dir = tempfile::tempdir().expect("a temp directory");
    let root = dir.path();
    write(root, "flow.toml", b"");
    write(root, "pkg/BUILD", data);
    write(root, "pkg/a.py", b"print(1)\n");
    write(root, "pkg/sub/b.py", b"");
    write(
        root,
        "lib/BUILD",
        br#"task(name = "x", outs = ["x.txt"], cmd = "true")"#,
    );
    write(
        root,
        "lib/defs.star",
        b"def m(name):\n    native.task(name = name, cmd = \"true\")\n",
    );
    let opts = EvalOptions {
        root: root.to_path_buf(),
        ..EvalOptions::default()
    };
    let evaluation = evaluate_workspace(&opts).expect("the temp workspace can be walked");
    let (graph, errors) = TargetGraph::build(evaluation, &[]);
    (graph.targets().len(), errors.len())
}

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    std::fs::write(path, bytes).expect("write");
}

/// A small graph with every kind of edge a query walks: a chain, a diamond, a group, tags,
/// env, outputs, a macro-made target, a manual one, and two packages below another.
const QUERY_WORKSPACE: &[(&str, &str)] = &[
    ("flow.toml", ""),
    (
        "a/BUILD",
        r#"task(name = "gen", outs = ["g.txt"], cmd = "echo > g.txt", tags = ["fast"],
     visibility = ["//visibility:public"])
task(name = "lib", deps = [":gen"], srcs = glob(["*.py"]), cmd = "true", env = {"K": "v"},
     visibility = ["//visibility:public"])
task(name = "manual", cmd = "true", tags = ["manual"])
group(name = "all_of_a", deps = [":lib", ":gen"])
"#,
    ),
    ("a/x.py", ""),
    (
        "a/b/BUILD",
        r#"task(name = "t1", deps = ["//a:lib"], cmd = "true", timeout = "5s", retries = 1)
task(name = "t2", deps = ["//a:gen", ":t1"], cmd = "true", visibility = ["//visibility:public"])
"#,
    ),
    (
        "c/BUILD",
        r#"load("@flow//rules:python.star", "py_test")
py_test(name = "test", srcs = ["t.py"], deps = ["//a/b:t2"], python = ["3.11"])
"#,
    ),
    ("c/t.py", ""),
];

/// The graph [`query`] evaluates on (built once).
pub fn query_graph() -> &'static TargetGraph {
    static GRAPH: OnceLock<TargetGraph> = OnceLock::new();
    GRAPH.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temp directory");
        for (rel, text) in QUERY_WORKSPACE {
            write(dir.path(), rel, text.as_bytes());
        }
        let opts = EvalOptions {
            root: dir.path().to_path_buf(),
            ..EvalOptions::default()
        };
        let evaluation = evaluate_workspace(&opts).expect("walk");
        let (graph, errors) = TargetGraph::build(evaluation, &[]);
        assert!(
            errors.is_empty(),
            "the query workspace is valid: {errors:?}"
        );
        graph
    })
}
