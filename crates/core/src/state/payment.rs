//! The payments the engine applied, kept for the refunds that may name them, and their
//! packed form (a million of them are held by a fold).
//!
//! Owns: what a payment awarded and how it is packed. Must not decide what a refund gives
//! back (`refunds`).

use serde::{Deserialize, Serialize};

use crate::Sym;

/// A payment the engine applied: what a refund may give back.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRecord {
    /// Minor units paid.
    pub amount: i64,
    /// Upper-case currency.
    pub currency: String,
    /// Minor units refunded so far.
    pub refunded: i64,
    /// The award transactions it caused, in order.
    pub awards: Vec<AwardRecord>,
    /// The accounts whose qualifying spend it added to.
    #[serde(default)]
    pub spend_accounts: Vec<Sym>,
    /// When it was paid (a refund comes off the spend of that time).
    #[serde(default)]
    pub created: i64,
}

/// One award of a payment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwardRecord {
    /// The account credited.
    pub account: Sym,
    /// The rule, or `None` for a campaign bonus.
    pub rule: Option<Sym>,
    /// Campaigns on the award.
    pub campaigns: Vec<Sym>,
    /// Points awarded.
    pub points: i64,
    /// Points given back so far.
    pub reversed: i64,
    /// The award transaction (its lots are taken back first).
    #[serde(default = "empty")]
    pub transaction: Sym,
    /// When it was awarded (a reversal comes off the qualifying points of that time).
    #[serde(default)]
    pub created: i64,
}

fn empty() -> Sym {
    "".into()
}

/// A [`PaymentRecord`] packed into bytes: varints and length-prefixed strings, a quarter of
/// the size of the record with its own allocations (a million payments held by a fold are
/// 400 MB less). Packing is deterministic, so two packs are equal when their records are.
///
/// A store keeps payments in these bytes: changing what [`PaymentRecord::pack`] writes makes
/// stored payments unreadable, and needs a new state format in the store (whose
/// pinned-bytes test fails until then).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedPayment(pub(in crate::state) Box<[u8]>);

impl PaymentRecord {
    /// The record packed.
    pub fn pack(&self) -> PackedPayment {
        let mut w = Vec::with_capacity(64 + 96 * self.awards.len());
        put_int(&mut w, self.amount);
        put_str(&mut w, &self.currency);
        put_int(&mut w, self.refunded);
        put_int(&mut w, self.created);
        put_uint(&mut w, self.spend_accounts.len() as u64);
        for a in &self.spend_accounts {
            put_str(&mut w, a);
        }
        put_uint(&mut w, self.awards.len() as u64);
        for a in &self.awards {
            put_str(&mut w, &a.account);
            match &a.rule {
                None => put_uint(&mut w, 0),
                Some(r) => {
                    put_uint(&mut w, 1);
                    put_str(&mut w, r);
                }
            }
            put_uint(&mut w, a.campaigns.len() as u64);
            for c in &a.campaigns {
                put_str(&mut w, c);
            }
            put_int(&mut w, a.points);
            put_int(&mut w, a.reversed);
            put_str(&mut w, &a.transaction);
            put_int(&mut w, a.created);
        }
        PackedPayment(w.into_boxed_slice())
    }
}

impl PackedPayment {
    /// The record it packs.
    pub fn unpack(&self) -> PaymentRecord {
        read(&mut Reader::new(&self.0))
    }

    /// The packed bytes, as a store keeps them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The record that `bytes` (the bytes of a [`PackedPayment`], as a store kept them)
    /// pack, or why they are not such bytes: a number or a string running past the end,
    /// more items than the bytes left could hold, a string that is not UTF-8, a rule marker
    /// other than 0 or 1, a number over 64 bits or not in its shortest form, or bytes left
    /// over. Whatever it accepts is what `pack` writes for the record it returns.
    pub fn read_stored(bytes: &[u8]) -> Result<PaymentRecord, &'static str> {
        let mut r = Reader::new(bytes);
        let p = read(&mut r);
        match (r.bad, r.rest.is_empty()) {
            (Some(why), _) => Err(why),
            (None, false) => Err("bytes after the record"),
            (None, true) => Ok(p),
        }
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never: a packed record has at least its amount.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn put_uint(w: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        w.push(v as u8 | 0x80);
        v >>= 7;
    }
    w.push(v as u8);
}

