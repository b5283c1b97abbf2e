//! The engine's side of the working set: the methods a store calls between records to
//! load what a record needs, take what a batch changed, and let go of what is written.
//!
//! Owns: those methods of `Engine`. Must not apply a rule or write an output.

use std::collections::HashMap;

use super::{Changes, FlowKey, Needs};
use crate::clock::schedule_account;
use crate::config::parse_program;
use crate::engine::Engine;
use crate::envelope::{Body, Record, ReferralStep};
use crate::ids;
use crate::state::{Account, Due, PaymentRecord};
use crate::time::Timestamp;
use crate::Sym;

impl Engine {
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
    pub(crate) fn preload(&mut self, seen: Option<&str>, payment: Option<(String, PaymentRecord)>) {
        if let Some(id) = seen {
            self.state.seen.insert(id.into());
        }
        if let Some((id, p)) = payment {
            self.state.payments.entry(id).or_insert_with(|| p.pack());
        }
    }

    /// Forgets the seen ids and payments, which a store has committed and hands back with
    /// [`Engine::preload`] when a record needs them: they grow with every record, and are
    /// otherwise the bulk of the state. Those of the records applied since the last
    /// [`Engine::take_changes`], and of `writing` (a batch not yet written), stay.
    pub(crate) fn forget_committed(&mut self, writing: Option<&Changes>) {
        let open = &self.changes;
        if open.is_empty() && writing.is_none() {
            self.state.seen = Default::default();
            self.state.payments = Default::default();
            return;
        }
        let seen: std::collections::HashSet<&str> = open
            .seen
            .iter()
            .chain(writing.iter().flat_map(|w| w.seen.iter()))
            .map(|s| &**s)
            .collect();
        self.state.seen.retain(|id| seen.contains(&**id));
        self.state.payments.retain(|id, _| {
            open.payments.contains(id) || writing.is_some_and(|w| w.payments.contains(id))
        });
    }

    /// What applying `rec` needs in a working set of accounts, besides the effects that fall
    /// due before it ([`Engine::closes_due_by`] and the accounts a store indexes by
    /// `next_due`): every account it may read or change, the referral codes it looks up,
    /// the programs all of whose members it may change. Pure: a streaming engine that keeps
    /// only some accounts in memory loads these (with [`Engine::load_account`] and
    /// [`Engine::load_code`]) before applying the record, and the result is the same as
    /// with every account in memory. Call it after [`Engine::preload`]: a refund needs the
    /// accounts of its payment.
    pub(crate) fn needs(&self, rec: &Record) -> Needs {
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
                Some(loy) => n.accounts.push(loy.as_str().into()),
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
                n.may_open.push((e.program.as_str().into(), id.clone()));
                n.accounts.push(id);
            }
            Body::Adjust(c) => n.accounts.push(ids::account_id(&c.program, &c.customer)),
            Body::Qualify(c) => n.accounts.push(ids::account_id(&c.program, &c.customer)),
            Body::TierSet(c) => n.accounts.push(ids::account_id(&c.program, &c.customer)),
            Body::Redeem(c) => n.accounts.push(ids::account_id(&c.program, &c.customer)),
            Body::Transfer(t) => {
                n.accounts.push(ids::account_id(&t.program, &t.from));
                n.accounts.push(ids::account_id(&t.program, &t.to));
            }
            Body::TransferCredit(m) => {
                let t = &m.transfer;
                n.accounts.push(ids::account_id(&t.program, &t.to));
            }
            Body::TransferReturn(m) => {
                let t = &m.transfer;
                n.accounts.push(ids::account_id(&t.program, &t.from));
            }
            Body::Stock(_, m) => n.accounts.push(ids::account_id(&m.program, &m.customer)),
            Body::Referral2(step, m) => match step {
                ReferralStep::AwardReferrer => {
                    n.accounts.push(ids::account_id(&m.program, &m.referrer))
                }
                ReferralStep::AwardReferee => {
                    n.accounts.push(ids::account_id(&m.program, &m.referee))
                }
                ReferralStep::Claim | ReferralStep::Convert => {}
            },
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
    pub(crate) fn closes_due_by(&self, to: Timestamp) -> Vec<Sym> {
        self.state.schedule.closes_due_by(to.0)
    }

    /// Whether the account is in the working set.
    pub(crate) fn has_account(&self, id: &str) -> bool {
        self.state.accounts.contains_key(id)
    }

    /// How many accounts the working set holds.
    pub(crate) fn account_count(&self) -> usize {
        self.state.accounts.len()
    }

    /// The ids of the accounts in memory.
    pub(crate) fn account_ids(&self) -> impl Iterator<Item = &str> + '_ {
        self.state.accounts.keys().map(|id| &**id)
    }

    /// Whether the account of that id is in memory.
    pub(crate) fn holds_account(&self, id: &str) -> bool {
        self.state.accounts.contains_key(id)
    }

    /// Puts a stored account into the working set, with its effects still to come (an
    /// account already there is kept as it is: it may be newer than the store's).
    pub(crate) fn load_account(&mut self, account: Account) {
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
    pub(crate) fn has_code(&self, program: &str, code: &str) -> bool {
        self.state
            .referral_codes
            .contains_key(&(program.to_string(), code.to_string()))
    }

    /// Puts a stored referral code's holder into the working set.
    pub(crate) fn load_code(&mut self, program: &str, code: &str, holder: &str) {
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
    ///
    /// With `writing` (a batch not yet written), its accounts and referral codes stay too.
    pub(crate) fn evict(&mut self, keep: impl Fn(&str) -> bool, writing: Option<&Changes>) {
        let changed = &self.changes.accounts;
        let overdue: std::collections::HashSet<Sym> =
            self.overdue().into_iter().map(|d| d.account).collect();
        let keep = |id: &str| {
            changed.contains(id)
                || overdue.contains(id)
                || writing.is_some_and(|w| w.accounts.contains(id))
                || keep(id)
        };
        self.state.accounts.retain(|id, _| keep(id));
        self.state.schedule.retain_accounts(keep);
        if self.changes.codes.is_empty() && writing.is_none_or(|w| w.codes.is_empty()) {
            self.state.referral_codes = HashMap::default();
        }
    }

    /// Notes that an entry of the flows' state changed.
    pub(crate) fn flow_changed(&mut self, key: FlowKey) {
        if self.track {
            self.changes.flows.insert(key);
        }
    }

    /// What changed since the last call, and forget it.
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }
}
