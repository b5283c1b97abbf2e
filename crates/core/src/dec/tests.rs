//! The decimals' tests: text in and out, exact products, and every rounding.

/// `write_to` writes what `Display` prints, for every sign, scale and width.
#[test]
fn write_to_is_display() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..20_000u32 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let width = 10u128.pow(seed as u32 % 20);
        let m = i128::try_from(u128::from(seed) % width.max(1)).unwrap_or(0);
        let m = if i % 2 == 0 { -m } else { m };
        let d = super::Dec {
            mantissa: m,
            scale: i % 22,
        };
        let mut out = Vec::new();
        d.write_to(&mut out);
        assert_eq!(String::from_utf8(out).unwrap(), d.to_string(), "{d:?}");
    }
}

use super::*;

fn d(s: &str) -> Dec {
    s.parse().unwrap()
}

/// The 128-bit path gives what the arbitrary-precision one gives, wherever it answers;
/// and it answers for the quotients of realistic programs.
#[test]
fn the_fast_quotient_text_is_the_exact_one() {
    let mut x: u64 = 7;
    let mut next = |n: u64| {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (x >> 33) % n
    };
    let mut answered = 0;
    for _ in 0..20_000 {
        let n = 1 + next(3);
        let mut dec = |max: u64| {
            let m = next(max) as i128 * if next(5) == 0 { -1 } else { 1 };
            Dec::from_parts(m, next(4) as u32)
        };
        let factors: Vec<Dec> = (0..n).map(|_| dec(1_000_000_000)).collect();
        let divisor = dec(100_000);
        if divisor.is_zero() {
            continue;
        }
        for up in [false, true] {
            if let Some(fast) = fast_quotient_text(&factors, divisor, up) {
                answered += 1;
                assert_eq!(
                    Some(fast),
                    big_quotient_text(&factors, divisor, up),
                    "{factors:?} / {divisor:?}, up {up}"
                );
            }
        }
    }
    assert!(answered > 10_000, "{answered}");
}

#[test]
fn quotients_as_text() {
    let q = |f: &[&str], dv: &str| {
        quotient_text(&f.iter().map(|x| d(x)).collect::<Vec<_>>(), d(dv), false)
    };
    let up = |f: &[&str], dv: &str| {
        quotient_text(&f.iter().map(|x| d(x)).collect::<Vec<_>>(), d(dv), true)
    };
    assert_eq!(q(&["1250", "1"], "100").as_deref(), Some("12.5"));
    assert_eq!(q(&["10000", "1"], "100").as_deref(), Some("100"));
    assert_eq!(q(&["1", "1"], "3").as_deref(), Some("0.333333333333333333"));
    assert_eq!(q(&["3", "0.5"], "0.25").as_deref(), Some("6"));
    assert_eq!(q(&["-1", "7"], "100").as_deref(), Some("-0.07"));
    assert_eq!(q(&["0"], "100").as_deref(), Some("0"));
    assert_eq!(q(&["1"], "0"), None);
    // Rounded away from zero only when it does not end.
    assert_eq!(
        up(&["1", "1"], "3").as_deref(),
        Some("0.333333333333333334")
    );
    assert_eq!(
        up(&["2", "1"], "3").as_deref(),
        Some("0.666666666666666667")
    );
    assert_eq!(up(&["1250", "1"], "100").as_deref(), Some("12.5"));
    assert_eq!(
        up(&["100", "1"], "3").as_deref(),
        Some("33.333333333333333334")
    );
}

#[test]
fn parses_and_prints_exactly() {
    for (text, shown) in [
        ("1.25", "1.25"),
        ("2", "2"),
        ("2.0", "2"),
        ("0.5", "0.5"),
        ("-0.05", "-0.05"),
        ("1e2", "100"),
        ("1.5E-1", "0.15"),
        ("0", "0"),
        ("0.000", "0"),
        ("1000000000000000", "1000000000000000"),
    ] {
        assert_eq!(d(text).to_string(), shown, "{text}");
    }
}

#[test]
fn refuses_bad_text_and_range() {
    for bad in ["", "-", "01", "1.", ".5", "1e", "abc", "1.2.3", "+1", " 1"] {
        assert_eq!(bad.parse::<Dec>(), Err(DecError::Syntax), "{bad:?}");
    }
    for big in [
        "1000000000000001",
        "1e16",
        "0.0000000000000000001",
        "1e999999999",
    ] {
        assert_eq!(big.parse::<Dec>(), Err(DecError::Range), "{big:?}");
    }
}

#[test]
fn rounds_an_exact_quotient() {
    // 1/3 × 3 is exactly one: no truncated intermediate.
    let third = [Dec::ONE, d("3")];
    assert_eq!(round_quotient(&third, d("3"), Rounding::Floor), Some(1));
    // Seed example: 10000 × 1 × 2 × 1.5 × 3 / 100 = 900.
    let f = [d("10000"), d("1"), d("2"), d("1.5"), d("3")];
    assert_eq!(round_quotient(&f, d("100"), Rounding::Floor), Some(900));
    // 1234 / 100 = 12.34
    let f = [d("1234"), Dec::ONE];
    assert_eq!(round_quotient(&f, d("100"), Rounding::Floor), Some(12));
    assert_eq!(round_quotient(&f, d("100"), Rounding::Ceil), Some(13));
    assert_eq!(round_quotient(&f, d("100"), Rounding::Nearest), Some(12));
    // halves away from zero
    let f = [d("1250")];
    assert_eq!(round_quotient(&f, d("100"), Rounding::Nearest), Some(13));
    let f = [d("-1250")];
    assert_eq!(round_quotient(&f, d("100"), Rounding::Nearest), Some(-13));
    assert_eq!(round_quotient(&f, d("100"), Rounding::Floor), Some(-13));
    assert_eq!(round_quotient(&f, d("100"), Rounding::Ceil), Some(-12));
}

#[test]
fn nearest_does_not_overflow_near_the_limit() {
    assert_eq!(
        round_div(i128::MAX - 1, i128::MAX, Rounding::Nearest),
        Some(1)
    );
    assert_eq!(round_div(1, i128::MAX, Rounding::Nearest), Some(0));
    assert_eq!(round_div(i128::MIN, -1, Rounding::Floor), None);
}

#[test]
fn big_path_agrees_with_fast_path() {
    let f = [d("999999999999999"), d("0.999999999999999999"), d("1.5")];
    let fast = fast_round_quotient(&f, d("7"), Rounding::Nearest);
    let big = big_round_quotient(&f, d("7"), Rounding::Nearest);
    assert_eq!(fast, big);
    // A product that overflows i128 still rounds exactly.
    let f = [
        d("999999999999999"),
        d("999999999999999"),
        d("999999999999999"),
    ];
    let got = round_quotient(&f, d("999999999999999"), Rounding::Floor);
    assert_eq!(got, Some(999_999_999_999_999 * 999_999_999_999_999));
}
