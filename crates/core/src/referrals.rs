//! Referrals (SPEC section 7): codes, the engine's own conversion on a referee's first
//! payment, and upstream `referral.converted` events; one conversion per referee.
//!
//! With the log split into partitions ([`crate::partition`]), a code's holder is kept by
//! the code's partition (every enrolment tells it, `loyalty.code.claim`). A member who
//! enrolls with a code keeps it pending; its first payment sends the conversion to the
//! code's partition (`loyalty.referral.convert`), which, once it knows the holder (a
//! conversion that arrives before its code's claim waits for it), sends each side its
//! rules (`loyalty.referral.award`, to the referrer's partition and to the referee's). An
//! enrolment with a code nobody holds is therefore not refused there: its conversion waits
//! and awards nothing.
//!
//! Owns: referral codes (who holds one) and conversions. The points come from the
//! `referral.converted` rules, applied by `earning`. Must not: compute or post points.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::Program;
use crate::engine::Engine;
use crate::envelope::{self, Record, ReferralMessage, ReferralStep};
use crate::ids;
use crate::ledger::Cx;
use crate::partition::{REFERRAL_AWARD, REFERRAL_CONVERT};
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
        if let Some(p) = self.partitioning.filter(|p| !p.holds(&r.referrer)) {
            // The referee's partition (the record is keyed by the referee) decides the one
            // conversion and awards the referee's rules; the referrer's go to its partition.
            if !p.holds(&r.referee) {
                return;
            }
            for prog in self.state.programs.clone() {
                let Some(id) = self.account_for(&prog, &r.referee, cx) else {
                    continue;
                };
                let account = self.account_mut(&id).expect("just found");
                if account.referral_converted {
                    continue;
                }
                account.referral_converted = true;
                let data = serde_json::json!({
                    "program": &*prog.id, "role": "referrer", "referrer": r.referrer,
                    "referee": r.referee, "source": &*rec.id,
                });
                cx.message(p, &r.referrer, REFERRAL_AWARD, &data);
                self.earn_referral(&prog, rec.created, None, Some(id), cx);
            }
            return;
        }
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
        if let Some(p) = self.partitioning {
            let Some(code) = self.state.pending_codes.remove(account_id) else {
                return;
            };
            let data = serde_json::json!({
                "program": &*prog.id, "code": code, "referee": &*account.customer,
                "source": &*cx.source,
            });
            let key = crate::partition::code_key(&prog.id, &code);
            self.flow_changed(crate::working_set::FlowKey::Pending(account_id.to_string()));
            self.account_mut(account_id)
                .expect("exists")
                .referral_converted = true;
            cx.message(p, &key, REFERRAL_CONVERT, &data);
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

impl Engine {
    /// A step of a referral across partitions (see the module's doc).
    pub(crate) fn referral_step(
        &mut self,
        step: ReferralStep,
        m: &ReferralMessage,
        cx: &mut Cx<'_>,
    ) {
        let key = (m.program.clone(), m.code.clone());
        if matches!(step, ReferralStep::Claim | ReferralStep::Convert) {
            self.flow_changed(crate::working_set::FlowKey::Code(
                m.program.clone(),
                m.code.clone(),
            ));
        }
        match step {
            ReferralStep::Claim => {
                let account = ids::account_id(&m.program, &m.referrer).to_string();
                let keeps = self
                    .state
                    .code_holders
                    .get(&key)
                    .is_none_or(|(_, held)| account < *held);
                if keeps {
                    self.state
                        .code_holders
                        .insert(key.clone(), (m.referrer.clone(), account));
                }
                for (at, waiting) in self.state.parked.remove(&key).unwrap_or_default() {
                    self.send_awards(&waiting, at, cx);
                }
            }
            ReferralStep::Convert => {
                if self.state.code_holders.contains_key(&key) {
                    self.send_awards(m, cx.created, cx);
                } else {
                    let at = cx.created;
                    self.state
                        .parked
                        .entry(key)
                        .or_default()
                        .push((at, m.clone()));
                }
            }
            ReferralStep::AwardReferrer | ReferralStep::AwardReferee => {
                let Some(prog) = self.program(&m.program) else {
                    return;
                };
                let referrer = step == ReferralStep::AwardReferrer;
                let customer = if referrer { &m.referrer } else { &m.referee };
                // As one engine does: a program that enrols automatically opens the account.
                let Some(id) = self.account_for(&prog, customer, cx) else {
                    return;
                };
                let (a, b) = if referrer {
                    (Some(id), None)
                } else {
                    (None, Some(id))
                };
                self.earn_referral(&prog, cx.created, a, b, cx);
            }
        }
    }

    /// On the code's partition: the referrer's rules to its partition, the referee's to
    /// its own (nothing for a member who used its own code), at the time of the conversion.
    fn send_awards(&mut self, m: &ReferralMessage, at: Timestamp, cx: &mut Cx<'_>) {
        let Some((holder, _)) = self
            .state
            .code_holders
            .get(&(m.program.clone(), m.code.clone()))
        else {
            return;
        };
        let Some(p) = self.partitioning else {
            return;
        };
        if *holder == m.referee {
            return;
        }
        let holder = holder.clone();
        for (role, customer) in [("referrer", &holder), ("referee", &m.referee)] {
            let data = serde_json::json!({
                "program": m.program, "role": role, "referrer": holder, "referee": m.referee,
                "source": m.source,
            });
            cx.message_at(p, customer, REFERRAL_AWARD, &data, at);
        }
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
