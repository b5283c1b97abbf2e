//! Ids the engine mints: pure functions of the input log (SPEC section 1).
//!
//! Every minted id is a prefix and the first 96 bits of a SHA-256 over its inputs, written
//! in lowercase hex. The inputs are separated by a byte that cannot occur in JSON text
//! (0x1f) so that ("ab","c") and ("a","bc") never collide.
//!
//! Owns: the shape of `loy_`, `ptx_`, `rdm_` and outbound event ids, and referral codes.
//! Must not: read state or decide when an id is minted (the modules that mint them do).

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

/// The hex text of the first 96 bits of a digest, after `prefix` (at most 4 bytes), on the
/// stack: a minted id costs one allocation, the one its caller keeps.
struct HexId {
    buf: [u8; 28],
    len: usize,
}

impl HexId {
    fn new(prefix: &str, d: &[u8; 32]) -> HexId {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        debug_assert_eq!(prefix.len(), 4, "every minted id's prefix is 4 bytes");
        let mut buf = [0u8; 28];
        let p = prefix.len().min(4);
        buf[..p].copy_from_slice(&prefix.as_bytes()[..p]);
        for (i, b) in d[..12].iter().enumerate() {
            buf[p + 2 * i] = HEX[usize::from(b >> 4)];
            buf[p + 2 * i + 1] = HEX[usize::from(b & 0xf)];
        }
        HexId { buf, len: p + 24 }
    }

    fn as_str(&self) -> &str {
        // ASCII: the prefixes are ASCII literals and the rest hex digits.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

fn hex_id(prefix: &str, parts: &[&str]) -> String {
    HexId::new(prefix, &digest(parts)).as_str().to_string()
}

/// [`hex_id`] of `(kind, source, n)`, the shape of every id minted from a record, with
/// `n` written without an allocation.
fn nth_id(prefix: &str, kind: &str, source: &str, n: u32) -> HexId {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    let mut v = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let mut h = Sha256::new();
    h.update(kind.as_bytes());
    h.update([0x1f]);
    h.update(source.as_bytes());
    h.update([0x1f]);
    h.update(&digits[i..]);
    HexId::new(prefix, &h.finalize().into())
}

/// A transaction's id as a lot keeps it: a minted `ptx_` id as its 96 bits, inline (no
/// allocation, nothing to read elsewhere in memory), any other text as it is. Written and
/// read as the id's text, so a stored lot is the same bytes either way.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum TxRef {
    /// `ptx_` and 24 lower-case hex digits.
    Minted([u8; 12]),
    /// Any other text (none is minted so; a state written by hand may hold one).
    Other(Box<str>),
}

impl TxRef {
    /// The reference to the transaction `id`.
    pub fn new(id: &str) -> TxRef {
        fn digit(c: u8) -> Option<u8> {
            match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                _ => None,
            }
        }
        let b = id.as_bytes();
        if b.len() == 28 && b.starts_with(b"ptx_") {
            let mut bits = [0u8; 12];
            let all = bits.iter_mut().enumerate().all(|(i, out)| {
                match (digit(b[4 + 2 * i]), digit(b[5 + 2 * i])) {
                    (Some(hi), Some(lo)) => {
                        *out = (hi << 4) | lo;
                        true
                    }
                    _ => false,
                }
            });
            if all {
                return TxRef::Minted(bits);
            }
        }
        TxRef::Other(id.into())
    }

    /// Whether this is the transaction `id`.
    pub fn is(&self, id: &str) -> bool {
        match self {
            TxRef::Minted(_) => self.text().as_str() == id,
            TxRef::Other(text) => &**text == id,
        }
    }

    /// The id's text.
    pub fn text(&self) -> TxText<'_> {
        match self {
            TxRef::Minted(bits) => {
                let mut d = [0u8; 32];
                d[..12].copy_from_slice(bits);
                TxText(Text::Minted(HexId::new("ptx_", &d)))
            }
            TxRef::Other(text) => TxText(Text::Other(text)),
        }
    }
}

/// [`TxRef::text`]: on the stack for a minted id.
pub struct TxText<'a>(Text<'a>);

enum Text<'a> {
    Minted(HexId),
    Other(&'a str),
}

