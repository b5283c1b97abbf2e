//! Validation: the raw config to the typed [`Program`] the engine runs, or a
//! [`ConfigError`] naming the offending field by its path.
//!
//! Owns: every rule of a valid config and its defaults. Must not: warn of what is valid
//! (`warnings`), or run a program.

use std::collections::{BTreeMap, BTreeSet};

use chrono_tz::Tz;
use serde::Deserialize;

use super::raw::*;
use super::*;
use crate::dec::{Dec, Rounding};
use crate::time::{Timestamp, Window};

mod offers;
mod tiers;

use offers::{validate_campaign, validate_reward};
pub use tiers::parse_month_day;
use tiers::validate_tiers;

pub(super) fn from_json<'a, T: Deserialize<'a>>(
    text: &'a str,
    prefix: &str,
) -> Result<T, ConfigError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let path = join(prefix, if path == "." { "" } else { &path });
        ConfigError::at(
            if path.is_empty() {
                ".".to_string()
            } else {
                path
            },
            with_position(&inner),
        )
    })?;
    de.end()
        .map_err(|e| ConfigError::at(".", with_position(&e)))?;
    Ok(value)
}

/// serde_json's message without its position, but for a text that is no JSON (a syntax
/// error, or an end too early): then where, so that a person finds the stray comma. (A
/// program update's text is JSON already, read from its record: its messages, which its
/// `rejected` line prints, stay without a position.)
fn with_position(e: &serde_json::Error) -> String {
    let msg = strip_position(&e.to_string());
    if e.is_syntax() || e.is_eof() {
        format!("{msg} (line {}, column {})", e.line(), e.column())
    } else {
        msg
    }
}

pub(super) fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

pub(super) fn join(prefix: &str, field: &str) -> String {
    match (prefix.is_empty(), field.is_empty()) {
        (true, _) => field.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) => format!("{prefix}.{field}"),
    }
}

/// Field-path helper used while validating.
pub(super) struct At<'a>(&'a str);

impl At<'_> {
    fn f(&self, field: &str) -> String {
        join(self.0, field)
    }

    fn err(&self, field: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::at(self.f(field), message)
    }

    fn non_negative_int(&self, field: &str, n: Num) -> Result<i64, ConfigError> {
        if n.0.is_negative() {
            return Err(self.err(field, "must not be negative"));
        }
        n.0.to_i64()
            .ok_or_else(|| self.err(field, "must be a whole number"))
    }

    fn small_int(&self, field: &str, n: Num) -> Result<u32, ConfigError> {
        let v = self.non_negative_int(field, n)?;
        u32::try_from(v).map_err(|_| self.err(field, "is too large"))
    }

    fn non_negative_dec(&self, field: &str, n: Num) -> Result<Dec, ConfigError> {
        if n.0.is_negative() {
            return Err(self.err(field, "must not be negative"));
        }
        Ok(n.0)
    }

    /// Greater than 0.
    fn multiplier(&self, field: &str, n: Num) -> Result<Dec, ConfigError> {
        self.positive_dec(field, n)
    }

    fn positive_dec(&self, field: &str, n: Num) -> Result<Dec, ConfigError> {
        let d = self.non_negative_dec(field, n)?;
        if d.is_zero() {
            return Err(self.err(field, "must be greater than 0"));
        }
        Ok(d)
    }

    fn time(&self, field: &str, s: Option<String>) -> Result<Option<Timestamp>, ConfigError> {
        s.map(|s| {
            Timestamp::parse_rfc3339(&s)
                .ok_or_else(|| self.err(field, format!("{s:?} is not an RFC 3339 time")))
        })
        .transpose()
    }

    /// A currency code: three letters, as ISO 4217's (`EUR`, `usd`).
    fn currency(&self, field: &str, s: &str) -> Result<(), ConfigError> {
        if s.len() == 3 && s.bytes().all(|c| c.is_ascii_alphabetic()) {
            Ok(())
        } else {
            Err(self.err(
                field,
                format!("{s:?} is not a currency code: expected three letters, such as \"EUR\""),
            ))
        }
    }

    fn non_empty(&self, field: &str, s: &str) -> Result<(), ConfigError> {
        if s.is_empty() {
            Err(self.err(field, "must not be empty"))
        } else {
            Ok(())
        }
    }
}

pub(super) fn unique<'a>(
    at: &At<'_>,
    list: &str,
    ids: impl Iterator<Item = &'a str>,
) -> Result<(), ConfigError> {
    let mut seen = BTreeSet::new();
    for (i, id) in ids.enumerate() {
        at.non_empty(&format!("{list}[{i}].id"), id)?;
        if !seen.insert(id) {
            return Err(at.err(&format!("{list}[{i}].id"), format!("duplicate id {id:?}")));
        }
    }
    Ok(())
}

