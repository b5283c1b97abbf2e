//! Caps (SPEC section 4): how many points a rule may still award a member in a window.
//!
//! Windows are calendar windows of the program's time zone by event time, so a late event
//! counts against the window it belongs to. Headroom is counted from the member's award
//! history for the rule, so a program update that changes the window or the zone counts the
//! awards inside the window "as the update defines it".
//!
//! Owns: headroom. Must not write anything.

use chrono_tz::Tz;

use crate::config::Rule;
use crate::state::RuleUsage;
use crate::time::{Timestamp, Window};

/// Points `rule` may still award under its cap to a member with `usage`, for an event at
/// `at`; `None` when the rule has no cap.
pub fn headroom(rule: &Rule, usage: Option<&RuleUsage>, at: Timestamp, tz: Tz) -> Option<i128> {
    let cap = i128::from(rule.cap?);
    let used = match (usage, rule.window) {
        (None, _) => 0,
        (Some(u), Window::Lifetime) => u.total,
        (Some(u), w) => match w.range(at, tz) {
            Some((from, to)) => u.awarded_between(from, to),
            // Outside the calendar's range: count everything, the safe side of a cap.
            None => u.total,
        },
    };
    Some((cap - used).max(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Award, Conditions, Recipient};
    use crate::dec::Dec;

    fn rule(cap: i64, window: Window) -> Rule {
        Rule {
            id: "rule_a".into(),
            trigger: "payment.completed".into(),
            award: Award::Fixed { points: Dec::ONE },
            multiplier: Dec::ONE,
            cap: Some(cap),
            window,
            conditions: Conditions::default(),
            recipient: Recipient::Referrer,
        }
    }

    #[test]
    fn counts_only_the_window_of_the_event() {
        let t = |s: &str| Timestamp::parse_rfc3339(s).unwrap();
        let mut u = RuleUsage::default();
        u.record(t("2026-03-02T10:00:00Z"), 3000);
        u.record(t("2026-03-15T10:00:00Z"), 2000);
        let utc = chrono_tz::UTC;
        let r = rule(5000, Window::Month);
        assert_eq!(
            headroom(&r, Some(&u), t("2026-03-20T10:00:00Z"), utc),
            Some(0)
        );
        assert_eq!(
            headroom(&r, Some(&u), t("2026-04-01T00:00:00Z"), utc),
            Some(5000)
        );
        // a late event in February sees February's window
        assert_eq!(
            headroom(&r, Some(&u), t("2026-02-27T00:00:00Z"), utc),
            Some(5000)
        );
        let w = rule(2500, Window::Week);
        // 2026-03-15 is a Sunday: its ISO week began on Monday 03-09
        assert_eq!(
            headroom(&w, Some(&u), t("2026-03-09T00:00:00Z"), utc),
            Some(500)
        );
        assert_eq!(
            headroom(&w, Some(&u), t("2026-03-16T00:00:00Z"), utc),
            Some(2500)
        );
        let l = rule(6000, Window::Lifetime);
        assert_eq!(
            headroom(&l, Some(&u), t("2030-01-01T00:00:00Z"), utc),
            Some(1000)
        );
        assert_eq!(
            headroom(&l, None, t("2030-01-01T00:00:00Z"), utc),
            Some(6000)
        );
    }

    #[test]
    fn windows_follow_the_program_time_zone() {
        let t = |s: &str| Timestamp::parse_rfc3339(s).unwrap();
        let mut u = RuleUsage::default();
        // 23:30 UTC on March 31 is April 1 in Berlin.
        u.record(t("2026-03-31T23:30:00Z"), 100);
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let r = rule(100, Window::Day);
        assert_eq!(
            headroom(&r, Some(&u), t("2026-04-01T12:00:00Z"), berlin),
            Some(0)
        );
        assert_eq!(
            headroom(&r, Some(&u), t("2026-04-01T12:00:00Z"), chrono_tz::UTC),
            Some(100)
        );
    }
}
