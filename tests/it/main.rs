//! All integration tests, in one test binary (ripgrep's habit): the `loyalty` binary run as
//! users run it, the acceptance scenarios of `tests/scenarios/`, and property tests of the
//! engine's invariants.

mod api_reads;
mod backtest;
mod cli;
mod docs;
mod explain;
mod golden;
mod integrity;
mod layout;
mod lifecycle;
mod model;
mod partitions;
mod pending;
mod properties;
mod scenarios;
mod support;
mod verify;
mod working_set;
