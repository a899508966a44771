//! Tool stamps: what the tools of a plan resolve to on the action `PATH`, and the identity of
//! the flow binary, as the record checks them by `stat`.

use std::collections::BTreeSet;
use std::path::Path;

use flow_rules::snapshot::{self, Stamp};
use serde::{Deserialize, Serialize};

use crate::plan::{find_tool, Plan};

/// What the tools of a plan resolve to, and the action `PATH` they are looked up on: a
/// directory of it whose entries change (a tool installed earlier on the `PATH`) or a link that
/// points elsewhere makes the record stale.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct ToolStamps {
    pub(super) taken_at_ns: i64,
    /// Each directory of the action `PATH`, following links (`None`: missing).
    pub(super) dirs: Vec<(String, Option<Stamp>)>,
    /// Each tool: the path found on the `PATH`, what it resolves to, and that file's stamp.
    pub(super) tools: Vec<(String, String, Stamp)>,
}

impl ToolStamps {
    /// Takes the stamps before the tools are identified, so that a change while the build
    /// identifies them is seen next time.
    pub fn take(plan: &Plan, action_path: &[String]) -> ToolStamps {
        let names: BTreeSet<&String> = plan.nodes.iter().flat_map(|a| a.tools.iter()).collect();
        if names.is_empty() {
            return ToolStamps::default();
        }
        let taken_at_ns = snapshot::now_ns();
        let dirs = action_path
            .iter()
            .map(|d| (d.clone(), stamp_following(Path::new(d))))
            .collect();
        let tools = names
            .into_iter()
            .filter_map(|name| {
                let (found, canonical) = find_tool(name, action_path)?;
                let stamp = stamp_following(&canonical)?;
                Some((
                    found.to_str()?.to_owned(),
                    canonical.to_str()?.to_owned(),
                    stamp,
                ))
            })
            .collect();
        ToolStamps {
            taken_at_ns,
            dirs,
            tools,
        }
    }

    pub(super) fn unchanged(&self) -> bool {
        let trusted = |s: &Stamp| s.settled(self.taken_at_ns);
        self.dirs.iter().all(|(d, s)| {
            s.as_ref().is_none_or(trusted) && stamp_following(Path::new(d)).as_ref() == s.as_ref()
        }) && self.tools.iter().all(|(found, canonical, s)| {
            trusted(s)
                && std::fs::canonicalize(found).ok().as_deref() == Some(Path::new(canonical))
                && stamp_following(Path::new(canonical)).as_ref() == Some(s)
        })
    }
}

/// The identity of the running flow binary.
pub(super) fn exe_stamp() -> Option<Stamp> {
    stamp_following(&std::env::current_exe().ok()?)
}

pub(super) fn stamp_following(path: &Path) -> Option<Stamp> {
    Stamp::following(path)
}
