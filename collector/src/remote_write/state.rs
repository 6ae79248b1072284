//! A destination's cursor and cumulative values, saved in the data
//! directory (`remote_write/<name>.state`) after every interval it
//! accepted: a checksummed protobuf, replaced atomically (written beside,
//! synced, renamed), so a crash leaves the old state or the new one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use prost::Message;
use querypulse_domain::Fingerprint;

use querypulse_proto::native::Cumulative;

/// First bytes of a state file.
const MAGIC: &[u8; 8] = b"QPRW\x00\x00\x00\x01";

/// A statement's series: by service and fingerprint, or the service's
/// `other` (`fingerprint: None`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StatementKey {
    pub service: String,
    pub fingerprint: Option<Fingerprint>,
}

/// A statement's cumulative values.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// Start of the interval the series first had calls in.
    pub first_ms: i64,
    pub duration: Cumulative,
    pub rows: u64,
    pub errors: BTreeMap<String, u64>,
}

impl Statement {
    pub fn new(schema: i32, first_ms: i64) -> Statement {
        Statement {
            first_ms,
            duration: Cumulative::new(schema),
            rows: 0,
            errors: BTreeMap::new(),
        }
    }
}

/// A pool's series.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PoolKey {
    pub service: String,
    pub instance: String,
    pub pool: String,
}

/// A pool's cumulative values.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    /// Start of the interval the pool first reported in.
    pub first_ms: i64,
    pub acquire_wait: Cumulative,
    pub hold: Cumulative,
    pub acquires: u64,
    pub timeouts: u64,
    pub leaks: u64,
}

impl Pool {
    pub fn new(schema: i32, first_ms: i64) -> Pool {
        Pool {
            first_ms,
            acquire_wait: Cumulative::new(schema),
            hold: Cumulative::new(schema),
            acquires: 0,
            timeouts: 0,
            leaks: 0,
        }
    }
}

/// Where a destination stands.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportState {
    /// Start of the first interval sent: the cumulative values hold every
    /// window from here to the cursor.
    pub origin_ms: i64,
    /// Start of the next interval to send.
    pub cursor_ms: i64,
    /// Calls that reached the store after their interval had been sent,
    /// found and added later (see `fold_late`).
    pub late_calls: u64,
    pub statements: BTreeMap<StatementKey, Statement>,
    pub pools: BTreeMap<PoolKey, Pool>,
    /// Statements with series of their own.
    own_statements: usize,
}

impl ExportState {
    pub fn starting_at(cursor_ms: i64) -> ExportState {
        ExportState {
            origin_ms: cursor_ms,
            cursor_ms,
            late_calls: 0,
            statements: BTreeMap::new(),
            pools: BTreeMap::new(),
            own_statements: 0,
        }
    }

    /// The series a statement's windows go to: its own when it has one or
    /// [`ExportState::admit`] gives it one, else its service's `other`.
    pub fn key(&mut self, service: &str, fingerprint: Fingerprint, max: usize) -> StatementKey {
        let own = fingerprint != Fingerprint::OTHER && self.admit(service, fingerprint, max);
        StatementKey {
            service: service.to_owned(),
            fingerprint: own.then_some(fingerprint),
        }
    }

