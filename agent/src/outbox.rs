//! Batches waiting for the collector's acknowledgement, bounded in bytes.

use std::collections::VecDeque;

use prost::Message;
use prost::bytes::Bytes;
use querypulse_proto::wire::v1 as wire;

/// One batch in the outbox, already encoded for the wire: what the outbox
/// counts is what it holds, and a send hands the stream a reference to the
/// same bytes instead of a copy.
#[derive(Debug)]
pub(crate) struct Entry {
    pub seq: u64,
    /// The `Batch` message, encoded (without fingerprint texts: those are
    /// added per stream, see [`crate::sender`]).
    pub batch: Bytes,
    /// The fingerprints the batch refers to, each once, in order.
    pub fingerprints: Box<[u64]>,
    bytes: usize,
}

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

    /// Encodes and keeps `batch`; returns how many of the oldest batches
    /// were dropped to stay within the bound.
    pub(crate) fn push(&mut self, batch: wire::Batch) -> u64 {
        let mut fingerprints: Vec<u64> = batch
            .queries
            .iter()
            .map(|q| q.fingerprint)
            .chain(batch.slow_queries.iter().map(|s| s.fingerprint))
            .collect();
        fingerprints.sort_unstable();
        fingerprints.dedup();
        let seq = batch.seq;
        let batch = Bytes::from(batch.encode_to_vec());
        let bytes = batch.len() + fingerprints.len() * size_of::<u64>();
        self.entries.push_back(Entry {
            seq,
            batch,
            fingerprints: fingerprints.into_boxed_slice(),
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
            slow_queries: vec![wire::SlowQuerySample {
                fingerprint: 1,
                raw_text: "x".repeat(payload),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn keeps_the_encoded_batch_and_the_fingerprints_it_refers_to() {
        let mut outbox = Outbox::new(1 << 20);
        let mut sent = batch(7, 10);
        sent.queries = [9, 3, 9]
            .into_iter()
            .map(|fingerprint| wire::QueryStats {
                fingerprint,
                ..Default::default()
            })
            .collect();
        outbox.push(sent.clone());
        let entry = outbox.first_from(0).expect("kept");
        assert_eq!(wire::Batch::decode(entry.batch.clone()).expect("decodes"), sent);
        assert_eq!(&*entry.fingerprints, &[1, 3, 9]);
        assert_eq!(outbox.bytes(), sent.encoded_len() + 3 * 8);
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
