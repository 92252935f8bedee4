//! The wire format: a version byte, the cluster label, an optional
//! authenticated encryption envelope, and postcard-encoded messages.
//!
//! ```text
//! packet  = VERSION label_len label kind body
//! kind    = bit 0: encrypted, bit 1: stream (push-pull state) rather than datagram
//! body    = frames (datagram) | State (stream), or nonce || seal(that) when encrypted,
//!           with everything before the body as associated data
//! frames  = (varint length, postcard Message)*
//! ```
//!
//! Decoding never panics: every length is checked against what is left of
//! the input before anything is allocated, so a packet allocates at most a
//! small multiple of its own size.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::DecodeError;
use crate::keyring::{Keyring, NONCE_LEN, TAG_LEN};
use crate::member::Metadata;
use crate::replay::ReplayGuard;

/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// The largest datagram accepted from the network.
pub const MAX_DATAGRAM: usize = 64 * 1024;
/// The largest push-pull state accepted from the network.
pub const MAX_STREAM: usize = 16 * 1024 * 1024;

const KIND_ENCRYPTED: u8 = 1;
const KIND_STREAM: u8 = 2;

#[cfg(any(test, fuzzing, feature = "forge"))]
#[doc(hidden)]
pub use message::Message;
#[cfg(not(any(test, fuzzing, feature = "forge")))]
pub(crate) use message::Message;

mod message {
    #![allow(unreachable_pub)]
    use super::*;

    /// One protocol message. A datagram carries several.
    ///
    /// Public only with the `forge` feature (or `--cfg fuzzing`), so that
    /// fuzzers and hostile-input tests can build every kind; not part of the API.
    #[doc(hidden)]
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum Message {
        /// Are you alive? `target` guards against a new member at an old address.
        Ping { seq: u32, target: Arc<str>, from: Arc<str> },
        /// Yes.
        Ack { seq: u32 },
        /// Please probe `target` for me and relay its ack (and a nack if it is silent).
        PingReq { seq: u32, target: Arc<str>, addr: SocketAddr, nack: bool },
        /// I tried, and `target` did not answer me either (Lifeguard).
        Nack { seq: u32 },
        /// `name` is alive at `incarnation`; `meta` is absent when it did not fit.
        Alive { name: Arc<str>, addr: SocketAddr, incarnation: u64, meta: Option<Metadata> },
        /// `from` suspects `name` at `incarnation`.
        Suspect { name: Arc<str>, incarnation: u64, from: Arc<str> },
        /// `from` declares `name` dead at `incarnation`; `from == name` is a graceful leave.
        Dead { name: Arc<str>, incarnation: u64, from: Arc<str> },
        /// An application broadcast, identified by its origin and sequence.
        User { origin: Arc<str>, seq: u64, payload: Vec<u8> },
    }
}

/// One member in a push-pull state exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StateEntry {
    pub(crate) name: Arc<str>,
    pub(crate) addr: SocketAddr,
    pub(crate) incarnation: u64,
    pub(crate) state: u8,
    pub(crate) meta: Metadata,
}

/// A full state for push-pull anti-entropy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct State {
    /// The sender is joining: the receiver answers even if it knows nothing of it.
    pub(crate) join: bool,
    pub(crate) members: Vec<StateEntry>,
}

/// Frames, seals and opens packets for one cluster.
#[derive(Debug, Clone)]
pub(crate) struct Codec {
    label: Box<[u8]>,
    keyring: Option<Keyring>,
    replay: ReplayGuard,
}

impl Codec {
    pub(crate) fn new(label: &str, keyring: Option<Keyring>) -> Self {
        Codec { label: label.as_bytes().into(), keyring, replay: ReplayGuard::default() }
    }

    pub(crate) fn set_keyring(&mut self, keyring: Option<Keyring>) {
        self.keyring = keyring;
    }

    pub(crate) fn keyring_mut(&mut self) -> Option<&mut Keyring> {
        self.keyring.as_mut()
    }

    /// Bytes a datagram spends outside its frames.
    pub(crate) fn overhead(&self) -> usize {
        3 + self.label.len() + if self.keyring.is_some() { NONCE_LEN + TAG_LEN } else { 0 }
    }

