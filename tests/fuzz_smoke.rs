//! The four fuzz bodies (`fuzz/src/lib.rs`: `label`, `pattern`, `query`, `build_eval`), run by
//! proptest on random inputs for a few seconds in every `cargo test`: raw bytes, and strings
//! drawn from each input's own alphabet or tokens so that many of them parse and reach deep.
//! Bounded and reproducible: fixed case counts and a fixed seed (`FLOW_FUZZ_SMOKE_SEED` picks
//! another; `FLOW_FUZZ_SMOKE_CASES` multiplies the counts). The long, coverage-guided runs are
//! cargo-fuzz's (`docs/fuzzing.md`).
//!
//! Also the round trips that need valid inputs to say anything: label → text → label and
//! pattern → text → pattern, over labels and patterns built from the grammar.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestError, TestRunner};

use flow_rules::{Label, PatternTerm, TargetPattern};

use crate::support::{env_number, seeded_rng};

#[path = "../fuzz/src/lib.rs"]
mod bodies;

/// Runs `body` on `cases` (times `FLOW_FUZZ_SMOKE_CASES`) values of `strategy`, seeded.
fn run<S: Strategy>(name: &str, cases: u32, strategy: S, body: impl Fn(S::Value))
where
    S::Value: std::fmt::Debug,
{
    let mut phrase = *b"flow fuzz smoke, fixed seed.....";
    for (b, s) in phrase[16..].iter_mut().zip(name.bytes()) {
        *b ^= s;
    }
    let config = Config {
        cases: cases * env_number("FLOW_FUZZ_SMOKE_CASES", 1).max(1) as u32,
        failure_persistence: None,
        max_shrink_time: 30_000,
        ..Config::default()
    };
    let rng = seeded_rng(phrase, env_number("FLOW_FUZZ_SMOKE_SEED", 0));
    let mut runner = TestRunner::new_with_rng(config, rng);
    match runner.run(&strategy, |v| {
        body(v);
        Ok(())
    }) {
        Ok(()) => {}
        Err(TestError::Fail(why, value)) => {
            panic!("{name}: {why}\nminimal failing input: {value:?}")
        }
        Err(TestError::Abort(why)) => panic!("{name}: proptest aborted: {why}"),
    }
}

/// Raw bytes, or a string of `alphabet` characters, or one of `prefixes` followed by a
/// concatenation of `tokens`.
fn input(
    alphabet: &'static str,
    prefixes: &'static [&'static str],
    tokens: &'static [&'static str],
    max: usize,
) -> BoxedStrategy<Vec<u8>> {
    let chars: Vec<char> = alphabet.chars().collect();
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..max),
        2 => proptest::collection::vec(proptest::sample::select(chars), 0..max)
            .prop_map(|cs| cs.into_iter().collect::<String>().into_bytes()),
        4 => (
            proptest::sample::select(prefixes),
            proptest::collection::vec(proptest::sample::select(tokens), 0..max / 4 + 1),
        )
            .prop_map(|(p, ts)| format!("{p}{}", ts.concat()).into_bytes()),
    ]
    .boxed()
}

const LABEL_ALPHABET: &str = "/:@.-_+=,~*aAz09 \\\u{e9}\0";
const LABEL_PREFIXES: &[&str] = &["//", "//", ":", "-//", "", "@r//"];
const LABEL_TOKENS: &[&str] = &[
    "/", "/", ":", "a", "pkg", "sub", "b-c", "..", ".", "...", "/...", ":all", "*", "-", "x.y",
    "_", "~", "=", "@", "+",
];

#[test]
fn label_never_panics_and_round_trips() {
    run(
        "label",
        2048,
        input(LABEL_ALPHABET, LABEL_PREFIXES, LABEL_TOKENS, 32),
        |b| bodies::label(&b),
    );
}

#[test]
fn pattern_never_panics_and_round_trips() {
    run(
        "pattern",
        2048,
        input(LABEL_ALPHABET, LABEL_PREFIXES, LABEL_TOKENS, 32),
        |b| bodies::pattern(&b),
    );
}

