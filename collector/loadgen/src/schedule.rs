//! Which windows a simulated instance reports, and when.

use std::time::Duration;

use querypulse_proto::Window;

/// Where the whole run is: the coordinator moves every instance forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Producing windows.
    Running,
    /// No new windows; deliver what is pending.
    Draining,
    /// Give up on whatever is still pending.
    Stop,
}

/// The windows of one instance, in time order.
#[derive(Debug, Clone)]
pub(crate) enum WindowSource {
    /// Live: the window `[s, s + interval)` is due at `s + interval + offset`
    /// on the wall clock (agents flush at different moments of an interval).
    Live {
        interval_ms: i64,
        offset_ms: i64,
        next_start_ms: i64,
    },
    /// Backfill: every window from `next_start_ms` up to `end_ms` is due now.
    Backfill {
        interval_ms: i64,
        next_start_ms: i64,
        end_ms: i64,
    },
}

impl WindowSource {
    /// Live windows from the one that opens after `now_ms`.
    pub(crate) fn live(interval: Duration, offset: Duration, now_ms: i64) -> WindowSource {
        let interval_ms = interval.as_millis() as i64;
        let offset_ms = offset.as_millis() as i64;
        WindowSource::Live {
            interval_ms,
            offset_ms,
            next_start_ms: Window::containing(now_ms - offset_ms, interval_ms as u32).end_ms(),
        }
    }

    /// Every window that closed within `span` before `now_ms`.
    pub(crate) fn backfill(interval: Duration, span: Duration, now_ms: i64) -> WindowSource {
        let interval_ms = interval.as_millis() as i64;
        let end_ms = Window::containing(now_ms, interval_ms as u32).start_ms;
        let first = Window::containing(end_ms - span.as_millis() as i64, interval_ms as u32).start_ms;
        WindowSource::Backfill {
            interval_ms,
            next_start_ms: first,
            end_ms,
        }
    }

    /// Number of windows a backfill covers in total (0 for live).
    pub(crate) fn backfill_windows(&self) -> u64 {
        match self {
            WindowSource::Backfill {
                interval_ms,
                next_start_ms,
                end_ms,
            } => ((end_ms - next_start_ms) / interval_ms).max(0) as u64,
            WindowSource::Live { .. } => 0,
        }
    }

    /// The start of the next window if it is due at `now_ms`.
    pub(crate) fn take_due(&mut self, now_ms: i64) -> Option<i64> {
        match self {
            WindowSource::Live {
                interval_ms,
                offset_ms,
                next_start_ms,
            } => {
                let start = *next_start_ms;
                (start + *interval_ms + *offset_ms <= now_ms).then(|| {
                    *next_start_ms += *interval_ms;
                    start
                })
            }
            WindowSource::Backfill {
                interval_ms,
                next_start_ms,
                end_ms,
            } => {
                let start = *next_start_ms;
                (start + *interval_ms <= *end_ms).then(|| {
                    *next_start_ms += *interval_ms;
                    start
                })
            }
        }
    }

    /// Milliseconds from `now_ms` until the next window is due; `None` when
    /// none will ever be (a finished backfill).
    pub(crate) fn wait_ms(&self, now_ms: i64) -> Option<u64> {
        match self {
            WindowSource::Live {
                interval_ms,
                offset_ms,
                next_start_ms,
            } => Some((next_start_ms + interval_ms + offset_ms - now_ms).max(0) as u64),
            WindowSource::Backfill {
                interval_ms,
                next_start_ms,
                end_ms,
            } => (next_start_ms + interval_ms <= *end_ms).then_some(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_windows_are_due_after_they_close_plus_the_offset() {
        let mut source = WindowSource::live(Duration::from_secs(10), Duration::from_secs(3), 25_000);
        // 25 s minus the 3 s offset is in [20, 30): the first window is [30, 40), due at 43.
        assert_eq!(source.wait_ms(25_000), Some(18_000));
        assert_eq!(source.take_due(42_999), None);
        assert_eq!(source.take_due(43_000), Some(30_000));
        assert_eq!(source.take_due(60_000), Some(40_000), "late ticks catch up");
        assert_eq!(source.take_due(60_000), None);
    }

    #[test]
    fn a_backfill_covers_the_span_up_to_the_last_closed_window() {
        let mut source = WindowSource::backfill(Duration::from_secs(10), Duration::from_secs(60), 1_000_005_000);
        assert_eq!(source.backfill_windows(), 6);
        let starts: Vec<i64> = std::iter::from_fn(|| source.take_due(0)).collect();
        assert_eq!(starts.first(), Some(&999_940_000));
        assert_eq!(starts.last(), Some(&999_990_000));
        assert_eq!(starts.len(), 6);
        assert_eq!(source.wait_ms(0), None);
    }
}
