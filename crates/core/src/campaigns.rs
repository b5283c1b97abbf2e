//! Campaigns (SPEC sections 3 and 4): a time-boxed layer of multipliers and bonuses.
//!
//! Owns: when a campaign applies to an event. Must not write anything.

use crate::config::Campaign;
use crate::time::Timestamp;

/// True when `c` is active at `at` (half-open `[starts, ends)`), targets `trigger`, and a
/// member of `rank` meets its rank condition.
pub fn applies(c: &Campaign, trigger: &str, at: Timestamp, rank: u32) -> bool {
    c.starts.is_none_or(|s| at >= s)
        && c.ends.is_none_or(|e| at < e)
        && c.triggers
            .as_ref()
            .is_none_or(|ts| ts.iter().any(|t| t == trigger))
        && rank >= c.min_rank
        && c.max_rank.is_none_or(|m| rank <= m)
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
            1
        ));
        assert!(!applies(
            &c,
            "payment.completed",
            t("2026-07-06T00:00:00Z"),
            1
        ));
        assert!(!applies(
            &c,
            "payment.completed",
            t("2026-07-03T23:59:59Z"),
            1
        ));
        assert!(!applies(&c, "invoice.paid", t("2026-07-05T00:00:00Z"), 1));
        assert!(!applies(
            &c,
            "payment.completed",
            t("2026-07-05T00:00:00Z"),
            0
        ));
        assert!(!applies(
            &c,
            "payment.completed",
            t("2026-07-05T00:00:00Z"),
            3
        ));
        let all = Campaign {
            triggers: None,
            ..c
        };
        assert!(applies(&all, "erp.order", t("2026-07-05T00:00:00Z"), 2));
    }
}
