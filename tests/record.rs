//! The build record (`engine/record.rs`): a no-op answered by `stat` alone, a build that keys
//! only what a change reaches, and every way the record must step aside (settings, BUILD files,
//! tools on the action `PATH`, failures, `flow cache gc`, `flow clean --cache`).
//!
//! A record trusts a file state only if the file's mtime is older than the state by the racy
//! window (2 s) and its ctime by the ctime window (50 ms), as the hasher does; files a test has
//! just written are not. So each test first *ages* the workspace (every mtime set a minute back,
//! then a pause for the ctimes), then builds once to record trusted states. Which path a build took is read from its `FLOW_PROFILE=1` phases on stderr.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::support::{settle, summary_counts, tags, Run, Ws};

/// How a build went, from its profile phases.
#[derive(Debug, PartialEq, Eq)]
enum Way {
    /// Analysis, plan, keys for every action.
    Analysis,
    /// Plan from the record, some actions keyed, the rest carried over.
    Carried,
    /// The record alone.
    NoOp,
}

fn build(ws: &Ws, args: &[&str]) -> (Run, Way) {
    let out = std::process::Command::new(crate::support::flow_bin())
        .args(["--color", "never", "-C"])
        .arg(ws.path())
        .arg("build")
        .args(args)
        .env_remove("FLOW_CACHE_DIR")
        .env_remove("CI")
        .env("FLOW_PROFILE", "1")
        .output()
        .expect("run flow");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    let path = if run.stderr.contains("profile: analysis") {
        Way::Analysis
    } else if run.stderr.contains("profile: plan from the build record") {
        Way::Carried
    } else {
        assert!(
            run.stderr.contains("profile: build record"),
            "no profile phases on stderr:\n{}",
            run.stderr
        );
        Way::NoOp
    };
    (run, path)
}

/// Sets the mtime of every file and directory under `root` (but `flow-out/` and `.flow/`) a
/// minute back, each to a distinct value, and waits until the ctimes that set are settled.
pub fn age(root: &Path) {
    let base = SystemTime::now() - Duration::from_secs(60);
    let mut n = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = e.path();
            let name = e.file_name();
            if name == "flow-out" || name == ".flow" {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(path.clone());
            }
            n += 1;
            std::fs::File::open(&path)
                .unwrap()
                .set_modified(base + Duration::from_micros(n))
                .unwrap();
        }
    }
    settle();
}

fn records(ws: &Ws) -> usize {
    std::fs::read_dir(ws.path().join(".flow/analysis"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "rec"))
                .count()
        })
        .unwrap_or(0)
}

/// (size, mtime, inode) of every file under `dir` but `skip`.
fn stamps(dir: &Path, skip: &str) -> BTreeMap<String, (u64, i64, u64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.file_name().is_some_and(|n| n == skip) {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.display().to_string(),
                    (m.len(), m.mtime() * 1_000_000_000 + m.mtime_nsec(), m.ino()),
                );
            }
        }
    }
    out
}

/// `a` ← `b` ← `c` in one package, `d` beside them, and a group over all.
fn chain() -> Ws {
    Ws::new()
        .file("p/a.txt", "alpha\n")
        .file("p/d.txt", "delta\n")
        .file(
            "p/BUILD",
            r#"
task(name = "a", srcs = ["a.txt"], outs = ["a.out"], cmd = "cat a.txt > $(OUTS)")
task(name = "b", deps = [":a"], outs = ["b.out"], cmd = "cat $(location :a) | tr a-z A-Z > $(OUTS)")
task(name = "c", deps = [":b"], outs = ["c.out"], cmd = "wc -c < $(location :b) > $(OUTS)")
task(name = "d", srcs = ["d.txt"], outs = ["d.out"], cmd = "cat d.txt > $(OUTS)")
group(name = "all", deps = [":c", ":d"])
"#,
        )
}

