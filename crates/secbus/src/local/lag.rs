//! A local group's lag from its state: what it read and has not settled, and
//! what is stored past its read position.

use super::GroupSnapshot;
use crate::engine::GroupLag;

impl GroupSnapshot {
    /// The lag of this group when `unread` events are stored at or after `next_read`.
    pub(crate) fn lag(&self, unread: u64) -> GroupLag {
        // Entries read ahead but never handed out count as waiting, like the
        // unread ones: no member has seen them.
        let handed_out = self.outstanding.iter().filter(|(_, a)| *a > 0).count() as u64;
        let read_ahead = self.outstanding.len() as u64 - handed_out;
        GroupLag {
            waiting: unread.saturating_add(read_ahead),
            unacked: handed_out,
        }
    }
}
