//! Reading the engine's log from the beginning: `loyalty log` prints it as JSON lines
//! (each record once), `loyalty replay` folds it into a new state directory.

use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Context, Result, StreamError};
use loyalty_core::envelope::log_line;
use loyalty_store::Store;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::folder::Folder;
use crate::logrec::{self, Dedupe, Meta};
use crate::service::{consumer, log_ends, producer, publish_outbox};
use crate::watermark::cached_high;
use crate::{topics, Settings};

/// Reads every log partition from the beginning up to its end as it is now, partition by
/// partition, calling `f(partition, offset, meta, value)` for each record.
pub fn read_log(
    settings: &Settings,
    only: Option<i32>,
    mut f: impl FnMut(i32, i64, &Meta, &[u8]) -> Result<()>,
) -> Result<()> {
    let c = consumer(settings)?;
    let partitions = topics::partitions(&c, &settings.log_topic)?;
    if let Some(p) = only.filter(|p| !(0..partitions).contains(p)) {
        return Err(StreamError::broken(format!(
            "the log {} has no partition {p} (it has {partitions})",
            settings.log_topic
        )));
    }
    // ListOffsets gives a lower bound of each end (exact on Kafka; too low on tansu, but
    // above zero whenever the partition holds anything); the fetches then tell the end.
    let ends = log_ends(&c, settings, partitions)?;
    for (p, mut end) in ends {
        if end == 0 || only.is_some_and(|o| o != p) {
            continue;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&settings.log_topic, p, Offset::Beginning)
            .context("cannot build the assignment")?;
        c.assign(&tpl).context("cannot assign the log")?;
        let mut next = 0;
        let mut idle = Instant::now();
        while next < end {
            match c.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    idle = Instant::now();
                    if next == 0 && m.offset() > 0 {
                        return Err(StreamError::broken(format!(
                            "partition {p} of the log {} starts at offset {}: its first records \
                             were deleted (retention), and what is left would fold into a partial \
                             state; the log topic needs retention.ms=-1 (docs/operations.md)",
                            settings.log_topic,
                            m.offset()
                        )));
                    }
                    if m.offset() >= end {
                        break;
                    }
                    next = m.offset() + 1;
                    if let Some(high) = cached_high(&c, &settings.log_topic, p) {
                        end = end.max(high);
                    }
                    let meta = logrec::meta(m.headers());
                    f(p, m.offset(), &meta, m.payload().unwrap_or_default())?;
                }
                Some(Err(e)) if crate::error::fatal(&e) => {
                    return Err(e).context("cannot read the log");
                }
                Some(Err(e)) => tracing::warn!(error = %e, "log consumer error"),
                None => {
                    if idle.elapsed() > Duration::from_secs(60) {
                        return Err(StreamError::broken(format!(
                            "the log stopped at offset {next} of {end} in partition {p}"
                        )));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Prints the log as JSON envelopes, one a line, in log order: every record once (a record
/// appended twice after a crash, or written to every partition, is printed once).
pub fn print_log(settings: &Settings, out: &mut impl Write) -> Result<()> {
    let mut dedupe = Dedupe::default();
    read_log(settings, None, |p, _offset, meta, value| {
        if let Some(src) = &meta.source {
            if dedupe.seen_before(p, src) {
                return Ok(());
            }
        }
        if meta.broadcast && p != 0 {
            return Ok(());
        }
        // A protobuf value that does not decode is printed as it is (as a JSON string),
        // which a fold of the printed log rejects as malformed too.
        let json = logrec::json_value(meta.content_type.as_deref(), value)
            .unwrap_or(std::borrow::Cow::Borrowed(value));
        writeln!(out, "{}", log_line(&json)).context("cannot write the log")?;
        Ok(())
    })
}

/// Rebuilds the state from the log into `store` (a new directory). Publishes the events
/// again, with the same ids and signatures, only when `publish` is set. Progress goes to
/// standard error. With `partition`, rebuilds the state of that one log partition as an
/// instance of a group (`--group`) folds it. Each batch is written while the next one
/// folds ([`Folder::commit_pipelined`]): nothing waits for an acknowledgement here, so
/// the two overlap.
pub fn replay(
    settings: &Settings,
    store: &Arc<Store>,
    publish: bool,
    partition: Option<i32>,
    stop: &AtomicBool,
) -> Result<u64> {
    let mut folder = match partition {
        Some(p) => {
            let count = topics::partitions(&consumer(settings)?, &settings.log_topic)?;
            Folder::open_partition(store, publish, p, count)
        }
        None => Folder::open(store, publish),
    }
    .context("cannot open the new state")?;
    folder.ws.account_cache = settings.account_cache;
    if !folder.positions.is_empty() {
        return Err(StreamError::broken(
            "the state directory is not empty: replay rebuilds into a new directory",
        ));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let producer = if publish {
        Some(producer(settings)?)
    } else {
        None
    };
    let start = Instant::now();
    let mut last_report = Instant::now();
    let mut total: u64 = 0;
    read_log(settings, partition, |p, offset, meta, value| {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(StreamError::Interrupted);
        }
        folder.fold(store, settings, p, offset, meta, value)?;
        if folder.pending >= settings.batch_size {
            total += folder.commit_pipelined(store)? as u64;
            if let Some(producer) = &producer {
                publish_outbox(&rt, producer, store, None, &mut 0)?;
            }
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            let rate = total as f64 / start.elapsed().as_secs_f64().max(0.001);
            tracing::info!(
                total,
                rate = rate as u64,
                partition = p,
                offset,
                "replay: records folded"
            );
        }
        Ok(())
    })?;
    total += folder.commit(store)? as u64;
    if let Some(producer) = &producer {
        publish_outbox(&rt, producer, store, None, &mut 0)?;
    }
    let secs = start.elapsed().as_secs_f64();
    tracing::info!(
        total,
        secs,
        accounts_loaded = folder.ws.loaded,
        "replay: done"
    );
    Ok(total)
}
