//! Delivery: the effects of the graph (deploy, monitor, notify, service), the deploy ledger,
//! deployment windows and the probes they share. See docs/delivery.md.
//!
//! A task is a pure function of its key; an effect changes the world. Effects are never
//! reused (`plan::ActionKind::reusable`), and what they did is written to the ledger, not to
//! the action cache.

pub mod checks;
pub mod effects;
pub mod git;
pub mod ledger;
pub mod policy;
pub mod probe;
pub mod service;
pub mod shared;
pub mod window;
