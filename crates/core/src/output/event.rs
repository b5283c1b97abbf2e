//! Outbound events (SPEC section 8), typed: one variant per event type with its fields,
//! and the one writer that prints their `data` objects.
//!
//! Owns: the shapes and the JSON of `data`. The keys of every `data` object print in byte
//! order (as a `serde_json::Map` of the same entries would); the tests build the same
//! object through serde_json (`oracle.rs`), as the oracle of the writer.
//! Must not touch state.

use super::{jw, Direction, Refusal, Status};
use crate::time::Timestamp;
use crate::Sym;

/// The member an event is about: every event's `data` holds these three.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Member {
    /// `loy_…`.
    pub account: Sym,
    /// The customer.
    pub customer: Sym,
    /// The program.
    pub program: Sym,
}

/// What an event says, by type (SPEC section 8).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Event {
    /// `loyalty.account.created`.
    AccountCreated {
        /// The member's referral code.
        referral_code: String,
    },
    /// `loyalty.points.earned`.
    PointsEarned {
        /// Points awarded.
        points: i64,
        /// The rule, or none for a campaign bonus.
        rule: Option<Sym>,
        /// Campaigns that contributed.
        campaigns: Vec<Sym>,
        /// The award's transaction.
        transaction: Sym,
        /// The balance after it.
        balance: i128,
        /// Whether a cap cut the award.
        capped: bool,
        /// `pending` or `posted` in a program with pending points (SPEC section 13).
        status: Option<Status>,
    },
    /// `loyalty.points.vested` (SPEC section 13): a pending award's points reached the
    /// balance.
    PointsVested {
        /// Points vested.
        points: i64,
        /// The vest's transaction.
        transaction: Sym,
        /// The award that vested.
        award: Sym,
        /// The balance after it.
        balance: i128,
    },
    /// `loyalty.points.adjusted`.
    PointsAdjusted {
        /// Signed points.
        points: i64,
        /// The adjustment's transaction.
        transaction: Sym,
        /// The balance after it.
        balance: i128,
        /// The operator's reason.
        reason: String,
    },
    /// `loyalty.points.transferred`.
    PointsTransferred {
        /// The sending customer.
        from: String,
        /// The receiving customer.
        to: String,
        /// Points moved.
        points: i64,
        /// The `transfer_out` and `transfer_in` transactions.
        transactions: [Sym; 2],
    },
    /// `loyalty.points.reversed`.
    PointsReversed {
        /// Negative points.
        points: i64,
        /// The reversal's transaction.
        transaction: Sym,
        /// The balance after it.
        balance: i128,
        /// The refunded payment.
        payment: String,
        /// The refund.
        refund: String,
        /// The rule of the award reversed.
        rule: Option<String>,
        /// `pending` or `posted` in a program with pending points (SPEC section 13).
        status: Option<Status>,
    },
    /// `loyalty.points.expired`.
    PointsExpired {
        /// Negative points.
        points: i64,
        /// The expiry's transaction.
        transaction: Sym,
        /// The balance after it.
        balance: i128,
    },
    /// `loyalty.points.expiring`.
    PointsExpiring {
        /// Points that will expire.
        points: i64,
        /// When.
        expires_at: Timestamp,
    },
    /// `loyalty.cashback.earned`.
    CashbackEarned {
        /// The cashback rule.
        rule: String,
        /// The payment, when the trigger names one.
        payment: Option<String>,
        /// Minor units of the currency.
        amount: i64,
        /// The payment's currency.
        currency: String,
    },
    /// `loyalty.reward.redeemed`.
    RewardRedeemed {
        /// `rdm_…`.
        redemption: String,
        /// The reward.
        reward: String,
        /// How many.
        quantity: i64,
        /// Points spent.
        cost: i64,
        /// The redemption's transaction; none when it cost nothing.
        transaction: Option<Sym>,
        /// The balance after it.
        balance: i128,
    },
    /// `loyalty.redemption.rejected`.
    RedemptionRejected {
        /// The reward asked for.
        reward: String,
        /// Why not.
        reason: Refusal,
    },
    /// `loyalty.stamp_card.completed`.
    StampCardCompleted {
        /// The card.
        card: String,
        /// Its reward.
        reward: String,
        /// The redemption issued for it.
        redemption: String,
    },
    /// `loyalty.tier.changed`.
    TierChanged {
        /// The tier left.
        from_tier: String,
        /// The tier reached.
        to_tier: String,
        /// Which way.
        direction: Direction,
        /// Set by hand (`loyalty.tier.set`): printed only then.
        manual: bool,
    },
}

