//! Golden tests: every kind of bad input, with the exact message flow prints (location, code
//! frame, hint). Expected output is in `tests/golden/NAME.txt`.

use crate::support::{golden, Ws};

/// Writes `files` into a fresh workspace (with an empty `flow.toml` unless given), runs
/// `flow ARGS`, expects exit 2 and compares stderr with the golden file `name`.
fn case(name: &str, files: &[(&str, &str)], args: &[&str]) {
    let mut ws = Ws::bare();
    if !files.iter().any(|(p, _)| *p == "flow.toml") {
        ws = ws.file("flow.toml", "");
    }
    for (path, contents) in files {
        ws = ws.file(path, contents);
    }
    let run = ws.run(args);
    golden(name, run.bad_input());
}

fn query_all(name: &str, files: &[(&str, &str)]) {
    case(name, files, &["query", "//..."]);
}

#[test]
fn syntax_error() {
    query_all(
        "syntax_error",
        &[(
            "app/BUILD",
            "task(\n    name = \"x\",\n    srcs = [\"a.txt\",\n    cmd = \"true\",\n)\n",
        )],
    );
}

#[test]
fn unknown_attribute_suggests() {
    query_all(
        "unknown_attribute",
        &[(
            "app/BUILD",
            "task(\n    name = \"x\",\n    cmd = \"true\",\n    srcz = [],\n)\n",
        )],
    );
}

#[test]
fn wrong_attribute_type() {
    query_all(
        "wrong_attribute_type",
        &[
            ("app/a.txt", ""),
            (
                "app/BUILD",
                "task(\n    name = \"x\",\n    cmd = \"true\",\n    srcs = \"a.txt\",\n)\n",
            ),
        ],
    );
}

#[test]
fn missing_required_attribute() {
    query_all(
        "missing_attribute",
        &[("app/BUILD", "task(name = \"x\")\n")],
    );
}

#[test]
fn duplicate_target() {
    query_all(
        "duplicate_target",
        &[("app/BUILD", "task(name = \"x\", cmd = \"true\")\ntask(name = \"y\", cmd = \"true\")\ntask(name = \"x\", cmd = \"false\")\n")],
    );
}

#[test]
fn unknown_dep_suggests_closest() {
    query_all(
        "unknown_dep",
        &[
            (
                "lib/BUILD",
                "task(name = \"lint\", cmd = \"true\")\ntask(name = \"test\", cmd = \"true\")\n",
            ),
            (
                "app/BUILD",
                "task(\n    name = \"x\",\n    cmd = \"true\",\n    deps = [\"//lib:tset\"],\n)\n",
            ),
        ],
    );
}

/// Issue 14: a dependency whose name has two letters swapped got no "did you mean" (Jaro-Winkler
/// finds no match in three letters, so `lbi` scored 0.56 against `lib`).
#[test]
fn unknown_dep_with_two_letters_swapped_suggests() {
    query_all(
        "unknown_dep_swapped",
        &[
            (
                "machine_learning/BUILD",
                "task(name = \"lib\", cmd = \"true\")\ntask(name = \"lint\", cmd = \"true\")\n",
            ),
            (
                "app/BUILD",
                "task(\n    name = \"x\",\n    cmd = \"true\",\n    deps = [\"//machine_learning:lbi\"],\n)\n",
            ),
        ],
    );
}

#[test]
fn unknown_dep_package() {
    query_all(
        "unknown_dep_package",
        &[(
            "app/BUILD",
            "task(name = \"x\", cmd = \"true\", deps = [\"//nowhere:lint\"])\n",
        )],
    );
}

#[test]
fn invalid_label() {
    query_all(
        "invalid_label",
        &[(
            "app/BUILD",
            "task(name = \"x\", cmd = \"true\", deps = [\"//lib/../etc:passwd\"])\n",
        )],
    );
}

#[test]
fn invalid_target_name() {
    query_all(
        "invalid_target_name",
        &[("app/BUILD", "task(name = \"a b\", cmd = \"true\")\n")],
    );
}

