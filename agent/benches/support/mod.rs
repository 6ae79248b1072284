//! Inputs shared by the agent's benchmarks.

use std::sync::LazyLock;
use std::time::Duration;

/// 1,024 latencies, log-uniform between 100 µs and 50 ms, from a fixed
/// xorshift sequence: histograms fill many buckets, as in production, and
/// every run and every contender sees the same values.
static LATENCIES: LazyLock<Vec<Duration>> = LazyLock::new(|| {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let unit = (x >> 11) as f64 / (1u64 << 53) as f64;
            Duration::from_secs_f64(100e-6 * 500f64.powf(unit))
        })
        .collect()
});

/// The `i`-th latency of the cycle.
pub fn latency(i: u64) -> Duration {
    LATENCIES[(i & 1023) as usize]
}
