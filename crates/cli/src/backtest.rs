//! `loyalty backtest`: a log (a file, or the engine's live log topic) folded with the
//! baseline programs and with a candidate's in their place, and what differs, as text, JSON
//! or one self-contained HTML page with charts.
//!
//! A reader parses each line once and hands chunks of parsed records to two threads, one
//! fold each ([`loyalty_core::backtest`]); nothing is published or stored.
//!
//! Owns: reading, the threads, and the three formats.

use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use loyalty_core::backtest::{compare, sides, Pair, Report, Side};
use loyalty_core::config::parse_config;
use loyalty_core::fold::parse_line;
use loyalty_core::time::Timestamp;
use loyalty_core::{Record, Rejection};

type Chunk = Arc<Vec<Result<Record, Rejection>>>;

/// Records a chunk.
const CHUNK: usize = 1024;

/// The report's format.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A table a person reads.
    Text,
    /// `{"programs": [...]}`.
    Json,
    /// One self-contained page with charts.
    Html,
}

/// Options of `loyalty backtest`.
#[derive(Args, Debug)]
pub struct BacktestArgs {
    /// The candidate programs (`{"programs": [...]}`): each replaces the program of its id
    /// (or is added).
    #[arg(long)]
    pub config: PathBuf,
    /// A log file: one envelope a line, in log order (what `loyalty fold` reads).
    #[arg(long, conflicts_with = "brokers", required_unless_present = "brokers")]
    pub events: Option<PathBuf>,
    /// Read the engine's live log topic instead, from its start to its end now.
    #[arg(long, env = "LOYALTY_BROKERS")]
    pub brokers: Option<String>,
    /// The engine's log topic (with `--brokers`).
    #[arg(long, default_value = "loyalty.log", env = "LOYALTY_LOG_TOPIC")]
    pub log_topic: String,
    /// The baseline programs (default: those the log holds, as `loyalty.program.updated`
    /// records; a log file without any needs this).
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// The candidate takes effect at this RFC 3339 time, as a program update there would
    /// (default: from the start).
    #[arg(long)]
    pub from: Option<String>,
    /// text, json or html.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// Runs a backtest and prints its report.
pub fn run(args: &BacktestArgs) -> Result<()> {
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
    };
    let candidate = read(&args.config)?;
    let baseline =
        match &args.baseline {
            Some(p) => Some(parse_config(&read(p)?).map_err(|e| {
                anyhow::anyhow!("the baseline {} does not validate: {e}", p.display())
            })?),
            None => None,
        };
    let from = match &args.from {
        Some(t) => Some(
            Timestamp::parse_rfc3339(t)
                .with_context(|| format!("--from must be an RFC 3339 time, not {t:?}"))?,
        ),
        None => None,
    };
    let (b, c) = sides(baseline.as_ref(), &candidate, from)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.config.display()))?;
    // What `check` warns of in the candidate (a trigger a typo away from a known type, a
    // range that holds for nothing): a backtest is where a marketer tries a config first.
    if let Ok(config) = parse_config(&candidate) {
        for w in loyalty_core::config::warnings(&config) {
            eprintln!("loyalty: warning: {}: {w}", args.config.display());
        }
    }
    let report = match (&args.events, &args.brokers) {
        (Some(path), _) => {
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot read the events file {}", path.display()))?;
            fold_both(b, c, |emit| {
                for line in io::BufReader::with_capacity(1 << 20, file).split(b'\n') {
                    let line = line.with_context(|| {
                        format!("cannot read the events file {}", path.display())
                    })?;
                    emit(&line);
                }
                Ok(())
            })?
        }
        (None, Some(brokers)) => {
            let mut settings = loyalty_stream::Settings::new(brokers);
            settings.log_topic = args.log_topic.clone();
            fold_both(b, c, |emit| {
                let mut lines = LineSplitter::new(emit);
                loyalty_stream::replay::print_log(&settings, &mut lines)?;
                lines.flush()?;
                Ok(())
            })?
        }
        (None, None) => bail!("give the log: --events FILE or --brokers HOST:PORT"),
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    match args.format {
        Format::Json => writeln!(out, "{}", report.to_json())?,
        Format::Text => write!(out, "{}", text(&report))?,
        Format::Html => write!(out, "{}", html(&report))?,
    }
    out.flush().context("cannot write to standard output")
}

/// Hands whole lines of what is written to it to `emit`.
pub(crate) struct LineSplitter<'a> {
    emit: &'a mut dyn FnMut(&[u8]),
    partial: Vec<u8>,
}

