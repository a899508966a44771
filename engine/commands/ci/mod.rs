//! `flow ci github`: writes a GitHub Actions workflow that builds the workspace in CI: pull
//! requests build what they affect (`--since`), pushes to the default branch build everything,
//! over a shard matrix, with the cache directory kept between runs and the reports uploaded
//! (docs/ci.md).
//!
//! The workspace decides what is not the user's choice: where it sits in the git repository,
//! its cache directory, the Python versions its actions run. The file goes to
//! `.github/workflows/flow.yml` of the repository unless `--output` says otherwise, and an
//! existing file is replaced only when it starts with the generated header or with `--force`.

pub mod workflow;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::analysis::load_graph;
use crate::delivery::git::git;
use crate::error::Error;
use workflow::{Install, Plan, HEADER_MARK};

/// The workflow's path in the repository, without `--output`.
pub const DEFAULT_OUTPUT: &str = ".github/workflows/flow.yml";

/// `flow ci SUBCOMMAND`.
#[derive(Debug, clap::Subcommand)]
pub enum CiCommand {
    /// Write a GitHub Actions workflow (default `.github/workflows/flow.yml` of the repository)
    Github {
        /// Runners to split the targets over (`--shard K/N`, one matrix job each)
        #[arg(long, value_name = "N", default_value_t = 4,
              value_parser = clap::value_parser!(u16).range(1..=256))]
        shards: u16,
        /// The default branch, whose pushes build everything (default: `origin/HEAD`'s, else
        /// `main` or `master`, whichever exists)
        #[arg(long, value_name = "NAME")]
        branch: Option<String>,
        /// Where to write the workflow; `-` prints it
        #[arg(long, value_name = "FILE|-")]
        output: Option<PathBuf>,
        /// Replace the file even if `flow ci github` did not write it
        #[arg(long)]
        force: bool,
        /// Build with this remote cache (grpc://HOST:PORT, or an expression such as
        /// `${{ vars.FLOW_REMOTE_CACHE }}`): shards share results; pushes upload, pull requests
        /// only read
        #[arg(long, value_name = "URL")]
        remote_cache: Option<String>,
        /// Install flow on the runner by building it from this git repository with `cargo
        /// install` (the binary cached per commit of flow)
        #[arg(long, value_name = "URL", conflicts_with = "install")]
        flow_git: Option<String>,
        /// The branch, tag or commit of `--flow-git` to build
        #[arg(
            long,
            value_name = "REV",
            default_value = "HEAD",
            requires = "flow_git"
        )]
        flow_rev: String,
        /// Install flow on the runner with this shell command instead (it must put `flow` on
        /// PATH, e.g. by appending a directory to `$GITHUB_PATH`)
        #[arg(long, value_name = "CMD")]
        install: Option<String>,
    },
}

/// Runs `flow ci SUBCOMMAND` from `start`.
pub fn run(command: &CiCommand, start: &Path, cache_flag: Option<&Path>) -> Result<i32, Error> {
    let CiCommand::Github {
        shards,
        branch,
        output,
        force,
        remote_cache,
        flow_git,
        flow_rev,
        install,
    } = command;
    github(
        start,
        GithubArgs {
            shards: *shards,
            branch: branch.as_deref(),
            output: output.as_deref(),
            force: *force,
            remote_cache: remote_cache.as_deref(),
            flow_git: flow_git.as_deref(),
            flow_rev,
            install: install.as_deref(),
            cache_flag,
        },
    )
}

/// The arguments of `flow ci github`.
pub struct GithubArgs<'a> {
    pub shards: u16,
    pub branch: Option<&'a str>,
    /// A file, or `-` for standard output; default [`DEFAULT_OUTPUT`] in the repository.
    pub output: Option<&'a Path>,
    pub force: bool,
    /// `--remote-cache`: a URL or a GitHub expression.
    pub remote_cache: Option<&'a str>,
    pub flow_git: Option<&'a str>,
    pub flow_rev: &'a str,
    pub install: Option<&'a str>,
    pub cache_flag: Option<&'a Path>,
}

