//! Config mistakes that validate but surprise a user (SPEC section 13): a trigger that is no
//! known type but within two edits of one (`payment.complete`), and a trigger that is a
//! known type that never fires a rule (a refund, a command, a tick, an outbound event).
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
    out
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
}
