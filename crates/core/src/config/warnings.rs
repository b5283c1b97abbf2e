//! Config mistakes that validate but surprise a user (SPEC section 13): a trigger (of a
//! rule, a campaign or a stamp card) that is no known type but within two edits of one
//! (`payment.complete`), a trigger that is a known type that never fires a rule (a refund,
//! a command, a tick, an outbound event), a range that holds for nothing (an amount, a time
//! window, ranks, a campaign's `[starts, ends)`), and a tier no qualifying value reaches.
//!
//! Owns: the warnings and their wording. Must not refuse anything: a custom trigger of any
//! other name is a legitimate custom event type.

use super::Program;

/// The types a rule or a campaign can be triggered by, besides custom ones: the upstream
/// events and those the engine raises itself (SPEC section 4).
pub const TRIGGERS: [&str; 7] = [
    "payment.completed",
    "invoice.paid",
    "subscription.created",
    "referral.converted",
    "loyalty.account.created",
    "customer.birthday",
    // Upstream types that trigger nothing are listed below; a name near them is a typo
    // of them all the same.
    "payment.refunded",
];

/// Known types that never trigger a rule.
const SILENT: [&str; 2] = ["payment.refunded", "clock.tick"];

/// A warning about a program's config: the field's path and what looks wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The field, as `programs[0].earningRules[1].trigger`.
    pub path: String,
    /// What looks wrong, and the likely fix.
    pub message: String,
}

impl std::fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// The edit distance of two strings (insertions, deletions, substitutions), up to `max + 1`.
fn distance(a: &str, b: &str, max: usize) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len().abs_diff(b.len()) > max {
        return max + 1;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut row = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            row[j + 1] = sub.min(prev[j + 1] + 1).min(row[j] + 1);
        }
        prev = row;
    }
    prev[b.len()].min(max + 1)
}

/// What a trigger named `t` at `path` warns of, if anything.
fn trigger_warning(path: String, t: &str) -> Option<ConfigWarning> {
    if SILENT.contains(&t) || t.starts_with("loyalty.") && t != "loyalty.account.created" {
        return Some(ConfigWarning {
            path,
            message: format!(
                "{t:?} never triggers a rule (refunds reverse awards, commands and ticks award \
                 nothing, and outbound events are not inputs)"
            ),
        });
    }
    if TRIGGERS.contains(&t) {
        return None;
    }
    let near = TRIGGERS
        .iter()
        .filter(|k| !SILENT.contains(k))
        .map(|k| (distance(t, k, 2), *k))
        .filter(|(d, _)| *d <= 2)
        .min()?;
    Some(ConfigWarning {
        path,
        message: format!(
            "{t:?} is no known event type, and is {} edit{} from {:?}: a custom trigger of this \
             name fires only on events of exactly this type; did you mean {:?}?",
            near.0,
            if near.0 == 1 { "" } else { "s" },
            near.1,
            near.1
        ),
    })
}

