//! The checks of a `gate`: `coverage.percent >= 80`, `vulnerabilities.high <= 2`,
//! `licenses.denied == []`. Parsed and checked at analysis (a metric that does not exist is an
//! error at its string, with the metrics that do); evaluated by the engine over the typed reports
//! of the gate's dependencies (`engine/gates/`).
//!
//! A check is `KIND.METRIC OP VALUE`: KIND names a report kind (below), METRIC one of its
//! metrics (any name for `metrics`, a plain `metrics.json`), OP one of `>=`, `<=`, `>`, `<`,
//! `==`, `!=`, and VALUE a number, or `[]` for a list metric (`licenses.denied == []`).
//!
//! The gate's command, for its action key, is [`canonical`]: the checks as parsed (and the
//! denied licenses), with the version of the evaluator, so that changing a check, or what a
//! check means, runs the gate again.

use std::fmt;

/// A report kind, the files it is read from, and its metrics.
pub struct ReportKind {
    pub name: &'static str,
    pub read_from: &'static str,
    pub metrics: &'static [&'static str],
}

/// Every report kind a gate reads.
pub const REPORT_KINDS: &[ReportKind] = &[
    ReportKind {
        name: "coverage",
        read_from: "coverage.py JSON (`coverage json`, `pytest --cov-report json:FILE`)",
        metrics: &["percent", "statements", "covered", "missing"],
    },
    ReportKind {
        name: "tests",
        read_from: "JUnit XML",
        metrics: &[
            "total",
            "passed",
            "failed",
            "errors",
            "skipped",
            "pass_rate",
        ],
    },
    ReportKind {
        name: "vulnerabilities",
        read_from: "bandit JSON, or SARIF (by each result's `security-severity`, else its level)",
        metrics: &["critical", "high", "medium", "low", "total", "score"],
    },
    ReportKind {
        name: "findings",
        read_from: "SARIF (semgrep, ruff, ...): results by level",
        metrics: &["total", "error", "warning", "note"],
    },
    ReportKind {
        name: "lint",
        read_from: "ruff JSON (`ruff check --output-format json`)",
        metrics: &["violations", "fixable"],
    },
    ReportKind {
        name: "complexity",
        read_from: "radon cc JSON (`radon cc -j`)",
        metrics: &["max", "average", "blocks", "over_10"],
    },
    ReportKind {
        name: "maintainability",
        read_from: "radon mi JSON (`radon mi -j`)",
        metrics: &["min", "average", "files"],
    },
    ReportKind {
        name: "licenses",
        read_from: "pip-licenses JSON (`pip-licenses --format json`)",
        metrics: &["count", "denied", "unknown"],
    },
    ReportKind {
        name: "metrics",
        read_from: "a plain `metrics.json`: an object of names to numbers",
        metrics: &[],
    },
];

/// The metrics whose value is a list of names (compared with `[]`).
pub const LIST_METRICS: &[&str] = &["licenses.denied", "licenses.unknown"];

/// The version of what checks mean: part of every gate's key.
pub const EVALUATOR_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Ge,
    Le,
    Gt,
    Lt,
    Eq,
    Ne,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Ge => ">=",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Lt => "<",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }

    /// The operator written `text` (`>=`, ...), or None.
    pub fn parse(text: &str) -> Option<Op> {
        [Op::Ge, Op::Le, Op::Gt, Op::Lt, Op::Eq, Op::Ne]
            .into_iter()
            .find(|op| op.as_str() == text)
    }

    /// Whether `value OP threshold` holds.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Ge => value >= threshold,
            Op::Le => value <= threshold,
            Op::Gt => value > threshold,
            Op::Lt => value < threshold,
            Op::Eq => value == threshold,
            Op::Ne => value != threshold,
        }
    }
}

/// What a metric is compared with.
#[derive(Clone, Debug, PartialEq)]
pub enum Threshold {
    Number(f64),
    /// `[]`: the list metric is empty (`==`) or not (`!=`).
    EmptyList,
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Threshold::Number(n) => write!(f, "{}", number(*n)),
            Threshold::EmptyList => f.write_str("[]"),
        }
    }
}

/// `80`, `0.12345678`, `1e307`: a number exactly, in the fewest digits that read back as it
/// (the form a check is kept in, and a threshold shown); an exponent past 15 digits.
pub fn number(n: f64) -> String {
    // `-0` (an empty `Iterator::sum` of floats is -0.0) is shown as `0`.
    let n = n + 0.0;
    if n != 0.0 && (n.abs() >= 1e15 || n.abs() < 1e-6) {
        format!("{n:e}")
    } else {
        format!("{n}")
    }
}

/// `value` as a table shows it next to `threshold`: at most 4 decimals, more when fewer would
/// seem to contradict the verdict (79.996 is not shown as `80` under `>= 80`).
pub fn number_near(value: f64, op: Op, threshold: f64) -> String {
    let value = value + 0.0;
    if !value.is_finite() || value.abs() >= 1e15 {
        return number(value);
    }
    for decimals in [0, 1, 2, 4, 6, 9, 12] {
        let text = format!("{value:.decimals$}");
        let shown: f64 = text.parse().unwrap_or(value);
        if (shown == value || decimals >= 2)
            && op.holds(shown, threshold) == op.holds(value, threshold)
        {
            return trim_zeros(&text);
        }
    }
    number(value)
}

