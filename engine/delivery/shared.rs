//! What the effects of one command share: the ledger, the git facts, the user, the clock and
//! an emergency's reason ([`Effects`]); how an entry is made and recorded (pinning what the
//! ledger names in the CAS), and how an artifact of the past is restored from the CAS for a
//! rollback. Also the small formats effects print: [`short`] digests and [`when`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flow_cache::{Cache, Digest};

use super::git::GitFacts;
use super::ledger::{Artifact, ArtifactKind, Entry, EntryKind, Ledger, Verdict};
use super::window::Emergency;
use crate::clock::Clock;
use crate::executor::{ExecResult, Status};

/// What the effects of one command share.
pub struct Effects {
    pub workspace_root: PathBuf,
    pub cache: Arc<Cache>,
    /// Opened when the command has effects; `Err`: why it could not be (each effect fails).
    pub ledger: Mutex<Result<Ledger, String>>,
    pub git: Option<GitFacts>,
    pub user: String,
    pub clock: Clock,
    pub emergency: Option<Emergency>,
    /// The values of every secret the command's actions declare: text a user typed (an
    /// emergency's reason, its approver) is masked with them before it is recorded.
    pub secret_values: Vec<String>,
    /// What this command did, for notifications.
    pub happened: Mutex<Happened>,
    /// Warnings the effects gave (printed by the runner when the effect completes).
    pub warnings: Mutex<Vec<String>>,
}

/// The delivery events of one build, for `notify`.
#[derive(Clone, Debug, Default)]
pub struct Happened {
    /// Ledger entries recorded (deploys, rollbacks, monitor verdicts), in order.
    pub entries: Vec<Entry>,
}

impl Happened {
    pub fn deployed(&self) -> bool {
        self.entries.iter().any(|e| {
            e.outcome == Verdict::Succeeded
                && matches!(e.kind, EntryKind::Deploy | EntryKind::Emergency)
        })
    }

    pub fn rolled_back(&self) -> bool {
        self.entries.iter().any(|e| {
            e.outcome == Verdict::Succeeded
                && matches!(e.kind, EntryKind::Rollback | EntryKind::AutomaticRollback)
        })
    }
}

/// The short form of a digest in messages.
pub fn short(digest: &str) -> String {
    format!("{}…", &digest[..digest.len().min(10)])
}