impl Event {
    /// The event's `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::AccountCreated { .. } => "loyalty.account.created",
            Event::PointsEarned { .. } => "loyalty.points.earned",
            Event::PointsAdjusted { .. } => "loyalty.points.adjusted",
            Event::PointsTransferred { .. } => "loyalty.points.transferred",
            Event::PointsReversed { .. } => "loyalty.points.reversed",
            Event::PointsVested { .. } => "loyalty.points.vested",
            Event::PointsExpired { .. } => "loyalty.points.expired",
            Event::PointsExpiring { .. } => "loyalty.points.expiring",
            Event::CashbackEarned { .. } => "loyalty.cashback.earned",
            Event::RewardRedeemed { .. } => "loyalty.reward.redeemed",
            Event::RedemptionRejected { .. } => "loyalty.redemption.rejected",
            Event::StampCardCompleted { .. } => "loyalty.stamp_card.completed",
            Event::TierChanged { .. } => "loyalty.tier.changed",
        }
    }

    /// Appends the `data` object, keys in byte order, as serde_json prints the same object
    /// (the tests' oracle builds it so).
    pub fn write_data(&self, m: &Member, out: &mut Vec<u8>) {
        let mut w = Obj::new(out);
        w.str("account", &m.account);
        match self {
            Event::AccountCreated { referral_code } => {
                w.member_tail(m);
                w.str("referralCode", referral_code);
            }
            Event::PointsEarned {
                points,
                rule,
                campaigns,
                transaction,
                balance,
                capped,
                status,
            } => {
                w.num("balance", *balance);
                w.strs("campaigns", campaigns);
                w.bool("capped", *capped);
                w.str("customer", &m.customer);
                w.int("points", *points);
                w.str("program", &m.program);
                w.opt_str("rule", rule.as_deref());
                w.status(*status);
                w.str("transaction", transaction);
            }
            Event::PointsVested {
                points,
                transaction,
                award,
                balance,
            } => {
                w.str("award", award);
                w.num("balance", *balance);
                w.str("customer", &m.customer);
                w.int("points", *points);
                w.str("program", &m.program);
                w.str("transaction", transaction);
            }
            Event::PointsAdjusted {
                points,
                transaction,
                balance,
                reason,
            } => {
                w.num("balance", *balance);
                w.str("customer", &m.customer);
                w.int("points", *points);
                w.str("program", &m.program);
                w.str("reason", reason);
                w.str("transaction", transaction);
            }
            Event::PointsTransferred {
                from,
                to,
                points,
                transactions,
            } => {
                w.str("customer", &m.customer);
                w.str("from", from);
                w.int("points", *points);
                w.str("program", &m.program);
                w.str("to", to);
                w.strs("transactions", transactions);
            }
            Event::PointsReversed {
                points,
                transaction,
                balance,
                payment,
                refund,
                rule,
                status,
            } => {
                w.num("balance", *balance);
                w.str("customer", &m.customer);
                w.str("payment", payment);
                w.int("points", *points);
                w.str("program", &m.program);
                w.str("refund", refund);
                w.opt_str("rule", rule.as_deref());
                w.status(*status);
                w.str("transaction", transaction);
            }
            Event::PointsExpired {
                points,
                transaction,
                balance,
            } => {
                w.num("balance", *balance);
                w.str("customer", &m.customer);
                w.int("points", *points);
                w.str("program", &m.program);
                w.str("transaction", transaction);
            }
            Event::PointsExpiring { points, expires_at } => {
                w.str("customer", &m.customer);
                w.key("expiresAt");
                jw::time(w.out, *expires_at);
                w.int("points", *points);
                w.str("program", &m.program);
            }
            Event::CashbackEarned {
                rule,
                payment,
                amount,
                currency,
            } => {
                w.int("amount", *amount);
                w.str("currency", currency);
                w.str("customer", &m.customer);
                w.opt_str("payment", payment.as_deref());
                w.str("program", &m.program);
                w.str("rule", rule);
            }
            Event::RewardRedeemed {
                redemption,
                reward,
                quantity,
                cost,
                transaction,
                balance,
            } => {
                w.num("balance", *balance);
                w.int("cost", *cost);
                w.str("customer", &m.customer);
                w.str("program", &m.program);
                w.int("quantity", *quantity);
                w.str("redemption", redemption);
                w.str("reward", reward);
                w.opt_str("transaction", transaction.as_deref());
            }
            Event::RedemptionRejected { reward, reason } => {
                w.member_tail(m);
                w.str("reason", reason.as_str());
                w.str("reward", reward);
            }
            Event::StampCardCompleted {
                card,
                reward,
                redemption,
            } => {
                w.str("card", card);
                w.member_tail(m);
                w.str("redemption", redemption);
                w.str("reward", reward);
            }
            Event::TierChanged {
                from_tier,
                to_tier,
                direction,
                manual,
            } => {
                w.str("customer", &m.customer);
                w.str("direction", direction.as_str());
                w.str("fromTier", from_tier);
                if *manual {
                    w.bool("manual", true);
                }
                w.str("program", &m.program);
                w.str("toTier", to_tier);
            }
        }
        w.end();
    }
}

