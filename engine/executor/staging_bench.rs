//! Measures staging inputs, the numbers behind the choices recorded in `stage.rs`. Ignored by
//! default; run it in release mode:
//!
//! ```text
//! cargo test -p flow --release --lib staging_bench -- --ignored --nocapture
//! ```
//!
//! [`staging_bench`], file inputs: per method and file size, 1,000 files (20 for the 4 MiB size)
//! spread over 20 directories, as a package's sources are, staged into a fresh directory with
//! `DirMaker` (the executor's) and `fs::symlink`, `fs::hard_link` or `stage::copy_file` (the
//! executor's); 9 rounds with the methods interleaved; best and median in µs per file; then the
//! teardown (`remove_dir_all`) of the staged tree. Sources and copies share one file system
//! (hardlinks need it), and the sources are `sync`ed first so their writeback does not land on
//! the first method measured.
//!
//! [`dir_input_bench`], directory inputs: the shape of the example's tool directory
//! (`py_requirements`: 3,504 files in 249 directories, 107 MB), made of 3,480 files of 8 KiB and
//! 20 of 4 MiB in 250 directories, materialized on the disk (as `flow-out/` is) and staged into a
//! sandbox under `$FLOW_BENCH_SANDBOX` (default `/dev/shm`, where sandboxes go). One action is:
//! create the exec root, stage the tree, run `/bin/sh -c 'test -f TREE/d0/f0.py'`, remove the
//! exec root. Methods: `symlink` (what flow did; not hermetic), `bind` (`mounts.rs`: an empty
//! directory, and the child enters a mount namespace with a read-only bind), `copy`
//! (`stage::copy_tree`), `hardlink` (a link per file from a tree on the sandbox's file system;
//! root can write through it). Also the spawn alone with and without a `pre_exec` hook, and
//! `TreeStamp::of` (the check that a materialized tree is unchanged). 9 rounds interleaved,
//! best and median in ms per action.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use super::mounts::Binds;
use super::stage::{copy_file, copy_tree, DirMaker};

const DIRS: usize = 20;
const ROUNDS: usize = 9;

#[derive(Debug, Clone, Copy)]
enum Method {
    Symlink,
    Hardlink,
    /// `stage::copy_file`: the copy hashed as it is made (the staged bytes are checked against
    /// the action key).
    Copy,
    /// An unhashed copy (`io::copy`, `copy_file_range`): what `copy_file` did before it hashed.
    Plain,
}

fn stage_file(method: Method, source: &Path, dest: &Path) -> std::io::Result<()> {
    match method {
        Method::Symlink => std::os::unix::fs::symlink(source, dest),
        Method::Hardlink => fs::hard_link(source, dest),
        Method::Copy => copy_file(source, dest, false).map(|_| ()),
        Method::Plain => {
            let mut to = fs::File::create_new(dest)?;
            std::io::copy(&mut fs::File::open(source)?, &mut to).map(|_| ())
        }
    }
}

fn rel(i: usize) -> String {
    format!("pkg/d{}/f{i}.txt", i % DIRS)
}

fn stage_all(method: Method, files: usize, src: &Path, dest: &Path) -> Duration {
    let started = Instant::now();
    let mut dirs = DirMaker::new(dest);
    for i in 0..files {
        let r = rel(i);
        let r = Path::new(&r);
        dirs.make(r.parent().unwrap()).unwrap();
        stage_file(method, &src.join(r), &dest.join(r)).unwrap();
    }
    started.elapsed()
}

fn per_file(d: Duration, files: usize) -> f64 {
    d.as_secs_f64() * 1e6 / files as f64
}

#[test]
#[ignore = "a benchmark: run with --ignored --nocapture, in release mode"]
fn staging_bench() {
    let base = tempfile::tempdir().unwrap();
    let methods = [
        Method::Symlink,
        Method::Hardlink,
        Method::Copy,
        Method::Plain,
    ];
    for (files, size) in [(1000, 1usize << 10), (1000, 64 << 10), (20, 4 << 20)] {
        let src = base.path().join(format!("src-{size}"));
        let content = vec![b'x'; size];
        for i in 0..files {
            let p = src.join(rel(i));
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, &content).unwrap();
        }
        // Flush the sources' dirty pages first, or their writeback lands on whichever method
        // runs next.
        std::process::Command::new("sync").status().unwrap();
        let mut stage = vec![Vec::new(); methods.len()];
        let mut remove = vec![Vec::new(); methods.len()];
        // Methods interleaved round by round, so background load hits them alike.
        for round in 0..ROUNDS {
            for (m, method) in methods.iter().enumerate() {
                let dest = base.path().join(format!("dest-{size}-{method:?}-{round}"));
                stage[m].push(stage_all(*method, files, &src, &dest));
                let started = Instant::now();
                fs::remove_dir_all(&dest).unwrap();
                remove[m].push(started.elapsed());
            }
        }
        for (m, method) in methods.iter().enumerate() {
            stage[m].sort();
            remove[m].sort();
            println!(
                "{files:>4} files of {:>4} KiB by {:<8}: stage best {:>6.1} median {:>6.1} µs/file; \
                 teardown best {:>5.1} median {:>5.1} µs/file",
                size >> 10,
                format!("{method:?}").to_lowercase(),
                per_file(stage[m][0], files),
                per_file(stage[m][ROUNDS / 2], files),
                per_file(remove[m][0], files),
                per_file(remove[m][ROUNDS / 2], files),
            );
        }
    }
}