pub(super) fn validate_program(p: RawProgram, path: &str) -> Result<Program, ConfigError> {
    let at = At(path);
    at.non_empty("id", &p.id)?;
    at.currency("currency", &p.currency)?;
    let rounding = match p.points.as_ref().and_then(|pt| pt.rounding.as_deref()) {
        None | Some("floor") => Rounding::Floor,
        Some("nearest") => Rounding::Nearest,
        Some("ceil") => Rounding::Ceil,
        Some(other) => {
            return Err(at.err(
                "points.rounding",
                format!("unknown rounding {other:?}: expected floor, nearest or ceil"),
            ))
        }
    };
    if let Some(pt) = &p.points {
        let _ = (&pt.name, &pt.symbol);
    }
    let timezone = p.timezone.unwrap_or_else(|| "UTC".to_string());
    let tz: Tz = timezone
        .parse()
        .map_err(|_| at.err("timezone", format!("unknown time zone {timezone:?}")))?;
    let refund_debt = match p.refund_debt.as_deref() {
        None | Some("allow") => RefundDebt::Allow,
        Some("writeOff") => RefundDebt::WriteOff,
        Some(other) => {
            return Err(at.err(
                "refundDebt",
                format!("unknown refund debt policy {other:?}: expected allow or writeOff"),
            ))
        }
    };
    let pending_days = p
        .pending_days
        .map(|n| -> Result<u32, ConfigError> {
            let days = at.small_int("pendingDays", n)?;
            if days == 0 {
                return Err(at.err(
                    "pendingDays",
                    "must be greater than 0 (leave it out for points that post at once)",
                ));
            }
            if days > 3650 {
                return Err(at.err("pendingDays", "must be at most 3650 (ten years)"));
            }
            Ok(days)
        })
        .transpose()?;
    let minimum_redemption = p
        .minimum_redemption
        .map(|n| at.non_negative_int("minimumRedemption", n))
        .transpose()?
        .unwrap_or(0);
    let expiry = p
        .points_expiry
        .map(|e| -> Result<Expiry, ConfigError> {
            let months = at.small_int("pointsExpiry.months", e.months)?;
            if months == 0 {
                return Err(at.err("pointsExpiry.months", "must be greater than 0"));
            }
            let warn_days = e
                .warn_days
                .map(|w| at.small_int("pointsExpiry.warnDays", w))
                .transpose()?
                .unwrap_or(0);
            Ok(Expiry { months, warn_days })
        })
        .transpose()?;

    let raw_rules = p.earning_rules.unwrap_or_default();
    unique(&at, "earningRules", raw_rules.iter().map(|r| r.id.as_str()))?;
    let rules = raw_rules
        .into_iter()
        .enumerate()
        .map(|(i, r)| validate_rule(r, &At(&at.f(&format!("earningRules[{i}]")))))
        .collect::<Result<Vec<_>, _>>()?;

    let tiers = p
        .tier_config
        .map(|t| validate_tiers(t, &At(&at.f("tierConfig"))))
        .transpose()?;

    let raw_campaigns = p.campaigns.unwrap_or_default();
    unique(
        &at,
        "campaigns",
        raw_campaigns.iter().map(|c| c.id.as_str()),
    )?;
    let campaigns = raw_campaigns
        .into_iter()
        .enumerate()
        .map(|(i, c)| validate_campaign(c, &At(&at.f(&format!("campaigns[{i}]")))))
        .collect::<Result<Vec<_>, _>>()?;

    let raw_rewards = p.rewards.unwrap_or_default();
    unique(&at, "rewards", raw_rewards.iter().map(|r| r.id.as_str()))?;
    let rewards = raw_rewards
        .into_iter()
        .enumerate()
        .map(|(i, r)| validate_reward(r, &At(&at.f(&format!("rewards[{i}]")))))
        .collect::<Result<Vec<_>, _>>()?;

    let raw_cards = p.stamp_cards.unwrap_or_default();
    unique(&at, "stampCards", raw_cards.iter().map(|c| c.id.as_str()))?;
    let mut stamp_cards = Vec::with_capacity(raw_cards.len());
    for (i, c) in raw_cards.into_iter().enumerate() {
        let cat = At(&at.f(&format!("stampCards[{i}]")));
        cat.non_empty("trigger", &c.trigger)?;
        let stamps_required = cat.small_int("stampsRequired", c.stamps_required)?;
        if stamps_required == 0 {
            return Err(cat.err("stampsRequired", "must be greater than 0"));
        }
        if !rewards.iter().any(|r| r.id == c.reward) {
            return Err(cat.err("reward", format!("reward {:?} is not defined", c.reward)));
        }
        let conditions = validate_conditions(c.conditions, &At(&cat.f("conditions")))?;
        stamp_cards.push(StampCard {
            id: c.id,
            trigger: c.trigger,
            stamps_required,
            conditions,
            reward: c.reward,
        });
    }

    Ok(Program {
        id: p.id.into(),
        name: p.name,
        currency: p.currency,
        rounding,
        timezone,
        tz,
        auto_enroll: p.auto_enroll.unwrap_or(false),
        minimum_redemption,
        refund_debt,
        pending_days,
        expiry,
        rules,
        tiers,
        campaigns,
        rewards,
        stamp_cards,
    })
}

