//! Who holds which log partition, and where its HTTP API is: the compacted topic
//! `{log topic}.instances` (docs/scale-out.md, section 7).
//!
//! Each instance of a group writes `{url, partitions, at}` under its own URL whenever the
//! partitions it holds (restored, serving) change, and again every few seconds; every
//! instance reads the topic from the start and keeps the newest record of each. The owner
//! of a partition is the instance whose fresh record (written within the staleness bound)
//! names it, the most recent when two do (during a rebalance). librdkafka has no way to
//! carry this in the group protocol itself (Kafka Streams puts it in the subscription's
//! `userData` through an assignor of its own), hence a topic.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::error::{Context, Result};

/// One instance's announcement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// The instance: its `--advertise-url` when it serves an API, else an id of its own
    /// (absent in an announcement that only has a URL: the URL is the id).
    #[serde(default)]
    pub id: String,
    /// Where its HTTP API is reached (`--advertise-url`), if it serves one.
    pub url: Option<String>,
    /// The log partitions it holds and serves.
    pub partitions: Vec<i32>,
    /// For each of them, a log offset below which every record's outbox is delivered
    /// (what a standby may forget of its own outbox).
    #[serde(default)]
    pub published: BTreeMap<i32, i64>,
    /// When it wrote this, in unix milliseconds.
    pub at: i64,
}

/// Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The newest announcement of every instance.
#[derive(Debug, Default)]
pub struct Directory {
    entries: RwLock<BTreeMap<String, Announcement>>,
    /// Announcements older than this are of instances presumed gone.
    pub stale_after: Duration,
}

impl Directory {
    /// An empty directory.
    pub fn new(stale_after: Duration) -> Directory {
        Directory {
            entries: RwLock::new(BTreeMap::new()),
            stale_after,
        }
    }

    /// Takes in an announcement (an older one of the same instance is ignored).
    pub fn record(&self, mut a: Announcement) {
        if a.id.is_empty() {
            a.id = a.url.clone().unwrap_or_default();
        }
        let mut e = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if e.get(&a.id).is_none_or(|old| old.at <= a.at) {
            e.insert(a.id.clone(), a);
        }
    }

    fn fresh(&self, now: i64) -> Vec<Announcement> {
        let stale = self.stale_after.as_millis() as i64;
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|a| now - a.at <= stale)
            .cloned()
            .collect()
    }

    /// The announcement of the instance that serves partition `p`, if one is known.
    pub fn owner_of(&self, p: i32) -> Option<Announcement> {
        self.fresh(now_ms())
            .into_iter()
            .filter(|a| a.partitions.contains(&p))
            .max_by_key(|a| a.at)
    }

    /// The URL of the API that serves partition `p`, if one is known.
    pub fn owner(&self, p: i32) -> Option<String> {
        self.owner_of(p).and_then(|a| a.url)
    }

    /// The ids of every instance presumed alive, in order.
    pub fn members(&self) -> Vec<String> {
        self.fresh(now_ms()).into_iter().map(|a| a.id).collect()
    }

    /// The partitions instance `me` stands by for with `n` standby replicas: those whose
    /// owner is followed by `me` within the next `n` members, in id order, round the ring
    /// (every member computes the same from the same announcements).
    pub fn standby_for(&self, me: &str, n: usize, count: i32) -> Vec<i32> {
        let members = self.members();
        let Some(mine) = members.iter().position(|m| m == me) else {
            return Vec::new();
        };
        (0..count)
            .filter(|p| {
                let Some(owner) = self.owner_of(*p) else {
                    return false;
                };
                let Some(o) = members.iter().position(|m| *m == owner.id) else {
                    return false;
                };
                o != mine && (1..=n.min(members.len() - 1)).any(|k| (o + k) % members.len() == mine)
            })
            .collect()
    }
}

/// Reads the topic from its start into `dir` until `stop` is set (on its own thread).
pub fn follow(brokers: &str, topic: &str, dir: &Directory, stop: &dyn Fn() -> bool) -> Result<()> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "loyalty-instances")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .context("cannot create the instances' reader")?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .context("cannot build the assignment")?;
    c.assign(&tpl).context("cannot read the instances topic")?;
    while !stop() {
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                match m
                    .payload()
                    .map(serde_json::from_slice::<Announcement>)
                    .transpose()
                {
                    Ok(Some(a)) => dir.record(a),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "an instances record that does not parse"),
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "instances reader"),
            None => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_fresh_claim_owns_a_partition() {
        let d = Directory::new(Duration::from_secs(30));
        let now = now_ms();
        let a = |url: &str, partitions: Vec<i32>, at| Announcement {
            id: url.into(),
            url: Some(url.into()),
            partitions,
            published: BTreeMap::new(),
            at,
        };
        d.record(a("http://a", vec![0, 1], now - 2000));
        d.record(a("http://b", vec![1, 2], now - 1000));
        d.record(a("http://c", vec![3], now - 60_000));
        assert_eq!(d.owner(0).as_deref(), Some("http://a"));
        assert_eq!(d.owner(1).as_deref(), Some("http://b"));
        // Stale: an instance presumed gone serves nothing.
        assert_eq!(d.owner(3), None);
        // An older announcement of an instance does not replace its newer one.
        d.record(a("http://a", vec![5], now - 5000));
        assert_eq!(d.owner(5), None);
        assert_eq!(
            d.members(),
            vec!["http://a".to_string(), "http://b".to_string()]
        );
        // One standby each: the next member after the owner, round the ring.
        assert_eq!(d.standby_for("http://b", 1, 6), vec![0]);
        assert_eq!(d.standby_for("http://a", 1, 6), vec![1, 2]);
        assert_eq!(d.standby_for("http://a", 0, 6), Vec::<i32>::new());
        assert_eq!(d.standby_for("http://c", 1, 6), Vec::<i32>::new());
    }
}
