//! Earning (SPEC section 4): conditions, award bases, composed multipliers, rounding.
//!
//! `effective = base × rule.multiplier × tier.earnMultiplier × Π campaign multipliers`,
//! computed exactly and rounded once by the program's rounding. `caps` says how much room a
//! rule's caps leave; `Engine::earn` cuts an award to it.
//!
//! Owns: whether a rule's conditions hold, how many points an award comes to, and firing
//! the rules and campaign bonuses of a trigger (`Engine::earn`, `Engine::award`). Must not
//! decide who is enrolled or move the clock; the ledger posts what it awards.

use std::sync::Arc;

use crate::campaigns;
use crate::caps::headroom;
use crate::config::{Program, Recipient};
use crate::engine::Engine;
use crate::ledger::{member, Cx};
use crate::output::{CapWhy, Event, RuleWhy, TxKind, TxMeta, Why};
use crate::state::AwardRecord;
use crate::Sym;

use crate::config::Award;
use crate::dec::{quotient_text, round_quotient, Dec, Rounding, MAX_ABS};
use crate::time::Timestamp;

pub use crate::conditions::{check_conditions, conditions_hold, RuleOutcome, Skip, Trigger};

/// An award's base (SPEC section 4, before multipliers) as factors over a divisor: `None`
/// for a cashback award (money, not points) or one whose base does not apply (no amount,
/// or a currency the rule does not list).
fn base_of(award: &Award, t: &Trigger<'_>) -> Option<(Vec<Dec>, Dec)> {
    Some(match award {
        Award::PerAmount { per, points } => (vec![Dec::from_int(t.amount?), *points], *per),
        Award::Fixed { points } => (vec![*points], Dec::ONE),
        Award::PerCurrency { rates, per } => {
            let cur = t.currency?;
            let rate = rates
                .iter()
                .find(|(c, _)| c.eq_ignore_ascii_case(cur))
                .map(|(_, r)| *r)?;
            (vec![Dec::from_int(t.amount?), rate], *per)
        }
        Award::Cashback { .. } => return None,
    })
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
    let (mut factors, divisor) = base_of(award, t)?;
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

/// An award to write: its points, what gave them, and why.
pub(crate) struct Awarded {
    pub(crate) points: i64,
    pub(crate) rule: Option<Sym>,
    pub(crate) campaigns: Vec<Sym>,
    pub(crate) capped: bool,
    pub(crate) why: Why,
    /// An award of a payment or an invoice: pending in a program with `pendingDays`.
    pub(crate) of_payment: bool,
}

/// Whether awards on `kind` wait out a program's `pendingDays` (SPEC section 13).
fn pends(kind: &str) -> bool {
    matches!(kind, "payment.completed" | "invoice.paid")
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
        for rule in prog.rules.iter() {
            if rule.trigger != t.kind {
                self.explain(prog, rule, Some(Skip::Trigger));
                continue;
            }
            let recipient = match to.referral {
                Some((referrer, referee)) => match rule.recipient {
                    Recipient::Referrer => referrer,
                    Recipient::Referee => referee,
                },
                None => to.default,
            };
            let outcome = self.fire(prog, rule, recipient, t, payment, cx);
            self.explain(prog, rule, outcome.err());
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
            if campaigns::applies(c, t.kind, t.at, rank, prog.tz) {
                let why = Why::Bonus {
                    bonus,
                    campaign: c.id.clone(),
                };
                let award = Awarded {
                    points: bonus,
                    rule: None,
                    campaigns: vec![c.id.clone()],
                    capped: false,
                    why,
                    of_payment: pends(t.kind),
                };
                self.award(cx, account_id, award, payment);
            }
        }
    }

    /// Notes what a rule did, when the engine explains (`POST /v1/simulate`).
    fn explain(&mut self, prog: &Program, rule: &crate::config::Rule, skipped: Option<Skip>) {
        if let Some(outcomes) = self.explain.as_mut() {
            outcomes.push(RuleOutcome {
                program: prog.id.clone(),
                rule: rule.id.clone(),
                skipped,
            });
        }
    }

    /// Notes that no rule of `prog` could award `kind`'s member: not enrolled where the
    /// rule's trigger is the event's.
    pub(crate) fn explain_not_enrolled(&mut self, prog: &Program, kind: &str) {
        if self.explain.is_none() {
            return;
        }
        for rule in &prog.rules {
            let skip = if rule.trigger == kind {
                Skip::NotEnrolled
            } else {
                Skip::Trigger
            };
            self.explain(prog, rule, Some(skip));
        }
    }

    /// One rule on one event whose trigger it is: its award, or why none.
    fn fire(
        &mut self,
        prog: &Arc<Program>,
        rule: &crate::config::Rule,
        recipient: Option<&str>,
        t: &Trigger<'_>,
        payment: Option<&str>,
        cx: &mut Cx<'_>,
    ) -> Result<(), Skip> {
        let Some(account_id) = recipient else {
            return Err(Skip::NotEnrolled);
        };
        let Some(account) = self.state.accounts.get(account_id) else {
            return Err(Skip::NotEnrolled);
        };
        let (rank, tier_multiplier) = Self::tier_of(prog, account);
        let usage = account.rule_usage.get(&rule.id);
        check_conditions(&rule.conditions, t, rank, usage.map_or(0, |u| u.uses))?;
        if let Award::Cashback { percent } = rule.award {
            let (Some(amount), Some(currency)) = (t.amount, t.currency) else {
                return Err(Skip::Zero);
            };
            let cash = cashback_amount(percent, amount);
            if cash == 0 {
                return Err(Skip::Zero);
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
            return Ok(());
        }
        let Some((base, divisor)) = base_of(&rule.award, t) else {
            let unlisted = matches!(rule.award, Award::PerCurrency { .. }) && t.amount.is_some();
            return Err(if unlisted {
                Skip::CurrencyNotListed
            } else {
                Skip::Zero
            });
        };
        let active: Vec<_> = prog
            .campaigns
            .iter()
            .filter(|c| {
                c.multiplier != Dec::ONE && campaigns::applies(c, t.kind, t.at, rank, prog.tz)
            })
            .collect();
        let mut factors = Vec::with_capacity(base.len() + active.len() + 2);
        factors.extend_from_slice(&base);
        factors.push(rule.multiplier);
        factors.push(tier_multiplier);
        factors.extend(active.iter().map(|c| c.multiplier));
        let exact = round_quotient(&factors, divisor, prog.rounding).unwrap_or(MAX_ABS);
        let uncapped = exact.clamp(0, MAX_ABS) as i64;
        if uncapped <= 0 {
            return Err(Skip::Zero);
        }
        let mut points = uncapped;
        let mut capped = false;
        let room = headroom(rule, usage, t.at, prog.tz);
        if let Some(room) = room {
            if i128::from(points) > room {
                points = room as i64;
                capped = true;
            }
        }
        if points <= 0 {
            return Err(Skip::Cap);
        }
        let why = Why::Rule(Box::new(RuleWhy {
            // Floor and nearest round a quotient that does not end from just above it,
            // ceil from just below: the recomputed points are the points.
            base: quotient_text(&base, divisor, prog.rounding != Rounding::Ceil)
                .unwrap_or_else(|| "0".into()),
            rule: rule.multiplier,
            tier_multiplier,
            campaigns: active
                .iter()
                .map(|c| (c.id.clone(), c.multiplier))
                .collect(),
            tier: prog.tiers.as_ref().and(account.tier.clone()),
            rounding: prog.rounding,
            uncapped,
            cap: rule.cap.zip(room).map(|(cap, room)| CapWhy {
                points: cap,
                window: rule.window,
                headroom: i64::try_from(room).unwrap_or(i64::MAX),
            }),
        }));
        let award = Awarded {
            points,
            rule: Some(rule.id.clone()),
            campaigns: active.iter().map(|c| c.id.clone()).collect(),
            capped,
            why,
            of_payment: pends(t.kind),
        };
        let account = self.account_mut(account_id).expect("checked above");
        usage_mut(&mut account.rule_usage, &rule.id).record(t.at, points);
        self.award(cx, account_id, award, payment);
        Ok(())
    }

    /// Writes an award transaction and its `loyalty.points.earned`.
    pub(crate) fn award(
        &mut self,
        cx: &mut Cx<'_>,
        account_id: &str,
        award: Awarded,
        payment: Option<&str>,
    ) {
        let Awarded {
            points,
            rule,
            campaigns,
            capped,
            why,
            of_payment,
        } = award;
        let md = TxMeta::Award { capped };
        let pending_days = self
            .state
            .accounts
            .get(account_id)
            .and_then(|a| self.state.program(&a.program))
            .and_then(|p| p.pending_days.map(|d| (d, p.tz)))
            .filter(|_| of_payment);
        let status = self.status_of(account_id, TxKind::Award, pending_days.is_some());
        let entry = (
            TxKind::Award,
            points,
            rule.clone(),
            campaigns.clone(),
            md,
            why,
        );
        let (tx, balance) = self.post_status(cx, account_id, entry, status);
        if let Some((days, tz)) = pending_days {
            // Pending: it vests later, and counts towards a tier only then.
            self.hold_pending(cx, account_id, &tx, &rule, &campaigns, points, (days, tz));
        } else if self.qualifies_on_points(account_id) {
            let at = cx.created;
            self.qualify(account_id, at, points, cx);
        }
        if payment.is_some() {
            if let Some(awards) = cx.payment_awards.as_mut() {
                awards.push(AwardRecord {
                    account: account_id.into(),
                    rule: rule.clone(),
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
            rule,
            campaigns,
            transaction: tx,
            balance,
            capped,
            status,
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
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::Conditions;

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
