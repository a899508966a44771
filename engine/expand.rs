//! Command expansion: `$(SRCS)`, `$(OUTS)`, `$(location LABEL)`, `$(locations LABEL)`,
//! `$(ARTIFACT)` and `$$`.
//!
//! A command runs in its package directory (inside the sandbox, or in the real tree with
//! `sandbox = False`), so every expansion yields paths relative to that directory:
//! - `$(SRCS)` / `$(OUTS)`: the action's own sources / declared outputs, space-separated;
//! - `$(SRCS_FILE)`: a file listing the action's own sources, one a line, for lists too long
//!   for a command line (Linux takes at most 128 KiB in one argument, and `sh -c CMD` is one).
//!   It expands to [`SRCS_FILE`], the shell word `"$TMPDIR/flow-srcs.txt"`: `TMPDIR` is the
//!   action's private directory in both layouts (flow's value always wins), and the text is
//!   the same in every checkout, so it keys like any other expansion. The executor writes the
//!   file before the command starts ([`srcs_file_text`]). A source whose name holds a newline
//!   cannot be listed so, and is an expansion error;
//! - `$(location //dep:x)`: the one declared output of a dependency (`$(locations ...)`: all of
//!   them); in the sandbox a dependency's outputs sit at `<dep package>/<out>` of the exec root,
//!   in the real tree under `flow-out/<dep package>/<out>`;
//! - `$(ARTIFACT)`: in a deploy's command, the path of its artifact (the one output of its
//!   `artifact` target), as `$(location ARTIFACT)` would give it;
//! - `$$`: a literal `$`. Any other `$` is left for the shell (`$HOME`, `$1`).
//!
//! Paths are shell-quoted when they contain anything but `[A-Za-z0-9_./+-@%=,:]`. Validation runs at
//! analysis (every `flow` command), so a build never meets an expansion error.

use flow_rules::{Delivery, Label, Target};

/// What `$(SRCS_FILE)` expands to: the file [`srcs_file_text`] fills, in the action's private
/// temporary directory, as one double-quoted shell word.
pub const SRCS_FILE: &str = "\"$TMPDIR/flow-srcs.txt\"";

/// The name of that file in the action's `TMPDIR`.
pub const SRCS_FILE_NAME: &str = "flow-srcs.txt";

/// The content of the `$(SRCS_FILE)` file of an action whose expanded command is `cmd`, with
/// `srcs` relative to its package (as `$(SRCS)` gives them): each path on a line of its own,
/// as it is (no quoting: `while IFS= read -r f`, `xargs -d '\n'`); `None` when the command does
/// not use it.
pub fn srcs_file_text(cmd: &str, srcs: impl Iterator<Item = String>) -> Option<String> {
    cmd.contains(SRCS_FILE).then(|| {
        srcs.fold(String::new(), |mut text, s| {
            text.push_str(&s);
            text.push('\n');
            text
        })
    })
}

/// Why a command cannot be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandError {
    /// Byte range in the command string.
    pub start: usize,
    pub end: usize,
    pub message: String,
    pub help: Option<String>,
}

/// Where the command runs, which decides where dependency outputs are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// The exec root mirrors the workspace; outputs sit beside sources.
    Sandbox,
    /// The real workspace; dependency outputs are under `flow-out/`.
    RealTree,
}

