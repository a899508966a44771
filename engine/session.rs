//! A session: what one flow command works in, opened once per command. `flow build`,
//! `flow watch`, `flow explain`, `flow clean` and `flow cache` open one.
//!
//! It holds the facts every stage of the pipeline shares, each computed here and nowhere else:
//! the workspace and its config, the cache directory and the cache (opened on first use, so a
//! no-op never opens the database), the output root (the only code that knows the name
//! `flow-out/`), the workspace lock (taken by the commands that write `flow-out/`, see
//! `lock.rs`), the sandbox root (chosen once, after sweeping what dead processes left), the job
//! count, `-k`, and the clock. The rest of the pipeline, assembled from these, is in
//! `pipeline.rs`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::interrupts::Interrupts;
use flow_cache::Cache;
use tokio::runtime::{Handle, Runtime};

use crate::analysis::{cache_dir, open_cache};
use crate::clock::Clock;
use crate::error::Error;
use crate::executor::{release_root, sweep_and_choose_root, GroupLog, SandboxExecutor};
use crate::hasher::FileHasher;
use crate::lock::{lock_workspace, WorkspaceLock};
use crate::rebuilder::Rebuilder;
use crate::runner::BuildOptions;
use crate::workspace::Workspace;

/// The name of the directory, at the workspace root, where outputs are materialized.
pub const OUT_DIR: &str = "flow-out";

/// The file that marks the directory a linked `flow-out` leads to as flow's (written when the
/// link is first used, into an empty directory; kept by the sweep of stale outputs).
pub const OUT_TAG: &str = ".flow-outputs";

/// `<root>/flow-out`.
pub fn out_root(workspace_root: &Path) -> PathBuf {
    workspace_root.join(OUT_DIR)
}

/// How a command opens its session.
#[derive(Clone, Copy, Default)]
pub struct SessionArgs<'a> {
    /// `--cache-dir`.
    pub cache_dir: Option<&'a Path>,
    /// `-j`.
    pub jobs: Option<usize>,
    /// `-k`.
    pub keep_going: bool,
    /// `--remote-cache URL`.
    pub remote_cache: Option<&'a str>,
    /// `--remote-upload BOOL`.
    pub remote_upload: Option<bool>,
}

impl<'a> SessionArgs<'a> {
    /// A command that runs nothing: only `--cache-dir` matters.
    pub fn cache_dir(cache_dir: Option<&'a Path>) -> SessionArgs<'a> {
        SessionArgs {
            cache_dir,
            ..SessionArgs::default()
        }
    }
}

pub struct Session {
    pub ws: Workspace,
    pub cache_dir: PathBuf,
    /// `<workspace>/flow-out`.
    pub out_root: PathBuf,
    pub jobs: usize,
    pub keep_going: bool,
    pub clock: Clock,
    cache: Option<Arc<Cache>>,
    lock: Option<WorkspaceLock>,
    sandboxes: Option<PathBuf>,
    executor: Option<Arc<SandboxExecutor>>,
    /// Where the executor records its running actions' process groups: the lock file while the
    /// lock is held (`executor/groups.rs`).
    groups: Arc<GroupLog>,
    /// The remote cache to use and whether to upload (flags over `[remote]`).
    remote: Option<(crate::remote::Target, bool)>,
    /// Connected once, on the first rebuilder that needs it.
    remote_tier: Option<Option<Arc<crate::remote::tier::RemoteTier>>>,
    /// `--remote-upload` without a remote cache (flag or `[remote] url`).
    upload_without_cache: bool,
}

impl Session {
    /// Finds the workspace above `start` and reads its config; opens nothing yet.
    pub fn open(start: &Path, args: SessionArgs) -> Result<Session, Error> {
        let ws = Workspace::discover(start)?;
        Ok(Session::in_workspace(ws, args))
    }

