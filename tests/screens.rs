//! The screens people watch, read from a real terminal (tmux, `support/screen.rs`): the
//! progress rows of a build and the watch screen (issue 18: elapsed times froze, waiting actions
//! were listed as running, a long action showed nothing of its output, a Ctrl-C left the bar's
//! row above the summary, a reverted edit left `FAILED` as the last word on screen).

use std::time::Duration;

use crate::support::{flow_bin, Screen, Ws, EXIT_MARK};

const WAIT: Duration = Duration::from_secs(60);

/// A long action printing a step every 0.1 s, beside short ones that queue for the second slot.
fn long_and_queued() -> Ws {
    Ws::new().file(
        "p/BUILD",
        r#"task(name = "long", cmd = "i=0; while [ $$i -lt 45 ]; do i=$$((i+1)); echo step $$i; sleep 0.1; done")
task(name = "w1", cmd = "sleep 1.5")
task(name = "w2", cmd = "sleep 1.5")
task(name = "w3", cmd = "sleep 1.5")
"#,
    )
}

fn flow(args: &str) -> String {
    format!("'{}' {args}", flow_bin().display())
}

/// The row of a running action: `  //p:long   2s  step 17`.
fn row<'a>(screen: &'a str, label: &str) -> Option<&'a str> {
    screen
        .lines()
        .find(|l| l.trim_start().starts_with(label) && l.starts_with("  "))
}

/// The time a row shows, in seconds (`14s`; rows in these tests stay under a minute).
fn row_secs(row: &str) -> Option<u64> {
    row.split_whitespace()
        .nth(1)?
        .strip_suffix('s')?
        .parse()
        .ok()
}

#[test]
fn progress_rows_show_live_time_the_last_line_and_count_the_waiting() {
    let ws = long_and_queued();
    let Some(screen) = Screen::start(ws.path(), &flow("build -j 2 //..."), 100, 30) else {
        return;
    };
    // Two commands run; two are staged and wait for a slot: counted on the head line, not
    // given a row.
    let queued = screen.wait_for(WAIT, |s| s.contains("2 running, 2 waiting"));
    assert!(row(&queued, "//p:long").is_some(), "{queued}");
    assert!(row(&queued, "//p:w2").is_none(), "{queued}");
    assert!(row(&queued, "//p:w3").is_none(), "{queued}");
    // The long action's row shows its last line, and a time that moves on between the other
    // actions' ends (which come every 1.5 s): 2s is shown before the second short one ends.
    let live = screen.wait_for(WAIT, |s| {
        row(s, "//p:long").is_some_and(|r| r.contains("step") && row_secs(r) == Some(2))
    });
    let r = row(&live, "//p:long").unwrap();
    let step: u32 = r.rsplit(' ').next().unwrap().parse().expect(r);
    assert!(step >= 10, "the last line is not live: {r}");
    let later = screen.wait_for(WAIT, |s| {
        row(s, "//p:long").is_some_and(|r| row_secs(r) >= Some(3))
    });
    let r2 = row(&later, "//p:long").unwrap();
    assert_ne!(r, r2);
    // At the end, the rows are gone: the status lines and the summary are all that is left.
    let end = screen.wait_for(WAIT, |s| s.contains(EXIT_MARK));
    assert!(end.contains("flow: ok: 4 ran"), "{end}");
    assert!(!end.contains("running"), "{end}");
    assert!(row(&end, "//p:long").is_none(), "{end}");
    assert!(end.contains(&format!("{EXIT_MARK}0]")), "{end}");
}

#[test]
fn ctrl_c_leaves_no_progress_row_behind() {
    let ws = long_and_queued();
    let Some(screen) = Screen::start(ws.path(), &flow("build -j 2 //..."), 100, 30) else {
        return;
    };
    screen.wait_for(WAIT, |s| {
        row(s, "//p:long").is_some_and(|r| r.contains("step"))
    });
    screen.keys("C-c");
    let end = screen.wait_for(WAIT, |s| s.contains(EXIT_MARK));
    assert!(end.contains("flow: interrupted"), "{end}");
    assert!(end.contains(&format!("{EXIT_MARK}130]")), "{end}");
    // Nothing of the rows: no `[n/4]` head, no running row, no `^C` on a row of its own.
    for line in end.lines() {
        assert!(!line.contains("/4] "), "a progress row was left:\n{end}");
        assert!(!line.contains("running"), "a progress row was left:\n{end}");
        assert!(
            row(line, "//p:").is_none(),
            "a progress row was left:\n{end}"
        );
        assert_ne!(line.trim(), "^C", "{end}");
    }
}

#[test]
fn the_watch_screen_ends_with_the_current_state() {
    let ws = Ws::new().file("p/in.txt", "ok\n").file(
        "p/BUILD",
        r#"task(name = "check", srcs = ["in.txt"], cmd = "grep -q ok in.txt || { echo 'in.txt: not ok'; exit 1; }")
"#,
    );
    ws.run(&["build", "//..."]).ok();
    let Some(screen) = Screen::start(ws.path(), &flow("watch //..."), 100, 30) else {
        return;
    };
    let last = |s: &str| s.lines().last().unwrap_or("").to_owned();
    // Started on an up-to-date workspace: it says so, rather than a blank screen.
    let start = screen.wait_for(WAIT, |s| last(s).starts_with("flow: ok"));
    assert!(start.contains("1 cached"), "{start}");
    std::thread::sleep(Duration::from_millis(300));
    ws.write("p/in.txt", b"bad\n");
    let broken = screen.wait_for(WAIT, |s| last(s).starts_with("flow: FAILED"));
    assert!(broken.contains("in.txt: not ok"), "{broken}");
    assert!(broken.contains("flow watch: changed p/in.txt"), "{broken}");
    // The revert is served from the cache, and still the last line says the state is good.
    ws.write("p/in.txt", b"ok\n");
    let fixed = screen.wait_for(WAIT, |s| {
        s.matches("flow watch: changed").count() == 2 && last(s).starts_with("flow: ok")
    });
    assert!(last(&fixed).contains("1 cached"), "{fixed}");
    screen.keys("C-c");
    screen.wait_for(WAIT, |s| s.contains(EXIT_MARK));
}

/// With stdout a file and stderr the terminal, the progress rows are drawn on the terminal and
/// the status lines, `[CACHED]` ones included, go to the file, where a log wants them (they
/// went to the terminal, above the rows).
#[test]
fn status_lines_follow_stdout_when_only_stderr_is_a_terminal() {
    let ws = Ws::new().file(
        "p/BUILD",
        "task(name = \"a\", cmd = \"sleep 0.5\")\ntask(name = \"b\", cmd = \"true\")\n",
    );
    ws.run(&["build", "//p:b"]).ok();
    let Some(screen) = Screen::start(ws.path(), &flow("build //p:all > log.txt"), 100, 30) else {
        return;
    };
    let end = screen.wait_for(WAIT, |s| s.contains(EXIT_MARK));
    assert!(end.contains(&format!("{EXIT_MARK}0]")), "{end}");
    assert!(!end.contains("[RAN]"), "{end}");
    let log = std::fs::read_to_string(ws.path().join("log.txt")).unwrap();
    assert!(log.contains("[RAN] //p:a"), "{log}");
    assert!(log.contains("[CACHED] //p:b"), "{log}");
    assert!(log.contains("flow: ok: 1 ran, 1 cached"), "{log}");
}
