//! The deploy ledger: every deploy, rollback and monitor verdict, per environment. It is
//! history, not cache: it lives in `<workspace>/.flow/ledger/` ([`ledger_dir`]), which `gc` and
//! `flow clean --cache` never touch, and the artifacts it names as live or previously live are
//! pinned in the CAS ([`Ledger::pinned`], `flow_cache::Cache::set_pins`).
//!
//! Local home (`store.rs`): one JSON file per entry, `entries/<started_ms>-<id>.json`, written
//! through a temp file and a rename, so that concurrent writers need no lock and a reader never
//! sees half an entry. Shared home (`share.rs`, when `[ledger] remote` is set): the git ref
//! `refs/flow/ledger` on that remote, whose tree holds the same files under `entries/`. Entries
//! are never edited or removed, so merging two ledgers is the union of their files.
//!
//! What is live in an environment: the artifact of its latest succeeded entry of a deploying
//! kind (deploy, rollback, automatic rollback, emergency), in the order `(started_ms, id)`.

mod share;
mod store;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Whether `c` may not appear in a ledger text: a control character, or a bidirectional or
/// zero-width formatting one (they reorder or hide what a terminal shows).
pub(crate) fn hostile_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}'
        )
}

/// What an entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryKind {
    Deploy,
    Rollback,
    AutomaticRollback,
    Emergency,
    Monitor,
}

impl EntryKind {
    /// Whether a succeeded entry of this kind makes its artifact the live one.
    pub fn deploys(self) -> bool {
        !matches!(self, EntryKind::Monitor)
    }

    /// The word the ledger's JSON and `flow ledger` use.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Deploy => "deploy",
            EntryKind::Rollback => "rollback",
            EntryKind::AutomaticRollback => "automatic-rollback",
            EntryKind::Emergency => "emergency",
            EntryKind::Monitor => "monitor",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Succeeded,
    Failed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactKind {
    File,
    Tree,
}

/// What was deployed: one declared output of a target, by content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// 64 hex characters: a file's blake3, or a directory's tree-manifest digest.
    pub digest: String,
    pub kind: ArtifactKind,
    pub size: u64,
    pub executable: bool,
    /// The output's path relative to its package.
    pub name: String,
    /// The target that produced it.
    pub label: String,
}

/// One record of the ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    pub environment: String,
    /// The deploy or monitor target.
    pub label: String,
    pub kind: EntryKind,
    pub outcome: Verdict,
    pub artifact: Artifact,
    pub commit: Option<String>,
    /// Seconds since the Unix epoch.
    pub commit_time: Option<i64>,
    pub branch: Option<String>,
    pub user: String,
    pub started_ms: i64,
    pub ended_ms: i64,
    pub reason: Option<String>,
    pub approved_by: Option<String>,
}

impl Entry {
    /// The file name of this entry, locally and on the shared ref.
    pub fn file_name(&self) -> String {
        format!("{}-{}.json", self.started_ms, self.id)
    }

    /// What an entry flow writes always satisfies: a 64-hex-digit artifact digest, and no
    /// control character in any text (they would reach terminals as they are).
    pub(crate) fn check(&self) -> Result<(), String> {
        let d = &self.artifact.digest;
        if d.len() != 64 || !d.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("`{}` is not an artifact digest", d.escape_debug()));
        }
        let texts = [
            Some(&self.id),
            Some(&self.environment),
            Some(&self.label),
            Some(&self.user),
            Some(&self.artifact.name),
            Some(&self.artifact.label),
            self.commit.as_ref(),
            self.branch.as_ref(),
            self.reason.as_ref(),
            self.approved_by.as_ref(),
        ];
        if let Some(t) = texts
            .into_iter()
            .flatten()
            .find(|t| t.chars().any(hostile_char))
        {
            return Err(format!(
                "a control or formatting character in `{}`",
                t.escape_debug()
            ));
        }
        flow_cache::check_relative_path(&self.artifact.name)
            .map(|_| ())
            .map_err(|_| {
                format!(
                    "`{}` is not an output path",
                    self.artifact.name.escape_debug()
                )
            })
    }

    fn sort_key(&self) -> (i64, &str) {
        (self.started_ms, &self.id)
    }

    fn made_live(&self) -> bool {
        self.kind.deploys() && self.outcome == Verdict::Succeeded
    }
}

