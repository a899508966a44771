//! `flow explain LABEL`: would the next build run this target, and why? Computes the key the
//! next build would compute (dependencies first, from their cached results), then compares it with
//! the key of the target's last successful run, field by field.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use flow_cache::Digest;

use crate::action_key::ActionKey;
use crate::analysis::{load_graph, open_cache};
use crate::commands::log::single_label;
use crate::error::Error;
use crate::hasher::FileHasher;
use crate::plan::{known_states, tool_identities, Plan};
use crate::rebuilder::{staged, Rebuilder, StagedOutput};

/// What the next build would do with one node.
enum Verdict {
    /// A cached result exists for its key; outputs known.
    Cached(Digest, bool),
    /// Its key has no result: it would run.
    Runs(Box<ActionKey>),
    /// It cannot be keyed before a dependency runs.
    AfterDep(String),
    /// Its key cannot be computed (unreadable source, missing tool).
    Broken(String),
}

pub fn run(start: &Path, label: &str, cache_flag: Option<&Path>) -> Result<i32, Error> {
    let (ws, graph, dir) = load_graph(start, cache_flag)?;
    let label = single_label(&graph, label)?;
    let target = graph.index_of(&label).expect("checked by single_label");
    let plan = Plan::new(&graph, &BTreeSet::from([target]), &ws.config.action_path);
    let cache = Arc::new(open_cache(&dir)?);
    let cache_err = |e: flow_cache::CacheError| Error::Cache {
        path: dir.clone(),
        error: e.to_string(),
    };
    let known = known_states(&cache, &ws.root, &plan, &ws.config.action_path).map_err(cache_err)?;
    let hasher = Arc::new(FileHasher::new(known));
    let sources = plan.all_sources();
    let paths: Vec<_> = sources.iter().map(|s| ws.root.join(s)).collect();
    let digests: HashMap<_, _> = sources
        .iter()
        .zip(hasher.digest_many(&paths))
        .filter_map(|(s, h)| h.ok().map(|h| (s.clone(), h)))
        .collect();
    let tools = tool_identities(&plan, &ws.config.action_path, &hasher);
    let rebuilder = Rebuilder {
        cache: cache.clone(),
        hasher,
        out_root: ws.root.join("flow-out"),
        workspace_root: ws.root.clone(),
    };

    // Dependencies first (Kahn's order over the plan).
    let n = plan.nodes.len();
    let mut verdicts: Vec<Option<Verdict>> = (0..n).map(|_| None).collect();
    let mut outputs: Vec<Option<Vec<StagedOutput>>> = vec![None; n];
    let mut remaining: Vec<usize> = plan.nodes.iter().map(|a| a.deps.len()).collect();
    let mut dependents = vec![Vec::new(); n];
    for (i, a) in plan.nodes.iter().enumerate() {
        for &d in &a.deps {
            dependents[d].push(i);
        }
    }
    let mut ready: Vec<usize> = (0..n).filter(|&i| remaining[i] == 0).collect();
    while let Some(i) = ready.pop() {
        let a = &plan.nodes[i];
        let blocked = a.deps.iter().find(|&&d| outputs[d].is_none());
        let verdict = if let Some(&d) = blocked {
            Verdict::AfterDep(plan.nodes[d].label.to_string())
        } else {
            let deps: Vec<StagedOutput> = a
                .deps
                .iter()
                .flat_map(|&d| outputs[d].clone().unwrap_or_default())
                .collect();
            if a.is_group {
                outputs[i] = Some(deps);
                Verdict::Cached(Digest::of(b""), true)
            } else {
                match rebuilder.key(a, &digests, &deps, &tools) {
                    Err(why) => Verdict::Broken(why),
                    Ok(key) => match rebuilder.lookup(&key.digest()).map_err(cache_err)? {
                        Some(result) => {
                            let fresh = rebuilder.is_materialized(a, &result);
                            outputs[i] = Some(staged(a, &result));
                            Verdict::Cached(key.digest(), fresh)
                        }
                        None => Verdict::Runs(Box::new(key)),
                    },
                }
            }
        };
        verdicts[i] = Some(verdict);
        for &d in &dependents[i] {
            remaining[d] -= 1;
            if remaining[d] == 0 {
                ready.push(d);
            }
        }
    }

    let node = plan.index[&label];
    let name = label.to_string();
    match verdicts[node].take().expect("every node has a verdict") {
        Verdict::Cached(digest, fresh) => {
            if plan.nodes[node].is_group {
                println!(
                    "{name} is a group: it runs nothing itself; all of its dependencies are cached"
                );
            } else if fresh {
                println!(
                    "{name} is up to date: the next build would not run it (key {})",
                    short(&digest)
                );
            } else {
                println!(
                    "{name} would be restored from the cache without running (key {}): its outputs under flow-out/ are missing or changed",
                    short(&digest)
                );
            }
        }
        Verdict::Broken(why) => println!("{name} cannot run: {why}"),
        Verdict::AfterDep(dep) => {
            if plan.nodes[node].is_group {
                println!("{name} is a group: it runs nothing itself, but its dependency `{dep}` would run:");
            } else {
                println!("{name} would run after `{dep}`, which would run first; its key depends on that output:");
            }
            let mut cur = dep;
            while let Some(&i) = plan
                .index
                .get(&flow_rules::Label::parse(&cur, None).expect("a label"))
            {
                match &verdicts[i] {
                    Some(Verdict::AfterDep(next)) => {
                        println!("  `{cur}` waits on `{next}`");
                        cur = next.clone();
                    }
                    Some(Verdict::Runs(key)) => {
                        println!("  `{cur}` would run:");
                        explain_change(&cache, &ws.root.display().to_string(), &cur, key, "    ")?;
                        break;
                    }
                    _ => break,
                }
            }
        }
        Verdict::Runs(key) => {
            println!("{name} would run (key {}):", short(&key.digest()));
            explain_change(&cache, &ws.root.display().to_string(), &name, &key, "  ")?;
        }
    }
    Ok(0)
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
        println!("{indent}- {c}");
    }
    Ok(())
}
