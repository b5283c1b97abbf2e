//! Campaigns (SPEC sections 3 and 4): a time-boxed layer of multipliers and bonuses.
//!
//! Owns: when a campaign applies to an event. Must not write anything.

use chrono::{Datelike, Timelike};
use chrono_tz::Tz;

use crate::config::{Campaign, Schedule};
use crate::time::Timestamp;

/// True when `c` is active at `at` (half-open `[starts, ends)`, and within its schedule in
/// the program's zone `tz`), targets `trigger`, and a member of `rank` meets its rank
/// condition.
pub fn applies(c: &Campaign, trigger: &str, at: Timestamp, rank: u32, tz: Tz) -> bool {
    c.starts.is_none_or(|s| at >= s)
        && c.ends.is_none_or(|e| at < e)
        && c.schedule.is_none_or(|s| in_schedule(s, at, tz))
        && c.triggers
            .as_ref()
            .is_none_or(|ts| ts.iter().any(|t| t == trigger))
        && rank >= c.min_rank
        && c.max_rank.is_none_or(|m| rank <= m)
}

/// Whether `at` falls on a listed weekday, in `[from, until)` of its local day.
pub fn in_schedule(s: Schedule, at: Timestamp, tz: Tz) -> bool {
    let Some(local) = at.local(tz) else {
        return false;
    };
    let day = local.weekday().num_days_from_monday();
    let second = local.num_seconds_from_midnight();
    s.days & (1 << day) != 0 && s.from <= second && second < s.until
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dec::Dec;

    fn camp() -> Campaign {
        Campaign {
            id: "camp_w".into(),
            name: None,
            starts: Timestamp::parse_rfc3339("2026-07-04T00:00:00Z"),
            ends: Timestamp::parse_rfc3339("2026-07-06T00:00:00Z"),
            multiplier: Dec::from_int(3),
            triggers: Some(vec!["payment.completed".into()]),
            min_rank: 1,
            max_rank: Some(2),
            bonus: None,
            schedule: None,
        }
    }

    #[test]
    fn half_open_range_triggers_and_ranks() {
        let c = camp();
        let t = |s: &str| Timestamp::parse_rfc3339(s).unwrap();
        assert!(applies(
            &c,
            "payment.completed",
            t("2026-07-04T00:00:00Z"),
            1,
            chrono_tz::UTC
        ));
        assert!(!applies(
            &c,
            "payment.completed",
            t("2026-07-06T00:00:00Z"),
            1,
            chrono_tz::UTC
        ));
        assert!(!applies(
            &c,
            "payment.completed",
            t("2026-07-03T23:59:59Z"),
            1,
            chrono_tz::UTC
        ));
        assert!(!applies(
            &c,
            "invoice.paid",
            t("2026-07-05T00:00:00Z"),
            1,
            chrono_tz::UTC
        ));
        assert!(!applies(
            &c,
            "payment.completed",
            t("2026-07-05T00:00:00Z"),
            0,
            chrono_tz::UTC
        ));
        assert!(!applies(
            &c,
            "payment.completed",
            t("2026-07-05T00:00:00Z"),
            3,
            chrono_tz::UTC
        ));
        let all = Campaign {
            triggers: None,
            ..c
        };
        assert!(applies(
            &all,
            "erp.order",
            t("2026-07-05T00:00:00Z"),
            2,
            chrono_tz::UTC
        ));
    }

    #[test]
    fn a_weekend_schedule_follows_local_days_across_a_dst_change() {
        // Sat and Sun, 10:00 to 24:00 in Berlin. Clocks went forward on Sunday
        // 2026-03-29 (CET to CEST) and back on Sunday 2026-10-25.
        let c = Campaign {
            triggers: None,
            starts: None,
            ends: None,
            min_rank: 0,
            max_rank: None,
            schedule: Some(Schedule {
                days: (1 << 5) | (1 << 6),
                from: 10 * 3600,
                until: 86_400,
            }),
            ..camp()
        };
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let at = |s: &str| applies(&c, "x", Timestamp::parse_rfc3339(s).unwrap(), 0, berlin);
        // Saturday 28 March, winter time (UTC+1): 10:00 local is 09:00 UTC.
        assert!(!at("2026-03-28T08:59:59Z"));
        assert!(at("2026-03-28T09:00:00Z"));
        // Sunday 29 March, summer time (UTC+2): 10:00 local is 08:00 UTC.
        assert!(!at("2026-03-29T07:59:59Z"));
        assert!(at("2026-03-29T08:00:00Z"));
        assert!(at("2026-03-29T21:59:59Z"), "23:59:59 local on Sunday");
        assert!(!at("2026-03-29T22:00:00Z"), "Monday 00:00 local");
        // Sunday 25 October: back to winter time during the night.
        assert!(at("2026-10-25T09:00:00Z"), "10:00 CET");
        assert!(!at("2026-10-25T08:59:59Z"), "09:59:59 CET");
        // A Friday.
        assert!(!at("2026-10-23T12:00:00Z"));
        // The dates still bound it.
        let bounded = Campaign {
            ends: Timestamp::parse_rfc3339("2026-03-29T00:00:00Z"),
            ..c.clone()
        };
        assert!(!applies(
            &bounded,
            "x",
            Timestamp::parse_rfc3339("2026-03-29T12:00:00Z").unwrap(),
            0,
            berlin
        ));
    }
}
