//! Byte layouts of everything the store keeps: keys (big-endian, so that
//! lexicographic order is numeric order) and values (LEB128 varints, sparse
//! histograms as delta-coded bucket indexes).
//!
//! Every value starts with a format byte so that a later layout can be told
//! apart from this one.

use std::collections::BTreeMap;

use querypulse_domain::{
    AgentCounters, Batch, DbSystem, DenseHistogram, ErrorClassCount, Fingerprint, FingerprintText, Gauge,
    HealthCheckStats, LatencyHistogram, LeakSample, PoolStats, QueryStats, SlowQuerySample, Window,
};

use super::StoreError;

/// Format byte of every value written by this version.
const FORMAT: u8 = 1;

type Result<T> = std::result::Result<T, StoreError>;

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

/// Appends varints and friends to a buffer.
#[derive(Debug, Default)]
pub(crate) struct Out(pub Vec<u8>);

impl Out {
    pub(crate) fn with_format() -> Out {
        Out(vec![FORMAT])
    }

    pub(crate) fn u(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.0.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.0.push(value as u8);
    }

    pub(crate) fn i(&mut self, value: i64) {
        self.u(((value << 1) ^ (value >> 63)) as u64);
    }

    pub(crate) fn f(&mut self, value: f64) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    pub(crate) fn bytes(&mut self, bytes: &[u8]) {
        self.u(bytes.len() as u64);
        self.0.extend_from_slice(bytes);
    }

    pub(crate) fn s(&mut self, text: &str) {
        self.bytes(text.as_bytes());
    }

    pub(crate) fn histogram(&mut self, histogram: &LatencyHistogram) {
        self.buckets(histogram.indexed_buckets());
    }

    /// Writes (bucket index, count) pairs, strictly increasing by index, as
    /// [`Out::histogram`] writes a histogram's.
    pub(crate) fn buckets(&mut self, buckets: &[(u16, u64)]) {
        self.u(buckets.len() as u64);
        let mut previous = 0u16;
        for (index, count) in buckets {
            self.u(u64::from(index - previous));
            self.u(*count);
            previous = *index;
        }
    }
}

/// Reads what [`Out`] wrote; every read is bounds-checked.
#[derive(Debug)]
pub(crate) struct In<'a>(pub &'a [u8]);

impl<'a> In<'a> {
    /// Checks the format byte.
    pub(crate) fn with_format(bytes: &'a [u8], what: &str) -> Result<In<'a>> {
        match bytes.split_first() {
            Some((&FORMAT, rest)) => Ok(In(rest)),
            _ => Err(StoreError::Corrupt(format!("{what}: unknown format"))),
        }
    }

    pub(crate) fn u(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.0.split_first().ok_or_else(|| corrupt("truncated varint"))?;
            self.0 = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(corrupt("varint too long"))
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        u32::try_from(self.u()?).map_err(|_| corrupt("value exceeds 32 bits"))
    }

    pub(crate) fn i(&mut self) -> Result<i64> {
        let raw = self.u()?;
        Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
    }

    pub(crate) fn f(&mut self) -> Result<f64> {
        let bytes = self.take(8)?;
        Ok(f64::from_le_bytes(bytes.try_into().expect("8 bytes")))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        if self.0.len() < len {
            return Err(corrupt("truncated value"));
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = usize::try_from(self.u()?).map_err(|_| corrupt("length"))?;
        self.take(len)
    }

    pub(crate) fn s(&mut self) -> Result<String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| corrupt("text is not UTF-8"))
    }

    pub(crate) fn histogram(&mut self) -> Result<LatencyHistogram> {
        let mut buckets = Vec::new();
        self.buckets_into(&mut buckets)?;
        LatencyHistogram::from_buckets(buckets).ok_or_else(|| corrupt("histogram bucket out of range"))
    }

    /// Reads a histogram's (bucket index, count) pairs into `buckets`
    /// (cleared first), strictly increasing by index.
    pub(crate) fn buckets_into(&mut self, buckets: &mut Vec<(u16, u64)>) -> Result<()> {
        buckets.clear();
        let len = self.u()? as usize;
        if len > querypulse_domain::histogram::BUCKETS {
            return Err(corrupt("histogram has too many buckets"));
        }
        buckets.reserve(len);
        let mut index = 0u64;
        for i in 0..len {
            let delta = self.u()?;
            if i > 0 && delta == 0 {
                return Err(corrupt("histogram buckets out of order"));
            }
            index += delta;
            if index >= querypulse_domain::histogram::BUCKETS as u64 {
                return Err(corrupt("histogram bucket out of range"));
            }
            buckets.push((index as u16, self.u()?));
        }
        Ok(())
    }

