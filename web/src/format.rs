//! How numbers read on the page (public so tests can check a page shows
//! exactly the API's numbers).

/// A latency in milliseconds with precision that fits its size:
/// `0.042 ms`, `3.10 ms`, `250 ms`, `1.25 s`.
pub fn duration_ms(ms: f64) -> String {
    if !ms.is_finite() {
        return "–".to_owned();
    }
    if ms == 0.0 {
        // Also -0.0, the sum of nothing.
        return "0 ms".to_owned();
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
pub fn count(n: u64) -> String {
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

/// A share (0..1) as a percentage: `87.5 %`, `0.12 %`, `100 %`.
pub fn percent(share: f64) -> String {
    let p = share * 100.0;
    if !p.is_finite() {
        "–".to_owned()
    } else if p == 0.0 || p == 100.0 {
        format!("{p:.0} %")
    } else if p < 1.0 {
        format!("{p:.2} %")
    } else {
        format!("{p:.1} %")
    }
}

/// Events per second over `length_ms`: `12.5/s`, `0.03/s`.
pub fn rate(events: u64, length_ms: i64) -> String {
    if length_ms <= 0 {
        return "–".to_owned();
    }
    let per_second = events as f64 * 1_000.0 / length_ms as f64;
    if events == 0 {
        "0/s".to_owned()
    } else if per_second >= 10.0 {
        format!("{per_second:.0}/s")
    } else if per_second >= 0.1 {
        format!("{per_second:.1}/s")
    } else if per_second * 60.0 >= 0.1 {
        format!("{:.1}/min", per_second * 60.0)
    } else {
        format!("{:.1}/h", per_second * 3_600.0)
    }
}

/// A UTC time to the second: `2026-11-27 10:00:05`.
pub fn timestamp(ms: i64) -> String {
    use chrono::TimeZone;
    chrono::Utc
        .timestamp_millis_opt(ms)
        .single()
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "–".to_owned())
}

/// How long ago `ms` was: `12 s ago`, `5 min ago`, `3 h ago`, `2 d ago`.
pub fn ago(now_ms: i64, ms: i64) -> String {
    if ms <= 0 {
        return "never".to_owned();
    }
    let s = (now_ms - ms).max(0) / 1_000;
    match s {
        0..60 => format!("{s} s ago"),
        60..3_600 => format!("{} min ago", s / 60),
        3_600..86_400 => format!("{} h ago", s / 3_600),
        _ => format!("{} d ago", s / 86_400),
    }
}

/// A count and a noun, plural when it is not one: `1 pool`, `3 pools`.
pub fn plural(n: u64, noun: &str) -> String {
    format!("{} {noun}{}", count(n), if n == 1 { "" } else { "s" })
}

/// A size in bytes: `512 B`, `1.5 MiB`, `2.0 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1_024.0 && unit < UNITS.len() - 1 {
        value /= 1_024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A retention length in seconds: `2 days`, `6 hours`, `90 minutes`.
pub fn span(seconds: u64) -> String {
    if seconds >= 86_400 && seconds.is_multiple_of(86_400) {
        plural(seconds / 86_400, "day")
    } else if seconds >= 3_600 && seconds.is_multiple_of(3_600) {
        plural(seconds / 3_600, "hour")
    } else if seconds >= 60 && seconds.is_multiple_of(60) {
        plural(seconds / 60, "minute")
    } else {
        plural(seconds, "second")
    }
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
        assert_eq!(duration_ms(-0.0), "0 ms");
    }

    #[test]
    fn counts_get_separators() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
    }

    #[test]
    fn shares_rates_times_and_sizes_read_naturally() {
        assert_eq!(percent(0.875), "87.5 %");
        assert_eq!(percent(0.0012), "0.12 %");
        assert_eq!(percent(1.0), "100 %");
        assert_eq!(percent(0.0), "0 %");
        assert_eq!(rate(600, 60_000), "10/s");
        assert_eq!(rate(3, 60_000), "3.0/min");
        assert_eq!(rate(0, 60_000), "0/s");
        assert_eq!(rate(1, 3_600_000), "1.0/h");
        assert_eq!(timestamp(1_700_000_000_000), "2023-11-14 22:13:20");
        assert_eq!(ago(100_000, 88_000), "12 s ago");
        assert_eq!(ago(10_000_000, 0), "never");
        assert_eq!(bytes(1_536 * 1_024), "1.5 MiB");
        assert_eq!(span(172_800), "2 days");
        assert_eq!(span(5_400), "90 minutes");
        assert_eq!(plural(1, "pool"), "1 pool");
        assert_eq!(plural(1_200, "pool"), "1,200 pools");
    }
}