    /// The series of one service's statements.
    pub fn service_statements<'a>(&'a self, service: &str) -> impl Iterator<Item = (&'a StatementKey, &'a Statement)> {
        let low = StatementKey {
            service: service.to_owned(),
            fingerprint: None,
        };
        let high = StatementKey {
            service: service.to_owned(),
            fingerprint: Some(Fingerprint::new(u64::MAX)),
        };
        self.statements.range(low..=high)
    }

    /// Whether `fingerprint` of `service` has (or now gets) a series of
    /// its own: it has one already, or fewer than `max` statements do.
    pub fn admit(&mut self, service: &str, fingerprint: Fingerprint, max: usize) -> bool {
        let key = StatementKey {
            service: service.to_owned(),
            fingerprint: Some(fingerprint),
        };
        if self.statements.contains_key(&key) {
            return true;
        }
        if self.own_statements < max {
            self.own_statements += 1;
            return true;
        }
        false
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct StateFile {
    #[prost(int64, tag = "1")]
    cursor_ms: i64,
    #[prost(message, repeated, tag = "2")]
    statements: Vec<StatementRecord>,
    #[prost(message, repeated, tag = "3")]
    pools: Vec<PoolRecord>,
    #[prost(int64, tag = "4")]
    origin_ms: i64,
    #[prost(uint64, tag = "5")]
    late_calls: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HistogramRecord {
    #[prost(sint32, tag = "1")]
    schema: i32,
    #[prost(uint64, tag = "2")]
    count: u64,
    #[prost(uint64, tag = "3")]
    sum_us: u64,
    #[prost(uint64, tag = "4")]
    zero_count: u64,
    #[prost(sint32, repeated, tag = "5")]
    indexes: Vec<i32>,
    #[prost(uint64, repeated, tag = "6")]
    counts: Vec<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StatementRecord {
    #[prost(string, tag = "1")]
    service: String,
    #[prost(uint64, optional, tag = "2")]
    fingerprint: Option<u64>,
    #[prost(int64, tag = "3")]
    first_ms: i64,
    #[prost(message, optional, tag = "4")]
    duration: Option<HistogramRecord>,
    #[prost(uint64, tag = "5")]
    rows: u64,
    #[prost(string, repeated, tag = "6")]
    error_classes: Vec<String>,
    #[prost(uint64, repeated, tag = "7")]
    error_counts: Vec<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PoolRecord {
    #[prost(string, tag = "1")]
    service: String,
    #[prost(string, tag = "2")]
    instance: String,
    #[prost(string, tag = "3")]
    pool: String,
    #[prost(message, optional, tag = "4")]
    acquire_wait: Option<HistogramRecord>,
    #[prost(message, optional, tag = "5")]
    hold: Option<HistogramRecord>,
    #[prost(uint64, tag = "6")]
    acquires: u64,
    #[prost(uint64, tag = "7")]
    timeouts: u64,
    #[prost(uint64, tag = "8")]
    leaks: u64,
    #[prost(int64, tag = "9")]
    first_ms: i64,
}

fn histogram_record(h: &Cumulative) -> HistogramRecord {
    HistogramRecord {
        schema: h.schema,
        count: h.count,
        sum_us: h.sum_us,
        zero_count: h.zero_count,
        indexes: h.buckets.keys().copied().collect(),
        counts: h.buckets.values().copied().collect(),
    }
}

fn cumulative(record: Option<HistogramRecord>) -> Result<Cumulative, String> {
    let r = record.ok_or("a histogram is missing")?;
    if r.indexes.len() != r.counts.len() || !super::SCHEMAS.contains(&r.schema) {
        return Err("a histogram is malformed".into());
    }
    Ok(Cumulative {
        schema: r.schema,
        count: r.count,
        sum_us: r.sum_us,
        zero_count: r.zero_count,
        buckets: r.indexes.into_iter().zip(r.counts).collect(),
    })
}

fn encode(state: &ExportState) -> Vec<u8> {
    let file = StateFile {
        cursor_ms: state.cursor_ms,
        origin_ms: state.origin_ms,
        late_calls: state.late_calls,
        statements: state
            .statements
            .iter()
            .map(|(key, s)| StatementRecord {
                service: key.service.clone(),
                fingerprint: key.fingerprint.map(Fingerprint::get),
                first_ms: s.first_ms,
                duration: Some(histogram_record(&s.duration)),
                rows: s.rows,
                error_classes: s.errors.keys().cloned().collect(),
                error_counts: s.errors.values().copied().collect(),
            })
            .collect(),
        pools: state
            .pools
            .iter()
            .map(|(key, p)| PoolRecord {
                service: key.service.clone(),
                instance: key.instance.clone(),
                pool: key.pool.clone(),
                acquire_wait: Some(histogram_record(&p.acquire_wait)),
                hold: Some(histogram_record(&p.hold)),
                acquires: p.acquires,
                timeouts: p.timeouts,
                leaks: p.leaks,
                first_ms: p.first_ms,
            })
            .collect(),
    };
    let body = file.encode_to_vec();
    let mut out = Vec::with_capacity(body.len() + 12);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

fn decode(bytes: &[u8]) -> Result<ExportState, String> {
    let body = bytes
        .strip_prefix(MAGIC.as_slice())
        .filter(|rest| rest.len() >= 4)
        .ok_or("not a remote-write state file")?;
    let (crc, body) = body.split_at(4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err("checksum mismatch".into());
    }
    let file = StateFile::decode(body).map_err(|e| e.to_string())?;
    let mut state = ExportState::starting_at(file.cursor_ms);
    state.origin_ms = file.origin_ms;
    state.late_calls = file.late_calls;
    for r in file.statements {
        if r.error_classes.len() != r.error_counts.len() {
            return Err("a statement's errors are malformed".into());
        }
        let key = StatementKey {
            service: r.service,
            fingerprint: r.fingerprint.map(Fingerprint::new),
        };
        state.own_statements += usize::from(key.fingerprint.is_some());
        state.statements.insert(
            key,
            Statement {
                first_ms: r.first_ms,
                duration: cumulative(r.duration)?,
                rows: r.rows,
                errors: r.error_classes.into_iter().zip(r.error_counts).collect(),
            },
        );
    }
    for r in file.pools {
        state.pools.insert(
            PoolKey {
                service: r.service,
                instance: r.instance,
                pool: r.pool,
            },
            Pool {
                first_ms: r.first_ms,
                acquire_wait: cumulative(r.acquire_wait)?,
                hold: cumulative(r.hold)?,
                acquires: r.acquires,
                timeouts: r.timeouts,
                leaks: r.leaks,
            },
        );
    }
    Ok(state)
}

/// The saved state, `None` when there is none yet.
pub fn load(path: &Path) -> Result<Option<ExportState>, String> {
    match std::fs::read(path) {
        Ok(bytes) => decode(&bytes).map(Some).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Replaces the saved state with `state`.
pub fn save(path: &Path, state: &ExportState) -> std::io::Result<()> {
    let dir = path.parent().expect("the state file is in a directory");
    std::fs::create_dir_all(dir)?;
    let temporary = path.with_extension("state.new");
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(&encode(state))?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use querypulse_domain::LatencyHistogram;

    fn sample_state() -> ExportState {
        let map = super::super::BucketMap::new(3);
        let mut state = ExportState::starting_at(1_800_000_000_000);
        state.origin_ms = 1_799_999_000_000;
        state.late_calls = 3;
        assert!(state.admit("checkout", Fingerprint::new(7), 1));
        let mut statement = Statement::new(3, 1_799_999_990_000);
        let mut h = LatencyHistogram::new();
        h.record(1_500);
        h.record(0);
        statement.duration.add(&h, 1_500, &map, 160);
        statement.rows = 12;
        statement.errors.insert("23505".into(), 2);
        state.statements.insert(
            StatementKey {
                service: "checkout".into(),
                fingerprint: Some(Fingerprint::new(7)),
            },
            statement.clone(),
        );
        state.statements.insert(
            StatementKey {
                service: "checkout".into(),
                fingerprint: None,
            },
            statement,
        );
        let mut pool = Pool::new(3, 1_799_999_990_000);
        pool.hold.add(&h, 0, &map, 160);
        pool.acquires = 9;
        state.pools.insert(
            PoolKey {
                service: "checkout".into(),
                instance: "a".into(),
                pool: "main".into(),
            },
            pool,
        );
        state
    }

    #[test]
    fn a_saved_state_loads_back_equal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("remote_write").join("x.state");
        assert_eq!(load(&path).unwrap(), None);
        let state = sample_state();
        save(&path, &state).unwrap();
        let loaded = load(&path).unwrap().unwrap();
        assert_eq!(loaded, state);
        // The admission count came back too: no room for another statement.
        let mut loaded = loaded;
        assert!(!loaded.admit("checkout", Fingerprint::new(8), 1));
        assert!(loaded.admit("checkout", Fingerprint::new(7), 1));
    }

    #[test]
    fn a_damaged_state_is_refused_not_misread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.state");
        save(&path, &sample_state()).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        assert!(load(&path).unwrap_err().contains("checksum"));
        std::fs::write(&path, b"nonsense").unwrap();
        assert!(load(&path).is_err());
    }
}
