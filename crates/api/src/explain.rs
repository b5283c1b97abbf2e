//! The API's explanations (SPEC section 12): a program's statistics, an account's lots, and
//! `POST /v1/simulate`, the dry run of one record through the engine with the reason every
//! rule did or did not award.
//!
//! Owns: those handlers. Must not write anything: a simulation runs the engine on a copy
//! of what its record touches, read from the store, and drops it.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::Uri;
use axum::Json;
use loyalty_core::earning::RuleOutcome;
use loyalty_core::envelope::{Reason, Record, Rejection};
use loyalty_core::output::Output;
use loyalty_core::time::Timestamp;
use loyalty_core::working_set::WorkingSet;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::reads::{load_account, Query};
use crate::{Api, ApiError};

/// A date parameter (`from`, `to`): `YYYY-MM-DD`, or an RFC 3339 time taken as its date in
/// the program's time zone.
fn date_param(q: &Query, k: &str, tz: chrono_tz::Tz) -> Result<Option<String>, ApiError> {
    let Some(v) = q.get(k) else { return Ok(None) };
    if chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok() && v.len() == 10 {
        return Ok(Some(v.to_string()));
    }
    match Timestamp::parse_rfc3339(v) {
        Some(t) => Ok(Some(loyalty_store::local_date(t.0, tz))),
        None => Err(ApiError::invalid(
            k,
            format!("{k} must be a date (YYYY-MM-DD) or an RFC 3339 time, not {v:?}"),
        )),
    }
}

/// `GET /v1/programs/{id}/stats`
#[utoipa::path(get, path = "/v1/programs/{id}/stats", tag = "programs",
    params(
        ("id" = String, Path, description = "The program's id (`prog_…`)"),
        ("from" = Option<String>, Query, description = "The first day of `days` (YYYY-MM-DD, or an RFC 3339 time: its date in the program's zone)"),
        ("to" = Option<String>, Query, description = "The last day of `days`, inclusive"),
    ),
    responses(
        (status = 200, description = "The program's statistics", body = crate::doc::ProgramStats),
        (status = 400, description = "Bad request", body = crate::doc::Error),
        (status = 401, description = "No or unknown key", body = crate::doc::Error),
        (status = 404, description = "No such program", body = crate::doc::Error),
    ),
    security(("bearer" = [])))]
pub(crate) async fn program_stats(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = Query::parse(raw.as_deref(), &["from", "to"])?;
    let view = api.store.view();
    let programs = api.programs(&view)?;
    let Some((_, _, prog)) = programs.get(&id) else {
        return Err(ApiError::missing(format!("No such program: '{id}'")).param("id"));
    };
    let from = date_param(&q, "from", prog.tz)?;
    let to = date_param(&q, "to", prog.tz)?;
    if let (Some(f), Some(t)) = (&from, &to) {
        if t < f {
            return Err(ApiError::invalid(
                "to",
                format!("to ({t}) must not be before from ({f})"),
            ));
        }
    }
    let stored = view.program_stats(&id, prog.tz, from.as_deref(), to.as_deref())?;
    let clock = view.clock()?;
    // Every tier of the program, with the members holding it (a tier an update removed,
    // still held until the next evaluation, too).
    let mut by_tier: BTreeMap<String, i64> = prog
        .tier_list()
        .iter()
        .map(|t| (t.name.clone(), 0))
        .collect();
    by_tier.extend(stored.tiers.iter().map(|(k, v)| (k.clone(), *v)));
    // At risk is a matter of the clock (a rolling period's value falls as time passes, with
    // no record): counted now, over the members of the tiers a member can fall from.
    let lowest = prog.tier_list().iter().map(|t| t.rank).min();
    let mut at_risk = 0i64;
    for t in prog.tier_list().iter().filter(|t| Some(t.rank) != lowest) {
        let prefix = loyalty_store::tier_key(&id, &t.name, "");
        let mut ids = Vec::new();
        view.scan(&prefix, &prefix, loyalty_store::Walk::Up, |k, _| {
            ids.push(String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
            Ok(true)
        })?;
        for account in ids {
            let a = load_account(&view, &account)?;
            if loyalty_core::engine::view_account(&a, Some(prog), clock).at_risk {
                at_risk += 1;
            }
        }
    }
    let days: Vec<Value> = stored
        .days
        .iter()
        .map(|(date, d)| {
            json!({
                "date": date,
                "enrolled": d.enrolled,
                "earned": d.earned,
                "redeemed": d.redeemed,
                "expired": d.expired,
                "reversed": d.reversed,
                "adjusted": d.adjusted,
                "transferred": d.transferred,
            })
        })
        .collect();
    Ok(Json(json!({
        "object": "program_stats",
        "program": id,
        "members": stored.totals.members,
        "membersByTier": by_tier,
        "atRisk": at_risk,
        "pointsOutstanding": stored.totals.outstanding,
        "days": days,
    })))
}

/// `GET /v1/accounts/{id}/lots`
#[utoipa::path(get, path = "/v1/accounts/{id}/lots", tag = "accounts",
    params(
        ("id" = String, Path, description = "The account's id (`loy_…`)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Lots at most (default 100), soonest to expire first"),
    ),
    responses(
        (status = 200, description = "The account's open lots, soonest to expire first", body = crate::doc::LotList),
        (status = 400, description = "Bad request", body = crate::doc::Error),
        (status = 401, description = "No or unknown key", body = crate::doc::Error),
        (status = 404, description = "No such account", body = crate::doc::Error),
    ),
    security(("bearer" = [])))]
