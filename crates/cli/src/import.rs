//! `loyalty import` (SPEC section 13): moves an existing program's members in. Each row of
//! a CSV file (with a header) or of a JSON-lines file becomes one `loyalty.account.enroll`
//! (with its `openingBalance` and `birthday`) and, where the row gives a tier, one
//! `loyalty.tier.set`, produced to the commands topic keyed by the customer. Their ids
//! derive from the program and the customer, so a second run of the same import is
//! refused by the engine as duplicates and enrols nobody twice.
//!
//! A bad row is reported with its line number and reason and sends nothing; the good rows
//! are imported. Exit code 0 when every row was good, 1 when some were bad (the good ones
//! imported), 2 when nothing could be imported (an argument, the file, the header, the
//! broker).

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use loyalty_core::time::Timestamp;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext};
use serde_json::{json, Value};

/// Options of `loyalty import`.
#[derive(Args, Debug, Clone)]
pub struct ImportArgs {
    /// Bootstrap brokers, `host:port[,host:port]` (not needed with `--dry-run`).
    #[arg(long, env = "LOYALTY_BROKERS", required_unless_present = "dry_run")]
    pub brokers: Option<String>,
    /// The program the members join.
    #[arg(long)]
    pub program: String,
    /// The members: CSV with a header row (`customer`, and any of `birthday`,
    /// `openingBalance`, `tier`), or JSON lines (one object a line with those keys).
    pub file: PathBuf,
    /// The commands topic the engine reads.
    #[arg(long, default_value = "loyalty.commands")]
    pub topic: String,
    /// The file's format (default: `jsonl` for a `.jsonl`, `.ndjson` or `.json` file, or a
    /// file whose first character is `{`; else `csv`).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// The program config the engine runs with: with it, the program and every row's tier
    /// are checked here, so that a row with an unknown tier is reported and sends nothing
    /// (without it the engine refuses such a `loyalty.tier.set` on its own, after the
    /// member was enrolled).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The records' `created` (RFC 3339; default: now).
    #[arg(long)]
    pub created: Option<String>,
    /// Check the file and report its bad rows; send nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// The format of an import file.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object a line.
    Jsonl,
}

/// One member to import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The line it was on (1-based; the header is line 1 of a CSV file).
    pub line: u64,
    /// The customer.
    pub customer: String,
    /// `MM-DD`.
    pub birthday: Option<String>,
    /// Points to open the account with.
    pub opening_balance: Option<i64>,
    /// The tier to set by hand.
    pub tier: Option<String>,
}

/// A row that cannot be imported: its line and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRow {
    /// The line (1-based).
    pub line: u64,
    /// Why, naming the field.
    pub reason: String,
}

/// The columns (and JSON keys) a row may have.
const FIELDS: [&str; 4] = ["customer", "birthday", "openingBalance", "tier"];

/// The largest opening balance the engine takes (its bound on amounts).
const MAX_POINTS: i64 = 1_000_000_000_000_000;

/// What a program allows a row to name: its tiers (`None`: the program has none).
pub type Tiers = Option<Vec<String>>;

/// Checks one row's fields; `tiers` when the program's are known.
fn member(
    line: u64,
    customer: Option<&str>,
    birthday: Option<&str>,
    opening: Option<&str>,
    tier: Option<&str>,
    tiers: Option<&Tiers>,
) -> Result<Member, BadRow> {
    let bad = |reason: String| BadRow { line, reason };
    let customer = customer
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| bad("customer: missing".into()))?;
    let birthday = birthday.map(str::trim).filter(|b| !b.is_empty());
    if let Some(b) = birthday {
        if loyalty_core::config::parse_month_day(b).is_none() {
            return Err(bad(format!(
                "birthday: {b:?} is not a month and day \"MM-DD\""
            )));
        }
    }
    let opening = match opening.map(str::trim).filter(|o| !o.is_empty()) {
        None => None,
        Some(o) => match o.parse::<i64>() {
            Ok(n) if (0..=MAX_POINTS).contains(&n) => Some(n),
            _ => {
                return Err(bad(format!(
                    "openingBalance: {o:?} is not a whole number of points from 0 to 10^15"
                )))
            }
        },
    };
    let tier = tier.map(str::trim).filter(|t| !t.is_empty());
    if let (Some(t), Some(known)) = (tier, tiers) {
        match known {
            None => return Err(bad(format!("tier: {t:?}, but the program has no tiers"))),
            Some(names) if !names.iter().any(|n| n == t) => {
                return Err(bad(format!(
                    "tier: the program has no tier {t:?} (it has {})",
                    names.join(", ")
                )))
            }
            Some(_) => {}
        }
    }
    Ok(Member {
        line,
        customer: customer.to_string(),
        birthday: birthday.map(str::to_string),
        opening_balance: opening,
        tier: tier.map(str::to_string),
    })
}

