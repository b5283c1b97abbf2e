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

use std::collections::HashMap;
use std::sync::Arc;

use crate::caps::headroom;
use crate::config::{parse_program, Award, Config, Program, QualifyOn, Recipient};
use crate::dec::Dec;
use crate::earning::{award_points, cashback_amount, conditions_hold, Trigger};
use crate::envelope::{self, Activity, Body, Reason, Record, Rejection};
use crate::ids;
use crate::lots;
use crate::output::{
    AccountView, Direction, Event, Member, OutEvent, Output, RedemptionRefusal, TierView,
    Transaction, TxKind, TxMeta,
};
use crate::state::{Account, AwardRecord, Due, DueKind, PackedPayment, PaymentRecord, State};
use crate::time::{add_months, Timestamp};
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
    /// Whether `changes` collects the keys touched (off for a fold that persists nothing).
    track: bool,
}

/// The keys of the state a run of `apply` changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Accounts created or changed (a hash set: a store writes them in any order, and the
    /// engine asks it whether an account is in it for nearly every posting).
    pub accounts: std::collections::HashSet<String, crate::state::FixedState>,
    /// Record ids newly seen, in order.
    pub seen: Vec<String>,
    /// Payments recorded or refunded.
    pub payments: std::collections::HashSet<String, crate::state::FixedState>,
    /// The program list changed.
    pub programs: bool,
    /// The clock moved.
    pub clock: bool,
    /// Reward stock changed.
    pub rewards: bool,
    /// Referral codes claimed, `(program, code)`, in order.
    pub codes: Vec<(String, String)>,
}

/// What a record needs in an engine's working set to apply as it would with the whole state
/// in memory ([`Engine::needs`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// Accounts the record may read or change, by id (with, for each, the account that
    /// referred it: see [`Engine::load_account`]).
    pub accounts: Vec<String>,
    /// Referral codes it looks up, `(program, code)`, with the accounts holding them.
    pub codes: Vec<(String, String)>,
    /// Accounts it may open, `(program, account)`: when one is not stored, the holder of
    /// the referral code it would get is needed too (two accounts may share a code, and
    /// the smaller id keeps it).
    pub may_open: Vec<(String, String)>,
    /// Programs every member of which it may change (a program update).
    pub members_of: Vec<String>,
}

impl Changes {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
            && self.seen.is_empty()
            && self.payments.is_empty()
            && !self.programs
            && !self.clock
            && !self.rewards
            && self.codes.is_empty()
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
    /// Whether `source` is a record's id (not an effect that fell due): events carry it.
    from_record: bool,
    created: Timestamp,
    n_tx: u32,
    n_ev: u32,
    out: &'o mut Vec<Output>,
    /// Awards of the payment being applied, for later refunds.
    payment_awards: Option<Vec<AwardRecord>>,
    /// Accounts whose qualifying activity changed: their tier is checked for promotion.
    touched: Vec<String>,
}

