//! Ids the engine mints: pure functions of the input log (SPEC section 1).
//!
//! Every minted id is a prefix and the first 96 bits of a SHA-256 over its inputs, written
//! in lowercase hex. The inputs are separated by a byte that cannot occur in JSON text
//! (0x1f) so that ("ab","c") and ("a","bc") never collide.
//!
//! Owns: the shape of `loy_`, `ptx_`, `rdm_` and outbound event ids, and referral codes.

use sha2::{Digest, Sha256};

fn digest(parts: &[&str]) -> [u8; 32] {
    let mut h = Sha256::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update([0x1f]);
        }
        h.update(p.as_bytes());
    }
    h.finalize().into()
}

fn hex_id(prefix: &str, parts: &[&str]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let d = digest(parts);
    let mut out = String::with_capacity(prefix.len() + 24);
    out.push_str(prefix);
    for b in &d[..12] {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    }
    out
}

/// The loyalty account of `customer` in `program`.
pub fn account_id(program: &str, customer: &str) -> crate::Sym {
    hex_id("loy_", &["account", program, customer]).into()
}

/// The id of a record `loyalty import` writes for `customer` of `program` (`kind`:
/// `enroll` or `tier`): the same in every run of an import, so a second run is refused
/// as duplicates.
pub fn import_id(kind: &str, program: &str, customer: &str) -> String {
    hex_id("imp_", &["import", kind, program, customer])
}

/// The `n`-th points transaction caused by the record `source`.
pub fn transaction_id(source: &str, n: u32) -> String {
    hex_id("ptx_", &["transaction", source, &n.to_string()])
}

/// The `n`-th outbound event caused by the record `source`.
pub fn event_id(source: &str, n: u32) -> String {
    hex_id("evt_", &["event", source, &n.to_string()])
}

/// The `n`-th redemption caused by the record `source`.
pub fn redemption_id(source: &str, n: u32) -> String {
    hex_id("rdm_", &["redemption", source, &n.to_string()])
}

/// The `n`-th message partition `from` sends because of the record `source` (the sending
/// partition is part of it: two partitions may each apply a record of one id).
pub fn message_id(from: u32, source: &str, n: u32) -> String {
    hex_id(
        "msg_",
        &["message", &from.to_string(), source, &n.to_string()],
    )
}

/// The referral code of an account: eight characters of an alphabet without look-alikes.
pub fn referral_code(account: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let d = digest(&["referral", account]);
    let mut bits: u64 = 0;
    for b in &d[..8] {
        bits = (bits << 8) | u64::from(*b);
    }
    (0..8)
        .map(|i| ALPHABET[((bits >> (i * 5)) & 31) as usize] as char)
        .collect()
}

/// The source name of a time-driven effect: what fell due, not the record that carried the
/// clock past it (SPEC section 6).
pub fn due_source(account: &str, kind: &str, due: i64, item: &str) -> String {
    format!("due:{account}:{kind}:{due}:{item}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_pure_and_distinct() {
        assert_eq!(account_id("prog_a", "cus_A"), account_id("prog_a", "cus_A"));
        assert_ne!(account_id("prog_a", "cus_A"), account_id("prog_b", "cus_A"));
        assert_ne!(account_id("prog_ab", "c"), account_id("prog_a", "bc"));
        let id = account_id("prog_a", "cus_A");
        assert!(id.starts_with("loy_") && id.len() == 28);
        assert_ne!(transaction_id("evt_1", 0), transaction_id("evt_1", 1));
        assert!(event_id("evt_1", 0).starts_with("evt_"));
        assert!(redemption_id("evt_1", 0).starts_with("rdm_"));
        let code = referral_code(&id);
        assert_eq!(code.len(), 8);
        assert_eq!(code, referral_code(&id));
    }
}
