//! Annotation templates: `{{ value }}`, `{{ threshold }}`, `{{ window }}`,
//! `{{ for }}`, `{{ percentile }}`, `{{ rule }}`, `{{ severity }}` and
//! `{{ labels.NAME }}`, replaced when a notification is sent. Values are
//! written in the unit of the rule's kind (`93 %`, `1250 ms`).

use super::durations;
use super::rules::{Labels, Rule};

const VARIABLES: [&str; 7] = ["value", "threshold", "window", "for", "percentile", "rule", "severity"];

/// Splits `text` into literal parts and variable names.
fn parts(text: &str) -> Result<Vec<Part<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push(Part::Text(&rest[..open]));
        let after = &rest[open + 2..];
        let close = after.find("}}").ok_or_else(|| format!("unclosed {{{{ in {text:?}"))?;
        out.push(Part::Variable(after[..close].trim()));
        rest = &after[close + 2..];
    }
    out.push(Part::Text(rest));
    Ok(out)
}

enum Part<'a> {
    Text(&'a str),
    Variable(&'a str),
}

fn known(name: &str) -> bool {
    VARIABLES.contains(&name)
        || name
            .strip_prefix("labels.")
            .is_some_and(|label| !label.is_empty() && super::rules::valid_label_name(label))
}

/// Checks that every variable of `text` is known.
pub fn check(text: &str) -> Result<(), String> {
    for part in parts(text)? {
        if let Part::Variable(name) = part
            && !known(name)
        {
            return Err(format!(
                "unknown variable {{{{ {name} }}}}: use {}, or labels.NAME",
                VARIABLES.join(", ")
            ));
        }
    }
    Ok(())
}

/// Renders `text` for one alert of `rule` with all its `labels` and the
/// measured `value`. Unknown variables (not possible after [`check`]) and
/// missing labels render empty.
pub fn render(text: &str, rule: &Rule, labels: &Labels, value: f64) -> String {
    let Ok(parts) = parts(text) else {
        return text.to_owned();
    };
    let mut out = String::with_capacity(text.len() + 16);
    for part in parts {
        match part {
            Part::Text(t) => out.push_str(t),
            Part::Variable(name) => out.push_str(&match name {
                "value" => rule.kind.format_value(value),
                "threshold" => rule.kind.format_value(rule.threshold),
                "window" => durations::format(rule.window),
                "for" => durations::format(rule.for_),
                "percentile" => rule.percentile.map(|p| p.to_string()).unwrap_or_default(),
                "rule" => rule.name.clone(),
                "severity" => rule.severity.to_string(),
                other => other
                    .strip_prefix("labels.")
                    .and_then(|l| labels.get(l))
                    .cloned()
                    .unwrap_or_default(),
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::defaults;

    #[test]
    fn annotations_carry_the_measured_value_in_the_unit_of_the_rule() {
        let rule = defaults().remove(0).input.validate(|_| true).unwrap();
        let labels = Labels::from([
            ("pool".to_owned(), "main".to_owned()),
            ("service".to_owned(), "shop".to_owned()),
        ]);
        let text =
            "{{rule}}: {{ labels.pool }} of {{ labels.service }} at {{ value }} (>= {{ threshold }} for {{ for }})";
        assert_eq!(
            render(text, &rule, &labels, 1.0),
            "Pool exhaustion: main of shop at 100 % (>= 90 % for 1m)"
        );
        assert_eq!(render("{{ labels.missing }}!", &rule, &labels, 1.0), "!");
    }

    #[test]
    fn unknown_variables_and_unclosed_braces_are_refused() {
        assert!(check("{{ value }} and {{ labels.pool }}").is_ok());
        assert!(check("{{ valu }}").unwrap_err().contains("unknown variable"));
        assert!(check("{{ labels. }}").is_err());
        assert!(check("{{ value").unwrap_err().contains("unclosed"));
    }
}
