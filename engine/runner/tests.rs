//! The runner and scheduler with the fake executor: ordering, `-j`, failures, `-k`, critical
//! path, caching. No process is spawned; time is tokio's paused clock.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use flow_cache::Cache;
use flow_rules::{evaluate_workspace, EvalOptions, VisibilityRule};

use crate::executor::{FakeAction, FakeEvent, FakeExecutor};
use crate::graph::TargetGraph;
use crate::hasher::FileHasher;
use crate::plan::Plan;
use crate::rebuilder::Rebuilder;
use crate::reporter::{Reporter, Summary};
use crate::runner::{BuildOptions, Resolved, Runner};

struct Fixture {
    _dir: tempfile::TempDir,
    plan: Arc<Plan>,
    cache: Arc<Cache>,
    root: std::path::PathBuf,
}

/// A workspace with one package `p` whose BUILD file is `build`.
fn fixture(build: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    std::fs::write(root.join("flow.toml"), "").unwrap();
    std::fs::create_dir_all(root.join("p")).unwrap();
    std::fs::write(root.join("p/BUILD"), build).unwrap();
    let eval = evaluate_workspace(&EvalOptions {
        root: root.clone(),
        ..Default::default()
    })
    .unwrap();
    let (graph, errors) = TargetGraph::build(eval, &[VisibilityRule::Public]);
    assert!(errors.is_empty(), "{errors:?}");
    let all: BTreeSet<usize> = (0..graph.targets().len()).collect();
    let plan = Arc::new(Plan::new(&graph, &all, &["/usr/bin".to_owned()]));
    let cache = Arc::new(Cache::open(&root.join(".flow")).unwrap());
    Fixture {
        _dir: dir,
        plan,
        cache,
        root,
    }
}

async fn build(
    f: &Fixture,
    exec: &FakeExecutor,
    jobs: usize,
    keep_going: bool,
    durations: &[(&str, u64)],
) -> Summary {
    let rebuilder = Arc::new(Rebuilder {
        cache: f.cache.clone(),
        hasher: Arc::new(FileHasher::new(HashMap::new())),
        out_root: f.root.join("flow-out"),
        workspace_root: f.root.clone(),
        remote: None,
        pending: Default::default(),
        kept_in_cache: Default::default(),
        restored_ahead: Default::default(),
    });
    let runner = Runner {
        effects: None,
        groups: None,
        plan: f.plan.clone(),
        rebuilder,
        executor: Arc::new(exec.clone()),
        options: BuildOptions {
            jobs,
            keep_going,
            report_up_to_date: true,
            workspace: f.root.display().to_string(),
            clock: crate::clock::Clock::default(),
            quarantine: Vec::new(),
        },
    };
    let resolved = Resolved {
        sources: HashMap::new(),
        tools: HashMap::new(),
        durations: durations.iter().map(|(l, d)| (l.to_string(), *d)).collect(),
        carried: crate::rebuilder::Carried::none(),
        touch_carried: false,
    };
    let mut reporter = Reporter::new(f.plan.nodes.len());
    runner.run(&resolved, &mut reporter, None).await
}

fn secs(n: u64) -> FakeAction {
    FakeAction {
        duration: Duration::from_secs(n),
        ..Default::default()
    }
}

fn started(events: &[FakeEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            FakeEvent::Started(l, _) => Some(l.clone()),
            _ => None,
        })
        .collect()
}

/// (start, end) of each label in virtual time, relative to the first event.
fn spans(events: &[FakeEvent]) -> HashMap<String, (Duration, Duration)> {
    let t0 = match events.first() {
        Some(FakeEvent::Started(_, t) | FakeEvent::Finished(_, t)) => *t,
        None => return HashMap::new(),
    };
    let mut out: HashMap<String, (Duration, Duration)> = HashMap::new();
    for e in events {
        match e {
            FakeEvent::Started(l, t) => {
                out.entry(l.clone()).or_default().0 = *t - t0;
            }
            FakeEvent::Finished(l, t) => {
                out.entry(l.clone()).or_default().1 = *t - t0;
            }
        }
    }
    out
}

const CHAIN: &str = r#"
task(name = "a", cmd = "a", outs = ["a.txt"])
task(name = "b", cmd = "b $(location :a)", deps = [":a"], outs = ["b.txt"])
task(name = "c", cmd = "c $(location :b)", deps = [":b"])
task(name = "solo", cmd = "solo")
"#;