#[test]
fn missing_source_suggests() {
    query_all(
        "missing_source",
        &[
            ("app/main.py", ""),
            (
                "app/BUILD",
                "task(name = \"x\", cmd = \"true\", srcs = [\"mian.py\"])\n",
            ),
        ],
    );
}

#[test]
fn source_in_subpackage() {
    query_all(
        "source_in_subpackage",
        &[
            ("app/sub/BUILD", ""),
            ("app/sub/a.py", ""),
            (
                "app/BUILD",
                "task(name = \"x\", cmd = \"true\", srcs = [\"sub/a.py\"])\n",
            ),
        ],
    );
}

#[test]
fn output_absolute() {
    query_all(
        "output_absolute",
        &[(
            "app/BUILD",
            "task(name = \"x\", cmd = \"true\", outs = [\"/etc/passwd\"])\n",
        )],
    );
}

#[test]
fn output_escapes_package() {
    query_all(
        "output_escapes",
        &[(
            "app/BUILD",
            "task(name = \"x\", cmd = \"true\", outs = [\"../other/out.txt\"])\n",
        )],
    );
}

#[test]
fn output_collides_with_source() {
    query_all(
        "output_is_source",
        &[
            ("app/a.txt", ""),
            (
                "app/BUILD",
                "task(name = \"x\", cmd = \"true\", srcs = [\"a.txt\"], outs = [\"a.txt\"])\n",
            ),
        ],
    );
}

#[test]
fn output_collides_with_a_package_file() {
    query_all(
        "output_is_package_file",
        &[
            ("app/README.md", ""),
            (
                "app/BUILD",
                "task(name = \"x\", cmd = \"true\", outs = [\"README.md\"])\n",
            ),
        ],
    );
}

#[test]
fn output_declared_by_two_targets() {
    query_all(
        "duplicate_output",
        &[("app/BUILD", "task(name = \"x\", cmd = \"true\", outs = [\"out/r.txt\"])\ntask(name = \"y\", cmd = \"true\", outs = [\"out/r.txt\"])\n")],
    );
}

/// Regression (issue 15, item 11): outputs were checked against each other only within a
/// package, so `//a:outer`'s directory `b/` and `//a/b:inner`'s `x.txt` (both in `flow-out/a/b`)
/// built "ok" while one swept the other away. The same path declared from two packages too.
#[test]
fn outputs_overlapping_across_packages() {
    query_all(
        "overlapping_output_across_packages",
        &[
            (
                "a/BUILD",
                "task(name = \"outer\", cmd = \"mkdir -p b\", outs = [\"b/\"])\ntask(name = \"same\", cmd = \"true\", outs = [\"c/y.txt\"])\n",
            ),
            (
                "a/b/BUILD",
                "task(name = \"inner\", cmd = \"echo x > x.txt\", outs = [\"x.txt\"])\n",
            ),
            (
                "a/c/BUILD",
                "task(name = \"same\", cmd = \"true\", outs = [\"y.txt\"])\n",
            ),
        ],
    );
}

/// Regression (issue 15, adversarial run): an output named like another output's tree marker
/// (`.d.flow-tree` beside `d/`) was accepted; the two overwrote each other and builds never
/// settled. Names flow keeps for its own files are refused.
#[test]
fn an_output_named_like_a_tree_marker() {
    query_all(
        "output_with_a_reserved_name",
        &[(
            "a/BUILD",
            "task(name = \"mk\", outs = [\".d.flow-tree\"], cmd = \"echo fake > .d.flow-tree\")\n\
             task(name = \"d\", outs = [\"d/\"], cmd = \"mkdir d\")\n\
             task(name = \"tmp\", outs = [\"x/.flow-tmp-1\"], cmd = \"true\")\n",
        )],
    );
}

/// Regression (issue 15, item 11): within a package, only neighbours in sorted order were
/// compared, so `gen.txt` sorting between `gen` and `gen/x.txt` hid the nesting.
#[test]
fn output_inside_another_behind_a_sibling() {
    query_all(
        "overlapping_output_in_a_package",
        &[(
            "app/BUILD",
            "task(name = \"dir\", cmd = \"true\", outs = [\"gen/\"])\ntask(name = \"file\", cmd = \"true\", outs = [\"gen.txt\"])\ntask(name = \"inner\", cmd = \"true\", outs = [\"gen/x.txt\"])\n",
        )],
    );
}

