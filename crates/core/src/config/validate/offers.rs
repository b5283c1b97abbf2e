//! Validation of campaigns (SPEC sections 4 and 13, with their schedules) and rewards
//! (SPEC section 7).
//!
//! Owns: the config errors of a program's campaigns and rewards. Must not: change the
//! program, or apply a campaign or a reward (`campaigns` and `redemption` do).

use super::*;

/// `HH:MM`, `00:00` to `24:00`, as seconds after midnight.
fn time_of_day(at: &At<'_>, field: &str, text: &str) -> Result<u32, ConfigError> {
    let parsed = text.split_once(':').and_then(|(h, m)| {
        let ok = h.len() == 2 && m.len() == 2;
        let (h, m) = (h.parse::<u32>().ok()?, m.parse::<u32>().ok()?);
        (ok && m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 3600 + m * 60)
    });
    parsed.ok_or_else(|| {
        at.err(
            field,
            format!("must be a time of day HH:MM (00:00 to 24:00), not {text:?}"),
        )
    })
}

fn validate_schedule(s: RawSchedule, at: &At<'_>) -> Result<Schedule, ConfigError> {
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    if s.days.is_empty() {
        return Err(at.err("schedule.days", "must list at least one day"));
    }
    let mut days = 0u8;
    for (i, d) in s.days.iter().enumerate() {
        let Some(n) = DAYS.iter().position(|x| x == d) else {
            return Err(at.err(
                &format!("schedule.days[{i}]"),
                format!("must be one of mon, tue, wed, thu, fri, sat, sun, not {d:?}"),
            ));
        };
        if days & (1 << n) != 0 {
            return Err(at.err(
                &format!("schedule.days[{i}]"),
                format!("{d} is listed twice"),
            ));
        }
        days |= 1 << n;
    }
    let from = match &s.from {
        Some(t) => time_of_day(at, "schedule.from", t)?,
        None => 0,
    };
    let until = match &s.until {
        Some(t) => time_of_day(at, "schedule.until", t)?,
        None => 86_400,
    };
    if from >= until {
        return Err(at.err("schedule.from", "must be before schedule.until"));
    }
    Ok(Schedule { days, from, until })
}

pub(in crate::config) fn validate_campaign(
    c: RawCampaign,
    at: &At<'_>,
) -> Result<Campaign, ConfigError> {
    let schedule = c.schedule.map(|s| validate_schedule(s, at)).transpose()?;
    let starts = at.time("starts", c.starts)?;
    let ends = at.time("ends", c.ends)?;
    if let (Some(s), Some(e)) = (starts, ends) {
        if e < s {
            return Err(at.err("ends", "must not be before starts"));
        }
    }
    if let Some(triggers) = &c.triggers {
        for (i, t) in triggers.iter().enumerate() {
            at.non_empty(&format!("triggers[{i}]"), t)?;
        }
    }
    Ok(Campaign {
        id: c.id.into(),
        name: c.name,
        starts,
        ends,
        multiplier: c
            .multiplier
            .map(|m| at.multiplier("multiplier", m))
            .transpose()?
            .unwrap_or(Dec::ONE),
        triggers: c.triggers,
        min_rank: c
            .min_rank
            .map(|n| at.small_int("minRank", n))
            .transpose()?
            .unwrap_or(0),
        max_rank: c.max_rank.map(|n| at.small_int("maxRank", n)).transpose()?,
        bonus: c
            .bonus
            .map(|b| at.non_negative_int("bonus.points", b.points))
            .transpose()?,
        schedule,
    })
}

pub(in crate::config) fn validate_reward(r: RawReward, at: &At<'_>) -> Result<Reward, ConfigError> {
    let starts = at.time("starts", r.starts)?;
    let ends = at.time("ends", r.ends)?;
    if let (Some(s), Some(e)) = (starts, ends) {
        if e < s {
            return Err(at.err("ends", "must not be before starts"));
        }
    }
    let opt = |field: &str, v: Option<Num>| v.map(|n| at.non_negative_int(field, n)).transpose();
    Ok(Reward {
        id: r.id,
        name: r.name,
        cost: at.non_negative_int("cost", r.cost)?,
        kind: r.kind,
        stock: opt("stock", r.stock)?,
        min_rank: r
            .min_rank
            .map(|n| at.small_int("minRank", n))
            .transpose()?
            .unwrap_or(0),
        max_rank: r.max_rank.map(|n| at.small_int("maxRank", n)).transpose()?,
        max_per_member: opt("maxPerMember", r.max_per_member)?,
        starts,
        ends,
    })
}
