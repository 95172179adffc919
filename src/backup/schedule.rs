//! Backup schedules and retention (pure).

use croner::Cron;
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{SignedDuration, Timestamp, Zoned};
use std::collections::BTreeSet;

use crate::api::server::Retention;

/// A parsed schedule and the time zone it is read in (UTC for backups).
#[derive(Clone, Debug)]
pub struct Schedule(Cron, TimeZone);

impl Schedule {
    /// Parses five-field cron (six with seconds first) or an
    /// `@hourly`-style alias.
    pub fn parse(s: &str) -> Result<Schedule, String> {
        let fields = s.split_whitespace().count();
        if !s.starts_with('@') && !(5..=6).contains(&fields) {
            return Err(format!("schedule {s:?} must have five fields (minute hour day month weekday)"));
        }
        let parser = croner::parser::CronParser::builder().seconds(croner::parser::Seconds::Optional).build();
        parser.parse(s).map(|c| Schedule(c, TimeZone::UTC)).map_err(|e| format!("schedule {s:?}: {e}"))
    }

    /// Like [`Schedule::parse`], read in the IANA time zone `tz` (the
    /// operator carries its own copy of the time zone database).
    pub fn parse_in(s: &str, tz: &str) -> Result<Schedule, String> {
        let zone = TimeZone::get(tz).map_err(|e| format!("time zone {tz:?}: {e}"))?;
        Schedule::parse(s).map(|Schedule(c, _)| Schedule(c, zone))
    }

    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let z: Zoned = t.to_zoned(self.1.clone());
        self.0.find_next_occurrence(&z, false).ok().map(|z| z.timestamp())
    }

    /// The shortest time between two consecutive slots, over the slots of
    /// a sample walk (up to [`GAP_SAMPLES`] slots within 400 days from
    /// 2024-01-01, a leap year): a schedule's gaps repeat each day it runs,
    /// so any gap that makes it run too often shows within them. `None`
    /// without two slots.
    pub fn shortest_gap(&self) -> Option<std::time::Duration> {
        let start = Timestamp::UNIX_EPOCH + SignedDuration::from_hours(473_352);
        let end = start + SignedDuration::from_hours(400 * 24);
        let mut t = self.next_after(start)?;
        let mut shortest: Option<std::time::Duration> = None;
        for _ in 0..GAP_SAMPLES {
            let Some(n) = self.next_after(t) else { break };
            let gap = std::time::Duration::try_from(n.duration_since(t)).unwrap_or_default();
            shortest = Some(shortest.map_or(gap, |s| s.min(gap)));
            if gap <= std::time::Duration::from_secs(1) || n > end {
                break;
            }
            t = n;
        }
        shortest
    }

    /// Why the schedule runs too often for `min` between two slots, if it does.
    pub fn too_frequent(&self, spelled: &str, min: std::time::Duration) -> Option<String> {
        let gap = self.shortest_gap()?;
        (gap < min).then(|| {
            format!(
                "schedule {spelled:?} runs {}s apart at its closest; the minimum between two runs is {}s (set by the cluster admin)",
                gap.as_secs(),
                min.as_secs()
            )
        })
    }

    /// What to do now: the newest slot in (`since`, `now`] if any (several
    /// missed slots give one catch-up, never a burst), and the next slot.
    pub fn due(&self, since: Timestamp, now: Timestamp) -> (Option<Timestamp>, Option<Timestamp>) {
        let mut latest = None;
        let mut t = since;
        // Walk forward; bounded so a "* * * * *" schedule after a long outage stays cheap.
        for _ in 0..100_000 {
            match self.next_after(t) {
                Some(n) if n <= now => {
                    latest = Some(n);
                    t = n;
                }
                _ => break,
            }
        }
        (latest, self.next_after(now))
    }
}

/// Slots [`Schedule::shortest_gap`] looks at.
pub const GAP_SAMPLES: usize = 1500;

/// A scheduled snapshot as retention sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    /// When it was taken (completion time, else creation time).
    pub time: Timestamp,
    pub completed: bool,
}

/// Failed scheduled snapshots kept for inspection (newest first).
pub const KEEP_FAILED: usize = 3;

