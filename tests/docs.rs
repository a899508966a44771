//! Every `flow` command shown in README.md, docs/ and BUILD.example is run (issue 18: the docs
//! named targets and files that no longer existed). A renamed target, flag or command then
//! breaks this test, not the reader.
//!
//! - **Where commands are found**: the lines of fenced code blocks that start with `flow ` (or
//!   `$ flow `), the inline code spans that start with `flow `, and the indented comment lines
//!   of BUILD.example. A line is cut at a shell operator (`|`, `>`, `;`, `&&`, `&`), at a `#`
//!   comment and at a run of three spaces (a remark in a column); each `flow` command of a
//!   `;`/`&&` chain is one. Output lines (`flow: ok ...`, `flow watch: changed ...`) are not
//!   commands.
//! - **Synopses** (`flow log LABEL`, `flow build [-j N] [PATTERN...]`) hold placeholders: their
//!   command must exist (`flow help COMMAND...`) and each of their flags must be in its help.
//! - **Commands** run against one of three workspaces, the first where they succeed: a copy of
//!   `examples/monorepo` in a git repository with two commits (so `HEAD^1` exists), the
//!   workspace BUILD.example says how to make, and the small workspaces docs/build.md and
//!   docs/gates.md show (`//app:count`, `//ci:publish`, `//quality:quality`, ...), made from
//!   their `python` blocks that start with a `# PKG/BUILD` line. Commands that would run
//!   actions (`build`, `test`, `watch`, `run`) are checked without running them, since the
//!   example's tools come from the network: their flags must be in their help and their
//!   patterns must resolve (`flow build --dry-run PATTERNS`; `flow affected --since REF` for a
//!   `--since` build; `flow query` for `flow run`'s label).
//! - A mention of a command that is not there yet is allowed on a line that says it comes
//!   `later` or `next`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{flow_bin, git};

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A command as the docs show it, and where.
#[derive(Debug, Clone)]
struct Shown {
    place: String,
    text: String,
    /// On a line that says the command comes later.
    later: bool,
    /// Named in prose (an inline code span): with nothing but the command's words and flags,
    /// it is a mention of the command, not a run of it.
    inline: bool,
    /// The error the docs show it printing (the line after it in a code block starts with
    /// `error`): the command must fail with that first line.
    fails_with: Option<String>,
}

/// The `flow` commands of a Markdown file.
fn from_markdown(file: &str, text: &str) -> Vec<Shown> {
    let mut out = Vec::new();
    let mut fenced = false;
    let lines: Vec<&str> = text.lines().collect();
    // Whether each line's paragraph says that what it names comes later.
    let mut later_at = vec![false; lines.len()];
    let mut start = 0;
    for end in 0..=lines.len() {
        if end == lines.len() || lines[end].trim().is_empty() {
            let later = lines[start..end]
                .iter()
                .any(|l| l.contains("later") || l.contains("Coming next"));
            later_at[start..end].fill(later);
            start = end + 1;
        }
    }
    for (n, line) in lines.iter().enumerate() {
        let place = format!("{file}:{}", n + 1);
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            fenced = !fenced;
            continue;
        }
        let later = later_at[n];
        if fenced {
            let body = trimmed.strip_prefix("$ ").unwrap_or(trimmed);
            let next = lines.get(n + 1).map(|l| l.trim()).unwrap_or("");
            let fails_with = next.starts_with("error").then(|| next.to_owned());
            for cmd in commands_of_line(body) {
                out.push(Shown {
                    place: place.clone(),
                    text: cmd,
                    later,
                    inline: false,
                    fails_with: fails_with.clone(),
                });
            }
        } else {
            for span in line.split('`').skip(1).step_by(2) {
                for cmd in commands_of_line(&span.replace("\\|", "|")) {
                    out.push(Shown {
                        place: place.clone(),
                        text: cmd,
                        later,
                        inline: true,
                        fails_with: None,
                    });
                }
            }
        }
    }
    out
}

/// The commands of BUILD.example's comments: the indented lines (`#     flow ...`).
fn from_build_example(text: &str) -> Vec<Shown> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let Some(comment) = line.trim_start().strip_prefix('#') else {
            continue;
        };
        if !comment.starts_with("    ") {
            continue;
        }
        for cmd in commands_of_line(comment.trim_start()) {
            out.push(Shown {
                place: format!("BUILD.example:{}", n + 1),
                text: cmd,
                later: false,
                inline: false,
                fails_with: None,
            });
        }
    }
    out
}

