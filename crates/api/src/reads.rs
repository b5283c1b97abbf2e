//! The reads of SPEC section 11: accounts, transactions, balances, redemptions, programs
//! and rewards; lists in Stripe's shape, each page from one snapshot.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::Uri;
use axum::Json;
use loyalty_core::output::AccountView;
use loyalty_core::time::Timestamp;
use loyalty_store::{View, Walk};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::{Api, ApiError, Programs};

/// The query of a request, as pairs, with each parameter checked against those allowed.
pub(crate) struct Query(BTreeMap<String, String>);

impl Query {
    pub(crate) fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Query, ApiError> {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(raw.unwrap_or("")).map_err(|e| {
                ApiError::invalid("query", format!("The query string is not valid: {e}"))
            })?;
        let mut out = BTreeMap::new();
        for (k, v) in pairs {
            if !allowed.contains(&k.as_str()) {
                return Err(ApiError::invalid(
                    k.clone(),
                    format!("Received unknown parameter: {k}"),
                ));
            }
            if out.insert(k.clone(), v).is_some() {
                return Err(ApiError::invalid(
                    k.clone(),
                    format!("The parameter {k} is given twice"),
                ));
            }
        }
        Ok(Query(out))
    }

    pub(crate) fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    fn time(&self, k: &str) -> Result<Option<Timestamp>, ApiError> {
        match self.get(k) {
            None => Ok(None),
            Some(t) => Timestamp::parse_rfc3339(t).map(Some).ok_or_else(|| {
                ApiError::invalid(k, format!("{k} must be an RFC 3339 time, not {t:?}"))
            }),
        }
    }

    fn boolean(&self, k: &str) -> Result<Option<bool>, ApiError> {
        match self.get(k) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(v) => Err(ApiError::invalid(
                k,
                format!("{k} must be true or false, not {v:?}"),
            )),
        }
    }
}

/// `limit`, `starting_after`, `ending_before`.
pub(crate) struct Page {
    pub limit: usize,
    pub after: Option<String>,
    pub before: Option<String>,
}

const PAGE_PARAMS: [&str; 3] = ["limit", "starting_after", "ending_before"];

impl Page {
    fn of(q: &Query) -> Result<Page, ApiError> {
        let limit = match q.get("limit") {
            None => 10,
            Some(l) => match l.parse::<usize>() {
                Ok(n) if (1..=100).contains(&n) => n,
                _ => {
                    return Err(ApiError::invalid(
                        "limit",
                        format!("limit must be an integer from 1 to 100, not {l:?}"),
                    ))
                }
            },
        };
        let after = q.get("starting_after").map(str::to_string);
        let before = q.get("ending_before").map(str::to_string);
        if after.is_some() && before.is_some() {
            return Err(ApiError::invalid(
                "ending_before",
                "starting_after and ending_before cannot be given together",
            ));
        }
        Ok(Page {
            limit,
            after,
            before,
        })
    }

    /// The cursor's parameter name.
    fn cursor_param(&self) -> &'static str {
        if self.before.is_some() {
            "ending_before"
        } else {
            "starting_after"
        }
    }

    fn cursor(&self) -> Option<&str> {
        self.after.as_deref().or(self.before.as_deref())
    }
}

/// A list answer: `data` items are JSON values, or raw JSON text ([`RawValue`]) copied as
/// it is (the ledger's lines need no parsing to be answered).
#[derive(serde::Serialize)]
pub(crate) struct List<T> {
    object: &'static str,
    url: String,
    has_more: bool,
    data: Vec<T>,
}

fn list<T>(uri: &Uri, data: Vec<T>, has_more: bool) -> Json<List<T>> {
    Json(List {
        object: "list",
        url: uri.path().to_string(),
        has_more,
        data,
    })
}

