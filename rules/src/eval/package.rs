//! Step 6 of the evaluation: the BUILD files, in parallel (rayon; Starlark heaps are per thread),
//! each against the frozen modules it loads.
//!
//! The natives (`task`, `group`, `glob`, ...) check their arguments and record targets and errors
//! into the file's context; what they declared becomes one `Package` of plain Rust data. A file
//! that did not parse, or whose loads failed, gives no package (a failed load is reported at its
//! source, not again here).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use rayon::prelude::*;
use starlark::environment::{FrozenModule, Module};
use starlark::eval::Evaluator;

use super::interpreter::{globals, loader_for, StderrPrint};
use super::modules::Vars;
use super::source::ParsedBuild;
use super::starlark_error::starlark_error;
use crate::error::AnalysisError;
use crate::listing::Listing;
use crate::module_id::ModuleId;
use crate::natives::{BuildState, Declared, EvalContext};
use crate::target::Package;

/// What evaluating one BUILD file gave.
pub(super) struct PackageOutcome {
    /// The package's name (`""` at the root).
    pub name: String,
    /// `None` when the file could not be evaluated.
    pub package: Option<Package>,
    /// Every error found in the file, in the order found.
    pub errors: Vec<AnalysisError>,
}

/// Evaluates every parsed BUILD file, in parallel.
pub(super) fn evaluate_packages(
    builds: Vec<ParsedBuild>,
    listing: &Listing,
    frozen: &HashMap<ModuleId, FrozenModule>,
    vars: &Vars,
) -> Vec<PackageOutcome> {
    builds
        .into_par_iter()
        .map(|build| evaluate_package(build, listing, frozen, vars))
        .collect()
}

fn evaluate_package(
    (pkg, rel, parsed): ParsedBuild,
    listing: &Listing,
    frozen: &HashMap<ModuleId, FrozenModule>,
    vars: &Vars,
) -> PackageOutcome {
    let failed = |name: String, errors| PackageOutcome {
        name,
        package: None,
        errors,
    };
    let (source, file) = match parsed {
        Ok(x) => x,
        Err(e) => return failed(pkg, vec![e]),
    };
    let Some(loader) = loader_for(&file.loads, frozen) else {
        return failed(pkg, Vec::new());
    };
    let loads = file.load_names();
    let ctx = EvalContext {
        vars: vars.clone(),
        build: Some(BuildState {
            package: pkg.clone(),
            build_file: rel.clone(),
            source: source.clone(),
            files: Arc::new(listing.packages.get(&pkg).cloned().unwrap_or_default()),
            subpackages: listing.subpackages_of(&pkg).map(str::to_owned).collect(),
            links_to_non_files: listing.links_to_non_files(&pkg),
            declared: RefCell::new(Declared::default()),
        }),
        errors: RefCell::new(Vec::new()),
    };
    let result = Module::with_temp_heap(|module| {
        let mut eval = Evaluator::new(&module);
        eval.set_loader(&loader);
        eval.set_print_handler(&StderrPrint);
        eval.extra = Some(&ctx);
        eval.eval_module(file.ast, globals()).map(|_| ())
    });
    let mut errors = super::shared_lists::merge(ctx.errors.into_inner());
    let declared = ctx
        .build
        .map(|b| b.declared.into_inner())
        .unwrap_or_default();
    if let Err(e) = result {
        errors.push(starlark_error(e));
        return failed(pkg, errors);
    }
    let package = Package {
        name: pkg.clone(),
        build_file: rel,
        source,
        targets: declared.targets,
        globs: declared.globs,
        loads,
        broken: declared.broken,
    };
    PackageOutcome {
        name: pkg,
        package: Some(package),
        errors,
    }
}