impl<'a> LineSplitter<'a> {
    pub(crate) fn new(emit: &'a mut dyn FnMut(&[u8])) -> LineSplitter<'a> {
        LineSplitter {
            emit,
            partial: Vec::new(),
        }
    }
}

impl Write for LineSplitter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.partial.extend_from_slice(buf);
        while let Some(i) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            (self.emit)(&line[..line.len() - 1]);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            (self.emit)(&line);
        }
        Ok(())
    }
}

/// Runs `read` (which hands every line of the log to its `emit`) on this thread, parsing
/// each line once, and the two folds on a thread each.
fn fold_both(
    baseline: Side,
    candidate: Side,
    read: impl FnOnce(&mut dyn FnMut(&[u8])) -> Result<()>,
) -> Result<Report> {
    let (tb, rb) = sync_channel::<Chunk>(4);
    let (tc, rc) = sync_channel::<Chunk>(4);
    let (b, c, read) = std::thread::scope(|s| {
        let hb = s.spawn(move || drive(baseline, rb));
        let hc = s.spawn(move || drive(candidate, rc));
        let read = feed(read, &[tb, tc]);
        (hb.join(), hc.join(), read)
    });
    read?;
    let (Ok(b), Ok(c)) = (b, c) else {
        bail!("a fold of the backtest stopped unexpectedly");
    };
    compare(b, c).map_err(anyhow::Error::from)
}

fn feed(
    read: impl FnOnce(&mut dyn FnMut(&[u8])) -> Result<()>,
    to: &[SyncSender<Chunk>],
) -> Result<()> {
    let mut chunk = Vec::with_capacity(CHUNK);
    let send = |chunk: Vec<Result<Record, Rejection>>| {
        let chunk = Arc::new(chunk);
        for t in to {
            // A fold that is gone has failed; its join reports it.
            let _ = t.send(chunk.clone());
        }
    };
    let mut emit = |line: &[u8]| {
        if let Some(parsed) = parse_line(line) {
            chunk.push(parsed);
            if chunk.len() == CHUNK {
                send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)));
            }
        }
    };
    let read = read(&mut emit);
    send(chunk);
    read
}

fn drive(mut side: Side, from: Receiver<Chunk>) -> Side {
    for chunk in from.iter() {
        for parsed in chunk.iter() {
            side.apply(parsed);
        }
    }
    side
}

fn signed(n: i128) -> String {
    if n > 0 {
        format!("+{n}")
    } else {
        n.to_string()
    }
}

