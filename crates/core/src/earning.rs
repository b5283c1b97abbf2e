//! Earning (SPEC section 4): conditions, award bases, composed multipliers, rounding.
//!
//! `effective = base × rule.multiplier × tier.earnMultiplier × Π campaign multipliers`,
//! computed exactly and rounded once by the program's rounding. `caps` says how much room a
//! rule's caps leave; `Engine::earn` cuts an award to it.
//!
//! Owns: whether a rule's conditions hold, how many points an award comes to, and firing
//! the rules and campaign bonuses of a trigger (`Engine::earn`, `Engine::award`). Must not
//! decide who is enrolled or move the clock; the ledger posts what it awards.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::campaigns;
use crate::caps::headroom;
use crate::config::{Program, Recipient};
use crate::engine::Engine;
use crate::ledger::{member, Cx};
use crate::output::{Event, TxKind, TxMeta};
use crate::state::AwardRecord;
use crate::Sym;

use crate::config::{Award, Conditions};
use crate::dec::{round_quotient, Dec, Rounding, MAX_ABS};
use crate::time::Timestamp;

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

/// True when every condition holds for a member of `rank` that this rule has awarded
/// `uses` times.
pub fn conditions_hold(c: &Conditions, t: &Trigger<'_>, rank: u32, uses: u64) -> bool {
    if let Some(min) = c.min_amount {
        if t.amount.is_none_or(|a| a < min) {
            return false;
        }
    }
    if let Some(max) = c.max_amount {
        if t.amount.is_none_or(|a| a > max) {
            return false;
        }
    }
    if let Some(currencies) = &c.currencies {
        let Some(cur) = t.currency else { return false };
        if !currencies.iter().any(|c| c.eq_ignore_ascii_case(cur)) {
            return false;
        }
    }
    if c.valid_from.is_some_and(|from| t.at < from) || c.valid_until.is_some_and(|u| t.at >= u) {
        return false;
    }
    if c.min_rank.is_some_and(|m| rank < m) || c.max_rank.is_some_and(|m| rank > m) {
        return false;
    }
    if !c.metadata.is_empty() {
        let Some(md) = t.metadata else { return false };
        if !c.metadata.iter().all(|(k, v)| md.get(k) == Some(v)) {
            return false;
        }
    }
    if c.max_uses.is_some_and(|m| uses >= m) {
        return false;
    }
    true
}

/// The points an award comes to before caps: the exact product of its base and every
/// multiplier, rounded once, and clamped to the 10^15 a transaction may carry. `None` for
/// a cashback award (money, not points) or an award whose base does not apply (no amount,
/// or a currency the rule does not list).
pub fn award_points(
    award: &Award,
    t: &Trigger<'_>,
    multipliers: &[Dec],
    rounding: Rounding,
) -> Option<i64> {
    let mut factors: Vec<Dec> = Vec::with_capacity(multipliers.len() + 2);
    let divisor = match award {
        Award::PerAmount { per, points } => {
            factors.push(Dec::from_int(t.amount?));
            factors.push(*points);
            *per
        }
        Award::Fixed { points } => {
            factors.push(*points);
            Dec::ONE
        }
        Award::PerCurrency { rates, per } => {
            let cur = t.currency?;
            let rate = rates
                .iter()
                .find(|(c, _)| c.eq_ignore_ascii_case(cur))
                .map(|(_, r)| *r)?;
            factors.push(Dec::from_int(t.amount?));
            factors.push(rate);
            *per
        }
        Award::Cashback { .. } => return None,
    };
    factors.extend_from_slice(multipliers);
    let exact = round_quotient(&factors, divisor, rounding).unwrap_or(MAX_ABS);
    Some(exact.clamp(0, MAX_ABS) as i64)
}

/// Cashback in minor units: `amount × percent / 100`, floored.
pub fn cashback_amount(percent: Dec, amount: i64) -> i64 {
    let exact = round_quotient(
        &[Dec::from_int(amount), percent],
        Dec::from_int(100),
        Rounding::Floor,
    )
    .unwrap_or(MAX_ABS);
    exact.clamp(0, MAX_ABS) as i64
}

/// Who the rules of one trigger award.
#[derive(Clone, Copy)]
pub(crate) struct Recipients<'a> {
    /// The member of the event (the referrer for `referral.converted`).
    pub(crate) default: Option<&'a str>,
    /// For `referral.converted` rules.
    pub(crate) referral: Option<(Option<&'a str>, Option<&'a str>)>,
}

/// What a rule has awarded a member, created on first use (without allocating the key on
/// every award).
pub(crate) fn usage_mut<'a>(
    usage: &'a mut crate::vecmap::VecMap<Sym, crate::state::RuleUsage>,
    rule: &Sym,
) -> &'a mut crate::state::RuleUsage {
    usage.get_or_insert_with(rule, |r| (r.clone(), crate::state::RuleUsage::default()))
}

