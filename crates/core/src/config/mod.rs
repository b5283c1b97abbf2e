//! Program configuration (SPEC section 3): parsed strictly, validated once, refused whole.
//!
//! The `Raw*` structs mirror the JSON exactly (`deny_unknown_fields`, field names as in the
//! seed API, `null` read as absent); `validate_program` turns them into the typed
//! [`Program`] the engine runs, or a [`ConfigError`] that names the offending field by its
//! path (`programs[0].earningRules[1].award.per: must be greater than 0`). Numbers are read
//! from their JSON text as exact decimals ([`Dec`]); no float is ever made.
//!
//! Owns: the config schema, defaults and every validation rule. Must not touch state.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use chrono_tz::Tz;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::dec::{Dec, Rounding};
use crate::time::{Timestamp, Window};

mod raw;
#[cfg(test)]
mod tests;
mod validate;
mod warnings;
pub use warnings::{program_warnings, warnings, ConfigWarning};

use raw::{RawConfig, RawProgram};
pub use validate::parse_month_day;
use validate::{from_json, validate_program};

/// A config that does not validate: the path of the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// The field, as `programs[0].earningRules[1].award.per` (or `.` for the whole file).
    pub path: String,
    /// What is wrong, for a person.
    pub message: String,
}

impl ConfigError {
    fn at(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Every program of a config file, in the order listed.
#[derive(Debug, Clone)]
pub struct Config {
    /// The programs, in file order.
    pub programs: Vec<Arc<Program>>,
}

/// A validated program.
#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    /// `prog_…`, chosen by the operator.
    pub id: crate::Sym,
    /// Display name.
    pub name: Option<String>,
    /// The program currency (for `qualifyOn: spend`).
    pub currency: String,
    /// How an exact award becomes whole points.
    pub rounding: Rounding,
    /// The IANA name, as configured.
    pub timezone: String,
    /// The parsed time zone.
    pub tz: Tz,
    /// Enrol unknown customers on their first event.
    pub auto_enroll: bool,
    /// The smallest balance a redemption may start from.
    pub minimum_redemption: i64,
    /// What a refund does with points already spent (SPEC section 13).
    pub refund_debt: RefundDebt,
    /// Days a payment's awards stay pending before they vest (SPEC section 13).
    pub pending_days: Option<u32>,
    /// Points expiry, if points expire.
    pub expiry: Option<Expiry>,
    /// Earning rules, in the order listed (the order they fire in).
    pub rules: Vec<Rule>,
    /// Tiers, if the program has any.
    pub tiers: Option<TierConfig>,
    /// Campaigns, in the order listed.
    pub campaigns: Vec<Campaign>,
    /// The reward catalogue.
    pub rewards: Vec<Reward>,
    /// Stamp cards.
    pub stamp_cards: Vec<StampCard>,
}

/// `pointsExpiry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    /// Lots expire this many months after they were awarded.
    pub months: u32,
    /// The warning goes out this many local days before.
    pub warn_days: u32,
}

/// An earning rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// `rule_…`.
    pub id: crate::Sym,
    /// The event type it fires on.
    pub trigger: String,
    /// What it awards.
    pub award: Award,
    /// The rule multiplier (default 1).
    pub multiplier: Dec,
    /// The cap: at most this many points per member within `window`.
    pub cap: Option<i64>,
    /// The cap window (`lifetime` when a cap has no window).
    pub window: Window,
    /// When it fires.
    pub conditions: Conditions,
    /// Who a `referral.converted` rule awards.
    pub recipient: Recipient,
}

/// `award`.
#[derive(Debug, Clone, PartialEq)]
pub enum Award {
    /// `amount × points / per`.
    PerAmount {
        /// Minor units per step.
        per: Dec,
        /// Points per step.
        points: Dec,
    },
    /// A fixed number of points.
    Fixed {
        /// The points.
        points: Dec,
    },
    /// `amount × rates[currency] / per`.
    PerCurrency {
        /// Points per `per` minor units, by currency.
        rates: BTreeMap<String, Dec>,
        /// Minor units per step.
        per: Dec,
    },
    /// Money back: `amount × percent / 100` in the payment's currency, floored.
    Cashback {
        /// The percentage.
        percent: Dec,
    },
}

/// Who a `referral.converted` rule awards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipient {
    /// The member who referred (default).
    Referrer,
    /// The member who was referred.
    Referee,
}

/// Rule and stamp-card conditions; every one optional.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Conditions {
    /// Smallest amount, inclusive.
    pub min_amount: Option<i64>,
    /// Largest amount, inclusive.
    pub max_amount: Option<i64>,
    /// Currencies the event must be in.
    pub currencies: Option<Vec<String>>,
    /// Event time from, inclusive.
    pub valid_from: Option<Timestamp>,
    /// Event time until, exclusive.
    pub valid_until: Option<Timestamp>,
    /// Lowest tier rank held before the event.
    pub min_rank: Option<u32>,
    /// Highest tier rank held before the event.
    pub max_rank: Option<u32>,
    /// Key/values that `data.metadata` must hold.
    pub metadata: BTreeMap<String, String>,
    /// Times the rule may award one member, ever.
    pub max_uses: Option<u64>,
}

/// `tierConfig`.
#[derive(Debug, Clone, PartialEq)]
pub struct TierConfig {
    /// What counts towards qualification.
    pub qualify_on: QualifyOn,
    /// The qualification period.
    pub period: Period,
    /// Drop one rank at a time.
    pub soft_landing: bool,
    /// Tiers in rank order (strictly increasing ranks).
    pub tiers: Vec<Tier>,
}

/// `qualifyOn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QualifyOn {
    /// Payment amounts in the program currency, minus refunds.
    Spend,
    /// Points awarded by rules and campaigns, minus reversals.
    Points,
    /// `loyalty.qualifying_activity.record` amounts.
    Custom,
}

