//! How an execution ended.

use std::fmt;

/// Why an execution failed, in a form that costs nothing to record: a SQLSTATE
/// code (PostgreSQL and MySQL/MariaDB both report one) or a coarse class.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// A five-character SQLSTATE such as `23505` (unique violation).
    Sqlstate([u8; 5]),
    /// The statement timed out.
    Timeout,
    /// No connection could be acquired from the pool in time.
    PoolTimeout,
    /// The connection failed (network, broken pipe, closed by the server).
    Io,
    /// Anything else.
    Other,
}

impl ErrorClass {
    /// The class of a SQLSTATE code; anything that is not five ASCII letters or
    /// digits is [`ErrorClass::Other`].
    pub fn sqlstate(code: &str) -> ErrorClass {
        match <[u8; 5]>::try_from(code.as_bytes()) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_alphanumeric) => {
                ErrorClass::Sqlstate(bytes.map(|b| b.to_ascii_uppercase()))
            }
            _ => ErrorClass::Other,
        }
    }

    /// The class as reported: the SQLSTATE itself, or `timeout`,
    /// `pool_timeout`, `io`, `other`.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorClass::Sqlstate(code) => std::str::from_utf8(code).unwrap_or("other"),
            ErrorClass::Timeout => "timeout",
            ErrorClass::PoolTimeout => "pool_timeout",
            ErrorClass::Io => "io",
            ErrorClass::Other => "other",
        }
    }
}

impl fmt::Debug for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ErrorClass({})", self.as_str())
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one execution ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It succeeded, returning or affecting `rows` rows.
    Ok {
        /// Rows returned or affected (0 when unknown).
        rows: u64,
    },
    /// It failed.
    Error(ErrorClass),
}

impl Outcome {
    /// Success with an unknown row count.
    pub const OK: Outcome = Outcome::Ok { rows: 0 };

    /// Success with `rows` rows returned or affected.
    pub fn rows(rows: u64) -> Outcome {
        Outcome::Ok { rows }
    }

    /// Failure with a SQLSTATE code.
    pub fn sqlstate(code: &str) -> Outcome {
        Outcome::Error(ErrorClass::sqlstate(code))
    }

    /// The error class, if it failed.
    pub fn error_class(&self) -> Option<ErrorClass> {
        match self {
            Outcome::Ok { .. } => None,
            Outcome::Error(class) => Some(*class),
        }
    }

    /// Rows returned or affected (0 on failure).
    pub fn row_count(&self) -> u64 {
        match self {
            Outcome::Ok { rows } => *rows,
            Outcome::Error(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_kept_and_garbage_is_other() {
        assert_eq!(ErrorClass::sqlstate("23505").as_str(), "23505");
        assert_eq!(ErrorClass::sqlstate("42p01").as_str(), "42P01");
        assert_eq!(ErrorClass::sqlstate("2350"), ErrorClass::Other);
        assert_eq!(ErrorClass::sqlstate("2350é"), ErrorClass::Other);
        assert_eq!(Outcome::sqlstate("23000").error_class().unwrap().as_str(), "23000");
        assert_eq!(Outcome::rows(3).row_count(), 3);
    }
}
