//! [`SandboxExecutor`]: runs real processes, each action in a private directory.
//!
//! Per action, a fresh `<sandbox_root>/<pid>-<n>/` (pid of flow, n from a process-wide counter;
//! an existing name, left by a crashed flow or another PID namespace sharing the cache, is
//! skipped) holding `exec/` (the exec root), `home/` and `tmp/`.
//!
//! `sandbox = true`:
//! 1. check the layout (`stage::check_layout`); stage the inputs at `exec/<dest>`, create the
//!    outputs' directories, snapshot `exec/` (on a blocking thread);
//! 2. run the command in `exec/<package>` (`process::run`);
//! 3. check the declared outputs and list stray writes (on a blocking thread);
//! 4. return with `exec_root = exec/`; the directory stays until [`Executor::cleanup`].
//!
//! `sandbox = false`: the command runs in `<workspace_root>/<package>` after the stale declared
//! outputs there are deleted and their directories created; `home/` and `tmp/` are still private
//! and removed before `run` returns; `exec_root` is the workspace root and there is no stray-write
//! report (the real tree has no baseline).
//!
//! Environment, both modes: exactly `spec.env`, then `spec.secrets`, then `HOME` and `TMPDIR`
//! (flow's wins over a declared one).
//! `duration` covers the whole `run`: staging, the command, the checks.
//! Limits: sandboxes of a crashed flow stay under `sandbox_root` until something removes that
//! directory; `cleanup` ignores errors (a later removal of the root gets them).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::future::Future;
use std::io::{self, ErrorKind};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::capture::Masker;
use super::stage::{self, DirMaker, Layout};
use super::tree::Snapshot;
use super::{outputs, process, ActionSpec, Cancel, ExecResult, Executor, Status};

/// Runs actions as real processes, in sandboxes under `sandbox_root` (`<cache dir>/sandbox`).
#[derive(Debug, Clone)]
pub struct SandboxExecutor {
    pub sandbox_root: PathBuf,
}

impl SandboxExecutor {
    pub fn new(sandbox_root: impl Into<PathBuf>) -> SandboxExecutor {
        SandboxExecutor {
            sandbox_root: sandbox_root.into(),
        }
    }
}

impl Executor for SandboxExecutor {
    fn run(&self, spec: ActionSpec, cancel: Cancel) -> impl Future<Output = ExecResult> + Send {
        let root = self.sandbox_root.clone();
        async move {
            let started = Instant::now();
            let mut result = if cancel.is_cancelled() {
                ExecResult::not_run(Status::Cancelled, PathBuf::new())
            } else if spec.sandbox {
                run_sandboxed(root, spec, cancel).await
            } else {
                run_in_tree(root, spec, cancel).await
            };
            result.duration = started.elapsed();
            result
        }
    }

    fn cleanup(&self, result: &ExecResult) {
        if let Some(dir) = &result.sandbox_dir {
            let Ok(root) = std::path::absolute(&self.sandbox_root) else {
                return;
            };
            if dir.starts_with(&root) && dir != &root {
                let _ = remove_tree(dir);
            }
        }
    }
}

static NEXT_SANDBOX: AtomicU64 = AtomicU64::new(0);

/// Creates a fresh `<root>/<pid>-<n>/` with `home/` and `tmp/`.
fn private_dir(root: &Path) -> Result<PathBuf, String> {
    let fail = |e: io::Error| format!("cannot create a sandbox under `{}`: {e}", root.display());
    // Absolute, so HOME and TMPDIR stay valid in the command's working directory.
    let root = &std::path::absolute(root).map_err(fail)?;
    fs::create_dir_all(root).map_err(fail)?;
    let pid = std::process::id();
    let dir = loop {
        let n = NEXT_SANDBOX.fetch_add(1, Ordering::Relaxed);
        let dir = root.join(format!("{pid}-{n}"));
        match fs::create_dir(&dir) {
            Ok(()) => break dir,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(fail(e)),
        }
    };
    for sub in ["home", "tmp"] {
        if let Err(e) = fs::create_dir(dir.join(sub)) {
            let _ = remove_tree(&dir);
            return Err(fail(e));
        }
    }
    Ok(dir)
}

/// The child's complete environment.
fn environment(spec: &ActionSpec, dir: &Path) -> BTreeMap<OsString, OsString> {
    let mut env: BTreeMap<OsString, OsString> = spec
        .env
        .iter()
        .chain(&spec.secrets)
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    env.insert("HOME".into(), dir.join("home").into());
    env.insert("TMPDIR".into(), dir.join("tmp").into());
    env
}