#[test]
fn not_visible() {
    query_all(
        "not_visible",
        &[
            (
                "src/billing/BUILD",
                "task(name = \"core\", cmd = \"true\", visibility = [\"//src/billing/...\"])\n",
            ),
            (
                "src/shipping/BUILD",
                "task(name = \"x\", cmd = \"true\", deps = [\"//src/billing:core\"])\n",
            ),
        ],
    );
}

#[test]
fn private_default_visibility_from_config() {
    case(
        "default_visibility_private",
        &[
            (
                "flow.toml",
                "[workspace]\ndefault_visibility = [\"//visibility:private\"]\n",
            ),
            ("lib/BUILD", "task(name = \"lib\", cmd = \"true\")\n"),
            (
                "app/BUILD",
                "task(name = \"app\", cmd = \"true\", deps = [\"//lib\"])\n",
            ),
        ],
        &["query", "//..."],
    );
}

#[test]
fn dependency_cycle() {
    query_all(
        "cycle",
        &[
            (
                "a/BUILD",
                "task(name = \"x\", cmd = \"true\", deps = [\"//b:y\"])\n",
            ),
            (
                "b/BUILD",
                "task(name = \"y\", cmd = \"true\", deps = [\"//c:z\"])\n",
            ),
            (
                "c/BUILD",
                "task(name = \"z\", cmd = \"true\", deps = [\"//a:x\"])\n",
            ),
        ],
    );
}

#[test]
fn self_dependency() {
    query_all(
        "self_dependency",
        &[(
            "a/BUILD",
            "task(name = \"x\", cmd = \"true\", deps = [\":x\"])\n",
        )],
    );
}

#[test]
fn load_cycle() {
    query_all(
        "load_cycle",
        &[
            ("tools/a.star", "load(\":b.star\", \"b\")\na = 1\n"),
            ("tools/b.star", "load(\":a.star\", \"a\")\nb = 2\n"),
            ("app/BUILD", "load(\"//tools:a.star\", \"a\")\n"),
        ],
    );
}

#[test]
fn self_loading_file() {
    query_all(
        "self_load",
        &[
            ("tools/a.star", "load(\"//tools:a.star\", \"a\")\na = 1\n"),
            ("app/BUILD", "load(\"//tools:a.star\", \"a\")\n"),
        ],
    );
}

#[test]
fn load_missing_file() {
    query_all(
        "load_missing_file",
        &[
            ("app/BUILD", "load(\"//tools:defs.star\", \"x\")\n"),
            ("lib/BUILD", "load(\"//tools:defs.star\", \"x\")\n"),
        ],
    );
}

#[test]
fn load_missing_symbol() {
    query_all(
        "load_missing_symbol",
        &[
            ("tools/defs.star", "def helper():\n    pass\n"),
            ("app/BUILD", "load(\"//tools:defs.star\", \"helpr\")\n"),
        ],
    );
}

#[test]
fn load_bad_label() {
    query_all(
        "load_bad_label",
        &[("app/BUILD", "load(\"tools/defs.star\", \"x\")\n")],
    );
}

#[test]
fn load_unknown_prelude_file() {
    query_all(
        "load_unknown_prelude",
        &[(
            "app/BUILD",
            "load(\"@flow//rules:pyhton.star\", \"py_test\")\n",
        )],
    );
}

#[test]
fn undefined_variable() {
    query_all(
        "undefined_variable",
        &[(
            "app/BUILD",
            "nme = \"x\"\ntask(name = name, cmd = \"true\")\n",
        )],
    );
}

#[test]
fn def_in_build_file() {
    query_all("def_in_build", &[("app/BUILD", "def f():\n    pass\n")]);
}

#[test]
fn bad_glob() {
    query_all(
        "bad_glob",
        &[(
            "app/BUILD",
            "task(name = \"x\", cmd = \"true\", srcs = glob([\"../**/*.py\"]))\n",
        )],
    );
}

