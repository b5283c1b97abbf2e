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
            r#type: e.kind().to_string(),
            created: e.created.to_string(),
            data_json: e.data_json(),
            source: e.source.as_deref().map(str::to_string),
        }
        .encode_to_vec(),
    }
}

/// The message for one output of the fold, if it is published: events and rejections are,
/// ledger transactions are not (downstream learns of them through the events). `line`:
/// the output's line as printed, if at hand (an event's JSON envelope is that line without
/// its `kind` field, copied instead of written again).
pub fn entry(
    settings: &Settings,
    output: &Output,
    line: Option<&str>,
    original: &[u8],
    source: Option<&Source>,
) -> Option<OutboxEntry> {
    match output {
        // Ledger lines are not published.
        Output::Transaction(_) => None,
        // A message to another partition is appended to that partition of the log, keyed
        // as its destination routes.
        Output::Message(m) => Some(OutboxEntry {
            seq: 0,
            topic: settings.log_topic.clone(),
            key: Some(m.key.as_bytes().to_vec()),
            payload: m.record.as_bytes().to_vec(),
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            partition: Some(m.partition as i32),
            line: None,
        }),
        Output::Event(e) => {
            let copied = match settings.format {
                Format::Json => line.and_then(|l| loyalty_store::envelope_of(l.as_bytes())),
                Format::Protobuf => None,
            };
            let payload = copied.unwrap_or_else(|| event_payload(e, settings.format));
            let sig = signature::sign(&settings.signing_secret, e.created.0, &payload);
            let content_type = match settings.format {
                Format::Json => "application/json",
                Format::Protobuf => "application/x-protobuf",
            };
            Some(OutboxEntry {
                seq: 0,
                topic: settings.output_topic(e.kind()),
                key: Some(e.member.customer.as_bytes().to_vec()),
                payload,
                headers: vec![
                    (signature::HEADER.into(), sig.into_bytes()),
                    ("content-type".into(), content_type.as_bytes().to_vec()),
                    (EVENT_ID.into(), e.id.clone().into_bytes()),
                ],
                partition: None,
                line: None,
            })
        }
        Output::Rejected(r) => {
            let mut headers = vec![
                (
                    EVENT_ID.to_string(),
                    dead_letter_id(r, original, source).into_bytes(),
                ),
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
                partition: None,
                line: None,
            })
        }
    }
}

/// An event's message in JSON whose payload is the envelope of its output line, the
/// batch's line `line` (which must be an event's: [`loyalty_store::envelope_rest`]),
/// published as [`entry`] makes it, but made for the folding thread to hand on cheaply: the
/// payload is not copied (the store keeps a reference to the line) and the signature is
/// left for [`sign_events`] to write where the batch is written; its header's value is
/// empty until then. Returns the entry and the second its signature carries.
pub fn event_of_line(settings: &Settings, e: &OutEvent, line: usize) -> (OutboxEntry, i64) {
    let entry = OutboxEntry {
        seq: 0,
        topic: settings.output_topic(e.kind()),
        key: Some(e.member.customer.as_bytes().to_vec()),
        payload: Vec::new(),
        headers: vec![
            (signature::HEADER.into(), Vec::new()),
            ("content-type".into(), b"application/json".to_vec()),
            (EVENT_ID.into(), e.id.clone().into_bytes()),
        ],
        partition: None,
        line: Some(line),
    };
    (entry, e.created.0)
}

/// An outbox entry of a batch waiting for its signature ([`event_of_line`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsigned {
    /// Its index in the batch's outbox.
    pub entry: usize,
    /// The unix second its signature carries (the event's `created`).
    pub t: i64,
}