/// A stored line as the API's object without parsing it: its leading `{"kind":"KIND",`
/// becomes `{"object":"OBJECT",` (the fold writes `kind` first, always).
fn raw_object(line: Vec<u8>, kind: &str, object: &str) -> Result<Box<RawValue>, ApiError> {
    let head = format!(r#"{{"kind":"{kind}","#);
    let text = String::from_utf8(line).map_err(ApiError::internal)?;
    let out = match text.strip_prefix(&head) {
        Some(rest) => format!(r#"{{"object":"{object}",{rest}"#),
        None => serde_json::to_string(&as_object(
            serde_json::from_str(&text).map_err(ApiError::internal)?,
            object,
        ))
        .map_err(ApiError::internal)?,
    };
    RawValue::from_string(out).map_err(ApiError::internal)
}

/// Walks the keys under `prefix` in list order (`order`) for a page: from the start, after
/// the cursor's key (`starting_after`), or the items just before it (`ending_before`).
/// `item` turns a key and value into an item of the list, or `None` when filtered out.
fn page_of<T>(
    view: &View<'_>,
    prefix: &[u8],
    order: Walk,
    page: &Page,
    cursor_key: Option<Vec<u8>>,
    mut item: impl FnMut(&[u8], &[u8]) -> Result<Option<T>, ApiError>,
) -> Result<(Vec<T>, bool), ApiError> {
    let reverse = match order {
        Walk::Up => Walk::Down,
        Walk::Down => Walk::Up,
    };
    let (walk, from) = match (&page.before, cursor_key) {
        (Some(_), Some(k)) => (reverse, k),
        (None, Some(k)) => (order, k),
        (_, None) => (order, prefix.to_vec()),
    };
    let mut out = Vec::new();
    let mut failed = None;
    view.scan(prefix, &from, walk, |k, v| match item(k, v) {
        Ok(Some(x)) => {
            out.push(x);
            Ok(out.len() <= page.limit)
        }
        Ok(None) => Ok(true),
        Err(e) => {
            failed = Some(e);
            Ok(false)
        }
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    let has_more = out.len() > page.limit;
    out.truncate(page.limit);
    if page.before.is_some() {
        out.reverse();
    }
    Ok((out, has_more))
}

/// A stored line's JSON with `object` in place of the fold's `kind`.
fn as_object(mut line: Value, object: &str) -> Value {
    if let Value::Object(m) = &mut line {
        m.remove("kind");
    }
    with_object(line, object)
}

/// A config object's JSON (kept whole) with `object` first.
fn with_object(mut line: Value, object: &str) -> Value {
    if let Value::Object(m) = &mut line {
        let mut out = Map::new();
        out.insert("object".into(), object.into());
        out.extend(std::mem::take(m));
        return Value::Object(out);
    }
    line
}

/// An account as the fold prints it, at the clock.
fn account_view(
    programs: &Programs,
    clock: Option<Timestamp>,
    a: &loyalty_core::state::Account,
) -> AccountView {
    let prog = programs.get(&a.program).map(|(_, _, p)| &**p);
    loyalty_core::engine::view_account(a, prog, clock)
}

/// An account as the API answers it, raw.
fn account_raw(v: &AccountView) -> Result<Box<RawValue>, ApiError> {
    raw_object(v.to_json_line().into_bytes(), "account", "loyalty_account")
}

/// An account as the API answers it.
pub(crate) fn account_object(
    view: &View<'_>,
    programs: &Programs,
    a: &loyalty_core::state::Account,
) -> Result<Value, ApiError> {
    let v = account_view(programs, view.clock()?, a);
    let line: Value = serde_json::from_str(&v.to_json_line()).map_err(ApiError::internal)?;
    Ok(as_object(line, "loyalty_account"))
}

/// An account by id, or a 404.
pub(crate) fn load_account(
    view: &View<'_>,
    id: &str,
) -> Result<loyalty_core::state::Account, ApiError> {
    view.account(id)?
        .ok_or_else(|| ApiError::missing(format!("No such account: '{id}'")).param("id"))
}

/// The 20-digit sequence at the end of an index key.
fn seq_at_end(k: &[u8]) -> Result<u64, ApiError> {
    k.get(k.len().saturating_sub(20)..)
        .and_then(|d| std::str::from_utf8(d).ok())
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| ApiError::internal("an index key without a sequence number"))
}

fn digits(seq: u64) -> String {
    format!("{seq:020}")
}

/// `GET /v1/accounts/{id}`
#[utoipa::path(get, path = "/v1/accounts/{id}", tag = "accounts",
    params(("id" = String, Path, description = "The account's id (`loy_…`)")),
    responses(
        (status = 200, description = "The account", body = crate::doc::LoyaltyAccount),
        (status = 400, description = "Bad request", body = crate::doc::Error),
        (status = 401, description = "No or unknown key", body = crate::doc::Error),
        (status = 404, description = "No such account", body = crate::doc::Error),
    ),
    security(("bearer" = [])))]
pub(crate) async fn get_account(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> Result<Json<Box<RawValue>>, ApiError> {
    let view = api.store.view();
    let programs = api.programs(&view)?;
    let a = load_account(&view, &id)?;
    Ok(Json(account_raw(&account_view(
        &programs,
        view.clock()?,
        &a,
    ))?))
}

/// `GET /v1/accounts`
#[utoipa::path(get, path = "/v1/accounts", tag = "accounts",
    params(
        ("program" = Option<String>, Query, description = "Only the accounts of this program"),
        ("customer" = Option<String>, Query, description = "Only the accounts of this customer"),
        ("tier" = Option<String>, Query, description = "Only the accounts holding the tier of this name"),
        ("at_risk" = Option<bool>, Query, description = "Only the accounts at risk (or not): below their tier's threshold, with a lower tier to fall to and no manual tier holding them"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Items a page (default 10)"),
        ("starting_after" = Option<String>, Query, description = "An account id: the page after it"),
        ("ending_before" = Option<String>, Query, description = "An account id: the page before it"),
    ),
    responses(
        (status = 200, description = "Accounts in id order", body = crate::doc::AccountList),
        (status = 400, description = "Bad request", body = crate::doc::Error),
        (status = 401, description = "No or unknown key", body = crate::doc::Error),
    ),
    security(("bearer" = [])))]
pub(crate) async fn list_accounts(
    State(api): State<Arc<Api>>,
    uri: Uri,
    RawQuery(raw): RawQuery,
) -> Result<Json<List<Box<RawValue>>>, ApiError> {
    let mut allowed = vec!["program", "customer", "tier", "at_risk"];
    allowed.extend(PAGE_PARAMS);
    let q = Query::parse(raw.as_deref(), &allowed)?;
    let page = Page::of(&q)?;
    let at_risk = q.boolean("at_risk")?;
    let (program, customer, tier) = (q.get("program"), q.get("customer"), q.get("tier"));
    let view = api.store.view();
    let programs = api.programs(&view)?;
    if let Some(c) = page.cursor().filter(|_| !api.lenient_cursors) {
        if view.account(c)?.is_none() {
            return Err(ApiError::invalid(
                page.cursor_param(),
                format!("No such account: '{c}'"),
            ));
        }
    }
    // The narrowest index that answers the filters; the rest are checked on each account.
    let prefix: Vec<u8> = match (customer, program, tier) {
        (Some(c), _, _) => loyalty_store::customer_key(c, ""),
        (None, Some(p), Some(t)) => {
            let mut k = loyalty_store::tier_key(p, t, "");
            k.truncate(k.len());
            k
        }
        _ => b"a/".to_vec(),
    };
    let cursor_key = page.cursor().map(|c| {
        let mut k = prefix.clone();
        k.extend_from_slice(c.as_bytes());
        k
    });
    let clock = view.clock()?;
    let (data, has_more) = page_of(&view, &prefix, Walk::Up, &page, cursor_key, |k, v| {
        let id = std::str::from_utf8(&k[prefix.len()..])
            .map_err(|_| ApiError::internal("an account key that is not UTF-8"))?;
        let a = if prefix == b"a/" {
            loyalty_store::decode_account(k, v)?
        } else {
            match view.account(id)? {
                Some(a) => a,
                None => {
                    return Err(ApiError::internal(format!(
                        "an index names {id}, not stored"
                    )))
                }
            }
        };
        if program.is_some_and(|p| *p != *a.program) || customer.is_some_and(|c| *c != *a.customer)
        {
            return Ok(None);
        }
        let v = account_view(&programs, clock, &a);
        if tier.is_some_and(|t| v.tier.as_ref().is_none_or(|x| x.name != t))
            || at_risk.is_some_and(|r| v.at_risk != r)
        {
            return Ok(None);
        }
        Ok(Some(account_raw(&v)?))
    })?;
    Ok(list(&uri, data, has_more))
}

/// `GET /v1/accounts/{id}/balance`
#[utoipa::path(get, path = "/v1/accounts/{id}/balance", tag = "accounts",
    params(
        ("id" = String, Path, description = "The account's id (`loy_…`)"),
        ("as_of" = Option<String>, Query, format = DateTime, description = "RFC 3339; the sum of the transactions created at or before it (default: the clock)"),
    ),
    responses(
        (status = 200, description = "The balance as of a time", body = crate::doc::Balance),
        (status = 400, description = "Bad request", body = crate::doc::Error),
        (status = 401, description = "No or unknown key", body = crate::doc::Error),
        (status = 404, description = "No such account", body = crate::doc::Error),
    ),
    security(("bearer" = [])))]
