//! [`SandboxExecutor`]: runs real processes, each action in a private directory.
//!
//! Per action, a fresh `<sandbox_root>/<pid>-<n>/` (pid of flow, n from a process-wide counter;
//! an existing name, left by a crashed flow or another PID namespace sharing the cache, is
//! skipped) holding `exec/` (the exec root), `home/` and `tmp/`.
//!
//! `sandbox = true`:
//! 1. check the layout (`stage::check_layout`); stage the inputs at `exec/<dest>`, create the
//!    outputs' directories, snapshot `exec/` (on a blocking thread);
//! 2. run the command in `exec/<package>` (`process::run`), in a mount namespace of its own
//!    holding the read-only binds of its directory inputs if it has any (`mounts.rs`);
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
//! The command waits for its [`Ticket`]'s slot after staging (see [`super::Slots`]);
//! `duration` runs from the slot's grant to the end of the checks (staging and the wait are
//! left out: history orders the critical path by it).
//! Where `sandbox_root` is: [`sandbox_root`] (a private tmpfs directory by default).
//! Sandboxes of a crashed flow are removed by the next build or watch
//! ([`sweep_and_choose_root`], `Cache::sweep_orphans`); `cleanup` ignores errors (that sweep
//! gets them).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::future::Future;
use std::io::{self, ErrorKind};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::capture::Masker;
use super::groups::GroupLog;
use super::mounts::{self, Binds};
use super::stage::{self, DirMaker, Layout, Staged};
use super::tree::Snapshot;
use super::{outputs, process, ActionSpec, Cancel, ExecResult, Executor, Input, Status, Ticket};

/// A tmpfs needs this much free space to hold sandboxes by default.
pub const TMPFS_MIN_FREE: u64 = 1 << 30;

/// Where the sandboxes of the cache at `cache_dir` are made: `configured` (`[build] sandbox_dir`)
/// when given; else, by default, a private directory on a tmpfs with at least
/// [`TMPFS_MIN_FREE`] available — `$XDG_RUNTIME_DIR/flow/<id>`, or `/dev/shm/flow-<uid>/<id>`
/// (`<id>` from the cache directory's path) — because every action creates and removes a
/// directory tree and a copy of each input there, and on a disk file system that churn costs
/// more than the commands (ext4 searches past recently freed inodes for each new file; see
/// bench/RESULTS.md); else `<cache_dir>/sandbox`.
///
/// The tmpfs directory is created with mode 0700 and used only if it is a real directory owned
/// by this user and closed to others (a world-writable `/dev/shm` lets anyone create names
/// there first). Outputs leave the sandbox by copy into the cache (a rename cannot cross file
/// systems; `Cas` falls back to copying).
pub fn sandbox_root(cache_dir: &Path, configured: Option<&Path>) -> PathBuf {
    if let Some(dir) = configured {
        return dir.to_path_buf();
    }
    tmpfs_root(cache_dir).unwrap_or_else(|| cache_dir.join("sandbox"))
}

/// [`sandbox_root`], after removing what dead flow processes left there when it is outside the
/// cache directory (`Cache::sweep_orphans` sweeps the cache's own `sandbox/`).
pub fn sweep_and_choose_root(cache_dir: &Path, configured: Option<&Path>) -> PathBuf {
    let root = sandbox_root(cache_dir, configured);
    if root != cache_dir.join("sandbox") {
        flow_cache::sweep_sandboxes(&root, true);
    } else {
        // The cache's own `sandbox/` must be a real directory: actions are staged, run and
        // removed there, and a link would lead all of that outside the cache (best effort:
        // failing here fails the first action, with its path).
        let _ = flow_cache::regular::real_dir(&root);
    }
    root
}

/// Removes the sandbox root `root` if flow chose it on a tmpfs (not configured, not the cache's
/// own `sandbox/`) and it is empty: each cache directory gets its own root there, which would
/// otherwise stay (empty) after the cache directory is gone. A configured directory is the
/// user's and stays. Called once no action of this process runs any more.
pub fn release_root(cache_dir: &Path, configured: Option<&Path>, root: &Path) {
    if configured.is_none() && root != cache_dir.join("sandbox") {
        let _ = fs::remove_dir(root);
    }
}

fn tmpfs_root(cache_dir: &Path) -> Option<PathBuf> {
    let cache = std::path::absolute(cache_dir).ok()?;
    let id = blake3::hash(cache.as_os_str().as_encoded_bytes()).to_hex();
    let xdg = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute() && roomy_tmpfs(p));
    let base = match xdg {
        Some(xdg) => xdg.join("flow"),
        None if roomy_tmpfs(Path::new("/dev/shm")) => {
            PathBuf::from(format!("/dev/shm/flow-{}", nix::unistd::getuid()))
        }
        None => return None,
    };
    private_base(&base).then(|| base.join(&id[..16]))
}

