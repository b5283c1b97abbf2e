//! `loyalty fold`'s physical reference: the least work any fold of a log file must do. It
//! reads the file line by line, parses each envelope with serde into a typed struct
//! (borrowing the strings from the line), keeps a balance per customer in a hash map, and
//! writes two JSON lines per record (one like a transaction, one like an event), serialized
//! with serde_json. No rules, no validation beyond the types, no account lines at the end.
//!
//! Run by `benches/fold.sh`, beside `loyalty fold` on the same file, or by hand:
//!
//!     cargo bench --bench fold_reference -- load.jsonl > /dev/null
//!
//! Without a file it says so and exits (a plain `cargo bench` has none). It prints the
//! records read and the seconds taken on standard error.
//!
//! For a fair comparison it runs on the `loyalty` binary's allocator, tuned the same way
//! (`src/main.rs`), and keys its map with the engine's hasher (FxHash).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufWriter, Write};
use std::time::Instant;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The binary's allocator options, for a fair comparison with `loyalty fold`.
mod allocator;

/// One input record. `Cow` borrows from the line unless a string holds escapes.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    created: Cow<'a, str>,
    #[serde(borrow)]
    data: Data<'a>,
}

/// The fields of `data` the loadgen's records carry (payments, refunds, adjustments,
/// redemptions); the others (`metadata`) are skipped by the parser.
#[derive(Deserialize)]
struct Data<'a> {
    #[serde(borrow)]
    customer: Cow<'a, str>,
    #[serde(default)]
    amount: Option<i64>,
    #[serde(borrow, default)]
    currency: Option<Cow<'a, str>>,
    #[serde(default)]
    points: Option<i64>,
}

/// The transaction-like line.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Transaction<'a> {
    kind: &'static str,
    id: &'a str,
    customer: &'a str,
    #[serde(rename = "type")]
    kind_of: &'static str,
    points: i64,
    balance_after: i64,
    currency: Option<&'a str>,
    source: &'a str,
    created: &'a str,
}

/// The event-like line.
#[derive(Serialize)]
struct Event<'a> {
    kind: &'static str,
    id: &'a str,
    #[serde(rename = "type")]
    kind_of: &'static str,
    created: &'a str,
    source: &'a str,
    data: EventData<'a>,
}

#[derive(Serialize)]
struct EventData<'a> {
    customer: &'a str,
    points: i64,
    balance: i64,
    transaction: &'a str,
}

/// The points a record moves, the type of the transaction and that of the event.
fn points(env: &Envelope<'_>) -> (i64, &'static str, &'static str) {
    let amount = env.data.amount.unwrap_or(0);
    match env.kind.as_ref() {
        "payment.completed" => (amount / 100, "award", "loyalty.points.earned"),
        "payment.refunded" => (-(amount / 100), "refund", "loyalty.points.reversed"),
        "loyalty.points.adjust" => (
            env.data.points.unwrap_or(0),
            "adjustment",
            "loyalty.points.adjusted",
        ),
        _ => (0, "other", "loyalty.points.unchanged"),
    }
}

fn main() -> io::Result<()> {
    allocator::tune();
    // Cargo passes `--bench`; the file is the first argument that is not an option.
    let Some(path) = std::env::args().skip(1).find(|a| !a.starts_with("--")) else {
        eprintln!("fold_reference: no log file given (benches/fold.sh passes one); nothing to do");
        return Ok(());
    };
    let start = Instant::now();
    let file = std::fs::File::open(&path)?;
    let mut reader = io::BufReader::with_capacity(1 << 20, file);
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut balances: FxHashMap<String, i64> = FxHashMap::default();
    let mut line = String::new();
    let (mut tx_id, mut evt_id) = (String::new(), String::new());
    let (mut records, mut unreadable) = (0u64, 0u64);
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let Ok(env) = serde_json::from_str::<Envelope<'_>>(line.trim_end()) else {
            unreadable += 1;
            continue;
        };
        records += 1;
        let (points, tx_type, event_type) = points(&env);
        let customer = env.data.customer.as_ref();
        let balance = match balances.get_mut(customer) {
            Some(b) => b,
            None => balances.entry(customer.to_owned()).or_insert(0),
        };
        *balance += points;
        let balance = *balance;
        tx_id.clear();
        evt_id.clear();
        let _ = write!(tx_id, "ptx_{records:024x}");
        let _ = write!(evt_id, "evt_{records:024x}");
        let tx = Transaction {
            kind: "transaction",
            id: &tx_id,
            customer,
            kind_of: tx_type,
            points,
            balance_after: balance,
            currency: env.data.currency.as_deref(),
            source: &env.id,
            created: &env.created,
        };
        serde_json::to_writer(&mut out, &tx)?;
        out.write_all(b"\n")?;
        let event = Event {
            kind: "event",
            id: &evt_id,
            kind_of: event_type,
            created: &env.created,
            source: &env.id,
            data: EventData {
                customer,
                points,
                balance,
                transaction: &tx_id,
            },
        };
        serde_json::to_writer(&mut out, &event)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    eprintln!(
        "fold_reference: {records} records ({unreadable} unreadable), {} customers, {:.2} s",
        balances.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