pub(crate) async fn get_balance(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = Query::parse(raw.as_deref(), &["as_of"])?;
    let as_of = q.time("as_of")?;
    let view = api.store.view();
    load_account(&view, &id)?;
    let as_of = match as_of.or(view.clock()?) {
        Some(t) => t,
        None => Timestamp(0),
    };
    let prefix = ledger_prefix(&id);
    let mut sum: i128 = 0;
    let mut failed = None;
    view.scan(&prefix, &prefix, Walk::Up, |k, _| {
        let line = match seq_at_end(k).and_then(|s| view.line(s).map_err(ApiError::from)) {
            Ok(l) => l,
            Err(e) => {
                failed = Some(e);
                return Ok(false);
            }
        };
        let created = line["created"].as_str().and_then(Timestamp::parse_rfc3339);
        // A pending line moves the pending balance, not the balance (SPEC section 13).
        if created.is_some_and(|c| c <= as_of) && line["status"] != "pending" {
            sum += i128::from(line["points"].as_i64().unwrap_or(0));
        }
        Ok(true)
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(Json(json!({
        "object": "balance",
        "account": id,
        "asOf": as_of.to_string(),
        "balance": sum,
    })))
}

/// The key of a newest-first list's cursor: the index key under `prefix` of the line the
/// cursor's id names (through `index`, `i/` or `e/`); a 400 when no such item exists.
fn ledger_cursor(
    view: &View<'_>,
    page: &Page,
    prefix: &[u8],
    index: &str,
    what: &str,
) -> Result<Option<Vec<u8>>, ApiError> {
    let Some(c) = page.cursor() else {
        return Ok(None);
    };
    match view.seq_of(index, c)? {
        Some(seq) => {
            let mut k = prefix.to_vec();
            k.extend_from_slice(digits(seq).as_bytes());
            Ok(Some(k))
        }
        None => Err(ApiError::invalid(
            page.cursor_param(),
            format!("No such {what}: '{c}'"),
        )),
    }
}

fn ledger_prefix(account: &str) -> Vec<u8> {
    let mut k = b"l/".to_vec();
    k.extend_from_slice(account.as_bytes());
    k.push(0);
    k
}

const TX_TYPES: [&str; 8] = [
    "award",
    "vest",
    "adjustment",
    "reversal",
    "expiry",
    "redemption",
    "transfer_in",
    "transfer_out",
];

/// `GET /v1/points_transactions`
#[utoipa::path(get, path = "/v1/points_transactions", tag = "points_transactions",
    params(
        ("account" = Option<String>, Query, description = "Only this account's transactions"),
        ("type" = Option<String>, Query, description = "Only transactions of this type (award, vest, adjustment, reversal, expiry, redemption, transfer_in, transfer_out)"),
        ("created[gte]" = Option<String>, Query, format = DateTime, description = "Created at or after (RFC 3339)"),
        ("created[lt]" = Option<String>, Query, format = DateTime, description = "Created before (RFC 3339)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Items a page (default 10)"),
        ("starting_after" = Option<String>, Query, description = "A transaction id: the page after it (older)"),
        ("ending_before" = Option<String>, Query, description = "A transaction id: the page before it (newer)"),
    ),
    responses(
        (status = 200, description = "Transactions, newest first", body = crate::doc::TransactionList),
        (status = 400, description = "Bad request", body = crate::doc::Error),
        (status = 401, description = "No or unknown key", body = crate::doc::Error),
    ),
    security(("bearer" = [])))]
