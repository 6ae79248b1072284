//! The collector's time-series store, on sled.
//!
//! Query windows are keyed by series (service, fingerprint) and then by window
//! start, big-endian, so a range scan of one series is a time range. Windows of
//! several instances for the same series and time are merged on write (the
//! histograms are added), which is what makes every later percentile a true
//! fleet-wide percentile.
//!
//! Only the ingest writer writes (one thread, see [`crate::ingest`]); readers
//! run concurrently. Every batch is applied with one atomic sled batch,
//! including the marker that makes a resent batch a no-op, so a crash never
//! leaves a batch half applied.

mod codec;

use std::collections::HashSet;
use std::path::Path;

use querypulse_proto::{Batch, Fingerprint, FingerprintText, Hello, QueryStats};

use codec::{StoredInstance, StoredQueryStats, prefix};

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled reported an error (I/O, or corruption it detected).
    #[error("storage: {0}")]
    Sled(#[from] sled::Error),
    /// A stored record does not decode.
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

/// What happened to a batch handed to [`Store::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// Written (durable after the next [`Store::flush`]).
    Applied,
    /// The same (instance, seq) was applied before; nothing was written.
    Duplicate,
    /// The batch can never be applied; nothing was written.
    Rejected(String),
}

/// A service and its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRecord {
    /// Service name.
    pub name: String,
    /// Internal series id.
    pub id: u32,
}

/// An agent instance as last reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRecord {
    /// Service name.
    pub service: String,
    /// Instance id.
    pub instance_id: String,
    /// Host name.
    pub host: String,
    /// Last batch, Unix epoch milliseconds.
    pub last_seen_ms: i64,
    /// Batches applied.
    pub batches: u64,
}

/// The store. Cheap to clone (sled handles are reference counted).
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

