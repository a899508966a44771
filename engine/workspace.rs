//! Finding the workspace: the nearest ancestor of the starting directory (the current directory,
//! or `-C DIR`) that holds a `flow.toml`.

use std::path::{Path, PathBuf};

use crate::config::{Config, CONFIG_FILE};
use crate::error::Error;

/// A workspace root and its configuration.
#[derive(Debug, Clone)]
pub struct Workspace {
    pub root: PathBuf,
    pub config: Config,
}

impl Workspace {
    /// Walks up from `start` to the first directory holding `flow.toml` and loads it.
    pub fn discover(start: &Path) -> Result<Workspace, Error> {
        let start = std::fs::canonicalize(start).map_err(|e| Error::Io {
            path: start.to_path_buf(),
            action: "open directory",
            error: e.to_string(),
        })?;
        let mut dir = start.as_path();
        loop {
            let candidate = dir.join(CONFIG_FILE);
            // Any kind of file by that name marks the root: one that cannot be read as a
            // configuration (a FIFO, a device, a directory) is an error there, not a reason to
            // walk on to a parent workspace.
            if candidate.symlink_metadata().is_ok() {
                let display = display_path(&candidate);
                let config = Config::load(&candidate, &display)?;
                return Ok(Workspace {
                    root: dir.to_path_buf(),
                    config,
                });
            }
            match dir.parent() {
                Some(parent) => dir = parent,
                None => return Err(Error::NoWorkspace { start }),
            }
        }
    }

    /// The package path of directory `dir` (`src/app`; `""` at the root or outside): what
    /// relative patterns (`:name`, `...`) are relative to.
    pub fn package_of(&self, dir: &Path) -> String {
        let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        dir.strip_prefix(&self.root)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// `path` relative to the current directory when it is below it, else absolute.
pub fn display_path(path: &Path) -> String {
    let cwd = std::env::current_dir()
        .ok()
        .and_then(|c| std::fs::canonicalize(c).ok());
    match cwd.as_deref().and_then(|c| path.strip_prefix(c).ok()) {
        Some(rel) if !rel.as_os_str().is_empty() => rel.display().to_string(),
        _ => path.display().to_string(),
    }
}
