//! What the fold emits, as messages: outbound events (one topic per type, key the
//! customer, signed) and rejections (to the dead-letter topic with the original bytes and
//! the reason in a header). Built once, stored in the outbox in the same write batch as the
//! state, and published byte for byte as stored: a republish after a crash carries the same
//! id, payload and signature.

use loyalty_core::output::{OutEvent, Output};
use loyalty_proto::Envelope;
use loyalty_store::OutboxEntry;
use prost::Message as _;

use crate::logrec::Source;
use crate::signature;
use crate::{Format, Settings};

/// Header: the outbound event's id (downstream deduplicates on it).
pub const EVENT_ID: &str = "x-loyalty-event-id";
/// Header: the reason of a rejection.
pub const REASON: &str = "x-loyalty-reason";
/// Header: the detail of a rejection.
pub const DETAIL: &str = "x-loyalty-detail";
/// Header: the rejected record's id.
pub const SOURCE_ID: &str = "x-loyalty-source-id";

/// The value of an outbound event in the configured format.
pub fn event_payload(e: &OutEvent, format: Format) -> Vec<u8> {
    match format {
        Format::Json => e.to_envelope_json().into_bytes(),
        Format::Protobuf => Envelope {
            id: e.id.clone(),
            r#type: e.kind.to_string(),
            created: e.created.to_string(),
            data_json: serde_json::to_string(&e.data).unwrap_or_default(),
        }
        .encode_to_vec(),
    }
}

/// The message for one output of the fold, if it is published: events and rejections are,
/// ledger transactions are not (downstream learns of them through the events).
pub fn entry(
    settings: &Settings,
    output: &Output,
    original: &[u8],
    source: Option<&Source>,
) -> Option<OutboxEntry> {
    match output {
        Output::Transaction(_) => None,
        Output::Event(e) => {
            let payload = event_payload(e, settings.format);
            let sig = signature::sign(&settings.signing_secret, e.created.0, &payload);
            let content_type = match settings.format {
                Format::Json => "application/json",
                Format::Protobuf => "application/x-protobuf",
            };
            Some(OutboxEntry {
                seq: 0,
                topic: settings.output_topic(e.kind),
                key: e
                    .data
                    .get("customer")
                    .and_then(|c| c.as_str())
                    .map(|c| c.as_bytes().to_vec()),
                payload,
                headers: vec![
                    (signature::HEADER.into(), sig.into_bytes()),
                    ("content-type".into(), content_type.as_bytes().to_vec()),
                    (EVENT_ID.into(), e.id.clone().into_bytes()),
                ],
            })
        }
        Output::Rejected(r) => {
            let mut headers = vec![
                (REASON.to_string(), r.reason.as_str().as_bytes().to_vec()),
                (DETAIL.to_string(), r.detail.clone().into_bytes()),
            ];
            if let Some(id) = &r.source {
                headers.push((SOURCE_ID.into(), id.clone().into_bytes()));
            }
            if let Some(s) = source {
                headers.push((
                    crate::logrec::SRC_TOPIC.into(),
                    s.topic.clone().into_bytes(),
                ));
                headers.push((
                    crate::logrec::SRC_PARTITION.into(),
                    s.partition.to_string().into_bytes(),
                ));
                headers.push((
                    crate::logrec::SRC_OFFSET.into(),
                    s.offset.to_string().into_bytes(),
                ));
            }
            Some(OutboxEntry {
                seq: 0,
                topic: settings.dlq_topic.clone(),
                key: r.source.as_ref().map(|s| s.as_bytes().to_vec()),
                payload: original.to_vec(),
                headers,
            })
        }
    }
}
