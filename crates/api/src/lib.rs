//! The HTTP API (SPEC section 11): Stripe-style reads of the state the engine folded, and
//! member commands that go through the log like every other record.
//!
//! Reads come from one RocksDB snapshot each ([`loyalty_store::View`]), through the
//! indexes the store writes in the same batch as the state, so a read reflects every batch
//! committed and a page never mixes two states. A command is produced to the commands
//! topic ([`Submit`]), and its answer is what the folder wrote for it (the store's `u/`
//! index), once a commit shows it applied ([`Commands::committed`]).
//!
//! Owns: routes, keys, errors, paging, the OpenAPI document. Must not know Kafka (the
//! binary gives it a [`Submit`]) nor the store's layout (it reads through `View`).

mod commands;
pub mod console;
mod doc;
mod error;
mod explain;
pub mod front;
mod reads;

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use loyalty_core::config::Program;
use loyalty_store::Store;
use sha2::{Digest, Sha256};

pub use doc::openapi_json;
pub use error::ApiError;

/// Sends a command record to the commands topic.
pub trait Submit: Send + Sync + 'static {
    /// Produces `value` with message key `key`; resolves once the broker acknowledged it.
    fn submit(
        &self,
        key: String,
        value: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<(), SubmitError>> + Send>>;
}

/// Why a command record was not sent. Either way the request's answer is 503
/// `service_unavailable` and nothing was written: the command may be sent again with the
/// same idempotency key.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The broker may yet take it: unreachable, not acknowledging within the producer's
    /// timeout, a full queue, a leader being elected.
    #[error("the broker did not take the command record yet: {0}")]
    Retriable(String),
    /// No retry mends it: the broker refuses the record (too large, not authorised), or
    /// the producer is gone.
    #[error("the command record cannot be sent: {0}")]
    Fatal(String),
    /// The record is larger than the broker (or the producer) takes: the same body can never
    /// be sent, and the request's answer is 413 instead of 503.
    #[error("the command record is too large for the broker: {0}")]
    TooLarge(String),
}

impl SubmitError {
    /// Whether sending the same record again may succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(self, SubmitError::Retriable(_))
    }
}

/// What the API needs to take commands (absent in `loyalty serve`).
#[derive(Clone)]
pub struct Commands {
    /// Where command records go.
    pub sink: Arc<dyn Submit>,
    /// Bumped after every batch the folder commits.
    pub committed: tokio::sync::watch::Receiver<u64>,
    /// How long a command may take before the answer is 202 (`--command-timeout-ms`).
    pub timeout: Duration,
    /// How far ahead of the wall clock a record's `created` may be (`--max-skew-secs`): a
    /// simulated record further ahead is refused as the engine would refuse it at entry.
    /// Without commands (`loyalty serve`), the engine's default, 300 s.
    pub max_skew: Duration,
}

/// An API key as kept: its digest and what it may do.
pub(crate) struct Key {
    digest: [u8; 32],
    write: bool,
}

/// The API's errors at start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A key that is neither `sk_` nor `rk_`.
    #[error("API key #{0} begins with neither sk_ nor rk_")]
    KeyPrefix(usize),
    /// No key at all.
    #[error("no API key given (--api-keys or LOYALTY_API_KEYS)")]
    NoKey,
    /// The address cannot be served.
    #[error("cannot serve the HTTP API on {addr}: {why}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        why: String,
    },
}

/// The programs of the state, parsed once per change of `m/programs`.
pub(crate) struct Programs {
    /// In config order: id, the config as JSON, the parsed program.
    pub list: Vec<(String, serde_json::Value, Arc<Program>)>,
}

impl Programs {
    pub(crate) fn get(&self, id: &str) -> Option<&(String, serde_json::Value, Arc<Program>)> {
        self.list.iter().find(|(p, _, _)| p == id)
    }
}

/// The HTTP API over a state.
pub struct Api {
    store: Arc<Store>,
    keys: Vec<Key>,
    commands: Option<Commands>,
    programs: Mutex<Option<(Vec<u8>, Arc<Programs>)>>,
    /// Command ids being sent by a request now (a concurrent repeat waits instead).
    in_flight: Mutex<HashSet<String>>,
    /// Whether a list's cursor may name an item this state does not hold (taken as a
    /// position in the list's order): an instance of a group asks every partition with
    /// the cursor of one ([`front`]).
    pub lenient_cursors: bool,
    /// Reads the engine's log (for `POST /v1/backtest`), when this server can.
    pub log: Option<LogReader>,
}

/// Reads the engine's whole log now, handing each record (an envelope's JSON) to the
/// callback in log order.
pub type LogReader =
    Arc<dyn Fn(&mut dyn FnMut(&[u8])) -> Result<(), LogReadError> + Send + Sync + 'static>;

