//! Folding several key-ordered sources of one partition into one: the runs
//! of window deltas and the sealed or database values add up, key by key.
//!
//! Sealing folds everything into chunks (one compressed value per series
//! and chunk span, the form that takes the fewest bytes); merging runs folds
//! window deltas into single windows. Either way the output has each key
//! once, in order, as a segment requires.

use std::collections::{BTreeMap, VecDeque};
use std::iter::Peekable;

use querypulse_domain::{HealthCheckStats, QueryStats};

use super::StoreError;
use super::codec::{InstanceQueries, TimedPool, WindowValue, decode_chunk, encode_chunk, key};
use super::partition::{Entry, SeriesKind, Tier, floor};

type Source<'a> = Box<dyn Iterator<Item = Result<Entry, StoreError>> + 'a>;

/// Merges key-ordered sources into one key-ordered stream; equal keys come
/// one after the other, the earlier source first.
pub(crate) struct MergeAll<'a> {
    sources: Vec<Peekable<Source<'a>>>,
}

impl<'a> MergeAll<'a> {
    pub(crate) fn new(sources: Vec<Source<'a>>) -> Self {
        MergeAll {
            sources: sources.into_iter().map(Iterator::peekable).collect(),
        }
    }
}

impl Iterator for MergeAll<'_> {
    type Item = Result<Entry, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut best: Option<(usize, sled::IVec)> = None;
        for i in 0..self.sources.len() {
            match self.sources[i].peek() {
                None => {}
                Some(Err(_)) => return self.sources[i].next(),
                Some(Ok((k, _))) if best.as_ref().is_none_or(|(_, bk)| k < bk) => {
                    best = Some((i, k.clone()));
                }
                Some(Ok(_)) => {}
            }
        }
        self.sources[best?.0].next()
    }
}

/// How windows of one series are written out.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Every window of a chunk span as one chunk (sealing).
    Chunks,
    /// Each window once, as a single (merging runs).
    Singles,
}

/// The folded stream: a leading last-applied-entry record, then every key
/// once. Pending-compaction markers are dropped (everything is folded).
pub(crate) struct Fold<'a> {
    tier: Tier,
    shape: Shape,
    input: Peekable<MergeAll<'a>>,
    kind_of: &'a dyn Fn(u32) -> Option<SeriesKind>,
    applied: Option<u64>,
    out: VecDeque<Result<Entry, StoreError>>,
}

impl<'a> Fold<'a> {
    /// Folds `sources` into chunks; `applied` becomes the output's last
    /// applied log entry.
    pub(crate) fn new(
        tier: Tier,
        sources: Vec<Source<'a>>,
        kind_of: &'a dyn Fn(u32) -> Option<SeriesKind>,
        applied: u64,
    ) -> Self {
        Fold {
            tier,
            shape: Shape::Chunks,
            input: MergeAll::new(sources).peekable(),
            kind_of,
            applied: Some(applied),
            out: VecDeque::new(),
        }
    }

    /// Folds run deltas into single windows, without a last-applied record
    /// (a run's file name carries it).
    pub(crate) fn singles(
        tier: Tier,
        sources: Vec<Source<'a>>,
        kind_of: &'a dyn Fn(u32) -> Option<SeriesKind>,
    ) -> Self {
        Fold {
            tier,
            shape: Shape::Singles,
            input: MergeAll::new(sources).peekable(),
            kind_of,
            applied: None,
            out: VecDeque::new(),
        }
    }

    /// Takes every following entry whose key satisfies `same`.
    fn take_while_key(&mut self, same: impl Fn(&[u8]) -> bool) -> Result<Vec<Entry>, StoreError> {
        let mut group = Vec::new();
        loop {
            match self.input.peek() {
                Some(Ok((k, _))) if same(k) => group.push(self.input.next().expect("peeked")?),
                Some(Err(_)) => {
                    self.input.next().expect("peeked")?;
                }
                _ => return Ok(group),
            }
        }
    }