    /// Reads a histogram straight into a dense accumulator (no allocation).
    pub(crate) fn histogram_into(&mut self, dense: &mut DenseHistogram) -> Result<()> {
        let len = self.u()? as usize;
        if len > querypulse_domain::histogram::BUCKETS {
            return Err(corrupt("histogram has too many buckets"));
        }
        let mut index = 0u64;
        for i in 0..len {
            let delta = self.u()?;
            if i > 0 && delta == 0 {
                return Err(corrupt("histogram buckets out of order"));
            }
            index += delta;
            if index >= querypulse_domain::histogram::BUCKETS as u64 {
                return Err(corrupt("histogram bucket out of range"));
            }
            dense.add_bucket(index as u16, self.u()?);
        }
        Ok(())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A value kept per series and window, with the merge that rollups and
/// late windows use.
pub(crate) trait WindowValue: Sized + Clone {
    /// Appends the value (without format byte).
    fn write(&self, out: &mut Out);
    /// Reads a value written by [`WindowValue::write`].
    fn read(input: &mut In<'_>) -> Result<Self>;
    /// Folds `other` into `self`. The result does not depend on the order
    /// windows are folded in: late windows arrive in any order.
    fn merge(&mut self, other: &Self);

    fn encode(&self) -> Vec<u8> {
        let mut out = Out::with_format();
        self.write(&mut out);
        out.0
    }

    fn decode(bytes: &[u8]) -> Result<Self> {
        let mut input = In::with_format(bytes, "window")?;
        Self::read(&mut input)
    }
}

/// Statement statistics of a service-wide query series (fingerprint set by
/// the caller from the series).
impl WindowValue for QueryStats {
    fn write(&self, out: &mut Out) {
        write_query_counters(self, out);
        out.histogram(&self.latency);
    }

    fn read(input: &mut In<'_>) -> Result<Self> {
        let mut stats = read_query_counters(input)?;
        stats.latency = input.histogram()?;
        Ok(stats)
    }

    fn merge(&mut self, later: &Self) {
        QueryStats::merge(self, later);
    }
}

/// Writes the counters of `stats`, up to (not including) its histogram,
/// which the caller writes next.
pub(crate) fn write_query_counters(stats: &QueryStats, out: &mut Out) {
    out.u(stats.calls);
    out.u(stats.errors);
    out.u(stats.rows);
    out.u(stats.sum_us);
    out.f(stats.sum_squares_us);
    out.u(stats.min_us);
    out.u(stats.max_us);
    out.u(stats.outliers);
    out.u(stats.error_classes.len() as u64);
    for class in &stats.error_classes {
        out.s(&class.class);
        out.u(class.count);
    }
}

/// The counters of a stored `QueryStats`, up to (not including) its
/// histogram, which the caller reads next.
pub(crate) fn read_query_counters(input: &mut In<'_>) -> Result<QueryStats> {
    let mut stats = QueryStats::new(Fingerprint::OTHER);
    stats.calls = input.u()?;
    stats.errors = input.u()?;
    stats.rows = input.u()?;
    stats.sum_us = input.u()?;
    stats.sum_squares_us = input.f()?;
    stats.min_us = input.u()?;
    stats.max_us = input.u()?;
    stats.outliers = input.u()?;
    let classes = input.u()? as usize;
    for _ in 0..classes.min(1_024) {
        let class = input.s()?;
        stats.error_classes.push(ErrorClassCount {
            class,
            count: input.u()?,
        });
    }
    Ok(stats)
}

/// Per-instance counters of one fingerprint (no histogram: the per-instance
/// breakdown shows calls, errors, mean and extremes; percentiles come from the
/// service-wide series).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InstanceQuery {
    /// The service-wide query series the counters belong to.
    pub series: u32,
    /// Executions.
    pub calls: u64,
    /// Failed executions.
    pub errors: u64,
    /// Rows returned or affected.
    pub rows: u64,
    /// Sum of latencies, microseconds.
    pub sum_us: u64,
    /// Fastest, microseconds.
    pub min_us: u64,
    /// Slowest, microseconds.
    pub max_us: u64,
}

impl InstanceQuery {
    pub(crate) fn from_stats(series: u32, stats: &QueryStats) -> InstanceQuery {
        InstanceQuery {
            series,
            calls: stats.calls,
            errors: stats.errors,
            rows: stats.rows,
            sum_us: stats.sum_us,
            min_us: stats.min_us,
            max_us: stats.max_us,
        }
    }

    fn merge(&mut self, other: &InstanceQuery) {
        if other.calls == 0 {
            return;
        }
        self.min_us = if self.calls == 0 {
            other.min_us
        } else {
            self.min_us.min(other.min_us)
        };
        self.max_us = self.max_us.max(other.max_us);
        self.calls = self.calls.saturating_add(other.calls);
        self.errors = self.errors.saturating_add(other.errors);
        self.rows = self.rows.saturating_add(other.rows);
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }
}

/// Every fingerprint's counters of one instance in one window, sorted by
/// query series id. Values above 256 bytes are zstd-compressed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct InstanceQueries(pub Vec<InstanceQuery>);

const COMPRESS_ABOVE: usize = 256;

impl InstanceQueries {
    /// The varint form, uncompressed (the memtable keeps open windows so).
    pub(crate) fn write_plain(&self, out: &mut Out) {
        out.u(self.0.len() as u64);
        let mut previous = 0u32;
        for q in &self.0 {
            out.u(u64::from(q.series - previous));
            previous = q.series;
            out.u(q.calls);
            out.u(q.errors);
            out.u(q.rows);
            out.u(q.sum_us);
            out.u(q.min_us);
            out.u(q.max_us);
        }
    }

    /// Reads what [`InstanceQueries::write_plain`] wrote.
    pub(crate) fn read_plain(plain: &[u8]) -> Result<Self> {
        let mut input = In(plain);
        let len = input.u()? as usize;
        let mut entries = Vec::with_capacity(len.min(1 << 20));
        let mut series = 0u32;
        for _ in 0..len {
            series = series
                .checked_add(input.u32()?)
                .ok_or_else(|| corrupt("series id overflow"))?;
            entries.push(InstanceQuery {
                series,
                calls: input.u()?,
                errors: input.u()?,
                rows: input.u()?,
                sum_us: input.u()?,
                min_us: input.u()?,
                max_us: input.u()?,
            });
        }
        Ok(InstanceQueries(entries))
    }
}

impl WindowValue for InstanceQueries {
    fn write(&self, out: &mut Out) {
        let mut plain = Out::default();
        self.write_plain(&mut plain);
        write_maybe_compressed(out, &plain.0);
    }

    fn read(input: &mut In<'_>) -> Result<Self> {
        InstanceQueries::read_plain(&read_maybe_compressed(input)?)
    }

    fn merge(&mut self, later: &Self) {
        let mut merged = Vec::with_capacity(self.0.len().max(later.0.len()));
        let (mut a, mut b) = (self.0.iter().peekable(), later.0.iter().peekable());
        while let (Some(x), Some(y)) = (a.peek(), b.peek()) {
            if x.series == y.series {
                let mut m = **x;
                m.merge(y);
                merged.push(m);
                a.next();
                b.next();
            } else if x.series < y.series {
                merged.push(*a.next().expect("peeked"));
            } else {
                merged.push(*b.next().expect("peeked"));
            }
        }
        merged.extend(a.copied());
        merged.extend(b.copied());
        self.0 = merged;
    }
}

fn write_maybe_compressed(out: &mut Out, plain: &[u8]) {
    if plain.len() > COMPRESS_ABOVE
        && let Ok(compressed) = zstd::bulk::compress(plain, 1)
        && compressed.len() < plain.len()
    {
        out.u(1);
        out.u(plain.len() as u64);
        out.bytes(&compressed);
        return;
    }
    out.u(0);
    out.bytes(plain);
}

/// Largest decompressed value accepted (a bound against corrupt lengths).
const MAX_PLAIN: usize = 64 << 20;

/// Decompresses a zstd frame of at most `capacity` bytes with this thread's
/// decompression context: reads decompress thousands of blocks and chunks a
/// request, and a fresh context each time cost more than a small frame's
/// decompression.
pub(crate) fn decompress(frame: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    thread_local! {
        static CONTEXT: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    CONTEXT.with(|context| {
        let mut context = context.borrow_mut();
        let decompressor = match context.as_mut() {
            Some(decompressor) => decompressor,
            None => context.insert(zstd::bulk::Decompressor::new()?),
        };
        decompressor.decompress(frame, capacity)
    })
}

fn read_maybe_compressed(input: &mut In<'_>) -> Result<Vec<u8>> {
    match input.u()? {
        0 => Ok(input.bytes()?.to_vec()),
        1 => {
            let plain_len = input.u()? as usize;
            if plain_len > MAX_PLAIN {
                return Err(corrupt("compressed value too large"));
            }
            decompress(input.bytes()?, plain_len).map_err(|e| StoreError::Corrupt(format!("zstd: {e}")))
        }
        _ => Err(corrupt("unknown compression")),
    }
}

fn db_system_code(system: DbSystem) -> u64 {
    match system {
        DbSystem::Unspecified => 0,
        DbSystem::Postgresql => 1,
        DbSystem::Mysql => 2,
        DbSystem::Mariadb => 3,
        DbSystem::Sqlite => 4,
        DbSystem::Other => 5,
    }
}

fn db_system_from(code: u64) -> DbSystem {
    match code {
        1 => DbSystem::Postgresql,
        2 => DbSystem::Mysql,
        3 => DbSystem::Mariadb,
        4 => DbSystem::Sqlite,
        5 => DbSystem::Other,
        _ => DbSystem::Unspecified,
    }
}

fn write_gauge(out: &mut Out, gauge: Gauge) {
    out.u(u64::from(gauge.last));
    out.u(u64::from(gauge.peak));
}

fn read_gauge(input: &mut In<'_>) -> Result<Gauge> {
    Ok(Gauge {
        last: input.u32()?,
        peak: input.u32()?,
    })
}

/// Pool statistics (pool name kept in the series).
impl WindowValue for PoolStats {
    fn write(&self, out: &mut Out) {
        out.u(db_system_code(self.db_system));
        out.u(u64::from(self.max_size));
        out.u(u64::from(self.min_idle));
        for gauge in [self.size, self.idle, self.in_use, self.waiting] {
            write_gauge(out, gauge);
        }
        for counter in [
            self.acquires,
            self.releases,
            self.timeouts,
            self.errors,
            self.connections_created,
            self.connections_closed,
            self.leaks,
            self.leak_threshold_ms,
        ] {
            out.u(counter);
        }
        out.histogram(&self.acquire_wait);
        out.histogram(&self.hold_time);
        out.u(self.leak_samples.len() as u64);
        for sample in &self.leak_samples {
            out.i(sample.acquired_at_ms);
            out.u(sample.held_ms);
            out.u(sample.last_fingerprint.map_or(0, Fingerprint::get));
        }
    }

    fn read(input: &mut In<'_>) -> Result<Self> {
        let mut pool = PoolStats {
            db_system: db_system_from(input.u()?),
            max_size: input.u32()?,
            min_idle: input.u32()?,
            size: read_gauge(input)?,
            idle: read_gauge(input)?,
            in_use: read_gauge(input)?,
            waiting: read_gauge(input)?,
            acquires: input.u()?,
            releases: input.u()?,
            timeouts: input.u()?,
            errors: input.u()?,
            connections_created: input.u()?,
            connections_closed: input.u()?,
            leaks: input.u()?,
            leak_threshold_ms: input.u()?,
            ..PoolStats::default()
        };
        pool.acquire_wait = input.histogram()?;
        pool.hold_time = input.histogram()?;
        let samples = input.u()? as usize;
        for _ in 0..samples.min(1_024) {
            pool.leak_samples.push(LeakSample {
                acquired_at_ms: input.i()?,
                held_ms: input.u()?,
                last_fingerprint: Some(Fingerprint::new(input.u()?)).filter(|f| f.get() != 0),
            });
        }
        Ok(pool)
    }

    fn merge(&mut self, later: &Self) {
        self.merge_later(later);
    }
}

/// A pool window as stored: its statistics and the start of the newest agent
/// window folded into it. "Last" gauges and the configuration come from the
/// newest window whatever order windows arrive in: a late window merged
/// into a rollup after a newer one must not replace its last values. Two
/// windows of the same start are told apart by the log entry that brought
/// them, so the result does not depend on the order the store folds its
/// sources in either.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct TimedPool {
    pub stats: PoolStats,
    /// Start of the newest window folded in; `i64::MIN` for records
    /// written before this was kept (they count as oldest).
    pub latest_ms: i64,
    /// Log entry of the newest window folded in (0 when not kept).
    pub latest_seq: u64,
}

/// First byte of a [`TimedPool`] with its time only, and with its time and
/// log entry: never the first byte of a bare [`PoolStats`] (a database
/// system code below 128), so older records still read.
const TIMED_POOL: u8 = 0xff;
const TIMED_POOL_SEQ: u8 = 0xfe;

impl WindowValue for TimedPool {
    fn write(&self, out: &mut Out) {
        out.0.push(TIMED_POOL_SEQ);
        out.i(self.latest_ms);
        out.u(self.latest_seq);
        self.stats.write(out);
    }

    fn read(input: &mut In<'_>) -> Result<Self> {
        let (latest_ms, latest_seq) = match input.0.split_first() {
            Some((&TIMED_POOL, rest)) => {
                input.0 = rest;
                (input.i()?, 0)
            }
            Some((&TIMED_POOL_SEQ, rest)) => {
                input.0 = rest;
                (input.i()?, input.u()?)
            }
            _ => (i64::MIN, 0),
        };
        Ok(TimedPool {
            stats: PoolStats::read(input)?,
            latest_ms,
            latest_seq,
        })
    }

    fn merge(&mut self, other: &Self) {
        if (other.latest_ms, other.latest_seq) >= (self.latest_ms, self.latest_seq) {
            self.stats.merge_later(&other.stats);
            self.latest_ms = other.latest_ms;
            self.latest_seq = other.latest_seq;
        } else {
            let mut merged = other.stats.clone();
            merged.merge_later(&self.stats);
            self.stats = merged;
        }
    }
}

/// Health-check statistics (pool name kept in the series).
impl WindowValue for HealthCheckStats {
    fn write(&self, out: &mut Out) {
        out.u(self.checks);
        out.u(self.failures);
        out.histogram(&self.latency);
        out.i(self.last_check_ms);
        out.u(u64::from(self.last_ok));
        out.s(&self.last_error);
    }

    fn read(input: &mut In<'_>) -> Result<Self> {
        Ok(HealthCheckStats {
            pool: String::new(),
            checks: input.u()?,
            failures: input.u()?,
            latency: input.histogram()?,
            last_check_ms: input.i()?,
            last_ok: input.u()? != 0,
            last_error: input.s()?,
        })
    }

    /// The last check is the one with the latest time, whatever order the
    /// windows arrive in.
    fn merge(&mut self, other: &Self) {
        if other.checks == 0 || other.last_check_ms >= self.last_check_ms {
            self.merge_later(other);
        } else {
            let mut merged = other.clone();
            merged.merge_later(self);
            merged.pool = std::mem::take(&mut self.pool);
            *self = merged;
        }
    }
}

/// Several windows of one series compressed together: (window start, value).
/// Neighbouring windows of a series look alike, which is what the
/// compression feeds on.
pub(crate) fn encode_chunk<V: WindowValue>(windows: &[(i64, V)]) -> Vec<u8> {
    let mut plain = Out::default();
    plain.u(windows.len() as u64);
    let mut previous = windows.first().map_or(0, |(t, _)| *t);
    plain.i(previous);
    for (time, value) in windows {
        plain.i(time - previous);
        previous = *time;
        value.write(&mut plain);
    }
    let mut out = Out::with_format();
    write_maybe_compressed(&mut out, &plain.0);
    out.0
}

pub(crate) fn decode_chunk<V: WindowValue>(bytes: &[u8]) -> Result<Vec<(i64, V)>> {
    let mut input = In::with_format(bytes, "chunk")?;
    let plain = read_maybe_compressed(&mut input)?;
    let mut input = In(&plain);
    let len = input.u()? as usize;
    let mut time = input.i()?;
    let mut windows = Vec::with_capacity(len.min(100_000));
    for _ in 0..len {
        time = time
            .checked_add(input.i()?)
            .ok_or_else(|| corrupt("chunk time overflow"))?;
        windows.push((time, V::read(&mut input)?));
    }
    Ok(windows)
}

/// Calls `read` positioned at the value of every statement window of a
/// chunk (see [`encode_chunk`]) starting in `[from, to)`. Windows before
/// `from` are skipped without decoding their histograms, and the scan stops
/// at the first window at or past `to`: a chunk holds its windows in time
/// order (a chunk whose times go back is corrupt).
pub(crate) fn scan_query_chunk(
    bytes: &[u8],
    from: i64,
    to: i64,
    read: &mut dyn FnMut(&mut In<'_>) -> Result<()>,
) -> Result<()> {
    let mut input = In::with_format(bytes, "chunk")?;
    let plain = read_maybe_compressed(&mut input)?;
    let mut input = In(&plain);
    let len = input.u()?;
    let mut time = input.i()?;
    for _ in 0..len {
        let delta = input.i()?;
        if delta < 0 {
            return Err(corrupt("chunk windows out of order"));
        }
        time = time.checked_add(delta).ok_or_else(|| corrupt("chunk time overflow"))?;
        if time >= to {
            break;
        }
        if time >= from {
            read(&mut input)?;
        } else {
            skip_query(&mut input)?;
        }
    }
    Ok(())
}

/// Moves past a statement window written by [`QueryStats`]'s
/// [`WindowValue::write`] without decoding it.
fn skip_query(input: &mut In<'_>) -> Result<()> {
    // calls, errors, rows, sum_us; sum of squares; min, max, outliers.
    for _ in 0..4 {
        input.u()?;
    }
    input.f()?;
    for _ in 0..3 {
        input.u()?;
    }
    let classes = input.u()?;
    for _ in 0..classes.min(1_024) {
        input.bytes()?;
        input.u()?;
    }
    let buckets = input.u()?;
    if buckets > querypulse_domain::histogram::BUCKETS as u64 {
        return Err(corrupt("histogram has too many buckets"));
    }
    for _ in 0..2 * buckets {
        input.u()?;
    }
    Ok(())
}

/// A slow-query sample as stored (the service and time are in the key).
pub(crate) fn encode_slow(instance_id: &str, sample: &SlowQuerySample) -> Vec<u8> {
    let mut out = Out::with_format();
    out.s(instance_id);
    out.u(sample.fingerprint.get());
    out.i(sample.at_ms);
    out.u(sample.duration_us);
    out.u(sample.rows);
    out.s(sample.error_class.as_deref().unwrap_or(""));
    out.s(sample.pool.as_deref().unwrap_or(""));
    out.s(sample.raw_text.as_deref().unwrap_or(""));
    out.0
}

pub(crate) fn decode_slow(bytes: &[u8]) -> Result<(String, SlowQuerySample)> {
    let mut input = In::with_format(bytes, "slow sample")?;
    let instance = input.s()?;
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    let sample = SlowQuerySample {
        fingerprint: Fingerprint::new(input.u()?),
        at_ms: input.i()?,
        duration_us: input.u()?,
        rows: input.u()?,
        error_class: non_empty(input.s()?),
        pool: non_empty(input.s()?),
        raw_text: non_empty(input.s()?),
    };
    Ok((instance, sample))
}

/// A batch as written to the write-ahead log: who sent it, when it arrived,
/// and everything in it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WalEntry {
    pub wal_seq: u64,
    pub received_ms: i64,
    pub service: String,
    pub instance_id: String,
    pub batch: Batch,
}

#[cfg(test)]
pub(crate) fn encode_wal(entry: &WalEntry) -> Vec<u8> {
    let mut out = Out(Vec::new());
    encode_wal_into(entry, &mut out);
    out.0
}

/// Appends the encoding of `entry` to `out` (a log entry is encoded once, in
/// place, behind its frame header: nothing is copied again).
pub(crate) fn encode_wal_into(entry: &WalEntry, out: &mut Out) {
    // A statement takes some 60 to 200 bytes: reserve once, not by doubling.
    out.0.reserve(64 + 96 * entry.batch.queries.len());
    out.0.push(FORMAT);
    out.u(entry.wal_seq);
    out.i(entry.received_ms);
    out.s(&entry.service);
    out.s(&entry.instance_id);
    let batch = &entry.batch;
    out.u(batch.seq);
    out.i(batch.window.start_ms);
    out.u(u64::from(batch.window.length_ms));
    out.u(batch.queries.len() as u64);
    for q in &batch.queries {
        out.u(q.fingerprint.get());
        q.write(out);
    }
    out.u(batch.pools.len() as u64);
    for p in &batch.pools {
        out.s(&p.pool);
        p.write(out);
    }
    out.u(batch.health_checks.len() as u64);
    for h in &batch.health_checks {
        out.s(&h.pool);
        h.write(out);
    }
    out.u(batch.slow_queries.len() as u64);
    for s in &batch.slow_queries {
        out.bytes(&encode_slow("", s));
    }
    out.u(batch.texts.len() as u64);
    for t in &batch.texts {
        out.u(t.fingerprint.get());
        out.s(&t.text);
    }
    write_counters(out, &batch.counters);
}

/// The sequence number at the start of an encoded log entry, if it has
/// one; reads nothing else.
pub(crate) fn wal_seq_of(bytes: &[u8]) -> Option<u64> {
    In::with_format(bytes, "log entry").ok()?.u().ok()
}

pub(crate) fn decode_wal(bytes: &[u8]) -> Result<WalEntry> {
    let mut input = In::with_format(bytes, "log entry")?;
    let wal_seq = input.u()?;
    let received_ms = input.i()?;
    let service = input.s()?;
    let instance_id = input.s()?;
    let seq = input.u()?;
    let start_ms = input.i()?;
    let length_ms = input.u32()?;
    let mut batch = Batch::new(seq, Window { start_ms, length_ms });
    for _ in 0..input.u()? {
        let fingerprint = Fingerprint::new(input.u()?);
        let mut stats = QueryStats::read(&mut input)?;
        stats.fingerprint = fingerprint;
        batch.queries.push(stats);
    }
    for _ in 0..input.u()? {
        let pool = input.s()?;
        batch.pools.push(PoolStats {
            pool,
            ..PoolStats::read(&mut input)?
        });
    }
    for _ in 0..input.u()? {
        let pool = input.s()?;
        batch.health_checks.push(HealthCheckStats {
            pool,
            ..HealthCheckStats::read(&mut input)?
        });
    }
    for _ in 0..input.u()? {
        batch.slow_queries.push(decode_slow(input.bytes()?)?.1);
    }
    for _ in 0..input.u()? {
        let fingerprint = Fingerprint::new(input.u()?);
        batch.texts.push(FingerprintText {
            fingerprint,
            text: input.s()?,
        });
    }
    batch.counters = read_counters(&mut input)?;
    if !input.is_empty() {
        return Err(corrupt("log entry has trailing bytes"));
    }
    Ok(WalEntry {
        wal_seq,
        received_ms,
        service,
        instance_id,
        batch,
    })
}

/// Keys. Partitions hold `w` (windows), `q` (slow samples) and `W` (last
/// applied log entry; databases written before runs also hold `c`, chunks
/// that were waiting for compaction, dropped when sealed); the meta database
/// holds the registries.
pub(crate) mod key {
    /// Window starts are signed; flipping the sign bit makes their big-endian
    /// bytes sort in numeric order, negative times included.
    pub(crate) fn time(ms: i64) -> [u8; 8] {
        ((ms as u64) ^ (1 << 63)).to_be_bytes()
    }

    pub(crate) fn time_from(bytes: &[u8]) -> Option<i64> {
        let raw: [u8; 8] = bytes.try_into().ok()?;
        Some((u64::from_be_bytes(raw) ^ (1 << 63)) as i64)
    }

    /// Kind byte of a window key: one window, or a compacted chunk starting
    /// at the key's time.
    pub(crate) const SINGLE: u8 = 0;
    pub(crate) const CHUNK: u8 = 1;

    pub(crate) fn window(series: u32, start_ms: i64, kind: u8) -> [u8; 14] {
        let mut key = [0u8; 14];
        key[0] = b'w';
        key[1..5].copy_from_slice(&series.to_be_bytes());
        key[5..13].copy_from_slice(&time(start_ms));
        key[13] = kind;
        key
    }

    /// (series, start, kind) of a window key.
    pub(crate) fn parse_window(key: &[u8]) -> Option<(u32, i64, u8)> {
        if key.len() != 14 || key[0] != b'w' {
            return None;
        }
        let series = u32::from_be_bytes(key[1..5].try_into().ok()?);
        Some((series, time_from(&key[5..13])?, key[13]))
    }

    pub(crate) fn slow(at_ms: i64, service: u32, unique: u64) -> [u8; 21] {
        let mut key = [0u8; 21];
        key[0] = b'q';
        key[1..9].copy_from_slice(&time(at_ms));
        key[9..13].copy_from_slice(&service.to_be_bytes());
        key[13..21].copy_from_slice(&unique.to_be_bytes());
        key
    }

    pub(crate) fn parse_slow(key: &[u8]) -> Option<(i64, u32)> {
        if key.len() != 21 || key[0] != b'q' {
            return None;
        }
        Some((time_from(&key[1..9])?, u32::from_be_bytes(key[9..13].try_into().ok()?)))
    }

    /// Last log entry applied to a database.
    pub(crate) const APPLIED_LOG: &[u8] = b"W";
}

/// An agent's counters, in a fixed order.
pub(crate) fn write_counters(out: &mut Out, c: &AgentCounters) {
    for v in [
        c.dropped_batches,
        c.rejected_batches,
        c.overflow_fingerprints,
        c.overflow_calls,
        c.dropped_samples,
        c.dropped_records,
        c.send_errors,
        c.reconnects,
        c.outbox_bytes,
        c.outbox_batches,
    ] {
        out.u(v);
    }
}

pub(crate) fn read_counters(input: &mut In<'_>) -> Result<AgentCounters> {
    Ok(AgentCounters {
        dropped_batches: input.u()?,
        rejected_batches: input.u()?,
        overflow_fingerprints: input.u()?,
        overflow_calls: input.u()?,
        dropped_samples: input.u()?,
        dropped_records: input.u()?,
        send_errors: input.u()?,
        reconnects: input.u()?,
        outbox_bytes: input.u()?,
        outbox_batches: input.u()?,
    })
}

/// Labels as stored with an instance record.
pub(crate) fn encode_labels(out: &mut Out, labels: &BTreeMap<String, String>) {
    out.u(labels.len() as u64);
    for (k, v) in labels {
        out.s(k);
        out.s(v);
    }
}

pub(crate) fn decode_labels(input: &mut In<'_>) -> Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    for _ in 0..input.u()?.min(1_024) {
        let k = input.s()?;
        labels.insert(k, input.s()?);
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(latencies: &[u64]) -> QueryStats {
        let mut s = QueryStats::new(Fingerprint::OTHER);
        for (i, us) in latencies.iter().enumerate() {
            s.record(*us, 2, (i % 3 == 0).then_some("23505"));
        }
        s
    }

    #[test]
    fn time_keys_sort_numerically_across_zero() {
        let times = [i64::MIN, -10_000, -1, 0, 1, 10_000, 1_700_000_000_000, i64::MAX];
        let keys: Vec<[u8; 8]> = times.iter().map(|t| key::time(*t)).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        for t in times {
            assert_eq!(key::time_from(&key::time(t)), Some(t));
        }
        let w = key::window(7, -5, key::CHUNK);
        assert_eq!(key::parse_window(&w), Some((7, -5, key::CHUNK)));
        assert!(key::window(7, 100, key::SINGLE) < key::window(7, 100, key::CHUNK));
        assert!(key::window(7, 100, key::CHUNK) < key::window(7, 101, key::SINGLE));
    }

    #[test]
    fn values_round_trip() {
        let q = stats(&[5, 900, 42_000, 7]);
        assert_eq!(QueryStats::decode(&q.encode()).unwrap(), q);

        let mut pool = PoolStats {
            max_size: 10,
            acquires: 4,
            db_system: DbSystem::Postgresql,
            ..PoolStats::default()
        };
        pool.in_use = Gauge { last: 3, peak: 9 };
        pool.acquire_wait.record(1_500);
        pool.leak_samples.push(LeakSample {
            acquired_at_ms: 5,
            held_ms: 60_000,
            last_fingerprint: None,
        });
        assert_eq!(PoolStats::decode(&pool.encode()).unwrap(), pool);

        let mut health = HealthCheckStats {
            checks: 3,
            failures: 1,
            last_error: "refused".into(),
            ..Default::default()
        };
        health.latency.record(800);
        assert_eq!(HealthCheckStats::decode(&health.encode()).unwrap(), health);

        let instance = InstanceQueries(
            (1..400u32)
                .map(|i| InstanceQuery {
                    series: i * 3,
                    calls: u64::from(i),
                    sum_us: 77 * u64::from(i),
                    ..Default::default()
                })
                .collect(),
        );
        let bytes = instance.encode();
        let mut plain = Out::default();
        for q in &instance.0 {
            for v in [3, q.calls, q.errors, q.rows, q.sum_us, q.min_us, q.max_us] {
                plain.u(v);
            }
        }
        assert!(
            bytes.len() < plain.0.len(),
            "large records are compressed ({} of {} bytes)",
            bytes.len(),
            plain.0.len()
        );
        assert_eq!(InstanceQueries::decode(&bytes).unwrap(), instance);
    }

    #[test]
    fn scanning_a_chunk_reads_exactly_the_windows_in_range() {
        let start = 1_700_000_000_000;
        let windows: Vec<(i64, QueryStats)> = (0..50)
            .map(|i| {
                (
                    start + i * 60_000,
                    stats(&[100 + i as u64 * 37, 2_000 + i as u64, 30_000]),
                )
            })
            .collect();
        let chunk = encode_chunk(&windows);
        for (from, to) in [
            (0, i64::MAX),
            (start + 600_000, start + 1_260_000),
            (start + 1, start + 2),
            (start + 49 * 60_000, i64::MAX),
        ] {
            let mut read = Vec::new();
            scan_query_chunk(&chunk, from, to, &mut |input| {
                read.push(QueryStats::read(input)?);
                Ok(())
            })
            .unwrap();
            let expected: Vec<QueryStats> = windows
                .iter()
                .filter(|(t, _)| (from..to).contains(t))
                .map(|(_, s)| s.clone())
                .collect();
            assert_eq!(read, expected, "[{from}, {to})");
        }
        // Skipping consumes exactly what was written.
        let mut out = Out::default();
        for (_, s) in &windows {
            s.write(&mut out);
        }
        let mut input = In(&out.0);
        for _ in &windows {
            skip_query(&mut input).unwrap();
        }
        assert!(input.is_empty());
    }

    #[test]
    fn chunks_round_trip_and_compress_alike_windows() {
        let windows: Vec<(i64, QueryStats)> = (0..360)
            .map(|i| {
                (
                    1_700_000_000_000 + i * 10_000,
                    stats(&[100 + i as u64 % 7, 2_000, 30_000]),
                )
            })
            .collect();
        let chunk = encode_chunk(&windows);
        let singles: usize = windows.iter().map(|(_, s)| s.encode().len()).sum();
        assert!(
            chunk.len() * 4 < singles,
            "chunk {} B vs singles {} B",
            chunk.len(),
            singles
        );
        assert_eq!(decode_chunk::<QueryStats>(&chunk).unwrap(), windows);
    }

    #[test]
    fn instance_records_merge_by_series() {
        let q = |series, calls, min_us| InstanceQuery {
            series,
            calls,
            min_us,
            max_us: min_us,
            ..Default::default()
        };
        let mut a = InstanceQueries(vec![q(1, 2, 50), q(5, 1, 10)]);
        a.merge(&InstanceQueries(vec![q(2, 1, 7), q(5, 3, 5)]));
        assert_eq!(
            a.0.iter().map(|e| (e.series, e.calls, e.min_us)).collect::<Vec<_>>(),
            vec![(1, 2, 50), (2, 1, 7), (5, 4, 5)]
        );
    }

    #[test]
    fn log_entries_round_trip() {
        let mut batch = Batch::new(
            3,
            Window {
                start_ms: 1_000,
                length_ms: 10_000,
            },
        );
        let mut q = stats(&[10, 20]);
        q.fingerprint = Fingerprint::new(99);
        batch.queries.push(q);
        batch.pools.push(PoolStats {
            pool: "main".into(),
            max_size: 4,
            ..Default::default()
        });
        batch.health_checks.push(HealthCheckStats {
            pool: "main".into(),
            ..Default::default()
        });
        batch.slow_queries.push(SlowQuerySample {
            fingerprint: Fingerprint::new(99),
            at_ms: 1_500,
            duration_us: 2_000_000,
            rows: 1,
            error_class: None,
            pool: Some("main".into()),
            raw_text: None,
        });
        batch.texts.push(FingerprintText {
            fingerprint: Fingerprint::new(99),
            text: "select ?".into(),
        });
        batch.counters.reconnects = 4;
        let entry = WalEntry {
            wal_seq: 12,
            received_ms: 2_000,
            service: "s".into(),
            instance_id: "i".into(),
            batch,
        };
        assert_eq!(decode_wal(&encode_wal(&entry)).unwrap(), entry);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [
            &[][..],
            &[1][..],
            &[1, 0xff, 0xff][..],
            &[9, 1, 2][..],
            &[1, 1, 200, 3, 1][..],
        ] {
            assert!(QueryStats::decode(bytes).is_err());
            assert!(InstanceQueries::decode(bytes).is_err());
            assert!(decode_chunk::<QueryStats>(bytes).is_err());
            assert!(decode_wal(bytes).is_err());
        }
    }
}