    fn header(&self, stream: bool, out: &mut Vec<u8>) {
        out.push(VERSION);
        out.push(self.label.len() as u8);
        out.extend_from_slice(&self.label);
        let mut kind = if stream { KIND_STREAM } else { 0 };
        if self.keyring.is_some() {
            kind |= KIND_ENCRYPTED;
        }
        out.push(kind);
    }

    /// Wraps a body (frames or an encoded state) into a packet.
    pub(crate) fn seal(&mut self, stream: bool, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.overhead() + body.len());
        self.header(stream, &mut out);
        match &mut self.keyring {
            None => out.extend_from_slice(body),
            Some(ring) => {
                let aad_len = out.len();
                let aad: Vec<u8> = out[..aad_len].to_vec();
                ring.seal(&aad, body, &mut out);
            }
        }
        out
    }

    /// Checks the header and returns the (decrypted) body; an encrypted
    /// packet is accepted once only (see `replay`).
    pub(crate) fn open<'a>(&mut self, stream: bool, packet: &'a [u8]) -> Result<Cow<'a, [u8]>, DecodeError> {
        let max = if stream { MAX_STREAM } else { MAX_DATAGRAM };
        if packet.len() < 3 || packet.len() > max {
            return Err(DecodeError::Size);
        }
        if packet[0] != VERSION {
            return Err(DecodeError::Version);
        }
        let label_len = usize::from(packet[1]);
        let Some(label) = packet.get(2..2 + label_len) else { return Err(DecodeError::Size) };
        if label != &*self.label {
            return Err(DecodeError::Label);
        }
        let Some(&kind) = packet.get(2 + label_len) else { return Err(DecodeError::Size) };
        if (kind & KIND_STREAM != 0) != stream || kind & !(KIND_STREAM | KIND_ENCRYPTED) != 0 {
            return Err(DecodeError::Malformed);
        }
        let body = &packet[3 + label_len..];
        match (&self.keyring, kind & KIND_ENCRYPTED != 0) {
            (None, false) => Ok(Cow::Borrowed(body)),
            (Some(ring), true) => {
                let plain = ring.open(&packet[..3 + label_len], body).ok_or(DecodeError::Authentication)?;
                if !self.replay.accept(&body[..NONCE_LEN]) {
                    return Err(DecodeError::Replay);
                }
                Ok(Cow::Owned(plain))
            }
            _ => Err(DecodeError::Encryption),
        }
    }
}

/// Appends one frame (varint length and the postcard message) to `out`.
pub(crate) fn push_frame(msg: &Message, out: &mut Vec<u8>) {
    let bytes = postcard::to_allocvec(msg).expect("messages always serialize");
    push_varint(bytes.len() as u32, out);
    out.extend_from_slice(&bytes);
}

/// Encodes one message as a standalone frame.
pub(crate) fn frame(msg: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    push_frame(msg, &mut out);
    out
}

