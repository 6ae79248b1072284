//! Recent answers to the expensive reads, served while a fresh one is
//! computed (stale-while-revalidate).
//!
//! Summarizing 1,000 fingerprints over a day merges tens of thousands of
//! stored windows; over a week, hundreds of thousands. A dashboard left open
//! (or several) asks the same question every few seconds. So an answer is
//! kept per key; a request within `ttl` of it gets it as is, a later one gets
//! it too while one background task computes the next. Numbers are thus at
//! most `ttl` plus one computation old, and pages say how old. Keys name a
//! preset range by its name ("last 24 h"), so the answer for "the last 24 h"
//! computed a few seconds ago serves "the last 24 h" now.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::SourceError;
use crate::pages::PageError;

/// How long an answer is served without recomputing it: about one agent
/// interval, the rate at which new data arrives anyway.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// Answers kept at most; the least recently computed go first.
const MAX_ENTRIES: usize = 4_096;

struct Entry {
    value: Arc<dyn std::any::Any + Send + Sync>,
    computed: Instant,
    refreshing: bool,
}

/// The cache. `ttl` zero turns it off (every read computes).
pub(crate) struct Cache {
    ttl: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

/// An answer and when it was computed.
#[derive(Debug)]
pub(crate) struct Cached<V> {
    pub value: Arc<V>,
    pub computed: Instant,
}

impl Cache {
    pub fn new(ttl: Duration) -> Cache {
        Cache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn store(&self, key: String, value: Arc<dyn std::any::Any + Send + Sync>, computed: Instant) {
        let mut entries = self.entries();
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&key) {
            let oldest = entries.iter().min_by_key(|(_, e)| e.computed).map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                entries.remove(&oldest);
            }
        }
        entries.insert(
            key,
            Entry {
                value,
                computed,
                refreshing: false,
            },
        );
    }

    /// The answer for `key`: cached, or computed by `compute` (a blocking
    /// read, run off the async executor).
    pub async fn get<V: Send + Sync + 'static>(
        self: &Arc<Self>,
        key: String,
        compute: impl Fn() -> Result<V, SourceError> + Send + Sync + 'static,
    ) -> Result<Cached<V>, PageError> {
        if !self.ttl.is_zero() {
            let mut entries = self.entries();
            if let Some(entry) = entries.get_mut(&key)
                && let Ok(value) = entry.value.clone().downcast::<V>()
            {
                let cached = Cached {
                    value,
                    computed: entry.computed,
                };
                if entry.computed.elapsed() >= self.ttl && !entry.refreshing {
                    entry.refreshing = true;
                    let cache = self.clone();
                    tokio::task::spawn_blocking(move || match compute() {
                        Ok(value) => cache.store(key, Arc::new(value), Instant::now()),
                        Err(error) => {
                            tracing::warn!(%error, "refreshing a dashboard answer failed");
                            if let Some(entry) = cache.entries().get_mut(&key) {
                                entry.refreshing = false;
                            }
                        }
                    });
                }
                return Ok(cached);
            }
        }
        let value = Arc::new(crate::pages::read(compute).await?);
        let computed = Instant::now();
        if !self.ttl.is_zero() {
            self.store(key, value.clone(), computed);
        }
        Ok(Cached { value, computed })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[tokio::test]
    async fn fresh_answers_are_reused_and_stale_ones_served_while_refreshed() {
        let cache = Arc::new(Cache::new(Duration::from_millis(50)));
        let runs = Arc::new(AtomicU64::new(0));
        let read = |runs: Arc<AtomicU64>| move || Ok(runs.fetch_add(1, Ordering::SeqCst) + 1);
        assert_eq!(*cache.get("k".into(), read(runs.clone())).await.unwrap().value, 1);
        assert_eq!(
            *cache.get("k".into(), read(runs.clone())).await.unwrap().value,
            1,
            "fresh"
        );
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(
            *cache.get("k".into(), read(runs.clone())).await.unwrap().value,
            1,
            "stale, served"
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let now = *cache.get("k".into(), read(runs.clone())).await.unwrap().value;
            if now == 2 {
                break;
            }
            assert!(Instant::now() < deadline, "the refresh lands");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let off = Arc::new(Cache::new(Duration::ZERO));
        let counted = Arc::new(AtomicU64::new(0));
        off.get("k".into(), read(counted.clone())).await.unwrap();
        off.get("k".into(), read(counted.clone())).await.unwrap();
        assert_eq!(counted.load(Ordering::SeqCst), 2, "no cache without a ttl");
    }
}