/// Reads every row of `input`: the members to import and the bad rows, in file order. A
/// customer on two rows is imported from the first; the second is a bad row. `Err` when
/// the file as a whole cannot be read (no `customer` column, an unknown column, not text).
pub fn read_rows(
    input: &[u8],
    format: Format,
    tiers: Option<&Tiers>,
    mut each: impl FnMut(Result<Member, BadRow>, u64),
) -> Result<()> {
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut deliver = |row: Result<Member, BadRow>, offset: u64| {
        let row = row.and_then(|m| match seen.get(&m.customer) {
            Some(first) => Err(BadRow {
                line: m.line,
                reason: format!("customer: {:?} is on line {first} already", m.customer),
            }),
            None => {
                seen.insert(m.customer.clone(), m.line);
                Ok(m)
            }
        });
        each(row, offset);
    };
    match format {
        Format::Csv => {
            let mut r = csv::ReaderBuilder::new()
                .has_headers(true)
                .flexible(true)
                .from_reader(input);
            // Lines counted here: the reader's own count is off after a blank line, which
            // it skips.
            let mut lines = Lines::default();
            let header = r
                .headers()
                .context("cannot read the header row")?
                .iter()
                .map(|h| h.trim().trim_start_matches('\u{feff}').to_string())
                .collect::<Vec<_>>();
            if let Some(h) = header.iter().find(|h| !FIELDS.contains(&h.as_str())) {
                bail!(
                    "the header names a column {h:?}: the columns are {}",
                    FIELDS.join(", ")
                );
            }
            let col = |name: &str| header.iter().position(|h| h == name);
            let Some(c_customer) = col("customer") else {
                bail!("the header has no \"customer\" column");
            };
            let (c_birthday, c_opening, c_tier) =
                (col("birthday"), col("openingBalance"), col("tier"));
            let mut rec = csv::StringRecord::new();
            loop {
                match r.read_record(&mut rec) {
                    Ok(false) => break,
                    Ok(true) => {
                        let offset = rec.position().map_or(0, |p| p.byte());
                        let pos = lines.at(input, offset);
                        // A blank line is no row.
                        if rec.len() == 1 && rec.get(0).is_some_and(|f| f.trim().is_empty()) {
                            continue;
                        }
                        let row = if rec.len() != header.len() {
                            Err(BadRow {
                                line: pos,
                                reason: format!(
                                    "{} fields, where the header has {}",
                                    rec.len(),
                                    header.len()
                                ),
                            })
                        } else {
                            let get = |c: Option<usize>| c.and_then(|c| rec.get(c));
                            member(
                                pos,
                                get(Some(c_customer)),
                                get(c_birthday),
                                get(c_opening),
                                get(c_tier),
                                tiers,
                            )
                        };
                        deliver(row, offset);
                    }
                    Err(e) => {
                        let offset = e.position().map_or(0, |p| p.byte());
                        let line = lines.at(input, offset);
                        if let csv::ErrorKind::Utf8 { .. } = e.kind() {
                            let reason = "not UTF-8 text".to_string();
                            deliver(Err(BadRow { line, reason }), offset);
                            continue;
                        }
                        return Err(e).context(format!("cannot read line {line}"));
                    }
                }
            }
        }
        Format::Jsonl => {
            let mut r = input;
            let mut buf = Vec::new();
            let (mut line, mut offset) = (0u64, 0u64);
            loop {
                buf.clear();
                let n = r
                    .read_until(b'\n', &mut buf)
                    .context("cannot read the file")?;
                if n == 0 {
                    break;
                }
                line += 1;
                offset += n as u64;
                let text = match std::str::from_utf8(&buf) {
                    Ok(t) => t.trim(),
                    Err(_) => {
                        let reason = "not UTF-8 text".to_string();
                        deliver(Err(BadRow { line, reason }), offset);
                        continue;
                    }
                };
                if text.is_empty() {
                    continue;
                }
                deliver(json_row(line, text, tiers), offset);
            }
        }
    }
    Ok(())
}

/// Line numbers of byte offsets, counted as the offsets grow.
#[derive(Default)]
struct Lines {
    /// Where counting stopped, and the line there.
    at: usize,
    line: u64,
}

