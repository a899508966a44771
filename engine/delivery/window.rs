//! Deployment windows and emergency approval: may a deploy to this environment start now?
//!
//! A window is `DAYS HH:MM-HH:MM ZONE` (`[environments.NAME] window` in `flow.toml`):
//! - DAYS: a day (`Mon`..`Sun`), a range (`Tue-Thu`; it may wrap, `Fri-Mon` is Fri, Sat, Sun,
//!   Mon), or a comma list of either (`Mon,Wed,Fri`, `Mon-Tue,Thu`); case-insensitive;
//! - HH:MM-HH:MM: local wall-clock times in ZONE; the start is included, the end is not; the end
//!   may be `24:00` and must come after the start (a night window is two windows);
//! - ZONE: an IANA name (`America/New_York`, `Europe/Paris`, `UTC`), resolved with jiff's bundled
//!   copy of the time-zone database, so every machine answers alike.
//!
//! An instant is inside a window when its local weekday is one of DAYS and its local wall-clock
//! time is in [start, end). DST follows from that: on the day clocks spring forward the window is
//! shorter by the skipped hour, on the day they fall back an hour that occurs twice is inside
//! twice. A list of windows is open when any is; an empty list is always open.
//!
//! [`may_deploy`] is the whole policy: outside every window only `--emergency --reason TEXT`
//! passes, an emergency always needs a non-empty reason, and `emergency_approval = true` also
//! needs `--approved-by NAME`.

use std::fmt;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ZonedDateTime};

const EXAMPLE: &str = "`Tue-Thu 10:00-16:00 America/New_York`";
const DAY_NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// One window; see the module docs.
#[derive(Clone, Debug)]
pub struct Window {
    /// As written, for messages.
    text: String,
    /// Indexed by `Weekday::to_monday_zero_offset`.
    days: [bool; 7],
    /// Minutes after local midnight; `start < end <= 1440`.
    start: u16,
    end: u16,
    zone_name: String,
    zone: TimeZone,
}

/// The windows of one environment; empty: always open.
#[derive(Clone, Debug, Default)]
pub struct Windows(pub Vec<Window>);

/// An environment of `flow.toml`'s `[environments.NAME]`.
#[derive(Clone, Debug)]
pub struct Environment {
    pub name: String,
    pub windows: Windows,
    /// `--emergency` also needs `--approved-by NAME`.
    pub emergency_approval: bool,
}

/// What `--emergency` brings.
#[derive(Clone, Debug)]
pub struct Emergency {
    pub reason: String,
    pub approved_by: Option<String>,
}

