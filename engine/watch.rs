//! `flow watch`: rebuild exactly what a save affects, and cancel stale work.
//!
//! Loop:
//! 1. analyse the workspace (as `flow build` does) and hash the plan's sources;
//! 2. run one build cycle of the selected targets; meanwhile watch: when a batch of file events
//!    changes the *content* of an input of a running action (or a BUILD file), tell the runner
//!    to supersede the cycle — it cancels the affected running actions (killing their process
//!    groups, recording nothing), starts nothing new, and lets unaffected actions finish;
//! 3. wait for the next batch: the first event opens a window of `--debounce` (default 30 ms)
//!    during which more events are collected; ignored paths are dropped (`.git/`, `.flow/`,
//!    `flow-out/`, the cache directory, what the root `.gitignore` excludes, access events);
//! 4. decide: a BUILD, `.star` or `flow.toml` edit, a created, deleted or renamed file, or a
//!    watcher overflow means the graph may have changed → analyse again (a BUILD error is shown
//!    with its code frame and watching goes on); otherwise re-hash the changed files and compare
//!    digests: a save with the same bytes, or a change outside every target's inputs, runs
//!    nothing; else go to 2, where only actions whose keys changed run. The nodes the changed
//!    files reach are "dirty"; every other task the last cycle finished is carried over with
//!    its key and outputs (not keyed, not looked up), unless an event touched one of its
//!    outputs under `flow-out/` (then the runner checks it, restoring it if needed).
//!
//! Output: per cycle, a header naming what changed, the stable `[RAN]`/`[CACHED]`/`[FAILED]`
//! lines (actions that were merely up to date are not listed) and a summary; a cycle with
//! nothing to do prints nothing. Ctrl-C exits with 130 after killing running actions.
//!
//! Limits: re-analysis evaluates the whole workspace (fast enough at 1,000 packages; see
//! docs/watch.md); only the root `.gitignore` is read; one inotify watch per directory; an
//! output changed in the instant between a cycle's carry-over and the event's arrival is caught
//! one cycle later.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flow_cache::{Cache, Digest, FileState, OutputKind};
use flow_rules::PatternTerm;
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use tokio::signal::unix::Signal;
use tokio::sync::mpsc;

use crate::analysis::{cache_dir, load_graph, open_cache, parse_patterns};
use crate::diagnostics::render;
use crate::error::Error;
use crate::executor::SandboxExecutor;
use crate::hasher::{FileHasher, Hashed};
use crate::plan::{known_states, tool_identities, Plan};
use crate::rebuilder::{Rebuilder, StagedOutput};
use crate::reporter::Reporter;
use crate::runner::{
    few_keyed, interrupted, runtime_with_sigint, BuildOptions, Control, Resolved, Runner,
};
use crate::workspace::Workspace;

pub struct WatchArgs<'a> {
    pub patterns: &'a [String],
    pub jobs: Option<usize>,
    pub keep_going: bool,
    pub debounce: Duration,
    pub clear: bool,
    pub cache_dir: Option<&'a Path>,
    pub colors: bool,
}

/// What a batch of events amounts to.
#[derive(Debug, Default)]
struct Batch {
    /// Workspace-relative paths that were touched (not ignored).
    paths: BTreeSet<String>,
    /// Whether the graph may have changed (BUILD/.star/flow.toml, created/deleted/renamed files,
    /// a watcher overflow).
    structural: bool,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.paths.is_empty() && !self.structural
    }

    fn merge(&mut self, other: Batch) {
        self.paths.extend(other.paths);
        self.structural |= other.structural;
    }

    fn describe(&self) -> String {
        let mut names: Vec<&str> = self.paths.iter().map(|s| s.as_str()).take(3).collect();
        if names.is_empty() {
            names.push("(the watcher asked for a rescan)");
        }
        let more = self.paths.len().saturating_sub(3);
        format!(
            "flow watch: changed {}{}",
            names.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        )
    }
}

