//! Exact decimals for rates and multipliers, and exact rounding of their products.
//!
//! JSON numbers such as `1.25` are read from their text, never through a float: a [`Dec`] is
//! an integer mantissa and a power-of-ten scale. Points are computed by multiplying every
//! factor exactly and dividing once at the end, so `1/3 × 3` is exactly 1 and the three
//! roundings of SPEC section 4 never see a truncated intermediate.
//!
//! Owns: parsing decimal text, exact products, rounding a quotient. Must not touch floats.

use std::fmt;
use std::str::FromStr;

use num_bigint::BigInt;

/// The largest absolute value of a decimal in a config, of an amount and of points
/// (SPEC section 2: "integers of at most 10^15 in absolute value").
pub const MAX_ABS: i128 = 1_000_000_000_000_000;

/// The most decimal places a config number may have.
pub const MAX_SCALE: u32 = 18;

/// An exact decimal: `mantissa / 10^scale`, kept normalised (no trailing zero in the
/// mantissa unless the scale is 0), so equal values have equal representations.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Dec {
    mantissa: i128,
    scale: u32,
}

/// Why a text is not an acceptable decimal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecError {
    /// Not a JSON number.
    #[error("not a number")]
    Syntax,
    /// More than [`MAX_SCALE`] decimal places, or larger than [`MAX_ABS`].
    #[error("out of range (at most 10^15 in absolute value and 18 decimal places)")]
    Range,
}

/// How an exact quotient becomes an integer (SPEC section 4, `points.rounding`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Rounding {
    /// Towards negative infinity (the default).
    Floor,
    /// To the nearest integer, halves away from zero.
    Nearest,
    /// Towards positive infinity.
    Ceil,
}

impl Dec {
    /// Appends the text [`Dec`]'s `Display` gives, without a formatter or an allocation.
    pub fn write_to(self, out: &mut Vec<u8>) {
        if self.scale == 0 {
            out.extend_from_slice(itoa::Buffer::new().format(self.mantissa).as_bytes());
            return;
        }
        let mut buf = itoa::Buffer::new();
        let digits = buf.format(self.mantissa.unsigned_abs()).as_bytes();
        let scale = self.scale as usize;
        if self.mantissa < 0 {
            out.push(b'-');
        }
        if digits.len() <= scale {
            out.extend_from_slice(b"0.");
            out.resize(out.len() + scale - digits.len(), b'0');
            out.extend_from_slice(digits);
        } else {
            let (int, frac) = digits.split_at(digits.len() - scale);
            out.extend_from_slice(int);
            out.push(b'.');
            out.extend_from_slice(frac);
        }
    }

    /// Zero.
    pub const ZERO: Dec = Dec {
        mantissa: 0,
        scale: 0,
    };
    /// One.
    pub const ONE: Dec = Dec {
        mantissa: 1,
        scale: 0,
    };

    /// An integer as a decimal.
    pub fn from_int(v: i64) -> Dec {
        Dec {
            mantissa: i128::from(v),
            scale: 0,
        }
    }

    fn normalised(mut mantissa: i128, mut scale: u32) -> Dec {
        if mantissa == 0 {
            return Dec::ZERO;
        }
        while scale > 0 && mantissa % 10 == 0 {
            mantissa /= 10;
            scale -= 1;
        }
        Dec { mantissa, scale }
    }

    /// `mantissa / 10^scale`, normalised.
    pub fn from_parts(mantissa: i128, scale: u32) -> Dec {
        Dec::normalised(mantissa, scale)
    }

    /// The mantissa and scale: the value is `mantissa / 10^scale`.
    pub fn parts(self) -> (i128, u32) {
        (self.mantissa, self.scale)
    }

    /// True when the value is below zero.
    pub fn is_negative(self) -> bool {
        self.mantissa < 0
    }

    /// True when the value is zero.
    pub fn is_zero(self) -> bool {
        self.mantissa == 0
    }

    /// The value as an integer, when it is one.
    pub fn to_i64(self) -> Option<i64> {
        if self.scale == 0 {
            i64::try_from(self.mantissa).ok()
        } else {
            None
        }
    }
}

impl Default for Dec {
    fn default() -> Dec {
        Dec::ZERO
    }
}

impl FromStr for Dec {
    type Err = DecError;