/// Whether `path` is on a tmpfs with at least [`TMPFS_MIN_FREE`] available.
fn roomy_tmpfs(path: &Path) -> bool {
    use nix::sys::statfs::{statfs, TMPFS_MAGIC};
    statfs(path).is_ok_and(|s| {
        s.filesystem_type() == TMPFS_MAGIC
            && s.blocks_available().saturating_mul(s.block_size() as u64) >= TMPFS_MIN_FREE
    })
}

/// Makes `dir` (mode 0700) if missing; true if it is a directory, not a link, owned by this
/// user and closed to group and others.
fn private_base(dir: &Path) -> bool {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let _ = fs::DirBuilder::new().mode(0o700).create(dir);
    fs::symlink_metadata(dir).is_ok_and(|m| {
        m.is_dir() && m.uid() == nix::unistd::getuid().as_raw() && m.mode() & 0o077 == 0
    })
}

/// Runs actions as real processes, in sandboxes under `sandbox_root` (see [`sandbox_root`]).
#[derive(Debug, Clone)]
pub struct SandboxExecutor {
    pub sandbox_root: PathBuf,
    /// Bind directory inputs read-only where the kernel allows it (`mounts.rs`); `false`
    /// copies them always (the fallback, which tests exercise this way).
    pub bind_dir_inputs: bool,
    /// Where running actions' process groups are recorded (`groups.rs`); `None`: nowhere.
    pub groups: Option<Arc<GroupLog>>,
}

impl SandboxExecutor {
    pub fn new(sandbox_root: impl Into<PathBuf>) -> SandboxExecutor {
        SandboxExecutor {
            sandbox_root: sandbox_root.into(),
            bind_dir_inputs: true,
            groups: None,
        }
    }
}

