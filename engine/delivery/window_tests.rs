use super::*;

/// Milliseconds of an RFC 3339 instant, e.g. `2026-12-12T13:00:00-05:00`.
fn ms(rfc3339: &str) -> i64 {
    rfc3339.parse::<Timestamp>().unwrap().as_millisecond()
}

fn windows(texts: &[&str]) -> Windows {
    Windows(texts.iter().map(|t| Window::parse(t).unwrap()).collect())
}

fn production(approval: bool) -> Environment {
    Environment {
        name: "production".into(),
        windows: windows(&["Tue-Thu 10:00-16:00 America/New_York"]),
        emergency_approval: approval,
    }
}

#[test]
fn business_hours_in_new_york_with_the_end_exclusive() {
    let w = windows(&["Tue-Thu 10:00-16:00 America/New_York"]);
    // Tuesday 2026-12-15, EST (UTC-5).
    assert!(!w.contains(ms("2026-12-15T09:59:59-05:00")));
    assert!(w.contains(ms("2026-12-15T10:00:00-05:00")));
    assert!(w.contains(ms("2026-12-15T15:59:59-05:00")));
    assert!(!w.contains(ms("2026-12-15T16:00:00-05:00")));
    // Thursday in summer (EDT, UTC-4): 10:00 local is 14:00 UTC.
    assert!(w.contains(ms("2026-07-16T14:00:00Z")));
    assert!(!w.contains(ms("2026-07-16T13:59:00Z")));
    // Monday and Friday are closed.
    assert!(!w.contains(ms("2026-12-14T12:00:00-05:00")));
    assert!(!w.contains(ms("2026-12-18T12:00:00-05:00")));
}

#[test]
fn a_saturday_gives_tuesday_ten_as_the_next_opening() {
    let w = windows(&["Tue-Thu 10:00-16:00 America/New_York"]);
    let saturday = ms("2026-12-12T13:00:00-05:00");
    assert_eq!(
        w.next_opening(saturday).unwrap(),
        "Tue 2026-12-15 10:00 EST (America/New_York), in 2 days 21 h"
    );
    // Inside the window, the next opening is the next day's.
    assert_eq!(
        w.next_opening(ms("2026-12-17T11:30:00-05:00")).unwrap(),
        "Tue 2026-12-22 10:00 EST (America/New_York), in 4 days 22 h"
    );
    assert_eq!(
        w.next_opening(ms("2026-12-15T09:15:00-05:00")).unwrap(),
        "Tue 2026-12-15 10:00 EST (America/New_York), in 45 min"
    );
    assert_eq!(Windows::default().next_opening(saturday), None);
    assert!(Windows::default().contains(saturday));
}

#[test]
fn spring_forward_sunday_in_new_york() {
    // 2026-03-08: 02:00 EST becomes 03:00 EDT; 02:xx does not exist that day.
    let w = windows(&["Sun 01:00-04:00 America/New_York"]);
    assert!(w.contains(ms("2026-03-08T06:00:00Z"))); // 01:00 EST
    assert!(w.contains(ms("2026-03-08T06:59:00Z"))); // 01:59 EST
    assert!(w.contains(ms("2026-03-08T07:00:00Z"))); // 03:00 EDT
    assert!(!w.contains(ms("2026-03-08T08:00:00Z"))); // 04:00 EDT: two real hours only
                                                      // A window that starts inside the skipped hour opens when the clocks jump.
    let gap = windows(&["Sun 02:30-05:00 America/New_York"]);
    assert!(!gap.contains(ms("2026-03-08T06:59:00Z"))); // 01:59 EST
    assert!(gap.contains(ms("2026-03-08T07:00:00Z"))); // 03:00 EDT, past 02:30 wall time
    assert_eq!(
        gap.next_opening(ms("2026-03-08T06:00:00Z")).unwrap(),
        "Sun 2026-03-08 03:00 EDT (America/New_York), in 1 h"
    );
}

#[test]
fn fall_back_sunday_in_new_york() {
    // 2026-11-01: 02:00 EDT becomes 01:00 EST; 01:xx happens twice.
    let w = windows(&["Sun 01:00-02:00 America/New_York"]);
    assert!(w.contains(ms("2026-11-01T05:00:00Z"))); // 01:00 EDT
    assert!(w.contains(ms("2026-11-01T05:59:00Z"))); // 01:59 EDT
    assert!(w.contains(ms("2026-11-01T06:30:00Z"))); // 01:30 EST, the second time
    assert!(!w.contains(ms("2026-11-01T07:00:00Z"))); // 02:00 EST
    assert!(!w.contains(ms("2026-11-01T04:59:00Z"))); // 00:59 EDT
    let next = w.next_opening(ms("2026-10-31T12:00:00-04:00")).unwrap();
    assert_eq!(next, "Sun 2026-11-01 01:00 EDT (America/New_York), in 13 h");
}

