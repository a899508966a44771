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
//!    nothing; else go to 2, where only actions whose keys changed run. The watcher only says
//!    which nodes saw a change: those reading a changed source, and those with an output under
//!    `flow-out/` that an event touched and that is no longer as flow wrote it. The rebuilder's
//!    reuse decision (`rebuilder::reuse`) carries over every other task the last cycle
//!    finished, with its key and outputs (not keyed, not looked up).
//!
//! Each cycle holds the workspace lock (`lock.rs`) while it runs, and sweeps the outputs no
//! target declares after each analysis, as `flow build` does: a `flow build` or `flow clean`
//! started meanwhile waits for the cycle to end, and a cycle waits for them.
//!
//! Output: per cycle, a header naming what changed, the stable `[RAN]`/`[CACHED]`/`[FAILED]`
//! lines (actions that were merely up to date are not listed) and a summary; a cycle with
//! nothing to do prints nothing. Ctrl-C exits with 130 after killing running actions.
//!
//! Limits: re-analysis evaluates the whole workspace (fast enough at 1,000 packages; see
//! docs/watch.md); only the root `.gitignore` is read; one inotify watch per directory; an
//! output changed in the instant between a cycle's carry-over and the event's arrival is caught
//! one cycle later.

mod analyzed;
mod events;
mod last;

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::interrupts::Interrupts;
use flow_cache::FileState;
use flow_rules::{Label, PatternTerm};
use ignore::gitignore::Gitignore;
use notify::{Event, RecursiveMode, Watcher as _};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

use crate::analysis::{analyze, parse_patterns};
use crate::diagnostics::render;
use crate::error::Error;
use crate::hasher::{FileHasher, Hashed};
use crate::plan::{known_states, tool_identities, Plan};
use crate::rebuilder::Carried;
use crate::reporter::Reporter;
use crate::runner::{few_keyed, runtime_with_sigint, Control, Resolved, Runner};
use crate::session::{Session, SessionArgs};
use crate::stale::Declared;
use analyzed::Analyzed;
use last::LastCycle;

use events::{link_targets, root_gitignore, touches, Batch};

pub struct WatchArgs<'a> {
    pub patterns: &'a [String],
    /// `--cache-dir`, `-j`, `-k`.
    pub session: SessionArgs<'a>,
    pub debounce: Duration,
    pub clear: bool,
    pub colors: bool,
}

struct Watcher<'a> {
    session: Session,
    runtime: &'a Runtime,
    args: &'a WatchArgs<'a>,
    terms: Vec<PatternTerm>,
    known: HashMap<String, FileState>,
    /// The root `.gitignore`, read again at each analysis: events on what it excludes are
    /// dropped.
    gitignore: Gitignore,
    /// Workspace-relative targets of the symlinks among the files analysis read (a BUILD,
    /// `.star` or `.gitignore` that is a link): an event on one means analysing again.
    analysis_links: HashSet<String>,
    state: Option<Analyzed>,
    /// The last cycle's results, for carrying over what a batch cannot affect; `None` before
    /// the first cycle and after each analysis (node indices change).
    last: Option<LastCycle>,
    /// Nodes that read a source whose content changed since the last cycle started.
    dirty: BTreeSet<usize>,
    /// Paths below `flow-out/` (relative to it; "" for `flow-out` itself) that events touched
    /// since the last cycle started, flow's own writes included: a carried-over task with an
    /// output there (or above or below it) has its outputs checked again.
    touched_outputs: RefCell<BTreeSet<String>>,
    /// `FLOW_PROFILE=1`: the phases from a batch's first event to the cycle's run.
    profile: crate::profile::Profile,
}

