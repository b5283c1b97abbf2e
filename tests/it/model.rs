//! An independent model of the rules the property tests check, written from SPEC sections
//! 2 to 9 (and the project docs where the SPEC leaves a choice to them), for the configs of
//! `properties.rs` only.
//!
//! Nothing here comes from `loyalty_core`: the model reads the records as JSON, counts in
//! integers (exact fractions, rounded by hand) and does its calendars with `chrono` and
//! `chrono-tz`. The property tests fold the same log through the engine and compare what it
//! prints (its JSON lines) with what the model expects, so a rule the engine gets wrong makes
//! a property fail instead of agreeing with itself.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

/// Calendars in a program's time zone (SPEC sections 4, 5 and 6).
pub mod cal {
    use chrono::{
        DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeZone,
    };
    use chrono_tz::Tz;

    /// Unix seconds of an RFC 3339 time (fractions dropped); `None` when it is not one.
    pub fn parse(s: &str) -> Option<i64> {
        DateTime::parse_from_rfc3339(s).ok().map(|d| d.timestamp())
    }

    /// `YYYY-MM-DDTHH:MM:SSZ`, as the engine prints times.
    pub fn format(t: i64) -> String {
        DateTime::from_timestamp(t, 0)
            .expect("a time chrono can hold")
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    }

    /// The local date and time of an instant.
    pub fn local(t: i64, tz: Tz) -> NaiveDateTime {
        tz.timestamp_opt(t, 0).unwrap().naive_local()
    }

    /// The instant of a local date and time: an ambiguous one takes the earlier instant, one
    /// that does not exist (a daylight-saving gap) moves forward by the gap (SPEC section 5).
    pub fn instant(local: NaiveDateTime, tz: Tz) -> i64 {
        match tz.from_local_datetime(&local) {
            LocalResult::Single(d) => d.timestamp(),
            LocalResult::Ambiguous(a, b) => a.timestamp().min(b.timestamp()),
            LocalResult::None => {
                // Read with the offset in force before the gap: the wall clock then shows
                // `local` plus the gap.
                let before = (local - Duration::days(1)).and_utc();
                let offset = tz.offset_from_utc_datetime(&before.naive_utc()).fix();
                (local - Duration::seconds(i64::from(offset.local_minus_utc())))
                    .and_utc()
                    .timestamp()
            }
        }
    }

    fn days_in_month(y: i32, m: u32) -> u32 {
        let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
        NaiveDate::from_ymd_opt(ny, nm, 1)
            .unwrap()
            .pred_opt()
            .unwrap()
            .day()
    }

    /// The same local date and time `n` calendar months later (earlier when negative); a day
    /// the month lacks becomes its last day.
    pub fn add_months(t: i64, n: i32, tz: Tz) -> i64 {
        let l = local(t, tz);
        let months = l.year() * 12 + l.month0() as i32 + n;
        let (y, m) = (months.div_euclid(12), months.rem_euclid(12) as u32 + 1);
        let d = l.day().min(days_in_month(y, m));
        instant(
            NaiveDate::from_ymd_opt(y, m, d).unwrap().and_time(l.time()),
            tz,
        )
    }

    /// The same local time `n` local days later (earlier when negative).
    pub fn add_days(t: i64, n: i64, tz: Tz) -> i64 {
        instant(local(t, tz) + Duration::days(n), tz)
    }

    /// Local midnight starting `date`.
    pub fn start_of(date: NaiveDate, tz: Tz) -> i64 {
        instant(date.and_hms_opt(0, 0, 0).unwrap(), tz)
    }

    /// Every local day boundary (midnight) in `(after, upto]`, in order.
    pub fn day_boundaries(after: i64, upto: i64, tz: Tz) -> Vec<i64> {
        let mut out = Vec::new();
        let mut date = local(after, tz).date();
        loop {
            date = date.succ_opt().unwrap();
            let b = start_of(date, tz);
            if b > upto {
                return out;
            }
            if b > after {
                out.push(b);
            }
        }
    }

    /// The first local day boundary strictly after `t`.
    pub fn next_day_boundary(t: i64, tz: Tz) -> i64 {
        let mut date = local(t, tz).date();
        loop {
            date = date.succ_opt().unwrap();
            let b = start_of(date, tz);
            if b > t {
                return b;
            }
        }
    }

    /// The cap window that holds `t` (SPEC section 4): `[start, end)` of its calendar day,
    /// ISO week (from Monday), month or year in `tz`; `None` for `lifetime`.
    pub fn window(kind: &str, t: i64, tz: Tz) -> Option<(i64, i64)> {
        let d = local(t, tz).date();
        let (from, to) = match kind {
            "lifetime" => return None,
            "day" => (d, d.succ_opt().unwrap()),
            "week" => {
                let monday = d - Duration::days(i64::from(d.weekday().num_days_from_monday()));
                (monday, monday + Duration::days(7))
            }
            "month" => {
                let first = d.with_day(1).unwrap();
                let next = if d.month() == 12 {
                    NaiveDate::from_ymd_opt(d.year() + 1, 1, 1)
                } else {
                    NaiveDate::from_ymd_opt(d.year(), d.month() + 1, 1)
                };
                (first, next.unwrap())
            }
            "year" => (
                NaiveDate::from_ymd_opt(d.year(), 1, 1).unwrap(),
                NaiveDate::from_ymd_opt(d.year() + 1, 1, 1).unwrap(),
            ),
            other => panic!("no window {other}"),
        };
        Some((start_of(from, tz), start_of(to, tz)))
    }
}