/// Builds, ages, builds again: the record now holds trusted states.
fn recorded(ws: &Ws) {
    let (first, _) = build(ws, &[]);
    first.ok();
    age(ws.path());
    let (second, _) = build(ws, &[]);
    second.ok();
    assert_eq!(records(ws), 1, "{}", second.stderr);
}

#[test]
fn a_no_op_is_answered_by_the_record_and_touches_nothing() {
    let ws = chain();
    recorded(&ws);
    let out_before = stamps(&ws.path().join("flow-out"), "");
    let (full, _) = {
        // What the long way prints: the same build with the record set aside.
        let rec = std::fs::read_dir(ws.path().join(".flow/analysis"))
            .unwrap()
            .flatten()
            .find(|e| e.path().extension().is_some_and(|x| x == "rec"))
            .unwrap()
            .path();
        let saved = std::fs::read(&rec).unwrap();
        std::fs::remove_file(&rec).unwrap();
        let r = build(&ws, &[]);
        assert_eq!(r.1, Way::Analysis);
        std::fs::write(&rec, saved).unwrap();
        r
    };
    let cache_before_noop = stamps(&ws.path().join(".flow"), "analysis");
    let (noop, path) = build(&ws, &[]);
    assert_eq!(path, Way::NoOp, "{}", noop.stderr);
    assert_eq!(noop.code, 0);
    assert_eq!(tags(&noop.stdout), tags(&full.stdout));
    assert_eq!(
        summary_counts(&noop),
        "flow: ok: 0 ran, 4 cached, 0 failed, 0 skipped, 0 flaky"
    );
    assert_eq!(summary_counts(&noop), summary_counts(&full));
    // Neither the database nor the CAS nor any output was written (or even created).
    assert_eq!(
        stamps(&ws.path().join(".flow"), "analysis"),
        cache_before_noop
    );
    assert_eq!(stamps(&ws.path().join("flow-out"), ""), out_before);
}

#[test]
fn an_edit_keys_only_what_it_reaches_and_carries_the_rest() {
    let ws = chain();
    recorded(&ws);
    ws.write("p/a.txt", b"alphabet\n");
    let (run, path) = build(&ws, &[]);
    assert_eq!(path, Way::Carried, "{}", run.stderr);
    let t = tags(run.ok());
    assert_eq!(t["RAN"], ["//p:a", "//p:b", "//p:c"]);
    assert_eq!(t["CACHED"], ["//p:d"]);
    assert_eq!(
        std::fs::read_to_string(ws.path().join("flow-out/p/b.out")).unwrap(),
        "ALPHABET\n"
    );
    assert_eq!(
        std::fs::read_to_string(ws.path().join("flow-out/p/c.out"))
            .unwrap()
            .trim(),
        "9"
    );
    // A deleted output is restored through the record too; its dependents stay cached.
    age(ws.path());
    build(&ws, &[]).0.ok();
    std::fs::remove_file(ws.path().join("flow-out/p/a.out")).unwrap();
    let (run, path) = build(&ws, &[]);
    assert_eq!(path, Way::Carried, "{}", run.stderr);
    let t = tags(run.ok());
    assert!(!t.contains_key("RAN"), "{}", run.stdout);
    assert_eq!(
        std::fs::read_to_string(ws.path().join("flow-out/p/a.out")).unwrap(),
        "alphabet\n"
    );
    // Early cutoff still holds: `b` reruns on its changed input, makes the same output, and
    // `c` stays cached.
    age(ws.path());
    build(&ws, &[]).0.ok();
    ws.write("p/a.txt", b"ALPHABET\n");
    let (run, path) = build(&ws, &[]);
    assert_eq!(path, Way::Carried);
    let t = tags(run.ok());
    assert_eq!(t["RAN"], ["//p:a", "//p:b"]);
    assert_eq!(t["CACHED"], ["//p:c", "//p:d"]);
}

/// The record file of the workspace's only request.
fn record_file(ws: &Ws) -> std::path::PathBuf {
    std::fs::read_dir(ws.path().join(".flow/analysis"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "rec"))
        .expect("a record")
}

