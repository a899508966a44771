//! The pipeline up to the runner, assembled once for `flow build`, `flow explain` and
//! `flow watch`: from patterns to a plan, the carry set, hashed sources and tools, and the
//! rebuilder.
//!
//! 1. [`Session::prepare`]: the build record of these patterns, if current, gives the plan and
//!    each task's last result, and says which nodes saw a change ([`crate::record`]); else
//!    analysis gives the plan and nothing is known. Either way the rebuilder's reuse decision
//!    computes the carry set ([`Carried::compute`]). When it carries every action, the answer
//!    is the no-op ([`Start::NoOp`]), without the database, the lock or the runner. When
//!    nothing changed at all, that answer was taken when the record was written (the same
//!    decision on the same plan: `Record::no_op`), so the plan is not even decoded. Otherwise a
//!    build takes the workspace lock here, before anything is keyed; if another command held
//!    it, the record it read may be out of date, so it starts over from analysis.
//! 2. [`Session::resolve`]: hash the sources of what is not carried (the file-state table
//!    answers for unchanged files), identify the tools, read the expected durations.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use crate::interrupts::Interrupts;
use flow_cache::FileState;
use flow_rules::PatternTerm;
use tokio::runtime::Handle;

use crate::analysis::analyze;
use crate::error::Error;
use crate::hasher::FileHasher;
use crate::plan::{known_states, tool_identities, Plan};
use crate::rebuilder::Carried;
use crate::record::{self, Basis, Record, ToolStamps};
use crate::runner::{few_keyed, Resolved};
use crate::session::Session;

/// What a command that keys actions asks [`Session::prepare`] for.
pub struct Request<'a> {
    pub terms: &'a [PatternTerm],
    /// The patterns as given (names the build record).
    pub patterns: &'a [String],
    /// Take the workspace lock (a build) or not (`flow explain`, which writes nothing).
    pub lock: Option<(&'a Handle, &'a mut Option<Interrupts>)>,
    /// The command taking it, as another command waiting for the lock names it (`build`).
    pub command: &'static str,
    /// `--shard K/N`: only the selected targets this shard owns (`shard.rs`).
    pub shard: Option<crate::shard::Shard>,
    /// `--since REF`, resolved to a commit: only the selected targets affected since it
    /// (`affected.rs`).
    pub since: Option<&'a str>,
    /// `--materialize`: a build that leaves outputs in the cache neither reads nor writes the
    /// build record (which vouches for every output under `flow-out/`).
    pub materialize: crate::rebuilder::Materialize,
}

/// How a build starts.
/// Why there is nothing to do when `terms` ask for the whole workspace and it declares no
/// target yet (a new workspace, `flow init`): that is no error.
pub fn nothing_declared(
    graph: &crate::graph::TargetGraph,
    terms: &[flow_rules::PatternTerm],
) -> Option<&'static str> {
    let whole = terms.iter().all(|t| {
        !t.exclude && t.pattern == flow_rules::pattern::TargetPattern::Recursive(String::new())
    });
    (whole && graph.targets().is_empty()).then_some(
        "the workspace has no target yet (declare some in a `BUILD` file: \
         docs/build-language.md)",
    )
}

pub enum Start {
    /// The reuse decision carries every action: nothing to do. The labels of the actions.
    NoOp(Vec<String>),
    /// Something is keyed: the plan and what it needs.
    Plan(Box<Prepared>),
    /// Ctrl-C while waiting for the workspace lock.
    Interrupted,
    /// Nothing selected is left to build (`--shard`, `--since`): why, one line.
    Nothing(String),
}

/// A plan ready to be resolved and run.
pub struct Prepared {
    pub plan: Plan,
    /// The hasher's file-state table.
    known: HashMap<String, FileState>,
    /// The sources to hash (workspace-relative).
    sources: Vec<String>,
    /// Tool identities when already known.
    tools: Option<HashMap<String, String>>,
    pub carried: Carried,
    pub touch_carried: bool,
    /// When the carried tasks' entries were last marked used.
    pub touched_at_ms: i64,
    /// What the next build record is made from (`None`: analysis took no snapshot).
    pub basis: Option<Basis>,
    /// Where the record of this request lives.
    pub record_path: PathBuf,
}

/// A plan with its inputs resolved: what the runner takes.
pub struct Ready {
    pub plan: Arc<Plan>,
    pub hasher: Arc<FileHasher>,
    pub resolved: Resolved,
    pub basis: Option<Basis>,
    pub touched_at_ms: i64,
    pub record_path: PathBuf,
}