async fn run_sandboxed(root: PathBuf, spec: ActionSpec, cancel: Cancel) -> ExecResult {
    let layout = match stage::check_layout(&spec.package, &spec.inputs, &spec.outputs) {
        Ok(layout) => layout,
        Err(message) => return ExecResult::not_run(Status::SpawnFailed(message), PathBuf::new()),
    };
    let dir = match private_dir(&root) {
        Ok(dir) => dir,
        Err(message) => return ExecResult::not_run(Status::SpawnFailed(message), PathBuf::new()),
    };
    let exec = dir.join("exec");

    let (spec, layout, prepared) = blocking({
        let exec = exec.clone();
        move || {
            let prepared = prepare_sandbox(&exec, &spec, &layout);
            (spec, layout, prepared)
        }
    })
    .await;
    let snapshot = match prepared {
        Ok(snapshot) => snapshot,
        Err(message) => {
            let _ = remove_tree(&dir);
            return ExecResult::not_run(Status::SpawnFailed(message), exec);
        }
    };

    let cwd = exec.join(&layout.package);
    let masker = Masker::new(spec.secrets.values());
    let env = environment(&spec, &dir);
    let finished = process::run(process::Command {
        cmd: &spec.cmd,
        cwd: &cwd,
        env: &env,
        timeout: spec.timeout,
        cancel: &cancel,
        masker: &masker,
    })
    .await;

    let (missing_outputs, output_problems, stray_writes) = blocking({
        let exec = exec.clone();
        move || {
            let (missing, problems) = outputs::check(&cwd, &spec.outputs);
            let stray = snapshot.stray_writes(&exec, &layout.file_outputs, &layout.dir_outputs);
            (missing, problems, stray)
        }
    })
    .await;
    ExecResult {
        status: finished.status,
        stdout: finished.stdout,
        stderr: finished.stderr,
        duration: Default::default(),
        exec_root: exec,
        missing_outputs,
        output_problems,
        stray_writes,
        fake_outputs: BTreeMap::new(),
        sandbox_dir: Some(dir),
    }
}

fn prepare_sandbox(exec: &Path, spec: &ActionSpec, layout: &Layout) -> Result<Snapshot, String> {
    fs::create_dir(exec).map_err(|e| format!("cannot create `{}`: {e}", exec.display()))?;
    let mut dirs = DirMaker::new(exec);
    stage::stage_inputs(exec, layout, &spec.inputs, &mut dirs)?;
    stage::create_output_dirs(exec, layout, &mut dirs)?;
    Ok(Snapshot::take(exec))
}

async fn run_in_tree(root: PathBuf, spec: ActionSpec, cancel: Cancel) -> ExecResult {
    let workspace = spec.workspace_root.clone();
    let layout = if workspace.is_absolute() {
        stage::check_layout(&spec.package, &[], &spec.outputs)
    } else {
        Err(format!(
            "the workspace root `{}` is not absolute",
            workspace.display()
        ))
    };
    let layout = match layout {
        Ok(layout) => layout,
        Err(message) => return ExecResult::not_run(Status::SpawnFailed(message), workspace),
    };
    let cwd = workspace.join(&layout.package);
    if !cwd.is_dir() {
        let message = format!("the package directory `{}` does not exist", cwd.display());
        return ExecResult::not_run(Status::SpawnFailed(message), workspace);
    }
    let dir = match private_dir(&root) {
        Ok(dir) => dir,
        Err(message) => return ExecResult::not_run(Status::SpawnFailed(message), workspace),
    };

    let (spec, prepared) = blocking({
        let (cwd, workspace) = (cwd.clone(), workspace.clone());
        move || {
            let prepared = outputs::remove_stale(&cwd, &spec.outputs).and_then(|()| {
                stage::create_output_dirs(&workspace, &layout, &mut DirMaker::new(&workspace))
            });
            (spec, prepared)
        }
    })
    .await;
    if let Err(message) = prepared {
        let _ = remove_tree(&dir);
        return ExecResult::not_run(Status::SpawnFailed(message), workspace);
    }

    let masker = Masker::new(spec.secrets.values());
    let env = environment(&spec, &dir);
    let finished = process::run(process::Command {
        cmd: &spec.cmd,
        cwd: &cwd,
        env: &env,
        timeout: spec.timeout,
        cancel: &cancel,
        masker: &masker,
    })
    .await;

    let (missing_outputs, output_problems) = blocking(move || {
        let checked = outputs::check(&cwd, &spec.outputs);
        let _ = remove_tree(&dir);
        checked
    })
    .await;
    ExecResult {
        status: finished.status,
        stdout: finished.stdout,
        stderr: finished.stderr,
        duration: Default::default(),
        exec_root: workspace,
        missing_outputs,
        output_problems,
        stray_writes: Vec::new(),
        fake_outputs: BTreeMap::new(),
        sandbox_dir: None,
    }
}

/// Runs file-system work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

/// Removes `dir` and everything below it, first making directories writable if needed (an
/// action may have left a read-only directory behind).
pub(super) fn remove_tree(dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(_) => {
            make_dirs_writable(dir);
            fs::remove_dir_all(dir)
        }
        Ok(()) => Ok(()),
    }
}

fn make_dirs_writable(dir: &Path) {
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let _ = fs::set_permissions(
        dir,
        fs::Permissions::from_mode(meta.permissions().mode() | 0o700),
    );
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            make_dirs_writable(&entry.path());
        }
    }
}
