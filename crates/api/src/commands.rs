//! The commands of SPEC section 11: each is a record of section 2 produced to the commands
//! topic; the answer is what the folder wrote for it, once committed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use loyalty_core::time::Timestamp;
use loyalty_store::ApiCommand;
use serde_json::{json, Map, Value};

use crate::reads::{account_object, load_account, program_or_404, redemption_object, transaction};
use crate::{hex, sha256, Api, ApiError};

/// The largest body a command takes.
pub(crate) const MAX_BODY: usize = 1 << 20;

/// Whether a rejection's reason is one of the refusals of sections 2 and 7: a 402 with the
/// reason as its code.
fn is_refusal(reason: &str) -> bool {
    loyalty_core::output::Refusal::ALL
        .iter()
        .any(|r| r.as_str() == reason)
}

/// Reads a body of at most 1 MiB as a JSON object.
async fn json_body(body: Body) -> Result<(Vec<u8>, Map<String, Value>), ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("The body is over {MAX_BODY} bytes"),
        )
    })?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::invalid("body", format!("The body is not JSON: {e}")))?;
    match v {
        Value::Object(m) => Ok((bytes.to_vec(), m)),
        _ => Err(ApiError::invalid("body", "The body must be a JSON object")),
    }
}

/// A required string field, not empty.
fn string(m: &Map<String, Value>, k: &str) -> Result<String, ApiError> {
    match m.get(k) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(ApiError::invalid(k, format!("{k} must not be empty"))),
        None | Some(Value::Null) => {
            Err(ApiError::invalid(k, format!("Missing required param: {k}")))
        }
        Some(_) => Err(ApiError::invalid(k, format!("{k} must be a string"))),
    }
}

/// An optional string field.
fn opt_string(m: &Map<String, Value>, k: &str) -> Result<Option<String>, ApiError> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => string(m, k).map(Some),
    }
}

/// An integer field within `range` (the engine's bound on amounts is 10^15).
fn integer(
    m: &Map<String, Value>,
    k: &str,
    required: bool,
    check: impl Fn(i64) -> bool,
    want: &str,
) -> Result<Option<i64>, ApiError> {
    match m.get(k) {
        None | Some(Value::Null) if !required => Ok(None),
        None | Some(Value::Null) => {
            Err(ApiError::invalid(k, format!("Missing required param: {k}")))
        }
        // A whole number however it is written (`10`, `1e1`, `10.0`), as the engine reads
        // its input; f64 holds every integer up to the bound exactly, and a larger one
        // saturates in the cast, over the bound either way.
        Some(v) => match v
            .as_i64()
            .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
        {
            Some(n) if n.unsigned_abs() > 1_000_000_000_000_000 => Err(ApiError::invalid(
                k,
                format!("{k} must be {want} of at most 10^15 in absolute value"),
            )),
            Some(n) if check(n) => Ok(Some(n)),
            _ => Err(ApiError::invalid(k, format!("{k} must be {want}"))),
        },
    }
}

/// No other fields than these.
fn only(m: &Map<String, Value>, fields: &[&str]) -> Result<(), ApiError> {
    match m.keys().find(|k| !fields.contains(&k.as_str())) {
        Some(k) => Err(ApiError::invalid(
            k.clone(),
            format!("Received unknown parameter: {k}"),
        )),
        None => Ok(()),
    }
}

/// One command to send: what it is, its record's type, data and key, and what it concerns.
struct Command {
    kind: &'static str,
    record_type: &'static str,
    data: Value,
    key: String,
    account: Option<String>,
    program: Option<String>,
}

/// A fresh record id for a command sent without an Idempotency-Key.
fn fresh_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = N.fetch_add(1, Ordering::Relaxed);
    let seed = format!("{nanos}/{n}/{}", std::process::id());
    format!("req_{}", &hex(&sha256(seed.as_bytes()))[..24])
}

/// What an idempotent repeat must match: the method, the path and the body. Given the
/// body's [`canonical_body`], its parameters (as Stripe compares them), not its bytes: a
/// client that serializes the same body again with other spacing or key order is answered
/// the first answer, not a 409.
fn fingerprint(method: &Method, uri: &Uri, body: &[u8]) -> String {
    let mut fp = format!("{method} {}\n", uri.path()).into_bytes();
    fp.extend_from_slice(body);
    hex(&sha256(&fp))
}

