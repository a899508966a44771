//! `flow ci github`: the generated workflow (golden text, parsed back as YAML, checked by
//! actionlint), where it goes in a repository whose workspace is a subdirectory, the refusal to
//! replace a file it did not write; and every `sh` block of docs/ci.md, run in a fixture
//! repository.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{flow_bin, git, golden, Ws};

const FLOW_GIT: &str = "https://example.org/flow.git";

/// A repository whose workspace sits in `services/app`, with a `[cache] dir` and targets that
/// run two Python versions; committed on `main`.
fn repo_with_subdir_workspace() -> Ws {
    let ws = Ws::bare()
        .file("README.md", "the repository\n")
        .file("services/app/flow.toml", "[cache]\ndir = \"build-cache\"\n")
        .file(
            "services/app/BUILD",
            "task(name = \"test\", srcs = [\"t.py\"], cmd = \"python3.11 t.py\", tools = [\"python3.11\"])\n\
             task(name = \"old\", srcs = [\"t.py\"], cmd = \"python3.9 t.py\", tools = [\"python3.9\", \"sh\"])\n",
        )
        .file("services/app/t.py", "print('ok')\n");
    git(ws.path(), &["init", "-q", "-b", "main"]);
    git(ws.path(), &["add", "-A"]);
    git(ws.path(), &["commit", "-q", "-m", "init"]);
    ws
}

fn app(ws: &Ws) -> PathBuf {
    ws.path().join("services/app")
}

fn yaml(text: &str) -> serde_json::Value {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("not YAML: {e}\n{text}"))
}

#[test]
fn github_workflow_golden_for_a_workspace_in_a_subdirectory() {
    let ws = repo_with_subdir_workspace();
    let run = ws.run_in(
        &app(&ws),
        &["ci", "github", "--flow-git", FLOW_GIT, "--shards", "3"],
    );
    run.ok();
    assert_eq!(run.stderr, "wrote `$WS/.github/workflows/flow.yml`\n");
    let text = std::fs::read_to_string(ws.path().join(".github/workflows/flow.yml")).unwrap();
    golden("ci_github_workflow", &text);
    // The same text on standard output.
    let printed = ws.run_in(
        &app(&ws),
        &[
            "ci",
            "github",
            "--flow-git",
            FLOW_GIT,
            "--shards",
            "3",
            "--output",
            "-",
        ],
    );
    assert_eq!(printed.ok().replace(" --output -", ""), text);
}

#[test]
fn github_workflow_parses_back_with_the_workspace_values() {
    let ws = repo_with_subdir_workspace();
    let run = ws.run_in(
        &app(&ws),
        &[
            "ci",
            "github",
            "--install",
            "make install-flow",
            "--shards",
            "2",
            "--branch",
            "trunk",
            "--output",
            "-",
        ],
    );
    let doc = yaml(run.ok());
    assert_eq!(doc["on"]["push"]["branches"], serde_json::json!(["trunk"]));
    assert!(doc["on"]["pull_request"].is_object(), "{doc}");
    assert_eq!(doc["permissions"], serde_json::json!({"contents": "read"}));
    let job = &doc["jobs"]["build"];
    assert_eq!(
        job["strategy"]["matrix"]["shard"],
        serde_json::json!([1, 2])
    );
    assert_eq!(job["defaults"]["run"]["working-directory"], "services/app");
    let steps = job["steps"].as_array().unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "Check out",
            "Install flow",
            "Set up Python",
            "Put the interpreters on the action PATH",
            "Restore the flow cache",
            "Build what the pull request affects",
            "Build everything",
            "Upload the reports",
            "Upload the outputs",
        ]
    );
    let step = |name: &str| steps.iter().find(|s| s["name"] == name).unwrap();
    assert_eq!(step("Install flow")["run"], "make install-flow");
    assert_eq!(step("Check out")["with"]["fetch-depth"], 2);
    // The versions the targets' tools name, in version order; `sh` is not Python.
    assert_eq!(
        step("Set up Python")["with"]["python-version"],
        "3.9\n3.11\n"
    );
    // The cache directory of flow.toml, under the workspace; restored from `trunk` at worst.
    let cache = &step("Restore the flow cache")["with"];
    assert_eq!(cache["path"], "services/app/build-cache");
    assert!(
        cache["restore-keys"]
            .as_str()
            .unwrap()
            .contains("refs/heads/trunk-shard"),
        "{cache}"
    );
    let pr = step("Build what the pull request affects")["run"]
        .as_str()
        .unwrap();
    assert!(
        pr.contains("flow build //... --since HEAD^1 --shard \"$FLOW_SHARD\" -k"),
        "{pr}"
    );
    assert_eq!(
        step("Build everything")["env"]["FLOW_SHARD"],
        "${{ matrix.shard }}/2"
    );
    let outputs = &step("Upload the outputs")["with"];
    assert_eq!(outputs["path"], "services/app/flow-out/");
    assert_eq!(outputs["include-hidden-files"], true);
}