    fn fold_windows(&mut self, first: Entry, series: u32, at: i64) -> Result<(), StoreError> {
        let kind = (self.kind_of)(series);
        let chunked = self.shape == Shape::Chunks
            && matches!(kind, Some(SeriesKind::Query | SeriesKind::Pool | SeriesKind::Health));
        let mut group = if chunked {
            let chunk_start = floor(at, self.tier.chunk_ms());
            let chunk_ms = self.tier.chunk_ms();
            let mut group = vec![first];
            group.extend(self.take_while_key(|k| {
                key::parse_window(k).is_some_and(|(s, t, _)| s == series && floor(t, chunk_ms) == chunk_start)
            })?);
            group
        } else {
            let mut group = vec![first.clone()];
            group.extend(self.take_while_key(|k| k == first.0.as_ref())?);
            group
        };
        if !chunked && group.len() == 1 {
            // One value of its key: nothing to add it to.
            self.out.push_back(Ok(group.swap_remove(0)));
            return Ok(());
        }
        let chunk_ms = chunked.then_some(self.tier.chunk_ms());
        let folded = match kind {
            Some(SeriesKind::Query) => fold::<QueryStats>(&group, chunk_ms)?,
            Some(SeriesKind::Pool) => fold::<TimedPool>(&group, chunk_ms)?,
            Some(SeriesKind::Health) => fold::<HealthCheckStats>(&group, chunk_ms)?,
            Some(SeriesKind::Instances) => fold::<InstanceQueries>(&group, None)?,
            // A series the registry does not know: nothing reads it.
            None => vec![group.swap_remove(0)],
        };
        self.out.extend(folded.into_iter().map(Ok));
        Ok(())
    }

    fn step(&mut self) -> Result<(), StoreError> {
        let Some(next) = self.input.next() else {
            return Ok(());
        };
        let (k, v) = next?;
        if k.as_ref() == key::APPLIED_LOG || k.first() == Some(&b'c') {
            return Ok(());
        }
        if let Some((series, at, _)) = key::parse_window(&k) {
            return self.fold_windows((k, v), series, at);
        }
        // Anything else (slow samples) is unique: the first copy stays.
        let same = k.clone();
        self.take_while_key(|other| other == same.as_ref())?;
        self.out.push_back(Ok((k, v)));
        Ok(())
    }
}

/// Folds the entries of one group (one key, or one series' chunk span) of a
/// value type into one chunk (`chunk_ms` given) or singles.
fn fold<V: WindowValue>(group: &[Entry], chunk_ms: Option<i64>) -> Result<Vec<Entry>, StoreError> {
    let mut series = 0;
    let mut windows: BTreeMap<i64, V> = BTreeMap::new();
    let mut add = |at: i64, value: V| match windows.get_mut(&at) {
        Some(existing) => existing.merge(&value),
        None => {
            windows.insert(at, value);
        }
    };
    // Chunks first: they were written before any single beside them (the
    // single of a chunk's first window sorts before the chunk itself).
    // Singles of one key come in the order their sources were written.
    for chunks in [true, false] {
        for (k, v) in group {
            let Some((s, at, kind)) = key::parse_window(k) else {
                continue;
            };
            series = s;
            match (chunks, kind == key::CHUNK) {
                (true, true) => {
                    for (t, value) in decode_chunk::<V>(v)? {
                        add(t, value);
                    }
                }
                (false, false) => add(at, V::decode(v)?),
                _ => {}
            }
        }
    }
    if let Some(chunk_ms) = chunk_ms {
        let Some(&first) = windows.keys().next() else {
            return Ok(Vec::new());
        };
        let chunk_start = floor(first, chunk_ms);
        let windows: Vec<(i64, V)> = windows.into_iter().collect();
        let k = key::window(series, chunk_start, key::CHUNK);
        return Ok(vec![(k[..].into(), encode_chunk(&windows).into())]);
    }
    Ok(windows
        .into_iter()
        .map(|(at, value)| (key::window(series, at, key::SINGLE)[..].into(), value.encode().into()))
        .collect())
}

impl Iterator for Fold<'_> {
    type Item = Result<Entry, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(applied) = self.applied.take() {
            return Some(Ok((key::APPLIED_LOG.into(), applied.to_be_bytes()[..].into())));
        }
        loop {
            if let Some(entry) = self.out.pop_front() {
                return Some(entry);
            }
            self.input.peek()?;
            if let Err(error) = self.step() {
                return Some(Err(error));
            }
        }
    }
}