/// The body's JSON with every object's keys sorted and no spaces (the bytes themselves if
/// it is not JSON, which a command's body always is by now).
fn canonical_body(body: &[u8]) -> Vec<u8> {
    fn sorted(v: Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut entries: Vec<(String, Value)> =
                    m.into_iter().map(|(k, v)| (k, sorted(v))).collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                Value::Object(entries.into_iter().collect())
            }
            Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
            other => other,
        }
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => serde_json::to_vec(&sorted(v)).unwrap_or_else(|_| body.to_vec()),
        Err(_) => body.to_vec(),
    }
}

/// The record id an Idempotency-Key stands for, or a 400 when the key is not 1 to 255
/// printable characters.
fn idempotent_id(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| (0x20..0x7f).contains(&b)));
    match key {
        Some(k) => Ok(Some(format!(
            "idem_{}",
            &hex(&sha256(format!("idempotency-key\0{k}").as_bytes()))[..32]
        ))),
        None => Err(ApiError::invalid(
            "Idempotency-Key",
            "Idempotency-Key must be 1 to 255 printable characters",
        )),
    }
}

impl Api {
    fn commands(&self) -> Result<&crate::Commands, ApiError> {
        self.commands.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                "This server serves a state read-only (loyalty serve): it takes no commands",
            )
        })
    }

    /// Sends a command and answers with its outcome (or 202 on a timeout).
    async fn send(
        self: &Arc<Api>,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
        cmd: Command,
    ) -> Result<Response, ApiError> {
        let commands = self.commands()?;
        // Commands sent before fingerprints were of the body's parameters were kept with the
        // fingerprint of its bytes: a repeat of one still matches it.
        let bytes_fingerprint = fingerprint(method, uri, body);
        let fingerprint = fingerprint(method, uri, &canonical_body(body));
        let keyed = idempotent_id(headers)?;
        let id = keyed.clone().unwrap_or_else(fresh_id);
        let stored = ApiCommand {
            fingerprint: fingerprint.clone(),
            kind: cmd.kind.to_string(),
            account: cmd.account.clone(),
            program: cmd.program.clone(),
            answer: None,
        };
        // Check and claim under one lock: two requests with one key never both send it
        // as new, nor store two fingerprints.
        let (first, sending) = {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            let known = self.store.view().command(&id)?;
            if let Some(k) = &known {
                if k.fingerprint != fingerprint && k.fingerprint != bytes_fingerprint {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "idempotency_error",
                        "Keys for idempotent requests can only be used with the same \
                         method, path and body as the first request",
                    ));
                }
            } else {
                self.store.put_command(&id, &stored, true)?;
            }
            (known.is_none(), in_flight.insert(id.clone()))
        };
        // Released however the request ends (a client that goes away drops this future).
        let _claim = sending.then(|| Claim(self.clone(), id.clone()));
        let outcome = self
            .deliver_and_wait(commands, &id, &cmd, first, sending)
            .await;
        match outcome? {
            Some((status, body)) => Ok((status, Json(body)).into_response()),
            None => Ok((
                StatusCode::ACCEPTED,
                Json(json!({"object": "command", "id": id, "status": "pending"})),
            )
                .into_response()),
        }
    }

    /// Produces the record (unless it is folded already, or another request is sending
    /// it), then waits for its outcome until the timeout.
    async fn deliver_and_wait(
        self: &Arc<Api>,
        commands: &crate::Commands,
        id: &str,
        cmd: &Command,
        first: bool,
        sending: bool,
    ) -> Result<Option<(StatusCode, Value)>, ApiError> {
        let started = Instant::now();
        let mut committed = commands.committed.clone();
        committed.mark_unchanged();
        // Folded already (a repeat; or a state replayed from the log, which holds the
        // records but not the API's note of them): not sent again.
        let _ = first;
        let folded = self.outcome(id)?.is_some();
        if !folded && sending {
            let view = self.store.view();
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            // Never behind the engine's clock (the record would be late for nothing).
            let created = Timestamp(now).max(view.clock()?.unwrap_or(Timestamp(0)));
            drop(view);
            let record = json!({
                "id": id,
                "type": cmd.record_type,
                "created": created.to_string(),
                "data": cmd.data,
            });
            let value = serde_json::to_vec(&record).map_err(ApiError::internal)?;
            // The sink gives up on its own (the producer's message timeout), and only
            // then: a message still queued could yet be delivered.
            if let Err(why) = commands.sink.submit(cmd.key.clone(), value).await {
                tracing::warn!(
                    command = %id,
                    error = %why,
                    retriable = why.is_retriable(),
                    "cannot send a command"
                );
                return Err(match why {
                    crate::SubmitError::TooLarge(_) => too_large_for_the_broker(),
                    _ => unavailable(),
                });
            }
        }
        loop {
            if let Some(answer) = self.outcome(id)? {
                return Ok(Some(answer));
            }
            let left = commands.timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Ok(None);
            }
            match tokio::time::timeout(left, committed.changed()).await {
                Ok(Ok(())) => {}
                // The folder is gone (the engine stops): the command may still be folded
                // by the next run.
                Ok(Err(_)) | Err(_) => return Ok(None),
            }
        }
    }

    /// A command's answer once folded: status and body; `None` while pending.
    pub(crate) fn outcome(&self, id: &str) -> Result<Option<(StatusCode, Value)>, ApiError> {
        let view = self.store.view();
        let Some(cmd) = view.command(id)? else {
            return Ok(None);
        };
        if let Some((status, body)) = &cmd.answer {
            let status = StatusCode::from_u16(*status).map_err(ApiError::internal)?;
            return Ok(Some((status, body.clone())));
        }
        // Folded: it wrote lines (a refusal too), or it was applied and marked seen.
        let lines = view.record_lines(id)?;
        if lines.is_empty() && !view.is_seen(id)? {
            return Ok(None);
        }
        let programs = self.programs(&view)?;
        if let Some(r) = lines.iter().find(|l| l["kind"] == "rejected") {
            let reason = r["reason"].as_str().unwrap_or("invalid");
            let detail = r["detail"].as_str().unwrap_or_default().to_string();
            // The engine's detail names the field first: `data.to: …`.
            let param = detail
                .split_once(':')
                .and_then(|(f, _)| f.strip_prefix("data."))
                .filter(|f| !f.contains(' '))
                .map(str::to_string);
            let e = if is_refusal(reason) {
                ApiError::new(StatusCode::PAYMENT_REQUIRED, "refusal_error", detail).code(reason)
            } else if reason == "not_enrolled" || reason == "unknown_program" {
                ApiError::missing(detail.clone())
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", detail).code(reason)
            };
            let e = match param {
                Some(p) => e.param(p),
                None => e,
            };
            return Ok(Some(self.keep_answer(id, cmd, e.status, e.body())));
        }
        let event = |t: &str| {
            lines
                .iter()
                .find(|l| l["kind"] == "event" && l["type"] == t)
        };
        if let Some(r) = event("loyalty.redemption.rejected") {
            let reason = r["data"]["reason"].as_str().unwrap_or("not_available");
            let e = ApiError::new(
                StatusCode::PAYMENT_REQUIRED,
                "refusal_error",
                format!("The redemption was refused: {reason}"),
            )
            .code(reason);
            return Ok(Some(self.keep_answer(id, cmd, e.status, e.body())));
        }
        let txs: Vec<&Value> = lines
            .iter()
            .filter(|l| l["kind"] == "transaction")
            .collect();
        let account = || -> Result<Value, ApiError> {
            let id = cmd.account.as_deref().unwrap_or_default();
            let a = load_account(&view, id)?;
            account_object(&view, &programs, &a)
        };
        let body = match cmd.kind.as_str() {
            "enroll" | "qualify" | "tier" => account()?,
            "adjust" => match txs.first().and_then(|t| t["id"].as_str()) {
                Some(t) => transaction(&view, t)?.unwrap_or(Value::Null),
                None => return Err(ApiError::internal(format!("command {id}: no transaction"))),
            },
            "redeem" => match event("loyalty.reward.redeemed") {
                Some(l) => redemption_object(l),
                None => return Err(ApiError::internal(format!("command {id}: no redemption"))),
            },
            "transfer" => {
                let mut out = Vec::new();
                for kind in ["transfer_out", "transfer_in"] {
                    if let Some(t) = txs.iter().find(|t| t["type"] == kind) {
                        if let Some(t) = t["id"].as_str().map(|t| transaction(&view, t)) {
                            out.push(t?.unwrap_or(Value::Null));
                        }
                    }
                }
                json!({"object": "transfer", "transactions": out})
            }
            "program" => program_or_404(&programs, cmd.program.as_deref().unwrap_or_default())?,
            other => return Err(ApiError::internal(format!("command {id}: kind {other}"))),
        };
        Ok(Some(self.keep_answer(id, cmd, StatusCode::OK, body)))
    }

    /// Keeps a command's first answer with it (not on a read-only state: its answers are
    /// made anew, from the same lines).
    fn keep_answer(
        &self,
        id: &str,
        mut cmd: ApiCommand,
        status: StatusCode,
        body: Value,
    ) -> (StatusCode, Value) {
        if self.commands.is_some() {
            cmd.answer = Some((status.as_u16(), body.clone()));
            if let Err(e) = self.store.put_command(id, &cmd, false) {
                tracing::warn!(command = %id, error = %e, "cannot keep a command's answer");
            }
        }
        (status, body)
    }
}

