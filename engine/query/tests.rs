//! Query tests on small workspaces written to a temporary directory.
//!
//! The main fixture (labels in index order):
//!
//! ```text
//! //a:a -> //a:b -> //a:d        a diamond
//! //a:a -> //a:c -> //a:d        (//a:d is tagged `ci`)
//! //a/sub:x -> //a:d             a sub-package
//! //chain:g -> //chain:one -> //chain:two -> //chain:three   (g is a group)
//! //my-pkg:lint-py               dashes in a package and a name
//! //py:t -> //py:t_py3           declared by the prelude's `py_test` macro
//! ```

use std::collections::BTreeSet;

use super::{evaluate, render, OutputFormat, QueryError};
use crate::graph::TargetGraph;

/// Evaluates a workspace of `(path, contents)` files and builds its graph, which must be free
/// of errors.
pub(crate) fn workspace(files: &[(&str, &str)]) -> TargetGraph {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("flow.toml"), "").unwrap();
    for (path, contents) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }
    let eval = flow_rules::evaluate_workspace(&flow_rules::EvalOptions {
        root: dir.path().to_path_buf(),
        ..Default::default()
    })
    .unwrap();
    let (graph, errors) = TargetGraph::build(eval, &[flow_rules::VisibilityRule::Public]);
    assert!(errors.is_empty(), "fixture has errors: {errors:#?}");
    graph
}

