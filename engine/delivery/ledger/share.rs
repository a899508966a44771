//! The ledger's shared home: the ref `refs/flow/ledger` on a git remote, for CI runners that
//! start with an empty `.flow/`. Its commit's tree is `entries/<file>.json`, the same files as
//! the local home. Git is run as a program in the workspace's checkout (plumbing only:
//! `fetch`, `ls-tree`, `cat-file`, `hash-object`, `mktree`, `commit-tree`, `push`), never
//! prompting; the local ref `refs/flow/ledger` mirrors the remote's last known tip (and keeps
//! its objects from git's gc). No working tree, index or branch of the user is touched.
//!
//! Pull: fetch the tip and copy the entry files missing locally. Push: fetch, copy, then commit
//! the union of both sets of files on top of the tip and push it without force; a push rejected
//! because another runner pushed first starts over from a new fetch, at most [`ATTEMPTS`]
//! times. Entries are never removed, so the union loses nothing, and a remote that cannot be
//! reached costs a warning: the entries stay local and the next push carries them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::store;
use crate::delivery::git::git;
use crate::error::Error;

/// How long a `git fetch` or `git push` of the ledger may take.
const NETWORK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The ref that holds the ledger, on the remote and, as a mirror, locally.
pub const LEDGER_REF: &str = "refs/flow/ledger";
/// Pushes tried before giving up (each after a fresh fetch).
pub const ATTEMPTS: usize = 5;

/// Entry file name → the git blob holding it.
type Files = BTreeMap<String, String>;

pub(crate) struct Share {
    root: PathBuf,
    remote: String,
    ledger: PathBuf,
    /// Set once the remote could not be reached in this command: later records stay local
    /// without trying again (one wait, one warning, per command).
    gave_up: std::cell::Cell<bool>,
    /// Runs once, between the fetch and the first push (tests make a concurrent push there).
    #[cfg(test)]
    pub(crate) before_push: Option<Box<dyn FnMut() + Send>>,
}

