//! Running effects: a deploy (or a rollback, which is a deploy of an older artifact), a monitor
//! and what they write to the ledger. The runner hands an effect here once every dependency
//! succeeded (`runner::dispatch`); nothing here is ever stored in the action cache.
//!
//! A deploy:
//! 1. names its artifact by content (the one output of its `artifact` target, as staged);
//! 2. asks the ledger what is live in its environment: the same artifact means nothing runs
//!    (`[LIVE]`); when the deploy declares `live`, that command is asked too, and a different
//!    answer is a warning (the ledger is history; the environment is the truth);
//! 3. runs `cmd` through the executor, sandboxed like a task, with the `FLOW_*` variables;
//! 4. runs its `health` probe until it passes, within `health_timeout`;
//! 5. records the outcome in the ledger (succeeded or failed) and pins the artifacts the ledger
//!    names in the CAS, so that a rollback never needs a rebuild.
//!
//! A monitor probes every `interval` for `duration`; on the first failure it records a failed
//! verdict and, with `on_failure = "rollback"`, deploys the previous live artifact again
//! (restored from the CAS, staged where the artifact was) as an automatic rollback.
//!
//! Command probes run in the package directory of the real tree, with the effect's
//! environment. Windows and branch rules are checked before the build starts
//! (`delivery::policy`), not here.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use flow_cache::OutputKind;
use flow_rules::{Delivery, OnFailure};

use super::ledger::{Artifact, ArtifactKind, EntryKind, Verdict};
use super::probe::{self, Probe, ProbeContext};
pub use super::shared::{short, status_failure, when, Effects, Happened};
use crate::executor::{ActionSpec, Cancel, Executor, Input, Ticket};
use crate::plan::Action;
use crate::rebuilder::StagedOutput;

/// How long one probe or `live` command may take, when the effect declares no `timeout`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// How an effect ended, for the runner's report.
pub struct EffectDone {
    pub ok: bool,
    /// The report line (`[DEPLOYED] //:d to staging (...)`, `[LIVE] ...`); on failure, why.
    pub line: String,
    /// What its commands printed.
    pub log: Vec<u8>,
    pub took: Duration,
    /// Whether a command ran (a `[LIVE]` deploy runs none).
    pub ran: bool,
}

impl EffectDone {
    /// An effect that could not start: `why`.
    pub fn failed_to_start(why: String) -> EffectDone {
        EffectDone::failed(why, Vec::new(), Duration::ZERO)
    }

    fn failed(why: String, log: Vec<u8>, took: Duration) -> EffectDone {
        EffectDone {
            ok: false,
            line: why,
            log,
            took,
            ran: true,
        }
    }
}

/// The artifact of deploy `action` among its dependencies' staged outputs.
/// (`dest`: where it is staged, [`artifact_dest`]).
pub fn artifact_of(action: &Action, deps: &[StagedOutput], dest: &str) -> Option<Artifact> {
    let Some(Delivery::Deploy { artifact, .. }) = &action.delivery else {
        return None;
    };
    let staged = deps.iter().find(|o| o.path == dest)?;
    let name = match artifact.package() {
        "" => dest,
        package => dest
            .strip_prefix(package)
            .and_then(|n| n.strip_prefix('/'))
            .unwrap_or(dest),
    }
    .to_owned();
    let (kind, size, executable) = match &staged.kind {
        OutputKind::File {
            size, executable, ..
        } => (ArtifactKind::File, *size, *executable),
        OutputKind::Tree { size, .. } => (ArtifactKind::Tree, *size, false),
    };
    Some(Artifact {
        digest: staged.kind.digest().to_string(),
        kind,
        size,
        executable,
        name,
        label: artifact.to_string(),
    })
}

/// One effect's run: the action, how to run its commands, and what it needs.
pub struct EffectRun<'a, E: Executor> {
    pub effects: &'a Effects,
    pub executor: &'a E,
    pub action: &'a Action,
    pub spec: ActionSpec,
    pub cancel: Cancel,
    /// Where the artifact is staged, exec-root-relative: the path the *current* graph gives
    /// it (`$(ARTIFACT)`), also when a rollback stages an artifact built under another name.
    /// Empty for a monitor.
    pub artifact_dest: String,
    /// A rollback's artifact, restored from the CAS: removed with the run.
    pub restored: Option<tempfile::TempDir>,
    /// The job slot of its command (behind a lock only so that the run is `Sync`).
    pub ticket: Mutex<Option<Ticket>>,
}

