//! `Scheduler`: which node may start next. A topological scheduler over the action DAG with a
//! ready queue ordered by critical path: a node's priority is its own expected cost plus the
//! longest chain of costs among the nodes that wait on it, so the work that holds up the most
//! is started first. It never looks at the cache or at processes (the runner and the rebuilder
//! do); it only tracks states.
//!
//! Loop, as driven by the runner: `pop_ready` while slots are free → work happens → `finish(node,
//! ok)` releases its dependents (or, on failure, marks every transitive dependent `Skipped` and
//! returns them) → until `is_finished`.
//!
//! Invariants: a node is popped at most once; a node becomes ready only when all its
//! dependencies finished successfully; `stop()` (first failure without `-k`, or Ctrl-C) empties
//! the ready queue and starts nothing more.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    Waiting,
    Ready,
    Running,
    Succeeded,
    Failed,
    Skipped,
    /// Never started because the build stopped.
    NotStarted,
}

#[derive(Debug)]
pub struct Scheduler {
    state: Vec<NodeState>,
    waiting_on: Vec<usize>,
    dependents: Vec<Vec<usize>>,
    priority: Vec<u64>,
    ready: BinaryHeap<(u64, Reverse<usize>)>,
    /// The nodes made ready since the last `take_fresh`, in that order.
    fresh: Vec<usize>,
    running: usize,
    stopped: bool,
}

impl Scheduler {
    /// `deps[i]` lists the nodes `i` depends on (indices into the same slice); `cost[i]` is the
    /// expected duration of `i` (from history; any unit).
    pub fn new(deps: &[Vec<usize>], cost: &[u64]) -> Scheduler {
        let mut dependents = vec![Vec::new(); deps.len()];
        for (i, ds) in deps.iter().enumerate() {
            for &d in ds {
                dependents[d].push(i);
            }
        }
        Scheduler::with_dependents(deps, dependents, cost)
    }

    /// `new`, given the reverse edges too (`dependents[d]` lists the nodes that depend on `d`,
    /// as `Plan::dependents` answers): the runner passes the plan's own.
    pub fn with_dependents(
        deps: &[Vec<usize>],
        dependents: Vec<Vec<usize>>,
        cost: &[u64],
    ) -> Scheduler {
        let n = deps.len();
        let waiting_on: Vec<usize> = deps.iter().map(Vec::len).collect();
        let priority = critical_path(deps, &dependents, cost);
        let mut s = Scheduler {
            state: vec![NodeState::Waiting; n],
            waiting_on,
            dependents,
            priority,
            ready: BinaryHeap::new(),
            fresh: Vec::new(),
            running: 0,
            stopped: false,
        };
        for i in 0..n {
            if s.waiting_on[i] == 0 {
                s.make_ready(i);
            }
        }
        s
    }

    fn make_ready(&mut self, i: usize) {
        self.state[i] = NodeState::Ready;
        self.ready.push((self.priority[i], Reverse(i)));
        self.fresh.push(i);
    }

    /// The nodes made ready since the last call (some may have been taken since; none once
    /// stopped): what the runner looks ahead at, each node once, without going over the whole
    /// queue at every step (which made a build of 2,000 carried actions 7 ms slower).
    pub fn take_fresh(&mut self) -> Vec<usize> {
        match self.stopped {
            true => Vec::new(),
            false => std::mem::take(&mut self.fresh),
        }
    }

    /// The nodes ready now, not yet taken (none once stopped).
    pub fn ready_nodes(&self) -> Vec<usize> {
        match self.stopped {
            true => Vec::new(),
            false => self.ready.iter().map(|(_, Reverse(i))| *i).collect(),
        }
    }

    /// The most urgent ready node, now marked running.
    pub fn pop_ready(&mut self) -> Option<usize> {
        if self.stopped {
            return None;
        }
        let (_, Reverse(i)) = self.ready.pop()?;
        self.state[i] = NodeState::Running;
        self.running += 1;
        Some(i)
    }

    /// Records the end of running node `i`. On success its dependents may become ready; on
    /// failure every transitive dependent is skipped, and those are returned.
    pub fn finish(&mut self, i: usize, ok: bool) -> Vec<usize> {
        debug_assert_eq!(self.state[i], NodeState::Running);
        self.running -= 1;
        if ok {
            self.state[i] = NodeState::Succeeded;
            for k in 0..self.dependents[i].len() {
                let d = self.dependents[i][k];
                self.waiting_on[d] -= 1;
                if self.waiting_on[d] == 0 && self.state[d] == NodeState::Waiting {
                    self.make_ready(d);
                }
            }
            return Vec::new();
        }
        self.state[i] = NodeState::Failed;
        let mut skipped = Vec::new();
        let mut stack = self.dependents[i].clone();
        while let Some(d) = stack.pop() {
            if matches!(self.state[d], NodeState::Waiting | NodeState::Ready) {
                self.state[d] = NodeState::Skipped;
                skipped.push(d);
                stack.extend(self.dependents[d].iter().copied());
            }
        }
        if !skipped.is_empty() {
            let st = &self.state;
            self.ready
                .retain(|(_, Reverse(r))| st[*r] == NodeState::Ready);
        }
        skipped.sort_unstable();
        skipped
    }