/// Which scheduled, unpinned snapshots to delete. A completed snapshot is
/// kept if any of keepLast / keepDaily / keepWeekly keeps it, unless it is
/// older than maxAge; without any rule all are kept. Of failed ones only the
/// newest [`KEEP_FAILED`] stay.
pub fn prune(candidates: &[Candidate], r: &Retention, now: Timestamp) -> Vec<String> {
    let mut done: Vec<&Candidate> = candidates.iter().filter(|c| c.completed).collect();
    done.sort_by_key(|c| std::cmp::Reverse(c.time));
    let mut keep: BTreeSet<&str> = BTreeSet::new();
    let any_rule = r.keep_last.is_some() || r.keep_daily.is_some() || r.keep_weekly.is_some();
    if !any_rule {
        keep.extend(done.iter().map(|c| c.name.as_str()));
    }
    if let Some(n) = r.keep_last {
        keep.extend(done.iter().take(n.max(0) as usize).map(|c| c.name.as_str()));
    }
    let mut by_period = |n: Option<i32>, key: &dyn Fn(&Zoned) -> (i16, i16)| {
        let Some(n) = n else { return };
        let mut seen = BTreeSet::new();
        for c in &done {
            if seen.len() >= n.max(0) as usize {
                break;
            }
            if seen.insert(key(&c.time.to_zoned(TimeZone::UTC))) {
                keep.insert(c.name.as_str());
            }
        }
    };
    by_period(r.keep_daily, &|z| (z.year(), z.day_of_year()));
    by_period(r.keep_weekly, &|z| {
        let w = z.date().iso_week_date();
        (w.year(), i16::from(w.week()))
    });
    let max_age = r.max_age.as_deref().and_then(parse_duration);
    let mut out: Vec<String> = done
        .iter()
        .filter(|c| !keep.contains(c.name.as_str()) || max_age.is_some_and(|a| now.duration_since(c.time) > a))
        .map(|c| c.name.clone())
        .collect();
    let mut failed: Vec<&Candidate> = candidates.iter().filter(|c| !c.completed).collect();
    failed.sort_by_key(|c| std::cmp::Reverse(c.time));
    out.extend(failed.iter().skip(KEEP_FAILED).map(|c| c.name.clone()));
    out.sort();
    out
}