/// The `flow` commands of one line of shell: cut at a comment, at a column of remarks, at
/// pipes and redirections; each part of a `;` or `&&` chain.
fn commands_of_line(line: &str) -> Vec<String> {
    let line = line.split("   ").next().unwrap_or("").replace(" 2>", " >");
    let line = cut_unquoted(&line, &['#']);
    let mut out = Vec::new();
    for part in split_unquoted(&line, &[";", "&&"]) {
        let part = cut_unquoted(part.trim(), &['|', '>', '&']);
        let part = part.trim();
        let Some(rest) = part.strip_prefix("flow ") else {
            continue;
        };
        // Output lines: `flow: ok ...`, `flow watch: changed ...`, `flow profile: ...`.
        let first = rest.split_whitespace().next().unwrap_or("");
        if first.ends_with(':') || first.starts_with('(') {
            continue;
        }
        out.push(part.to_owned());
    }
    out
}

/// `line` up to the first of `stops` outside quotes (and outside a synopsis's `[...]`).
fn cut_unquoted(line: &str, stops: &[char]) -> String {
    let mut quote = None;
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '[' => quote = Some(']'),
            None if stops.contains(&c) => return line[..i].to_owned(),
            None => {}
        }
    }
    line.to_owned()
}

/// `line` split at each of `seps` outside quotes.
fn split_unquoted<'a>(line: &'a str, seps: &[&str]) -> Vec<&'a str> {
    let mut parts = Vec::new();
    let mut quote = None;
    let mut start = 0;
    let mut i = 0;
    while i < line.len() {
        let c = line[i..].chars().next().unwrap();
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None => {
                if let Some(sep) = seps.iter().find(|s| line[i..].starts_with(**s)) {
                    parts.push(&line[start..i]);
                    i += sep.len();
                    start = i;
                    continue;
                }
            }
        }
        i += c.len_utf8();
    }
    parts.push(&line[start..]);
    parts
}

/// Whether a word is a placeholder of a synopsis: `LABEL`, `[-j N]`, `PATTERN...`, `K/N`, `a|b`.
fn placeholder(word: &str) -> bool {
    let bare = word.trim_matches(|c| "[]().,".contains(c));
    word.contains('[')
        || word.contains(']')
        || word.contains('|')
        || word.contains('…')
        || (bare.chars().any(|c| c.is_ascii_uppercase())
            && bare
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || "_/.-".contains(c)))
}

/// The workspaces a command may be meant for.
struct Places {
    _dir: tempfile::TempDir,
    /// Holds `examples/monorepo` (a git repository with two commits).
    root: PathBuf,
    example: PathBuf,
    pipeline: PathBuf,
    fixture: PathBuf,
}

fn copy_dir(from: &Path, to: &Path) {
    crate::support::copy_source_tree(from, to);
}