/// Why the log could not be read whole (a backtest is then answered 503
/// `service_unavailable`).
#[derive(Debug, thiserror::Error)]
#[error("the log cannot be read: {why}")]
pub struct LogReadError {
    /// What went wrong, as the reader says it (the broker's error, or the record that
    /// could not be decoded).
    pub why: String,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("keys", &self.keys.len())
            .field("commands", &self.commands.is_some())
            .finish()
    }
}

/// What a presented key may do: `None` when it is no key of ours, else whether it may
/// write. Every key is compared, each in constant time (digests of equal length, every
/// byte looked at), so the time taken tells nothing of the keys.
fn authorize(keys: &[Key], presented: &str) -> Option<bool> {
    let d = sha256(presented.as_bytes());
    let mut found: Option<bool> = None;
    for k in keys {
        let diff = k
            .digest
            .iter()
            .zip(d.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff == 0 {
            found = Some(k.write);
        }
    }
    found
}

/// The keys as kept (`sk_…` read and write, `rk_…` read only), or why they are refused.
pub(crate) fn parse_keys(keys: &[String]) -> Result<Vec<Key>, SetupError> {
    let keys: Vec<Key> = keys
        .iter()
        .filter(|k| !k.is_empty())
        .enumerate()
        .map(|(i, k)| {
            let write = if k.starts_with("sk_") {
                true
            } else if k.starts_with("rk_") {
                false
            } else {
                return Err(SetupError::KeyPrefix(i + 1));
            };
            Ok(Key {
                digest: sha256(k.as_bytes()),
                write,
            })
        })
        .collect::<Result<_, _>>()?;
    if keys.is_empty() {
        return Err(SetupError::NoKey);
    }
    Ok(keys)
}

/// The SHA-256 of a text.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Api {
    /// An API over `store` with these keys (`sk_…` read and write, `rk_…` read only);
    /// commands are taken when `commands` is given.
    pub fn new(
        store: Arc<Store>,
        keys: &[String],
        commands: Option<Commands>,
    ) -> Result<Api, SetupError> {
        Ok(Api {
            store,
            keys: parse_keys(keys)?,
            commands,
            programs: Mutex::new(None),
            in_flight: Mutex::new(HashSet::new()),
            lenient_cursors: false,
            log: None,
        })
    }

    /// The state's programs (parsed again only when they changed).
    pub(crate) fn programs(
        &self,
        view: &loyalty_store::View<'_>,
    ) -> Result<Arc<Programs>, ApiError> {
        let raw = view.programs_raw()?.unwrap_or_default();
        let mut cache = self.programs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((bytes, programs)) = cache.as_ref() {
            if *bytes == raw {
                return Ok(programs.clone());
            }
        }
        let mut list = Vec::new();
        if !raw.is_empty() {
            for (id, text) in loyalty_store::View::parse_programs(&raw)? {
                let json: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| ApiError::internal(format!("program {id}: {e}")))?;
                let parsed = loyalty_core::config::parse_program(&text)
                    .map_err(|e| ApiError::internal(format!("program {id}: {e}")))?;
                list.push((id, json, Arc::new(parsed)));
            }
        }
        let programs = Arc::new(Programs { list });
        *cache = Some((raw, programs.clone()));
        Ok(programs)
    }
}

/// Checks the key of every `/v1/` request; commands need an `sk_` key.
async fn authenticate(State(api): State<Arc<Api>>, req: Request, next: Next) -> Response {
    match key_refusal(&api.keys, req.uri().path(), req.headers(), req.method()) {
        Some(refused) => refused.into_response(),
        None => next.run(req).await,
    }
}

/// Why a request may not pass with the key it presents, if it may not: every `/v1/` path
/// needs a key of ours, and a command (POST) an `sk_` one.
/// The POST paths an `rk_` key may call: reads that take a body.
const READS_BY_POST: [&str; 2] = ["/v1/simulate", "/v1/backtest"];

pub(crate) fn key_refusal(
    keys: &[Key],
    path: &str,
    headers: &axum::http::HeaderMap,
    method: &Method,
) -> Option<ApiError> {
    if !path.starts_with("/v1/") && path != "/v1" {
        return None;
    }
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or(""));
    // The scheme's name is case-insensitive (RFC 9110, section 11.1).
    let presented = header.and_then(|v| {
        let (scheme, key) = v.trim_start().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
    });
    let Some(presented) = presented else {
        return Some(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            if header.is_some() {
                "The Authorization header is not a bearer token: send Authorization: Bearer KEY"
            } else {
                "No API key provided: send Authorization: Bearer KEY"
            },
        ));
    };
    match authorize(keys, presented) {
        None => Some(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "Invalid API key provided",
        )),
        // A dry run and a backtest are reads, sent as POST for their bodies.
        Some(false) if *method == Method::POST && !READS_BY_POST.contains(&path) => {
            Some(ApiError::new(
                StatusCode::FORBIDDEN,
                "permission_error",
                "This key is read-only (rk_): commands need a secret key (sk_)",
            ))
        }
        Some(_) => None,
    }
}