/// A command id being sent by one request; released when that request ends.
struct Claim(Arc<Api>, String);

impl Drop for Claim {
    fn drop(&mut self) {
        self.0
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.1);
    }
}

/// A command whose record the broker will never take (its `max.message.bytes`): a body
/// under the API's 1 MiB whose record, with its envelope, is over the broker's limit.
fn too_large_for_the_broker() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request_error",
        "The command's record is larger than the broker takes: send a smaller body",
    )
}

fn unavailable() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "api_error",
        "The engine cannot take commands now: the broker did not take the command. Send it \
         again with the same Idempotency-Key; it applies once",
    )
}

/// `POST /v1/accounts`
#[utoipa::path(post, path = "/v1/accounts", tag = "accounts",
    request_body = crate::doc::EnrollBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 255 printable characters; a repeat answers the first answer")),
    responses(
        (status = 200, description = "The account (enrolling again answers the existing one)", body = crate::doc::LoyaltyAccount),
        (status = 202, description = "Not folded in time", body = crate::doc::CommandObject),
        (status = 400, description = "Bad request", body = crate::doc::Error),
        (status = 401, description = "No or unknown key", body = crate::doc::Error),
        (status = 403, description = "A read-only key", body = crate::doc::Error),
        (status = 404, description = "Unknown program", body = crate::doc::Error),
        (status = 405, description = "A read-only server", body = crate::doc::Error),
        (status = 409, description = "Idempotency-Key reused with another request", body = crate::doc::Error),
        (status = 413, description = "Body over 1 MiB", body = crate::doc::Error),
        (status = 503, description = "The broker is unreachable", body = crate::doc::Error),
    ),
    security(("bearer" = [])))]
