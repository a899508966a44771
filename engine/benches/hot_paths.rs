//! Hot-path benchmarks of the engine, in process, without spawning any action:
//!
//! - **hashing**: `FileHasher::digest_many` over 10,000 files of 256 bytes, *cold* (no file
//!   states: every file is read and hashed; the page cache is warm) and *warm* (every state
//!   trusted: one `stat` per file), plus saving and loading those 10,000 rows of the file-state
//!   table (`Cache::save_file_states`, `Cache::load_file_states`);
//! - **keys**: `Rebuilder::key` + `ActionKey::digest` for the 2,000 actions of a 1,000-package
//!   workspace shaped like `../shared/bench/gen_workspace.py --tools flow` (10 sources per `lint`,
//!   1..5 dependency outputs per `test`);
//! - **scheduler**: `Scheduler::new` and a `pop_ready`/`finish` drain of the same 2,000-node DAG;
//! - **runner**: `Runner::run` with the `FakeExecutor` over that DAG at `-j 2`: every action runs
//!   instantly (its output is stored in the CAS, recorded and materialized under `flow-out/`),
//!   every action is cached and up to date (a no-op), every action is cached and restored from
//!   the CAS (`flow-out/` deleted). Everything but the process spawn of a real build: the
//!   difference to a real build's per-action cost is the sandbox and the process;
//! - **cas**: `Cas::put_file` and `Cas::materialize_file` of 1,000 × 4 KiB and 10 × 8 MiB.
//!
//! `cargo bench --bench hot_paths` runs everything; `cargo bench --bench hot_paths -- keys cas`
//! only the sections whose names contain one of the words. `FLOW_BENCH_RUNS=N` sets the runs per
//! measurement (default 7). Each figure is the median over the runs, with the range. Not a test:
//! it asserts correctness (every file read or not, every action ran or not) but nothing about
//! speed. The runner's per-action lines go to /dev/null while it runs.

#[path = "workload.rs"]
mod workload;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flow::executor::{FakeAction, FakeExecutor};
use flow::graph::TargetGraph;
use flow::hasher::{FileHasher, Hashed, RACY_WINDOW_NS};
use flow::plan::Plan;
use flow::rebuilder::{Rebuilder, StagedOutput};
use flow::reporter::Reporter;
use flow::runner::{BuildOptions, Resolved, Runner};
use flow::scheduler::Scheduler;
use flow_cache::{Cache, Cas, Digest, FileState, OutputKind};
use flow_rules::{evaluate_workspace, EvalOptions, VisibilityRule};

const MIB: f64 = 1024.0 * 1024.0;

/// Median, min and max of the samples.
struct Stats {
    median: Duration,
    min: Duration,
    max: Duration,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    Stats {
        median: v[v.len() / 2],
        min: v[0],
        max: v[v.len() - 1],
    }
}