/// `num / den` rounded half away from zero (`num`, `den` >= 0).
pub fn nearest(num: i128, den: i128) -> i64 {
    i64::try_from((2 * num + den) / (2 * den)).unwrap()
}

/// `num / den` rounded down (`num`, `den` >= 0).
pub fn floor(num: i128, den: i128) -> i64 {
    i64::try_from(num / den).unwrap()
}

/// The points a refund gives back of an award of `points`, in total so far (SPEC section 7):
/// floor(points × refunded / amount), all of them once the payment is refunded in full.
pub fn given_back(points: i64, refunded: i64, amount: i64) -> i64 {
    if refunded >= amount {
        points
    } else {
        floor(
            i128::from(points) * i128::from(refunded),
            i128::from(amount),
        )
    }
}

/// An exact decimal JSON number (`1.25`) as a fraction `(num, den)`.
pub fn decimal(v: &Value) -> (i128, i128) {
    let text = v.to_string();
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let den = 10i128.pow(u32::try_from(frac.len()).unwrap());
    let num: i128 = format!("{int}{frac}").parse().expect("a plain decimal");
    (num, den)
}

/// The engine's output lines, parsed.
pub fn parse_lines<'a>(lines: impl IntoIterator<Item = &'a String>) -> Vec<Value> {
    lines
        .into_iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// What a record is, once its envelope is read; or the reason it is refused as bad input
/// before any state is looked at (SPEC section 2: `malformed`, then `invalid`).
pub struct Envelope {
    pub id: String,
    pub kind: String,
    pub created: i64,
    pub data: Map<String, Value>,
}

const COMMANDS: [&str; 7] = [
    "loyalty.account.enroll",
    "loyalty.points.adjust",
    "loyalty.qualifying_activity.record",
    "loyalty.redemption.create",
    "loyalty.points.transfer",
    "loyalty.tier.set",
    "loyalty.program.updated",
];

const LIMIT: i64 = 1_000_000_000_000_000;

/// Reads an envelope; `Err(reason)` for `malformed` and the record-alone `invalid` checks,
/// for the record types the property logs hold.
pub fn read(text: &str) -> Result<Envelope, &'static str> {
    let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(text) else {
        return Err("malformed");
    };
    let (Some(Value::String(id)), Some(Value::String(kind)), Some(Value::String(created))) =
        (obj.get("id"), obj.get("type"), obj.get("created"))
    else {
        return Err("malformed");
    };
    let Some(Value::Object(data)) = obj.get("data") else {
        return Err("malformed");
    };
    if id.is_empty() || kind.is_empty() {
        return Err("invalid");
    }
    let Some(created) = cal::parse(created) else {
        return Err("invalid");
    };
    let reserved = kind.starts_with("loyalty.") && !COMMANDS.contains(&kind.as_str());
    if reserved || kind == "customer.birthday" {
        return Err("invalid");
    }
    let string = |k: &str| matches!(data.get(k), Some(Value::String(s)) if !s.is_empty());
    let int = |k: &str| {
        data.get(k)
            .and_then(Value::as_i64)
            .filter(|v| v.abs() <= LIMIT)
    };
    let amount = || int("amount").is_some_and(|a| a >= 0);
    let ok = match kind.as_str() {
        "payment.completed" => string("id") && string("customer") && amount() && string("currency"),
        "payment.refunded" => {
            string("id")
                && string("payment")
                && string("customer")
                && amount()
                && string("currency")
        }
        "loyalty.account.enroll" => string("customer") && string("program"),
        "loyalty.points.adjust" => {
            string("customer")
                && string("program")
                && string("reason")
                && int("points").is_some_and(|p| p != 0)
        }
        "loyalty.points.transfer" => {
            string("program")
                && string("from")
                && string("to")
                && data["from"] != data["to"]
                && int("points").is_some_and(|p| p > 0)
        }
        "loyalty.redemption.create" => {
            string("customer")
                && string("program")
                && string("reward")
                && data
                    .get("quantity")
                    .is_none_or(|q| q.as_i64().is_some_and(|q| (1..=LIMIT).contains(&q)))
        }
        "clock.tick" => true,
        _ => string("customer"),
    };
    if !ok {
        return Err("invalid");
    }
    Ok(Envelope {
        id: id.clone(),
        kind: kind.clone(),
        created,
        data: data.clone(),
    })
}

fn s<'a>(data: &'a Map<String, Value>, k: &str) -> &'a str {
    data[k].as_str().unwrap()
}

fn n(data: &Map<String, Value>, k: &str) -> i64 {
    data[k].as_i64().unwrap()
}

fn rejected(reason: &str) -> Value {
    json!({"kind": "rejected", "reason": reason})
}

/// The fields of a transaction line the models predict (ids and hashes are the engine's).
pub fn tx_view(line: &Value) -> Value {
    let mut v = json!({
        "kind": "transaction",
        "customer": line["customer"], "program": line["program"], "type": line["type"],
        "points": line["points"], "balanceAfter": line["balanceAfter"], "rule": line["rule"],
        "campaigns": line["campaigns"], "created": line["created"],
    });
    if line["type"] == "award" {
        v["capped"] = line["metadata"]["capped"].clone();
    }
    v
}

/// A payment as refunds see it (SPEC section 7): a second `payment.completed` with the same
/// `data.id` adds to it (docs/rules.md, refunds).
#[derive(Default)]
struct Payment {
    currency: String,
    amount: i64,
    refunded: i64,
    /// The first payment's time and customer: where its spend counted.
    created: i64,
    customer: String,
    awards: Vec<Award>,
}

