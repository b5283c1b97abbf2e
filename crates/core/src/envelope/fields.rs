//! The field readers of the envelope's `data` and the schema of each input type: which
//! fields are required, their types and ranges, and the `invalid` message naming the field.
//!
//! Owns: turning a record's raw `data` into its [`Body`]. Must not touch: the envelope's
//! own fields (in `super`), or state.

use std::collections::BTreeMap;

use super::*;

type Field<'a> = Option<Json<'a>>;

fn req_str(name: &str, raw: Field<'_>) -> Result<String, String> {
    if is_null(raw) {
        return Err(format!("data.{name}: missing"));
    }
    let s = raw
        .and_then(as_string)
        .ok_or_else(|| format!("data.{name}: must be a string"))?;
    if s.is_empty() {
        return Err(format!("data.{name}: must not be empty"));
    }
    Ok(s)
}

fn opt_str(name: &str, raw: Field<'_>) -> Result<Option<String>, String> {
    if is_null(raw) {
        Ok(None)
    } else {
        req_str(name, raw).map(Some)
    }
}

/// A signed integer of at most 10^15 in absolute value.
fn req_int(name: &str, raw: Field<'_>) -> Result<i64, String> {
    if is_null(raw) {
        return Err(format!("data.{name}: missing"));
    }
    let text = raw.map(|r| r.0).unwrap_or_default();
    let dec: Dec = text
        .parse()
        .map_err(|_| format!("data.{name}: must be an integer of at most 10^15"))?;
    let v = dec
        .to_i64()
        .ok_or_else(|| format!("data.{name}: must be an integer"))?;
    if i128::from(v).abs() > MAX_ABS {
        return Err(format!(
            "data.{name}: must be at most 10^15 in absolute value"
        ));
    }
    Ok(v)
}

fn req_amount(name: &str, raw: Field<'_>) -> Result<i64, String> {
    let v = req_int(name, raw)?;
    if v < 0 {
        return Err(format!("data.{name}: must not be negative"));
    }
    Ok(v)
}

fn opt_amount(name: &str, raw: Field<'_>) -> Result<Option<i64>, String> {
    if is_null(raw) {
        Ok(None)
    } else {
        req_amount(name, raw).map(Some)
    }
}

fn currency(name: &str, raw: Field<'_>) -> Result<String, String> {
    let mut s = req_str(name, raw)?;
    s.make_ascii_uppercase();
    Ok(s)
}

fn metadata(raw: Field<'_>) -> Result<(BTreeMap<String, String>, Option<String>), String> {
    if is_null(raw) {
        return Ok((BTreeMap::new(), None));
    }
    let text = raw.map(|r| r.0).unwrap_or_default();
    if !text.starts_with('{') {
        return Err("data.metadata: must be an object".into());
    }
    let mut pairs = Vec::new();
    let scanned = scan::Scan::new(text).whole_object(|k, v| {
        pairs.push((Cow::Borrowed(k), Json(v)));
        Some(())
    });
    if scanned.is_none() {
        let parsed: Pairs<'_> =
            serde_json::from_str(text).map_err(|e| format!("data.metadata: {e}"))?;
        pairs = parsed.0;
    }
    // A key given twice counts once, with its last value (as a JSON map reads it): a
    // stable sort keeps each key's values in order, and the last of each run is kept.
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut last = Vec::with_capacity(pairs.len());
    for (k, v) in pairs {
        if last
            .last()
            .is_some_and(|(l, _): &(Cow<'_, str>, _)| *l == k)
        {
            last.pop();
        }
        last.push((k, v));
    }
    let mut out = BTreeMap::new();
    let mut account = None;
    for (k, v) in last {
        let k = k.into_owned();
        if k == "loyalty_account" {
            if v.0 == "null" {
                continue;
            }
            let s = as_string(v)
                .filter(|s| !s.is_empty())
                .ok_or("data.metadata.loyalty_account: must be a loy_ id string")?;
            account = Some(s.clone());
            out.insert(k, s);
        } else if let Some(s) = as_string(v) {
            // Stripe-style metadata values are strings; other values never match a condition.
            out.insert(k, s);
        }
    }
    Ok((out, account))
}

/// A JSON object's members in their order, keys borrowed from the input when they have no
/// escape, values as their text.
pub(super) struct Pairs<'a>(pub(super) Vec<(Cow<'a, str>, Json<'a>)>);

impl<'de> serde::Deserialize<'de> for Pairs<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Key<'a>(Cow<'a, str>);
        impl<'de> serde::Deserialize<'de> for Key<'de> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = Key<'de>;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a string")
                    }
                    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                        Ok(Key(Cow::Borrowed(v)))
                    }
                    fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                        Ok(Key(Cow::Owned(v.to_string())))
                    }
                    fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                        Ok(Key(Cow::Owned(v)))
                    }
                }
                d.deserialize_str(V)
            }
        }
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Pairs<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Pairs<'de>, A::Error> {
                let mut pairs = Vec::with_capacity(m.size_hint().unwrap_or(0).min(16));
                while let Some(Key(k)) = m.next_key()? {
                    let v: Json<'de> = m.next_value()?;
                    pairs.push((k, v));
                }
                Ok(Pairs(pairs))
            }
        }
        d.deserialize_map(V)
    }
}