/// Parses Go-style durations (`720h`, `90m`, `1h30m`).
pub fn parse_duration(s: &str) -> Option<SignedDuration> {
    let mut total = 0f64;
    let mut num = String::new();
    let mut rest = s;
    while !rest.is_empty() {
        let c = rest.chars().next()?;
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            rest = &rest[c.len_utf8()..];
            continue;
        }
        let (unit, secs) =
            [("ns", 1e-9), ("us", 1e-6), ("µs", 1e-6), ("ms", 1e-3), ("s", 1.0), ("m", 60.0), ("h", 3600.0)]
                .into_iter()
                .filter(|(u, _)| rest.starts_with(u))
                .max_by_key(|(u, _)| u.len())?;
        total += num.parse::<f64>().ok()? * secs;
        num.clear();
        rest = &rest[unit.len()..];
    }
    (num.is_empty() && !s.is_empty()).then(|| SignedDuration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn schedules_follow_their_time_zone_and_its_daylight_saving() {
        let berlin = Schedule::parse_in("0 5 * * *", "Europe/Berlin").unwrap();
        // Winter: 05:00 in Berlin is 04:00 UTC; summer: 03:00 UTC.
        assert_eq!(berlin.next_after(ts("2026-12-01T00:00:00Z")), Some(ts("2026-12-01T04:00:00Z")));
        assert_eq!(berlin.next_after(ts("2026-07-01T00:00:00Z")), Some(ts("2026-07-01T03:00:00Z")));
        assert!(Schedule::parse_in("0 5 * * *", "Mars/Olympus").unwrap_err().contains("Mars/Olympus"));
    }

    #[test]
    fn missed_slots_give_one_catch_up() {
        let s = Schedule::parse("0 4 * * *").unwrap();
        // Down for three days: one snapshot for the newest missed slot.
        let (due, next) = s.due(ts("2026-11-20T04:00:00Z"), ts("2026-11-23T10:00:00Z"));
        assert_eq!(due, Some(ts("2026-11-23T04:00:00Z")));
        assert_eq!(next, Some(ts("2026-11-24T04:00:00Z")));
        let (due, _) = s.due(ts("2026-11-23T04:00:00Z"), ts("2026-11-23T10:00:00Z"));
        assert_eq!(due, None, "already taken");
        assert!(Schedule::parse("@daily").is_ok());
        let every10s = Schedule::parse("*/10 * * * * *").unwrap();
        assert_eq!(every10s.next_after(ts("2026-11-23T04:00:01Z")), Some(ts("2026-11-23T04:00:10Z")));
        assert!(Schedule::parse("* * *").is_err());
        assert!(Schedule::parse("61 * * * *").is_err());
    }

    /// The admission rule on backup.schedule (its pattern, run here with the
    /// regex crate) accepts what the reconciler's parser accepts among
    /// common schedules, and refuses the malformed ones.
    #[test]
    fn admission_pattern_agrees_with_the_parser() {
        let pattern = regex::Regex::new(&crate::api::server::schedule_pattern()).unwrap();
        let good = [
            "0 4 * * *",
            "*/5 * * * *",
            "*/10 * * * * *",
            "0 0 1 * *",
            "30 2 * * 1-5",
            "0 0,12 * * *",
            "15 3 1-7 * MON",
            "0 4 * JAN,JUL SUN",
            "0 4 ? * 5#2",
            "0 4 L * *",
            "0 4 15W * *",
            "0 4 * * 5L",
            "0 22 * * 7",
            "5-55/10 * * * *",
            "0 */6 ? JAN-JUN MON-FRI",
            "@daily",
            "@hourly",
            "@weekly",
            "@monthly",
            "@yearly",
            "@annually",
        ];
        for s in good {
            assert!(Schedule::parse(s).is_ok(), "parser refuses {s:?}");
            assert!(pattern.is_match(s), "admission would refuse {s:?}");
        }
        let bad = [
            "daily",
            "@midnight",
            "61 * * * *",
            "0 24 * * *",
            "0 4 32 * *",
            "0 4 0 * *",
            "0 4 * 13 *",
            "0 4 * * 8",
            "a b c d e",
            "* * *",
            "* * * * * * *",
            "0 4 * * * extra",
            "*/5  * * * * * *",
        ];
        for s in bad {
            assert!(Schedule::parse(s).is_err(), "parser accepts {s:?}");
            assert!(!pattern.is_match(s), "admission would accept {s:?}");
        }
        // No quote or backslash: the pattern is embedded in a CEL string.
        assert!(!crate::api::server::schedule_pattern().contains(['\\', '\'']));
    }

    #[test]
    fn retention_keeps_by_any_rule_and_max_age_wins() {
        let c = |name: &str, t: &str, completed: bool| Candidate { name: name.into(), time: ts(t), completed };
        let snaps = vec![
            c("d1a", "2026-11-20T01:00:00Z", true),
            c("d1b", "2026-11-20T13:00:00Z", true),
            c("d2", "2026-11-21T01:00:00Z", true),
            c("d3", "2026-11-22T01:00:00Z", true),
            c("old", "2026-10-01T01:00:00Z", true),
            c("f1", "2026-11-22T02:00:00Z", false),
            c("f2", "2026-11-22T03:00:00Z", false),
            c("f3", "2026-11-22T04:00:00Z", false),
            c("f4", "2026-11-22T05:00:00Z", false),
        ];
        let now = ts("2026-11-22T12:00:00Z");
        let r = |l: Option<i32>, d: Option<i32>, w: Option<i32>, a: Option<&str>| Retention {
            keep_last: l,
            keep_daily: d,
            keep_weekly: w,
            max_age: a.map(str::to_string),
        };
        assert_eq!(prune(&snaps, &r(Some(2), None, None, None), now), vec!["d1a", "d1b", "f1", "old"]);
        // Daily keeps the newest of each of the last 3 days.
        assert_eq!(prune(&snaps, &r(None, Some(3), None, None), now), vec!["d1a", "f1", "old"]);
        // Weekly: 2026-11-22 is a Sunday (ISO week 47 with 11-20); October is another week.
        assert_eq!(prune(&snaps, &r(None, None, Some(2), None), now), vec!["d1a", "d1b", "d2", "f1"]);
        // maxAge removes even what a rule keeps.
        assert_eq!(prune(&snaps, &r(Some(10), None, None, Some("720h")), now), vec!["f1", "old"]);
        // No rule: keep every completed one.
        assert_eq!(prune(&snaps, &r(None, None, None, None), now), vec!["f1"]);
        assert_eq!(parse_duration("1h30m"), Some(SignedDuration::from_secs(5400)));
        assert_eq!(parse_duration("720h"), Some(SignedDuration::from_hours(720)));
        assert_eq!(parse_duration("h"), None);
        assert_eq!(parse_duration(""), None);
    }

    /// Issue 30 item 8(c): how close two runs of a schedule come.
    #[test]
    fn shortest_gap_between_two_runs() {
        let gap = |s: &str| Schedule::parse(s).unwrap().shortest_gap().map(|d| d.as_secs());
        assert_eq!(gap("* * * * * *"), Some(1));
        assert_eq!(gap("*/10 * * * * *"), Some(10));
        assert_eq!(gap("0,30 * * * * *"), Some(30));
        assert_eq!(gap("0 */1 * * * *"), Some(60));
        assert_eq!(gap("0 */7 * * * *"), Some(60 * 4), "minute 56 to the next hour's 0");
        assert_eq!(gap("* * * * *"), Some(60));
        assert_eq!(gap("*/5 * * * *"), Some(300));
        assert_eq!(gap("0 4 * * *"), Some(86400));
        assert_eq!(gap("0,1 0 * * *"), Some(60), "two runs a minute apart once a day");
        assert_eq!(gap("0 0,23 * * *"), Some(3600), "23:00 to the next day's 00:00");
        assert_eq!(gap("0,1 0 29 2 *"), Some(60), "on leap days only");
        assert_eq!(gap("0 23 1,2 * *"), Some(86400));
        assert_eq!(gap("@hourly"), Some(3600));
        assert!(gap("@yearly").unwrap() >= 365 * 86400);
        let min = std::time::Duration::from_secs(300);
        assert!(Schedule::parse("* * * * * *").unwrap().too_frequent("* * * * * *", min).unwrap().contains("1s apart"));
        assert!(Schedule::parse("*/5 * * * *").unwrap().too_frequent("*/5 * * * *", min).is_none());
        assert!(Schedule::parse("*/4 * * * *").unwrap().too_frequent("*/4 * * * *", min).is_some());
        assert!(Schedule::parse("* * * * *").unwrap().too_frequent("x", std::time::Duration::from_secs(60)).is_none());
        assert!(Schedule::parse("* * * * * *").unwrap().too_frequent("x", std::time::Duration::ZERO).is_none());
    }
}
