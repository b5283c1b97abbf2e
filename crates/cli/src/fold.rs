//! `loyalty fold`: a file of envelopes through the engine, printed as JSON lines.
//!
//! The work is split over three threads that meet in bounded channels: a reader reads
//! lines and parses them ([`loyalty_core::fold::parse_line`], which depends on the bytes
//! alone), the calling thread applies them to the engine in log order and renders the
//! JSON lines, and a printer writes them. The bytes printed are exactly those of
//! [`loyalty_core::fold::fold`]: a test compares the two. (The engine is the bottleneck:
//! the other two threads take a quarter of the work off it.)
//!
//! Owns: the threads, reading, writing, and what a read or write error stops.

use std::io::{self, BufRead, Write};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use anyhow::{bail, Context, Result};
use loyalty_core::fold::parse_line;
use loyalty_core::output::AccountView;
use loyalty_core::time::Timestamp;
use loyalty_core::{Engine, Output, Record, Rejection};

/// Records a chunk: large enough that a hand-over costs little per record, small enough
/// that the channels hold a few megabytes.
const CHUNK: usize = 1024;
/// Chunks in flight between two threads.
const DEPTH: usize = 4;

type Parsed = Result<Record, Rejection>;

/// What the printer is handed, in order.
enum Lines {
    /// Output lines, printed by the folding thread (handing the outputs over instead costs
    /// more in freeing them on another thread than it saves).
    Bytes(Vec<u8>),
    Accounts(Vec<AccountView>),
}

/// Folds `events` through `engine`, then moves the clock to `until` if given, and writes
/// every line to `out`. With `until`, nothing is written unless the whole fold succeeds
/// (an `--until` before the end clock is refused with nothing printed).
pub fn run(
    engine: &mut Engine,
    events: &Path,
    until: Option<Timestamp>,
    out: &mut (impl Write + Send),
) -> Result<()> {
    let cannot_read = || format!("cannot read the events file {}", events.display());
    let file = std::fs::File::open(events).with_context(cannot_read)?;
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    tracing::info!(bytes, "folding");
    // Nothing is persisted: the engine need not list what changed.
    engine.track_changes(false);
    let (parsed_tx, parsed_rx) = sync_channel::<io::Result<Vec<Parsed>>>(DEPTH);
    let (lines_tx, lines_rx) = sync_channel::<Lines>(DEPTH);
    let sink = &mut *out;
    let (folded, printed) = std::thread::scope(|s| {
        s.spawn(move || read(io::BufReader::with_capacity(1 << 20, file), parsed_tx));
        let hold = until.is_some();
        let printer = s.spawn(move || match hold {
            true => print(lines_rx, Vec::new()).map(Some),
            false => print(lines_rx, sink).map(|_| None),
        });
        let folded = fold(engine, parsed_rx, until, &lines_tx);
        drop(lines_tx);
        let printed = printer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the printer panicked")));
        (folded, printed)
    });
    match folded {
        Folded::ReadError(e) => return Err(e).with_context(cannot_read),
        Folded::Clock(e) => bail!("--until: {e}"),
        Folded::Done | Folded::PrinterGone => {}
    }
    let printed = printed.and_then(|held| match held {
        Some(held) => out.write_all(&held).and_then(|()| out.flush()),
        None => Ok(()),
    });
    match printed {
        Ok(()) => Ok(()),
        // A closed pipe (`loyalty fold ... | head`) is the reader's choice, not a failure.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e).context("cannot write to standard output"),
    }
}

/// How the folding thread ended.
enum Folded {
    Done,
    /// The events file could not be read: nothing more is printed (not the account lines
    /// of a state that lacks the rest of the log).
    ReadError(io::Error),
    /// `--until` is before the clock.
    Clock(loyalty_core::engine::ClockError),
    /// The printer stopped (its error says why).
    PrinterGone,
}

/// Reads lines and parses them, a chunk at a time, until the end, a read error, or the
/// folding thread going away.
fn read(mut reader: impl BufRead, to: SyncSender<io::Result<Vec<Parsed>>>) {
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                if let Some(parsed) = parse_line(&line) {
                    chunk.push(parsed);
                }
                if chunk.len() == CHUNK {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                    if to.send(Ok(full)).is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                // What was read before the error is folded and printed, then nothing more.
                if !chunk.is_empty() && to.send(Ok(std::mem::take(&mut chunk))).is_err() {
                    return;
                }
                let _ = to.send(Err(e));
                return;
            }
        }
    }
    if !chunk.is_empty() {
        let _ = to.send(Ok(chunk));
    }
}

/// Applies every parsed record in order and hands the outputs on; then `until`, then the
/// account lines.
fn fold(
    engine: &mut Engine,
    from: Receiver<io::Result<Vec<Parsed>>>,
    until: Option<Timestamp>,
    to: &SyncSender<Lines>,
) -> Folded {
    for chunk in from.iter() {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => return Folded::ReadError(e),
        };
        let mut out = Vec::with_capacity(chunk.len() * 3);
        let mut text = Vec::with_capacity(chunk.len() * 800);
        for parsed in chunk {
            engine.apply_parsed(parsed, &mut out);
            render(out.drain(..), &mut text);
        }
        if to.send(Lines::Bytes(text)).is_err() {
            // Nothing more can be printed, but a file that cannot be read is still the
            // error to report (`loyalty fold ... | head` on a failing disk exits non-zero):
            // read the rest.
            for chunk in from.iter() {
                if let Err(e) = chunk {
                    return Folded::ReadError(e);
                }
            }
            return Folded::PrinterGone;
        }
    }
    // By default the clock at the end of the log: what is already due there is carried out.
    if let Some(until) = until.or(engine.clock()) {
        let mut out = Vec::new();
        if let Err(e) = engine.advance_to(until, &mut out) {
            return Folded::Clock(e);
        }
        let mut text = Vec::new();
        render(out, &mut text);
        if to.send(Lines::Bytes(text)).is_err() {
            return Folded::PrinterGone;
        }
    }
    let mut accounts = engine.accounts();
    loop {
        let chunk: Vec<AccountView> = accounts.by_ref().take(CHUNK).collect();
        if chunk.is_empty() {
            return Folded::Done;
        }
        if to.send(Lines::Accounts(chunk)).is_err() {
            return Folded::PrinterGone;
        }
    }
}

/// Writes every line it is handed to `out`, and gives `out` back. (With `--until`, `out`
/// is a buffer that `run` prints only when the whole fold succeeded.)
fn print<W: Write>(from: Receiver<Lines>, out: W) -> io::Result<W> {
    let mut w = io::BufWriter::with_capacity(1 << 16, out);
    for lines in from.iter() {
        match lines {
            Lines::Bytes(b) => w.write_all(&b)?,
            Lines::Accounts(accounts) => {
                for a in accounts {
                    write_line(&mut w, &a.to_json_line())?;
                }
            }
        }
    }
    w.into_inner().map_err(io::IntoInnerError::into_error)
}

/// Appends the JSON line of each output to `text`.
fn render(outputs: impl IntoIterator<Item = Output>, text: &mut Vec<u8>) {
    for o in outputs {
        o.write_json_line(text);
        text.push(b'\n');
    }
}

fn write_line(w: &mut impl Write, line: &str) -> io::Result<()> {
    w.write_all(line.as_bytes())?;
    w.write_all(b"\n")
}