impl Engine {
    /// Fires every rule of `prog` whose trigger is the event's, in order, then every
    /// campaign bonus (SPEC section 4).
    pub(crate) fn earn(
        &mut self,
        prog: &Arc<Program>,
        t: &Trigger<'_>,
        to: Recipients<'_>,
        payment: Option<&str>,
        cx: &mut Cx<'_>,
    ) {
        for rule in prog.rules.iter().filter(|r| r.trigger == t.kind) {
            let recipient = match to.referral {
                Some((referrer, referee)) => match rule.recipient {
                    Recipient::Referrer => referrer,
                    Recipient::Referee => referee,
                },
                None => to.default,
            };
            let Some(account_id) = recipient else {
                continue;
            };
            let Some(account) = self.state.accounts.get(account_id) else {
                continue;
            };
            let (rank, tier_multiplier) = Self::tier_of(prog, account);
            let usage = account.rule_usage.get(&rule.id);
            if !conditions_hold(&rule.conditions, t, rank, usage.map_or(0, |u| u.uses)) {
                continue;
            }
            if let Award::Cashback { percent } = rule.award {
                let (Some(amount), Some(currency)) = (t.amount, t.currency) else {
                    continue;
                };
                let cash = cashback_amount(percent, amount);
                if cash == 0 {
                    continue;
                }
                let account = self.account_mut(account_id).expect("checked above");
                usage_mut(&mut account.rule_usage, &rule.id).uses += 1;
                let event = Event::CashbackEarned {
                    rule: rule.id.to_string(),
                    payment: t.object_id.or(payment).map(str::to_string),
                    amount: cash,
                    currency: currency.to_string(),
                };
                cx.event(member(account), event);
                continue;
            }
            let active: Vec<_> = prog
                .campaigns
                .iter()
                .filter(|c| c.multiplier != Dec::ONE && campaigns::applies(c, t.kind, t.at, rank))
                .collect();
            let mut multipliers = Vec::with_capacity(active.len() + 2);
            multipliers.push(rule.multiplier);
            multipliers.push(tier_multiplier);
            multipliers.extend(active.iter().map(|c| c.multiplier));
            let Some(mut points) = award_points(&rule.award, t, &multipliers, prog.rounding) else {
                continue;
            };
            let mut capped = false;
            if let Some(room) = headroom(rule, usage, t.at, prog.tz) {
                if i128::from(points) > room {
                    points = room as i64;
                    capped = true;
                }
            }
            if points <= 0 {
                continue;
            }
            let campaign_ids: Vec<Sym> = active.iter().map(|c| c.id.clone()).collect();
            let account = self.account_mut(account_id).expect("checked above");
            usage_mut(&mut account.rule_usage, &rule.id).record(t.at, points);
            self.award(
                cx,
                account_id,
                points,
                Some(&rule.id),
                campaign_ids,
                capped,
                payment,
            );
        }
        let Some(account_id) = to.default else { return };
        let Some(account) = self.state.accounts.get(account_id) else {
            return;
        };
        let (rank, _) = Self::tier_of(prog, account);
        for c in &prog.campaigns {
            let Some(bonus) = c.bonus.filter(|b| *b > 0) else {
                continue;
            };
            if campaigns::applies(c, t.kind, t.at, rank) {
                self.award(
                    cx,
                    account_id,
                    bonus,
                    None,
                    vec![c.id.clone()],
                    false,
                    payment,
                );
            }
        }
    }

