//! The HTTP API of an instance of a group (`loyalty run --group`): every instance answers
//! for every account (docs/scale-out.md, section 7).
//!
//! Each log partition an instance serves has an [`Api`] of its own over that partition's
//! store; this front decides which partition a request is for and asks that partition's
//! API, here or at the instance that serves it (one HTTP hop, the caller's headers passed
//! on, with `x-loyalty-partition` naming the partition so the other instance asks its own
//! and nobody else):
//! - a request that names a customer (`POST /v1/accounts`, `POST /v1/transfers` by its
//!   sender, `GET /v1/accounts?customer=`) goes to that customer's partition;
//! - a request that names an account, transaction or command by id is asked of each
//!   partition in turn until one knows it (an id alone does not tell its partition);
//! - programs and the OpenAPI document are the same on every partition: asked of one here;
//!   a program's rewards are asked of every partition, and each reward's `stockLeft` is
//!   the lowest answer (only the partition that owns a reward counts its units; the
//!   others have counted none);
//! - lists that span partitions are gathered from every partition and merged: accounts in
//!   id order, as one instance lists them; transactions and redemptions partition by
//!   partition, each partition's newest first (there is no order of time across
//!   partitions that each partition's own order agrees with).
//!
//! While a partition has no known server (a rebalance), a request for it answers 503 with
//! `Retry-After`.
//!
//! Owns: routing and merging. Must not read a store itself: each partition's [`Api`] does.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use loyalty_store::Store;
use serde_json::Value;
use tower::ServiceExt;

use crate::{router, Api, ApiError, Commands};

/// The header naming the one partition a forwarded request is for.
pub const PARTITION: &str = "x-loyalty-partition";

/// The most items of a partition an `ending_before` page reads to find the partition's
/// last ones.
const WHOLE_MAX: usize = 10_000;

/// Bodies are read whole up to this (a command's limit is 1 MiB; the partition's API
/// answers 413 for more).
const BODY_LIMIT: usize = (1 << 20) + 1;

/// What the front needs to know of the group.
pub trait Partitions: Send + Sync {
    /// The log's partition count.
    fn count(&self) -> i32;
    /// The stores of the partitions this instance serves now.
    fn local(&self) -> BTreeMap<i32, Arc<Store>>;
    /// The URL of the instance serving `p`, when another one does.
    fn owner(&self, p: i32) -> Option<String>;
}

/// The front of an instance's API.
pub struct Front {
    parts: Arc<dyn Partitions>,
    keys: Vec<String>,
    /// The same keys as checked: a request is refused here before it is routed anywhere.
    checked: Vec<crate::Key>,
    commands: Option<Commands>,
    log: Option<crate::LogReader>,
    extra: Router,
    /// Each local partition's API, with the store it was made for.
    apis: Mutex<BTreeMap<i32, (Arc<Store>, Router)>>,
}

impl std::fmt::Debug for Front {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Front").finish_non_exhaustive()
    }
}

/// The router of an instance of a group: every request goes through the front.
pub fn group_router(
    parts: Arc<dyn Partitions>,
    keys: &[String],
    commands: Option<Commands>,
    log: Option<crate::LogReader>,
    extra: Router,
) -> Result<Router, crate::SetupError> {
    let front = Arc::new(Front {
        parts,
        keys: keys.to_vec(),
        checked: crate::parse_keys(keys)?,
        commands,
        log,
        extra: extra.clone().merge(crate::console::routes()),
        apis: Mutex::new(BTreeMap::new()),
    });
    Ok(Router::new()
        .fallback(handle)
        .with_state(front)
        .layer(axum::extract::DefaultBodyLimit::disable()))
}

/// A request, read whole so that it can be asked of several partitions.
#[derive(Clone)]
struct Asked {
    method: Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: Bytes,
}