    /// Parses the JSON number grammar: `-?digits(.digits)?([eE][+-]?digits)?`.
    fn from_str(s: &str) -> Result<Dec, DecError> {
        let bytes = s.as_bytes();
        let mut i = 0;
        let negative = bytes.first() == Some(&b'-');
        if negative {
            i += 1;
        }
        let int_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let int_digits = &s[int_start..i];
        if int_digits.is_empty() || (int_digits.len() > 1 && int_digits.starts_with('0')) {
            return Err(DecError::Syntax);
        }
        let mut frac_digits = "";
        if i < bytes.len() && bytes[i] == b'.' {
            i += 1;
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            frac_digits = &s[start..i];
            if frac_digits.is_empty() {
                return Err(DecError::Syntax);
            }
        }
        let mut exponent: i64 = 0;
        if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
            i += 1;
            let mut exp_negative = false;
            if i < bytes.len() && (bytes[i] == b'+' || bytes[i] == b'-') {
                exp_negative = bytes[i] == b'-';
                i += 1;
            }
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            let digits = &s[start..i];
            if digits.is_empty() {
                return Err(DecError::Syntax);
            }
            // Any exponent beyond a few dozen is out of range whatever the digits are
            // (unless the mantissa is zero, handled below).
            exponent = digits
                .get(digits.len().saturating_sub(6)..)
                .and_then(|d| d.parse::<i64>().ok())
                .filter(|_| digits.trim_start_matches('0').len() <= 6)
                .unwrap_or(1_000_000);
            if exp_negative {
                exponent = -exponent;
            }
        }
        if i != bytes.len() {
            return Err(DecError::Syntax);
        }
        // Significant digits, with leading zeros dropped so that 0.000001 parses.
        let all_digits = format!("{int_digits}{frac_digits}");
        let significant = all_digits.trim_start_matches('0');
        if significant.is_empty() {
            return Ok(Dec::ZERO);
        }
        let trimmed = significant.trim_end_matches('0');
        let trailing_zeros = (significant.len() - trimmed.len()) as i64;
        // value = trimmed × 10^(trailing_zeros - frac_len + exponent)
        let power = trailing_zeros - frac_digits.len() as i64 + exponent;
        if trimmed.len() > 34 || power > 15 || power < -(i64::from(MAX_SCALE)) {
            return Err(DecError::Range);
        }
        let mut mantissa: i128 = trimmed.parse().map_err(|_| DecError::Range)?;
        let scale = if power >= 0 {
            for _ in 0..power {
                mantissa = mantissa.checked_mul(10).ok_or(DecError::Range)?;
            }
            0
        } else {
            (-power) as u32
        };
        let dec = Dec::normalised(if negative { -mantissa } else { mantissa }, scale);
        if dec.mantissa.unsigned_abs() > (MAX_ABS as u128) * 10u128.pow(dec.scale) {
            return Err(DecError::Range);
        }
        Ok(dec)
    }
}

impl fmt::Display for Dec {
    /// The shortest exact text: `2`, `1.25`, `-0.5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.scale == 0 {
            return write!(f, "{}", self.mantissa);
        }
        let digits = self.mantissa.unsigned_abs().to_string();
        let scale = self.scale as usize;
        let padded = if digits.len() <= scale {
            format!("{}{}", "0".repeat(scale + 1 - digits.len()), digits)
        } else {
            digits
        };
        let (int, frac) = padded.split_at(padded.len() - scale);
        let sign = if self.mantissa < 0 { "-" } else { "" };
        write!(f, "{sign}{int}.{frac}")
    }
}

/// `round(product(factors) / divisor)` exactly. `factors` and `divisor` are decimals, the
/// divisor non-zero. Returns the rounded integer, or `None` when it does not fit an `i128`.
pub fn round_quotient(factors: &[Dec], divisor: Dec, rounding: Rounding) -> Option<i128> {
    if divisor.is_zero() {
        return None;
    }
    fast_round_quotient(factors, divisor, rounding)
        .or_else(|| big_round_quotient(factors, divisor, rounding))
}

/// `product(factors) / divisor` as the text of a JSON number: exact when the quotient ends
/// within [`MAX_SCALE`] decimal places (every divisor made of twos and fives, such as a
/// `per` of 100); otherwise given to 18 places, the last one rounded away from zero when
/// `up`, towards it when not. (A caller that rounds a product of this text picks the side
/// on which that rounding gives what the exact quotient gives.) `None` for a zero divisor.
pub fn quotient_text(factors: &[Dec], divisor: Dec, up: bool) -> Option<String> {
    if divisor.is_zero() {
        return None;
    }
    fast_quotient_text(factors, divisor, up).or_else(|| big_quotient_text(factors, divisor, up))
}

