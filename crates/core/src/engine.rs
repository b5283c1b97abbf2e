//! `apply`: one record in, its effects out, in the order SPEC sections 2 to 6 give.
//!
//! For each record: parse it (`envelope`), decide the rejections that depend on state
//! (duplicate, unknown program, not enrolled, unknown payment, invalid config) before
//! anything changes, mark its id seen and move the clock (carrying out what fell due on the
//! way), then apply it. Every transaction, event and refusal is appended to the caller's
//! output vector in the order it happened, and ids are minted from the record id and a
//! counter, so the same log always gives the same bytes.
//!
//! Owns: the order of operations: decide the rejections, move the clock, dispatch. Each
//! rule lives whole in the module named after it (`earning`, `caps`, `campaigns`, `tiers`,
//! `clock`, `lots`, `refunds`, `redemption`, `referrals`, `stamps`, `transfers`,
//! `enrolment`, `programs`), transactions are posted by `ledger`, and what a store needs
//! to run the engine on part of the accounts is in `working_set`; the account view is
//! `view`'s. What stays here besides the order is the fan-out of one activity event to
//! each program it reaches: the account, then in turn the qualifying spend (`tiers`
//! decides what counts), the rules, stamps, a referral's conversion, and the payment's
//! record that a refund later reads (kept by `refunds`).
//!
//! Must not: apply a rule's arithmetic (earning, caps, tiers, lots and the rest own theirs)
//! or post a transaction (only `ledger` moves a balance).

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{parse_program, Config, Program};
use crate::earning::{Recipients, Trigger};
use crate::envelope::{self, Activity, Body, Reason, Record, Rejection};
use crate::ids;
use crate::ledger::Cx;
use crate::output::{AccountView, Output};
use crate::partition::Partitioning;
use crate::referrals::claim_code;
use crate::state::{Account, PackedPayment, State};
use crate::tiers;
use crate::time::Timestamp;
use crate::Sym;

pub use crate::clock::next_due;
pub use crate::view::view_account;
pub use crate::working_set::Changes;

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
    pub(crate) state: State,
    /// What changed since [`Engine::take_changes`] was last called, so that a store can
    /// persist exactly the entries a batch touched.
    pub(crate) changes: Changes,
    /// Whether `changes` collects the keys touched (off for a fold that persists nothing).
    pub(crate) track: bool,
    /// The partition this engine folds, when the log has several and each is folded on
    /// its own ([`crate::partition`]); `None`: every customer is here.
    pub(crate) partitioning: Option<Partitioning>,
    /// What each rule did with the records applied, when asked for
    /// ([`Engine::explain_rules`]): `POST /v1/simulate`'s rules.
    pub(crate) explain: Option<Vec<crate::earning::RuleOutcome>>,
    /// Buffers and memos reused from record to record (no state: outputs never depend on
    /// them).
    pub(crate) scratch: crate::ledger::Scratch,
}

/// What a record needs once its rejections are decided.
pub(crate) enum Accepted {
    /// Nothing more to look up.
    Plain,
    /// A program update, already validated.
    Program(Arc<Program>),
    /// An enrolment with the referrer's account.
    Enroll { referred_by: Option<String> },
    /// A message from another partition applied before: a second copy, skipped without a
    /// trace (the sender's own retry, not an upstream duplicate).
    Again,
}

impl Engine {
    /// Makes this engine the fold of one partition of a log of several
    /// ([`crate::partition`]): what a record does to a customer of another partition is
    /// handed to that partition as an [`Output::Message`]. `None` (the default): every
    /// customer is here. A log of one partition is that: the engine folds it as it folds
    /// every partition, with no message.
    pub fn set_partitioning(&mut self, partitioning: Option<Partitioning>) {
        self.partitioning = partitioning.filter(|p| p.count > 1);
    }

    /// From now on, notes what every earning rule does with each record applied (until
    /// [`Engine::take_explanations`]): for a dry run, which reports why a rule did not
    /// award.
    pub fn explain_rules(&mut self) {
        self.explain = Some(Vec::new());
    }

    /// What each rule did since [`Engine::explain_rules`], in the order they were tried
    /// (a rule may be tried more than once by one record: a payment, then the referral it
    /// converts).
    pub fn take_explanations(&mut self) -> Vec<crate::earning::RuleOutcome> {
        self.explain.take().unwrap_or_default()
    }

    /// The partition this engine folds, if it folds one.
    pub fn partitioning(&self) -> Option<Partitioning> {
        self.partitioning
    }

    /// An engine over a validated config, with no accounts yet.
    pub fn new(config: &Config) -> Engine {
        Engine {
            state: State {
                programs: config.programs.clone(),
                ..State::default()
            },
            changes: Changes::default(),
            track: true,
            partitioning: None,
            explain: None,
            scratch: Default::default(),
        }
    }

    /// An engine with no programs: the streaming service's, whose programs all come from
    /// `loyalty.program.updated` records in its log.
    pub fn empty() -> Engine {
        Engine::from_state(State::default())
    }

