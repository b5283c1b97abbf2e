//! Enrolment (SPEC section 7): opening an account, explicitly (`loyalty.account.enroll`)
//! or automatically on a member's first event in a program that enrols automatically; its
//! referral code, its birthday, and the rules triggered by `loyalty.account.created`.
//!
//! Owns: creating accounts, and the birthday a member enrolled with: when it falls, and
//! the `customer.birthday` rules it triggers. Must not change other fields of an account.

use crate::output::Output;
use crate::state::Effect;
use crate::time::Timestamp;
use std::sync::Arc;

use crate::config::Program;
use crate::earning::{Recipients, Trigger};
use crate::engine::Engine;
use crate::ids;
use crate::ledger::{member, Cx};
use crate::output::{Event, TxKind, TxMeta, Why};

/// The reason of an opening balance's adjustment.
pub const OPENING_BALANCE: &str = "opening balance";
use crate::referrals::claim_code;
use crate::state::Account;
use crate::tiers;
use crate::Sym;

impl Engine {
    /// The account of `customer` in `prog`, enrolling the customer first when the program
    /// enrols automatically.
    pub(crate) fn account_for(
        &mut self,
        prog: &Arc<Program>,
        customer: &str,
        cx: &mut Cx<'_>,
    ) -> Option<Sym> {
        let id = ids::account_id(&prog.id, customer);
        if self.state.accounts.contains_key(&id) {
            return Some(id);
        }
        if !prog.auto_enroll {
            return None;
        }
        self.enroll(prog, customer, None, None, 0, cx);
        Some(id)
    }

    pub(crate) fn enroll(
        &mut self,
        prog: &Arc<Program>,
        customer: &str,
        referred_by: Option<String>,
        birthday: Option<(u32, u32)>,
        opening_balance: i64,
        cx: &mut Cx<'_>,
    ) {
        let id = ids::account_id(&prog.id, customer);
        let mut account = Account::new(
            id.clone(),
            prog.id.clone(),
            customer.into(),
            tiers::initial(prog),
        );
        account.referred_by = referred_by;
        account.birthday = birthday;
        let referral_code = account.referral_code.clone();
        let who = member(&account);
        if self.track {
            self.changes
                .codes
                .push((prog.id.to_string(), referral_code.clone()));
        }
        claim_code(
            &mut self.state.referral_codes,
            (prog.id.to_string(), referral_code),
            &id,
        );
        if let Some(p) = self.partitioning {
            // The code's partition keeps who holds it (`referrals`).
            let code = account.referral_code.clone();
            let data = serde_json::json!({
                "program": &*prog.id, "code": code, "referrer": customer, "source": &*cx.source,
            });
            let key = crate::partition::code_key(&prog.id, &code);
            cx.message(p, &key, crate::partition::CODE_CLAIM, &data);
        }
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
        // An opening balance (a member moved in from another system): an adjustment at
        // the enrolment, forming a lot, before what the enrolment triggers.
        if opening_balance > 0 {
            let reason = OPENING_BALANCE.to_string();
            let (tx, balance) = self.post(
                cx,
                &id,
                TxKind::Adjustment,
                opening_balance,
                None,
                vec![],
                TxMeta::Adjustment {
                    reason: reason.clone(),
                },
                Why::Adjustment {
                    reason: reason.clone(),
                },
            );
            let event = Event::PointsAdjusted {
                points: opening_balance,
                transaction: tx,
                balance,
                reason,
            };
            cx.event(member(&self.state.accounts[&id]), event);
        }
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

    /// A member's birthday fell due: the `customer.birthday` rules, then the next one.
    pub(crate) fn birthday(&mut self, account_id: &str, at: Timestamp, out: &mut Vec<Output>) {
        let Some(account) = self.state.accounts.get(account_id) else {
            return;
        };
        if account.birthday_due != Some(at.0) {
            return;
        }
        let Some(prog) = self.state.program(&account.program).cloned() else {
            return;
        };
        let mut cx = Cx::due(
            ids::due_source(account_id, "birthday", at.0, "").into(),
            at,
            out,
        );
        let trigger = Trigger {
            kind: "customer.birthday",
            at,
            amount: None,
            currency: None,
            metadata: None,
            object_id: None,
        };
        let id = account_id.to_string();
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

    /// Schedules the start of an account's next birthday after `after`.
    pub(crate) fn schedule_birthday(&mut self, id: &str, after: Timestamp) {
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
        self.move_due(Effect::Birthday, id, old, due.map(|t| t.0));
        self.account_mut(id).expect("exists").birthday_due = due.map(|t| t.0);
    }
}

/// The start (local midnight) of the first birthday `(month, day)` after `after`; February
/// 29 falls on February 28 in other years.
pub(crate) fn next_birthday(
    month: u32,
    day: u32,
    after: Timestamp,
    tz: chrono_tz::Tz,
) -> Option<Timestamp> {
    use chrono::Datelike;
    let year = after.local(tz)?.year();
    (year..year + 3).find_map(|y| {
        let date = chrono::NaiveDate::from_ymd_opt(y, month, day)
            .or_else(|| chrono::NaiveDate::from_ymd_opt(y, month, day - 1))?;
        crate::time::start_of(date, tz).filter(|t| *t > after)
    })
}