pub(crate) async fn list_transactions(
    State(api): State<Arc<Api>>,
    uri: Uri,
    RawQuery(raw): RawQuery,
) -> Result<Json<List<Box<RawValue>>>, ApiError> {
    let mut allowed = vec!["account", "type", "created[gte]", "created[lt]"];
    allowed.extend(PAGE_PARAMS);
    let q = Query::parse(raw.as_deref(), &allowed)?;
    let page = Page::of(&q)?;
    let kind = q.get("type");
    if let Some(t) = kind {
        if !TX_TYPES.contains(&t) {
            return Err(ApiError::invalid(
                "type",
                format!("type must be one of {}, not {t:?}", TX_TYPES.join(", ")),
            ));
        }
    }
    let (gte, lt) = (q.time("created[gte]")?, q.time("created[lt]")?);
    let view = api.store.view();
    let prefix = match q.get("account") {
        Some(a) => ledger_prefix(a),
        None => b"T/".to_vec(),
    };
    let cursor_key = ledger_cursor(&view, &page, &prefix, "i/", "points transaction")?;
    let filtered = kind.is_some() || gte.is_some() || lt.is_some();
    let (data, has_more) = page_of(&view, &prefix, Walk::Down, &page, cursor_key, |k, _| {
        let raw = view.line_raw(seq_at_end(k)?)?;
        if filtered {
            let line: Value = serde_json::from_slice(&raw).map_err(ApiError::internal)?;
            if kind.is_some_and(|t| line["type"] != t) {
                return Ok(None);
            }
            let created = line["created"].as_str().and_then(Timestamp::parse_rfc3339);
            if gte.is_some_and(|g| created.is_none_or(|c| c < g))
                || lt.is_some_and(|l| created.is_none_or(|c| c >= l))
            {
                return Ok(None);
            }
        }
        Ok(Some(raw_object(raw, "transaction", "points_transaction")?))
    })?;
    Ok(list(&uri, data, has_more))
}

