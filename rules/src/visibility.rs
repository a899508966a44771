//! `Visibility`: which packages may depend on a target. This is how a hexagonal monorepo keeps its
//! domain boundaries: `//src/packages/billing:core` visible to `//src/packages/billing/...` only.
//!
//! Forms: `//visibility:public`, `//visibility:private` (the target's own package only),
//! `//a/b:__pkg__` or `//a/b` (exactly that package), `//a/b/...` or `//a/b:__subpackages__`
//! (that package and everything below). A target's own package always sees it.

use std::fmt;

use crate::label::{check_package, LabelError, LabelErrorKind};
use crate::pattern::package_is_under;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum VisibilityRule {
    Public,
    Private,
    Package(String),
    Subpackages(String),
}

impl VisibilityRule {
    pub fn parse(input: &str) -> Result<Self, LabelError> {
        let err = |offset: usize, kind: LabelErrorKind| LabelError {
            input: input.to_owned(),
            offset,
            kind,
        };
        match input {
            "//visibility:public" => return Ok(VisibilityRule::Public),
            "//visibility:private" => return Ok(VisibilityRule::Private),
            _ => {}
        }
        let Some(rest) = input.strip_prefix("//") else {
            return Err(err(0, LabelErrorKind::NotALabel));
        };
        let (package, recursive) = if rest == "..." {
            ("", true)
        } else if let Some(p) = rest.strip_suffix("/...") {
            (p, true)
        } else if let Some(p) = rest.strip_suffix(":__subpackages__") {
            (p, true)
        } else if let Some(p) = rest.strip_suffix(":__pkg__") {
            (p, false)
        } else {
            (rest, false)
        };
        if let Some(colon) = package.find(':') {
            return Err(err(2 + colon, LabelErrorKind::VisibilityNamesTarget));
        }
        check_package(package).map_err(|(o, k)| err(2 + o, k))?;
        Ok(if recursive {
            VisibilityRule::Subpackages(package.to_owned())
        } else {
            VisibilityRule::Package(package.to_owned())
        })
    }

    /// Whether a target in `owner` with this rule may be used by a target in `consumer`.
    pub fn allows(&self, owner: &str, consumer: &str) -> bool {
        owner == consumer
            || match self {
                VisibilityRule::Public => true,
                VisibilityRule::Private => false,
                VisibilityRule::Package(p) => p == consumer,
                VisibilityRule::Subpackages(p) => package_is_under(consumer, p),
            }
    }
}

impl fmt::Display for VisibilityRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VisibilityRule::Public => write!(f, "//visibility:public"),
            VisibilityRule::Private => write!(f, "//visibility:private"),
            VisibilityRule::Package(p) => write!(f, "//{p}:__pkg__"),
            VisibilityRule::Subpackages(p) if p.is_empty() => write!(f, "//..."),
            VisibilityRule::Subpackages(p) => write!(f, "//{p}/..."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_allow_what_they_say() {
        let v = |s: &str| VisibilityRule::parse(s).unwrap();
        assert!(v("//visibility:public").allows("a", "b"));
        assert!(!v("//visibility:private").allows("a", "b"));
        assert!(v("//visibility:private").allows("a", "a"));
        assert!(v("//src/billing/...").allows("x", "src/billing/api"));
        assert!(v("//src/billing/...").allows("x", "src/billing"));
        assert!(!v("//src/billing/...").allows("x", "src/billingx"));
        assert!(v("//src/billing").allows("x", "src/billing"));
        assert!(!v("//src/billing:__pkg__").allows("x", "src/billing/api"));
        assert!(v("//src:__subpackages__").allows("x", "src/a/b"));
        assert!(VisibilityRule::parse("//a/../b").is_err());
    }
}