/// Every route of SPEC section 11; `extra` (health and metrics) is served beside them
/// without a key.
pub fn router(api: Arc<Api>, extra: Router) -> Router {
    let v1 = Router::new()
        .route(
            "/v1/accounts",
            get(reads::list_accounts).post(commands::enroll),
        )
        .route("/v1/accounts/{id}", get(reads::get_account))
        .route("/v1/accounts/{id}/balance", get(reads::get_balance))
        .route("/v1/accounts/{id}/adjustments", post(commands::adjust))
        .route("/v1/accounts/{id}/tier", post(commands::set_tier))
        .route("/v1/accounts/{id}/redemptions", post(commands::redeem))
        .route(
            "/v1/accounts/{id}/qualifying_activity",
            post(commands::qualify),
        )
        .route("/v1/points_transactions", get(reads::list_transactions))
        .route("/v1/points_transactions/{id}", get(reads::get_transaction))
        .route("/v1/redemptions", get(reads::list_redemptions))
        .route("/v1/transfers", post(commands::transfer))
        .route(
            "/v1/programs",
            get(reads::list_programs).post(commands::update_program),
        )
        .route("/v1/programs/{id}", get(reads::get_program))
        .route("/v1/programs/{id}/rewards", get(reads::list_rewards))
        .route("/v1/programs/{id}/stats", get(explain::program_stats))
        .route("/v1/accounts/{id}/lots", get(explain::list_lots))
        .route("/v1/simulate", post(explain::simulate))
        .route("/v1/backtest", post(explain::backtest))
        .route("/v1/commands/{id}", get(commands::get_command))
        .route("/v1/openapi.json", get(doc::serve_openapi))
        .fallback(not_found)
        .with_state(api.clone());
    v1.merge(extra)
        .merge(console::routes())
        .layer(axum::middleware::from_fn_with_state(api, authenticate))
        .layer(axum::middleware::from_fn(error_shape))
        // Bodies are read by the handlers with a limit of their own (a 413 in the API's
        // shape), not by axum's default limit.
        .layer(axum::extract::DefaultBodyLimit::disable())
}

async fn not_found(req: Request) -> ApiError {
    ApiError::missing(format!(
        "Unrecognized request URL ({} {})",
        req.method(),
        req.uri().path()
    ))
}

/// Gives every error answer the API's shape: axum's own (a 405 with its `Allow` header, a
/// path that does not decode) are plain text.
async fn error_shape(req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let res = next.run(req).await;
    let status = res.status();
    let json = res
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if json || !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let allow = res.headers().get(axum::http::header::ALLOW).cloned();
    let (kind, message) = if status == StatusCode::METHOD_NOT_ALLOWED {
        (
            "invalid_request_error",
            format!("{method} is not allowed on {path}"),
        )
    } else if status.is_server_error() {
        ("api_error", format!("The request to {path} failed"))
    } else {
        let body = axum::body::to_bytes(res.into_body(), 64 * 1024)
            .await
            .unwrap_or_default();
        (
            "invalid_request_error",
            String::from_utf8_lossy(&body).trim().to_string(),
        )
    };
    // A 500 from below (none is expected) is still an answer, never a dropped connection.
    let status = if status == StatusCode::INTERNAL_SERVER_ERROR {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        status
    };
    let mut out = ApiError::new(status, kind, message).into_response();
    if let Some(a) = allow {
        out.headers_mut().insert(axum::http::header::ALLOW, a);
    }
    out
}

/// A running server: dropping it (or [`Server::stop`]) stops it and waits for its thread.
#[derive(Debug)]
pub struct Server {
    /// The address bound.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Stops serving (requests under way are finished) and releases what the routes hold.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Serves `app` on `addr` from a thread of its own (a runtime of two workers) until the
/// returned [`Server`] is stopped or dropped.
pub fn serve(addr: &str, app: Router) -> Result<Server, SetupError> {
    let fail = |why: String| SetupError::Listen {
        addr: addr.to_string(),
        why,
    };
    let listener = std::net::TcpListener::bind(addr).map_err(|e| fail(e.to_string()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| fail(e.to_string()))?;
    let bound = listener.local_addr().map_err(|e| fail(e.to_string()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("http")
        .enable_all()
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("http-api".into())
        .spawn(move || {
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "HTTP listener");
                        return;
                    }
                };
                let shutdown = async {
                    let _ = stopped.await;
                };
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
                {
                    tracing::error!(error = %e, "the HTTP API stopped");
                }
            });
            // The runtime, and with it the routes' state (the command producer), goes here.
            drop(rt);
        })
        .map_err(|e| fail(e.to_string()))?;
    tracing::info!(addr = %bound, "serving the HTTP API");
    Ok(Server {
        addr: bound,
        stop: Some(stop),
        thread: Some(thread),
    })
}
