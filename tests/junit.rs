//! `flow build --junit FILE` through the binary: one JUnit XML report, parsed back.

use crate::support::{golden, Ws};

/// A passing, a failing (its log holds XML specials and a terminal color) and a skipped
/// action; the report parses, counts them, and reads like the golden file (times zeroed).
#[test]
fn a_build_writes_one_junit_report() {
    let ws = Ws::new().file(
        "z/BUILD",
        "task(name = \"good\", cmd = \"true\")\n\
         task(name = \"bad\", cmd = \"printf 'oops <&> \\\\033[31mred\\\\n'; exit 3\")\n\
         task(name = \"after\", deps = [\":bad\"], cmd = \"true\")\n",
    );
    let report = ws.path().join("report.xml");
    let run = ws.run(&[
        "build",
        "-k",
        "-j",
        "1",
        "--junit",
        report.to_str().unwrap(),
        "//...",
    ]);
    assert_eq!(run.code, 1);
    let xml = std::fs::read_to_string(&report).unwrap();
    // Parsed back by an XML reader: well formed, with the counts.
    let mut reader = quick_xml::Reader::from_str(&xml);
    let mut cases = 0;
    loop {
        match reader.read_event().expect("well-formed XML") {
            quick_xml::events::Event::Eof => break,
            quick_xml::events::Event::Start(e) if e.name().as_ref() == b"testcase" => cases += 1,
            _ => {}
        }
    }
    assert_eq!(cases, 3);
    let zeroed = zero_times(&xml);
    // The failure's message says how long it ran, too.
    let zeroed = match zeroed.find("exit 3, ") {
        Some(i) => {
            let end = i + zeroed[i..].find('"').unwrap();
            format!("{}exit 3, Ns{}", &zeroed[..i], &zeroed[end..])
        }
        None => zeroed,
    };
    golden("junit_report", &zeroed);
}

/// `time="1.234"` → `time="0"`: durations differ from run to run.
fn zero_times(xml: &str) -> String {
    let mut out = String::new();
    let mut rest = xml;
    while let Some(i) = rest.find("time=\"") {
        out.push_str(&rest[..i + 6]);
        let after = &rest[i + 6..];
        let end = after.find('"').unwrap_or(0);
        out.push('0');
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}
