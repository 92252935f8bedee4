//! Authenticated encryption keys: encrypt with the primary, decrypt with any.
//!
//! Rotating a key across a running cluster takes three steps: add the new key
//! everywhere, make it primary everywhere, remove the old one. Between the
//! steps every node still reads every other node's packets.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use ha_core::rng::FastRng;

use crate::error::KeyError;

/// Size of a key in bytes.
pub const KEY_LEN: usize = 32;
pub(crate) const NONCE_LEN: usize = 24;
pub(crate) const TAG_LEN: usize = 16;

/// XChaCha20-Poly1305 keys, the first being the primary.
///
/// A clone holds the same keys under a fresh nonce prefix: two nodes given
/// clones of one keyring never reuse a nonce, and each is its own sender
/// for replay protection.
pub struct Keyring {
    keys: Vec<([u8; KEY_LEN], XChaCha20Poly1305)>,
    nonce_prefix: [u8; 16],
    counter: u64,
}

impl Clone for Keyring {
    fn clone(&self) -> Self {
        let mut ring = Keyring::new(self.keys[0].0);
        ring.keys = self.keys.clone();
        ring
    }
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").field("keys", &self.keys.len()).finish_non_exhaustive()
    }
}

impl Keyring {
    /// A keyring whose primary key is `primary`.
    pub fn new(primary: [u8; KEY_LEN]) -> Self {
        let mut rng = FastRng::from_entropy();
        let mut nonce_prefix = [0u8; 16];
        nonce_prefix[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
        nonce_prefix[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
        Keyring { keys: vec![(primary, XChaCha20Poly1305::new(&primary.into()))], nonce_prefix, counter: 0 }
    }

    /// A keyring from byte slices (the first is the primary); each must be 32 bytes.
    pub fn from_slices<K: AsRef<[u8]>>(keys: &[K]) -> Result<Self, KeyError> {
        let mut iter = keys.iter().map(|k| <[u8; KEY_LEN]>::try_from(k.as_ref()).map_err(|_| KeyError));
        let mut ring = Keyring::new(iter.next().ok_or(KeyError)??);
        for k in iter {
            ring.add(k?);
        }
        Ok(ring)
    }

    /// Adds a secondary key (accepted for decryption only).
    pub fn add(&mut self, key: [u8; KEY_LEN]) {
        if !self.keys.iter().any(|(k, _)| *k == key) {
            self.keys.push((key, XChaCha20Poly1305::new(&key.into())));
        }
    }

    /// Makes `key` the primary, adding it if needed.
    pub fn use_key(&mut self, key: [u8; KEY_LEN]) {
        self.add(key);
        let i = self.keys.iter().position(|(k, _)| *k == key).unwrap_or(0);
        self.keys.swap(0, i);
    }

    /// Removes a secondary key; the primary cannot be removed.
    pub fn remove(&mut self, key: &[u8; KEY_LEN]) -> bool {
        match self.keys.iter().position(|(k, _)| k == key) {
            Some(i) if i > 0 => {
                self.keys.remove(i);
                true
            }
            _ => false,
        }
    }

    /// How many keys are held.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false: a keyring holds at least its primary.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Appends nonce, ciphertext and tag of `plain` to `out`.
    pub(crate) fn seal(&mut self, aad: &[u8], plain: &[u8], out: &mut Vec<u8>) {
        // A random per-process prefix plus a counter: never repeats within a
        // process, and collides across processes only with negligible odds.
        self.counter = self.counter.wrapping_add(1);
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..16].copy_from_slice(&self.nonce_prefix);
        nonce[16..].copy_from_slice(&self.counter.to_le_bytes());
        let sealed = self.keys[0]
            .1
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad })
            .expect("XChaCha20-Poly1305 encrypts any length below 256 GiB");
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
    }

    /// Decrypts nonce || ciphertext || tag with any key.
    pub(crate) fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = XNonce::from_slice(nonce);
        self.keys.iter().find_map(|(_, c)| c.decrypt(nonce, Payload { msg: body, aad }).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decrypts_with_any_key_and_rejects_tampering() {
        let mut a = Keyring::new([1; 32]);
        let mut out = Vec::new();
        a.seal(b"label", b"hello", &mut out);
        let mut b = Keyring::new([2; 32]);
        assert!(b.open(b"label", &out).is_none());
        b.add([1; 32]);
        assert_eq!(b.open(b"label", &out).unwrap(), b"hello");
        assert!(b.open(b"other", &out).is_none(), "label is associated data");
        let mut bad = out.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(b.open(b"label", &bad).is_none());
        b.use_key([1; 32]);
        assert!(!b.remove(&[1; 32]), "the primary stays");
        assert!(b.remove(&[2; 32]));
        assert_eq!(b.len(), 1);
        assert!(Keyring::from_slices(&[[0u8; 31]]).is_err());
        assert!(Keyring::from_slices::<[u8; 32]>(&[]).is_err());
    }
}