/// Writes one JSON object's entries, in the order given.
struct Obj<'o> {
    out: &'o mut Vec<u8>,
    first: bool,
}

impl<'o> Obj<'o> {
    fn new(out: &'o mut Vec<u8>) -> Obj<'o> {
        out.push(b'{');
        Obj { out, first: true }
    }

    fn key(&mut self, k: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(k.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        jw::str(self.out, v);
    }

    fn opt_str(&mut self, k: &str, v: Option<&str>) {
        self.key(k);
        jw::opt_str(self.out, v);
    }

    fn int(&mut self, k: &str, v: i64) {
        self.key(k);
        jw::int(self.out, v);
    }

    fn num(&mut self, k: &str, v: i128) {
        self.key(k);
        match i64::try_from(v) {
            Ok(v) => jw::int(self.out, v),
            Err(_) => {
                self.out.push(b'"');
                jw::int(self.out, v);
                self.out.push(b'"');
            }
        }
    }

    fn bool(&mut self, k: &str, v: bool) {
        self.key(k);
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
    }

    fn strs<S: AsRef<str>>(&mut self, k: &str, v: &[S]) {
        self.key(k);
        self.out.push(b'[');
        for (i, s) in v.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            jw::str(self.out, s.as_ref());
        }
        self.out.push(b']');
    }

    /// `status`, when there is one.
    fn status(&mut self, status: Option<Status>) {
        if let Some(s) = status {
            self.str("status", s.as_str());
        }
    }

    /// `customer` and `program`, for the events with no key between them.
    fn member_tail(&mut self, m: &Member) {
        self.str("customer", &m.customer);
        self.str("program", &m.program);
    }

    fn end(self) {
        self.out.push(b'}');
    }
}

/// An outbound event (SPEC section 8): the input envelope's shape.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct OutEvent {
    /// Deterministic id.
    pub id: String,
    /// From what caused it.
    pub created: Timestamp,
    /// The id of the record whose application caused it; `None` for an effect that fell
    /// due (SPEC section 8).
    pub source: Option<Sym>,
    /// The member it is about.
    pub member: Member,
    /// What it says.
    pub event: Event,
}

impl OutEvent {
    /// `loyalty.…`.
    pub fn kind(&self) -> &'static str {
        self.event.kind()
    }

    /// The `data` object as JSON text.
    pub fn data_json(&self) -> String {
        let mut out = Vec::with_capacity(256);
        self.event.write_data(&self.member, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// The envelope JSON (`{"id","type","created","source","data"}`): the outbound message
    /// value.
    pub fn to_envelope_json(&self) -> String {
        let mut out = Vec::with_capacity(384);
        out.extend_from_slice(br#"{"id":"#);
        self.write_rest(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// The id's value, then `type`, `created`, `source` and `data`, and the closing brace.
    pub(super) fn write_rest(&self, out: &mut Vec<u8>) {
        jw::str(out, &self.id);
        out.extend_from_slice(br#","type":"#);
        jw::str(out, self.kind());
        out.extend_from_slice(br#","created":"#);
        jw::time(out, self.created);
        out.extend_from_slice(br#","source":"#);
        jw::opt_str(out, self.source.as_deref());
        out.extend_from_slice(br#","data":"#);
        self.event.write_data(&self.member, out);
        out.push(b'}');
    }
}
