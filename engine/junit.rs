//! `flow build --junit FILE`: one JUnit XML report for the whole build, for CI tools that show
//! test results (GitHub, GitLab, Jenkins). Each action is a `<testcase>` of one `<testsuite
//! name="flow">`, named by its label (`classname` its package):
//! - ran, restored from the cache or carried over: passed (`time` is how long it ran, 0 when
//!   reused), with `<system-out>` saying which;
//! - failed: `<failure message="WHY">` holding the tail of its log;
//! - skipped (a dependency failed): `<skipped message="WHY"/>`;
//! - flaky: passed, `<system-out>` saying on which attempt.
//!
//! Test cases are sorted by label. The file is written when the build ends (through a temp file and a rename: a reader never
//! sees half a report).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Writer;

/// How one action ended, for the report.
enum Verdict {
    Passed(String),
    Failed { why: String, log: String },
    Skipped(String),
}

struct Case {
    label: String,
    seconds: f64,
    verdict: Verdict,
}

/// The report being collected; written by [`JunitReport::write`].
pub struct JunitReport {
    path: PathBuf,
    cases: Vec<Case>,
}

impl JunitReport {
    pub fn new(path: &Path) -> JunitReport {
        JunitReport {
            path: path.to_path_buf(),
            cases: Vec::new(),
        }
    }

    pub fn passed(&mut self, label: &str, took: Duration, how: &str) {
        self.cases.push(Case {
            label: label.to_owned(),
            seconds: took.as_secs_f64(),
            verdict: Verdict::Passed(xml_text(how)),
        });
    }

    pub fn failed(&mut self, label: &str, why: &str, log: &str) {
        self.cases.push(Case {
            label: label.to_owned(),
            seconds: 0.0,
            verdict: Verdict::Failed {
                why: xml_text(why),
                log: xml_text(log),
            },
        });
    }

    pub fn skipped(&mut self, label: &str, why: &str) {
        self.cases.push(Case {
            label: label.to_owned(),
            seconds: 0.0,
            verdict: Verdict::Skipped(xml_text(why)),
        });
    }

    /// Writes the report (a temp file beside it, then a rename).
    pub fn write(&self, took: Duration) -> std::io::Result<()> {
        let xml = self.xml(took).map_err(std::io::Error::other)?;
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty());
        let dir = dir.unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(&xml)?;
        tmp.persist(&self.path).map_err(|e| e.error)?;
        Ok(())
    }

    fn xml(&self, took: Duration) -> Result<Vec<u8>, quick_xml::Error> {
        let count = |f: fn(&Verdict) -> bool| self.cases.iter().filter(|c| f(&c.verdict)).count();
        let failures = count(|v| matches!(v, Verdict::Failed { .. }));
        let skipped = count(|v| matches!(v, Verdict::Skipped(_)));
        let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
        w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
        let (tests, secs) = (
            self.cases.len().to_string(),
            format!("{:.3}", took.as_secs_f64()),
        );
        let counts = [
            ("name", "flow"),
            ("tests", tests.as_str()),
            ("failures", &failures.to_string()),
            ("errors", "0"),
            ("skipped", &skipped.to_string()),
            ("time", secs.as_str()),
        ];
        let mut suites = BytesStart::new("testsuites");
        suites.extend_attributes(counts);
        w.write_event(Event::Start(suites))?;
        let mut suite = BytesStart::new("testsuite");
        suite.extend_attributes(counts);
        w.write_event(Event::Start(suite))?;
        // By label: the same build gives the same file, whatever the order actions ended in.
        let mut cases: Vec<&Case> = self.cases.iter().collect();
        cases.sort_by(|a, b| a.label.cmp(&b.label));
        for case in cases {
            self.write_case(&mut w, case)?;
        }
        w.write_event(Event::End(BytesEnd::new("testsuite")))?;
        w.write_event(Event::End(BytesEnd::new("testsuites")))?;
        let mut out = w.into_inner();
        out.push(b'\n');
        Ok(out)
    }

    fn write_case(&self, w: &mut Writer<Vec<u8>>, case: &Case) -> Result<(), quick_xml::Error> {
        let package = case
            .label
            .trim_start_matches("//")
            .split(':')
            .next()
            .unwrap_or("");
        let mut start = BytesStart::new("testcase");
        let time = format!("{:.3}", case.seconds);
        start.extend_attributes([
            ("name", case.label.as_str()),
            ("classname", if package.is_empty() { "//" } else { package }),
            ("time", time.as_str()),
        ]);
        w.write_event(Event::Start(start))?;
        match &case.verdict {
            Verdict::Passed(how) => {
                w.write_event(Event::Start(BytesStart::new("system-out")))?;
                w.write_event(Event::Text(BytesText::new(how)))?;
                w.write_event(Event::End(BytesEnd::new("system-out")))?;
            }
            Verdict::Failed { why, log } => {
                let mut failure = BytesStart::new("failure");
                failure.push_attribute(("message", why.as_str()));
                w.write_event(Event::Start(failure))?;
                w.write_event(Event::Text(BytesText::new(log)))?;
                w.write_event(Event::End(BytesEnd::new("failure")))?;
            }
            Verdict::Skipped(why) => {
                let mut skipped = BytesStart::new("skipped");
                skipped.push_attribute(("message", why.as_str()));
                w.write_event(Event::Empty(skipped))?;
            }
        }
        w.write_event(Event::End(BytesEnd::new("testcase")))?;
        Ok(())
    }
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
