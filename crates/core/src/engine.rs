//! `apply`: one record in, its effects out, in the order SPEC sections 2 to 6 give.
//!
//! For each record: parse it (`envelope`), decide the rejections that depend on state
//! (duplicate, unknown program, not enrolled, unknown payment, invalid config) before
//! anything changes, mark its id seen and move the clock (carrying out what fell due on the
//! way), then apply it. Every transaction, event and refusal is appended to the caller's
//! output vector in the order it happened, and ids are minted from the record id and a
//! counter, so the same log always gives the same bytes.
//!
//! Owns: the order of operations. The rules themselves live in `earning`, `caps` and
//! `campaigns`; the shapes of what comes out in `output`.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::caps::headroom;
use crate::config::{parse_program, Award, Config, Program, QualifyOn, Recipient};
use crate::dec::Dec;
use crate::earning::{award_points, cashback_amount, conditions_hold, Trigger};
use crate::envelope::{self, Activity, Body, Reason, Record, Rejection};
use crate::ids;
use crate::output::{AccountView, OutEvent, Output, TierView, Transaction, TxKind};
use crate::state::{Account, AwardRecord, PaymentRecord, State};
use crate::time::Timestamp;
use crate::{campaigns, tiers};

/// Why the clock cannot be moved where it was asked to go.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{requested} is before the clock ({clock}); the clock never goes back")]
pub struct ClockError {
    /// The time asked for.
    pub requested: Timestamp,
    /// The clock.
    pub clock: Timestamp,
}

/// The rule engine over its state. Pure: no I/O, no clock, no randomness, no floats.
#[derive(Clone, Debug)]
pub struct Engine {
    state: State,
    /// What changed since [`Engine::take_changes`] was last called, so that a store can
    /// persist exactly the entries a batch touched.
    changes: Changes,
}

/// The keys of the state a run of `apply` changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Accounts created or changed.
    pub accounts: std::collections::BTreeSet<String>,
    /// Record ids newly seen, in order.
    pub seen: Vec<String>,
    /// Payments recorded or refunded.
    pub payments: std::collections::BTreeSet<String>,
    /// The program list changed.
    pub programs: bool,
    /// The clock moved.
    pub clock: bool,
}

impl Changes {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
            && self.seen.is_empty()
            && self.payments.is_empty()
            && !self.programs
            && !self.clock
    }
}

/// What a record needs once its rejections are decided.
enum Accepted {
    /// Nothing more to look up.
    Plain,
    /// A program update, already validated.
    Program(Arc<Program>),
    /// An enrolment with the referrer's account.
    Enroll { referred_by: Option<String> },
}

/// Minting and output for the effects of one record (or one due effect).
struct Cx<'o> {
    source: String,
    created: Timestamp,
    n_tx: u32,
    n_ev: u32,
    out: &'o mut Vec<Output>,
    /// Awards of the payment being applied, for later refunds.
    payment_awards: Option<Vec<AwardRecord>>,
}

impl Cx<'_> {
    fn tx_id(&mut self) -> String {
        self.n_tx += 1;
        ids::transaction_id(&self.source, self.n_tx - 1)
    }

    fn event(&mut self, kind: &'static str, data: Map<String, Value>) {
        self.n_ev += 1;
        let id = ids::event_id(&self.source, self.n_ev - 1);
        self.out.push(Output::Event(OutEvent {
            id,
            kind,
            created: self.created,
            data,
        }));
    }
}

/// Who the rules of one trigger award.
#[derive(Clone, Copy)]
struct Recipients<'a> {
    /// The member of the event (the referrer for `referral.converted`).
    default: Option<&'a str>,
    /// For `referral.converted` rules.
    referral: Option<(Option<&'a str>, Option<&'a str>)>,
}

fn base_data(a: &Account) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("account".into(), Value::String(a.id.clone()));
    m.insert("customer".into(), Value::String(a.customer.clone()));
    m.insert("program".into(), Value::String(a.program.clone()));
    m
}

