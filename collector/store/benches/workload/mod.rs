//! The synthetic statements the benches write.

use querypulse_domain::{Fingerprint, FingerprintText, QueryStats};

/// `count` statements, the `i`th written by `text(i)`, with their fingerprints.
pub fn texts(count: usize, text: impl Fn(usize) -> String) -> Vec<FingerprintText> {
    (0..count)
        .map(|i| {
            let text = text(i);
            FingerprintText {
                fingerprint: Fingerprint::of_normalized(&text),
                text,
            }
        })
        .collect()
}

/// One window of one instance: every fingerprint with a few dozen calls
/// spread log-normally around a per-fingerprint median; with `failing`,
/// some calls of every 17th fingerprint fail (SQLSTATE 40001).
pub fn queries(seq: u64, instance: usize, texts: &[FingerprintText], failing: bool) -> Vec<QueryStats> {
    let mut state = (seq as u32).wrapping_mul(2_654_435_761) ^ instance as u32;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        f64::from(state) / f64::from(u32::MAX)
    };
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let median = 200.0 * (1.0 + (i % 50) as f64);
            let mut stats = QueryStats::new(text.fingerprint);
            for call in 0..(10 + (i % 40)) {
                let spread = (next() - 0.5) * 3.0;
                let error = (failing && i % 17 == 0 && call % 9 == 0).then_some("40001");
                stats.record((median * spread.exp()) as u64, 1, error);
            }
            stats
        })
        .collect()
}
