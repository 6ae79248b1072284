//! Comparing secrets: the ingest token agents present, the admin token of
//! API writes and dashboard sign-in, the dashboard's CSRF tokens.

/// Whether `presented` equals `expected`, taking the same time wherever they
/// differ, so response times do not reveal how much of a guess was right.
/// (The length is not secret: a different length returns at once.)
pub fn tokens_match(presented: &str, expected: &str) -> bool {
    let (a, b) = (presented.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_equal_tokens_match() {
        assert!(tokens_match("secret", "secret"));
        assert!(!tokens_match("secret", "secreT"));
        assert!(!tokens_match("secret", "secret2"));
        assert!(!tokens_match("", "x"));
        assert!(tokens_match("", ""));
    }
}
