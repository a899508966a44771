//! Writing the record after a successful build: from scratch after analysis, or by patching
//! the values of the record the build started from.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use flow_cache::{Digest, FileState, OutputKind};

use super::format::*;
use super::tools::{exe_stamp, ToolStamps};
use super::{forget, Basis, Previous};
use crate::analysis::AnalysisInputs;
use crate::plan::Plan;
use crate::rebuilder::{tree_marker, Carried, LastResult, StagedOutput};

/// Everything a successful build leaves for the record.
pub struct Capture<'a> {
    pub request: &'a str,
    pub config: [u8; 32],
    pub tools: &'a HashMap<String, String>,
    pub plan: &'a Plan,
    /// Per node: its outputs as dependents see them, and its key (tasks).
    pub staged: &'a [Option<Vec<StagedOutput>>],
    pub keys: &'a [Option<Digest>],
    /// The file states the build used and recorded (the hasher's, by absolute path).
    pub states: &'a dyn Fn(&str) -> Option<FileState>,
    pub root: &'a Path,
    /// The output root (`flow-out/` of the workspace).
    pub out_root: &'a Path,
    /// When the carried actions' entries were last marked used.
    pub touched_at_ms: i64,
}

impl Capture<'_> {
    /// Writes the record at `path` (atomically); false, and no record, when some state the
    /// proof needs is missing (the next build then goes the long way).
    pub fn write(&self, path: &Path, basis: Basis) -> bool {
        let bytes = match basis {
            Basis::Analysis {
                analysis,
                tool_stamps,
            } => self.encode_new(&analysis, tool_stamps),
            Basis::Record(previous) => match self.patch(path, previous) {
                Patch::Written => return true,
                Patch::Rewrite(bytes) => Some(bytes),
                Patch::Impossible => None,
            },
        };
        let written = bytes.and_then(|bytes| {
            let dir = path.parent()?;
            let tmp = dir.join(format!(".{}.rec.tmp", std::process::id()));
            // Never through a link planted at the directory, the temp file or the record.
            flow_cache::regular::write_replacing(path, &tmp, &bytes).ok()
        });
        if written.is_none() {
            forget(path);
        }
        written.is_some()
    }

    /// The state of the file at `abs` as the build left it.
    fn state_of(&self, abs: &Path) -> Option<FileState> {
        (self.states)(abs.to_str()?)
    }

    /// The result of node `i`, appending its outputs' states to `outputs`.
    fn node_result(&self, i: usize, outputs: &mut Vec<Entry>) -> Option<NodeResult> {
        let a = &self.plan.nodes[i];
        let staged = self.staged.get(i)?.as_ref()?;
        if !a.kind.runs() {
            return Some(NodeResult {
                key: None,
                staged: Vec::new(),
                outputs: Vec::new(),
            });
        }
        let out_root = self.out_root;
        let rel = |p: &Path| Some(p.strip_prefix(self.root).ok()?.to_str()?.to_owned());
        let mut own = Vec::with_capacity(staged.len());
        for o in staged {
            let (entry_path, dir, digest) = match &o.kind {
                OutputKind::File { digest, .. } => (out_root.join(&o.path), None, digest),
                OutputKind::Tree { digest, .. } => {
                    let dir = out_root.join(&o.path);
                    (tree_marker(&dir), Some(rel(&dir)?), digest)
                }
            };
            let state = self.state_of(&entry_path)?;
            if state.digest != *digest {
                return None;
            }
            own.push(outputs.len() as u32);
            outputs.push(Entry::from_state(rel(&entry_path)?, &state, dir));
        }
        Some(NodeResult {
            key: Some(*self.keys.get(i)?.as_ref()?.as_bytes()),
            staged: staged.iter().map(Staged::of).collect(),
            outputs: own,
        })
    }

    fn encode_new(&self, analysis: &AnalysisInputs, tool_stamps: ToolStamps) -> Option<Vec<u8>> {
        let sources = self
            .plan
            .all_sources()
            .into_iter()
            .map(|s| {
                let state = self.state_of(&self.root.join(&s))?;
                Some(Entry::from_state(s, &state, None))
            })
            .collect::<Option<Vec<_>>>()?;
        let mut outputs = Vec::new();
        let results = (0..self.plan.nodes.len())
            .map(|i| self.node_result(i, &mut outputs))
            .collect::<Option<Vec<_>>>()?;
        let nodes = self.plan.nodes.clone();
        let head = Head {
            format: FORMAT,
            exe: exe_stamp()?,
            request: self.request.to_owned(),
            config: self.config,
            touched_at_ms: self.touched_at_ms,
            analysis_taken_at_ns: analysis.taken_at_ns,
            root_entries: analysis.root_entries.clone(),
            analysis: analysis.stamps.clone(),
            links: analysis.links.clone(),
            tools: tool_stamps,
            sources,
            outputs,
            unchanged_carries: self.unchanged_carries(),
        };
        let body = Body {
            nodes,
            requested: self.plan.requested.iter().map(|&r| r as u32).collect(),
            tools: self
                .tools
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        let body = postcard::to_stdvec(&body).ok()?;
        encode(&head, &results, &body)
    }

    /// The reuse decision for "nothing changed" on this build's plan and results (see
    /// `Head::unchanged_carries`).
    fn unchanged_carries(&self) -> Option<Vec<String>> {
        let last = (0..self.plan.nodes.len())
            .map(|i| {
                Some(LastResult {
                    staged: self.staged.get(i)?.clone()?,
                    key: (*self.keys.get(i)?)?,
                })
            })
            .collect();
        let carried = Carried::compute(self.plan, last, []);
        carried.covers(self.plan).then(|| {
            self.plan
                .actions()
                .map(|i| self.plan.nodes[i].label.to_string())
                .collect()
        })
    }

    /// The previous record with the tasks this build keyed brought up to date (their sources'
    /// and outputs' states, keys and outputs), written over the changed values of the file it
    /// was read from; the plan's bytes are kept as they were.
    fn patch(&self, path: &Path, previous: Box<Previous>) -> Patch {
        let Previous {
            mut head,
            mut results,
            dirty,
            mut bytes,
            values_len,
            body_at,
            file,
        } = *previous;
        if results.len() != self.plan.nodes.len() || dirty.len() != results.len() {
            return Patch::Impossible;
        }
        let values = &mut bytes[HEADER..HEADER + values_len];
        let slots = Slots::of(&head);
        let first = first_staged(&results);
        let nodes = results.len();
        let mut ranges = vec![(0, 8)];
        head.touched_at_ms = self.touched_at_ms;
        values[..8].copy_from_slice(&self.touched_at_ms.to_le_bytes());
        let mut keyed_sources = BTreeSet::new();
        for (i, a) in self.plan.nodes.iter().enumerate() {
            if !dirty[i] {
                continue;
            }
            keyed_sources.extend(a.srcs.iter().map(String::as_str));
            let mut fresh = Vec::new();
            let Some(mut result) = self.node_result(i, &mut fresh) else {
                return Patch::Impossible;
            };
            let old = &results[i];
            let same_shape = old.outputs.len() == fresh.len()
                && old.staged.len() == result.staged.len()
                && old.key.is_some() == result.key.is_some()
                && old
                    .staged
                    .iter()
                    .zip(&result.staged)
                    .all(|(o, n)| o.path == n.path);
            if !same_shape {
                return Patch::Impossible;
            }
            for (&slot, entry) in old.outputs.iter().zip(fresh) {
                let Some(e) = head.outputs.get_mut(slot as usize) else {
                    return Patch::Impossible;
                };
                let at = slots.output(slot as usize);
                put_entry(&mut values[at..at + ENTRY_BYTES], &entry);
                ranges.push((at, ENTRY_BYTES));
                *e = entry;
            }
            let at = slots.key(i);
            put_key(&mut values[at..at + KEY_BYTES], result.key);
            ranges.push((at, KEY_BYTES));
            let at = slots.staged(nodes, first[i]);
            for (k, st) in result.staged.iter().enumerate() {
                let at = at + k * STAGED_BYTES;
                put_staged(&mut values[at..at + STAGED_BYTES], st);
            }
            ranges.push((at, result.staged.len() * STAGED_BYTES));
            result.outputs = old.outputs.clone();
            results[i] = result;
        }
        for s in keyed_sources {
            let Ok(at) = head.sources.binary_search_by(|e| e.path.as_str().cmp(s)) else {
                return Patch::Impossible;
            };
            let Some(state) = self.state_of(&self.root.join(s)) else {
                return Patch::Impossible;
            };
            head.sources[at] = Entry::from_state(s.to_owned(), &state, None);
            let off = slots.source(at);
            put_entry(&mut values[off..off + ENTRY_BYTES], &head.sources[at]);
            ranges.push((off, ENTRY_BYTES));
        }
        if patch_file(path, file, &bytes, ranges) {
            return Patch::Written;
        }
        match encode(&head, &results, &bytes[body_at..]) {
            Some(bytes) => Patch::Rewrite(bytes),
            None => Patch::Impossible,
        }
    }
}

/// How [`Capture::patch`] went.
enum Patch {
    /// The changed values and the checksum were written into the record read.
    Written,
    /// That file is gone or was replaced: these bytes are the whole record.
    Rewrite(Vec<u8>),
    /// The build does not fit the record's shape (it cannot happen with the same plan): no
    /// record.
    Impossible,
}