const QUERY_TOKENS: &[&str] = &[
    "deps(",
    "rdeps(",
    "somepath(",
    "allpaths(",
    "kind(",
    "attr(",
    "filter(",
    "//...",
    "//a:gen",
    "//a:lib",
    "//a/b:t1",
    "//a/b/...",
    "//c:all",
    "//a:*",
    "//c",
    "task",
    "group",
    "py_test",
    "tags",
    "env",
    "deps",
    "timeout",
    "K=v",
    "fast",
    ".*",
    "t[0-9]",
    "(",
    ")",
    ",",
    " + ",
    " - ",
    " ^ ",
    " union ",
    " except ",
    " intersect ",
    "0",
    "1",
    "99999999999999999999",
    "'",
    "\"",
    "\\",
    " ",
    "[",
    "(?",
    "//nope:x",
];

/// Query expressions from the grammar (`docs/query.md`) over the fixed graph's labels.
fn query_expr() -> impl Strategy<Value = String> {
    let leaf = proptest::sample::select(vec![
        "//...",
        "//a:gen",
        "//a:lib",
        "//a/b:t1",
        "//a/b/...",
        "//c:all",
        "//a:*",
        "//c",
        "//nope:x",
        "//a:manual",
        "//a:all_of_a",
    ])
    .prop_map(str::to_owned);
    let regex = proptest::sample::select(vec!["task", "group", "py_test", ".*", "t[0-9]", "(", ""]);
    let attr = proptest::sample::select(vec!["tags", "env", "deps", "timeout", "name", "nope"]);
    let op = proptest::sample::select(vec![
        " + ",
        " - ",
        " ^ ",
        " union ",
        " except ",
        " intersect ",
    ]);
    leaf.prop_recursive(4, 24, 3, move |inner| {
        prop_oneof![
            inner.clone().prop_map(|x| format!("deps({x})")),
            (inner.clone(), 0..3u8).prop_map(|(x, d)| format!("deps({x}, {d})")),
            (inner.clone(), inner.clone()).prop_map(|(u, x)| format!("rdeps({u}, {x})")),
            (inner.clone(), inner.clone(), 0..2u8)
                .prop_map(|(u, x, d)| format!("rdeps({u}, {x}, {d})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("somepath({a}, {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("allpaths({a}, {b})")),
            (regex.clone(), inner.clone()).prop_map(|(r, x)| format!("kind({r}, {x})")),
            (regex.clone(), inner.clone()).prop_map(|(r, x)| format!("filter('{r}', {x})")),
            (attr.clone(), regex.clone(), inner.clone())
                .prop_map(|(a, r, x)| format!("attr({a}, \"{r}\", {x})")),
            (inner.clone(), op.clone(), inner.clone()).prop_map(|(a, o, b)| format!("{a}{o}{b}")),
            inner.clone().prop_map(|x| format!("({x})")),
        ]
    })
}

/// `text` with one byte changed, inserted or removed at `at`.
fn mutate(text: String, at: proptest::sample::Index, byte: u8, how: u8) -> Vec<u8> {
    let mut bytes = text.into_bytes();
    let i = at.index(bytes.len() + 1);
    match how % 3 {
        0 if i < bytes.len() => bytes[i] = byte,
        1 if i < bytes.len() => {
            bytes.remove(i);
        }
        _ => bytes.insert(i, byte),
    }
    bytes
}

fn query_input() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        1 => input("()+-^,/:.*'\" adeklprstx0123456789", &[""], QUERY_TOKENS, 48),
        2 => query_expr().prop_map(String::into_bytes),
        2 => (query_expr(), any::<proptest::sample::Index>(), any::<u8>(), any::<u8>())
            .prop_map(|(q, at, byte, how)| mutate(q, at, byte, how)),
    ]
    .boxed()
}

#[test]
fn query_never_panics() {
    run("query", 1024, query_input(), |b| bodies::query(&b));
}

const BUILD_TOKENS: &[&str] = &[
    "task(",
    "group(",
    "name = ",
    "\"x\"",
    "\"y\"",
    "cmd = \"true\"",
    "outs = [\"o.txt\"]",
    "outs = [\"d/\"]",
    "deps = [\":x\"]",
    "deps = [\"//lib:x\"]",
    "srcs = glob([\"**/*.py\"])",
    "srcs = [\"a.py\"]",
    ")",
    ", ",
    "\n",
    "load(\"@flow//rules:python.star\", \"py_test\")\n",
    "load(\"//lib:defs.star\", \"m\")\n",
    "py_test(",
    "python = [\"3.11\"]",
    "def f():\n    ",
    "return 1\n",
    "[",
    "]",
    "{",
    "}",
    "for x in range(3):\n    ",
    "if True:\n    ",
    "package_name()",
    "config(\"k\")",
    "1 // 0",
    "\"a\" * 9",
    "timeout = \"1s\"",
    "timeout = \"-1\"",
    "env = {\"A\": \"b\"}",
    "tags = [\"manual\"]",
    "visibility = [\"//visibility:public\"]",
    "secrets = [\"S\"]",
    "x = ",
    "#",
    "None",
    "True",
    "\"../x\"",
    "\"/abs\"",
    "retries = 2",
    "sandbox = False",
    "tools = [\"sh\"]",
    "\"$(location :x)\"",
    "\"$(OUTS)\"",
    "fail(\"no\")",
];

/// BUILD files made of `task`/`group`/`py_test` calls with mostly valid attributes (one in ten
/// is not), so that many evaluate and reach analysis: deps between them and to `//lib:x`,
/// visibility, outputs, expansions, globs.
fn build_file() -> impl Strategy<Value = String> {
    let valid = proptest::sample::select(vec![
        "outs = [\"o.txt\"]",
        "outs = [\"d/\"]",
        "deps = [\":t0\"]",
        "deps = [\":t1\", \"//lib:x\"]",
        "srcs = glob([\"**/*.py\"])",
        "srcs = [\"a.py\"]",
        "env = {\"A\": \"b\"}",
        "secrets = [\"S\"]",
        "timeout = \"1s\"",
        "retries = 2",
        "tags = [\"manual\"]",
        "visibility = [\"//visibility:public\"]",
        "sandbox = False",
        "tools = [\"sh\"]",
        "doc = \"d\"",
    ]);
    let invalid = proptest::sample::select(vec![
        "outs = [\"../x\"]",
        "outs = [\"/abs\"]",
        "deps = [\":nope\"]",
        "srcs = [\"missing.py\"]",
        "timeout = \"soon\"",
        "retries = -1",
        "visibility = [\"//lib:__pkg__\"]",
        "bogus = 1",
        "cmd = \"$(location //nope:z)\"",
        "deps = [\":t0\", \":t0\"]",
        "outs = [\"a.py\"]",
    ]);
    let attr = prop_oneof![9 => valid, 1 => invalid];
    let cmd = proptest::sample::select(vec![
        "true",
        "echo $(SRCS) > $(OUTS)",
        "cat $(location :t0) > $(OUTS)",
        "$$HOME",
        "x $(",
    ]);
    let call = proptest::sample::select(vec!["task", "task", "task", "group", "py_test"]);
    let header = proptest::sample::select(vec![
        "",
        "load(\"@flow//rules:python.star\", \"py_test\")\n",
    ]);
    (
        header,
        proptest::collection::vec((call, cmd, proptest::collection::vec(attr, 0..4)), 1..5),
    )
        .prop_map(|(header, calls)| {
            let mut text = header.to_owned();
            for (i, (call, cmd, attrs)) in calls.into_iter().enumerate() {
                let mut all = vec![format!("name = \"t{i}\"")];
                if call == "task" {
                    all.push(format!("cmd = \"{cmd}\""));
                }
                all.extend(attrs.iter().map(|a| a.to_string()));
                text.push_str(&format!("{call}({})\n", all.join(", ")));
            }
            text
        })
}

#[test]
fn build_eval_never_panics() {
    let strategy = prop_oneof![
        1 => input("task(name=\"x\", cmd)[]{}:\n #\\'=1.", &[""], BUILD_TOKENS, 64),
        2 => build_file().prop_map(String::into_bytes),
        1 => (build_file(), any::<proptest::sample::Index>(), any::<u8>(), any::<u8>())
            .prop_map(|(b, at, byte, how)| mutate(b, at, byte, how)),
    ];
    run("build_eval", 96, strategy, |b| bodies::build_eval(&b));
}

/// A path segment of a package (`[A-Za-z0-9_.+-]`, not `.` or `..`).
fn package_segment() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.+-]{1,6}".prop_filter("not . or ..", |s| s != "." && s != "..")
}

