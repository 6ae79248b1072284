//! The one clock: the system's, or a manual one for tests.
//!
//! Everything that decides by the time — which windows are too old or in the
//! future, which log entries a restart replays, when a chunk is compacted or
//! a partition sealed — asks the [`Clock`] it was given, never the system
//! directly. Tests hand the store a manual clock, so a test written today
//! means the same next year.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Milliseconds since the Unix epoch, from the system or set by hand.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system's UTC clock.
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// A clock that stands at `now_ms` until [`Clock::set`] or
    /// [`Clock::advance`] moves it; clones share the time.
    pub fn manual(now_ms: i64) -> Clock {
        Clock {
            manual: Some(Arc::new(AtomicI64::new(now_ms))),
        }
    }

    /// The time now.
    pub fn now_ms(&self) -> i64 {
        match &self.manual {
            Some(at) => at.load(Ordering::Acquire),
            None => now_ms(),
        }
    }

    /// Moves a manual clock to `now_ms`; a system clock cannot be moved, so
    /// this is ignored there.
    pub fn set(&self, now_ms: i64) {
        if let Some(at) = &self.manual {
            at.store(now_ms, Ordering::Release);
        }
    }

    /// Moves a manual clock forward by `ms`.
    pub fn advance(&self, ms: i64) {
        if let Some(at) = &self.manual {
            at.fetch_add(ms, Ordering::AcqRel);
        }
    }
}

/// Milliseconds since the Unix epoch by the system clock. Code that decides
/// by the time takes a [`Clock`] instead, so tests can set it.
pub fn now_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

/// `ms` (Unix epoch milliseconds) as RFC 3339 in UTC with milliseconds
/// (`2026-11-27T10:00:00.000Z`), as the API, notifications and messages
/// write times; empty when out of range.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_clones_share_it() {
        let clock = Clock::manual(1_000);
        let copy = clock.clone();
        assert_eq!(copy.now_ms(), 1_000);
        clock.advance(500);
        assert_eq!(copy.now_ms(), 1_500);
        copy.set(7);
        assert_eq!(clock.now_ms(), 7);
    }

    #[test]
    fn the_system_clock_reads_the_current_time() {
        let before = now_ms();
        let now = Clock::system().now_ms();
        assert!(now >= before && now - before < 60_000);
    }
}
