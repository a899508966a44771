//! `ActionKey`: everything that can change an action's result, as one serializable struct. Its
//! blake3 digest (of the canonical JSON) is the key of the action cache; the JSON itself is kept
//! in the CAS under that digest, so `flow explain` can say which field changed.
//!
//! In: the command after expansion, the package (the working directory), declared env and the
//! fixed action `PATH`, secret *names*, each input file's workspace-relative path and content
//! digest, each dependency output's staged path and digest (a dependency without outputs adds
//! nothing: it only orders work; identical output bytes after a re-run give an identical key:
//! early cutoff), resolved tools' identities, declared outputs, sandboxing, the platform and the
//! key-format version. Not in: mtimes, absolute paths of the workspace, secret values, a
//! dependency's own key, timeouts and retries (they decide scheduling, not results).
//!
//! Maps are `BTreeMap`s so the serialization is canonical. Any change to this struct's meaning
//! bumps `KEY_FORMAT_VERSION`, which invalidates every cached result at once.

use std::collections::BTreeMap;

use flow_cache::Digest;
use serde::{Deserialize, Serialize};

/// Bumped whenever what goes into a key changes meaning.
pub const KEY_FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionKey {
    pub version: u32,
    pub platform: String,
    pub package: String,
    pub cmd: String,
    pub env: BTreeMap<String, String>,
    pub secrets: Vec<String>,
    /// Workspace-relative path of each source → its content digest.
    pub inputs: BTreeMap<String, Digest>,
    /// Sources whose executable bit is set (sorted): a script run as `./x.sh` behaves differently
    /// without it.
    #[serde(default)]
    pub executable: Vec<String>,
    /// Workspace-relative path where each dependency output is staged → its digest (for a
    /// directory output, the digest of its tree manifest).
    pub dep_outputs: BTreeMap<String, Digest>,
    /// Tool name → identity (resolved path and content digest).
    pub tools: BTreeMap<String, String>,
    pub outs: Vec<String>,
    pub sandbox: bool,
    /// Each service the action needs (label) → the digest of its definition and sources
    /// (`plan::ServiceUse`). Left out when empty, so keys of actions without services are
    /// those of earlier versions.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub services: BTreeMap<String, Digest>,
}

impl ActionKey {
    /// The canonical serialization that is hashed and stored.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an ActionKey always serializes")
    }

    /// The key's digest: blake3 of `to_json()`.
    pub fn digest(&self) -> Digest {
        Digest::of(&self.to_json())
    }

    /// The platform string of this machine, e.g. `x86_64-linux`.
    pub fn this_platform() -> String {
        format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS)
    }

    /// The key of what an action was given when some of its file inputs were staged with other
    /// bytes than this key holds (`seen`: staged path → digest of those bytes, from
    /// `ExecResult::seen_inputs`): sources saved while the build ran. Their result is stored
    /// under this key, which describes the bytes the action saw. An error names an input no key
    /// can describe: a dependency's output (its digest is the dependency's result, not the
    /// file's), or a file an action read in place (`None`: when it read it is unknown).
    pub fn as_seen(&self, seen: &BTreeMap<String, Option<Digest>>) -> Result<ActionKey, String> {
        let mut key = self.clone();
        for (path, digest) in seen {
            match (key.inputs.get_mut(path), digest) {
                (Some(keyed), Some(digest)) => *keyed = *digest,
                (Some(_), None) => {
                    return Err(format!(
                        "source `{path}` changed while it ran and cannot be read"
                    ))
                }
                (None, _) => {
                    return Err(format!(
                        "input `{path}`, a dependency's output, was changed under flow-out/ \
                         while the build ran"
                    ))
                }
            }
        }
        Ok(key)
    }

    /// Human-readable differences from `old` (the key of the last run), field by field.
    pub fn diff(&self, old: &ActionKey) -> Vec<String> {
        let mut out = Vec::new();
        if self.version != old.version {
            out.push(format!(
                "flow's key format changed ({} -> {})",
                old.version, self.version
            ));
        }
        if self.platform != old.platform {
            out.push(format!(
                "platform changed: `{}` -> `{}`",
                old.platform, self.platform
            ));
        }
        if self.cmd != old.cmd {
            out.push(format!(
                "command changed:\n  was: {}\n  now: {}",
                old.cmd, self.cmd
            ));
        }
        if self.package != old.package {
            out.push(format!(
                "package changed: `{}` -> `{}`",
                old.package, self.package
            ));
        }
        diff_maps("env", &old.env, &self.env, &mut out, true);
        if self.secrets != old.secrets {
            out.push(format!(
                "secret names changed: {:?} -> {:?}",
                old.secrets, self.secrets
            ));
        }
        diff_maps("input", &old.inputs, &self.inputs, &mut out, false);
        if self.executable != old.executable {
            out.push(format!(
                "executable sources changed: {:?} -> {:?}",
                old.executable, self.executable
            ));
        }
        diff_maps(
            "dependency output",
            &old.dep_outputs,
            &self.dep_outputs,
            &mut out,
            false,
        );
        diff_maps("tool", &old.tools, &self.tools, &mut out, true);
        if self.outs != old.outs {
            out.push(format!(
                "declared outputs changed: {:?} -> {:?}",
                old.outs, self.outs
            ));
        }
        if self.sandbox != old.sandbox {
            out.push(format!(
                "sandbox changed: {} -> {}",
                old.sandbox, self.sandbox
            ));
        }
        out
    }
}

