//! `flow explain PATTERNS`: what would the next `flow build PATTERNS` do with each action, and
//! why? It prepares the same pipeline as the build (`pipeline.rs`: the build record or
//! analysis, the carry set), then asks the rebuilder's one reuse decision about every action in
//! dependency order, as the runner would, without running or restoring anything
//! ([`Apply::DryRun`]). So it cannot disagree with a build: what it says carried, cached,
//! restored or run, the build carries, uses, restores or runs. An action downstream of one that
//! would run cannot be keyed before that one's outputs exist: it is reported as waiting, and
//! the build then runs it or (early cutoff) uses its cached result.
//!
//! With one target named exactly, it says so in a sentence and, for a run, lists which fields
//! of the key changed since its last successful run; with patterns or several targets, one
//! line per action: `[CARRIED]`, `[CACHED]`, `[RESTORE]`, `[RUN]`, `[WAITS]`, `[FAILS]`.

use std::path::Path;

use flow_cache::Digest;
use flow_rules::{Label, TargetPattern};

use crate::action_key::ActionKey;
use crate::analysis::parse_patterns;
use crate::error::Error;
use crate::pipeline::{Request, Start};
use crate::rebuilder::{staged, Apply, Decision, KeyInputs, StagedOutput};
use crate::session::{Session, SessionArgs};

/// What the next build would do with one node.
enum Verdict {
    Carried,
    /// A cached result exists for its key; `restore`: its outputs would be restored.
    Cached(Digest, bool),
    Runs(Box<ActionKey>),
    /// It cannot be keyed before this dependency runs.
    Waits(String),
    /// A group whose dependency runs first.
    GroupWaits(String),
    /// Its key cannot be computed (unreadable source, missing tool).
    Fails(String),
    /// A group: runs nothing.
    Group,
    /// A kind that is never reused (`cache = False`): it runs in every build.
    /// Never reused (why, from its kind).
    Always(&'static str),
}

pub fn run(start: &Path, patterns: &[String], cache_flag: Option<&Path>) -> Result<i32, Error> {
    let terms = parse_patterns(patterns)?;
    let mut session = Session::open(start, SessionArgs::cache_dir(cache_flag))?;
    let single = match terms.as_slice() {
        [t] if !t.exclude => match &t.pattern {
            TargetPattern::Label(l) => Some(l.clone()),
            _ => None,
        },
        _ => None,
    };
    let request = Request {
        terms: &terms,
        patterns,
        lock: None,
        command: "explain",
        shard: None,
        since: None,
        materialize: Default::default(),
    };
    let verdicts: Vec<(Label, Verdict)> = match session.prepare(request)? {
        Start::NoOp(labels) => labels
            .iter()
            .filter_map(|l| Some((Label::parse(l, None).ok()?, Verdict::Carried)))
            .collect(),
        Start::Interrupted => return Ok(130),
        Start::Nothing(why) => {
            println!("flow: {why}");
            return Ok(0);
        }
        Start::Plan(prepared) => {
            let ready = session.resolve(prepared)?;
            let rebuilder = session.rebuilder(ready.hasher.clone())?;
            let plan = &ready.plan;
            let resolved = &ready.resolved;
            let n = plan.nodes.len();
            let mut verdicts: Vec<Option<Verdict>> = (0..n).map(|_| None).collect();
            let mut outputs: Vec<Option<Vec<StagedOutput>>> = vec![None; n];
            let prefetched = Default::default();
            for i in plan.topo_order() {
                let a = &plan.nodes[i];
                let blocked = a.deps.iter().find(|&&d| outputs[d].is_none());
                let deps: Vec<StagedOutput> = a
                    .deps
                    .iter()
                    .flat_map(|&d| outputs[d].clone().unwrap_or_default())
                    .collect();
                verdicts[i] = Some(if let Some(&d) = blocked {
                    let on = waits_on(&verdicts, plan, d);
                    match a.kind.runs() {
                        true => Verdict::Waits(on),
                        false => Verdict::GroupWaits(on),
                    }
                } else if !a.kind.runs() {
                    outputs[i] = Some(deps);
                    Verdict::Group
                } else {
                    let inputs = KeyInputs {
                        sources: &resolved.sources,
                        deps: &deps,
                        tools: &resolved.tools,
                        prefetched: &prefetched,
                    };
                    match rebuilder.decide(i, a, &resolved.carried, &inputs, Apply::DryRun) {
                        Decision::Carried(last) => {
                            outputs[i] = Some(last.staged);
                            Verdict::Carried
                        }
                        Decision::Cached {
                            key,
                            result,
                            restored,
                        } => {
                            outputs[i] = Some(staged(a, &result));
                            Verdict::Cached(key, restored)
                        }
                        Decision::Run { .. } if !a.kind.reusable() => {
                            Verdict::Always(a.kind.why_never_reused())
                        }
                        Decision::Run { key, .. } => Verdict::Runs(key),
                        Decision::Unkeyable(why) | Decision::StillFailing(why) => {
                            Verdict::Fails(why)
                        }
                    }
                });
            }
            plan.topo_order()
                .into_iter()
                .filter_map(|i| Some((plan.nodes[i].label.clone(), verdicts[i].take()?)))
                .collect()
        }
    };
    let cache = session.cache()?;
    let workspace = session.workspace_text();
    let explain = |label: &Label, key: &ActionKey, indent: &str| {
        explain_change(&cache, &workspace, &label.to_string(), key, indent)
    };
    match single {
        Some(label) => {
            match verdicts.iter().find(|(l, _)| *l == label) {
                Some((_, verdict)) => say(&label, verdict, &verdicts, &explain)?,
                // The no-op lists actions only: the label named a group of them.
                None => say(&label, &Verdict::Group, &verdicts, &explain)?,
            }
        }
        None => {
            let mut sorted: Vec<&(Label, Verdict)> = verdicts.iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(&b.0));
            for (label, verdict) in sorted {
                line(label, verdict, &explain)?;
            }
        }
    }
    Ok(0)
}