impl<E: Executor> EffectRun<'_, E> {
    /// Deploys `artifact` (staged at its place in `spec`) as `kind`.
    pub async fn deploy(mut self, artifact: Artifact, kind: EntryKind) -> EffectDone {
        let started = Instant::now();
        let label = self.spec.label.clone();
        let Some(Delivery::Deploy {
            environment,
            health,
            health_timeout,
            live,
            ..
        }) = self.action.delivery.clone()
        else {
            return EffectDone::failed("not a deploy".into(), Vec::new(), started.elapsed());
        };
        if kind == EntryKind::Deploy || kind == EntryKind::Emergency {
            match self
                .live_already(&environment, &artifact, live.as_deref())
                .await
            {
                Err(why) => return EffectDone::failed(why, Vec::new(), started.elapsed()),
                Ok(Some(since_ms)) => {
                    return EffectDone {
                        ok: true,
                        line: format!(
                            "[LIVE] {label} (artifact {}, live in {environment} since {})",
                            short(&artifact.digest),
                            when(since_ms)
                        ),
                        log: Vec::new(),
                        took: started.elapsed(),
                        ran: false,
                    }
                }
                Ok(None) => {}
            }
        }
        let started_ms = self.effects.clock.now_ms();
        self.set_env(&environment, &artifact, kind);
        let (outcome, why, log) = self.run_command(health, health_timeout).await;
        let mut entry = self.effects.entry(
            &environment,
            &label,
            kind,
            outcome,
            artifact.clone(),
            started_ms,
            why.clone(),
        );
        // An emergency's reason too: it is text a user typed.
        entry.reason = entry.reason.as_deref().map(|r| self.mask(r));
        if let Err(e) = self.effects.record(entry) {
            return EffectDone::failed(
                format!(
                    "{}; and it could not be recorded in the ledger: {e}",
                    why.unwrap_or_default()
                ),
                log,
                started.elapsed(),
            );
        }
        match why {
            Some(why) => EffectDone::failed(self.mask(&why), log, started.elapsed()),
            None => EffectDone {
                ok: true,
                line: format!(
                    "[{}] {label} to {environment} (artifact {}, {:.2}s)",
                    match kind {
                        EntryKind::Rollback | EntryKind::AutomaticRollback => "ROLLED BACK",
                        _ => "DEPLOYED",
                    },
                    short(&artifact.digest),
                    started.elapsed().as_secs_f64()
                ),
                log,
                took: started.elapsed(),
                ran: true,
            },
        }
    }

    /// The `FLOW_*` variables of a deploy's command and probes.
    fn set_env(&mut self, environment: &str, artifact: &Artifact, kind: EntryKind) {
        let path = match self.artifact_dest.is_empty() {
            true => String::new(),
            false => crate::expand::relative(&self.spec.package, &self.artifact_dest),
        };
        let env = &mut self.spec.env;
        env.insert("FLOW_ENVIRONMENT".into(), environment.into());
        env.insert("FLOW_ARTIFACT".into(), path);
        env.insert("FLOW_ARTIFACT_DIGEST".into(), artifact.digest.clone());
        env.insert("FLOW_DEPLOY_KIND".into(), kind.as_str().into());
        env.insert(
            "FLOW_WORKSPACE".into(),
            self.effects.workspace_root.display().to_string(),
        );
    }

    /// Runs the command, then the health probe: (verdict, why it failed, log).
    async fn run_command(
        &mut self,
        health: Option<String>,
        health_timeout: Duration,
    ) -> (Verdict, Option<String>, Vec<u8>) {
        let ticket = self.ticket.lock().unwrap_or_else(|e| e.into_inner()).take();
        let ticket = match ticket {
            Some(t) => t,
            None => return (Verdict::Failed, Some("no job slot".into()), Vec::new()),
        };
        let r = self
            .executor
            .run(self.spec.clone(), self.cancel.clone(), ticket)
            .await;
        let mut log = r.stdout.clone();
        log.extend_from_slice(&r.stderr);
        let failed = status_failure(&r, self.spec.timeout);
        self.executor.cleanup(&r);
        if let Some(why) = failed {
            return (Verdict::Failed, Some(why), log);
        }
        let Some(health) = health else {
            return (Verdict::Succeeded, None, log);
        };
        match self
            .probe(&health, Duration::from_secs(1), health_timeout)
            .await
        {
            Ok(_) => (Verdict::Succeeded, None, log),
            Err(why) => (
                Verdict::Failed,
                Some(format!("health check failed: {why}")),
                log,
            ),
        }
    }

    /// `text` with the values of the effect's secrets masked (probe output and HTTP bodies are
    /// quoted in messages; the executor masks only what commands print).
    fn mask(&self, text: &str) -> String {
        crate::executor::Masker::new(self.spec.secrets.values()).mask_text(text)
    }

    /// Runs probe `text` every `every` until it passes, within `within`.
    async fn probe(
        &self,
        text: &str,
        every: Duration,
        within: Duration,
    ) -> Result<Duration, String> {
        let probe = Probe::parse(text)?;
        let ctx = self.probe_context();
        self.interruptible(probe::wait_until(&probe, &ctx, every, within))
            .await
    }

    /// `work`, or `Err("interrupted")` as soon as the effect is cancelled (Ctrl-C): a probe
    /// dropped so kills its process group.
    async fn interruptible<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, String>>,
    ) -> Result<T, String> {
        tokio::select! {
            done = work => done,
            _ = self.cancel.cancelled() => Err("interrupted".into()),
        }
    }

    /// Where a command probe runs, with what, and for how long at most: the effect's
    /// `timeout`, else [`PROBE_TIMEOUT`].
    fn probe_context(&self) -> ProbeContext {
        let mut env = self.spec.env.clone();
        env.extend(self.spec.secrets.clone());
        ProbeContext {
            cwd: self.effects.workspace_root.join(&self.spec.package),
            env,
            attempt_timeout: self.spec.timeout.unwrap_or(PROBE_TIMEOUT),
        }
    }

    /// When `artifact` became live in `environment`, if it is live there: the ledger says so,
    /// and the environment's `live` command (when declared) agrees.
    async fn live_already(
        &mut self,
        environment: &str,
        artifact: &Artifact,
        live: Option<&str>,
    ) -> Result<Option<i64>, String> {
        let entry = self
            .effects
            .with_ledger(|l| Ok(l.live(environment, Some(&self.spec.label)).cloned()))?;
        let Some(e) = entry.filter(|e| e.artifact.digest == artifact.digest) else {
            return Ok(None);
        };
        let agrees = match live {
            Some(cmd) => self.environment_agrees(cmd, environment, artifact).await,
            None => true,
        };
        if self.cancel.is_cancelled() {
            return Err("interrupted".into());
        }
        Ok(agrees.then_some(e.ended_ms))
    }

    /// Whether the environment's `live` command agrees that `artifact` (live, the ledger
    /// says) is live: a different answer is a warning and `false` (the deploy runs again); a
    /// command that fails is a warning and `true` (the ledger is trusted).
    async fn environment_agrees(
        &mut self,
        cmd: &str,
        environment: &str,
        artifact: &Artifact,
    ) -> bool {
        self.set_env(environment, artifact, EntryKind::Deploy);
        let ctx = self.probe_context();
        let answer = self.interruptible(probe::output(cmd, &ctx)).await;
        let (agrees, warning) = match answer {
            Ok(text) if text.trim() == artifact.digest => return true,
            Ok(text) => (
                false,
                format!(
                    "the ledger says artifact {} is live in {environment}, but its `live` \
                     command says {}: deploying it again",
                    short(&artifact.digest),
                    match text.trim() {
                        "" => "nothing is".to_owned(),
                        other => format!("`{other}`"),
                    }
                ),
            ),
            Err(why) => (
                true,
                format!("could not ask {environment} what is live ({why}); the ledger is trusted"),
            ),
        };
        self.effects.warn(self.mask(&warning));
        agrees
    }

    /// Monitors the environment of the deploy `deploy` (whose spec, with the artifact staged,
    /// is `deploy_spec`): see the module doc.
    pub async fn monitor(
        mut self,
        deploy: &Action,
        deploy_spec: ActionSpec,
        dest: String,
    ) -> EffectDone {
        let started = Instant::now();
        let label = self.spec.label.clone();
        let (
            Some(Delivery::Monitor {
                probe,
                interval,
                duration,
                on_failure,
                ..
            }),
            Some(Delivery::Deploy { environment, .. }),
        ) = (self.action.delivery.clone(), deploy.delivery.clone())
        else {
            return EffectDone::failed(
                "not a monitor of a deploy".into(),
                Vec::new(),
                started.elapsed(),
            );
        };
        let live = match self.effects.with_ledger(|l| {
            Ok(l.live(&environment, Some(&deploy.label.to_string()))
                .cloned())
        }) {
            Ok(Some(e)) => e.artifact,
            Ok(None) => {
                let why = format!("nothing is live in {environment} to monitor");
                return EffectDone::failed(why, Vec::new(), started.elapsed());
            }
            Err(why) => return EffectDone::failed(why, Vec::new(), started.elapsed()),
        };
        let probe_parsed = match Probe::parse(&probe) {
            Ok(p) => p,
            Err(why) => return EffectDone::failed(why, Vec::new(), started.elapsed()),
        };
        let started_ms = self.effects.clock.now_ms();
        self.set_env(&environment, &live, EntryKind::Monitor);
        let mut ctx = self.probe_context();
        // One probe never outlasts the monitor's duration.
        ctx.attempt_timeout = ctx
            .attempt_timeout
            .min(duration.max(Duration::from_secs(1)));
        let mut checks = 0u32;
        let failure = loop {
            checks += 1;
            match self.interruptible(probe::check(&probe_parsed, &ctx)).await {
                Err(why) if self.cancel.is_cancelled() => {
                    return EffectDone::failed(why, Vec::new(), started.elapsed())
                }
                Err(why) => break Some(why),
                Ok(()) => {}
            }
            // Probes at 0, interval, 2 × interval, ... up to duration: duration ÷ interval + 1.
            let next = interval * checks;
            if next > duration {
                break None;
            }
            tokio::select! {
                _ = tokio::time::sleep_until((started + next).into()) => {}
                _ = self.cancel.cancelled() => {
                    return EffectDone::failed("interrupted".into(), Vec::new(), started.elapsed());
                }
            }
        };
        let verdict = if failure.is_some() {
            Verdict::Failed
        } else {
            Verdict::Succeeded
        };
        let entry = self.effects.entry(
            &environment,
            &label,
            EntryKind::Monitor,
            verdict,
            live.clone(),
            started_ms,
            failure.as_deref().map(|f| self.mask(f)),
        );
        if let Err(e) = self.effects.record(entry) {
            self.effects
                .warn(format!("the monitor's verdict was not recorded: {e}"));
        }
        let Some(why) = failure else {
            return EffectDone {
                ok: true,
                line: format!(
                    "[HEALTHY] {label} ({environment}, {checks} probe(s) passed over {:.0}s)",
                    started.elapsed().as_secs_f64()
                ),
                log: Vec::new(),
                took: started.elapsed(),
                ran: true,
            };
        };
        let mut why = format!(
            "{environment} is unhealthy after {checks} probe(s): {}",
            self.mask(&why)
        );
        if on_failure == OnFailure::Rollback {
            why.push_str(
                &self
                    .roll_back(deploy, deploy_spec, dest, &environment)
                    .await,
            );
        }
        EffectDone::failed(why, Vec::new(), started.elapsed())
    }

    /// The automatic rollback of a monitor: one sentence to append to its failure.
    async fn roll_back(
        &self,
        deploy: &Action,
        spec: ActionSpec,
        dest: String,
        environment: &str,
    ) -> String {
        let previous = self.effects.with_ledger(|l| {
            let label = deploy.label.to_string();
            Ok(l.previous(environment, &label)
                .first()
                .map(|e| e.artifact.clone()))
        });
        let previous = match previous {
            Ok(Some(a)) => a,
            Ok(None) => return "; no earlier artifact to roll back to".into(),
            Err(why) => return format!("; cannot roll back: {why}"),
        };
        let run = match rollback_run(
            self.effects,
            self.executor,
            deploy,
            spec,
            &previous,
            dest,
            self.cancel.clone(),
        )
        .await
        {
            Ok(run) => run,
            Err(why) => return format!("; cannot roll back: {why}"),
        };
        let done = run
            .deploy(previous.clone(), EntryKind::AutomaticRollback)
            .await;
        if done.ok {
            format!(
                "; rolled {environment} back to artifact {} (automatic rollback)",
                short(&previous.digest)
            )
        } else {
            format!("; the automatic rollback failed too: {}", done.line)
        }
    }
}