const NEXT_SERVICE_ID: &str = "next_service_id";

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let db = sled::Config::new().path(dir).open()?;
        Ok(Store { db })
    }

    /// Records an instance's `Hello`: creates its record, or refreshes what
    /// may change across reconnects while keeping its history.
    pub fn register_instance(&self, hello: &Hello, now_ms: i64) -> Result<(), StoreError> {
        let key = codec::named_key(prefix::INSTANCE, &hello.instance_id);
        let mut record = StoredInstance::from_hello(hello, now_ms);
        if let Some(existing) = self.instance(&hello.instance_id)? {
            record.first_seen_ms = existing.first_seen_ms;
            record.batches = existing.batches;
            record.last_seq = existing.last_seq;
            record.dropped_batches = existing.dropped_batches;
            record.rejected_batches = existing.rejected_batches;
        }
        self.db.insert(key, prost::Message::encode_to_vec(&record))?;
        Ok(())
    }

    fn instance(&self, instance_id: &str) -> Result<Option<StoredInstance>, StoreError> {
        let key = codec::named_key(prefix::INSTANCE, instance_id);
        self.db
            .get(key)?
            .map(|bytes| {
                <StoredInstance as prost::Message>::decode(&*bytes)
                    .map_err(|e| StoreError::Corrupt(format!("instance {instance_id}: {e}")))
            })
            .transpose()
    }

    /// Applies one batch of `hello`'s instance atomically. `texts` are the
    /// fingerprint texts the stream carried for the fingerprints the batch
    /// refers to.
    pub fn apply(
        &self,
        hello: &Hello,
        batch: &Batch,
        texts: &[FingerprintText],
        now_ms: i64,
    ) -> Result<ApplyOutcome, StoreError> {
        let applied_key = codec::applied_key(&hello.instance_id, batch.seq);
        if self.db.contains_key(&applied_key)? {
            return Ok(ApplyOutcome::Duplicate);
        }
        let offered: HashSet<Fingerprint> = texts.iter().map(|t| t.fingerprint).collect();
        for fingerprint in batch.referenced_fingerprints() {
            if fingerprint != Fingerprint::OTHER
                && !offered.contains(&fingerprint)
                && !self.db.contains_key(codec::text_key(fingerprint))?
            {
                return Ok(ApplyOutcome::Rejected(format!(
                    "fingerprint {fingerprint} is unknown: its text was never sent on this stream"
                )));
            }
        }

        let mut writes = sled::Batch::default();
        let service_id = self.service_id_for_write(&hello.service, &mut writes)?;
        for text in texts {
            let key = codec::text_key(text.fingerprint);
            if !self.db.contains_key(key)? {
                writes.insert(&key[..], text.text.as_bytes());
            }
        }
        for stats in &batch.queries {
            let key = codec::query_window_key(service_id, stats.fingerprint, batch.window.start_ms);
            let merged = match self.db.get(&key)? {
                Some(existing) => {
                    let mut merged = StoredQueryStats::decode_stats(stats.fingerprint, &existing)?;
                    merged.merge(stats);
                    merged
                }
                None => stats.clone(),
            };
            writes.insert(key, StoredQueryStats::encode_stats(&merged));
            writes.insert(codec::service_fingerprint_key(service_id, stats.fingerprint), &[][..]);
        }
        let mut instance = self
            .instance(&hello.instance_id)?
            .unwrap_or_else(|| StoredInstance::from_hello(hello, now_ms));
        instance.last_seen_ms = now_ms;
        instance.batches += 1;
        instance.last_seq = instance.last_seq.max(batch.seq);
        instance.set_counters(&batch.counters);
        writes.insert(
            codec::named_key(prefix::INSTANCE, &hello.instance_id),
            prost::Message::encode_to_vec(&instance),
        );
        writes.insert(applied_key, &[][..]);
        self.db.apply_batch(writes)?;
        Ok(ApplyOutcome::Applied)
    }

    /// The id of `service`, allocating one (inside `writes`) on first sight.
    /// Only the single writer calls this, so allocation cannot race.
    fn service_id_for_write(&self, service: &str, writes: &mut sled::Batch) -> Result<u32, StoreError> {
        let key = codec::named_key(prefix::SERVICE, service);
        if let Some(id) = self.db.get(&key)? {
            return decode_u32(&id, "service id");
        }
        let meta_key = codec::named_key(prefix::META, NEXT_SERVICE_ID);
        let id = match self.db.get(&meta_key)? {
            Some(bytes) => decode_u32(&bytes, "next service id")?,
            None => 1,
        };
        writes.insert(key, &id.to_be_bytes()[..]);
        writes.insert(meta_key, &(id + 1).to_be_bytes()[..]);
        Ok(id)
    }

    /// Makes everything applied so far durable (fsync). Returns the bytes
    /// flushed.
    pub fn flush(&self) -> Result<usize, StoreError> {
        Ok(self.db.flush()?)
    }

    /// Every service, by name.
    pub fn services(&self) -> Result<Vec<ServiceRecord>, StoreError> {
        self.db
            .scan_prefix([prefix::SERVICE])
            .map(|entry| {
                let (key, value) = entry?;
                let name = String::from_utf8(key[1..].to_vec())
                    .map_err(|_| StoreError::Corrupt("service name is not UTF-8".into()))?;
                Ok(ServiceRecord {
                    name,
                    id: decode_u32(&value, "service id")?,
                })
            })
            .collect()
    }

    /// The id of a service, if it ever reported.
    pub fn service_id(&self, name: &str) -> Result<Option<u32>, StoreError> {
        self.db
            .get(codec::named_key(prefix::SERVICE, name))?
            .map(|id| decode_u32(&id, "service id"))
            .transpose()
    }

    /// Every instance that ever reported.
    pub fn instances(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        self.db
            .scan_prefix([prefix::INSTANCE])
            .map(|entry| {
                let (_, value) = entry?;
                let stored = <StoredInstance as prost::Message>::decode(&*value)
                    .map_err(|e| StoreError::Corrupt(format!("instance: {e}")))?;
                Ok(InstanceRecord {
                    service: stored.service,
                    instance_id: stored.instance_id,
                    host: stored.host,
                    last_seen_ms: stored.last_seen_ms,
                    batches: stored.batches,
                })
            })
            .collect()
    }

    /// Every fingerprint a service ever reported.
    pub fn fingerprints(&self, service_id: u32) -> Result<Vec<Fingerprint>, StoreError> {
        let mut scan = vec![prefix::SERVICE_FINGERPRINT];
        scan.extend_from_slice(&service_id.to_be_bytes());
        self.db
            .scan_prefix(scan)
            .keys()
            .map(|key| {
                let key = key?;
                let raw: [u8; 8] = key[5..13]
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("service fingerprint key".into()))?;
                Ok(Fingerprint::new(u64::from_be_bytes(raw)))
            })
            .collect()
    }

    /// One series merged over every window starting in `[from_ms, to_ms)`.
    pub fn query_range(
        &self,
        service_id: u32,
        fingerprint: Fingerprint,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<QueryStats, StoreError> {
        let mut merged = QueryStats::new(fingerprint);
        if from_ms >= to_ms {
            return Ok(merged);
        }
        let start = codec::query_window_key(service_id, fingerprint, from_ms);
        let end = codec::query_window_key(service_id, fingerprint, to_ms);
        for entry in self.db.range(start..end) {
            let (_, value) = entry?;
            merged.merge(&StoredQueryStats::decode_stats(fingerprint, &value)?);
        }
        Ok(merged)
    }

    /// The normalized text of a fingerprint.
    pub fn text(&self, fingerprint: Fingerprint) -> Result<Option<String>, StoreError> {
        if fingerprint == Fingerprint::OTHER {
            return Ok(Some(Fingerprint::OTHER_TEXT.to_owned()));
        }
        Ok(self
            .db
            .get(codec::text_key(fingerprint))?
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
    }
}

fn decode_u32(bytes: &[u8], what: &str) -> Result<u32, StoreError> {
    let raw: [u8; 4] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("{what} is not 4 bytes")))?;
    Ok(u32::from_be_bytes(raw))
}

