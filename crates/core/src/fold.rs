//! The offline fold (SPEC section 9): a log through the engine, as JSON lines.
//!
//! The caller reads the file and writes the lines; this module only decides what they are,
//! so the CLI, the tests and the benchmarks print the same bytes.
//!
//! Owns: skipping blank lines, `--until`, the order of the account lines.

use crate::engine::{ClockError, Engine};
use crate::output::Output;
use crate::time::Timestamp;

/// Folds `records` (one envelope a line; blank lines skipped) through `engine`, then moves
/// the clock to `until` if given, and passes every output line, then every account line,
/// to `emit` (without newlines). Refused, before anything is emitted for it, when `until`
/// is before the clock at the end of the log.
pub fn fold<R: AsRef<[u8]>>(
    engine: &mut Engine,
    records: impl IntoIterator<Item = R>,
    until: Option<Timestamp>,
    mut emit: impl FnMut(&str),
) -> Result<(), ClockError> {
    // Nothing is persisted: the engine need not list what changed.
    engine.track_changes(false);
    let mut out: Vec<Output> = Vec::new();
    for line in records {
        let line = line.as_ref();
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        engine.apply(line, &mut out);
        for o in out.drain(..) {
            emit(&o.to_json_line());
        }
    }
    if let Some(until) = until {
        engine.advance_to(until, &mut out)?;
        for o in out.drain(..) {
            emit(&o.to_json_line());
        }
    }
    for account in engine.accounts() {
        emit(&account.to_json_line());
    }
    Ok(())
}

/// Folds a whole log held in memory and returns the printed text (a line each, newline
/// terminated). For tests and tools.
pub fn fold_to_string(
    engine: &mut Engine,
    log: &[u8],
    until: Option<Timestamp>,
) -> Result<String, ClockError> {
    let mut text = String::new();
    fold(engine, log.split(|b| *b == b'\n'), until, |line| {
        text.push_str(line);
        text.push('\n');
    })?;
    Ok(text)
}