    /// Running node `i` never started after all (the build stopped while it waited for a job
    /// slot): it is `NotStarted`, and its dependents stay as they are.
    pub fn unstart(&mut self, i: usize) {
        debug_assert_eq!(self.state[i], NodeState::Running);
        self.running -= 1;
        self.state[i] = NodeState::NotStarted;
    }

    /// Starts nothing more: what is running may finish, the rest is `NotStarted`.
    pub fn stop(&mut self) {
        self.stopped = true;
        self.ready.clear();
        for s in &mut self.state {
            if matches!(s, NodeState::Waiting | NodeState::Ready) {
                *s = NodeState::NotStarted;
            }
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Nodes currently running.
    pub fn running(&self) -> usize {
        self.running
    }

    /// Whether nothing runs and nothing can start.
    pub fn is_finished(&self) -> bool {
        self.running == 0 && (self.ready.is_empty() || self.stopped)
    }

    pub fn state(&self, i: usize) -> NodeState {
        self.state[i]
    }

    pub fn priority(&self, i: usize) -> u64 {
        self.priority[i]
    }
}

/// Longest cost of a chain from each node to the end of the graph (through its dependents).
fn critical_path(deps: &[Vec<usize>], dependents: &[Vec<usize>], cost: &[u64]) -> Vec<u64> {
    let n = deps.len();
    // Kahn's order over dependents-first: process nodes whose dependents are all done.
    let mut remaining: Vec<usize> = dependents.iter().map(|d| d.len()).collect();
    let mut stack: Vec<usize> = (0..n).filter(|&i| remaining[i] == 0).collect();
    let mut priority = vec![0u64; n];
    while let Some(i) = stack.pop() {
        let tail = dependents[i]
            .iter()
            .map(|&d| priority[d])
            .max()
            .unwrap_or(0);
        priority[i] = cost.get(i).copied().unwrap_or(1).saturating_add(tail);
        for &d in &deps[i] {
            remaining[d] -= 1;
            if remaining[d] == 0 {
                stack.push(d);
            }
        }
    }
    priority
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(s: &mut Scheduler) -> Vec<usize> {
        let mut order = Vec::new();
        while let Some(i) = s.pop_ready() {
            order.push(i);
            s.finish(i, true);
        }
        order
    }

    #[test]
    fn dependencies_come_first() {
        // 0 <- 1 <- 2, and 3 alone.
        let deps = vec![vec![], vec![0], vec![1], vec![]];
        let mut s = Scheduler::new(&deps, &[1, 1, 1, 1]);
        let order = drain(&mut s);
        let pos = |x| order.iter().position(|&i| i == x).unwrap();
        assert!(pos(0) < pos(1) && pos(1) < pos(2));
        assert!(s.is_finished());
    }

    #[test]
    fn critical_path_first() {
        // A long chain 0 <- 1 <- 2 (cost 10 each) and a short one 3 (cost 1): 0 starts first even
        // though 3 has the same number of dependencies.
        let deps = vec![vec![], vec![0], vec![1], vec![]];
        let mut s = Scheduler::new(&deps, &[10, 10, 10, 1]);
        assert_eq!(s.priority(0), 30);
        assert_eq!(s.priority(3), 1);
        assert_eq!(s.pop_ready(), Some(0));
        assert_eq!(s.pop_ready(), Some(3));
    }

    #[test]
    fn failure_skips_transitive_dependents_only() {
        // 0 <- 1 <- 2 ; 3 independent.
        let deps = vec![vec![], vec![0], vec![1], vec![]];
        let mut s = Scheduler::new(&deps, &[5, 1, 1, 1]);
        assert_eq!(s.pop_ready(), Some(0));
        assert_eq!(s.finish(0, false), vec![1, 2]);
        assert_eq!(s.pop_ready(), Some(3));
        s.finish(3, true);
        assert!(s.is_finished());
        assert_eq!(s.state(2), NodeState::Skipped);
    }

    #[test]
    fn stop_starts_nothing_more() {
        let deps = vec![vec![], vec![], vec![0]];
        let mut s = Scheduler::new(&deps, &[1, 1, 1]);
        let a = s.pop_ready().unwrap();
        s.stop();
        assert_eq!(s.pop_ready(), None);
        assert!(!s.is_finished());
        s.finish(a, true);
        assert!(s.is_finished());
        assert_eq!(s.state(2), NodeState::NotStarted);
    }

    #[test]
    fn a_diamond_waits_for_both_sides() {
        // 0 <- {1, 2} <- 3
        let deps = vec![vec![], vec![0], vec![0], vec![1, 2]];
        let mut s = Scheduler::new(&deps, &[1, 1, 1, 1]);
        assert_eq!(s.pop_ready(), Some(0));
        s.finish(0, true);
        let a = s.pop_ready().unwrap();
        s.finish(a, true);
        let b = s.pop_ready().unwrap();
        assert_ne!(b, 3, "3 must wait for both 1 and 2");
        s.finish(b, true);
        assert_eq!(s.pop_ready(), Some(3));
    }
}
