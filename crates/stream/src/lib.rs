//! The Kafka edge of the loyalty engine.
//!
//! Upstream topics are sequenced into one log topic of the engine's own ([`service`]:
//! every input record enters the log once, carrying its source in headers); the log is
//! folded through the pure engine into RocksDB ([`folder`], [`loyalty_store`]), one atomic
//! write batch per batch of records; what the fold emits is published from an outbox with
//! an idempotent producer, signed ([`signature`], [`outbox`]), and removed from the outbox
//! only once delivery is acknowledged. Replay ([`replay`]) folds the same log into a new
//! state directory with the same code.
//!
//! Owns: Kafka clients, topics, headers, signatures. Must not reach into RocksDB except
//! through `loyalty-store`.

pub mod error;
pub mod failpoint;
pub mod folder;
pub mod group;
pub mod instances;
pub mod logrec;
pub mod metrics;
pub mod outbox;
pub mod replay;
pub mod service;
pub mod signature;
pub mod topics;
pub mod watermark;

use std::time::Duration;

/// How outbound values are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The JSON envelope (default).
    Json,
    /// The protobuf `Envelope` of `proto/loyalty.proto`.
    Protobuf,
}

/// Everything the streaming service is configured with.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `host:port[,host:port]`.
    pub brokers: String,
    /// Upstream topics to consume.
    pub input_topics: Vec<String>,
    /// Partitions of each input topic the engine creates when missing.
    pub input_partitions: i32,
    /// The engine's own log.
    pub log_topic: String,
    /// Partitions of the log (records are partitioned by customer).
    pub log_partitions: i32,
    /// Rejected input.
    pub dlq_topic: String,
    /// Prefix of the outbound topics (each named after its event type).
    pub output_prefix: String,
    /// The HMAC key of outbound signatures.
    pub signing_secret: Vec<u8>,
    /// Outbound encoding.
    pub format: Format,
    /// How often the engine writes a `clock.tick` into its log.
    pub tick_interval: Duration,
    /// How far ahead of the wall clock a record's `created` may be.
    pub max_skew: Duration,
    /// Records per batch.
    pub batch_size: usize,
    /// Accounts the engine keeps in memory between batches.
    pub account_cache: usize,
    /// The programs of `--config`, as JSON texts, in file order.
    pub programs: Vec<(String, String)>,
    /// The SHA-256 (hex) of the `--config` file's bytes: the file is applied at start only
    /// when it differs from the file last applied (SPEC section 10).
    pub config_digest: Option<String>,
    /// The compacted topic where a group's instances announce what they serve (created
    /// with the others when set: [`group::instances_topic`]).
    pub instances_topic: Option<String>,
}

/// The digest `--config` files are told apart by: SHA-256 of the bytes, in hex.
pub fn config_digest(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What separates a configured program record's id from the digest of its file:
/// `cfg_{program}_{revision}_{nanos}.sha256-{digest}`.
pub const CONFIG_ID_MARK: &str = ".sha256-";

impl Settings {
    /// The defaults of SPEC section 10, for `brokers`.
    pub fn new(brokers: &str) -> Settings {
        Settings {
            brokers: brokers.to_string(),
            input_topics: [
                "payment.completed",
                "payment.refunded",
                "invoice.paid",
                "subscription.created",
                "referral.converted",
                "loyalty.commands",
            ]
            .map(String::from)
            .to_vec(),
            input_partitions: 1,
            log_topic: "loyalty.log".into(),
            log_partitions: 1,
            dlq_topic: "loyalty.dlq".into(),
            output_prefix: String::new(),
            signing_secret: Vec::new(),
            format: Format::Json,
            tick_interval: Duration::from_secs(60),
            max_skew: Duration::from_secs(300),
            batch_size: 2000,
            account_cache: folder::DEFAULT_ACCOUNT_CACHE,
            programs: Vec::new(),
            config_digest: None,
            instances_topic: None,
        }
    }

    /// The outbound topic of an event type.
    pub fn output_topic(&self, event_type: &str) -> String {
        format!("{}{}", self.output_prefix, event_type)
    }

    /// Every outbound topic.
    pub fn output_topics(&self) -> Vec<String> {
        OUTBOUND_TYPES
            .iter()
            .map(|t| self.output_topic(t))
            .collect()
    }
}

/// The outbound event types of SPEC section 8.
pub const OUTBOUND_TYPES: [&str; 13] = [
    "loyalty.points.vested",
    "loyalty.account.created",
    "loyalty.points.earned",
    "loyalty.points.adjusted",
    "loyalty.points.reversed",
    "loyalty.points.expiring",
    "loyalty.points.expired",
    "loyalty.reward.redeemed",
    "loyalty.redemption.rejected",
    "loyalty.points.transferred",
    "loyalty.tier.changed",
    "loyalty.stamp_card.completed",
    "loyalty.cashback.earned",
];
