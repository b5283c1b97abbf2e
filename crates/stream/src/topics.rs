//! Creating the topics the engine needs when they are missing.

use std::time::Duration;

use crate::error::{Context, Result, StreamError};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

use crate::Settings;

/// Creates every input, log, output and dead-letter topic that does not exist yet.
pub async fn ensure(settings: &Settings) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .create()
        .context("cannot create the Kafka admin client")?;
    let mut wanted: Vec<(String, i32)> = settings
        .input_topics
        .iter()
        .map(|t| (t.clone(), settings.input_partitions))
        .collect();
    wanted.push((settings.log_topic.clone(), settings.log_partitions));
    wanted.push((settings.dlq_topic.clone(), 1));
    wanted.extend(settings.output_topics().into_iter().map(|t| (t, 1)));
    wanted.extend(settings.instances_topic.iter().map(|t| (t.clone(), 1)));
    let existing = existing_topics(settings)?;
    let missing: Vec<&(String, i32)> = wanted
        .iter()
        .filter(|(t, _)| !existing.contains(t))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    tracing::info!(?missing, "creating topics");
    let new: Vec<NewTopic<'_>> = missing
        .iter()
        .map(|(t, p)| {
            let topic = NewTopic::new(t, *p, TopicReplication::Fixed(1));
            // The log is the source of truth: replay needs every record ever appended.
            if *t == settings.log_topic {
                topic.set("retention.ms", "-1").set("retention.bytes", "-1")
            } else if settings.instances_topic.as_ref() == Some(t) {
                // Only each instance's newest announcement matters.
                topic.set("cleanup.policy", "compact")
            } else {
                topic
            }
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = match admin.create_topics(&new, &opts).await {
        Ok(r) => r,
        Err(e) => {
            // Some brokers create topics on first use instead (librdkafka's mock cluster
            // times CreateTopics out); what counts is that the topics exist now.
            let existing = existing_topics(settings)?;
            let still: Vec<&str> = missing
                .iter()
                .map(|(t, _)| t.as_str())
                .filter(|t| !existing.iter().any(|e| e == t))
                .collect();
            if still.is_empty() {
                return Ok(());
            }
            return Err(e).with_context(|| format!("CreateTopics failed for {still:?}"));
        }
    };
    for r in results {
        match r {
            Ok(t) => tracing::info!(topic = %t, "created topic"),
            Err((t, RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::debug!(topic = %t, "topic exists")
            }
            Err((t, e)) => {
                return Err(StreamError::Kafka {
                    what: format!("cannot create topic {t}"),
                    source: rdkafka::error::KafkaError::AdminOp(e),
                })
            }
        }
    }
    let created: Vec<&str> = missing.iter().map(|(t, _)| t.as_str()).collect();
    wait_for_leaders(settings, &created)
}

/// Waits (up to 30 s) until every partition of `topics` has a leader in the cluster's
/// metadata. Apache Kafka acknowledges CreateTopics before the leaders are elected and
/// known to every listener: a ListOffsets or a fetch in that moment fails with
/// `NotLeaderForPartition` (tansu had leaders at once).
fn wait_for_leaders(settings: &Settings, topics: &[&str]) -> Result<()> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .create()
        .context("cannot create a Kafka client")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let md = c
            .fetch_metadata(None, Duration::from_secs(30))
            .context("cannot fetch the cluster's metadata")?;
        let leaderless: Vec<&str> = topics
            .iter()
            .copied()
            .filter(|name| {
                md.topics()
                    .iter()
                    .find(|t| t.name() == *name)
                    .is_none_or(|t| {
                        t.error().is_some()
                            || t.partitions().is_empty()
                            || t.partitions()
                                .iter()
                                .any(|p| p.leader() < 0 || p.error().is_some())
                    })
            })
            .collect();
        if leaderless.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(StreamError::broken(format!(
                "topics created but without a leader after 30 s: {leaderless:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn existing_topics(settings: &Settings) -> Result<Vec<String>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .create()
        .context("cannot create a Kafka client")?;
    let md = c
        .fetch_metadata(None, Duration::from_secs(30))
        .context("cannot fetch the cluster's metadata")?;
    Ok(md.topics().iter().map(|t| t.name().to_string()).collect())
}

/// The number of partitions of `topic`.
pub fn partitions<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
) -> Result<i32> {
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .with_context(|| format!("cannot fetch the metadata of {topic}"))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .with_context(|| format!("topic {topic} does not exist"))?;
    if let Some(e) = t.error() {
        return Err(StreamError::broken(format!("topic {topic}: {e:?}")));
    }
    Ok(t.partitions().len() as i32)
}