    /// A session in the workspace `ws`, already discovered.
    pub fn in_workspace(ws: Workspace, args: SessionArgs) -> Session {
        let cache_dir = cache_dir(&ws, args.cache_dir);
        let jobs = args
            .jobs
            .or(ws.config.jobs)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        let remote = crate::remote::config::choose(
            args.remote_cache,
            args.remote_upload,
            ws.config.remote.as_ref(),
            &ws.root,
        );
        // `--remote-upload` says what to do with a remote cache: without one it is a mistake.
        let upload_without_cache = remote.is_none() && args.remote_upload.is_some();
        Session {
            remote,
            remote_tier: None,
            upload_without_cache,
            out_root: out_root(&ws.root),
            keep_going: args.keep_going || ws.config.keep_going,
            jobs,
            cache_dir,
            clock: Clock::from_env(),
            ws,
            cache: None,
            lock: None,
            sandboxes: None,
            executor: None,
            groups: Arc::default(),
        }
    }

    /// Where running process groups are recorded while the lock is held: pass it to
    /// `delivery::service::RunningService::start_recorded` so the next command kills a service
    /// left by a flow killed with SIGKILL (`executor/groups.rs`).
    pub fn group_log(&self) -> &GroupLog {
        &self.groups
    }

    /// The log of running process groups, shared (services record theirs there).
    pub fn groups(&self) -> Arc<GroupLog> {
        self.groups.clone()
    }

    /// The workspace root as text: history rows are per workspace.
    pub fn workspace_text(&self) -> String {
        self.ws.root.display().to_string()
    }

    /// The cache, opened (creating it) on first use.
    pub fn cache(&mut self) -> Result<Arc<Cache>, Error> {
        if let Some(cache) = &self.cache {
            return Ok(cache.clone());
        }
        let cache = Arc::new(open_cache(&self.cache_dir)?);
        self.cache = Some(cache.clone());
        Ok(cache)
    }

    /// An error about the cache, with its directory.
    pub fn cache_error(&self, e: impl std::fmt::Display) -> Error {
        Error::Cache {
            path: self.cache_dir.clone(),
            error: e.to_string(),
        }
    }

    /// Refuses a `flow-out` that is not a directory (a file, a dangling link, a link to a
    /// file): flow keeps outputs there, and would otherwise fail action after action. A link to
    /// a directory (outputs on another disk) is followed only to a directory that is flow's:
    /// empty (then tagged with [`OUT_TAG`]), or tagged. Flow deletes what it did not write under
    /// `flow-out/`, so a link to a directory of other files would have them deleted.
    pub fn check_out_root(&self) -> Result<(), Error> {
        let Ok(meta) = std::fs::symlink_metadata(&self.out_root) else {
            return Ok(());
        };
        let refuse = |what: String, help: String| {
            Err(Error::Usage {
                message: format!(
                    "`{}` is {what}; flow keeps the outputs of builds there",
                    self.out_root.display()
                ),
                help: Some(help),
            })
        };
        if !std::fs::metadata(&self.out_root).is_ok_and(|m| m.is_dir()) {
            let what = if meta.is_symlink() {
                "a link that does not lead to a directory"
            } else {
                "not a directory"
            };
            let help = format!(
                "remove it (`flow clean` does), or move it aside; the name `{OUT_DIR}` is flow's"
            );
            return refuse(what.to_owned(), help);
        }
        if !meta.is_symlink() {
            return Ok(());
        }
        let Ok(entries) = std::fs::read_dir(&self.out_root) else {
            return Ok(());
        };
        let names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        if names.iter().any(|n| n == OUT_TAG) {
            return Ok(());
        }
        // Empty, or holding only flow's lock file (left by a command killed before its end).
        if names.iter().all(|n| n == crate::lock::LOCK_FILE) {
            let tag = self.out_root.join(OUT_TAG);
            let text = format!(
                "the outputs of the flow workspace {}\n",
                self.ws.root.display()
            );
            return std::fs::write(&tag, text).map_err(|e| Error::Usage {
                message: format!("cannot write `{}`: {e}", tag.display()),
                help: None,
            });
        }
        let target = std::fs::read_link(&self.out_root).unwrap_or_default();
        let mut shown: Vec<&String> = names.iter().collect();
        shown.sort();
        shown.truncate(3);
        let shown: Vec<String> = shown.iter().map(|n| format!("`{n}`")).collect();
        refuse(
            format!(
                "a link to `{}`, a directory of files flow did not write ({})",
                target.display(),
                shown.join(", ")
            ),
            format!(
                "flow deletes what it did not write under `{OUT_DIR}/`: point the link at an \
                 empty directory, or remove it"
            ),
        )
    }