/// A transaction by id.
pub(crate) fn transaction(view: &View<'_>, id: &str) -> Result<Option<Value>, ApiError> {
    match view.seq_of("i/", id)? {
        Some(seq) => Ok(Some(as_object(view.line(seq)?, "points_transaction"))),
        None => Ok(None),
    }
}

/// `GET /v1/points_transactions/{id}`
#[utoipa::path(get, path = "/v1/points_transactions/{id}", tag = "points_transactions",
    params(("id" = String, Path, description = "The transaction's id (`ptx_…`)")),
    responses(
        (status = 200, description = "The transaction", body = crate::doc::PointsTransaction),
        (status = 401, description = "No or unknown key", body = crate::doc::Error),
        (status = 404, description = "No such transaction", body = crate::doc::Error),
    ),
    security(("bearer" = [])))]
pub(crate) async fn get_transaction(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> Result<Json<Box<RawValue>>, ApiError> {
    let view = api.store.view();
    match view.seq_of("i/", &id)? {
        Some(seq) => Ok(Json(raw_object(
            view.line_raw(seq)?,
            "transaction",
            "points_transaction",
        )?)),
        None => Err(ApiError::missing(format!("No such points transaction: '{id}'")).param("id")),
    }
}

/// A redemption from its `loyalty.reward.redeemed` line.
pub(crate) fn redemption_object(line: &Value) -> Value {
    let d = &line["data"];
    json!({
        "object": "redemption",
        "id": d["redemption"],
        "account": d["account"],
        "customer": d["customer"],
        "program": d["program"],
        "reward": d["reward"],
        "quantity": d["quantity"],
        "cost": d["cost"],
        "transaction": d["transaction"],
        "created": line["created"],
    })
}

/// `GET /v1/redemptions`
#[utoipa::path(get, path = "/v1/redemptions", tag = "redemptions",
    params(
        ("account" = Option<String>, Query, description = "Only this account's redemptions"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Items a page (default 10)"),
        ("starting_after" = Option<String>, Query, description = "A redemption id: the page after it (older)"),
        ("ending_before" = Option<String>, Query, description = "A redemption id: the page before it (newer)"),
    ),
    responses(
        (status = 200, description = "Redemptions, newest first", body = crate::doc::RedemptionList),
        (status = 400, description = "Bad request", body = crate::doc::Error),
        (status = 401, description = "No or unknown key", body = crate::doc::Error),
    ),
    security(("bearer" = [])))]