fn package() -> impl Strategy<Value = String> {
    proptest::collection::vec(package_segment(), 0..4).prop_map(|v| v.join("/"))
}

/// A target name: segments of `[A-Za-z0-9_.+=,@~-]`, `/`-separated; not `all` (which, in a
/// pattern, means every target of the package).
fn name() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        "[A-Za-z0-9_.+=,@~-]{1,6}".prop_filter("not . or ..", |s| s != "." && s != ".."),
        1..3,
    )
    .prop_map(|v| v.join("/"))
    .prop_filter("not all", |s| s != "all")
}

fn label() -> impl Strategy<Value = Label> {
    (package(), name()).prop_map(|(p, n)| {
        Label::new(&p, &n).unwrap_or_else(|e| panic!("//{p}:{n} is valid by the grammar: {e}"))
    })
}

#[test]
fn label_to_text_to_label() {
    run("label round trip", 512, label(), |l| {
        let text = l.to_string();
        assert_eq!(Label::parse(&text, None), Ok(l.clone()), "{text}");
        let relative = l.relative_to(l.package());
        assert_eq!(
            Label::parse(&relative, Some(l.package())),
            Ok(l),
            "{relative}"
        );
    });
}

#[test]
fn pattern_to_text_to_pattern() {
    let pattern = prop_oneof![
        label().prop_map(TargetPattern::Label),
        package().prop_map(TargetPattern::Package),
        package().prop_map(TargetPattern::Recursive),
    ];
    run(
        "pattern round trip",
        512,
        (pattern, any::<bool>()).prop_map(|(pattern, exclude)| PatternTerm { exclude, pattern }),
        |term| {
            let text = term.to_string();
            assert_eq!(PatternTerm::parse(&text), Ok(term), "{text}");
        },
    );
}

