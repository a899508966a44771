//! An action flow evaluates itself rather than through `/bin/sh`: a gate (`gates/`). It runs in
//! the staged sandbox as a command would: it reads its inputs there, writes its declared output
//! in its package directory, and its "output" (the gate's table) is its log.

use std::path::{Path, PathBuf};

use super::process::Finished;
use super::{ActionSpec, Status};

/// How deep a directory input is searched for reports.
const MAX_DEPTH: usize = 16;

/// Evaluates the gate `canonical` of `spec` in the sandbox `exec` (package directory `cwd`).
pub(super) async fn run_gate(
    spec: &ActionSpec,
    canonical: &str,
    exec: &Path,
    cwd: &Path,
) -> Finished {
    let label = spec.label.clone();
    let canonical = canonical.to_owned();
    let exec = exec.to_path_buf();
    // A directory input is bound into a command's own mount namespace, which this evaluation
    // does not have: its files are read where it really is (`Input::source`).
    let inputs: Vec<(String, bool, PathBuf)> = spec
        .inputs
        .iter()
        .map(|i| (i.dest.clone(), i.is_dir, i.source.clone()))
        .collect();
    let output = spec.outputs.first().map(|o| cwd.join(o));
    let done = tokio::task::spawn_blocking(move || {
        let mut files = Vec::new();
        for (dest, is_dir, source) in inputs {
            match is_dir {
                true => files_under(&source, &dest, 0, &mut files),
                false => files.push((dest.clone(), exec.join(&dest))),
            }
        }
        let evaluated = crate::gates::evaluate(&label, &canonical, &files);
        let written = match (&output, evaluated.json.is_empty()) {
            (Some(out), false) => std::fs::write(out, &evaluated.json).err(),
            _ => None,
        };
        (evaluated, written)
    })
    .await;
    match done {
        Ok((evaluated, None)) => Finished {
            status: Status::Exited(evaluated.status),
            stdout: evaluated.log.into_bytes(),
            stderr: Vec::new(),
        },
        Ok((_, Some(e))) => Finished {
            status: Status::SpawnFailed(format!("cannot write the gate's table: {e}")),
            stdout: Vec::new(),
            stderr: Vec::new(),
        },
        Err(e) => Finished {
            status: Status::SpawnFailed(format!("the gate's evaluation failed: {e}")),
            stdout: Vec::new(),
            stderr: Vec::new(),
        },
    }
}

/// The files under directory `dir` (shown as `shown/...`), not following links.
fn files_under(dir: &Path, shown: &str, depth: usize, out: &mut Vec<(String, PathBuf)>) {
    if depth > MAX_DEPTH {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(kind) = e.file_type() else { continue };
        let shown = format!("{shown}/{name}");
        if kind.is_dir() {
            files_under(&e.path(), &shown, depth + 1, out);
        } else if kind.is_file() {
            out.push((shown, e.path()));
        }
    }
}