pub(crate) async fn enroll(
    State(api): State<Arc<Api>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    api.commands()?;
    let (bytes, m) = json_body(body).await?;
    only(
        &m,
        &[
            "program",
            "customer",
            "referralCode",
            "birthday",
            "openingBalance",
        ],
    )?;
    let opening = integer(
        &m,
        "openingBalance",
        false,
        |n| n >= 0,
        "an integer of 0 or more",
    )?;
    let program = string(&m, "program")?;
    let customer = string(&m, "customer")?;
    let referral = opt_string(&m, "referralCode")?;
    let birthday = opt_string(&m, "birthday")?;
    if let Some(b) = &birthday {
        let ok = b.len() == 5
            && b.as_bytes()[2] == b'-'
            && b[..2].parse::<u32>().is_ok_and(|m| (1..=12).contains(&m))
            && b[3..].parse::<u32>().is_ok_and(|d| (1..=31).contains(&d));
        if !ok {
            return Err(ApiError::invalid("birthday", "birthday must be \"MM-DD\""));
        }
    }
    // An unknown program is the engine's to say (`unknown_program`, a 404): a program
    // configured a moment ago may still be on its way through the log.
    let mut data = json!({"customer": customer, "program": program});
    if let Some(r) = referral {
        data["referralCode"] = r.into();
    }
    if let Some(b) = birthday {
        data["birthday"] = b.into();
    }
    if let Some(o) = opening {
        data["openingBalance"] = o.into();
    }
    let cmd = Command {
        kind: "enroll",
        record_type: "loyalty.account.enroll",
        data,
        key: customer.clone(),
        account: Some(loyalty_core::ids::account_id(&program, &customer).to_string()),
        program: Some(program),
    };
    api.send(&method, &uri, &headers, &bytes, cmd).await
}