/// `[ledger]` of `flow.toml`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerConfig {
    /// A git remote (a name or a URL) whose `refs/flow/ledger` shares the ledger.
    pub remote: Option<String>,
    /// Artifacts pinned per environment besides the live one.
    pub keep: usize,
}

/// The default of `[ledger] keep`.
pub const DEFAULT_KEEP: usize = 5;

impl Default for LedgerConfig {
    fn default() -> LedgerConfig {
        LedgerConfig {
            remote: None,
            keep: DEFAULT_KEEP,
        }
    }
}

/// The local home of the ledger: `<workspace>/.flow/ledger/`.
pub fn ledger_dir(workspace_root: &Path) -> PathBuf {
    workspace_root.join(".flow").join("ledger")
}

/// A fresh entry id, unique across processes and machines: the time, the process id and 64
/// random bits.
pub fn new_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    format!(
        "{now:x}-{:x}-{:016x}",
        std::process::id(),
        fastrand::u64(..)
    )
}

/// The ledger of one workspace, read once; [`Ledger::record`] adds to it.
pub struct Ledger {
    dir: PathBuf,
    entries: Vec<Entry>,
    keep: usize,
    share: Option<share::Share>,
}

impl Ledger {
    /// Reads `<workspace>/.flow/ledger/`; with a remote, fetches `refs/flow/ledger` first and
    /// adds the entries missing locally. `warn` receives one sentence per problem that loses
    /// nothing (the remote cannot be reached, an entry file that does not parse).
    pub fn open(
        workspace_root: &Path,
        config: &LedgerConfig,
        warn: &mut dyn FnMut(String),
    ) -> Result<Ledger, Error> {
        let dir = ledger_dir(workspace_root);
        let share = match &config.remote {
            Some(remote) => Some(share::Share::new(workspace_root, remote, &dir)?),
            None => None,
        };
        if let Some(share) = &share {
            share.pull(warn)?;
        }
        let entries = store::read_all(&dir, warn)?;
        Ok(Ledger {
            dir,
            entries,
            keep: config.keep,
            share,
        })
    }

    /// Writes the entry locally (temp file + rename), then, with a remote, commits the union
    /// on the fetched tip and pushes it (a rejected push is retried, a bounded number of
    /// times). A remote that cannot be reached is a warning: the entry stays local and the
    /// next record pushes it.
    pub fn record(&mut self, entry: Entry, warn: &mut dyn FnMut(String)) -> Result<(), Error> {
        store::write(&self.dir, &entry)?;
        let at = self
            .entries
            .partition_point(|e| e.sort_key() <= entry.sort_key());
        self.entries.insert(at, entry);
        if let Some(share) = &mut self.share {
            if share.push(warn)? {
                // Entries other runners pushed meanwhile are local now too.
                self.entries = store::read_all(&self.dir, warn)?;
            }
        }
        Ok(())
    }

    /// Every entry, ordered by `(started_ms, id)`.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The environments with entries, sorted.
    pub fn environments(&self) -> Vec<&str> {
        let mut envs: Vec<&str> = self
            .entries
            .iter()
            .map(|e| e.environment.as_str())
            .collect();
        envs.sort_unstable();
        envs.dedup();
        envs
    }

    /// The entry that made the live artifact of `deploy` (a deploy's label) in `environment`
    /// live; with `None`, of any deploy there (the latest). Several deploys may ship to one
    /// environment (an API and a web front end): each has its own live artifact.
    pub fn live(&self, environment: &str, deploy: Option<&str>) -> Option<&Entry> {
        self.deployed(environment, deploy).next()
    }

    /// The deploys with entries in `environment`, sorted.
    pub fn deploys(&self, environment: &str) -> Vec<&str> {
        let mut labels: Vec<&str> = self
            .entries
            .iter()
            .filter(|e| e.environment == environment && e.kind.deploys())
            .map(|e| e.label.as_str())
            .collect();
        labels.sort_unstable();
        labels.dedup();
        labels
    }