impl Lines {
    /// The line of the first character at or after `offset` that is not a line break
    /// (where a record starts, past the blank lines before it).
    fn at(&mut self, text: &[u8], offset: u64) -> u64 {
        let mut to = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(text.len());
        while to < text.len() && matches!(text[to], b'\n' | b'\r') {
            to += 1;
        }
        if to < self.at {
            *self = Lines::default();
        }
        self.line += text[self.at..to].iter().filter(|b| **b == b'\n').count() as u64;
        self.at = to;
        self.line + 1
    }
}

/// One JSON line.
fn json_row(line: u64, text: &str, tiers: Option<&Tiers>) -> Result<Member, BadRow> {
    let bad = |reason: String| BadRow { line, reason };
    let v: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let Value::Object(m) = v else {
        return Err(bad("not a JSON object".into()));
    };
    if let Some(k) = m.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(bad(format!(
            "{k}: not a field of a member (the fields are {})",
            FIELDS.join(", ")
        )));
    }
    let text_of = |k: &str| -> Result<Option<String>, BadRow> {
        match m.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if k != "openingBalance" => Ok(Some(s.clone())),
            Some(Value::Number(n)) if k == "openingBalance" => Ok(Some(n.to_string())),
            Some(_) => Err(bad(format!(
                "{k}: must be a {}",
                if k == "openingBalance" {
                    "whole number"
                } else {
                    "string"
                }
            ))),
        }
    };
    let (c, b, o, t) = (
        text_of("customer")?,
        text_of("birthday")?,
        text_of("openingBalance")?,
        text_of("tier")?,
    );
    member(
        line,
        c.as_deref(),
        b.as_deref(),
        o.as_deref(),
        t.as_deref(),
        tiers,
    )
}

/// The record id of an import's enrolment (`kind` `enroll`) or tier (`tier`) of a
/// customer: the same in every run.
pub fn record_id(kind: &str, program: &str, customer: &str) -> String {
    loyalty_core::ids::import_id(kind, program, customer)
}

/// The records one member becomes: its enrolment, then its tier where it has one.
pub fn records(m: &Member, program: &str, created: Timestamp) -> Vec<String> {
    let mut data = json!({"customer": m.customer, "program": program});
    if let Some(b) = &m.birthday {
        data["birthday"] = b.as_str().into();
    }
    if let Some(o) = m.opening_balance.filter(|o| *o > 0) {
        data["openingBalance"] = o.into();
    }
    let mut out = vec![json!({
        "id": record_id("enroll", program, &m.customer),
        "type": "loyalty.account.enroll",
        "created": created.to_string(),
        "data": data,
    })
    .to_string()];
    if let Some(t) = &m.tier {
        out.push(
            json!({
                "id": record_id("tier", program, &m.customer),
                "type": "loyalty.tier.set",
                "created": created.to_string(),
                "data": {"customer": m.customer, "program": program, "tier": t, "reason": "import"},
            })
            .to_string(),
        );
    }
    out
}

/// Counts the records the broker did not take.
struct Deliveries {
    failed: AtomicU64,
    delivered: AtomicU64,
}

struct Counted(Arc<Deliveries>);

impl ClientContext for Counted {}

impl ProducerContext for Counted {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.delivered.fetch_add(1, Ordering::Relaxed),
            Err((e, _)) => {
                tracing::warn!(error = %e, "a record was not delivered");
                self.0.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// The progress line on standard error: redrawn in place on a terminal, a line every
/// tenth of the file otherwise.
struct Progress {
    total: u64,
    started: Instant,
    last: Instant,
    tty: bool,
    tenth: u64,
}

impl Progress {
    fn new(total: u64) -> Progress {
        Progress {
            total: total.max(1),
            started: Instant::now(),
            last: Instant::now(),
            tty: std::io::stderr().is_terminal(),
            tenth: 0,
        }
    }

    fn show(&mut self, done: u64, rows: u64, bad: u64, finished: bool) {
        let fraction = (done.min(self.total) as f64) / (self.total as f64);
        let tenth = (fraction * 10.0) as u64;
        let due = if self.tty {
            finished || self.last.elapsed() >= Duration::from_millis(100)
        } else {
            finished || tenth > self.tenth
        };
        if !due {
            return;
        }
        self.last = Instant::now();
        self.tenth = tenth;
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let width = 30;
        let filled = ((fraction * width as f64) as usize).min(width);
        let bar = format!("{}{}", "#".repeat(filled), ".".repeat(width - filled));
        let text = format!(
            "import [{bar}] {:>3}% {rows} rows, {bad} bad, {:.0} rows/s",
            (fraction * 100.0) as u64,
            rows as f64 / secs
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r{text}");
            if finished {
                let _ = writeln!(err);
            }
        } else {
            let _ = writeln!(err, "{text}");
        }
    }
}

/// The tiers of `program` in `config`, or an error naming what is wrong.
fn program_tiers(config: &Path, program: &str) -> Result<Tiers> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("cannot read the config {}", config.display()))?;
    let config = loyalty_core::parse_config(&text)
        .map_err(|e| anyhow::anyhow!("the config does not validate: {e}"))?;
    let Some(p) = config.programs.iter().find(|p| &*p.id == program) else {
        bail!("the config has no program {program:?}");
    };
    Ok(p.tiers
        .as_ref()
        .map(|t| t.tiers.iter().map(|t| t.name.clone()).collect()))
}