/// The account a command's path names: (customer, program), or a 404.
fn path_account(api: &Api, id: &str) -> Result<(String, String), ApiError> {
    let a = load_account(&api.store.view(), id)?;
    Ok((a.customer.to_string(), a.program.to_string()))
}

/// `POST /v1/accounts/{id}/adjustments`
#[utoipa::path(post, path = "/v1/accounts/{id}/adjustments", tag = "accounts",
    request_body = crate::doc::AdjustBody,
    params(
        ("id" = String, Path, description = "The account's id (`loy_…`)"),
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 printable characters; a repeat answers the first answer"),
    ),
    responses(
        (status = 200, description = "The transaction", body = crate::doc::PointsTransaction),
        (status = 202, description = "Not folded in time", body = crate::doc::CommandObject),
        (status = 400, description = "Bad request", body = crate::doc::Error),
        (status = 401, description = "No or unknown key", body = crate::doc::Error),
        (status = 402, description = "Refused: insufficient_points", body = crate::doc::Error),
        (status = 403, description = "A read-only key", body = crate::doc::Error),
        (status = 404, description = "No such account", body = crate::doc::Error),
        (status = 405, description = "A read-only server", body = crate::doc::Error),
        (status = 409, description = "Idempotency-Key reused with another request", body = crate::doc::Error),
        (status = 413, description = "Body over 1 MiB", body = crate::doc::Error),
        (status = 503, description = "The broker is unreachable", body = crate::doc::Error),
    ),
    security(("bearer" = [])))]
pub(crate) async fn adjust(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    api.commands()?;
    let (bytes, m) = json_body(body).await?;
    only(&m, &["points", "reason"])?;
    let points = integer(&m, "points", true, |n| n != 0, "a non-zero integer")?.unwrap_or(0);
    let reason = string(&m, "reason")?;
    let (customer, program) = path_account(&api, &id)?;
    let cmd = Command {
        kind: "adjust",
        record_type: "loyalty.points.adjust",
        data: json!({"customer": customer, "program": program, "points": points, "reason": reason}),
        key: customer.clone(),
        account: Some(id),
        program: Some(program),
    };
    api.send(&method, &uri, &headers, &bytes, cmd).await
}

/// `POST /v1/accounts/{id}/redemptions`
#[utoipa::path(post, path = "/v1/accounts/{id}/redemptions", tag = "accounts",
    request_body = crate::doc::RedeemBody,
    params(
        ("id" = String, Path, description = "The account's id (`loy_…`)"),
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 printable characters; a repeat answers the first answer"),
    ),
    responses(
        (status = 200, description = "The redemption", body = crate::doc::Redemption),
        (status = 202, description = "Not folded in time", body = crate::doc::CommandObject),
        (status = 400, description = "Bad request", body = crate::doc::Error),
        (status = 401, description = "No or unknown key", body = crate::doc::Error),
        (status = 402, description = "Refused: insufficient_points, not_available, tier_required, out_of_stock or limit_reached", body = crate::doc::Error),
        (status = 403, description = "A read-only key", body = crate::doc::Error),
        (status = 404, description = "No such account", body = crate::doc::Error),
        (status = 405, description = "A read-only server", body = crate::doc::Error),
        (status = 409, description = "Idempotency-Key reused with another request", body = crate::doc::Error),
        (status = 413, description = "Body over 1 MiB", body = crate::doc::Error),
        (status = 503, description = "The broker is unreachable", body = crate::doc::Error),
    ),
    security(("bearer" = [])))]
pub(crate) async fn redeem(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    api.commands()?;
    let (bytes, m) = json_body(body).await?;
    only(&m, &["reward", "quantity"])?;
    let reward = string(&m, "reward")?;
    let quantity = integer(&m, "quantity", false, |n| n >= 1, "an integer of 1 or more")?;
    let (customer, program) = path_account(&api, &id)?;
    let mut data = json!({"customer": customer, "program": program, "reward": reward});
    if let Some(q) = quantity {
        data["quantity"] = q.into();
    }
    let cmd = Command {
        kind: "redeem",
        record_type: "loyalty.redemption.create",
        data,
        key: customer.clone(),
        account: Some(id),
        program: Some(program),
    };
    api.send(&method, &uri, &headers, &bytes, cmd).await
}