impl Session {
    /// Step 1 of the module docs.
    pub fn prepare(&mut self, req: Request) -> Result<Start, Error> {
        let profile = crate::profile::Profile::from_env();
        if req.lock.is_some() {
            self.check_out_root()?;
        }
        let mut request = record::request(req.patterns, req.shard.as_ref());
        if let Some(commit) = req.since {
            request.push_str(&format!("\nsince {commit}"));
        }
        let config = record::config_digest(&self.ws.config);
        let record_path = record::path(&self.cache_dir, &self.ws.root, &request);
        let mut no_op = None;
        // Under `--since`, what is selected depends on every file of the workspace, not only on
        // what the plan reads: the build record, which stamps the plan's inputs, cannot vouch
        // for it. Such a build always analyses, and leaves no record.
        let all = req.materialize == crate::rebuilder::Materialize::All;
        let record = match req.since {
            None if all => Record::load(&record_path, &request, &config),
            _ => None,
        };
        let opened = record.and_then(|r| {
            let changes = r.check(&self.ws.root)?;
            if let Some(labels) = r.no_op(&changes, &self.clock) {
                no_op = Some(labels.to_vec());
                return None;
            }
            r.open(&changes, &self.clock)
        });
        profile.mark("build record");
        if let Some(labels) = no_op {
            return Ok(Start::NoOp(labels));
        }
        let mut lock = req.lock;
        if let Some(mut opened) = opened {
            let last = std::mem::take(&mut opened.last);
            let carried = Carried::compute(&opened.plan, last, opened.changed.iter().copied());
            profile.mark("reuse decision: carry set");
            if carried.covers(&opened.plan) && !opened.touch {
                let labels = opened
                    .plan
                    .actions()
                    .map(|i| opened.plan.nodes[i].label.to_string())
                    .collect();
                return Ok(Start::NoOp(labels));
            }
            profile.mark("plan from the build record");
            let waited = match &mut lock {
                Some((runtime, sigint)) => match self.lock(req.command, runtime, sigint) {
                    Err(_) => return Ok(Start::Interrupted),
                    Ok(waited) => waited,
                },
                None => false,
            };
            profile.mark("lock");
            if !waited {
                let (touch, touched_at_ms) = (opened.touch, opened.touched_at_ms);
                if let Some(keyed) = opened.keyed(&self.ws.root, &carried) {
                    return Ok(Start::Plan(Box::new(Prepared {
                        plan: keyed.plan,
                        known: keyed.known,
                        sources: keyed.sources,
                        tools: Some(keyed.tools),
                        carried,
                        touch_carried: touch,
                        touched_at_ms,
                        basis: Some(Basis::Record(keyed.previous)),
                        record_path,
                    })));
                }
            }
        }
        let (graph, analyzed) = analyze(&self.ws, &self.cache_dir)?;
        profile.mark("analysis");
        // Outputs that no target declares any more are swept (by a build: `stale.rs`).
        let declared = lock.is_some().then(|| crate::stale::Declared::of(&graph));
        if let Some(why) = nothing_declared(&graph, req.terms) {
            return Ok(Start::Nothing(why.into()));
        }
        let selected: BTreeSet<usize> = graph.resolve_terms(req.terms).map_err(Error::Unmatched)?;
        let selected = match req.since {
            Some(commit) => {
                let total = selected.len();
                let scratch = self.cache()?.cas().temp_path();
                let affected = crate::affected::affected(
                    &self.ws,
                    &graph,
                    commit,
                    &scratch,
                    &self.cache_dir,
                    analyzed.inputs.as_ref(),
                )?;
                let left: BTreeSet<usize> = selected.intersection(&affected).copied().collect();
                if left.is_empty() {
                    let short = &commit[..commit.len().min(12)];
                    return Ok(Start::Nothing(format!(
                        "none of the {total} selected target(s) is affected since {short}"
                    )));
                }
                left
            }
            None => selected,
        };
        let selected = match &req.shard {
            Some(shard) => {
                let total = selected.len();
                let owned = shard.select(&graph, selected);
                if owned.is_empty() {
                    return Ok(Start::Nothing(format!(
                        "shard {shard} owns none of the {total} selected target(s)"
                    )));
                }
                owned
            }
            None => selected,
        };
        let plan = Plan::new(&graph, &selected, &self.ws.config.action_path);
        drop(graph);
        let cache = self.cache()?;
        if let Some((runtime, sigint)) = lock {
            if self.lock(req.command, runtime, sigint).is_err() {
                return Ok(Start::Interrupted);
            }
            if let Some(declared) = &declared {
                crate::stale::sweep_undeclared(&self.out_root, declared);
            }
        }
        let action_path = &self.ws.config.action_path;
        let known = known_states(&cache, &self.ws.root, &plan, action_path)
            .map_err(|e| self.cache_error(e))?;
        let tool_stamps = ToolStamps::take(&plan, action_path);
        profile.mark("plan, open cache, load file states");
        Ok(Start::Plan(Box::new(Prepared {
            sources: plan.all_sources(),
            plan,
            known,
            tools: None,
            carried: Carried::none(),
            touch_carried: false,
            touched_at_ms: self.clock.now_ms(),
            basis: analyzed
                .inputs
                .filter(|_| req.since.is_none() && all)
                .map(|analysis| Basis::Analysis {
                    analysis,
                    tool_stamps,
                }),
            record_path,
        })))
    }

    /// Step 2 of the module docs.
    pub fn resolve(&mut self, prepared: Box<Prepared>) -> Result<Ready, Error> {
        let cache = self.cache()?;
        let plan = Arc::new(prepared.plan);
        let hasher = Arc::new(FileHasher::new(prepared.known));
        // Hash the sources in parallel; an unreadable one fails the actions that read it.
        let paths: Vec<_> = prepared
            .sources
            .iter()
            .map(|s| self.ws.root.join(s))
            .collect();
        let sources = prepared
            .sources
            .iter()
            .zip(hasher.digest_many(&paths))
            .filter_map(|(s, h)| Some((s.clone(), h.ok()?)))
            .collect();
        let tools = prepared
            .tools
            .unwrap_or_else(|| tool_identities(&plan, &self.ws.config.action_path, &hasher));
        let workspace = self.workspace_text();
        // Expected durations order the critical path; when only a few actions are keyed, only
        // theirs are read.
        let durations = match few_keyed(&plan, &prepared.carried) {
            Some(labels) => cache.durations_of(&workspace, &labels),
            None => cache.durations(&workspace),
        }
        .unwrap_or_default();
        Ok(Ready {
            plan,
            hasher,
            resolved: Resolved {
                sources,
                tools,
                durations,
                carried: prepared.carried,
                touch_carried: prepared.touch_carried,
            },
            basis: prepared.basis,
            touched_at_ms: prepared.touched_at_ms,
            record_path: prepared.record_path,
        })
    }
}