/// Expands `target.cmd`. `outs_of` gives the declared outputs of a dependency (by label).
pub fn expand<'a>(
    target: &Target,
    layout: Layout,
    outs_of: impl Fn(&Label) -> Option<&'a [String]>,
) -> Result<String, ExpandError> {
    let cmd = target.cmd.as_deref().unwrap_or("");
    let package = target.label.package();
    let mut out = String::with_capacity(cmd.len());
    let mut rest = cmd;
    let mut offset = 0;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let at = offset + i;
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("$$") {
            out.push('$');
            offset = at + 2;
            rest = after;
            continue;
        }
        let Some(body) = tail.strip_prefix("$(") else {
            out.push('$');
            offset = at + 1;
            rest = &tail[1..];
            continue;
        };
        let Some(close) = body.find(')') else {
            return Err(ExpandError {
                start: at,
                end: cmd.len(),
                message: "unterminated `$(`".into(),
                help: Some("write `$$` for a literal `$`".into()),
            });
        };
        let inner = body[..close].trim();
        let end = at + 2 + close + 1;
        let err = |message: String, help: Option<String>| ExpandError {
            start: at,
            end,
            message,
            help,
        };
        let (func, arg) = match inner.split_once(char::is_whitespace) {
            Some((f, a)) => (f, a.trim()),
            None => (inner, ""),
        };
        match (func, arg.is_empty()) {
            ("SRCS", true) => out.push_str(&join(target.srcs.iter().map(|s| s.as_str()))),
            ("SRCS_FILE", true) => {
                if let Some(s) = target.srcs.iter().find(|s| s.contains('\n')) {
                    return Err(err(
                        format!(
                            "`$(SRCS_FILE)` lists one source a line, and the source {s:?} has a \
                             newline in its name"
                        ),
                        Some("rename the file, or pass the sources with `$(SRCS)`".into()),
                    ));
                }
                out.push_str(SRCS_FILE);
            }
            ("OUTS", true) => {
                out.push_str(&join(target.outs.iter().map(|s| s.trim_end_matches('/'))))
            }
            ("location" | "locations", false) => {
                let label = Label::parse(arg, Some(package)).map_err(|e| {
                    err(
                        format!("invalid label `{arg}` in `$({func} ...)`: {}", e.kind),
                        None,
                    )
                })?;
                if !target.deps.contains(&label) {
                    return Err(err(
                        format!(
                            "`$({func} {arg})` names `{label}`, which is not a dependency of `{}`",
                            target.label
                        ),
                        Some(format!("add `{}` to `deps`", label.relative_to(package))),
                    ));
                }
                let outs = outs_of(&label).unwrap_or(&[]);
                let (message, help) = match (outs.len(), func) {
                    (0, _) => (
                        format!("`{label}` declares no outputs, so `$({func} {arg})` has nothing to point at"),
                        None,
                    ),
                    (1, _) | (_, "locations") => {
                        out.push_str(&locations(package, &label, outs, layout));
                        offset = end;
                        rest = &cmd[end..];
                        continue;
                    }
                    (n, _) => (
                        format!("`{label}` declares {n} outputs; `$(location ...)` needs exactly one"),
                        Some(format!("use `$(locations {arg})` for all of them")),
                    ),
                };
                return Err(err(message, help));
            }
            ("ARTIFACT", true) => match &target.delivery {
                // Its one output was checked with the graph (`graph::check_delivery`).
                Some(Delivery::Deploy { artifact, .. }) => out.push_str(&locations(
                    package,
                    artifact,
                    outs_of(artifact).unwrap_or(&[]),
                    layout,
                )),
                _ => {
                    return Err(err(
                        "`$(ARTIFACT)` is the artifact of a `deploy`; this is not one".into(),
                        Some("use `$(location LABEL)` for a dependency's output".into()),
                    ))
                }
            },
            _ => {
                let known = [
                    "SRCS",
                    "SRCS_FILE",
                    "OUTS",
                    "location",
                    "locations",
                    "ARTIFACT",
                ];
                let help = match flow_rules::suggest::closest(func, known) {
                    Some(s) if s.starts_with("location") => format!("did you mean `$({s} {arg})`?"),
                    Some(s) => format!("did you mean `$({s})`?"),
                    None => "known: `$(SRCS)`, `$(SRCS_FILE)`, `$(OUTS)`, `$(location LABEL)`, `$(locations LABEL)`, `$(ARTIFACT)` (a deploy's); write `$$` for a literal `$`".into(),
                };
                return Err(err(format!("unknown expansion `$({inner})`"), Some(help)));
            }
        }
        offset = end;
        rest = &cmd[end..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The paths of `outs` (declared by `label`) as a command of `package` sees them, joined.
fn locations(package: &str, label: &Label, outs: &[String], layout: Layout) -> String {
    let paths = outs.iter().map(|o| {
        let o = o.trim_end_matches('/');
        let target_path = match layout {
            Layout::Sandbox => join_path(label.package(), o),
            Layout::RealTree => join_path(&join_path(crate::session::OUT_DIR, label.package()), o),
        };
        relative(package, &target_path)
    });
    join_owned(paths)
}

/// `a/b` + `c` → `a/b/c`; the root package is `""`.
pub fn join_path(dir: &str, rel: &str) -> String {
    if dir.is_empty() {
        rel.to_owned()
    } else {
        format!("{dir}/{rel}")
    }
}

/// The path of workspace-relative `to` as seen from workspace-relative directory `from`.
pub fn relative(from: &str, to: &str) -> String {
    let from: Vec<&str> = from.split('/').filter(|s| !s.is_empty()).collect();
    let to_parts: Vec<&str> = to.split('/').filter(|s| !s.is_empty()).collect();
    let common = from
        .iter()
        .zip(&to_parts)
        .take_while(|(a, b)| a == b)
        .count();
    let mut parts: Vec<&str> = vec![".."; from.len() - common];
    parts.extend(&to_parts[common..]);
    parts.join("/")
}

fn quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_./+-@%=,:".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn join<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items.map(quote).collect::<Vec<_>>().join(" ")
}

fn join_owned(items: impl Iterator<Item = String>) -> String {
    items.map(|s| quote(&s)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative("packages/p5", "packages/p3/out/t.txt"),
            "../p3/out/t.txt"
        );
        assert_eq!(relative("a", "a/out/x"), "out/x");
        assert_eq!(relative("", "a/x"), "a/x");
        assert_eq!(relative("a/b", "c"), "../../c");
        assert_eq!(relative("a", "flow-out/b/x"), "../flow-out/b/x");
    }

    #[test]
    fn the_srcs_file_lists_one_path_a_line_as_it_is_when_the_command_uses_it() {
        let srcs = || ["a b.txt", "it's", "sub/x"].into_iter().map(String::from);
        let cmd = format!("xargs cat < {SRCS_FILE}");
        assert_eq!(
            srcs_file_text(&cmd, srcs()).as_deref(),
            Some("a b.txt\nit's\nsub/x\n")
        );
        assert_eq!(srcs_file_text("cat a b", srcs()), None);
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("a/b.txt"), "a/b.txt");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
    }
}
