//! The scanner beside `serde_json`: on texts made of every part of the grammar, mangled
//! at random, whatever the scanner accepts `serde_json` reads the same way.

use std::borrow::Cow;

use proptest::prelude::*;

use super::fields::Pairs;
use super::{Json, RawData, RawEnvelope};

/// Pieces of JSON text, valid and not: the scanner must tell them apart as serde_json does.
fn atom() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_string()),
        Just("-0".to_string()),
        Just("01".to_string()),
        Just("-".to_string()),
        Just("1.".to_string()),
        Just("1.5".to_string()),
        Just("1e5".to_string()),
        Just("1E+5".to_string()),
        Just("2.5e-3".to_string()),
        Just("1e".to_string()),
        Just(".5".to_string()),
        Just("+1".to_string()),
        Just("12345678901234567890123".to_string()),
        Just("true".to_string()),
        Just("false".to_string()),
        Just("null".to_string()),
        Just("nul".to_string()),
        Just("truex".to_string()),
        Just(r#""""#.to_string()),
        Just(r#""plain""#.to_string()),
        Just(r#""a\"b""#.to_string()),
        Just(r#""\u00e9\n\t\\\/""#.to_string()),
        Just(r#""\ud800""#.to_string()),
        Just(r#""\u12G4""#.to_string()),
        Just(r#""\x""#.to_string()),
        Just("\"tab\there\"".to_string()),
        Just("\"é ü ✓\"".to_string()),
        Just(r#""unterminated"#.to_string()),
        Just("[]".to_string()),
        Just("[1,]".to_string()),
        Just("{}".to_string()),
        Just("{,}".to_string()),
        Just(r#"{"a":1,}"#.to_string()),
    ]
}

fn ws() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just(String::new()),
        1 => Just(" ".to_string()),
        1 => Just("\n\t\r ".to_string()),
        1 => Just("\u{a0}".to_string()),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("id"),
        Just("type"),
        Just("created"),
        Just("data"),
        Just("customer"),
        Just("amount"),
        Just("referralCode"),
        Just("referral_code"),
        Just("openingBalance"),
        Just("metadata"),
        Just("until"),
        Just("other"),
        Just("\\u0069d"),
        Just("i\\\"d"),
        Just(""),
    ]
    .prop_map(|k| format!("\"{k}\""))
}

fn value() -> impl Strategy<Value = String> {
    atom().prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec((ws(), inner.clone(), ws()), 0..4).prop_map(|items| {
                let items: Vec<String> = items
                    .into_iter()
                    .map(|(a, v, b)| format!("{a}{v}{b}"))
                    .collect();
                format!("[{}]", items.join(","))
            }),
            prop::collection::vec((key(), ws(), inner), 0..4).prop_map(|members| {
                let members: Vec<String> = members
                    .into_iter()
                    .map(|(k, w, v)| format!("{k}{w}:{w}{v}"))
                    .collect();
                format!("{{{}}}", members.join(","))
            }),
        ]
    })
}

/// An object of known and other keys (some given twice), with whitespace; then, at
/// random, one byte removed, replaced or added.
fn text() -> impl Strategy<Value = String> {
    let object = (
        ws(),
        prop::collection::vec((key(), ws(), value(), ws()), 0..7),
        ws(),
    )
        .prop_map(|(a, members, b)| {
            let members: Vec<String> = members
                .into_iter()
                .map(|(k, w, v, w2)| format!("{w}{k}{w}:{w2}{v}{w2}"))
                .collect();
            format!("{a}{{{}}}{b}", members.join(","))
        });
    let mangle = prop_oneof![
        3 => Just(None),
        1 => (any::<prop::sample::Index>(), prop::sample::select(
            vec!["", "\"", "\\", "{", "}", "[", "]", ",", ":", "0", "-", "e", ".", " ", "\u{1}", "x"],
        ))
        .prop_map(Some),
    ];
    (object, mangle).prop_map(|(text, mangle)| match mangle {
        None => text,
        Some((at, with)) => {
            let cut: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
            if cut.is_empty() {
                return with.to_string();
            }
            let i = cut[at.index(cut.len())];
            let next = text[i..].chars().next().map_or(0, char::len_utf8);
            let keep = with.is_empty() || at.index(2) == 0;
            format!(
                "{}{with}{}",
                &text[..i],
                &text[if keep { i } else { i + next }..]
            )
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn the_scanner_reads_as_serde_json_does(text in text()) {
        if let Some(env) = RawEnvelope::scan(&text) {
            let serde: RawEnvelope<'_> = serde_json::from_str(&text)
                .map_err(|e| TestCaseError::fail(format!("scanned, serde_json: {e}")))?;
            prop_assert_eq!(env, serde);
        }
        if let Some(data) = RawData::scan(&text) {
            let serde: RawData<'_> = serde_json::from_str(&text)
                .map_err(|e| TestCaseError::fail(format!("scanned, serde_json: {e}")))?;
            prop_assert_eq!(data, serde);
        }
        let mut pairs = Vec::new();
        let scanned = super::scan::Scan::new(&text).whole_object(|k, v| {
            pairs.push((Cow::Borrowed(k), Json(v)));
            Some(())
        });
        if scanned.is_some() {
            let serde: Pairs<'_> = serde_json::from_str(&text)
                .map_err(|e| TestCaseError::fail(format!("scanned, serde_json: {e}")))?;
            prop_assert_eq!(pairs, serde.0);
        }
    }
}

/// The scanner accepts what it should: a record as upstream sends it, with a field of each
/// kind, so that the fast path is the one taken (and the property above is not vacuous).
#[test]
fn the_scanner_takes_plain_records() {
    let text = r#" {"id":"evt_1", "type":"payment.completed","created":"2026-03-01T10:00:00Z","data":{"id":"pay_1","customer":"cus_A","amount":-1.5e3,"currency":"eur","metadata":{"channel":"pos","n":[1,{"x":null}],"s":"a\"b"},"openingBalance":null},"extra":[true,false]}
"#;
    let env = RawEnvelope::scan(text).expect("scanned");
    assert_eq!(env.id, Some(Json("\"evt_1\"")));
    let data = RawData::scan(env.data.unwrap().0).expect("scanned");
    assert_eq!(data.amount, Some(Json("-1.5e3")));
    assert_eq!(data.opening_balance, None);
    assert_eq!(
        data.metadata,
        Some(Json(r#"{"channel":"pos","n":[1,{"x":null}],"s":"a\"b"}"#))
    );
    // Declined: a key given twice, an escaped key, trailing text.
    assert!(RawEnvelope::scan(r#"{"id":"a","id":"b"}"#).is_none());
    assert!(RawEnvelope::scan(r#"{"\u0069d":"a"}"#).is_none());
    assert!(RawEnvelope::scan(r#"{"id":"a"} x"#).is_none());
    assert!(RawEnvelope::scan(r#"{"other":1,"other":2}"#).is_some());
    // A field given twice is declined even when the first is null (serde_json refuses it).
    assert!(RawEnvelope::scan(r#"{"id":null,"id":"x"}"#).is_none());
    assert!(serde_json::from_str::<RawEnvelope<'_>>(r#"{"id":null,"id":"x"}"#).is_err());
    // Nesting past the scanner's depth is left to serde_json, which reads the record.
    let deep = format!(
        r#"{{"id":"evt_1","type":"payment.completed","created":"2026-03-01T10:00:00Z","x":{}1{},"data":{{"id":"pay_1","customer":"cus_A","amount":1,"currency":"eur"}}}}"#,
        "[".repeat(100),
        "]".repeat(100)
    );
    assert!(RawEnvelope::scan(&deep).is_none());
    assert!(super::parse(deep.as_bytes()).is_ok());
}
