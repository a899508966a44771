//! `flow rollback ENV_OR_LABEL [--to N|DIGEST]`: deploy an earlier artifact again, restored
//! from the CAS: nothing is rebuilt, so it works after the sources changed. The deploy run is
//! the one whose entry made the current artifact live (or the deploy named), with its sources
//! as they are now and the old artifact staged where its artifact goes; it is recorded in the
//! ledger as a new `rollback` entry. Run twice, it runs twice (to the artifact before the one
//! live each time, unless `--to` says which).
//!
//! Deployment windows do not apply: a rollback returns an environment to an artifact it ran
//! before, which is what an incident needs at any hour.

use std::path::Path;

use flow_rules::{Delivery, Label, PatternTerm, TargetPattern};

use crate::delivery::effects::{rollback_run, short, Effects, Happened};
use crate::delivery::git;
use crate::delivery::ledger::{Artifact, Entry, EntryKind, Ledger, LedgerConfig};
use crate::error::Error;
use crate::executor::Cancel;
use crate::pipeline::{Request, Start};
use crate::runner::runtime_with_sigint;
use crate::session::{Session, SessionArgs};

pub fn run(
    start: &Path,
    target: &str,
    to: Option<&str>,
    cache_flag: Option<&Path>,
) -> Result<i32, Error> {
    let mut session = Session::open(start, SessionArgs::cache_dir(cache_flag))?;
    let root = session.ws.root.clone();
    let mut warn = |w: String| eprintln!("warning: {w}");
    // Which deploy: from the local ledger; what to roll back to: from the ledger read again
    // once the workspace lock is held (a build or another rollback may be recording).
    let local = LedgerConfig {
        remote: None,
        ..session.ws.config.ledger.clone()
    };
    let (environment, label) = which(&Ledger::open(&root, &local, &mut warn)?, target)?;
    let (runtime, mut sigint) = runtime_with_sigint(start)?;
    let terms = [PatternTerm {
        pattern: TargetPattern::Label(label.clone()),
        exclude: false,
    }];
    let patterns = [label.to_string()];
    let request = Request {
        terms: &terms,
        patterns: &patterns,
        lock: Some((runtime.handle(), &mut sigint)),
    };
    let prepared = match session.prepare(request)? {
        Start::Plan(prepared) => prepared,
        Start::Interrupted => return Ok(130),
        Start::NoOp(_) => {
            return Err(usage(
                format!("`{label}` is not a deploy of this workspace"),
                None,
            ))
        }
    };
    let ledger = Ledger::open(&root, &session.ws.config.ledger, &mut warn)?;
    let artifact = choose(&ledger, &environment, to)?;
    let ready = session.resolve(prepared)?;
    let plan = &ready.plan;
    let Some(&node) = plan.index.get(&label) else {
        return Err(usage(
            format!("`{label}` is not in the workspace any more"),
            None,
        ));
    };
    let deploy = &plan.nodes[node];
    if !matches!(&deploy.delivery, Some(Delivery::Deploy { .. })) {
        return Err(usage(format!("`{label}` is not a deploy"), None));
    }
    let missing: Vec<String> = deploy
        .secrets
        .iter()
        .filter(|s| std::env::var(s).is_err())
        .map(|s| format!("`{s}`"))
        .collect();
    if !missing.is_empty() {
        return Err(usage(
            format!(
                "`{label}` needs the secret(s) {}, not set in flow's environment",
                missing.join(", ")
            ),
            None,
        ));
    }
    let rebuilder = session.rebuilder(ready.hasher.clone())?;
    let secrets = deploy
        .secrets
        .iter()
        .filter_map(|s| std::env::var(s).ok().map(|v| (s.clone(), v)))
        .collect();
    let spec = rebuilder.spec(deploy, &ready.resolved.sources, &[], secrets);
    let effects = Effects {
        workspace_root: root.clone(),
        cache: session.cache()?,
        ledger: std::sync::Mutex::new(Ok(ledger)),
        git: git::facts(&root),
        user: git::current_user(),
        clock: session.clock,
        emergency: None,
        happened: std::sync::Mutex::new(Happened::default()),
        warnings: std::sync::Mutex::new(Vec::new()),
    };
    let executor = session.executor();
    println!(
        "flow: rolling {environment} back to artifact {} ({}, live before since {})",
        short(&artifact.digest),
        artifact.label,
        crate::delivery::effects::when(artifact_since(&effects, &environment, &artifact))
    );
    let done = runtime.block_on(async {
        match rollback_run(
            &effects,
            &*executor,
            deploy,
            spec,
            &artifact,
            Cancel::never(),
        )
        .await
        {
            Ok(run) => Ok(run.deploy(artifact.clone(), EntryKind::Rollback).await),
            Err(why) => Err(why),
        }
    });
    for w in effects
        .warnings
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        eprintln!("warning: {w}");
    }
    drop(executor);
    drop(rebuilder);
    session.close(Some(runtime));
    match done {
        Ok(d) if d.ok => {
            println!("{}", d.line);
            Ok(0)
        }
        Ok(d) => {
            println!("[FAILED] {label} ({})", d.line);
            print!("{}", String::from_utf8_lossy(&d.log));
            Ok(1)
        }
        Err(why) => Err(usage(why, None)),
    }
}

