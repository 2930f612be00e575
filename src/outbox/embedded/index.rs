//! The embedded outbox's indexes, kept in memory: which sequence number holds each
//! delivery, each upstream's pending deliveries by due time and by age, its dead ones,
//! and the claims. Only the records are on disk; these are built from them when the file
//! is opened, and the writer changes them only once a commit succeeded, so they always
//! tell what the file holds.
//!
//! Keeping them out of the file leaves a commit one B-tree to write (the records, in
//! queueing order, so its inserts land on the last pages): each index tree beside it
//! cost its own dirty pages, their writes and their share of the fsync, in every commit.

use std::collections::{BTreeSet, HashMap};

use crate::outbox::{Counts, Delivery, DeliveryId, Status};

/// What the indexes need of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Place {
    pub(super) seq: u64,
    pub(super) upstream: String,
    pub(super) status: Status,
    pub(super) next_ms: u64,
    pub(super) queued_ms: u64,
}

impl Place {
    pub(super) fn of(seq: u64, d: &Delivery) -> Self {
        Self {
            seq,
            upstream: d.upstream.clone(),
            status: d.status,
            next_ms: d.next_ms,
            queued_ms: d.queued_ms,
        }
    }
}

/// One change a committed batch made, in the order it made them.
#[derive(Debug)]
pub(super) enum Change {
    /// The record `id` is at this place now.
    Put(DeliveryId, Place),
    /// The record `id` was at this place and is no longer (deleted, or put again after).
    Removed(DeliveryId, Place),
}

/// One upstream's deliveries by time: `(ms, seq)`, as the `due`, `age` and `dead` tables
/// of the file had them before.
#[derive(Debug, Default)]
pub(super) struct Lanes {
    /// Pending, by the next attempt's time.
    pub(super) due: BTreeSet<(u64, u64)>,
    /// Pending, by queueing time.
    age: BTreeSet<(u64, u64)>,
    /// Dead, by queueing time.
    pub(super) dead: BTreeSet<(u64, u64)>,
}

/// The indexes and the claims. Behind a std mutex in the outbox: held for map work only,
/// never across an await.
#[derive(Debug, Default)]
pub(super) struct Memory {
    ids: HashMap<DeliveryId, u64>,
    upstreams: HashMap<String, Lanes>,
    /// Claimed deliveries (by sequence number) and when their claim ends: a process that
    /// dies takes its claims with it, so after a restart every pending delivery is due.
    pub(super) claims: HashMap<u64, u64>,
}

impl Memory {
    pub(super) fn seq_of(&self, id: DeliveryId) -> Option<u64> {
        self.ids.get(&id).copied()
    }

    /// `upstream`'s lanes, if it ever had a delivery.
    pub(super) fn lanes(&self, upstream: &str) -> Option<&Lanes> {
        self.upstreams.get(upstream)
    }

    pub(super) fn apply(&mut self, change: Change) {
        match change {
            Change::Put(id, place) => {
                self.ids.insert(id, place.seq);
                let lanes = match self.upstreams.get_mut(&place.upstream) {
                    Some(lanes) => lanes,
                    None => self.upstreams.entry(place.upstream.clone()).or_default(),
                };
                match place.status {
                    Status::Pending => {
                        lanes.due.insert((place.next_ms, place.seq));
                        lanes.age.insert((place.queued_ms, place.seq));
                    }
                    Status::Dead => {
                        lanes.dead.insert((place.queued_ms, place.seq));
                    }
                }
            }
            Change::Removed(id, place) => {
                if self.ids.get(&id) == Some(&place.seq) {
                    self.ids.remove(&id);
                }
                if let Some(lanes) = self.upstreams.get_mut(&place.upstream) {
                    match place.status {
                        Status::Pending => {
                            lanes.due.remove(&(place.next_ms, place.seq));
                            lanes.age.remove(&(place.queued_ms, place.seq));
                        }
                        Status::Dead => {
                            lanes.dead.remove(&(place.queued_ms, place.seq));
                        }
                    }
                }
            }
        }
    }

    /// Claims up to `limit` of `upstream`'s deliveries due at `now_ms` and not claimed
    /// (oldest due first) until `now_ms + lease_ms`: their sequence numbers.
    pub(super) fn claim(
        &mut self,
        upstream: &str,
        now_ms: u64,
        lease_ms: u64,
        limit: usize,
    ) -> Vec<u64> {
        let mut seqs = Vec::new();
        let Some(lanes) = self.upstreams.get(upstream) else {
            return seqs;
        };
        for (at, seq) in &lanes.due {
            if *at > now_ms || seqs.len() >= limit {
                break;
            }
            if self.claims.get(seq).is_none_or(|until| *until <= now_ms) {
                self.claims.insert(*seq, now_ms.saturating_add(lease_ms));
                seqs.push(*seq);
            }
        }
        seqs
    }

    /// When `upstream`'s next pending delivery is due: the first unclaimed one's time, or
    /// the end of a claim before it.
    pub(super) fn next_due(&self, upstream: &str) -> Option<u64> {
        let mut next: Option<u64> = None;
        for (at, seq) in &self.lanes(upstream)?.due {
            match self.claims.get(seq) {
                // Claimed: due again when the claim ends (if it is not settled first).
                Some(until) => next = Some(next.map_or(*until, |n| n.min(*until))),
                None => return Some(next.map_or(*at, |n| n.min(*at))),
            }
        }
        next
    }

    pub(super) fn counts(&self, upstream: &str) -> Counts {
        self.lanes(upstream)
            .map_or_else(Counts::default, |l| Counts {
                pending: l.due.len() as u64,
                dead: l.dead.len() as u64,
                oldest_queued_ms: l.age.first().map(|(ms, _)| *ms),
            })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn place(seq: u64, status: Status, next_ms: u64, queued_ms: u64) -> Place {
        Place {
            seq,
            upstream: "erp".into(),
            status,
            next_ms,
            queued_ms,
        }
    }

    #[test]
    fn a_changed_delivery_leaves_no_stale_entry_behind() {
        let id = DeliveryId::from_bytes([1; 16]);
        let mut m = Memory::default();
        let first = place(7, Status::Pending, 10, 5);
        m.apply(Change::Put(id, first.clone()));
        // A retry later: removed at its old due time, put at the new one.
        let later = place(7, Status::Pending, 99, 5);
        m.apply(Change::Removed(id, first));
        m.apply(Change::Put(id, later.clone()));
        let lanes = m.lanes("erp").unwrap();
        assert_eq!(lanes.due.iter().copied().collect::<Vec<_>>(), [(99, 7)]);
        assert_eq!(m.counts("erp").pending, 1);
        // Dead: out of due and age, into dead.
        let dead = place(7, Status::Dead, 99, 5);
        m.apply(Change::Removed(id, later));
        m.apply(Change::Put(id, dead.clone()));
        let counts = m.counts("erp");
        assert_eq!((counts.pending, counts.dead), (0, 1));
        assert_eq!(counts.oldest_queued_ms, None);
        m.apply(Change::Removed(id, dead));
        assert_eq!(m.seq_of(id), None);
        assert_eq!(m.counts("erp"), Counts::default());
    }
}