fn trim_zeros(text: &str) -> String {
    match text.contains('.') {
        true => text.trim_end_matches('0').trim_end_matches('.').to_owned(),
        false => text.to_owned(),
    }
}

/// One check of a gate.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    /// `coverage`.
    pub kind: String,
    /// `percent`.
    pub metric: String,
    pub op: Op,
    pub threshold: Threshold,
}

impl Check {
    /// `coverage.percent`.
    pub fn name(&self) -> String {
        format!("{}.{}", self.kind, self.metric)
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.name(), self.op.as_str(), self.threshold)
    }
}

/// Why a check is not one, with the byte range of the bad part in its text and a hint.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckError {
    pub message: String,
    pub start: usize,
    pub end: usize,
    pub help: Option<String>,
}

/// Parses `text` (`coverage.percent >= 80`).
pub fn parse_check(text: &str) -> Result<Check, CheckError> {
    let err = |message: String, start: usize, end: usize, help: Option<String>| CheckError {
        message,
        start,
        end,
        help,
    };
    // `=>`, `=<`, `=` and `<>` are not operators: say so, not "unknown metric `x =`".
    for (wrong, right) in [("=>", ">="), ("=<", "<="), ("<>", "!=")] {
        if let Some(at) = text.find(wrong) {
            return Err(err(
                format!("unknown operator `{wrong}`"),
                at,
                at + wrong.len(),
                Some(format!(
                    "did you mean `{right}`? OP is one of >=, <=, >, <, ==, !="
                )),
            ));
        }
    }
    let ops = [">=", "<=", "==", "!=", ">", "<"];
    let Some((at, op_text)) = ops
        .iter()
        .filter_map(|o| text.find(o).map(|i| (i, *o)))
        .min_by_key(|(i, o)| (*i, std::cmp::Reverse(o.len())))
    else {
        return Err(err(
            "a check is `KIND.METRIC OP VALUE`, with OP one of >=, <=, >, <, ==, !=".into(),
            0,
            text.len(),
            Some("for example `coverage.percent >= 80`".into()),
        ));
    };
    let op = Op::parse(op_text).unwrap_or(Op::Lt);
    let name = text[..at].trim();
    let name_start = text[..at].find(name).unwrap_or(0);
    let value = text[at + op_text.len()..].trim();
    let value_start = at + op_text.len() + text[at + op_text.len()..].find(value).unwrap_or(0);
    let Some((kind, metric)) = name.split_once('.') else {
        return Err(err(
            format!("`{name}` is not `KIND.METRIC`"),
            name_start,
            name_start + name.len(),
            Some(format!("report kinds: {}", kind_names())),
        ));
    };
    let Some(report) = REPORT_KINDS.iter().find(|k| k.name == kind) else {
        let help = match crate::suggest::closest(kind, REPORT_KINDS.iter().map(|k| k.name)) {
            Some(s) => format!("did you mean `{s}`? report kinds: {}", kind_names()),
            None => format!("report kinds: {}", kind_names()),
        };
        return Err(err(
            format!("unknown report kind `{kind}`"),
            name_start,
            name_start + kind.len(),
            Some(help),
        ));
    };
    let metric_start = name_start + kind.len() + 1;
    let metric_ok = if report.metrics.is_empty() {
        !metric.is_empty()
            && metric
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    } else {
        report.metrics.contains(&metric)
    };
    if !metric_ok {
        let known = report
            .metrics
            .iter()
            .map(|m| format!("`{kind}.{m}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let help = match crate::suggest::closest(metric, report.metrics.iter().copied()) {
            Some(s) => format!("did you mean `{kind}.{s}`? {kind} metrics: {known}"),
            None if report.metrics.is_empty() => {
                "a `metrics` name is a key of the metrics.json object (letters, digits, `_`, `-`, `.`)"
                    .to_owned()
            }
            None => format!("{kind} metrics: {known}"),
        };
        return Err(err(
            format!("unknown metric `{kind}.{metric}`"),
            metric_start,
            metric_start + metric.len(),
            Some(help),
        ));
    }
    let is_list = LIST_METRICS.contains(&name);
    let threshold = if value == "[]" {
        if !is_list {
            return Err(err(
                format!("`{name}` is a number; compare it with a number"),
                value_start,
                value_start + value.len(),
                None,
            ));
        }
        if !matches!(op, Op::Eq | Op::Ne) {
            return Err(err(
                format!("a list is compared with `[]` by `==` or `!=`, not `{op_text}`"),
                at,
                at + op_text.len(),
                None,
            ));
        }
        Threshold::EmptyList
    } else {
        match value.parse::<f64>() {
            Ok(n) if n.is_finite() && !is_list => Threshold::Number(n),
            Ok(_) if is_list => {
                return Err(err(
                    format!("`{name}` is a list of names; compare it with `[]`"),
                    value_start,
                    value_start + value.len(),
                    Some(format!("for example `{name} == []`")),
                ))
            }
            _ => {
                return Err(err(
                    format!("`{value}` is not a number"),
                    value_start,
                    value_start + value.len().max(1),
                    None,
                ))
            }
        }
    };
    Ok(Check {
        kind: kind.to_owned(),
        metric: metric.to_owned(),
        op,
        threshold,
    })
}

fn kind_names() -> String {
    REPORT_KINDS
        .iter()
        .map(|k| format!("`{}`", k.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The gate's command, for its action key: the evaluator's version, the checks as parsed and
/// the denied licenses, one a line.
pub fn canonical(checks: &[Check], licenses_denied: &[String]) -> String {
    let mut text = format!("flow gate v{EVALUATOR_VERSION}\n");
    for c in checks {
        text.push_str(&format!("check {c}\n"));
    }
    for l in licenses_denied {
        text.push_str(&format!("deny-license {l}\n"));
    }
    text
}

/// The checks and denied licenses of a gate's command ([`canonical`]); `None` for a command
/// that is not one.
pub fn from_canonical(text: &str) -> Option<(Vec<Check>, Vec<String>)> {
    let mut lines = text.lines();
    if lines.next()? != format!("flow gate v{EVALUATOR_VERSION}") {
        return None;
    }
    let mut checks = Vec::new();
    let mut denied = Vec::new();
    for line in lines {
        if let Some(c) = line.strip_prefix("check ") {
            checks.push(parse_check(c).ok()?);
        } else if let Some(l) = line.strip_prefix("deny-license ") {
            denied.push(l.to_owned());
        } else {
            return None;
        }
    }
    Some((checks, denied))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_parse_and_print_back() {
        for text in [
            "coverage.percent >= 80",
            "vulnerabilities.critical == 0",
            "vulnerabilities.high <= 2",
            "licenses.denied == []",
            "tests.pass_rate > 0.95",
            "metrics.p95_latency_ms < 250",
        ] {
            let c = parse_check(text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
            assert_eq!(c.to_string(), text);
        }
        let c = parse_check("  coverage.percent>=80.5 ").unwrap();
        assert_eq!((c.op, c.threshold), (Op::Ge, Threshold::Number(80.5)));
    }

    #[test]
    fn bad_checks_point_at_their_bad_part() {
        let e = parse_check("coverage.percnt >= 80").unwrap_err();
        assert_eq!(e.message, "unknown metric `coverage.percnt`");
        assert_eq!((e.start, e.end), (9, 15));
        assert!(e
            .help
            .unwrap()
            .starts_with("did you mean `coverage.percent`?"));
        let e = parse_check("covrage.percent >= 80").unwrap_err();
        assert_eq!((e.start, e.end), (0, 7));
        assert!(parse_check("licenses.denied >= []").is_err());
        assert!(parse_check("licenses.denied == 0").is_err());
        assert!(parse_check("coverage.percent == []").is_err());
        assert!(parse_check("coverage.percent >= eighty").is_err());
        assert!(parse_check("coverage.percent").is_err());
    }

    #[test]
    fn numbers_are_kept_exactly_and_never_shown_against_their_verdict() {
        // Thresholds as written, however small or large (adversarial run: `0.12345678` was
        // shown as 0.12, and 1e307 overflowed a rounding and broke the gate).
        for text in [
            "metrics.x >= 0.12345678",
            "metrics.x < 1e307",
            "metrics.x > -1.7976931348623157e308",
        ] {
            let c = parse_check(text).unwrap();
            assert_eq!(c.to_string(), text);
            assert_eq!(
                from_canonical(&canonical(std::slice::from_ref(&c), &[]))
                    .unwrap()
                    .0,
                vec![c]
            );
        }
        assert_eq!(number_near(79.996, Op::Ge, 80.0), "79.996");
        assert_eq!(number_near(83.33333333333333, Op::Ge, 80.0), "83.33");
        assert_eq!(number_near(0.999, Op::Eq, 1.0), "0.999");
        assert_eq!(number_near(0.004, Op::Gt, 0.0), "0.004");
        // An empty sum of floats is -0.0.
        let empty: f64 = Vec::<f64>::new().into_iter().sum();
        assert_eq!(number_near(empty, Op::Eq, 0.0), "0");
        assert_eq!(number(empty), "0");
        assert_eq!(number_near(3.0, Op::Le, 2.0), "3");
    }

    #[test]
    fn the_canonical_command_round_trips() {
        let checks = vec![
            parse_check("coverage.percent >= 80").unwrap(),
            parse_check("licenses.denied == []").unwrap(),
        ];
        let text = canonical(&checks, &["GPL-3.0".to_owned()]);
        assert_eq!(
            from_canonical(&text),
            Some((checks, vec!["GPL-3.0".to_owned()]))
        );
    }
}
