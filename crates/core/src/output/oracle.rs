//! The tests' oracle of the one writer: every outbound event's `data`, and its envelope,
//! built again through serde_json by another route. Test code only: what the engine
//! prints is written by [`super::Event::write_data`] alone.

use serde::Serialize;
use serde_json::{json, Value};

use super::event::{Event, Member, OutEvent};
use super::Status;

impl Event {
    /// The `data` object as a `serde_json::Value`: the same object [`Event::write_data`]
    /// prints, built by another route.
    pub fn to_value(&self, m: &Member) -> Value {
        let mut v = json!({
            "account": m.account,
            "customer": m.customer,
            "program": m.program,
        });
        let more = match self {
            Event::AccountCreated { referral_code } => json!({"referralCode": referral_code}),
            Event::PointsEarned {
                points,
                rule,
                campaigns,
                transaction,
                balance,
                capped,
                status,
            } => with_status(
                json!({
                    "points": points, "rule": rule, "campaigns": campaigns,
                    "transaction": transaction, "balance": num(*balance), "capped": capped,
                }),
                *status,
            ),
            Event::PointsVested {
                points,
                transaction,
                award,
                balance,
            } => json!({
                "points": points, "transaction": transaction, "award": award,
                "balance": num(*balance),
            }),
            Event::PointsAdjusted {
                points,
                transaction,
                balance,
                reason,
            } => json!({
                "points": points, "transaction": transaction, "balance": num(*balance),
                "reason": reason,
            }),
            Event::PointsTransferred {
                from,
                to,
                points,
                transactions,
            } => json!({"from": from, "to": to, "points": points, "transactions": transactions}),
            Event::PointsReversed {
                points,
                transaction,
                balance,
                payment,
                refund,
                rule,
                status,
            } => with_status(
                json!({
                    "points": points, "transaction": transaction, "balance": num(*balance),
                    "payment": payment, "refund": refund, "rule": rule,
                }),
                *status,
            ),
            Event::PointsExpired {
                points,
                transaction,
                balance,
            } => json!({"points": points, "transaction": transaction, "balance": num(*balance)}),
            Event::PointsExpiring { points, expires_at } => {
                json!({"points": points, "expiresAt": expires_at.to_string()})
            }
            Event::CashbackEarned {
                rule,
                payment,
                amount,
                currency,
            } => json!({"rule": rule, "payment": payment, "amount": amount, "currency": currency}),
            Event::RewardRedeemed {
                redemption,
                reward,
                quantity,
                cost,
                transaction,
                balance,
            } => json!({
                "redemption": redemption, "reward": reward, "quantity": quantity, "cost": cost,
                "transaction": transaction, "balance": num(*balance),
            }),
            Event::RedemptionRejected { reward, reason } => {
                json!({"reward": reward, "reason": reason.as_str()})
            }
            Event::StampCardCompleted {
                card,
                reward,
                redemption,
            } => json!({"card": card, "reward": reward, "redemption": redemption}),
            Event::TierChanged {
                from_tier,
                to_tier,
                direction,
                manual,
            } => {
                let mut v = json!({"fromTier": from_tier, "toTier": to_tier, "direction": direction.as_str()});
                if *manual {
                    v["manual"] = true.into();
                }
                v
            }
        };
        if let (Value::Object(v), Value::Object(more)) = (&mut v, more) {
            v.extend(more);
        }
        v
    }
}

impl OutEvent {
    /// The `data` object as a `serde_json::Value`.
    pub fn data_value(&self) -> Value {
        self.event.to_value(&self.member)
    }
}

/// A balance or other sum: a JSON number while it fits an `i64`, else its digits as a
/// string (sums are exact in `i128`; JSON readers lose precision past 2^53 anyway).
fn num(v: i128) -> Value {
    match i64::try_from(v) {
        Ok(v) => Value::from(v),
        Err(_) => Value::String(v.to_string()),
    }
}

/// `v` with its `status`, when it has one.
fn with_status(mut v: Value, status: Option<Status>) -> Value {
    if let Some(s) = status {
        v["status"] = s.as_str().into();
    }
    v
}

impl Serialize for OutEvent {
    /// The envelope, through serde (the oracle of [`OutEvent::to_envelope_json`]).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("OutEvent", 5)?;
        st.serialize_field("id", &self.id)?;
        st.serialize_field("type", self.kind())?;
        st.serialize_field("created", &self.created)?;
        st.serialize_field("source", &self.source)?;
        st.serialize_field("data", &self.data_value())?;
        st.end()
    }
}
