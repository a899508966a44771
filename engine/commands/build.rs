//! `flow build [PATTERNS] [-j N] [-k]`: check the build record (`record.rs`); unless it answers
//! alone, get the plan (from the record, or by analysis), take the workspace lock, hash the
//! sources, run the owner loop, and write the next record.
//!
//! The three ways through (docs/build.md, "What a build does"):
//! - the record's stamps all match: print the no-op report and exit, taking no lock and opening
//!   no database;
//! - only sources or outputs changed: the plan and the carried actions come from the record;
//!   the lock is taken before anything is keyed, and if another build held it, this one starts
//!   over from analysis (the record it checked may be out of date);
//! - otherwise: analysis, plan, lock, as below.
//!
//! The workspace lock: one build at a time per workspace, because all of them write one
//! `flow-out/`. Each restored file is replaced atomically, but two builds of different edits
//! restoring different results for the same targets would leave `flow-out/` a mix of both; in
//! sequence it is always one build's result. So after analysis (bad input never waits) and
//! before hashing the sources (a build that waited sees the files as they are when it starts),
//! `flow build` takes an exclusive `flock` on `<workspace>/flow-out/.flow-lock` and holds it
//! until it exits:
//! 1. open (creating) the file and try the lock without blocking; if another build holds it,
//!    print once `flow: waiting for another flow build in this workspace (pid N, started
//!    HH:MM:SS UTC)` from what the holder wrote into the file, and retry every 50 ms (Ctrl-C
//!    ends the wait with exit 130);
//! 2. once locked, check that the path still names the locked file: a holder removes it when it
//!    exits, so a waiter may have locked a file that is gone; then start over;
//! 3. a file that already holds a pid was left by a build that died holding it (a clean exit
//!    removes it): that build may have left temp files beside its outputs, which are swept;
//! 4. write our pid and start time into it; on exit, remove it (then `flow-out/` if empty), and
//!    unlock.
//!
//! If the file cannot be created or locked (a read-only workspace, a file system without
//! `flock`), the build warns and goes on without the lock: alone, it is still correct.
//!
//! Before building, what dead flow processes left in the cache's `tmp/` and `sandbox/` is
//! removed too (`Cache::sweep_orphans`, and `executor::sweep_and_choose_root` for sandboxes on a
//! tmpfs), so a killed build costs nothing but its lost work.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flow_rules::PatternTerm;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use tokio::runtime::Runtime;
use tokio::signal::unix::Signal;

use flow_cache::{Digest, FileState};

use crate::analysis::{analyze, cache_dir, open_cache, parse_patterns};
use crate::error::Error;
use crate::executor::{release_root, sweep_and_choose_root, SandboxExecutor};
use crate::hasher::FileHasher;
use crate::plan::{known_states, tool_identities, Plan};
use crate::profile::Profile;
use crate::rebuilder::{Rebuilder, StagedOutput};
use crate::record::{self, Basis, Capture, Carried, Record, ToolStamps, Verdict};
use crate::reporter::{Reporter, Summary};
use crate::runner::{few_keyed, runtime_with_sigint, BuildOptions, Resolved, Runner};
use crate::workspace::Workspace;

pub struct BuildArgs<'a> {
    pub patterns: &'a [String],
    pub jobs: Option<usize>,
    pub keep_going: bool,
    pub cache_dir: Option<&'a Path>,
}

