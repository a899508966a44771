//! Step 5 of the evaluation: each `.star` module evaluated and frozen exactly once, dependencies
//! first, however many packages load it.
//!
//! A module on a `load()` cycle, or one that loads a module that failed, is not evaluated (the
//! failure is reported at its source, once). A module's natives see no BUILD state: `task` and
//! friends called at a module's top level are errors.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use starlark::environment::{FrozenModule, Module};
use starlark::eval::Evaluator;
use starlark::syntax::AstModule;
use starlark::values::FrozenHeapName;

use super::interpreter::{globals, loader_for, MapLoader, StderrPrint};
use super::loads::ModState;
use super::starlark_error::starlark_error;
use crate::error::{AnalysisError, AnalysisErrorKind as K};
use crate::module_id::ModuleId;
use crate::natives::EvalContext;

/// The `[vars]` table, shared by every file's context.
pub(super) type Vars = Arc<BTreeMap<String, serde_json::Value>>;

/// The modules that evaluated, frozen, and what the evaluation learnt about all of them.
#[derive(Default)]
pub(super) struct FrozenModules {
    pub frozen: HashMap<ModuleId, FrozenModule>,
    /// Each parsed module's direct loads (also for modules that did not evaluate).
    pub module_loads: BTreeMap<String, Vec<String>>,
    /// How many modules were evaluated.
    pub evaluated: usize,
}

/// Evaluates the parsed modules in `order` (dependencies first), skipping those `in_cycle`.
pub(super) fn evaluate_modules(
    mut modules: HashMap<ModuleId, ModState>,
    order: Vec<ModuleId>,
    in_cycle: &BTreeSet<ModuleId>,
    vars: &Vars,
    errors: &mut Vec<AnalysisError>,
) -> FrozenModules {
    let mut out = FrozenModules::default();
    for id in order {
        let Some(ModState::Parsed(file)) = modules.remove(&id) else {
            continue;
        };
        out.module_loads.insert(id.to_string(), file.load_names());
        if in_cycle.contains(&id) {
            continue;
        }
        let Some(loader) = loader_for(&file.loads, &out.frozen) else {
            continue; // A load failed; reported at its source.
        };
        let ctx = EvalContext {
            vars: vars.clone(),
            build: None,
            errors: RefCell::new(Vec::new()),
        };
        let result = evaluate_module(&id, file.ast, &loader, &ctx);
        errors.extend(ctx.errors.into_inner());
        out.evaluated += 1;
        match result {
            Ok(m) => {
                out.frozen.insert(id, m);
            }
            Err(e) => errors.push(e),
        }
    }
    out
}

/// Evaluates one module on its own heap and freezes it under its display path.
fn evaluate_module(
    id: &ModuleId,
    ast: AstModule,
    loader: &MapLoader<'_>,
    ctx: &EvalContext,
) -> Result<FrozenModule, AnalysisError> {
    let name = id.display_path();
    Module::with_temp_heap(|module| {
        {
            let mut eval = Evaluator::new(&module);
            eval.set_loader(loader);
            eval.set_print_handler(&StderrPrint);
            eval.extra = Some(ctx);
            eval.eval_module(ast, globals()).map_err(starlark_error)?;
        }
        module
            .freeze_named(FrozenHeapName::User(Box::new(name.clone())))
            .map_err(|e| {
                AnalysisError::new(
                    K::Starlark {
                        message: format!("cannot freeze `{name}`: {e:?}"),
                        hint: None,
                    },
                    None,
                )
            })
    })
}