/// Signs the entries of `batch` that wait for it, each over its line's envelope, as
/// [`entry`] signs the copy it makes. Refuses the batch (nothing is then written) when one
/// cannot be signed: no signer, or an entry that is not an event's message of that batch.
pub fn sign_events(
    signer: Option<&signature::Signer>,
    batch: &mut loyalty_store::Batch,
    unsigned: &[Unsigned],
) -> Result<(), loyalty_store::StoreError> {
    for u in unsigned {
        let refuse = |why: &str| loyalty_store::StoreError::Corrupt {
            key: format!("x/ (message {} of the batch)", u.entry),
            why: format!("cannot sign the event's message: {why}"),
        };
        let signer = signer.ok_or_else(|| refuse("no signer"))?;
        let entry = batch
            .outbox
            .get_mut(u.entry)
            .ok_or_else(|| refuse("no such message"))?;
        let rest = entry
            .line
            .and_then(|i| batch.lines.get(i))
            .and_then(|l| loyalty_store::envelope_rest(l.as_bytes()))
            .ok_or_else(|| refuse("its line is not an event's"))?;
        let header = entry
            .headers
            .iter_mut()
            .find(|(k, _)| k == signature::HEADER)
            .ok_or_else(|| refuse("no signature header"))?;
        header.1 = signer.sign(u.t, &[b"{", rest]).into_bytes();
    }
    Ok(())
}

