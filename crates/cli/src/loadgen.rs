//! `loyalty loadgen`: synthetic upstream traffic, to a file or to Kafka, for benchmarks.
//!
//! Realistic traffic, deterministic for a given `--seed`: many customers with a skewed
//! distribution (a few buy often, most rarely), payments (most through the point of sale),
//! refunds of earlier payments, member commands (adjustments, redemptions) and, when asked,
//! program updates. With `--wait-topic`, it then reads that outbound topic and reports the
//! rate of the whole path, from the first record produced to the last outbound message read
//! back, and the latency from a record's produce to its event being readable (p50, p99,
//! max). The number of messages to wait for is known exactly: the same traffic is folded
//! through the engine here first (with `--config`).

use std::collections::{HashMap, HashSet};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Args;
use loyalty_core::output::Output;
use loyalty_core::time::Timestamp;
use loyalty_stream::outbox::EVENT_ID;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Options of `loyalty loadgen`.
#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// Write JSON lines to this file instead of producing to Kafka.
    #[arg(long, conflicts_with = "brokers")]
    pub out: Option<PathBuf>,
    /// Bootstrap brokers to produce to.
    #[arg(long)]
    pub brokers: Option<String>,
    /// Produce every record to this one topic (e.g. straight into a log topic, to measure
    /// replay) instead of to the topic of its type.
    #[arg(long)]
    pub topic: Option<String>,
    /// Number of records.
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Number of customers.
    #[arg(long, default_value_t = 20_000)]
    pub customers: u64,
    /// Number the customers from here (a warm-up run on other customers than the measured
    /// one's, so that both fold as from an empty state).
    #[arg(long, default_value_t = 0)]
    pub customer_offset: u64,
    /// Seed of the deterministic sequence.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Prefix of the event ids (use a new one per run against the same topics).
    #[arg(long, default_value = "evt_load")]
    pub id_prefix: String,
    /// Refunds per thousand records (each of an earlier payment, half its amount).
    #[arg(long, default_value_t = 30)]
    pub refunds_per_mille: u64,
    /// Member commands per thousand records (points adjustments and redemptions).
    #[arg(long, default_value_t = 20)]
    pub commands_per_mille: u64,
    /// The program config: its first program is the one commands name, and it is sent
    /// again as a `loyalty.program.updated` every `--program-update-every` records.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Records between two program updates (0: none).
    #[arg(long, default_value_t = 0)]
    pub program_update_every: u64,
    /// The reward that redemptions ask for.
    #[arg(long, default_value = "rwd_free_coffee")]
    pub reward: String,
    /// Produce at this many records a second (0: as fast as the broker takes them).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// After producing, wait for this outbound topic's messages and report the rate of the
    /// whole path and the latency.
    #[arg(long)]
    pub wait_topic: Option<String>,
    /// How many messages to wait for on --wait-topic (default: what folding the same
    /// traffic through the engine with --config emits on that topic).
    #[arg(long)]
    pub wait_count: Option<u64>,
}

/// One generated record: its topic, key (the customer), id and JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// The input topic it belongs on.
    pub topic: &'static str,
    /// The customer (the message key); empty for a program update.
    pub key: String,
    /// The envelope id.
    pub id: String,
    /// The envelope, as JSON text.
    pub value: String,
}

/// The traffic: an endless deterministic sequence of records, one second apart on average,
/// from `start` (unix seconds).
#[derive(Debug, Clone)]
pub struct Traffic {
    x: u64,
    i: u64,
    start: i64,
    span: i64,
    customers: u64,
    customer_offset: u64,
    prefix: String,
    refunds: u64,
    commands: u64,
    program: Option<(String, String)>,
    update_every: u64,
    reward: String,
    /// Recent payments that may still be refunded: (id, customer, amount).
    recent: Vec<Option<(String, String, u64)>>,
}