pub(crate) async fn list_lots(
    State(api): State<Arc<Api>>,
    uri: Uri,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = Query::parse(raw.as_deref(), &["limit"])?;
    let limit = match q.get("limit") {
        None => 100,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(
                    "limit",
                    format!("limit must be an integer from 1 to 100, not {l:?}"),
                )
            })?,
    };
    let view = api.store.view();
    let a = load_account(&view, &id)?;
    let mut lots: Vec<&loyalty_core::lots::Lot> =
        a.lots.iter().filter(|l| l.remaining > 0).collect();
    lots.sort_by_key(|l| (l.expires.unwrap_or(i64::MAX), l.created, l.seq));
    let has_more = lots.len() > limit;
    lots.truncate(limit);
    let time = |t: i64| serde_json::to_value(Timestamp(t)).unwrap_or(Value::Null);
    let data: Vec<Value> = lots
        .into_iter()
        .map(|l| {
            json!({
                "object": "lot",
                "account": id,
                "transaction": l.transaction,
                "points": l.remaining,
                "created": time(l.created),
                "expiresAt": l.expires.map(time),
            })
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "url": uri.path(),
        "has_more": has_more,
        "data": data,
    })))
}

/// The largest body a simulation takes.
const MAX_BODY: usize = 1 << 20;

/// Reads a body of at most [`MAX_BODY`] bytes that is a JSON object.
async fn object_body(body: Body) -> Result<axum::body::Bytes, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("The body is over {MAX_BODY} bytes"),
        )
    })?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(_)) => Ok(bytes),
        Ok(_) => Err(ApiError::invalid("body", "The body must be a JSON object")),
        Err(e) => Err(ApiError::invalid(
            "body",
            format!("The body is not JSON: {e}"),
        )),
    }
}

/// `POST /v1/simulate`
#[utoipa::path(post, path = "/v1/simulate", tag = "explanations",
    request_body(content = Object, description = "An input envelope: `id`, `type`, `created`, `data`"),
    responses(
        (status = 200, description = "What applying the record now would write, and what each rule did", body = crate::doc::Simulation),
        (status = 400, description = "The body is not a JSON object", body = crate::doc::Error),
        (status = 401, description = "No or unknown key", body = crate::doc::Error),
        (status = 413, description = "The body is over 1 MiB", body = crate::doc::Error),
    ),
    security(("bearer" = [])))]