/// `tierConfig.period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// The last N months, evaluated at every local day boundary.
    Rolling {
        /// N.
        months: u32,
    },
    /// Periods of N months starting on a month-day, evaluated at each close.
    Calendar {
        /// N.
        months: u32,
        /// (month, day) of `start`.
        start: (u32, u32),
    },
}

/// A tier.
#[derive(Debug, Clone, PartialEq)]
pub struct Tier {
    /// Its name (tiers are matched by name across program updates).
    pub name: String,
    /// Its rank.
    pub rank: u32,
    /// The qualifying value that reaches it.
    pub threshold: i64,
    /// Earn multiplier (default 1).
    pub earn_multiplier: Dec,
    /// Percent off reward costs (default 0).
    pub redemption_discount: Dec,
}

/// A campaign.
#[derive(Debug, Clone, PartialEq)]
pub struct Campaign {
    /// `camp_…`.
    pub id: crate::Sym,
    /// Display name.
    pub name: Option<String>,
    /// Active from, inclusive.
    pub starts: Option<Timestamp>,
    /// Active until, exclusive.
    pub ends: Option<Timestamp>,
    /// Multiplier on rule awards (default 1).
    pub multiplier: Dec,
    /// Triggers it targets; `None` is all.
    pub triggers: Option<Vec<String>>,
    /// Lowest rank it applies to.
    pub min_rank: u32,
    /// Highest rank it applies to.
    pub max_rank: Option<u32>,
    /// Points it adds for every targeted event.
    pub bonus: Option<i64>,
    /// The days and hours it is active in, within `[starts, ends)` (SPEC section 13).
    pub schedule: Option<Schedule>,
}

/// What a reversal does with points the lots no longer hold (spent or expired).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RefundDebt {
    /// They become a debt that later credits pay off (SPEC section 7).
    #[default]
    Allow,
    /// They are written off: the balance never goes below zero.
    WriteOff,
}

/// A recurring campaign's week: the weekdays it is active on, and the local time of day
/// `[from, until)` on each of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Bit `d` for the weekday `d` days after Monday.
    pub days: u8,
    /// Seconds after local midnight, inclusive.
    pub from: u32,
    /// Seconds after local midnight, exclusive (86,400 for `24:00`).
    pub until: u32,
}

/// A catalogue item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reward {
    /// `rwd_…`.
    pub id: String,
    /// Display name.
    pub name: Option<String>,
    /// Points per unit.
    pub cost: i64,
    /// `product`, `discount`, …
    pub kind: Option<String>,
    /// Units that may ever be redeemed.
    pub stock: Option<i64>,
    /// Lowest rank that may redeem.
    pub min_rank: u32,
    /// Highest rank that may redeem.
    pub max_rank: Option<u32>,
    /// Units one member may redeem, ever.
    pub max_per_member: Option<i64>,
    /// Available from, inclusive.
    pub starts: Option<Timestamp>,
    /// Available until, exclusive.
    pub ends: Option<Timestamp>,
}

/// A stamp card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StampCard {
    /// `card_…`.
    pub id: String,
    /// The event type that stamps it.
    pub trigger: String,
    /// Stamps to complete it.
    pub stamps_required: u32,
    /// Which events stamp it.
    pub conditions: Conditions,
    /// The reward it issues.
    pub reward: String,
}

impl Program {
    /// The tier config's tiers, or none.
    pub fn tier_list(&self) -> &[Tier] {
        self.tiers
            .as_ref()
            .map(|t| t.tiers.as_slice())
            .unwrap_or(&[])
    }

    /// The tier of that name.
    pub fn tier(&self, name: &str) -> Option<&Tier> {
        self.tier_list().iter().find(|t| t.name == name)
    }

    /// A reward by id.
    pub fn reward(&self, id: &str) -> Option<&Reward> {
        self.rewards.iter().find(|r| r.id == id)
    }
}

impl Rounding {
    /// Its name in a config.
    pub fn as_str(self) -> &'static str {
        match self {
            Rounding::Floor => "floor",
            Rounding::Nearest => "nearest",
            Rounding::Ceil => "ceil",
        }
    }
}

impl fmt::Display for Rounding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses and validates a config file (`{"programs": [...]}`).
pub fn parse_config(text: &str) -> Result<Config, ConfigError> {
    let raw: RawConfig = from_json(text, "")?;
    let mut programs = Vec::with_capacity(raw.programs.len());
    let mut ids = BTreeSet::new();
    for (i, p) in raw.programs.into_iter().enumerate() {
        let path = format!("programs[{i}]");
        if !ids.insert(p.id.clone()) {
            return Err(ConfigError::at(
                format!("{path}.id"),
                format!("duplicate program id {:?}", p.id),
            ));
        }
        programs.push(Arc::new(validate_program(p, &path)?));
    }
    Ok(Config { programs })
}

/// The JSON text of each program of a config file, with its id, in file order (for the
/// streaming service, which writes its configured programs into its log). The file must
/// validate.
pub fn program_texts(text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    #[derive(Deserialize)]
    struct Programs {
        programs: Vec<Box<RawValue>>,
    }
    let config = parse_config(text)?;
    let raw: Programs =
        serde_json::from_str(text).map_err(|e| ConfigError::at(".", e.to_string()))?;
    Ok(config
        .programs
        .iter()
        .zip(raw.programs)
        .map(|(p, r)| (p.id.to_string(), r.get().to_string()))
        .collect())
}

/// Parses and validates one program object (the data of `loyalty.program.updated`).
pub fn parse_program(text: &str) -> Result<Program, ConfigError> {
    let raw: RawProgram = from_json(text, "")?;
    validate_program(raw, "")
}
