//! Measures staging 1,000 input files by symlink, hardlink and copy, the numbers behind the
//! choice recorded in `stage.rs`. Ignored by default; run it in release mode:
//!
//! ```text
//! cargo test -p flow --release --lib staging_bench -- --ignored --nocapture
//! ```
//!
//! Per method and file size: 1,000 files (20 for the 4 MiB size) spread over 20 directories, as a
//! package's sources are, staged into a fresh directory with `DirMaker` (the executor's) and
//! `fs::symlink`, `fs::hard_link` or `stage::copy_file` (the executor's); 9 rounds with the
//! methods interleaved; best and median in µs per file; then the teardown (`remove_dir_all`) of
//! the staged tree. Sources and copies share one file system (hardlinks need it), and the
//! sources are `sync`ed first so their writeback does not land on the first method measured.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use super::stage::{copy_file, DirMaker};

const DIRS: usize = 20;
const ROUNDS: usize = 9;

#[derive(Debug, Clone, Copy)]
enum Method {
    Symlink,
    Hardlink,
    Copy,
}

fn stage_file(method: Method, source: &Path, dest: &Path) -> std::io::Result<()> {
    match method {
        Method::Symlink => std::os::unix::fs::symlink(source, dest),
        Method::Hardlink => fs::hard_link(source, dest),
        Method::Copy => copy_file(source, dest, false),
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
    let methods = [Method::Symlink, Method::Hardlink, Method::Copy];
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
