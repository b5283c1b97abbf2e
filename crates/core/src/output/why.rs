//! `why` (SPEC section 12): what a transaction's points are made of, written by the engine as
//! it decides them, so that the explanation can never disagree with the points.
//!
//! Owns: the explanation types and their JSON. Keys are written in byte order, like an
//! event's `data`; decimals as exact JSON numbers, like the config's.
//!
//! Must not: compute points or decide a rule (`earning`, `caps` and `campaigns` fill it in
//! as they decide).

#[cfg(test)]
use serde_json::Value;

use crate::dec::{Dec, Rounding};
use crate::time::{Timestamp, Window};
use crate::Sym;

use super::jw;

/// Why a transaction has its points.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Why {
    /// An award by an earning rule.
    Rule(Box<RuleWhy>),
    /// A campaign's bonus: `{"bonus", "campaign"}`.
    Bonus {
        /// The bonus points (not multiplied).
        bonus: i64,
        /// The campaign.
        campaign: Sym,
    },
    /// A refund's reversal: `{"award", "payment", "refunded", "amount"}`.
    Reversal {
        /// The award transaction reversed.
        award: Sym,
        /// The payment refunded.
        payment: String,
        /// The amount refunded so far, this refund included (minor units).
        refunded: i64,
        /// The payment's amount (minor units).
        amount: i64,
        /// Points the lots no longer held, written off under `refundDebt: writeOff`.
        written_off: i64,
    },
    /// An expiry: `{"lot", "expiresAt"}`.
    Expiry {
        /// The transaction whose points formed the lot.
        lot: String,
        /// When the lot expired.
        expires_at: Timestamp,
    },
    /// A redemption: `{"reward", "quantity", "unitCost", "discount"}`.
    Redemption {
        /// The reward.
        reward: String,
        /// Units.
        quantity: i64,
        /// The reward's cost of one unit.
        unit_cost: i64,
        /// The tier's discount, percent.
        discount: Dec,
    },
    /// An adjustment: `{"reason"}`.
    Adjustment {
        /// The operator's reason.
        reason: String,
    },
    /// A pending award vesting: `{"award", "awarded", "reversed"}` (SPEC section 13).
    Vest {
        /// The award transaction.
        award: Sym,
        /// The points it awarded.
        awarded: i64,
        /// What refunds took from it while it was pending.
        reversed: i64,
    },
    /// One side of a transfer: `{"counterparty"}`.
    Transfer {
        /// The other customer.
        counterparty: Sym,
    },
}

/// An award by a rule: `effective = base × multipliers.rule × multipliers.tier × Π
/// multipliers.campaigns`, rounded by `rounding` to `uncapped`, then cut to the cap's
/// headroom when that is less.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RuleWhy {
    /// The award of section 4 before multipliers, as the text of an exact JSON number
    /// ([`crate::dec::quotient_text`]).
    pub base: String,
    /// The rule's multiplier.
    pub rule: Dec,
    /// The tier's `earnMultiplier` (1 without tiers).
    pub tier_multiplier: Dec,
    /// The campaigns whose multiplier is not 1, with it, in config order (written by id).
    pub campaigns: Vec<(Sym, Dec)>,
    /// The tier held before the event (`None` without tiers).
    pub tier: Option<String>,
    /// The program's rounding.
    pub rounding: Rounding,
    /// The points after rounding, before the cap.
    pub uncapped: i64,
    /// The rule's cap, when it has one.
    pub cap: Option<CapWhy>,
}

/// A rule's cap as it stood before the award.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CapWhy {
    /// `cap.points`.
    pub points: i64,
    /// The window.
    pub window: Window,
    /// What the cap left before the award.
    pub headroom: i64,
}

fn window_name(w: Window) -> &'static str {
    match w {
        Window::Day => "day",
        Window::Week => "week",
        Window::Month => "month",
        Window::Year => "year",
        Window::Lifetime => "lifetime",
    }
}