fn push_varint(mut v: u32, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint(input: &[u8]) -> Option<(u32, usize)> {
    let mut v: u32 = 0;
    for (i, &b) in input.iter().enumerate().take(5) {
        v |= u32::from(b & 0x7f).checked_shl(7 * i as u32)?;
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Decodes every frame of a datagram body; one bad frame drops them all.
pub(crate) fn decode_frames(mut body: &[u8], out: &mut Vec<Message>) -> Result<(), DecodeError> {
    while !body.is_empty() {
        let (len, used) = read_varint(body).ok_or(DecodeError::Malformed)?;
        let len = len as usize;
        let rest = &body[used..];
        if len > rest.len() {
            return Err(DecodeError::Malformed);
        }
        let (msg, tail) = postcard::take_from_bytes::<Message>(&rest[..len]).map_err(|_| DecodeError::Malformed)?;
        if !tail.is_empty() {
            return Err(DecodeError::Malformed);
        }
        out.push(msg);
        body = &rest[len..];
    }
    Ok(())
}

pub(crate) fn encode_state(state: &State) -> Vec<u8> {
    postcard::to_allocvec(state).expect("states always serialize")
}

pub(crate) fn decode_state(body: &[u8]) -> Result<State, DecodeError> {
    postcard::from_bytes(body).map_err(|_| DecodeError::Malformed)
}

/// Decodes a datagram as the core would, for fuzzing and property tests:
/// returns how many messages it held.
#[cfg(any(test, fuzzing, feature = "forge"))]
#[doc(hidden)]
pub fn fuzz_decode(label: &str, keyring: Option<Keyring>, stream: bool, packet: &[u8]) -> Result<usize, DecodeError> {
    let mut codec = Codec::new(label, keyring);
    let body = codec.open(stream, packet)?;
    if stream {
        Ok(decode_state(&body)?.members.len())
    } else {
        let mut msgs = Vec::new();
        decode_frames(&body, &mut msgs)?;
        Ok(msgs.len())
    }
}

/// Encodes a datagram of one ping and one alive message, a valid starting
/// point for mutation in fuzzing and property tests.
#[cfg(any(test, fuzzing, feature = "forge"))]
#[doc(hidden)]
pub fn sample_datagram(label: &str, keyring: Option<Keyring>) -> Vec<u8> {
    let mut codec = Codec::new(label, keyring);
    let mut body = Vec::new();
    push_frame(&Message::Ping { seq: 7, target: "b".into(), from: "a".into() }, &mut body);
    push_frame(
        &Message::Alive {
            name: "a".into(),
            addr: "127.0.0.1:7946".parse().expect("literal"),
            incarnation: 3,
            meta: Some(Metadata { zone: "z1".into(), weight: 10, user: vec![1, 2, 3], ..Metadata::default() }),
        },
        &mut body,
    );
    codec.seal(false, &body)
}

/// Unencrypted datagrams as anyone on the network could forge them, for
/// tests of hostile input against a running node.
#[cfg(any(test, fuzzing, feature = "forge"))]
#[doc(hidden)]
pub mod forge {
    use super::*;

    /// The frames of a datagram body holding `msgs`, unsealed, for a fuzzer
    /// to mutate before [`Sealer::seal`].
    pub fn frames(msgs: &[Message]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in msgs {
            push_frame(m, &mut out);
        }
        out
    }

    /// One member of a forged push-pull state: name, address, incarnation,
    /// state code (0 alive, 1 suspect, 2 dead, 3 left; others are invalid)
    /// and metadata.
    pub type Entry = (Arc<str>, SocketAddr, u64, u8, Metadata);

    /// A push-pull state body, unsealed.
    pub fn state_body(join: bool, members: Vec<Entry>) -> Vec<u8> {
        let members = members
            .into_iter()
            .map(|(name, addr, incarnation, state, meta)| StateEntry { name, addr, incarnation, state, meta })
            .collect();
        encode_state(&State { join, members })
    }

    /// Seals bodies into packets as a member of a cluster would (label and,
    /// if given, encryption), so that forged content reaches the decoder
    /// behind the envelope.
    #[derive(Debug)]
    pub struct Sealer(Codec);

    impl Sealer {
        /// A sealer for the cluster labelled `label`, encrypting with `keyring`.
        pub fn new(label: &str, keyring: Option<Keyring>) -> Self {
            Sealer(Codec::new(label, keyring))
        }

        /// A datagram (`stream` false) or a push-pull state (`stream` true) holding `body`.
        pub fn seal(&mut self, stream: bool, body: &[u8]) -> Vec<u8> {
            self.0.seal(stream, body)
        }
    }

    fn one(label: &str, msg: &Message) -> Vec<u8> {
        Codec::new(label, None).seal(false, &frame(msg))
    }

    /// A ping of `target` claiming to come from the member `from`.
    pub fn ping(label: &str, seq: u32, target: &str, from: &str) -> Vec<u8> {
        one(label, &Message::Ping { seq, target: target.into(), from: from.into() })
    }

    /// A request to probe `target` at `addr`.
    pub fn ping_req(label: &str, seq: u32, target: &str, addr: SocketAddr) -> Vec<u8> {
        one(label, &Message::PingReq { seq, target: target.into(), addr, nack: true })
    }

    /// News that `name` is alive at `addr`.
    pub fn alive(label: &str, name: &str, addr: SocketAddr, incarnation: u64) -> Vec<u8> {
        one(label, &Message::Alive { name: name.into(), addr, incarnation, meta: None })
    }

    /// News that `name` is suspected (`dead`: declared dead) by `from`.
    pub fn suspect(label: &str, name: &str, incarnation: u64, dead: bool) -> Vec<u8> {
        let (name, from): (Arc<str>, Arc<str>) = (name.into(), "forger".into());
        one(
            label,
            &if dead {
                Message::Dead { name, incarnation, from }
            } else {
                Message::Suspect { name, incarnation, from }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs() -> Vec<Message> {
        vec![
            Message::Ping { seq: 1, target: "b".into(), from: "a".into() },
            Message::Ack { seq: 1 },
            Message::PingReq { seq: 2, target: "c".into(), addr: "10.0.0.3:7946".parse().unwrap(), nack: true },
            Message::Nack { seq: 2 },
            Message::Alive {
                name: "a".into(),
                addr: "10.0.0.1:7946".parse().unwrap(),
                incarnation: 9,
                meta: Some(Metadata::default()),
            },
            Message::Suspect { name: "c".into(), incarnation: 4, from: "a".into() },
            Message::Dead { name: "c".into(), incarnation: 4, from: "a".into() },
            Message::User { origin: "a".into(), seq: 1, payload: b"hi".to_vec() },
        ]
    }

    #[test]
    fn every_message_round_trips_plain_and_encrypted() {
        for ring in [None, Some(Keyring::new([7; 32]))] {
            let mut codec = Codec::new("prod", ring);
            let mut body = Vec::new();
            for m in msgs() {
                push_frame(&m, &mut body);
            }
            let packet = codec.seal(false, &body);
            let opened = codec.open(false, &packet).unwrap();
            let mut out = Vec::new();
            decode_frames(&opened, &mut out).unwrap();
            assert_eq!(out, msgs());
            assert_eq!(codec.open(true, &packet).unwrap_err(), DecodeError::Malformed, "datagram is not a stream");
        }
    }

    #[test]
    fn other_label_version_or_key_is_rejected() {
        let mut a = Codec::new("prod", None);
        let p = a.seal(false, &frame(&Message::Ack { seq: 1 }));
        assert_eq!(Codec::new("test", None).open(false, &p).unwrap_err(), DecodeError::Label);
        let mut v = p.clone();
        v[0] = 9;
        assert_eq!(a.open(false, &v).unwrap_err(), DecodeError::Version);
        let mut enc = Codec::new("prod", Some(Keyring::new([1; 32])));
        assert_eq!(enc.open(false, &p).unwrap_err(), DecodeError::Encryption);
        let mut e1 = Codec::new("prod", Some(Keyring::new([2; 32])));
        let p2 = e1.seal(false, &frame(&Message::Ack { seq: 1 }));
        assert_eq!(enc.open(false, &p2).unwrap_err(), DecodeError::Authentication);
        assert_eq!(a.open(false, &p2).unwrap_err(), DecodeError::Encryption);
    }

    #[test]
    fn truncated_or_garbage_frames_fail() {
        let body = frame(&Message::Alive {
            name: "a".into(),
            addr: "10.0.0.1:7946".parse().unwrap(),
            incarnation: 9,
            meta: None,
        });
        let mut out = Vec::new();
        for cut in 0..body.len() {
            out.clear();
            let r = decode_frames(&body[..cut], &mut out);
            assert!(cut == 0 || r.is_err(), "cut at {cut}");
        }
        assert!(decode_frames(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01], &mut out).is_err());
        assert!(decode_frames(&[0x05, 200, 1, 2, 3, 4], &mut out).is_err());
    }

    #[test]
    fn state_round_trips() {
        let s = State {
            join: true,
            members: vec![StateEntry {
                name: "a".into(),
                addr: "10.0.0.1:1".parse().unwrap(),
                incarnation: 2,
                state: 0,
                meta: Metadata { user: vec![0; 4096], ..Metadata::default() },
            }],
        };
        let mut c = Codec::new("", Some(Keyring::new([3; 32])));
        let p = c.seal(true, &encode_state(&s));
        assert_eq!(decode_state(&c.open(true, &p).unwrap()).unwrap(), s);
    }
}
