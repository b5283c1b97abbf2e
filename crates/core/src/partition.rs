//! Partitions (SPEC section 10, `docs/scale-out.md`): which log partition a customer's
//! records belong to, and an engine's place among the partitions.
//!
//! An engine that folds one partition of a log of several holds only that partition's
//! customers. What it must do to a customer of another partition (a transfer's credit, or
//! giving a credit back) it does not do itself: it hands a message to that partition
//! ([`crate::Output::Message`]), a log record whose id is a pure function of what caused it,
//! and the other partition applies it once, recognising a second copy by that exact id.
//!
//! Owns: the partition function and the message record types. Must not decide what a
//! message does (`transfers` does).

/// The log partition of a key among `count`: FNV-1a of its bytes, so that every run, every
/// instance and every tool computes the same one (a client library's partitioner is never
/// asked).
pub fn of(key: &[u8], count: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in key {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % count.max(1)
}

/// The partition an engine folds, among how many.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partitioning {
    /// The partition this engine folds.
    pub me: u32,
    /// The log's partitions.
    pub count: u32,
}

impl Partitioning {
    /// The partition of a customer.
    pub fn of(&self, customer: &str) -> u32 {
        of(customer.as_bytes(), self.count)
    }

    /// Whether this engine's partition holds the customer.
    pub fn holds(&self, customer: &str) -> bool {
        self.of(customer) == self.me
    }
}

/// `loyalty.transfer.credit`: a transfer's points, sent from the sender's partition (which
/// wrote the `transfer_out`) to the receiver's.
pub const TRANSFER_CREDIT: &str = "loyalty.transfer.credit";
/// `loyalty.transfer.return`: a credit the receiver's partition could not take (no account),
/// sent back to the sender's.
pub const TRANSFER_RETURN: &str = "loyalty.transfer.return";

/// `loyalty.stock.request`: units of a reward with a stock, asked of the partition that
/// counts them ([`stock_owner`]) by the redeeming member's partition, which holds the cost.
pub const STOCK_REQUEST: &str = "loyalty.stock.request";
/// `loyalty.stock.granted`: the owner counted the units; the member's partition redeems.
pub const STOCK_GRANTED: &str = "loyalty.stock.granted";
/// `loyalty.stock.refused`: no stock left; the member's partition refuses `out_of_stock`.
pub const STOCK_REFUSED: &str = "loyalty.stock.refused";
/// `loyalty.stock.release`: granted units given back (the member could no longer pay).
pub const STOCK_RELEASE: &str = "loyalty.stock.release";

/// `loyalty.code.claim`: a new member's referral code, told to the partition that keeps
/// that code's holder ([`code_owner`]).
pub const CODE_CLAIM: &str = "loyalty.code.claim";
/// `loyalty.referral.convert`: a referee enrolled with a code made its first payment; told
/// to the code's partition, which knows the referrer.
pub const REFERRAL_CONVERT: &str = "loyalty.referral.convert";
/// `loyalty.referral.award`: the referral rules of one side (`role`: `referrer` or
/// `referee`), applied on that member's partition.
pub const REFERRAL_AWARD: &str = "loyalty.referral.award";

/// The record types only the engine writes to its log. Upstream may not produce them: the
/// sequencer refuses one from an input topic as `invalid`.
pub const INTERNAL: [&str; 9] = [
    TRANSFER_CREDIT,
    TRANSFER_RETURN,
    STOCK_REQUEST,
    STOCK_GRANTED,
    STOCK_REFUSED,
    STOCK_RELEASE,
    CODE_CLAIM,
    REFERRAL_CONVERT,
    REFERRAL_AWARD,
];

/// The partition that keeps who holds a referral code: the code space is split like the
/// customers, so that no partition needs every code.
pub fn code_owner(program: &str, code: &str, count: u32) -> u32 {
    of(code_key(program, code).as_bytes(), count)
}

/// The key of the messages to a referral code's partition: its partition is
/// [`code_owner`].
pub fn code_key(program: &str, code: &str) -> String {
    format!("{program}\u{1f}{code}")
}

/// The partition that counts a reward's stock: one per `(program, reward)`, so that units
/// are granted in one log's order and never oversold.
pub fn stock_owner(program: &str, reward: &str, count: u32) -> u32 {
    of(stock_key(program, reward).as_bytes(), count)
}

/// The key of the messages to a reward's stock owner: its partition is [`stock_owner`].
pub fn stock_key(program: &str, reward: &str) -> String {
    format!("{program}\u{1f}{reward}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values the streaming service has always written with (FNV-1a's published test
    /// vectors: "" and "a"), so that a log written before this module still maps its
    /// customers to the same partitions.
    #[test]
    fn fnv1a_is_stable() {
        assert_eq!(of(b"", 1_000_000), 0x811c_9dc5 % 1_000_000);
        assert_eq!(of(b"a", 1_000_000), 0xe40c_292c % 1_000_000);
        assert_eq!(of(b"cus_1", 1), 0);
        let p = Partitioning { me: 2, count: 6 };
        assert_eq!(p.holds("cus_1"), of(b"cus_1", 6) == 2);
    }
}