#[test]
fn a_build_from_the_record_patches_it_in_place_and_a_torn_patch_is_ignored() {
    let ws = chain();
    recorded(&ws);
    let rec = record_file(&ws);
    let ino = std::fs::metadata(&rec).unwrap().ino();
    ws.write("p/a.txt", b"alphabet\n");
    let (run, path) = build(&ws, &[]);
    assert_eq!(path, Way::Carried, "{}", run.stderr);
    assert_eq!(tags(run.ok())["RAN"], ["//p:a", "//p:b", "//p:c"]);
    // The edited file's state is too recent to trust; once it is old enough, the next build
    // records it trusted (re-hashing it, running nothing).
    let a = std::fs::File::options()
        .write(true)
        .open(ws.path().join("p/a.txt"))
        .unwrap();
    a.set_modified(SystemTime::now() - Duration::from_secs(60))
        .unwrap();
    settle();
    let (run, path) = build(&ws, &[]);
    assert_eq!(path, Way::Carried, "{}", run.stderr);
    assert!(!tags(run.ok()).contains_key("RAN"), "{}", run.stdout);
    // Both builds patched the file they read (same inode), and what they wrote answers a no-op.
    assert_eq!(std::fs::metadata(&rec).unwrap().ino(), ino);
    let (noop, path) = build(&ws, &[]);
    assert_eq!(path, Way::NoOp, "{}", noop.stderr);
    assert_eq!(
        summary_counts(&noop),
        "flow: ok: 0 ran, 4 cached, 0 failed, 0 skipped, 0 flaky"
    );
    assert_eq!(
        std::fs::read_to_string(ws.path().join("flow-out/p/b.out")).unwrap(),
        "ALPHABET\n"
    );

    // A build killed between writing values and their checksum leaves values that do not match
    // it (here: one byte of the first source's recorded size). The record is not trusted: the
    // next build goes the long way, sees the edit, and writes a sound record again.
    let mut bytes = std::fs::read(&rec).unwrap();
    let first_source = 8 + 32 + 8 + 8;
    bytes[first_source] ^= 0x40;
    std::fs::write(&rec, &bytes).unwrap();
    ws.write("p/d.txt", b"delta delta\n");
    let (run, path) = build(&ws, &[]);
    assert_eq!(path, Way::Analysis, "{}", run.stderr);
    let t = tags(run.ok());
    assert_eq!(t["RAN"], ["//p:d"]);
    assert_eq!(
        std::fs::read_to_string(ws.path().join("flow-out/p/d.out")).unwrap(),
        "delta delta\n"
    );
    age(ws.path());
    build(&ws, &[]).0.ok();
    let (noop, path) = build(&ws, &[]);
    assert_eq!(path, Way::NoOp, "{}", noop.stderr);
}

#[test]
fn other_patterns_have_their_own_record() {
    let ws = chain();
    recorded(&ws);
    let (run, path) = build(&ws, &["//p:d"]);
    assert_eq!(path, Way::Analysis);
    assert_eq!(
        summary_counts(&run),
        "flow: ok: 0 ran, 1 cached, 0 failed, 0 skipped, 0 flaky"
    );
    let (run, path) = build(&ws, &["//p:d"]);
    assert_eq!(path, Way::NoOp, "{}", run.stderr);
    assert_eq!(records(&ws), 2);
    let (run, path) = build(&ws, &[]);
    assert_eq!(path, Way::NoOp);
    assert_eq!(
        summary_counts(&run),
        "flow: ok: 0 ran, 4 cached, 0 failed, 0 skipped, 0 flaky"
    );
}