fn put_int(w: &mut Vec<u8>, v: i64) {
    put_uint(w, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_str(w: &mut Vec<u8>, s: &str) {
    put_uint(w, s.len() as u64);
    w.extend_from_slice(s.as_bytes());
}

/// The record a reader is at, field by field as [`PaymentRecord::pack`] writes them.
fn read(r: &mut Reader) -> PaymentRecord {
    let mut p = PaymentRecord {
        amount: r.int(),
        currency: r.string(),
        refunded: r.int(),
        created: r.int(),
        ..PaymentRecord::default()
    };
    // Each spend account takes at least a byte (its length), each award seven (a length and
    // six numbers).
    let n = r.count(1);
    p.spend_accounts = (0..n).map(|_| r.string().into()).collect();
    let n = r.count(7);
    p.awards = (0..n)
        .map(|_| AwardRecord {
            account: r.string().into(),
            rule: match r.uint() {
                0 => None,
                1 => Some(r.string().into()),
                _ => {
                    r.fail("a rule marker other than 0 or 1");
                    None
                }
            },
            campaigns: {
                let n = r.count(1);
                (0..n).map(|_| r.string().into()).collect()
            },
            points: r.int(),
            reversed: r.int(),
            transaction: r.string().into(),
            created: r.int(),
        })
        .collect();
    p
}

/// Reads what `put_*` wrote. Past the end, or on anything `put_*` does not write, it
/// reads zeros and empty strings rather than panic, and keeps the first such thing in
/// `bad` ([`PackedPayment::read_stored`] refuses the bytes then; bytes the engine packed
/// itself never have one).
struct Reader<'a> {
    rest: &'a [u8],
    bad: Option<&'static str>,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader {
            rest: bytes,
            bad: None,
        }
    }

    fn fail(&mut self, why: &'static str) {
        self.bad.get_or_insert(why);
    }

    /// A number of items, each of which takes at least `least` bytes: never more than the
    /// bytes left could hold, and none once the bytes are known bad (so that bad bytes
    /// cost no more memory than their size).
    fn count(&mut self, least: u64) -> u64 {
        let n = self.uint();
        let most = self.rest.len() as u64 / least;
        if n > most {
            self.fail("more items than the bytes left could hold");
        }
        match self.bad {
            Some(_) => 0,
            None => n.min(most),
        }
    }

    fn uint(&mut self) -> u64 {
        let mut v = 0u64;
        let mut shift = 0u32;
        loop {
            let Some((&b, rest)) = self.rest.split_first() else {
                self.fail("a number running past the end");
                return v;
            };
            self.rest = rest;
            let bits = u64::from(b & 0x7f);
            if shift > 63 || (shift == 63 && bits > 1) {
                self.fail("a number over 64 bits");
                return v;
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                if b == 0 && shift > 0 {
                    self.fail("a number not in its shortest form");
                }
                return v;
            }
            shift += 7;
        }
    }

    fn int(&mut self) -> i64 {
        let v = self.uint();
        ((v >> 1) as i64) ^ -((v & 1) as i64)
    }

    fn string(&mut self) -> String {
        let n = self.uint();
        if n > self.rest.len() as u64 {
            self.fail("a string running past the end");
        }
        let n = usize::try_from(n)
            .unwrap_or(usize::MAX)
            .min(self.rest.len());
        let (s, rest) = self.rest.split_at(n);
        self.rest = rest;
        match std::str::from_utf8(s) {
            Ok(s) => s.to_owned(),
            Err(_) => {
                self.fail("a string that is not UTF-8");
                String::from_utf8_lossy(s).into_owned()
            }
        }
    }
}
