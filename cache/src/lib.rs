//! flow's cache: bytes and digests only. It never sees labels or Starlark.
//!
//! Pipeline position: action key (input content digests) → rebuilder → **cache (CAS + SQLite)**.
//!
//! Today this crate holds `Digest`, the content digest every other part of the cache will be keyed
//! by; the content-addressed store, the action cache and the file-state table arrive with
//! `flow build`.

mod digest;

pub use digest::Digest;
