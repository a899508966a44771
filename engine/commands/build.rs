//! `flow build [PATTERNS] [-j N] [-k]`: analyse, plan the closure of the selected targets, hash
//! the sources, and run the owner loop.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use flow_rules::PatternTerm;
use tokio::signal::unix::{signal, SignalKind};

use crate::analysis::{load_graph, open_cache, parse_patterns};
use crate::error::Error;
use crate::executor::SandboxExecutor;
use crate::hasher::FileHasher;
use crate::plan::{known_states, tool_identities, Plan};
use crate::rebuilder::Rebuilder;
use crate::reporter::Reporter;
use crate::runner::{BuildOptions, Resolved, Runner};

pub struct BuildArgs<'a> {
    pub patterns: &'a [String],
    pub jobs: Option<usize>,
    pub keep_going: bool,
    pub cache_dir: Option<&'a Path>,
}

pub fn run(start: &Path, args: BuildArgs) -> Result<i32, Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Io {
            path: start.to_path_buf(),
            action: "start the async runtime in",
            error: e.to_string(),
        })?;
    // Registered before anything else, so that Ctrl-C at any moment is handled by the runner
    // (or, before it starts, simply ends the process: nothing is recorded before the runner).
    let sigint = runtime
        .block_on(async { signal(SignalKind::interrupt()) })
        .ok();
    let terms: Vec<PatternTerm> = parse_patterns(args.patterns)?;
    let (ws, graph, cache_dir) = load_graph(start, args.cache_dir)?;
    let selected: BTreeSet<usize> = graph.resolve_terms(&terms).map_err(Error::Unmatched)?;
    let plan = Arc::new(Plan::new(&graph, &selected, &ws.config.action_path));
    drop(graph);
    let cache = Arc::new(open_cache(&cache_dir)?);

    let known = known_states(&cache, &ws.root, &plan, &ws.config.action_path).map_err(|e| {
        Error::Cache {
            path: cache_dir.clone(),
            error: e.to_string(),
        }
    })?;
    let hasher = Arc::new(FileHasher::new(known));

    // Hash every source in parallel; an unreadable one fails the actions that read it.
    let sources = plan.all_sources();
    let paths: Vec<_> = sources.iter().map(|s| ws.root.join(s)).collect();
    let mut digests = HashMap::new();
    for (s, h) in sources.iter().zip(hasher.digest_many(&paths)) {
        if let Ok(h) = h {
            digests.insert(s.clone(), h);
        }
    }
    let tools = tool_identities(&plan, &ws.config.action_path, &hasher);
    let workspace = ws.root.display().to_string();
    let durations = cache.durations(&workspace).unwrap_or_default();
    let resolved = Resolved {
        sources: digests,
        tools,
        durations,
    };
    let jobs = args
        .jobs
        .or(ws.config.jobs)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let rebuilder = Arc::new(Rebuilder {
        cache: cache.clone(),
        hasher,
        out_root: ws.root.join("flow-out"),
        workspace_root: ws.root.clone(),
    });
    let executor = Arc::new(SandboxExecutor::new(cache_dir.join("sandbox")));
    let runner = Runner {
        plan: plan.clone(),
        rebuilder,
        executor,
        options: BuildOptions {
            jobs,
            keep_going: args.keep_going || ws.config.keep_going,
            workspace,
        },
    };
    let actions = plan.nodes.iter().filter(|a| !a.is_group).count();
    let mut reporter = Reporter::new(actions);
    let summary = runtime.block_on(runner.run(&resolved, &mut reporter, sigint));
    Ok(if summary.interrupted {
        130
    } else if summary.failed > 0 {
        1
    } else {
        0
    })
}
