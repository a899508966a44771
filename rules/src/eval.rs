//! Evaluation of a whole workspace's BUILD files into `Package`s.
//!
//! Outline (each step's module in parentheses):
//! 1. One walk of the workspace (`Listing`) finds the packages and their files.
//! 2. Every BUILD file is read and parsed, in parallel; its `load()`s are resolved to `ModuleId`s
//!    (`source`).
//! 3. The `.star` modules reachable from those loads are read and parsed (workspace files or the
//!    embedded prelude), breadth first, without recursion, so a 10,000-deep load chain is fine
//!    (`loads`).
//! 4. An iterative depth-first search finds `load()` cycles (each reported with the location of
//!    every load on it) and the post-order in which modules are evaluated (`loads`).
//! 5. Each module is evaluated and frozen exactly once, however many packages load it
//!    (`modules`).
//! 6. BUILD files are evaluated in parallel (rayon; Starlark heaps are per thread), each against
//!    the frozen modules it loads. Natives collect targets and errors into the file's context
//!    (`package`).
//! 7. The packages and every error are assembled into one sorted `Evaluation` (here); interpreter
//!    errors become `AnalysisError`s with hints (`starlark_error`). The globals, `print()` and the
//!    loader of frozen modules are shared by steps 5 and 6 (`interpreter`).
//!
//! Invariants: errors are collected, never thrown past a file; a file whose loads failed is not
//! evaluated (and not reported again: the failing module is reported once); evaluation depends only
//! on file contents, the `[vars]` values and the listing.

mod interpreter;
mod loads;
mod modules;
mod package;
mod shared_lists;
mod source;
mod starlark_error;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{sort_errors, AnalysisError};
use crate::listing::Listing;
use crate::target::Package;
use loads::LoadGraph;
use modules::{evaluate_modules, FrozenModules};
use package::{evaluate_packages, PackageOutcome};
pub(crate) use source::kind_of;
use source::parse_build_files;
pub use source::MAX_SOURCE_BYTES;
use starlark_error::suggest_parameter;

/// What an evaluation needs besides the files.
#[derive(Clone, Debug, Default)]
pub struct EvalOptions {
    /// The workspace root (the directory holding `flow.toml`).
    pub root: PathBuf,
    /// The `[vars]` table of `flow.toml`, readable with `config()`.
    pub vars: BTreeMap<String, serde_json::Value>,
    /// Absolute directories never walked (the cache directory when it is inside the workspace).
    pub skip_dirs: Vec<PathBuf>,
    /// BUILD and `.star` files read from here instead of the workspace (workspace-relative
    /// path → text): the evaluation of another commit's version of some of them, over the same
    /// files (`--since`).
    pub overrides: BTreeMap<String, std::sync::Arc<str>>,
}

/// The result of evaluating a workspace: packages that evaluated, and every error found.
#[derive(Debug, Default)]
pub struct Evaluation {
    /// Evaluated packages, sorted by name.
    pub packages: Vec<Package>,
    /// All errors, sorted by file and position.
    pub errors: Vec<AnalysisError>,
    /// Packages whose BUILD file could not be evaluated (syntax error, failed load, ...).
    pub failed_packages: BTreeSet<String>,
    /// The workspace's packages and files.
    pub listing: Listing,
    /// Each `.star` module's direct loads (for watchers: which packages a `.star` edit affects).
    pub module_loads: BTreeMap<String, Vec<String>>,
    /// How many `.star` modules were evaluated (each at most once per evaluation).
    pub modules_evaluated: usize,
}

/// Evaluates every package of the workspace at `opts.root`.
pub fn evaluate_workspace(opts: &EvalOptions) -> std::io::Result<Evaluation> {
    let listing = Listing::scan(&opts.root, &opts.skip_dirs)?;
    Ok(evaluate_listing(opts, listing))
}

