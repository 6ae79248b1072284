//! Trend arrows: ↗ ↘ → with the change in percent, versus the previous
//! period or the previous 5-minute windows.

/// Changes smaller than this (relative) read as flat.
const FLAT: f64 = 0.10;

/// A trend as shown next to a number.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Trend {
    /// ↗, ↘ or →.
    pub arrow: &'static str,
    /// `+23 %`, `−40 %`, `new`, or empty when flat.
    pub change: String,
    /// `worse`, `better` or `flat`, for colour.
    pub class: &'static str,
    /// Relative change (0.23 for +23 %), `None` when there was nothing before.
    pub ratio: Option<f64>,
}

impl Trend {
    /// The arrow and change as one string: `↗ +23 %`.
    pub fn text(&self) -> String {
        if self.change.is_empty() {
            self.arrow.to_owned()
        } else {
            format!("{} {}", self.arrow, self.change)
        }
    }
}

/// How `current` compares with `previous`; `higher_is_worse` picks the colour.
pub(crate) fn compare(current: f64, previous: f64, higher_is_worse: bool) -> Trend {
    let flat = |ratio| Trend {
        arrow: "→",
        change: String::new(),
        class: "flat",
        ratio,
    };
    if !current.is_finite() || !previous.is_finite() || (previous <= 0.0 && current <= 0.0) {
        return flat(Some(0.0));
    }
    let worse = |up: bool| if up == higher_is_worse { "worse" } else { "better" };
    if previous <= 0.0 {
        return Trend {
            arrow: "↗",
            change: "new".to_owned(),
            class: worse(true),
            ratio: None,
        };
    }
    let ratio = (current - previous) / previous;
    if ratio.abs() < FLAT {
        return flat(Some(ratio));
    }
    let up = ratio > 0.0;
    Trend {
        arrow: if up { "↗" } else { "↘" },
        change: format!("{}{:.0} %", if up { "+" } else { "−" }, ratio.abs() * 100.0),
        class: worse(up),
        ratio: Some(ratio),
    }
}

/// The latest of a run of windows against the mean of the ones before it
/// (5-minute windows of a pool, oldest first); flat without history.
pub(crate) fn latest_window(values: &[f64], higher_is_worse: bool) -> Trend {
    match values.split_last() {
        Some((last, before)) if !before.is_empty() => {
            let mean = before.iter().sum::<f64>() / before.len() as f64;
            compare(*last, mean, higher_is_worse)
        }
        _ => compare(0.0, 0.0, higher_is_worse),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrows_follow_the_change_and_small_changes_are_flat() {
        let up = compare(123.0, 100.0, true);
        assert_eq!((up.text().as_str(), up.class), ("↗ +23 %", "worse"));
        let down = compare(60.0, 100.0, true);
        assert_eq!((down.text().as_str(), down.class), ("↘ −40 %", "better"));
        assert_eq!(compare(105.0, 100.0, true).text(), "→");
        assert_eq!(compare(5.0, 0.0, true).text(), "↗ new");
        assert_eq!(compare(0.0, 0.0, true).text(), "→");
        assert_eq!(compare(50.0, 100.0, false).class, "worse");
        assert_eq!(latest_window(&[0.5, 0.5, 0.9], true).arrow, "↗");
        assert_eq!(latest_window(&[0.5], true).arrow, "→");
    }
}
