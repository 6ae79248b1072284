//! `querypulse fingerprint` run as a user runs it: the real binary with
//! statements piped to its stdin, checked against `fingerprint_pairs.tsv`
//! (pairs of statements that must or must not share a fingerprint).

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

const PAIRS: &str = include_str!("fingerprint_pairs.tsv");

struct Pair<'a> {
    line: usize,
    same: bool,
    statements: [&'a str; 2],
}

/// The pairs of the corpus by dialect name (the value of `--dialect`).
fn pairs() -> BTreeMap<&'static str, Vec<Pair<'static>>> {
    let mut by_dialect: BTreeMap<&str, Vec<Pair<'_>>> = BTreeMap::new();
    for (i, text) in PAIRS.lines().enumerate() {
        if text.is_empty() || text.starts_with("# ") {
            continue;
        }
        let fields: Vec<&str> = text.split('\t').collect();
        let [dialect, expectation, a, b] = fields[..] else {
            panic!(
                "line {}: want dialect, same|different and two statements: {text:?}",
                i + 1
            );
        };
        let same = match expectation {
            "same" => true,
            "different" => false,
            other => panic!("line {}: {other:?} is neither same nor different", i + 1),
        };
        by_dialect.entry(dialect).or_default().push(Pair {
            line: i + 1,
            same,
            statements: [a, b],
        });
    }
    by_dialect
}

/// Runs `querypulse fingerprint` with `args`, `stdin` piped in, and returns
/// its stdout; fails the test if the command fails.
#[track_caller]
fn querypulse_fingerprint(args: &[&str], stdin: &[u8]) -> String {
    let output = run(args, stdin);
    assert!(
        output.status.success(),
        "querypulse fingerprint {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

fn run(args: &[&str], stdin: &[u8]) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_querypulse"))
        .arg("fingerprint")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    // Write from another thread so a full stdout pipe cannot stall the input.
    let mut input = child.stdin.take().expect("piped stdin");
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || input.write_all(&stdin));
    let output = child.wait_with_output().expect("the binary finishes");
    match writer.join().expect("writer thread") {
        // A command that refuses its arguments need not read its input.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe && !output.status.success() => {}
        written => written.expect("stdin accepts the statements"),
    }
    output
}

/// `(fingerprint, text)` of each output line, checking the line's form.
#[track_caller]
fn parse(stdout: &str) -> Vec<(&str, &str)> {
    stdout
        .lines()
        .map(|line| {
            let (fingerprint, text) = line.split_once('\t').unwrap_or_else(|| panic!("no tab in {line:?}"));
            assert!(
                fingerprint.len() == 16
                    && fingerprint
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "not 16 lowercase hex digits: {line:?}"
            );
            (fingerprint, text)
        })
        .collect()
}

#[test]
fn statement_pairs_share_a_fingerprint_exactly_when_they_must() {
    let mut failures = Vec::new();
    for (dialect, pairs) in pairs() {
        let stdin: String = pairs
            .iter()
            .flat_map(|p| p.statements)
            .map(|s| format!("{s}\n"))
            .collect();
        let stdout = querypulse_fingerprint(&["--dialect", dialect], stdin.as_bytes());
        let results = parse(&stdout);
        assert_eq!(results.len(), 2 * pairs.len(), "one line per statement for {dialect}");
        for (pair, results) in pairs.iter().zip(results.chunks(2)) {
            let [(fp_a, text_a), (fp_b, text_b)] = results else {
                unreachable!("chunks of two")
            };
            if (fp_a == fp_b) != pair.same {
                failures.push(format!(
                    "line {} ({dialect}) should be {}:\n  {:?} -> {fp_a} {text_a:?}\n  {:?} -> {fp_b} {text_b:?}",
                    pair.line,
                    if pair.same { "same" } else { "different" },
                    pair.statements[0],
                    pair.statements[1],
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} pairs fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_pair_corpus_covers_the_three_engines_with_at_least_40_pairs() {
    let pairs = pairs();
    assert!(pairs.values().map(Vec::len).sum::<usize>() >= 40);
    for dialect in ["postgres", "mysql", "sqlite"] {
        let of_dialect = &pairs[dialect];
        assert!(
            of_dialect.iter().any(|p| p.same) && of_dialect.iter().any(|p| !p.same),
            "{dialect} needs pairs of both kinds"
        );
    }
}

#[test]
fn json_lines_carry_the_same_fingerprints_and_texts() {
    let stdin = b"SELECT * FROM t WHERE id = 1\nselect \"Q\" from t where a in ('x', 'y')\n";
    let text = querypulse_fingerprint(&["--dialect", "postgres"], stdin);
    let json = querypulse_fingerprint(&["--dialect", "postgres", "--json"], stdin);
    let from_json: Vec<(String, String)> = json
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).expect("a JSON object a line");
            (
                value["fingerprint"].as_str().unwrap().to_owned(),
                value["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let from_text: Vec<(String, String)> = parse(&text)
        .into_iter()
        .map(|(f, t)| (f.to_owned(), t.to_owned()))
        .collect();
    assert_eq!(from_json, from_text);
    assert_eq!(from_text[1].1, "select \"Q\" from t where a in (?)");
}

#[test]
fn blank_lines_are_skipped_and_invalid_utf8_does_not_stop_the_stream() {
    let stdout = querypulse_fingerprint(&[], b"select 1\n\n   \r\nselect 'caf\xe9' from t\xff\r\nselect 3");
    let texts: Vec<&str> = parse(&stdout).into_iter().map(|(_, text)| text).collect();
    assert_eq!(texts, ["select ?", "select ? from t\u{fffd}", "select ?"]);
}

#[test]
fn an_unknown_dialect_is_refused_with_the_choices() {
    let output = run(&["--dialect", "oracle"], b"select 1\n");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("generic, postgres, mysql, sqlite"), "{stderr}");
}
