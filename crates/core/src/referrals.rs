//! Referrals (SPEC section 7): codes, the engine's own conversion on a referee's first
//! payment, and upstream `referral.converted` events; one conversion per referee.
//!
//! Owns: referral codes (who holds one) and conversions. The points come from the
//! `referral.converted` rules, applied by `earning`.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::Program;
use crate::engine::Engine;
use crate::envelope::{self, Record};
use crate::ledger::Cx;
use crate::time::Timestamp;

/// Records that `code` refers to `account`. Codes are 40 bits: should two accounts of a
/// program ever share one, the smaller account id keeps it, whatever the order the accounts
/// were created or loaded in, so that a restarted engine and a replay resolve it alike.
pub(crate) fn claim_code(
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

impl Engine {
    /// `referral.converted` from upstream (SPEC section 7): in every program, the
    /// referee's first conversion awards the referral rules.
    pub(crate) fn apply_referral(&mut self, rec: &Record, r: &envelope::Referral, cx: &mut Cx<'_>) {
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

    /// The referral of a member who enrolled with another member's code converts on its
    /// first payment: `referral.converted` is raised inside the engine, once.
    pub(crate) fn convert_referral(
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
        if referrer == account_id || !self.state.accounts.contains_key(referrer.as_str()) {
            return;
        }
        self.account_mut(account_id)
            .expect("exists")
            .referral_converted = true;
        self.earn_referral(prog, at, Some(referrer.into()), Some(account_id.into()), cx);
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