/// Runs `flow watch`; returns the exit code (130 on Ctrl-C).
pub fn run(start: &Path, args: WatchArgs) -> Result<i32, Error> {
    let (runtime, mut sigint) = runtime_with_sigint(start)?;
    let terms = parse_patterns(args.patterns)?;
    let mut session = Session::open(start, args.session)?;
    session.check_out_root()?;
    session.cache()?;
    let root = session.ws.root.clone();
    let (tx, mut events) = mpsc::unbounded_channel::<notify::Result<Event>>();
    let mut watcher = notify::recommended_watcher(move |res| {
        let _ = tx.send(res);
    })
    .map_err(|e| watch_error(&root, e))?;
    watcher
        .watch(&root, RecursiveMode::Recursive)
        .map_err(|e| watch_error(&root, e))?;

    let gitignore = root_gitignore(&root);
    session.executor();
    let mut w = Watcher {
        session,
        runtime: &runtime,
        args: &args,
        terms,
        known: HashMap::new(),
        gitignore,
        analysis_links: HashSet::new(),
        state: None,
        last: None,
        dirty: BTreeSet::new(),
        touched_outputs: RefCell::new(BTreeSet::new()),
        profile: crate::profile::Profile::from_env(),
    };
    let code = runtime.block_on(w.main_loop(&mut events, &mut sigint));
    drop(watcher);
    let session = w.session;
    session.close(Some(runtime));
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

impl Watcher<'_> {
    async fn main_loop(
        &mut self,
        events: &mut mpsc::UnboundedReceiver<notify::Result<Event>>,
        sigint: &mut Option<Interrupts>,
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
            let header = if first {
                "flow watch: initial build".to_owned()
            } else {
                let root = &self.session.ws.root;
                let readers = self.state.as_ref().map(|s| &s.readers);
                batch.describe(|p| {
                    std::fs::symlink_metadata(root.join(p)).is_ok()
                        || readers.is_some_and(|r| r.contains_key(p))
                })
            };
            if need_analysis {
                let before: BTreeSet<String> = self.labels();
                match self.analyze() {
                    Ok(()) => {
                        self.profile.mark("watch: analysed");
                        need_analysis = false;
                        if failing {
                            crate::reporter::print_line("flow watch: the error is fixed");
                            failing = false;
                        }
                        let after = self.labels();
                        if !first {
                            let added: Vec<&String> = after.difference(&before).collect();
                            let removed: Vec<&String> = before.difference(&after).collect();
                            if !added.is_empty() {
                                crate::reporter::print_line(&format!(
                                    "flow watch: new targets: {}",
                                    join(&added)
                                ));
                            }
                            if !removed.is_empty() {
                                crate::reporter::print_line(&format!(
                                    "flow watch: removed targets: {}",
                                    join(&removed)
                                ));
                            }
                        }
                    }
                    Err(e) => {
                        failing = true;
                        if !first {
                            // What was saved, then what is wrong with it.
                            crate::reporter::print_line(&header);
                        }
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

            first = false;
            if self.args.clear && std::io::stdout().is_terminal() {
                crate::reporter::write_stdout(b"\x1b[2J\x1b[H");
            }
            let (summary_interrupted, superseded_by) = self.cycle(header, events, sigint).await;
            if summary_interrupted {
                return 130;
            }
            // Nobody reads what it prints any more (`flow watch | head`): end, as a process
            // killed by SIGPIPE would, between cycles.
            if crate::reporter::stdout_gone() {
                return 141;
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
        let root = self.session.ws.root.clone();
        self.session.ws = crate::workspace::Workspace::discover(&root)?;
        let (graph, analyzed) = analyze(&self.session.ws, &self.session.cache_dir)?;
        self.gitignore = root_gitignore(&root);
        self.analysis_links = analyzed
            .inputs
            .map(|i| {
                let stamped = i.stamps.iter().map(|(p, _)| p);
                link_targets(&root, stamped).map(|(_, t)| t).collect()
            })
            .unwrap_or_default();
        let selected = match crate::pipeline::nothing_declared(&graph, &self.terms) {
            Some(why) => {
                crate::reporter::print_line(&format!("flow watch: {why}"));
                Default::default()
            }
            None => graph.resolve_terms(&self.terms).map_err(Error::Unmatched)?,
        };
        let action_path = self.session.ws.config.action_path.clone();
        let plan = Arc::new(Plan::new(&graph, &selected, &action_path));
        let declared = Some(Declared::of(&graph));
        drop(graph);
        if self.known.is_empty() {
            let cache = self.session.cache()?;
            self.known = known_states(&cache, &root, &plan, &action_path)
                .map_err(|e| self.session.cache_error(e))?;
        }
        let hasher = FileHasher::new(self.known.clone());
        let sources = plan.all_sources();
        let paths: Vec<PathBuf> = sources.iter().map(|s| root.join(s)).collect();
        let digests: HashMap<String, Hashed> = sources
            .iter()
            .zip(hasher.digest_many(&paths))
            .filter_map(|(s, h)| h.ok().map(|h| (s.clone(), h)))
            .collect();
        let tools = tool_identities(&plan, &action_path, &hasher);
        self.known = hasher.snapshot();
        let mut readers: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, a) in plan.nodes.iter().enumerate() {
            for s in &a.srcs {
                readers.entry(s.clone()).or_default().push(i);
            }
        }
        let in_tree_outputs = plan
            .nodes
            .iter()
            .filter(|a| !a.sandbox)
            .flat_map(|a| {
                a.outs
                    .iter()
                    .map(|o| crate::expand::join_path(&a.package, o.trim_end_matches('/')))
            })
            .collect();
        let mut linked_sources: HashMap<String, Vec<String>> = HashMap::new();
        for (source, target) in link_targets(&root, sources.iter()) {
            linked_sources
                .entry(target)
                .or_default()
                .push(source.clone());
        }
        // A sweep still due from an earlier analysis is kept until a cycle runs it.
        let declared = declared.or(self.state.take().and_then(|s| s.declared));
        self.state = Some(Analyzed {
            plan,
            readers,
            linked_sources,
            in_tree_outputs,
            sources: digests,
            tools,
            declared,
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
            match hasher.digest(&self.session.ws.root.join(p)) {
                Ok(h) => {
                    // The x bit is part of the key, as the content is (a `chmod`).
                    let seen = |h: &Hashed| (h.digest, h.executable);
                    if state.sources.get(p).map(seen) != Some(seen(&h)) {
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
        self.dirty.extend(state.readers_of(&changed));
        !changed.is_empty()
    }

    /// What this cycle carries over: the watcher says which nodes saw a change (they read a
    /// changed source, or an event touched one of their outputs under `flow-out/` and it is no
    /// longer as flow wrote it), and the rebuilder's reuse decision does the rest. Outputs are
    /// checked only where events touched `flow-out/` (where the watcher cannot see it, a link
    /// to elsewhere, every time): a stat per output took ~10 ms a cycle at 1,000 packages.
    fn carry_set(&mut self, rebuilder: &crate::rebuilder::Rebuilder) -> Carried {
        let dirty = std::mem::take(&mut self.dirty);
        let touched = std::mem::take(&mut *self.touched_outputs.borrow_mut());
        let (Some(last), Some(state)) = (self.last.take(), &self.state) else {
            return Carried::none();
        };
        let out_root = &self.session.out_root;
        let watched = std::fs::symlink_metadata(out_root).map_or(true, |m| !m.is_symlink());
        let (last, failures) = last.results();
        let moved = last.iter().enumerate().filter_map(|(i, r)| {
            let staged = &r.as_ref()?.staged;
            let touched = !watched || staged.iter().any(|o| touches(&touched, &o.path, &o.kind));
            (touched && !rebuilder.staged_in_place(staged)).then_some(i)
        });
        let changed: Vec<usize> = dirty.iter().copied().chain(moved).collect();
        Carried::with_failures(&state.plan, last, failures, changed)
    }

    /// Runs one build cycle under the workspace lock. Returns (interrupted, the batch that
    /// superseded it, if any).
    async fn cycle(
        &mut self,
        header: String,
        events: &mut mpsc::UnboundedReceiver<notify::Result<Event>>,
        sigint: &mut Option<Interrupts>,
    ) -> (bool, Option<Batch>) {
        let handle = self.runtime.handle().clone();
        let locked = tokio::task::block_in_place(|| self.session.lock("watch", &handle, sigint));
        if locked.is_err() {
            return (true, None);
        }
        let state = self.state.as_mut().expect("analysed before a cycle");
        if let Some(declared) = state.declared.take() {
            crate::stale::sweep_undeclared(&self.session.out_root, &declared);
        }
        let ran = self.run_cycle(header, events, sigint).await;
        self.session.unlock();
        ran
    }

    async fn run_cycle(
        &mut self,
        header: String,
        events: &mut mpsc::UnboundedReceiver<notify::Result<Event>>,
        sigint: &mut Option<Interrupts>,
    ) -> (bool, Option<Batch>) {
        // The cycle borrows the sources and the file states and gives them back at the end:
        // copying the tables took milliseconds of each cycle's latency.
        let hasher = Arc::new(FileHasher::new(std::mem::take(&mut self.known)));
        let rebuilder = match self.session.rebuilder(hasher.clone()) {
            Ok(r) => r,
            Err(e) => {
                eprint!("{}", render(&e, self.args.colors));
                self.known = hasher.snapshot();
                return (false, None);
            }
        };
        let carried = self.carry_set(&rebuilder);
        let sources = std::mem::take(&mut self.state.as_mut().expect("analysed").sources);
        let state = self.state.as_ref().expect("analysed before a cycle");
        let runner = Runner {
            effects: None,
            groups: Some(self.session.groups()),
            plan: state.plan.clone(),
            rebuilder,
            executor: self.session.executor(),
            options: self.session.build_options(false),
        };
        let workspace = self.session.workspace_text();
        let cache = &runner.rebuilder.cache;
        let durations = match few_keyed(&state.plan, &carried) {
            Some(labels) => cache.durations_of(&workspace, &labels),
            None => cache.durations(&workspace),
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
        // Quiet when idle only while the screen's last summary is still true: after a cycle
        // that passed (not at the first one, not after a failure).
        let last_passed = self
            .last
            .as_ref()
            .is_some_and(|l| l.failures.iter().all(Option::is_none));
        let mut reporter =
            Reporter::for_watch_cycle(state.plan.actions().count(), header, last_passed);
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
                        if let Some(affected) = self.supersedes(&batch, &resolved) {
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
            failures: finished.failures,
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

    /// Whether a batch that arrived during a cycle supersedes it, and which running actions it
    /// cancels. Content decides: only changed bytes of an input, or a change to the graph.
    fn supersedes(&self, batch: &Batch, resolved: &Resolved) -> Option<BTreeSet<Label>> {
        let state = self.state.as_ref()?;
        if batch.structural {
            return Some(state.plan.nodes.iter().map(|a| a.label.clone()).collect());
        }
        let probe = FileHasher::new(HashMap::new());
        let root = &self.session.ws.root;
        let changed: BTreeSet<String> = batch
            .paths
            .iter()
            .filter(|p| state.readers.contains_key(*p))
            .filter(|p| {
                let now = probe.digest(&root.join(p)).ok().map(|h| h.digest);
                now != resolved.sources.get(*p).map(|h| h.digest)
            })
            .cloned()
            .collect();
        (!changed.is_empty()).then(|| state.affected(&changed))
    }
}
