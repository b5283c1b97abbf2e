//! `loyalty demo`: the whole streaming path on an embedded broker (librdkafka's mock
//! cluster), with nothing to install: the sample programs, synthetic payments for
//! thousands of customers, the engine with its RocksDB state in a temporary directory, the
//! outbound topics, a live view, and a few signed outbound events verified at the end.
//!
//! `loyalty demo --offline` folds the sample files instead and prints a summary.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Args;
use loyalty_core::output::{Output, TxKind};
use loyalty_core::time::Timestamp;
use loyalty_core::{parse_config, Engine};
use loyalty_store::Store;
use loyalty_stream::service::{self, Counters};
use loyalty_stream::{signature, Settings};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const PROGRAMS: &str = include_str!("../../../examples/programs.json");
const EVENTS: &str = include_str!("../../../examples/events.jsonl");
const SECRET: &str = "whsec_demo_secret";

/// Options of `loyalty demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Fold the sample files offline and print a summary instead.
    #[arg(long)]
    offline: bool,
    /// Customers to simulate.
    #[arg(long, default_value_t = 3000)]
    customers: u64,
    /// Payments to simulate (the mock broker keeps a bounded amount per partition).
    #[arg(long, default_value_t = 20000)]
    payments: u64,
}

pub fn run(args: &DemoArgs) -> Result<()> {
    if args.offline {
        return offline();
    }
    streaming(args)
}

