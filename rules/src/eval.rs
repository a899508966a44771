//! Evaluation of a whole workspace's BUILD files into `Package`s.
//!
//! Outline:
//! 1. One walk of the workspace (`Listing`) finds the packages and their files.
//! 2. Every BUILD file is read and parsed, in parallel; its `load()`s are resolved to `ModuleId`s.
//! 3. The `.star` modules reachable from those loads are read and parsed (workspace files or the
//!    embedded prelude), breadth first, without recursion, so a 10,000-deep load chain is fine.
//! 4. An iterative depth-first search finds `load()` cycles (each reported with the location of
//!    every load on it) and the post-order in which modules are evaluated.
//! 5. Each module is evaluated and frozen exactly once, however many packages load it.
//! 6. BUILD files are evaluated in parallel (rayon; Starlark heaps are per thread), each against
//!    the frozen modules it loads. Natives collect targets and errors into the file's context.
//!
//! Invariants: errors are collected, never thrown past a file; a file whose loads failed is not
//! evaluated (and not reported again: the failing module is reported once); evaluation depends only
//! on file contents, the `[vars]` values and the listing.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rayon::prelude::*;
use starlark::environment::{FrozenModule, Globals, GlobalsBuilder, LibraryExtension, Module};
use starlark::eval::{Evaluator, FileLoader};
use starlark::syntax::{AstModule, Dialect};
use starlark::values::FrozenHeapName;
use starlark::PrintHandler;

use crate::error::{sort_errors, AnalysisError, AnalysisErrorKind as K, SourceSpan};
use crate::listing::{Listing, BUILD_FILE};
use crate::module_id::ModuleId;
use crate::natives::{natives, BuildState, Declared, EvalContext};
use crate::prelude;
use crate::target::Package;