#[test]
fn macro_error_points_at_caller() {
    query_all(
        "macro_wrong_parameter",
        &[(
            "app/BUILD",
            "load(\"@flow//rules:python.star\", \"py_test\")\n\npy_test(\n    name = \"t\",\n    pyhton = [\"3.11\"],\n)\n",
        )],
    );
}

#[test]
fn macro_bad_attribute_value_points_at_caller() {
    query_all(
        "macro_bad_value",
        &[(
            "app/BUILD",
            "load(\"@flow//rules:python.star\", \"py_test\")\n\npy_test(\n    name = \"t\",\n    deps = [\"//nowhere:x\"],\n)\n",
        )],
    );
}

#[test]
fn task_at_top_level_of_star_file() {
    query_all(
        "native_outside_build",
        &[
            ("tools/defs.star", "task(name = \"x\", cmd = \"true\")\n"),
            ("app/BUILD", "load(\"//tools:defs.star\", \"task\")\n"),
        ],
    );
}

#[test]
fn unknown_config_value() {
    case(
        "unknown_config_value",
        &[
            ("flow.toml", "[vars]\npython_versions = [\"3.11\"]\n"),
            ("app/BUILD", "v = config(\"python_version\")\n"),
        ],
        &["query", "//..."],
    );
}

#[test]
fn bad_timeout_and_env() {
    query_all(
        "bad_timeout_and_env",
        &[("app/BUILD", "task(\n    name = \"x\",\n    cmd = \"true\",\n    timeout = \"5 parsecs\",\n    env = {\"1BAD\": \"v\"},\n)\n")],
    );
}

#[test]
fn bad_visibility_value() {
    query_all(
        "bad_visibility",
        &[(
            "app/BUILD",
            "task(name = \"x\", cmd = \"true\", visibility = [\"src/billing\"])\n",
        )],
    );
}

#[test]
fn random_bytes_build_file() {
    let ws = Ws::new();
    ws.write("app/BUILD", &[0xff, 0xfe, 0x00, 0x41, 0x80]);
    golden("random_bytes", ws.run(&["query", "//..."]).bad_input());
}

#[test]
fn many_errors_are_sorted_and_reported_together() {
    query_all(
        "many_errors",
        &[
            ("b/BUILD", "task(name = \"y\", cmd = \"true\", deps = [\"//a:nope\"])\ntask(name = \"z\", cmd = 3)\n"),
            ("a/BUILD", "task(name = \"x\", cmd = \"true\", srcz = [])\n"),
            ("c/BUILD", "task(name = \"w\" cmd = \"true\")\n"),
        ],
    );
}

#[test]
fn config_unknown_key() {
    case(
        "config_unknown_key",
        &[("flow.toml", "[build]\njbos = 4\n")],
        &["query", "//..."],
    );
}

#[test]
fn config_unknown_table() {
    case(
        "config_unknown_table",
        &[("flow.toml", "[biuld]\njobs = 4\n")],
        &["query", "//..."],
    );
}

#[test]
fn config_wrong_type() {
    case(
        "config_wrong_type",
        &[("flow.toml", "[build]\njobs = \"four\"\n")],
        &["query", "//..."],
    );
}

#[test]
fn config_bad_value() {
    case(
        "config_bad_value",
        &[("flow.toml", "[build]\njobs = 0\n")],
        &["query", "//..."],
    );
}

#[test]
fn config_bad_window() {
    case(
        "config_bad_window",
        &[(
            "flow.toml",
            "[environments.staging]\n\n[environments.production]\n\
             window = [\"Tue-Thu 10:00-16:00 America/New_York\", \"Sat 10:00-9:00 UTC\"]\n",
        )],
        &["query", "//..."],
    );
}

#[test]
fn config_window_of_the_wrong_type() {
    case(
        "config_window_of_the_wrong_type",
        &[("flow.toml", "[environments.production]\nwindow = 42\n")],
        &["query", "//..."],
    );
}

#[test]
fn config_relative_sandbox_dir() {
    case(
        "config_relative_sandbox_dir",
        &[("flow.toml", "[build]\nsandbox_dir = \"sandboxes\"\n")],
        &["build"],
    );
}

