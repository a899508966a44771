//! Reading a JUnit XML file (an action's own test report): its suites and test cases, with
//! what failed and why, within a [`Budget`] of test cases and [`MAX_CASE_TEXT`] bytes of text a
//! case, so that a merge of many reports stays bounded. Where each failure is placed in the
//! workspace is `found.rs`'s business.

use quick_xml::events::Event;

/// One test case of a JUnit file.
#[derive(Clone, Debug, PartialEq)]
pub struct Case {
    pub name: String,
    pub classname: String,
    pub time: f64,
    pub result: CaseResult,
    /// Where it failed: a workspace file and line.
    pub at: Option<(String, u32)>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum CaseResult {
    Passed,
    Failed { message: String, text: String },
    Error { message: String, text: String },
    Skipped { message: String },
}

/// One test suite of a JUnit file.
#[derive(Clone, Debug, PartialEq)]
pub struct Suite {
    pub name: String,
    pub cases: Vec<Case>,
}

/// The suites of a JUnit XML file (`<testsuites>` or a lone `<testsuite>`, suites nested in
/// suites flattened, suites without test cases left out): `Ok(None)` when it is not JUnit,
/// `Err` when it starts as JUnit and is not well-formed.
pub fn parse_junit(bytes: &[u8]) -> Result<Option<Vec<Suite>>, String> {
    parse_junit_within(bytes, &mut Budget::new(usize::MAX))
}

/// How many test cases the reports still take: a merge stays bounded in memory and size
/// however many JUnit outputs the build has (adversarial run: four 15 MB files of 1.4 M cases
/// each took 1.9 GB).
pub struct Budget {
    left: usize,
    /// Cases seen once none were left.
    pub dropped: usize,
}

impl Budget {
    pub fn new(cases: usize) -> Budget {
        Budget {
            left: cases,
            dropped: 0,
        }
    }