/// `POST /v1/accounts/{id}/qualifying_activity`
#[utoipa::path(post, path = "/v1/accounts/{id}/qualifying_activity", tag = "accounts",
    request_body = crate::doc::QualifyBody,
    params(
        ("id" = String, Path, description = "The account's id (`loy_…`)"),
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 printable characters; a repeat answers the first answer"),
    ),
    responses(
        (status = 200, description = "The account", body = crate::doc::LoyaltyAccount),
        (status = 202, description = "Not folded in time", body = crate::doc::CommandObject),
        (status = 400, description = "Bad request", body = crate::doc::Error),
        (status = 401, description = "No or unknown key", body = crate::doc::Error),
        (status = 403, description = "A read-only key", body = crate::doc::Error),
        (status = 404, description = "No such account", body = crate::doc::Error),
        (status = 405, description = "A read-only server", body = crate::doc::Error),
        (status = 409, description = "Idempotency-Key reused with another request", body = crate::doc::Error),
        (status = 413, description = "Body over 1 MiB", body = crate::doc::Error),
        (status = 503, description = "The broker is unreachable", body = crate::doc::Error),
    ),
    security(("bearer" = [])))]
pub(crate) async fn qualify(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    api.commands()?;
    let (bytes, m) = json_body(body).await?;
    only(&m, &["amount", "reason", "reference"])?;
    let amount = integer(&m, "amount", true, |n| n >= 0, "an integer of 0 or more")?.unwrap_or(0);
    let reason = string(&m, "reason")?;
    let reference = opt_string(&m, "reference")?;
    let (customer, program) = path_account(&api, &id)?;
    let mut data =
        json!({"customer": customer, "program": program, "amount": amount, "reason": reason});
    if let Some(r) = reference {
        data["reference"] = r.into();
    }
    let cmd = Command {
        kind: "qualify",
        record_type: "loyalty.qualifying_activity.record",
        data,
        key: customer.clone(),
        account: Some(id),
        program: Some(program),
    };
    api.send(&method, &uri, &headers, &bytes, cmd).await
}

/// `POST /v1/accounts/{id}/tier`
#[utoipa::path(post, path = "/v1/accounts/{id}/tier", tag = "accounts",
    request_body = crate::doc::TierBody,
    params(
        ("id" = String, Path, description = "The account's id (`loy_…`)"),
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 printable characters; a repeat answers the first answer"),
    ),
    responses(
        (status = 200, description = "The account, in the tier set by hand", body = crate::doc::LoyaltyAccount),
        (status = 202, description = "Not folded in time", body = crate::doc::CommandObject),
        (status = 400, description = "Bad request: an unknown tier, a program without tiers, an until not after the command's time", body = crate::doc::Error),
        (status = 401, description = "No or unknown key", body = crate::doc::Error),
        (status = 403, description = "A read-only key", body = crate::doc::Error),
        (status = 404, description = "No such account", body = crate::doc::Error),
        (status = 405, description = "A read-only server", body = crate::doc::Error),
        (status = 409, description = "Idempotency-Key reused with another request", body = crate::doc::Error),
        (status = 413, description = "Body over 1 MiB", body = crate::doc::Error),
        (status = 503, description = "The broker is unreachable", body = crate::doc::Error),
    ),
    security(("bearer" = [])))]
pub(crate) async fn set_tier(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    api.commands()?;
    let (bytes, m) = json_body(body).await?;
    only(&m, &["tier", "until", "reason"])?;
    let tier = string(&m, "tier")?;
    let reason = string(&m, "reason")?;
    let until = opt_string(&m, "until")?;
    if let Some(u) = &until {
        if Timestamp::parse_rfc3339(u).is_none() {
            return Err(ApiError::invalid(
                "until",
                "until must be an RFC 3339 time, such as 2027-01-01T00:00:00Z",
            ));
        }
    }
    let (customer, program) = path_account(&api, &id)?;
    // An unknown tier, a program without tiers and an `until` not after the command's
    // time are the engine's to say (`invalid`, a 400), against the program as it holds
    // when the command is folded.
    let mut data =
        json!({"customer": customer, "program": program, "tier": tier, "reason": reason});
    if let Some(u) = until {
        data["until"] = u.into();
    }
    let cmd = Command {
        kind: "tier",
        record_type: "loyalty.tier.set",
        data,
        key: customer.clone(),
        account: Some(id),
        program: Some(program),
    };
    api.send(&method, &uri, &headers, &bytes, cmd).await
}