fn outputs(name: &str) -> FakeAction {
    FakeAction {
        duration: Duration::from_secs(1),
        outputs: [(format!("{name}.txt"), name.as_bytes().to_vec())].into(),
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn dependencies_finish_before_dependents_start() {
    let f = fixture(CHAIN);
    let exec = FakeExecutor::new()
        .with("//p:a", outputs("a"))
        .with("//p:b", outputs("b"))
        .with("//p:c", secs(1));
    let s = build(&f, &exec, 4, false, &[]).await;
    assert_eq!((s.ran, s.failed), (4, 0));
    let sp = spans(&exec.events());
    assert!(sp["//p:b"].0 >= sp["//p:a"].1, "{sp:?}");
    assert!(sp["//p:c"].0 >= sp["//p:b"].1, "{sp:?}");
    // `solo` depends on nothing: it runs alongside `a`.
    assert_eq!(sp["//p:solo"].0, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn jobs_bound_concurrency() {
    let f = fixture(
        "task(name = \"w1\", cmd = \"1\")\ntask(name = \"w2\", cmd = \"2\")\ntask(name = \"w3\", cmd = \"3\")\ntask(name = \"w4\", cmd = \"4\")\n",
    );
    let exec = FakeExecutor::new();
    for w in ["w1", "w2", "w3", "w4"] {
        exec.set(format!("//p:{w}"), secs(10));
    }
    let s = build(&f, &exec, 2, false, &[]).await;
    assert_eq!(s.ran, 4);
    let sp = spans(&exec.events());
    let end = sp.values().map(|s| s.1).max().unwrap();
    assert_eq!(
        end,
        Duration::from_secs(20),
        "4 tasks of 10 s on 2 slots take 20 s: {sp:?}"
    );
    for t in [0u64, 5, 10, 15] {
        let at = Duration::from_secs(t) + Duration::from_millis(1);
        let concurrent = sp.values().filter(|(s, e)| *s < at && at < *e).count();
        assert!(concurrent <= 2, "{concurrent} running at {t}s: {sp:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_failure_stops_new_work_without_keep_going() {
    let f = fixture(CHAIN);
    let exec = FakeExecutor::new()
        .with("//p:a", FakeAction { exit: 1, ..secs(1) })
        .with("//p:solo", secs(5));
    // One slot; `a` heads the longest chain, so it starts first and fails.
    let s = build(&f, &exec, 1, false, &[]).await;
    assert_eq!(s.failed, 1);
    assert_eq!(started(&exec.events()), ["//p:a"]);
    assert_eq!(s.not_started + s.skipped, 3, "{s:?}");
}

#[tokio::test(start_paused = true)]
async fn keep_going_runs_unrelated_work_and_skips_dependents() {
    let f = fixture(CHAIN);
    let exec = FakeExecutor::new().with("//p:a", FakeAction { exit: 1, ..secs(1) });
    let s = build(&f, &exec, 1, true, &[]).await;
    assert_eq!((s.failed, s.skipped, s.ran), (1, 2, 1), "{s:?}");
    assert_eq!(started(&exec.events()), ["//p:a", "//p:solo"]);
}

#[tokio::test(start_paused = true)]
async fn critical_path_from_history_goes_first() {
    let f = fixture(CHAIN);
    let exec = FakeExecutor::new()
        .with("//p:a", outputs("a"))
        .with("//p:b", outputs("b"));
    // History says `solo` is slow (60 s) and the chain is quick: `solo` starts first.
    let s = build(
        &f,
        &exec,
        1,
        false,
        &[
            ("//p:solo", 60_000),
            ("//p:a", 10),
            ("//p:b", 10),
            ("//p:c", 10),
        ],
    )
    .await;
    assert_eq!(s.ran, 4);
    assert_eq!(started(&exec.events())[0], "//p:solo");
    // And the other way round: a slow chain starts before a quick `solo`.
    let f = fixture(CHAIN);
    let exec = FakeExecutor::new()
        .with("//p:a", outputs("a"))
        .with("//p:b", outputs("b"));
    build(
        &f,
        &exec,
        1,
        false,
        &[
            ("//p:solo", 10),
            ("//p:a", 5_000),
            ("//p:b", 5_000),
            ("//p:c", 5_000),
        ],
    )
    .await;
    assert_eq!(started(&exec.events())[0], "//p:a");
}

#[tokio::test(start_paused = true)]
async fn a_second_build_runs_nothing_and_identical_outputs_cut_off() {
    let f = fixture(CHAIN);
    let exec = FakeExecutor::new()
        .with("//p:a", outputs("a"))
        .with("//p:b", outputs("b"));
    assert_eq!(build(&f, &exec, 2, false, &[]).await.ran, 4);
    let again = FakeExecutor::new()
        .with("//p:a", outputs("a"))
        .with("//p:b", outputs("b"));
    let s = build(&f, &again, 2, false, &[]).await;
    assert_eq!((s.ran, s.cached), (0, 4));
    assert!(again.events().is_empty());
}

#[tokio::test(start_paused = true)]
async fn retries_rerun_a_failing_action_until_exhausted() {
    let f = fixture("task(name = \"t\", cmd = \"t\", retries = 2)\n");
    let exec = FakeExecutor::new().with("//p:t", FakeAction { exit: 1, ..secs(1) });
    let s = build(&f, &exec, 1, false, &[]).await;
    assert_eq!(s.failed, 1);
    assert_eq!(started(&exec.events()).len(), 3, "one run and two retries");
}