/// An answer, read whole.
struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// A 404 that says the partition does not know the id (not a 404 of an unknown path).
    fn unknown_here(&self) -> bool {
        self.status == StatusCode::NOT_FOUND
    }

    fn into_response(self) -> Response {
        let mut r = Response::new(Body::from(self.body));
        *r.status_mut() = self.status;
        *r.headers_mut() = self.headers;
        r
    }
}

fn unavailable_now(why: &str) -> Response {
    unavailable(why.to_string())
}

fn unavailable(why: String) -> Response {
    let mut r = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "api_error", why).into_response();
    r.headers_mut()
        .insert("retry-after", HeaderValue::from_static("1"));
    r
}

async fn handle(State(front): State<Arc<Front>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(body) = to_bytes(body, BODY_LIMIT).await else {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "The request body is over 1 MiB",
        )
        .into_response();
    };
    let asked = Asked {
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
        body,
    };
    let path = asked.uri.path().to_string();
    if let Some(refused) = crate::key_refusal(&front.checked, &path, &asked.headers, &asked.method)
    {
        return refused.into_response();
    }
    if !path.starts_with("/v1/") {
        return front
            .extra
            .clone()
            .oneshot(asked.request())
            .await
            .into_response();
    }
    // A request another instance forwarded for one partition.
    if let Some(p) = asked
        .headers
        .get(PARTITION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
    {
        return match front.local_api(p) {
            Some(api) => api.oneshot(asked.request()).await.into_response(),
            None => unavailable(format!("partition {p} is not served here (any more)")),
        };
    }
    match front.route(&asked).await {
        Ok(r) => r,
        Err(r) => r,
    }
}

impl Asked {
    fn request(&self) -> Request {
        let mut r = Request::new(Body::from(self.body.clone()));
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.headers_mut() = self.headers.clone();
        r
    }

    fn query(&self) -> Vec<(String, String)> {
        serde_urlencoded::from_str(self.uri.query().unwrap_or("")).unwrap_or_default()
    }

    fn param(&self, name: &str) -> Option<String> {
        self.query()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// The same request with its query's `set` parameters replaced (`None` removes one).
    fn with_query(&self, set: &[(&str, Option<String>)]) -> Asked {
        let mut q: Vec<(String, String)> = self
            .query()
            .into_iter()
            .filter(|(k, _)| !set.iter().any(|(s, _)| s == k))
            .collect();
        for (k, v) in set {
            if let Some(v) = v {
                q.push((k.to_string(), v.clone()));
            }
        }
        let mut out = self.clone();
        let query = serde_urlencoded::to_string(&q).unwrap_or_default();
        let pq = if query.is_empty() {
            self.uri.path().to_string()
        } else {
            format!("{}?{query}", self.uri.path())
        };
        if let Ok(uri) = pq.parse() {
            out.uri = uri;
        }
        out
    }
}

impl Front {
    /// The API of a partition this instance serves now.
    fn local_api(&self, p: i32) -> Option<Router> {
        let store = self.parts.local().get(&p)?.clone();
        let mut apis = self.apis.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((s, r)) = apis.get(&p) {
            if Arc::ptr_eq(s, &store) {
                return Some(r.clone());
            }
        }
        let mut api = Api::new(store.clone(), &self.keys, self.commands.clone()).ok()?;
        api.lenient_cursors = true;
        api.log = self.log.clone();
        let r = router(Arc::new(api), Router::new());
        apis.insert(p, (store, r.clone()));
        Some(r)
    }