pub(crate) async fn list_redemptions(
    State(api): State<Arc<Api>>,
    uri: Uri,
    RawQuery(raw): RawQuery,
) -> Result<Json<List<Value>>, ApiError> {
    let mut allowed = vec!["account"];
    allowed.extend(PAGE_PARAMS);
    let q = Query::parse(raw.as_deref(), &allowed)?;
    let page = Page::of(&q)?;
    let view = api.store.view();
    let prefix = match q.get("account") {
        Some(a) => {
            let mut k = b"q/".to_vec();
            k.extend_from_slice(a.as_bytes());
            k.push(0);
            k
        }
        None => b"Q/".to_vec(),
    };
    let cursor_key = ledger_cursor(&view, &page, &prefix, "e/", "redemption")?;
    let (data, has_more) = page_of(&view, &prefix, Walk::Down, &page, cursor_key, |k, _| {
        Ok(Some(redemption_object(&view.line(seq_at_end(k)?)?)))
    })?;
    Ok(list(&uri, data, has_more))
}

/// A program as the API answers it.
pub(crate) fn program_object(config: &Value) -> Value {
    with_object(config.clone(), "program")
}

/// A page of an in-memory list of objects with ids.
fn page_in_memory(items: Vec<Value>, page: &Page) -> Result<(Vec<Value>, bool), ApiError> {
    let pos = match page.cursor() {
        None => None,
        Some(c) => Some(items.iter().position(|i| i["id"] == c).ok_or_else(|| {
            ApiError::invalid(
                page.cursor_param(),
                format!("No such object in this list: '{c}'"),
            )
        })?),
    };
    let (from, to) = match (pos, page.before.is_some()) {
        (None, _) => (0, items.len()),
        (Some(p), false) => (p + 1, items.len()),
        (Some(p), true) => (0, p),
    };
    let slice = &items[from..to];
    if page.before.is_some() {
        let start = slice.len().saturating_sub(page.limit);
        Ok((slice[start..].to_vec(), start > 0))
    } else {
        Ok((
            slice.iter().take(page.limit).cloned().collect(),
            slice.len() > page.limit,
        ))
    }
}

