//! The HTTP API's reads against the fold, over random logs: the accounts, each account's
//! ledger (walked a page at a time, both ways) and balances the router answers from a
//! stored state equal what `loyalty fold` prints for the same log.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use loyalty_core::fold::fold_to_string;
use loyalty_core::Engine;
use loyalty_store::Store;
use loyalty_stream::folder::Folder;
use loyalty_stream::logrec::Meta;
use loyalty_stream::Settings;
use proptest::prelude::*;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::support::TempDir;

const KEY: &str = "rk_test_reads";

/// The log with a tick at its last time, so that no effect already due is left for the
/// next record (the fold carries those out at its end; a running engine at its next tick).
fn with_final_tick(mut log: Vec<String>) -> Vec<String> {
    let last = log
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["created"].as_str().map(str::to_string))
        .max()
        .unwrap_or_else(|| "2026-01-01T00:00:00Z".into());
    log.push(
        json!({"id": "tick_final", "type": "clock.tick", "created": last, "data": {}}).to_string(),
    );
    log
}

/// Folds `log` into a new store, committing every `every` records.
pub(crate) fn stored(dir: &std::path::Path, log: &[String], every: usize) -> Arc<Store> {
    let store = Store::open(dir).unwrap();
    let settings = Settings::new("unused:9092");
    let mut f = Folder::open(&store, false).unwrap();
    for (i, r) in log.iter().enumerate() {
        f.fold(
            &store,
            &settings,
            0,
            i as i64,
            &Meta::default(),
            r.as_bytes(),
        )
        .unwrap();
        if i % every == every - 1 {
            f.commit(&store).unwrap();
        }
    }
    f.commit(&store).unwrap();
    Arc::new(store)
}

/// GET `path` on the router: the JSON answer of a 200.
async fn get(app: &axum::Router, path: &str) -> Value {
    let req = Request::get(path)
        .header("authorization", format!("Bearer {KEY}"))
        .body(Body::empty())
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let body = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(
        status,
        StatusCode::OK,
        "{path}: {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&body).unwrap()
}

/// The key goes in `Authorization: Bearer KEY`, the scheme's name in any case; anything
/// else is a 401 whose message says how to send it.
#[test]
fn the_key_is_a_bearer_token_in_any_case() {
    let dir = TempDir::new("auth");
    let store = stored(&dir.0, &[], 1);
    let api = loyalty_api::Api::new(store, &[KEY.to_string()], None).unwrap();
    let app = loyalty_api::router(Arc::new(api), axum::Router::new());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ask = |auth: Option<String>| {
        let mut req = Request::get("/v1/accounts");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let res = rt
            .block_on(app.clone().oneshot(req.body(Body::empty()).unwrap()))
            .unwrap();
        let status = res.status();
        let body = rt
            .block_on(axum::body::to_bytes(res.into_body(), usize::MAX))
            .unwrap();
        (status, serde_json::from_slice::<Value>(&body).unwrap())
    };
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let (status, body) = ask(Some(format!("{scheme} {KEY}")));
        assert_eq!(status, StatusCode::OK, "{scheme}: {body}");
    }
    for (auth, says) in [
        (None, "No API key provided"),
        (Some(format!("Basic {KEY}")), "not a bearer token"),
        (Some(KEY.to_string()), "not a bearer token"),
        (Some("Bearer rk_test_other".to_string()), "Invalid API key"),
    ] {
        let (status, body) = ask(auth.clone());
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}: {body}");
        assert_eq!(body["error"]["type"], "authentication_error", "{auth:?}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{auth:?}: {message}");
    }
}

/// Every item of a list, walked forward with `starting_after`, and backward from its end
/// with `ending_before`; both walks must agree.
async fn walk(app: &axum::Router, path: &str, limit: usize) -> Vec<Value> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut items: Vec<Value> = Vec::new();
    loop {
        let cursor = items
            .last()
            .map(|i| format!("&starting_after={}", i["id"].as_str().unwrap()))
            .unwrap_or_default();
        let page = get(app, &format!("{path}{sep}limit={limit}{cursor}")).await;
        let data = page["data"].as_array().unwrap().clone();
        assert!(data.len() <= limit);
        items.extend(data);
        if page["has_more"] != true {
            break;
        }
    }
    // Backward, from the last item: the pages before it, each in list order.
    if let Some(last) = items.last() {
        let mut back: Vec<Value> = vec![last.clone()];
        loop {
            let first = back[0]["id"].as_str().unwrap().to_string();
            let page = get(
                app,
                &format!("{path}{sep}limit={limit}&ending_before={first}"),
            )
            .await;
            let data = page["data"].as_array().unwrap().clone();
            let more = page["has_more"] == true;
            back.splice(0..0, data);
            if !more {
                break;
            }
        }
        assert_eq!(back, items, "{path}: the backward walk differs");
    }
    items
}

