//! `querypulse fingerprint`: the fingerprint and normalized text of each SQL
//! statement on standard input, one statement per line, as pt-fingerprint
//! prints them. The agent's own normalizer does the work, so what this prints
//! is exactly what the dashboard and the API show for the same statement.

use std::io::{self, BufRead, BufReader, Read, Write};

use querypulse_agent::Fingerprint;
use querypulse_agent::fingerprint::{Dialect, normalize};
use serde::Serialize;

/// How each statement is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// `<16 hex digits>\t<normalized text>`.
    #[default]
    Text,
    /// One JSON object a line: `{"fingerprint":"…","text":"…"}`.
    Json,
}

/// Why fingerprinting a stream stopped.
#[derive(Debug, thiserror::Error)]
pub enum FingerprintError {
    /// The input could not be read.
    #[error("cannot read statements: {0}")]
    Read(#[source] io::Error),
    /// The output could not be written (a closed pipe included).
    #[error("cannot write fingerprints: {0}")]
    Write(#[source] io::Error),
}

#[derive(Serialize)]
struct JsonLine<'a> {
    fingerprint: Fingerprint,
    text: &'a str,
}

/// Reads statements from `input`, one a line, and writes one line for each to
/// `output`. Blank lines are skipped; a line that is not valid UTF-8 is read
/// with U+FFFD in place of the bad bytes. Output is flushed whenever the
/// input has nothing more buffered, so an interactive session answers each
/// line as it is typed while a pipe is written in large blocks.
pub fn run(input: impl Read, output: impl Write, dialect: Dialect, format: Format) -> Result<(), FingerprintError> {
    let mut input = BufReader::with_capacity(64 * 1024, input);
    let mut output = io::BufWriter::with_capacity(64 * 1024, output);
    let mut line = Vec::new();
    let mut json = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line).map_err(FingerprintError::Read)? == 0 {
            break;
        }
        let sql = String::from_utf8_lossy(&line);
        let sql = sql.trim_end_matches(['\n', '\r']);
        if !sql.trim().is_empty() {
            let normalized = normalize(sql, dialect);
            let written = match format {
                Format::Text => writeln!(output, "{}\t{}", normalized.fingerprint, normalized.text),
                Format::Json => {
                    json.clear();
                    let line = JsonLine {
                        fingerprint: normalized.fingerprint,
                        text: &normalized.text,
                    };
                    serde_json::to_writer(&mut json, &line)
                        .map_err(io::Error::other)
                        .and_then(|()| {
                            json.push(b'\n');
                            output.write_all(&json)
                        })
                }
            };
            written.map_err(FingerprintError::Write)?;
        }
        if input.buffer().is_empty() {
            output.flush().map_err(FingerprintError::Write)?;
        }
    }
    output.flush().map_err(FingerprintError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn fingerprint(input: &[u8], dialect: Dialect, format: Format) -> String {
        let mut output = Vec::new();
        run(input, &mut output, dialect, format).expect("in-memory streams do not fail");
        String::from_utf8(output).expect("UTF-8 output")
    }

    #[test]
    fn prints_sixteen_hex_digits_a_tab_and_the_normalized_text_per_line() {
        let out = fingerprint(
            b"SELECT * FROM t WHERE id = 1\nselect * from t where id = 2\n",
            Dialect::Generic,
            Format::Text,
        );
        let lines: Vec<&str> = out.lines().collect();
        let expected = format!(
            "{}\tselect * from t where id = ?",
            Fingerprint::of_normalized("select * from t where id = ?")
        );
        assert_eq!(lines, [expected.as_str(); 2]);
    }

    #[test]
    fn json_lines_carry_fingerprint_and_text() {
        let out = fingerprint(b"select \"a\" from t where b = 'x'", Dialect::Postgres, Format::Json);
        let value: serde_json::Value = serde_json::from_str(out.trim_end()).expect("one JSON object");
        assert_eq!(value["text"], "select \"a\" from t where b = ?");
        assert_eq!(
            value["fingerprint"],
            Fingerprint::of_normalized("select \"a\" from t where b = ?").to_string()
        );
        assert!(out.ends_with("}\n"));
    }

    #[test]
    fn blank_lines_are_skipped_and_line_endings_are_not_part_of_the_statement() {
        let out = fingerprint(b"\n  \t\nselect 1\r\n\r\nselect 2", Dialect::Generic, Format::Text);
        let texts: Vec<&str> = out.lines().map(|l| l.split_once('\t').unwrap().1).collect();
        assert_eq!(texts, ["select ?", "select ?"]);
    }

    #[test]
    fn invalid_utf8_is_read_lossily() {
        let out = fingerprint(b"select 'caf\xe9' from t\xff\xfe\n", Dialect::Mysql, Format::Text);
        assert!(out.ends_with("\tselect ? from t\u{fffd}\u{fffd}\n"), "{out:?}");
    }

    #[test]
    fn the_dialect_decides_what_a_statement_means() {
        let mysql = fingerprint(b"select \"a\" # note", Dialect::Mysql, Format::Text);
        let postgres = fingerprint(b"select \"a\" # note", Dialect::Postgres, Format::Text);
        assert!(mysql.ends_with("\tselect ?\n"), "{mysql:?}");
        assert!(postgres.ends_with("\tselect \"a\" # note\n"), "{postgres:?}");
    }

    #[test]
    fn a_closed_output_is_a_write_error() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let result = run(&b"select 1\n"[..], Closed, Dialect::Generic, Format::Text);
        assert!(matches!(result, Err(FingerprintError::Write(e)) if e.kind() == io::ErrorKind::BrokenPipe));
    }
}
