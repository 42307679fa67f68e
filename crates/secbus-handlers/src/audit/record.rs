//! One line of the audit trail and the hash that chains it to the one before.
//!
//! A line is `{"seq":N,"event":{...},"prev":"<hex>","hash":"<hex>"}`. The
//! hash is SHA-256 over a domain tag, `prev` (hex), `seq` (decimal) and the
//! event exactly as its bytes stand in the line: any changed byte of the event,
//! a changed `seq` or `prev`, or a record moved to another place changes what
//! the hash should be, and every later record names the hash before it.

use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// The `prev` of the first record of a trail.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Keeps trail hashes apart from any other SHA-256 of the same bytes.
const DOMAIN: &[u8] = b"secbus-audit-v1\n";

/// A record as read back from a line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoredRecord<'a> {
    pub(crate) seq: u64,
    #[serde(borrow)]
    pub(crate) event: &'a RawValue,
    pub(crate) prev: String,
    pub(crate) hash: String,
}

/// The hash of the record `seq` holding `event` (its JSON bytes) after `prev`.
pub(crate) fn record_hash(prev: &str, seq: u64, event: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(seq.to_string().as_bytes());
    h.update(b"\n");
    h.update(event);
    hex::encode(h.finalize())
}

/// The line (with its newline) of record `seq` holding `event` after `prev`,
/// and the record's hash.
pub(crate) fn encode_line(prev: &str, seq: u64, event: &[u8]) -> (Vec<u8>, String) {
    let hash = record_hash(prev, seq, event);
    // Written by hand: `event` is JSON already, `prev` and `hash` are hex.
    let mut line = Vec::with_capacity(event.len() + 180);
    line.extend_from_slice(b"{\"seq\":");
    line.extend_from_slice(seq.to_string().as_bytes());
    line.extend_from_slice(b",\"event\":");
    line.extend_from_slice(event);
    line.extend_from_slice(b",\"prev\":\"");
    line.extend_from_slice(prev.as_bytes());
    line.extend_from_slice(b"\",\"hash\":\"");
    line.extend_from_slice(hash.as_bytes());
    line.extend_from_slice(b"\"}\n");
    (line, hash)
}

/// Whether `s` looks like a hash: 64 lowercase hex digits.
pub(crate) fn is_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_reads_back_with_the_same_event_bytes_and_hash() {
        let event = br#"{"id":"e1","data":{"user":"bob"}}"#;
        let (line, hash) = encode_line(GENESIS, 1, event);
        let text = std::str::from_utf8(&line).unwrap();
        let rec: StoredRecord<'_> = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(rec.event.get().as_bytes(), event);
        assert_eq!(rec.hash, hash);
        assert_eq!(record_hash(&rec.prev, rec.seq, event), hash);
        assert_ne!(record_hash(GENESIS, 2, event), hash);
        assert!(is_hash(&hash));
    }
}