/// The small workspaces of docs/build.md and docs/gates.md in one: each `python` block that
/// starts with a `# PKG/BUILD` line gives its BUILD files (a block may hold several, each
/// after its own line), beside the files docs/build.md's prose names.
fn scratch_workspaces(dir: &Path) {
    let mut doc = String::new();
    for name in ["docs/build.md", "docs/gates.md"] {
        doc.push_str(&std::fs::read_to_string(repo(name)).unwrap());
        doc.push('\n');
    }
    let mut files: Vec<(String, String)> = Vec::new();
    let mut in_python = false;
    // The BUILD file the lines of this block go to.
    let mut current: Option<usize> = None;
    for line in doc.lines() {
        match line.trim() {
            "```python" => in_python = true,
            "```" => {
                in_python = false;
                current = None;
            }
            l if in_python => {
                let header = l
                    .strip_prefix("# ")
                    .and_then(|h| h.split_whitespace().next())
                    .filter(|h| h.ends_with("/BUILD"));
                if let Some(h) = header {
                    files.push((h.to_owned(), String::new()));
                    current = Some(files.len() - 1);
                } else if let Some(i) = current {
                    files[i].1.push_str(line);
                    files[i].1.push('\n');
                }
            }
            _ => {}
        }
    }
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    for needed in [
        "lib/BUILD",
        "app/BUILD",
        "pkg/BUILD",
        "ci/BUILD",
        "p/BUILD",
        "quality/BUILD",
    ] {
        assert!(
            names.contains(&needed),
            "the docs no longer show {needed}: {names:?}"
        );
    }
    let mut all = files;
    all.push(("flow.toml".into(), String::new()));
    all.push(("lib/words.txt".into(), "pear\napple\nfig\n".into()));
    all.push(("ci/main.py".into(), "import helper\n".into()));
    all.push(("ci/helper.py".into(), String::new()));
    for (name, text) in all {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

impl Places {
    fn new() -> Places {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let example = root.join("examples/monorepo");
        copy_dir(&repo("examples/monorepo"), &example);
        git(&root, &["init", "-q", "-b", "main"]);
        git(&root, &["add", "-A"]);
        git(&root, &["commit", "-q", "-m", "example"]);
        std::fs::write(example.join("NOTES.md"), "two\n").unwrap();
        git(&root, &["add", "-A"]);
        git(&root, &["commit", "-q", "-m", "two"]);
        git(&root, &["update-ref", "refs/remotes/origin/main", "HEAD^1"]);
        // The base branch's report that docs/report.md's pull-request step compares with.
        std::fs::write(example.join("base.json"), "{\"finding_items\": []}\n").unwrap();
        // As BUILD.example says to make it.
        let pipeline = root.join("pipeline");
        std::fs::create_dir_all(&pipeline).unwrap();
        std::fs::copy(repo("BUILD.example"), pipeline.join("BUILD")).unwrap();
        std::fs::write(
            pipeline.join("flow.toml"),
            "[vars]\npython_versions = [\"3.9\", \"3.10\", \"3.11\"]\n\
             [environments.staging]\n[environments.production]\n",
        )
        .unwrap();
        let fixture = root.join("fixture");
        scratch_workspaces(&fixture);
        Places {
            _dir: dir,
            root,
            example,
            pipeline,
            fixture,
        }
    }
}

struct Ran {
    ok: bool,
    out: String,
}

fn flow(dir: &Path, args: &[String]) -> Ran {
    let out = Command::new(flow_bin())
        .current_dir(dir)
        .args(args)
        .env_remove("GITHUB_ACTIONS")
        .env_remove("FLOW_CACHE_DIR")
        .env("CI", "true")
        .output()
        .unwrap();
    Ran {
        ok: out.status.success(),
        out: format!(
            "$ flow {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// The subcommand words of `args` (`cache gc`, `hooks run pre-commit`), after the global flags.
fn command_words(args: &[String]) -> (Vec<String>, usize) {
    let mut i = 0;
    while i < args.len() && args[i].starts_with('-') {
        // -C DIR, --cache-dir DIR, --color WHEN take a value.
        i += if ["-C", "--cache-dir", "--color"].contains(&args[i].as_str()) {
            2
        } else {
            1
        };
    }
    let mut words: Vec<String> = Vec::new();
    let nested = ["cache", "hooks", "ci", "remote", "help"];
    while i < args.len() && !args[i].starts_with('-') && !placeholder(&args[i]) {
        let w = &args[i];
        let more = words.is_empty()
            || (nested.contains(&words[0].as_str())
                && w.chars().all(|c| c.is_ascii_lowercase() || c == '-'));
        if !more {
            break;
        }
        words.push(w.clone());
        i += 1;
        if words.len() == 2 && words[0] == "hooks" {
            break;
        }
    }
    (words, i)
}

/// The help of `flow WORDS`: `None` when there is no such command.
fn help_of(dir: &Path, words: &[String]) -> Option<String> {
    let mut args = vec!["help".to_owned()];
    args.extend(words.iter().filter(|w| *w != "help").cloned());
    let ran = flow(dir, &args);
    ran.ok.then_some(ran.out)
}

/// Every flag of `args` (from `from` on) is in `help`; returns the flags that are not.
fn unknown_flags(help: &str, args: &[String]) -> Vec<String> {
    args.iter()
        .take_while(|a| *a != "--")
        .filter(|a| a.starts_with('-') && *a != "-" && !a.starts_with("-/") && !a.starts_with("-:"))
        .map(|a| {
            a.split('=')
                .next()
                .unwrap()
                .trim_matches(|c| "[]".contains(c))
                .to_owned()
        })
        .filter(|flag| {
            !help
                .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
                .any(|w| w == flag)
        })
        .collect()
}

/// The flags of `help` that take a value (`--events <FILE>`, `-j, --jobs <N>`).
fn flags_with_values(help: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in help.lines() {
        let words: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|w| !w.is_empty())
            .collect();
        if words.iter().any(|w| w.starts_with('<'))
            && words.first().is_some_and(|w| w.starts_with('-'))
        {
            for w in words.iter().take_while(|w| w.starts_with('-')) {
                out.insert((*w).to_owned());
            }
        }
    }
    out
}

/// Checks one shown command; `Err` says why it does not work as shown.
fn check(places: &Places, shown: &Shown) -> Result<(), String> {
    let Some(mut args) = shlex::split(&shown.text) else {
        return Err("cannot be split into words".into());
    };
    args.remove(0);
    // `-C examples/monorepo` and `-C /tmp/pipeline` name the places made above.
    for i in 0..args.len().saturating_sub(1) {
        if args[i] == "-C" {
            if args[i + 1].starts_with("/tmp/pipeline") {
                args[i + 1] = places.pipeline.display().to_string();
            } else if args[i + 1].starts_with("examples/monorepo") {
                args[i + 1] = places.root.join(&args[i + 1]).display().to_string();
            } else if args[i + 1] == "WORKSPACE" || args[i + 1] == "DIR" {
                // A synopsis.
            } else {
                return Err(format!(
                    "`-C {}` names no workspace the test knows",
                    args[i + 1]
                ));
            }
        }
    }
    let (words, at) = command_words(&args);
    if words.is_empty() {
        // `flow COMMAND --help`, `flow --version`.
        return match args.iter().any(|a| placeholder(a)) || flow(&places.example, &args).ok {
            true => Ok(()),
            false => Err("does not run".into()),
        };
    }
    let Some(help) = help_of(&places.example, &words) else {
        return if shown.later {
            Ok(())
        } else {
            Err(format!("`flow {}` is not a command", words.join(" ")))
        };
    };
    let unknown = unknown_flags(&help, &args);
    if !unknown.is_empty() {
        return Err(format!("unknown flag(s) {unknown:?}"));
    }
    if args.iter().any(|a| placeholder(a)) || words.first().is_some_and(|w| w == "help") {
        return Ok(());
    }

    if let Some(error) = &shown.fails_with {
        let mut printed = Vec::new();
        for dir in [&places.example, &places.pipeline, &places.fixture] {
            let ran = flow(dir, &args);
            if !ran.ok && ran.out.lines().nth(1) == Some(error.as_str()) {
                return Ok(());
            }
            printed.push(ran.out);
        }
        return Err(format!(
            "the docs show it failing with `{error}`; it printed:\n{}",
            printed.join("\n")
        ));
    }
    if words[0] == "init" {
        let dir = tempfile::tempdir().unwrap();
        let ran = flow(dir.path(), &args);
        return match ran.ok {
            true => Ok(()),
            false => Err(ran.out),
        };
    }
    let valued = flags_with_values(&help);
    let plan = plan(&words, &args, at, &valued);
    if shown.inline && plan.positional == 0 {
        return Ok(());
    }
    let mut tried = Vec::new();
    let has_c = args.iter().any(|a| a == "-C");
    let dirs: Vec<&Path> = if has_c {
        vec![&places.root]
    } else {
        vec![&places.example, &places.pipeline, &places.fixture]
    };
    for dir in dirs {
        let ran = flow(dir, &plan.args);
        if ran.ok || plan.accept.iter().any(|a| ran.out.contains(a)) {
            return Ok(());
        }
        tried.push(format!("in {}:\n{}", dir.display(), ran.out));
    }
    Err(tried.join("\n"))
}

/// How a command is checked: the arguments run, and the messages that mean the command is
/// right although it did not succeed (a label with no recorded run yet, an empty ledger).
struct Plan {
    args: Vec<String>,
    accept: Vec<&'static str>,
    /// How many arguments are neither flags nor their values.
    positional: usize,
}

fn plan(words: &[String], args: &[String], at: usize, valued: &BTreeSet<String>) -> Plan {
    let globals = &args[..at.saturating_sub(words.len())];
    let rest = &args[at..];
    let with = |cmd: &[&str], tail: Vec<String>| -> Vec<String> {
        let mut a: Vec<String> = globals.to_vec();
        a.extend(cmd.iter().map(|s| s.to_string()));
        a.extend(tail);
        a
    };
    // The patterns and the `--since REF` of a build-like command.
    let mut patterns = Vec::new();
    let mut since = None;
    let mut i = 0;
    while i < rest.len() {
        let a = &rest[i];
        if a == "--" {
            patterns.extend(rest[i + 1..].iter().cloned());
            break;
        }
        if a == "--since" {
            since = rest.get(i + 1).cloned();
        }
        if a.starts_with('-') && a.len() > 1 && !a.starts_with("-/") && !a.starts_with("-:") {
            i += if valued.contains(a.as_str()) && !a.contains('=') {
                2
            } else {
                1
            };
            continue;
        }
        patterns.push(a.clone());
        i += 1;
    }
    let first = words.first().map(String::as_str).unwrap_or("");
    let positional = patterns.len();
    let mut plan = match first {
        "build" | "test" | "watch" => {
            let mut tail = Vec::new();
            let cmd: &[&str] = match since {
                Some(r) => {
                    tail.extend(["--since".to_owned(), r]);
                    &["affected"]
                }
                None => &["build", "--dry-run"],
            };
            tail.push("--".into());
            tail.extend(patterns);
            Plan {
                args: with(cmd, tail),
                accept: Vec::new(),
                positional: 0,
            }
        }
        "run" => Plan {
            args: with(&["query"], patterns.iter().take(1).cloned().collect()),
            accept: Vec::new(),
            positional: 0,
        },
        _ => Plan {
            args: args.to_vec(),
            accept: vec![
                "no recorded run",
                "nothing is live in",
                "the deploy ledger has no entry",
                "the ledger has no deploy of",
            ],
            positional: 0,
        },
    };
    plan.positional = positional;
    plan
}

#[test]
fn every_command_in_the_docs_runs() {
    let mut shown = Vec::new();
    for doc in ["README.md"].into_iter().map(str::to_owned).chain(
        std::fs::read_dir(repo("docs"))
            .unwrap()
            .map(|e| format!("docs/{}", e.unwrap().file_name().to_string_lossy()))
            .filter(|f| f.ends_with(".md")),
    ) {
        let text = std::fs::read_to_string(repo(&doc)).unwrap();
        shown.extend(from_markdown(&doc, &text));
    }
    let example = std::fs::read_to_string(repo("BUILD.example")).unwrap();
    shown.extend(from_build_example(&example));
    assert!(shown.len() > 300, "only {} commands found", shown.len());
    let places = Places::new();
    let mut seen = BTreeSet::new();
    let mut failures = Vec::new();
    let mut checked = 0;
    for s in &shown {
        if !seen.insert(s.text.clone()) {
            continue;
        }
        checked += 1;
        if let Err(why) = check(&places, s) {
            failures.push(format!("{}: `{}`:\n{why}\n", s.place, s.text));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} distinct commands shown in the docs do not work as shown:\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn commands_are_found_and_cut_as_a_shell_would() {
    assert_eq!(
        commands_of_line("flow clean --cache 2>/dev/null; flow build //ci:publish"),
        ["flow clean --cache", "flow build //ci:publish"]
    );
    assert_eq!(
        commands_of_line("flow query 'deps(//:ci)' --output dot | dot -Tsvg > ci.svg"),
        ["flow query 'deps(//:ci)' --output dot"]
    );
    assert_eq!(
        commands_of_line("flow rollback production --to 2            the one before"),
        ["flow rollback production --to 2"]
    );
    assert_eq!(
        commands_of_line("flow ledger staging  # newest first"),
        ["flow ledger staging"]
    );
    assert!(commands_of_line("flow watch: changed app/a.txt").is_empty());
    assert!(commands_of_line("flow: ok: 1 ran").is_empty());
    assert!(placeholder("LABEL") && placeholder("[-j") && placeholder("K/N"));
    assert!(!placeholder("//...") && !placeholder("production") && !placeholder("-k"));
}

/// Every test docs/reliability.md names as the check of a guarantee exists: its last name is a
/// `fn` (or a `mod` of tests) in the repository's Rust sources, and its first one a module
/// there. (A guarantee listed with a test that was renamed away would be checked by nothing.)
#[test]
fn the_tests_reliability_md_names_exist() {
    let text = std::fs::read_to_string(repo("docs/reliability.md")).unwrap();
    let mut sources = String::new();
    let mut modules = BTreeSet::new();
    for dir in ["tests", "engine", "cache", "rules"] {
        for file in crate::support::files_under(&repo(dir)) {
            if file.extension().is_some_and(|e| e == "rs") {
                sources.push_str(&std::fs::read_to_string(&file).unwrap_or_default());
                sources.push('\n');
                for part in file.with_extension("").components() {
                    modules.insert(part.as_os_str().to_string_lossy().into_owned());
                }
            }
        }
    }
    let cited: BTreeSet<&str> = text
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.contains("::")
                && s.split("::").all(|p| {
                    !p.is_empty()
                        && p.chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                })
        })
        .collect();
    assert!(cited.len() > 100, "only {} tests cited", cited.len());
    let missing: Vec<&str> = cited
        .iter()
        .copied()
        .filter(|path| {
            let parts: Vec<&str> = path.split("::").collect();
            let last = parts[parts.len() - 1];
            let defined = [
                format!("fn {last}("),
                format!("fn {last}<"),
                format!("mod {last}"),
            ]
            .iter()
            .any(|d| sources.contains(d.as_str()));
            !defined || !modules.contains(parts[0])
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/reliability.md names tests that do not exist: {missing:?}"
    );
}