#[cfg(test)]
mod tests {
    use querypulse_proto::Window;

    use super::*;

    fn hello(instance: &str) -> Hello {
        Hello {
            service: "orders".into(),
            instance_id: instance.into(),
            ..Hello::default()
        }
    }

    fn batch(seq: u64, start_ms: i64, latencies: &[u64]) -> (Batch, Vec<FingerprintText>) {
        let text = "select * from orders where id = ?";
        let fp = Fingerprint::of_normalized(text);
        let mut stats = QueryStats::new(fp);
        for us in latencies {
            stats.record(*us, 1, None);
        }
        let mut batch = Batch::new(
            seq,
            Window {
                start_ms,
                length_ms: 10_000,
            },
        );
        batch.queries.push(stats);
        (
            batch,
            vec![FingerprintText {
                fingerprint: fp,
                text: text.into(),
            }],
        )
    }

    #[test]
    fn instances_merge_into_one_series_and_resends_count_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b) = (hello("a"), hello("b"));
        let (batch_a, texts) = batch(1, 10_000, &[100, 200]);
        let (batch_b, _) = batch(1, 10_000, &[300]);
        assert_eq!(store.apply(&a, &batch_a, &texts, 0).unwrap(), ApplyOutcome::Applied);
        assert_eq!(store.apply(&b, &batch_b, &[], 0).unwrap(), ApplyOutcome::Applied);
        assert_eq!(store.apply(&a, &batch_a, &texts, 0).unwrap(), ApplyOutcome::Duplicate);

        let service = store.service_id("orders").unwrap().unwrap();
        let fp = batch_a.queries[0].fingerprint;
        let merged = store.query_range(service, fp, 0, 20_000).unwrap();
        assert_eq!((merged.calls, merged.min_us, merged.max_us), (3, 100, 300));
        assert_eq!(store.query_range(service, fp, 20_000, 30_000).unwrap().calls, 0);
        assert_eq!(
            store.text(fp).unwrap().as_deref(),
            Some("select * from orders where id = ?")
        );
    }

    #[test]
    fn a_batch_with_an_unknown_fingerprint_is_rejected_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (batch, _) = batch(1, 0, &[100]);
        let outcome = store.apply(&hello("a"), &batch, &[], 0).unwrap();
        assert!(matches!(outcome, ApplyOutcome::Rejected(reason) if reason.contains("unknown")));
        assert!(store.services().unwrap().is_empty(), "nothing was half written");
        assert!(store.instances().unwrap().is_empty());
    }

    #[test]
    fn data_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (batch, texts) = batch(7, -20_000, &[5, 6, 7]);
        {
            let store = Store::open(dir.path()).unwrap();
            store.register_instance(&hello("a"), 1).unwrap();
            store.apply(&hello("a"), &batch, &texts, 2).unwrap();
            store.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let service = store.service_id("orders").unwrap().unwrap();
        let fps = store.fingerprints(service).unwrap();
        assert_eq!(fps, vec![batch.queries[0].fingerprint]);
        assert_eq!(store.query_range(service, fps[0], -30_000, 0).unwrap().calls, 3);
        assert_eq!(
            store.apply(&hello("a"), &batch, &texts, 3).unwrap(),
            ApplyOutcome::Duplicate
        );
        let instances = store.instances().unwrap();
        assert_eq!(
            (instances.len(), instances[0].batches, instances[0].last_seen_ms),
            (1, 1, 2)
        );
    }
}
