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
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::dec::{Dec, Rounding};
use crate::time::{Timestamp, Window};

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

/// A JSON number read exactly from its text.
#[derive(Clone, Copy, Debug)]
struct Num(Dec);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Num, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        let text = raw.get();
        text.parse::<Dec>().map(Num).map_err(|e| match e {
            crate::dec::DecError::Syntax => D::Error::custom(format!(
                "invalid type: {}, expected a number",
                json_kind(text)
            )),
            crate::dec::DecError::Range => D::Error::custom(e.to_string()),
        })
    }
}

fn json_kind(text: &str) -> &'static str {
    match text.as_bytes().first() {
        Some(b'"') => "a string",
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b't') | Some(b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a value",
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    programs: Vec<RawProgram>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawProgram {
    id: String,
    name: Option<String>,
    currency: String,
    points: Option<RawPoints>,
    timezone: Option<String>,
    auto_enroll: Option<bool>,
    minimum_redemption: Option<Num>,
    points_expiry: Option<RawExpiry>,
    earning_rules: Option<Vec<RawRule>>,
    tier_config: Option<RawTierConfig>,
    campaigns: Option<Vec<RawCampaign>>,
    rewards: Option<Vec<RawReward>>,
    stamp_cards: Option<Vec<RawStampCard>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPoints {
    name: Option<String>,
    symbol: Option<String>,
    rounding: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawExpiry {
    months: Num,
    warn_days: Option<Num>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: String,
    trigger: String,
    award: RawAward,
    multiplier: Option<Num>,
    cap: Option<RawCap>,
    window: Option<String>,
    conditions: Option<RawConditions>,
    recipient: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAward {
    #[serde(rename = "type")]
    kind: String,
    per: Option<Num>,
    points: Option<Num>,
    rates: Option<BTreeMap<String, Num>>,
    percent: Option<Num>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCap {
    points: Num,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConditions {
    min_amount: Option<Num>,
    max_amount: Option<Num>,
    currencies: Option<Vec<String>>,
    valid_from: Option<String>,
    valid_until: Option<String>,
    min_rank: Option<Num>,
    max_rank: Option<Num>,
    metadata: Option<BTreeMap<String, String>>,
    max_uses: Option<Num>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawTierConfig {
    qualify_on: Option<String>,
    period: RawPeriod,
    soft_landing: Option<bool>,
    tiers: Vec<RawTier>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeriod {
    #[serde(rename = "type")]
    kind: String,
    months: Num,
    start: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawTier {
    name: String,
    rank: Num,
    threshold: Num,
    earn_multiplier: Option<Num>,
    redemption_discount: Option<Num>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawCampaign {
    id: String,
    name: Option<String>,
    starts: Option<String>,
    ends: Option<String>,
    multiplier: Option<Num>,
    triggers: Option<Vec<String>>,
    min_rank: Option<Num>,
    max_rank: Option<Num>,
    bonus: Option<RawBonus>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBonus {
    points: Num,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawReward {
    id: String,
    name: Option<String>,
    cost: Num,
    kind: Option<String>,
    stock: Option<Num>,
    min_rank: Option<Num>,
    max_rank: Option<Num>,
    max_per_member: Option<Num>,
    starts: Option<String>,
    ends: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawStampCard {
    id: String,
    trigger: String,
    stamps_required: Num,
    conditions: Option<RawConditions>,
    reward: String,
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
    pub id: String,
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
    pub id: String,
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
    pub id: String,
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

impl fmt::Display for Rounding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rounding::Floor => "floor",
            Rounding::Nearest => "nearest",
            Rounding::Ceil => "ceil",
        })
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
        programs.push(Arc::new(validate_program(p, &path, true)?));
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
        .map(|(p, r)| (p.id.clone(), r.get().to_string()))
        .collect())
}

/// Parses and validates one program object (the data of `loyalty.program.updated`).
pub fn parse_program(text: &str) -> Result<Program, ConfigError> {
    let raw: RawProgram = from_json(text, "")?;
    validate_program(raw, "", true)
}

/// Parses a program a state stored: the checks of [`parse_program`] but those added after
/// the program may have been stored (a currency of three letters, multipliers above 0, a
/// lowest tier at threshold 0), so that a state an earlier version wrote still opens. New
/// programs (the config, `loyalty.program.updated`) go through [`parse_program`].
pub fn parse_stored_program(text: &str) -> Result<Program, ConfigError> {
    let raw: RawProgram = from_json(text, "")?;
    validate_program(raw, "", false)
}

fn from_json<'a, T: Deserialize<'a>>(text: &'a str, prefix: &str) -> Result<T, ConfigError> {
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
            strip_position(&inner.to_string()),
        )
    })?;
    de.end()
        .map_err(|e| ConfigError::at(".", strip_position(&e.to_string())))?;
    Ok(value)
}

fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

fn join(prefix: &str, field: &str) -> String {
    match (prefix.is_empty(), field.is_empty()) {
        (true, _) => field.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) => format!("{prefix}.{field}"),
    }
}

/// Field-path helper used while validating; the flag says whether the checks added since
/// programs were first stored apply ([`parse_stored_program`]).
struct At<'a>(&'a str, bool);

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

    /// Greater than 0; for a stored program (not strict) not negative, as it used to be.
    fn multiplier(&self, field: &str, n: Num) -> Result<Dec, ConfigError> {
        if self.1 {
            self.positive_dec(field, n)
        } else {
            self.non_negative_dec(field, n)
        }
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
        if !self.1 {
            return self.non_empty(field, s);
        }
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

fn unique<'a>(
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

fn validate_program(p: RawProgram, path: &str, strict: bool) -> Result<Program, ConfigError> {
    let at = At(path, strict);
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
        .map(|(i, r)| validate_rule(r, &At(&at.f(&format!("earningRules[{i}]")), at.1)))
        .collect::<Result<Vec<_>, _>>()?;

    let tiers = p
        .tier_config
        .map(|t| validate_tiers(t, &At(&at.f("tierConfig"), at.1)))
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
        .map(|(i, c)| validate_campaign(c, &At(&at.f(&format!("campaigns[{i}]")), at.1)))
        .collect::<Result<Vec<_>, _>>()?;

    let raw_rewards = p.rewards.unwrap_or_default();
    unique(&at, "rewards", raw_rewards.iter().map(|r| r.id.as_str()))?;
    let rewards = raw_rewards
        .into_iter()
        .enumerate()
        .map(|(i, r)| validate_reward(r, &At(&at.f(&format!("rewards[{i}]")), at.1)))
        .collect::<Result<Vec<_>, _>>()?;

    let raw_cards = p.stamp_cards.unwrap_or_default();
    unique(&at, "stampCards", raw_cards.iter().map(|c| c.id.as_str()))?;
    let mut stamp_cards = Vec::with_capacity(raw_cards.len());
    for (i, c) in raw_cards.into_iter().enumerate() {
        let cat = At(&at.f(&format!("stampCards[{i}]")), at.1);
        cat.non_empty("trigger", &c.trigger)?;
        let stamps_required = cat.small_int("stampsRequired", c.stamps_required)?;
        if stamps_required == 0 {
            return Err(cat.err("stampsRequired", "must be greater than 0"));
        }
        if !rewards.iter().any(|r| r.id == c.reward) {
            return Err(cat.err("reward", format!("reward {:?} is not defined", c.reward)));
        }
        let conditions = validate_conditions(c.conditions, &At(&cat.f("conditions"), cat.1))?;
        stamp_cards.push(StampCard {
            id: c.id,
            trigger: c.trigger,
            stamps_required,
            conditions,
            reward: c.reward,
        });
    }

    Ok(Program {
        id: p.id,
        name: p.name,
        currency: p.currency,
        rounding,
        timezone,
        tz,
        auto_enroll: p.auto_enroll.unwrap_or(false),
        minimum_redemption,
        expiry,
        rules,
        tiers,
        campaigns,
        rewards,
        stamp_cards,
    })
}

fn validate_rule(r: RawRule, at: &At<'_>) -> Result<Rule, ConfigError> {
    at.non_empty("trigger", &r.trigger)?;
    let aat = At(&at.f("award"), at.1);
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
        id: r.id,
        trigger: r.trigger,
        award,
        multiplier,
        cap,
        window,
        conditions: validate_conditions(r.conditions, &At(&at.f("conditions"), at.1))?,
        recipient,
    })
}

fn validate_conditions(c: Option<RawConditions>, at: &At<'_>) -> Result<Conditions, ConfigError> {
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

fn validate_tiers(t: RawTierConfig, at: &At<'_>) -> Result<TierConfig, ConfigError> {
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
        let tat = At(&at.f(&format!("tiers[{i}]")), at.1);
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
    if at.1 && tiers[0].threshold > 0 {
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

fn validate_campaign(c: RawCampaign, at: &At<'_>) -> Result<Campaign, ConfigError> {
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
        id: c.id,
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
    })
}

fn validate_reward(r: RawReward, at: &At<'_>) -> Result<Reward, ConfigError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = include_str!("../../../deploy/programs.example.json");

    #[test]
    fn the_example_config_loads() {
        let c = parse_config(SEED).expect("deploy/programs.example.json validates");
        let p = &c.programs[0];
        assert_eq!(p.id, "prog_default");
        assert_eq!(p.rules.len(), 3);
        assert_eq!(p.tier_list()[2].earn_multiplier.to_string(), "1.5");
        assert_eq!(p.rules[0].window, Window::Month);
        assert_eq!(p.rules[2].window, Window::Lifetime);
    }

    fn refused(text: &str) -> ConfigError {
        parse_config(text).expect_err("must be refused")
    }

    fn prog(extra: &str) -> String {
        format!(r#"{{"programs":[{{"id":"prog_a","currency":"EUR"{extra}}}]}}"#)
    }

    #[test]
    fn refusals_name_the_field() {
        let cases = [
            (prog(r#","bogus":1"#), "programs[0].bogus", "unknown field"),
            (
                prog(
                    r#","earningRules":[{"id":"rule_a","trigger":"t","award":{"type":"per_amount","per":0,"points":1}}]"#,
                ),
                "programs[0].earningRules[0].award.per",
                "greater than 0",
            ),
            (
                prog(
                    r#","earningRules":[{"id":"rule_a","trigger":"t","award":{"type":"fixed","points":1},"window":"month"}]"#,
                ),
                "programs[0].earningRules[0].window",
                "needs a cap",
            ),
            (
                prog(
                    r#","earningRules":[{"id":"rule_a","trigger":"t","award":{"type":"fixed","points":-1}}]"#,
                ),
                "programs[0].earningRules[0].award.points",
                "negative",
            ),
            (
                prog(
                    r#","earningRules":[{"id":"r","trigger":"t","award":{"type":"fixed","points":1}},{"id":"r","trigger":"t","award":{"type":"fixed","points":1}}]"#,
                ),
                "programs[0].earningRules[1].id",
                "duplicate",
            ),
            (
                prog(
                    r#","tierConfig":{"period":{"type":"rolling","months":12},"tiers":[{"name":"A","rank":1,"threshold":0},{"name":"B","rank":0,"threshold":5}]}"#,
                ),
                "programs[0].tierConfig.tiers[1].rank",
                "increasing",
            ),
            (
                prog(
                    r#","tierConfig":{"period":{"type":"rolling","months":12},"tiers":[{"name":"A","rank":1,"threshold":0},{"name":"B","rank":1,"threshold":5}]}"#,
                ),
                "programs[0].tierConfig.tiers[1].rank",
                "duplicate",
            ),
            (
                prog(
                    r#","stampCards":[{"id":"card_a","trigger":"t","stampsRequired":3,"reward":"rwd_missing"}]"#,
                ),
                "programs[0].stampCards[0].reward",
                "not defined",
            ),
            (
                prog(r#","timezone":"Mars/Olympus""#),
                "programs[0].timezone",
                "unknown time zone",
            ),
            (
                prog(r#","minimumRedemption":"100""#),
                "programs[0].minimumRedemption",
                "expected a number",
            ),
            (
                prog(r#","minimumRedemption":1.5"#),
                "programs[0].minimumRedemption",
                "whole number",
            ),
            (
                r#"{"programs":[{"id":"p","currency":"EUR"},{"id":"p","currency":"EUR"}]}"#
                    .to_string(),
                "programs[1].id",
                "duplicate",
            ),
            (
                r#"{"programs":[{"currency":"EUR"}]}"#.to_string(),
                "programs[0]",
                "missing field `id`",
            ),
            (
                r#"{"programs":[{"id":"p","currency":"EURO"}]}"#.to_string(),
                "programs[0].currency",
                "three letters",
            ),
            (
                r#"{"programs":[{"id":"p","currency":"E1R"}]}"#.to_string(),
                "programs[0].currency",
                "three letters",
            ),
            (
                prog(
                    r#","earningRules":[{"id":"rule_a","trigger":"t","award":{"type":"fixed","points":1},"conditions":{"currencies":["EUR","euros"]}}]"#,
                ),
                "programs[0].earningRules[0].conditions.currencies[1]",
                "three letters",
            ),
            (
                prog(
                    r#","earningRules":[{"id":"rule_a","trigger":"t","award":{"type":"per_currency","per":100,"rates":{"EUR":1,"POUND":2}}}]"#,
                ),
                "programs[0].earningRules[0].award.rates.POUND",
                "three letters",
            ),
            (
                prog(
                    r#","earningRules":[{"id":"rule_a","trigger":"t","award":{"type":"fixed","points":1},"multiplier":0}]"#,
                ),
                "programs[0].earningRules[0].multiplier",
                "greater than 0",
            ),
            (
                prog(r#","campaigns":[{"id":"camp_a","multiplier":0.0}]"#),
                "programs[0].campaigns[0].multiplier",
                "greater than 0",
            ),
            (
                prog(
                    r#","tierConfig":{"period":{"type":"rolling","months":12},"tiers":[{"name":"A","rank":0,"threshold":0,"earnMultiplier":0}]}"#,
                ),
                "programs[0].tierConfig.tiers[0].earnMultiplier",
                "greater than 0",
            ),
            (
                prog(
                    r#","tierConfig":{"period":{"type":"rolling","months":12},"tiers":[{"name":"A","rank":0,"threshold":100},{"name":"B","rank":1,"threshold":500}]}"#,
                ),
                "programs[0].tierConfig.tiers[0].threshold",
                "threshold 0",
            ),
        ];
        for (text, path, words) in cases {
            let e = refused(&text);
            assert_eq!(e.path, path, "{text}: {e}");
            assert!(e.message.contains(words), "{text}: {e}");
        }
    }

    /// A state an earlier version stored may hold a program the checks added since refuse:
    /// it still opens (the new checks apply to new programs only).
    #[test]
    fn stored_programs_open_without_the_newer_checks() {
        for extra in [
            r#","earningRules":[{"id":"rule_a","trigger":"t","award":{"type":"fixed","points":1},"multiplier":0}]"#,
            r#","tierConfig":{"period":{"type":"rolling","months":12},"tiers":[{"name":"A","rank":0,"threshold":100,"earnMultiplier":0}]}"#,
            r#","campaigns":[{"id":"camp_a","multiplier":0}]"#,
        ] {
            let text = format!(r#"{{"id":"prog_a","currency":"EURO"{extra}}}"#);
            assert!(parse_program(&text).is_err(), "{text}");
            parse_stored_program(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        }
        // What was refused before is still refused.
        assert!(parse_stored_program(r#"{"id":"prog_a","currency":""}"#).is_err());
        assert!(parse_stored_program(
            r#"{"id":"prog_a","currency":"EUR","campaigns":[{"id":"c","multiplier":-1}]}"#
        )
        .is_err());
    }

    #[test]
    fn defaults_apply() {
        let c = parse_config(&prog(
            r#","earningRules":[{"id":"rule_a","trigger":"t","award":{"type":"fixed","points":5},"cap":{"points":10}}]"#,
        ))
        .unwrap();
        let p = &c.programs[0];
        assert_eq!(p.rounding, Rounding::Floor);
        assert_eq!(p.timezone, "UTC");
        assert!(!p.auto_enroll);
        assert_eq!(p.rules[0].multiplier, Dec::ONE);
        assert_eq!(p.rules[0].window, Window::Lifetime);
        assert_eq!(p.rules[0].recipient, Recipient::Referrer);
    }

    #[test]
    fn nulls_read_as_absent() {
        let c = parse_config(&prog(
            r#","earningRules":[{"id":"rule_a","trigger":"t","award":{"type":"fixed","points":5},"conditions":{"validFrom":null,"maxUses":null}}],"campaigns":[{"id":"camp_a","bonus":null}]"#,
        ))
        .unwrap();
        assert_eq!(c.programs[0].campaigns[0].bonus, None);
    }
}
