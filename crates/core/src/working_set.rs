//! The working set (SPEC section 10's bounded memory): what a record needs loaded before it
//! applies, what a batch changed, and loading, evicting and restoring accounts, referral
//! codes and overdue effects, so that an engine holding some accounts in memory gives the
//! same bytes as one holding them all.
//!
//! Owns: `Changes`, `Needs` and the engine's methods a store calls between records. Must
//! not apply a rule or write an output.

use std::collections::HashMap;

use crate::clock::schedule_account;
use crate::config::parse_program;
use crate::engine::Engine;
use crate::envelope::{Body, Record};
use crate::ids;
use crate::state::{Account, Due, PaymentRecord};
use crate::time::Timestamp;

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
}
