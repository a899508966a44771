//! `flow build [PATTERNS] [-j N] [-k] [REPORT FLAGS]`: open a session, prepare the pipeline
//! (`pipeline.rs`: the build record or analysis, the reuse decision's carry set, the workspace
//! lock), run the owner loop, write the next build record, then the reports (`reports/`).
//!
//! The ways through (docs/build.md, "What a build does"):
//! - the reuse decision carries every action (nothing any of them reads changed, and none is
//!   of a kind that is never reused): print the no-op report and exit, taking no lock and
//!   opening no database;
//! - otherwise the runner asks the same decision about each action (carried, cached, or run).
//!
//! Before building, what dead flow processes left in the cache's `tmp/` and `sandbox/` is
//! removed too (`Cache::sweep_orphans`, and the session's sandbox root for sandboxes on a
//! tmpfs), so a killed build costs nothing but its lost work.

use std::cell::OnceCell;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Instant;

use crate::analysis::parse_patterns;
use crate::error::Error;
use crate::pipeline::{Ready, Request, Start};
use crate::plan::Plan;
use crate::profile::Profile;
use crate::rebuilder::{kept_in_cache, Materialize};
use crate::record::{self, Basis, Capture};
use crate::reporter::{Reporter, Summary};
use crate::reports::{Context, Reports, Wanted};
use crate::runner::{runtime_with_sigint, Finished, Runner};
use crate::session::{Session, SessionArgs};

pub struct BuildArgs<'a> {
    pub patterns: &'a [String],
    /// `--cache-dir`, `-j`, `-k`.
    pub session: SessionArgs<'a>,
    /// `-q`: only failures, warnings and the summary line.
    pub quiet: bool,
    /// `--events`, `--junit`, `--profile`, `--annotations`, `--summary` (and GitHub's
    /// environment).
    pub reports: Wanted,
    /// `--emergency --reason TEXT [--approved-by NAME]`.
    pub emergency: Option<crate::delivery::window::Emergency>,
    /// `--shard K/N`.
    pub shard: Option<crate::shard::Shard>,
    /// `--since REF`.
    pub since: Option<&'a str>,
    /// `--materialize`: which outputs are written under `flow-out/`.
    pub materialize: Materialize,
}

impl<'a> BuildArgs<'a> {
    /// A plain build of `labels` (no report, no shard, no `--since`), as another command runs
    /// one (`flow test`, the pre-commit check).
    pub fn of_labels(labels: &'a [String], session: SessionArgs<'a>) -> BuildArgs<'a> {
        BuildArgs {
            patterns: labels,
            session,
            quiet: false,
            reports: Wanted::default(),
            emergency: None,
            shard: None,
            since: None,
            materialize: Materialize::All,
        }
    }
}

pub fn run(start: &Path, args: BuildArgs) -> Result<i32, Error> {
    let began = Instant::now();
    let profile = Profile::from_env();
    let terms = parse_patterns(args.patterns)?;
    let mut session = Session::open(start, args.session)?;
    // The commit `--since` names, resolved once: the build record is per commit.
    let since = match args.since {
        Some(r) => Some(crate::affected::resolve(&session.ws.root, r)?),
        None => None,
    };
    let mut events = match &args.reports.events {
        Some(path) => Some(open_events(path).map_err(|e| Error::Io {
            path: path.clone(),
            action: "create",
            error: e.to_string(),
        })?),
        None => None,
    };
    let mut reporter = |total: usize| {
        let reporter = Reporter::new(total).quiet(args.quiet);
        match args.reports.any() {
            true => {
                let reports = Reports::new(args.reports.clone(), events.take(), began);
                reporter.with_reports(reports)
            }
            false => reporter,
        }
    };
    let (runtime, mut sigint) = runtime_with_sigint(start)?;
    let request = Request {
        terms: &terms,
        patterns: args.patterns,
        lock: Some((runtime.handle(), &mut sigint)),
        command: "build",
        shard: args.shard.clone(),
        since: since.as_deref(),
        materialize: args.materialize,
    };
    let prepared = match session.prepare(request)? {
        Start::NoOp(labels) => {
            let mut reporter = reporter(labels.len());
            for l in &labels {
                reporter.decided(l, "carried", None);
            }
            reporter.replay_cached(&labels);
            let summary = Summary {
                cached: labels.len(),
                ..Summary::default()
            };
            reporter.summary(&summary, began.elapsed());
            let after = After::new(&session, since.as_deref(), &args.reports);
            after.reports(&mut reporter, &summary, None, None);
            return Ok(0);
        }
        Start::Interrupted => return Ok(130),
        Start::Nothing(why) => {
            println!("flow: ok: {why}; nothing to do");
            // Empty reports still say the build passed.
            let mut reporter = reporter(0);
            let after = After::new(&session, since.as_deref(), &args.reports);
            after.reports(&mut reporter, &Summary::default(), None, Some(&why));
            return Ok(0);
        }
        Start::Plan(p) => p,
    };
    let cache = session.cache()?;
    // Best effort: a failure leaves them for `flow cache verify --fix`.
    let _ = cache.sweep_orphans();
    let ready = session.resolve(prepared)?;
    profile.mark("hash sources and tools");
    let mut warnings = Vec::new();
    let effects = crate::delivery::policy::open_effects(
        &mut session,
        &ready.plan,
        args.emergency,
        &mut |w| warnings.push(w),
    )?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    let runner = Runner {
        effects,
        groups: Some(session.groups()),
        plan: ready.plan.clone(),
        rebuilder: session.rebuilder_keeping(
            ready.hasher.clone(),
            kept_in_cache(&ready.plan, args.materialize),
        )?,
        executor: session.executor(),
        options: session.build_options(true),
    };
    let mut reporter = reporter(ready.plan.actions().count());
    profile.mark("history");
    let finished =
        runtime.block_on(runner.run_to_end(&ready.resolved, &mut reporter, &mut sigint, None));
    profile.mark("run");
    drop(runner);
    let plan = ready.plan.clone();
    write_record(
        &session,
        &match &since {
            Some(commit) => format!(
                "{}\nsince {commit}",
                record::request(args.patterns, args.shard.as_ref())
            ),
            None => record::request(args.patterns, args.shard.as_ref()),
        },
        ready,
        &finished,
    );
    profile.mark("build record written");
    let after = After::new(&session, since.as_deref(), &args.reports);
    after.reports(&mut reporter, &finished.summary, Some(&plan), None);
    drop(reporter);
    profile.mark("reports written");
    session.close(Some(runtime));
    profile.mark("sandboxes removed");
    let summary = &finished.summary;
    Ok(if summary.interrupted {
        130
    } else if summary.failed > 0 {
        1
    } else {
        0
    })
}