    fn admit(&mut self) -> bool {
        if self.left == 0 {
            self.dropped += 1;
            return false;
        }
        self.left -= 1;
        true
    }
}

/// [`parse_junit`], keeping at most what `budget` admits.
pub fn parse_junit_within(bytes: &[u8], budget: &mut Budget) -> Result<Option<Vec<Suite>>, String> {
    let mut reader = quick_xml::Reader::from_reader(bytes);
    let mut buf = Vec::new();
    let mut suites: Vec<Suite> = Vec::new();
    // The suites open around the current point, innermost last (indices into `suites`).
    let mut open: Vec<usize> = Vec::new();
    let mut case: Option<Case> = None;
    // The element whose text is being read (`failure`, `error`), with its message.
    let mut text_of: Option<(String, String, String)> = None;
    let mut root_seen = false;
    // Elements open: a file that ends inside one is cut short.
    let mut depth = 0usize;
    loop {
        let event = match reader.read_event_into(&mut buf) {
            Ok(e) => e,
            Err(_) if !root_seen => return Ok(None),
            Err(e) => return Err(format!("at byte {}: {e}", reader.buffer_position())),
        };
        match &event {
            Event::Start(_) => depth += 1,
            Event::End(_) => depth = depth.saturating_sub(1),
            _ => {}
        }
        match event {
            Event::Eof if root_seen && depth > 0 => {
                return Err(format!("it ends inside {depth} open element(s)"));
            }
            Event::Eof => break,
            Event::Start(e) | Event::Empty(e) if !root_seen => {
                root_seen = true;
                match e.name().as_ref() {
                    b"testsuites" => {}
                    b"testsuite" => {
                        suites.push(Suite {
                            name: attr(&e, b"name").unwrap_or_default(),
                            cases: Vec::new(),
                        });
                        open.push(suites.len() - 1);
                    }
                    _ => return Ok(None),
                }
            }
            Event::Start(e) if e.name().as_ref() == b"testsuite" => {
                suites.push(Suite {
                    name: attr(&e, b"name").unwrap_or_default(),
                    cases: Vec::new(),
                });
                open.push(suites.len() - 1);
            }
            ref ev @ (Event::Start(ref e) | Event::Empty(ref e)) => {
                let empty = matches!(ev, Event::Empty(_));
                match e.name().as_ref() {
                    b"testcase" => {
                        let c = Case {
                            name: attr(e, b"name").unwrap_or_default(),
                            classname: attr(e, b"classname").unwrap_or_default(),
                            time: attr(e, b"time").and_then(|t| t.parse().ok()).unwrap_or(0.0),
                            result: CaseResult::Passed,
                            at: attr(e, b"file").map(|f| {
                                let line = attr(e, b"line").and_then(|l| l.parse().ok());
                                (f, line.unwrap_or(0))
                            }),
                        };
                        if empty {
                            let &at = open.last().ok_or("a test case outside any suite")?;
                            if budget.admit() {
                                suites[at].cases.push(c);
                            }
                        } else {
                            case = Some(c);
                        }
                    }
                    kind @ (b"failure" | b"error" | b"skipped") => {
                        let kind = String::from_utf8_lossy(kind).into_owned();
                        let message = attr(e, b"message").unwrap_or_default();
                        if empty {
                            if let Some(c) = &mut case {
                                c.result = result(&kind, message, String::new());
                            }
                        } else {
                            text_of = Some((kind, message, String::new()));
                        }
                    }
                    _ => {}
                }
            }
            Event::Text(t) => {
                if let Some((_, _, text)) = &mut text_of {
                    text.push_str(&t.decode().map_err(|e| e.to_string())?);
                }
            }
            Event::GeneralRef(r) => {
                if let Some((_, _, text)) = &mut text_of {
                    let name = r.decode().map_err(|e| e.to_string())?;
                    match quick_xml::escape::unescape(&format!("&{name};")) {
                        Ok(c) => text.push_str(&c),
                        Err(_) => text.push_str(&format!("&{name};")),
                    }
                }
            }
            Event::CData(t) => {
                if let Some((_, _, text)) = &mut text_of {
                    text.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Event::End(e) => match e.name().as_ref() {
                b"failure" | b"error" | b"skipped" => {
                    if let (Some((kind, message, text)), Some(c)) = (text_of.take(), &mut case) {
                        c.result = result(&kind, message, text);
                    }
                }
                b"testcase" => {
                    if let Some(c) = case.take() {
                        let &at = open.last().ok_or("a test case outside any suite")?;
                        if budget.admit() {
                            suites[at].cases.push(c);
                        }
                    }
                }
                b"testsuite" => {
                    open.pop();
                }
                _ => {}
            },
            _ => {}
        }
        buf.clear();
    }
    if !root_seen {
        return Ok(None);
    }
    suites.retain(|s| !s.cases.is_empty());
    Ok(Some(suites))
}

/// The text of a failure or error kept, at most (its end: where a traceback ends).
pub const MAX_CASE_TEXT: usize = 64 << 10;

fn result(kind: &str, message: String, text: String) -> CaseResult {
    let text = match text.len() > MAX_CASE_TEXT {
        true => {
            let mut at = text.len() - MAX_CASE_TEXT;
            while !text.is_char_boundary(at) {
                at += 1;
            }
            format!("[...]{}", &text[at..])
        }
        false => text,
    };
    let message = match message.char_indices().nth(MAX_CASE_TEXT) {
        Some((at, _)) => format!("{}[...]", &message[..at]),
        None => message,
    };
    match kind {
        "failure" => CaseResult::Failed { message, text },
        "error" => CaseResult::Error { message, text },
        _ => CaseResult::Skipped { message },
    }
}

fn attr(e: &quick_xml::events::BytesStart, name: &[u8]) -> Option<String> {
    let a = e.try_get_attribute(name).ok()??;
    a.unescape_value().ok().map(|v| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pytest_junit_parses_with_failure_text() {
        let xml = br#"<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" failures="1" skipped="1" tests="3"><testcase classname="tests.test_a" name="test_ok" time="0.001" /><testcase classname="tests.test_a" name="test_bad" time="0.002"><failure message="assert 1 == 2">def test_bad():
&gt;       assert 1 == 2
E       assert 1 == 2

tests/test_a.py:5: AssertionError</failure></testcase><testcase classname="tests.test_a" name="test_skip" time="0"><skipped type="pytest.skip" message="not now" /></testcase></testsuite></testsuites>"#;
        let suites = parse_junit(xml).unwrap().unwrap();
        assert_eq!(suites.len(), 1);
        let cases = &suites[0].cases;
        assert_eq!(cases.len(), 3);
        assert_eq!(cases[0].result, CaseResult::Passed);
        match &cases[1].result {
            CaseResult::Failed { message, text } => {
                assert_eq!(message, "assert 1 == 2");
                assert!(text.contains("> "), "{text}");
                assert!(text.ends_with("tests/test_a.py:5: AssertionError"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            cases[2].result,
            CaseResult::Skipped {
                message: "not now".into()
            }
        );
    }

    #[test]
    fn other_xml_is_not_junit_and_broken_junit_says_so() {
        assert_eq!(parse_junit(b"<html><body/></html>"), Ok(None));
        assert_eq!(parse_junit(b"not xml <"), Ok(None));
        let one = b"<testsuite name=\"x\"><testcase name=\"t\"/></testsuite>";
        assert_eq!(parse_junit(one).unwrap().unwrap()[0].name, "x");
        let cut = b"<testsuites><testsuite><testcase name=\"a\">";
        assert!(parse_junit(cut).is_err());
        let crossed = b"<testsuites><testsuite><testcase name=\"a\"></testsuite>";
        assert!(parse_junit(crossed).is_err());
    }

    /// The budget keeps what it admits and counts the rest.
    #[test]
    fn the_budget_bounds_the_cases_kept() {
        let xml = b"<testsuite name=\"s\"><testcase name=\"a\"/><testcase name=\"b\"></testcase><testcase name=\"c\"/></testsuite>";
        let mut budget = Budget::new(2);
        let suites = parse_junit_within(xml, &mut budget).unwrap().unwrap();
        let names: Vec<&str> = suites[0].cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!((names, budget.dropped), (vec!["a", "b"], 1));
    }

    /// Suites nested in suites are flattened, each case in its innermost suite, and suites
    /// without cases left out (adversarial run: 600k nested levels became 600k suites).
    #[test]
    fn nested_suites_are_flattened_and_empty_ones_dropped() {
        let mut xml = String::from("<testsuites>");
        for i in 0..1000 {
            xml.push_str(&format!("<testsuite name=\"s{i}\">"));
        }
        xml.push_str("<testcase name=\"deep\"/>");
        for _ in 0..999 {
            xml.push_str("</testsuite>");
        }
        xml.push_str("<testcase name=\"outer\"/></testsuite></testsuites>");
        let suites = parse_junit(xml.as_bytes()).unwrap().unwrap();
        let names: Vec<(&str, Vec<&str>)> = suites
            .iter()
            .map(|s| {
                (
                    s.name.as_str(),
                    s.cases.iter().map(|c| c.name.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(names, [("s0", vec!["outer"]), ("s999", vec!["deep"])]);
    }
}