fn fmt_d(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1e-3 {
        format!("{:.1} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

/// One result line: the total (median, range) and the cost per operation.
fn line(what: &str, s: &Stats, ops: usize, bytes: Option<u64>) {
    let per = s.median.as_secs_f64() * 1e6 / ops as f64;
    let rate = bytes
        .map(|b| format!("  {:>8.1} MiB/s", b as f64 / MIB / s.median.as_secs_f64()))
        .unwrap_or_default();
    println!(
        "  {what:<46} {:>10} [{} – {}]  {per:>9.2} µs/op{rate}",
        fmt_d(s.median),
        fmt_d(s.min),
        fmt_d(s.max)
    );
}

/// Runs `f` `runs` times; `f` returns the duration it measured itself (setup excluded).
fn measure(runs: usize, mut f: impl FnMut() -> Duration) -> Stats {
    stats((0..runs).map(|_| f()).collect())
}

/// Deterministic pseudo-random bytes (xorshift), so blobs differ and compress nothing.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

// ------------------------------------------------------------------------------------------------
// hashing

fn bench_hashing(runs: usize) {
    const FILES: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::with_capacity(FILES);
    for d in 0..100 {
        let sub = dir.path().join(format!("p{d:04}/src"));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..FILES / 100 {
            let p = sub.join(format!("f{f:02}.txt"));
            std::fs::write(&p, bytes((d * 1000 + f) as u64, 256)).unwrap();
            paths.push(p);
        }
    }
    println!(
        "hashing: {FILES} files of 256 B, FileHasher::digest_many (rayon, {} threads)",
        rayon::current_num_threads()
    );
    let mut states: Vec<(String, FileState)> = Vec::new();
    let cold = measure(runs, || {
        let h = FileHasher::new(HashMap::new());
        let t = Instant::now();
        let r = h.digest_many(&paths);
        let took = t.elapsed();
        assert!(r.iter().all(|x| x.as_ref().is_ok_and(|h| h.read)));
        states = h.take_changed();
        took
    });
    line(
        "cold: no file states (read + blake3)",
        &cold,
        FILES,
        Some(256 * FILES as u64),
    );
    // Recorded long after the files were written: every state is trusted.
    let known: HashMap<String, FileState> = states
        .iter()
        .cloned()
        .map(|(k, mut s)| {
            s.recorded_at_ns = s.mtime_ns + 10 * RACY_WINDOW_NS;
            (k, s)
        })
        .collect();
    let warm = measure(runs, || {
        let h = FileHasher::new(known.clone());
        let t = Instant::now();
        let r = h.digest_many(&paths);
        let took = t.elapsed();
        assert!(r.iter().all(|x| x.as_ref().is_ok_and(|h| !h.read)));
        took
    });
    line("warm: every state trusted (stat only)", &warm, FILES, None);

    let cache_dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(cache_dir.path()).unwrap();
    let rows: Vec<(String, FileState)> = known.clone().into_iter().collect();
    let save = measure(runs, || {
        let t = Instant::now();
        cache.save_file_states(&rows).unwrap();
        t.elapsed()
    });
    line(
        "file-state table: save (one transaction)",
        &save,
        FILES,
        None,
    );
    let prefix = format!("{}/", dir.path().display());
    let load = measure(runs, || {
        let t = Instant::now();
        let got = cache.load_file_states(&prefix).unwrap();
        let took = t.elapsed();
        assert_eq!(got.len(), FILES);
        took
    });
    line(
        "file-state table: load (one range query)",
        &load,
        FILES,
        None,
    );
}

// ------------------------------------------------------------------------------------------------
// the 1,000-package workspace, its plan

struct Workload {
    _dir: tempfile::TempDir,
    root: PathBuf,
    plan: Arc<Plan>,
    /// Every source, workspace-relative, with a digest (not read: keys only need digests).
    sources: HashMap<String, Hashed>,
}

fn workload() -> Workload {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    workload::generate(&root, 1000, 10);
    let eval = evaluate_workspace(&EvalOptions {
        root: root.clone(),
        ..Default::default()
    })
    .unwrap();
    assert!(eval.errors.is_empty(), "{:?}", eval.errors.first());
    let (graph, errors) = TargetGraph::build(eval, &[VisibilityRule::Public]);
    assert!(errors.is_empty());
    let all: BTreeSet<usize> = (0..graph.targets().len()).collect();
    let plan = Arc::new(Plan::new(
        &graph,
        &all,
        &["/usr/bin".to_owned(), "/bin".to_owned()],
    ));
    let sources = plan
        .all_sources()
        .into_iter()
        .map(|s| {
            let h = Hashed {
                digest: Digest::of(s.as_bytes()),
                size: 160,
                executable: false,
                read: false,
            };
            (s, h)
        })
        .collect();
    Workload {
        _dir: dir,
        root,
        plan,
        sources,
    }
}

// ------------------------------------------------------------------------------------------------
// action keys

fn bench_keys(runs: usize, w: &Workload) {
    let cache_dir = tempfile::tempdir().unwrap();
    let rebuilder = Rebuilder {
        cache: Arc::new(Cache::open(cache_dir.path()).unwrap()),
        hasher: Arc::new(FileHasher::new(HashMap::new())),
        out_root: flow::session::out_root(&w.root),
        workspace_root: w.root.clone(),
        remote: None,
        pending: Default::default(),
        kept_in_cache: Default::default(),
        restored_ahead: Default::default(),
    };
    let tools = HashMap::new();
    // Each dependency's outputs as the runner would pass them (staged path + digest).
    let staged: Vec<Vec<StagedOutput>> = w
        .plan
        .nodes
        .iter()
        .map(|a| {
            a.outs
                .iter()
                .map(|o| StagedOutput {
                    path: format!("{}/{o}", a.package),
                    kind: OutputKind::File {
                        digest: Digest::of(format!("{}{o}", a.label).as_bytes()),
                        size: 64,
                        executable: false,
                    },
                })
                .collect()
        })
        .collect();
    let deps: Vec<Vec<StagedOutput>> = w
        .plan
        .nodes
        .iter()
        .map(|a| a.deps.iter().flat_map(|&d| staged[d].clone()).collect())
        .collect();
    let n = w.plan.nodes.len();
    let json_bytes: usize = w
        .plan
        .nodes
        .iter()
        .zip(&deps)
        .map(|(a, d)| {
            rebuilder
                .key(a, &w.sources, d, &tools)
                .unwrap()
                .to_json()
                .len()
        })
        .sum();
    println!(
        "action keys: {n} actions (1,000 packages; lint: 10 sources, test: 1..5 dependency outputs), {} B of canonical JSON on average",
        json_bytes / n
    );
    let mut sink = Vec::with_capacity(n);
    let build = measure(runs, || {
        sink.clear();
        let t = Instant::now();
        for (a, d) in w.plan.nodes.iter().zip(&deps) {
            sink.push(rebuilder.key(a, &w.sources, d, &tools).unwrap());
        }
        t.elapsed()
    });
    line("Rebuilder::key (the struct)", &build, n, None);
    let digest = measure(runs, || {
        let t = Instant::now();
        let ds: Vec<Digest> = sink.iter().map(|k| k.digest()).collect();
        let took = t.elapsed();
        assert_eq!(ds.len(), n);
        took
    });
    line(
        "ActionKey::digest (JSON + blake3)",
        &digest,
        n,
        Some(json_bytes as u64),
    );
    let both = measure(runs, || {
        let t = Instant::now();
        let mut last = Digest::of(b"");
        for (a, d) in w.plan.nodes.iter().zip(&deps) {
            last = rebuilder.key(a, &w.sources, d, &tools).unwrap().digest();
        }
        let took = t.elapsed();
        assert_ne!(last, Digest::of(b""));
        took
    });
    line("key + digest", &both, n, None);
}

// ------------------------------------------------------------------------------------------------
// scheduler and runner

fn bench_scheduler(runs: usize, w: &Workload) {
    let deps = w.plan.deps();
    let n = deps.len();
    let costs = vec![100u64; n];
    println!(
        "scheduler: {n} nodes, {} edges",
        deps.iter().map(Vec::len).sum::<usize>()
    );
    let new = measure(runs, || {
        let t = Instant::now();
        let s = Scheduler::new(&deps, &costs);
        let took = t.elapsed();
        assert_eq!(s.running(), 0);
        took
    });
    line("Scheduler::new (critical path)", &new, n, None);
    let drain = measure(runs, || {
        let mut s = Scheduler::new(&deps, &costs);
        let t = Instant::now();
        let mut done = 0;
        // Two slots, as -j 2: keep two running, finish the oldest.
        let mut running = std::collections::VecDeque::new();
        loop {
            while running.len() < 2 {
                match s.pop_ready() {
                    Some(i) => running.push_back(i),
                    None => break,
                }
            }
            match running.pop_front() {
                Some(i) => {
                    s.finish(i, true);
                    done += 1;
                }
                None => break,
            }
        }
        let took = t.elapsed();
        assert_eq!(done, n);
        took
    });
    line("pop_ready + finish, 2 slots", &drain, n, None);
}

/// Stdout to /dev/null while `f` runs (the reporter prints one line per action).
fn quiet<T>(f: impl FnOnce() -> T) -> T {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let saved = nix::unistd::dup(std::io::stdout()).expect("dup stdout");
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .expect("open /dev/null");
    nix::unistd::dup2_stdout(&null).expect("redirect stdout");
    let out = f();
    let _ = std::io::stdout().flush();
    nix::unistd::dup2_stdout(&saved).expect("restore stdout");
    out
}

fn bench_runner(runs: usize, w: &Workload) {
    let exec = FakeExecutor::new();
    for a in &w.plan.nodes {
        exec.set(
            a.label.to_string(),
            FakeAction {
                duration: Duration::ZERO,
                outputs: a
                    .outs
                    .iter()
                    .map(|o| (o.clone(), format!("{} {o}\n", a.label).into_bytes()))
                    .collect(),
                ..Default::default()
            },
        );
    }
    let n = w.plan.nodes.iter().filter(|a| a.kind.runs()).count();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let resolved = Resolved {
        sources: w.sources.clone(),
        tools: HashMap::new(),
        durations: HashMap::new(),
        carried: flow::rebuilder::Carried::none(),
        touch_carried: false,
    };
    // One build: a fresh hasher over `known`, the cache in `cache_dir`, outputs in `out_root`.
    let build = |cache: &Arc<Cache>,
                 out_root: &Path,
                 known: HashMap<String, FileState>|
     -> (Duration, flow::reporter::Summary, Arc<FileHasher>) {
        let hasher = Arc::new(FileHasher::new(known));
        let runner = Runner {
            effects: None,
            groups: None,
            plan: w.plan.clone(),
            rebuilder: Arc::new(Rebuilder {
                cache: cache.clone(),
                hasher: hasher.clone(),
                out_root: out_root.to_path_buf(),
                workspace_root: w.root.clone(),
                remote: None,
                pending: Default::default(),
                kept_in_cache: Default::default(),
                restored_ahead: Default::default(),
            }),
            executor: Arc::new(exec.clone()),
            options: BuildOptions {
                jobs: 2,
                keep_going: false,
                report_up_to_date: true,
                workspace: w.root.display().to_string(),
                clock: flow::clock::Clock::default(),
                quarantine: Vec::new(),
            },
        };
        quiet(|| {
            let t = Instant::now();
            let summary = rt.block_on(async {
                let mut reporter = Reporter::new(n);
                runner.run(&resolved, &mut reporter, None).await
            });
            (t.elapsed(), summary, hasher)
        })
    };
    println!("runner: Runner::run with the FakeExecutor, {n} actions, -j 2 (2 tokio workers)");
    let mut last: Option<(tempfile::TempDir, Arc<Cache>, HashMap<String, FileState>)> = None;
    let ran = measure(runs, || {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(Cache::open(&dir.path().join("cache")).unwrap());
        let (took, s, hasher) = build(&cache, &flow::session::out_root(dir.path()), HashMap::new());
        assert_eq!((s.ran, s.failed), (n, 0), "{s:?}");
        last = Some((dir, cache, hasher.snapshot()));
        took
    });
    line(
        "all run instantly (store, record, materialize)",
        &ran,
        n,
        None,
    );
    let (dir, cache, known) = last.expect("at least one run");
    let out_root = flow::session::out_root(dir.path());
    let noop = measure(runs, || {
        let (took, s, _) = build(&cache, &out_root, known.clone());
        assert_eq!((s.ran, s.cached), (0, n), "{s:?}");
        took
    });
    line("all cached and up to date (no-op)", &noop, n, None);
    let restore = measure(runs, || {
        std::fs::remove_dir_all(&out_root).unwrap();
        let (took, s, _) = build(&cache, &out_root, HashMap::new());
        assert_eq!((s.ran, s.cached), (0, n), "{s:?}");
        took
    });
    line("all cached, restored from the CAS", &restore, n, None);
}

// ------------------------------------------------------------------------------------------------
// CAS

fn bench_cas(runs: usize) {
    println!("cas: Cas::put_file (copy in, hashed) and Cas::materialize_file (copy out, verified)");
    for (count, size) in [(1000usize, 4usize << 10), (10, 8 << 20)] {
        let src = tempfile::tempdir().unwrap();
        let files: Vec<PathBuf> = (0..count)
            .map(|i| {
                let p = src.path().join(format!("in{i:04}"));
                std::fs::write(&p, bytes(i as u64 + 7, size)).unwrap();
                p
            })
            .collect();
        let total = (count * size) as u64;
        let label = if size >= 1 << 20 {
            format!("{count} x {} MiB", size >> 20)
        } else {
            format!("{count} x {} KiB", size >> 10)
        };
        let mut digests = Vec::new();
        let mut kept: Option<(tempfile::TempDir, Cas)> = None;
        let put = measure(runs, || {
            let dir = tempfile::tempdir().unwrap();
            let cas = Cas::open(dir.path()).unwrap();
            let t = Instant::now();
            let ds: Vec<Digest> = files
                .iter()
                .map(|f| cas.put_file(f, false).unwrap().0)
                .collect();
            let took = t.elapsed();
            digests = ds;
            kept = Some((dir, cas));
            took
        });
        line(
            &format!("put_file, new blobs, {label}"),
            &put,
            count,
            Some(total),
        );
        let (_dir, cas) = kept.expect("at least one run");
        let again = measure(runs, || {
            let t = Instant::now();
            for f in &files {
                cas.put_file(f, false).unwrap();
            }
            t.elapsed()
        });
        line(
            &format!("put_file, blobs exist, {label}"),
            &again,
            count,
            Some(total),
        );
        let out = tempfile::tempdir().unwrap();
        let mut round = 0;
        let mat = measure(runs, || {
            round += 1;
            let dest = out.path().join(format!("r{round}"));
            let t = Instant::now();
            for (i, d) in digests.iter().enumerate() {
                cas.materialize_file(d, size as u64, false, &dest.join(format!("o{i:04}")))
                    .unwrap();
            }
            let took = t.elapsed();
            std::fs::remove_dir_all(&dest).unwrap();
            took
        });
        line(
            &format!("materialize_file, {label}"),
            &mat,
            count,
            Some(total),
        );
    }
}

fn main() {
    // Plain reporter lines (no progress bar on a terminal): they go to /dev/null anyway.
    std::env::set_var("CI", "1");
    let runs = std::env::var("FLOW_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7usize)
        .max(1);
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let on = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    println!("hot_paths: {runs} runs per measurement; median [min – max] of the total, and per operation\n");
    if on("hashing") {
        bench_hashing(runs);
        println!();
    }
    if on("keys") || on("scheduler") || on("runner") {
        let w = workload();
        if on("keys") {
            bench_keys(runs, &w);
            println!();
        }
        if on("scheduler") {
            bench_scheduler(runs, &w);
            println!();
        }
        if on("runner") {
            bench_runner(runs, &w);
            println!();
        }
    }
    if on("cas") {
        bench_cas(runs);
    }
}