fn usage(message: String, help: Option<String>) -> Error {
    Error::Usage { message, help }
}

fn io(path: &Path, action: &'static str, e: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        action,
        error: e.to_string(),
    }
}

pub fn github(start: &Path, args: GithubArgs<'_>) -> Result<i32, Error> {
    let install = match (args.flow_git, args.install) {
        (Some(url), _) => Install::Git {
            url: url.to_string(),
            rev: args.flow_rev.to_string(),
        },
        (None, Some(cmd)) => Install::Command(cmd.to_string()),
        (None, None) => {
            return Err(usage(
                "the workflow must install flow on the runner, and flow has no published \
                 release: say where it comes from"
                    .into(),
                Some(
                    "`--flow-git URL` builds it from its git repository with `cargo install` \
                     (cached); `--install CMD` runs your own command"
                        .into(),
                ),
            ))
        }
    };
    let (ws, graph, _) = load_graph(start, args.cache_flag)?;
    let repo = repo_root(&ws.root)?;
    let workspace = relative(&repo, &ws.root);
    let branch = match args.branch {
        Some(b) => b.to_string(),
        None => default_branch(&repo),
    };
    check_branch(&repo, &branch)?;
    check_value("--branch", &branch)?;
    for (flag, text) in [
        ("--flow-git", args.flow_git),
        ("--flow-rev", Some(args.flow_rev)),
    ] {
        check_value(flag, text.unwrap_or_default())?;
    }
    // `--install` is the user's own step: an expression in it is theirs to write.
    check_text("--install", args.install.unwrap_or_default())?;
    let cache_dir_text = ws
        .config
        .cache_dir
        .as_ref()
        .map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_default();
    for (what, text) in [
        ("`[cache] dir` of flow.toml", cache_dir_text.as_str()),
        ("the workspace's directory", &workspace),
    ] {
        check_value(what, text)?;
    }
    for dir in &ws.config.action_path {
        check_value("`[build] action_path` of flow.toml", dir)?;
    }
    let tools = graph.targets().iter().flat_map(|t| t.tools.iter());
    if let Some(url) = args.remote_cache.filter(|u| !u.starts_with("${{")) {
        crate::remote::endpoint_uri(url)
            .map_err(|e| usage(format!("--remote-cache: {e}"), None))?;
    }
    let plan = Plan {
        regenerate: String::new(),
        remote_cache: args.remote_cache.map(str::to_owned),
        branch,
        shards: args.shards,
        cache_dir: cache_dir(&ws.config.cache_dir, &workspace),
        workspace,
        install,
        python_versions: python_versions(tools),
        action_bin: ws
            .config
            .action_path
            .iter()
            .find(|d| d.starts_with('/'))
            .cloned()
            .unwrap_or_else(|| "/usr/local/bin".into()),
    };
    let output = match args.output {
        Some(p) if p == Path::new("-") => None,
        Some(p) => Some(p.to_path_buf()),
        None => Some(repo.join(DEFAULT_OUTPUT)),
    };
    let plan = Plan {
        regenerate: regenerate(&plan, output.as_deref(), &repo),
        ..plan
    };
    let text = workflow::render(&plan);
    match output {
        None => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
        }
        Some(path) => {
            write(&path, &text, args.force)?;
            eprintln!("wrote `{}`", crate::workspace::display_path(&path));
        }
    }
    Ok(0)
}