impl Traffic {
    /// The traffic `args` describe, for `n` records spread over `span` seconds from `start`.
    pub fn new(args: &LoadArgs, start: i64, span: i64) -> Result<Traffic> {
        let program = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let v: serde_json::Value = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not JSON", path.display()))?;
                let p = v["programs"][0].clone();
                let id = p["id"].as_str().context("the config has no program")?;
                Some((id.to_string(), p.to_string()))
            }
            None => None,
        };
        Ok(Traffic {
            x: args.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            i: 0,
            start,
            span: span.max(1),
            customers: args.customers.max(1),
            customer_offset: args.customer_offset,
            prefix: args.id_prefix.clone(),
            refunds: args.refunds_per_mille,
            commands: args.commands_per_mille,
            program,
            update_every: args.program_update_every,
            reward: args.reward.clone(),
            recent: vec![None; 1024],
        })
    }

    fn next_u64(&mut self) -> u64 {
        self.x = self
            .x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.x >> 11
    }

    /// Skewed: customer `c` (of all `customers`) is drawn with a weight falling as
    /// `1/sqrt(c)`: the square of a uniform draw in [0, 1), scaled.
    fn customer(&mut self) -> String {
        let r = u128::from(self.next_u64() & 0xffff_ffff);
        let c = ((r * r * u128::from(self.customers)) >> 64) + u128::from(self.customer_offset);
        format!("cus_{c:06}")
    }

    /// The `n`-th record of `total`.
    fn make(&mut self, total: u64) -> Generated {
        let i = self.i;
        self.i += 1;
        let created = Timestamp(self.start + (i as i64 * self.span) / total.max(1) as i64);
        let id = format!("{}_{i}", self.prefix);
        if let Some((_, text)) = &self.program {
            if self.update_every > 0 && i % self.update_every == self.update_every - 1 {
                let value = format!(
                    r#"{{"id":"{id}","type":"loyalty.program.updated","created":"{created}","data":{text}}}"#
                );
                return Generated {
                    topic: "loyalty.commands",
                    key: String::new(),
                    id,
                    value,
                };
            }
        }
        let roll = self.next_u64() % 1000;
        if roll < self.refunds {
            let slot = (self.next_u64() % self.recent.len() as u64) as usize;
            if let Some((pay, customer, amount)) = self.recent[slot].take() {
                let value = format!(
                    r#"{{"id":"{id}","type":"payment.refunded","created":"{created}","data":{{"id":"re_{id}","payment":"{pay}","customer":"{customer}","amount":{},"currency":"EUR"}}}}"#,
                    amount / 2
                );
                return Generated {
                    topic: "payment.refunded",
                    key: customer,
                    id,
                    value,
                };
            }
        } else if roll < self.refunds + self.commands {
            if let Some((prog, _)) = &self.program {
                let prog = prog.clone();
                let customer = self.customer();
                let value = if self.next_u64() % 2 == 0 {
                    let points = 50 + self.next_u64() % 200;
                    format!(
                        r#"{{"id":"{id}","type":"loyalty.points.adjust","created":"{created}","data":{{"customer":"{customer}","program":"{prog}","points":{points},"reason":"goodwill"}}}}"#
                    )
                } else {
                    format!(
                        r#"{{"id":"{id}","type":"loyalty.redemption.create","created":"{created}","data":{{"customer":"{customer}","program":"{prog}","reward":"{}"}}}}"#,
                        self.reward
                    )
                };
                return Generated {
                    topic: "loyalty.commands",
                    key: customer,
                    id,
                    value,
                };
            }
        }
        let customer = self.customer();
        let amount = 100 + self.next_u64() % 25_000;
        let channel = if self.next_u64() % 10 < 8 {
            "pos"
        } else {
            "web"
        };
        let pay = format!("pay_{id}");
        let slot = (self.next_u64() % self.recent.len() as u64) as usize;
        self.recent[slot] = Some((pay.clone(), customer.clone(), amount));
        let value = format!(
            r#"{{"id":"{id}","type":"payment.completed","created":"{created}","data":{{"id":"{pay}","customer":"{customer}","amount":{amount},"currency":"EUR","metadata":{{"channel":"{channel}"}}}}}}"#
        );
        Generated {
            topic: "payment.completed",
            key: customer,
            id,
            value,
        }
    }

    /// The first `n` records.
    pub fn take(mut self, n: u64) -> impl Iterator<Item = Generated> {
        (0..n).map(move |_| self.make(n))
    }
}

