//! The normalizer against `corpus/normalize.tsv`: statements in every dialect
//! with the normalized text each must give, one per line.

use querypulse_agent::fingerprint::{Dialect, normalize_text};

const CORPUS: &str = include_str!("corpus/normalize.tsv");
const DIALECTS: [Dialect; 4] = [Dialect::Generic, Dialect::Postgres, Dialect::Mysql, Dialect::Sqlite];

#[derive(Debug)]
struct Case {
    line: usize,
    dialects: Vec<Dialect>,
    sql: String,
    expected: String,
}

/// `␤` and `␉` in the file stand for a newline and a tab.
fn unescape(field: &str) -> String {
    field.replace('␤', "\n").replace('␉', "\t")
}

#[track_caller]
fn dialects(name: &str, line: usize) -> Vec<Dialect> {
    match name {
        "*" => DIALECTS.to_vec(),
        "generic" => vec![Dialect::Generic],
        "postgres" => vec![Dialect::Postgres],
        "mysql" => vec![Dialect::Mysql],
        "sqlite" => vec![Dialect::Sqlite],
        other => panic!("line {line}: unknown dialect {other:?}"),
    }
}

fn cases() -> Vec<Case> {
    CORPUS
        .lines()
        .enumerate()
        .map(|(i, text)| (i + 1, text))
        .filter(|(_, text)| !text.is_empty() && !text.starts_with("# "))
        .map(|(line, text)| {
            let fields: Vec<&str> = text.split('\t').collect();
            let [dialect, sql, expected] = fields[..] else {
                panic!("line {line}: want dialect, statement and expected text separated by tabs: {text:?}");
            };
            Case {
                line,
                dialects: dialects(dialect, line),
                sql: unescape(sql),
                expected: unescape(expected),
            }
        })
        .collect()
}

#[test]
fn every_statement_in_the_corpus_normalizes_as_expected() {
    let mut failures = Vec::new();
    for case in cases() {
        for &dialect in &case.dialects {
            let actual = normalize_text(&case.sql, dialect);
            if actual != case.expected {
                failures.push(format!(
                    "line {} ({dialect:?}): {:?}\n  expected {:?}\n  actual   {:?}",
                    case.line, case.sql, case.expected, actual
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn expected_texts_are_already_normalized() {
    for case in cases() {
        for &dialect in &case.dialects {
            assert_eq!(
                normalize_text(&case.expected, dialect),
                case.expected,
                "line {} ({dialect:?}): normalizing the expected text changes it",
                case.line
            );
        }
    }
}

#[test]
fn the_corpus_covers_every_dialect_with_at_least_150_cases() {
    let cases = cases();
    assert!(cases.len() >= 150, "only {} cases", cases.len());
    for dialect in DIALECTS {
        let own = cases.iter().filter(|c| c.dialects == [dialect]).count();
        assert!(own >= 20, "only {own} cases for {dialect:?} alone");
    }
}