/// `GET /v1/programs`
#[utoipa::path(get, path = "/v1/programs", tag = "programs",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Items a page (default 10)"),
        ("starting_after" = Option<String>, Query, description = "A program id: the page after it"),
        ("ending_before" = Option<String>, Query, description = "A program id: the page before it"),
    ),
    responses(
        (status = 200, description = "Programs in config order", body = crate::doc::ProgramList),
        (status = 400, description = "Bad request", body = crate::doc::Error),
        (status = 401, description = "No or unknown key", body = crate::doc::Error),
    ),
    security(("bearer" = [])))]
pub(crate) async fn list_programs(
    State(api): State<Arc<Api>>,
    uri: Uri,
    RawQuery(raw): RawQuery,
) -> Result<Json<List<Value>>, ApiError> {
    let q = Query::parse(raw.as_deref(), &PAGE_PARAMS)?;
    let page = Page::of(&q)?;
    let view = api.store.view();
    let programs = api.programs(&view)?;
    let items = programs
        .list
        .iter()
        .map(|(_, c, _)| program_object(c))
        .collect();
    let (data, has_more) = page_in_memory(items, &page)?;
    Ok(list(&uri, data, has_more))
}

/// A program by id, or a 404.
pub(crate) fn program_or_404(programs: &Programs, id: &str) -> Result<Value, ApiError> {
    programs
        .get(id)
        .map(|(_, c, _)| program_object(c))
        .ok_or_else(|| ApiError::missing(format!("No such program: '{id}'")).param("id"))
}

/// `GET /v1/programs/{id}`
#[utoipa::path(get, path = "/v1/programs/{id}", tag = "programs",
    params(("id" = String, Path, description = "The program's id (`prog_…`)")),
    responses(
        (status = 200, description = "The program's current config", body = crate::doc::ProgramObject),
        (status = 401, description = "No or unknown key", body = crate::doc::Error),
        (status = 404, description = "No such program", body = crate::doc::Error),
    ),
    security(("bearer" = [])))]
pub(crate) async fn get_program(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let view = api.store.view();
    let programs = api.programs(&view)?;
    Ok(Json(program_or_404(&programs, &id)?))
}

/// `GET /v1/programs/{id}/rewards`
#[utoipa::path(get, path = "/v1/programs/{id}/rewards", tag = "programs",
    params(
        ("id" = String, Path, description = "The program's id (`prog_…`)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Items a page (default 10)"),
        ("starting_after" = Option<String>, Query, description = "A reward id: the page after it"),
        ("ending_before" = Option<String>, Query, description = "A reward id: the page before it"),
    ),
    responses(
        (status = 200, description = "The program's rewards, in config order", body = crate::doc::RewardList),
        (status = 400, description = "Bad request", body = crate::doc::Error),
        (status = 401, description = "No or unknown key", body = crate::doc::Error),
        (status = 404, description = "No such program", body = crate::doc::Error),
    ),
    security(("bearer" = [])))]
pub(crate) async fn list_rewards(
    State(api): State<Arc<Api>>,
    uri: Uri,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<List<Value>>, ApiError> {
    let q = Query::parse(raw.as_deref(), &PAGE_PARAMS)?;
    let page = Page::of(&q)?;
    let view = api.store.view();
    let programs = api.programs(&view)?;
    let Some((_, config, _)) = programs.get(&id) else {
        return Err(ApiError::missing(format!("No such program: '{id}'")).param("id"));
    };
    let used = view.stock_used()?;
    let items = config["rewards"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| {
                    let rid = r["id"].as_str().unwrap_or_default().to_string();
                    let left = r["stock"]
                        .as_i64()
                        .map(|s| s - used.get(&(id.clone(), rid.clone())).copied().unwrap_or(0));
                    let mut o = with_object(r.clone(), "reward");
                    if let Value::Object(m) = &mut o {
                        m.insert("program".into(), id.clone().into());
                        m.insert("stockLeft".into(), json!(left));
                    }
                    o
                })
                .collect()
        })
        .unwrap_or_default();
    let (data, has_more) = page_in_memory(items, &page)?;
    Ok(list(&uri, data, has_more))
}
