//! `flow init [DIR]`: writes a commented `flow.toml` so that DIR becomes a workspace root.

use std::path::Path;

use crate::config::{CONFIG_FILE, TEMPLATE};
use crate::error::Error;

pub fn run(dir: &Path) -> Result<i32, Error> {
    let path = dir.join(CONFIG_FILE);
    if path.exists() {
        return Err(Error::AlreadyInitialized { path });
    }
    std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(&path, TEMPLATE))
        .map_err(|e| Error::Io {
            path: path.clone(),
            action: "write",
            error: e.to_string(),
        })?;
    eprintln!(
        "created `{}`; declare targets in `BUILD` files next to your code",
        path.display()
    );
    Ok(0)
}