fn fixture() -> TargetGraph {
    workspace(&[
        (
            "a/BUILD",
            r#"
task(name = "a", cmd = "true", deps = [":b", ":c"])
task(name = "b", cmd = "true", deps = [":d"])
task(name = "c", cmd = "true", deps = [":d"])
task(name = "d", cmd = "true", tags = ["ci"], srcs = ["d.txt"], outs = ["d.out"], doc = "the bottom")
"#,
        ),
        (
            "a/sub/BUILD",
            r#"task(name = "x", cmd = "true", deps = ["//a:d"])"#,
        ),
        (
            "chain/BUILD",
            r#"
group(name = "g", deps = [":one"])
task(name = "one", cmd = "true", deps = [":two"])
task(name = "two", cmd = "true", deps = [":three"])
task(name = "three", cmd = "true")
"#,
        ),
        ("a/d.txt", ""),
        ("py/t.py", ""),
        ("my-pkg/BUILD", r#"task(name = "lint-py", cmd = "true")"#),
        (
            "py/BUILD",
            r#"
load("@flow//rules:python.star", "py_test")
py_test(name = "t", srcs = ["t.py"])
"#,
        ),
    ])
}

fn labels(graph: &TargetGraph, set: &BTreeSet<usize>) -> Vec<String> {
    set.iter()
        .map(|&i| graph.target(i).label.to_string())
        .collect()
}

/// Evaluates `expr` and returns the labels, sorted.
fn q(graph: &TargetGraph, expr: &str) -> Vec<String> {
    match evaluate(graph, expr) {
        Ok(set) => labels(graph, &set),
        Err(e) => panic!("`{expr}` failed: {e:?}"),
    }
}

/// Evaluates `expr`, which must fail, and returns the error.
fn err(graph: &TargetGraph, expr: &str) -> QueryError {
    match evaluate(graph, expr) {
        Ok(set) => panic!("`{expr}` succeeded with {:?}", labels(graph, &set)),
        Err(e) => e,
    }
}

/// Asserts the error's offset, length and message.
fn assert_err(graph: &TargetGraph, expr: &str, offset: usize, len: usize, message: &str) {
    let e = err(graph, expr);
    assert_eq!(
        (e.offset, e.len, e.message.as_str()),
        (offset, len, message),
        "error for `{expr}`"
    );
}

#[test]
fn patterns() {
    let g = fixture();
    assert_eq!(q(&g, "//...").len(), 12);
    assert_eq!(
        q(&g, "//a/..."),
        ["//a:a", "//a:b", "//a:c", "//a:d", "//a/sub:x"]
    );
    assert_eq!(q(&g, "//a:all"), ["//a:a", "//a:b", "//a:c", "//a:d"]);
    assert_eq!(q(&g, "//a:*"), ["//a:a", "//a:b", "//a:c", "//a:d"]);
    assert_eq!(q(&g, "//a:b"), ["//a:b"]);
    assert_eq!(q(&g, "//a"), ["//a:a"]);
    assert_eq!(q(&g, "'//a:b'"), ["//a:b"]);
    assert_eq!(q(&g, r#" "//a/sub:x" "#), ["//a/sub:x"]);
    assert_eq!(q(&g, "//my-pkg:lint-py"), ["//my-pkg:lint-py"]);
    assert_eq!(
        q(&g, "//my-pkg:lint-py - //my-pkg:lint-py"),
        Vec::<String>::new()
    );
}

#[test]
fn deps_with_and_without_depth() {
    let g = fixture();
    assert_eq!(q(&g, "deps(//a:a)"), ["//a:a", "//a:b", "//a:c", "//a:d"]);
    assert_eq!(q(&g, "deps(//a:a, 0)"), ["//a:a"]);
    assert_eq!(q(&g, "deps(//a:a, 1)"), ["//a:a", "//a:b", "//a:c"]);
    assert_eq!(
        q(&g, "deps(//a:a, 2)"),
        ["//a:a", "//a:b", "//a:c", "//a:d"]
    );
    assert_eq!(
        q(&g, "deps(//chain:g)"),
        ["//chain:g", "//chain:one", "//chain:three", "//chain:two"]
    );
    assert_eq!(
        q(&g, "deps(//chain:g, 2)"),
        ["//chain:g", "//chain:one", "//chain:two"]
    );
    assert_eq!(
        q(&g, "deps(//a:b + //a/sub:x)"),
        ["//a:b", "//a:d", "//a/sub:x"]
    );
}

#[test]
fn rdeps_within_a_universe() {
    let g = fixture();
    assert_eq!(
        q(&g, "rdeps(//..., //a:d)"),
        ["//a:a", "//a:b", "//a:c", "//a:d", "//a/sub:x"]
    );
    assert_eq!(
        q(&g, "rdeps(//..., //a:d, 1)"),
        ["//a:b", "//a:c", "//a:d", "//a/sub:x"]
    );
    assert_eq!(q(&g, "rdeps(//..., //a:d, 0)"), ["//a:d"]);
    // The universe is `//a:all` closed under deps: `//a/sub:x` is outside it.
    assert_eq!(
        q(&g, "rdeps(//a:all, //a:d)"),
        ["//a:a", "//a:b", "//a:c", "//a:d"]
    );
    // `//a:b`'s closure holds `//a:d` but not `//a:c`.
    assert_eq!(q(&g, "rdeps(//a:b, //a:d)"), ["//a:b", "//a:d"]);
    // `//a:d` is not in the universe at all.
    assert_eq!(q(&g, "rdeps(//chain:all, //a:d)"), Vec::<String>::new());
    // Through a target the universe pattern does not name, but its closure holds.
    assert_eq!(
        q(&g, "rdeps(//chain:g, //chain:three)"),
        ["//chain:g", "//chain:one", "//chain:three", "//chain:two"]
    );
}

#[test]
fn somepath_is_one_shortest_path() {
    let g = fixture();
    // Neighbours in label order: through `//a:b`, not `//a:c`.
    assert_eq!(q(&g, "somepath(//a:a, //a:d)"), ["//a:a", "//a:b", "//a:d"]);
    assert_eq!(
        q(&g, "somepath(//chain:g, //chain:three)"),
        ["//chain:g", "//chain:one", "//chain:three", "//chain:two"]
    );
    assert_eq!(q(&g, "somepath(//a:d, //a:a)"), Vec::<String>::new());
    assert_eq!(q(&g, "somepath(//a:a, //chain:g)"), Vec::<String>::new());
    assert_eq!(q(&g, "somepath(//a:a + //a:c, //a:c)"), ["//a:c"]);
    // From several starts: the shortest path wins (`//a:c` is one step from `//a:d`).
    assert_eq!(q(&g, "somepath(//a:a + //a:c, //a:d)"), ["//a:c", "//a:d"]);
}

#[test]
fn allpaths_covers_the_whole_diamond() {
    let g = fixture();
    assert_eq!(
        q(&g, "allpaths(//a:a, //a:d)"),
        ["//a:a", "//a:b", "//a:c", "//a:d"]
    );
    assert_eq!(
        q(&g, "allpaths(//a/..., //a:d)"),
        ["//a:a", "//a:b", "//a:c", "//a:d", "//a/sub:x"]
    );
    assert_eq!(q(&g, "allpaths(//a:a, //a:b)"), ["//a:a", "//a:b"]);
    assert_eq!(q(&g, "allpaths(//a:d, //a:a)"), Vec::<String>::new());
}

#[test]
fn set_operators() {
    let g = fixture();
    let acd = ["//a:a", "//a:c", "//a:d"];
    assert_eq!(q(&g, "//a:all - //a:b"), acd);
    assert_eq!(q(&g, "//a:all except //a:b"), acd);
    assert_eq!(q(&g, "(//a:all)-(//a:b)"), acd);
    assert_eq!(q(&g, "//a:b + //a/sub:x"), ["//a:b", "//a/sub:x"]);
    assert_eq!(q(&g, "//a:b union //a/sub:x"), ["//a:b", "//a/sub:x"]);
    assert_eq!(q(&g, "//a/... ^ deps(//a:b)"), ["//a:b", "//a:d"]);
    assert_eq!(q(&g, "//a/... intersect deps(//a:b)"), ["//a:b", "//a:d"]);
    // One precedence level, left-associative: `(b + c) ^ c`, not `b + (c ^ c)`.
    assert_eq!(q(&g, "//a:b + //a:c ^ //a:c"), ["//a:c"]);
    assert_eq!(q(&g, "//a:b + (//a:c ^ //a:c)"), ["//a:b", "//a:c"]);
    // `(all - b) + b`, not `all - (b + b)`.
    assert_eq!(
        q(&g, "//a:all - //a:b + //a:b"),
        ["//a:a", "//a:b", "//a:c", "//a:d"]
    );
    assert_eq!(q(&g, "//a:all - (//a:b + //a:c)"), ["//a:a", "//a:d"]);
    assert_eq!(
        q(&g, "//a:all except //a:b intersect //a:a union //a:d"),
        ["//a:a", "//a:d"]
    );
}

#[test]
fn kind_attr_and_filter() {
    let g = fixture();
    assert_eq!(q(&g, "kind(group, //...)"), ["//chain:g", "//py:t"]);
    assert_eq!(
        q(&g, "kind(task, //chain:all)"),
        ["//chain:one", "//chain:three", "//chain:two"]
    );
    // The generating macro counts as a kind too, searched unanchored.
    assert_eq!(q(&g, "kind(py_test, //...)"), ["//py:t", "//py:t_py3"]);
    assert_eq!(q(&g, "kind('_test$', //...)"), ["//py:t", "//py:t_py3"]);
    assert_eq!(q(&g, "kind('^ask', //...)"), Vec::<String>::new());

    assert_eq!(q(&g, "attr(tags, ci, //...)"), ["//a:d"]);
    assert_eq!(
        q(&g, r"attr(tags, '^\[\]$', //a:all)"),
        ["//a:a", "//a:b", "//a:c"]
    );
    assert_eq!(
        q(&g, "attr(deps, '^//a:d$', //...)"),
        ["//a:b", "//a:c", "//a/sub:x"]
    );
    assert_eq!(q(&g, "attr(deps, '//a:b, //a:c', //...)"), ["//a:a"]);
    assert_eq!(q(&g, "attr(cmd, pytest, //...)"), ["//py:t_py3"]);
    assert_eq!(q(&g, "attr(doc, bottom, //...)"), ["//a:d"]);
    assert_eq!(
        q(&g, "attr(name, '^t', //...)"),
        ["//chain:three", "//chain:two", "//py:t", "//py:t_py3"]
    );

    assert_eq!(q(&g, "filter(sub, //...)"), ["//a/sub:x"]);
    assert_eq!(q(&g, "filter('^//a:[ab]$', //...)"), ["//a:a", "//a:b"]);
    assert_eq!(
        q(&g, "filter(':t', deps(//py:t))"),
        ["//py:t", "//py:t_py3"]
    );
}

#[test]
fn syntax_errors_point_at_the_token() {
    let g = fixture();
    let cases: &[(&str, usize, usize, &str)] = &[
        ("deps(//a:b", 10, 0, "expected `)`, found end of expression"),
        ("deps(//a:b))", 11, 1, "unexpected `)`"),
        ("", 0, 0, "expected an expression, found end of expression"),
        (
            "   ",
            3,
            0,
            "expected an expression, found end of expression",
        ),
        (
            "//a:b +",
            7,
            0,
            "expected an expression after `+`, found end of expression",
        ),
        (
            "//a:b except",
            12,
            0,
            "expected an expression after `except`, found end of expression",
        ),
        ("//a:b //a:c", 6, 5, "unexpected `//a:c`"),
        ("(//a:b", 6, 0, "expected `)`, found end of expression"),
        ("(//a:b //a:c)", 7, 5, "expected `)`, found `//a:c`"),
        ("()", 1, 1, "expected an expression after `(`, found `)`"),
        ("union", 0, 5, "expected an expression, found `union`"),
        (
            "//a:b + + //a:c",
            8,
            1,
            "expected an expression after `+`, found `+`",
        ),
        (
            "rdeps(//a:b,)",
            12,
            1,
            "expected an expression after `,`, found `)`",
        ),
        (
            "deps(//a:b,)",
            11,
            1,
            "expected a depth (a non-negative integer), found `)`",
        ),
        (
            "deps(,)",
            5,
            1,
            "expected an expression after `(`, found `,`",
        ),
        (
            "somepath(//a:a //a:b)",
            15,
            5,
            "expected `,`, found `//a:b`",
        ),
        ("deps(//a:b 1)", 11, 1, "expected `)`, found `1`"),
        ("deps()", 5, 1, "`deps` takes 1 or 2 arguments, found 0"),
        (
            "rdeps(//...)",
            11,
            1,
            "`rdeps` takes 2 or 3 arguments, found 1",
        ),
        ("kind(task)", 9, 1, "`kind` takes 2 arguments, found 1"),
        (
            "deps(//a:b, 1, 2, 3)",
            15,
            4,
            "`deps` takes 1 or 2 arguments, found 4",
        ),
        (
            "allpaths(//a:a, //a:b, deps(//a:c, 1))",
            23,
            14,
            "`allpaths` takes 2 arguments, found 3",
        ),
        (
            "deps(//a:b, 1, )",
            13,
            1,
            "`deps` takes 1 or 2 arguments, found 3",
        ),
        (
            "deps(//a:b, x)",
            12,
            1,
            "expected a depth (a non-negative integer), found `x`",
        ),
        (
            "deps(//a:b, -1)",
            12,
            2,
            "expected a depth (a non-negative integer), found `-1`",
        ),
        (
            "deps(//a:b, (1))",
            12,
            1,
            "expected a depth (a non-negative integer), found `(`",
        ),
        (
            "kind((a), //...)",
            5,
            1,
            "expected a regular expression, found `(`",
        ),
        ("kind(a b, //...)", 7, 1, "expected `,`, found `b`"),
        (
            "kind('(a', //...)",
            5,
            4,
            "invalid regular expression: unclosed group",
        ),
        (
            "attr(tags, 'x[', //...)",
            11,
            4,
            "invalid regular expression: unclosed character class",
        ),
        ("attr(ci, //...)", 5, 2, "unknown attribute `ci`"),
        (
            "deps('//a:b)",
            5,
            7,
            "unterminated quoted word: no closing '",
        ),
        (
            "//a:b (//a:c)",
            6,
            1,
            "unexpected `(` after a target pattern",
        ),
    ];
    for &(expr, offset, len, message) in cases {
        assert_err(&g, expr, offset, len, message);
    }
    // A regex that looks like a pattern is fine.
    assert_eq!(q(&g, "filter(//a:b, //...)"), ["//a:b"]);
}

#[test]
fn errors_give_help() {
    let g = fixture();
    let help = |expr: &str| err(&g, expr).help;
    assert_eq!(
        help("deps(//a:b))").as_deref(),
        Some("there is no `(` for it to close")
    );
    assert_eq!(
        help("(//a:b").as_deref(),
        Some("to close the `(` at offset 0")
    );
    assert_eq!(
        help("deps(//a:b").as_deref(),
        Some("usage: `deps(expr)` or `deps(expr, depth)`")
    );
    assert_eq!(
        help("rdeps(//...)").as_deref(),
        Some("usage: `rdeps(universe, expr)` or `rdeps(universe, expr, depth)`")
    );
    assert_eq!(
        help("kind(task)").as_deref(),
        Some("usage: `kind(regex, expr)`")
    );
    assert_eq!(
        help("//a:b //a:c").as_deref(),
        Some("combine sets with `+`, `-` or `^` (also written `union`, `except`, `intersect`)")
    );
    assert_eq!(
        help("kind(a b, //...)").as_deref(),
        Some("quote a regular expression that contains spaces, parentheses or commas: '(a|b) c'")
    );

    let e = err(&g, "dep(//a:b)");
    assert_eq!(
        (e.offset, e.len, e.message.as_str()),
        (0, 3, "unknown function `dep`")
    );
    assert_eq!(e.help.as_deref(), Some("did you mean `deps`?"));
    let e = err(&g, "//a:b + somepaths(//a:a, //a:b)");
    assert_eq!(
        (e.offset, e.len, e.message.as_str()),
        (8, 9, "unknown function `somepaths`")
    );
    assert_eq!(e.help.as_deref(), Some("did you mean `somepath`?"));
    let e = err(&g, "zzz(//a:b)");
    assert_eq!(
        e.help.as_deref(),
        Some("the functions are `allpaths`, `attr`, `deps`, `filter`, `kind`, `rdeps`, `somepath`")
    );
    let e = err(&g, "attr(tag, ci, //...)");
    assert_eq!(
        (e.offset, e.len, e.message.as_str()),
        (5, 3, "unknown attribute `tag`")
    );
    assert_eq!(e.help.as_deref(), Some("did you mean `tags`?"));
}

#[test]
fn bad_patterns_point_inside_the_word() {
    let g = fixture();
    assert_err(
        &g,
        "deps(//a//b:c)",
        9,
        1,
        "empty path segment in a package path (two `/` in a row, or a leading or trailing `/`)",
    );
    // Quoted: the offset skips the quote.
    assert_err(
        &g,
        r#"deps("//a:b$")"#,
        11,
        1,
        "invalid character '$' in a target name",
    );
    assert_err(&g, "//a:", 4, 0, "a target name cannot be empty");
    let e = err(&g, "//a:b + deps");
    assert_eq!((e.offset, e.len), (8, 1));
    assert_eq!(
        e.help.as_deref(),
        Some("`deps` is a function: write `deps(...)`")
    );
    let e = err(&g, "a/b");
    assert_eq!((e.offset, e.len), (0, 1));
    assert_eq!(
        e.help.as_deref(),
        Some("a target pattern is `//pkg:name`, `//pkg:all` or `//pkg/...`")
    );
}

#[test]
fn patterns_that_match_nothing() {
    let g = fixture();
    let e = err(&g, "deps(//a:bb)");
    assert_eq!(
        (e.offset, e.len, e.message.as_str()),
        (5, 6, "no target `//a:bb`: package `//a` has no target `bb`")
    );
    assert_eq!(e.help.as_deref(), Some("did you mean `//a:b`?"));
    let e = err(&g, "//a:a + '//chian:all'");
    assert_eq!(
        (e.offset, e.len, e.message.as_str()),
        (8, 13, "no package `//chian` (no `BUILD` file there)")
    );
    assert_eq!(e.help.as_deref(), Some("did you mean `//chain`?"));
    // Evaluation is left to right: the first bad pattern is reported.
    let e = err(&g, "//x:y - //z:w");
    assert_eq!((e.offset, e.len), (0, 5));
}

#[test]
fn output_label() {
    let g = fixture();
    let set = evaluate(&g, "deps(//a:b)").unwrap();
    assert_eq!(render(&g, &set, OutputFormat::Label), "//a:b\n//a:d\n");
    assert_eq!(render(&g, &BTreeSet::new(), OutputFormat::Label), "");
}

#[test]
fn output_json() {
    let g = fixture();
    let set = evaluate(&g, "//a:d + //py:t_py3 + //chain:g").unwrap();
    let expected = r#"[
  {
    "label": "//a:d",
    "kind": "task",
    "deps": [],
    "srcs": [
      "d.txt"
    ],
    "outs": [
      "d.out"
    ],
    "tags": [
      "ci"
    ],
    "doc": "the bottom"
  },
  {
    "label": "//chain:g",
    "kind": "group",
    "deps": [
      "//chain:one"
    ],
    "srcs": [],
    "outs": [],
    "tags": []
  },
  {
    "label": "//py:t_py3",
    "kind": "task",
    "generator": "py_test",
    "deps": [],
    "srcs": [
      "t.py"
    ],
    "outs": [],
    "tags": [],
    "doc": "pytest under Python 3"
  }
]
"#;
    assert_eq!(render(&g, &set, OutputFormat::Json), expected);
    assert_eq!(render(&g, &BTreeSet::new(), OutputFormat::Json), "[]\n");
}

#[test]
fn output_dot() {
    let g = fixture();
    let set = evaluate(&g, "deps(//a:a) + //a/sub:x").unwrap();
    let out = render(&g, &set, OutputFormat::Dot);
    assert_eq!(
        out,
        r#"digraph flow {
  "//a:a";
  "//a:b";
  "//a:c";
  "//a:d";
  "//a/sub:x";
  "//a:a" -> "//a:b";
  "//a:a" -> "//a:c";
  "//a:b" -> "//a:d";
  "//a:c" -> "//a:d";
  "//a/sub:x" -> "//a:d";
}
"#
    );
    // Only edges with both ends in the set.
    let set = evaluate(&g, "//a:a + //a:d").unwrap();
    assert_eq!(
        render(&g, &set, OutputFormat::Dot),
        "digraph flow {\n  \"//a:a\";\n  \"//a:d\";\n}\n"
    );
    assert_dot_parses(&out);
}

/// Runs Graphviz on `dot` when it is installed; skipped (with a note) when it is not.
fn assert_dot_parses(dot: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("note: `dot` is not installed; not checking the output with Graphviz");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(dot.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "dot rejected the output: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn output_mermaid() {
    let g = fixture();
    let set = evaluate(&g, "deps(//chain:g) - //chain:two + //a:d").unwrap();
    assert_eq!(
        render(&g, &set, OutputFormat::Mermaid),
        r#"graph LR
  n0["//a:d"]
  n1["//chain:g"]
  n2["//chain:one"]
  n3["//chain:three"]
  n1 --> n2
"#
    );
    let set = evaluate(&g, "deps(//a:a)").unwrap();
    assert_eq!(
        render(&g, &set, OutputFormat::Mermaid),
        "graph LR\n  n0[\"//a:a\"]\n  n1[\"//a:b\"]\n  n2[\"//a:c\"]\n  n3[\"//a:d\"]\n  \
         n0 --> n1\n  n0 --> n2\n  n1 --> n3\n  n2 --> n3\n"
    );
}

#[test]
fn output_format_names_for_the_command_line() {
    use clap::ValueEnum;
    let names: Vec<String> = OutputFormat::value_variants()
        .iter()
        .map(|v| v.to_possible_value().unwrap().get_name().to_owned())
        .collect();
    assert_eq!(names, ["label", "json", "dot", "mermaid"]);
}
