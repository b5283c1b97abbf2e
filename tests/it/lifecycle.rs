//! Section 7 behaviour that scenario files cannot express (referral codes are minted by the
//! engine), through the core API.

use loyalty_core::output::{Output, TxKind};
use loyalty_core::{ids, parse_config, Engine};
use serde_json::json;

const CONFIG: &str = r#"{"programs":[{"id":"prog_r","currency":"EUR","earningRules":[
  {"id":"rule_p","trigger":"payment.completed","award":{"type":"per_amount","per":100,"points":1}},
  {"id":"rule_referrer","trigger":"referral.converted","award":{"type":"fixed","points":1000}},
  {"id":"rule_referee","trigger":"referral.converted","recipient":"referee","award":{"type":"fixed","points":250}}]}]}"#;

fn apply(e: &mut Engine, out: &mut Vec<Output>, v: serde_json::Value) {
    e.apply(v.to_string().as_bytes(), out);
}

#[test]
fn a_referral_code_converts_on_the_referees_first_payment_once() {
    let mut e = Engine::new(&parse_config(CONFIG).unwrap());
    let mut out = Vec::new();
    apply(
        &mut e,
        &mut out,
        json!({"id":"n1","type":"loyalty.account.enroll","created":"2026-03-01T10:00:00Z",
        "data":{"customer":"cus_R","program":"prog_r"}}),
    );
    let code = e.state().accounts[&ids::account_id("prog_r", "cus_R")]
        .referral_code
        .clone();
    assert_eq!(
        code,
        ids::referral_code(&ids::account_id("prog_r", "cus_R")),
        "a pure function of the account"
    );
    apply(
        &mut e,
        &mut out,
        json!({"id":"n2","type":"loyalty.account.enroll","created":"2026-03-01T11:00:00Z",
        "data":{"customer":"cus_E","program":"prog_r","referralCode": code}}),
    );
    // An unknown code is refused and changes nothing.
    out.clear();
    apply(
        &mut e,
        &mut out,
        json!({"id":"n3","type":"loyalty.account.enroll","created":"2026-03-01T12:00:00Z",
        "data":{"customer":"cus_X","program":"prog_r","referralCode":"NOPE1234"}}),
    );
    assert!(matches!(&out[..], [Output::Rejected(r)] if r.reason.as_str() == "invalid"));
    out.clear();
    for i in 0..2 {
        apply(
            &mut e,
            &mut out,
            json!({"id":format!("p{i}"),"type":"payment.completed","created":"2026-03-02T10:00:00Z",
            "data":{"id":format!("pay{i}"),"customer":"cus_E","amount":1000,"currency":"EUR"}}),
        );
    }
    let awards: Vec<(String, i64, Option<String>)> = out
        .iter()
        .filter_map(|o| match o {
            Output::Transaction(t) if t.kind == TxKind::Award => Some((
                t.customer.to_string(),
                t.points,
                t.rule.as_deref().map(str::to_string),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        awards,
        vec![
            ("cus_E".into(), 10, Some("rule_p".into())),
            ("cus_R".into(), 1000, Some("rule_referrer".into())),
            ("cus_E".into(), 250, Some("rule_referee".into())),
            ("cus_E".into(), 10, Some("rule_p".into())),
        ],
        "one conversion, on the first payment only"
    );
}
