//! Tests of the state's encodings and maps.

use super::*;
use std::ops::Bound::{Excluded, Included, Unbounded};

/// A packed payment unpacks to the record it packed, extreme numbers and odd strings
/// included; equal records pack to equal bytes; truncated bytes do not panic.
#[test]
fn payments_pack_and_unpack() {
    let award = |i: i64| AwardRecord {
        account: format!("loy_{i}").into(),
        rule: (i % 2 == 0).then(|| "rule_é\u{0}".into()),
        campaigns: (0..i).map(|c| format!("camp_{c}").into()).collect(),
        points: i64::MAX - i,
        reversed: i64::MIN + i,
        transaction: "x".repeat(200).into(),
        created: -i,
    };
    for n in 0..4 {
        let p = PaymentRecord {
            amount: i64::MIN,
            currency: String::new(),
            refunded: -1,
            awards: (0..n).map(award).collect(),
            spend_accounts: (0..n).map(|i| format!("loy_{i}").into()).collect(),
            created: i64::MAX,
        };
        let packed = p.pack();
        assert_eq!(packed.unpack(), p);
        assert_eq!(p.clone().pack(), packed);
        for cut in 0..packed.len() {
            let _ = PackedPayment(packed.0[..cut].into()).unpack();
        }
    }
    let p = PaymentRecord {
        amount: 1200,
        currency: "EUR".into(),
        created: 1_780_000_000,
        awards: vec![award(1)],
        spend_accounts: vec!["loy_1".into()],
        ..PaymentRecord::default()
    };
    assert_eq!(p.pack().unpack(), p);
}

/// The running sums agree with a plain walk over a map, whatever the order of adds.
#[test]
fn activity_sums_equal_a_walk_over_the_map() {
    let mut x: u64 = 7;
    let mut next = || {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (x >> 33) as i64
    };
    let mut a = Activity::default();
    let mut m: BTreeMap<i64, i64> = BTreeMap::new();
    for _ in 0..500 {
        let (at, amount) = (next() % 200, next() % 1000 - 300);
        a.add(at, amount);
        *m.entry(at).or_insert(0) += amount;
        let (lo, hi) = (next() % 220 - 10, next() % 220 - 10);
        for lower in [Included(lo), Excluded(lo), Unbounded] {
            let walk: i64 = m.range((lower, Included(hi.max(lo)))).map(|(_, v)| v).sum();
            assert_eq!(a.sum(lower, hi.max(lo)), walk);
            let first = m
                .range((lower, Included(hi.max(lo))))
                .next()
                .map(|(t, _)| *t);
            assert_eq!(a.first(lower, hi.max(lo)), first);
        }
    }
    // Stored as the map, and read back equal.
    let json = serde_json::to_string(&a).unwrap();
    assert_eq!(json, serde_json::to_string(&m).unwrap());
    assert_eq!(serde_json::from_str::<Activity>(&json).unwrap(), a);
}
