//! Writing JSON values exactly as `serde_json`'s compact serializer does.
//!
//! Owns: strings, numbers and times as JSON text. Must not: know which object it writes.

use crate::time::Timestamp;

/// A JSON string. One pass finds whether any byte needs an escape (a quote, a
/// backslash, a control character); the rare string that does is left to serde_json.
pub fn str(out: &mut Vec<u8>, s: &str) {
    if !needs_escape(s.as_bytes()) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// Whether any byte of `s` is a quote, a backslash or a control character. (Without an
/// early exit, the compiler checks many bytes at a time; strings here are short.)
pub fn needs_escape(s: &[u8]) -> bool {
    s.iter().fold(false, |any, &b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    })
}

/// A string or `null`.
pub fn opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// An integer.
pub fn int<I: itoa::Integer>(out: &mut Vec<u8>, v: I) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// A time, as its `Serialize` prints it.
pub fn time(out: &mut Vec<u8>, t: Timestamp) {
    let mut buf = [0u8; 20];
    if t.write_utc(&mut buf) {
        out.push(b'"');
        out.extend_from_slice(&buf);
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, &t);
    }
}
