//! Typed errors: invalid configuration, undecodable packets, transport failures.

use std::fmt;

/// A configuration field failed validation: the one error type of every
/// `ha` config, re-exported from `ha-core`.
pub use ha_core::ConfigError;

/// Why an incoming packet or state was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DecodeError {
    /// Shorter than a header, or longer than allowed.
    Size,
    /// An unknown protocol version.
    Version,
    /// Another cluster's label.
    Label,
    /// Encrypted when no keyring is configured, or plain when one is.
    Encryption,
    /// No key of the keyring authenticates it.
    Authentication,
    /// The body is not a valid message sequence.
    Malformed,
    /// An authentic packet already received (encrypted clusters only).
    Replay,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecodeError::Size => "packet size out of bounds",
            DecodeError::Version => "unknown protocol version",
            DecodeError::Label => "cluster label mismatch",
            DecodeError::Encryption => "encryption mode mismatch",
            DecodeError::Authentication => "authentication failed",
            DecodeError::Malformed => "malformed message",
            DecodeError::Replay => "replayed packet",
        })
    }
}

impl std::error::Error for DecodeError {}

/// A key of the wrong length was given to the keyring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyError;

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("keyring needs at least one key, each of 32 bytes")
    }
}

impl std::error::Error for KeyError {}

/// A payload, metadata or name that does not fit its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeError {
    /// Its size in bytes (encoded, for metadata).
    pub size: usize,
    /// The largest size allowed.
    pub max: usize,
}

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes, above the limit of {}", self.size, self.max)
    }
}

impl std::error::Error for SizeError {}