#[test]
fn utc_lists_and_wrapping_ranges() {
    let w = windows(&["Mon,Wed,Fri 08:00-09:30 UTC"]);
    assert!(w.contains(ms("2026-12-16T08:00:00Z"))); // Wednesday
    assert!(w.contains(ms("2026-12-16T09:29:59Z")));
    assert!(!w.contains(ms("2026-12-16T09:30:00Z")));
    assert!(!w.contains(ms("2026-12-15T08:30:00Z"))); // Tuesday
    assert_eq!(
        w.next_opening(ms("2026-12-16T09:30:00Z")).unwrap(),
        "Fri 2026-12-18 08:00 UTC, in 1 day 22 h"
    );

    let weekend = windows(&["fri-MON 00:00-24:00 UTC"]);
    for day in ["2026-12-18", "2026-12-19", "2026-12-20", "2026-12-21"] {
        assert!(weekend.contains(ms(&format!("{day}T23:59:59Z"))), "{day}");
    }
    for day in ["2026-12-15", "2026-12-16", "2026-12-17"] {
        assert!(!weekend.contains(ms(&format!("{day}T12:00:00Z"))), "{day}");
    }
    let mixed = windows(&["Mon-Tue,Thu 12:00-13:00 UTC"]);
    assert!(mixed.contains(ms("2026-12-17T12:00:00Z"))); // Thursday
    assert!(!mixed.contains(ms("2026-12-16T12:00:00Z"))); // Wednesday

    // Several windows: open when any is; the next opening is the earliest.
    let two = windows(&[
        "Tue-Thu 10:00-16:00 America/New_York",
        "Sat 06:00-07:00 UTC",
    ]);
    assert!(two.contains(ms("2026-12-12T06:30:00Z")));
    assert_eq!(
        two.next_opening(ms("2026-12-11T22:00:00Z")).unwrap(),
        "Sat 2026-12-12 06:00 UTC, in 8 h"
    );
}

#[test]
fn parse_errors_say_what_was_expected() {
    let e = Window::parse("Tue-Thu 10:00-16:00").unwrap_err();
    assert_eq!(
        e,
        "`Tue-Thu 10:00-16:00` is not a deployment window: expected `DAYS HH:MM-HH:MM ZONE`, \
         e.g. `Tue-Thu 10:00-16:00 America/New_York`"
    );
    let e = Window::parse("Tues 10:00-16:00 UTC").unwrap_err();
    assert!(e.starts_with("`Tues` is not a day: write `Mon`"), "{e}");
    let e = Window::parse("Tue 10-16 UTC").unwrap_err();
    assert!(
        e.starts_with("`10-16` in window `Tue 10-16 UTC` is not a time range"),
        "{e}"
    );
    let e = Window::parse("Tue 16:00-10:00 UTC").unwrap_err();
    assert!(e.contains("does not end after it starts"), "{e}");
    assert!(Window::parse("Tue 10:00-24:01 UTC").is_err());
    assert!(Window::parse("Tue 10:60-11:00 UTC").is_err());
    let e = Window::parse("Tue 10:00-16:00 America/NewYork").unwrap_err();
    assert!(
        e.starts_with("`America/NewYork` in window `Tue 10:00-16:00 America/NewYork` is not a known time zone"),
        "{e}"
    );
}

#[test]
fn may_deploy_outside_the_window_needs_an_emergency_with_reason_and_approval() {
    let saturday = ms("2026-12-12T13:00:00-05:00");
    let tuesday = ms("2026-12-15T11:00:00-05:00");
    let env = production(true);
    assert_eq!(may_deploy(&env, tuesday, None), Ok(()));
    assert_eq!(
        may_deploy(&env, saturday, None).unwrap_err(),
        "`production` is outside its deployment window `Tue-Thu 10:00-16:00 America/New_York`; \
         it next opens Tue 2026-12-15 10:00 EST (America/New_York), in 2 days 21 h. To deploy \
         now anyway, pass `--emergency --reason TEXT` with `--approved-by NAME`."
    );
    let unapproved = Emergency {
        reason: "checkout is down".into(),
        approved_by: None,
    };
    let e = may_deploy(&env, saturday, Some(&unapproved)).unwrap_err();
    assert!(e.contains("pass `--approved-by NAME`"), "{e}");
    let approved = Emergency {
        approved_by: Some("alice".into()),
        ..unapproved.clone()
    };
    assert_eq!(may_deploy(&env, saturday, Some(&approved)), Ok(()));
    let no_reason = Emergency {
        reason: "  ".into(),
        ..approved
    };
    let e = may_deploy(&env, saturday, Some(&no_reason)).unwrap_err();
    assert!(e.contains("needs a reason: pass `--reason TEXT`"), "{e}");

    // Without the approval requirement, a reason is enough.
    let env = production(false);
    assert_eq!(may_deploy(&env, saturday, Some(&unapproved)), Ok(()));
    assert!(may_deploy(&env, saturday, None)
        .unwrap_err()
        .ends_with("pass `--emergency --reason TEXT`."));
    // No window: always open.
    let staging = Environment {
        name: "staging".into(),
        windows: Windows::default(),
        emergency_approval: false,
    };
    assert_eq!(may_deploy(&staging, saturday, None), Ok(()));
}