#[test]
fn settings_and_build_files_bypass_the_record() {
    let ws = chain()
        .file("flow.toml", "[vars]\ngreeting = \"hello\"\n")
        .file(
            "q/BUILD",
            r#"task(name = "v", outs = ["v.out"], cmd = "echo " + config("greeting") + " > $(OUTS)")"#,
        );
    recorded(&ws);
    ws.write("flow.toml", b"[vars]\ngreeting = \"howdy\"\n");
    let (run, path) = build(&ws, &[]);
    assert_eq!(path, Way::Analysis, "{}", run.stderr);
    assert_eq!(tags(run.ok())["RAN"], ["//q:v"]);
    assert_eq!(
        std::fs::read_to_string(ws.path().join("flow-out/q/v.out")).unwrap(),
        "howdy\n"
    );
    age(ws.path());
    build(&ws, &[]).0.ok();
    ws.write(
        "q/BUILD",
        br#"task(name = "v", outs = ["v.out"], cmd = "echo bye > $(OUTS)")"#,
    );
    let (run, path) = build(&ws, &[]);
    assert_eq!(path, Way::Analysis);
    assert_eq!(tags(run.ok())["RAN"], ["//q:v"]);
}

#[test]
fn a_tool_installed_earlier_on_the_action_path_rekeys_its_actions() {
    // The tool directories are outside the workspace: analysis does not see them, only the
    // record's tool stamps do.
    let bins = tempfile::tempdir().unwrap();
    let first = bins.path().join("first");
    let second = bins.path().join("second");
    std::fs::create_dir_all(&first).unwrap();
    std::fs::create_dir_all(&second).unwrap();
    let tool = |dir: &Path, word: &str| {
        let p = dir.join("greet");
        std::fs::write(&p, format!("#!/bin/sh\necho {word}\n")).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    };
    tool(&second, "second");
    age(bins.path());
    let ws = Ws::new()
        .file(
            "flow.toml",
            &format!(
                "[build]\naction_path = [\"{}\", \"{}\", \"/usr/bin\", \"/bin\"]\n",
                first.display(),
                second.display()
            ),
        )
        .file(
            "p/BUILD",
            r#"task(name = "g", outs = ["g.out"], tools = ["greet"], cmd = "greet > $(OUTS)")"#,
        );
    recorded(&ws);
    assert_eq!(build(&ws, &[]).1, Way::NoOp);
    tool(&first, "first");
    let (run, path) = build(&ws, &[]);
    assert_eq!(path, Way::Analysis, "{}", run.stderr);
    assert_eq!(tags(run.ok())["RAN"], ["//p:g"]);
    assert_eq!(
        std::fs::read_to_string(ws.path().join("flow-out/p/g.out")).unwrap(),
        "first\n"
    );
}