fn dec(out: &mut Vec<u8>, d: Dec) {
    d.write_to(out);
}

impl Why {
    /// Appends the `why` object (keys in byte order).
    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            Why::Rule(r) => {
                out.extend_from_slice(br#"{"base":"#);
                out.extend_from_slice(r.base.as_bytes());
                if let Some(c) = &r.cap {
                    out.extend_from_slice(br#","cap":{"headroom":"#);
                    jw::int(out, c.headroom);
                    out.extend_from_slice(br#","points":"#);
                    jw::int(out, c.points);
                    out.extend_from_slice(br#","window":""#);
                    out.extend_from_slice(window_name(c.window).as_bytes());
                    out.extend_from_slice(br#""}"#);
                }
                out.extend_from_slice(br#","multipliers":{"campaigns":{"#);
                let mut campaigns: Vec<&(Sym, Dec)> = r.campaigns.iter().collect();
                campaigns.sort_by(|a, b| a.0.cmp(&b.0));
                for (i, (id, m)) in campaigns.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    jw::str(out, id);
                    out.push(b':');
                    dec(out, *m);
                }
                out.extend_from_slice(br#"},"rule":"#);
                dec(out, r.rule);
                out.extend_from_slice(br#","tier":"#);
                dec(out, r.tier_multiplier);
                out.extend_from_slice(br#"},"rounding":""#);
                out.extend_from_slice(r.rounding.as_str().as_bytes());
                out.extend_from_slice(br#"","tier":"#);
                jw::opt_str(out, r.tier.as_deref());
                out.extend_from_slice(br#","uncapped":"#);
                jw::int(out, r.uncapped);
                out.push(b'}');
            }
            Why::Bonus { bonus, campaign } => {
                out.extend_from_slice(br#"{"bonus":"#);
                jw::int(out, *bonus);
                out.extend_from_slice(br#","campaign":"#);
                jw::str(out, campaign);
                out.push(b'}');
            }
            Why::Reversal {
                award,
                payment,
                refunded,
                amount,
                written_off,
            } => {
                out.extend_from_slice(br#"{"amount":"#);
                jw::int(out, *amount);
                out.extend_from_slice(br#","award":"#);
                jw::str(out, award);
                out.extend_from_slice(br#","payment":"#);
                jw::str(out, payment);
                out.extend_from_slice(br#","refunded":"#);
                jw::int(out, *refunded);
                if *written_off > 0 {
                    out.extend_from_slice(br#","writtenOff":"#);
                    jw::int(out, *written_off);
                }
                out.push(b'}');
            }
            Why::Expiry { lot, expires_at } => {
                out.extend_from_slice(br#"{"expiresAt":"#);
                jw::time(out, *expires_at);
                out.extend_from_slice(br#","lot":"#);
                jw::str(out, lot);
                out.push(b'}');
            }
            Why::Redemption {
                reward,
                quantity,
                unit_cost,
                discount,
            } => {
                out.extend_from_slice(br#"{"discount":"#);
                dec(out, *discount);
                out.extend_from_slice(br#","quantity":"#);
                jw::int(out, *quantity);
                out.extend_from_slice(br#","reward":"#);
                jw::str(out, reward);
                out.extend_from_slice(br#","unitCost":"#);
                jw::int(out, *unit_cost);
                out.push(b'}');
            }
            Why::Adjustment { reason } => {
                out.extend_from_slice(br#"{"reason":"#);
                jw::str(out, reason);
                out.push(b'}');
            }
            Why::Vest {
                award,
                awarded,
                reversed,
            } => {
                out.extend_from_slice(br#"{"award":"#);
                jw::str(out, award);
                out.extend_from_slice(br#","awarded":"#);
                jw::int(out, *awarded);
                out.extend_from_slice(br#","reversed":"#);
                jw::int(out, *reversed);
                out.push(b'}');
            }
            Why::Transfer { counterparty } => {
                out.extend_from_slice(br#"{"counterparty":"#);
                jw::str(out, counterparty);
                out.push(b'}');
            }
        }
    }

    /// The same object as a `serde_json::Value` (the tests' oracle).
    #[cfg(test)]
    pub fn to_value(&self) -> Value {
        let mut out = Vec::with_capacity(128);
        self.write(&mut out);
        serde_json::from_slice(&out).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
impl serde::Serialize for Why {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut out = Vec::with_capacity(128);
        self.write(&mut out);
        let text = String::from_utf8(out).map_err(serde::ser::Error::custom)?;
        let raw =
            serde_json::value::RawValue::from_string(text).map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(s: &str) -> Dec {
        s.parse().unwrap()
    }

    #[test]
    fn every_kind_prints_its_keys_in_byte_order_with_exact_numbers() {
        let rule = Why::Rule(Box::new(RuleWhy {
            base: "12.5".into(),
            rule: d("2"),
            tier_multiplier: d("1.5"),
            campaigns: vec![("camp_z".into(), d("3")), ("camp_a\"q".into(), d("0.5"))],
            tier: Some("Gold".into()),
            rounding: Rounding::Nearest,
            uncapped: 19,
            cap: Some(CapWhy {
                points: 5000,
                window: Window::Month,
                headroom: 10,
            }),
        }));
        let mut out = Vec::new();
        rule.write(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"base":12.5,"cap":{"headroom":10,"points":5000,"window":"month"},"multipliers":{"campaigns":{"camp_a\"q":0.5,"camp_z":3},"rule":2,"tier":1.5},"rounding":"nearest","tier":"Gold","uncapped":19}"#
        );
        let cases = [
            (
                Why::Bonus {
                    bonus: 50,
                    campaign: "camp_b".into(),
                },
                json!({"bonus": 50, "campaign": "camp_b"}),
            ),
            (
                Why::Vest {
                    award: "ptx_9".into(),
                    awarded: 120,
                    reversed: 20,
                },
                json!({"award": "ptx_9", "awarded": 120, "reversed": 20}),
            ),
            (
                Why::Reversal {
                    award: "ptx_1".into(),
                    payment: "pay_1".into(),
                    refunded: 500,
                    amount: 1000,
                    written_off: 0,
                },
                json!({"award": "ptx_1", "payment": "pay_1", "refunded": 500, "amount": 1000}),
            ),
            (
                Why::Reversal {
                    award: "ptx_1".into(),
                    payment: "pay_1".into(),
                    refunded: 1000,
                    amount: 1000,
                    written_off: 40,
                },
                json!({"award": "ptx_1", "payment": "pay_1", "refunded": 1000, "amount": 1000, "writtenOff": 40}),
            ),
            (
                Why::Expiry {
                    lot: "ptx_2".into(),
                    expires_at: Timestamp(1_767_225_600),
                },
                json!({"lot": "ptx_2", "expiresAt": "2026-01-01T00:00:00Z"}),
            ),
            (
                Why::Redemption {
                    reward: "rwd_1".into(),
                    quantity: 2,
                    unit_cost: 500,
                    discount: d("12.5"),
                },
                json!({"reward": "rwd_1", "quantity": 2, "unitCost": 500, "discount": 12.5}),
            ),
            (
                Why::Adjustment {
                    reason: "goodwill \u{1}".into(),
                },
                json!({"reason": "goodwill \u{1}"}),
            ),
            (
                Why::Transfer {
                    counterparty: "cus_B".into(),
                },
                json!({"counterparty": "cus_B"}),
            ),
        ];
        for (why, want) in cases {
            assert_eq!(why.to_value(), want);
            // byte order of keys: serde_json's map is sorted, so its text is the same
            assert_eq!(
                serde_json::to_string(&why).unwrap(),
                serde_json::to_string(&want).unwrap()
            );
        }
    }
}