/// The warnings of one program at `path` (`programs[i]`, or empty for a program update).
pub fn program_warnings(p: &Program, path: &str) -> Vec<ConfigWarning> {
    let at = |field: String| {
        if path.is_empty() {
            field
        } else {
            format!("{path}.{field}")
        }
    };
    let mut out = Vec::new();
    for (i, r) in p.rules.iter().enumerate() {
        out.extend(trigger_warning(
            at(format!("earningRules[{i}].trigger")),
            &r.trigger,
        ));
    }
    for (i, c) in p.campaigns.iter().enumerate() {
        for (j, t) in c.triggers.iter().flatten().enumerate() {
            out.extend(trigger_warning(
                at(format!("campaigns[{i}].triggers[{j}]")),
                t,
            ));
        }
    }
    for (i, c) in p.stamp_cards.iter().enumerate() {
        out.extend(trigger_warning(
            at(format!("stampCards[{i}].trigger")),
            &c.trigger,
        ));
    }
    // Ranges that hold for no event, member or time: what they guard never happens.
    for (i, r) in p.rules.iter().enumerate() {
        out.extend(empty_conditions(
            &at(format!("earningRules[{i}].conditions")),
            &r.conditions,
        ));
    }
    for (i, c) in p.stamp_cards.iter().enumerate() {
        out.extend(empty_conditions(
            &at(format!("stampCards[{i}].conditions")),
            &c.conditions,
        ));
    }
    for (i, c) in p.campaigns.iter().enumerate() {
        out.extend(empty_ranks(
            &at(format!("campaigns[{i}]")),
            Some(c.min_rank),
            c.max_rank,
            "the campaign applies to no member",
        ));
        if let (Some(s), Some(e)) = (c.starts, c.ends) {
            if s == e {
                out.push(ConfigWarning {
                    path: at(format!("campaigns[{i}].ends")),
                    message: "ends at its starts: the campaign runs for no time ([starts, \
                              ends) is empty)"
                        .into(),
                });
            }
        }
    }
    for (i, r) in p.rewards.iter().enumerate() {
        out.extend(empty_ranks(
            &at(format!("rewards[{i}]")),
            Some(r.min_rank),
            r.max_rank,
            "no member may redeem the reward",
        ));
    }
    if let Some(t) = &p.tiers {
        for (i, tier) in t.tiers.iter().enumerate() {
            // A tier is the highest rank whose threshold the value reaches: one above this
            // with a threshold at or below this one's always wins.
            if let Some(above) = t
                .tiers
                .iter()
                .find(|o| o.rank > tier.rank && o.threshold <= tier.threshold)
            {
                out.push(ConfigWarning {
                    path: at(format!("tierConfig.tiers[{i}].threshold")),
                    message: format!(
                        "{:?} is never reached by qualifying value: {:?}, of a higher rank, \
                         has a threshold of {} (at or below this one's {}), and the highest \
                         rank reached wins (only loyalty.tier.set can give {:?})",
                        tier.name, above.name, above.threshold, tier.threshold, tier.name
                    ),
                });
            }
        }
    }
    out
}

/// What a rule's or a stamp card's conditions at `path` warn of: ranges no event can fall in.
fn empty_conditions(path: &str, c: &super::Conditions) -> Vec<ConfigWarning> {
    let mut out = Vec::new();
    if let (Some(lo), Some(hi)) = (c.min_amount, c.max_amount) {
        if lo > hi {
            out.push(ConfigWarning {
                path: format!("{path}.maxAmount"),
                message: format!(
                    "{hi} is below minAmount {lo}: no amount meets both, so this never applies"
                ),
            });
        }
    }
    if let (Some(from), Some(until)) = (c.valid_from, c.valid_until) {
        if until <= from {
            out.push(ConfigWarning {
                path: format!("{path}.validUntil"),
                message: "is not after validFrom: no event time is in [validFrom, \
                          validUntil), so this never applies"
                    .into(),
            });
        }
    }
    out.extend(empty_ranks(
        path,
        c.min_rank,
        c.max_rank,
        "no member's rank meets both, so this never applies",
    ));
    out
}

/// A `minRank` above its `maxRank` at `path`.
fn empty_ranks(
    path: &str,
    min: Option<u32>,
    max: Option<u32>,
    what: &str,
) -> Option<ConfigWarning> {
    match (min, max) {
        (Some(lo), Some(hi)) if lo > hi => Some(ConfigWarning {
            path: format!("{path}.maxRank"),
            message: format!("{hi} is below minRank {lo}: {what}"),
        }),
        _ => None,
    }
}