pub fn run(start: &Path, args: BuildArgs) -> Result<i32, Error> {
    let began = Instant::now();
    let profile = Profile::from_env();
    let terms: Vec<PatternTerm> = parse_patterns(args.patterns)?;
    let ws = Workspace::discover(start)?;
    let cache_dir = cache_dir(&ws, args.cache_dir);
    let request = record::request(args.patterns);
    let config = record::config_digest(&ws.config);
    let record_path = record::path(&cache_dir, &ws.root, &request);
    let loaded = Record::load(&record_path, &request, &config);
    let verdict = loaded.as_ref().map(|r| r.check(&ws.root));
    profile.mark("build record");
    if let (Some(record), Some(Verdict::UpToDate)) = (&loaded, &verdict) {
        // Everything the last build of these patterns depended on is as it left it.
        let mut reporter = Reporter::new(record.labels().len());
        reporter.replay_cached(record.labels());
        let summary = Summary {
            cached: record.labels().len(),
            ..Summary::default()
        };
        reporter.summary(&summary, began.elapsed());
        return Ok(0);
    }
    let (runtime, mut sigint) = runtime_with_sigint(start)?;
    let out_root = ws.root.join("flow-out");
    let mut lock = None;
    // Only sources or outputs changed: the plan comes from the record, and the actions the
    // changes cannot reach are carried over (unless another build ran meanwhile).
    let mut carried = match (loaded, verdict) {
        (Some(record), Some(Verdict::Changed { sources, outputs })) => {
            record.carry(&ws.root, &sources, &outputs)
        }
        _ => None,
    };
    if carried.is_some() {
        profile.mark("plan from the build record");
        match lock_workspace(&out_root, &runtime, &mut sigint) {
            Err(code) => return Ok(code),
            Ok((l, waited)) => {
                lock = l;
                if waited {
                    carried = None;
                }
            }
        }
        profile.mark("lock");
    }
    let cache;
    let prepared = match carried {
        Some(c) => {
            cache = Arc::new(open_cache(&cache_dir)?);
            profile.mark("open cache");
            Prepared::from_record(c)
        }
        None => {
            let (graph, analyzed) = analyze(&ws, &cache_dir)?;
            profile.mark("analysis");
            // After a fresh evaluation, outputs that no target declares any more are swept.
            let declared = analyzed.fresh.then(|| crate::stale::Declared::of(&graph));
            let selected: BTreeSet<usize> =
                graph.resolve_terms(&terms).map_err(Error::Unmatched)?;
            let plan = Plan::new(&graph, &selected, &ws.config.action_path);
            drop(graph);
            cache = Arc::new(open_cache(&cache_dir)?);
            if lock.is_none() {
                match lock_workspace(&out_root, &runtime, &mut sigint) {
                    Err(code) => return Ok(code),
                    Ok((l, _)) => lock = l,
                }
            }
            if let Some(declared) = &declared {
                crate::stale::sweep_undeclared(&out_root, declared);
            }
            let known =
                known_states(&cache, &ws.root, &plan, &ws.config.action_path).map_err(|e| {
                    Error::Cache {
                        path: cache_dir.clone(),
                        error: e.to_string(),
                    }
                })?;
            let tool_stamps = ToolStamps::take(&plan, &ws.config.action_path);
            profile.mark("plan, open cache, load file states");
            Prepared {
                sources: plan.all_sources(),
                plan,
                known,
                tools: None,
                carried: HashMap::new(),
                touch_carried: false,
                touched_at_ms: record::now_ms(),
                basis: analyzed.inputs.map(|analysis| Basis::Analysis {
                    analysis,
                    tool_stamps,
                }),
            }
        }
    };
    // Best effort: a failure leaves them for `flow cache verify --fix`.
    let _ = cache.sweep_orphans();

    let plan = Arc::new(prepared.plan);
    let hasher = Arc::new(FileHasher::new(prepared.known));
    // Hash the sources in parallel; an unreadable one fails the actions that read it.
    let paths: Vec<_> = prepared.sources.iter().map(|s| ws.root.join(s)).collect();
    let mut digests = HashMap::new();
    for (s, h) in prepared.sources.iter().zip(hasher.digest_many(&paths)) {
        if let Ok(h) = h {
            digests.insert(s.clone(), h);
        }
    }
    let tools = prepared
        .tools
        .unwrap_or_else(|| tool_identities(&plan, &ws.config.action_path, &hasher));
    profile.mark("hash sources and tools");
    let workspace = ws.root.display().to_string();
    // Expected durations order the critical path; when only a few actions are keyed, only
    // theirs are read.
    let durations = match few_keyed(&plan, &prepared.carried) {
        Some(labels) => cache.durations_of(&workspace, &labels),
        None => cache.durations(&workspace),
    }
    .unwrap_or_default();
    let resolved = Resolved {
        sources: digests,
        tools,
        durations,
        carried: prepared.carried,
        touch_carried: prepared.touch_carried,
    };
    let jobs = args
        .jobs
        .or(ws.config.jobs)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let rebuilder = Arc::new(Rebuilder {
        cache: cache.clone(),
        hasher: hasher.clone(),
        out_root,
        workspace_root: ws.root.clone(),
    });
    let sandboxes = sweep_and_choose_root(&cache_dir, ws.config.sandbox_dir.as_deref());
    let executor = Arc::new(SandboxExecutor::new(sandboxes.clone()));
    let runner = Runner {
        plan: plan.clone(),
        rebuilder,
        executor,
        options: BuildOptions {
            jobs,
            keep_going: args.keep_going || ws.config.keep_going,
            report_up_to_date: true,
            workspace,
        },
    };
    let actions = plan.nodes.iter().filter(|a| !a.is_group).count();
    let mut reporter = Reporter::new(actions);
    profile.mark("history");
    let finished = runtime.block_on(runner.run_to_end(&resolved, &mut reporter, &mut sigint, None));
    profile.mark("run");
    let summary = &finished.summary;
    let all_ok = !summary.interrupted
        && summary.failed == 0
        && summary.skipped == 0
        && summary.not_started == 0;
    match (prepared.basis, all_ok) {
        (Some(basis), true) => {
            let touched_at_ms = if resolved.carried.is_empty() || resolved.touch_carried {
                record::now_ms()
            } else {
                prepared.touched_at_ms
            };
            hasher.with_states(|states| {
                Capture {
                    request: &request,
                    config,
                    tools: &resolved.tools,
                    plan: &plan,
                    staged: &finished.staged,
                    keys: &finished.keys,
                    states,
                    root: &ws.root,
                    touched_at_ms,
                }
                .write(&record_path, basis)
            });
        }
        _ => record::forget(&record_path),
    }
    profile.mark("build record written");
    drop(lock);
    // The runtime waits for the sandbox removals still running; then the root can go.
    drop(runtime);
    release_root(&cache_dir, ws.config.sandbox_dir.as_deref(), &sandboxes);
    profile.mark("sandboxes removed");
    Ok(if summary.interrupted {
        130
    } else if summary.failed > 0 {
        1
    } else {
        0
    })
}

