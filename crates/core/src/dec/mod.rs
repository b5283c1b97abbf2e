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
mod tests;