fn streaming(args: &DemoArgs) -> Result<()> {
    println!("Loyalty engine demo: the whole path on an embedded Kafka broker");
    println!("(librdkafka's mock cluster; state in RocksDB in a temporary directory)\n");
    let cluster = MockCluster::new(1).context("cannot start the embedded broker")?;
    let brokers = cluster.bootstrap_servers();
    let dir = std::env::temp_dir().join(format!("loyalty-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Arc::new(Store::open(&dir).context("cannot open the demo state")?);

    let mut settings = Settings::new(&brokers);
    settings.signing_secret = SECRET.as_bytes().to_vec();
    settings.input_partitions = 3;
    settings.log_partitions = 3;
    settings.tick_interval = Duration::from_secs(1);
    settings.programs = loyalty_core::config::program_texts(PROGRAMS).context("sample programs")?;
    for t in settings.input_topics.iter().chain([&settings.log_topic]) {
        cluster
            .create_topic(t, 3, 1)
            .context("cannot create a demo topic")?;
    }
    for t in settings.output_topics().iter().chain([&settings.dlq_topic]) {
        cluster
            .create_topic(t, 1, 1)
            .context("cannot create a demo topic")?;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let engine = {
        let (settings, stop, counters) = (settings.clone(), stop.clone(), counters.clone());
        let store = store.clone();
        std::thread::spawn(move || service::run(&settings, &store, &stop, &counters))
    };

    println!(
        "Producing {} payments of {} customers to payment.completed ...\n",
        args.payments, args.customers
    );
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "5")
        .create()
        .context("cannot create the demo producer")?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let started = Instant::now();
    for i in 0..args.payments {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        // A skewed customer distribution: low ids buy far more often.
        let r = (x >> 33) % 1000;
        let customer = (r * r * args.customers.max(1)) / 1_000_000;
        let amount = 150 + (x >> 12) % 4000;
        let created =
            Timestamp(now - 86_400 * 20 + (i as i64 * 86_400 * 20) / args.payments.max(1) as i64);
        let key = format!("cus_{customer:05}");
        let value = format!(
            r#"{{"id":"evt_demo_{i}","type":"payment.completed","created":"{created}","data":{{"id":"pay_demo_{i}","customer":"{key}","amount":{amount},"currency":"EUR"}}}}"#
        );
        let mut record = BaseRecord::to("payment.completed")
            .key(&key)
            .payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(5));
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(30))
        .context("cannot flush the demo producer")?;

    // Live view until everything produced has been folded and published.
    let mut last = (Instant::now(), 0u64);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let folded = counters.folded.load(Ordering::Relaxed);
        let rate = (folded.saturating_sub(last.1)) as f64 / last.0.elapsed().as_secs_f64();
        last = (Instant::now(), folded);
        println!(
            "  sequenced {:>7}  folded {:>7}  published {:>7}  {:>8.0} records/s  points awarded {:>9}  tier changes {:>4}",
            counters.sequenced.load(Ordering::Relaxed),
            folded,
            counters.published.load(Ordering::Relaxed),
            rate,
            counters.awarded.load(Ordering::Relaxed),
            counters.tier_changes.load(Ordering::Relaxed),
        );
        if counters.sequenced.load(Ordering::Relaxed) >= args.payments && folded >= args.payments {
            break;
        }
        if engine.is_finished() {
            let result = engine
                .join()
                .map_err(|_| anyhow::anyhow!("the engine thread panicked"))?;
            result.context("the engine stopped")?;
            anyhow::bail!("the engine stopped before folding every payment");
        }
        if started.elapsed() > Duration::from_secs(300) {
            anyhow::bail!("the demo did not finish within 5 minutes");
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "\n{} payments through Kafka in, RocksDB, Kafka out in {secs:.1} s ({:.0} events/s end to end)\n",
        args.payments,
        args.payments as f64 / secs
    );

    // A few outbound events, read back from their topics and verified.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "loyalty-demo-reader")
        .create()
        .context("cannot create the demo consumer")?;
    let mut tpl = TopicPartitionList::new();
    for t in ["loyalty.account.created", "loyalty.points.earned"] {
        tpl.add_partition_offset(t, 0, Offset::Beginning)
            .context("assignment")?;
    }
    consumer
        .assign(&tpl)
        .context("cannot assign the outbound topics")?;
    println!("Signed outbound events, verified with the shipped verifier:");
    let mut shown: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while shown.values().sum::<usize>() < 4 && Instant::now() < deadline {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let n = shown.entry(m.topic().to_string()).or_default();
        if *n >= 2 {
            continue;
        }
        *n += 1;
        let payload = m.payload().unwrap_or_default();
        let header = m
            .headers()
            .and_then(|h| {
                h.iter()
                    .find(|h| h.key == signature::HEADER)
                    .and_then(|h| h.value)
            })
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        let verdict = match signature::verify(&header, payload, SECRET.as_bytes(), None, 0) {
            Ok(()) => "signature verified".to_string(),
            Err(e) => format!("signature REJECTED: {e}"),
        };
        println!("  {}: {}", m.topic(), String::from_utf8_lossy(payload));
        println!("    {}: {header}  -> {verdict}", signature::HEADER);
    }
    show_the_api(&settings, store, &counters)?;
    stop.store(true, Ordering::SeqCst);
    let result = engine
        .join()
        .map_err(|_| anyhow::anyhow!("the engine thread panicked"))?;
    let _ = std::fs::remove_dir_all(&dir);
    result.context("the engine failed")?;
    println!(
        "\nNext: `LOYALTY_SIGNING_SECRET=... loyalty run --brokers HOST:PORT --config programs.json \
         --state DIR` against a real broker (docs/operations.md)."
    );
    Ok(())
}

/// Starts the HTTP API on a free port with a generated key, and shows it: a few requests
/// and their answers, and the `curl` commands that give them (served until Ctrl-C when the
/// demo runs in a terminal).
fn show_the_api(settings: &Settings, store: Arc<Store>, counters: &Counters) -> Result<()> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let key = format!(
        "sk_demo_{:016x}",
        (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32)
    );
    let http = crate::api::HttpArgs {
        http_addr: Some("127.0.0.1:0".into()),
        api_keys: vec![key.clone()],
        command_timeout_ms: 5000,
    };
    let server = crate::api::start_for_run(&http, settings, store, counters)?
        .context("the demo's HTTP API")?;
    let addr = server.addr;
    let base = format!("http://{addr}");
    println!("\nThe HTTP API, on {base} with the key {key}:");
    // The busiest customer of the simulated traffic.
    let id = loyalty_core::ids::account_id("prog_coffee", "cus_00000");
    let redeem = format!("/v1/accounts/{id}/redemptions");
    let body = r#"{"reward":"rwd_free_coffee"}"#;
    let calls: [(&str, String, Option<&str>); 3] = [
        ("GET", format!("/v1/accounts/{id}"), None),
        ("POST", redeem.clone(), Some(body)),
        (
            "GET",
            format!("/v1/points_transactions?account={id}&limit=2"),
            None,
        ),
    ];
    for (method, path, body) in &calls {
        let (status, answer) = http_call(addr, method, path, &key, *body)?;
        println!("\n  {method} {path}  -> {status}");
        println!("  {answer}");
    }
    println!("\nThe same with curl:");
    println!("  curl -s {base}/v1/accounts/{id} -H 'Authorization: Bearer {key}'");
    println!(
        "  curl -s -X POST {base}{redeem} -H 'Authorization: Bearer {key}' -H 'Idempotency-Key: demo-1' -d '{body}'"
    );
    println!(
        "  curl -s '{base}/v1/points_transactions?account={id}&limit=2' -H 'Authorization: Bearer {key}'"
    );
    println!("\nThe operator console: {base}/console/ (enter the key {key} there).");
    // Someone at a terminal can try the curl commands; a script or CI goes on.
    if std::io::IsTerminal::is_terminal(&std::io::stdin())
        && std::io::IsTerminal::is_terminal(&std::io::stdout())
    {
        println!("\nThe engine and its API keep running; Ctrl-C ends the demo.");
        let stop = crate::streaming::stop_on_signal();
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // Its command producer goes before the embedded broker does.
    server.stop();
    Ok(())
}

/// One HTTP/1.1 request to the demo's own API: (status, body).
fn http_call(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    key: &str,
    body: Option<&str>,
) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).context("cannot reach the demo's API")?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("not an HTTP answer")?;
    let answer = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    Ok((status, answer))
}

