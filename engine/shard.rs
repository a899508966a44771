//! `--shard K/N`: split the targets a build selects over N CI runners. Target `t` belongs to
//! shard `1 + h(t) mod N`, where `h` is the first 8 bytes of the blake3 digest of its label:
//! every selected target is owned by exactly one shard, and the partition depends only on the
//! labels and N, so every machine computes the same one. A shard builds the targets it owns
//! with their dependency closures (shared dependencies are built by each shard that needs them,
//! or restored from a shared cache).
//!
//! `--shard-timings FILE` balances the shards by recorded durations instead: FILE is the event
//! stream of an earlier build (`--events`), whose `finished` events give each target's run time.
//! The selected targets are taken longest first (ties by label) and each is given to the shard
//! with the least time so far (ties to the lowest shard): the longest-processing-time rule.
//! A target the file does not know, or saw reused (no run time), weighs the median of the run
//! times it has (1 ms when it has none: the shards are then balanced by count). The partition depends
//! only on the selection, N and the file's contents, so every shard computes the same one from
//! the same file; each target is still owned by exactly one shard.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use crate::graph::TargetGraph;

/// One shard of N.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    /// 0-based.
    index: u64,
    count: u64,
    /// `--shard-timings`: balance by these durations rather than by label hash.
    timings: Option<Arc<Timings>>,
}

/// Run times by label, from an earlier build's event stream.
#[derive(Debug, PartialEq, Eq)]
pub struct Timings {
    millis: BTreeMap<String, u64>,
    /// Of the file's contents: names the partition in the build record.
    digest: String,
}

impl Timings {
    /// Reads the `finished` events of an event stream (`--events`); lines that are not such
    /// events are ignored, a file with none is an error.
    pub fn read(path: &Path) -> Result<Timings, String> {
        let text = read_bounded(path)
            .map_err(|e| format!("cannot read the shard timings `{}`: {e}", path.display()))?;
        let mut millis = BTreeMap::new();
        let mut finished = 0;
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if v["event"] != "finished" {
                continue;
            }
            finished += 1;
            if let (Some(label), Some(ms)) = (v["label"].as_str(), v["duration_ms"].as_u64()) {
                if ms > 0 {
                    millis.insert(label.to_owned(), ms);
                }
            }
        }
        if finished == 0 {
            return Err(format!(
                "`{}` holds no run times: give the `--events` file of an earlier build",
                path.display()
            ));
        }
        Ok(Timings {
            millis,
            digest: blake3::hash(text.as_bytes()).to_hex()[..16].to_owned(),
        })
    }
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
            timings: None,
        })
    }

    /// The same shard, balanced by `timings`.
    pub fn balanced_by(self, timings: Timings) -> Shard {
        Shard {
            timings: Some(Arc::new(timings)),
            ..self
        }
    }

    /// What names the partition in the build record: `K/N`, and the timings' digest.
    pub fn record_key(&self) -> String {
        match &self.timings {
            Some(t) => format!("{self} timings {}", t.digest),
            None => self.to_string(),
        }
    }

    /// Whether this shard owns the target `label`.
    pub fn owns(&self, label: &str) -> bool {
        let digest = blake3::hash(label.as_bytes());
        let head: [u8; 8] = digest.as_bytes()[..8].try_into().expect("8 bytes");
        u64::from_le_bytes(head) % self.count == self.index
    }

    /// The targets of `selected` (indices of `graph`) this shard owns.
    pub fn select(&self, graph: &TargetGraph, selected: BTreeSet<usize>) -> BTreeSet<usize> {
        let labels = selected
            .into_iter()
            .map(|t| (graph.target(t).label.to_string(), t));
        match &self.timings {
            None => labels
                .filter(|(label, _)| self.owns(label))
                .map(|(_, t)| t)
                .collect(),
            Some(timings) => {
                let labels: BTreeMap<String, usize> = labels.collect();
                let owner = balance(labels.keys(), &timings.millis, self.count);
                labels
                    .into_iter()
                    .filter(|(label, _)| owner.get(label) == Some(&self.index))
                    .map(|(_, t)| t)
                    .collect()
            }
        }
    }
}

/// The largest timings file read (an event stream of a build of 100,000 actions is ~30 MiB).
const MAX_TIMINGS: u64 = 256 << 20;

/// The text of `path`: a regular file (opened without waiting on a FIFO), of at most
/// [`MAX_TIMINGS`] bytes.
fn read_bounded(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if meta.len() > MAX_TIMINGS {
        return Err(std::io::Error::other(format!(
            "larger than {} MiB",
            MAX_TIMINGS >> 20
        )));
    }
    let mut text = String::new();
    file.take(MAX_TIMINGS).read_to_string(&mut text)?;
    Ok(text)
}

/// The longest-processing-time partition of `labels` over `count` shards (module docs): label
/// → 0-based shard.
fn balance<'a>(
    labels: impl Iterator<Item = &'a String>,
    millis: &BTreeMap<String, u64>,
    count: u64,
) -> BTreeMap<String, u64> {
    let mut known: Vec<u64> = millis.values().copied().collect();
    known.sort_unstable();
    let median = known.get(known.len() / 2).copied().unwrap_or(1);
    let mut items: Vec<(u64, &String)> = labels
        .map(|l| (millis.get(l).copied().unwrap_or(median), l))
        .collect();
    items.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    let mut load = vec![0u64; count as usize];
    let mut owner = BTreeMap::new();
    for (ms, label) in items {
        let (least, _) = load
            .iter()
            .enumerate()
            .min_by_key(|&(i, l)| (*l, i))
            .expect("at least one shard");
        load[least] += ms;
        owner.insert(label.clone(), least as u64);
    }
    owner
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

    /// Longest first, each to the least loaded shard (ties to the lowest): a=8, b=5, c=3, d=1,
    /// e=1 give a+d | b+c+e.
    #[test]
    fn timings_balance_longest_first() {
        let millis: std::collections::BTreeMap<String, u64> =
            [("a", 8), ("b", 5), ("c", 3), ("d", 1), ("e", 1)]
                .map(|(l, m)| (l.to_owned(), m))
                .into();
        let owner = super::balance(millis.keys(), &millis, 2);
        let on = |k: u64| -> Vec<&str> {
            owner
                .iter()
                .filter(|(_, &s)| s == k)
                .map(|(l, _)| l.as_str())
                .collect()
        };
        assert_eq!(on(0), ["a", "d"]);
        assert_eq!(on(1), ["b", "c", "e"]);
    }

    proptest! {
        /// With timings too, every label is owned by exactly one shard, and no shard's load
        /// exceeds the mean by more than the longest item (the LPT bound).
        #[test]
        fn balanced_shards_partition_and_stay_within_the_bound(
            millis in proptest::collection::btree_map("//[a-z]{1,6}:[a-z]{1,4}", 1u64..5000, 1..60),
            n in 1u64..9,
        ) {
            let owner = super::balance(millis.keys(), &millis, n);
            prop_assert_eq!(owner.len(), millis.len());
            let mut load = vec![0u64; n as usize];
            for (label, s) in &owner {
                prop_assert!(*s < n);
                load[*s as usize] += millis[label];
            }
            let total: u64 = load.iter().sum();
            let longest = *millis.values().max().unwrap();
            for l in load {
                prop_assert!(l <= total / n + longest, "{} > {} + {}", l, total / n, longest);
            }
        }

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
