//! What the last watch cycle left: the reuse decision's last results for the next cycle, and
//! each node's last failure (the screen's last summary depends on it).

use flow_cache::Digest;

use crate::rebuilder::{LastResult, StagedOutput};

/// What the last cycle left, per node of the current plan: outputs as dependents see them and
/// key (`None` where the node did not finish), as [`crate::runner::Finished`] returns them.
pub(super) struct LastCycle {
    pub(super) staged: Vec<Option<Vec<StagedOutput>>>,
    pub(super) keys: Vec<Option<Digest>>,
    /// Why each node failed, if it did.
    pub(super) failures: Vec<Option<String>>,
}

impl LastCycle {
    /// Each task's last result, for the reuse decision; and each one's last failure.
    pub(super) fn results(self) -> (Vec<Option<LastResult>>, Vec<Option<String>>) {
        let results = self
            .staged
            .into_iter()
            .zip(self.keys)
            .map(|(staged, key)| {
                Some(LastResult {
                    staged: staged?,
                    key: key?,
                })
            })
            .collect();
        (results, self.failures)
    }
}