/// The analysed state a cycle runs on.
struct Analyzed {
    plan: Arc<Plan>,
    /// Workspace-relative source → nodes that read it.
    readers: HashMap<String, Vec<usize>>,
    /// Node → nodes that depend on it.
    dependents: Vec<Vec<usize>>,
    sources: HashMap<String, Hashed>,
    tools: HashMap<String, String>,
    /// Every node after its dependencies.
    order: Vec<usize>,
}

/// What the last cycle left, per node of the current plan: outputs as dependents see them and
/// key (`None` where the node did not finish), as [`crate::runner::Finished`] returns them.
struct LastCycle {
    staged: Vec<Option<Vec<StagedOutput>>>,
    keys: Vec<Option<Digest>>,
}

impl Analyzed {
    /// Labels of the nodes that read any of `paths`, and everything downstream of them.
    fn affected(&self, paths: &BTreeSet<String>) -> BTreeSet<String> {
        self.affected_nodes(paths)
            .into_iter()
            .map(|n| self.plan.nodes[n].label.to_string())
            .collect()
    }

    /// The nodes that read any of `paths`, and everything downstream of them.
    fn affected_nodes(&self, paths: &BTreeSet<String>) -> BTreeSet<usize> {
        let mut stack: Vec<usize> = paths
            .iter()
            .filter_map(|p| self.readers.get(p))
            .flatten()
            .copied()
            .collect();
        let mut seen = BTreeSet::new();
        while let Some(n) = stack.pop() {
            if seen.insert(n) {
                stack.extend(self.dependents[n].iter().copied());
            }
        }
        seen
    }

    /// The tasks a cycle can carry over from `last` without keying them: each finished in the
    /// last cycle, is not `dirty` (nothing it reads changed since that cycle started), has its
    /// outputs in `flow-out/` as flow wrote them (`in_place`), and depends only on nodes that
    /// are carried too (a group counts as carried when all of its dependencies are).
    fn carried(
        &self,
        last: LastCycle,
        dirty: &BTreeSet<usize>,
        in_place: impl Fn(&[StagedOutput]) -> bool,
    ) -> HashMap<usize, (Vec<StagedOutput>, Digest)> {
        let nodes = &self.plan.nodes;
        let mut ok = vec![false; nodes.len()];
        let LastCycle { mut staged, keys } = last;
        let mut carried = HashMap::new();
        for &i in &self.order {
            if dirty.contains(&i) || !nodes[i].deps.iter().all(|&d| ok[d]) {
                continue;
            }
            if nodes[i].is_group {
                ok[i] = true;
                continue;
            }
            if let (Some(Some(outputs)), Some(Some(key))) = (staged.get_mut(i), keys.get(i)) {
                if in_place(outputs) {
                    ok[i] = true;
                    carried.insert(i, (std::mem::take(outputs), *key));
                }
            }
        }
        carried
    }
}

/// Whether an event touched the output at `path` (relative to `flow-out/`): the path itself,
/// a directory above it, anything below it, or, for a directory output, its marker file.
fn touches(touched: &BTreeSet<String>, path: &str, kind: &OutputKind) -> bool {
    if touched.is_empty() {
        return false;
    }
    let below = format!("{path}/");
    let mut above = path;
    let ancestor_touched = loop {
        if touched.contains(above) {
            break true;
        }
        match above.rfind('/') {
            Some(i) => above = &above[..i],
            None => break touched.contains(""),
        }
    };
    let marker_touched = matches!(kind, OutputKind::Tree { .. }) && {
        let marker = crate::rebuilder::tree_marker(Path::new(path));
        marker.to_str().is_some_and(|m| touched.contains(m))
    };
    ancestor_touched
        || marker_touched
        || touched
            .range(below.clone()..)
            .next()
            .is_some_and(|t| t.starts_with(&below))
}