#[test]
fn github_workflow_quotes_branch_names_and_commands() {
    let ws = Ws::new().file("BUILD", "task(name = \"a\", cmd = \"true\")\n");
    git(ws.path(), &["init", "-q", "-b", "main"]);
    let branch = "rel/\"quoted\"+it's!#x";
    let install = "echo 'a: b' # not a comment\n";
    let run = ws.run(&[
        "ci",
        "github",
        "--install",
        install.trim_end(),
        "--branch",
        branch,
        "--output",
        "-",
    ]);
    let doc = yaml(run.ok());
    // A literal in GitHub's filter syntax: `+` and `!` escaped.
    assert_eq!(
        doc["on"]["push"]["branches"][0],
        "rel/\"quoted\"\\+it's\\!#x"
    );
    let steps = doc["jobs"]["build"]["steps"].as_array().unwrap();
    assert_eq!(steps[1]["run"], install.trim_end());
    // At the repository's root: no working directory, the default cache directory.
    assert!(doc["jobs"]["build"]["defaults"].is_null());
    assert_eq!(steps[2]["with"]["path"], ".flow");
}

/// The generated workflows pass actionlint, when it is installed; `.ci/run` installs it and
/// sets FLOW_REQUIRE_ACTIONLINT=1, which makes its absence a failure.
#[test]
fn github_workflow_passes_actionlint() {
    let found = Command::new("actionlint")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("FLOW_REQUIRE_ACTIONLINT").as_deref() != Ok("1"),
            "FLOW_REQUIRE_ACTIONLINT=1 and no `actionlint` on PATH (.ci/run installs it)"
        );
        eprintln!("skipped: no actionlint on PATH");
        return;
    }
    let ws = repo_with_subdir_workspace();
    let cases: [&[&str]; 4] = [
        &["--flow-git", FLOW_GIT],
        &[
            "--flow-git",
            FLOW_GIT,
            "--remote-cache",
            "${{ vars.FLOW_REMOTE_CACHE }}",
        ],
        &[
            "--flow-git",
            FLOW_GIT,
            "--flow-rev",
            "v0.1.0",
            "--shards",
            "1",
        ],
        &[
            "--install",
            "cargo install --locked --path \"$GITHUB_WORKSPACE/flow\"",
            "--branch",
            "rel/\"q\"+it's!",
        ],
    ];
    for (i, extra) in cases.iter().enumerate() {
        let out = ws.path().join(format!(".github/workflows/flow{i}.yml"));
        let mut args = vec!["ci", "github", "--output", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        ws.run_in(&app(&ws), &args).ok();
    }
    let lint = Command::new("actionlint")
        .current_dir(ws.path())
        .output()
        .expect("run actionlint");
    assert!(
        lint.status.success(),
        "actionlint:\n{}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
}

#[test]
fn github_refuses_to_replace_a_workflow_it_did_not_write() {
    let ws = repo_with_subdir_workspace();
    let path = ws.path().join(".github/workflows/flow.yml");
    ws.write(".github/workflows/flow.yml", b"name: mine\n");
    let refused = ws.run_in(&app(&ws), &["ci", "github", "--flow-git", FLOW_GIT]);
    golden("ci_github_foreign_file", refused.bad_input());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "name: mine\n");
    // --force replaces it; then the file is flow's, replaced without --force.
    ws.run_in(
        &app(&ws),
        &["ci", "github", "--flow-git", FLOW_GIT, "--force"],
    )
    .ok();
    let first = std::fs::read_to_string(&path).unwrap();
    assert!(
        first.starts_with("# Generated by `flow ci github`"),
        "{first}"
    );
    ws.run_in(
        &app(&ws),
        &["ci", "github", "--flow-git", FLOW_GIT, "--shards", "2"],
    )
    .ok();
    let second = std::fs::read_to_string(&path).unwrap();
    assert!(
        second.contains("shard: [1, 2]") && second != first,
        "{second}"
    );
}