pub(crate) async fn simulate(
    State(api): State<Arc<Api>>,
    body: Body,
) -> Result<Json<Simulation>, ApiError> {
    let bytes = object_body(body).await?;
    let api2 = api.clone();
    let (out, outcomes, programs) = tokio::task::spawn_blocking(move || dry_run(&api2, &bytes))
        .await
        .map_err(ApiError::internal)??;
    let mut sim = Simulation {
        object: "simulation",
        transactions: Vec::new(),
        events: Vec::new(),
        rejected: Vec::new(),
        rules: rules_report(&programs, &outcomes),
    };
    // Each line as the fold prints it, `kind` off (a transaction's `object` on): the text
    // itself, so that exact decimals stay exact.
    for o in &out {
        let line = o.to_json_line();
        let (list, head, object) = match o {
            Output::Transaction(_) => (
                &mut sim.transactions,
                r#"{"kind":"transaction","#,
                r#"{"object":"points_transaction","#,
            ),
            Output::Event(_) => (&mut sim.events, r#"{"kind":"event","#, "{"),
            Output::Rejected(_) => (&mut sim.rejected, r#"{"kind":"rejected","#, "{"),
            Output::Message(_) => continue,
        };
        let rest = line
            .strip_prefix(head)
            .ok_or_else(|| ApiError::internal("an output line of another shape"))?;
        let raw = RawValue::from_string(format!("{object}{rest}")).map_err(ApiError::internal)?;
        list.push(raw);
    }
    Ok(Json(sim))
}

/// The answer of `POST /v1/simulate`.
#[derive(serde::Serialize)]
pub(crate) struct Simulation {
    object: &'static str,
    transactions: Vec<Box<RawValue>>,
    events: Vec<Box<RawValue>>,
    rejected: Vec<Box<RawValue>>,
    rules: Vec<Value>,
}

/// What a simulation applied: its outputs, what each rule did, and the programs it ran
/// under (id and rule ids, in config order).
type DryRun = (Vec<Output>, Vec<RuleOutcome>, Vec<(String, Vec<String>)>);

/// Applies the record to an engine over what it needs of the stored state, and drops it.
fn dry_run(api: &Api, bytes: &[u8]) -> Result<DryRun, ApiError> {
    let store = &*api.store;
    let mut engine = store.load_engine_lean()?;
    engine.track_changes(false);
    let programs = engine
        .state()
        .programs
        .iter()
        .map(|p| {
            let rules = p.rules.iter().map(|r| r.id.to_string()).collect();
            (p.id.to_string(), rules)
        })
        .collect();
    let mut ws = WorkingSet::open(engine, store)?;
    ws.engine.explain_rules();
    let mut out = Vec::new();
    let skew = api
        .commands
        .as_ref()
        .map_or(DEFAULT_MAX_SKEW_SECS, |c| c.max_skew.as_secs());
    match loyalty_core::envelope::parse(bytes).and_then(|rec| entry_check(rec, skew)) {
        Ok(rec) => ws.apply(store, &rec, &mut out)?,
        Err(rejection) => out.push(Output::Rejected(rejection)),
    }
    let outcomes = ws.engine.take_explanations();
    Ok((out, outcomes, programs))
}

/// The engine's default `--max-skew-secs`: a record this far ahead of the wall clock is
/// refused at entry (the skew of `loyalty serve`, which takes no records).
const DEFAULT_MAX_SKEW_SECS: u64 = 300;

/// What the engine refuses before a record enters its log, a dry run refuses too, as the
/// same `invalid` rejection, with the same detail: a `created` more than `skew` seconds
/// ahead of the wall clock (which would also move the copy's clock past every effect due
/// until then), or a type the engine writes to its own log.
fn entry_check(rec: Record, skew: u64) -> Result<Record, Rejection> {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let detail = if rec.created.0 > wall.saturating_add(i64::try_from(skew).unwrap_or(i64::MAX)) {
        format!(
            "created: {} is more than {skew} s ahead of the wall clock",
            rec.created
        )
    } else if rec.is_message() || loyalty_core::partition::INTERNAL.contains(&rec.kind.as_str()) {
        format!(
            "type: {} is written by the engine to its own log, never by upstream",
            rec.kind
        )
    } else {
        return Ok(rec);
    };
    Err(Rejection::new(Some(&rec.id), Reason::Invalid, detail))
}

/// For every rule of every program, in config order, what it did: `awarded` if it did
/// (once is enough: a payment may try a rule again through the referral it converts), else
/// the reason it did not, the most telling first (any reason before `trigger`).
fn rules_report(programs: &[(String, Vec<String>)], outcomes: &[RuleOutcome]) -> Vec<Value> {
    let mut best: BTreeMap<(&str, &str), Option<&'static str>> = BTreeMap::new();
    for o in outcomes {
        let reason = o.skipped.map(|s| s.as_str());
        let slot = best.entry((&*o.program, &*o.rule)).or_insert(reason);
        *slot = match (*slot, reason) {
            (None, _) | (_, None) => None,
            (Some("trigger"), r) => r,
            (s, _) => s,
        };
    }
    let mut out = Vec::new();
    for (program, rules) in programs {
        for rule in rules {
            let reason = best
                .get(&(program.as_str(), rule.as_str()))
                .copied()
                // A rule no record reached: the record triggers nothing in its program
                // (a command, a refund, a rejected record).
                .unwrap_or(Some("trigger"));
            out.push(json!({
                "program": program,
                "rule": rule,
                "outcome": if reason.is_none() { "awarded" } else { "skipped" },
                "reason": reason,
            }));
        }
    }
    out
}

/// `POST /v1/backtest`
#[utoipa::path(post, path = "/v1/backtest", tag = "explanations",
    request_body(content = crate::doc::BacktestBody, description = "The candidate programs, and optionally the baseline and when the candidate takes effect"),
    responses(
        (status = 200, description = "Baseline beside candidate, per program", body = crate::doc::BacktestReport),
        (status = 400, description = "A candidate that does not validate (`param` names the field), or a server that reads no log (`log_unavailable`)", body = crate::doc::Error),
        (status = 401, description = "No or unknown key", body = crate::doc::Error),
        (status = 413, description = "The body is over 1 MiB", body = crate::doc::Error),
    ),
    security(("bearer" = [])))]
