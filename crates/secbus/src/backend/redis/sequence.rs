//! Stream ids as secbus sequences, and back.
//!
//! A Redis stream id is `<ms>-<n>`: the server's clock in milliseconds when the
//! entry was added and a counter within that millisecond. secbus packs it into
//! one `u64`: `ms << 20 | n`. Redis ids grow strictly within a stream, so the
//! sequences of a tenant grow strictly too; the packing holds while `n` stays
//! below 2^20 (1,048,576 entries in one millisecond, far above what one stream
//! takes) and `ms` below 2^44 (the year 2527). A sequence turns back into the
//! stream id it came from, which is how replay from a sequence and acks find
//! their entry.

use std::fmt;

use crate::error::{Error, ErrorKind, Result};

const SEQ_BITS: u32 = 20;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;
const MAX_MS: u64 = u64::MAX >> SEQ_BITS;

/// A stream entry id, `<ms>-<n>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct StreamId {
    pub(super) ms: u64,
    pub(super) n: u64,
}

impl StreamId {
    /// The id before every entry.
    pub(super) const ZERO: StreamId = StreamId { ms: 0, n: 0 };

    /// Parses `<ms>-<n>` as Redis returns it.
    pub(super) fn parse(text: &str) -> Result<StreamId> {
        let bad = || {
            Error::new(
                ErrorKind::Engine,
                format!("redis returned {text:?} where a stream id was expected"),
            )
        };
        let (ms, n) = text.split_once('-').ok_or_else(bad)?;
        Ok(StreamId {
            ms: ms.parse().map_err(|_| bad())?,
            n: n.parse().map_err(|_| bad())?,
        })
    }

    /// The id of the sequence `seq`.
    pub(super) fn from_sequence(seq: u64) -> StreamId {
        StreamId {
            ms: seq >> SEQ_BITS,
            n: seq & SEQ_MASK,
        }
    }

    /// The sequence of this id; an error for an id the packing cannot hold.
    pub(super) fn sequence(self) -> Result<u64> {
        if self.n > SEQ_MASK || self.ms > MAX_MS {
            return Err(Error::new(
                ErrorKind::Engine,
                format!("stream id {self} is outside what a secbus sequence can hold"),
            ));
        }
        Ok(self.ms << SEQ_BITS | self.n)
    }

    /// The largest id below every entry at `seq` or later: a group created at
    /// it, or a read after it, starts with the entry at `seq` (or the next one).
    pub(super) fn before_sequence(seq: u64) -> StreamId {
        if seq == 0 {
            return StreamId::ZERO;
        }
        let at = StreamId::from_sequence(seq);
        if at.n > 0 {
            StreamId {
                ms: at.ms,
                n: at.n - 1,
            }
        } else {
            // No id at `ms - 1` has `n` above the mask, so this is below `at`
            // and above every entry of the previous millisecond.
            StreamId {
                ms: at.ms - 1,
                n: SEQ_MASK,
            }
        }
    }

    /// The largest id below every entry added at `ms` (Unix milliseconds) or later.
    pub(super) fn before_time(ms: u64) -> StreamId {
        StreamId::before_sequence(ms.min(MAX_MS) << SEQ_BITS)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_round_trip_and_keep_the_order_of_ids() {
        let ids = [
            StreamId { ms: 0, n: 1 },
            StreamId {
                ms: 1_700_000_000_000,
                n: 0,
            },
            StreamId {
                ms: 1_700_000_000_000,
                n: 7,
            },
            StreamId {
                ms: 1_700_000_000_001,
                n: 0,
            },
        ];
        let seqs: Vec<u64> = ids.iter().map(|id| id.sequence().unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        for (id, seq) in ids.iter().zip(&seqs) {
            assert_eq!(StreamId::from_sequence(*seq), *id);
            assert_eq!(StreamId::parse(&id.to_string()).unwrap(), *id);
        }
    }

    #[test]
    fn ids_the_packing_cannot_hold_are_refused() {
        assert!(StreamId { ms: 5, n: 1 << 20 }.sequence().is_err());
        assert!(StreamId { ms: u64::MAX, n: 0 }.sequence().is_err());
        assert!(StreamId::parse("12").is_err());
        assert!(StreamId::parse("a-1").is_err());
    }

    #[test]
    fn before_sequence_is_just_below_the_entry() {
        let at = StreamId { ms: 1_000, n: 0 };
        let before = StreamId::before_sequence(at.sequence().unwrap());
        assert!(before < at);
        assert!(before > StreamId { ms: 999, n: 1_000 });
        let at = StreamId { ms: 1_000, n: 3 };
        assert_eq!(
            StreamId::before_sequence(at.sequence().unwrap()),
            StreamId { ms: 1_000, n: 2 }
        );
        assert_eq!(StreamId::before_sequence(0), StreamId::ZERO);
        assert!(StreamId::before_time(1_000) < StreamId { ms: 1_000, n: 0 });
        assert!(StreamId::before_time(1_000) > StreamId { ms: 999, n: 0 });
    }
}