/// After a build in which every planned action succeeded, writes the next build record from
/// the states the build used; after any other outcome, removes it.
fn write_record(session: &Session, request: &str, ready: Ready, finished: &Finished) {
    let summary = &finished.summary;
    let all_ok = !summary.interrupted
        && summary.failed == 0
        && summary.quarantined == 0
        && summary.skipped == 0
        && summary.not_started == 0;
    let basis: Option<Basis> = ready.basis.filter(|_| all_ok);
    let Some(basis) = basis else {
        record::forget(&ready.record_path);
        return;
    };
    let resolved = &ready.resolved;
    let touched_at_ms = if resolved.carried.is_empty() || resolved.touch_carried {
        session.clock.now_ms()
    } else {
        ready.touched_at_ms
    };
    ready.hasher.with_states(|states| {
        Capture {
            request,
            config: record::config_digest(&session.ws.config),
            tools: &resolved.tools,
            plan: &ready.plan,
            staged: &finished.staged,
            keys: &finished.keys,
            states,
            root: &session.ws.root,
            out_root: &session.out_root,
            touched_at_ms,
        }
        .write(&ready.record_path, basis)
    });
}

/// What the reports need once the build ended (`reports::Context`).
struct After<'a> {
    session: &'a Session,
    since: Option<&'a str>,
    wanted: &'a Wanted,
}

impl<'a> After<'a> {
    fn new(session: &'a Session, since: Option<&'a str>, wanted: &'a Wanted) -> After<'a> {
        After {
            session,
            since,
            wanted,
        }
    }

    /// Writes the reports fed to `reporter`; what cannot be written is a warning on stderr.
    fn reports(
        &self,
        reporter: &mut Reporter,
        summary: &Summary,
        plan: Option<&Plan>,
        nothing: Option<&str>,
    ) {
        let Some(reports) = reporter.take_reports() else {
            return;
        };
        let ws = &self.session.ws;
        let github = self.wanted.annotations || self.wanted.summary.is_some();
        let changed = match self.since {
            Some(commit) if github => crate::affected::changed_files(&ws.root, commit),
            _ => BTreeSet::new(),
        };
        let repo_prefix = match self.wanted.annotations {
            true => crate::affected::repo_prefix(&ws.root),
            false => String::new(),
        };
        // Where targets are declared, from the analysis (its snapshot), asked only when a
        // failure is to be placed.
        let targets: OnceCell<HashMap<String, (String, u32)>> = OnceCell::new();
        let cache_dir = &self.session.cache_dir;
        let locate = |label: &str| {
            targets
                .get_or_init(|| match crate::analysis::analyze(ws, cache_dir) {
                    Ok((graph, _)) => graph
                        .targets()
                        .iter()
                        .map(|t| {
                            let (line, _) = t.at.line_col();
                            (t.label.to_string(), (t.at.file.clone(), line as u32))
                        })
                        .collect(),
                    Err(_) => HashMap::new(),
                })
                .get(label)
                .cloned()
        };
        let ctx = Context {
            root: &ws.root,
            out_root: &self.session.out_root,
            plan,
            locate: &locate,
            changed: &changed,
            repo_prefix: &repo_prefix,
            nothing,
        };
        for problem in reports.write(summary, &ctx) {
            eprintln!("warning: {problem}");
        }
    }
}

/// Opens the `--events` file for writing, truncated: a regular file is created (and its
/// directory, as for the other reports); a FIFO needs a reader already there (opening it waits
/// for none: an error instead of a build that never starts), and is then written to as any file.
fn open_events(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(nix::libc::ENXIO) => std::io::Error::other("a FIFO with no reader"),
            _ => e,
        })?;
    let flags = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL)?;
    let blocking = nix::fcntl::OFlag::from_bits_truncate(flags) - nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(blocking))?;
    Ok(file)
}
