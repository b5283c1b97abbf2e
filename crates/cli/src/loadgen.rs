//! `loyalty loadgen`: synthetic upstream traffic, to a file or to Kafka, for benchmarks.
//!
//! Payments for many customers with a skewed distribution (a few buy often, most rarely),
//! deterministic for a given `--seed`. With `--wait-topic`, it then counts the messages the
//! engine publishes on that topic and reports the rate of the whole path, from the first
//! record produced to the last outbound message read back.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Args;
use loyalty_core::time::Timestamp;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Options of `loyalty loadgen`.
#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Write JSON lines to this file instead of producing to Kafka.
    #[arg(long, conflicts_with = "brokers")]
    out: Option<PathBuf>,
    /// Bootstrap brokers to produce to.
    #[arg(long)]
    brokers: Option<String>,
    /// The topic to produce payments to.
    #[arg(long, default_value = "payment.completed")]
    topic: String,
    /// Number of payments.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Number of customers.
    #[arg(long, default_value_t = 20_000)]
    customers: u64,
    /// Seed of the deterministic sequence.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Prefix of the event ids (use a new one per run against the same topics).
    #[arg(long, default_value = "evt_load")]
    id_prefix: String,
    /// After producing, wait until this many messages (default: --events) appear on this
    /// topic, and report the rate of the whole path.
    #[arg(long)]
    wait_topic: Option<String>,
    /// How many messages to wait for on --wait-topic.
    #[arg(long)]
    wait_count: Option<u64>,
}

fn record(args: &LoadArgs, i: u64, x: &mut u64, start: i64) -> (String, String) {
    *x = x
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    let r = (*x >> 33) % 10_000;
    let customer = (r * r / 10_000) * args.customers.max(1) / 10_000;
    let amount = 100 + (*x >> 11) % 25_000;
    // Spread over the last hour, in order, so that every record is within the skew.
    let created = Timestamp(start + (i as i64 * 3_600) / args.events.max(1) as i64);
    let key = format!("cus_{customer:06}");
    let value = format!(
        r#"{{"id":"{p}_{i}","type":"payment.completed","created":"{created}","data":{{"id":"pay_{p}_{i}","customer":"{key}","amount":{amount},"currency":"EUR"}}}}"#,
        p = args.id_prefix
    );
    (key, value)
}

pub fn run(args: &LoadArgs) -> Result<()> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let start = now - 3_600;
    let mut x = args.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    if let Some(path) = &args.out {
        let f = std::fs::File::create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let mut w = BufWriter::new(f);
        for i in 0..args.events {
            let (_, value) = record(args, i, &mut x, start);
            writeln!(w, "{value}").context("cannot write")?;
        }
        w.flush().context("cannot write")?;
        eprintln!(
            "loadgen: wrote {} payments to {}",
            args.events,
            path.display()
        );
        return Ok(());
    }
    let brokers = args.brokers.as_deref().context("give --brokers or --out")?;
    let waiter = match &args.wait_topic {
        Some(t) => {
            let c: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", brokers)
                .set("group.id", "loyalty-loadgen")
                .create()
                .context("cannot create a consumer")?;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(t, 0, Offset::End)
                .context("assignment")?;
            c.assign(&tpl).context("cannot assign the wait topic")?;
            // Let the consumer settle at the end before producing.
            let _ = c.poll(Duration::from_millis(500));
            Some(c)
        }
        None => None,
    };
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .context("cannot create the producer")?;
    let t0 = Instant::now();
    for i in 0..args.events {
        let (key, value) = record(args, i, &mut x, start);
        let mut rec = BaseRecord::to(&args.topic).key(&key).payload(&value);
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
        "loadgen: produced {} payments in {produced:.2} s ({:.0}/s)",
        args.events,
        args.events as f64 / produced
    );
    if let Some(c) = waiter {
        let want = args.wait_count.unwrap_or(args.events);
        let mut got = 0u64;
        let mut last_seen = Instant::now();
        while got < want {
            match c.poll(Duration::from_millis(200)) {
                Some(Ok(_)) => {
                    got += 1;
                    last_seen = Instant::now();
                }
                Some(Err(e)) => eprintln!("loadgen: consumer error: {e}"),
                None if last_seen.elapsed() > Duration::from_secs(120) => {
                    anyhow::bail!("only {got} of {want} messages arrived")
                }
                None => {}
            }
        }
        let total = t0.elapsed().as_secs_f64();
        println!(
            "whole path: {} payments in, {want} events out, {total:.2} s: {:.0} events/s",
            args.events,
            args.events as f64 / total
        );
    }
    Ok(())
}