/// The report as a table.
pub fn text(report: &Report) -> String {
    let mut s = String::new();
    let row = |s: &mut String, what: &str, p: Pair| {
        s.push_str(&format!(
            "  {what:<32} {:>14} {:>14} {:>14}\n",
            p.baseline,
            p.candidate,
            signed(p.difference())
        ));
    };
    for p in &report.programs {
        s.push_str(&format!(
            "program {}\n  {:<32} {:>14} {:>14} {:>14}\n",
            p.program, "", "baseline", "candidate", "difference"
        ));
        for (rule, pair) in &p.rules {
            row(&mut s, &format!("awarded by {rule}"), *pair);
        }
        row(&mut s, "points outstanding", p.points_outstanding);
        for (tier, pair) in &p.members_by_tier {
            row(&mut s, &format!("members in {tier}"), *pair);
        }
        row(&mut s, "redemptions", p.redemptions);
        if p.top_changes.is_empty() {
            s.push_str("  no member's balance changes\n");
        } else {
            s.push_str("  balances that change most:\n");
            for c in &p.top_changes {
                row(
                    &mut s,
                    &format!("{} ({})", c.account, c.customer),
                    c.balance,
                );
            }
        }
        s.push('\n');
    }
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const BASELINE_COLOUR: &str = "#64748b";
const CANDIDATE_COLOUR: &str = "#2563eb";
const GRID_COLOUR: &str = "#cbd5e1";

/// Paired horizontal bars, baseline beside candidate, as inline SVG.
fn bars(title: &str, items: &[(String, Pair)]) -> String {
    if items.is_empty() {
        return String::new();
    }
    let max = items
        .iter()
        .map(|(_, p)| p.baseline.abs().max(p.candidate.abs()))
        .max()
        .unwrap_or(0)
        .max(1);
    let (label_w, bar_w, row_h) = (180, 420, 34);
    let height = items.len() * row_h + 30;
    let mut svg = format!(
        r#"<figure><figcaption>{}</figcaption><svg role="img" viewBox="0 0 {} {height}" width="100%" preserveAspectRatio="xMinYMin meet">"#,
        esc(title),
        label_w + bar_w + 120
    );
    for (i, (name, p)) in items.iter().enumerate() {
        let y = i * row_h + 4;
        let w = |v: i128| (v.abs() * bar_w as i128 / max) as usize;
        svg.push_str(&format!(
            r#"<text x="0" y="{}" font-size="12">{}</text><rect x="{label_w}" y="{y}" width="{}" height="12" fill="{BASELINE_COLOUR}"><title>baseline {}</title></rect><rect x="{label_w}" y="{}" width="{}" height="12" fill="{CANDIDATE_COLOUR}"><title>candidate {}</title></rect><text x="{}" y="{}" font-size="11">{} → {} ({})</text>"#,
            y + 16,
            esc(name),
            w(p.baseline),
            p.baseline,
            y + 14,
            w(p.candidate),
            p.candidate,
            label_w + bar_w + 6,
            y + 16,
            p.baseline,
            p.candidate,
            signed(p.difference())
        ));
    }
    svg.push_str("</svg></figure>");
    svg
}

/// Two lines over the days, baseline and candidate, as inline SVG.
fn lines(title: &str, days: &[(String, Pair)]) -> String {
    if days.len() < 2 {
        return String::new();
    }
    let max = days
        .iter()
        .map(|(_, p)| p.baseline.max(p.candidate))
        .max()
        .unwrap_or(0)
        .max(1);
    let (w, h) = (720usize, 220usize);
    let x = |i: usize| 40 + i * (w - 60) / (days.len() - 1);
    let y = |v: i128| h - 30 - (v.max(0) * (h as i128 - 50) / max) as usize;
    let path = |pick: fn(&Pair) -> i128| {
        days.iter()
            .enumerate()
            .map(|(i, (_, p))| format!("{},{}", x(i), y(pick(p))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        r#"<figure><figcaption>{}</figcaption><svg role="img" viewBox="0 0 {w} {h}" width="100%"><line x1="40" y1="{}" x2="{}" y2="{}" stroke="{GRID_COLOUR}"/><polyline fill="none" stroke="{BASELINE_COLOUR}" stroke-width="2" points="{}"/><polyline fill="none" stroke="{CANDIDATE_COLOUR}" stroke-width="2" points="{}"/><text x="40" y="{}" font-size="11">{}</text><text x="{}" y="{}" font-size="11" text-anchor="end">{}</text><text x="4" y="20" font-size="11">{max}</text></svg></figure>"#,
        esc(title),
        h - 30,
        w - 20,
        h - 30,
        path(|p| p.baseline),
        path(|p| p.candidate),
        h - 12,
        esc(&days[0].0),
        w - 20,
        h - 12,
        esc(&days[days.len() - 1].0),
    )
}

/// The report as one self-contained page: tables, and charts as inline SVG (no script, no
/// file or address it needs besides itself).
pub fn html(report: &Report) -> String {
    let mut body = String::new();
    for p in &report.programs {
        body.push_str(&format!("<section><h2>{}</h2>", esc(&p.program)));
        body.push_str(&bars("Points awarded per rule", &p.rules));
        body.push_str(&lines("Points awarded per day", &p.days));
        let tiers: Vec<(String, Pair)> = p
            .members_by_tier
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        body.push_str(&bars("Members per tier", &tiers));
        body.push_str(
            "<table><tr><th></th><th>baseline</th><th>candidate</th><th>difference</th></tr>",
        );
        let mut row = |what: &str, pair: Pair| {
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(what),
                pair.baseline,
                pair.candidate,
                signed(pair.difference())
            ));
        };
        for (rule, pair) in &p.rules {
            row(&format!("awarded by {rule}"), *pair);
        }
        row("points outstanding", p.points_outstanding);
        for (tier, pair) in &p.members_by_tier {
            row(&format!("members in {tier}"), *pair);
        }
        row("redemptions", p.redemptions);
        for c in &p.top_changes {
            row(&format!("{} ({})", c.account, c.customer), c.balance);
        }
        body.push_str("</table></section>");
    }
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>Backtest</title><style>body{{font-family:system-ui,sans-serif;margin:1.5rem;max-width:960px;color:#0f172a}}table{{border-collapse:collapse;margin:1rem 0;width:100%}}td,th{{border-bottom:1px solid #e2e8f0;padding:.3rem .5rem;text-align:right}}td:first-child,th:first-child{{text-align:left}}figure{{margin:1rem 0}}figcaption{{font-weight:600}}.key span{{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 1rem}}</style></head><body><h1>Backtest</h1><p class="key"><span style="background:{BASELINE_COLOUR}"></span>baseline<span style="background:{CANDIDATE_COLOUR}"></span>candidate</p>{body}</body></html>
"#
    )
}