/// A time in messages: `2026-12-07 14:03 UTC`.
pub fn when(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

impl Effects {
    /// Runs `f` on the open ledger, or says why there is none.
    pub fn with_ledger<T>(
        &self,
        f: impl FnOnce(&mut Ledger) -> Result<T, String>,
    ) -> Result<T, String> {
        let mut guard = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *guard {
            Ok(l) => f(l),
            Err(why) => Err(format!("the deploy ledger is not available: {why}")),
        }
    }

    pub fn warn(&self, text: String) {
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(text);
    }

    /// A ledger entry of this command, ended now.
    #[allow(clippy::too_many_arguments)]
    pub fn entry(
        &self,
        environment: &str,
        label: &str,
        kind: EntryKind,
        outcome: Verdict,
        artifact: Artifact,
        started_ms: i64,
        reason: Option<String>,
    ) -> Entry {
        let kind = match (kind, &self.emergency) {
            (EntryKind::Deploy, Some(_)) => EntryKind::Emergency,
            (k, _) => k,
        };
        let reason = match (&self.emergency, kind) {
            (Some(e), EntryKind::Emergency) => Some(match reason {
                Some(r) => format!("{}; {r}", e.reason),
                None => e.reason.clone(),
            }),
            _ => reason,
        };
        // A rollback ships an artifact built from an earlier commit: the entry names that one
        // (from the entry that first made it live there), not the checkout's.
        let built_from = matches!(kind, EntryKind::Rollback | EntryKind::AutomaticRollback)
            .then(|| {
                self.with_ledger(|l| {
                    Ok(l.entries()
                        .iter()
                        .find(|e| {
                            e.environment == environment
                                && e.artifact.digest == artifact.digest
                                && e.outcome == Verdict::Succeeded
                                && matches!(e.kind, EntryKind::Deploy | EntryKind::Emergency)
                        })
                        .map(|e| (e.commit.clone(), e.commit_time, e.branch.clone())))
                })
                .ok()
                .flatten()
            })
            .flatten();
        let (commit, commit_time, branch) = built_from.unwrap_or_else(|| {
            let git = self.git.as_ref();
            (
                git.map(|g| plain(&g.commit)),
                git.map(|g| g.commit_time),
                git.and_then(|g| g.branch.as_deref().map(plain)),
            )
        });
        Entry {
            id: super::ledger::new_id(),
            environment: environment.into(),
            label: label.into(),
            kind,
            outcome,
            artifact,
            commit,
            commit_time,
            branch,
            user: plain(&self.user),
            started_ms,
            ended_ms: self.clock.now_ms().max(started_ms),
            reason: reason.as_deref().map(|r| self.masked(r)),
            approved_by: self
                .emergency
                .as_ref()
                .and_then(|e| e.approved_by.as_deref().map(|a| self.masked(a))),
        }
    }

    /// `text` as it may be recorded: plain, with every secret value of the command masked.
    fn masked(&self, text: &str) -> String {
        crate::executor::Masker::new(self.secret_values.iter()).mask_text(&plain(text))
    }

    /// Records `entry` (and what it pins); remembers it for notifications.
    pub fn record(&self, entry: Entry) -> Result<(), String> {
        let mut warnings = Vec::new();
        let recorded = self.with_ledger(|l| {
            l.record(entry.clone(), &mut |w| warnings.push(w))
                .map_err(|e| e.to_string())?;
            if let Err(e) = l.pin_in(&self.cache) {
                warnings.push(format!(
                    "could not pin the ledger's artifacts in the cache: {e}"
                ));
            }
            Ok(())
        });
        for w in warnings {
            self.warn(w);
        }
        recorded?;
        self.happened
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .push(entry);
        Ok(())
    }

    /// Restores `artifact` from the CAS into a private directory (removed when the returned
    /// guard drops); returns the guard and the artifact's path.
    pub fn restore(&self, artifact: &Artifact) -> Result<(tempfile::TempDir, PathBuf), String> {
        let digest = Digest::from_hex(&artifact.digest)
            .ok_or_else(|| format!("`{}` is not a digest", artifact.digest))?;
        // Named as every temp entry of the cache (`<pid>-<n>-<random>`): what a run killed
        // meanwhile leaves is swept by the next build (`Cache::sweep_orphans`).
        let unique = self.cache.cas().temp_path();
        let tmp = unique.parent().unwrap_or(Path::new(".")).to_path_buf();
        let dir = tempfile::Builder::new()
            .prefix(unique.file_name().unwrap_or_default())
            .rand_bytes(0)
            .tempdir_in(&tmp)
            .map_err(|e| format!("cannot restore an artifact in `{}`: {e}", tmp.display()))?;
        let dest = dir
            .path()
            .join(Path::new(&artifact.name).file_name().unwrap_or_default());
        let cas = self.cache.cas();
        let restored = match artifact.kind {
            ArtifactKind::File => cas
                .materialize_file(&digest, artifact.size, artifact.executable, &dest)
                .map(|_| ()),
            ArtifactKind::Tree => cas.materialize_tree(&digest, &dest),
        };
        restored.map_err(|e| {
            format!(
                "artifact {} ({}) is not in the cache any more ({e}); build it again from its \
                 commit and deploy that",
                short(&artifact.digest),
                artifact.label
            )
        })?;
        Ok((dir, dest))
    }
}

/// `text` with each control or formatting character (a newline in a reason, an escape
/// sequence in a user name) as a space: ledger entries reach terminals, and hold none
/// (`Entry::check`).
fn plain(text: &str) -> String {
    text.chars()
        .map(|c| {
            if super::ledger::hostile_char(c) {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// Why a run failed, from its status; `None` when it exited 0.
pub fn status_failure(r: &ExecResult, timeout: Option<Duration>) -> Option<String> {
    Some(match &r.status {
        Status::Exited(0) => return None,
        Status::Exited(c) => format!("exit {c}, {:.2}s", r.duration.as_secs_f64()),
        Status::Signaled(s) => format!("killed by signal {s}"),
        Status::TimedOut => format!(
            "timed out after {:.1}s",
            timeout.unwrap_or_default().as_secs_f64()
        ),
        Status::Cancelled => "interrupted".into(),
        Status::NotStarted => "not started".into(),
        Status::SpawnFailed(why) => format!("could not start: {why}"),
    })
}