impl Share {
    /// The share through `remote`, from the checkout at `root`; an error if `root` is not in a
    /// git checkout.
    pub(super) fn new(root: &Path, remote: &str, ledger: &Path) -> Result<Share, Error> {
        let inside = git(root)
            .args(["rev-parse", "--git-dir"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !inside {
            return Err(Error::Usage {
                message: format!(
                    "the ledger's remote `{remote}` (`[ledger] remote` in flow.toml) needs a git \
                     checkout, and `{}` is not in one",
                    root.display()
                ),
                help: Some(
                    "run flow in a clone of the repository, or remove `remote` from `[ledger]` \
                     to keep the ledger in `.flow/ledger/` only"
                        .into(),
                ),
            });
        }
        Ok(Share {
            root: root.to_owned(),
            remote: remote.to_owned(),
            ledger: ledger.to_owned(),
            gave_up: std::cell::Cell::new(false),
            #[cfg(test)]
            before_push: None,
        })
    }

    /// Copies the remote's entries missing locally.
    pub(super) fn pull(&self, warn: &mut dyn FnMut(String)) -> Result<(), Error> {
        match self.fetch() {
            Ok(Some(tip)) => self.import(&tip).map(|_| ()),
            Ok(None) => Ok(()),
            Err(said) => {
                warn(self.unreachable(&said));
                Ok(())
            }
        }
    }

    /// Pushes the local entries the remote lacks (see the module docs). Returns whether entries
    /// from the remote were copied locally on the way.
    pub(super) fn push(&mut self, warn: &mut dyn FnMut(String)) -> Result<bool, Error> {
        let mut imported = false;
        if self.gave_up.get() {
            return Ok(imported);
        }
        let mut said = String::new();
        for _ in 0..ATTEMPTS {
            let tip = match self.fetch() {
                Ok(tip) => tip,
                Err(said) => {
                    warn(self.unreachable(&said));
                    return Ok(imported);
                }
            };
            let (mut files, copied) = match &tip {
                Some(tip) => self.import(tip)?,
                None => (Files::new(), 0),
            };
            imported |= copied > 0;
            let missing: Vec<String> = store::names(&self.ledger)?
                .into_iter()
                .filter(|n| !files.contains_key(n))
                .collect();
            if missing.is_empty() {
                return Ok(imported);
            }
            let dir = store::entries_dir(&self.ledger);
            let paths: String = missing
                .iter()
                .map(|n| format!("{}\n", dir.join(n).display()))
                .collect();
            let hashes = self.run(
                &["hash-object", "-w", "--no-filters", "--stdin-paths"],
                paths.as_bytes(),
            )?;
            let hashes = String::from_utf8_lossy(&hashes);
            files.extend(missing.into_iter().zip(hashes.lines().map(str::to_owned)));
            let commit = self.commit(&files, tip.as_deref())?;
            #[cfg(test)]
            if let Some(mut hook) = self.before_push.take() {
                hook();
            }
            let refspec = format!("{commit}:{LEDGER_REF}");
            match self.try_run(
                &["push", "--quiet", "--no-verify", &self.remote, &refspec],
                b"",
            ) {
                Ok(_) => {
                    self.run(&["update-ref", LEDGER_REF, &commit], b"")?;
                    return Ok(imported);
                }
                Err(e) => said = e,
            }
        }
        warn(format!(
            "could not push the ledger to `{}` after {ATTEMPTS} attempts (git said: {}); the \
             entries stay in `.flow/ledger/` and the next deploy pushes them",
            self.remote,
            said.trim()
        ));
        Ok(imported)
    }

    fn unreachable(&self, said: &str) -> String {
        self.gave_up.set(true);
        format!(
            "could not reach the ledger's remote `{}` (git said: {}); using the local ledger, \
             whose new entries are pushed next time",
            self.remote,
            said.trim()
        )
    }

    /// Fetches the remote's ledger into the local mirror ref: its tip, `None` when the remote
    /// has no ledger yet, or what git said when the remote cannot be reached.
    fn fetch(&self) -> Result<Option<String>, String> {
        let refspec = format!("+{LEDGER_REF}:{LEDGER_REF}");
        let fetched = self.try_run(
            &[
                "fetch",
                "--quiet",
                "--no-tags",
                "--no-write-fetch-head",
                &self.remote,
                &refspec,
            ],
            b"",
        );
        match fetched {
            Ok(_) => {}
            Err(said) if said.contains("couldn't find remote ref") => return Ok(None),
            Err(said) => return Err(said),
        }
        let tip = self.try_run(&["rev-parse", "--verify", "--quiet", LEDGER_REF], b"")?;
        Ok(Some(String::from_utf8_lossy(&tip).trim().to_owned()))
    }

    /// Copies the entries of commit `tip` missing locally; returns all of `tip`'s entry files
    /// and how many were copied.
    fn import(&self, tip: &str) -> Result<(Files, usize), Error> {
        let listing = self.run(&["ls-tree", "-r", "-z", tip], b"")?;
        let mut files = Files::new();
        for item in listing.split(|b| *b == 0).filter(|i| !i.is_empty()) {
            let item = String::from_utf8_lossy(item);
            // "<mode> blob <object>\t<path>"
            let Some((meta, path)) = item.split_once('\t') else {
                continue;
            };
            let mut meta = meta.split(' ');
            let (Some(_mode), Some("blob"), Some(object)) = (meta.next(), meta.next(), meta.next())
            else {
                continue;
            };
            match path.strip_prefix("entries/") {
                Some(name) if store::is_entry_name(name) => {
                    files.insert(name.to_owned(), object.to_owned());
                }
                _ => {}
            }
        }
        let local: std::collections::HashSet<String> =
            store::names(&self.ledger)?.into_iter().collect();
        let missing: Vec<(String, String)> = files
            .iter()
            .filter(|(n, _)| !local.contains(*n))
            .map(|(n, o)| (n.clone(), o.clone()))
            .collect();
        if !missing.is_empty() {
            let input: String = missing.iter().map(|(_, o)| format!("{o}\n")).collect();
            let batch = self.run(&["cat-file", "--batch"], input.as_bytes())?;
            let blobs =
                split_batch(&batch).ok_or_else(|| self.error("cat-file: unexpected output"))?;
            if blobs.len() != missing.len() {
                return Err(self.error("cat-file: an entry blob is missing"));
            }
            for ((name, _), bytes) in missing.iter().zip(blobs) {
                store::write_file(&self.ledger, name, bytes)?;
            }
        }
        Ok((files, missing.len()))
    }

    /// A commit whose tree is `entries/` with `files`, on top of `parent`.
    fn commit(&self, files: &Files, parent: Option<&str>) -> Result<String, Error> {
        let listing: String = files
            .iter()
            .map(|(name, object)| format!("100644 blob {object}\t{name}\0"))
            .collect();
        let entries = self.run(&["mktree", "-z"], listing.as_bytes())?;
        let entries = String::from_utf8_lossy(&entries).trim().to_owned();
        let root = format!("040000 tree {entries}\tentries\0");
        let tree = self.run(&["mktree", "-z"], root.as_bytes())?;
        let tree = String::from_utf8_lossy(&tree).trim().to_owned();
        let message = format!("flow ledger: {} entries", files.len());
        let mut args = vec!["commit-tree", tree.as_str(), "-m", message.as_str()];
        if let Some(parent) = parent {
            args.extend(["-p", parent]);
        }
        let commit = self.run(&args, b"")?;
        Ok(String::from_utf8_lossy(&commit).trim().to_owned())
    }

    /// `git ARGS` with `input` on stdin: its stdout, or what it said on failure. A `fetch` or
    /// `push` that has not finished within [`NETWORK_TIMEOUT`] (a remote that never answers)
    /// is killed with its process group, and is a failure like an unreachable remote.
    fn try_run(&self, args: &[&str], input: &[u8]) -> Result<Vec<u8>, String> {
        use std::os::unix::process::CommandExt;
        let network = matches!(args.first(), Some(&"fetch" | &"push"));
        let mut child = git(&self.root)
            .args(args)
            .process_group(0)
            // The ledger's commits are flow's, whatever the user's git identity (CI has none).
            .env("GIT_AUTHOR_NAME", "flow")
            .env("GIT_AUTHOR_EMAIL", "flow@localhost")
            .env("GIT_COMMITTER_NAME", "flow")
            .env("GIT_COMMITTER_EMAIL", "flow@localhost")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run git: {e}"))?;
        let mut stdin = child.stdin.take().expect("piped");
        let input = input.to_vec();
        // Written from a thread: git may fill its stdout before reading all of its stdin.
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let (done, watched) = std::sync::mpsc::channel::<()>();
        let group = nix::unistd::Pid::from_raw(child.id() as i32);
        let watchdog = network.then(|| {
            std::thread::spawn(move || {
                let late = matches!(
                    watched.recv_timeout(NETWORK_TIMEOUT),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                );
                if late {
                    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
                }
                late
            })
        });
        let out = child
            .wait_with_output()
            .map_err(|e| format!("cannot run git: {e}"));
        let _ = done.send(());
        let late = watchdog.is_some_and(|w| w.join().unwrap_or(false));
        let _ = writer.join();
        if late {
            return Err(format!(
                "git {}: the remote did not answer within {}s",
                args[0],
                NETWORK_TIMEOUT.as_secs()
            ));
        }
        let out = out?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            let said = String::from_utf8_lossy(&out.stderr)
                .trim()
                .replace('\n', "; ");
            Err(format!("git {}: {said}", args[0]))
        }
    }

    /// [`Share::try_run`] for steps that only fail if the checkout is broken.
    fn run(&self, args: &[&str], input: &[u8]) -> Result<Vec<u8>, Error> {
        self.try_run(args, input).map_err(|said| self.error(&said))
    }

    fn error(&self, said: &str) -> Error {
        Error::Io {
            path: self.root.clone(),
            action: "share the deploy ledger through git in",
            error: said.to_owned(),
        }
    }
}

/// The contents of `git cat-file --batch`'s answers, in order; `None` for an object missing or
/// output that does not parse.
fn split_batch(mut out: &[u8]) -> Option<Vec<&[u8]>> {
    let mut blobs = Vec::new();
    while !out.is_empty() {
        let eol = out.iter().position(|b| *b == b'\n')?;
        let header = std::str::from_utf8(&out[..eol]).ok()?;
        let size: usize = header.rsplit(' ').next()?.parse().ok()?;
        let start = eol + 1;
        let end = start.checked_add(size)?;
        blobs.push(out.get(start..end)?);
        out = out.get(end + 1..)?;
    }
    Some(blobs)
}