/// An award a payment wrote, and what refunds gave back of it.
struct Award {
    program: &'static str,
    customer: String,
    points: i64,
    rule: Option<&'static str>,
    campaigns: Vec<&'static str>,
    reversed: i64,
    /// The lot it formed (lots model).
    lot: Option<u64>,
}

#[allow(clippy::too_many_arguments)]
fn tx(
    program: &str,
    customer: &str,
    kind: &str,
    points: i64,
    balance: i64,
    rule: Option<&str>,
    campaigns: &[&str],
    created: i64,
) -> Value {
    let mut v = json!({"kind": "transaction", "customer": customer, "program": program,
        "type": kind, "points": points, "balanceAfter": balance, "rule": rule,
        "campaigns": campaigns, "created": cal::format(created)});
    if kind == "award" {
        v["capped"] = json!(false);
    }
    v
}

// ---------------------------------------------------------------------------------------
// The ledger of the main property config (`properties::config(window)`).

/// The main config, as the model knows it (see `properties::config`):
/// - `prog_a` (EUR, Europe/Berlin, autoEnroll, rounding nearest):
///   `rule_spend` 1 per 100 × 1.25; `rule_capped` 3 per 100 capped at [`CAP`] per `window`;
///   `rule_welcome` 50 on enrolment; `rule_erp` 7 per `erp.order`, at most 3 uses;
///   `rule_cash` 1.5 % cashback; campaign `camp_x` (Feb and March 2026) × 1.1 with a bonus
///   of 5 on every trigger.
/// - `prog_b` (GBP, UTC, no autoEnroll): `rule_fx` per currency (GBP 1, EUR 0.87) per 100,
///   floor, capped at 300 a week.
pub struct Ledger {
    window: String,
    seen: BTreeSet<String>,
    /// (program, customer) to balance.
    balances: BTreeMap<(&'static str, String), i64>,
    /// (program, customer, rule) to the awards of capped rules: (time, points).
    capped: BTreeMap<(&'static str, String, &'static str), Awarded>,
    /// (program, customer) to the uses of `rule_erp`.
    uses: BTreeMap<(&'static str, String), u32>,
    payments: BTreeMap<String, Payment>,
}

/// Awards as (time, points).
type Awarded = Vec<(i64, i64)>;

pub const CAP: i64 = 700;
const FX_CAP: i64 = 300;
const CAMP_STARTS: &str = "2026-02-01T00:00:00Z";
const CAMP_ENDS: &str = "2026-04-01T00:00:00Z";
const CAMP_BONUS: i64 = 5;

fn berlin() -> chrono_tz::Tz {
    chrono_tz::Europe::Berlin
}

impl Ledger {
    pub fn new(window: &str) -> Ledger {
        Ledger {
            window: window.to_string(),
            seen: BTreeSet::new(),
            balances: BTreeMap::new(),
            capped: BTreeMap::new(),
            uses: BTreeMap::new(),
            payments: BTreeMap::new(),
        }
    }

    /// Every account the model holds, with its balance.
    pub fn balances(&self) -> &BTreeMap<(&'static str, String), i64> {
        &self.balances
    }

    /// What applying one record prints: transaction lines (the fields of [`tx_view`]),
    /// `loyalty.cashback.earned` events (`{"kind": "cashback", ...}`) and rejections, in
    /// order.
    pub fn apply(&mut self, text: &str) -> Vec<Value> {
        let env = match read(text) {
            Ok(env) => env,
            Err(reason) => return vec![rejected(reason)],
        };
        if self.seen.contains(&env.id) {
            return vec![rejected("duplicate")];
        }
        let d = &env.data;
        let program = |name: &str| match name {
            "prog_a" => Some("prog_a"),
            "prog_b" => Some("prog_b"),
            _ => None,
        };
        let is_command = env.kind.starts_with("loyalty.");
        if is_command && program(s(d, "program")).is_none() {
            return vec![rejected("unknown_program")];
        }
        let enrolled = |me: &Ledger, c: &str| {
            me.balances
                .contains_key(&(program(s(d, "program")).unwrap(), c.to_string()))
        };
        match env.kind.as_str() {
            "loyalty.points.adjust" if !enrolled(self, s(d, "customer")) => {
                return vec![rejected("not_enrolled")]
            }
            "loyalty.points.transfer"
                if !enrolled(self, s(d, "from")) || !enrolled(self, s(d, "to")) =>
            {
                return vec![rejected("not_enrolled")]
            }
            "payment.refunded" => {
                let Some(p) = self.payments.get(s(d, "payment")) else {
                    return vec![rejected("unknown_payment")];
                };
                if !p.currency.eq_ignore_ascii_case(s(d, "currency"))
                    || n(d, "amount") > p.amount - p.refunded
                {
                    return vec![rejected("invalid")];
                }
            }
            _ => {}
        }
        self.seen.insert(env.id.clone());
        let t = env.created;
        let mut out = Vec::new();
        match env.kind.as_str() {
            "loyalty.account.enroll" => {
                let prog = program(s(d, "program")).unwrap();
                self.account(prog, s(d, "customer"), t, &mut out);
            }
            "loyalty.points.adjust" => {
                let key = (
                    program(s(d, "program")).unwrap(),
                    s(d, "customer").to_string(),
                );
                let points = n(d, "points");
                if points < 0 && self.balances[&key] + points < 0 {
                    return vec![rejected("insufficient_points")];
                }
                out.push(self.post(&key, "adjustment", points, None, &[], t));
            }
            "loyalty.points.transfer" => {
                let prog = program(s(d, "program")).unwrap();
                let from = (prog, s(d, "from").to_string());
                let to = (prog, s(d, "to").to_string());
                let points = n(d, "points");
                if self.balances[&from] < points {
                    return vec![rejected("insufficient_points")];
                }
                out.push(self.post(&from, "transfer_out", -points, None, &[], t));
                out.push(self.post(&to, "transfer_in", points, None, &[], t));
            }
            "payment.completed" => self.payment(d, t, &mut out),
            "payment.refunded" => {
                let p = self.payments.get_mut(s(d, "payment")).unwrap();
                p.refunded += n(d, "amount");
                let mut reversals = Vec::new();
                for a in &mut p.awards {
                    let give = given_back(a.points, p.refunded, p.amount) - a.reversed;
                    if give > 0 {
                        a.reversed += give;
                        reversals.push((
                            a.program,
                            a.customer.clone(),
                            give,
                            a.rule,
                            a.campaigns.clone(),
                        ));
                    }
                }
                for (prog, customer, give, rule, campaigns) in reversals {
                    out.push(self.post(&(prog, customer), "reversal", -give, rule, &campaigns, t));
                }
            }
            "clock.tick" => {}
            _ => {
                // A custom event (`erp.order`): prog_a enrols, prog_b only acts on members.
                let customer = s(d, "customer");
                self.account("prog_a", customer, t, &mut out);
                let key = ("prog_a", customer.to_string());
                let camp = campaign_active(t);
                if env.kind == "erp.order" && self.uses.get(&key).copied().unwrap_or(0) < 3 {
                    let points = nearest(7 * camp_factor(camp), 10);
                    *self.uses.entry(key.clone()).or_default() += 1;
                    let c = if camp { vec!["camp_x"] } else { vec![] };
                    out.push(self.post(&key, "award", points, Some("rule_erp"), &c, t));
                }
                self.bonus(&key, camp, t, &mut out);
            }
        }
        out
    }

    /// Posts a transaction and returns its line.
    fn post(
        &mut self,
        key: &(&'static str, String),
        kind: &str,
        points: i64,
        rule: Option<&str>,
        campaigns: &[&str],
        t: i64,
    ) -> Value {
        let balance = self.balances.get_mut(key).expect("an account");
        *balance += points;
        tx(key.0, &key.1, kind, points, *balance, rule, campaigns, t)
    }

    /// The account of `customer` in `prog`, enrolled first when it has none (SPEC section 2:
    /// `loyalty.account.created` triggers the welcome rule and the campaign's bonus).
    fn account(&mut self, prog: &'static str, customer: &str, t: i64, out: &mut Vec<Value>) {
        let key = (prog, customer.to_string());
        if self.balances.contains_key(&key) {
            return;
        }
        self.balances.insert(key.clone(), 0);
        if prog == "prog_a" {
            let camp = campaign_active(t);
            let points = nearest(50 * camp_factor(camp), 10);
            let c = if camp { vec!["camp_x"] } else { vec![] };
            out.push(self.post(&key, "award", points, Some("rule_welcome"), &c, t));
            self.bonus(&key, camp, t, out);
        }
    }

    /// The campaign bonus of one trigger (not multiplied, not capped).
    fn bonus(
        &mut self,
        key: &(&'static str, String),
        camp: bool,
        t: i64,
        out: &mut Vec<Value>,
    ) -> Option<Award> {
        if !camp {
            return None;
        }
        out.push(self.post(key, "award", CAMP_BONUS, None, &["camp_x"], t));
        Some(Award {
            program: key.0,
            customer: key.1.clone(),
            points: CAMP_BONUS,
            rule: None,
            campaigns: vec!["camp_x"],
            reversed: 0,
            lot: None,
        })
    }

    /// A capped rule's award: cut to the headroom left in the window that holds `t`.
    #[allow(clippy::too_many_arguments)]
    fn capped_award(
        &mut self,
        key: &(&'static str, String),
        rule: &'static str,
        uncapped: i64,
        cap: i64,
        window: &str,
        tz: chrono_tz::Tz,
        campaigns: &[&'static str],
        t: i64,
        out: &mut Vec<Value>,
    ) -> Option<Award> {
        let history = self.capped.entry((key.0, key.1.clone(), rule)).or_default();
        let win = cal::window(window, t, tz);
        let used: i64 = history
            .iter()
            .filter(|(at, _)| win.is_none_or(|(from, to)| from <= *at && *at < to))
            .map(|(_, p)| p)
            .sum();
        let headroom = cap - used;
        let points = uncapped.min(headroom);
        if points <= 0 {
            return None;
        }
        history.push((t, points));
        let mut line = self.post(key, "award", points, Some(rule), campaigns, t);
        line["capped"] = json!(points < uncapped);
        out.push(line);
        Some(Award {
            program: key.0,
            customer: key.1.clone(),
            points,
            rule: Some(rule),
            campaigns: campaigns.to_vec(),
            reversed: 0,
            lot: None,
        })
    }

    fn payment(&mut self, d: &Map<String, Value>, t: i64, out: &mut Vec<Value>) {
        let customer = s(d, "customer");
        let amount = i128::from(n(d, "amount"));
        let currency = s(d, "currency").to_ascii_uppercase();
        let mut awards = Vec::new();
        // prog_a: enrols the customer, then its rules in order, then the campaign bonus.
        self.account("prog_a", customer, t, out);
        let key = ("prog_a", customer.to_string());
        let camp = campaign_active(t);
        let c: Vec<&'static str> = if camp { vec!["camp_x"] } else { vec![] };
        let spend = nearest(amount * 125 * camp_factor(camp), 100 * 100 * 10);
        if spend > 0 {
            out.push(self.post(&key, "award", spend, Some("rule_spend"), &c, t));
            awards.push(Award {
                program: "prog_a",
                customer: customer.to_string(),
                points: spend,
                rule: Some("rule_spend"),
                campaigns: c.clone(),
                reversed: 0,
                lot: None,
            });
        }
        let uncapped = nearest(amount * 3 * camp_factor(camp), 100 * 10);
        if uncapped > 0 {
            let window = self.window.clone();
            awards.extend(self.capped_award(
                &key,
                "rule_capped",
                uncapped,
                CAP,
                &window,
                berlin(),
                &c,
                t,
                out,
            ));
        }
        let cashback = floor(amount * 15, 1000);
        if cashback > 0 {
            out.push(
                json!({"kind": "cashback", "customer": customer, "program": "prog_a",
                            "amount": cashback, "currency": currency}),
            );
        }
        awards.extend(self.bonus(&key, camp, t, out));
        // prog_b: members only.
        let key = ("prog_b", customer.to_string());
        if self.balances.contains_key(&key) {
            let rate = match currency.as_str() {
                "GBP" => Some((1, 1)),
                "EUR" => Some((87, 100)),
                _ => None,
            };
            if let Some((num, den)) = rate {
                let points = floor(amount * num, den * 100);
                if points > 0 {
                    awards.extend(self.capped_award(
                        &key,
                        "rule_fx",
                        points,
                        FX_CAP,
                        "week",
                        chrono_tz::UTC,
                        &[],
                        t,
                        out,
                    ));
                }
            }
        }
        let p = self
            .payments
            .entry(s(d, "id").to_string())
            .or_insert_with(|| Payment {
                currency,
                created: t,
                ..Payment::default()
            });
        p.amount += n(d, "amount");
        p.awards.extend(awards);
    }
}

fn campaign_active(t: i64) -> bool {
    cal::parse(CAMP_STARTS).unwrap() <= t && t < cal::parse(CAMP_ENDS).unwrap()
}

/// The campaign's multiplier 1.1 as tenths.
fn camp_factor(active: bool) -> i128 {
    if active {
        11
    } else {
        10
    }
}

// ---------------------------------------------------------------------------------------
// Tiers (SPEC section 5) for `properties::tiers::config`.

struct TierDef {
    name: String,
    rank: u64,
    threshold: i64,
    /// `earnMultiplier` as a fraction.
    multiplier: (i128, i128),
}

struct Member {
    /// Index into `Tiers::tiers`.
    tier: usize,
    last_demotion: Option<i64>,
    balance: i64,
}

/// A program with a rolling `qualifyOn: spend` tier config and one rule (1 point per 100,
/// floor, times the tier's `earnMultiplier`), fed payments and refunds.
pub struct Tiers {
    tz: chrono_tz::Tz,
    months: i32,
    soft: bool,
    /// Ordered by rank.
    tiers: Vec<TierDef>,
    clock: Option<i64>,
    members: BTreeMap<String, Member>,
    payments: BTreeMap<String, Payment>,
    /// Per customer: its transactions and tier changes, in order.
    pub log: BTreeMap<String, Vec<Value>>,
}

impl Tiers {
    /// The model of the one program of `config` (its time zone, period and tiers are read
    /// from the config's JSON).
    pub fn new(config: &str) -> Tiers {
        let c: Value = serde_json::from_str(config).unwrap();
        let p = &c["programs"][0];
        let tc = &p["tierConfig"];
        assert_eq!(tc["qualifyOn"], "spend");
        assert_eq!(tc["period"]["type"], "rolling");
        let mut tiers: Vec<TierDef> = tc["tiers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| TierDef {
                name: t["name"].as_str().unwrap().to_string(),
                rank: t["rank"].as_u64().unwrap(),
                threshold: t["threshold"].as_i64().unwrap(),
                multiplier: t.get("earnMultiplier").map_or((1, 1), decimal),
            })
            .collect();
        tiers.sort_by_key(|t| t.rank);
        Tiers {
            tz: p["timezone"].as_str().unwrap_or("UTC").parse().unwrap(),
            months: i32::try_from(tc["period"]["months"].as_i64().unwrap()).unwrap(),
            soft: tc["softLanding"].as_bool().unwrap_or(false),
            tiers,
            clock: None,
            members: BTreeMap::new(),
            payments: BTreeMap::new(),
            log: BTreeMap::new(),
        }
    }

    pub fn tz(&self) -> chrono_tz::Tz {
        self.tz
    }

    pub fn clock(&self) -> Option<i64> {
        self.clock
    }

    /// The highest tier whose threshold `value` meets (the lowest when none).
    fn highest_met(&self, value: i64) -> usize {
        (0..self.tiers.len())
            .rev()
            .find(|&i| value >= self.tiers[i].threshold)
            .unwrap_or(0)
    }

    /// The qualifying value of `customer` at `t`: its payments in `(t - N months, t]`, each
    /// less what was refunded of it (a refund comes off at its payment's time).
    pub fn value_at(&self, customer: &str, t: i64) -> i64 {
        let from = cal::add_months(t, -self.months, self.tz);
        self.payments
            .values()
            .filter(|p| p.customer == customer)
            .filter(|p| from < p.created && p.created <= t)
            .map(|p| p.amount - p.refunded)
            .sum()
    }

    fn change(&mut self, customer: &str, to: usize, at: i64) {
        let m = self.members.get_mut(customer).unwrap();
        let from = m.tier;
        m.tier = to;
        let direction = if to > from { "up" } else { "down" };
        let line = json!({"kind": "tier", "from": self.tiers[from].name, "to": self.tiers[to].name,
                          "direction": direction, "created": cal::format(at)});
        self.log.entry(customer.to_string()).or_default().push(line);
    }

    /// A day boundary: a member whose value is below its tier's threshold drops to the
    /// highest tier the value meets; with soft landing one rank only, and not again within
    /// one period length of its last demotion.
    fn evaluate(&mut self, b: i64) {
        let customers: Vec<String> = self.members.keys().cloned().collect();
        for c in customers {
            let value = self.value_at(&c, b);
            let m = &self.members[&c];
            if value >= self.tiers[m.tier].threshold || m.tier == 0 {
                continue;
            }
            let to = if self.soft {
                let allowed = m
                    .last_demotion
                    .is_none_or(|d| b >= cal::add_months(d, self.months, self.tz));
                if !allowed {
                    continue;
                }
                m.tier - 1
            } else {
                self.highest_met(value)
            };
            self.change(&c, to, b);
            self.members.get_mut(&c).unwrap().last_demotion = Some(b);
        }
    }

    /// Applies one record (payments, refunds and ticks); `Some(reason)` when it is rejected.
    pub fn apply(&mut self, text: &str) -> Option<&'static str> {
        let env = read(text).expect("the tier logs are well-formed");
        let d = &env.data;
        if env.kind == "payment.refunded" {
            let Some(p) = self.payments.get(s(d, "payment")) else {
                return Some("unknown_payment");
            };
            if !p.currency.eq_ignore_ascii_case(s(d, "currency"))
                || n(d, "amount") > p.amount - p.refunded
            {
                return Some("invalid");
            }
        }
        let t = env.created;
        // Time-driven effects up to the record's time: the day boundaries the clock passes.
        if let Some(clock) = self.clock {
            for b in cal::day_boundaries(clock, t, self.tz) {
                self.evaluate(b);
            }
        }
        let now = self.clock.map_or(t, |c| c.max(t));
        self.clock = Some(now);
        match env.kind.as_str() {
            "payment.completed" => {
                let customer = s(d, "customer").to_string();
                let start = self.highest_met(0);
                let m = self.members.entry(customer.clone()).or_insert(Member {
                    tier: start,
                    last_demotion: None,
                    balance: 0,
                });
                // The tier held before the event.
                let (num, den) = self.tiers[m.tier].multiplier;
                let points = floor(i128::from(n(d, "amount")) * num, 100 * den);
                let mut awards = Vec::new();
                if points > 0 {
                    m.balance += points;
                    let line = tx(
                        "prog_t",
                        &customer,
                        "award",
                        points,
                        m.balance,
                        Some("rule_p"),
                        &[],
                        t,
                    );
                    self.log.entry(customer.clone()).or_default().push(line);
                    awards.push(Award {
                        program: "prog_t",
                        customer: customer.clone(),
                        points,
                        rule: Some("rule_p"),
                        campaigns: vec![],
                        reversed: 0,
                        lot: None,
                    });
                }
                let p = self
                    .payments
                    .entry(s(d, "id").to_string())
                    .or_insert_with(|| Payment {
                        currency: s(d, "currency").to_ascii_uppercase(),
                        created: t,
                        customer: customer.clone(),
                        ..Payment::default()
                    });
                p.amount += n(d, "amount");
                p.awards.extend(awards);
            }
            "payment.refunded" => {
                let p = self.payments.get_mut(s(d, "payment")).unwrap();
                p.refunded += n(d, "amount");
                for a in &mut p.awards {
                    let give = given_back(a.points, p.refunded, p.amount) - a.reversed;
                    if give > 0 {
                        a.reversed += give;
                        let m = self.members.get_mut(&a.customer).unwrap();
                        m.balance -= give;
                        let line = tx(
                            "prog_t",
                            &a.customer,
                            "reversal",
                            -give,
                            m.balance,
                            a.rule,
                            &[],
                            t,
                        );
                        self.log.entry(a.customer.clone()).or_default().push(line);
                    }
                }
            }
            "clock.tick" => {}
            other => panic!("no {other} in the tier logs"),
        }
        // Promotion: as soon as the value (now) reaches a higher tier's threshold.
        let customers: Vec<String> = self.members.keys().cloned().collect();
        for c in customers {
            let best = self.highest_met(self.value_at(&c, now));
            if best > self.members[&c].tier {
                self.change(&c, best, t);
            }
        }
        None
    }

    /// Every member's account line as the model expects it: balance, tier, value and
    /// whether it is at risk.
    pub fn accounts(&self) -> BTreeMap<String, Value> {
        let now = self.clock.unwrap_or(0);
        self.members
            .iter()
            .map(|(c, m)| {
                let value = self.value_at(c, now);
                let tier = &self.tiers[m.tier];
                let line = json!({"balance": m.balance, "tier": tier.name,
                    "qualifyingValue": value, "atRisk": value < tier.threshold && m.tier > 0});
                (c.clone(), line)
            })
            .collect()
    }

    /// The tier a member holds, and the one its value at `t` meets.
    pub fn held_and_met(&self, customer: &str, t: i64) -> (String, String) {
        let held = &self.tiers[self.members[customer].tier].name;
        let met = &self.tiers[self.highest_met(self.value_at(customer, t))].name;
        (held.clone(), met.clone())
    }

    /// The rank of a tier by name.
    pub fn rank(&self, name: &str) -> u64 {
        self.tiers.iter().find(|t| t.name == name).unwrap().rank
    }

    /// `t` plus one period length.
    pub fn period_after(&self, t: i64) -> i64 {
        cal::add_months(t, self.months, self.tz)
    }
}

// ---------------------------------------------------------------------------------------
// Lots, expiry, refunds and debt (SPEC section 7) for `properties::lots::CONFIG`.

struct Lot {
    seq: u64,
    expires: i64,
    remaining: i64,
    warned: bool,
}

#[derive(Default)]
struct Holder {
    balance: i64,
    debt: i64,
    lots: Vec<Lot>,
    /// Units of `rwd_b` redeemed.
    units_b: i64,
}

/// `prog_l` (EUR, UTC, autoEnroll): points expire 1 month after they are credited, with a
/// warning 5 days before; `rule_p` 1 point per 100, floor; rewards `rwd_a` (40 points,
/// stock 3) and `rwd_b` (15 points, at most 2 per member).
pub struct Lots {
    seen: BTreeSet<String>,
    clock: Option<i64>,
    holders: BTreeMap<String, Holder>,
    next_lot: u64,
    used_a: i64,
    payments: BTreeMap<String, Payment>,
    /// Per customer: transactions, expiry warnings and refused redemptions, in order.
    pub log: BTreeMap<String, Vec<Value>>,
}

const EXPIRY_MONTHS: i32 = 1;
const WARN_DAYS: i64 = 5;
const UTC: chrono_tz::Tz = chrono_tz::UTC;

impl Default for Lots {
    fn default() -> Self {
        Lots::new()
    }
}

impl Lots {
    pub fn new() -> Lots {
        Lots {
            seen: BTreeSet::new(),
            clock: None,
            holders: BTreeMap::new(),
            next_lot: 0,
            used_a: 0,
            payments: BTreeMap::new(),
            log: BTreeMap::new(),
        }
    }

    /// Every account's balance.
    pub fn balances(&self) -> BTreeMap<String, i64> {
        self.holders
            .iter()
            .map(|(c, h)| (c.clone(), h.balance))
            .collect()
    }

    /// The model's own bookkeeping holds SPEC's invariant: a balance is the sum of the open
    /// lots minus the debt, no lot is negative, a debt only while no lot holds anything.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (c, h) in &self.holders {
            let open: i64 = h.lots.iter().map(|l| l.remaining).sum();
            if h.balance != open - h.debt || h.debt < 0 || h.lots.iter().any(|l| l.remaining < 0) {
                return Err(format!(
                    "model of {c}: balance {} lots {open} debt {}",
                    h.balance, h.debt
                ));
            }
            if h.debt > 0 && open > 0 {
                return Err(format!(
                    "model of {c}: a debt of {} beside {open} in lots",
                    h.debt
                ));
            }
        }
        Ok(())
    }

    /// With no lot left (all expired), what is left of each balance is its debt.
    pub fn all_expired(&self) -> bool {
        self.holders
            .values()
            .all(|h| h.lots.is_empty() && h.balance == -h.debt)
    }

    fn push(&mut self, customer: &str, line: Value) {
        self.log.entry(customer.to_string()).or_default().push(line);
    }

    fn post(&mut self, customer: &str, kind: &str, points: i64, rule: Option<&str>, t: i64) {
        let balance = self.holders[customer].balance;
        let line = tx("prog_l", customer, kind, points, balance, rule, &[], t);
        self.push(customer, line);
    }

    /// A credit pays the debt off first; what is left forms a lot.
    fn credit(&mut self, customer: &str, points: i64, t: i64) -> Option<u64> {
        let seq = self.next_lot;
        let h = self.holders.get_mut(customer).unwrap();
        h.balance += points;
        let paid = points.min(h.debt);
        h.debt -= paid;
        if points == paid {
            return None;
        }
        self.next_lot += 1;
        h.lots.push(Lot {
            seq,
            expires: cal::add_months(t, EXPIRY_MONTHS, UTC),
            remaining: points - paid,
            warned: false,
        });
        Some(seq)
    }

    /// Takes `points` from the lots that expire first (`first`: from that lot before any
    /// other); returns what no lot covered.
    fn take(h: &mut Holder, mut points: i64, first: Option<u64>) -> i64 {
        let mut order: Vec<usize> = (0..h.lots.len()).collect();
        order.sort_by_key(|&i| {
            (
                h.lots[i].seq != first.unwrap_or(u64::MAX),
                h.lots[i].expires,
                h.lots[i].seq,
            )
        });
        for i in order {
            let took = points.min(h.lots[i].remaining);
            h.lots[i].remaining -= took;
            points -= took;
        }
        points
    }

    fn deduct(&mut self, customer: &str, points: i64) {
        let h = self.holders.get_mut(customer).unwrap();
        h.balance -= points;
        let left = Lots::take(h, points, None);
        assert_eq!(left, 0, "model: a deduction beyond the lots of {customer}");
    }

    /// Expiries and expiry warnings due at or before `upto`, in time order (expiries before
    /// warnings at the same instant, lots in the order credited).
    fn carry_out(&mut self, upto: i64) {
        let mut due = Vec::new();
        for (c, h) in &self.holders {
            for l in &h.lots {
                if l.expires <= upto {
                    due.push((l.expires, 0, c.clone(), l.seq));
                }
                let warn = cal::add_days(l.expires, -WARN_DAYS, UTC);
                if !l.warned && warn <= upto {
                    due.push((warn, 1, c.clone(), l.seq));
                }
            }
        }
        due.sort();
        for (at, kind, c, seq) in due {
            let h = self.holders.get_mut(&c).unwrap();
            let i = h.lots.iter().position(|l| l.seq == seq).unwrap();
            let left = h.lots[i].remaining;
            let expires = h.lots[i].expires;
            if kind == 0 {
                h.lots.remove(i);
                if left > 0 {
                    h.balance -= left;
                    self.post(&c, "expiry", -left, None, at);
                }
            } else {
                h.lots[i].warned = true;
                if left > 0 {
                    let line = json!({"kind": "expiring", "points": left,
                        "expiresAt": cal::format(expires), "created": cal::format(at)});
                    self.push(&c, line);
                }
            }
        }
    }

    /// Applies one record; `Some(reason)` when it is rejected (or refused for lack of
    /// points).
    pub fn apply(&mut self, text: &str) -> Option<&'static str> {
        let env = match read(text) {
            Ok(env) => env,
            Err(reason) => return Some(reason),
        };
        if self.seen.contains(&env.id) {
            return Some("duplicate");
        }
        let d = &env.data;
        if env.kind.starts_with("loyalty.") && s(d, "program") != "prog_l" {
            return Some("unknown_program");
        }
        let member = |c: &str| self.holders.contains_key(c);
        match env.kind.as_str() {
            "loyalty.points.adjust" | "loyalty.redemption.create" if !member(s(d, "customer")) => {
                return Some("not_enrolled")
            }
            "loyalty.points.transfer" if !member(s(d, "from")) || !member(s(d, "to")) => {
                return Some("not_enrolled")
            }
            "payment.refunded" => {
                let Some(p) = self.payments.get(s(d, "payment")) else {
                    return Some("unknown_payment");
                };
                if !p.currency.eq_ignore_ascii_case(s(d, "currency"))
                    || n(d, "amount") > p.amount - p.refunded
                {
                    return Some("invalid");
                }
            }
            _ => {}
        }
        self.seen.insert(env.id.clone());
        let t = env.created;
        self.carry_out(t);
        self.clock = Some(self.clock.map_or(t, |c| c.max(t)));
        match env.kind.as_str() {
            "payment.completed" => {
                let c = s(d, "customer").to_string();
                self.holders.entry(c.clone()).or_default();
                let points = floor(i128::from(n(d, "amount")), 100);
                let mut awards = Vec::new();
                if points > 0 {
                    let lot = self.credit(&c, points, t);
                    self.post(&c, "award", points, Some("rule_p"), t);
                    awards.push(Award {
                        program: "prog_l",
                        customer: c.clone(),
                        points,
                        rule: Some("rule_p"),
                        campaigns: vec![],
                        reversed: 0,
                        lot,
                    });
                }
                let p = self
                    .payments
                    .entry(s(d, "id").to_string())
                    .or_insert_with(|| Payment {
                        currency: s(d, "currency").to_ascii_uppercase(),
                        created: t,
                        customer: c.clone(),
                        ..Payment::default()
                    });
                p.amount += n(d, "amount");
                p.awards.extend(awards);
            }
            "payment.refunded" => {
                let p = self.payments.get_mut(s(d, "payment")).unwrap();
                p.refunded += n(d, "amount");
                let mut reversals = Vec::new();
                for a in &mut p.awards {
                    let give = given_back(a.points, p.refunded, p.amount) - a.reversed;
                    if give > 0 {
                        a.reversed += give;
                        reversals.push((a.customer.clone(), give, a.lot, a.rule));
                    }
                }
                for (c, give, lot, rule) in reversals {
                    // From the award's own lot first, then the lots that expire first; what
                    // no lot covers is a debt.
                    let h = self.holders.get_mut(&c).unwrap();
                    h.balance -= give;
                    h.debt += Lots::take(h, give, lot);
                    self.post(&c, "reversal", -give, rule, t);
                }
            }
            "loyalty.points.adjust" => {
                let c = s(d, "customer");
                let points = n(d, "points");
                if points < 0 && self.holders[c].balance + points < 0 {
                    return Some("insufficient_points");
                }
                if points > 0 {
                    self.credit(c, points, t);
                } else {
                    self.deduct(c, -points);
                }
                self.post(c, "adjustment", points, None, t);
            }
            "loyalty.points.transfer" => {
                let (from, to, points) = (s(d, "from"), s(d, "to"), n(d, "points"));
                if self.holders[from].balance < points {
                    return Some("insufficient_points");
                }
                self.deduct(from, points);
                self.post(from, "transfer_out", -points, None, t);
                self.credit(to, points, t);
                self.post(to, "transfer_in", points, None, t);
            }
            "loyalty.redemption.create" => {
                let c = s(d, "customer");
                let reward = s(d, "reward");
                let quantity = d.get("quantity").and_then(Value::as_i64).unwrap_or(1);
                let (unit, is_a) = match reward {
                    "rwd_a" => (40, true),
                    "rwd_b" => (15, false),
                    other => panic!("no reward {other} in the lot logs"),
                };
                let cost = unit * quantity;
                let h = &self.holders[c];
                let refusal = if is_a && 3 - self.used_a < quantity {
                    Some("out_of_stock")
                } else if !is_a && h.units_b + quantity > 2 {
                    Some("limit_reached")
                } else if h.balance < cost {
                    Some("insufficient_points")
                } else {
                    None
                };
                if let Some(reason) = refusal {
                    let line = json!({"kind": "redemption.rejected", "reward": reward,
                        "reason": reason, "created": cal::format(t)});
                    self.push(c, line);
                    return None;
                }
                if is_a {
                    self.used_a += quantity;
                } else {
                    self.holders.get_mut(c).unwrap().units_b += quantity;
                }
                self.deduct(c, cost);
                self.post(c, "redemption", -cost, None, t);
            }
            "clock.tick" => {}
            other => panic!("no {other} in the lot logs"),
        }
        None
    }
}
