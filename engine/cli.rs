//! The command line: `flow [-C DIR] COMMAND ...`, parsed with clap. Each command lives in its own
//! module under `commands/`; this file only declares the arguments and dispatches.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::diagnostics::ColorMode;
use crate::error::Error;
use crate::query::OutputFormat;

#[derive(Debug, Parser)]
#[command(
    name = "flow",
    version,
    // Our own `help` (below): clap's refuses `flow help --help` (exit 2).
    disable_help_subcommand = true,
    about = "A declarative, content-hashed build graph for monorepo CI/CD pipelines",
    after_help = "Exit codes: 0 success, 1 a target failed, 2 bad input or usage, 130 interrupted."
)]
pub struct Cli {
    /// Run as if flow was started in DIR (the workspace is found by walking up from there)
    #[arg(short = 'C', value_name = "DIR", global = true)]
    pub dir: Option<PathBuf>,

    /// When to use colors in messages
    #[arg(long, value_enum, default_value_t = ColorMode::Auto, global = true)]
    pub color: ColorMode,

    /// The cache directory (default: `[cache] dir` of flow.toml, else `.flow` in the workspace;
    /// the FLOW_CACHE_DIR environment variable overrides the default)
    #[arg(long, value_name = "DIR", global = true)]
    pub cache_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of the largest variant (`build`'s flags) costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build targets: run each action whose inputs changed, restore the rest from the cache
    Build {
        /// Target patterns (`//...`, `//pkg/...`, `//pkg:all`, `//pkg:name`); default `//...`.
        /// To exclude with `-PATTERN`, put the patterns after `--`, as in Bazel:
        /// `flow build -- //... -//deploy/...`
        patterns: Vec<String>,
        /// Actions to run at once (default: `[build] jobs`, else the number of cores)
        #[arg(short, long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
        jobs: Option<u16>,
        /// Keep going after a failure: run everything that does not depend on it
        #[arg(short = 'k', long)]
        keep_going: bool,
        /// Print only failures, warnings and the summary line
        #[arg(short, long)]
        quiet: bool,
        /// Use the remote cache at URL (REAPI v2, grpc://HOST:PORT; default: `[remote] url`)
        #[arg(long, value_name = "URL")]
        remote_cache: Option<String>,
        /// Whether this build writes to the remote cache (default: `[remote] upload`, else
        /// true in CI and false elsewhere and for pull requests)
        #[arg(long, value_name = "BOOL")]
        remote_upload: Option<bool>,
        /// Run nothing: print what the build would do with each action and why (what `flow
        /// explain` says, from the same reuse decision)
        #[arg(long, conflicts_with_all = [
            "since", "shard", "emergency", "junit", "events", "profile", "summary",
            "annotations", "quiet",
        ])]
        dry_run: bool,
        /// Write the build's events to FILE as JSON lines, as they happen (schema in
        /// docs/reports.md): each action's decision, start and outcome with its key and time
        #[arg(long, value_name = "FILE")]
        events: Option<PathBuf>,
        /// Deploy even outside the environments' deployment windows (needs `--reason`;
        /// recorded in the ledger with the user)
        #[arg(long, requires = "reason")]
        emergency: bool,
        /// Why the emergency deploy cannot wait (recorded in the ledger)
        #[arg(long, value_name = "TEXT", requires = "emergency")]
        reason: Option<String>,
        /// Who approved the emergency deploy, where the environment requires an approval
        #[arg(long, value_name = "NAME", requires = "emergency")]
        approved_by: Option<String>,
        /// Build only the selected targets shard K of N owns (with their dependencies): the
        /// same partition on every machine, by a hash of each label
        #[arg(long, value_name = "K/N", value_parser = crate::shard::Shard::parse)]
        shard: Option<crate::shard::Shard>,
        /// Balance `--shard` by the run times of an earlier build's `--events` FILE (longest
        /// first, each to the least loaded shard) instead of by label hash
        #[arg(long, value_name = "FILE", requires = "shard")]
        shard_timings: Option<PathBuf>,
        /// Build only the selected targets whose definition or inputs differ from those at
        /// the git commit REF (by content: static keys computed on both sides)
        #[arg(long, value_name = "REF")]
        since: Option<String>,
        /// Write a JUnit XML report of the build to FILE: each action a test case, and the
        /// test cases of the actions' own JUnit outputs under their target
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// Write a Chrome trace of the build to FILE (opens in Perfetto): one track per job
        /// slot, and the critical path
        #[arg(long, value_name = "FILE")]
        profile: Option<PathBuf>,
        /// Print GitHub annotations for failures (workflow commands on stdout; on by itself
        /// when GITHUB_ACTIONS=true)
        #[arg(long)]
        annotations: bool,
        /// Append a Markdown summary of the build to FILE (by itself to $GITHUB_STEP_SUMMARY
        /// when GITHUB_ACTIONS=true)
        #[arg(long, value_name = "FILE")]
        summary: Option<PathBuf>,
        /// Which outputs are written under flow-out/: all (the default); targets: those of
        /// the targets the patterns name; needed: only what is read there (reports, gate
        /// tables, directory outputs, inputs of unsandboxed actions and effects). The others
        /// stay in the cache; `flow build` writes them later without running anything
        #[arg(long, value_name = "WHAT", default_value = "all")]
        materialize: crate::rebuilder::Materialize,
    },
    /// Build, then rebuild exactly what each save affects, cancelling stale work (Ctrl-C stops)
    Watch {
        /// Target patterns, as for `build`; default `//...`
        patterns: Vec<String>,
        /// Actions to run at once (default: `[build] jobs`, else the number of cores)
        #[arg(short, long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
        jobs: Option<u16>,
        /// Keep going after a failure within a cycle
        #[arg(short = 'k', long)]
        keep_going: bool,
        /// How long to collect file events after the first one before acting, in milliseconds
        #[arg(long, value_name = "MS", default_value_t = 30)]
        debounce: u64,
        /// Clear the terminal before each cycle
        #[arg(long)]
        clear: bool,
    },
    /// Print the logs of the last run of a target (cached or not)
    Log {
        /// The target, e.g. `//app:test`
        label: String,
    },
    /// Say what the next build would do with a target (carry it over, use its cached result,
    /// restore it, or run it) and which inputs changed; with a pattern or several targets, one
    /// line per action of `flow build` of the same arguments
    Explain {
        /// The target, e.g. `//app:test`, or target patterns as for `build`; default `//...`
        patterns: Vec<String>,
    },
    /// Inspect or trim the cache
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Remove the materialized outputs (`flow-out/`); with `--cache`, empty the cache too
    Clean {
        /// Also remove every cached result, blob, file state and history row
        #[arg(long)]
        cache: bool,
    },
    /// Create a `flow.toml` in DIR (default: the current directory or `-C DIR`)
    Init {
        /// Where to create the workspace
        dir: Option<PathBuf>,
    },
    /// Show the deploy ledger: what is live in each environment, since when, from which
    /// commit; with ENV, that environment's history, newest first
    Ledger {
        /// An environment, e.g. `production`
        environment: Option<String>,
        /// Print the entries as a JSON array
        #[arg(long)]
        json: bool,
    },
    /// A quality report of the workspace as its last build left it (gates, coverage, tests,
    /// findings, what the last build ran): Markdown on stdout, or one HTML page
    Report {
        /// Write a self-contained HTML page to FILE instead (`-`: to stdout)
        #[arg(long, value_name = "FILE")]
        html: Option<std::path::PathBuf>,
        /// Print the report as JSON
        #[arg(long, conflicts_with = "html")]
        json: bool,
        /// List the findings that are new against FILE, the `flow report --json` of the base
        /// (the target branch's build)
        #[arg(long, value_name = "FILE")]
        base: Option<std::path::PathBuf>,
    },
    /// Delivery and build metrics over the last N days: DORA per environment from the deploy
    /// ledger; cache hit rate, slowest, most-run and flaky targets from the history
    Metrics {
        /// The period: the last N days
        #[arg(long, default_value_t = 30, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=36_500))]
        days: u32,
        /// Only this environment's DORA metrics
        #[arg(long = "env", value_name = "ENV")]
        environment: Option<String>,
        /// Only the flaky targets
        #[arg(long)]
        flaky: bool,
        /// Print the metrics as JSON
        #[arg(long)]
        json: bool,
    },
    /// A remote cache (REAPI v2): `flow remote check URL` says what it offers
    Remote {
        #[command(subcommand)]
        command: crate::commands::remote::RemoteCommand,
    },
    /// Deploy an earlier artifact again, restored from the cache (no rebuild): `flow rollback
    /// production`, or `--to N` artifacts back, or `--to DIGEST`; recorded in the ledger
    Rollback {
        /// An environment (`production`) or a deploy's label (`//deploy:production`)
        target: String,
        /// How many artifacts back (1 = the one live before the current one), or a digest prefix
        #[arg(long, value_name = "N|DIGEST")]
        to: Option<String>,
    },
    /// Print the selected targets (default `//...`) whose definition or inputs differ from
    /// those at the git commit REF, one a line: what `flow build --since REF` builds
    Affected {
        /// The commit to compare with (a branch, a tag, a hash)
        #[arg(long, value_name = "REF", required = true)]
        since: String,
        /// Target patterns, as for `build`
        patterns: Vec<String>,
    },
    /// Ask about the target graph: `flow query 'deps(//app:test)'`
    Query {
        /// A query expression: target patterns, deps(), rdeps(), somepath(), allpaths(), kind(),
        /// attr(), filter(), and the set operators + - ^ (see docs/query.md)
        expr: String,
        /// Output format
        #[arg(long, value_enum, default_value_t = OutputFormat::Label)]
        output: OutputFormat,
    },
    /// Install or remove flow's git pre-commit hook, which builds the targets tagged
    /// `precommit` that the staged changes affect, on the staged content
    Hooks {
        #[command(subcommand)]
        command: HooksCommand,
    },
    /// Build a target, then run a program it provides in the current directory, its outputs
    /// first on PATH and PYTHONPATH: `flow run //:dev_tools_py3_11 -- ruff format src/`
    Run {
        /// The target, e.g. `//:dev_tools_py3_11`
        label: String,
        /// The program and its arguments; for a target whose one output is an executable file,
        /// its arguments
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Build the test targets among PATTERNS (py_test's, and targets tagged `test`), then print
    /// a test summary per target and Python version from their JUnit outputs
    Test {
        /// Target patterns, as for `build`; default `//...`
        patterns: Vec<String>,
        /// Actions to run at once (default: `[build] jobs`, else the number of cores)
        #[arg(short, long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
        jobs: Option<u16>,
    },
    /// Print the help of flow or of one of its commands (`flow help build`)
    Help {
        /// The command (and subcommand: `flow help cache gc`)
        command: Vec<String>,
    },
    /// Write a CI configuration that builds the workspace: pull requests build what they
    /// affect, pushes build everything, over shards, with the cache kept (docs/ci.md)
    Ci {
        #[command(subcommand)]
        command: CiCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum HooksCommand {
    /// Write the pre-commit hook (an existing hook is kept aside and run first)
    Install,
    /// Remove flow's pre-commit hook and restore the one it replaced
    Uninstall,
    /// Run a hook's check now, as git does: `flow hooks run pre-commit`
    Run {
        /// The hook
        #[arg(value_parser = ["pre-commit"])]
        hook: String,
    },
}

pub use crate::commands::cache::CacheCommand;
pub use crate::commands::ci::CiCommand;

impl Cli {
    /// Whether the command only prints (a report, a list): then a reader that goes away (`|
    /// head`) ends it quietly, as it ends `ls` or `git log` (the default action of SIGPIPE),
    /// rather than with a panic on a failed write.
    pub fn only_prints(&self) -> bool {
        matches!(
            self.command,
            Command::Query { .. }
                | Command::Explain { .. }
                | Command::Test { .. }
                | Command::Build { dry_run: true, .. }
                | Command::Log { .. }
                | Command::Affected { .. }
                | Command::Ledger { .. }
                | Command::Metrics { .. }
                | Command::Report { html: None, .. }
                | Command::Cache {
                    command: CacheCommand::Stats
                }
        )
    }

    /// Whether GitHub's workflow commands are stopped while the command runs: for the commands
    /// that run actions (their output is not flow's), under GitHub Actions or with
    /// `--annotations` (`reports/github.rs`).
    pub fn stops_workflow_commands(&self) -> bool {
        let github = crate::reports::github::in_github_actions();
        match &self.command {
            Command::Build { annotations, .. } => *annotations || github,
            Command::Hooks { .. }
            | Command::Rollback { .. }
            | Command::Watch { .. }
            | Command::Test { .. } => github,
            _ => false,
        }
    }

    /// The directory commands start from.
    pub fn start_dir(&self) -> Result<PathBuf, Error> {
        match &self.dir {
            Some(d) => Ok(d.clone()),
            None => std::env::current_dir().map_err(|e| Error::Io {
                path: PathBuf::from("."),
                action: "read the current directory",
                error: e.to_string(),
            }),
        }
    }

    /// `patterns` with those relative to the package of the directory flow starts in made
    /// absolute, as in Bazel: `:name`, `...`, `sub/...`, `sub:name` (and `-` before any of
    /// them). Absolute ones (`//...`) are kept; only a relative one needs the workspace found.
    fn absolute_patterns(&self, patterns: &[String]) -> Result<Vec<String>, Error> {
        let relative = |p: &String| !p.trim_start_matches('-').starts_with("//");
        if !patterns.iter().any(relative) {
            return Ok(patterns.to_vec());
        }
        let start = self.start_dir()?;
        let package = crate::workspace::Workspace::discover(&start)?.package_of(&start);
        Ok(patterns
            .iter()
            .map(|p| crate::analysis::absolute_pattern(p, &package))
            .collect())
    }

    /// `flow build` (without `--dry-run`, which `run` hands to explain).
    fn build(&self) -> Result<i32, Error> {
        let Command::Build {
            patterns,
            jobs,
            keep_going,
            quiet,
            events,
            emergency,
            reason,
            approved_by,
            shard,
            shard_timings,
            since,
            junit,
            profile,
            annotations,
            summary,
            remote_cache,
            remote_upload,
            materialize,
            ..
        } = &self.command
        else {
            unreachable!("called for `flow build` only")
        };
        if let Some(url) = remote_cache {
            crate::remote::endpoint_uri(url).map_err(|e| Error::Usage {
                message: format!("--remote-cache: {e}"),
                help: None,
            })?;
        }
        crate::commands::build::run(
            &self.start_dir()?,
            crate::commands::build::BuildArgs {
                patterns: &self.absolute_patterns(patterns)?,
                session: crate::session::SessionArgs {
                    remote_cache: remote_cache.as_deref(),
                    remote_upload: *remote_upload,
                    ..self.session(*jobs, *keep_going)
                },
                quiet: *quiet,
                reports: crate::reports::Wanted {
                    events: events.clone(),
                    junit: junit.clone(),
                    profile: profile.clone(),
                    annotations: *annotations,
                    summary: summary.clone(),
                }
                .with_github_env(),
                emergency: emergency.then(|| crate::delivery::window::Emergency {
                    reason: reason.clone().unwrap_or_default(),
                    approved_by: approved_by.clone(),
                }),
                shard: match (shard, shard_timings) {
                    (Some(s), Some(file)) => Some(s.clone().balanced_by(
                        crate::shard::Timings::read(file).map_err(|message| Error::Usage {
                            message,
                            help: None,
                        })?,
                    )),
                    (s, _) => s.clone(),
                },
                since: since.as_deref(),
                materialize: *materialize,
            },
        )
    }

    /// `absolute_patterns`, or `//...` for none (as `flow build` defaults).
    fn absolute_patterns_or_all(&self, patterns: &[String]) -> Result<Vec<String>, Error> {
        match patterns.is_empty() {
            true => Ok(vec!["//...".to_owned()]),
            false => self.absolute_patterns(patterns),
        }
    }

    /// How `build` and `watch` open their session.
    fn session(&self, jobs: Option<u16>, keep_going: bool) -> crate::session::SessionArgs<'_> {
        crate::session::SessionArgs {
            cache_dir: self.cache_dir.as_deref(),
            jobs: jobs.map(usize::from),
            keep_going,
            ..crate::session::SessionArgs::default()
        }
    }

    /// `flow cache SUBCOMMAND`.
    fn cache(&self, command: &CacheCommand) -> Result<i32, Error> {
        let cache_dir = self.cache_dir.as_deref();
        match command {
            CacheCommand::Stats => crate::commands::cache::stats(&self.start_dir()?, cache_dir),
            CacheCommand::Gc { max_size } => {
                crate::commands::cache::gc(&self.start_dir()?, max_size.as_deref(), cache_dir)
            }
            CacheCommand::Verify { fix } => {
                crate::commands::cache::verify(&self.start_dir()?, *fix, cache_dir)
            }
        }
    }

    /// Runs the command; `Ok` carries the exit code.
    pub fn run(&self) -> Result<i32, Error> {
        match &self.command {
            Command::Init { dir } => {
                let dir = match dir {
                    Some(d) => d.clone(),
                    None => self.start_dir()?,
                };
                crate::commands::init::run(&dir)
            }
            Command::Query { expr, output } => crate::commands::query::run(
                &self.start_dir()?,
                expr,
                *output,
                self.cache_dir.as_deref(),
            ),
            Command::Build {
                patterns,
                dry_run: true,
                ..
            }
            | Command::Explain { patterns } => crate::commands::explain::run(
                &self.start_dir()?,
                &self.absolute_patterns_or_all(patterns)?,
                self.cache_dir.as_deref(),
            ),
            Command::Build { .. } => self.build(),
            Command::Watch {
                patterns,
                jobs,
                keep_going,
                debounce,
                clear,
            } => crate::commands::watch::run(
                &self.start_dir()?,
                crate::commands::watch::WatchArgs {
                    patterns: &self.absolute_patterns(patterns)?,
                    session: self.session(*jobs, *keep_going),
                    debounce: std::time::Duration::from_millis(*debounce),
                    clear: *clear,
                    colors: self.color.stderr_colors(),
                },
            ),
            Command::Log { label } => {
                let label = &self.absolute_patterns(std::slice::from_ref(label))?[0];
                crate::commands::log::run(&self.start_dir()?, label, self.cache_dir.as_deref())
            }
            Command::Remote { command } => crate::commands::remote::run(command),
            Command::Cache { command } => self.cache(command),
            Command::Report { html, json, base } => crate::commands::report::run(
                &self.start_dir()?,
                crate::commands::report::Options {
                    html: html.as_ref(),
                    json: *json,
                    base: base.as_deref(),
                },
                self.cache_dir.as_deref(),
            ),
            Command::Metrics {
                days,
                environment,
                flaky,
                json,
            } => crate::commands::metrics::run(
                &self.start_dir()?,
                crate::commands::metrics::MetricsArgs {
                    days: *days,
                    environment: environment.as_deref(),
                    flaky_only: *flaky,
                    json: *json,
                    cache_flag: self.cache_dir.as_deref(),
                },
            ),
            Command::Ledger { environment, json } => {
                crate::commands::ledger::run(&self.start_dir()?, environment.as_deref(), *json)
            }
            Command::Affected { since, patterns } => crate::commands::affected::run(
                &self.start_dir()?,
                since,
                &self.absolute_patterns(patterns)?,
                self.cache_dir.as_deref(),
            ),
            Command::Rollback { target, to } => crate::commands::rollback::run(
                &self.start_dir()?,
                target,
                to.as_deref(),
                self.cache_dir.as_deref(),
            ),
            Command::Clean { cache } => {
                crate::commands::clean::run(&self.start_dir()?, *cache, self.cache_dir.as_deref())
            }
            Command::Help { command } => crate::commands::help::run(command),
            Command::Run { label, command } => crate::commands::run::run(
                &self.start_dir()?,
                &self.absolute_patterns(std::slice::from_ref(label))?[0],
                command,
                self.cache_dir.as_deref(),
            ),
            Command::Test { patterns, jobs } => crate::commands::test::run(
                &self.start_dir()?,
                &self.absolute_patterns(patterns)?,
                jobs.map(usize::from),
                self.cache_dir.as_deref(),
            ),
            Command::Hooks { command } => {
                let start = self.start_dir()?;
                let cache = self.cache_dir.as_deref();
                match command {
                    HooksCommand::Install => crate::commands::hooks::install(&start, cache),
                    HooksCommand::Uninstall => crate::commands::hooks::uninstall(&start),
                    HooksCommand::Run { .. } => {
                        crate::commands::hooks::run_pre_commit(&start, cache)
                    }
                }
            }
            Command::Ci { command } => {
                crate::commands::ci::run(command, &self.start_dir()?, self.cache_dir.as_deref())
            }
        }
    }
}
