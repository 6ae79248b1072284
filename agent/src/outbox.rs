//! Batches waiting for the collector's acknowledgement, bounded in bytes.

use std::collections::VecDeque;

use prost::Message;
use querypulse_proto::wire::v1 as wire;

/// One batch in the outbox, already in its wire form.
#[derive(Debug)]
pub(crate) struct Entry {
    pub seq: u64,
    pub batch: wire::Batch,
    bytes: usize,
}

/// Batches in sequence order. A batch leaves only when acknowledged (or
/// rejected); when the byte bound is exceeded the oldest batches are dropped.
#[derive(Debug)]
pub(crate) struct Outbox {
    entries: VecDeque<Entry>,
    bytes: usize,
    max_bytes: usize,
}

impl Outbox {
    pub(crate) fn new(max_bytes: usize) -> Outbox {
        Outbox {
            entries: VecDeque::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// Adds a batch; returns how many older batches were dropped to make room.
    /// The newest batch is always kept, even when it alone exceeds the bound.
    pub(crate) fn push(&mut self, batch: wire::Batch) -> u64 {
        let bytes = batch.encoded_len();
        self.entries.push_back(Entry {
            seq: batch.seq,
            batch,
            bytes,
        });
        self.bytes += bytes;
        let mut dropped = 0;
        while self.bytes > self.max_bytes && self.entries.len() > 1 {
            let oldest = self.entries.pop_front().expect("more than one entry");
            self.bytes -= oldest.bytes;
            dropped += 1;
        }
        dropped
    }

    /// Forgets the batch `seq`; false when it was not (or no longer) here.
    pub(crate) fn remove(&mut self, seq: u64) -> bool {
        match self.entries.binary_search_by_key(&seq, |e| e.seq) {
            Ok(at) => {
                let entry = self.entries.remove(at).expect("index from binary search");
                self.bytes -= entry.bytes;
                true
            }
            Err(_) => false,
        }
    }

    /// The first batch with a sequence number of at least `seq`.
    pub(crate) fn first_from(&self, seq: u64) -> Option<&Entry> {
        let at = self.entries.partition_point(|e| e.seq < seq);
        self.entries.get(at)
    }

    /// Number of batches with a sequence number of at most `seq`.
    pub(crate) fn count_through(&self, seq: u64) -> usize {
        self.entries.partition_point(|e| e.seq <= seq)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(seq: u64, payload: usize) -> wire::Batch {
        wire::Batch {
            seq,
            fingerprint_texts: vec![wire::FingerprintText {
                fingerprint: 1,
                text: "x".repeat(payload),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn keeps_batches_until_acknowledged_in_any_order() {
        let mut outbox = Outbox::new(1 << 20);
        for seq in 1..=3 {
            assert_eq!(outbox.push(batch(seq, 10)), 0);
        }
        assert!(outbox.remove(2));
        assert!(!outbox.remove(2));
        assert_eq!(outbox.first_from(2).map(|e| e.seq), Some(3));
        assert_eq!(outbox.count_through(3), 2);
        assert!(outbox.remove(1) && outbox.remove(3));
        assert_eq!((outbox.len(), outbox.bytes()), (0, 0));
    }

    #[test]
    fn drops_the_oldest_when_full() {
        let mut outbox = Outbox::new(250);
        assert_eq!(outbox.push(batch(1, 100)), 0);
        assert_eq!(outbox.push(batch(2, 100)), 0);
        assert_eq!(outbox.push(batch(3, 100)), 1);
        assert_eq!(outbox.first_from(0).map(|e| e.seq), Some(2));
        assert!(outbox.bytes() <= 250);
        // A batch larger than the bound is kept alone rather than lost.
        assert_eq!(outbox.push(batch(4, 1_000)), 2);
        assert_eq!(outbox.len(), 1);
    }
}
