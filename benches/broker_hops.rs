//! The whole path's physical reference: the broker alone carrying records over the hops the
//! engine's records take, with no engine. A producer writes N records to a first topic (the
//! input); a relay reads each topic and writes every record to the next one (the engine's
//! sequencer into its log, then its folder and publisher out to an output topic); a last
//! consumer reads the final topic. It reports records a second from the first produce to the
//! last record read, which is what `whole_path.sh` measures for the engine.
//!
//! Run by `benches/whole_path.sh` against its tansu, or by hand:
//!
//!     HOPS_BROKERS=127.0.0.1:9092 HOPS_RECORDS=100000 cargo bench --bench broker_hops
//!
//! Without `HOPS_BROKERS` it says so and exits (a plain `cargo bench` has no broker).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The engine's producer (`loyalty_stream::service::producer`): idempotent, all acks.
fn producer(brokers: &str, linger_ms: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", linger_ms)
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer")
}

/// The engine's consumer: partition 0 assigned from the start, no group.
fn consumer(brokers: &str, topic: &str) -> BaseConsumer {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "broker-hops")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("partition");
    c.assign(&tpl).expect("assign");
    c
}

/// Sends one record, waiting for room in the producer's queue when it is full.
fn send(p: &BaseProducer, topic: &str, key: &[u8], payload: &[u8]) {
    loop {
        match p.send(BaseRecord::to(topic).key(key).payload(payload)) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                p.poll(Duration::from_millis(5));
            }
            Err((e, _)) => panic!("produce to {topic}: {e}"),
        }
    }
}

/// Reads `n` records of `topic`, handing each to `each`; gives up after `stall` without any.
fn read(c: &BaseConsumer, n: u64, stall: Duration, mut each: impl FnMut(&[u8], &[u8])) -> u64 {
    let mut got = 0;
    let mut last = Instant::now();
    while got < n && last.elapsed() < stall {
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            let m = m.expect("fetch");
            each(m.key().unwrap_or_default(), m.payload().unwrap_or_default());
            got += 1;
            last = Instant::now();
        }
    }
    got
}

fn main() {
    let Ok(brokers) = std::env::var("HOPS_BROKERS") else {
        eprintln!("broker_hops: HOPS_BROKERS is not set; nothing to measure");
        return;
    };
    let n: u64 = std::env::var("HOPS_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    // Input, log, output: the engine's records cross two relays (sequencer, folder and
    // publisher) between the load generator and the reader.
    let run = format!("hops-{}", std::process::id());
    let topics: Vec<String> = (0..3).map(|i| format!("{run}.{i}")).collect();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("admin");
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, 1, TopicReplication::Fixed(1)))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for r in rt
        .block_on(admin.create_topics(&new, &AdminOptions::new()))
        .expect("create topics")
    {
        r.expect("topic created");
    }

    // A payment record's size (the load generator's are 190-230 bytes).
    let payload = vec![b'x'; 210];
    let stall = Duration::from_secs(30);
    let failed = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut relays = Vec::new();
    for hop in 0..topics.len() - 1 {
        let (from, to, brokers, failed) = (
            topics[hop].clone(),
            topics[hop + 1].clone(),
            brokers.clone(),
            failed.clone(),
        );
        relays.push(thread::spawn(move || {
            let c = consumer(&brokers, &from);
            let p = producer(&brokers, "2");
            let got = read(&c, n, stall, |k, v| {
                send(&p, &to, k, v);
                p.poll(Duration::ZERO);
            });
            p.flush(stall).expect("flush");
            if got < n {
                failed.store(true, Ordering::SeqCst);
            }
        }));
    }
    let source = {
        let (brokers, topic, payload) = (brokers.clone(), topics[0].clone(), payload.clone());
        thread::spawn(move || {
            let p = producer(&brokers, "5");
            for i in 0..n {
                send(
                    &p,
                    &topic,
                    format!("cus_{}", i % 20_000).as_bytes(),
                    &payload,
                );
                p.poll(Duration::ZERO);
            }
            p.flush(stall).expect("flush");
        })
    };
    let last = consumer(&brokers, &topics[topics.len() - 1]);
    let got = read(&last, n, stall, |_, _| {});
    let took = start.elapsed();
    source.join().expect("producer thread");
    for r in relays {
        r.join().expect("relay thread");
    }
    assert_eq!(got, n, "the last topic got {got} of {n} records");
    assert!(!failed.load(Ordering::SeqCst), "a relay read fewer records");
    println!(
        "broker alone over {} topics (produce, {} relays, read): {n} records in {:.2} s, {:.0} records/s",
        topics.len(),
        topics.len() - 1,
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
}