#[test]
fn config_syntax_error() {
    case(
        "config_syntax_error",
        &[("flow.toml", "[build\njobs = 4\n")],
        &["query", "//..."],
    );
}

#[test]
fn no_workspace() {
    let ws = Ws::bare();
    golden("no_workspace", ws.run(&["query", "//..."]).bad_input());
}

#[test]
fn bad_pattern() {
    case(
        "bad_pattern",
        &[("app/BUILD", "task(name = \"x\", cmd = \"true\")\n")],
        &["query", "//app/../x:y"],
    );
}

#[test]
fn pattern_matches_nothing() {
    case(
        "pattern_no_target",
        &[("app/BUILD", "task(name = \"lint\", cmd = \"true\")\n")],
        &["query", "//app:lnit"],
    );
}

#[test]
fn pattern_no_package() {
    case(
        "pattern_no_package",
        &[("app/BUILD", "task(name = \"lint\", cmd = \"true\")\n")],
        &["query", "//ap/..."],
    );
}

#[test]
fn pattern_only_manual_targets() {
    case(
        "pattern_only_manual",
        &[(
            "deploy/BUILD",
            "task(name = \"prod\", cmd = \"true\", tags = [\"manual\"])\n",
        )],
        &["query", "//deploy:all"],
    );
}

#[test]
fn query_syntax_error() {
    case(
        "query_syntax_error",
        &[("app/BUILD", "task(name = \"x\", cmd = \"true\")\n")],
        &["query", "deps(//app:x"],
    );
}

#[test]
fn query_unknown_function() {
    case(
        "query_unknown_function",
        &[("app/BUILD", "task(name = \"x\", cmd = \"true\")\n")],
        &["query", "dpes(//app:x)"],
    );
}

#[test]
fn location_of_a_label_that_is_not_a_dependency() {
    query_all(
        "location_not_a_dep",
        &[
            ("lib/BUILD", "task(name = \"gen\", cmd = \"echo > out.txt\", outs = [\"out.txt\"])\n"),
            ("app/BUILD", "task(\n    name = \"x\",\n    cmd = \"cat $(location //lib:gen) > r.txt\",\n    outs = [\"r.txt\"],\n)\n"),
        ],
    );
}

#[test]
fn unknown_expansion() {
    query_all(
        "unknown_expansion",
        &[(
            "app/BUILD",
            "task(name = \"x\", cmd = \"echo $(SRC) > $(OUTS)\", outs = [\"r.txt\"])\n",
        )],
    );
}

#[test]
fn macro_argument_of_the_wrong_type_points_at_the_caller() {
    query_all(
        "macro_wrong_type",
        &[("app/BUILD", "load(\"@flow//rules:python.star\", \"py_test\")\n\npy_test(\n    name = \"t\",\n    srcs = \"x.py\",\n)\n")],
    );
}

/// Regression (issue 14, adversarial run): a `flow-out` that is a file or a dangling link made
/// every action fail with `File exists` after a warning about the lock.
#[test]
fn flow_out_that_is_not_a_directory() {
    case(
        "flow_out_not_a_directory",
        &[
            (
                "p/BUILD",
                "task(name = \"x\", outs = [\"x.txt\"], cmd = \"echo > x.txt\")\n",
            ),
            ("flow-out", "not a directory\n"),
        ],
        &["build"],
    );
}

/// `flow query //...` in `ws` after `setup` planted something, compared with golden `name`.
fn query_after(name: &str, files: &[(&str, &str)], setup: impl FnOnce(&std::path::Path)) {
    let mut ws = Ws::new();
    for (path, contents) in files {
        ws = ws.file(path, contents);
    }
    setup(ws.path());
    let run = ws.run(&["query", "//..."]);
    golden(name, run.bad_input());
}

fn mkfifo(path: &std::path::Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::S_IRWXU).unwrap();
}

