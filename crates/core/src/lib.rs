//! The loyalty rule engine: a pure function from a log of records to a ledger.
//!
//! No I/O, no clock, no randomness, no floating point: the same log gives the same bytes on
//! any machine, in any run. The streaming service, `loyalty fold`, replay and the tests all
//! run this code.
//!
//! Map of the modules, in the order a record meets them:
//! - [`envelope`]: bytes to a typed [`envelope::Record`], or a rejection (`malformed`,
//!   `invalid`).
//! - [`config`]: the program config, validated whole.
//! - [`engine`]: [`engine::Engine::apply`], which decides the state-dependent rejections,
//!   moves the clock and dispatches a record to its rule, in SPEC order.
//! - [`clock`]: moving the clock, scheduling time-driven effects and handing each one, when
//!   it falls due, to its rule's module; [`schedule`] is the ordered set they wait in.
//! - [`conditions`], [`earning`], [`caps`], [`campaigns`], [`tiers`]: the rules of SPEC
//!   sections 4 and 5.
//! - [`enrolment`], [`lots`], [`refunds`], [`redemption`], [`referrals`], [`stamps`],
//!   [`transfers`], [`programs`]: the rules of SPEC sections 3 and 7, one module each.
//! - [`pending`], [`manual_tiers`]: pending points and manual tiers (SPEC section 13).
//! - [`ledger`]: posting transactions and minting events; the one place a balance moves.
//! - [`partition`]: the partition of a customer, and the messages one partition sends
//!   another (docs/scale-out.md).
//! - [`working_set`]: what a store needs to run the engine on some of the accounts.
//! - [`output`]: transactions, outbound events, rejections and account lines, with their
//!   JSON form; [`view`]: an account as `loyalty fold` prints it and the API answers it.
//! - [`fold`]: a whole log through the engine to JSON lines (`loyalty fold`).
//! - [`dec`], [`time`], [`ids`], [`vecmap`]: exact decimals, calendars in a time zone,
//!   minted ids, a small sorted map.
//! - [`state`]: what the engine carries from one record to the next.
#![deny(
    clippy::float_arithmetic,
    clippy::disallowed_methods,
    clippy::disallowed_macros
)]
#![warn(missing_docs)]

pub mod backtest;
pub mod campaigns;
pub mod caps;
pub mod clock;
pub mod conditions;
pub mod config;
pub mod dec;
pub mod earning;
pub mod engine;
pub mod enrolment;
pub mod envelope;
pub mod fold;
pub mod ids;
pub mod ledger;
pub mod lots;
pub mod manual_tiers;
pub mod output;
pub mod partition;
pub mod pending;
pub mod programs;
pub mod redemption;
pub mod referrals;
pub mod refunds;
pub mod schedule;
pub mod stamps;
pub mod state;
pub mod tiers;
pub mod time;
pub mod transfers;
pub mod vecmap;
pub mod view;
pub mod working_set;

/// A shared, immutable string: the ids and names the engine copies into many outputs (a
/// program, a customer, an account, a rule, a campaign, a transaction, a record's id).
/// Cloning one counts a reference and copies nothing; it prints and serialises as the
/// string it holds, so outputs and stored bytes are those of a `String`.
pub type Sym = std::sync::Arc<str>;

pub use config::{parse_config, Config, ConfigError, Program};
pub use engine::Engine;
pub use envelope::{Reason, Record, Rejection};
pub use output::Output;