pub(super) fn validate_rule(r: RawRule, at: &At<'_>) -> Result<Rule, ConfigError> {
    at.non_empty("trigger", &r.trigger)?;
    let aat = At(&at.f("award"));
    let need = |field: &str, v: Option<Num>| {
        v.ok_or_else(|| {
            aat.err(
                field,
                format!("missing field for award type {:?}", r.award.kind),
            )
        })
    };
    let refuse_extra = |field: &str, present: bool| {
        if present {
            Err(aat.err(
                field,
                format!("not a field of award type {:?}", r.award.kind),
            ))
        } else {
            Ok(())
        }
    };
    let a = &r.award;
    let award = match a.kind.as_str() {
        "per_amount" => {
            refuse_extra("rates", a.rates.is_some())?;
            refuse_extra("percent", a.percent.is_some())?;
            Award::PerAmount {
                per: aat.positive_dec("per", need("per", a.per)?)?,
                points: aat.non_negative_dec("points", need("points", a.points)?)?,
            }
        }
        "fixed" => {
            refuse_extra("per", a.per.is_some())?;
            refuse_extra("rates", a.rates.is_some())?;
            refuse_extra("percent", a.percent.is_some())?;
            Award::Fixed {
                points: aat.non_negative_dec("points", need("points", a.points)?)?,
            }
        }
        "per_currency" => {
            refuse_extra("points", a.points.is_some())?;
            refuse_extra("percent", a.percent.is_some())?;
            let raw_rates = a
                .rates
                .clone()
                .ok_or_else(|| aat.err("rates", "missing field for award type \"per_currency\""))?;
            let mut rates = BTreeMap::new();
            for (cur, n) in raw_rates {
                aat.currency(&format!("rates.{cur}"), &cur)?;
                let d = aat.non_negative_dec(&format!("rates.{cur}"), n)?;
                rates.insert(cur, d);
            }
            Award::PerCurrency {
                rates,
                per: aat.positive_dec("per", need("per", a.per)?)?,
            }
        }
        "cashback" => {
            refuse_extra("per", a.per.is_some())?;
            refuse_extra("points", a.points.is_some())?;
            refuse_extra("rates", a.rates.is_some())?;
            Award::Cashback {
                percent: aat.non_negative_dec("percent", need("percent", a.percent)?)?,
            }
        }
        other => {
            return Err(aat.err(
                "type",
                format!(
                    "unknown award type {other:?}: expected per_amount, fixed, per_currency or cashback"
                ),
            ))
        }
    };
    let multiplier = r
        .multiplier
        .map(|m| at.multiplier("multiplier", m))
        .transpose()?
        .unwrap_or(Dec::ONE);
    let cap = r
        .cap
        .map(|c| at.non_negative_int("cap.points", c.points))
        .transpose()?;
    let window = match r.window.as_deref() {
        None => Window::Lifetime,
        Some(w) => {
            let window = Window::parse(w).ok_or_else(|| {
                at.err(
                    "window",
                    format!("unknown window {w:?}: expected day, week, month, year or lifetime"),
                )
            })?;
            if cap.is_none() {
                return Err(at.err("window", "a window needs a cap"));
            }
            window
        }
    };
    let recipient = match r.recipient.as_deref() {
        None | Some("referrer") => Recipient::Referrer,
        Some("referee") => Recipient::Referee,
        Some(other) => {
            return Err(at.err(
                "recipient",
                format!("unknown recipient {other:?}: expected referrer or referee"),
            ))
        }
    };
    Ok(Rule {
        id: r.id.into(),
        trigger: r.trigger,
        award,
        multiplier,
        cap,
        window,
        conditions: validate_conditions(r.conditions, &At(&at.f("conditions")))?,
        recipient,
    })
}

pub(super) fn validate_conditions(
    c: Option<RawConditions>,
    at: &At<'_>,
) -> Result<Conditions, ConfigError> {
    let Some(c) = c else {
        return Ok(Conditions::default());
    };
    let int = |field: &str, v: Option<Num>| v.map(|n| at.non_negative_int(field, n)).transpose();
    let rank = |field: &str, v: Option<Num>| v.map(|n| at.small_int(field, n)).transpose();
    Ok(Conditions {
        min_amount: int("minAmount", c.min_amount)?,
        max_amount: int("maxAmount", c.max_amount)?,
        currencies: match c.currencies {
            Some(list) => {
                for (i, cur) in list.iter().enumerate() {
                    at.currency(&format!("currencies[{i}]"), cur)?;
                }
                Some(list)
            }
            None => None,
        },
        valid_from: at.time("validFrom", c.valid_from)?,
        valid_until: at.time("validUntil", c.valid_until)?,
        min_rank: rank("minRank", c.min_rank)?,
        max_rank: rank("maxRank", c.max_rank)?,
        metadata: c.metadata.unwrap_or_default(),
        max_uses: int("maxUses", c.max_uses)?.map(|v| v as u64),
    })
}
