//! Evaluation benchmark: the time to evaluate every BUILD file of a 1,000-package workspace with
//! the shape of `../shared/bench/gen_workspace.py --tools flow` (two `task()`s per package, a
//! `glob()`, 10 sources each, 1..5 deps on earlier packages), reported per BUILD file.
//!
//! `cargo bench --bench eval` generates the workspace itself; set `FLOW_BENCH_WORKSPACE=DIR` to
//! time an existing one (e.g. one written by the shared generator), `FLOW_BENCH_PACKAGES=N` to
//! change the size, and `FLOW_BENCH_RUNS=N` for more repetitions. Not a test: it asserts nothing
//! about speed, it prints medians.

#[path = "workload.rs"]
mod workload;

use std::time::{Duration, Instant};

use flow::graph::TargetGraph;
use flow_rules::{evaluate_workspace, EvalOptions, Listing, VisibilityRule};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let env_usize = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let runs = env_usize("FLOW_BENCH_RUNS", 15);
    let temp;
    let root = match std::env::var_os("FLOW_BENCH_WORKSPACE") {
        Some(dir) => std::path::PathBuf::from(dir),
        None => {
            temp = tempfile::tempdir().unwrap();
            workload::generate(temp.path(), env_usize("FLOW_BENCH_PACKAGES", 1000), 10);
            temp.path().to_path_buf()
        }
    };
    let opts = EvalOptions {
        root: root.clone(),
        ..Default::default()
    };
    let packages = Listing::scan(&root, &[]).unwrap().packages.len();
    let (mut walk, mut eval, mut graph) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let t0 = Instant::now();
        let listing = Listing::scan(&root, &[]).unwrap();
        let t1 = Instant::now();
        let evaluation = flow_rules::evaluate_listing(&opts, listing);
        let t2 = Instant::now();
        assert!(
            evaluation.errors.is_empty(),
            "{:?}",
            evaluation.errors.first()
        );
        let (_, errors) = TargetGraph::build(evaluation, &[VisibilityRule::Public]);
        let t3 = Instant::now();
        assert!(errors.is_empty());
        walk.push(t1 - t0);
        eval.push(t2 - t1);
        graph.push(t3 - t2);
    }
    let _ = evaluate_workspace;
    let (w, e, g) = (median(walk), median(eval), median(graph));
    let per = |d: Duration| d.as_secs_f64() * 1e6 / packages as f64;
    println!(
        "workspace: {} ({packages} BUILD files), {runs} runs, medians",
        root.display()
    );
    println!(
        "  walk (listing)     {:>9.2} ms  {:>7.1} µs/BUILD",
        w.as_secs_f64() * 1e3,
        per(w)
    );
    println!(
        "  evaluate (starlark){:>9.2} ms  {:>7.1} µs/BUILD",
        e.as_secs_f64() * 1e3,
        per(e)
    );
    println!(
        "  graph + validation {:>9.2} ms  {:>7.1} µs/BUILD",
        g.as_secs_f64() * 1e3,
        per(g)
    );
    println!(
        "  total              {:>9.2} ms  {:>7.1} µs/BUILD",
        (w + e + g).as_secs_f64() * 1e3,
        per(w + e + g)
    );
}
