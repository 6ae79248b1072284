//! The 64-bit identity of a normalized statement.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Hash of a normalized SQL statement. Shown and parsed as 16 lowercase hex
/// digits, the form the API and the dashboard use in URLs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Fingerprint(u64);

impl Fingerprint {
    /// The entry that absorbs statements beyond an agent's cardinality cap.
    pub const OTHER: Fingerprint = Fingerprint(0);

    /// Text shown for [`Fingerprint::OTHER`].
    pub const OTHER_TEXT: &'static str = "other (statements beyond the fingerprint cap)";

    /// Wraps a raw hash. A normalizer never yields 0 for a real statement; see
    /// [`Fingerprint::of_normalized`].
    pub const fn new(raw: u64) -> Self {
        Fingerprint(raw)
    }

    /// The raw 64-bit value.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The fingerprint of an already normalized statement text: 64-bit FNV-1a,
    /// stable across processes, platforms and versions (agents of different
    /// versions must agree). A hash of 0 is mapped to 1 so it never collides
    /// with [`Fingerprint::OTHER`].
    pub fn of_normalized(text: &str) -> Self {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut hash = OFFSET;
        for byte in text.as_bytes() {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(PRIME);
        }
        Fingerprint(if hash == 0 { 1 } else { hash })
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({:016x})", self.0)
    }
}

/// A string that is not 16 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a fingerprint is 16 hex digits, got {0:?}")]
pub struct ParseFingerprintError(String);

impl FromStr for Fingerprint {
    type Err = ParseFingerprintError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseFingerprintError(s.chars().take(40).collect()));
        }
        u64::from_str_radix(s, 16)
            .map(Fingerprint)
            .map_err(|_| ParseFingerprintError(s.to_owned()))
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A fingerprint in the API: 16 lowercase hex digits.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Fingerprint {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .pattern(Some("^[0-9a-f]{16}$"))
            .description(Some("Statement fingerprint: 16 lowercase hex digits."))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Fingerprint {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_and_parses_as_sixteen_hex_digits() {
        let fp = Fingerprint::new(0x00ab_cdef_0123_4567);
        assert_eq!(fp.to_string(), "00abcdef01234567");
        assert_eq!("00abcdef01234567".parse::<Fingerprint>(), Ok(fp));
        assert_eq!("00ABCDEF01234567".parse::<Fingerprint>(), Ok(fp));
    }

    #[test]
    fn rejects_anything_but_sixteen_hex_digits() {
        for bad in [
            "",
            "abc",
            "00abcdef0123456",
            "00abcdef012345678",
            "g0abcdef01234567",
            "+0abcdef01234567",
        ] {
            assert!(bad.parse::<Fingerprint>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn hash_is_stable_across_releases() {
        // Agents of different versions must agree on fingerprints: these values
        // are part of the protocol and must never change.
        assert_eq!(Fingerprint::of_normalized("").get(), 0xcbf2_9ce4_8422_2325);
        assert_eq!(Fingerprint::of_normalized("a").get(), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(Fingerprint::of_normalized("foobar").get(), 0x8594_4171_f739_67e8);
        assert_ne!(
            Fingerprint::of_normalized("select ?"),
            Fingerprint::of_normalized("select ? ")
        );
    }
}
