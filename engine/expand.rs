//! Command expansion: `$(SRCS)`, `$(OUTS)`, `$(location LABEL)`, `$(locations LABEL)` and `$$`.
//!
//! A command runs in its package directory (inside the sandbox, or in the real tree with
//! `sandbox = False`), so every expansion yields paths relative to that directory:
//! - `$(SRCS)` / `$(OUTS)`: the action's own sources / declared outputs, space-separated;
//! - `$(location //dep:x)`: the one declared output of a dependency (`$(locations ...)`: all of
//!   them); in the sandbox a dependency's outputs sit at `<dep package>/<out>` of the exec root,
//!   in the real tree under `flow-out/<dep package>/<out>`;
//! - `$$`: a literal `$`. Any other `$` is left for the shell (`$HOME`, `$1`).
//!
//! Paths are shell-quoted when they contain anything but `[A-Za-z0-9_./+-@%=,:]`. Validation runs at
//! analysis (every `flow` command), so a build never meets an expansion error.

use flow_rules::{Label, Target};

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
                if outs.is_empty() {
                    return Err(err(
                        format!("`{label}` declares no outputs, so `$({func} {arg})` has nothing to point at"),
                        None,
                    ));
                }
                if func == "location" && outs.len() > 1 {
                    return Err(err(
                        format!(
                            "`{label}` declares {} outputs; `$(location ...)` needs exactly one",
                            outs.len()
                        ),
                        Some(format!("use `$(locations {arg})` for all of them")),
                    ));
                }
                let paths = outs.iter().map(|o| {
                    let o = o.trim_end_matches('/');
                    let target_path = match layout {
                        Layout::Sandbox => join_path(label.package(), o),
                        Layout::RealTree => {
                            join_path(&join_path(crate::session::OUT_DIR, label.package()), o)
                        }
                    };
                    relative(package, &target_path)
                });
                out.push_str(&join_owned(paths));
            }
            _ => {
                let known = ["SRCS", "OUTS", "location", "locations"];
                let help = match flow_rules::suggest::closest(func, known) {
                    Some(s) if s.starts_with("location") => format!("did you mean `$({s} {arg})`?"),
                    Some(s) => format!("did you mean `$({s})`?"),
                    None => "known: `$(SRCS)`, `$(OUTS)`, `$(location LABEL)`, `$(locations LABEL)`; write `$$` for a literal `$`".into(),
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
    fn quoting() {
        assert_eq!(quote("a/b.txt"), "a/b.txt");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
    }
}