impl Window {
    /// Reads `DAYS HH:MM-HH:MM ZONE`; the error says what was expected, with an example.
    pub fn parse(text: &str) -> Result<Window, String> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        let [days, times, zone_name] = parts[..] else {
            return Err(format!(
                "`{text}` is not a deployment window: expected `DAYS HH:MM-HH:MM ZONE`, e.g. {EXAMPLE}"
            ));
        };
        let days = parse_days(days)?;
        let (start, end) = times
            .split_once('-')
            .and_then(|(s, e)| Some((minute_of_day(s)?, minute_of_day(e)?)))
            .ok_or_else(|| {
                format!(
                    "`{times}` in window `{text}` is not a time range: expected `HH:MM-HH:MM` \
                     (24-hour clock), e.g. {EXAMPLE}"
                )
            })?;
        if start >= end || start >= 24 * 60 {
            return Err(format!(
                "`{times}` in window `{text}` does not end after it starts: the end is exclusive \
                 and on the same day (write a night window as two windows, e.g. \
                 `Fri 22:00-24:00 UTC` and `Sat 00:00-06:00 UTC`)"
            ));
        }
        let zone = TimeZone::get(zone_name).map_err(|_| {
            format!(
                "`{zone_name}` in window `{text}` is not a known time zone: write an IANA name \
                 such as `America/New_York`, `Europe/Paris` or `UTC`"
            )
        })?;
        Ok(Window {
            text: parts.join(" "),
            days,
            start,
            end,
            zone_name: zone_name.to_owned(),
            zone,
        })
    }

    fn contains(&self, at: Timestamp) -> bool {
        let local = at.to_zoned_datetime(self.zone.clone());
        let time = local.time();
        let minute = time.hour() as u16 * 60 + time.minute() as u16;
        self.days[local.weekday().to_monday_zero_offset() as usize]
            && (self.start..self.end).contains(&minute)
    }

    /// The first instant after `now` at which this window opens, within the next 8 days.
    fn next_opening(&self, now: Timestamp) -> Option<ZonedDateTime> {
        let mut date: Date = now.to_zoned_datetime(self.zone.clone()).date();
        for _ in 0..=8 {
            if self.days[date.weekday().to_monday_zero_offset() as usize] {
                let (h, m) = ((self.start / 60) as i8, (self.start % 60) as i8);
                let opening = date
                    .at(h, m, 0, 0)
                    .to_zoned_datetime(self.zone.clone())
                    .ok()?;
                // A start in a DST gap resolves past it; the window opened with the gap's end.
                let mut at = opening.timestamp();
                let minute = jiff::SignedDuration::from_mins(1);
                while let Some(earlier) = at.checked_sub(minute).ok().filter(|&t| t > now) {
                    if !self.contains(earlier) {
                        break;
                    }
                    at = earlier;
                }
                if at > now && self.contains(at) {
                    return Some(at.to_zoned_datetime(self.zone.clone()));
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `Tue-Thu`, `Mon,Wed,Fri`, `Fri-Mon` → the days they name.
fn parse_days(text: &str) -> Result<[bool; 7], String> {
    let day = |name: &str| {
        DAY_NAMES
            .iter()
            .position(|d| d.eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                format!(
                    "`{name}` is not a day: write `Mon`, `Tue`, `Wed`, `Thu`, `Fri`, `Sat` or \
                     `Sun`, a range such as `Tue-Thu` or a list such as `Mon,Wed,Fri`"
                )
            })
    };
    let mut days = [false; 7];
    for item in text.split(',') {
        match item.split_once('-') {
            Some((from, to)) => {
                let (from, to) = (day(from)?, day(to)?);
                let len = (to + 7 - from) % 7;
                for i in 0..=len {
                    days[(from + i) % 7] = true;
                }
            }
            None => days[day(item)?] = true,
        }
    }
    Ok(days)
}

/// `HH:MM` (00:00 to 24:00) → minutes after midnight.
fn minute_of_day(text: &str) -> Option<u16> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
}

fn timestamp(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(if ms < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

impl Windows {
    /// Whether a deploy may start at `now_ms` (milliseconds since the Unix epoch).
    pub fn contains(&self, now_ms: i64) -> bool {
        let now = timestamp(now_ms);
        self.0.is_empty() || self.0.iter().any(|w| w.contains(now))
    }

    /// When the next window opens after `now_ms`, e.g.
    /// `Tue 2026-12-15 10:00 EST (America/New_York), in 2 days 21 h`; `None` when there is no
    /// window (always open).
    pub fn next_opening(&self, now_ms: i64) -> Option<String> {
        let now = timestamp(now_ms);
        let (window, at) = self
            .0
            .iter()
            .filter_map(|w| Some((w, w.next_opening(now)?)))
            .min_by_key(|(_, at)| at.timestamp())?;
        let local = at.strftime("%a %Y-%m-%d %H:%M %Z").to_string();
        let zone = if local.ends_with(&window.zone_name) {
            String::new()
        } else {
            format!(" ({})", window.zone_name)
        };
        let wait_ms = at.timestamp().as_millisecond() - now_ms;
        Some(format!("{local}{zone}, in {}", in_words(wait_ms)))
    }

    /// The windows as written, joined with ` or `.
    fn describe(&self) -> String {
        let texts: Vec<String> = self.0.iter().map(|w| format!("`{w}`")).collect();
        texts.join(" or ")
    }
}

/// `2 days 21 h`, `3 h 5 min`, `45 min` (rounded up to the minute).
fn in_words(ms: i64) -> String {
    let mins = (ms.max(0) + 59_999) / 60_000;
    let (days, hours, mins) = (mins / 1440, mins % 1440 / 60, mins % 60);
    let plural = if days == 1 { "" } else { "s" };
    match (days, hours) {
        (0, 0) => format!("{mins} min"),
        (0, h) if mins == 0 => format!("{h} h"),
        (0, h) => format!("{h} h {mins} min"),
        (d, 0) => format!("{d} day{plural}"),
        (d, h) => format!("{d} day{plural} {h} h"),
    }
}

/// `Ok(())` when a deploy to `env` may start at `now_ms`; else why not, in one or two sentences
/// (see the module docs).
pub fn may_deploy(
    env: &Environment,
    now_ms: i64,
    emergency: Option<&Emergency>,
) -> Result<(), String> {
    let name = &env.name;
    match emergency {
        Some(e) => {
            if e.reason.trim().is_empty() {
                return Err(format!(
                    "an emergency deploy to `{name}` needs a reason: pass `--reason TEXT` saying \
                     why it cannot wait (it is recorded in the ledger)"
                ));
            }
            let approved = e
                .approved_by
                .as_deref()
                .is_some_and(|a| !a.trim().is_empty());
            if env.emergency_approval && !approved {
                return Err(format!(
                    "emergency deploys to `{name}` need an approval \
                     (`emergency_approval = true` in flow.toml): pass `--approved-by NAME` with \
                     who approved it (it is recorded in the ledger)"
                ));
            }
            Ok(())
        }
        None if env.windows.contains(now_ms) => Ok(()),
        None => {
            let next = env
                .windows
                .next_opening(now_ms)
                .map_or_else(String::new, |at| format!("; it next opens {at}"));
            Err(format!(
                "`{name}` is outside its deployment window {}{next}. To deploy now anyway, pass \
                 `--emergency --reason TEXT`{}.",
                env.windows.describe(),
                if env.emergency_approval {
                    " with `--approved-by NAME`"
                } else {
                    ""
                }
            ))
        }
    }
}

#[cfg(test)]
#[path = "window_tests.rs"]
mod tests;