/// Evaluates every package of an existing listing.
pub fn evaluate_listing(opts: &EvalOptions, listing: Listing) -> Evaluation {
    let mut errors = Vec::new();
    // 2. Read and parse every BUILD file in parallel.
    let sources = source::Sources {
        root: &opts.root,
        overrides: &opts.overrides,
    };
    let builds = parse_build_files(&sources, &listing);
    // 3. Find and parse every reachable `.star` module, breadth first.
    let graph = LoadGraph::discover(&sources, &builds, &mut errors);
    graph.report_bad_loads(&builds, &mut errors);
    // 4. Cycles and evaluation order.
    let (order, in_cycle) = graph.order(&mut errors);
    // 5. Evaluate each module once, dependencies first.
    let vars = Arc::new(opts.vars.clone());
    let LoadGraph { modules, sources } = graph;
    let modules = evaluate_modules(modules, order, &in_cycle, &vars, &mut errors);
    // 6. Evaluate BUILD files in parallel.
    let outcomes = evaluate_packages(builds, &listing, &modules.frozen, &vars);
    // 7. One sorted result.
    assemble(outcomes, errors, &sources, listing, modules)
}

/// The evaluation's result: packages sorted by name, every error (with "did you mean" for an
/// unknown parameter of a `.star` function) sorted by file and position.
fn assemble(
    outcomes: Vec<PackageOutcome>,
    mut errors: Vec<AnalysisError>,
    sources: &HashMap<String, Arc<str>>,
    listing: Listing,
    modules: FrozenModules,
) -> Evaluation {
    let mut packages = Vec::new();
    let mut failed_packages = BTreeSet::new();
    for outcome in outcomes {
        for mut e in outcome.errors {
            suggest_parameter(&mut e, sources);
            errors.push(e);
        }
        match outcome.package {
            Some(p) => packages.push(p),
            None => {
                failed_packages.insert(outcome.name);
            }
        }
    }
    packages.sort_by(|a, b| a.name.cmp(&b.name));
    sort_errors(&mut errors);
    Evaluation {
        packages,
        errors,
        failed_packages,
        listing,
        module_loads: modules.module_loads,
        modules_evaluated: modules.evaluated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace(files: &[(&str, &str)]) -> (tempfile::TempDir, Evaluation) {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let mut vars = BTreeMap::new();
        vars.insert(
            "python_versions".to_owned(),
            serde_json::json!(["3.10", "3.11"]),
        );
        let opts = EvalOptions {
            root: dir.path().to_path_buf(),
            vars,
            ..Default::default()
        };
        let evaluation = evaluate_workspace(&opts).unwrap();
        (dir, evaluation)
    }

    #[test]
    fn a_module_loaded_by_many_packages_is_evaluated_once() {
        let mut files = vec![
            (
                "tools/defs.star",
                "load(\":util.star\", \"u\")\nX = u + 1\n",
            ),
            ("tools/util.star", "u = 41\n"),
        ];
        let builds: Vec<String> = (0..8).map(|i| format!("p{i}/BUILD")).collect();
        for b in &builds {
            files.push((
                b,
                "load(\"//tools:defs.star\", \"X\")\ntask(name = \"t\", cmd = \"echo %d\" % X)\n",
            ));
        }
        let (_, e) = workspace(&files);
        assert!(e.errors.is_empty(), "{:?}", e.errors);
        assert_eq!(e.packages.len(), 8);
        assert_eq!(e.modules_evaluated, 2);
        assert_eq!(e.packages[3].targets[0].cmd.as_deref(), Some("echo 42"));
    }

    #[test]
    fn macro_targets_point_at_the_macro_call_and_name_the_macro() {
        let (_, e) = workspace(&[(
            "app/BUILD",
            "load(\"@flow//rules:python.star\", \"py_test\")\n\npy_test(name = \"t\")\n",
        )]);
        assert!(e.errors.is_empty(), "{:?}", e.errors);
        let targets = &e.packages[0].targets;
        let names: Vec<&str> = targets.iter().map(|t| t.label.name()).collect();
        assert_eq!(names, ["t_py3_10", "t_py3_11", "t"]);
        for t in targets {
            assert_eq!(t.generator.as_deref(), Some("py_test"));
            assert_eq!(t.at.to_string(), "app/BUILD:3:1");
        }
    }

    #[test]
    fn errors_in_one_package_do_not_stop_the_others() {
        let (_, e) = workspace(&[
            ("bad/BUILD", "task(name = \"x\",\n"),
            ("good/BUILD", "task(name = \"y\", cmd = \"true\")\n"),
        ]);
        assert_eq!(e.errors.len(), 1);
        assert_eq!(e.packages.len(), 1);
        assert!(e.failed_packages.contains("bad"));
    }
}