/// Writes the workflow, refusing to replace a file `flow ci github` did not write, and to write
/// through a symbolic link (which could lead anywhere: adversarial run).
fn write(path: &Path, text: &str, force: bool) -> Result<(), Error> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(usage(
            format!(
                "`{}` is a symbolic link: flow writes the workflow as a regular file",
                crate::workspace::display_path(path)
            ),
            Some("remove the link, or pass --output FILE to write elsewhere".into()),
        ));
    }
    match std::fs::read(path) {
        Ok(old) if !force && !old.starts_with(HEADER_MARK.as_bytes()) => {
            return Err(usage(
                format!(
                    "`{}` exists and was not written by `flow ci github`",
                    crate::workspace::display_path(path)
                ),
                Some("pass --force to replace it, or --output FILE to write elsewhere".into()),
            ))
        }
        _ => {}
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io(dir, "create directory", e))?;
    // A new file renamed over the old one: another name of the old file (a hard link) is
    // never written through.
    crate::reports::write_atomically(path, text.as_bytes()).map_err(|e| io(path, "write", e))
}

/// The top directory of the git repository holding `dir`.
fn repo_root(dir: &Path) -> Result<PathBuf, Error> {
    let out = git(dir)
        .args(["rev-parse", "--show-toplevel"])
        .output()
        .map_err(|e| io(dir, "run git in", e))?;
    if !out.status.success() {
        return Err(usage(
            format!(
                "`{}` is not in a git repository: the workflow belongs to one",
                dir.display()
            ),
            Some("run `git init` at the repository's root first".into()),
        ));
    }
    let top = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim_end());
    Ok(std::fs::canonicalize(&top).unwrap_or(top))
}

/// `dir` relative to `repo`, `/`-separated (`""` for the root itself).
fn relative(repo: &Path, dir: &Path) -> String {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let rel = dir.strip_prefix(repo).unwrap_or(Path::new(""));
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    parts.join("/")
}

/// The branch `origin/HEAD` names, else `main` or `master` where one exists, else `main`.
fn default_branch(repo: &Path) -> String {
    let out = git(repo)
        .args([
            "symbolic-ref",
            "--quiet",
            "--short",
            "refs/remotes/origin/HEAD",
        ])
        .output();
    if let Some(out) = out.ok().filter(|o| o.status.success()) {
        let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if let Some(b) = name.strip_prefix("origin/") {
            return b.to_string();
        }
    }
    for b in ["main", "master"] {
        let ok = git(repo)
            .args([
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("refs/heads/{b}"),
            ])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return b.to_string();
        }
    }
    "main".to_string()
}

/// The cache directory as the workflow's actions see it: relative to the checkout.
fn cache_dir(configured: &Option<PathBuf>, workspace: &str) -> String {
    let dir = configured.clone().unwrap_or_else(|| PathBuf::from(".flow"));
    if dir.is_absolute() {
        return dir.to_string_lossy().into_owned();
    }
    let rel = dir.to_string_lossy().trim_end_matches('/').to_string();
    if workspace.is_empty() {
        rel
    } else {
        format!("{workspace}/{rel}")
    }
}

/// The versions `X.Y` of the `pythonX.Y` tools, in version order.
pub fn python_versions<'a>(tools: impl Iterator<Item = &'a String>) -> Vec<String> {
    let versions: BTreeSet<(u32, u32)> = tools
        .filter_map(|t| {
            let (major, minor) = t.strip_prefix("python")?.split_once('.')?;
            let number = |s: &str| {
                s.parse::<u32>()
                    .ok()
                    .filter(|_| s.bytes().all(|b| b.is_ascii_digit()))
            };
            Some((number(major)?, number(minor)?))
        })
        .collect();
    versions.iter().map(|(a, b)| format!("{a}.{b}")).collect()
}

/// A branch name git accepts (`git check-ref-format --branch`) and cache keys can hold (no
/// comma).
fn check_branch(repo: &Path, branch: &str) -> Result<(), Error> {
    let valid = git(repo)
        .args(["check-ref-format", "--branch", branch])
        .output()
        .is_ok_and(|o| o.status.success());
    if !valid || branch.contains(',') {
        return Err(usage(
            format!("`--branch {branch}` is not a branch name the workflow can hold"),
            Some(
                "git's rules apply (`git check-ref-format --branch NAME`), and no comma: the \
                 name goes into cache keys"
                    .into(),
            ),
        ));
    }
    Ok(())
}