/// Regression, found by the `pattern` fuzz target (`fuzz/artifacts/pattern/crash-fb02cb45…`,
/// the 5 bytes `//all`): the shorthand `//all` (or `//x/all`) parsed as the single target
/// `//all:all`, which displays as `//all:all`, and that text parses as the pattern for every
/// target of package `all`. As in Bazel, `//x/all` is now the wildcard (`rules/src/pattern.rs`).
#[test]
fn a_pattern_prints_as_text_that_parses_back_to_it() {
    for text in ["//all", "//x/all", "-//a/b/all"] {
        let term = PatternTerm::parse(text).unwrap();
        assert_eq!(PatternTerm::parse(&term.to_string()), Ok(term), "{text}");
    }
}

/// The generators above produce what they claim (a sanity check of the harness itself).
#[test]
fn generators_reach_valid_inputs() {
    let mut runner = TestRunner::deterministic();
    let strategy = input(LABEL_ALPHABET, LABEL_PREFIXES, LABEL_TOKENS, 32);
    let parsed = (0..400)
        .filter(|_| {
            let bytes = strategy.new_tree(&mut runner).unwrap().current();
            std::str::from_utf8(&bytes).is_ok_and(|s| PatternTerm::parse(s).is_ok())
        })
        .count();
    assert!(parsed > 15, "only {parsed} of 400 random patterns parse");
    let strategy = query_input();
    let graph = bodies::query_graph();
    let (mut evaluated, mut nonempty) = (0, 0);
    for _ in 0..400 {
        let bytes = strategy.new_tree(&mut runner).unwrap().current();
        if let Ok(set) = flow::query::evaluate(graph, &String::from_utf8_lossy(&bytes)) {
            evaluated += 1;
            nonempty += usize::from(!set.is_empty());
        }
    }
    assert!(
        evaluated > 100 && nonempty > 50,
        "only {evaluated} of 400 random queries evaluate ({nonempty} non-empty)"
    );
    let strategy = build_file();
    let (mut clean, mut analysed) = (0, 0);
    for _ in 0..30 {
        let text = strategy.new_tree(&mut runner).unwrap().current();
        let (targets, errors) = bodies::evaluate_build(text.as_bytes());
        // `lib/BUILD` holds one target of its own.
        analysed += usize::from(targets > 1);
        clean += usize::from(targets > 1 && errors == 0);
    }
    assert!(
        analysed > 5 && clean > 2,
        "of 30 random BUILD files, {analysed} evaluate to targets, {clean} without errors"
    );
}
