//! The attributes `attr(name, regex, x)` can test, and how each one renders as a string.
//!
//! Renderings (Bazel's, adapted to flow's attributes):
//! - strings as written, an absent string (`cmd`, `doc`) as the empty string;
//! - lists as `[a, b]` (`[]` when empty), labels in `deps` as `//pkg:name`;
//! - `env` as `{KEY=value, ...}`, its entries as `KEY=value`;
//! - `timeout` as seconds with an `s` (`90s`), empty when unset; `retries` as a number;
//! - `sandbox` and `cache` as `True` or `False`, as they are written in a BUILD file;
//! - `visibility` as the list of its rules, empty when the target uses the workspace default.
//!
//! A regex matches an attribute when it matches the whole rendering or, for lists and `env`, any
//! one element on its own (so `attr(tags, '^ci$', x)` finds targets tagged exactly `ci`).

use flow_rules::{Target, TASK_ATTRS};

/// Every attribute name `attr()` accepts (a task's attributes, a superset of a group's).
pub const ATTRIBUTES: &[&str] = TASK_ATTRS;

/// The canonical `&'static str` for `name`, if it is an attribute.
pub fn lookup(name: &str) -> Option<&'static str> {
    ATTRIBUTES.iter().copied().find(|a| *a == name)
}

/// The rendering of attribute `name` of `target` and, for collections, its elements.
pub fn render(target: &Target, name: &str) -> (String, Vec<String>) {
    let list = |items: Vec<String>| (format!("[{}]", items.join(", ")), items);
    let scalar = |s: String| (s, Vec::new());
    match name {
        "name" => scalar(target.label.name().to_owned()),
        "cmd" => scalar(target.cmd.clone().unwrap_or_default()),
        "doc" => scalar(target.doc.clone().unwrap_or_default()),
        "srcs" => list(target.srcs.clone()),
        "outs" => list(target.outs.clone()),
        "secrets" => list(target.secrets.clone()),
        "tools" => list(target.tools.clone()),
        "tags" => list(target.tags.clone()),
        "deps" => list(target.deps.iter().map(|d| d.to_string()).collect()),
        "visibility" => match &target.visibility {
            Some(rules) => list(rules.iter().map(|r| r.to_string()).collect()),
            None => scalar(String::new()),
        },
        "env" => {
            let items: Vec<String> = target.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            (format!("{{{}}}", items.join(", ")), items)
        }
        "timeout" => scalar(
            target
                .timeout
                .map(|d| format!("{}s", d.as_secs_f64()))
                .unwrap_or_default(),
        ),
        "retries" => scalar(target.retries.to_string()),
        "sandbox" => scalar(if target.sandbox { "True" } else { "False" }.to_owned()),
        "cache" => scalar(if target.cache { "True" } else { "False" }.to_owned()),
        other => unreachable!("attribute `{other}` passed `lookup` but has no rendering"),
    }
}

/// Whether `regex` matches attribute `name` of `target` (the whole rendering or one element).
pub fn matches(target: &Target, name: &str, regex: &regex::Regex) -> bool {
    let (whole, elements) = render(target, name);
    regex.is_match(&whole) || elements.iter().any(|e| regex.is_match(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_attribute_renders() {
        // `render` must know every name `lookup` accepts; this panics if one was forgotten.
        let target = crate::query::tests::workspace(&[
            (
                "a/BUILD",
                "task(name='x', cmd='make', srcs=['a.c', 'b.c'], env={'K': 'v', 'A': 'b'}, \
                 timeout='90s', retries=2, tags=['ci'], sandbox=True)",
            ),
            ("a/a.c", ""),
            ("a/b.c", ""),
        ])
        .targets()[0]
            .clone();
        let rendered: Vec<String> = ATTRIBUTES.iter().map(|a| render(&target, a).0).collect();
        assert_eq!(
            rendered,
            [
                "x",
                "make",
                "[a.c, b.c]",
                "[]",
                "[]",
                "{A=b, K=v}",
                "[]",
                "[]",
                "90s",
                "2",
                "[ci]",
                "",
                "True",
                "True",
                ""
            ]
        );
    }
}
