//! Stamp cards (SPEC section 7): each qualifying event adds a stamp; a full card emits
//! `loyalty.stamp_card.completed`, issues its reward as a redemption that costs no points,
//! and starts over.
//!
//! Owns: stamps on cards. Must not post transactions.

use std::sync::Arc;

use crate::config::Program;
use crate::earning::{conditions_hold, Trigger};
use crate::engine::Engine;
use crate::ids;
use crate::ledger::{member, Cx};
use crate::output::Event;

impl Engine {
    /// Stamp cards (SPEC section 7): each qualifying event adds a stamp; a full card emits
    /// `loyalty.stamp_card.completed`, issues its reward as a redemption that costs no
    /// points, and starts over.
    pub(crate) fn stamp(
        &mut self,
        prog: &Arc<Program>,
        account_id: &str,
        t: &Trigger<'_>,
        cx: &mut Cx<'_>,
    ) {
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
}
