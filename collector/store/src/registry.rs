//! The series registry and the other records of the meta database: services,
//! series ids, fingerprint texts, instances, applied-batch markers.
//!
//! Everything except texts and markers is also kept in memory (a few
//! thousand to a few hundred thousand small entries), so the write path never
//! reads the meta database for ids.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use querypulse_domain::{AgentCounters, Fingerprint, Hello};

use super::StoreError;
use super::codec::{In, Out, decode_labels, encode_labels, key, read_counters, write_counters};

/// What a series holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SeriesKey {
    /// One fingerprint of one service, every instance merged.
    Query {
        /// Service id.
        service: u32,
        /// The statement.
        fingerprint: Fingerprint,
    },
    /// Every fingerprint of one service merged: what service-wide reads
    /// (alert rules, the service's latency) fold instead of thousands of
    /// fingerprint series.
    Service {
        /// Service id.
        service: u32,
    },
    /// Every fingerprint's counters of one instance.
    InstanceQueries {
        /// Instance id.
        instance: String,
    },
    /// One pool of one instance.
    Pool {
        /// Instance id.
        instance: String,
        /// Pool name.
        pool: String,
    },
    /// Health checks of one pool of one instance.
    Health {
        /// Instance id.
        instance: String,
        /// Pool name.
        pool: String,
    },
}

impl SeriesKey {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24);
        match self {
            SeriesKey::Query { service, fingerprint } => {
                out.push(b'Q');
                out.extend_from_slice(&service.to_be_bytes());
                out.extend_from_slice(&fingerprint.get().to_be_bytes());
            }
            SeriesKey::Service { service } => {
                out.push(b'V');
                out.extend_from_slice(&service.to_be_bytes());
            }
            SeriesKey::InstanceQueries { instance } => {
                out.push(b'N');
                out.extend_from_slice(instance.as_bytes());
            }
            SeriesKey::Pool { instance, pool } | SeriesKey::Health { instance, pool } => {
                out.push(if matches!(self, SeriesKey::Pool { .. }) {
                    b'P'
                } else {
                    b'H'
                });
                out.extend_from_slice(instance.as_bytes());
                out.push(0);
                out.extend_from_slice(pool.as_bytes());
            }
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<SeriesKey> {
        let (kind, rest) = bytes.split_first()?;
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).ok();
        match kind {
            b'Q' if rest.len() == 12 => Some(SeriesKey::Query {
                service: u32::from_be_bytes(rest[..4].try_into().ok()?),
                fingerprint: Fingerprint::new(u64::from_be_bytes(rest[4..].try_into().ok()?)),
            }),
            b'V' if rest.len() == 4 => Some(SeriesKey::Service {
                service: u32::from_be_bytes(rest.try_into().ok()?),
            }),
            b'N' => Some(SeriesKey::InstanceQueries { instance: text(rest)? }),
            b'P' | b'H' => {
                let split = rest.iter().position(|b| *b == 0)?;
                let (instance, pool) = (text(&rest[..split])?, text(&rest[split + 1..])?);
                Some(if *kind == b'P' {
                    SeriesKey::Pool { instance, pool }
                } else {
                    SeriesKey::Health { instance, pool }
                })
            }
            _ => None,
        }
    }
}

/// An agent instance as last reported.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InstanceRecord {
    /// Service name.
    pub service: String,
    /// Instance id.
    pub instance_id: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Agent version.
    pub agent_version: String,
    /// Database engine (`postgresql`, `mysql`, …).
    pub db_system: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Agent start, Unix epoch milliseconds.
    pub started_at_ms: i64,
    /// First contact, Unix epoch milliseconds.
    pub first_seen_ms: i64,
    /// Last batch (or hello), Unix epoch milliseconds.
    pub last_seen_ms: i64,
    /// The agent's interval, milliseconds.
    pub interval_ms: u32,
    /// Batches applied.
    pub batches: u64,
    /// Highest sequence number applied.
    pub last_seq: u64,
    /// The agent's own counters as last reported.
    pub counters: AgentCounters,
}