/// The plan's nodes, each after its dependencies (Kahn's algorithm over `dependents`; the plan
/// is acyclic).
fn dependency_order(plan: &Plan, dependents: &[Vec<usize>]) -> Vec<usize> {
    let mut waiting: Vec<usize> = plan.nodes.iter().map(|a| a.deps.len()).collect();
    let mut order: Vec<usize> = (0..plan.nodes.len()).filter(|&i| waiting[i] == 0).collect();
    let mut next = 0;
    while next < order.len() {
        let n = order[next];
        next += 1;
        for &d in &dependents[n] {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                order.push(d);
            }
        }
    }
    order
}

struct Session<'a> {
    ws: Workspace,
    args: &'a WatchArgs<'a>,
    terms: Vec<PatternTerm>,
    cache_dir: PathBuf,
    cache: Arc<Cache>,
    executor: Arc<SandboxExecutor>,
    known: HashMap<String, FileState>,
    gitignore: Gitignore,
    state: Option<Analyzed>,
    /// The last cycle's results, for carrying over what a batch cannot affect; `None` before
    /// the first cycle and after each analysis (node indices change).
    last: Option<LastCycle>,
    /// Nodes affected by the source changes seen since the last cycle started.
    dirty: BTreeSet<usize>,
    /// Paths below `flow-out/` (relative to it; "" for `flow-out` itself) that events touched
    /// since the last cycle started, flow's own writes included: a carried-over task with an
    /// output there (or above or below it) has its outputs checked again.
    touched_outputs: RefCell<BTreeSet<String>>,
    /// `<workspace>/flow-out`.
    out_root: PathBuf,
    jobs: usize,
    /// `FLOW_PROFILE=1`: the phases from a batch's first event to the cycle's run.
    profile: crate::profile::Profile,
}

/// Runs `flow watch`; returns the exit code (130 on Ctrl-C).
pub fn run(start: &Path, args: WatchArgs) -> Result<i32, Error> {
    let (runtime, mut sigint) = runtime_with_sigint(start)?;
    let terms = parse_patterns(args.patterns)?;
    let ws = Workspace::discover(start)?;
    let dir = cache_dir(&ws, args.cache_dir);
    let cache = Arc::new(open_cache(&dir)?);

    let (tx, mut events) = mpsc::unbounded_channel::<notify::Result<Event>>();
    let mut watcher = notify::recommended_watcher(move |res| {
        let _ = tx.send(res);
    })
    .map_err(|e| watch_error(&ws.root, e))?;
    watcher
        .watch(&ws.root, RecursiveMode::Recursive)
        .map_err(|e| watch_error(&ws.root, e))?;

    let mut builder = GitignoreBuilder::new(&ws.root);
    builder.add(ws.root.join(".gitignore"));
    let gitignore = builder.build().unwrap_or_else(|_| Gitignore::empty());
    let jobs = args
        .jobs
        .or(ws.config.jobs)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let configured = ws.config.sandbox_dir.clone();
    let sandboxes = crate::executor::sweep_and_choose_root(&dir, configured.as_deref());
    let out_root = ws.root.join("flow-out");
    let mut session = Session {
        ws,
        args: &args,
        terms,
        cache_dir: dir.clone(),
        cache,
        executor: Arc::new(SandboxExecutor::new(sandboxes.clone())),
        known: HashMap::new(),
        gitignore,
        state: None,
        last: None,
        dirty: BTreeSet::new(),
        touched_outputs: RefCell::new(BTreeSet::new()),
        out_root,
        jobs,
        profile: crate::profile::Profile::from_env(),
    };
    let code = runtime.block_on(session.main_loop(&mut events, &mut sigint));
    drop(watcher);
    drop(session);
    // The runtime waits for the sandbox removals still running; then the root can go.
    drop(runtime);
    crate::executor::release_root(&dir, configured.as_deref(), &sandboxes);
    Ok(code)
}