/// What an evaluation needs besides the files.
#[derive(Clone, Debug, Default)]
pub struct EvalOptions {
    /// The workspace root (the directory holding `flow.toml`).
    pub root: PathBuf,
    /// The `[vars]` table of `flow.toml`, readable with `config()`.
    pub vars: BTreeMap<String, serde_json::Value>,
    /// Absolute directories never walked (the cache directory when it is inside the workspace).
    pub skip_dirs: Vec<PathBuf>,
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

fn globals() -> &'static Globals {
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

fn build_dialect() -> Dialect {
    Dialect {
        enable_def: false,
        enable_lambda: false,
        enable_top_level_stmt: true,
        enable_f_strings: true,
        ..Dialect::Standard
    }
}

fn star_dialect() -> Dialect {
    Dialect {
        enable_top_level_stmt: true,
        enable_f_strings: true,
        enable_keyword_only_arguments: true,
        ..Dialect::Standard
    }
}

struct StderrPrint;

impl PrintHandler for StderrPrint {
    fn println(&self, text: &str) -> starlark::Result<()> {
        eprintln!("DEBUG: {text}");
        Ok(())
    }
}

/// A `load()` as written: the string, what it resolved to, and where it is.
struct LoadSite {
    text: String,
    target: Result<ModuleId, String>,
    at: SourceSpan,
}

/// A parsed file (BUILD or `.star`) whose loads are resolved.
struct ParsedFile {
    ast: AstModule,
    loads: Vec<LoadSite>,
}

fn parse_file(
    path_for_errors: &str,
    source: &Arc<str>,
    dialect: &Dialect,
    from: Option<&ModuleId>,
    package: &str,
) -> Result<ParsedFile, AnalysisError> {
    check_nesting(path_for_errors, source)?;
    let ast =
        AstModule::parse(path_for_errors, source.to_string(), dialect).map_err(starlark_error)?;
    let loads = ast
        .loads()
        .into_iter()
        .map(|l| {
            let at = SourceSpan::new(
                path_for_errors,
                source.clone(),
                l.span.span.begin().get() as usize,
                l.span.span.end().get() as usize,
            );
            LoadSite {
                text: l.module_id.to_owned(),
                target: ModuleId::resolve(l.module_id, from, package),
                at,
            }
        })
        .collect();
    Ok(ParsedFile { ast, loads })
}

/// Deepest bracket nesting accepted. The parser is recursive: refusing absurd nesting up front
/// keeps hostile input from overflowing the stack. Real BUILD files nest a handful of levels.
const MAX_NESTING: usize = 200;

fn check_nesting(file: &str, source: &Arc<str>) -> Result<(), AnalysisError> {
    let mut depth = 0usize;
    for (i, b) in source.bytes().enumerate() {
        match b {
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(AnalysisError::new(
                        K::Starlark {
                            message: format!(
                                "brackets nested too deeply (more than {MAX_NESTING} levels)"
                            ),
                            hint: None,
                        },
                        Some(SourceSpan::new(file, source.clone(), i, i + 1)),
                    ));
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Converts an error of the interpreter into an `AnalysisError`, keeping its location and, for an
/// error inside a macro, the chain of calls that led there.
pub(crate) fn starlark_error(e: starlark::Error) -> AnalysisError {
    let message = e.without_diagnostic().to_string();
    let at = e.span().map(|s| {
        SourceSpan::new(
            s.file.filename(),
            Arc::from(s.file.source()),
            s.span.begin().get() as usize,
            s.span.end().get() as usize,
        )
    });
    let hint = hint_for(&message);
    let message = match (&hint, message.split_once("; ")) {
        (Some(_), Some((head, _))) if message.starts_with("unknown configuration value") => {
            head.to_owned()
        }
        _ => message,
    };
    let mut err = AnalysisError::new(K::Starlark { message, hint }, at);
    for frame in &e.call_stack().frames {
        if let Some(loc) = &frame.location {
            let span = SourceSpan::new(
                loc.file.filename(),
                Arc::from(loc.file.source()),
                loc.span.begin().get() as usize,
                loc.span.end().get() as usize,
            );
            if err
                .at
                .as_ref()
                .is_some_and(|a| a.file == span.file && a.start == span.start)
            {
                continue;
            }
            err.related
                .push((span, format!("in a call to `{}`", frame.name)));
        }
    }
    // An error raised inside the prelude (a macro's own argument check) is the caller's
    // mistake: point at the BUILD file's call, and keep the prelude's line as context.
    let in_prelude = err
        .at
        .as_ref()
        .is_some_and(|a| a.file.starts_with("@flow//"));
    if in_prelude {
        if let Some(k) = err
            .related
            .iter()
            .position(|(s, _)| !s.file.starts_with("@flow//"))
        {
            let (caller, _) = err.related.remove(k);
            let inner = err.at.replace(caller).expect("checked above");
            // The prelude's inner calls are flow's business, not the user's: keep one line.
            err.related.retain(|(s, _)| !s.file.starts_with("@flow//"));
            err.related
                .insert(0, (inner, "raised here, in the prelude".to_owned()));
            narrow_to_named_parameter(&mut err);
        }
    }
    err
}

/// For a message naming "parameter `x`", narrows a call span to the `x = ...` keyword in it.
fn narrow_to_named_parameter(err: &mut AnalysisError) {
    let K::Starlark { message, .. } = &*err.kind else {
        return;
    };
    let Some(name) = message
        .split("parameter `")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
    else {
        return;
    };
    let Some(at) = &mut err.at else { return };
    let text = at.text();
    let found = text.match_indices(name).find(|(i, _)| {
        let before = text[..*i].chars().next_back();
        let after = text[i + name.len()..].trim_start();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
            && after.starts_with('=')
            && !after.starts_with("==")
    });
    if let Some((i, _)) = found {
        *at = at.sub(i, i + name.len());
    }
}

/// Hints for interpreter messages that users meet most.
fn hint_for(message: &str) -> Option<String> {
    if message.starts_with("unknown configuration value") {
        if let Some((_, hint)) = message.split_once("; ") {
            return Some(hint.to_owned());
        }
    }
    if message.contains("`def` is not allowed") || message.contains("`lambda` is not allowed") {
        return Some(
            "BUILD files cannot define functions: put the `def` in a `.star` file and `load()` it"
                .into(),
        );
    }
    None
}

/// For "Found `x` extra named parameter(s) for call to MODULE.f": the closest parameter of `f`,
/// read from the `def` in the module's source.
fn suggest_parameter(err: &mut AnalysisError, sources: &HashMap<String, Arc<str>>) {
    let K::Starlark { message, hint } = &mut *err.kind else {
        return;
    };
    let Some(rest) = message.strip_prefix("Found `") else {
        return;
    };
    let Some((bad, rest)) = rest.split_once('`') else {
        return;
    };
    let bad_owned = bad.to_owned();
    let bad = bad_owned.as_str();
    let Some(callee) = rest.split("for call to ").nth(1) else {
        return;
    };
    let Some((module, function)) = callee.trim().rsplit_once('.') else {
        return;
    };
    let Some(source) = sources.get(module) else {
        return;
    };
    let params = def_parameters(source, function);
    if let Some(s) = crate::suggest::closest(bad, params.iter().map(|p| p.as_str())) {
        *hint = Some(format!("did you mean `{s}`?"));
    } else if !params.is_empty() {
        *hint = Some(format!(
            "`{function}` takes {}",
            params
                .iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    *message = format!("unknown parameter `{bad}` in a call to `{function}` (from `{module}`)");
    // Narrow the span from the whole call to the offending keyword.
    if let Some(at) = &mut err.at {
        let text = at.text();
        let found = text.match_indices(bad).find(|(i, _)| {
            let before = text[..*i].chars().next_back();
            let after = text[i + bad.len()..].trim_start();
            !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
                && after.starts_with('=')
                && !after.starts_with("==")
        });
        if let Some((i, _)) = found {
            *at = at.sub(i, i + bad.len());
        }
    }
}

/// The parameter names of `def function(...)` in `source`.
fn def_parameters(source: &str, function: &str) -> Vec<String> {
    let needle = format!("def {function}(");
    let Some(start) = source.find(&needle) else {
        return Vec::new();
    };
    let mut depth = 0usize;
    let mut params = Vec::new();
    let mut current = String::new();
    let mut in_default = false;
    for c in source[start + needle.len()..].chars() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' if depth > 0 => depth -= 1,
            ')' => break,
            ',' if depth == 0 => {
                params.push(std::mem::take(&mut current));
                in_default = false;
                continue;
            }
            '=' if depth == 0 => in_default = true,
            _ => {}
        }
        if depth == 0 && !in_default && (c.is_alphanumeric() || c == '_') {
            current.push(c);
        }
    }
    params.push(current);
    params.retain(|p| !p.is_empty());
    params
}

struct MapLoader<'a> {
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

/// A BUILD file after reading and parsing: package, path, and the parse (or why it failed).
type ParsedBuild = (
    String,
    String,
    Result<(Arc<str>, ParsedFile), AnalysisError>,
);

#[allow(clippy::large_enum_variant)] // One per module; boxing would only add indirection.
enum ModState {
    /// Could not be read or parsed; the reason, reported at each load site (once).
    Missing(String),
    /// Parsed but had a syntax error (already reported).
    Broken,
    Parsed(ParsedFile),
}

/// Evaluates every package of the workspace at `opts.root`.
pub fn evaluate_workspace(opts: &EvalOptions) -> std::io::Result<Evaluation> {
    let listing = Listing::scan(&opts.root, &opts.skip_dirs)?;
    Ok(evaluate_listing(opts, listing))
}

/// Evaluates every package of an existing listing.
pub fn evaluate_listing(opts: &EvalOptions, listing: Listing) -> Evaluation {
    let mut errors = Vec::new();
    let mut failed_packages = BTreeSet::new();

    // 2. Read and parse every BUILD file in parallel.
    let dialect = build_dialect();
    let parsed: Vec<ParsedBuild> = listing
        .packages
        .keys()
        .collect::<Vec<_>>()
        .par_iter()
        .map(|pkg| {
            let rel = if pkg.is_empty() {
                BUILD_FILE.to_owned()
            } else {
                format!("{pkg}/{BUILD_FILE}")
            };
            let result = read_source(&opts.root, &rel).and_then(|source| {
                parse_file(&rel, &source, &dialect, None, pkg).map(|p| (source, p))
            });
            ((*pkg).clone(), rel, result)
        })
        .collect();

    // 3. Find and parse every reachable `.star` module, breadth first.
    let mut modules: HashMap<ModuleId, ModState> = HashMap::new();
    let mut queue: VecDeque<ModuleId> = VecDeque::new();
    let enqueue = |loads: &[LoadSite],
                   modules: &HashMap<ModuleId, ModState>,
                   queue: &mut VecDeque<ModuleId>| {
        for l in loads {
            if let Ok(id) = &l.target {
                if !modules.contains_key(id) && !queue.contains(id) {
                    queue.push_back(id.clone());
                }
            }
        }
    };
    for (_, _, r) in &parsed {
        if let Ok((_, p)) = r {
            enqueue(&p.loads, &modules, &mut queue);
        }
    }
    let star = star_dialect();
    let mut star_sources: HashMap<String, Arc<str>> = HashMap::new();
    while let Some(id) = queue.pop_front() {
        if modules.contains_key(&id) {
            continue;
        }
        let source = match &id {
            ModuleId::Workspace(path) => read_source(&opts.root, path).map_err(|_| {
                if opts.root.join(path).is_dir() {
                    format!("`{path}` is a directory")
                } else {
                    format!("`{path}` does not exist in the workspace")
                }
            }),
            ModuleId::Prelude(path) => prelude::get(path).map(Arc::from).ok_or_else(|| {
                let known: Vec<String> = prelude::FILES
                    .iter()
                    .map(|(p, _)| ModuleId::Prelude((*p).to_owned()).display_path())
                    .collect();
                format!("the prelude has no `{path}`; it has {}", known.join(", "))
            }),
        };
        let state = match source {
            Err(reason) => ModState::Missing(reason),
            Ok(source) => {
                star_sources.insert(id.display_path(), source.clone());
                let package = match &id {
                    ModuleId::Workspace(p) => p.rsplit_once('/').map_or("", |(d, _)| d).to_owned(),
                    ModuleId::Prelude(_) => String::new(),
                };
                match parse_file(&id.display_path(), &source, &star, Some(&id), &package) {
                    Ok(p) => {
                        enqueue(&p.loads, &modules, &mut queue);
                        ModState::Parsed(p)
                    }
                    Err(e) => {
                        errors.push(e);
                        ModState::Broken
                    }
                }
            }
        };
        modules.insert(id, state);
    }

    // Report each unresolvable or missing load once, at its first site.
    let mut bad_sites: BTreeMap<String, Vec<(SourceSpan, String)>> = BTreeMap::new();
    let mut note_sites = |loads: &[LoadSite], modules: &HashMap<ModuleId, ModState>| {
        for l in loads {
            let reason = match &l.target {
                Err(reason) => Some(reason.clone()),
                Ok(id) => match modules.get(id) {
                    Some(ModState::Missing(reason)) => Some(reason.clone()),
                    _ => None,
                },
            };
            if let Some(reason) = reason {
                bad_sites
                    .entry(l.text.clone())
                    .or_default()
                    .push((l.at.clone(), reason));
            }
        }
    };
    for (_, _, r) in &parsed {
        if let Ok((_, p)) = r {
            note_sites(&p.loads, &modules);
        }
    }
    for state in modules.values() {
        if let ModState::Parsed(p) = state {
            note_sites(&p.loads, &modules);
        }
    }
    for (module, mut sites) in bad_sites {
        sites.sort_by(|a, b| (&a.0.file, a.0.start).cmp(&(&b.0.file, b.0.start)));
        let (at, reason) = sites[0].clone();
        let mut e = AnalysisError::new(K::LoadFailed { module, reason }, Some(at));
        if sites.len() > 1 {
            e.related.push((
                sites[1].0.clone(),
                format!("also loaded here (and in {} place(s) in all)", sites.len()),
            ));
        }
        errors.push(e);
    }

    // 4. Cycles and evaluation order.
    let (order, in_cycle) = order_modules(&modules, &mut errors);

    // 5. Evaluate each module once, dependencies first.
    let vars = Arc::new(opts.vars.clone());
    let mut frozen: HashMap<ModuleId, FrozenModule> = HashMap::new();
    let mut module_loads = BTreeMap::new();
    let mut modules_evaluated = 0;
    for id in order {
        let Some(ModState::Parsed(file)) = modules.remove(&id) else {
            continue;
        };
        module_loads.insert(
            id.to_string(),
            file.loads
                .iter()
                .filter_map(|l| l.target.as_ref().ok().map(|t| t.to_string()))
                .collect(),
        );
        if in_cycle.contains(&id) {
            continue;
        }
        let Some(loader) = loader_for(&file.loads, &frozen) else {
            continue; // A load failed; reported at its source.
        };
        let ctx = EvalContext {
            vars: vars.clone(),
            build: None,
            errors: RefCell::new(Vec::new()),
        };
        let name = id.display_path();
        let result = Module::with_temp_heap(|module| {
            {
                let mut eval = Evaluator::new(&module);
                eval.set_loader(&loader);
                eval.set_print_handler(&StderrPrint);
                eval.extra = Some(&ctx);
                eval.eval_module(file.ast, globals())
                    .map_err(starlark_error)?;
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
        });
        errors.extend(ctx.errors.into_inner());
        modules_evaluated += 1;
        match result {
            Ok(m) => {
                frozen.insert(id, m);
            }
            Err(e) => errors.push(e),
        }
    }

    // 6. Evaluate BUILD files in parallel.
    let files_of = &listing.packages;
    let results: Vec<(String, Option<Package>, Vec<AnalysisError>)> = parsed
        .into_par_iter()
        .map(|(pkg, rel, parsed)| {
            let (source, file) = match parsed {
                Ok(x) => x,
                Err(e) => return (pkg, None, vec![e]),
            };
            let Some(loader) = loader_for(&file.loads, &frozen) else {
                return (pkg, None, Vec::new());
            };
            let loads = file
                .loads
                .iter()
                .filter_map(|l| l.target.as_ref().ok().map(|t| t.to_string()))
                .collect();
            let ctx = EvalContext {
                vars: vars.clone(),
                build: Some(BuildState {
                    package: pkg.clone(),
                    build_file: rel.clone(),
                    source: source.clone(),
                    files: Arc::new(files_of.get(&pkg).cloned().unwrap_or_default()),
                    subpackages: listing.subpackages_of(&pkg).map(str::to_owned).collect(),
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
            let mut errs = ctx.errors.into_inner();
            let declared = ctx
                .build
                .map(|b| b.declared.into_inner())
                .unwrap_or_default();
            if let Err(e) = result {
                errs.push(starlark_error(e));
                return (pkg, None, errs);
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
            (pkg, Some(package), errs)
        })
        .collect();

    let mut packages = Vec::new();
    for (pkg, package, errs) in results {
        for mut e in errs {
            suggest_parameter(&mut e, &star_sources);
            errors.push(e);
        }
        match package {
            Some(p) => packages.push(p),
            None => {
                failed_packages.insert(pkg);
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
        module_loads,
        modules_evaluated,
    }
}

fn read_source(root: &Path, rel: &str) -> Result<Arc<str>, AnalysisError> {
    match std::fs::read(root.join(rel)) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(s) => Ok(Arc::from(s)),
            Err(e) => Err(AnalysisError::new(
                K::Io {
                    path: rel.to_owned(),
                    error: format!(
                        "not valid UTF-8 (first bad byte at offset {})",
                        e.utf8_error().valid_up_to()
                    ),
                },
                None,
            )),
        },
        Err(e) => Err(AnalysisError::new(
            K::Io {
                path: rel.to_owned(),
                error: e.to_string(),
            },
            None,
        )),
    }
}

/// A loader holding the frozen modules `loads` name, or `None` when one of them is unavailable.
fn loader_for<'a>(
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

/// Post-order of the parsed modules (dependencies first) and the set of modules on a cycle; each
/// cycle is reported once with the location of every `load()` on it.
fn order_modules(
    modules: &HashMap<ModuleId, ModState>,
    errors: &mut Vec<AnalysisError>,
) -> (Vec<ModuleId>, BTreeSet<ModuleId>) {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        OnStack,
        Done,
    }
    let mut marks: HashMap<&ModuleId, Mark> = HashMap::new();
    let mut order = Vec::new();
    let mut in_cycle = BTreeSet::new();
    let mut roots: Vec<&ModuleId> = modules.keys().collect();
    roots.sort();
    for root in roots {
        if marks.contains_key(root) {
            continue;
        }
        // Stack of (module, index of the next load to visit).
        let mut stack: Vec<(&ModuleId, usize)> = vec![(root, 0)];
        marks.insert(root, Mark::OnStack);
        while let Some(&mut (id, ref mut next)) = stack.last_mut() {
            let loads: &[LoadSite] = match modules.get(id) {
                Some(ModState::Parsed(p)) => &p.loads,
                _ => &[],
            };
            if *next < loads.len() {
                let site = &loads[*next];
                *next += 1;
                let Ok(child) = &site.target else { continue };
                let Some((child, _)) = modules.get_key_value(child) else {
                    continue;
                };
                match marks.get(child) {
                    None => {
                        marks.insert(child, Mark::OnStack);
                        stack.push((child, 0));
                    }
                    Some(Mark::OnStack) => {
                        let start = stack.iter().position(|(m, _)| *m == child).unwrap_or(0);
                        let mut cycle: Vec<String> =
                            stack[start..].iter().map(|(m, _)| m.to_string()).collect();
                        cycle.push(child.to_string());
                        let mut err =
                            AnalysisError::new(K::LoadCycle { cycle }, Some(site.at.clone()));
                        for (m, n) in &stack[start..stack.len() - 1] {
                            if let Some(ModState::Parsed(p)) = modules.get(*m) {
                                let s = &p.loads[n - 1];
                                err.related
                                    .push((s.at.clone(), format!("`{m}` loads `{}`", s.text)));
                            }
                            in_cycle.insert((*m).clone());
                        }
                        in_cycle.insert(id.clone());
                        errors.push(err);
                    }
                    Some(Mark::Done) => {}
                }
            } else {
                marks.insert(id, Mark::Done);
                order.push(id.clone());
                stack.pop();
            }
        }
    }
    // A module that loads a module on a cycle cannot be evaluated either; `loader_for` sees to
    // that because cyclic modules are never frozen.
    (order, in_cycle)
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
            skip_dirs: Vec::new(),
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