fn num(v: i128) -> Value {
    // Points and balances stay far inside i64 in practice; the i128 keeps sums exact.
    match i64::try_from(v) {
        Ok(v) => Value::from(v),
        Err(_) => Value::String(v.to_string()),
    }
}

impl Engine {
    /// An engine over a validated config, with no accounts yet.
    pub fn new(config: &Config) -> Engine {
        Engine {
            state: State {
                programs: config.programs.clone(),
                ..State::default()
            },
            changes: Changes::default(),
        }
    }

    /// An engine with no programs: the streaming service's, whose programs all come from
    /// `loyalty.program.updated` records in its log.
    pub fn empty() -> Engine {
        Engine::from_state(State::default())
    }

    /// An engine over a state loaded from a store.
    pub fn from_state(mut state: State) -> Engine {
        state.referral_codes = state
            .accounts
            .values()
            .map(|a| ((a.program.clone(), a.referral_code.clone()), a.id.clone()))
            .collect();
        Engine {
            state,
            changes: Changes::default(),
        }
    }

    /// What changed since the last call, and forget it.
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    fn account_mut(&mut self, id: &str) -> Option<&mut Account> {
        let account = self.state.accounts.get_mut(id)?;
        if !self.changes.accounts.contains(id) {
            self.changes.accounts.insert(id.to_string());
        }
        Some(account)
    }

    /// The state, for inspection.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The clock: the largest `created` applied so far.
    pub fn clock(&self) -> Option<Timestamp> {
        self.state.clock
    }

    /// Applies one input record (its bytes as they came), appending what happened to `out`.
    pub fn apply(&mut self, bytes: &[u8], out: &mut Vec<Output>) {
        match envelope::parse(bytes) {
            Ok(record) => self.apply_record(&record, out),
            Err(rejection) => out.push(Output::Rejected(rejection)),
        }
    }