    /// Takes the workspace lock for `command` unless held already (see `lock.rs`): whether
    /// another command held it first; `Err(130)` on Ctrl-C while waiting.
    pub fn lock(
        &mut self,
        command: &str,
        runtime: &Handle,
        sigint: &mut Option<Interrupts>,
    ) -> Result<bool, i32> {
        if self.lock.is_some() {
            return Ok(false);
        }
        let (lock, waited) = lock_workspace(&self.out_root, command, &self.clock, runtime, sigint)?;
        self.groups
            .set(lock.as_ref().map(|l| l.path().to_path_buf()));
        self.lock = lock;
        Ok(waited)
    }

    /// Gives the workspace lock back (`flow watch`, between cycles).
    pub fn unlock(&mut self) {
        self.groups.set(None);
        self.lock = None;
    }

    /// The executor, whose sandbox root is chosen (and swept) on first use.
    pub fn executor(&mut self) -> Arc<SandboxExecutor> {
        if let Some(e) = &self.executor {
            return e.clone();
        }
        let configured = self.ws.config.sandbox_dir.as_deref();
        let root = sweep_and_choose_root(&self.cache_dir, configured);
        let executor = Arc::new(SandboxExecutor {
            groups: Some(self.groups.clone()),
            ..SandboxExecutor::new(root.clone())
        });
        self.sandboxes = Some(root);
        self.executor = Some(executor.clone());
        executor
    }

    /// The rebuilder over the session's cache and output root.
    pub fn rebuilder(&mut self, hasher: Arc<FileHasher>) -> Result<Arc<Rebuilder>, Error> {
        self.rebuilder_keeping(hasher, Default::default())
    }

    /// [`Session::rebuilder`], leaving the outputs of the actions `kept_in_cache` in the cache
    /// (`flow build --materialize`).
    pub fn rebuilder_keeping(
        &mut self,
        hasher: Arc<FileHasher>,
        kept_in_cache: std::collections::HashSet<flow_rules::Label>,
    ) -> Result<Arc<Rebuilder>, Error> {
        if self.upload_without_cache {
            return Err(Error::Usage {
                message: "--remote-upload: no remote cache to upload to".into(),
                help: Some(
                    "name one with --remote-cache URL, or `[remote] url` in flow.toml".into(),
                ),
            });
        }
        if self.remote_tier.is_none() {
            self.remote_tier = Some(self.remote.as_ref().and_then(|(target, upload)| {
                crate::remote::tier::RemoteTier::connect(
                    target,
                    *upload,
                    Box::new(|w| eprintln!("warning: {w}")),
                )
                .map(Arc::new)
            }));
        }
        Ok(Arc::new(Rebuilder {
            cache: self.cache()?,
            hasher,
            out_root: self.out_root.clone(),
            workspace_root: self.ws.root.clone(),
            remote: self.remote_tier.clone().flatten(),
            pending: Default::default(),
            kept_in_cache,
            restored_ahead: Default::default(),
        }))
    }

    /// The runner's settings: `report_up_to_date` for a build, not for a watch cycle.
    pub fn build_options(&self, report_up_to_date: bool) -> BuildOptions {
        BuildOptions {
            jobs: self.jobs,
            keep_going: self.keep_going,
            report_up_to_date,
            workspace: self.workspace_text(),
            clock: self.clock,
            quarantine: self.ws.config.quarantine.clone(),
        }
    }

    /// Ends the session: unlocks, lets the runtime finish the sandbox removals still running,
    /// then removes the sandbox root if flow chose it.
    pub fn close(mut self, runtime: Option<Runtime>) {
        self.groups.set(None);
        drop(self.lock.take());
        drop(self.executor.take());
        drop(runtime);
        if let Some(root) = &self.sandboxes {
            release_root(&self.cache_dir, self.ws.config.sandbox_dir.as_deref(), root);
        }
    }
}