/// `POST /v1/transfers`
#[utoipa::path(post, path = "/v1/transfers", tag = "transfers",
    request_body = crate::doc::TransferBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 255 printable characters; a repeat answers the first answer")),
    responses(
        (status = 200, description = "Both transactions, out then in", body = crate::doc::Transfer),
        (status = 202, description = "Not folded in time", body = crate::doc::CommandObject),
        (status = 400, description = "Bad request", body = crate::doc::Error),
        (status = 401, description = "No or unknown key", body = crate::doc::Error),
        (status = 402, description = "Refused: insufficient_points", body = crate::doc::Error),
        (status = 403, description = "A read-only key", body = crate::doc::Error),
        (status = 404, description = "No such program, or a customer without an account in it", body = crate::doc::Error),
        (status = 405, description = "A read-only server", body = crate::doc::Error),
        (status = 409, description = "Idempotency-Key reused with another request", body = crate::doc::Error),
        (status = 413, description = "Body over 1 MiB", body = crate::doc::Error),
        (status = 503, description = "The broker is unreachable", body = crate::doc::Error),
    ),
    security(("bearer" = [])))]
pub(crate) async fn transfer(
    State(api): State<Arc<Api>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    api.commands()?;
    let (bytes, m) = json_body(body).await?;
    only(&m, &["program", "from", "to", "points"])?;
    let program = string(&m, "program")?;
    let from = string(&m, "from")?;
    let to = string(&m, "to")?;
    let points = integer(&m, "points", true, |n| n > 0, "an integer above 0")?.unwrap_or(0);
    if from == to {
        return Err(ApiError::invalid(
            "to",
            "from and to must be two different customers",
        ));
    }
    // An unknown program or a customer without an account is the engine's to say
    // (`unknown_program`, `not_enrolled`: a 404), in log order with what came before.
    let cmd = Command {
        kind: "transfer",
        record_type: "loyalty.points.transfer",
        data: json!({"program": program, "from": from, "to": to, "points": points}),
        key: from.clone(),
        account: Some(loyalty_core::ids::account_id(&program, &from).to_string()),
        program: Some(program),
    };
    api.send(&method, &uri, &headers, &bytes, cmd).await
}

/// `POST /v1/programs`
#[utoipa::path(post, path = "/v1/programs", tag = "programs",
    request_body = crate::doc::ProgramBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 255 printable characters; a repeat answers the first answer")),
    responses(
        (status = 200, description = "The program, as it now holds", body = crate::doc::ProgramObject),
        (status = 202, description = "Not folded in time", body = crate::doc::CommandObject),
        (status = 400, description = "The program does not validate (param names the field)", body = crate::doc::Error),
        (status = 401, description = "No or unknown key", body = crate::doc::Error),
        (status = 403, description = "A read-only key", body = crate::doc::Error),
        (status = 405, description = "A read-only server", body = crate::doc::Error),
        (status = 409, description = "Idempotency-Key reused with another request", body = crate::doc::Error),
        (status = 413, description = "Body over 1 MiB", body = crate::doc::Error),
        (status = 503, description = "The broker is unreachable", body = crate::doc::Error),
    ),
    security(("bearer" = [])))]
pub(crate) async fn update_program(
    State(api): State<Arc<Api>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    api.commands()?;
    let (bytes, m) = json_body(body).await?;
    let text = serde_json::to_string(&Value::Object(m)).map_err(ApiError::internal)?;
    let program = loyalty_core::config::parse_program(&text).map_err(|e| {
        let param = if e.path.is_empty() || e.path == "." {
            "body".to_string()
        } else {
            e.path.trim_start_matches('.').to_string()
        };
        ApiError::invalid(param, e.message.clone())
    })?;
    let data: Value = serde_json::from_str(&text).map_err(ApiError::internal)?;
    let cmd = Command {
        kind: "program",
        record_type: "loyalty.program.updated",
        data,
        key: program.id.to_string(),
        account: None,
        program: Some(program.id.to_string()),
    };
    api.send(&method, &uri, &headers, &bytes, cmd).await
}

/// `GET /v1/commands/{id}`
#[utoipa::path(get, path = "/v1/commands/{id}", tag = "commands",
    params(("id" = String, Path, description = "The command's id, from a 202 answer")),
    responses(
        (status = 200, description = "The command: pending, applied or refused, with its outcome", body = crate::doc::CommandObject),
        (status = 401, description = "No or unknown key", body = crate::doc::Error),
        (status = 404, description = "No such command", body = crate::doc::Error),
    ),
    security(("bearer" = [])))]