    /// Writes an award transaction and its `loyalty.points.earned`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn award(
        &mut self,
        cx: &mut Cx<'_>,
        account_id: &str,
        points: i64,
        rule: Option<&Sym>,
        campaigns: Vec<Sym>,
        capped: bool,
        payment: Option<&str>,
    ) {
        let md = TxMeta::Award { capped };
        let (tx, balance) = self.post(
            cx,
            account_id,
            TxKind::Award,
            points,
            rule.cloned(),
            campaigns.clone(),
            md,
        );
        if self.qualifies_on_points(account_id) {
            let at = cx.created;
            self.qualify(account_id, at, points, cx);
        }
        if payment.is_some() {
            if let Some(awards) = cx.payment_awards.as_mut() {
                awards.push(AwardRecord {
                    account: account_id.into(),
                    rule: rule.cloned(),
                    campaigns: campaigns.clone(),
                    points,
                    reversed: 0,
                    transaction: tx.clone(),
                    created: cx.created.0,
                });
            }
        }
        let event = Event::PointsEarned {
            points,
            rule: rule.cloned(),
            campaigns,
            transaction: tx,
            balance,
            capped,
        };
        cx.event(member(&self.state.accounts[account_id]), event);
    }

    pub(crate) fn earn_referral(
        &mut self,
        prog: &Arc<Program>,
        at: Timestamp,
        referrer: Option<Sym>,
        referee: Option<Sym>,
        cx: &mut Cx<'_>,
    ) {
        let trigger = Trigger {
            kind: "referral.converted",
            at,
            amount: None,
            currency: None,
            metadata: None,
            object_id: None,
        };
        let to = Recipients {
            default: referrer.as_deref(),
            referral: Some((referrer.as_deref(), referee.as_deref())),
        };
        self.earn(prog, &trigger, to, None, cx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Dec {
        s.parse().unwrap()
    }

    fn pay(amount: i64, currency: &'static str) -> Trigger<'static> {
        Trigger {
            kind: "payment.completed",
            at: Timestamp(0),
            amount: Some(amount),
            currency: Some(currency),
            metadata: None,
            object_id: None,
        }
    }

    #[test]
    fn seed_example_composes_to_nine_points_per_euro() {
        let award = Award::PerAmount {
            per: d("100"),
            points: d("1"),
        };
        let m = [d("2"), d("1.5"), d("3")];
        assert_eq!(
            award_points(&award, &pay(10000, "EUR"), &m, Rounding::Floor),
            Some(900)
        );
    }

    #[test]
    fn the_three_roundings() {
        let award = Award::PerAmount {
            per: d("100"),
            points: d("1"),
        };
        let m = [d("1.25")];
        // 1250 × 1.25 / 100 = 15.625
        let t = pay(1250, "EUR");
        assert_eq!(award_points(&award, &t, &m, Rounding::Floor), Some(15));
        assert_eq!(award_points(&award, &t, &m, Rounding::Nearest), Some(16));
        assert_eq!(award_points(&award, &t, &m, Rounding::Ceil), Some(16));
        // 1000 × 1.25 / 100 = 12.5: nearest goes away from zero
        let t = pay(1000, "EUR");
        assert_eq!(award_points(&award, &t, &m, Rounding::Nearest), Some(13));
        assert_eq!(award_points(&award, &t, &m, Rounding::Floor), Some(12));
    }

    #[test]
    fn per_currency_and_fixed_and_cashback() {
        let mut rates = BTreeMap::new();
        rates.insert("EUR".to_string(), d("1"));
        rates.insert("GBP".to_string(), d("1.2"));
        let award = Award::PerCurrency {
            rates,
            per: d("100"),
        };
        assert_eq!(
            award_points(&award, &pay(1000, "GBP"), &[], Rounding::Floor),
            Some(12)
        );
        assert_eq!(
            award_points(&award, &pay(1000, "USD"), &[], Rounding::Floor),
            None
        );
        let fixed = Award::Fixed { points: d("500") };
        assert_eq!(
            award_points(&fixed, &pay(0, "EUR"), &[d("2")], Rounding::Floor),
            Some(1000)
        );
        assert_eq!(cashback_amount(d("2.5"), 12345), 308);
    }

    #[test]
    fn conditions() {
        let mut md = BTreeMap::new();
        md.insert("channel".to_string(), "pos".to_string());
        let t = Trigger {
            metadata: Some(&md),
            ..pay(2000, "EUR")
        };
        let mut c = Conditions {
            min_amount: Some(2000),
            max_amount: Some(2000),
            currencies: Some(vec!["EUR".into()]),
            ..Conditions::default()
        };
        c.metadata.insert("channel".into(), "pos".into());
        assert!(conditions_hold(&c, &t, 0, 0));
        assert!(
            !conditions_hold(&c, &pay(2000, "EUR"), 0, 0),
            "metadata missing"
        );
        assert!(!conditions_hold(
            &c,
            &Trigger {
                amount: Some(1999),
                ..t
            },
            0,
            0
        ));
        assert!(!conditions_hold(
            &c,
            &Trigger {
                amount: Some(2001),
                ..t
            },
            0,
            0
        ));
        assert!(!conditions_hold(
            &c,
            &Trigger {
                currency: Some("GBP"),
                ..t
            },
            0,
            0
        ));
        let ranked = Conditions {
            min_rank: Some(1),
            max_rank: Some(2),
            max_uses: Some(2),
            ..Conditions::default()
        };
        assert!(!conditions_hold(&ranked, &t, 0, 0));
        assert!(conditions_hold(&ranked, &t, 2, 1));
        assert!(!conditions_hold(&ranked, &t, 3, 0));
        assert!(!conditions_hold(&ranked, &t, 1, 2), "maxUses reached");
    }
}