impl<'o> Cx<'o> {
    /// The minting context of a record, or of an effect that fell due.
    fn new(source: String, created: Timestamp, out: &'o mut Vec<Output>) -> Cx<'o> {
        Cx {
            source,
            from_record: true,
            created,
            n_tx: 0,
            n_ev: 0,
            out,
            payment_awards: None,
            touched: Vec::new(),
        }
    }

    /// The minting context of an effect that fell due: its events carry no `source`.
    fn due(source: String, created: Timestamp, out: &'o mut Vec<Output>) -> Cx<'o> {
        Cx {
            from_record: false,
            ..Cx::new(source, created, out)
        }
    }

    fn tx_id(&mut self) -> String {
        self.n_tx += 1;
        ids::transaction_id(&self.source, self.n_tx - 1)
    }

    fn event(&mut self, member: Member, event: Event) {
        self.n_ev += 1;
        let id = ids::event_id(&self.source, self.n_ev - 1);
        self.out.push(Output::Event(OutEvent {
            id,
            created: self.created,
            source: self.from_record.then(|| self.source.clone()),
            member,
            event,
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

/// The start (local midnight) of the first birthday `(month, day)` after `after`; February
/// 29 falls on February 28 in other years.
fn next_birthday(month: u32, day: u32, after: Timestamp, tz: chrono_tz::Tz) -> Option<Timestamp> {
    use chrono::Datelike;
    let year = after.local(tz)?.year();
    (year..year + 3).find_map(|y| {
        let date = chrono::NaiveDate::from_ymd_opt(y, month, day)
            .or_else(|| chrono::NaiveDate::from_ymd_opt(y, month, day - 1))?;
        crate::time::start_of(date, tz).filter(|t| *t > after)
    })
}

/// `100 - percent`, exactly.
fn sub_percent(percent: Dec) -> Dec {
    let (m, s) = percent.parts();
    // A discount is validated to at most 100 with at most 18 decimals: no overflow.
    Dec::from_parts(100i128 * 10i128.pow(s) - m, s)
}

/// `days` local days before `t`, at the same local time.
fn minus_days(t: Timestamp, days: u32, tz: chrono_tz::Tz) -> Option<Timestamp> {
    let local = t.local(tz)?;
    let earlier = local.checked_sub_signed(chrono::Duration::days(i64::from(days)))?;
    crate::time::from_local(earlier, tz)
}

fn tier_changed(from: String, to: String, direction: Direction) -> Event {
    Event::TierChanged {
        from_tier: from,
        to_tier: to,
        direction,
    }
}

/// Records that `code` refers to `account`. Codes are 40 bits: should two accounts of a
/// program ever share one, the smaller account id keeps it, whatever the order the accounts
/// were created or loaded in, so that a restarted engine and a replay resolve it alike.
fn claim_code(
    codes: &mut HashMap<(String, String), String, crate::state::FixedState>,
    code: (String, String),
    account: &str,
) {
    match codes.get_mut(&code) {
        Some(holder) if holder.as_str() <= account => {}
        Some(holder) => *holder = account.to_string(),
        None => {
            codes.insert(code, account.to_string());
        }
    }
}

/// Puts an account's effects still to come (after `clock`) into `schedule`, as they were
/// scheduled when the account last changed. Effects that fell due were carried out, and a
/// lot's effects that outlived the lot do nothing, so this is the account's whole share of
/// the schedule.
fn schedule_account(schedule: &mut crate::schedule::Schedule, a: &Account, clock: i64) {
    for (at, kind) in [
        (a.tier_due, DueKind::Tier),
        (a.birthday_due, DueKind::Birthday),
    ] {
        if let Some(at) = at.filter(|at| *at > clock) {
            schedule.insert(Due {
                at,
                kind,
                account: a.id.clone(),
                item: String::new(),
            });
        }
    }
    for l in &a.lots {
        for (at, kind) in [(l.expires, DueKind::Expiry), (l.warn, DueKind::Warning)] {
            if let Some(at) = at.filter(|at| *at > clock) {
                schedule.insert_lot(at, kind, &a.id, l.seq);
            }
        }
    }
}

/// When an account's next effect falls due (after `clock`): what a store indexes to find
/// the accounts an advance of the clock needs (see [`Engine::needs`]).
pub fn next_due(a: &Account, clock: Option<Timestamp>) -> Option<i64> {
    let clock = clock.map_or(i64::MIN, |c| c.0);
    [a.tier_due, a.birthday_due]
        .into_iter()
        .chain(a.lots.iter().flat_map(|l| [l.expires, l.warn]))
        .flatten()
        .filter(|at| *at > clock)
        .min()
}

/// What a rule has awarded a member, created on first use (without allocating the key on
/// every award).
fn usage_mut<'a>(
    usage: &'a mut crate::vecmap::VecMap<String, crate::state::RuleUsage>,
    rule: &str,
) -> &'a mut crate::state::RuleUsage {
    usage.get_or_insert_with(rule, |r| {
        (r.to_string(), crate::state::RuleUsage::default())
    })
}

/// The member an account's events are about.
fn member(a: &Account) -> Member {
    Member {
        account: a.id.clone(),
        customer: a.customer.clone(),
        program: a.program.clone(),
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
            track: true,
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
                (a.program.clone(), a.referral_code.clone()),
                &a.id,
            );
        }
        state.referral_codes = codes;
        let mut engine = Engine {
            state,
            changes: Changes::default(),
            track: true,
        };
        engine.rebuild_schedule();
        engine
    }

    /// Whether to collect the keys each record touches for [`Engine::take_changes`] (on by
    /// default). A fold that persists nothing turns it off: the engine then keeps no list
    /// of what changed.
    pub fn track_changes(&mut self, on: bool) {
        self.track = on;
        if !on {
            self.changes = Changes::default();
        }
    }

    /// Puts into the state what a store holds for a record about to be applied, when the
    /// engine runs on a working set (see [`Engine::forget_committed`]): whether its id was
    /// seen, and the payment it names. The result of applying it is then the same as with
    /// the whole state in memory.
    pub fn preload(&mut self, seen: Option<&str>, payment: Option<(String, PaymentRecord)>) {
        if let Some(id) = seen {
            self.state.seen.insert(id.to_string());
        }
        if let Some((id, p)) = payment {
            self.state.payments.entry(id).or_insert_with(|| p.pack());
        }
    }

    /// Forgets the seen ids and payments, which a store has committed and hands back with
    /// [`Engine::preload`] when a record needs them: they grow with every record, and are
    /// otherwise the bulk of the state.
    pub fn forget_committed(&mut self) {
        self.state.seen = Default::default();
        self.state.payments = Default::default();
    }

    /// What applying `rec` needs in a working set of accounts, besides the effects that fall
    /// due before it ([`Engine::closes_due_by`] and the accounts a store indexes by
    /// [`due_times`]): every account it may read or change, the referral codes it looks up,
    /// the programs all of whose members it may change. Pure: a streaming engine that keeps
    /// only some accounts in memory loads these (with [`Engine::load_account`] and
    /// [`Engine::load_code`]) before applying the record, and the result is the same as
    /// with every account in memory. Call it after [`Engine::preload`]: a refund needs the
    /// accounts of its payment.
    pub fn needs(&self, rec: &Record) -> Needs {
        let mut n = Needs::default();
        let every_program = |customer: &str, n: &mut Needs| {
            for p in &self.state.programs {
                let id = ids::account_id(&p.id, customer);
                if p.auto_enroll {
                    n.may_open.push((p.id.clone(), id.clone()));
                }
                n.accounts.push(id);
            }
        };
        match &rec.body {
            Body::Event(a) => match &a.loyalty_account {
                Some(loy) => n.accounts.push(loy.clone()),
                None => every_program(&a.customer, &mut n),
            },
            Body::Refund(r) => {
                if let Some(p) = self.state.payments.get(&r.payment) {
                    let p = p.unpack();
                    n.accounts.extend(p.spend_accounts);
                    n.accounts.extend(p.awards.into_iter().map(|a| a.account));
                }
            }
            Body::Referral(r) => {
                every_program(&r.referrer, &mut n);
                every_program(&r.referee, &mut n);
            }
            Body::Enroll(e) => {
                let id = ids::account_id(&e.program, &e.customer);
                if let Some(code) = &e.referral_code {
                    n.codes.push((e.program.clone(), code.clone()));
                }
                n.may_open.push((e.program.clone(), id.clone()));
                n.accounts.push(id);
            }
            Body::Adjust(c) => n.accounts.push(ids::account_id(&c.program, &c.customer)),
            Body::Qualify(c) => n.accounts.push(ids::account_id(&c.program, &c.customer)),
            Body::Redeem(c) => n.accounts.push(ids::account_id(&c.program, &c.customer)),
            Body::Transfer(t) => {
                n.accounts.push(ids::account_id(&t.program, &t.from));
                n.accounts.push(ids::account_id(&t.program, &t.to));
            }
            Body::ProgramUpdated(text) => {
                if let Ok(p) = parse_program(text) {
                    n.members_of.push(p.id);
                }
            }
            Body::Tick => {}
        }
        n
    }

    /// The programs whose period close falls due at or before `to`: advancing the clock
    /// there evaluates every member of each.
    pub fn closes_due_by(&self, to: Timestamp) -> Vec<String> {
        self.state.schedule.closes_due_by(to.0)
    }

    /// Whether the account is in the working set.
    pub fn has_account(&self, id: &str) -> bool {
        self.state.accounts.contains_key(id)
    }

    /// How many accounts the working set holds.
    pub fn account_count(&self) -> usize {
        self.state.accounts.len()
    }

    /// Puts a stored account into the working set, with its effects still to come (an
    /// account already there is kept as it is: it may be newer than the store's).
    pub fn load_account(&mut self, account: Account) {
        if self.state.accounts.contains_key(&account.id) {
            return;
        }
        let clock = self.state.clock.map_or(i64::MIN, |c| c.0);
        schedule_account(&mut self.state.schedule, &account, clock);
        self.state
            .accounts
            .insert(account.id.clone(), Box::new(account));
    }

    /// Whether the working set knows who holds a referral code.
    pub fn has_code(&self, program: &str, code: &str) -> bool {
        self.state
            .referral_codes
            .contains_key(&(program.to_string(), code.to_string()))
    }

    /// Puts a stored referral code's holder into the working set.
    pub fn load_code(&mut self, program: &str, code: &str, holder: &str) {
        self.state
            .referral_codes
            .entry((program.to_string(), code.to_string()))
            .or_insert_with(|| holder.to_string());
    }

    /// The effects already due that the next advance of the clock carries out: those a
    /// record older than the clock scheduled at or before it (a lot of a late payment that
    /// expired already, a warning due at once, a late enrolment's birthday). They are part
    /// of the state, but no account field tells them from effects carried out already, so
    /// a store keeps them as they are ([`Engine::restore_overdue`]).
    pub fn overdue(&self) -> Vec<Due> {
        match self.state.clock {
            Some(c) => {
                let mut due = self.state.schedule.due_by(c.0);
                due.retain(|d| !d.account.is_empty());
                due
            }
            None => Vec::new(),
        }
    }

    /// Puts back effects [`Engine::overdue`] listed (after a load).
    pub fn restore_overdue(&mut self, dues: Vec<Due>) {
        for d in dues {
            self.state.schedule.insert(d);
        }
    }

    /// Takes out of the working set every account `keep` refuses, with its effects, and
    /// every referral code. Only for what a store holds: call it when nothing changed since
    /// [`Engine::take_changes`] (an account changed since stays, and so does an account
    /// with an effect overdue, [`Engine::overdue`]).
    pub fn evict(&mut self, keep: impl Fn(&str) -> bool) {
        let changed = &self.changes.accounts;
        let overdue: std::collections::HashSet<String> =
            self.overdue().into_iter().map(|d| d.account).collect();
        let keep = |id: &str| changed.contains(id) || overdue.contains(id) || keep(id);
        self.state.accounts.retain(|id, _| keep(id));
        self.state.schedule.retain_accounts(keep);
        if self.changes.codes.is_empty() {
            self.state.referral_codes = HashMap::default();
        }
    }

    /// What changed since the last call, and forget it.
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    fn account_mut(&mut self, id: &str) -> Option<&mut Account> {
        let account = self.state.accounts.get_mut(id)?;
        if self.track && !self.changes.accounts.contains(id) {
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
        self.advance_clock(rec.created, out);
        let mut cx = Cx::new(rec.id.clone(), rec.created, out);
        self.apply_body(rec, accepted, &mut cx);
        self.promote_touched(&mut cx);
    }

    /// Applies a record's body (after its rejections were decided and the clock moved).
    fn apply_body(&mut self, rec: &Record, accepted: Accepted, cx: &mut Cx<'_>) {
        match (&rec.body, accepted) {
            (Body::Event(a), _) => self.apply_activity(rec, a, cx),
            (Body::Refund(r), _) => self.apply_refund(r, cx),
            (Body::Referral(r), _) => {
                for prog in self.state.programs.clone() {
                    let referrer = self.account_for(&prog, &r.referrer, cx);
                    let referee = self.account_for(&prog, &r.referee, cx);
                    // One conversion per referee.
                    if let Some(id) = &referee {
                        let account = self.account_mut(id).expect("just found");
                        if account.referral_converted {
                            continue;
                        }
                        account.referral_converted = true;
                    }
                    self.earn_referral(&prog, rec.created, referrer, referee, cx);
                }
            }
            (Body::Tick, _) => {}
            (Body::Enroll(e), Accepted::Enroll { referred_by }) => {
                let Some(prog) = self.program(&e.program) else {
                    return;
                };
                let id = ids::account_id(&prog.id, &e.customer);
                if !self.state.accounts.contains_key(&id) {
                    self.enroll(&prog, &e.customer, referred_by, e.birthday, cx);
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
                let md = TxMeta::Adjustment {
                    reason: a.reason.clone(),
                };
                let (tx, balance) =
                    self.post(cx, &id, TxKind::Adjustment, a.points, None, vec![], md);
                let event = Event::PointsAdjusted {
                    points: a.points,
                    transaction: tx,
                    balance,
                    reason: a.reason.clone(),
                };
                cx.event(member(&self.state.accounts[&id]), event);
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
                    cx,
                    &from,
                    TxKind::TransferOut,
                    -t.points,
                    None,
                    vec![],
                    TxMeta::None,
                );
                let (tx_in, _) = self.post(
                    cx,
                    &to,
                    TxKind::TransferIn,
                    t.points,
                    None,
                    vec![],
                    TxMeta::None,
                );
                let event = Event::PointsTransferred {
                    from: t.from.clone(),
                    to: t.to.clone(),
                    points: t.points,
                    transactions: [tx_out, tx_in],
                };
                cx.event(member(&self.state.accounts[&from]), event);
            }
            (Body::Redeem(r), _) => self.redeem(rec, r, cx),
            (Body::Qualify(q), _) => {
                let Some(prog) = self.program(&q.program) else {
                    return;
                };
                let custom = prog
                    .tiers
                    .as_ref()
                    .is_some_and(|t| t.qualify_on == QualifyOn::Custom);
                let id = ids::account_id(&prog.id, &q.customer);
                if custom {
                    self.qualify(&id, rec.created, q.amount, cx);
                }
            }
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
            Body::Redeem(_)
            | Body::Referral(_)
            | Body::Tick
            | Body::Adjust(_)
            | Body::Transfer(_)
            | Body::Qualify(_) => Ok(Accepted::Plain),
        }
    }

    /// Carries out every time-driven effect due at or before `to`, in time order, each at
    /// the time it fell due, and moves the clock forward to `to` when it is ahead (SPEC
    /// section 6). Effects can be due at or before the clock itself: a record older than the
    /// clock schedules them (a late payment's lot that expired already, a warning due at
    /// once), and they are carried out before the next record whose `created` reaches them,
    /// whether or not that record moves the clock.
    fn advance_clock(&mut self, to: Timestamp, out: &mut Vec<Output>) {
        let before = self.state.clock;
        let first = before.is_none();
        while let Some(due) = self.state.schedule.pop_due_by(to.0) {
            // Effects see the clock at the time they fell due (or the clock, never back).
            self.state.clock =
                Some(Timestamp(due.at).max(self.state.clock.unwrap_or(Timestamp(due.at))));
            self.carry_out(due, out);
        }
        if before.is_some_and(|c| to <= c) {
            return;
        }
        self.state.clock = Some(to);
        self.changes.clock = true;
        if first {
            for prog in self.state.programs.clone() {
                self.schedule_close(&prog);
            }
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
        let mut account = Account::new(&id, &prog.id, customer, tiers::initial(prog));
        account.referred_by = referred_by;
        account.birthday = birthday;
        let referral_code = account.referral_code.clone();
        let who = member(&account);
        if self.track {
            self.changes
                .codes
                .push((prog.id.clone(), referral_code.clone()));
        }
        claim_code(
            &mut self.state.referral_codes,
            (prog.id.clone(), referral_code),
            &id,
        );
        self.state.accounts.insert(id.clone(), Box::new(account));
        if self.track {
            self.changes.accounts.insert(id.clone());
        }
        self.schedule_birthday(&id, cx.created);
        cx.event(
            who,
            Event::AccountCreated {
                referral_code: self.state.accounts[&id].referral_code.clone(),
            },
        );
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
        let mut spend_accounts = Vec::new();
        for (prog, linked) in targets {
            let account = match linked {
                Some(id) => Some(id),
                None => self.account_for(&prog, &a.customer, cx),
            };
            let Some(account) = account else { continue };
            // Qualifying spend: payments in the program currency (SPEC section 5).
            let spend = prog
                .tiers
                .as_ref()
                .is_some_and(|t| t.qualify_on == QualifyOn::Spend)
                && a.currency
                    .as_deref()
                    .is_some_and(|c| c.eq_ignore_ascii_case(&prog.currency));
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
            let mut entry = self.state.payments.get(pid).map_or_else(
                || PaymentRecord {
                    currency: a.currency.clone().unwrap_or_default(),
                    created: rec.created.0,
                    ..PaymentRecord::default()
                },
                PackedPayment::unpack,
            );
            entry.amount = entry.amount.saturating_add(a.amount.unwrap_or(0));
            entry.awards.extend(awards);
            for acct in spend_accounts {
                if !entry.spend_accounts.contains(&acct) {
                    entry.spend_accounts.push(acct);
                }
            }
            self.state.payments.insert(pid.clone(), entry.pack());
            if self.track {
                self.changes.payments.insert(pid.clone());
            }
        }
    }

    fn apply_refund(&mut self, r: &envelope::Refund, cx: &mut Cx<'_>) {
        let Some(mut payment) = self.state.payments.remove(&r.payment).map(|p| p.unpack()) else {
            return;
        };
        payment.refunded += r.amount;
        // The refund comes off the qualifying spend the payment added, at the payment's
        // time: it lowers the value of the period that payment counted in.
        for acct in payment.spend_accounts.clone() {
            self.qualify(&acct, Timestamp(payment.created), -r.amount, cx);
        }
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
            if let Some(account) = self.account_mut(&award.account) {
                lots::reverse(account, give, &award.transaction);
            }
            let (tx, balance) = self.post(
                cx,
                &award.account,
                TxKind::Reversal,
                -give,
                award.rule.clone(),
                award.campaigns.clone(),
                TxMeta::None,
            );
            let event = Event::PointsReversed {
                points: -give,
                transaction: tx,
                balance,
                payment: r.payment.clone(),
                refund: r.refund_id.clone(),
                rule: award.rule.clone(),
            };
            cx.event(member(&self.state.accounts[&award.account]), event);
            if self.qualifies_on_points(&award.account) {
                self.qualify(&award.account, Timestamp(award.created), -give, cx);
            }
        }
        self.state
            .payments
            .insert(r.payment.clone(), payment.pack());
        if self.track {
            self.changes.payments.insert(r.payment.clone());
        }
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
                usage_mut(&mut account.rule_usage, &rule.id).uses += 1;
                let event = Event::CashbackEarned {
                    rule: rule.id.clone(),
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
            let campaign_ids: Vec<String> = active.iter().map(|c| c.id.clone()).collect();
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
        let md = TxMeta::Award { capped };
        let (tx, balance) = self.post(
            cx,
            account_id,
            TxKind::Award,
            points,
            rule.map(str::to_string),
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
                    account: account_id.to_string(),
                    rule: rule.map(str::to_string),
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
            rule: rule.map(str::to_string),
            campaigns,
            transaction: tx,
            balance,
            capped,
        };
        cx.event(member(&self.state.accounts[account_id]), event);
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
        metadata: TxMeta,
    ) -> (String, i128) {
        let id = cx.tx_id();
        // Lots: credits form lots (after paying off any debt), deductions consume the lots
        // that expire first. Reversals and expiries move their lots themselves.
        let expiry = self
            .state
            .accounts
            .get(account_id)
            .and_then(|a| self.state.program(&a.program))
            .and_then(|p| p.expiry.map(|e| (e, p.tz)));
        let (expires, warn) = match expiry {
            Some((e, tz)) => {
                let expires = add_months(cx.created, e.months, tz);
                let warn = expires
                    .filter(|_| e.warn_days > 0)
                    .and_then(|x| minus_days(x, e.warn_days, tz));
                (expires, warn)
            }
            None => (None, None),
        };
        let account = self
            .account_mut(account_id)
            .expect("transactions are posted to existing accounts");
        let mut new_lot = None;
        match kind {
            TxKind::Award | TxKind::Adjustment | TxKind::TransferIn if points > 0 => {
                new_lot = lots::credit(account, points, cx.created, expires, warn, &id);
            }
            TxKind::Adjustment | TxKind::TransferOut | TxKind::Redemption => {
                lots::debit(account, -points);
            }
            _ => {}
        }
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
        if let Some(lot) = new_lot {
            for (at, kind) in [(lot.expires, DueKind::Expiry), (lot.warn, DueKind::Warning)] {
                if let Some(at) = at {
                    self.state
                        .schedule
                        .insert_lot(at, kind, account_id, lot.seq);
                }
            }
        }
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
        let ids = self.state.account_ids(|a| {
            a.program == prog.id && a.tier.as_deref().is_none_or(|t| prog.tier(t).is_none())
        });
        let now = self.state.clock.unwrap_or(cx.created);
        for id in ids {
            let account = self.account_mut(&id).expect("listed above");
            let value = tiers::value_at(account, &prog, now);
            let new = tiers::highest_met(&prog, value).map(|t| t.name.clone());
            let previous = std::mem::replace(&mut account.tier, new.clone());
            let (Some(from), Some(to)) = (previous, new) else {
                continue;
            };
            let from_rank = old
                .as_ref()
                .and_then(|p| p.tier(&from))
                .map_or(0, |t| t.rank);
            let to_rank = prog.tier(&to).map_or(0, |t| t.rank);
            let direction = if to_rank >= from_rank {
                Direction::Up
            } else {
                Direction::Down
            };
            let who = member(account);
            cx.event(who, tier_changed(from, to, direction));
        }
        // Thresholds, periods and the time zone may have changed: every evaluation of this
        // program is scheduled anew.
        let members = self.state.account_ids(|a| a.program == prog.id);
        let now = self.state.clock.unwrap_or(cx.created);
        for id in members {
            self.reschedule(&id);
            self.schedule_birthday(&id, now);
            // A lowered threshold promotes at once.
            if !cx.touched.contains(&id) {
                cx.touched.push(id);
            }
        }
        self.schedule_close(&prog);
    }

    /// A redemption (SPEC section 7): refused for the first reason that applies, in the
    /// spec's order; otherwise a `redemption` transaction, a `rdm_` id, stock lowered.
    fn redeem(&mut self, rec: &Record, r: &envelope::Redeem, cx: &mut Cx<'_>) {
        let Some(prog) = self.program(&r.program) else {
            return;
        };
        let id = ids::account_id(&prog.id, &r.customer);
        let Some(account) = self.state.accounts.get(&id) else {
            return;
        };
        let (rank, _) = Self::tier_of(&prog, account);
        let discount = account
            .tier
            .as_deref()
            .and_then(|t| prog.tier(t))
            .map_or(Dec::ZERO, |t| t.redemption_discount);
        let key = (prog.id.clone(), r.reward.clone());
        let used = self.state.stock_used.get(&key).copied().unwrap_or(0);
        let mine = account.redeemed.get(&r.reward).copied().unwrap_or(0);
        let reward = prog.reward(&r.reward).filter(|w| {
            w.starts.is_none_or(|s| rec.created >= s) && w.ends.is_none_or(|e| rec.created < e)
        });
        // cost × quantity, less the tier's discount percent, rounded up.
        let cost = reward.map(|w| {
            let hundred = Dec::from_int(100);
            let keep = crate::dec::round_quotient(
                &[
                    Dec::from_int(w.cost),
                    Dec::from_int(r.quantity),
                    sub_percent(discount),
                ],
                hundred,
                crate::dec::Rounding::Ceil,
            );
            keep.map_or(i64::MAX, |k| i64::try_from(k).unwrap_or(i64::MAX))
        });
        let reason = match (reward, cost) {
            (None, _) | (_, None) => Some(RedemptionRefusal::NotAvailable),
            (Some(w), Some(cost)) => {
                if rank < w.min_rank || w.max_rank.is_some_and(|m| rank > m) {
                    Some(RedemptionRefusal::TierRequired)
                } else if w.stock.is_some_and(|s| s - used < r.quantity) {
                    Some(RedemptionRefusal::OutOfStock)
                } else if w
                    .max_per_member
                    .is_some_and(|m| mine.saturating_add(r.quantity) > m)
                {
                    Some(RedemptionRefusal::LimitReached)
                } else if account.balance < i128::from(cost)
                    || account.balance < i128::from(prog.minimum_redemption)
                {
                    Some(RedemptionRefusal::InsufficientPoints)
                } else {
                    None
                }
            }
        };
        if let Some(reason) = reason {
            let event = Event::RedemptionRejected {
                reward: r.reward.clone(),
                reason,
            };
            cx.event(member(account), event);
            return;
        }
        let cost = cost.unwrap_or(0);
        let redemption = ids::redemption_id(&cx.source, cx.n_ev);
        let (tx, balance) = if cost > 0 {
            let md = TxMeta::Redemption {
                redemption: redemption.clone(),
                reward: r.reward.clone(),
            };
            let (tx, balance) = self.post(cx, &id, TxKind::Redemption, -cost, None, vec![], md);
            (Some(tx), balance)
        } else {
            (None, self.state.accounts[&id].balance)
        };
        *self.state.stock_used.entry(key).or_insert(0) += r.quantity;
        self.changes.rewards = true;
        let account = self.account_mut(&id).expect("exists");
        *account.redeemed.entry(r.reward.clone()).or_insert(0) += r.quantity;
        let event = Event::RewardRedeemed {
            redemption,
            reward: r.reward.clone(),
            quantity: r.quantity,
            cost,
            transaction: tx,
            balance,
        };
        cx.event(member(account), event);
    }

    /// Stamp cards (SPEC section 7): each qualifying event adds a stamp; a full card emits
    /// `loyalty.stamp_card.completed`, issues its reward as a redemption that costs no
    /// points, and starts over.
    fn stamp(&mut self, prog: &Arc<Program>, account_id: &str, t: &Trigger<'_>, cx: &mut Cx<'_>) {
        for card in prog.stamp_cards.iter().filter(|c| c.trigger == t.kind) {
            let Some(account) = self.state.accounts.get(account_id) else {
                return;
            };
            let (rank, _) = Self::tier_of(prog, account);
            if !conditions_hold(&card.conditions, t, rank, 0) {
                continue;
            }
            let account = self.account_mut(account_id).expect("exists");
            let stamps = account
                .stamps
                .get_or_insert_with(&card.id, |k| (k.to_string(), 0));
            *stamps += 1;
            if *stamps < card.stamps_required {
                continue;
            }
            *stamps = 0;
            *account.redeemed.entry(card.reward.clone()).or_insert(0) += 1;
            let balance = account.balance;
            let redemption = ids::redemption_id(&cx.source, cx.n_ev);
            let who = member(account);
            let completed = Event::StampCardCompleted {
                card: card.id.clone(),
                reward: card.reward.clone(),
                redemption: redemption.clone(),
            };
            let redeemed = Event::RewardRedeemed {
                redemption,
                reward: card.reward.clone(),
                quantity: 1,
                cost: 0,
                transaction: None,
                balance,
            };
            cx.event(who.clone(), completed);
            cx.event(who, redeemed);
        }
    }

    /// The referral of a member who enrolled with another member's code converts on its
    /// first payment: `referral.converted` is raised inside the engine, once.
    fn convert_referral(
        &mut self,
        prog: &Arc<Program>,
        account_id: &str,
        at: Timestamp,
        cx: &mut Cx<'_>,
    ) {
        let Some(account) = self.state.accounts.get(account_id) else {
            return;
        };
        if account.referral_converted {
            return;
        }
        let Some(referrer) = account.referred_by.clone() else {
            return;
        };
        if referrer == account_id || !self.state.accounts.contains_key(&referrer) {
            return;
        }
        self.account_mut(account_id)
            .expect("exists")
            .referral_converted = true;
        self.earn_referral(prog, at, Some(referrer), Some(account_id.to_string()), cx);
    }

    /// Schedules the start of an account's next birthday after `after`.
    fn schedule_birthday(&mut self, id: &str, after: Timestamp) {
        let Some(account) = self.state.accounts.get(id) else {
            return;
        };
        let Some((month, day)) = account.birthday else {
            return;
        };
        let Some(prog) = self.state.program(&account.program) else {
            return;
        };
        let due = next_birthday(month, day, after, prog.tz);
        let old = account.birthday_due;
        self.move_due(DueKind::Birthday, id, old, due.map(|t| t.0));
        self.account_mut(id).expect("exists").birthday_due = due.map(|t| t.0);
    }

    /// True when the account's program qualifies on points.
    fn qualifies_on_points(&self, account_id: &str) -> bool {
        self.state
            .accounts
            .get(account_id)
            .and_then(|a| self.state.program(&a.program))
            .and_then(|p| p.tiers.as_ref())
            .is_some_and(|t| t.qualify_on == QualifyOn::Points)
    }

    /// Records qualifying activity for an account at `at`, and marks it for a promotion
    /// check.
    fn qualify(&mut self, account_id: &str, at: Timestamp, amount: i64, cx: &mut Cx<'_>) {
        if amount == 0 {
            return;
        }
        let Some(account) = self.account_mut(account_id) else {
            return;
        };
        account.activity.add(at.0, amount);
        if !cx.touched.iter().any(|t| t == account_id) {
            cx.touched.push(account_id.to_string());
        }
    }

    /// Promotion (SPEC section 5): as soon as the value reaches a higher tier's threshold,
    /// the member moves to the highest tier its value meets. Checked for every account whose
    /// activity the record changed; then its next evaluation is scheduled.
    fn promote_touched(&mut self, cx: &mut Cx<'_>) {
        let now = self.state.clock.unwrap_or(cx.created);
        for id in std::mem::take(&mut cx.touched) {
            let Some(account) = self.state.accounts.get(&id) else {
                continue;
            };
            let Some(prog) = self.state.program(&account.program).cloned() else {
                continue;
            };
            let value = tiers::value_at(account, &prog, now);
            let current = account.tier.as_deref().and_then(|t| prog.tier(t));
            let best = tiers::highest_met(&prog, value);
            if let (Some(cur), Some(best)) = (current, best) {
                if best.rank > cur.rank {
                    let (from, to) = (cur.name.clone(), best.name.clone());
                    let account = self.account_mut(&id).expect("exists");
                    account.tier = Some(to.clone());
                    let who = member(account);
                    cx.event(who, tier_changed(from, to, Direction::Up));
                }
            }
            self.reschedule(&id);
        }
    }

    /// Schedules the next evaluation of an account's tier (rolling periods).
    fn reschedule(&mut self, id: &str) {
        let Some(account) = self.state.accounts.get(id) else {
            return;
        };
        let Some(prog) = self.state.program(&account.program) else {
            return;
        };
        let after = self.state.clock.unwrap_or(Timestamp(i64::MIN / 4));
        let due = tiers::next_rolling_evaluation(account, prog, after).map(|t| t.0);
        if due == account.tier_due {
            return;
        }
        let old = account.tier_due;
        self.move_due(DueKind::Tier, id, old, due);
        self.account_mut(id).expect("exists").tier_due = due;
    }

    /// Moves an account's scheduled effect of `kind` from `old` to `new`.
    fn move_due(&mut self, kind: DueKind, id: &str, old: Option<i64>, new: Option<i64>) {
        let due = |at| Due {
            at,
            kind,
            account: id.to_string(),
            item: String::new(),
        };
        if let Some(at) = old {
            self.state.schedule.remove(&due(at));
        }
        if let Some(at) = new {
            self.state.schedule.insert(due(at));
        }
    }

    /// Schedules the next period close of a program with a calendar period.
    fn schedule_close(&mut self, prog: &Program) {
        self.state
            .schedule
            .retain_timed(|d| !(d.account.is_empty() && d.item == prog.id));
        let Some(clock) = self.state.clock else {
            return;
        };
        if let Some(close) = tiers::next_close(prog, clock) {
            self.state.schedule.insert(Due {
                at: close.0,
                kind: DueKind::Tier,
                account: String::new(),
                item: prog.id.clone(),
            });
        }
    }

    /// Rebuilds the schedule from the accounts and programs (after a load).
    fn rebuild_schedule(&mut self) {
        self.state.schedule.clear();
        // Effects that already fell due are not carried out again.
        self.state
            .schedule
            .set_drained(self.state.clock.map(|c| c.0));
        let clock = self.state.clock.map_or(i64::MIN, |c| c.0);
        let schedule = &mut self.state.schedule;
        for a in self.state.accounts.values() {
            schedule_account(schedule, a, clock);
        }
        for prog in self.state.programs.clone() {
            self.schedule_close(&prog);
        }
    }

    /// Carries out one time-driven effect.
    fn carry_out(&mut self, due: Due, out: &mut Vec<Output>) {
        let at = Timestamp(due.at);
        match due.kind {
            DueKind::Birthday => {
                let Some(account) = self.state.accounts.get(&due.account) else {
                    return;
                };
                if account.birthday_due != Some(due.at) {
                    return;
                }
                let Some(prog) = self.state.program(&account.program).cloned() else {
                    return;
                };
                let mut cx = Cx::due(ids::due_source(&due.account, "birthday", at.0, ""), at, out);
                let trigger = Trigger {
                    kind: "customer.birthday",
                    at,
                    amount: None,
                    currency: None,
                    metadata: None,
                    object_id: None,
                };
                let id = due.account.clone();
                self.earn(
                    &prog,
                    &trigger,
                    Recipients {
                        default: Some(&id),
                        referral: None,
                    },
                    None,
                    &mut cx,
                );
                self.promote_touched(&mut cx);
                self.schedule_birthday(&id, at);
            }
            DueKind::Expiry | DueKind::Warning => {
                let Ok(seq) = due.item.parse::<u64>() else {
                    return;
                };
                let Some(account) = self.state.accounts.get(&due.account) else {
                    return;
                };
                let left = lots::remaining(account, seq);
                let kind = if due.kind == DueKind::Expiry {
                    "expiry"
                } else {
                    "warning"
                };
                let mut cx = Cx::due(
                    ids::due_source(&due.account, kind, at.0, &due.item),
                    at,
                    out,
                );
                if due.kind == DueKind::Warning {
                    // Once, with the amount due; nothing for a lot with nothing left.
                    let expires = account
                        .lots
                        .iter()
                        .find(|l| l.seq == seq)
                        .and_then(|l| l.expires);
                    if let (true, Some(expires)) = (left > 0, expires) {
                        let event = Event::PointsExpiring {
                            points: left,
                            expires_at: Timestamp(expires),
                        };
                        cx.event(member(account), event);
                    }
                    return;
                }
                let left = lots::expire(self.account_mut(&due.account).expect("exists"), seq);
                if left > 0 {
                    let (tx, balance) = self.post(
                        &mut cx,
                        &due.account,
                        TxKind::Expiry,
                        -left,
                        None,
                        vec![],
                        TxMeta::None,
                    );
                    let event = Event::PointsExpired {
                        points: -left,
                        transaction: tx,
                        balance,
                    };
                    cx.event(member(&self.state.accounts[&due.account]), event);
                }
            }
            DueKind::Tier if due.account.is_empty() => {
                // A calendar period close: every member of the program, by account id.
                let Some(prog) = self.state.program(&due.item).cloned() else {
                    return;
                };
                let members: Vec<String> = self
                    .state
                    .accounts
                    .values()
                    .filter(|a| a.program == prog.id)
                    .map(|a| a.id.clone())
                    .collect();
                // One effect per member, at the same instant, so that they run in account-id
                // order with every other effect of this kind due then (SPEC section 6).
                for id in members {
                    self.state.schedule.insert(Due {
                        at: due.at,
                        kind: DueKind::Tier,
                        account: id,
                        item: format!("close:{}", prog.id),
                    });
                }
                // The next close falls after this one.
                if let Some(next) = tiers::next_close(&prog, at) {
                    self.state.schedule.insert(Due {
                        at: next.0,
                        kind: DueKind::Tier,
                        account: String::new(),
                        item: prog.id.clone(),
                    });
                }
            }
            DueKind::Tier if due.item.starts_with("close:") => {
                let Some(account) = self.state.accounts.get(&due.account) else {
                    return;
                };
                let Some(prog) = self.state.program(&account.program).cloned() else {
                    return;
                };
                let value = tiers::closing_value(account, &prog, at);
                self.demote(&due.account, &prog, value, at, "close", out);
                // The close resets the value; the balance is untouched.
                self.account_mut(&due.account).expect("exists").reset_at = Some(due.at);
            }
            DueKind::Tier => {
                let Some(account) = self.state.accounts.get(&due.account) else {
                    return;
                };
                let Some(prog) = self.state.program(&account.program).cloned() else {
                    return;
                };
                if account.tier_due != Some(due.at) {
                    return;
                }
                let value = tiers::value_at(account, &prog, at);
                let allowed = tiers::may_demote_at(account, &prog, at);
                self.account_mut(&due.account).expect("exists").tier_due = None;
                if allowed {
                    self.demote(&due.account, &prog, value, at, "tier", out);
                }
                self.reschedule(&due.account);
            }
        }
    }

    /// Demotion (SPEC section 5): below the current tier's threshold at an evaluation, the
    /// member drops to the highest tier its value meets, or one rank with soft landing.
    fn demote(
        &mut self,
        id: &str,
        prog: &Program,
        value: i64,
        at: Timestamp,
        kind: &str,
        out: &mut Vec<Output>,
    ) {
        let Some(account) = self.state.accounts.get(id) else {
            return;
        };
        let Some(current) = account.tier.as_deref().and_then(|t| prog.tier(t)) else {
            return;
        };
        if value >= current.threshold {
            return;
        }
        let soft = prog.tiers.as_ref().is_some_and(|t| t.soft_landing);
        let target = if soft {
            tiers::one_below(prog, current)
        } else {
            tiers::highest_met(prog, value).filter(|t| t.rank < current.rank)
        };
        let Some(target) = target else {
            return;
        };
        let (from, to) = (current.name.clone(), target.name.clone());
        let account = self.account_mut(id).expect("exists");
        account.tier = Some(to.clone());
        account.last_demotion = Some(at.0);
        let who = member(account);
        let mut cx = Cx::due(ids::due_source(id, kind, at.0, ""), at, out);
        cx.event(who, tier_changed(from, to, Direction::Down));
    }
}

/// An account as the fold prints it, in its program (`None`: a program the state no longer
/// holds) at the clock: what `loyalty fold` prints last, and what the HTTP API answers.
pub fn view_account(a: &Account, prog: Option<&Program>, clock: Option<Timestamp>) -> AccountView {
    let tier = prog.and_then(|p| a.tier.as_deref().and_then(|t| p.tier(t)));
    let now = clock.unwrap_or(Timestamp(i64::MIN / 4));
    let value = prog.map_or(0, |p| tiers::value_at(a, p, now));
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
        qualifying_value: value,
        at_risk: tier.is_some_and(|t| {
            value < t.threshold && prog.is_some_and(|p| tiers::one_below(p, t).is_some())
        }),
        referral_code: a.referral_code.clone(),
        stamps: a.stamps.iter().map(|(k, v)| (k.clone(), *v)).collect(),
    }
}

#[cfg(test)]
mod code_tests {
    use super::claim_code;

    /// Whatever the order of claims (creation live, hash order on load), the smaller
    /// account id holds a shared code.
    #[test]
    fn a_shared_referral_code_resolves_alike_in_any_order() {
        let key = || ("prog".to_string(), "CODE".to_string());
        for order in [["loy_b", "loy_a", "loy_c"], ["loy_c", "loy_b", "loy_a"]] {
            let mut codes = super::HashMap::default();
            for id in order {
                claim_code(&mut codes, key(), id);
            }
            assert_eq!(codes[&key()], "loy_a");
        }
    }
}