/// The label that `d` (which cannot be keyed yet, or would run) waits on, following waits.
fn waits_on(verdicts: &[Option<Verdict>], plan: &crate::plan::Plan, d: usize) -> String {
    match &verdicts[d] {
        Some(Verdict::Waits(on) | Verdict::GroupWaits(on)) => on.clone(),
        _ => plan.nodes[d].label.to_string(),
    }
}

type Explain<'a> = dyn Fn(&Label, &ActionKey, &str) -> Result<(), Error> + 'a;

/// One line per action.
fn line(label: &Label, verdict: &Verdict, explain: &Explain) -> Result<(), Error> {
    match verdict {
        // Groups run nothing: not actions of the build.
        Verdict::Group | Verdict::GroupWaits(_) => {}
        Verdict::Carried => println!("[CARRIED] {label} (nothing it reads changed)"),
        Verdict::Cached(key, false) => println!("[CACHED] {label} (key {})", short(key)),
        Verdict::Cached(key, true) => println!(
            "[RESTORE] {label} (key {}: its outputs under flow-out/ are missing or changed)",
            short(key)
        ),
        Verdict::Waits(on) => println!("[WAITS] {label} (on `{on}`, which would run first)"),
        Verdict::Always(why) => println!("[RUN] {label} ({why})"),
        Verdict::Fails(why) => println!("[FAILS] {label} ({why})"),
        Verdict::Runs(key) => {
            println!("[RUN] {label} (key {})", short(&key.digest()));
            explain(label, key, "  ")?;
        }
    }
    Ok(())
}

