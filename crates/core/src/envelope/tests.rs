//! Tests of parsing records: every field, every rejection.

use super::*;

fn reason(line: &str) -> Reason {
    parse(line.as_bytes()).expect_err(line).reason
}

#[test]
fn parses_a_payment() {
    let r = parse(
        br#"{"id":"evt_1","type":"payment.completed","created":"2026-03-01T10:00:00Z","data":{"id":"pay_1","customer":"cus_A","amount":12000,"currency":"eur","metadata":{"channel":"pos","n":3}}}"#,
    )
    .unwrap();
    let Body::Event(a) = r.body else { panic!() };
    assert_eq!(a.amount, Some(12000));
    assert_eq!(a.currency.as_deref(), Some("EUR"));
    assert_eq!(a.metadata.get("channel").map(String::as_str), Some("pos"));
    assert!(!a.metadata.contains_key("n"));
}

#[test]
fn malformed_comes_first() {
    for line in [
        "not json",
        "[1,2]",
        "\"x\"",
        "{",
        r#"{"type":"payment.completed","created":"x","data":{}}"#,
        r#"{"id":1,"type":"payment.completed","created":"x","data":{}}"#,
        r#"{"id":"e","type":"payment.completed","created":"2026-01-01T00:00:00Z","data":[]}"#,
        r#"{"id":"e","type":"payment.completed","created":5,"data":{}}"#,
        r#"{"id":"e","created":"2026-01-01T00:00:00Z","data":{}}"#,
    ] {
        assert_eq!(reason(line), Reason::Malformed, "{line}");
    }
    assert_eq!(parse(b"\xff\xfe").unwrap_err().reason, Reason::Malformed);
}

#[test]
fn invalid_names_the_field() {
    let cases = [
        (
            r#"{"id":"e","type":"payment.completed","created":"yesterday","data":{}}"#,
            "created",
        ),
        (
            r#"{"id":"e","type":"payment.completed","created":"2026-01-01T00:00:00Z","data":{"id":"p","customer":"c","amount":-5,"currency":"EUR"}}"#,
            "data.amount",
        ),
        (
            r#"{"id":"e","type":"payment.completed","created":"2026-01-01T00:00:00Z","data":{"id":"p","customer":"c","amount":"5","currency":"EUR"}}"#,
            "data.amount",
        ),
        (
            r#"{"id":"e","type":"payment.completed","created":"2026-01-01T00:00:00Z","data":{"id":"p","customer":"c","amount":5.5,"currency":"EUR"}}"#,
            "data.amount",
        ),
        (
            r#"{"id":"e","type":"payment.completed","created":"2026-01-01T00:00:00Z","data":{"id":"p","amount":5,"currency":"EUR"}}"#,
            "data.customer",
        ),
        (
            r#"{"id":"e","type":"payment.completed","created":"2026-01-01T00:00:00Z","data":{"id":"p","customer":"c","amount":10000000000000000,"currency":"EUR"}}"#,
            "data.amount",
        ),
        (
            r#"{"id":"e","type":"loyalty.points.earned","created":"2026-01-01T00:00:00Z","data":{}}"#,
            "type",
        ),
        (
            r#"{"id":"e","type":"customer.birthday","created":"2026-01-01T00:00:00Z","data":{}}"#,
            "type",
        ),
        (
            r#"{"id":"e","type":"loyalty.account.enroll","created":"2026-01-01T00:00:00Z","data":{"customer":"c","program":"p","birthday":"13-01"}}"#,
            "data.birthday",
        ),
    ];
    for (line, field) in cases {
        let r = parse(line.as_bytes()).expect_err(line);
        assert_eq!(r.reason, Reason::Invalid, "{line}");
        assert!(r.detail.starts_with(field), "{line}: {}", r.detail);
        assert_eq!(r.source.as_deref(), Some("e"));
    }
}

#[test]
fn a_log_line_folds_like_the_record() {
    for raw in [
        &b"not json"[..],
        b"",
        b"   ",
        b"\xff\xfe{",
        b"{\"id\": \"e\",\n \"type\": \"clock.tick\", \"created\": \"2026-01-01T00:00:00Z\",\r\n \"data\": {}}",
        b"{\"id\":\"e\",\"type\":\"x\",\"created\":\"2026-01-01T00:00:00Z\",\"data\":{\"customer\":\"a\\nb\"}}",
        b"[1,\n2]",
        b"{\"id\": 1}",
    ] {
        let line = log_line(raw);
        assert!(!line.contains('\n') && !line.trim().is_empty(), "{line}");
        assert_eq!(parse(line.as_bytes()), parse(raw), "{line}");
    }
}

#[test]
fn custom_types_need_a_customer() {
    let ok = parse(br#"{"id":"e","type":"erp.order","created":"2026-01-01T00:00:00Z","data":{"customer":"c"}}"#).unwrap();
    assert!(matches!(ok.body, Body::Event(_)));
    assert_eq!(
        reason(r#"{"id":"e","type":"erp.order","created":"2026-01-01T00:00:00Z","data":{}}"#),
        Reason::Invalid
    );
}

/// A metadata key given more than once counts once, with its last value, however it is
/// spelled (an escape names the same key); the other keys keep theirs.
#[test]
fn a_metadata_key_given_twice_keeps_its_last_value() {
    let payment = |metadata: &str| {
        let line = format!(
            r#"{{"id":"evt_1","type":"payment.completed","created":"2026-03-01T10:00:00Z","data":{{"id":"pay_1","customer":"cus_A","amount":1,"currency":"eur","metadata":{metadata}}}}}"#
        );
        match parse(line.as_bytes()).map(|r| r.body) {
            Ok(Body::Event(a)) => (a.metadata, a.loyalty_account),
            other => panic!("{metadata}: {other:?}"),
        }
    };
    let (m, _) = payment(r#"{"a":"1","b":"x","a":2}"#);
    assert_eq!(m.get("a"), None);
    assert_eq!(m.get("b").map(String::as_str), Some("x"));
    let (m, _) = payment(r#"{"a":2,"\u0061":"3","c":"y","a":"4"}"#);
    assert_eq!(m.get("a").map(String::as_str), Some("4"));
    assert_eq!(m.len(), 2);
    let (m, _) = payment(r#"{"\u0062":"5","b":"6"}"#);
    assert_eq!(m.get("b").map(String::as_str), Some("6"));
    // The link to an account: the last value counts, null included.
    let (m, account) = payment(r#"{"loyalty_account":"loy_1","loyalty_account":null}"#);
    assert_eq!((m.len(), account), (0, None));
    let (_, account) = payment(r#"{"loyalty_account":5,"loyalty_account":"loy_2"}"#);
    assert_eq!(account.as_deref(), Some("loy_2"));
    let line = r#"{"id":"evt_1","type":"payment.completed","created":"2026-03-01T10:00:00Z","data":{"id":"pay_1","customer":"cus_A","metadata":{"loyalty_account":"loy_2","loyalty_account":5}}}"#;
    assert_eq!(reason(line), Reason::Invalid);
}