impl Executor for SandboxExecutor {
    fn run(
        &self,
        spec: ActionSpec,
        cancel: Cancel,
        ticket: Ticket,
    ) -> impl Future<Output = ExecResult> + Send {
        let root = self.sandbox_root.clone();
        let bind = self.bind_dir_inputs;
        let groups = self.groups.clone();
        async move {
            let groups = groups.as_deref();
            if cancel.is_cancelled() {
                ExecResult::not_run(Status::Cancelled, PathBuf::new())
            } else if spec.sandbox {
                run_sandboxed(root, spec, bind, groups, cancel, ticket).await
            } else {
                run_in_tree(root, spec, groups, cancel, ticket).await
            }
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

/// Creates a fresh `<root>/<pid>-<n>/` with `home/` and `tmp/`, and in `tmp/` the file of
/// `$(SRCS_FILE)` when the command uses it (`srcs_file`: its text).
fn private_dir(root: &Path, srcs_file: Option<&str>) -> Result<PathBuf, String> {
    let fail = |e: io::Error| format!("cannot create a sandbox under `{}`: {e}", root.display());
    // Absolute, so HOME and TMPDIR stay valid in the command's working directory.
    let root = &std::path::absolute(root).map_err(fail)?;
    fs::create_dir_all(root).map_err(fail)?;
    let pid = std::process::id();
    let mut recreated = 0;
    let dir = loop {
        let n = NEXT_SANDBOX.fetch_add(1, Ordering::Relaxed);
        let dir = root.join(format!("{pid}-{n}"));
        match fs::create_dir(&dir) {
            Ok(()) => break dir,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            // Another flow removed the (empty) root as it exited: make it again.
            Err(e) if e.kind() == ErrorKind::NotFound && recreated < 3 => {
                recreated += 1;
                fs::create_dir_all(root).map_err(fail)?;
            }
            Err(e) => return Err(fail(e)),
        }
    };
    for sub in ["home", "tmp"] {
        if let Err(e) = fs::create_dir(dir.join(sub)) {
            let _ = remove_tree(&dir);
            return Err(fail(e));
        }
    }
    if let Some(text) = srcs_file {
        let path = dir.join("tmp").join(crate::expand::SRCS_FILE_NAME);
        if let Err(e) = fs::write(&path, text) {
            let _ = remove_tree(&dir);
            return Err(format!("cannot write `{}`: {e}", path.display()));
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

async fn run_sandboxed(
    root: PathBuf,
    spec: ActionSpec,
    bind: bool,
    groups: Option<&GroupLog>,
    cancel: Cancel,
    ticket: Ticket,
) -> ExecResult {
    let layout = match stage::check_layout(&spec.package, &spec.inputs, &spec.outputs) {
        Ok(layout) => layout,
        Err(message) => return ExecResult::not_run(Status::SpawnFailed(message), PathBuf::new()),
    };
    let dir = match private_dir(&root, spec.srcs_file.as_deref()) {
        Ok(dir) => dir,
        Err(message) => return ExecResult::not_run(Status::SpawnFailed(message), PathBuf::new()),
    };
    let exec = dir.join("exec");

    let (spec, layout, prepared) = blocking({
        let exec = exec.clone();
        move || {
            let prepared = prepare_sandbox(&exec, &spec, &layout, bind);
            (spec, layout, prepared)
        }
    })
    .await;
    let (snapshot, staged, copies) = match prepared {
        Ok(prepared) => prepared,
        Err(message) => {
            let _ = remove_tree(&dir);
            return ExecResult::not_run(Status::SpawnFailed(message), exec);
        }
    };

    let cwd = exec.join(&layout.package);
    let masker = Masker::new(spec.secrets.values());
    let env = environment(&spec, &dir);
    let Some(slot) = ticket.enter(&cancel).await else {
        let _ = remove_tree(&dir);
        return ExecResult::not_run(Status::NotStarted, exec);
    };
    let started = Instant::now();
    let finished = match &spec.gate {
        Some(gate) => super::builtin::run_gate(&spec, gate, &exec, &cwd).await,
        None => {
            process::run(process::Command {
                cmd: &spec.cmd,
                cwd: &cwd,
                env: &env,
                timeout: spec.timeout,
                cancel: &cancel,
                masker: &masker,
                binds: staged.binds,
                groups,
                live: spec.live.as_ref(),
            })
            .await
        }
    };
    // A stat per declared output, before the slot is given back.
    let (missing_outputs, output_problems) = outputs::check(&cwd, &spec.outputs);
    let holds_slot = slot.release_unless_failed(&finished.status, &missing_outputs);

    let stray_writes = blocking({
        let exec = exec.clone();
        move || snapshot.stray_writes(&exec, &layout.file_outputs, &layout.dir_outputs)
    })
    .await;
    // Where a directory input is a copy (no binds here), a write into it succeeds: it fails
    // the action instead, as the bind's read-only file system would.
    let mut output_problems = output_problems;
    let written = writes_into_dir_inputs(&spec.inputs, &stray_writes);
    output_problems.extend(copies.changed(&exec, &written));
    output_problems.extend(written);
    // The names of stray writes are the command's choice and may hold a secret's value: they
    // are masked as its logs are, before anything prints them.
    let stray_writes = stray_writes.iter().map(|w| masker.mask_text(w)).collect();
    let output_problems = output_problems
        .iter()
        .map(|p| masker.mask_text(p))
        .collect();
    ExecResult {
        status: finished.status,
        stdout: finished.stdout,
        stderr: finished.stderr,
        duration: started.elapsed(),
        exec_root: exec,
        missing_outputs,
        output_problems,
        stray_writes,
        seen_inputs: staged.seen,
        fake_outputs: BTreeMap::new(),
        sandbox_dir: Some(dir),
        holds_slot,
    }
}

/// Stages `exec/`; directory inputs are bound if `bind` and the kernel allows it (probed once,
/// in the action's private directory), else copied.
fn prepare_sandbox(
    exec: &Path,
    spec: &ActionSpec,
    layout: &Layout,
    bind: bool,
) -> Result<(Snapshot, Staged, Copies), String> {
    fs::create_dir(exec).map_err(|e| format!("cannot create `{}`: {e}", exec.display()))?;
    let mut dirs = DirMaker::new(exec);
    let bind = bind
        && spec.inputs.iter().any(|i| i.is_dir)
        && mounts::available(exec.parent().unwrap_or(exec));
    let staged = stage::stage_inputs(exec, layout, &spec.inputs, bind, &mut dirs)?;
    stage::create_output_dirs(exec, layout, &mut dirs)?;
    let copies = if bind {
        Copies::default()
    } else {
        Copies::take(exec, &spec.inputs)
    };
    Ok((Snapshot::take(exec), staged, copies))
}

/// The stamps of the directory inputs staged as copies (where binds are not available): the
/// action must leave them as they were, as a read-only bind would make it.
#[derive(Default)]
struct Copies(Vec<(String, Option<(flow_cache::TreeStamp, i64)>)>);

impl Copies {
    fn take(exec: &Path, inputs: &[Input]) -> Copies {
        Copies(
            inputs
                .iter()
                .filter(|i| i.is_dir)
                .map(|i| (i.dest.clone(), copy_stamp(&exec.join(&i.dest))))
                .collect(),
        )
    }

    /// A problem for each copy the action changed (deleted, chmodded, written, an entry
    /// created and removed again), unless `already` names it.
    fn changed(&self, exec: &Path, already: &[String]) -> Vec<String> {
        self.0
            .iter()
            .filter(|(dest, before)| copy_stamp(&exec.join(dest)) != *before)
            .filter(|(dest, _)| !already.iter().any(|p| p.contains(&format!("`{dest}`"))))
            .map(|(dest, _)| format!("changed its directory input `{dest}`, which is read-only"))
            .collect()
    }
}

/// The tree stamp of `dir` and its own ctime.
fn copy_stamp(dir: &Path) -> Option<(flow_cache::TreeStamp, i64)> {
    use std::os::unix::fs::MetadataExt;
    let ctime = fs::symlink_metadata(dir).ok()?;
    let ctime = ctime.ctime() * 1_000_000_000 + ctime.ctime_nsec();
    Some((flow_cache::TreeStamp::of(dir).ok()?, ctime))
}

async fn run_in_tree(
    root: PathBuf,
    spec: ActionSpec,
    groups: Option<&GroupLog>,
    cancel: Cancel,
    ticket: Ticket,
) -> ExecResult {
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
    let dir = match private_dir(&root, spec.srcs_file.as_deref()) {
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
    let Some(slot) = ticket.enter(&cancel).await else {
        let _ = remove_tree(&dir);
        return ExecResult::not_run(Status::NotStarted, workspace);
    };
    let started = Instant::now();
    let finished = process::run(process::Command {
        cmd: &spec.cmd,
        cwd: &cwd,
        env: &env,
        timeout: spec.timeout,
        cancel: &cancel,
        masker: &masker,
        binds: Binds::default(),
        groups,
        live: spec.live.as_ref(),
    })
    .await;
    let (missing_outputs, output_problems) = outputs::check(&cwd, &spec.outputs);
    let holds_slot = slot.release_unless_failed(&finished.status, &missing_outputs);
    let _ = blocking(move || remove_tree(&dir)).await;
    // Nothing was staged: the action read the files in place, so they are read again.
    let seen_inputs = blocking(move || changed_in_place(&spec.inputs)).await;
    ExecResult {
        status: finished.status,
        stdout: finished.stdout,
        stderr: finished.stderr,
        duration: started.elapsed(),
        exec_root: workspace,
        missing_outputs,
        output_problems,
        stray_writes: Vec::new(),
        seen_inputs,
        fake_outputs: BTreeMap::new(),
        sandbox_dir: None,
        holds_slot,
    }
}

/// The file inputs of an action that ran in the real tree whose bytes now differ from the
/// digests their key holds (saved before or while it ran), each with `None`: when it read them
/// is unknown, so no key describes what it saw and nothing is stored. `source` is the file it
/// reads (`Rebuilder::spec`). An edit undone before the action ended goes unseen here; a
/// sandboxed action's copies are exact (`stage.rs`).
fn changed_in_place(inputs: &[Input]) -> BTreeMap<String, Option<flow_cache::Digest>> {
    inputs
        .iter()
        .filter_map(|i| {
            let keyed = i.digest?;
            let now = crate::hasher::hash_file(&i.source).ok();
            (now != Some(keyed)).then(|| (i.dest.clone(), None))
        })
        .collect()
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

/// A problem for each stray write inside a directory input.
fn writes_into_dir_inputs(inputs: &[Input], stray: &[String]) -> Vec<String> {
    stray
        .iter()
        .filter_map(|w| {
            let into = inputs.iter().filter(|i| i.is_dir).find(|i| {
                let dir = i.dest.trim_end_matches('/');
                w.trim_end_matches('/') == dir || w.starts_with(&format!("{dir}/"))
            })?;
            Some(format!(
                "wrote `{w}` into its directory input `{}`, which is read-only",
                into.dest
            ))
        })
        .collect()
}

#[cfg(test)]
mod root_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_tmpfs_base_is_used_only_if_private() {
        let t = tempfile::tempdir().unwrap();
        let made = t.path().join("made");
        assert!(private_base(&made), "created with mode 0700");
        assert_eq!(
            fs::metadata(&made).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let open = t.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(!private_base(&open), "readable by others");
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&made, &link).unwrap();
        assert!(!private_base(&link), "a link to a private directory");
        let file = t.path().join("file");
        fs::write(&file, "").unwrap();
        assert!(!private_base(&file));
    }

    #[test]
    fn configured_wins_and_a_disk_is_not_a_tmpfs() {
        let t = tempfile::tempdir().unwrap();
        let cache = t.path().join(".flow");
        assert_eq!(
            sandbox_root(&cache, Some(Path::new("/x/y"))),
            PathBuf::from("/x/y")
        );
        let tmp_is_tmpfs = nix::sys::statfs::statfs(t.path())
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
        if !tmp_is_tmpfs {
            assert!(!roomy_tmpfs(t.path()), "a disk directory taken for a tmpfs");
        }
    }
}