/// How many outbound messages of `kind` folding `records` through the engine emits, and
/// which event ids they have (to measure latency by).
fn expected(config: &std::path::Path, records: &[Generated], kind: &str) -> Result<(u64, usize)> {
    let config = crate::load_config(config)?;
    let mut engine = loyalty_core::Engine::new(&config);
    engine.track_changes(false);
    let mut out = Vec::new();
    let mut n = 0u64;
    for r in records {
        out.clear();
        engine.apply(r.value.as_bytes(), &mut out);
        n += out
            .iter()
            .filter(|o| matches!(o, Output::Event(e) if e.kind() == kind))
            .count() as u64;
    }
    Ok((n, engine.state().accounts.len()))
}

pub fn run(args: &LoadArgs) -> Result<()> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if let Some(path) = &args.out {
        // Spread over 2026, from a fixed start so that a seed always writes the same file:
        // windows, periods and expiry all come into play.
        let span = 365 * 86_400;
        let traffic = Traffic::new(args, 1_767_225_600, span)?;
        let f = std::fs::File::create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let mut w = BufWriter::new(f);
        for g in traffic.take(args.events) {
            writeln!(w, "{}", g.value).context("cannot write")?;
        }
        w.flush().context("cannot write")?;
        eprintln!(
            "loadgen: wrote {} records to {}",
            args.events,
            path.display()
        );
        return Ok(());
    }
    let brokers = args.brokers.as_deref().context("give --brokers or --out")?;
    // Spread over the hour before now, so that every record is within the engine's skew.
    let records: Vec<Generated> = Traffic::new(args, now - 3_600, 3_600)?
        .take(args.events)
        .collect();
    let waiter = match &args.wait_topic {
        Some(t) => {
            let want = match (args.wait_count, &args.config) {
                (Some(n), _) => n,
                (None, Some(config)) => {
                    let (n, accounts) = expected(config, &records, t)?;
                    eprintln!(
                        "loadgen: the engine will emit {n} messages on {t} ({accounts} accounts)"
                    );
                    n
                }
                (None, None) => bail!("--wait-topic needs --wait-count or --config"),
            };
            let c: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", brokers)
                .set("group.id", "loyalty-loadgen")
                // Readable means a consumer gets it at once: no long poll in the way.
                .set("fetch.wait.max.ms", "5")
                .create()
                .context("cannot create a consumer")?;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(t, 0, Offset::End)
                .context("assignment")?;
            c.assign(&tpl).context("cannot assign the wait topic")?;
            // Let the consumer settle at the end before producing.
            let _ = c.poll(Duration::from_millis(500));
            // Only this run's events count: the end a broker reports may be early (tansu's
            // is), and an earlier run (a warm-up) may have left events behind it.
            let ours: HashSet<String> = records
                .iter()
                .flat_map(|g| (0..8).map(|n| loyalty_core::ids::event_id(&g.id, n)))
                .collect();
            // Read on a thread of its own, so that each message is timed as it arrives.
            Some(std::thread::spawn(move || read_back(&c, want, &ours)))
        }
        None => None,
    };
    let paced = args.rate > 0;
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        // Paced, a millisecond of batching: one request per record cost the broker and this
        // client more CPU than the engine on a 2-core machine.
        .set("linger.ms", if paced { "1" } else { "5" })
        // The records must reach the broker in the traffic's order, retries included: a
        // first batch refused while a new topic is created, then retried, used to land at
        // the end of the log, so every replay benchmark folded a different log.
        // Unpaced: idempotent, which keeps order across retries. Paced: not idempotent
        // (that producer holds its first messages until the broker gives it a producer id,
        // which on tansu took up to a second, and the records of that second then reached
        // the engine in one burst, ~900 ms of latency that was this client's), so one
        // request at a time.
        .set("enable.idempotence", if paced { "false" } else { "true" })
        .set(
            "max.in.flight.requests.per.connection",
            if paced { "1" } else { "5" },
        )
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .context("cannot create the producer")?;
    // Connected before the clock starts: what is timed is the engine, not this client's
    // connection set-up.
    producer
        .client()
        .fetch_metadata(None, Duration::from_secs(10))
        .context("cannot reach the brokers")?;
    // The event ids a record causes are derived from its id: the first few map back to the
    // time it was produced.
    let mut sent: HashMap<String, Instant> = HashMap::new();
    let t0 = Instant::now();
    for (i, g) in records.iter().enumerate() {
        if args.rate > 0 {
            let due = t0 + Duration::from_secs_f64(i as f64 / args.rate as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        if waiter.is_some() {
            let at = Instant::now();
            for n in 0..4 {
                sent.insert(loyalty_core::ids::event_id(&g.id, n), at);
            }
        }
        let mut rec = BaseRecord::to(args.topic.as_deref().unwrap_or(g.topic)).payload(&g.value);
        if !g.key.is_empty() {
            rec = rec.key(&g.key);
        }
        if args.topic.is_some() {
            // One topic is a log: its records in one partition, in the traffic's order (a
            // topic the broker creates on first use may have several, and a log spread over
            // them by key folds in whatever order they are read).
            rec = rec.partition(0);
        }
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    producer.poll(Duration::from_millis(1));
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .context("cannot flush the producer")?;
    let produced = t0.elapsed().as_secs_f64();
    eprintln!(
        "loadgen: produced {} records in {produced:.2} s ({:.0}/s)",
        args.events,
        args.events as f64 / produced
    );
    if let Some(reader) = waiter {
        let arrived = reader
            .join()
            .map_err(|_| anyhow::anyhow!("the reader thread panicked"))??;
        let total = arrived
            .last()
            .map_or(0.0, |(_, at)| at.duration_since(t0).as_secs_f64());
        println!(
            "whole path: {} records in, {} events out, {total:.2} s: {:.0} records/s",
            args.events,
            arrived.len(),
            args.events as f64 / total
        );
        let mut latencies: Vec<Duration> = arrived
            .iter()
            .filter_map(|(id, at)| Some(at.saturating_duration_since(*sent.get(id.as_deref()?)?)))
            .collect();
        latencies.sort_unstable();
        if !latencies.is_empty() {
            let q = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
            println!(
                "latency produce -> readable: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} samples)",
                q(0.5).as_secs_f64() * 1e3,
                q(0.99).as_secs_f64() * 1e3,
                q(1.0).as_secs_f64() * 1e3,
                latencies.len()
            );
        }
    }
    Ok(())
}

/// Reads `want` messages, each with its event id and the time it was read.
fn read_back(
    c: &BaseConsumer,
    want: u64,
    ours: &HashSet<String>,
) -> Result<Vec<(Option<String>, Instant)>> {
    let mut arrived = Vec::with_capacity(want as usize);
    let mut last_seen = Instant::now();
    while (arrived.len() as u64) < want {
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last_seen = Instant::now();
                let id = m.headers().and_then(|h| {
                    h.iter()
                        .find(|h| h.key == EVENT_ID)
                        .and_then(|h| h.value)
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .map(str::to_string)
                });
                if id.as_ref().is_some_and(|id| !ours.contains(id)) {
                    continue;
                }
                arrived.push((id, last_seen));
            }
            Some(Err(e)) => eprintln!("loadgen: consumer error: {e}"),
            // Topics are consumed interleaved, not in the order generated (a refund may be
            // read before its payment), so the engine may emit a few fewer or more than the
            // fold here: once 99% are in and nothing came for 3 s, the rest is not coming.
            None if arrived.len() as u64 * 100 >= want * 99
                && last_seen.elapsed() > Duration::from_secs(3) =>
            {
                eprintln!(
                    "loadgen: {} of {want} messages arrived (input topics interleave)",
                    arrived.len()
                );
                break;
            }
            None if last_seen.elapsed() > Duration::from_secs(120) => {
                bail!("only {} of {want} messages arrived", arrived.len())
            }
            None => {}
        }
    }
    Ok(arrived)
}
