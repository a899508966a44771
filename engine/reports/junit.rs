//! `flow build --junit FILE`: one JUnit XML report for the whole build, for CI tools that show
//! test results (GitHub, GitLab, Jenkins). Each action is a `<testcase>` of the `<testsuite
//! name="flow">`, named by its label (`classname` its package):
//! - ran, restored from the cache or carried over: passed (`time` is how long it ran, 0 when
//!   reused), with `<system-out>` saying which;
//! - failed: `<failure message="WHY">` holding the tail of its log;
//! - skipped (a dependency failed): `<skipped message="WHY"/>`;
//! - flaky: passed, `<system-out>` saying on which attempt.
//!
//! Then, for each action whose declared outputs include JUnit XML (a `py_test`'s `junit.xml`,
//! kept from a failed run too), one `<testsuite name="LABEL">` per suite of that file, holding
//! its test cases as they were (name, classname, time, failure, error or skipped) under their
//! target, with `file` and `line` where flow placed a failure in the workspace.
//!
//! Suites and test cases are sorted by label: the same build gives the same file, whatever the
//! order actions ended in.

use std::time::Duration;

use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Writer;

use super::found::{CaseResult, Found};
use super::{Outcome, Record};

/// Lines of a failed action's log in its `<failure>`.
const LOG_LINES: usize = 200;

/// One test case as written.
struct Case {
    name: String,
    classname: String,
    seconds: f64,
    verdict: Verdict,
    at: Option<(String, u32)>,
}

enum Verdict {
    Passed(Option<String>),
    Failed { why: String, log: String },
    Error { why: String, log: String },
    Skipped(String),
}

struct Suite {
    name: String,
    cases: Vec<Case>,
}

/// The report, built from the build's records and the JUnit outputs found.
pub struct JunitReport {
    suites: Vec<Suite>,
}

impl JunitReport {
    /// `gates`: each gate's table, a suite with a test case per check.
    pub fn new(records: &[&Record], found: &Found, gates: &[super::gates::Table]) -> JunitReport {
        let mut actions: Vec<Case> = records.iter().map(|r| action_case(r)).collect();
        actions.sort_by(|a, b| a.name.cmp(&b.name));
        let mut suites = vec![Suite {
            name: "flow".into(),
            cases: actions,
        }];
        for (label, found) in &found.suites {
            for s in found {
                let cases = s.cases.iter().map(|c| Case {
                    name: xml_text(&c.name),
                    classname: xml_text(&c.classname),
                    seconds: c.time,
                    at: c.at.clone(),
                    verdict: match &c.result {
                        CaseResult::Passed => Verdict::Passed(None),
                        CaseResult::Failed { message, text } => Verdict::Failed {
                            why: xml_text(message),
                            log: xml_text(text),
                        },
                        CaseResult::Error { message, text } => Verdict::Error {
                            why: xml_text(message),
                            log: xml_text(text),
                        },
                        CaseResult::Skipped { message } => Verdict::Skipped(xml_text(message)),
                    },
                });
                let name = if s.name.is_empty() || found.len() == 1 {
                    label.clone()
                } else {
                    format!("{label} {}", s.name)
                };
                suites.push(Suite {
                    name: xml_text(&name),
                    cases: cases.collect(),
                });
            }
        }
        for g in gates {
            let cases = g.checks.iter().map(|c| {
                let value = c.shown();
                Case {
                    name: xml_text(&format!("{} {} {}", c.metric, c.op, c.threshold)),
                    classname: xml_text(&g.gate),
                    seconds: 0.0,
                    at: None,
                    // A check with nothing to read is an error of its own, with its own
                    // message (the gate's errors start with the check's metric).
                    verdict: match (c.passed, &c.value) {
                        (true, _) => Verdict::Passed(Some(xml_text(&format!("value {value}")))),
                        (false, Some(_)) => Verdict::Failed {
                            why: xml_text(&format!(
                                "{} is {value}, not {} {}",
                                c.metric, c.op, c.threshold
                            )),
                            log: String::new(),
                        },
                        (false, None) => {
                            let own = format!("`{}`:", c.metric);
                            let why: Vec<&str> = g
                                .errors
                                .iter()
                                .filter(|e| e.starts_with(&own))
                                .map(String::as_str)
                                .collect();
                            Verdict::Error {
                                why: xml_text(&format!("{} could not be evaluated", c.metric)),
                                log: xml_text(&why.join("\n")),
                            }
                        }
                    },
                }
            });
            suites.push(Suite {
                name: xml_text(&format!("{} (gate)", g.gate)),
                cases: cases.collect(),
            });
        }
        JunitReport { suites }
    }

    pub fn xml(&self, took: Duration) -> Vec<u8> {
        // Writing to memory fails only on a bug; an empty report then says so.
        self.try_xml(took)
            .unwrap_or_else(|e| format!("<!-- flow: {e} -->\n").into_bytes())
    }