impl InstanceRecord {
    fn from_hello(hello: &Hello, now_ms: i64) -> InstanceRecord {
        InstanceRecord {
            service: hello.service.clone(),
            instance_id: hello.instance_id.clone(),
            host: hello.host.clone(),
            pid: hello.pid,
            agent_version: hello.agent_version.clone(),
            db_system: hello.db_system.as_str().to_owned(),
            labels: hello.labels.clone(),
            started_at_ms: hello.started_at_ms,
            first_seen_ms: now_ms,
            last_seen_ms: now_ms,
            interval_ms: hello.interval_ms,
            ..Default::default()
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Out::with_format();
        out.s(&self.service);
        out.s(&self.instance_id);
        out.s(&self.host);
        out.u(u64::from(self.pid));
        out.s(&self.agent_version);
        out.s(&self.db_system);
        encode_labels(&mut out, &self.labels);
        out.i(self.started_at_ms);
        out.i(self.first_seen_ms);
        out.i(self.last_seen_ms);
        out.u(u64::from(self.interval_ms));
        out.u(self.batches);
        out.u(self.last_seq);
        write_counters(&mut out, &self.counters);
        out.0
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<InstanceRecord, StoreError> {
        let mut input = In::with_format(bytes, "instance")?;
        let mut record = InstanceRecord {
            service: input.s()?,
            instance_id: input.s()?,
            host: input.s()?,
            pid: input.u32()?,
            agent_version: input.s()?,
            db_system: input.s()?,
            labels: decode_labels(&mut input)?,
            started_at_ms: input.i()?,
            first_seen_ms: input.i()?,
            last_seen_ms: input.i()?,
            interval_ms: input.u32()?,
            batches: input.u()?,
            last_seq: input.u()?,
            ..Default::default()
        };
        record.counters = read_counters(&mut input)?;
        Ok(record)
    }
}

#[derive(Debug, Default)]
struct Maps {
    services: BTreeMap<String, u32>,
    service_names: HashMap<u32, String>,
    series: HashMap<SeriesKey, u32>,
    by_id: HashMap<u32, SeriesKey>,
    fingerprints: HashMap<u32, usize>,
    instances: BTreeMap<String, InstanceRecord>,
    overflow: HashMap<u32, u64>,
    /// Fingerprints whose text is stored (the texts stay on disk).
    texts: HashSet<Fingerprint>,
    next_series: u32,
    next_service: u32,
}

/// Meta database records not written yet: (key, value), in creation order.
type Pending = Vec<(Vec<u8>, Vec<u8>)>;

/// The registry: the meta database plus its in-memory maps. Only the writer
/// changes it; readers take snapshots of what they need.
#[derive(Debug, Clone)]
pub(crate) struct Registry {
    meta: sled::Db,
    maps: Arc<RwLock<Maps>>,
    /// Ids and texts in the maps but not yet in the meta database: written
    /// in one batch per group of log entries ([`Registry::write_pending`])
    /// rather than one database write each (a fleet's first windows create
    /// hundreds of thousands). The flush writes them before any run can
    /// refer to them; until then the log holds what created them.
    pending: Arc<Mutex<Pending>>,
    writing: Arc<Mutex<()>>,
}

const NEXT_SERIES: &[u8] = b"Mnext_series";
const NEXT_SERVICE: &[u8] = b"Mnext_service";
/// Entries of the meta database written in one sled batch.
const REGISTRY_WRITE_SLICE: usize = 4_096;
pub(crate) const SERVICE_TOTALS_SINCE: &[u8] = b"Mservice_totals_since";

fn u32_of(bytes: &[u8], what: &str) -> Result<u32, StoreError> {
    Ok(u32::from_be_bytes(
        bytes
            .try_into()
            .map_err(|_| StoreError::Corrupt(format!("{what} is not 4 bytes")))?,
    ))
}

fn named(prefix: u8, name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 1);
    key.push(prefix);
    key.extend_from_slice(name.as_bytes());
    key
}

fn text_key(fingerprint: Fingerprint) -> [u8; 9] {
    let mut key = [b'T'; 9];
    key[1..].copy_from_slice(&fingerprint.get().to_be_bytes());
    key
}

/// Marker of an applied batch, grouped by the day of its window so that
/// markers expire with the raw data they protect.
pub(crate) fn applied_key(window_start_ms: i64, instance: &str, seq: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(instance.len() + 18);
    out.push(b'a');
    out.extend_from_slice(&key::time(super::partition::floor(window_start_ms, 86_400_000)));
    out.extend_from_slice(instance.as_bytes());
    out.push(0);
    out.extend_from_slice(&seq.to_be_bytes());
    out
}

impl Registry {
    /// Loads the registry from the meta database.
    pub(crate) fn load(meta: sled::Db) -> Result<Registry, StoreError> {
        let mut maps = Maps {
            next_series: 1,
            next_service: 1,
            ..Maps::default()
        };
        for entry in meta.scan_prefix(b"S") {
            let (k, v) = entry?;
            let name = String::from_utf8(k[1..].to_vec()).map_err(|_| StoreError::Corrupt("service name".into()))?;
            let id = u32_of(&v, "service id")?;
            maps.service_names.insert(id, name.clone());
            maps.services.insert(name, id);
        }
        for entry in meta.scan_prefix(b"k") {
            let (k, v) = entry?;
            let series = SeriesKey::decode(&k[1..]).ok_or_else(|| StoreError::Corrupt("series key".into()))?;
            let id = u32_of(&v, "series id")?;
            if let SeriesKey::Query { service, .. } = &series {
                *maps.fingerprints.entry(*service).or_default() += 1;
            }
            maps.by_id.insert(id, series.clone());
            maps.series.insert(series, id);
        }
        for key in meta.scan_prefix(b"T").keys() {
            let key = key?;
            let bytes: [u8; 8] = key[1..]
                .try_into()
                .map_err(|_| StoreError::Corrupt("text key".into()))?;
            maps.texts.insert(Fingerprint::new(u64::from_be_bytes(bytes)));
        }
        for entry in meta.scan_prefix(b"I") {
            let (_, v) = entry?;
            let record = InstanceRecord::decode(&v)?;
            maps.instances.insert(record.instance_id.clone(), record);
        }
        for entry in meta.scan_prefix(b"O") {
            let (k, v) = entry?;
            let service = u32_of(&k[1..], "service id")?;
            let count = u64::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("overflow".into()))?,
            );
            maps.overflow.insert(service, count);
        }
        if let Some(v) = meta.get(NEXT_SERIES)? {
            maps.next_series = u32_of(&v, "next series id")?;
        }
        if let Some(v) = meta.get(NEXT_SERVICE)? {
            maps.next_service = u32_of(&v, "next service id")?;
        }
        Ok(Registry {
            meta,
            maps: Arc::new(RwLock::new(maps)),
            pending: Arc::default(),
            writing: Arc::default(),
        })
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the ids and texts created since the last call to the meta
    /// database (not synced); on failure they stay pending.
    pub(crate) fn write_pending(&self) -> Result<(), StoreError> {
        // One writer at a time, so the next ids recorded never go back.
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        // Copied a slice at a time, not taken: readers find a text here
        // until it is written, and only appends happen meanwhile.
        let count = self.pending().len();
        if count == 0 {
            return Ok(());
        }
        // Read after counting: every pending id is below these.
        let (next_series, next_service) = {
            let maps = self.read();
            (maps.next_series, maps.next_service)
        };
        // In slices, not one batch: sled holds every node a batch rewrites
        // until the batch ends, hundreds of MiB when a fleet's first windows
        // bring 100,000 texts and ids at once. The next ids go first, so
        // whatever prefix a crash keeps can never hand an id out twice.
        for start in (0..count).step_by(REGISTRY_WRITE_SLICE) {
            let mut batch = sled::Batch::default();
            if start == 0 {
                batch.insert(NEXT_SERIES, &next_series.to_be_bytes()[..]);
                batch.insert(NEXT_SERVICE, &next_service.to_be_bytes()[..]);
            }
            let slice = self.pending()[start..count.min(start + REGISTRY_WRITE_SLICE)].to_vec();
            for (k, v) in slice {
                batch.insert(k, v);
            }
            self.meta.apply_batch(batch)?;
        }
        self.pending().drain(..count);
        Ok(())
    }