/// An [`EffectRun`] of deploy `deploy` with `artifact` restored from the CAS and staged where
/// its current artifact is in `spec` (a rollback: no rebuild).
pub async fn rollback_run<'a, E: Executor>(
    effects: &'a Effects,
    executor: &'a E,
    deploy: &'a Action,
    mut spec: ActionSpec,
    artifact: &Artifact,
    dest: String,
    cancel: Cancel,
) -> Result<EffectRun<'a, E>, String> {
    let (restored_dir, restored) = effects.restore(artifact)?;
    spec.inputs.retain(|i| i.dest != dest);
    spec.inputs.push(Input {
        dest: dest.clone(),
        source: restored,
        executable: artifact.executable,
        is_dir: artifact.kind == ArtifactKind::Tree,
        digest: None,
    });
    let ticket = crate::executor::Slots::new(1).ticket().await;
    Ok(EffectRun {
        effects,
        executor,
        action: deploy,
        spec,
        cancel,
        artifact_dest: dest,
        ticket: Mutex::new(Some(ticket)),
        restored: Some(restored_dir),
    })
}

/// Where node `deploy` of `plan` stages its artifact (exec-root-relative): the one declared
/// output of its `artifact` target, as the graph declares it now.
pub fn artifact_dest(plan: &crate::plan::Plan, deploy: usize) -> Option<String> {
    let Some(Delivery::Deploy { artifact, .. }) = &plan.nodes[deploy].delivery else {
        return None;
    };
    let outs = &plan.nodes[*plan.index.get(artifact)?].outs;
    let name = outs.first()?.trim_end_matches('/');
    Some(crate::expand::join_path(artifact.package(), name))
}