fn diff_maps<V: PartialEq + std::fmt::Display>(
    what: &str,
    old: &BTreeMap<String, V>,
    new: &BTreeMap<String, V>,
    out: &mut Vec<String>,
    show_values: bool,
) {
    for (k, v) in new {
        match old.get(k) {
            None => out.push(format!("{what} added: `{k}`")),
            Some(o) if o != v => {
                if show_values {
                    out.push(format!("{what} changed: `{k}`: `{o}` -> `{v}`"));
                } else {
                    out.push(format!("{what} changed: `{k}`"));
                }
            }
            _ => {}
        }
    }
    for k in old.keys() {
        if !new.contains_key(k) {
            out.push(format!("{what} removed: `{k}`"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ActionKey {
        ActionKey {
            version: KEY_FORMAT_VERSION,
            platform: "x86_64-linux".into(),
            package: "app".into(),
            cmd: "cat a.txt > out.txt".into(),
            env: BTreeMap::from([("PATH".into(), "/usr/bin:/bin".into())]),
            secrets: vec!["TOKEN".into()],
            inputs: BTreeMap::from([("app/a.txt".into(), Digest::of(b"a"))]),
            executable: Vec::new(),
            dep_outputs: BTreeMap::new(),
            tools: BTreeMap::new(),
            outs: vec!["out.txt".into()],
            sandbox: true,
            services: BTreeMap::new(),
        }
    }

    #[test]
    fn digest_is_stable_and_sensitive() {
        let a = key();
        assert_eq!(a.digest(), key().digest());
        let mut b = key();
        b.inputs.insert("app/a.txt".into(), Digest::of(b"b"));
        assert_ne!(a.digest(), b.digest());
        assert_eq!(b.diff(&a), vec!["input changed: `app/a.txt`".to_string()]);
    }

    #[test]
    fn diff_names_each_field() {
        let old = key();
        let mut new = key();
        new.env.insert("MODE".into(), "fast".into());
        new.cmd = "true".into();
        new.dep_outputs
            .insert("lib/out.txt".into(), Digest::of(b"x"));
        let d = new.diff(&old);
        assert!(d.iter().any(|l| l.starts_with("command changed")), "{d:?}");
        assert!(d.contains(&"env added: `MODE`".to_string()), "{d:?}");
        assert!(
            d.contains(&"dependency output added: `lib/out.txt`".to_string()),
            "{d:?}"
        );
    }
}