pub(crate) async fn get_command(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if api.store.view().command(&id)?.is_none() {
        return Err(ApiError::missing(format!("No such command: '{id}'")).param("id"));
    }
    let (status, outcome) = match api.outcome(&id)? {
        None => ("pending", Value::Null),
        Some((s, body)) if s == StatusCode::OK => ("applied", body),
        Some((_, body)) => ("refused", body),
    };
    Ok(Json(json!({
        "object": "command",
        "id": id,
        "status": status,
        "outcome": outcome,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idempotent repeat is compared by its parameters: spacing and key order (at any
    /// depth) do not matter, a value, a key or the path does.
    #[test]
    fn a_repeat_is_the_same_body_by_its_parameters() {
        let post = Method::POST;
        let path: Uri = "/v1/accounts/loy_1/adjustments".parse().unwrap();
        let fp = |body: &[u8]| fingerprint(&post, &path, &canonical_body(body));
        let first = fp(br#"{"points":10,"reason":"goodwill","m":{"a":1,"b":[1,{"y":2,"x":1}]}}"#);
        assert_eq!(
            first,
            fp(b"{ \"m\": {\"b\": [1, {\"x\": 1, \"y\": 2}], \"a\": 1},\n \"reason\": \"goodwill\", \"points\": 10 }\n")
        );
        for other in [
            &br#"{"points":11,"reason":"goodwill","m":{"a":1,"b":[1,{"y":2,"x":1}]}}"#[..],
            br#"{"points":10,"reason":"goodwill","m":{"a":1,"b":[{"y":2,"x":1},1]}}"#,
            br#"{"points":10,"reason":"goodwill","m":{"a":1,"b":[1,{"y":2,"x":1}]},"z":null}"#,
        ] {
            assert_ne!(first, fp(other), "{}", String::from_utf8_lossy(other));
        }
        let elsewhere: Uri = "/v1/accounts/loy_2/adjustments".parse().unwrap();
        assert_ne!(
            first,
            fingerprint(
                &post,
                &elsewhere,
                &canonical_body(
                    br#"{"points":10,"reason":"goodwill","m":{"a":1,"b":[1,{"y":2,"x":1}]}}"#
                )
            )
        );
        // A command kept before: its fingerprint was of the bytes, which a repeat of the
        // same bytes still gives.
        let bytes = br#"{"reason":"goodwill","points":10}"#;
        assert_eq!(
            fingerprint(&post, &path, bytes),
            hex(&sha256(
                &[b"POST /v1/accounts/loy_1/adjustments\n".as_slice(), bytes].concat()
            ))
        );
    }
}

#[cfg(test)]
mod integer_tests {
    use super::*;

    fn points(v: Value) -> Result<Option<i64>, ApiError> {
        let m: Map<String, Value> = [("points".to_string(), v)].into_iter().collect();
        integer(&m, "points", true, |n| n != 0, "a non-zero integer")
    }

    /// A whole number is read however it is written; a fraction, a string, zero or a value
    /// over the engine's bound is a 400 naming `points`, the bound said when it is the cause.
    #[test]
    fn integers_are_whole_numbers_within_the_bound() {
        for (v, n) in [
            (json!(10), 10),
            (json!(-10), -10),
            (serde_json::from_str::<Value>("1e1").unwrap(), 10),
            (json!(10.0), 10),
            (json!(1_000_000_000_000_000i64), 1_000_000_000_000_000),
        ] {
            assert_eq!(points(v.clone()).ok().flatten(), Some(n), "{v}");
        }
        for (v, bound) in [
            (json!(10.5), false),
            (json!("10"), false),
            (json!(0), false),
            (json!(1_000_000_000_000_001i64), true),
            (serde_json::from_str::<Value>("1e20").unwrap(), true),
            (
                serde_json::from_str::<Value>("18446744073709551615").unwrap(),
                true,
            ),
        ] {
            let e = points(v.clone()).expect_err("refused");
            let body = format!("{e:?}");
            assert!(body.contains("points"), "{v}: {body}");
            assert_eq!(body.contains("10^15"), bound, "{v}: {body}");
        }
    }
}