    /// An engine over a state loaded from a store.
    pub fn from_state(mut state: State) -> Engine {
        let mut codes = HashMap::default();
        for a in state.accounts.values() {
            claim_code(
                &mut codes,
                (a.program.to_string(), a.referral_code.clone()),
                &a.id,
            );
        }
        state.referral_codes = codes;
        let mut engine = Engine {
            state,
            changes: Changes::default(),
            track: true,
            partitioning: None,
            explain: None,
            scratch: Default::default(),
        };
        engine.rebuild_schedule();
        engine
    }

    pub(crate) fn account_mut(&mut self, id: &str) -> Option<&mut Account> {
        let account = self.state.accounts.get_mut(id)?;
        if self.track && !self.changes.accounts.contains(id) {
            self.changes.accounts.insert(account.id.clone());
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
        self.apply_parsed(envelope::parse(bytes), out);
    }

    /// Applies what [`envelope::parse`] made of a record's bytes: the same as
    /// [`Engine::apply`] on those bytes.
    pub fn apply_parsed(&mut self, parsed: Result<Record, Rejection>, out: &mut Vec<Output>) {
        match parsed {
            Ok(record) => self.apply_record(&record, out),
            Err(rejection) => out.push(Output::Rejected(rejection)),
        }
    }

    /// Applies one parsed record, appending what happened to `out`.
    pub fn apply_record(&mut self, rec: &Record, out: &mut Vec<Output>) {
        let accepted = match self.check(rec) {
            Ok(Accepted::Again) => return,
            Ok(a) => a,
            Err(r) => {
                out.push(Output::Rejected(r));
                return;
            }
        };
        self.state.seen.insert(rec.id.clone());
        if self.track {
            self.changes.seen.push(rec.id.clone());
        }
        // What falls due on the way (another member's birthday award, say) is not this
        // record's doing: only the record's own rules are explained.
        let explained = self.explain.as_ref().map(Vec::len);
        self.advance_clock(rec.created, out);
        if let (Some(n), Some(e)) = (explained, self.explain.as_mut()) {
            e.truncate(n);
        }
        let mut cx = Cx::new(rec.id.clone(), rec.created, out);
        match &rec.body {
            Body::TransferCredit(m) | Body::TransferReturn(m) => {
                cx.source = m.source.as_str().into()
            }
            Body::Stock(_, m) => cx.source = m.source.as_str().into(),
            Body::Referral2(_, m) => cx.source = m.source.as_str().into(),
            _ => {}
        }
        self.apply_body(rec, accepted, &mut cx);
        self.promote_touched(&mut cx);
    }

    /// Applies a record's body (after its rejections were decided and the clock moved).
    fn apply_body(&mut self, rec: &Record, accepted: Accepted, cx: &mut Cx<'_>) {
        match (&rec.body, accepted) {
            (Body::Event(a), _) => self.apply_activity(rec, a, cx),
            (Body::Refund(r), _) => self.apply_refund(r, cx),
            (Body::Referral(r), _) => self.apply_referral(rec, r, cx),
            (Body::Tick, _) => {}
            (Body::Enroll(e), Accepted::Enroll { referred_by }) => {
                let Some(prog) = self.program(&e.program) else {
                    return;
                };
                let id = ids::account_id(&prog.id, &e.customer);
                if !self.state.accounts.contains_key(&id) {
                    let opening = e.opening_balance;
                    self.enroll(&prog, &e.customer, referred_by, e.birthday, opening, cx);
                    // One partition of several: the code's partition knows its holder; the
                    // first payment asks it (`referrals`).
                    if let (Some(_), Some(code)) = (self.partitioning, &e.referral_code) {
                        self.flow_changed(crate::working_set::FlowKey::Pending(id.to_string()));
                        self.state
                            .pending_codes
                            .insert(id.to_string(), code.clone());
                    }
                }
            }
            (Body::Adjust(a), _) => self.adjust(rec, a, cx),
            (Body::Transfer(t), _) => self.transfer(rec, t, cx),
            (Body::TransferCredit(m), _) => self.transfer_credit(m, cx),
            (Body::TransferReturn(m), _) => self.transfer_return(m, cx),
            (Body::Stock(step, m), _) => self.stock(*step, m, cx),
            (Body::Referral2(step, m), _) => self.referral_step(*step, m, cx),
            (Body::Redeem(r), _) => self.redeem(rec, r, cx),
            (Body::Qualify(q), _) => self.apply_qualify(rec, q, cx),
            (Body::TierSet(t), _) => self.set_tier(rec, t, cx),
            (Body::ProgramUpdated(text), Accepted::Program(prog)) => {
                self.update_program(prog, text, cx)
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
        let mut all: Vec<&Account> = self.state.accounts.values().map(|a| &**a).collect();
        all.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        all.into_iter().map(|a| self.account_view(a))
    }

    fn account_view(&self, a: &Account) -> AccountView {
        view_account(
            a,
            self.state.program(&a.program).map(|p| &**p),
            self.state.clock,
        )
    }
    pub(crate) fn program(&self, id: &str) -> Option<Arc<Program>> {
        self.state.program(id).cloned()
    }

    /// The state-dependent rejections, in SPEC order; nothing changes here.
    fn check(&self, rec: &Record) -> Result<Accepted, Rejection> {
        let reject = |reason, detail: String| Err(Rejection::new(Some(&rec.id), reason, detail));
        if rec.is_message() && self.partitioning.is_none() {
            // Bad input anywhere but in one partition of several, as any other `loyalty.`
            // type that is not a command (SPEC section 2).
            return reject(
                Reason::Invalid,
                format!("type: {} is not a command", rec.kind),
            );
        }
        if let Some(p) = self.partitioning {
            // Ids of messages are the engine's: an upstream record taking one would make the
            // message it names look like a copy already applied.
            if !rec.is_message() && rec.id.starts_with("msg_") {
                return reject(
                    Reason::Invalid,
                    "id: ids starting msg_ are the engine's own".into(),
                );
            }
            // A record belongs to the partition of its customer (the sender of a transfer,
            // the referee of a referral); elsewhere it would open accounts where they do
            // not live.
            if let Some(customer) = rec.home_customer().filter(|c| !p.holds(c)) {
                return reject(
                    Reason::Invalid,
                    format!(
                        "data: the customer {customer:?} belongs to log partition {}, not {}",
                        p.of(customer),
                        p.me
                    ),
                );
            }
        }
        if self.state.seen.contains(&rec.id) {
            // A second copy of a record the engine wrote itself: a message sent again, or
            // a configured program that two instances of a group both appended.
            let configured = rec.kind == "loyalty.program.updated" && rec.id.starts_with("cfg_");
            if rec.is_message() || (configured && self.partitioning.is_some()) {
                return Ok(Accepted::Again);
            }
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
                Body::TierSet(c) => Some(("customer", &c.customer)),
                Body::Redeem(c) => Some(("customer", &c.customer)),
                // A receiver of another partition is looked for there.
                Body::Transfer(t) => [("from", &t.from), ("to", &t.to)]
                    .into_iter()
                    .filter(|(f, c)| *f == "from" || self.partitioning.is_none_or(|p| p.holds(c)))
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
                    if !self.state.accounts.contains_key(loy.as_str()) {
                        return reject(
                            Reason::NotEnrolled,
                            format!("data.metadata.loyalty_account: no account {loy}"),
                        );
                    }
                }
                Ok(Accepted::Plain)
            }
            Body::Refund(r) => {
                let Some(p) = self
                    .state
                    .payments
                    .get(&r.payment)
                    .map(PackedPayment::unpack)
                else {
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
                    // One partition of several cannot know every code: it is looked up on
                    // the code's partition at the first payment (`referrals`).
                    Some(code)
                        if !self.state.accounts.contains_key(&id)
                            && self.partitioning.is_none() =>
                    {
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
            Body::TierSet(t) => {
                let prog = self.state.program(&t.program);
                if prog.is_none_or(|p| p.tiers.is_none()) {
                    return reject(
                        Reason::Invalid,
                        format!("data.program: {} has no tiers", t.program),
                    );
                }
                if prog.is_some_and(|p| p.tier(&t.tier).is_none()) {
                    return reject(
                        Reason::Invalid,
                        format!("data.tier: {} has no tier {:?}", t.program, t.tier),
                    );
                }
                Ok(Accepted::Plain)
            }
            Body::Redeem(_)
            | Body::Referral(_)
            | Body::Tick
            | Body::Adjust(_)
            | Body::Transfer(_)
            | Body::TransferCredit(_)
            | Body::TransferReturn(_)
            | Body::Stock(..)
            | Body::Referral2(..)
            | Body::Qualify(_) => Ok(Accepted::Plain),
        }
    }

    fn apply_activity(&mut self, rec: &Record, a: &Activity, cx: &mut Cx<'_>) {
        let targets: Vec<(Arc<Program>, Option<Sym>)> = match &a.loyalty_account {
            Some(loy) => {
                let acct = &self.state.accounts[loy.as_str()];
                let id = acct.id.clone();
                self.program(&acct.program)
                    .map(|p| (p, Some(id)))
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
        let mut spend_accounts = Vec::new();
        for (prog, linked) in targets {
            let account = match linked {
                Some(id) => Some(id),
                None => self.account_for(&prog, &a.customer, cx),
            };
            let Some(account) = account else {
                self.explain_not_enrolled(&prog, &rec.kind);
                continue;
            };
            let spend = tiers::counts_as_spend(&prog, a.currency.as_deref());
            if let (true, true, Some(amount)) = (is_payment, spend, a.amount) {
                self.qualify(&account, rec.created, amount, cx);
                spend_accounts.push(account.clone());
            }
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
            self.stamp(&prog, &account, &trigger, cx);
            // The referee's first payment converts its referral, inside the engine.
            if is_payment {
                self.convert_referral(&prog, &account, rec.created, cx);
            }
        }
        if let (true, Some(pid), Some(awards)) =
            (is_payment, &a.object_id, cx.payment_awards.take())
        {
            let paid = crate::refunds::Paid {
                currency: a.currency.as_deref(),
                amount: a.amount,
                created: rec.created,
            };
            self.record_payment(pid, &paid, awards, spend_accounts);
        }
    }
}