/// Regression (issue 15, item 8): a BUILD file linked to a FIFO made flow wait forever, one
/// linked to `/dev/zero` read it without end; both are refused, named, with what they are.
#[test]
fn build_files_that_are_not_regular_files() {
    query_after(
        "build_file_special",
        &[("ok/BUILD", "task(name = \"x\", cmd = \"true\")\n")],
        |root| {
            std::fs::create_dir_all(root.join("fifo")).unwrap();
            mkfifo(&root.join("fifo/pipe"));
            std::os::unix::fs::symlink("pipe", root.join("fifo/BUILD")).unwrap();
            std::fs::create_dir_all(root.join("zero")).unwrap();
            std::os::unix::fs::symlink("/dev/zero", root.join("zero/BUILD")).unwrap();
        },
    );
}

/// Regression (issue 15, item 8): a `.star` file that is a FIFO blocked the `load()` forever.
#[test]
fn a_loaded_file_that_is_a_fifo() {
    query_after(
        "star_file_fifo",
        &[("app/BUILD", "load(\":defs.star\", \"v\")\n")],
        |root| mkfifo(&root.join("app/defs.star")),
    );
}

/// Regression (issue 15, item 8): a BUILD file is read up to a limit (16 MiB), not into memory
/// whatever its size.
#[test]
fn a_build_file_over_the_size_limit() {
    query_after("build_file_too_large", &[], |root| {
        std::fs::create_dir_all(root.join("big")).unwrap();
        let line = "# a comment, repeated until the file passes 16 MiB\n";
        let text = line.repeat((16 << 20) / line.len() + 1);
        std::fs::write(root.join("big/BUILD"), text).unwrap();
    });
}

/// A `.gitignore` the workspace walk would read (a FIFO here) is refused before it is opened:
/// the walk read it whole and waited forever.
#[test]
fn an_ignore_file_that_is_a_fifo() {
    query_after(
        "ignore_file_fifo",
        &[("app/BUILD", "task(name = \"x\", cmd = \"true\")\n")],
        |root| mkfifo(&root.join("app/.gitignore")),
    );
}

