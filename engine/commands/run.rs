//! `flow run LABEL [-- COMMAND ARGS...]`: runs a program that a built target provides, in the
//! directory flow starts in: `flow run //:dev_tools_py3_11 -- ruff format src/` runs the ruff
//! the build installed, on the user's files.
//!
//! The target is built first (`flow build -q LABEL`, its lines on stderr, so that the
//! program's stdout is its own). Then the program runs with the target's outputs first on
//! `PATH` (a directory output's `bin/` and the directory itself, an executable file output's
//! directory) and its directory outputs first on `PYTHONPATH` (a `py_requirements` install is
//! a `pip install --target` directory). A target whose outputs are one executable file (and no
//! directory) is the program: the words after `--` are its arguments, as with `bazel run`;
//! otherwise they are the command. The exit code is the program's (128 + N when killed by
//! signal N).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::analysis::load_graph;
use crate::error::Error;

pub fn run(
    start: &Path,
    label: &str,
    command: &[String],
    cache_flag: Option<&Path>,
) -> Result<i32, Error> {
    let (ws, graph, _) = load_graph(start, cache_flag)?;
    let label = crate::commands::log::single_label(&graph, label)?;
    let target = graph.get(&label).expect("checked by single_label");
    if target.kind == flow_rules::TargetKind::Group {
        let members: Vec<String> = target.deps.iter().map(|d| format!("`{d}`")).collect();
        return Err(Error::Usage {
            message: format!("`{label}` is a group: it has no outputs, so no program to run"),
            help: Some(format!("run one of its targets: {}", members.join(", "))),
        });
    }
    let io = |what: &'static str, path: &Path, e: std::io::Error| Error::Io {
        path: path.to_path_buf(),
        action: what,
        error: e.to_string(),
    };
    // Built first, its report on stderr.
    let me = std::env::current_exe().map_err(|e| io("find", Path::new("flow"), e))?;
    let mut build = Command::new(&me);
    build.arg("-C").arg(&ws.root);
    if let Some(dir) = cache_flag {
        build.arg("--cache-dir").arg(dir);
    }
    let status = build
        .args(["build", "-q", &label.to_string()])
        .stdout(std::io::stderr())
        .status()
        .map_err(|e| io("run", &me, e))?;
    if !status.success() {
        eprintln!("flow run: `{label}` did not build, so nothing was run");
        return Ok(status.code().unwrap_or(1));
    }
    let out_root = crate::session::out_root(&ws.root);
    let outputs: Vec<(PathBuf, bool)> = target
        .outs
        .iter()
        .map(|o| {
            let rel = crate::expand::join_path(label.package(), o.trim_end_matches('/'));
            (out_root.join(rel), o.ends_with('/'))
        })
        .collect();
    let ToRun {
        program,
        path_dirs,
        python_dirs,
    } = what_to_run(&label, &outputs, command)?;
    // (An empty or unset old value adds nothing: a trailing `:` would mean the current
    // directory.)
    let joined = |dirs: &[PathBuf], old: Option<std::ffi::OsString>| {
        let mut all: Vec<PathBuf> = dirs.to_vec();
        if let Some(old) = old.filter(|o| !o.is_empty()) {
            all.extend(std::env::split_paths(&old));
        }
        std::env::join_paths(all).unwrap_or_default()
    };
    let mut child = tokio::process::Command::new(&program[0]);
    child
        .args(&program[1..])
        .current_dir(start)
        .env("PATH", joined(&path_dirs, std::env::var_os("PATH")))
        .env(
            "PYTHONPATH",
            joined(&python_dirs, std::env::var_os("PYTHONPATH")),
        )
        .stdin(Stdio::inherit());
    let cannot = |e: std::io::Error| Error::Usage {
        message: format!("cannot run `{}`: {e}", program[0]),
        help: Some(format!(
            "the programs `{label}` provides are in {}",
            path_dirs
                .iter()
                .map(|d| crate::workspace::display_path(d))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| io("start a runtime for", &me, e))?;
    runtime.block_on(async {
        // Registered before the program starts: SIGTERM or SIGHUP to flow (a CI cancel, a
        // closed terminal) ends the program too, as Ctrl-C ends it (adversarial run: it was left
        // running).
        let mut interrupts = crate::interrupts::Interrupts::register();
        let mut child = match child.spawn() {
            Ok(child) => child,
            // As a shell says it: 127 not found, 126 found but not runnable.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                ) =>
            {
                let code = match e.kind() {
                    std::io::ErrorKind::NotFound => 127,
                    _ => 126,
                };
                eprint!("{}", crate::diagnostics::render(&cannot(e), false));
                return Ok(code);
            }
            Err(e) => return Err(cannot(e)),
        };
        let status = tokio::select! {
            status = child.wait() => status.map_err(cannot)?,
            _ = async {
                match &mut interrupts {
                    Some(i) => i.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                if let Some(pid) = child.id() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                }
                let gone = tokio::time::timeout(std::time::Duration::from_secs(5), child.wait()).await;
                if gone.is_err() {
                    let _ = child.kill().await;
                }
                return Ok(130);
            }
        };
        use std::os::unix::process::ExitStatusExt;
        Ok(status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
    })
}

/// The program and its arguments, and the directories first on `PATH` and `PYTHONPATH`, for a
/// target with `outputs` (path, is a directory) and the words after `--`.
fn what_to_run(
    label: &flow_rules::Label,
    outputs: &[(PathBuf, bool)],
    command: &[String],
) -> Result<ToRun, Error> {
    let mut path_dirs: Vec<PathBuf> = Vec::new();
    let mut python_dirs: Vec<PathBuf> = Vec::new();
    for (path, dir) in outputs {
        if *dir {
            if path.join("bin").is_dir() {
                path_dirs.push(path.join("bin"));
            }
            path_dirs.push(path.clone());
            python_dirs.push(path.clone());
        } else if let Some(parent) = path.parent() {
            path_dirs.push(parent.to_path_buf());
        }
    }
    let executables: Vec<&PathBuf> = outputs
        .iter()
        .filter(|(p, dir)| !dir && is_executable(p))
        .map(|(p, _)| p)
        .collect();
    let has_dirs = outputs.iter().any(|(_, dir)| *dir);
    let program: Vec<String> = match (executables.as_slice(), has_dirs, command) {
        // The target is the program; the words after `--` are its arguments.
        ([one], false, args) => {
            let mut p = vec![one.display().to_string()];
            p.extend(args.iter().cloned());
            p
        }
        (_, _, []) => {
            return Err(Error::Usage {
                message: format!(
                    "`{label}` has {} executable file output(s){}: say what to run",
                    executables.len(),
                    if has_dirs { " and a directory" } else { "" }
                ),
                help: Some(format!("flow run {label} -- COMMAND ARGS...")),
            })
        }
        (_, _, command) => command.to_vec(),
    };
    Ok(ToRun {
        program,
        path_dirs,
        python_dirs,
    })
}

/// What `flow run` runs, and with which search paths.
struct ToRun {
    program: Vec<String>,
    path_dirs: Vec<PathBuf>,
    python_dirs: Vec<PathBuf>,
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
