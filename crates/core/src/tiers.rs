//! Tiers (SPEC section 5): which tier a qualifying value meets.
//!
//! Owns: tier lookup by value. Evaluation over periods and the clock comes with section 5.

use crate::config::{Program, Tier};

/// The highest tier whose threshold `value` meets; the lowest tier when it meets none.
pub fn highest_met(prog: &Program, value: i64) -> Option<&Tier> {
    let tiers = prog.tier_list();
    tiers
        .iter()
        .rev()
        .find(|t| value >= t.threshold)
        .or_else(|| tiers.first())
}

/// The tier a new member starts in.
pub fn initial(prog: &Program) -> Option<String> {
    highest_met(prog, 0).map(|t| t.name.clone())
}
