//! `ModuleId`: which `.star` file a `load()` names, resolved from the label written in the load.
//!
//! `load("//tools:defs.star", ...)` reads `tools/defs.star` in the workspace;
//! `load(":defs.star", ...)` is relative to the loading file's directory;
//! `load("@flow//rules:python.star", ...)` reads the prelude embedded in the binary (and `:x.star`
//! inside the prelude stays in the prelude).

use std::fmt;

use crate::label::check_name;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ModuleId {
    /// A workspace-relative path such as `tools/defs.star`.
    Workspace(String),
    /// A path inside the embedded prelude such as `rules/python.star`.
    Prelude(String),
}

impl ModuleId {
    /// The name used in diagnostics: a workspace-relative path (so editors can jump to it), or
    /// `@flow//rules:python.star` for the prelude.
    pub fn display_path(&self) -> String {
        match self {
            ModuleId::Workspace(p) => p.clone(),
            ModuleId::Prelude(p) => {
                let (dir, file) = p.rsplit_once('/').unwrap_or(("", p));
                format!("@flow//{dir}:{file}")
            }
        }
    }

    fn dir(&self) -> &str {
        let p = match self {
            ModuleId::Workspace(p) | ModuleId::Prelude(p) => p,
        };
        p.rsplit_once('/').map_or("", |(d, _)| d)
    }

    /// Resolves the string of a `load()` written in a file whose module is `from` (or, for a
    /// BUILD file, `None` with `package` its package).
    pub fn resolve(text: &str, from: Option<&ModuleId>, package: &str) -> Result<ModuleId, String> {
        let (prelude, rest) = if let Some(rest) = text.strip_prefix("@flow//") {
            (true, Some(rest))
        } else if let Some(rest) = text.strip_prefix('@') {
            let repo = rest.split("//").next().unwrap_or("");
            return Err(format!(
                "unknown repository `@{repo}`; only `@flow` (the embedded prelude) exists"
            ));
        } else {
            (
                matches!(from, Some(ModuleId::Prelude(_))),
                text.strip_prefix("//"),
            )
        };
        let (dir, file) = match rest {
            Some(rest) => match rest.split_once(':') {
                Some((dir, file)) => (dir.to_owned(), file),
                None => {
                    return Err(format!(
                        "a load label names a file: write `//{}:FILE.star`",
                        rest.trim_end_matches(".star")
                    ))
                }
            },
            None => match text.strip_prefix(':') {
                Some(file) => (from.map_or(package, |m| m.dir()).to_owned(), file),
                None => return Err(
                    "a load label starts with `//`, `:` or `@flow//` (as in `//tools:defs.star`)"
                        .into(),
                ),
            },
        };
        crate::label::check_package(&dir).map_err(|(_, k)| k.to_string())?;
        check_name(file).map_err(|(_, k)| k.to_string())?;
        if !file.ends_with(".star") {
            return Err("only `.star` files can be loaded".into());
        }
        let path = if dir.is_empty() {
            file.to_owned()
        } else {
            format!("{dir}/{file}")
        };
        Ok(if prelude {
            ModuleId::Prelude(path)
        } else {
            ModuleId::Workspace(path)
        })
    }
}

impl fmt::Display for ModuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModuleId::Workspace(p) => {
                let (dir, file) = p.rsplit_once('/').unwrap_or(("", p));
                write!(f, "//{dir}:{file}")
            }
            ModuleId::Prelude(_) => write!(f, "{}", self.display_path()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_every_form() {
        let w = |s: &str| ModuleId::Workspace(s.into());
        assert_eq!(
            ModuleId::resolve("//tools:defs.star", None, "a").unwrap(),
            w("tools/defs.star")
        );
        assert_eq!(
            ModuleId::resolve(":defs.star", None, "a/b").unwrap(),
            w("a/b/defs.star")
        );
        assert_eq!(
            ModuleId::resolve(
                ":util.star",
                Some(&ModuleId::Prelude("rules/python.star".into())),
                ""
            )
            .unwrap(),
            ModuleId::Prelude("rules/util.star".into())
        );
        assert_eq!(
            ModuleId::resolve("@flow//rules:python.star", None, "")
                .unwrap()
                .to_string(),
            "@flow//rules:python.star"
        );
        assert!(ModuleId::resolve("//tools", None, "").is_err());
        assert!(ModuleId::resolve("//tools:x.bzl", None, "").is_err());
        assert!(ModuleId::resolve("//../x:y.star", None, "").is_err());
        assert!(ModuleId::resolve("@other//x:y.star", None, "").is_err());
    }
}
