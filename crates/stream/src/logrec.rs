//! The engine's log records: headers that carry each record's source, the decoding of
//! protobuf values, and the rule that tells a re-appended record from a new one.

use std::collections::BTreeMap;

use loyalty_proto::Envelope;
use prost::Message as _;
use rdkafka::message::{Header, Headers, OwnedHeaders};

/// Header: the input topic a log record came from.
pub const SRC_TOPIC: &str = "x-loyalty-src-topic";
/// Header: its input partition.
pub const SRC_PARTITION: &str = "x-loyalty-src-partition";
/// Header: its input offset.
pub const SRC_OFFSET: &str = "x-loyalty-src-offset";
/// Header: present on records written to every partition (program updates, ticks).
pub const BROADCAST: &str = "x-loyalty-broadcast";
/// Header: the value's content type.
pub const CONTENT_TYPE: &str = "content-type";

/// Where an input record came from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Source {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// What the folder and `loyalty log` need of a message's headers.
#[derive(Clone, Debug, Default)]
pub struct Meta {
    /// The input record it came from (absent on records the engine wrote itself).
    pub source: Option<Source>,
    /// Written to every partition.
    pub broadcast: bool,
    /// The content type, when given.
    pub content_type: Option<String>,
}

/// Reads the headers of a message.
pub fn meta<H: Headers>(headers: Option<&H>) -> Meta {
    let mut m = Meta::default();
    let Some(h) = headers else { return m };
    let (mut topic, mut part, mut off) = (None, None, None);
    for header in h.iter() {
        let text = header.value.and_then(|v| std::str::from_utf8(v).ok());
        match header.key {
            SRC_TOPIC => topic = text.map(str::to_string),
            SRC_PARTITION => part = text.and_then(|t| t.parse().ok()),
            SRC_OFFSET => off = text.and_then(|t| t.parse().ok()),
            BROADCAST => m.broadcast = true,
            CONTENT_TYPE => m.content_type = text.map(str::to_string),
            _ => {}
        }
    }
    if let (Some(topic), Some(partition), Some(offset)) = (topic, part, off) {
        m.source = Some(Source {
            topic,
            partition,
            offset,
        });
    }
    m
}

/// Headers of a log record.
pub fn headers(
    source: Option<&Source>,
    broadcast: bool,
    content_type: Option<&str>,
) -> OwnedHeaders {
    let mut h = OwnedHeaders::new();
    if let Some(s) = source {
        h = h
            .insert(Header {
                key: SRC_TOPIC,
                value: Some(s.topic.as_bytes()),
            })
            .insert(Header {
                key: SRC_PARTITION,
                value: Some(s.partition.to_string().as_bytes()),
            })
            .insert(Header {
                key: SRC_OFFSET,
                value: Some(s.offset.to_string().as_bytes()),
            });
    }
    if broadcast {
        h = h.insert(Header {
            key: BROADCAST,
            value: Some(b"1".as_slice()),
        });
    }
    if let Some(ct) = content_type {
        h = h.insert(Header {
            key: CONTENT_TYPE,
            value: Some(ct.as_bytes()),
        });
    }
    h
}

/// True for the content types of protobuf values.
pub fn is_protobuf(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        let ct = ct.to_ascii_lowercase();
        ct.contains("protobuf") || ct.contains("x-proto")
    })
}