/// Runs `loyalty import`: `Ok(true)` when every row was good.
pub fn run(args: &ImportArgs) -> Result<bool> {
    let tiers = args
        .config
        .as_deref()
        .map(|c| program_tiers(c, &args.program))
        .transpose()?;
    if tiers.is_none() {
        tracing::info!("no --config: tiers are checked by the engine, not here");
    }
    let created = match &args.created {
        Some(c) => Timestamp::parse_rfc3339(c)
            .with_context(|| format!("--created {c:?} is not an RFC 3339 time"))?,
        None => Timestamp(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        ),
    };
    // Read whole: a million members are some tens of megabytes.
    let text = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let size = text.len() as u64;
    let format = match args.format {
        Some(f) => f,
        None => {
            let ext = args.file.extension().and_then(|e| e.to_str()).unwrap_or("");
            if matches!(ext, "jsonl" | "ndjson" | "json") || text.first() == Some(&b'{') {
                Format::Jsonl
            } else {
                Format::Csv
            }
        }
    };
    let deliveries = Arc::new(Deliveries {
        failed: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
    });
    let producer: Option<ThreadedProducer<Counted>> = if args.dry_run {
        None
    } else {
        // clap requires --brokers unless --dry-run.
        let brokers = args.brokers.as_deref().unwrap_or_default();
        let p: ThreadedProducer<Counted> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            // In order per customer across retries; large batches (an import is a bulk
            // load, not latency-bound).
            .set("enable.idempotence", "true")
            .set("linger.ms", "20")
            .set("batch.size", "1000000")
            .set("queue.buffering.max.messages", "1000000")
            .set("message.timeout.ms", "120000")
            .create_with_context(Counted(deliveries.clone()))
            .context("cannot create the producer")?;
        p.client()
            .fetch_metadata(Some(&args.topic), Duration::from_secs(10))
            .with_context(|| format!("cannot reach the brokers at {brokers}"))?;
        Some(p)
    };
    let mut progress = Progress::new(size);
    let (mut good, mut bad, mut sent) = (0u64, 0u64, 0u64);
    let mut err = std::io::stderr();
    read_rows(&text, format, tiers.as_ref(), |row, offset| {
        match row {
            Ok(m) => {
                good += 1;
                if let Some(p) = &producer {
                    for value in records(&m, &args.program, created) {
                        let mut rec = BaseRecord::to(&args.topic)
                            .key(m.customer.as_str())
                            .payload(value.as_str());
                        loop {
                            match p.send(rec) {
                                Ok(()) => break,
                                // The queue is full: let it drain.
                                Err((_, r)) => {
                                    rec = r;
                                    std::thread::sleep(Duration::from_millis(1));
                                }
                            }
                        }
                        sent += 1;
                    }
                }
            }
            Err(b) => {
                bad += 1;
                let _ = writeln!(err, "loyalty import: line {}: {}", b.line, b.reason);
            }
        }
        progress.show(offset, good + bad, bad, false);
    })?;
    progress.show(size, good + bad, bad, true);
    if let Some(p) = &producer {
        p.flush(Duration::from_secs(300))
            .context("the broker did not take every record in five minutes")?;
        let failed = deliveries.failed.load(Ordering::Relaxed);
        if failed > 0 {
            bail!(
                "{failed} of {sent} records were not delivered: run the same import again (each \
                 member is enrolled once however often it runs)"
            );
        }
    }
    eprintln!(
        "loyalty import: {good} members {} ({sent} records to {}), {bad} bad rows",
        if args.dry_run { "checked" } else { "sent" },
        args.topic
    );
    Ok(bad == 0)
}
