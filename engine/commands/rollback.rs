//! `flow rollback ENV_OR_LABEL [--to N|DIGEST]`: deploy an earlier artifact again, restored
//! from the CAS: nothing is rebuilt, so it works after the sources changed. The deploy run is
//! the one whose entry made the current artifact live (or the deploy named), with its sources
//! as they are now and the old artifact staged where its artifact goes; it is recorded in the
//! ledger as a new `rollback` entry, under the workspace lock (a build or another rollback
//! recording meanwhile is waited for). Run twice, it runs twice, each time one artifact
//! further back (`Ledger::previous`: never forward to the one just left), unless `--to` says
//! which.
//!
//! Deployment windows do not apply: a rollback returns an environment to an artifact it ran
//! before, which is what an incident needs at any hour.

use std::path::Path;

use flow_rules::{Delivery, Label, PatternTerm, TargetPattern};

use crate::delivery::effects::{artifact_dest, rollback_run, short, Effects, Happened};
use crate::delivery::git;
use crate::delivery::ledger::{Artifact, Entry, EntryKind, Ledger, LedgerConfig, Verdict};
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
        command: "rollback",
        shard: None,
        since: None,
        materialize: Default::default(),
    };
    let prepared = match session.prepare(request)? {
        Start::Plan(prepared) => prepared,
        Start::Interrupted => return Ok(130),
        Start::NoOp(_) | Start::Nothing(_) => {
            return Err(usage(
                format!("`{label}` is not a deploy of this workspace"),
                None,
            ))
        }
    };
    let ledger = Ledger::open(&root, &session.ws.config.ledger, &mut warn)?;
    let artifact = choose(&ledger, &environment, &label.to_string(), to)?;
    let ready = session.resolve(prepared)?;
    let plan = &ready.plan;
    let (node, secrets) = checked_deploy(plan, &label)?;
    let deploy = &plan.nodes[node];
    if let Some(Delivery::Deploy {
        environment: now, ..
    }) = &deploy.delivery
    {
        if now != &environment {
            // Its command would ship to `now` what `environment` once ran.
            return Err(usage(
                format!(
                    "`{label}` deploys to `{now}` now, not to `{environment}`, whose history \
                     this rollback would replay: nothing was run"
                ),
                Some(format!(
                    "roll `{environment}` back with the deploy that ships there now, or deploy \
                     the artifact you want to `{now}` by building it"
                )),
            ));
        }
    }
    let dest = artifact_dest(plan, node).unwrap_or_default();
    let rebuilder = session.rebuilder(ready.hasher.clone())?;
    let spec = rebuilder.spec(deploy, &ready.resolved.sources, &[], secrets);
    let effects = Effects {
        workspace_root: root.clone(),
        cache: session.cache()?,
        ledger: std::sync::Mutex::new(Ok(ledger)),
        git: git::facts(&root),
        user: git::current_user(),
        clock: session.clock,
        emergency: None,
        secret_values: crate::delivery::policy::secret_values(plan),
        happened: std::sync::Mutex::new(Happened::default()),
        warnings: std::sync::Mutex::new(Vec::new()),
    };
    let executor = session.executor();
    println!(
        "flow: rolling {environment} back to artifact {} ({}, live there since {})",
        short(&artifact.digest),
        artifact.label,
        crate::delivery::effects::when(artifact_since(&effects, &environment, &artifact))
    );
    // Ctrl-C (SIGTERM, SIGHUP) cancels the command and the probes at once, as in a build.
    let (stop, cancel) = Cancel::new();
    let mut interrupted = false;
    let done = runtime.block_on(async {
        let work = async {
            match rollback_run(&effects, &*executor, deploy, spec, &artifact, dest, cancel).await {
                Ok(run) => Ok(run.deploy(artifact.clone(), EntryKind::Rollback).await),
                Err(why) => Err(why),
            }
        };
        let mut work = std::pin::pin!(work);
        tokio::select! {
            done = &mut work => done,
            _ = crate::runner::interrupted(&mut sigint) => {
                interrupted = true;
                stop.cancel();
                work.await
            }
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
    if let Ok(d) = &done {
        // For `flow log`: the rollback is the deploy's last run.
        let key = rebuilder
            .key(deploy, &ready.resolved.sources, &[], &ready.resolved.tools)
            .map(|k| k.digest())
            .unwrap_or_else(|_| flow_cache::Digest::of(label.to_string().as_bytes()));
        record_run(&effects.cache, &session.workspace_text(), &label, key, d);
    }
    drop(executor);
    drop(rebuilder);
    session.close(Some(runtime));
    match done {
        Ok(d) if interrupted => {
            println!("[FAILED] {label} ({})", d.line);
            Ok(130)
        }
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
    let deploys = ledger.deploys(target);
    if deploys.len() > 1 {
        return Err(usage(
            format!(
                "several deploys ship to `{target}`: {}",
                deploys
                    .iter()
                    .map(|d| format!("`{d}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Some(format!(
                "name the one to roll back: `flow rollback {}`",
                deploys[0]
            )),
        ));
    }
    let Some(live) = ledger.live(target, None) else {
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

/// The artifact to go back to: `--to N` (1 to 999: the N-th artifact back, as
/// [`Ledger::previous`] walks back), `--to DIGEST` (a prefix, 4 hex digits or more, of any
/// artifact once live there but the live one: going forward again after an incident is
/// allowed when asked by name), or the one before.
fn choose(
    ledger: &Ledger,
    environment: &str,
    deploy: &str,
    to: Option<&str>,
) -> Result<Artifact, Error> {
    let previous: Vec<&Entry> = ledger.previous(environment, deploy);
    let listed = || "`flow ledger ENV` lists what was live there before".to_owned();
    let to = to.unwrap_or("1").trim().to_ascii_lowercase();
    if let Some(n) = (to.len() < 4).then(|| to.parse::<usize>().ok()).flatten() {
        if n == 0 {
            return Err(usage(
                "`--to 0` is the live artifact; `--to 1` is the one before it".into(),
                None,
            ));
        }
        return match previous.get(n - 1) {
            Some(e) => Ok(e.artifact.clone()),
            None if previous.is_empty() => Err(usage(
                format!("`{environment}` has nothing earlier to roll back to"),
                Some(listed()),
            )),
            None => Err(usage(
                format!(
                    "`{environment}` has {} earlier artifact(s) to roll back to; `--to {n}` asks \
                     for more",
                    previous.len()
                ),
                Some(listed()),
            )),
        };
    }
    if to.len() < 4 || !to.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(usage(
            format!("`--to {to}` is neither a count (1, 2, ...) nor a digest prefix (4 hex digits or more)"),
            Some(listed()),
        ));
    }
    let live = ledger
        .live(environment, Some(deploy))
        .map(|e| e.artifact.digest.as_str());
    if live.is_some_and(|d| d.starts_with(&to)) {
        return Err(usage(
            format!("`{to}` is the artifact live in `{environment}` now"),
            None,
        ));
    }
    let mut matching: Vec<&Artifact> = Vec::new();
    for e in ledger.entries().iter().rev() {
        let once_live = e.environment == environment
            && e.label == deploy
            && e.kind.deploys()
            && e.outcome == Verdict::Succeeded;
        if once_live
            && e.artifact.digest.starts_with(&to)
            && !matching.iter().any(|a| a.digest == e.artifact.digest)
        {
            matching.push(&e.artifact);
        }
    }
    match matching.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(usage(
            format!("no artifact once live in `{environment}` has a digest starting with `{to}`"),
            Some(listed()),
        )),
        _ => Err(usage(
            format!("`{to}` names several artifacts of `{environment}`; give more digits"),
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

/// The node of deploy `label` in `plan`, and its secrets (all set, or an error naming those
/// that are not).
fn checked_deploy(
    plan: &crate::plan::Plan,
    label: &Label,
) -> Result<(usize, std::collections::BTreeMap<String, String>), Error> {
    let Some(&node) = plan.index.get(label) else {
        return Err(usage(
            format!("`{label}` is not in the workspace any more"),
            None,
        ));
    };
    let deploy = &plan.nodes[node];
    if !matches!(&deploy.delivery, Some(Delivery::Deploy { .. })) {
        return Err(usage(format!("`{label}` is not a deploy"), None));
    }
    let secrets = deploy
        .secrets_from_env()
        .map_err(|why| usage(format!("`{label}`: {why}"), None))?;
    Ok((node, secrets))
}

/// Records a rollback's run in the history (best effort: a failure loses only `flow log`).
fn record_run(
    cache: &flow_cache::Cache,
    workspace: &str,
    label: &Label,
    key: flow_cache::Digest,
    done: &crate::delivery::effects::EffectDone,
) {
    let stdout = (!done.log.is_empty())
        .then(|| cache.cas().put_bytes(&done.log).ok())
        .flatten();
    let run = flow_cache::ActionRun {
        label: label.to_string(),
        key,
        outcome: match done.ok {
            true => flow_cache::Outcome::Ran,
            false => flow_cache::Outcome::Failed,
        },
        duration_ms: done.took.as_millis() as u64,
        exit_code: None,
        stdout,
        stderr: None,
        workspace: workspace.to_owned(),
        finished_at_ms: 0,
    };
    if let Ok(build) = cache.begin_build(workspace, &format!("rollback {label}")) {
        let _ = cache.record_runs(build, &[run]);
        let summary = flow_cache::BuildSummary {
            outcome: if done.ok { "ok" } else { "failed" }.into(),
            ran: u64::from(done.ok),
            failed: u64::from(!done.ok),
            duration_ms: done.took.as_millis() as u64,
            ..Default::default()
        };
        let _ = cache.finish_build(build, &summary);
    }
}

fn usage(message: String, help: Option<String>) -> Error {
    Error::Usage { message, help }
}