const TREE_DIRS: usize = 250;
const TREE_SMALL: usize = 3480;
const TREE_LARGE: usize = 20;

/// The tool-directory shape: file `i` and its size.
fn tree_file(i: usize) -> (String, usize) {
    let size = if i < TREE_LARGE { 4 << 20 } else { 8 << 10 };
    (format!("d{}/f{i}.py", i % TREE_DIRS), size)
}

fn make_tree(root: &Path) {
    for i in 0..TREE_SMALL + TREE_LARGE {
        let (rel, size) = tree_file(i);
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, vec![b'x'; size]).unwrap();
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum DirMethod {
    Symlink,
    Bind,
    Copy,
    Hardlink,
}

fn link_tree(from: &Path, to: &Path) {
    fs::create_dir(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            link_tree(&e.path(), &to.join(e.file_name()));
        } else {
            fs::hard_link(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// One action with a directory input staged by `method`: stage, run, tear down.
fn dir_action(method: DirMethod, tree: &Path, linkable: &Path, exec: &Path) -> Duration {
    let started = Instant::now();
    fs::create_dir_all(exec.join("dep")).unwrap();
    let dest = exec.join("dep/tools");
    let mut binds = Binds::default();
    match method {
        DirMethod::Symlink => std::os::unix::fs::symlink(tree, &dest).unwrap(),
        DirMethod::Bind => {
            fs::create_dir(&dest).unwrap();
            binds.push(tree, &dest).unwrap();
        }
        DirMethod::Copy => copy_tree(tree, &dest).unwrap(),
        DirMethod::Hardlink => link_tree(linkable, &dest),
    }
    let status = spawn(exec, "test -f dep/tools/d0/f0.py", binds);
    assert!(status, "{method:?}: the staged tree is not readable");
    super::sandbox::remove_tree(exec).unwrap();
    started.elapsed()
}

/// Runs `/bin/sh -c cmd` in `dir` (in a namespace with `binds` if any); whether it succeeded.
fn spawn(dir: &Path, cmd: &str, binds: Binds) -> bool {
    let mut command = tokio::process::Command::new("/bin/sh");
    command.arg("-c").arg(cmd).current_dir(dir);
    if !binds.is_empty() {
        binds.install(&mut command);
    }
    command.as_std_mut().status().unwrap().success()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[test]
#[ignore = "a benchmark: run with --ignored --nocapture, in release mode"]
fn dir_input_bench() {
    let disk = tempfile::tempdir().unwrap();
    let sandbox_base = std::env::var_os("FLOW_BENCH_SANDBOX").unwrap_or("/dev/shm".into());
    let sandboxes = tempfile::tempdir_in(sandbox_base).unwrap();
    let tree = disk.path().join("flow-out/tools");
    let linkable = sandboxes.path().join("trees/tools");
    make_tree(&tree);
    make_tree(&linkable);
    std::process::Command::new("sync").status().unwrap();
    if !super::mounts::available(sandboxes.path()) {
        println!("read-only binds are not available here: `bind` is skipped");
    }
    let methods = [
        DirMethod::Symlink,
        DirMethod::Bind,
        DirMethod::Copy,
        DirMethod::Hardlink,
    ];
    let mut times = vec![Vec::new(); methods.len()];
    let (mut plain, mut hooked, mut stamp) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        for (m, method) in methods.iter().enumerate() {
            if *method == DirMethod::Bind && !super::mounts::available(sandboxes.path()) {
                continue;
            }
            let exec = sandboxes.path().join(format!("{method:?}-{round}"));
            times[m].push(dir_action(*method, &tree, &linkable, &exec));
        }
        let started = Instant::now();
        assert!(spawn(sandboxes.path(), "true", Binds::default()));
        plain.push(started.elapsed());
        let mut binds = Binds::default();
        let empty = sandboxes.path().join("empty");
        let _ = fs::create_dir(&empty);
        binds.push(&tree, &empty).unwrap();
        let started = Instant::now();
        assert!(spawn(sandboxes.path(), "true", binds));
        hooked.push(started.elapsed());
        let started = Instant::now();
        flow_cache::TreeStamp::of(&tree).unwrap();
        stamp.push(started.elapsed());
    }
    let show = |what: &str, t: &mut Vec<Duration>| {
        if t.is_empty() {
            return;
        }
        t.sort();
        println!(
            "{what:<34}: best {:>8.2} median {:>8.2} ms",
            ms(t[0]),
            ms(t[t.len() / 2])
        );
    };
    for (m, method) in methods.iter().enumerate() {
        show(
            &format!("action with the tree by {method:?}").to_lowercase(),
            &mut times[m],
        );
    }
    show("spawn `true`", &mut plain);
    show("spawn `true`, namespace + 1 bind", &mut hooked);
    show("TreeStamp::of the tree", &mut stamp);
}