/// Regression (issue 15, item 15): a command over the kernel's 128 KiB for one argument failed
/// with "Argument list too long (os error 7)" and no way round it; the failure now names the
/// sizes and `$(SRCS_FILE)`.
#[test]
fn a_command_too_long_to_run() {
    let ws = Ws::new().file(
        "p/BUILD",
        "task(name = \"long\", outs = [\"o.txt\"], cmd = \"echo \" + \"x\" * 140000 + \" > o.txt\")\n",
    );
    let run = ws.run(&["build"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let failed: String = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("[FAILED]"))
        .map(|l| format!("{l}\n"))
        .collect();
    golden("command_too_long", &failed);
}

/// `$(SRCS_FILE)` lists one source a line: a source with a newline in its name is refused at
/// analysis, with the name and the way out.
#[test]
fn srcs_file_with_a_newline_in_a_source_name() {
    query_after(
        "srcs_file_newline",
        &[(
            "app/BUILD",
            "task(name = \"x\", srcs = glob([\"*.txt\"]), cmd = \"cat $(SRCS_FILE)\")\n",
        )],
        |root| std::fs::write(root.join("app/two\nlines.txt"), "").unwrap(),
    );
}

/// A cache directory that is not a directory (a FIFO here) is named with what it is; it said
/// only "File exists". (A link to a directory is the user's choice of cache, and followed.)
#[test]
fn a_cache_directory_that_is_a_fifo() {
    let ws = Ws::new().file(
        "p/BUILD",
        "task(name = \"x\", outs = [\"x.txt\"], cmd = \"echo > x.txt\")\n",
    );
    mkfifo(&ws.path().join(".flow"));
    golden("cache_dir_fifo", ws.run(&["build"]).bad_input());
}

/// Regression (issue 15, items 8 and 13): a source that is a link to a FIFO or a device blocked
/// or read without end. Such a link is not a file to the listing (items 13), so naming it is an
/// analysis error, before anything could open it.
#[test]
fn sources_that_are_not_regular_files() {
    let ws = Ws::new().file(
        "p/BUILD",
        "task(name = \"fifo\", srcs = [\"to-pipe\"], outs = [\"a.txt\"], cmd = \"cat to-pipe > a.txt\")\n\
         task(name = \"zero\", srcs = [\"zero\"], outs = [\"b.txt\"], cmd = \"head -c 4 zero > b.txt\")\n",
    );
    mkfifo(&ws.path().join("p/pipe"));
    std::os::unix::fs::symlink("pipe", ws.path().join("p/to-pipe")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", ws.path().join("p/zero")).unwrap();
    // Links to anything but a file are not files (glob() skips them): naming one is an
    // analysis error, before anything could open it.
    let run = ws.run(&["build", "-k"]);
    golden("source_not_regular", run.bad_input());
}

// Delivery (issue 16). Refusals that need a clock or a branch (outside the window, another
// branch, an emergency without approval) are golden in tests/delivery.rs.

const STAGING_AND_PRODUCTION: &str = "[environments.staging]\n\n[environments.production]\n";

#[test]
fn deploy_to_an_unknown_environment() {
    case(
        "deploy_unknown_environment",
        &[
            ("flow.toml", STAGING_AND_PRODUCTION),
            (
                "app/BUILD",
                "task(name = \"bundle\", outs = [\"app.txt\"], cmd = \"echo > app.txt\")\n\
                 deploy(\n    name = \"d\",\n    environment = \"prodution\",\n    artifact = \":bundle\",\n    cmd = \"true\",\n)\n",
            ),
        ],
        &["build", "//app:d"],
    );
}

#[test]
fn deploy_of_an_artifact_without_outputs() {
    case(
        "deploy_artifact_without_outputs",
        &[
            ("flow.toml", STAGING_AND_PRODUCTION),
            (
                "app/BUILD",
                "task(name = \"nothing\", cmd = \"true\")\n\
                 deploy(\n    name = \"d\",\n    environment = \"staging\",\n    artifact = \":nothing\",\n    cmd = \"true\",\n)\n",
            ),
        ],
        &["build", "//app:d"],
    );
}

#[test]
fn notify_on_an_unknown_event() {
    case(
        "notify_unknown_event",
        &[(
            "app/BUILD",
            "notify(\n    name = \"n\",\n    on = [\"deploy\", \"failur\"],\n    cmd = \"true\",\n)\n",
        )],
        &["build", "//app:n"],
    );
}

/// A service whose probe never passes fails its dependent (exit 1) with the probe's last
/// answer and where its log is. The number of attempts depends on the machine's speed.
#[test]
fn a_service_that_never_gets_ready() {
    let ws = Ws::new().file(
        "app/BUILD",
        "service(\n    name = \"db\",\n    start = \"sleep 30\",\n    ready = \"test -e ready.flag\",\n    timeout = \"1s\",\n)\n\
         task(name = \"t\", deps = [\":db\"], outs = [\"o\"], cmd = \"touch o\")\n",
    );
    let run = ws.run(&["build", "//app:t"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("[FAILED] //app:t"))
        .unwrap_or_else(|| panic!("{}", run.stdout));
    let (head, tail) = line.split_once(" (").unwrap();
    let attempts = tail.find(" attempts)").expect("attempts");
    let start = tail[..attempts].rfind('(').unwrap() + 1;
    // (Run's `$TMP` replacement also hits `.flow/tmp` when the temp dir is `/tmp`.)
    let normalized = format!("{head} ({}N{}\n", &tail[..start], &tail[attempts..])
        .replace("$WS/.flow$TMP/", "$WS/.flow/tmp/");
    golden("service_never_ready", &normalized);
}

#[test]
fn hooks_outside_a_git_repository() {
    case("hooks_install_no_git", &[], &["hooks", "install"]);
    case("hooks_run_no_git", &[], &["hooks", "run", "pre-commit"]);
}

/// A repository whose hooks directory (`core.hooksPath`) cannot be created.
#[test]
fn hooks_directory_not_writable() {
    let ws = Ws::new().file("not-a-dir", "");
    crate::support::git(ws.path(), &["init", "-q", "-b", "main"]);
    crate::support::git(ws.path(), &["config", "core.hooksPath", "not-a-dir/hooks"]);
    golden(
        "hooks_dir_not_writable",
        ws.run(&["hooks", "install"]).bad_input(),
    );
}

/// A user's hook where flow already kept one aside: neither is overwritten.
#[test]
fn hooks_install_over_two_user_hooks() {
    let ws = Ws::new()
        .file(".git-hooks/pre-commit", "#!/bin/sh\nexit 0\n")
        .file(".git-hooks/pre-commit.flow-saved", "#!/bin/sh\nexit 0\n");
    crate::support::git(ws.path(), &["init", "-q", "-b", "main"]);
    crate::support::git(ws.path(), &["config", "core.hooksPath", ".git-hooks"]);
    golden(
        "hooks_install_saved_exists",
        ws.run(&["hooks", "install"]).bad_input(),
    );
}

/// One misspelt file in a list eight targets share is one error, at the string, with the
/// targets' uses as related spans and a "did you mean" (issue 18: eight errors, each at a
/// `srcs = SRCS` use, none at the string).
#[test]
fn shared_list_bad_element() {
    let mut build = String::from("# \"mian.py\" in a comment is not the element.\nSRCS = [\n    \"util.py\",\n    \"mian.py\",\n]\n\n");
    for i in 0..8 {
        build.push_str(&format!(
            "task(name = \"check_{i}\", srcs = SRCS, cmd = \"true\")\n"
        ));
    }
    query_all(
        "shared_list_bad_element",
        &[
            ("app/BUILD", &build),
            ("app/main.py", ""),
            ("app/util.py", ""),
        ],
    );
}

/// A list built in a way the element cannot be found in (here, by concatenation) still gives
/// one error, at the first use, with the other uses related.
#[test]
fn shared_list_bad_element_not_found_as_a_string() {
    let build = "SRCS = [\"ma\" + \"n.py\"]\ntask(name = \"a\", srcs = SRCS, cmd = \"true\")\ntask(name = \"b\", srcs = SRCS, cmd = \"true\")\n";
    query_all(
        "shared_list_bad_element_computed",
        &[("app/BUILD", build), ("app/main.py", "")],
    );
}

/// The element is looked for in the assignments of the names the uses read, not anywhere in
/// the file: a decoy string in another variable is not the element, and two lists holding the
/// same bad string are two errors, each at its own list (adversarial run).
#[test]
fn shared_list_bad_element_in_two_lists() {
    let build = "UNUSED = {\"old\": \"utli.py\"}\nSRCS = [\"main.py\"] + [\"utli.py\"]\nL2 = [\"utli.py\", \"main.py\"]\n\
                 task(name = \"a\", srcs = SRCS, cmd = \"true\")\ntask(name = \"b\", srcs = SRCS, cmd = \"true\")\n\
                 task(name = \"c\", srcs = L2, cmd = \"true\")\ntask(name = \"d\", srcs = L2, cmd = \"true\")\n";
    query_all(
        "shared_list_bad_element_in_two_lists",
        &[("app/BUILD", build), ("app/main.py", "")],
    );
}

/// "Did you mean" never suggests the target itself (`:alpah` in `alpha` suggested `//:alpha`),
/// and a name that differs only by case is suggested however short (adversarial run).
#[test]
fn unknown_dep_suggests_neither_itself_and_minds_case() {
    query_all(
        "unknown_dep_not_itself",
        &[(
            "app/BUILD",
            "task(name = \"alpha\", cmd = \"true\", deps = [\":alpah\"])\ntask(name = \"a\", cmd = \"true\")\ntask(name = \"b\", cmd = \"true\", deps = [\":A\"])\n",
        )],
    );
}

/// `flow run` of a pattern or of a group says what it takes (adversarial run: `flow run ...`
/// said there is no package `//...`; a group "has 0 executable file output(s)").
#[test]
fn run_a_pattern_or_a_group() {
    let files = [(
        "app/BUILD",
        "task(name = \"a\", cmd = \"true\")\ngroup(name = \"g\", deps = [\":a\"])\n",
    )];
    case("run_a_pattern", &files, &["run", "//app:all"]);
    case("run_a_group", &files, &["run", "//app:g"]);
}