pub(crate) async fn backtest(
    State(api): State<Arc<Api>>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let bytes = object_body(body).await?;
    // Read as the text of each field: a program's decimals stay exact.
    let body: BTreeMap<String, Box<RawValue>> = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::invalid("body", format!("The body is not JSON: {e}")))?;
    if let Some(k) = body
        .keys()
        .find(|k| !["config", "baseline", "from"].contains(&k.as_str()))
    {
        return Err(ApiError::invalid(
            k.clone(),
            format!("Received unknown parameter: {k}"),
        ));
    }
    let config = |k: &str| -> Result<Option<String>, ApiError> {
        match body.get(k).map(|v| v.get()) {
            None | Some("null") => Ok(None),
            Some(text) if text.starts_with('{') => Ok(Some(text.to_string())),
            Some(_) => Err(ApiError::invalid(
                k,
                format!("{k} must be an object: {{\"programs\": [...]}}"),
            )),
        }
    };
    let candidate = config("config")?
        .ok_or_else(|| ApiError::invalid("config", "config is required: the candidate programs"))?;
    let invalid = |k: &str, e: loyalty_core::config::ConfigError| {
        ApiError::invalid(format!("{k}.{}", e.path).replace("..", "."), e.message)
    };
    let baseline = match config("baseline")? {
        Some(text) => {
            Some(loyalty_core::config::parse_config(&text).map_err(|e| invalid("baseline", e))?)
        }
        None => None,
    };
    if let Err(e) = loyalty_core::config::parse_config(&candidate) {
        return Err(invalid("config", e));
    }
    let from = match body
        .get("from")
        .map(|v| serde_json::from_str::<Value>(v.get()))
    {
        None | Some(Ok(Value::Null)) => None,
        Some(Ok(Value::String(t))) => Some(Timestamp::parse_rfc3339(&t).ok_or_else(|| {
            ApiError::invalid("from", format!("from must be an RFC 3339 time, not {t:?}"))
        })?),
        Some(_) => return Err(ApiError::invalid("from", "from must be an RFC 3339 time")),
    };
    let Some(log) = api.log.clone() else {
        return Err(ApiError::invalid(
            "config",
            "This server reads no log: backtests run on `loyalty run`, or on `loyalty serve` \
             started with --brokers",
        )
        .code("log_unavailable"));
    };
    let report = tokio::task::spawn_blocking(move || {
        let mut bt = loyalty_core::backtest::Backtest::new(baseline.as_ref(), &candidate, from)
            .map_err(|e| ApiError::invalid("config", e.to_string()))?;
        log(&mut |line| bt.apply(line))
            .map_err(|e| ApiError::unavailable(format!("The log cannot be read: {}", e.why)))?;
        bt.finish()
            .map_err(|e| ApiError::invalid("baseline", e.to_string()))
    })
    .await
    .map_err(ApiError::internal)??;
    let mut out = report.to_json();
    if let Value::Object(m) = &mut out {
        let mut with = Map::new();
        with.insert("object".into(), "backtest".into());
        with.extend(std::mem::take(m));
        *m = with;
    }
    Ok(Json(out))
}