    fn try_xml(&self, took: Duration) -> std::io::Result<Vec<u8>> {
        let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
        w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
        let all: Vec<&Case> = self.suites.iter().flat_map(|s| &s.cases).collect();
        let attrs = counts("flow", &all, took.as_secs_f64());
        let mut suites = BytesStart::new("testsuites");
        suites.extend_attributes(attrs.iter().map(pair));
        w.write_event(Event::Start(suites))?;
        for s in &self.suites {
            let cases: Vec<&Case> = s.cases.iter().collect();
            let secs = if s.name == "flow" {
                took.as_secs_f64()
            } else {
                // (A fold from +0.0: an empty `sum()` of floats is -0.0.)
                cases.iter().fold(0.0, |a, c| a + c.seconds)
            };
            let attrs = counts(&s.name, &cases, secs);
            let mut suite = BytesStart::new("testsuite");
            suite.extend_attributes(attrs.iter().map(pair));
            w.write_event(Event::Start(suite))?;
            for case in cases {
                write_case(&mut w, case)?;
            }
            w.write_event(Event::End(BytesEnd::new("testsuite")))?;
        }
        w.write_event(Event::End(BytesEnd::new("testsuites")))?;
        let mut out = w.into_inner();
        out.push(b'\n');
        Ok(out)
    }
}

fn pair<'a>(p: &'a (&'static str, String)) -> (&'a str, &'a str) {
    (p.0, p.1.as_str())
}

/// The attributes of a suite: its name and counts.
fn counts(name: &str, cases: &[&Case], secs: f64) -> Vec<(&'static str, String)> {
    let count = |f: fn(&Verdict) -> bool| cases.iter().filter(|c| f(&c.verdict)).count();
    vec![
        ("name", name.to_owned()),
        ("tests", cases.len().to_string()),
        (
            "failures",
            count(|v| matches!(v, Verdict::Failed { .. })).to_string(),
        ),
        (
            "errors",
            count(|v| matches!(v, Verdict::Error { .. })).to_string(),
        ),
        (
            "skipped",
            count(|v| matches!(v, Verdict::Skipped(_))).to_string(),
        ),
        ("time", format!("{secs:.3}")),
    ]
}

/// An action as a test case.
fn action_case(r: &Record) -> Case {
    let verdict = match &r.outcome {
        Outcome::Ran => Verdict::Passed(Some("ran".into())),
        Outcome::Cached => Verdict::Passed(Some("cached: its inputs did not change".into())),
        Outcome::Flaky { attempts } => {
            Verdict::Passed(Some(format!("flaky: passed on attempt {attempts}")))
        }
        Outcome::Effect { tag } => Verdict::Passed(Some(tag.clone())),
        Outcome::Failed { why } => Verdict::Failed {
            why: xml_text(why),
            log: xml_text(&super::tail(&r.log, LOG_LINES).1.join("\n")),
        },
        Outcome::Skipped { why } => Verdict::Skipped(xml_text(why)),
        // Quarantined: its failure is known and does not count; shown as skipped, with why.
        Outcome::Quarantined { why } => {
            Verdict::Skipped(xml_text(&format!("quarantined (failed: {why})")))
        }
    };
    let package = r.label.trim_start_matches("//").split(':').next();
    Case {
        name: r.label.clone(),
        classname: match package {
            Some(p) if !p.is_empty() => p.to_owned(),
            _ => "//".to_owned(),
        },
        seconds: r.took.as_secs_f64(),
        verdict,
        at: None,
    }
}

fn write_case(w: &mut Writer<Vec<u8>>, case: &Case) -> std::io::Result<()> {
    let mut start = BytesStart::new("testcase");
    let time = format!("{:.3}", case.seconds);
    start.extend_attributes([
        ("name", case.name.as_str()),
        ("classname", case.classname.as_str()),
        ("time", time.as_str()),
    ]);
    let line;
    if let Some((file, l)) = &case.at {
        line = l.to_string();
        start.extend_attributes([("file", file.as_str()), ("line", line.as_str())]);
    }
    let text = |w: &mut Writer<Vec<u8>>, tag: &str, attrs: Option<&str>, body: &str| {
        let mut e = BytesStart::new(tag);
        if let Some(m) = attrs {
            e.push_attribute(("message", m));
        }
        if body.is_empty() {
            return w.write_event(Event::Empty(e));
        }
        w.write_event(Event::Start(e))?;
        w.write_event(Event::Text(BytesText::new(body)))?;
        w.write_event(Event::End(BytesEnd::new(tag)))
    };
    match &case.verdict {
        Verdict::Passed(None) => return w.write_event(Event::Empty(start)),
        Verdict::Passed(Some(how)) => {
            w.write_event(Event::Start(start))?;
            text(w, "system-out", None, how)?;
        }
        Verdict::Failed { why, log } => {
            w.write_event(Event::Start(start))?;
            text(w, "failure", Some(why), log)?;
        }
        Verdict::Error { why, log } => {
            w.write_event(Event::Start(start))?;
            text(w, "error", Some(why), log)?;
        }
        Verdict::Skipped(why) => {
            w.write_event(Event::Start(start))?;
            text(w, "skipped", Some(why), "")?;
        }
    }
    w.write_event(Event::End(BytesEnd::new("testcase")))
}

/// `text` without the characters XML 1.0 cannot hold even escaped (the control characters but
/// tab, newline and carriage return: a colored log's escape sequences), each shown as `\u{..}`.
fn xml_text(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => c.to_string(),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {
                c.escape_unicode().to_string()
            }
            c => c.to_string(),
        })
        .collect()
}