    /// What a rollback of `environment` can go back to, newest first (`[0]` by default), each
    /// with the latest entry that made it live. The ledger is replayed as a stack of live
    /// artifacts: a deploy pushes its artifact; a rollback to an artifact on the stack pops
    /// back to it (what it rolled away from is no longer "before" anything), one elsewhere
    /// pushes it. So rolling back twice goes back two artifacts, never forward to the one just
    /// left. An artifact a monitor found unhealthy there is never offered, nor the live one.
    pub fn previous(&self, environment: &str, deploy: &str) -> Vec<&Entry> {
        let mut stack: Vec<&Entry> = Vec::new();
        let mut unhealthy = HashSet::new();
        for e in self.entries.iter().filter(|e| e.environment == environment) {
            if e.kind == EntryKind::Monitor && e.outcome == Verdict::Failed {
                unhealthy.insert(e.artifact.digest.as_str());
            }
            if !e.made_live() || e.label != deploy {
                continue;
            }
            let digest = e.artifact.digest.as_str();
            let rollback = matches!(e.kind, EntryKind::Rollback | EntryKind::AutomaticRollback);
            match stack.iter().rposition(|s| s.artifact.digest == digest) {
                Some(at) if rollback => {
                    stack.truncate(at);
                    stack.push(e);
                }
                Some(at) => {
                    // Deployed again: it moves to the top.
                    stack.remove(at);
                    stack.push(e);
                }
                None => stack.push(e),
            }
        }
        let Some(live) = stack.pop() else {
            return Vec::new();
        };
        unhealthy.insert(live.artifact.digest.as_str());
        stack
            .into_iter()
            .rev()
            .filter(|e| !unhealthy.contains(e.artifact.digest.as_str()))
            .collect()
    }

    /// What the CAS must keep, each once, for every deploy of every environment: the live
    /// artifact, the `keep` a rollback would go back to first ([`Ledger::previous`]), and the
    /// `keep` live most recently before the live one (what `--to DIGEST` may name).
    pub fn pinned(&self) -> Vec<Artifact> {
        let mut seen = HashSet::new();
        let mut pinned = Vec::new();
        for env in self.environments() {
            for deploy in self.deploys(env) {
                let mut distinct = HashSet::new();
                let recent = self
                    .deployed(env, Some(deploy))
                    .filter(|e| distinct.insert(e.artifact.digest.as_str()))
                    .take(self.keep + 1);
                let back = self.previous(env, deploy).into_iter().take(self.keep);
                for e in recent.chain(back) {
                    if seen.insert(e.artifact.digest.as_str()) {
                        pinned.push(e.artifact.clone());
                    }
                }
            }
        }
        pinned
    }

    /// Makes the cache's pins ([`flow_cache::Cache::set_pins`]) what [`Ledger::pinned`] says;
    /// returns how many artifacts are pinned. A digest that is not 64 hex characters (a
    /// hand-edited entry) pins nothing.
    pub fn pin_in(&self, cache: &flow_cache::Cache) -> Result<usize, flow_cache::CacheError> {
        let pins: Vec<(flow_cache::Digest, bool)> = self
            .pinned()
            .iter()
            .filter_map(|a| {
                let digest = flow_cache::Digest::from_hex(&a.digest)?;
                Some((digest, a.kind == ArtifactKind::Tree))
            })
            .collect();
        cache.set_pins(&pins)?;
        Ok(pins.len())
    }

    /// Opens the local ledger only (never the remote: `gc` and `clean` must not need the
    /// network) and makes the cache's pins what it says; returns how many artifacts are pinned.
    pub fn pin_local(
        workspace_root: &Path,
        config: &LedgerConfig,
        cache: &flow_cache::Cache,
    ) -> Result<usize, Error> {
        let local = LedgerConfig {
            remote: None,
            keep: config.keep,
        };
        let ledger = Ledger::open(workspace_root, &local, &mut |w| eprintln!("warning: {w}"))?;
        ledger.pin_in(cache).map_err(|e| Error::Cache {
            path: cache.dir().to_path_buf(),
            error: e.to_string(),
        })
    }

    /// The succeeded deploying entries of `environment` (of `deploy` only, if given), newest
    /// first.
    fn deployed(&self, environment: &str, deploy: Option<&str>) -> impl Iterator<Item = &Entry> {
        let (environment, deploy) = (environment.to_owned(), deploy.map(str::to_owned));
        self.entries.iter().rev().filter(move |e| {
            e.environment == environment
                && e.made_live()
                && deploy.as_ref().is_none_or(|d| &e.label == d)
        })
    }

    #[cfg(test)]
    pub(crate) fn share_mut(&mut self) -> Option<&mut share::Share> {
        self.share.as_mut()
    }
}
