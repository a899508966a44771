//! The single findings of the reports a build wrote (SARIF results, bandit issues, ruff
//! violations), for `flow report --base FILE`: the findings that are new against a base report
//! (a `flow report --json` of the base branch's build). A finding is the same in both when its
//! target, rule, file and message are: line numbers move with every edit above them, so they
//! are shown but not compared.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::gates::reports::clean;

/// One finding of one report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// The target whose output holds the report.
    pub label: String,
    /// `B324`, `subprocess-shell-true`, `F841`.
    pub rule: String,
    pub file: String,
    pub line: u64,
    /// `high`, `error`, ... as the report says it.
    pub severity: String,
    pub message: String,
}

impl Item {
    fn identity(&self) -> (&str, &str, &str, &str) {
        (&self.label, &self.rule, &self.file, &self.message)
    }
}

/// The findings in a report's bytes; empty for a file of another kind.
pub fn items(label: &str, bytes: &[u8]) -> Vec<Item> {
    let Ok(json) = serde_json::from_slice::<Json>(bytes) else {
        return Vec::new();
    };
    let item = |rule: &Json, file: &Json, line: &Json, severity: &str, message: &Json| Item {
        label: label.to_owned(),
        rule: clean(rule.as_str().unwrap_or("")),
        file: clean(file.as_str().unwrap_or("")),
        line: line.as_u64().unwrap_or(0),
        severity: clean(severity),
        message: clean(message.as_str().unwrap_or("")),
    };
    if let (Some(runs), Some(_)) = (json["runs"].as_array(), json.get("version")) {
        return runs
            .iter()
            .flat_map(|run| {
                let rules = &run["tool"]["driver"]["rules"];
                run["results"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(move |r| (r, rules))
            })
            .map(|(r, rules)| {
                let place = &r["locations"][0]["physicalLocation"];
                // A rule named by index into the driver's rules (CodeQL), else by id.
                let by_index = r["ruleIndex"]
                    .as_u64()
                    .and_then(|i| rules.get(usize::try_from(i).ok()?))
                    .map(|rule| &rule["id"]);
                item(
                    by_index.unwrap_or(&r["ruleId"]),
                    &place["artifactLocation"]["uri"],
                    &place["region"]["startLine"],
                    r["level"].as_str().unwrap_or("warning"),
                    &r["message"]["text"],
                )
            })
            .collect();
    }
    if let (Some(results), Some(_)) = (json["results"].as_array(), json.get("metrics")) {
        return results
            .iter()
            .map(|r| {
                let severity = r["issue_severity"].as_str().unwrap_or("").to_lowercase();
                item(
                    &r["test_id"],
                    &r["filename"],
                    &r["line_number"],
                    &severity,
                    &r["issue_text"],
                )
            })
            .collect();
    }
    if let Some(list) = json.as_array() {
        return list
            .iter()
            .filter(|v| v.get("code").is_some() && v.get("filename").is_some())
            .map(|v| {
                item(
                    &v["code"],
                    &v["filename"],
                    &v["location"]["row"],
                    "lint",
                    &v["message"],
                )
            })
            .collect();
    }
    Vec::new()
}

/// The findings of `now` that `base` does not have, counting repeats: two identical findings
/// where the base had one leave one new.
pub fn new_against(now: &[Item], base: &[Item]) -> Vec<Item> {
    let mut known: HashMap<(&str, &str, &str, &str), usize> = HashMap::new();
    for b in base {
        *known.entry(b.identity()).or_default() += 1;
    }
    now.iter()
        .filter(|n| match known.get_mut(&n.identity()) {
            Some(left) if *left > 0 => {
                *left -= 1;
                false
            }
            _ => true,
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gates");
        std::fs::read(dir.join(name)).unwrap()
    }

    #[test]
    fn items_of_each_report_kind() {
        let bandit = items("//p:scan", &fixture("bandit.json"));
        assert_eq!(bandit.len(), 7);
        assert!(bandit
            .iter()
            .any(|i| i.rule == "B324" && i.severity == "high" && i.line > 0));
        let sarif = items("//p:ruff", &fixture("ruff.sarif"));
        assert_eq!(sarif.len(), 5);
        assert!(sarif
            .iter()
            .all(|i| !i.file.is_empty() && i.severity == "error"));
        let ruff = items("//p:lint", &fixture("ruff.json"));
        assert!(!ruff.is_empty() && ruff.iter().all(|i| i.severity == "lint"));
        assert!(items("//p:cov", &fixture("coverage.json")).is_empty());
        assert!(items("//p:x", b"not json").is_empty());
    }

    #[test]
    fn new_findings_ignore_lines_and_count_repeats() {
        let base = items("//p:scan", &fixture("bandit.json"));
        let mut now = base.clone();
        // Moved down by an edit: not new.
        for i in &mut now {
            i.line += 3;
        }
        assert!(new_against(&now, &base).is_empty());
        // One more of an existing finding, and one of a new rule.
        let mut extra = base[0].clone();
        extra.line = 999;
        now.push(extra.clone());
        let mut other = base[0].clone();
        other.rule = "B999".into();
        now.push(other.clone());
        let new = new_against(&now, &base);
        assert_eq!(new.len(), 2, "{new:?}");
        assert_eq!(new[1], other);
    }
}