impl TxText<'_> {
    /// The text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Text::Minted(h) => h.as_str(),
            Text::Other(t) => t,
        }
    }
}

impl std::fmt::Display for TxRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text().as_str())
    }
}

impl serde::Serialize for TxRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.text().as_str())
    }
}

impl<'de> serde::Deserialize<'de> for TxRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// Reads the text where the input has it, without copying it first.
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = TxRef;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a transaction id")
            }
            fn visit_str<E>(self, v: &str) -> Result<TxRef, E> {
                Ok(TxRef::new(v))
            }
        }
        d.deserialize_str(Text)
    }
}

/// The loyalty account of `customer` in `program`.
pub fn account_id(program: &str, customer: &str) -> crate::Sym {
    HexId::new("loy_", &digest(&["account", program, customer]))
        .as_str()
        .into()
}

/// The id of a record `loyalty import` writes for `customer` of `program` (`kind`:
/// `enroll` or `tier`): the same in every run of an import, so a second run is refused
/// as duplicates.
pub fn import_id(kind: &str, program: &str, customer: &str) -> String {
    hex_id("imp_", &["import", kind, program, customer])
}

/// The `n`-th points transaction caused by the record `source`.
pub fn transaction_id(source: &str, n: u32) -> String {
    nth_id("ptx_", "transaction", source, n)
        .as_str()
        .to_string()
}

/// [`transaction_id`] as the engine keeps it.
pub fn transaction_sym(source: &str, n: u32) -> crate::Sym {
    nth_id("ptx_", "transaction", source, n).as_str().into()
}

/// The `n`-th outbound event caused by the record `source`.
pub fn event_id(source: &str, n: u32) -> String {
    nth_id("evt_", "event", source, n).as_str().to_string()
}

/// The `n`-th redemption caused by the record `source`.
pub fn redemption_id(source: &str, n: u32) -> String {
    nth_id("rdm_", "redemption", source, n).as_str().to_string()
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

    /// A transaction's id kept by a lot reads back as the same text, minted or not, and is
    /// its own id only; stored, it is the id's text.
    #[test]
    fn tx_refs_keep_their_text() {
        let minted = transaction_id("evt_1", 3);
        let upper = format!("ptx_{}", minted[4..].to_ascii_uppercase());
        for id in [
            minted.as_str(),
            upper.as_str(),
            "ptx_x",
            "",
            "ptx_zzzzzzzzzzzzzzzzzzzzzzzz",
        ] {
            let r = TxRef::new(id);
            assert_eq!(r.to_string(), id);
            assert!(r.is(id));
            assert_eq!(
                serde_json::to_string(&r).unwrap(),
                serde_json::to_string(id).unwrap()
            );
            let back: TxRef = serde_json::from_str(&serde_json::to_string(id).unwrap()).unwrap();
            assert_eq!(back, r);
        }
        assert!(matches!(TxRef::new(&minted), TxRef::Minted(_)));
        assert!(matches!(TxRef::new(&upper), TxRef::Other(_)));
        assert!(!TxRef::new(&minted).is(&upper));
        assert!(!TxRef::new(&minted).is(&transaction_id("evt_1", 4)));
    }

    /// The ids minted from `(source, n)` are the general form's, for every width of `n`.
    #[test]
    fn nth_ids_are_the_general_form() {
        for n in [0, 1, 9, 10, 99, 100, 12_345, u32::MAX] {
            let text = n.to_string();
            assert_eq!(
                transaction_id("evt_x", n),
                hex_id("ptx_", &["transaction", "evt_x", &text])
            );
            assert_eq!(&*transaction_sym("evt_x", n), transaction_id("evt_x", n));
            assert_eq!(
                event_id("evt_x", n),
                hex_id("evt_", &["event", "evt_x", &text])
            );
            assert_eq!(
                redemption_id("evt_x", n),
                hex_id("rdm_", &["redemption", "evt_x", &text])
            );
        }
        // A fixed value, so that the general form cannot drift with it.
        assert_eq!(
            transaction_id("evt_1", 0),
            format!(
                "ptx_{}",
                &crate::output::hex32(&digest(&["transaction", "evt_1", "0"]))[..24]
            )
        );
    }
}