    /// Applies one parsed record, appending what happened to `out`.
    pub fn apply_record(&mut self, rec: &Record, out: &mut Vec<Output>) {
        let accepted = match self.check(rec) {
            Ok(a) => a,
            Err(r) => {
                out.push(Output::Rejected(r));
                return;
            }
        };
        self.state.seen.insert(rec.id.clone());
        self.changes.seen.push(rec.id.clone());
        self.advance_clock(rec.created, out);
        let mut cx = Cx {
            source: rec.id.clone(),
            created: rec.created,
            n_tx: 0,
            n_ev: 0,
            out,
            payment_awards: None,
        };
        match (&rec.body, accepted) {
            (Body::Event(a), _) => self.apply_activity(rec, a, &mut cx),
            (Body::Refund(r), _) => self.apply_refund(rec, r, &mut cx),
            (Body::Referral(r), _) => {
                for prog in self.state.programs.clone() {
                    let referrer = self.account_for(&prog, &r.referrer, &mut cx);
                    let referee = self.account_for(&prog, &r.referee, &mut cx);
                    self.earn_referral(&prog, rec.created, referrer, referee, &mut cx);
                }
            }
            (Body::Tick, _) => {}
            (Body::Enroll(e), Accepted::Enroll { referred_by }) => {
                let Some(prog) = self.program(&e.program) else {
                    return;
                };
                let id = ids::account_id(&prog.id, &e.customer);
                if !self.state.accounts.contains_key(&id) {
                    self.enroll(&prog, &e.customer, referred_by, e.birthday, &mut cx);
                }
            }
            (Body::Adjust(a), _) => {
                let Some(prog) = self.program(&a.program) else {
                    return;
                };
                let id = ids::account_id(&prog.id, &a.customer);
                let balance = self.state.accounts[&id].balance;
                if a.points < 0 && balance + i128::from(a.points) < 0 {
                    cx.out.push(Output::Rejected(Rejection::new(
                        Some(&rec.id),
                        Reason::InsufficientPoints,
                        format!(
                            "data.points: an adjustment of {} would take the balance of {} below zero",
                            a.points, balance
                        ),
                    )));
                    return;
                }
                let mut md = Map::new();
                md.insert("reason".into(), Value::String(a.reason.clone()));
                let (tx, balance) =
                    self.post(&mut cx, &id, TxKind::Adjustment, a.points, None, vec![], md);
                let mut data = base_data(&self.state.accounts[&id]);
                data.insert("points".into(), Value::from(a.points));
                data.insert("transaction".into(), Value::String(tx));
                data.insert("balance".into(), num(balance));
                data.insert("reason".into(), Value::String(a.reason.clone()));
                cx.event("loyalty.points.adjusted", data);
            }
            (Body::Transfer(t), _) => {
                let Some(prog) = self.program(&t.program) else {
                    return;
                };
                let from = ids::account_id(&prog.id, &t.from);
                let to = ids::account_id(&prog.id, &t.to);
                let balance = self.state.accounts[&from].balance;
                if balance < i128::from(t.points) {
                    cx.out.push(Output::Rejected(Rejection::new(
                        Some(&rec.id),
                        Reason::InsufficientPoints,
                        format!(
                            "data.points: a transfer of {} is more than the balance of {}",
                            t.points, balance
                        ),
                    )));
                    return;
                }
                let (tx_out, _) = self.post(
                    &mut cx,
                    &from,
                    TxKind::TransferOut,
                    -t.points,
                    None,
                    vec![],
                    Map::new(),
                );
                let (tx_in, _) = self.post(
                    &mut cx,
                    &to,
                    TxKind::TransferIn,
                    t.points,
                    None,
                    vec![],
                    Map::new(),
                );
                let mut data = base_data(&self.state.accounts[&from]);
                data.insert("from".into(), Value::String(t.from.clone()));
                data.insert("to".into(), Value::String(t.to.clone()));
                data.insert("points".into(), Value::from(t.points));
                data.insert("transactions".into(), json!([tx_out, tx_in]));
                cx.event("loyalty.points.transferred", data);
            }
            (Body::Qualify(q), _) => {
                let Some(prog) = self.program(&q.program) else {
                    return;
                };
                let custom = prog
                    .tiers
                    .as_ref()
                    .is_some_and(|t| t.qualify_on == QualifyOn::Custom);
                let id = ids::account_id(&prog.id, &q.customer);
                if let (true, Some(account)) = (custom, self.account_mut(&id)) {
                    account.qualifying_value = account.qualifying_value.saturating_add(q.amount);
                }
            }
            (Body::ProgramUpdated(text), Accepted::Program(prog)) => {
                self.update_program(prog, text, &mut cx)
            }
            // `check` refuses the commands of later sections, and pairs every other body with
            // the `Accepted` it needs.
            _ => {}
        }
    }

    /// Moves the clock to `to` as a `clock.tick` would, carrying out what falls due on the
    /// way (`loyalty fold --until`). Refused when `to` is before the clock.
    pub fn advance_to(&mut self, to: Timestamp, out: &mut Vec<Output>) -> Result<(), ClockError> {
        if let Some(clock) = self.state.clock {
            if to < clock {
                return Err(ClockError {
                    requested: to,
                    clock,
                });
            }
        }
        self.advance_clock(to, out);
        Ok(())
    }

