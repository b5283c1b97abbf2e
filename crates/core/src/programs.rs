//! Program updates (SPEC section 3): a `loyalty.program.updated` replaces (or adds) a
//! program from that point of the log on; members whose tier no longer exists move at
//! once, and every evaluation of the program is scheduled anew.
//!
//! Owns: the program list and its revisions. Must not: validate a config (`config`) or
//! decide a member's tier (it hands the re-evaluation to `tiers`).

use std::sync::Arc;

use crate::config::Program;
use crate::engine::Engine;
use crate::ledger::{member, Cx};
use crate::output::Direction;
use crate::tiers;
use crate::tiers::tier_changed;

impl Engine {
    /// Replaces (or adds) a program from this point of the log on (SPEC section 3).
    pub(crate) fn update_program(&mut self, prog: Arc<Program>, text: &str, cx: &mut Cx<'_>) {
        self.changes.programs = true;
        *self
            .state
            .program_revisions
            .entry(prog.id.to_string())
            .or_insert(0) += 1;
        self.state
            .program_texts
            .insert(prog.id.to_string(), text.to_string());
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
            // Not below a manual tier still in force (SPEC section 13).
            let met = tiers::highest_met(&prog, value);
            let new = match (met, tiers::floor_at(account, &prog, now)) {
                (Some(m), Some(f)) if f.rank > m.rank => Some(f.name.clone()),
                (m, _) => m.map(|t| t.name.clone()),
            };
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
}