#[test]
fn github_errors() {
    let ws = repo_with_subdir_workspace();
    let none = ws.run_in(&app(&ws), &["ci", "github"]);
    golden("ci_github_no_install", none.bad_input());
    let branch = ws.run_in(
        &app(&ws),
        &["ci", "github", "--flow-git", FLOW_GIT, "--branch", "a:b"],
    );
    golden("ci_github_bad_branch", branch.bad_input());
    let comma = ws.run_in(
        &app(&ws),
        &["ci", "github", "--flow-git", FLOW_GIT, "--branch", "a,b"],
    );
    assert!(
        comma
            .bad_input()
            .contains("`--branch a,b` is not a branch name"),
        "{}",
        comma.stderr
    );
    let newline = ws.run_in(&app(&ws), &["ci", "github", "--install", "a\nb"]);
    golden("ci_github_control_character", newline.bad_input());
    let outside = Ws::new().file("BUILD", "");
    let not_git = outside.run(&["ci", "github", "--flow-git", FLOW_GIT]);
    golden("ci_github_not_in_git", not_git.bad_input());
    assert!(!ws.path().join(".github").exists());
}

/// The fenced `sh` blocks of a Markdown file, in order.
fn sh_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// Every `sh` block of docs/ci.md runs, in order, in one fixture repository: a workspace at its
/// root with a second commit and the seed's old workflow, as the docs assume (`text` blocks are what cannot run offline).
#[test]
fn docs_ci_commands_run() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ci.md")).unwrap();
    let blocks = sh_blocks(&doc);
    assert!(
        blocks.len() >= 3,
        "docs/ci.md has {} sh blocks",
        blocks.len()
    );
    let ws = Ws::new()
        .file("BUILD", "task(name = \"lib\", srcs = [\"lib.txt\"], outs = [\"lib.out\"], cmd = \"cp lib.txt lib.out\")\n\
                        task(name = \"test\", srcs = [\"test.txt\"], deps = [\":lib\"], cmd = \"cat test.txt\")\n")
        .file("lib.txt", "1\n")
        .file("test.txt", "t\n")
        .file(".gitignore", ".flow/\nflow-out/\n")
        .file(".github/workflows/ci-cd-pipeline.yml", "name: Enterprise CI/CD Pipeline\n");
    git(ws.path(), &["init", "-q", "-b", "main"]);
    git(ws.path(), &["add", "-A"]);
    git(ws.path(), &["commit", "-q", "-m", "one"]);
    ws.write("test.txt", b"t2\n");
    git(ws.path(), &["commit", "-q", "-am", "two"]);
    let bin = flow_bin();
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for block in blocks {
        let out = Command::new("sh")
            .args(["-euc", &block])
            .current_dir(ws.path())
            .env("PATH", &path)
            .env_remove("FLOW_CACHE_DIR")
            .env_remove("GITHUB_ACTIONS")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docs/ci.md block failed:\n{block}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Regressions (adversarial run): the workflow was written through a symbolic link (anywhere it
/// led), and a flow.toml value holding `${{` reached the workflow as a GitHub expression. Both
/// are refused now; and pushes get a concurrency group of their own run (GitHub cancels a
/// pending run of a shared group even without `cancel-in-progress`).
#[test]
fn github_refuses_links_and_expressions_and_never_cancels_pushes() {
    let ws = repo_with_subdir_workspace();
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(ws.path().join(".github/workflows")).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("victim.yml"),
        ws.path().join(".github/workflows/flow.yml"),
    )
    .unwrap();
    let run = ws.run_in(&app(&ws), &["ci", "github", "--flow-git", FLOW_GIT]);
    assert_eq!(run.code, 2);
    golden("ci_github_symlink", &run.stderr);
    assert!(!outside.path().join("victim.yml").exists());
    std::fs::remove_file(ws.path().join(".github/workflows/flow.yml")).unwrap();

    let text = ws
        .run_in(
            &app(&ws),
            &["ci", "github", "--flow-git", FLOW_GIT, "--output", "-"],
        )
        .ok()
        .to_owned();
    let doc = yaml(&text);
    assert_eq!(
        doc["concurrency"]["group"],
        "flow-${{ github.event_name == 'pull_request' && github.ref || github.run_id }}"
    );

    ws.write(
        "services/app/flow.toml",
        b"[cache]\ndir = \"c ${{ github.token }}\"\n",
    );
    let run = ws.run_in(
        &app(&ws),
        &["ci", "github", "--flow-git", FLOW_GIT, "--output", "-"],
    );
    assert_eq!(run.code, 2);
    golden("ci_github_expression", &run.stderr);
}

/// Regressions (adversarial run): a branch or a `--flow-git`/`--flow-rev` holding `${{`
/// reached the workflow as an expression; a workflow hard-linked elsewhere was rewritten in
/// place (through the other name).
#[test]
fn github_refuses_expressions_in_flags_and_never_writes_through_a_hard_link() {
    let ws = repo_with_subdir_workspace();
    let run = ws.run_in(
        &app(&ws),
        &[
            "ci",
            "github",
            "--flow-git",
            FLOW_GIT,
            "--branch",
            "a${{b}}",
        ],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("holds `${{`"), "{}", run.stderr);
    let run = ws.run_in(&app(&ws), &["ci", "github", "--flow-git", "u${{ x }}"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    ws.run_in(&app(&ws), &["ci", "github", "--flow-git", FLOW_GIT])
        .ok();
    let path = ws.path().join(".github/workflows/flow.yml");
    let other = tempfile::tempdir().unwrap();
    let elsewhere = other.path().join("elsewhere.yml");
    std::fs::hard_link(&path, &elsewhere).unwrap();
    let before = std::fs::read(&elsewhere).unwrap();
    ws.run_in(
        &app(&ws),
        &["ci", "github", "--flow-git", FLOW_GIT, "--shards", "2"],
    )
    .ok();
    assert_eq!(
        std::fs::read(&elsewhere).unwrap(),
        before,
        "the other name is untouched"
    );
    assert_ne!(
        std::fs::read(&path).unwrap(),
        before,
        "the workflow is rewritten"
    );
}

/// `--remote-cache`: every shard's build uses it, through the step's environment (an
/// expression's value never becomes script text); the regenerate line keeps it; an address
/// that is not one is refused.
#[test]
fn github_workflow_with_a_remote_cache() {
    let ws = repo_with_subdir_workspace();
    let run = ws.run_in(
        &app(&ws),
        &[
            "ci",
            "github",
            "--flow-git",
            FLOW_GIT,
            "--remote-cache",
            "grpc://cache.internal:9092",
            "--output",
            "-",
        ],
    );
    let text = run.ok();
    assert!(
        text.contains("--remote-cache 'grpc://cache.internal:9092'")
            || text.contains("--remote-cache grpc://cache.internal:9092"),
        "{text}"
    );
    let doc = yaml(text);
    let steps = doc["jobs"]["build"]["steps"].as_array().unwrap();
    let builds: Vec<&serde_json::Value> = steps
        .iter()
        .filter(|s| s["run"].as_str().is_some_and(|r| r.contains("flow build")))
        .collect();
    assert_eq!(builds.len(), 2, "{text}");
    for b in builds {
        assert_eq!(b["env"]["FLOW_REMOTE_CACHE"], "grpc://cache.internal:9092");
        // The token from the repository's secrets, in the variable flow reads: one that may
        // only read for pull requests, whose code could read it.
        let secret = match b["if"].as_str().unwrap().contains("== 'pull_request'") {
            true => "${{ secrets.FLOW_REMOTE_READ_TOKEN }}",
            false => "${{ secrets.FLOW_REMOTE_TOKEN }}",
        };
        assert_eq!(b["env"]["FLOW_REMOTE_TOKEN"], secret);
        assert!(
            b["run"]
                .as_str()
                .unwrap()
                .contains("--remote-cache \"$FLOW_REMOTE_CACHE\""),
            "{b}"
        );
    }
    let bad = ws.run_in(
        &app(&ws),
        &[
            "ci",
            "github",
            "--flow-git",
            FLOW_GIT,
            "--remote-cache",
            "https://x:1",
            "--output",
            "-",
        ],
    );
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr
            .contains("--remote-cache: `https://x:1` is not a remote cache address"),
        "{}",
        bad.stderr
    );
}