    /// Every account, sorted by id, as the fold prints it.
    pub fn accounts(&self) -> impl Iterator<Item = AccountView> + '_ {
        self.state.accounts.values().map(|a| self.account_view(a))
    }

    fn account_view(&self, a: &Account) -> AccountView {
        let prog = self.state.program(&a.program);
        let tier = prog.and_then(|p| a.tier.as_deref().and_then(|t| p.tier(t)));
        AccountView {
            kind: "account",
            id: a.id.clone(),
            customer: a.customer.clone(),
            program: a.program.clone(),
            balance: a.balance,
            tier: tier.map(|t| TierView {
                name: t.name.clone(),
                rank: t.rank,
                earn_multiplier: crate::output::DecNumber(t.earn_multiplier),
            }),
            qualifying_value: a.qualifying_value,
            at_risk: tier.is_some_and(|t| a.qualifying_value < t.threshold),
            referral_code: a.referral_code.clone(),
            stamps: a.stamps.clone(),
        }
    }

    fn program(&self, id: &str) -> Option<Arc<Program>> {
        self.state.program(id).cloned()
    }

    /// The state-dependent rejections, in SPEC order; nothing changes here.
    fn check(&self, rec: &Record) -> Result<Accepted, Rejection> {
        let reject = |reason, detail: String| Err(Rejection::new(Some(&rec.id), reason, detail));
        if self.state.seen.contains(&rec.id) {
            return reject(Reason::Duplicate, format!("id: {} was seen before", rec.id));
        }
        if let Some(program) = rec.command_program() {
            let Some(prog) = self.state.program(program) else {
                return reject(
                    Reason::UnknownProgram,
                    format!("data.program: no program {program:?} is configured"),
                );
            };
            let enrolled = |customer: &str| {
                self.state
                    .accounts
                    .contains_key(&ids::account_id(&prog.id, customer))
            };
            let missing = match &rec.body {
                Body::Adjust(c) => Some(("customer", &c.customer)),
                Body::Qualify(c) => Some(("customer", &c.customer)),
                Body::Redeem(c) => Some(("customer", &c.customer)),
                Body::Transfer(t) => [("from", &t.from), ("to", &t.to)]
                    .into_iter()
                    .find(|(_, c)| !enrolled(c)),
                _ => None,
            };
            if let Some((field, customer)) = missing.filter(|(_, c)| !enrolled(c)) {
                return reject(
                    Reason::NotEnrolled,
                    format!("data.{field}: {customer:?} has no account in {}", prog.id),
                );
            }
        }
        match &rec.body {
            Body::Event(a) => {
                if let Some(loy) = &a.loyalty_account {
                    if !self.state.accounts.contains_key(loy) {
                        return reject(
                            Reason::NotEnrolled,
                            format!("data.metadata.loyalty_account: no account {loy}"),
                        );
                    }
                }
                Ok(Accepted::Plain)
            }
            Body::Refund(r) => {
                let Some(p) = self.state.payments.get(&r.payment) else {
                    return reject(
                        Reason::UnknownPayment,
                        format!("data.payment: no payment {:?} was applied", r.payment),
                    );
                };
                if p.currency != r.currency {
                    return reject(
                        Reason::Invalid,
                        format!(
                            "data.currency: the payment was in {}, not {}",
                            p.currency, r.currency
                        ),
                    );
                }
                if r.amount > p.amount - p.refunded {
                    return reject(
                        Reason::Invalid,
                        format!(
                            "data.amount: {} is more than the {} left of the payment",
                            r.amount,
                            p.amount - p.refunded
                        ),
                    );
                }
                Ok(Accepted::Plain)
            }
            Body::Enroll(e) => {
                let prog_id = &e.program;
                let id = ids::account_id(prog_id, &e.customer);
                let referred_by = match &e.referral_code {
                    Some(code) if !self.state.accounts.contains_key(&id) => {
                        match self.state.referral_codes.get(&(prog_id.clone(), code.clone())) {
                            Some(referrer) => Some(referrer.clone()),
                            None => {
                                return reject(
                                    Reason::Invalid,
                                    format!("data.referralCode: no member of {prog_id} has the code {code:?}"),
                                )
                            }
                        }
                    }
                    _ => None,
                };
                Ok(Accepted::Enroll { referred_by })
            }
            Body::ProgramUpdated(text) => match parse_program(text) {
                Ok(p) => Ok(Accepted::Program(Arc::new(p))),
                Err(e) => reject(
                    Reason::InvalidConfig,
                    format!("data.{e}").replace("data..:", "data:"),
                ),
            },
            Body::Redeem(_) => reject(
                Reason::Invalid,
                format!("type: {} is not supported yet", rec.kind),
            ),
            Body::Referral(_)
            | Body::Tick
            | Body::Adjust(_)
            | Body::Transfer(_)
            | Body::Qualify(_) => Ok(Accepted::Plain),
        }
    }

    /// Moves the clock forward to `to`. Time-driven effects (expiry, tier evaluations,
    /// birthdays) are carried out here, in time order, as the clock passes them.
    fn advance_clock(&mut self, to: Timestamp, _out: &mut Vec<Output>) {
        if self.state.clock.is_none_or(|c| to > c) {
            self.state.clock = Some(to);
            self.changes.clock = true;
        }
    }

    /// The account of `customer` in `prog`, enrolling the customer first when the program
    /// enrols automatically.
    fn account_for(
        &mut self,
        prog: &Arc<Program>,
        customer: &str,
        cx: &mut Cx<'_>,
    ) -> Option<String> {
        let id = ids::account_id(&prog.id, customer);
        if self.state.accounts.contains_key(&id) {
            return Some(id);
        }
        if !prog.auto_enroll {
            return None;
        }
        self.enroll(prog, customer, None, None, cx);
        Some(id)
    }

    fn enroll(
        &mut self,
        prog: &Arc<Program>,
        customer: &str,
        referred_by: Option<String>,
        birthday: Option<(u32, u32)>,
        cx: &mut Cx<'_>,
    ) {
        let id = ids::account_id(&prog.id, customer);
        let referral_code = ids::referral_code(&id);
        let account = Account {
            id: id.clone(),
            program: prog.id.clone(),
            customer: customer.to_string(),
            balance: 0,
            tier: tiers::initial(prog),
            qualifying_value: 0,
            referral_code: referral_code.clone(),
            referred_by,
            birthday,
            stamps: Default::default(),
            rule_usage: Default::default(),
        };
        let mut data = base_data(&account);
        data.insert("referralCode".into(), Value::String(referral_code.clone()));
        self.state
            .referral_codes
            .insert((prog.id.clone(), referral_code), id.clone());
        self.state.accounts.insert(id.clone(), account);
        self.changes.accounts.insert(id.clone());
        cx.event("loyalty.account.created", data);
        let trigger = Trigger {
            kind: "loyalty.account.created",
            at: cx.created,
            amount: None,
            currency: None,
            metadata: None,
            object_id: None,
        };
        self.earn(
            prog,
            &trigger,
            Recipients {
                default: Some(&id),
                referral: None,
            },
            None,
            cx,
        );
    }

    fn apply_activity(&mut self, rec: &Record, a: &Activity, cx: &mut Cx<'_>) {
        let targets: Vec<(Arc<Program>, Option<String>)> = match &a.loyalty_account {
            Some(loy) => {
                let acct = &self.state.accounts[loy];
                self.program(&acct.program)
                    .map(|p| (p, Some(loy.clone())))
                    .into_iter()
                    .collect()
            }
            None => self
                .state
                .programs
                .iter()
                .map(|p| (p.clone(), None))
                .collect(),
        };
        let is_payment = rec.kind == "payment.completed";
        if is_payment {
            cx.payment_awards = Some(Vec::new());
        }
        for (prog, linked) in targets {
            let account = match linked {
                Some(id) => Some(id),
                None => self.account_for(&prog, &a.customer, cx),
            };
            let Some(account) = account else { continue };
            let trigger = Trigger {
                kind: &rec.kind,
                at: rec.created,
                amount: a.amount,
                currency: a.currency.as_deref(),
                metadata: Some(&a.metadata),
                object_id: a.object_id.as_deref(),
            };
            let payment = a.object_id.as_deref().filter(|_| is_payment);
            self.earn(
                &prog,
                &trigger,
                Recipients {
                    default: Some(&account),
                    referral: None,
                },
                payment,
                cx,
            );
        }
        if let (true, Some(pid), Some(awards)) =
            (is_payment, &a.object_id, cx.payment_awards.take())
        {
            let entry = self
                .state
                .payments
                .entry(pid.clone())
                .or_insert_with(|| PaymentRecord {
                    currency: a.currency.clone().unwrap_or_default(),
                    ..PaymentRecord::default()
                });
            entry.amount = entry.amount.saturating_add(a.amount.unwrap_or(0));
            self.changes.payments.insert(pid.clone());
            entry.awards.extend(awards);
        }
    }

    fn apply_refund(&mut self, _rec: &Record, r: &envelope::Refund, cx: &mut Cx<'_>) {
        let Some(mut payment) = self.state.payments.remove(&r.payment) else {
            return;
        };
        payment.refunded += r.amount;
        for award in &mut payment.awards {
            let due = if payment.refunded >= payment.amount {
                i128::from(award.points)
            } else {
                i128::from(award.points) * i128::from(payment.refunded) / i128::from(payment.amount)
            };
            let give = i64::try_from(due).unwrap_or(award.points) - award.reversed;
            if give <= 0 || !self.state.accounts.contains_key(&award.account) {
                continue;
            }
            award.reversed += give;
            let (tx, balance) = self.post(
                cx,
                &award.account,
                TxKind::Reversal,
                -give,
                award.rule.clone(),
                award.campaigns.clone(),
                Map::new(),
            );
            let mut data = base_data(&self.state.accounts[&award.account]);
            data.insert("points".into(), Value::from(-give));
            data.insert("transaction".into(), Value::String(tx));
            data.insert("balance".into(), num(balance));
            data.insert("payment".into(), Value::String(r.payment.clone()));
            data.insert("refund".into(), Value::String(r.refund_id.clone()));
            data.insert(
                "rule".into(),
                award.rule.clone().map_or(Value::Null, Value::String),
            );
            cx.event("loyalty.points.reversed", data);
        }
        self.state.payments.insert(r.payment.clone(), payment);
        self.changes.payments.insert(r.payment.clone());
    }

    fn earn_referral(
        &mut self,
        prog: &Arc<Program>,
        at: Timestamp,
        referrer: Option<String>,
        referee: Option<String>,
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

    /// The rank and earn multiplier of the tier an account holds.
    fn tier_of(prog: &Program, account: &Account) -> (u32, Dec) {
        account
            .tier
            .as_deref()
            .and_then(|t| prog.tier(t))
            .map_or((0, Dec::ONE), |t| (t.rank, t.earn_multiplier))
    }

    /// Fires every rule of `prog` whose trigger is the event's, in order, then every
    /// campaign bonus (SPEC section 4).
    fn earn(
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
                account.rule_usage.entry(rule.id.clone()).or_default().uses += 1;
                let mut data = base_data(account);
                data.insert("rule".into(), Value::String(rule.id.clone()));
                data.insert(
                    "payment".into(),
                    t.object_id
                        .or(payment)
                        .map_or(Value::Null, |p| Value::String(p.into())),
                );
                data.insert("amount".into(), Value::from(cash));
                data.insert("currency".into(), Value::String(currency.to_string()));
                cx.event("loyalty.cashback.earned", data);
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
            let campaign_ids: Vec<String> = active.iter().map(|c| c.id.clone()).collect();
            self.account_mut(account_id)
                .expect("checked above")
                .rule_usage
                .entry(rule.id.clone())
                .or_default()
                .record(t.at, points);
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
    fn award(
        &mut self,
        cx: &mut Cx<'_>,
        account_id: &str,
        points: i64,
        rule: Option<&str>,
        campaigns: Vec<String>,
        capped: bool,
        payment: Option<&str>,
    ) {
        let mut md = Map::new();
        md.insert("capped".into(), Value::Bool(capped));
        let (tx, balance) = self.post(
            cx,
            account_id,
            TxKind::Award,
            points,
            rule.map(str::to_string),
            campaigns.clone(),
            md,
        );
        if payment.is_some() {
            if let Some(awards) = cx.payment_awards.as_mut() {
                awards.push(AwardRecord {
                    account: account_id.to_string(),
                    rule: rule.map(str::to_string),
                    campaigns: campaigns.clone(),
                    points,
                    reversed: 0,
                });
            }
        }
        let mut data = base_data(&self.state.accounts[account_id]);
        data.insert("points".into(), Value::from(points));
        data.insert(
            "rule".into(),
            rule.map_or(Value::Null, |r| Value::String(r.into())),
        );
        data.insert("campaigns".into(), json!(campaigns));
        data.insert("transaction".into(), Value::String(tx));
        data.insert("balance".into(), num(balance));
        data.insert("capped".into(), Value::Bool(capped));
        cx.event("loyalty.points.earned", data);
    }

    /// Appends a ledger entry and moves the balance; returns its id and the balance after.
    #[allow(clippy::too_many_arguments)]
    fn post(
        &mut self,
        cx: &mut Cx<'_>,
        account_id: &str,
        kind: TxKind,
        points: i64,
        rule: Option<String>,
        campaigns: Vec<String>,
        metadata: Map<String, Value>,
    ) -> (String, i128) {
        let id = cx.tx_id();
        let account = self
            .account_mut(account_id)
            .expect("transactions are posted to existing accounts");
        account.balance += i128::from(points);
        let balance = account.balance;
        cx.out.push(Output::Transaction(Transaction {
            id: id.clone(),
            account: account.id.clone(),
            customer: account.customer.clone(),
            program: account.program.clone(),
            kind,
            points,
            balance_after: balance,
            rule,
            campaigns,
            source: cx.source.clone(),
            created: cx.created,
            metadata,
        }));
        (id, balance)
    }

    /// Replaces (or adds) a program from this point of the log on (SPEC section 3).
    fn update_program(&mut self, prog: Arc<Program>, text: &str, cx: &mut Cx<'_>) {
        self.changes.programs = true;
        *self
            .state
            .program_revisions
            .entry(prog.id.clone())
            .or_insert(0) += 1;
        self.state
            .program_texts
            .insert(prog.id.clone(), text.to_string());
        let old = match self.state.programs.iter_mut().find(|p| p.id == prog.id) {
            Some(slot) => Some(std::mem::replace(slot, prog.clone())),
            None => {
                self.state.programs.push(prog.clone());
                None
            }
        };
        // Tiers are matched by name: a member whose tier no longer exists moves at once to
        // the highest new tier its value meets.
        let ids: Vec<String> = self
            .state
            .accounts
            .values()
            .filter(|a| a.program == prog.id)
            .filter(|a| a.tier.as_deref().is_none_or(|t| prog.tier(t).is_none()))
            .map(|a| a.id.clone())
            .collect();
        for id in ids {
            let account = self.account_mut(&id).expect("listed above");
            let new = tiers::highest_met(&prog, account.qualifying_value).map(|t| t.name.clone());
            let previous = std::mem::replace(&mut account.tier, new.clone());
            let (Some(from), Some(to)) = (previous, new) else {
                continue;
            };
            let from_rank = old
                .as_ref()
                .and_then(|p| p.tier(&from))
                .map_or(0, |t| t.rank);
            let to_rank = prog.tier(&to).map_or(0, |t| t.rank);
            let mut data = base_data(account);
            data.insert("fromTier".into(), Value::String(from));
            data.insert("toTier".into(), Value::String(to));
            data.insert(
                "direction".into(),
                Value::String(if to_rank >= from_rank { "up" } else { "down" }.into()),
            );
            cx.event("loyalty.tier.changed", data);
        }
    }
}
