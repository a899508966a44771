//! `flow build --shard K/N` through the binary: the shards of any N partition the selected
//! targets, the union of their builds is the unsharded build, and an empty shard says so.

use proptest::prelude::*;

use crate::support::Ws;

/// A workspace of `packages` packages, each with `per` leaf tasks writing one output, and,
/// with `checks`, a task depending on the first one (so a shard builds closures too).
fn workspace(packages: usize, per: usize, checks: bool) -> Ws {
    let mut ws = Ws::new();
    for p in 0..packages {
        let mut build = String::new();
        for t in 0..per {
            build.push_str(&format!(
                "task(name = \"t{t}\", outs = [\"o{t}.txt\"], cmd = \"echo {p}-{t} > o{t}.txt\")\n"
            ));
        }
        if checks {
            build.push_str(
                "task(name = \"check\", deps = [\":t0\"], cmd = \"grep -q . $(location :t0)\")\n",
            );
        }
        ws = ws.file(&format!("p{p}/BUILD"), &build);
    }
    ws
}

/// The labels a build reported `[RAN]` or `[CACHED]`.
fn built(out: &str) -> std::collections::BTreeSet<String> {
    out.lines()
        .filter_map(|l| {
            l.strip_prefix("[RAN] ")
                .or_else(|| l.strip_prefix("[CACHED] "))
                .map(|rest| rest.split(' ').next().unwrap_or("").to_owned())
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, ..ProptestConfig::default() })]

    /// For random workspaces and N, the N shards (each in a checkout of its own, with an empty
    /// cache, as CI runners) build disjoint sets of targets whose union is the unsharded
    /// build; an empty shard says so and succeeds.
    #[test]
    fn shards_partition_the_selected_targets(
        packages in 1usize..6,
        per in 1usize..4,
        n in 1u64..6,
    ) {
        let whole = workspace(packages, per, false);
        let all = built(whole.run(&["build", "//..."]).ok());
        let mut union = std::collections::BTreeSet::new();
        for k in 1..=n {
            let runner = workspace(packages, per, false);
            let run = runner.run(&["build", "//...", "--shard", &format!("{k}/{n}")]);
            let out = run.ok().to_owned();
            let got = built(&out);
            if got.is_empty() {
                prop_assert!(out.contains(&format!("shard {k}/{n} owns none of the")), "{}", out);
            }
            prop_assert!(union.is_disjoint(&got), "{:?} and {:?}", union, got);
            union.extend(got);
        }
        prop_assert_eq!(&union, &all);
    }
}

/// A shard builds the targets it owns with their dependencies: the shards' builds together
/// cover the unsharded one, and a `check` always comes with the `t0` it reads.
#[test]
fn a_shard_builds_what_its_targets_depend_on() {
    let all = built(workspace(6, 2, true).run(&["build", "//..."]).ok());
    let mut union = std::collections::BTreeSet::new();
    for k in 1..=3 {
        let got = built(
            workspace(6, 2, true)
                .run(&["build", "//...", "--shard", &format!("{k}/3")])
                .ok(),
        );
        for check in got.iter().filter(|l| l.ends_with(":check")) {
            assert!(got.contains(&check.replace(":check", ":t0")), "{got:?}");
        }
        union.extend(got);
    }
    assert_eq!(union, all);
}

/// A malformed shard is a usage error (exit 2) that says what a shard is.
#[test]
fn a_malformed_shard_is_refused() {
    let ws = workspace(1, 1, false);
    for bad in ["0/3", "4/3", "x", "1/0"] {
        let run = ws.run(&["build", "--shard", bad]);
        assert_eq!(run.code, 2, "{bad}");
        assert!(
            run.stderr.contains("write K/N with 1 ≤ K ≤ N"),
            "{}",
            run.stderr
        );
    }
}

/// `--shard-timings`: balanced by an earlier build's run times. Tasks of 1.2, 0.6, 0.4 and
/// 0.2 s over two shards: longest first to the least loaded gives {1.2} and {0.6, 0.4, 0.2}
/// (every choice by a margin of 0.2 s at least), whatever their labels hash to; the shards
/// partition the selection, and the same file gives the same partition on a second machine.
#[test]
fn shards_balance_by_recorded_run_times() {
    let times = [("a", "1.2"), ("b", "0.6"), ("c", "0.4"), ("d", "0.2")];
    let mut build = String::new();
    for (name, secs) in times {
        build.push_str(&format!(
            "task(name = \"{name}\", cmd = \"sleep {secs}; echo {name}\")\n"
        ));
    }
    let ws = Ws::new().file("p/BUILD", &build);
    let events = ws.path().join("timings.jsonl");
    let first = ws.run(&["build", "-j", "1", "--events", events.to_str().unwrap()]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let shard = |ws: &Ws, k: u32| {
        let run = ws.run(&[
            "build",
            "--shard",
            &format!("{k}/2"),
            "--shard-timings",
            events.to_str().unwrap(),
        ]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        built(&run.stdout)
    };
    let (one, two) = (shard(&ws, 1), shard(&ws, 2));
    let set = |names: &[&str]| names.iter().map(|n| format!("//p:{n}")).collect();
    assert_eq!(one, set(&["a"]), "{one:?} / {two:?}");
    assert_eq!(two, set(&["b", "c", "d"]));
    let elsewhere = Ws::new().file("p/BUILD", &build);
    assert_eq!(shard(&elsewhere, 1), one);
    // A file without run times is refused, saying what to give.
    std::fs::write(&events, "not events\n").unwrap();
    let bad = ws.run(&[
        "build",
        "--shard",
        "1/2",
        "--shard-timings",
        events.to_str().unwrap(),
    ]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr
            .contains("holds no run times: give the `--events` file of an earlier build"),
        "{}",
        bad.stderr
    );
    // A FIFO or a device is refused at once, never read without end (adversarial run).
    nix::unistd::mkfifo(&ws.path().join("ff"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let fifo = ws.run(&["build", "--shard", "1/2", "--shard-timings", "ff"]);
    assert_eq!(fifo.code, 2);
    crate::support::golden("shard_timings_not_a_file", &fifo.stderr);
    let zero = ws.run(&["build", "--shard", "1/2", "--shard-timings", "/dev/zero"]);
    assert_eq!(zero.code, 2, "{}", zero.stderr);
}