/// Refuses control characters (a newline would end the header's comment line, and no branch
/// name or URL holds one).
fn check_text(flag: &str, text: &str) -> Result<(), Error> {
    if text.chars().any(char::is_control) {
        return Err(usage(
            format!("{flag} {text:?}: control characters (a newline, a tab) cannot go into the workflow"),
            None,
        ));
    }
    Ok(())
}

/// Refuses a value of the workspace that GitHub would not take as it is: control characters,
/// or `${{`, which starts an expression GitHub evaluates (adversarial run: a cache directory
/// named `${{ x }}` reached the workflow as an expression).
fn check_value(what: &str, text: &str) -> Result<(), Error> {
    check_text(what, text)?;
    if text.contains("${{") {
        return Err(usage(
            format!("{what} {text:?} holds `${{{{`, which GitHub would evaluate as an expression"),
            Some("rename it for the workflow, or write the workflow by hand".into()),
        ));
    }
    Ok(())
}

/// The command line that writes the same file again, run from the repository's root.
fn regenerate(plan: &Plan, output: Option<&Path>, repo: &Path) -> String {
    let mut words = vec!["flow".to_string()];
    if !plan.workspace.is_empty() {
        words.extend(["-C".into(), quote(&plan.workspace)]);
    }
    words.extend(["ci".into(), "github".into()]);
    words.extend(["--shards".into(), plan.shards.to_string()]);
    words.extend(["--branch".into(), quote(&plan.branch)]);
    if let Some(url) = &plan.remote_cache {
        words.extend(["--remote-cache".into(), quote(url)]);
    }
    match &plan.install {
        Install::Git { url, rev } => {
            words.extend(["--flow-git".into(), quote(url)]);
            words.extend(["--flow-rev".into(), quote(rev)]);
        }
        Install::Command(cmd) => words.extend(["--install".into(), quote(cmd)]),
    }
    match output {
        None => words.extend(["--output".into(), "-".into()]),
        Some(p) if p == repo.join(DEFAULT_OUTPUT) => {}
        Some(p) => {
            let abs = std::env::current_dir()
                .map(|c| c.join(p))
                .unwrap_or(p.to_path_buf());
            let shown = match abs.parent().and_then(|d| std::fs::canonicalize(d).ok()) {
                Some(d) if d.starts_with(repo) => {
                    let name = abs.file_name().unwrap_or_default().to_string_lossy();
                    let dir = relative(repo, &d);
                    if dir.is_empty() {
                        name.into_owned()
                    } else {
                        format!("{dir}/{name}")
                    }
                }
                _ => abs.to_string_lossy().into_owned(),
            };
            words.extend(["--output".into(), quote(&shown)]);
        }
    }
    words.join(" ")
}

/// `word` for a POSIX shell: as it is when it holds only safe characters, else single-quoted.
pub fn quote(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./:@%+=,^".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_versions_in_version_order() {
        let tools: Vec<String> = [
            "python3.11",
            "sh",
            "python3.9",
            "python3.10",
            "python3.x",
            "python3",
            "python3.11",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(python_versions(tools.iter()), vec!["3.9", "3.10", "3.11"]);
    }

    #[test]
    fn quote_words() {
        assert_eq!(quote("main"), "main");
        assert_eq!(quote("https://x.org/a.git"), "https://x.org/a.git");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn cache_dir_relative_to_the_checkout() {
        assert_eq!(cache_dir(&None, ""), ".flow");
        assert_eq!(cache_dir(&None, "ws/sub"), "ws/sub/.flow");
        assert_eq!(cache_dir(&Some("cache/".into()), "ws"), "ws/cache");
        assert_eq!(cache_dir(&Some("/var/flow".into()), "ws"), "/var/flow");
    }
}
