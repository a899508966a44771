//! `--shard K/N`: split the targets a build selects over N CI runners. Target `t` belongs to
//! shard `1 + h(t) mod N`, where `h` is the first 8 bytes of the blake3 digest of its label:
//! every selected target is owned by exactly one shard, and the partition depends only on the
//! labels and N, so every machine computes the same one. A shard builds the targets it owns
//! with their dependency closures (shared dependencies are built by each shard that needs them,
//! or restored from a shared cache).

use std::collections::BTreeSet;

use crate::graph::TargetGraph;

/// One shard of N.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// 0-based.
    index: u64,
    count: u64,
}

impl Shard {
    /// `K/N` with 1 ≤ K ≤ N.
    pub fn parse(text: &str) -> Result<Shard, String> {
        let bad = || format!("`{text}` is not a shard: write K/N with 1 ≤ K ≤ N, e.g. `2/4`");
        let (k, n) = text.split_once('/').ok_or_else(bad)?;
        let (k, n): (u64, u64) = (
            k.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if n == 0 || k == 0 || k > n {
            return Err(bad());
        }
        Ok(Shard {
            index: k - 1,
            count: n,
        })
    }

    /// Whether this shard owns the target `label`.
    pub fn owns(&self, label: &str) -> bool {
        let digest = blake3::hash(label.as_bytes());
        let head: [u8; 8] = digest.as_bytes()[..8].try_into().expect("8 bytes");
        u64::from_le_bytes(head) % self.count == self.index
    }

    /// The targets of `selected` (indices of `graph`) this shard owns.
    pub fn select(&self, graph: &TargetGraph, selected: BTreeSet<usize>) -> BTreeSet<usize> {
        selected
            .into_iter()
            .filter(|&t| self.owns(&graph.target(t).label.to_string()))
            .collect()
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index + 1, self.count)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::Shard;

    #[test]
    fn parses_k_of_n_and_refuses_the_rest() {
        assert_eq!(Shard::parse("2/4").unwrap().to_string(), "2/4");
        for bad in ["0/4", "5/4", "1/0", "x/2", "2", "1/2/3", ""] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        /// Every label is owned by exactly one of the N shards.
        #[test]
        fn shards_partition_any_labels(
            labels in proptest::collection::btree_set("//[a-z]{1,6}:[a-z_]{1,8}", 0..60),
            n in 1u64..9,
        ) {
            for label in &labels {
                let owners = (1..=n)
                    .filter(|k| Shard::parse(&format!("{k}/{n}")).unwrap().owns(label))
                    .count();
                prop_assert_eq!(owners, 1, "{}", label);
            }
        }
    }
}