fn offline() -> Result<()> {
    let config = parse_config(PROGRAMS).context("the shipped sample config does not validate")?;
    let mut engine = Engine::new(&config);
    let mut out = Vec::new();
    let mut records = 0usize;
    for line in EVENTS.lines().filter(|l| !l.trim().is_empty()) {
        records += 1;
        engine.apply(line.as_bytes(), &mut out);
    }
    let mut awarded: i128 = 0;
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    let mut events: BTreeMap<&str, usize> = BTreeMap::new();
    let mut rejected: BTreeMap<&str, usize> = BTreeMap::new();
    for o in &out {
        match o {
            Output::Transaction(t) => {
                if t.kind == TxKind::Award {
                    awarded += i128::from(t.points);
                }
                *by_kind.entry(t.kind.as_str()).or_default() += 1;
            }
            Output::Event(e) => *events.entry(e.kind()).or_default() += 1,
            Output::Rejected(r) => *rejected.entry(r.reason.as_str()).or_default() += 1,
            // The demo's engine folds every partition: it sends no messages.
            Output::Message(_) => {}
        }
    }
    println!("Loyalty engine demo: the sample programs in examples/programs.json");
    println!("folded over the {records} records of examples/events.jsonl\n");
    println!("Ledger transactions:");
    for (k, n) in &by_kind {
        println!("  {k:<14} {n:>6}");
    }
    println!("  points awarded {awarded:>6}\n");
    println!("Outbound events:");
    for (k, n) in &events {
        println!("  {k:<32} {n:>6}");
    }
    println!("\nRejected records (each with a machine-readable reason):");
    for (k, n) in &rejected {
        println!("  {k:<20} {n:>6}");
    }
    println!("\nAccounts:");
    println!(
        "  {:<14} {:<10} {:>8}  {:<8}",
        "program", "customer", "balance", "tier"
    );
    for a in engine.accounts() {
        let tier = a.tier.as_ref().map_or("-".to_string(), |t| t.name.clone());
        println!(
            "  {:<14} {:<10} {:>8}  {:<8}",
            a.program, a.customer, a.balance, tier
        );
    }
    println!("\nThe same fold as JSON lines:");
    println!("  loyalty fold --config examples/programs.json --events examples/events.jsonl");
    Ok(())
}