/// The warnings of a whole config.
pub fn warnings(config: &super::Config) -> Vec<ConfigWarning> {
    config
        .programs
        .iter()
        .enumerate()
        .flat_map(|(i, p)| program_warnings(p, &format!("programs[{i}]")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(triggers: &[&str]) -> super::super::Config {
        let rules: Vec<String> = triggers
            .iter()
            .enumerate()
            .map(|(i, t)| {
                format!(
                    r#"{{"id":"rule_{i}","trigger":"{t}","award":{{"type":"fixed","points":1}}}}"#
                )
            })
            .collect();
        super::super::parse_config(&format!(
            r#"{{"programs":[{{"id":"p","currency":"EUR","earningRules":[{}],
               "campaigns":[{{"id":"c","multiplier":2,"triggers":["invoice.payd"]}}]}}]}}"#,
            rules.join(",")
        ))
        .unwrap()
    }

    #[test]
    fn near_misses_and_silent_triggers_are_named_custom_ones_are_not() {
        let w = warnings(&config(&[
            "payment.complete",
            "payment.completed",
            "erp.order.shipped",
            "customer.brithday",
            "payment.refunded",
            "loyalty.points.adjust",
            "loyalty.account.created",
            "review.posted",
        ]));
        let paths: Vec<&str> = w.iter().map(|w| w.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "programs[0].earningRules[0].trigger",
                "programs[0].earningRules[3].trigger",
                "programs[0].earningRules[4].trigger",
                "programs[0].earningRules[5].trigger",
                "programs[0].campaigns[0].triggers[0]",
            ]
        );
        assert!(
            w[0].message.contains("did you mean \"payment.completed\""),
            "{}",
            w[0]
        );
        assert!(
            w[1].message.contains("did you mean \"customer.birthday\""),
            "{}",
            w[1]
        );
        assert!(w[2].message.contains("never triggers"), "{}", w[2]);
        assert!(w[4].message.contains("\"invoice.paid\""), "{}", w[4]);
        assert_eq!(distance("payment.complete", "payment.completed", 2), 1);
        assert_eq!(distance("abc", "xyz", 2), 3);
    }

    /// Ranges that hold for nothing, a campaign that runs for no time and a tier no value
    /// reaches are named; the same fields with room in them are not.
    #[test]
    fn what_can_never_apply_is_named() {
        let config = |bad: bool| {
            let (lo, hi) = if bad { (500, 100) } else { (100, 500) };
            let (from, until) = if bad {
                ("2026-06-01T00:00:00Z", "2026-05-01T00:00:00Z")
            } else {
                ("2026-05-01T00:00:00Z", "2026-06-01T00:00:00Z")
            };
            let (rmin, rmax) = if bad { (2, 1) } else { (1, 2) };
            let ends = if bad {
                "2026-07-01T00:00:00Z"
            } else {
                "2026-07-02T00:00:00Z"
            };
            let gold = if bad { 1000 } else { 2000 };
            super::super::parse_config(&format!(
                r#"{{"programs":[{{"id":"p","currency":"EUR",
                  "earningRules":[{{"id":"r","trigger":"payment.completed",
                    "award":{{"type":"fixed","points":1}},
                    "conditions":{{"minAmount":{lo},"maxAmount":{hi},"validFrom":"{from}",
                      "validUntil":"{until}","minRank":{rmin},"maxRank":{rmax}}}}}],
                  "tierConfig":{{"qualifyOn":"spend","period":{{"type":"rolling","months":12}},
                    "tiers":[{{"name":"Member","rank":0,"threshold":0}},
                           {{"name":"Silver","rank":1,"threshold":1000}},
                           {{"name":"Gold","rank":2,"threshold":{gold}}}]}},
                  "campaigns":[{{"id":"c","multiplier":2,"minRank":{rmin},"maxRank":{rmax},
                    "starts":"2026-07-01T00:00:00Z","ends":"{ends}"}}],
                  "rewards":[{{"id":"w","cost":10,"minRank":{rmin},"maxRank":{rmax}}}],
                  "stampCards":[{{"id":"s","trigger":"payment.complete","stampsRequired":3,
                    "reward":"w"}}]}}]}}"#
            ))
            .unwrap()
        };
        let paths = |bad| {
            warnings(&config(bad))
                .into_iter()
                .map(|w| w.path)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            paths(true),
            [
                "programs[0].stampCards[0].trigger",
                "programs[0].earningRules[0].conditions.maxAmount",
                "programs[0].earningRules[0].conditions.validUntil",
                "programs[0].earningRules[0].conditions.maxRank",
                "programs[0].campaigns[0].maxRank",
                "programs[0].campaigns[0].ends",
                "programs[0].rewards[0].maxRank",
                "programs[0].tierConfig.tiers[1].threshold",
            ]
        );
        // The stamp card's typo stays; nothing else is warned of.
        assert_eq!(paths(false), ["programs[0].stampCards[0].trigger"]);
    }
}
