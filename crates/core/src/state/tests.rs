//! Tests of the state's encodings and maps.

use super::*;
use std::ops::Bound::{Excluded, Included, Unbounded};

/// A packed payment unpacks to the record it packed, extreme numbers and odd strings
/// included; equal records pack to equal bytes; truncated bytes do not panic, and as stored
/// bytes are refused, as is anything else `pack` does not write.
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
        assert_eq!(PackedPayment::read_stored(packed.as_bytes()), Ok(p.clone()));
        assert_eq!(p.clone().pack(), packed);
        // Every field is read, in order: bytes cut short anywhere run out, and are refused
        // as stored bytes (and still do not panic).
        for cut in 0..packed.len() {
            let _ = PackedPayment(packed.0[..cut].into()).unpack();
            assert!(
                PackedPayment::read_stored(&packed.0[..cut]).is_err(),
                "{n} awards, cut at {cut}"
            );
        }
        let mut longer = packed.0.to_vec();
        longer.push(0);
        assert_eq!(
            PackedPayment::read_stored(&longer),
            Err("bytes after the record")
        );
    }
    // Anything `pack` does not write is refused, each for its reason.
    let one = PaymentRecord {
        currency: "EUR".into(),
        awards: vec![award(0)],
        ..PaymentRecord::default()
    }
    .pack();
    let bytes = one.as_bytes();
    // The currency's first byte (after the amount 0 and the length 3).
    let mut bad = bytes.to_vec();
    bad[2] = 0xff;
    assert_eq!(
        PackedPayment::read_stored(&bad),
        Err("a string that is not UTF-8")
    );
    // The award's rule marker: after amount, currency, refunded, created, no spend
    // accounts, one award, its account "loy_0" (a length and 5 bytes).
    let marker = 1 + 4 + 1 + 1 + 1 + 1 + 6;
    assert_eq!(bytes[marker], 1);
    let mut bad = bytes.to_vec();
    bad[marker] = 2;
    assert_eq!(
        PackedPayment::read_stored(&bad),
        Err("a rule marker other than 0 or 1")
    );
    // An amount of eleven varint bytes.
    let mut bad = vec![0xff; 10];
    bad.push(0x01);
    bad.extend_from_slice(&bytes[1..]);
    assert_eq!(
        PackedPayment::read_stored(&bad),
        Err("a number over 64 bits")
    );
    // A count of spend accounts larger than the bytes left.
    let mut bad = bytes[..7].to_vec();
    bad.push(100);
    assert_eq!(
        PackedPayment::read_stored(&bad),
        Err("more items than the bytes left could hold")
    );
    // A number in more bytes than it needs (0 as two bytes): `pack` never writes it.
    let mut bad = vec![0x80, 0x00];
    bad.extend_from_slice(&bytes[1..]);
    assert_eq!(
        PackedPayment::read_stored(&bad),
        Err("a number not in its shortest form")
    );
    // A count of awards that the bytes left could not hold, seven bytes each at least: the
    // bytes after it are 7 * 3 - 1 long.
    let mut bad = bytes[..7].to_vec();
    bad.push(0); // no spend accounts
    bad.push(3); // three awards
    bad.extend_from_slice(&[0; 20]);
    assert_eq!(
        PackedPayment::read_stored(&bad),
        Err("more items than the bytes left could hold")
    );
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