/// [`quotient_text`] in 128-bit integers: `None` when a product overflows (then the
/// arbitrary-precision path gives it).
fn fast_quotient_text(factors: &[Dec], divisor: Dec, up: bool) -> Option<String> {
    let (num, den) = fast_fraction(factors, divisor)?;
    let negative = (num < 0) != (den < 0);
    let (num, den) = (num.unsigned_abs(), den.unsigned_abs());
    // Scaled by 10^18 and truncated (rounded away from zero when `up`).
    const ONE: u128 = 10u128.pow(MAX_SCALE);
    let scaled_num = num.checked_mul(ONE)?;
    let mut scaled = scaled_num / den;
    if up && scaled * den != scaled_num {
        scaled += 1;
    }
    let (int, frac) = (scaled / ONE, scaled % ONE);
    let mut out = String::with_capacity(24);
    if negative && scaled != 0 {
        out.push('-');
    }
    out.push_str(&int.to_string());
    if frac != 0 {
        let digits = format!("{frac:018}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    Some(out)
}

/// [`quotient_text`] in arbitrary precision.
fn big_quotient_text(factors: &[Dec], divisor: Dec, up: bool) -> Option<String> {
    if divisor.is_zero() {
        return None;
    }
    let (mut num, den) = big_fraction(factors, divisor);
    let ten = BigInt::from(10);
    let zero = BigInt::from(0);
    let negative = num < zero;
    if negative {
        num = -num;
    }
    // Scaled by 10^18 and truncated: the digits, then the trailing zeros dropped.
    let scaled_num = &num * ten.pow(MAX_SCALE);
    let mut scaled = &scaled_num / &den;
    if up && (&scaled * &den) != scaled_num {
        scaled += 1;
    }
    let digits = scaled.to_string();
    let padded = if digits.len() <= MAX_SCALE as usize {
        format!(
            "{}{digits}",
            "0".repeat(MAX_SCALE as usize + 1 - digits.len())
        )
    } else {
        digits
    };
    let (int, frac) = padded.split_at(padded.len() - MAX_SCALE as usize);
    let frac = frac.trim_end_matches('0');
    let sign = if negative && (int != "0" || !frac.is_empty()) {
        "-"
    } else {
        ""
    };
    Some(if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    })
}

/// The i128 path: enough for every realistic program.
fn fast_round_quotient(factors: &[Dec], divisor: Dec, rounding: Rounding) -> Option<i128> {
    let (num, den) = fast_fraction(factors, divisor)?;
    round_div(num, den, rounding)
}

/// `product(factors) / divisor` as a fraction of 128-bit integers (the denominator's sign
/// as it falls); `None` on overflow. value = (Π m_i / 10^Σs_i) / (d / 10^t) =
/// (Π m_i × 10^t) / (d × 10^Σs_i).
fn fast_fraction(factors: &[Dec], divisor: Dec) -> Option<(i128, i128)> {
    let mut num: i128 = 1;
    let mut scale: u32 = 0;
    for f in factors {
        num = num.checked_mul(f.mantissa)?;
        scale = scale.checked_add(f.scale)?;
    }
    num = num.checked_mul(10i128.checked_pow(divisor.scale)?)?;
    let den = divisor.mantissa.checked_mul(10i128.checked_pow(scale)?)?;
    Some((num, den))
}

/// `round(num / den)`; `None` on overflow (the caller then takes the big-integer path).
fn round_div(num: i128, den: i128, rounding: Rounding) -> Option<i128> {
    let (num, den) = if den < 0 {
        (num.checked_neg()?, den.checked_neg()?)
    } else {
        (num, den)
    };
    let q = num.checked_div_euclid(den)?; // floor, as den > 0
    let r = num.checked_rem_euclid(den)?; // 0 <= r < den
    Some(match rounding {
        Rounding::Floor => q,
        Rounding::Ceil => {
            if r > 0 {
                q.checked_add(1)?
            } else {
                q
            }
        }
        Rounding::Nearest => {
            // 2r against den, without computing 2r; halves go away from zero.
            let rest = den - r;
            if r > rest || (r == rest && num >= 0) {
                q.checked_add(1)?
            } else {
                q
            }
        }
    })
}

/// `product(factors) / divisor` as a fraction of big integers, the denominator positive
/// (and not zero when `divisor` is not).
fn big_fraction(factors: &[Dec], divisor: Dec) -> (BigInt, BigInt) {
    let ten = BigInt::from(10);
    let mut num = BigInt::from(1);
    let mut scale: u32 = 0;
    for f in factors {
        num *= f.mantissa;
        scale += f.scale;
    }
    num *= ten.pow(divisor.scale);
    let den = BigInt::from(divisor.mantissa) * ten.pow(scale);
    if den < BigInt::from(0) {
        (-num, -den)
    } else {
        (num, den)
    }
}

/// The arbitrary-precision path, for products that overflow an i128.
fn big_round_quotient(factors: &[Dec], divisor: Dec, rounding: Rounding) -> Option<i128> {
    let (num, den) = big_fraction(factors, divisor);
    let zero = BigInt::from(0);
    // floor division for den > 0
    let mut q = &num / &den;
    let mut r = &num % &den;
    if r < zero {
        q -= 1;
        r += &den;
    }
    let q = match rounding {
        Rounding::Floor => q,
        Rounding::Ceil => {
            if r > zero {
                q + 1
            } else {
                q
            }
        }
        Rounding::Nearest => {
            let twice = &r * 2;
            if twice > den || (twice == den && num >= zero) {
                q + 1
            } else {
                q
            }
        }
    };
    i128::try_from(q).ok()
}

#[cfg(test)]
mod tests {
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
}
