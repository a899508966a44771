//! [`Binds`]: directory inputs bound read-only into the exec root, in a mount namespace of the
//! action's own.
//!
//! In the child, between `fork` and `exec` (`Binds::install`):
//! 1. `unshare(CLONE_NEWNS)`: the action gets a private copy of flow's mount table;
//! 2. make every mount of it a slave (`MS_REC | MS_SLAVE` on `/`), so that nothing mounted below
//!    propagates back to flow or to the machine;
//! 3. per directory input, bind its materialized tree under `flow-out/` onto the empty directory
//!    staged at its place in the exec root, then remount that bind read-only (`MS_RDONLY`,
//!    `MS_NOSUID`, `MS_NODEV`, keeping the flags of the file system underneath, which a user
//!    namespace may have locked).
//!
//! What that gives: the input is a real directory (`find DIR -type f` lists its files); a write
//! into it fails with `EROFS`, for root too; `DIR/..` is the directory the input was staged in,
//! not `flow-out/`, because `..` of a mount's root leaves by its mount point. The mounts vanish
//! with the namespace when the action's last process exits: nothing is left to unmount, not even
//! after a crash, and flow's own view of the exec root shows each input as an empty directory.
//!
//! [`available`] probes once per process whether the kernel allows all that (root, or
//! `CAP_SYS_ADMIN`; no seccomp filter refusing `unshare` or `mount`, as Docker's default one does
//! without `--privileged`) and that a write through the bind fails. Where it does not, the stager
//! copies the tree instead (`stage.rs`). `FLOW_SANDBOX_MOUNTS=0` in flow's environment forces
//! that fallback (to compare the two, or where a namespace misbehaves).
//!
//! Invariant: the child only makes system calls on buffers prepared before `fork` (no
//! allocation, no lock: the parent is multithreaded).
//! Limits: an action running as root may remount the bind read-write on purpose (`mount -o
//! remount,rw`): the sandbox is not a security boundary (see docs/build.md); the tree stamp set on
//! the marker (`flow_cache::TreeStamp`) then makes the next build repair `flow-out/`. Actions
//! with a directory input are started with `fork` rather than `posix_spawn` (a `pre_exec` hook
//! needs it): measured in `staging_bench.rs`.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::OnceLock;

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::statvfs::{statvfs, FsFlags};

/// One read-only bind: `source` (absolute) onto `target` (absolute, an empty directory).
#[derive(Debug)]
struct Bind {
    source: CString,
    target: CString,
    /// The flags of the read-only remount.
    flags: MsFlags,
}

/// The read-only binds of one action, made in its own mount namespace.
#[derive(Debug, Default)]
pub(super) struct Binds(Vec<Bind>);

impl Binds {
    /// Adds a read-only bind of the directory `source` onto the directory `target`.
    pub(super) fn push(&mut self, source: &Path, target: &Path) -> io::Result<()> {
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other);
        let under = statvfs(source)?.flags();
        let mut flags = MsFlags::MS_REMOUNT
            | MsFlags::MS_BIND
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV;
        for (st, ms) in [
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if under.contains(st) {
                flags |= ms;
            }
        }
        self.0.push(Bind {
            source: c(source)?,
            target: c(target)?,
            flags,
        });
        Ok(())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Makes `command`'s child enter a mount namespace of its own with these binds before it
    /// runs its program; a failure there fails the spawn with the OS error.
    pub(super) fn install(self, command: &mut tokio::process::Command) {
        // SAFETY: the hook runs in the forked child of a multithreaded process, where only
        // async-signal-safe calls are allowed. It makes system calls (unshare, mount) on
        // C strings built above, before the fork; nix passes a `&CStr` through without
        // allocating, and errors become `io::Error::from_raw_os_error` (no allocation either).
        #[allow(unsafe_code)]
        unsafe {
            command.pre_exec(move || enter(&self.0));
        }
    }
}

/// Steps 1–3 of the module doc, in the child.
fn enter(binds: &[Bind]) -> io::Result<()> {
    let none: Option<&std::ffi::CStr> = None;
    unshare(CloneFlags::CLONE_NEWNS)?;
    mount(none, c"/", none, MsFlags::MS_REC | MsFlags::MS_SLAVE, none)?;
    for b in binds {
        mount(
            Some(b.source.as_c_str()),
            b.target.as_c_str(),
            none,
            MsFlags::MS_BIND,
            none,
        )?;
        mount(none, b.target.as_c_str(), none, b.flags, none)?;
    }
    Ok(())
}

/// Whether directory inputs can be bound read-only here (probed once, under `scratch`, a
/// private directory the caller removes).
pub(super) fn available(scratch: &Path) -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        std::env::var_os("FLOW_SANDBOX_MOUNTS").is_none_or(|v| v != "0") && probe(scratch)
    })
}

/// Binds `scratch/probe-src` read-only onto `scratch/probe-dst` in a child that then tries to
/// create a file through it: true if the child started and the write failed.
fn probe(scratch: &Path) -> bool {
    let (src, dst) = (scratch.join("probe-src"), scratch.join("probe-dst"));
    let made = std::fs::create_dir_all(&src).and_then(|()| std::fs::create_dir_all(&dst));
    let mut binds = Binds::default();
    if made.and_then(|()| binds.push(&src, &dst)).is_err() {
        return false;
    }
    let mut command = tokio::process::Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(": > probe-dst/written")
        .current_dir(scratch)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    binds.install(&mut command);
    let refused = command
        .as_std_mut()
        .status()
        .is_ok_and(|status| !status.success());
    let held = refused && !src.join("written").exists() && !dst.join("written").exists();
    let _ = std::fs::remove_dir(&src);
    let _ = std::fs::remove_dir(&dst);
    held
}
