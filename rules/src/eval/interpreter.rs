//! The interpreter's fixed parts, shared by `.star` modules and BUILD files: the globals (the
//! natives and the library extensions), the `print()` handler, and the loader that hands a file
//! the frozen modules it loads.

use std::collections::HashMap;
use std::sync::OnceLock;

use starlark::environment::{FrozenModule, Globals, GlobalsBuilder, LibraryExtension};
use starlark::eval::FileLoader;
use starlark::PrintHandler;

use super::source::LoadSite;
use crate::module_id::ModuleId;
use crate::natives::natives;

/// The globals every file sees, built once per process.
pub(super) fn globals() -> &'static Globals {
    static GLOBALS: OnceLock<Globals> = OnceLock::new();
    GLOBALS.get_or_init(|| {
        GlobalsBuilder::extended_by(&[
            LibraryExtension::StructType,
            LibraryExtension::Json,
            LibraryExtension::Map,
            LibraryExtension::Filter,
            LibraryExtension::Partial,
            LibraryExtension::Print,
        ])
        .with(natives)
        .build()
    })
}

/// `print()` writes to stderr, prefixed `DEBUG: `.
pub(super) struct StderrPrint;

impl PrintHandler for StderrPrint {
    fn println(&self, text: &str) -> starlark::Result<()> {
        eprintln!("DEBUG: {text}");
        Ok(())
    }
}

/// Answers a file's `load()`s from modules frozen beforehand; it never reads or evaluates.
pub(super) struct MapLoader<'a> {
    modules: HashMap<&'a str, FrozenModule>,
}

impl FileLoader for MapLoader<'_> {
    fn load(&self, path: &str) -> starlark::Result<FrozenModule> {
        self.modules.get(path).cloned().ok_or_else(|| {
            starlark::Error::new_other(anyhow::anyhow!(
                "internal error: `{path}` was not preloaded (this is a bug in flow)"
            ))
        })
    }
}

/// A loader holding the frozen modules `loads` name, or `None` when one of them is unavailable.
pub(super) fn loader_for<'a>(
    loads: &'a [LoadSite],
    frozen: &HashMap<ModuleId, FrozenModule>,
) -> Option<MapLoader<'a>> {
    let mut modules = HashMap::new();
    for l in loads {
        let id = l.target.as_ref().ok()?;
        modules.insert(l.text.as_str(), frozen.get(id)?.clone());
    }
    Some(MapLoader { modules })
}