/// The id of a dead letter (header [`EVENT_ID`], as on outbound events): a pure function of
/// the input record it rejects, its topic, partition and offset, so that a dead letter sent
/// again after a crash carries the id of the first, and a consumer of the DLQ drops the
/// repeat. A rejection without a source (a record the engine wrote itself) takes its id
/// from the record's bytes and the reason instead.
pub fn dead_letter_id(
    r: &loyalty_core::envelope::Rejection,
    original: &[u8],
    source: Option<&Source>,
) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    match source {
        Some(s) => {
            h.update(b"src\0");
            h.update(s.topic.as_bytes());
            h.update(format!("\0{}\0{}", s.partition, s.offset).as_bytes());
        }
        None => {
            h.update(b"bytes\0");
            h.update(r.reason.as_str().as_bytes());
            h.update(b"\0");
            h.update(original);
        }
    }
    let digest = h.finalize();
    let mut id = String::with_capacity(4 + 32);
    id.push_str("dlq_");
    for b in &digest[..16] {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use loyalty_core::envelope::{Reason, Rejection};

    /// An event's payload copied from its printed line is the envelope written afresh,
    /// byte for byte, and signed alike.
    #[test]
    fn an_events_payload_from_its_line_is_its_envelope() {
        let program = r#"{"id":"prog_a","currency":"EUR","autoEnroll":true,"earningRules":[{"id":"rule_a","trigger":"payment.completed","award":{"type":"per_amount","per":100,"points":1}}]}"#;
        let records = [
            format!(r#"{{"id":"u1","type":"loyalty.program.updated","created":"2026-01-01T00:00:00Z","data":{program}}}"#),
            r#"{"id":"e1","type":"payment.completed","created":"2026-01-02T00:00:00Z","data":{"id":"p1","customer":"c \"q\" é","amount":1000,"currency":"EUR"}}"#.to_string(),
        ];
        let mut engine = loyalty_core::Engine::empty();
        let mut out = Vec::new();
        for r in &records {
            engine.apply(r.as_bytes(), &mut out);
        }
        let settings = Settings::new("127.0.0.1:9092");
        let mut events = 0;
        for o in &out {
            if let Output::Event(e) = o {
                events += 1;
                let line = o.to_json_line();
                let copied = entry(&settings, o, Some(&line), b"", None).expect("sent");
                let fresh = entry(&settings, o, None, b"", None).expect("sent");
                assert_eq!(copied, fresh);
                assert_eq!(fresh.payload, event_payload(e, Format::Json));
            }
        }
        assert!(events >= 2, "{out:?}");
    }

    /// A message waiting for its signature is signed over its line's envelope as
    /// [`entry`] signs its copy; one that cannot be signed (no signer, no such message, a
    /// line that is not an event's) refuses the batch.
    #[test]
    fn waiting_messages_are_signed_or_refused() {
        let program = r#"{"id":"prog_a","currency":"EUR","autoEnroll":true,"earningRules":[{"id":"rule_a","trigger":"payment.completed","award":{"type":"per_amount","per":100,"points":1}}]}"#;
        let update = format!(
            r#"{{"id":"u1","type":"loyalty.program.updated","created":"2026-01-01T00:00:00Z","data":{program}}}"#
        );
        let pay = r#"{"id":"e1","type":"payment.completed","created":"2026-01-02T00:00:00Z","data":{"id":"p1","customer":"c","amount":1000,"currency":"EUR"}}"#;
        let mut engine = loyalty_core::Engine::empty();
        let mut out = Vec::new();
        engine.apply(update.as_bytes(), &mut out);
        engine.apply(pay.as_bytes(), &mut out);
        let mut settings = Settings::new("127.0.0.1:9092");
        settings.signing_secret = b"whsec".to_vec();
        let signer = signature::Signer::new(b"whsec");
        let lines: Vec<String> = out.iter().map(Output::to_json_line).collect();
        let (i, e) = out
            .iter()
            .enumerate()
            .find_map(|(i, o)| match o {
                Output::Event(e) => Some((i, e)),
                _ => None,
            })
            .expect("an event");
        let (waiting, t) = event_of_line(&settings, e, i);
        let batch = |line: Option<usize>| {
            let mut w = waiting.clone();
            w.line = line;
            loyalty_store::Batch {
                lines: lines.clone(),
                outbox: vec![w],
                ..Default::default()
            }
        };
        let unsigned = [Unsigned { entry: 0, t }];
        assert!(sign_events(None, &mut batch(Some(i)), &unsigned).is_err());
        assert!(sign_events(
            Some(&signer),
            &mut batch(Some(i)),
            &[Unsigned { entry: 1, t }]
        )
        .is_err());
        let transaction = out.iter().position(|o| matches!(o, Output::Transaction(_)));
        assert!(transaction.is_some());
        assert!(sign_events(Some(&signer), &mut batch(transaction), &unsigned).is_err());
        assert!(sign_events(Some(&signer), &mut batch(None), &unsigned).is_err());
        let mut batch = batch(Some(i));
        sign_events(Some(&signer), &mut batch, &unsigned).unwrap();
        let fresh = entry(&settings, &out[i], None, b"", None).expect("sent");
        assert_eq!(batch.outbox[0].headers, fresh.headers);
        assert_eq!(
            (&batch.outbox[0].topic, &batch.outbox[0].key),
            (&fresh.topic, &fresh.key)
        );
    }

    fn src(offset: i64) -> Source {
        Source {
            topic: "payment.completed".into(),
            partition: 2,
            offset,
        }
    }

    /// The same input record gets the same dead-letter id whenever it is rejected again
    /// (after a restart the detail may differ, as a skew rejection's does); another
    /// record, another id.
    #[test]
    fn dead_letter_ids_follow_the_input_record() {
        let a = Rejection::new(Some("evt_1"), Reason::Invalid, "created: ahead");
        let b = Rejection::new(Some("evt_1"), Reason::Invalid, "created: further ahead");
        let id = dead_letter_id(&a, b"{}", Some(&src(7)));
        assert!(id.starts_with("dlq_") && id.len() == 36, "{id}");
        assert_eq!(id, dead_letter_id(&b, b"{}", Some(&src(7))));
        assert_ne!(id, dead_letter_id(&a, b"{}", Some(&src(8))));
        let mut other = src(7);
        other.topic = "invoice.paid".into();
        assert_ne!(id, dead_letter_id(&a, b"{}", Some(&other)));
        // Without a source: by bytes and reason.
        let x = dead_letter_id(&a, b"abc", None);
        assert_eq!(x, dead_letter_id(&b, b"abc", None));
        assert_ne!(x, dead_letter_id(&a, b"abd", None));
    }

    /// The dead letter carries its id in the header outbound events carry theirs in.
    #[test]
    fn a_dead_letter_carries_its_id() {
        let settings = Settings::new("127.0.0.1:9092");
        let r = Rejection::new(None, Reason::Malformed, "not JSON");
        let e = entry(
            &settings,
            &Output::Rejected(r.clone()),
            None,
            b"x",
            Some(&src(3)),
        )
        .expect("sent");
        let id = e
            .headers
            .iter()
            .find(|(k, _)| k == EVENT_ID)
            .expect("id header");
        assert_eq!(id.1, dead_letter_id(&r, b"x", Some(&src(3))).into_bytes());
    }
}
