//! How numbers read on the page.

/// A latency in milliseconds with precision that fits its size:
/// `0.042 ms`, `3.10 ms`, `250 ms`, `1.25 s`.
pub(crate) fn duration_ms(ms: f64) -> String {
    if !ms.is_finite() {
        return "–".to_owned();
    }
    if ms >= 1_000.0 {
        format!("{:.2} s", ms / 1_000.0)
    } else if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 1.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.3} ms")
    }
}

/// A count with thousands separators: `1,234,567`.
pub(crate) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration_ms(0.0421), "0.042 ms");
        assert_eq!(duration_ms(3.1), "3.10 ms");
        assert_eq!(duration_ms(250.4), "250 ms");
        assert_eq!(duration_ms(1_250.0), "1.25 s");
        assert_eq!(duration_ms(f64::NAN), "–");
    }

    #[test]
    fn counts_get_separators() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
    }
}