/// Why a protobuf record value stands for no JSON envelope (the detail of its `malformed`
/// rejection, and of its dead letter).
#[derive(Debug, thiserror::Error)]
pub enum UndecodableValue {
    /// The bytes are not a loyalty `Envelope` message.
    #[error("the protobuf value is not a loyalty Envelope: {0}")]
    NotAnEnvelope(#[from] prost::DecodeError),
    /// The envelope's `data_json` is not JSON.
    #[error("data_json: the protobuf Envelope's data is not JSON: {0}")]
    DataNotJson(#[source] serde_json::Error),
}

/// The JSON envelope a record value stands for: JSON values as they are, protobuf
/// `Envelope`s turned into the same JSON. A protobuf value that does not decode gives the
/// reason it does not, for a `malformed` rejection.
pub fn json_value<'a>(
    content_type: Option<&str>,
    value: &'a [u8],
) -> Result<std::borrow::Cow<'a, [u8]>, UndecodableValue> {
    if !is_protobuf(content_type) {
        return Ok(std::borrow::Cow::Borrowed(value));
    }
    let env = Envelope::decode(value)?;
    let data = serde_json::value::RawValue::from_string(env.data_json)
        .map_err(UndecodableValue::DataNotJson)?;
    let json = serde_json::json!({"id": env.id, "type": env.r#type, "created": env.created});
    let mut obj = json.to_string();
    obj.pop(); // the closing brace
    obj.push_str(",\"data\":");
    obj.push_str(data.get());
    obj.push('}');
    Ok(std::borrow::Cow::Owned(obj.into_bytes()))
}

/// A log or input record's value parsed as the engine parses it, whatever its content
/// type: the record, or its rejection (a protobuf value that does not decode is
/// `malformed`, with the decoder's reason).
pub fn parse(
    content_type: Option<&str>,
    value: &[u8],
) -> Result<loyalty_core::envelope::Record, loyalty_core::envelope::Rejection> {
    match json_value(content_type, value) {
        Ok(json) => loyalty_core::envelope::parse(&json),
        Err(detail) => Err(loyalty_core::envelope::Rejection::new(
            None,
            loyalty_core::envelope::Reason::Malformed,
            detail.to_string(),
        )),
    }
}

/// Tells re-appended records from new ones. Records of one input partition keep their
/// order within a log partition, so a record whose source offset is not above the highest
/// one already seen from that source in that log partition was appended before: it is the
/// engine's own redelivery (after a crash between appending and storing input offsets),
/// not an upstream duplicate.
#[derive(Clone, Debug, Default)]
pub struct Dedupe {
    /// Highest source offset seen, by (log partition, topic, partition).
    pub max: BTreeMap<(i32, String, i32), i64>,
}

impl Dedupe {
    /// True when the record was seen; otherwise notes it and returns false.
    pub fn seen_before(&mut self, log_partition: i32, source: &Source) -> bool {
        let key = (log_partition, source.topic.clone(), source.partition);
        match self.max.get(&key) {
            Some(max) if source.offset <= *max => true,
            _ => {
                self.max.insert(key, source.offset);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let src = Source {
            topic: "payment.completed".into(),
            partition: 2,
            offset: 41,
        };
        let h = headers(Some(&src), true, Some("application/x-protobuf"));
        let m = meta(Some(&h));
        assert_eq!(m.source, Some(src));
        assert!(m.broadcast);
        assert!(is_protobuf(m.content_type.as_deref()));
    }

    #[test]
    fn protobuf_becomes_the_json_envelope() {
        let env = Envelope {
            source: None,
            id: "evt_1".into(),
            r#type: "payment.completed".into(),
            created: "2026-03-01T10:00:00Z".into(),
            data_json: r#"{"id":"pay_1","customer":"cus_A","amount":12000,"currency":"EUR"}"#
                .into(),
        };
        let bytes = env.encode_to_vec();
        let json = json_value(Some("application/x-protobuf"), &bytes).expect("decodes");
        let rec = loyalty_core::envelope::parse(&json).expect("decodes to a valid record");
        assert_eq!(&*rec.id, "evt_1");
    }

    /// A protobuf value that does not decode is `malformed`, and the detail says why (not
    /// "not a JSON object").
    #[test]
    fn undecodable_protobuf_names_the_cause() {
        let r = parse(Some("application/x-protobuf"), b"\xff\xff").expect_err("rejected");
        assert_eq!(r.reason, loyalty_core::envelope::Reason::Malformed);
        assert!(r.detail.contains("protobuf"), "{}", r.detail);
        assert!(!r.detail.contains("JSON object"), "{}", r.detail);
        assert!(matches!(
            json_value(Some("application/x-protobuf"), b"\xff\xff"),
            Err(UndecodableValue::NotAnEnvelope(_))
        ));
        let env = Envelope {
            source: None,
            id: "evt_1".into(),
            r#type: "payment.completed".into(),
            created: "2026-03-01T10:00:00Z".into(),
            data_json: "{not json".into(),
        };
        let r = parse(Some("application/x-protobuf"), &env.encode_to_vec()).expect_err("rejected");
        assert_eq!(r.reason, loyalty_core::envelope::Reason::Malformed);
        assert!(r.detail.starts_with("data_json:"), "{}", r.detail);
        assert!(matches!(
            json_value(Some("application/x-protobuf"), &env.encode_to_vec()),
            Err(UndecodableValue::DataNotJson(_))
        ));
    }

    #[test]
    fn redeliveries_are_told_apart() {
        let mut d = Dedupe::default();
        let s = |o| Source {
            topic: "t".into(),
            partition: 0,
            offset: o,
        };
        assert!(!d.seen_before(0, &s(5)));
        assert!(!d.seen_before(0, &s(6)));
        assert!(d.seen_before(0, &s(5)));
        assert!(d.seen_before(0, &s(6)));
        assert!(!d.seen_before(1, &s(6)), "another log partition");
        assert!(!d.seen_before(0, &s(7)));
    }
}
