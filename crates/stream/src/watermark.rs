//! The high watermark a consumer learned from its last fetch.
//!
//! `fetch_watermarks` asks the broker with ListOffsets, which tansu answers wrongly (the
//! base offset of the last batch plus one, not the end). The high watermark that comes back
//! with every Fetch response is right, and librdkafka caches it; the rdkafka crate has no
//! safe wrapper for that cache, hence this one call through its C API.

use std::ffi::CString;

use rdkafka::consumer::{BaseConsumer, Consumer};

/// The high watermark of `topic [partition]` as of the consumer's last fetch, if it has
/// fetched that partition.
#[allow(unsafe_code)]
pub fn cached_high<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    let topic = CString::new(topic).ok()?;
    let mut low: i64 = -1;
    let mut high: i64 = -1;
    // SAFETY: the client pointer is valid for the consumer's lifetime, `topic` is a valid
    // NUL-terminated string for the duration of the call, and `low`/`high` are valid
    // writable i64s; the function only reads librdkafka's cached partition state.
    let err = unsafe {
        rdkafka_sys::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka_sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}