    /// Asks partition `p`, here or where it is served.
    async fn ask(&self, p: i32, asked: &Asked) -> Result<Answer, Response> {
        if let Some(api) = self.local_api(p) {
            let r = api.oneshot(asked.request()).await.into_response();
            let (parts, body) = r.into_parts();
            let body = to_bytes(body, usize::MAX)
                .await
                .map_err(|e| unavailable(format!("partition {p}: {e}")))?;
            return Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            });
        }
        let Some(url) = self.parts.owner(p) else {
            return Err(unavailable(format!(
                "partition {p} has no instance serving it right now (a rebalance)"
            )));
        };
        forward(&url, p, asked)
            .await
            .map_err(|e| unavailable(format!("partition {p} at {url}: {e}")))
    }

    async fn route(&self, asked: &Asked) -> Result<Response, Response> {
        // The lists gathered here pass their own limits on: a wrong one is refused first,
        // as one instance refuses it.
        if let Some(l) = asked.param("limit") {
            if !l.parse::<usize>().is_ok_and(|n| (1..=100).contains(&n)) {
                return Err(ApiError::invalid(
                    "limit",
                    format!("limit must be an integer from 1 to 100, not {l:?}"),
                )
                .into_response());
            }
        }
        let segs: Vec<&str> = asked.uri.path().trim_matches('/').split('/').collect();
        let by_customer = |c: Option<String>| c.map(|c| self.partition_of(&c));
        let body_field = |f: &str| -> Option<String> {
            serde_json::from_slice::<Value>(&asked.body)
                .ok()?
                .get(f)?
                .as_str()
                .map(str::to_string)
        };
        let get = asked.method == Method::GET;
        let one = match (segs.as_slice(), get) {
            (["v1", "accounts"], false) => by_customer(body_field("customer")),
            (["v1", "transfers"], false) => by_customer(body_field("from")),
            // A dry run goes where its record would: the partition of its customer (the
            // sender of a transfer, the referee of a referral), as the sequencer routes it.
            (["v1", "simulate"], false) => by_customer(
                loyalty_core::envelope::parse(&asked.body)
                    .ok()
                    .and_then(|r| r.home_customer().map(str::to_string)),
            ),
            (["v1", "accounts"], true) => by_customer(asked.param("customer")),
            _ => None,
        };
        if let Some(p) = one {
            return Ok(self.ask(p, asked).await?.into_response());
        }
        match (segs.as_slice(), get) {
            (["v1", "accounts", _, ..], _)
            | (["v1", "points_transactions", _], true)
            | (["v1", "commands", _], true) => self.probe(asked).await,
            (["v1", "points_transactions"] | ["v1", "redemptions"], true)
                if asked.param("account").is_some() =>
            {
                // A list answers for an account it does not hold too (empty): ask the
                // partition that holds the account.
                let account = asked.param("account").unwrap_or_default();
                let p = self.locate(&account, asked).await?;
                Ok(self.ask(p, asked).await?.into_response())
            }
            (["v1", "accounts"], true) => self.gather_accounts(asked).await,
            (["v1", "points_transactions"] | ["v1", "redemptions"], true) => {
                self.gather_partitions(asked).await
            }
            (["v1", "programs", _, "rewards"], true) => self.gather_rewards(asked).await,
            (["v1", "programs", _, "stats"], true) => self.gather_stats(asked).await,
            // Programs, the OpenAPI document, a program update (every partition reads it
            // from the log), and anything else: one partition, here when one is.
            _ => {
                let p = self.parts.local().keys().next().copied().unwrap_or(0);
                Ok(self.ask(p, asked).await?.into_response())
            }
        }
    }

    fn partition_of(&self, customer: &str) -> i32 {
        loyalty_core::partition::of(customer.as_bytes(), self.parts.count().max(1) as u32) as i32
    }

    /// A program's rewards: the same list from every partition, each reward's `stockLeft`
    /// the lowest of their answers (the owner's count; the others have counted none).
    async fn gather_rewards(&self, asked: &Asked) -> Result<Response, Response> {
        let mut merged: Option<Value> = None;
        for p in 0..self.parts.count() {
            let (mut list, data, _) = self.page(p, asked).await?;
            let Some(m) = merged.as_mut() else {
                list["data"] = Value::Array(data);
                merged = Some(list);
                continue;
            };
            let theirs: BTreeMap<String, i64> = data
                .iter()
                .filter_map(|r| Some((r["id"].as_str()?.to_string(), r["stockLeft"].as_i64()?)))
                .collect();
            if let Some(ours) = m["data"].as_array_mut() {
                for o in ours.iter_mut() {
                    let id = o["id"].as_str().unwrap_or_default();
                    if let (Some(a), Some(b)) = (o["stockLeft"].as_i64(), theirs.get(id)) {
                        o["stockLeft"] = Value::from(a.min(*b));
                    }
                }
            }
        }
        Ok((StatusCode::OK, axum::Json(merged.unwrap_or(Value::Null))).into_response())
    }

    /// A program's statistics: each partition counts its own members and ledger, so the
    /// numbers add up (days by date).
    async fn gather_stats(&self, asked: &Asked) -> Result<Response, Response> {
        let mut merged: Option<Value> = None;
        let mut days: BTreeMap<String, BTreeMap<String, i128>> = BTreeMap::new();
        for p in 0..self.parts.count() {
            let a = self.ask(p, asked).await?;
            if a.status != StatusCode::OK {
                return Err(a.into_response());
            }
            let theirs = a.json().unwrap_or(Value::Null);
            for d in theirs["days"].as_array().into_iter().flatten() {
                let Some(date) = d["date"].as_str() else {
                    continue;
                };
                let day = days.entry(date.to_string()).or_default();
                for (k, v) in d.as_object().into_iter().flatten() {
                    if let Some(n) = v.as_i64() {
                        *day.entry(k.clone()).or_default() += i128::from(n);
                    }
                }
            }
            let Some(m) = merged.as_mut() else {
                merged = Some(theirs);
                continue;
            };
            for k in ["members", "atRisk", "pointsOutstanding"] {
                let sum = m[k].as_i64().unwrap_or(0) + theirs[k].as_i64().unwrap_or(0);
                m[k] = Value::from(sum);
            }
            for (tier, n) in theirs["membersByTier"].as_object().into_iter().flatten() {
                let sum = m["membersByTier"][tier].as_i64().unwrap_or(0) + n.as_i64().unwrap_or(0);
                m["membersByTier"][tier] = Value::from(sum);
            }
        }
        let mut merged = merged.unwrap_or(Value::Null);
        merged["days"] = days
            .into_iter()
            .map(|(date, counts)| {
                let mut o = serde_json::Map::new();
                o.insert("date".into(), Value::from(date));
                for (k, v) in counts {
                    o.insert(k, serde_json::json!(v));
                }
                Value::Object(o)
            })
            .collect();
        Ok((StatusCode::OK, axum::Json(merged)).into_response())
    }

    /// Asks each partition in turn; the first that knows the id answers.
    async fn probe(&self, asked: &Asked) -> Result<Response, Response> {
        let mut last = None;
        let mut unavailable = None;
        for p in self.order() {
            let a = match self.ask(p, asked).await {
                Ok(a) => a,
                // That partition may hold it: the answer is 503 unless another does.
                Err(r) => {
                    unavailable.get_or_insert(r);
                    continue;
                }
            };
            if !a.unknown_here() {
                return Ok(a.into_response());
            }
            last = Some(a);
        }
        if let Some(r) = unavailable {
            return Err(r);
        }
        Ok(last.map_or_else(
            || ApiError::missing("No such object").into_response(),
            Answer::into_response,
        ))
    }

    /// The partition that holds an account (the first partition here when none does:
    /// its answer for an unknown account is the one a lone instance gives).
    async fn locate(&self, account: &str, asked: &Asked) -> Result<i32, Response> {
        let mut get = asked.clone();
        get.method = Method::GET;
        get.body = Bytes::new();
        let path = format!("/v1/accounts/{}", urlencode(account));
        get.uri = path.parse().map_err(|_| {
            ApiError::missing(format!("No such account: '{account}'")).into_response()
        })?;
        let mut unavailable = None;
        for p in self.order() {
            match self.ask(p, &get).await {
                Ok(a) if a.status == StatusCode::OK => return Ok(p),
                Ok(a) if a.unknown_here() => {}
                Ok(a) => return Err(a.into_response()),
                Err(r) => {
                    unavailable.get_or_insert(r);
                }
            }
        }
        match unavailable {
            Some(r) => Err(r),
            None => Ok(self.order().first().copied().unwrap_or(0)),
        }
    }

    /// Local partitions first, then the others, each once.
    fn order(&self) -> Vec<i32> {
        let local: Vec<i32> = self.parts.local().keys().copied().collect();
        let rest = (0..self.parts.count()).filter(|p| !local.contains(p));
        local.iter().copied().chain(rest).collect()
    }

    /// `GET /v1/accounts` across partitions: each partition's page (a cursor from another
    /// partition is taken as a position in id order), merged in id order.
    async fn gather_accounts(&self, asked: &Asked) -> Result<Response, Response> {
        let limit: usize = asked
            .param("limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(10);
        let before = asked.param("ending_before").is_some();
        let mut items: Vec<Value> = Vec::new();
        let mut more = false;
        let mut template = None;
        for p in 0..self.parts.count() {
            let (list, data, has_more) = self.page(p, asked).await?;
            more |= has_more;
            items.extend(data);
            template.get_or_insert(list);
        }
        items.sort_by(|x, y| x["id"].as_str().cmp(&y["id"].as_str()));
        if items.len() > limit {
            more = true;
            if before {
                items.drain(..items.len() - limit);
            } else {
                items.truncate(limit);
            }
        }
        Ok(list_response(template, items, more))
    }

    /// Transactions or redemptions across partitions: partition 0's list, then partition
    /// 1's, and so on, each newest first. A cursor is found in its partition first.
    async fn gather_partitions(&self, asked: &Asked) -> Result<Response, Response> {
        let limit: usize = asked
            .param("limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(10);
        let after = asked.param("starting_after");
        let before = asked.param("ending_before");
        let count = self.parts.count();
        // The partition of the cursor: the one whose page for it is not a 400.
        let mut start = 0;
        if after.is_some() || before.is_some() {
            let mut found = None;
            let mut unavailable = None;
            let mut refused = None;
            for p in self.order() {
                match self.ask(p, asked).await {
                    Ok(a) if a.status == StatusCode::OK => {
                        found = Some(p);
                        break;
                    }
                    // A partition that does not hold the cursor says so with a 400.
                    Ok(a) if a.status == StatusCode::BAD_REQUEST => {
                        refused.get_or_insert(a);
                    }
                    Ok(a) => return Ok(a.into_response()),
                    Err(r) => {
                        unavailable.get_or_insert(r);
                    }
                }
            }
            match (found, unavailable, refused) {
                (Some(p), _, _) => start = p,
                (None, Some(r), _) => return Err(r),
                (None, None, Some(a)) => return Ok(a.into_response()),
                (None, None, None) => {
                    return Err(unavailable_now("no partition answered"));
                }
            }
        }
        let fresh = asked.with_query(&[("starting_after", None), ("ending_before", None)]);
        let mut template = None;
        if before.is_some() {
            // Backwards: the cursor's partition, then the ends of the partitions before it.
            let (list, mut items, mut more) = self.page(start, asked).await?;
            template = Some(list);
            let mut p = start;
            while items.len() < limit && p > 0 {
                p -= 1;
                let mut tail = self.whole(p, &fresh).await?;
                let take = (limit - items.len()).min(tail.len());
                let rest = tail.split_off(tail.len() - take);
                more |= !tail.is_empty();
                items.splice(0..0, rest);
            }
            // Anything before the page: what the partitions before `p` hold.
            for q in 0..p {
                if more {
                    break;
                }
                more = self.any(q, &fresh).await?;
            }
            return Ok(list_response(template, items, more));
        }
        let mut items: Vec<Value> = Vec::new();
        let mut more = false;
        let mut p = start;
        let mut q = asked.clone();
        while p < count {
            let want = limit - items.len();
            let page = q.with_query(&[("limit", Some((want.max(1)).to_string()))]);
            let (list, data, has_more) = self.page(p, &page).await?;
            template.get_or_insert(list);
            if want == 0 {
                more = !data.is_empty();
                break;
            }
            items.extend(data);
            if items.len() >= limit {
                if has_more {
                    more = true;
                    break;
                }
                // Full: whether anything follows is what the next partitions hold.
                p += 1;
                while p < count && !more {
                    more = self.any(p, &fresh).await?;
                    p += 1;
                }
                break;
            }
            p += 1;
            q = fresh.clone();
        }
        Ok(list_response(template, items, more))
    }

    /// One partition's page of a list: the answer without its items, the items, and
    /// `has_more`. Any other answer than a list is the request's answer.
    async fn page(&self, p: i32, asked: &Asked) -> Result<(Value, Vec<Value>, bool), Response> {
        let a = self.ask(p, asked).await?;
        if a.status != StatusCode::OK {
            return Err(a.into_response());
        }
        let mut list = a.json().unwrap_or(Value::Null);
        let more = list["has_more"].as_bool().unwrap_or(false);
        let data = list["data"]
            .as_array_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        Ok((list, data, more))
    }

    /// Whether a partition's list (the request's filters, no cursor) holds anything.
    async fn any(&self, p: i32, fresh: &Asked) -> Result<bool, Response> {
        let probe = fresh.with_query(&[("limit", Some("1".into()))]);
        Ok(!self.page(p, &probe).await?.1.is_empty())
    }

    /// Every item of a partition's list, in its order (an `ending_before` page that
    /// reaches back into it needs its last items), up to [`WHOLE_MAX`] items.
    async fn whole(&self, p: i32, asked: &Asked) -> Result<Vec<Value>, Response> {
        let mut out: Vec<Value> = Vec::new();
        loop {
            if out.len() >= WHOLE_MAX {
                return Err(ApiError::invalid(
                    "ending_before",
                    format!(
                        "in a group, a page before this cursor reaches back into partition \
                         {p}, which lists more than {WHOLE_MAX} items: page forward from the \
                         start instead"
                    ),
                )
                .into_response());
            }
            let cursor = out
                .last()
                .and_then(|v| v["id"].as_str())
                .map(str::to_string);
            let page =
                asked.with_query(&[("limit", Some("100".into())), ("starting_after", cursor)]);
            let (_, data, more) = self.page(p, &page).await?;
            out.extend(data);
            if !more {
                return Ok(out);
            }
        }
    }
}

/// A path segment, percent-encoded.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn list_response(template: Option<Value>, items: Vec<Value>, more: bool) -> Response {
    let mut list = template.unwrap_or_else(|| serde_json::json!({"object": "list"}));
    list["data"] = Value::Array(items);
    list["has_more"] = Value::Bool(more);
    (StatusCode::OK, axum::Json(list)).into_response()
}

/// Sends the request to the instance at `url`, for partition `p`.
async fn forward(url: &str, p: i32, asked: &Asked) -> Result<Answer, String> {
    let base: axum::http::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    let host = base.host().ok_or("a URL without a host")?.to_string();
    let port = base.port_u16().unwrap_or(80);
    let stream = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .map_err(|_| "connect timed out".to_string())?
    .map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = asked.request();
    let pq = asked
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_string();
    *req.uri_mut() = pq.parse().map_err(|e| format!("{e}"))?;
    let h = req.headers_mut();
    h.insert(PARTITION, HeaderValue::from(p));
    if let Ok(v) = HeaderValue::from_str(&format!("{host}:{port}")) {
        h.insert(axum::http::header::HOST, v);
    }
    let r = tokio::time::timeout(Duration::from_secs(60), sender.send_request(req))
        .await
        .map_err(|_| "no answer in 60 s".to_string())?
        .map_err(|e| e.to_string())?;
    let (parts, body) = r.into_parts();
    let body = to_bytes(Body::new(body), usize::MAX)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}
