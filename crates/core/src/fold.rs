//! The offline fold (SPEC section 9): a log through the engine, as JSON lines.
//!
//! The caller reads the file and writes the lines; this module only decides what they are,
//! so the CLI, the tests and the benchmarks print the same bytes.
//!
//! Owns: skipping blank lines, `--until`, the order of the account lines. Must not: read
//! or write files, or apply a rule.

use crate::engine::{ClockError, Engine};
use crate::envelope::{self, Record, Rejection};
use crate::output::Output;
use crate::time::Timestamp;

/// One line of a log as the fold reads it: `None` for a blank line (skipped), otherwise the
/// record or the reason it is refused before the engine sees it. It depends on the bytes
/// alone, so a caller may parse ahead of the engine (on a thread of its own) and hand the
/// results to [`Engine::apply_parsed`] in log order: the output is the same as [`fold`]'s.
pub fn parse_line(line: &[u8]) -> Option<Result<Record, Rejection>> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    Some(envelope::parse(line))
}

/// Folds `records` (one envelope a line; blank lines skipped) through `engine`, then moves
/// the clock to `until` (by default the clock at the end of the log, carrying out what is
/// already due there), and passes every output line, then every account line,
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
        let Some(parsed) = parse_line(line.as_ref()) else {
            continue;
        };
        engine.apply_parsed(parsed, &mut out);
        for o in out.drain(..) {
            emit(&o.to_json_line());
        }
    }
    // The state at the end is the state at `until`, by default the clock: effects already
    // due there (a late record's lot that expired already) are carried out first.
    if let Some(until) = until.or(engine.clock()) {
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