/// The environment and the deploy a rollback argument names: a deploy's label, or an
/// environment (its deploy is the one that made the live artifact live).
fn which(ledger: &Ledger, target: &str) -> Result<(String, Label), Error> {
    if target.starts_with("//") || target.starts_with(':') {
        let label = Label::parse(target, Some("")).map_err(|e| usage(e.to_string(), None))?;
        let entry = ledger
            .entries()
            .iter()
            .rev()
            .find(|e| e.label == label.to_string() && e.kind.deploys())
            .ok_or_else(|| usage(format!("the ledger has no deploy of `{label}`"), None))?;
        return Ok((entry.environment.clone(), label));
    }
    let Some(live) = ledger.live(target) else {
        let known = ledger.environments();
        let help = match flow_rules::suggest::closest(target, known.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => "`flow ledger` lists the environments and what is live there".into(),
        };
        return Err(usage(
            format!("nothing is live in `{target}`: the ledger has no deploy there to roll back"),
            Some(help),
        ));
    };
    let label = Label::parse(&live.label, None).map_err(|e| usage(e.to_string(), None))?;
    Ok((target.to_owned(), label))
}

/// The artifact to go back to: `--to N` (the N-th earlier live artifact, 1 = the one before),
/// `--to DIGEST` (a prefix of an artifact once live there), or the one before.
fn choose(ledger: &Ledger, environment: &str, to: Option<&str>) -> Result<Artifact, Error> {
    let previous: Vec<&Entry> = ledger.previous(environment);
    let listed = || "`flow ledger ENV` lists what was live there before".to_owned();
    let to = to.unwrap_or("1");
    if let Ok(n) = to.parse::<usize>() {
        return match n.checked_sub(1).and_then(|i| previous.get(i)) {
            Some(e) => Ok(e.artifact.clone()),
            None => Err(usage(
                format!(
                    "`{environment}` has {} earlier artifact(s) to roll back to; `--to {n}` asks for more",
                    previous.len()
                ),
                Some(listed()),
            )),
        };
    }
    let matching: Vec<&&Entry> = previous
        .iter()
        .filter(|e| e.artifact.digest.starts_with(to))
        .collect();
    match matching.as_slice() {
        [one] => Ok(one.artifact.clone()),
        [] => Err(usage(
            format!("no earlier artifact of `{environment}` has a digest starting with `{to}`"),
            Some(listed()),
        )),
        _ => Err(usage(
            format!("`{to}` names several earlier artifacts of `{environment}`; give more digits"),
            None,
        )),
    }
}

/// When `artifact` last became live in `environment` (for the message).
fn artifact_since(effects: &Effects, environment: &str, artifact: &Artifact) -> i64 {
    effects
        .with_ledger(|l| {
            Ok(l.entries()
                .iter()
                .rev()
                .find(|e| e.environment == environment && e.artifact.digest == artifact.digest)
                .map_or(0, |e| e.ended_ms))
        })
        .unwrap_or(0)
}

fn usage(message: String, help: Option<String>) -> Error {
    Error::Usage { message, help }
}
