//! A rule's conditions (SPEC section 4), and why a rule did not fire (SPEC section 12's
//! reasons, in their order): what earning, campaigns and simulations ask of a trigger.
//!
//! Owns: what a rule sees of its trigger, and whether each condition holds. Must not
//! compute points (`earning`) or touch state.

use std::collections::BTreeMap;

use crate::config::Conditions;
use crate::time::Timestamp;
use crate::Sym;

/// What a rule sees of the event that triggers it.
#[derive(Clone, Copy, Debug)]
pub struct Trigger<'a> {
    /// The trigger type (`payment.completed`, `loyalty.account.created`, a custom type…).
    pub kind: &'a str,
    /// The event time.
    pub at: Timestamp,
    /// Minor units, when the event has an amount.
    pub amount: Option<i64>,
    /// Upper-case currency, when the event has one.
    pub currency: Option<&'a str>,
    /// The string values of `data.metadata`.
    pub metadata: Option<&'a BTreeMap<String, String>>,
    /// `data.id` of the event (the payment, invoice or subscription), when it has one.
    pub object_id: Option<&'a str>,
}

/// Why a rule did not award (SPEC section 12): the reasons `POST /v1/simulate` reports.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Skip {
    /// The event is not the rule's trigger.
    Trigger,
    /// The member has no account in the program (and it does not enrol on its own).
    NotEnrolled,
    /// Below `conditions.minAmount` (or no amount).
    MinAmount,
    /// Above `conditions.maxAmount` (or no amount).
    MaxAmount,
    /// A currency `conditions.currencies` does not list (or none).
    Currencies,
    /// Before `conditions.validFrom`.
    ValidFrom,
    /// At or after `conditions.validUntil`.
    ValidUntil,
    /// A tier below `conditions.minRank`.
    MinRank,
    /// A tier above `conditions.maxRank`.
    MaxRank,
    /// `conditions.metadata` does not match.
    Metadata,
    /// The rule awarded the member `conditions.maxUses` times.
    MaxUses,
    /// A `per_currency` award whose rates do not list the currency.
    CurrencyNotListed,
    /// The award rounds to nothing (or has no base: no amount for a `per_amount` award).
    Zero,
    /// No headroom left under the rule's cap.
    Cap,
}

impl Skip {
    /// The reason as `POST /v1/simulate` prints it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Skip::Trigger => "trigger",
            Skip::NotEnrolled => "not_enrolled",
            Skip::MinAmount => "condition.minAmount",
            Skip::MaxAmount => "condition.maxAmount",
            Skip::Currencies => "condition.currencies",
            Skip::ValidFrom => "condition.validFrom",
            Skip::ValidUntil => "condition.validUntil",
            Skip::MinRank => "condition.minRank",
            Skip::MaxRank => "condition.maxRank",
            Skip::Metadata => "condition.metadata",
            Skip::MaxUses => "maxUses",
            Skip::CurrencyNotListed => "currency_not_listed",
            Skip::Zero => "zero",
            Skip::Cap => "cap",
        }
    }
}

/// What one rule did with one event (`POST /v1/simulate`): awarded, or the first reason
/// it did not.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RuleOutcome {
    /// The program.
    pub program: Sym,
    /// The rule.
    pub rule: Sym,
    /// `None`: it awarded.
    pub skipped: Option<Skip>,
}

/// The first condition that fails for a member of `rank` that this rule has awarded `uses`
/// times, in the order of SPEC section 12's reasons; `Ok` when every condition holds.
pub fn check_conditions(c: &Conditions, t: &Trigger<'_>, rank: u32, uses: u64) -> Result<(), Skip> {
    if let Some(min) = c.min_amount {
        if t.amount.is_none_or(|a| a < min) {
            return Err(Skip::MinAmount);
        }
    }
    if let Some(max) = c.max_amount {
        if t.amount.is_none_or(|a| a > max) {
            return Err(Skip::MaxAmount);
        }
    }
    if let Some(currencies) = &c.currencies {
        let Some(cur) = t.currency else {
            return Err(Skip::Currencies);
        };
        if !currencies.iter().any(|c| c.eq_ignore_ascii_case(cur)) {
            return Err(Skip::Currencies);
        }
    }
    if c.valid_from.is_some_and(|from| t.at < from) {
        return Err(Skip::ValidFrom);
    }
    if c.valid_until.is_some_and(|u| t.at >= u) {
        return Err(Skip::ValidUntil);
    }
    if c.min_rank.is_some_and(|m| rank < m) {
        return Err(Skip::MinRank);
    }
    if c.max_rank.is_some_and(|m| rank > m) {
        return Err(Skip::MaxRank);
    }
    if !c.metadata.is_empty() {
        let Some(md) = t.metadata else {
            return Err(Skip::Metadata);
        };
        if !c.metadata.iter().all(|(k, v)| md.get(k) == Some(v)) {
            return Err(Skip::Metadata);
        }
    }
    if c.max_uses.is_some_and(|m| uses >= m) {
        return Err(Skip::MaxUses);
    }
    Ok(())
}

/// True when every condition holds for a member of `rank` that this rule has awarded
/// `uses` times.
pub fn conditions_hold(c: &Conditions, t: &Trigger<'_>, rank: u32, uses: u64) -> bool {
    check_conditions(c, t, rank, uses).is_ok()
}