/// What the runner needs, from analysis or from the build record.
struct Prepared {
    plan: Plan,
    /// The hasher's file-state table.
    known: HashMap<String, FileState>,
    /// The sources to hash (workspace-relative).
    sources: Vec<String>,
    /// Tool identities when already known.
    tools: Option<HashMap<String, String>>,
    carried: HashMap<usize, (Vec<StagedOutput>, Digest)>,
    touch_carried: bool,
    touched_at_ms: i64,
    /// What the next build record is made from (`None`: analysis took no snapshot).
    basis: Option<Basis>,
}

impl Prepared {
    fn from_record(c: Carried) -> Prepared {
        Prepared {
            plan: c.plan,
            known: c.known,
            sources: c.sources,
            tools: Some(c.tools),
            carried: c.clean,
            touch_carried: c.touch,
            touched_at_ms: c.touched_at_ms,
            basis: Some(Basis::Record(c.previous)),
        }
    }
}

/// Takes the workspace lock: the lock (`None`: none could be taken, warned) and whether another
/// build held it first; `Err(130)` on Ctrl-C while waiting.
fn lock_workspace(
    out_root: &Path,
    runtime: &Runtime,
    sigint: &mut Option<Signal>,
) -> Result<(Option<WorkspaceLock>, bool), i32> {
    match WorkspaceLock::acquire(out_root, runtime, sigint) {
        Acquired::Locked(lock) => {
            if lock.previous_holder_died {
                flow_cache::sweep_leftovers(out_root, true);
            }
            let waited = lock.waited;
            Ok((Some(lock), waited))
        }
        Acquired::Interrupted => {
            eprintln!("flow: interrupted while waiting for the other build");
            Err(130)
        }
        Acquired::Failed(why) => {
            // The lock protects `flow-out/` from a concurrent build; without it (a read-only
            // workspace, a file system without `flock`) a lone build is still correct.
            eprintln!("warning: {why}; building without the workspace lock");
            Ok((None, false))
        }
    }
}

/// The exclusive lock on `<workspace>/flow-out/.flow-lock` (see the module docs).
struct WorkspaceLock {
    file: Flock<File>,
    path: PathBuf,
    out_root: PathBuf,
    /// The file held the pid of a build that died holding the lock.
    previous_holder_died: bool,
    /// Another build held the lock first.
    waited: bool,
}