#[test]
fn failures_gc_and_clean_leave_no_record() {
    let ws = chain();
    recorded(&ws);
    // A failing build removes the record.
    ws.write("p/a.txt", b"");
    let failing = r#"
task(name = "a", srcs = ["a.txt"], outs = ["a.out"], cmd = "test -s a.txt && cat a.txt > $(OUTS)")
task(name = "d", srcs = ["d.txt"], outs = ["d.out"], cmd = "cat d.txt > $(OUTS)")
"#;
    ws.write("p/BUILD", failing.as_bytes());
    let (run, _) = build(&ws, &["-k"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(records(&ws), 0);
    ws.write("p/a.txt", b"again\n");
    build(&ws, &[]).0.ok();
    assert_eq!(records(&ws), 1);
    // `flow cache gc` may remove results the record carries: it forgets the record.
    let gc = ws.run(&["cache", "gc", "--max-size", "1GiB"]);
    gc.ok();
    assert_eq!(records(&ws), 0);
    build(&ws, &[]).0.ok();
    assert_eq!(records(&ws), 1);
    ws.run(&["clean", "--cache"]).ok();
    assert_eq!(records(&ws), 0);
    let (run, path) = build(&ws, &[]);
    assert_eq!(path, Way::Analysis);
    assert_eq!(
        summary_counts(&run),
        "flow: ok: 2 ran, 0 cached, 0 failed, 0 skipped, 0 flaky"
    );
}

/// Regression (issue 15, item 2): the record stamped a source by its size, mtime and inode only,
/// so after a `chmod +x` (the x bit is in the action key) every build was a `[CACHED]` no-op,
/// while `flow explain` said the target would run. A `chmod` changes the ctime, which every
/// stamp now holds.
#[test]
fn a_chmod_of_a_source_is_seen_by_the_record() {
    let ws = Ws::new().file("p/run.sh", "echo hi\n").file(
        "p/BUILD",
        r#"task(name = "t", srcs = ["run.sh"], outs = ["o.txt"], cmd = "if test -x run.sh; then echo x; else echo -; fi > $(OUTS)")"#,
    );
    recorded(&ws);
    assert_eq!(build(&ws, &[]).1, Way::NoOp);
    let out = || std::fs::read_to_string(ws.path().join("flow-out/p/o.txt")).unwrap();
    assert_eq!(out(), "-\n");
    for (mode, want) in [(0o755, "x\n"), (0o644, "-\n")] {
        let script = ws.path().join("p/run.sh");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(mode)).unwrap();
        let explained = ws.run(&["explain", "//..."]);
        assert!(
            !explained.ok().contains("[CARRIED]"),
            "{}",
            explained.stdout
        );
        let (run, path) = build(&ws, &[]);
        assert_eq!(path, Way::Carried, "{}", run.stderr);
        run.ok();
        assert_eq!(out(), want, "mode {mode:o}");
    }
}

/// Overwrites the file at `path` in place (same inode) with `bytes`, of its size, and sets its
/// mtime back, as `cp -p` over it would: only the ctime tells.
fn overwrite_keeping_size_and_mtime(path: &Path, bytes: &[u8]) {
    let before = std::fs::metadata(path).unwrap();
    assert_eq!(before.len(), bytes.len() as u64);
    std::fs::write(path, bytes).unwrap();
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(before.modified().unwrap()).unwrap();
    let after = std::fs::metadata(path).unwrap();
    assert_eq!(
        (after.len(), after.modified().unwrap(), after.ino()),
        (before.len(), before.modified().unwrap(), before.ino())
    );
}

/// Regression (issue 15, item 5): an in-place overwrite that keeps the size and the mtime
/// (`cp -p`) went undetected, by the build record and by the file-state table alike: the old
/// digest was trusted and the action reported `[CACHED]` with the old output. The ctime changes,
/// and every stamp now holds it.
#[test]
fn an_in_place_overwrite_that_keeps_size_and_mtime_is_seen_with_or_without_the_record() {
    let ws = chain();
    recorded(&ws);
    // Through the record.
    overwrite_keeping_size_and_mtime(&ws.path().join("p/a.txt"), b"omega\n");
    let (run, path) = build(&ws, &[]);
    assert_eq!(path, Way::Carried, "{}", run.stderr);
    assert_eq!(tags(run.ok())["RAN"], ["//p:a", "//p:b", "//p:c"]);
    let read = |rel: &str| std::fs::read_to_string(ws.path().join(rel)).unwrap();
    assert_eq!(read("flow-out/p/b.out"), "OMEGA\n");
    // Through the file-state table alone: the states are trusted, the record is gone.
    age(ws.path());
    build(&ws, &[]).0.ok();
    overwrite_keeping_size_and_mtime(&ws.path().join("p/d.txt"), b"gamma\n");
    std::fs::remove_file(record_file(&ws)).unwrap();
    let (run, path) = build(&ws, &[]);
    assert_eq!(path, Way::Analysis, "{}", run.stderr);
    assert_eq!(tags(run.ok())["RAN"], ["//p:d"]);
    assert_eq!(read("flow-out/p/d.out"), "gamma\n");
}

/// The sources of [`chain`] in one of two states, each of which changes every output.
fn chain_state(ws: &Ws, second: bool) {
    let (a, d) = if second {
        ("alphabet soup\n", "delta force\n")
    } else {
        ("alpha\n", "delta\n")
    };
    ws.write("p/a.txt", a.as_bytes());
    ws.write("p/d.txt", d.as_bytes());
}

/// Regression (issue 15, item 6): the record's digest covered its fixed-width values but not
/// the head, results and plan after them, so one flipped byte in a stored command was accepted
/// (35 of 60 random flips in that region) and the next build from the record ran the corrupted
/// command. Now every byte is covered. Generator: flips one byte at a time across the whole
/// file, every region (magic, digest, length, values, head, results, plan, and every byte of
/// one stored command), at seeded random positions, each followed by an edit of every source,
/// so that a record that were accepted would key (and run) every action from its plan. Each
/// flip must set the record aside, and the build must equal a clean one: every action
/// restored from the cache (both source states were built before), `flow-out/` equal to a clean
/// build's. `FLOW_RECORD_FLIPS` sets the number of random positions (default 60).
#[test]
fn a_flipped_byte_anywhere_in_the_record_sets_it_aside() {
    use crate::corruption::snapshot;
    use crate::support::{env_number, Rng};

    let ws = chain();
    // Both states built (so every key of either is cached), and their clean `flow-out/`.
    let mut clean = Vec::new();
    for second in [true, false] {
        chain_state(&ws, second);
        let (run, _) = build(&ws, &[]);
        run.ok();
        clean.push(snapshot(&ws.path().join("flow-out")));
    }
    clean.reverse(); // clean[0]: first state, clean[1]: second.
    age(ws.path());
    build(&ws, &[]).0.ok();
    let all_cached = "flow: ok: 0 ran, 4 cached, 0 failed, 0 skipped, 0 flaky";

    // Control: without a flip, the edit is answered from the record.
    let mut second = true;
    chain_state(&ws, second);
    let (run, way) = build(&ws, &[]);
    assert_eq!(way, Way::Carried, "{}", run.stderr);
    assert_eq!(summary_counts(&run), all_cached, "{}", run.stdout);

    // Where to flip: regions by the layout (magic 8, digest 32, length 8, values), then the
    // postcard part, then every byte of one stored command.
    let rec = record_file(&ws);
    let bytes = std::fs::read(&rec).unwrap();
    let values = u64::from_le_bytes(bytes[40..48].try_into().unwrap()) as usize;
    let rest = 48 + values;
    assert!(rest < bytes.len(), "a record has a head and a plan");
    let command = b"cat d.txt > ";
    let at = bytes
        .windows(command.len())
        .position(|w| w == command)
        .expect("the plan holds the command");
    let mut rng = Rng(0x5eed_f11b_0000_0006);
    let mut positions: Vec<usize> = vec![0, 7, 8, 39, 40, 47, 48, rest - 1, rest, bytes.len() - 1];
    positions.extend(at..at + command.len());
    let random = env_number("FLOW_RECORD_FLIPS", 60) as usize;
    for k in 0..random {
        // Alternately in the values and anywhere after them.
        positions.push(if k % 3 == 0 {
            48 + rng.below(values)
        } else {
            rest + rng.below(bytes.len() - rest)
        });
    }

    for p in positions {
        let rec = record_file(&ws);
        let mut bytes = std::fs::read(&rec).unwrap();
        let p = p.min(bytes.len() - 1);
        bytes[p] ^= 1 << rng.below(8);
        std::fs::write(&rec, &bytes).unwrap();
        second = !second;
        chain_state(&ws, second);
        let (run, way) = build(&ws, &[]);
        let what = format!("a flip at byte {p} of {}", bytes.len());
        assert_eq!(
            summary_counts(&run),
            all_cached,
            "{what} changed the build:\n{}",
            run.stdout
        );
        assert_eq!(
            snapshot(&ws.path().join("flow-out")),
            clean[usize::from(second)],
            "{what} changed `flow-out/`"
        );
        assert_eq!(way, Way::Analysis, "{what} was accepted:\n{}", run.stderr);
    }
}
