//! Storing a successful run: its outputs and logs into the CAS, then its result into the action
//! cache (held and written with others: `pending.rs`), then its outputs under `flow-out/`, or
//! left in the cache (`lazy.rs`).

use flow_cache::{ActionResult, CacheError, Digest, OutputEntry, OutputKind};

use super::{Rebuilder, StoreError};
use crate::executor::ExecResult;
use crate::expand::join_path;
use crate::plan::Action;

impl Rebuilder {
    /// Stores both log streams; empty streams are not stored.
    pub fn store_logs(&self, exec: &ExecResult) -> (Option<Digest>, Option<Digest>) {
        let put = |b: &[u8]| {
            if b.is_empty() {
                None
            } else {
                self.cache.cas().put_bytes(b).ok()
            }
        };
        (put(&exec.stdout), put(&exec.stderr))
    }

    /// After a successful run: stores outputs and logs in the CAS, then records the result under
    /// `key`, then materializes the outputs under `flow-out/`.
    pub fn store(
        &self,
        action: &Action,
        key: &Digest,
        exec: &ExecResult,
    ) -> Result<ActionResult, StoreError> {
        if !exec.missing_outputs.is_empty() || !exec.output_problems.is_empty() {
            // The executor's own descriptions are the precise ones (a file where a directory
            // was declared, ...); the generic sentence is only a fallback.
            let problems = if exec.output_problems.is_empty() {
                exec.missing_outputs
                    .iter()
                    .map(|o| format!("declared output `{o}` was not created"))
                    .collect()
            } else {
                exec.output_problems.clone()
            };
            return Err(StoreError::Outputs(problems));
        }
        let cas = self.cache.cas();
        let mut outputs = Vec::with_capacity(action.outs.len());
        for out in &action.outs {
            let is_dir = out.ends_with('/');
            let rel = out.trim_end_matches('/').to_owned();
            let kind = if let Some(bytes) = exec.fake_outputs.get(&rel) {
                let digest = cas.put_bytes(bytes).map_err(StoreError::Cache)?;
                OutputKind::File {
                    digest,
                    size: bytes.len() as u64,
                    executable: false,
                }
            } else {
                let produced = exec.exec_root.join(join_path(&action.package, &rel));
                if is_dir {
                    let (digest, size) =
                        cas.put_tree(&produced, true).map_err(StoreError::Cache)?;
                    OutputKind::Tree { digest, size }
                } else {
                    let (digest, size, executable) =
                        cas.put_file(&produced, true).map_err(StoreError::Cache)?;
                    OutputKind::File {
                        digest,
                        size,
                        executable,
                    }
                }
            };
            outputs.push(OutputEntry { path: rel, kind });
        }
        let (stdout, stderr) = self.store_logs(exec);
        let result = ActionResult {
            exit_code: 0,
            outputs,
            stdout,
            stderr,
            duration_ms: exec.duration.as_millis() as u64,
        };
        self.record(key, &result).map_err(StoreError::Cache)?;
        match self.writes(action) {
            true => self.restore(action, &result),
            // Its blobs were verified as they were stored.
            false => self.leave_in_cache(action, &result, false),
        }
        .map_err(StoreError::Cache)?;
        // Shared only what may be reused (`task(cache = False)` runs every time: never).
        if let (Some(remote), true) = (&self.remote, action.kind.reusable()) {
            remote.queue(*key, &self.cache);
        }
        Ok(result)
    }

    /// Records `result` under `key` in the action cache: held and written with others
    /// (`pending.rs`), or at once when a remote cache may upload it (the upload reads it back).
    fn record(&self, key: &Digest, result: &ActionResult) -> Result<(), CacheError> {
        if self.remote.is_some() {
            return self.cache.put_action(key, result);
        }
        self.cache
            .put_actions(&self.pending.push(*key, result.clone()))
    }

    /// Writes every result still held (one transaction).
    pub fn flush(&self) -> Result<(), CacheError> {
        self.cache.put_actions(&self.pending.take())
    }
}