/// The sentence for one target named exactly.
fn say(
    label: &Label,
    verdict: &Verdict,
    all: &[(Label, Verdict)],
    explain: &Explain,
) -> Result<(), Error> {
    let name = label.to_string();
    match verdict {
        Verdict::Group => {
            println!("{name} is a group: it runs nothing itself; all of its dependencies are cached")
        }
        Verdict::Carried => println!(
            "{name} is up to date: nothing it reads changed since the last build, which the next build carries over"
        ),
        Verdict::Cached(digest, false) => println!(
            "{name} is up to date: the next build would not run it (key {})",
            short(digest)
        ),
        Verdict::Cached(digest, true) => println!(
            "{name} would be restored from the cache without running (key {}): its outputs under flow-out/ are missing or changed",
            short(digest)
        ),
        Verdict::Fails(why) => println!("{name} cannot run: {why}"),
        Verdict::Always(why) => println!("{name} would run: {why}"),
        Verdict::Runs(key) => {
            println!("{name} would run (key {}):", short(&key.digest()));
            explain(label, key, "  ")?;
        }
        Verdict::GroupWaits(dep) => {
            println!("{name} is a group: it runs nothing itself, but its dependency `{dep}` would run:");
            why_it_runs(dep, all, explain)?;
        }
        Verdict::Waits(dep) => {
            println!("{name} would run after `{dep}`, which would run first; its key depends on that output:");
            why_it_runs(dep, all, explain)?;
        }
    }
    Ok(())
}

/// Why `dep`, which an action waits on, would run.
fn why_it_runs(dep: &str, all: &[(Label, Verdict)], explain: &Explain) -> Result<(), Error> {
    match all.iter().find(|(l, _)| l.to_string() == dep) {
        Some((l, Verdict::Runs(key))) => {
            println!("  `{dep}` would run:");
            explain(l, key, "    ")
        }
        Some((_, Verdict::Always(why))) => {
            println!("  `{dep}` would run: {why}");
            Ok(())
        }
        Some((_, Verdict::Fails(why))) => {
            println!("  `{dep}` cannot run: {why}");
            Ok(())
        }
        _ => Ok(()),
    }
}

fn short(d: &Digest) -> String {
    d.to_string()[..12].to_owned()
}

/// Prints which fields of `key` differ from the key of the last successful run.
fn explain_change(
    cache: &flow_cache::Cache,
    workspace: &str,
    label: &str,
    key: &ActionKey,
    indent: &str,
) -> Result<(), Error> {
    let err = |e: flow_cache::CacheError| Error::Cache {
        path: cache.dir().to_path_buf(),
        error: e.to_string(),
    };
    // A last run that failed is said first: it is what the user last saw.
    if let Some(last) = cache.last_run(workspace, label).map_err(err)? {
        if matches!(
            last.outcome,
            flow_cache::Outcome::Failed | flow_cache::Outcome::TimedOut
        ) {
            let exit = last
                .exit_code
                .map_or(String::new(), |c| format!(", exit {c}"));
            let same = if last.key == key.digest() {
                "with this same key: it would fail again unless something outside its key changed"
            } else {
                "with another key"
            };
            println!(
                "{indent}its last run {}{exit}, {same}; `flow log {label}` shows it",
                match last.outcome {
                    flow_cache::Outcome::TimedOut => last.outcome.words(),
                    _ => "failed",
                }
            );
        }
    }
    let Some(last) = cache.last_successful_run(workspace, label).map_err(err)? else {
        println!("{indent}it has never run successfully here (no earlier result to compare with)");
        return Ok(());
    };
    // Saved with the history; a cache written by an older flow kept it as a CAS blob.
    let old = match cache.key_json(&last.key).map_err(err)? {
        Some(json) => Some(json),
        None => cache.cas().read_verified(&last.key).ok(),
    }
    .and_then(|b| serde_json::from_slice::<ActionKey>(&b).ok());
    let Some(old) = old else {
        println!("{indent}the key of its last run ({}) is no longer in the cache; cannot say which field changed", short(&last.key));
        return Ok(());
    };
    let changes = key.diff(&old);
    if changes.is_empty() {
        println!("{indent}its key equals the last run's, but that result is not cached (it failed, or was collected)");
    }
    for c in changes {
        // A change's own lines (`was:`, `now:`) under its bullet, at any depth.
        println!("{indent}- {}", c.replace('\n', &format!("\n{indent}")));
    }
    Ok(())
}