fn join(labels: &[&String]) -> String {
    labels
        .iter()
        .map(|l| format!("`{l}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn watch_error(root: &Path, e: notify::Error) -> Error {
    if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) {
        return Error::Usage {
            message: format!(
                "cannot watch `{}`: the system's limit of inotify watches is reached",
                root.display()
            ),
            help: Some(
                "raise it, e.g. `sudo sysctl fs.inotify.max_user_watches=524288` (make it permanent in /etc/sysctl.d/), or watch fewer directories"
                    .into(),
            ),
        };
    }
    Error::Io {
        path: root.to_path_buf(),
        action: "watch",
        error: e.to_string(),
    }
}

impl Session<'_> {
    async fn main_loop(
        &mut self,
        events: &mut mpsc::UnboundedReceiver<notify::Result<Event>>,
        sigint: &mut Option<Signal>,
    ) -> i32 {
        let mut need_analysis = true;
        let mut pending = Batch {
            structural: true,
            ..Batch::default()
        };
        let mut first = true;
        let mut failing = false;
        loop {
            // Decide what the pending batch means.
            if !pending.is_empty() && (pending.structural || self.state.is_none()) {
                need_analysis = true;
            }
            let batch = std::mem::take(&mut pending);
            if need_analysis {
                let before: BTreeSet<String> = self.labels();
                match self.analyze() {
                    Ok(()) => {
                        self.profile.mark("watch: analysed");
                        need_analysis = false;
                        if failing {
                            println!("flow watch: the error is fixed");
                            failing = false;
                        }
                        let after = self.labels();
                        if !first {
                            let added: Vec<&String> = after.difference(&before).collect();
                            let removed: Vec<&String> = before.difference(&after).collect();
                            if !added.is_empty() {
                                println!("flow watch: new targets: {}", join(&added));
                            }
                            if !removed.is_empty() {
                                println!("flow watch: removed targets: {}", join(&removed));
                            }
                        }
                    }
                    Err(e) => {
                        failing = true;
                        eprint!("{}", render(&e, self.args.colors));
                        eprintln!("flow watch: waiting for changes (fix the error above)");
                        match self.next_batch(events, sigint).await {
                            Some(b) => {
                                pending = b;
                                pending.structural = true;
                                continue;
                            }
                            None => return 130,
                        }
                    }
                }
            } else if self.rehash(&batch) {
                self.profile.mark("watch: changed files hashed");
            } else {
                self.profile
                    .mark("watch: changed files hashed (no content change)");
                // Same bytes, or nothing any target reads: nothing to do.
                match self.next_batch(events, sigint).await {
                    Some(b) => {
                        pending = b;
                        continue;
                    }
                    None => return 130,
                }
            }

            let header = if first {
                "flow watch: initial build".to_owned()
            } else {
                batch.describe()
            };
            first = false;
            if self.args.clear && std::io::stdout().is_terminal() {
                print!("\x1b[2J\x1b[H");
            }
            let (summary_interrupted, superseded_by) = self.cycle(header, events, sigint).await;
            if summary_interrupted {
                return 130;
            }
            match superseded_by {
                Some(b) => pending = b,
                None => match self.next_batch(events, sigint).await {
                    Some(b) => pending = b,
                    None => return 130,
                },
            }
        }
    }

    /// The labels of the current plan (empty before the first analysis or after an error).
    fn labels(&self) -> BTreeSet<String> {
        self.state
            .as_ref()
            .map(|s| s.plan.nodes.iter().map(|a| a.label.to_string()).collect())
            .unwrap_or_default()
    }

    /// Evaluates the workspace and hashes the sources of the selected targets.
    fn analyze(&mut self) -> Result<(), Error> {
        let (ws, graph, _) = load_graph(&self.ws.root, self.args.cache_dir)?;
        self.ws = ws;
        let selected = graph.resolve_terms(&self.terms).map_err(Error::Unmatched)?;
        let plan = Arc::new(Plan::new(&graph, &selected, &self.ws.config.action_path));
        if self.known.is_empty() {
            self.known = known_states(
                &self.cache,
                &self.ws.root,
                &plan,
                &self.ws.config.action_path,
            )
            .map_err(|e| Error::Cache {
                path: self.cache_dir.clone(),
                error: e.to_string(),
            })?;
        }
        let hasher = FileHasher::new(self.known.clone());
        let sources = plan.all_sources();
        let paths: Vec<PathBuf> = sources.iter().map(|s| self.ws.root.join(s)).collect();
        let digests: HashMap<String, Hashed> = sources
            .iter()
            .zip(hasher.digest_many(&paths))
            .filter_map(|(s, h)| h.ok().map(|h| (s.clone(), h)))
            .collect();
        let tools = tool_identities(&plan, &self.ws.config.action_path, &hasher);
        self.known = hasher.snapshot();
        let mut readers: HashMap<String, Vec<usize>> = HashMap::new();
        let mut dependents = vec![Vec::new(); plan.nodes.len()];
        for (i, a) in plan.nodes.iter().enumerate() {
            for s in &a.srcs {
                readers.entry(s.clone()).or_default().push(i);
            }
            for &d in &a.deps {
                dependents[d].push(i);
            }
        }
        let order = dependency_order(&plan, &dependents);
        self.state = Some(Analyzed {
            plan,
            readers,
            dependents,
            sources: digests,
            tools,
            order,
        });
        self.last = None;
        Ok(())
    }

    /// Re-hashes the batch's files that are sources; true when any digest changed.
    fn rehash(&mut self, batch: &Batch) -> bool {
        let Some(state) = &mut self.state else {
            return true;
        };
        let hasher = FileHasher::new(std::mem::take(&mut self.known));
        let mut changed = BTreeSet::new();
        for p in &batch.paths {
            if !state.readers.contains_key(p) {
                continue;
            }
            match hasher.digest(&self.ws.root.join(p)) {
                Ok(h) => {
                    if state.sources.get(p).map(|o| o.digest) != Some(h.digest) {
                        changed.insert(p.clone());
                    }
                    state.sources.insert(p.clone(), h);
                }
                Err(_) => {
                    if state.sources.remove(p).is_some() {
                        changed.insert(p.clone());
                    }
                }
            }
        }
        self.known = hasher.into_states();
        self.dirty.extend(state.affected_nodes(&changed));
        !changed.is_empty()
    }

    /// Runs one build cycle. Returns (interrupted, the batch that superseded it, if any).
    async fn cycle(
        &mut self,
        header: String,
        events: &mut mpsc::UnboundedReceiver<notify::Result<Event>>,
        sigint: &mut Option<Signal>,
    ) -> (bool, Option<Batch>) {
        // The cycle borrows the sources and the file states and gives them back at the end:
        // copying the tables took milliseconds of each cycle's latency.
        let last = self.last.take();
        let sources = std::mem::take(&mut self.state.as_mut().expect("analysed").sources);
        let state = self.state.as_ref().expect("analysed before a cycle");
        let hasher = Arc::new(FileHasher::new(std::mem::take(&mut self.known)));
        let rebuilder = Arc::new(Rebuilder {
            cache: self.cache.clone(),
            hasher: hasher.clone(),
            out_root: self.out_root.clone(),
            workspace_root: self.ws.root.clone(),
        });
        let workspace = self.ws.root.display().to_string();
        let runner = Runner {
            plan: state.plan.clone(),
            rebuilder,
            executor: self.executor.clone(),
            options: BuildOptions {
                jobs: self.jobs,
                keep_going: self.args.keep_going || self.ws.config.keep_going,
                report_up_to_date: false,
                workspace: workspace.clone(),
            },
        };
        // What this cycle's changes cannot reach keeps its last key and outputs: only the rest
        // is keyed and looked up (at 1,000 packages, keying everything took ~30 ms a cycle).
        // Their outputs are checked only where events touched `flow-out/` (where the watcher
        // cannot see it, a link to elsewhere, every time): a stat per output took ~10 ms a cycle.
        let dirty = std::mem::take(&mut self.dirty);
        let touched = std::mem::take(&mut *self.touched_outputs.borrow_mut());
        let watched = std::fs::symlink_metadata(&self.out_root).map_or(true, |m| !m.is_symlink());
        let carried = match last {
            Some(last) => state.carried(last, &dirty, |staged| {
                (watched && !staged.iter().any(|o| touches(&touched, &o.path, &o.kind)))
                    || runner.rebuilder.staged_in_place(staged)
            }),
            None => HashMap::new(),
        };
        let durations = match few_keyed(&state.plan, &carried) {
            Some(labels) => self.cache.durations_of(&workspace, &labels),
            None => self.cache.durations(&workspace),
        };
        self.profile
            .mark("watch: cycle set up, unaffected tasks carried over");
        let resolved = Resolved {
            sources,
            tools: state.tools.clone(),
            durations: durations.unwrap_or_default(),
            carried,
            touch_carried: false,
        };
        let actions = state.plan.nodes.iter().filter(|a| !a.is_group).count();
        let mut reporter = Reporter::for_watch_cycle(actions, header);
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        let mut superseding: Option<Batch> = None;
        let finished = {
            let run = runner.run_to_end(&resolved, &mut reporter, sigint, Some(ctl_rx));
            tokio::pin!(run);
            loop {
                tokio::select! {
                    finished = &mut run => break finished,
                    Some(ev) = events.recv() => {
                        let batch = self.classify(ev);
                        if batch.is_empty() {
                            continue;
                        }
                        // Content decides: supersede only for changed bytes of an input, or a
                        // change to the graph itself.
                        let affected = if batch.structural {
                            Some(state.plan.nodes.iter().map(|a| a.label.to_string()).collect())
                        } else {
                            let probe = FileHasher::new(HashMap::new());
                            let changed: BTreeSet<String> = batch
                                .paths
                                .iter()
                                .filter(|p| state.readers.contains_key(*p))
                                .filter(|p| {
                                    let now = probe.digest(&self.ws.root.join(p)).ok().map(|h| h.digest);
                                    now != resolved.sources.get(*p).map(|h| h.digest)
                                })
                                .cloned()
                                .collect();
                            (!changed.is_empty()).then(|| state.affected(&changed))
                        };
                        if let Some(affected) = affected {
                            let _ = ctl_tx.send(Control::Supersede { affected });
                        }
                        match &mut superseding {
                            Some(b) => b.merge(batch),
                            None => superseding = Some(batch),
                        }
                    }
                }
            }
        };
        drop(runner);
        // Blocking tasks still removing sandboxes may hold the hasher: then it is copied.
        self.known = match Arc::try_unwrap(hasher) {
            Ok(hasher) => hasher.into_states(),
            Err(hasher) => hasher.snapshot(),
        };
        self.state.as_mut().expect("analysed").sources = resolved.sources;
        let interrupted = finished.summary.interrupted;
        self.last = Some(LastCycle {
            staged: finished.staged,
            keys: finished.keys,
        });
        if interrupted {
            return (true, None);
        }
        // Events that arrived during the cycle are handled next, after a debounce window.
        if let Some(mut b) = superseding {
            self.drain_window(events, &mut b).await;
            return (false, Some(b));
        }
        (false, None)
    }

    /// The next non-empty batch: the first event, then whatever arrives within the debounce
    /// window. `None` on Ctrl-C.
    async fn next_batch(
        &self,
        events: &mut mpsc::UnboundedReceiver<notify::Result<Event>>,
        sigint: &mut Option<Signal>,
    ) -> Option<Batch> {
        loop {
            let first = tokio::select! {
                ev = events.recv() => ev?,
                _ = interrupted(sigint) => return None,
            };
            self.profile.mark("watch: waiting for a change");
            let mut batch = self.classify(first);
            self.drain_window(events, &mut batch).await;
            self.profile.mark("watch: debounce window");
            if !batch.is_empty() {
                return Some(batch);
            }
        }
    }

    async fn drain_window(
        &self,
        events: &mut mpsc::UnboundedReceiver<notify::Result<Event>>,
        batch: &mut Batch,
    ) {
        let deadline = tokio::time::Instant::now() + self.args.debounce;
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, events.recv()).await {
            batch.merge(self.classify(ev));
        }
    }

    /// Turns one watcher event into a batch: ignored paths dropped, structure changes flagged.
    fn classify(&self, ev: notify::Result<Event>) -> Batch {
        let mut batch = Batch::default();
        let ev = match ev {
            Ok(ev) => ev,
            Err(_) => {
                // The watcher lost track (e.g. queue overflow): rescan everything.
                batch.structural = true;
                return batch;
            }
        };
        if ev.need_rescan() {
            batch.structural = true;
            return batch;
        }
        if matches!(ev.kind, EventKind::Access(_)) {
            return batch;
        }
        for path in &ev.paths {
            if let Some(rel) = path
                .strip_prefix(&self.out_root)
                .ok()
                .and_then(|r| r.to_str())
            {
                self.touched_outputs.borrow_mut().insert(rel.to_owned());
            }
        }
        let structural_kind = matches!(
            ev.kind,
            EventKind::Create(_)
                | EventKind::Remove(_)
                | EventKind::Modify(notify::event::ModifyKind::Name(_))
        );
        for path in ev.paths {
            let Some(rel) = self.relevant(&path) else {
                continue;
            };
            let name = rel.rsplit('/').next().unwrap_or(&rel);
            let known_source = self
                .state
                .as_ref()
                .is_some_and(|s| s.readers.contains_key(&rel))
                && path.is_file();
            if name == "BUILD" || name.ends_with(".star") || rel == "flow.toml" {
                batch.structural = true;
            } else if structural_kind && !known_source && !path.is_dir() {
                // A new, deleted or renamed file may change what a glob matches.
                batch.structural = true;
            }
            batch.paths.insert(rel);
        }
        batch
    }

    /// The workspace-relative path of `path` unless it is ignored.
    fn relevant(&self, path: &Path) -> Option<String> {
        let rel = path.strip_prefix(&self.ws.root).ok()?;
        if path.starts_with(&self.cache_dir) {
            return None;
        }
        if rel.components().any(|c| {
            let c = c.as_os_str();
            c == ".git" || c == ".flow" || c == "flow-out"
        }) {
            return None;
        }
        let is_dir = path.is_dir();
        if self
            .gitignore
            .matched_path_or_any_parents(rel, is_dir)
            .is_ignore()
        {
            return None;
        }
        let text = rel.to_str()?.to_owned();
        (!text.is_empty()).then_some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flow_cache::Digest;

    fn set(paths: &[&str]) -> BTreeSet<String> {
        paths.iter().map(|p| p.to_string()).collect()
    }

    fn file() -> OutputKind {
        OutputKind::File {
            digest: Digest::of(b""),
            size: 0,
            executable: false,
        }
    }

    #[test]
    fn an_output_is_touched_by_itself_its_directories_and_what_is_below_it() {
        let out = "pkg/out/a.txt";
        assert!(!touches(&set(&[]), out, &file()));
        assert!(touches(&set(&["pkg/out/a.txt"]), out, &file()));
        assert!(touches(&set(&["pkg/out"]), out, &file()));
        assert!(touches(&set(&["pkg"]), out, &file()));
        assert!(touches(&set(&[""]), out, &file()), "flow-out itself");
        assert!(touches(&set(&["pkg/out/a.txt/x"]), out, &file()));
        // Siblings and names that merely share a prefix are not.
        let others = set(&[
            "pkg/out/a.txt2",
            "pkg/out/a.txt-x/y",
            "pkg/out/b.txt",
            "pk",
            "pkg/o",
        ]);
        assert!(!touches(&others, out, &file()));
    }

    #[test]
    fn a_directory_output_is_touched_by_its_marker() {
        let tree = OutputKind::Tree {
            digest: Digest::of(b""),
            size: 0,
        };
        assert!(touches(&set(&["pkg/.gen.flow-tree"]), "pkg/gen", &tree));
        assert!(touches(&set(&["pkg/gen/deep/file"]), "pkg/gen", &tree));
        assert!(!touches(&set(&["pkg/.gen.flow-tree"]), "pkg/gen", &file()));
    }
}
