//! The typed data of each input type (SPEC sections 2 and 13) and of the messages partitions
//! send each other: what [`super::parse`] produces, read by the rule modules.
//!
//! Owns: the shape of every record's data. Must not touch: parsing (in `fields`) or state.

use std::collections::BTreeMap;

use crate::time::Timestamp;

/// Which step of a referral across partitions a message is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ReferralStep {
    /// A code and its holder, to the code's partition.
    Claim,
    /// A referee's conversion, to the code's partition.
    Convert,
    /// The referrer's rules, on the referrer's partition.
    AwardReferrer,
    /// The referee's rules, on the referee's partition.
    AwardReferee,
}

/// A referral across partitions: what each step carries (the fields a step does not use
/// are empty).
#[derive(Clone, PartialEq, Eq, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ReferralMessage {
    /// The program.
    pub program: String,
    /// The referral code.
    pub code: String,
    /// The code's holder (a claim) or the referrer (an award): its customer.
    pub referrer: String,
    /// The referee's customer (a conversion, an award).
    pub referee: String,
    /// The record that caused it: the new member's enrolment, or the referee's payment.
    pub source: String,
}

/// Which step of a reward's stock across partitions a message is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum StockStep {
    /// `loyalty.stock.request`, to the owner.
    Request,
    /// `loyalty.stock.granted`, to the member's partition.
    Granted,
    /// `loyalty.stock.refused`, to the member's partition.
    Refused,
    /// `loyalty.stock.release`, to the owner.
    Release,
}

/// Units of a reward, for one redemption, as the partitions tell each other.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StockMessage {
    /// The program.
    pub program: String,
    /// The reward.
    pub reward: String,
    /// The redeeming customer.
    pub customer: String,
    /// Units.
    pub quantity: i64,
    /// The cost held for them.
    pub points: i64,
    /// The id of the `loyalty.redemption.create` record.
    pub source: String,
}

/// An event that concerns one customer.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Activity {
    /// `data.id` (the payment, invoice or subscription id), when present.
    pub object_id: Option<String>,
    /// `data.customer`.
    pub customer: String,
    /// `data.metadata.loyalty_account`, which wins over the customer.
    pub loyalty_account: Option<String>,
    /// Minor units.
    pub amount: Option<i64>,
    /// Upper-case ISO code.
    pub currency: Option<String>,
    /// The string values of `data.metadata`.
    pub metadata: BTreeMap<String, String>,
}

/// `payment.refunded`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Refund {
    /// The refund id.
    pub refund_id: String,
    /// The refunded payment's `data.id`.
    pub payment: String,
    /// `data.customer`.
    pub customer: String,
    /// Minor units refunded now.
    pub amount: i64,
    /// Upper-case ISO code.
    pub currency: String,
}

/// `referral.converted`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Referral {
    /// The member who referred.
    pub referrer: String,
    /// The member who was referred.
    pub referee: String,
    /// The code used, if given.
    pub code: Option<String>,
}

/// `loyalty.account.enroll`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Enroll {
    /// The customer.
    pub customer: String,
    /// The program.
    pub program: String,
    /// Another member's referral code.
    pub referral_code: Option<String>,
    /// `(month, day)`.
    pub birthday: Option<(u32, u32)>,
    /// Points to open the account with (SPEC section 13): 0 for none.
    pub opening_balance: i64,
}

/// `loyalty.points.adjust`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Adjust {
    /// The customer.
    pub customer: String,
    /// The program.
    pub program: String,
    /// Signed points.
    pub points: i64,
    /// Why.
    pub reason: String,
}

/// `loyalty.qualifying_activity.record`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Qualify {
    /// The customer.
    pub customer: String,
    /// The program.
    pub program: String,
    /// The qualifying amount.
    pub amount: i64,
    /// Why.
    pub reason: String,
    /// An outside reference.
    pub reference: Option<String>,
}

/// `loyalty.tier.set` (SPEC section 13): a tier granted by hand.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TierSet {
    /// The customer.
    pub customer: String,
    /// The program.
    pub program: String,
    /// The tier's name.
    pub tier: String,
    /// Until when it holds (default: one period length after the command).
    pub until: Option<Timestamp>,
    /// Why.
    pub reason: String,
}

/// `loyalty.redemption.create`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Redeem {
    /// The customer.
    pub customer: String,
    /// The program.
    pub program: String,
    /// The reward id.
    pub reward: String,
    /// Units (default 1).
    pub quantity: i64,
}

/// `loyalty.points.transfer`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Transfer {
    /// The program.
    pub program: String,
    /// The sending customer.
    pub from: String,
    /// The receiving customer.
    pub to: String,
    /// Points moved (positive).
    pub points: i64,
}

/// A transfer's credit or its return, as one partition tells another
/// ([`crate::partition`]): the transfer, the record that asked for it, and its
/// `transfer_out`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TransferMessage {
    /// The transfer.
    pub transfer: Transfer,
    /// The id of the `loyalty.points.transfer` record: the `source` of every effect.
    pub source: String,
    /// The sender's `transfer_out` transaction.
    pub transaction: String,
}