/// A fold line as the API's object: `object` instead of `kind`.
fn object(mut line: Value, object: &str) -> Value {
    let m = line.as_object_mut().unwrap();
    m.remove("kind");
    m.insert("object".into(), object.into());
    line
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn the_api_answers_what_the_fold_prints(
        (_calendar, _warn, log) in crate::working_set::random::log(),
        every in 1usize..20,
        limit in 1usize..5,
    ) {
        let log = with_final_tick(log);
        let folded = fold_to_string(&mut Engine::empty(), log.join("\n").as_bytes(), None).unwrap();
        let lines: Vec<Value> = folded.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let dir = TempDir::new("api-reads");
        let store = stored(&dir.0.join("state"), &log, every);
        let api = loyalty_api::Api::new(store, &[KEY.to_string()], None).unwrap();
        let app = loyalty_api::router(Arc::new(api), axum::Router::new());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let want_accounts: Vec<Value> = lines.iter().filter(|l| l["kind"] == "account")
                .map(|l| object(l.clone(), "loyalty_account")).collect();
            let got = walk(&app, "/v1/accounts", limit).await;
            assert_eq!(got, want_accounts);
            for a in &want_accounts {
                let id = a["id"].as_str().unwrap();
                assert_eq!(&get(&app, &format!("/v1/accounts/{id}")).await, a);
                // The ledger, newest first.
                let mut want: Vec<Value> = lines.iter()
                    .filter(|l| l["kind"] == "transaction" && l["account"] == id)
                    .map(|l| object(l.clone(), "points_transaction")).collect();
                want.reverse();
                let got = walk(&app, &format!("/v1/points_transactions?account={id}"), limit).await;
                assert_eq!(got, want);
                let b = get(&app, &format!("/v1/accounts/{id}/balance")).await;
                assert_eq!(&b["balance"], &a["balance"]);
            }
            // Every transaction, newest first, each also by its id.
            let mut want: Vec<Value> = lines.iter().filter(|l| l["kind"] == "transaction")
                .map(|l| object(l.clone(), "points_transaction")).collect();
            want.reverse();
            let got = walk(&app, "/v1/points_transactions", limit + 3).await;
            assert_eq!(&got, &want);
            for t in want.iter().take(5) {
                let id = t["id"].as_str().unwrap();
                assert_eq!(&get(&app, &format!("/v1/points_transactions/{id}")).await, t);
            }
        });
    }
}

/// A program update that adds tiers moves every member into the lowest tier without a
/// `loyalty.tier.changed` event; one that removes them moves them out. The tier filter
/// follows the accounts, and `verify` finds the index whole.
#[test]
fn the_tier_filter_follows_program_updates_that_add_or_remove_tiers() {
    let plain = json!({"id": "prog_t", "currency": "EUR", "autoEnroll": true,
        "earningRules": [{"id": "rule_p", "trigger": "payment.completed",
            "award": {"type": "per_amount", "per": 100, "points": 1}}]});
    let mut tiered = plain.clone();
    tiered["tierConfig"] = json!({"qualifyOn": "spend", "period": {"type": "rolling", "months": 12},
        "tiers": [{"name": "Member", "rank": 0, "threshold": 0},
                  {"name": "Gold", "rank": 1, "threshold": 100000}]});
    let rec = |id: &str, t: &str, created: &str, data: Value| {
        json!({"id": id, "type": t, "created": created, "data": data}).to_string()
    };
    let mut log = vec![rec(
        "cfg1",
        "loyalty.program.updated",
        "2026-03-01T00:00:00Z",
        plain.clone(),
    )];
    for i in 0..3 {
        log.push(rec(&format!("p{i}"), "payment.completed", "2026-03-02T00:00:00Z",
            json!({"id": format!("pay{i}"), "customer": format!("cus_{i}"), "amount": 500, "currency": "EUR"})));
    }
    let dir = TempDir::new("api-tiers");
    let members = |log: &[String]| {
        let store = stored(&dir.0.join(format!("state{}", log.len())), log, 2);
        assert_eq!(store.verify().unwrap(), vec![]);
        let api = loyalty_api::Api::new(store, &[KEY.to_string()], None).unwrap();
        let app = loyalty_api::router(Arc::new(api), axum::Router::new());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let got = walk(&app, "/v1/accounts?program=prog_t&tier=Member", 2).await;
            got.len()
        })
    };
    assert_eq!(members(&log), 0, "no tiers yet");
    log.push(rec(
        "cfg2",
        "loyalty.program.updated",
        "2026-03-03T00:00:00Z",
        tiered,
    ));
    assert_eq!(members(&log), 3, "every member is in the lowest tier");
    log.push(rec(
        "cfg3",
        "loyalty.program.updated",
        "2026-03-04T00:00:00Z",
        plain,
    ));
    assert_eq!(members(&log), 0, "the tiers are gone");
}
