//! Validation of `tierConfig` (SPEC section 5): the period, the tiers in rank order, the
//! lowest tier's threshold.
//!
//! Owns: the config errors of a program's tiers. Must not: change the program, or evaluate
//! a member's tier (`tiers` does).

use super::*;

pub(in crate::config) fn validate_tiers(
    t: RawTierConfig,
    at: &At<'_>,
) -> Result<TierConfig, ConfigError> {
    let qualify_on = match t.qualify_on.as_deref() {
        None | Some("spend") => QualifyOn::Spend,
        Some("points") => QualifyOn::Points,
        Some("custom") => QualifyOn::Custom,
        Some(other) => {
            return Err(at.err(
                "qualifyOn",
                format!("unknown qualifyOn {other:?}: expected spend, points or custom"),
            ))
        }
    };
    let months = at.small_int("period.months", t.period.months)?;
    if months == 0 {
        return Err(at.err("period.months", "must be greater than 0"));
    }
    let period = match t.period.kind.as_str() {
        "rolling" => {
            if t.period.start.is_some() {
                return Err(at.err("period.start", "only a calendar period has a start"));
            }
            Period::Rolling { months }
        }
        "calendar" => {
            let start = match t.period.start.as_deref() {
                None => (1, 1),
                Some(s) => parse_month_day(s).ok_or_else(|| {
                    at.err(
                        "period.start",
                        format!("{s:?} is not a month-day \"MM-DD\""),
                    )
                })?,
            };
            Period::Calendar { months, start }
        }
        other => {
            return Err(at.err(
                "period.type",
                format!("unknown period type {other:?}: expected rolling or calendar"),
            ))
        }
    };
    if t.tiers.is_empty() {
        return Err(at.err("tiers", "must list at least one tier"));
    }
    let mut tiers: Vec<Tier> = Vec::with_capacity(t.tiers.len());
    let mut names = BTreeSet::new();
    for (i, raw) in t.tiers.into_iter().enumerate() {
        let tat = At(&at.f(&format!("tiers[{i}]")));
        tat.non_empty("name", &raw.name)?;
        if !names.insert(raw.name.clone()) {
            return Err(tat.err("name", format!("duplicate tier name {:?}", raw.name)));
        }
        let rank = tat.small_int("rank", raw.rank)?;
        if let Some(prev) = tiers.last() {
            if rank == prev.rank {
                return Err(tat.err("rank", format!("duplicate rank {rank}")));
            }
            if rank < prev.rank {
                return Err(tat.err(
                    "rank",
                    format!(
                        "ranks must be listed in increasing order ({rank} after {})",
                        prev.rank
                    ),
                ));
            }
        }
        let redemption_discount = raw
            .redemption_discount
            .map(|d| tat.non_negative_dec("redemptionDiscount", d))
            .transpose()?
            .unwrap_or(Dec::ZERO);
        if redemption_discount.parts().0 > 100 * 10i128.pow(redemption_discount.parts().1) {
            return Err(tat.err("redemptionDiscount", "must be at most 100"));
        }
        tiers.push(Tier {
            name: raw.name,
            rank,
            threshold: tat.non_negative_int("threshold", raw.threshold)?,
            earn_multiplier: raw
                .earn_multiplier
                .map(|m| tat.multiplier("earnMultiplier", m))
                .transpose()?
                .unwrap_or(Dec::ONE),
            redemption_discount,
        });
    }
    // Every member sits in a tier: the lowest one holds whoever has no value yet.
    if tiers[0].threshold > 0 {
        return Err(at.err(
            "tiers[0].threshold",
            format!(
                "the lowest tier ({:?}) must have threshold 0, or no member could ever be in a tier",
                tiers[0].name
            ),
        ));
    }
    Ok(TierConfig {
        qualify_on,
        period,
        soft_landing: t.soft_landing.unwrap_or(false),
        tiers,
    })
}

/// Parses `"MM-DD"` (February 29 allowed).
pub fn parse_month_day(s: &str) -> Option<(u32, u32)> {
    let b = s.as_bytes();
    if b.len() != 5
        || b[2] != b'-'
        || !b
            .iter()
            .enumerate()
            .all(|(i, c)| i == 2 || c.is_ascii_digit())
    {
        return None;
    }
    let month: u32 = s[..2].parse().ok()?;
    let day: u32 = s[3..].parse().ok()?;
    chrono::NaiveDate::from_ymd_opt(2024, month, day).map(|_| (month, day))
}
