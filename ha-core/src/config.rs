//! What every `ha` configuration shares: one error type, one duration format.
//!
//! Each crate's config (`RetryConfig`, `BalanceConfig`, `BreakerConfig`, the
//! membership `Config`, the facade's `ha::Config`) validates into the same
//! [`ConfigError`], so a caller that assembles several reports one shape of
//! error, and the facade prefixes a section ([`ConfigError::in_section`])
//! without re-parsing a message.
//!
//! Durations in config files follow one rule: a key names what the duration
//! is (`interval`, `timeout`, `base`), never its unit, and the value is
//! either an integer of milliseconds or a string with a unit (`"250ms"`,
//! `"5s"`, `"1m"`). [`duration`] and [`opt_duration`] implement it for
//! `#[serde(with = ...)]`.
//!
//! ```
//! use std::time::Duration;
//! use ha_core::config::{duration, ConfigError};
//!
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Probe {
//!     #[serde(with = "duration")]
//!     interval: Duration,
//! }
//!
//! let p: Probe = serde_json::from_str(r#"{ "interval": "5s" }"#).unwrap();
//! assert_eq!(p.interval, Duration::from_secs(5));
//! let p: Probe = serde_json::from_str(r#"{ "interval": 250 }"#).unwrap();
//! assert_eq!(p.interval, Duration::from_millis(250));
//!
//! let err = ConfigError::new("max_attempts", "must be at least 1").in_section("retry");
//! assert_eq!(err.field(), "retry.max_attempts");
//! assert_eq!(err.to_string(), "`retry.max_attempts`: must be at least 1");
//! ```

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

/// A configuration that cannot be used: which field, and what is wrong with
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: Cow<'static, str>,
    reason: Cow<'static, str>,
}

impl ConfigError {
    /// An error about `field` (a dotted path such as `open_wait.max`, or
    /// empty when no one field is at fault) because of `reason`.
    pub fn new(field: impl Into<Cow<'static, str>>, reason: impl Into<Cow<'static, str>>) -> Self {
        ConfigError { field: field.into(), reason: reason.into() }
    }

    /// The same error, its field path under `section`: `max_attempts` in
    /// section `retry` becomes `retry.max_attempts`.
    #[must_use]
    pub fn in_section(self, section: &str) -> Self {
        let field = if self.field.is_empty() { section.to_owned() } else { format!("{section}.{}", self.field) };
        ConfigError { field: Cow::Owned(field), reason: self.reason }
    }

    /// The offending field as a dotted path (`outlier.interval`); empty when
    /// the error is not about one field.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What is wrong with it.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "`{}`: {}", self.field, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Parses a duration as config files write it: digits and a unit (`ns`,
/// `us`, `µs`, `ms`, `s`, `m`, `h`), as in `"250ms"`, `"5s"`, `"1m"`.
///
/// ```
/// use std::time::Duration;
/// use ha_core::config::parse_duration;
///
/// assert_eq!(parse_duration("100us"), Some(Duration::from_micros(100)));
/// assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
/// assert_eq!(parse_duration("5"), None); // a unit is required in a string
/// ```
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let nanos_per: u64 = match unit.trim_start() {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    };
    let nanos = u128::from(n) * u128::from(nanos_per);
    let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
    Some(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

/// A duration in the config-file format, for [`duration`] and
/// [`opt_duration`].
struct Value(Duration);

impl<'de> serde::Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Visitor).map(Value)
    }
}

impl serde::Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Whole milliseconds stay integers, so files written before strings
        // were accepted read back byte for byte; anything finer keeps its
        // precision as a string.
        if self.0.subsec_nanos() % 1_000_000 == 0 {
            s.serialize_u64(u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX))
        } else {
            s.serialize_str(&format!("{}ns", self.0.as_nanos()))
        }
    }
}

struct Visitor;

impl serde::de::Visitor<'_> for Visitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer of milliseconds or a string with a unit such as \"250ms\" or \"5s\"")
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
        Ok(Duration::from_millis(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
        u64::try_from(v)
            .map(Duration::from_millis)
            .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
        parse_duration(v).ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(v), &self))
    }
}

/// `#[serde(with = "ha_core::config::duration")]` for a [`Duration`]: reads
/// an integer as milliseconds or a string with a unit (`"5s"`); writes
/// whole milliseconds as an integer.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Writes `d` as an integer of milliseconds (a string in nanoseconds
    /// when it is not a whole number of them).
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        super::Value(*d).serialize(s)
    }

    /// Reads an integer of milliseconds or a string with a unit.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        super::Value::deserialize(d).map(|v| v.0)
    }
}

/// `#[serde(with = "ha_core::config::opt_duration")]` for an
/// `Option<Duration>`, in the format of [`duration`]; `None` is an absent
/// key (or `null`).
pub mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `Some(d)` as [`duration`](super::duration) does.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&super::Value(*d)),
            None => s.serialize_none(),
        }
    }

    /// Reads an optional integer of milliseconds or string with a unit.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<super::Value>::deserialize(d)?.map(|v| v.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct T {
        #[serde(with = "duration")]
        d: Duration,
        #[serde(with = "opt_duration", default)]
        o: Option<Duration>,
    }

    #[test]
    fn strings_with_units_and_integers_of_milliseconds() {
        for (text, want) in [
            ("0", Duration::ZERO),
            ("250", Duration::from_millis(250)),
            ("\"250ms\"", Duration::from_millis(250)),
            ("\"5s\"", Duration::from_secs(5)),
            ("\"1m\"", Duration::from_secs(60)),
            ("\"1h\"", Duration::from_secs(3600)),
            ("\"100us\"", Duration::from_micros(100)),
            ("\"7ns\"", Duration::from_nanos(7)),
        ] {
            let t: T = serde_json::from_str(&format!("{{\"d\": {text}}}")).unwrap();
            assert_eq!(t.d, want, "{text}");
            assert_eq!(t.o, None);
        }
        for bad in ["-1", "\"5\"", "\"5 parsecs\"", "\"s\"", "1.5", "\"\""] {
            assert!(serde_json::from_str::<T>(&format!("{{\"d\": {bad}}}")).is_err(), "{bad}");
        }
    }

    #[test]
    fn whole_milliseconds_write_as_integers_and_finer_ones_round_trip() {
        let t = T { d: Duration::from_secs(2), o: Some(Duration::from_millis(30)) };
        assert_eq!(serde_json::to_string(&t).unwrap(), r#"{"d":2000,"o":30}"#);
        let fine = T { d: Duration::from_micros(1500), o: None };
        let back: T = serde_json::from_str(&serde_json::to_string(&fine).unwrap()).unwrap();
        assert_eq!(back, fine);
    }

    #[test]
    fn errors_name_the_field_and_take_a_section() {
        let e = ConfigError::new("open_wait.max", "must be at least open_wait.base");
        assert_eq!(e.field(), "open_wait.max");
        assert_eq!(e.reason(), "must be at least open_wait.base");
        assert_eq!(e.to_string(), "`open_wait.max`: must be at least open_wait.base");
        let e = e.in_section("breaker");
        assert_eq!(e.field(), "breaker.open_wait.max");
        assert_eq!(ConfigError::new("", "cannot read").in_section("file").field(), "file");
        assert_eq!(ConfigError::new("", "cannot read").to_string(), "cannot read");
    }
}