fn activity(raw: &RawData<'_>, id_required: bool) -> Result<Activity, String> {
    let object_id = if id_required {
        Some(req_str("id", raw.id)?)
    } else {
        opt_str("id", raw.id).unwrap_or(None)
    };
    let customer = req_str("customer", raw.customer)?;
    let (metadata, loyalty_account) = metadata(raw.metadata)?;
    Ok(Activity {
        object_id,
        customer,
        loyalty_account,
        amount: None,
        currency: None,
        metadata,
    })
}

pub(super) fn data_body(kind: &str, raw: &RawData<'_>) -> Result<Body, String> {
    Ok(match kind {
        "payment.completed" => {
            let mut a = activity(raw, true)?;
            a.amount = Some(req_amount("amount", raw.amount)?);
            a.currency = Some(currency("currency", raw.currency)?);
            Body::Event(a)
        }
        "invoice.paid" => {
            let mut a = activity(raw, true)?;
            a.amount = Some(req_amount("amount", raw.amount)?);
            a.currency = Some(currency("currency", raw.currency)?);
            opt_str("subscription", raw.subscription)?;
            Body::Event(a)
        }
        "subscription.created" => {
            let mut a = activity(raw, true)?;
            opt_str("plan", raw.plan)?;
            opt_str("interval", raw.interval)?;
            a.amount = opt_amount("amount", raw.amount)?;
            a.currency = opt_str("currency", raw.currency)?.map(|c| c.to_ascii_uppercase());
            Body::Event(a)
        }
        "payment.refunded" => Body::Refund(Refund {
            refund_id: req_str("id", raw.id)?,
            payment: req_str("payment", raw.payment)?,
            customer: req_str("customer", raw.customer)?,
            amount: req_amount("amount", raw.amount)?,
            currency: currency("currency", raw.currency)?,
        }),
        "referral.converted" => {
            req_str("id", raw.id)?;
            let referral = Referral {
                referrer: req_str("referrer", raw.referrer)?,
                referee: req_str("referee", raw.referee)?,
                code: opt_str("code", raw.code)?,
            };
            if referral.referrer == referral.referee {
                return Err("data.referee: a customer cannot refer themselves".into());
            }
            Body::Referral(referral)
        }
        "clock.tick" => Body::Tick,
        "loyalty.account.enroll" => Body::Enroll(Enroll {
            customer: req_str("customer", raw.customer)?,
            program: req_str("program", raw.program)?,
            referral_code: opt_str("referralCode", raw.referral_code)?,
            birthday: opt_str("birthday", raw.birthday)?
                .map(|b| {
                    parse_month_day(&b)
                        .ok_or_else(|| format!("data.birthday: {b:?} is not a month-day \"MM-DD\""))
                })
                .transpose()?,
            opening_balance: opt_amount("openingBalance", raw.opening_balance)?.unwrap_or(0),
        }),
        "loyalty.points.adjust" => {
            let points = req_int("points", raw.points)?;
            if points == 0 {
                return Err("data.points: must not be zero".into());
            }
            Body::Adjust(Adjust {
                customer: req_str("customer", raw.customer)?,
                program: req_str("program", raw.program)?,
                points,
                reason: req_str("reason", raw.reason)?,
            })
        }
        "loyalty.qualifying_activity.record" => Body::Qualify(Qualify {
            customer: req_str("customer", raw.customer)?,
            program: req_str("program", raw.program)?,
            amount: req_amount("amount", raw.amount)?,
            reason: req_str("reason", raw.reason)?,
            reference: opt_str("reference", raw.reference)?,
        }),
        "loyalty.tier.set" => Body::TierSet(TierSet {
            customer: req_str("customer", raw.customer)?,
            program: req_str("program", raw.program)?,
            tier: req_str("tier", raw.tier)?,
            until: opt_str("until", raw.until)?
                .map(|u| {
                    Timestamp::parse_rfc3339(&u)
                        .ok_or_else(|| format!("data.until: {u:?} is not an RFC 3339 time"))
                })
                .transpose()?,
            reason: req_str("reason", raw.reason)?,
        }),
        "loyalty.redemption.create" => {
            let quantity = if is_null(raw.quantity) {
                1
            } else {
                req_int("quantity", raw.quantity)?
            };
            if quantity < 1 {
                return Err("data.quantity: must be at least 1".into());
            }
            Body::Redeem(Redeem {
                customer: req_str("customer", raw.customer)?,
                program: req_str("program", raw.program)?,
                reward: req_str("reward", raw.reward)?,
                quantity,
            })
        }
        "loyalty.points.transfer" => {
            let points = req_int("points", raw.points)?;
            if points <= 0 {
                return Err("data.points: must be greater than 0".into());
            }
            let t = Transfer {
                program: req_str("program", raw.program)?,
                from: req_str("from", raw.from)?,
                to: req_str("to", raw.to)?,
                points,
            };
            if t.from == t.to {
                return Err("data.to: must differ from data.from".into());
            }
            Body::Transfer(t)
        }
        crate::partition::TRANSFER_CREDIT | crate::partition::TRANSFER_RETURN => {
            let points = req_int("points", raw.points)?;
            if points <= 0 {
                return Err("data.points: must be greater than 0".into());
            }
            let m = TransferMessage {
                transfer: Transfer {
                    program: req_str("program", raw.program)?,
                    from: req_str("from", raw.from)?,
                    to: req_str("to", raw.to)?,
                    points,
                },
                source: req_str("source", raw.source)?,
                transaction: req_str("transaction", raw.transaction)?,
            };
            if kind == crate::partition::TRANSFER_CREDIT {
                Body::TransferCredit(m)
            } else {
                Body::TransferReturn(m)
            }
        }
        crate::partition::CODE_CLAIM
        | crate::partition::REFERRAL_CONVERT
        | crate::partition::REFERRAL_AWARD => {
            use crate::partition as p;
            let step = match (kind, opt_str("role", raw.role)?.as_deref()) {
                (p::CODE_CLAIM, _) => ReferralStep::Claim,
                (p::REFERRAL_CONVERT, _) => ReferralStep::Convert,
                (_, Some("referrer")) => ReferralStep::AwardReferrer,
                (_, Some("referee")) => ReferralStep::AwardReferee,
                _ => return Err("data.role: must be \"referrer\" or \"referee\"".into()),
            };
            let m = ReferralMessage {
                program: req_str("program", raw.program)?,
                code: opt_str("code", raw.code)?.unwrap_or_default(),
                referrer: opt_str("referrer", raw.referrer)?.unwrap_or_default(),
                referee: opt_str("referee", raw.referee)?.unwrap_or_default(),
                source: req_str("source", raw.source)?,
            };
            Body::Referral2(step, m)
        }
        crate::partition::STOCK_REQUEST
        | crate::partition::STOCK_GRANTED
        | crate::partition::STOCK_REFUSED
        | crate::partition::STOCK_RELEASE => {
            use crate::partition as p;
            let step = match kind {
                p::STOCK_REQUEST => StockStep::Request,
                p::STOCK_GRANTED => StockStep::Granted,
                p::STOCK_REFUSED => StockStep::Refused,
                _ => StockStep::Release,
            };
            let quantity = req_int("quantity", raw.quantity)?;
            let points = req_int("points", raw.points)?;
            if quantity < 1 || points < 0 {
                return Err("data.quantity: must be at least 1, data.points at least 0".into());
            }
            Body::Stock(
                step,
                StockMessage {
                    program: req_str("program", raw.program)?,
                    reward: req_str("reward", raw.reward)?,
                    customer: req_str("customer", raw.customer)?,
                    quantity,
                    points,
                    source: req_str("source", raw.source)?,
                },
            )
        }
        _ => {
            // A custom trigger: any other type, for one customer.
            let mut a = activity(raw, false)?;
            a.amount = opt_amount("amount", raw.amount)?;
            a.currency = opt_str("currency", raw.currency)?.map(|c| c.to_ascii_uppercase());
            Body::Event(a)
        }
    })
}