    /// Writes what is pending and syncs the meta database.
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        self.write_pending()?;
        self.meta.flush()?;
        Ok(())
    }

    fn read(&self) -> RwLockReadGuard<'_, Maps> {
        self.maps.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Maps> {
        self.maps.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn meta(&self) -> &sled::Db {
        &self.meta
    }

    /// The id of `service`, allocated (and written) on first sight. Returns
    /// whether it was new.
    pub(crate) fn service_id(&self, service: &str) -> Result<(u32, bool), StoreError> {
        if let Some(id) = self.read().services.get(service) {
            return Ok((*id, false));
        }
        let mut maps = self.write();
        let id = maps.next_service;
        maps.next_service = maps
            .next_service
            .checked_add(1)
            .ok_or_else(|| StoreError::Corrupt("service ids exhausted".into()))?;
        self.pending().push((named(b'S', service), id.to_be_bytes().to_vec()));
        maps.services.insert(service.to_owned(), id);
        maps.service_names.insert(id, service.to_owned());
        Ok((id, true))
    }

    /// The id of a series, if it exists.
    pub(crate) fn series_id(&self, series: &SeriesKey) -> Option<u32> {
        self.read().series.get(series).copied()
    }

    /// From when on every window of every service also went to its
    /// [`SeriesKey::Service`] series: from the start for a store created
    /// with them, else from `upgraded_at` (decided, and recorded, the first
    /// time a version that writes them opens the store).
    pub(crate) fn service_totals_since(&self, upgraded_at: i64) -> Result<i64, StoreError> {
        if let Some(v) = self.meta.get(SERVICE_TOTALS_SINCE)? {
            let bytes: [u8; 8] = v
                .as_ref()
                .try_into()
                .map_err(|_| StoreError::Corrupt("service totals start".into()))?;
            return Ok(i64::from_be_bytes(bytes));
        }
        let since = if self.read().series.is_empty() {
            i64::MIN
        } else {
            upgraded_at
        };
        self.meta.insert(SERVICE_TOTALS_SINCE, &since.to_be_bytes()[..])?;
        self.meta.flush()?;
        Ok(since)
    }

    /// The id of a series, allocated (and written) on first sight. Returns
    /// whether it was new.
    pub(crate) fn series_id_or_create(&self, series: &SeriesKey) -> Result<(u32, bool), StoreError> {
        if let Some(id) = self.series_id(series) {
            return Ok((id, false));
        }
        let mut maps = self.write();
        let id = maps.next_series;
        maps.next_series = maps
            .next_series
            .checked_add(1)
            .ok_or_else(|| StoreError::Corrupt("series ids exhausted".into()))?;
        let mut k = vec![b'k'];
        k.extend_from_slice(&series.encode());
        self.pending().push((k, id.to_be_bytes().to_vec()));
        if let SeriesKey::Query { service, .. } = series {
            *maps.fingerprints.entry(*service).or_default() += 1;
        }
        maps.series.insert(series.clone(), id);
        maps.by_id.insert(id, series.clone());
        Ok((id, true))
    }

    /// Every series: (id, what it holds), by id.
    pub(crate) fn all_series(&self) -> Vec<(u32, SeriesKey)> {
        let mut out: Vec<(u32, SeriesKey)> = self.read().by_id.iter().map(|(id, k)| (*id, k.clone())).collect();
        out.sort_by_key(|(id, _)| *id);
        out
    }

    /// What series `id` holds.
    pub(crate) fn series(&self, id: u32) -> Option<SeriesKey> {
        self.read().by_id.get(&id).cloned()
    }

    /// Fingerprints of `service` and their query series ids.
    pub(crate) fn query_series(&self, service: u32) -> Vec<(Fingerprint, u32)> {
        let maps = self.read();
        let mut out: Vec<(Fingerprint, u32)> = maps
            .series
            .iter()
            .filter_map(|(k, id)| match k {
                SeriesKey::Query {
                    service: s,
                    fingerprint,
                } if *s == service => Some((*fingerprint, *id)),
                _ => None,
            })
            .collect();
        out.sort();
        out
    }

    /// Series ids of every pool (or health) series: (instance, pool, series).
    pub(crate) fn pool_series(&self, health: bool) -> Vec<(String, String, u32)> {
        let maps = self.read();
        let mut out: Vec<(String, String, u32)> = maps
            .series
            .iter()
            .filter_map(|(k, id)| match k {
                SeriesKey::Pool { instance, pool } if !health => Some((instance.clone(), pool.clone(), *id)),
                SeriesKey::Health { instance, pool } if health => Some((instance.clone(), pool.clone(), *id)),
                _ => None,
            })
            .collect();
        out.sort();
        out
    }

    /// Number of fingerprints of `service`.
    pub(crate) fn fingerprint_count(&self, service: u32) -> usize {
        self.read().fingerprints.get(&service).copied().unwrap_or(0)
    }

    /// Every service: (name, id).
    pub(crate) fn services(&self) -> Vec<(String, u32)> {
        self.read().services.iter().map(|(n, id)| (n.clone(), *id)).collect()
    }

    /// The id of a service that exists.
    pub(crate) fn existing_service(&self, name: &str) -> Option<u32> {
        self.read().services.get(name).copied()
    }

    /// Name of service `id`.
    pub(crate) fn service_name(&self, id: u32) -> Option<String> {
        self.read().service_names.get(&id).cloned()
    }

    /// Fingerprints folded into `other` by the per-service cap.
    pub(crate) fn overflow(&self, service: u32) -> u64 {
        self.read().overflow.get(&service).copied().unwrap_or(0)
    }

    pub(crate) fn add_overflow(&self, service: u32, count: u64, batch: &mut sled::Batch) {
        let mut maps = self.write();
        let total = maps.overflow.entry(service).or_default();
        *total += count;
        let mut k = vec![b'O'];
        k.extend_from_slice(&service.to_be_bytes());
        batch.insert(k, &total.to_be_bytes()[..]);
    }

    /// Every instance.
    pub(crate) fn instances(&self) -> Vec<InstanceRecord> {
        self.read().instances.values().cloned().collect()
    }

    /// Forgets the instances heard from (hello or batch) before `before_ms`;
    /// returns their ids.
    pub(crate) fn forget_instances(&self, before_ms: i64) -> Result<Vec<String>, StoreError> {
        let mut maps = self.write();
        let gone: Vec<String> = maps
            .instances
            .values()
            .filter(|i| i.last_seen_ms.max(i.first_seen_ms) < before_ms)
            .map(|i| i.instance_id.clone())
            .collect();
        if gone.is_empty() {
            return Ok(gone);
        }
        let mut batch = sled::Batch::default();
        for id in &gone {
            batch.remove(named(b'I', id));
        }
        self.meta.apply_batch(batch)?;
        for id in &gone {
            maps.instances.remove(id);
        }
        Ok(gone)
    }

    /// One instance.
    pub(crate) fn instance(&self, instance_id: &str) -> Option<InstanceRecord> {
        self.read().instances.get(instance_id).cloned()
    }

    /// Instances of a service that have applied a batch since `since_ms`.
    pub(crate) fn active_instance_count(&self, service: &str, since_ms: i64) -> usize {
        self.read()
            .instances
            .values()
            .filter(|i| i.service == service && i.batches > 0 && i.last_seen_ms >= since_ms)
            .count()
    }

    /// Records a `Hello`: a new instance, or fresh details of a known one.
    pub(crate) fn register(&self, hello: &Hello, now_ms: i64) -> Result<(), StoreError> {
        let mut maps = self.write();
        let mut record = InstanceRecord::from_hello(hello, now_ms);
        if let Some(existing) = maps.instances.get(&hello.instance_id) {
            record.first_seen_ms = existing.first_seen_ms;
            record.batches = existing.batches;
            record.last_seq = existing.last_seq;
            record.counters = existing.counters;
        }
        self.meta.insert(named(b'I', &hello.instance_id), record.encode())?;
        maps.instances.insert(hello.instance_id.clone(), record);
        Ok(())
    }

    /// Updates an instance after one of its batches was applied (written into
    /// `batch`).
    pub(crate) fn touch_instance(
        &self,
        service: &str,
        instance_id: &str,
        seq: u64,
        counters: &AgentCounters,
        received_ms: i64,
        batch: &mut sled::Batch,
    ) {
        let mut maps = self.write();
        let record = maps
            .instances
            .entry(instance_id.to_owned())
            .or_insert_with(|| InstanceRecord {
                service: service.to_owned(),
                instance_id: instance_id.to_owned(),
                first_seen_ms: received_ms,
                ..Default::default()
            });
        record.last_seen_ms = record.last_seen_ms.max(received_ms);
        record.batches += 1;
        record.last_seq = record.last_seq.max(seq);
        record.counters = *counters;
        batch.insert(named(b'I', instance_id), record.encode());
    }

    /// The normalized text of a fingerprint.
    pub(crate) fn text(&self, fingerprint: Fingerprint) -> Result<Option<String>, StoreError> {
        if fingerprint == Fingerprint::OTHER {
            return Ok(Some(Fingerprint::OTHER_TEXT.to_owned()));
        }
        let key = text_key(fingerprint);
        if let Some((_, text)) = self.pending().iter().find(|(k, _)| k.as_slice() == key.as_slice()) {
            return Ok(Some(String::from_utf8_lossy(text).into_owned()));
        }
        Ok(self.meta.get(key)?.map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// Whether the text of `fingerprint` is stored (a lookup in memory).
    pub(crate) fn has_text(&self, fingerprint: Fingerprint) -> bool {
        self.lacking_texts([fingerprint]).is_empty()
    }

    /// Those of `fingerprints` whose text is not stored (one lookup in
    /// memory each, under one lock: a batch names a thousand).
    pub(crate) fn lacking_texts(&self, fingerprints: impl IntoIterator<Item = Fingerprint>) -> Vec<Fingerprint> {
        let maps = self.read();
        fingerprints
            .into_iter()
            .filter(|fp| *fp != Fingerprint::OTHER && !maps.texts.contains(fp))
            .collect()
    }

    pub(crate) fn insert_text(&self, fingerprint: Fingerprint, text: &str) -> Result<bool, StoreError> {
        if self.has_text(fingerprint) {
            return Ok(false);
        }
        self.pending()
            .push((text_key(fingerprint).to_vec(), text.as_bytes().to_vec()));
        self.write().texts.insert(fingerprint);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_keys_round_trip() {
        for key in [
            SeriesKey::Query {
                service: 3,
                fingerprint: Fingerprint::new(u64::MAX),
            },
            SeriesKey::Service { service: u32::MAX },
            SeriesKey::InstanceQueries { instance: "abc".into() },
            SeriesKey::Pool {
                instance: "abc".into(),
                pool: "main".into(),
            },
            SeriesKey::Health {
                instance: "abc".into(),
                pool: "".into(),
            },
        ] {
            assert_eq!(SeriesKey::decode(&key.encode()), Some(key));
        }
        assert_eq!(SeriesKey::decode(b"Zxx"), None);
    }

    #[test]
    fn ids_are_stable_across_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let meta = sled::open(dir.path()).unwrap();
        let registry = Registry::load(meta.clone()).unwrap();
        let (service, new) = registry.service_id("orders").unwrap();
        assert!(new);
        let q = SeriesKey::Query {
            service,
            fingerprint: Fingerprint::new(9),
        };
        let (id, new) = registry.series_id_or_create(&q).unwrap();
        assert!(new);
        assert_eq!(registry.series_id_or_create(&q).unwrap(), (id, false));
        let hello = Hello {
            service: "orders".into(),
            instance_id: "i-1".into(),
            ..Hello::default()
        };
        registry.register(&hello, 5).unwrap();
        // Ids are written in one batch, by the group that created them.
        registry.write_pending().unwrap();
        drop(registry);
        let reloaded = Registry::load(meta).unwrap();
        assert_eq!(reloaded.service_id("orders").unwrap(), (service, false));
        assert_eq!(reloaded.series_id(&q), Some(id));
        assert_eq!(reloaded.fingerprint_count(service), 1);
        assert_eq!(reloaded.instance("i-1").unwrap().first_seen_ms, 5);
        let (other, _) = reloaded
            .series_id_or_create(&SeriesKey::InstanceQueries { instance: "i-1".into() })
            .unwrap();
        assert!(other > id);
    }
}
