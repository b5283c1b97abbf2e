//! Webhook-style signatures (SPEC section 8): `x-vinr-signature: t=<unix>,v1=<hex>`, where
//! the hex is HMAC-SHA256 of `"<t>.<payload>"` under the signing secret. The same form as
//! Stripe's webhook signatures, so Stripe's verifiers accept it for JSON values.
//!
//! [`verify`] is the library function downstream services use (and `loyalty
//! verify-signature` calls): it rejects a wrong signature and a timestamp outside the
//! tolerance.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header name.
pub const HEADER: &str = "x-vinr-signature";

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], t: i64, payload: &[u8]) -> HmacSha256 {
    let mut m = Signer::new(secret).keyed;
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(payload);
    m
}

/// The header value for `payload` created at unix second `t`.
pub fn sign(secret: &[u8], t: i64, payload: &[u8]) -> String {
    Signer::new(secret).sign(t, &[payload])
}

/// HMAC-SHA256 keyed once: the key's two SHA-256 blocks (HMAC's inner and outer pads) are
/// hashed when the signer is made, not again for every message it signs.
#[derive(Clone)]
pub struct Signer {
    secret: Vec<u8>,
    keyed: HmacSha256,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret stays out of logs.
        f.debug_struct("Signer").finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer under `secret` (HMAC accepts keys of any length).
    pub fn new(secret: &[u8]) -> Signer {
        Signer {
            secret: secret.to_vec(),
            keyed: HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length"),
        }
    }

    /// Whether this signer signs under `secret`.
    pub fn is_under(&self, secret: &[u8]) -> bool {
        self.secret == secret
    }

    /// The header value for the payload made of `parts`, in order, created at unix second
    /// `t`: [`sign`]'s, without the payload in one piece.
    pub fn sign(&self, t: i64, parts: &[&[u8]]) -> String {
        use std::fmt::Write as _;
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut header = String::with_capacity(32 + 64);
        // Writing to a String cannot fail.
        let _ = write!(header, "t={t},v1=");
        let mut m = self.keyed.clone();
        // `t` as the header writes it: between "t=" and ",v1=".
        m.update(&header.as_bytes()[2..header.len() - 4]);
        m.update(b".");
        for p in parts {
            m.update(p);
        }
        for b in m.finalize().into_bytes() {
            header.push(char::from(HEX[usize::from(b >> 4)]));
            header.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        header
    }
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header is not `t=…,v1=…`.
    #[error("the signature header is malformed")]
    Malformed,
    /// No `v1` signature matches the payload.
    #[error("no signature matches the payload")]
    Mismatch,
    /// The timestamp is further from now than the tolerance.
    #[error("the timestamp {t} is {age} s from now, beyond the tolerance of {tolerance} s")]
    Stale {
        /// The header's timestamp.
        t: i64,
        /// Its distance from now, in seconds.
        age: i64,
        /// The tolerance.
        tolerance: i64,
    },
}

/// Verifies a header against a payload: some `v1` must be the HMAC (compared in constant
/// time), and, when `tolerance` is given, `t` must be within that many seconds of `now`.
pub fn verify(
    header: &str,
    payload: &[u8],
    secret: &[u8],
    tolerance: Option<i64>,
    now: i64,
) -> Result<(), SignatureError> {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        let (k, v) = part.split_once('=').ok_or(SignatureError::Malformed)?;
        match k.trim() {
            "t" => {
                t = Some(
                    v.trim()
                        .parse::<i64>()
                        .map_err(|_| SignatureError::Malformed)?,
                )
            }
            "v1" => sigs.push(v.trim()),
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    if sigs.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let ok = sigs.iter().any(|s| {
        decode_hex(s).is_some_and(|bytes| mac(secret, t, payload).verify_slice(&bytes).is_ok())
    });
    if !ok {
        return Err(SignatureError::Mismatch);
    }
    if let Some(tolerance) = tolerance {
        let age = now.saturating_sub(t).saturating_abs();
        if age > tolerance {
            return Err(SignatureError::Stale { t, age, tolerance });
        }
    }
    Ok(())
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies() {
        let h = sign(b"whsec_test", 1_700_000_000, b"{\"a\":1}");
        assert!(h.starts_with("t=1700000000,v1=") && !h.contains(' '));
        assert_eq!(
            verify(&h, b"{\"a\":1}", b"whsec_test", Some(300), 1_700_000_100),
            Ok(())
        );
        assert_eq!(
            verify(&h, b"{\"a\":2}", b"whsec_test", None, 0),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&h, b"{\"a\":1}", b"other", None, 0),
            Err(SignatureError::Mismatch)
        );
        assert!(matches!(
            verify(&h, b"{\"a\":1}", b"whsec_test", Some(300), 1_700_000_301),
            Err(SignatureError::Stale { .. })
        ));
        assert_eq!(
            verify("garbage", b"", b"k", None, 0),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn matches_a_known_vector() {
        // HMAC-SHA256(key="key", "0.payload"), computed independently with Python's hmac.
        assert_eq!(
            sign(b"key", 0, b"payload"),
            "t=0,v1=1a827d7c875d6f60942284fed1a77bc3cc3d35bf9af4897e4a67ad50a028c586"
        );
        // In parts, and again with the same signer: the same header.
        let signer = Signer::new(b"key");
        for _ in 0..2 {
            assert_eq!(
                signer.sign(0, &[b"pay", b"", b"load"]),
                "t=0,v1=1a827d7c875d6f60942284fed1a77bc3cc3d35bf9af4897e4a67ad50a028c586"
            );
        }
        assert!(signer.is_under(b"key") && !signer.is_under(b"other"));
        // Any second, signed in parts, verifies as the payload whole.
        for t in [i64::MIN, -5, 0, 1_700_000_000, i64::MAX] {
            let h = signer.sign(t, &[b"{\"a\"", b":1}"]);
            assert!(h.starts_with(&format!("t={t},v1=")), "{h}");
            assert_eq!(verify(&h, b"{\"a\":1}", b"key", None, 0), Ok(()));
        }
    }
}