/// The outcome of [`WorkspaceLock::acquire`].
enum Acquired {
    Locked(WorkspaceLock),
    /// Ctrl-C while waiting for another build.
    Interrupted,
    /// The lock file could not be created or locked: why.
    Failed(String),
}

/// How often a waiting build retries the lock.
const LOCK_POLL: Duration = Duration::from_millis(50);

impl WorkspaceLock {
    /// Takes the lock, waiting for another build that holds it (see the module docs).
    fn acquire(out_root: &Path, runtime: &Runtime, sigint: &mut Option<Signal>) -> Acquired {
        let path = out_root.join(".flow-lock");
        let failed = |action: &str, path: &Path, e: std::io::Error| {
            Acquired::Failed(format!("cannot {action} `{}`: {e}", path.display()))
        };
        let mut told = false;
        loop {
            if let Err(e) = fs::create_dir_all(out_root) {
                return failed("create", out_root, e);
            }
            let opened = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path);
            let file = match opened {
                Ok(file) => file,
                Err(e) => return failed("open", &path, e),
            };
            let mut attempt = Flock::lock(file, FlockArg::LockExclusiveNonblock);
            let mut locked = loop {
                match attempt {
                    Ok(locked) => break locked,
                    Err((file, Errno::EWOULDBLOCK | Errno::EINTR)) => {
                        if !told {
                            told = true;
                            eprintln!(
                                "flow: waiting for another flow build in this workspace ({})",
                                holder(&path)
                            );
                        }
                        if wait_or_interrupt(runtime, sigint) {
                            return Acquired::Interrupted;
                        }
                        attempt = Flock::lock(file, FlockArg::LockExclusiveNonblock);
                    }
                    Err((_, e)) => return failed("lock", &path, std::io::Error::from(e)),
                }
            };
            if !names_file(&path, &locked) {
                continue; // its holder removed it on exit: lock the file now at `path`
            }
            let mut previous = String::new();
            let _ = locked.read_to_string(&mut previous);
            let started = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            // Only the waiting message reads it: a failed write is not worth failing the build.
            let _ = locked
                .set_len(0)
                .and_then(|()| locked.rewind())
                .and_then(|()| write!(locked, "pid {}\nstarted {started}\n", std::process::id()));
            return Acquired::Locked(WorkspaceLock {
                file: locked,
                path,
                out_root: out_root.to_path_buf(),
                previous_holder_died: !previous.trim().is_empty(),
                waited: told,
            });
        }
    }
}

impl Drop for WorkspaceLock {
    fn drop(&mut self) {
        // Remove the file while still holding the lock, and only if it is still ours (`flow
        // clean` may have removed it, and another build created a new one).
        if names_file(&self.path, &self.file) {
            let _ = fs::remove_file(&self.path);
            let _ = fs::remove_dir(&self.out_root); // only if empty: no outputs were made
        }
    }
}

/// Whether `path` is the file open as `file` (same device and inode).
fn names_file(path: &Path, file: &File) -> bool {
    match (fs::metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// `pid N, started HH:MM:SS UTC` from the lock file at `path`, as its holder wrote it (it
/// writes just after locking, so an empty file is read again for a moment).
fn holder(path: &Path) -> String {
    for _ in 0..20 {
        let text = fs::read_to_string(path).unwrap_or_default();
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
        };
        if let (Some(pid), Some(started)) = (field("pid "), field("started ")) {
            let day = started % 86_400;
            return format!(
                "pid {pid}, started {:02}:{:02}:{:02} UTC",
                day / 3600,
                day % 3600 / 60,
                day % 60
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    "pid unknown".to_owned()
}

/// Sleeps [`LOCK_POLL`]; true if Ctrl-C came first.
fn wait_or_interrupt(runtime: &Runtime, sigint: &mut Option<Signal>) -> bool {
    runtime.block_on(async {
        match sigint {
            Some(s) => tokio::select! {
                _ = s.recv() => true,
                _ = tokio::time::sleep(LOCK_POLL) => false,
            },
            None => {
                tokio::time::sleep(LOCK_POLL).await;
                false
            }
        }
    })
}
