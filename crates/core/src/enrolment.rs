//! Enrolment (SPEC section 7): opening an account, explicitly (`loyalty.account.enroll`)
//! or automatically on a member's first event in a program that enrols automatically; its
//! referral code, its birthday, and the rules triggered by `loyalty.account.created`.
//!
//! Owns: creating accounts. Must not change an existing account.

use std::sync::Arc;

use crate::config::Program;
use crate::earning::{Recipients, Trigger};
use crate::engine::Engine;
use crate::ids;
use crate::ledger::{member, Cx};
use crate::output::Event;
use crate::referrals::claim_code;
use crate::state::Account;
use crate::tiers;

impl Engine {
    /// The account of `customer` in `prog`, enrolling the customer first when the program
    /// enrols automatically.
    pub(crate) fn account_for(
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

    pub(crate) fn enroll(
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
}
