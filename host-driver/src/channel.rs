//! Cipher communication (Fig. 8): keys derived from the center's master secret KA, and an AEAD
//! layer the flows call around the messages they exchange.
//!
//! - **Keys**: KT = HKDF-SHA256(KA, "KT" * IDT), KU = HKDF-SHA256(KA, "KU" * IDU), KO (common to
//!   terminals and cards) = HKDF-SHA256(KA, "KO"). The center can rederive KU from IDU for a
//!   recharge without storing it. The patent's FEAL is broken; HKDF and an AEAD replace it.
//! - **AEAD**: XChaCha20-Poly1305. The 192-bit nonce is drawn at random from the OS for every
//!   message. Why random and not a counter: a counter must never repeat, and a party restored
//!   from a backup, a card torn mid-write or a terminal whose state file is rolled back would
//!   repeat one, which breaks ChaCha20-Poly1305 completely (key-stream reuse, forgeable tags).
//!   192 random bits never collide in practice, whatever happens to the stored state.
//! - **Replay**: every message still carries a per-direction counter, authenticated with the
//!   message type, the direction and both party IDs as associated data. The receiver keeps the
//!   highest counter seen and a 64-message window; a counter seen before, or older than the
//!   window, is refused. The counter only guards against replay, so a rolled-back sender costs
//!   availability (its messages are refused until it passes its old counter), never secrecy.
//! - **Ktemp**: terminals and cards are made holding a manufacturing key Ktemp; it is used once,
//!   to receive (KT, KO) or (KU, KO) at installation or issue ([`seal_first_delivery`]), and a
//!   party refuses a second delivery.
//!
//! A sealed message is a canonical [`Tag::Sealed`] message: message type, direction, counter,
//! nonce (24 octets), ciphertext (with its 16-octet tag).

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;

use crate::encoding::{Encoder, Tag};
use crate::error::{Error, Result};
use crate::messages::{random_bytes, Fields, Malformed};

/// A 256-bit symmetric key.
pub type SymKey = [u8; 32];

const SALT: &[u8] = b"kessai fig8 key derivation v1";
/// Messages a receiver still accepts out of order.
pub const WINDOW: u64 = 64;

/// Who sends to whom: each direction of each link has its own counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Direction {
    CenterToTerminal = 1,
    TerminalToCenter = 2,
    DispenserToCard = 3,
    CardToDispenser = 4,
    TerminalToCard = 5,
    CardToTerminal = 6,
    /// The first delivery of KT / KU under Ktemp.
    Manufacturing = 7,
}

impl Direction {
    fn from_u64(v: u64) -> Option<Self> {
        use Direction::*;
        [CenterToTerminal, TerminalToCenter, DispenserToCard, CardToDispenser, TerminalToCard, CardToTerminal, Manufacturing]
            .into_iter()
            .find(|d| *d as u64 == v)
    }
}

fn derive(ka: &SymKey, label: &[u8], id: Option<u64>) -> SymKey {
    let hk = Hkdf::<Sha256>::new(Some(SALT), ka);
    let mut info = label.to_vec();
    if let Some(id) = id {
        info.extend_from_slice(&id.to_be_bytes());
    }
    let mut out = [0u8; 32];
    hk.expand(&info, &mut out).expect("32 octets is a valid HKDF-SHA256 length");
    out
}

/// KT = f(KA, IDT).
pub fn terminal_key(ka: &SymKey, idt: u64) -> SymKey {
    derive(ka, b"KT", Some(idt))
}

/// KU = f(KA, IDU).
pub fn card_key(ka: &SymKey, idu: u64) -> SymKey {
    derive(ka, b"KU", Some(idu))
}

/// KO, common to terminals and cards (the T <-> U link).
pub fn common_key(ka: &SymKey) -> SymKey {
    derive(ka, b"KO", None)
}

/// Why a sealed message was not accepted. All of them are refusals of the message; nothing is
/// changed by any of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("sealed message malformed: {0}")]
    Malformed(String),
    #[error("sealed message is of type {got:#x}, expected type {expected:#x}")]
    WrongType { expected: u64, got: u64 },
    #[error("sealed message goes {got:?}, this end receives {expected:?}")]
    WrongDirection { expected: Direction, got: u64 },
    #[error("counter {0} already seen or older than the replay window: replayed message refused")]
    Replay(u64),
    #[error("authentication failed: the message was altered or sealed under another key")]
    Auth,
    #[error("keys already delivered: a second delivery under Ktemp is refused")]
    AlreadyDelivered,
}

impl From<Malformed> for ChannelError {
    fn from(m: Malformed) -> Self {
        ChannelError::Malformed(m.0)
    }
}

/// One end of a link: its key, the directions it sends and receives, and the counters. The
/// state is what a party persists (atomically, with `files::write_atomic`) between messages.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChannelState {
    pub next_send: u64,
    /// Highest counter received (0: none yet; counters start at 1).
    pub recv_max: u64,
    /// Bit i set: counter recv_max - i was received.
    pub recv_window: u64,
}

#[derive(Clone)]
pub struct Channel {
    key: SymKey,
    /// IDs of this end and the peer (bound into the associated data).
    me: u64,
    peer: u64,
    send: Direction,
    recv: Direction,
    pub state: ChannelState,
}

fn header(msg_type: u64, dir: Direction, counter: u64, from: u64, to: u64) -> Vec<u8> {
    Encoder::new(Tag::SealedHeader).u64(msg_type).u64(dir as u64).u64(counter).u64(from).u64(to).finish()
}

fn seal_raw(key: &SymKey, msg_type: u64, dir: Direction, counter: u64, from: u64, to: u64, plaintext: &[u8]) -> Result<Vec<u8>> {
    let nonce: [u8; 24] = random_bytes()?;
    let aead = XChaCha20Poly1305::new(&Key::from(*key));
    let aad = header(msg_type, dir, counter, from, to);
    let ct = aead
        .encrypt(&XNonce::from(nonce), Payload { msg: plaintext, aad: &aad })
        .map_err(|_| Error::crypto("AEAD encryption failed"))?;
    Ok(Encoder::new(Tag::Sealed).u64(msg_type).u64(dir as u64).u64(counter).bytes(&nonce).bytes(&ct).finish())
}

/// Parses and authenticates; returns (counter, plaintext). The caller checks the counter.
fn open_raw(key: &SymKey, msg_type: u64, dir: Direction, from: u64, to: u64, sealed: &[u8]) -> std::result::Result<(u64, Vec<u8>), ChannelError> {
    let f = Fields::open(sealed, Tag::Sealed, 5, "sealed message")?;
    let t = f.u64(0, "type")?;
    if t != msg_type {
        return Err(ChannelError::WrongType { expected: msg_type, got: t });
    }
    let d = f.u64(1, "direction")?;
    if Direction::from_u64(d) != Some(dir) {
        return Err(ChannelError::WrongDirection { expected: dir, got: d });
    }
    let counter = f.u64(2, "counter")?;
    let nonce: [u8; 24] = f.fixed(3, "nonce")?;
    let aead = XChaCha20Poly1305::new(&Key::from(*key));
    let aad = header(msg_type, dir, counter, from, to);
    let pt = aead.decrypt(&XNonce::from(nonce), Payload { msg: f.bytes(4), aad: &aad }).map_err(|_| ChannelError::Auth)?;
    Ok((counter, pt))
}

impl Channel {
    /// An end that sends `send` and receives the opposite direction, from a fresh state.
    pub fn new(key: SymKey, me: u64, peer: u64, send: Direction, recv: Direction) -> Self {
        Self::resume(key, me, peer, send, recv, ChannelState { next_send: 1, recv_max: 0, recv_window: 0 })
    }

    pub fn resume(key: SymKey, me: u64, peer: u64, send: Direction, recv: Direction, state: ChannelState) -> Self {
        Channel { key, me, peer, send, recv, state }
    }

    /// Seals `plaintext` as a message of type `msg_type`, with the next counter.
    pub fn seal(&mut self, msg_type: Tag, plaintext: &[u8]) -> Result<Vec<u8>> {
        self.seal_kind(msg_type as u64, plaintext)
    }

    /// As [`Channel::seal`] with a message type that is not a [`Tag`] (the card links use
    /// [`apdu_kind`]: the instruction byte is part of the type).
    pub fn seal_kind(&mut self, msg_type: u64, plaintext: &[u8]) -> Result<Vec<u8>> {
        let counter = self.state.next_send;
        let next = counter.checked_add(1).ok_or_else(|| Error::crypto("channel counter exhausted; rekey"))?;
        let out = seal_raw(&self.key, msg_type, self.send, counter, self.me, self.peer, plaintext)?;
        self.state.next_send = next;
        Ok(out)
    }

    /// Opens a message of type `msg_type` from the peer: it must authenticate under the key
    /// with this type, direction and pair of IDs, and carry a counter not seen before (within
    /// the window). Only then is the counter recorded.
    pub fn open(&mut self, msg_type: Tag, sealed: &[u8]) -> std::result::Result<Vec<u8>, ChannelError> {
        self.open_kind(msg_type as u64, sealed)
    }

    /// As [`Channel::open`] with a message type that is not a [`Tag`].
    pub fn open_kind(&mut self, msg_type: u64, sealed: &[u8]) -> std::result::Result<Vec<u8>, ChannelError> {
        let (counter, pt) = open_raw(&self.key, msg_type, self.recv, self.peer, self.me, sealed)?;
        let s = &mut self.state;
        if counter == 0 {
            return Err(ChannelError::Replay(0));
        }
        if counter > s.recv_max {
            let shift = counter - s.recv_max;
            s.recv_window = if shift >= 64 { 0 } else { s.recv_window << shift };
            s.recv_window |= 1;
            s.recv_max = counter;
        } else {
            let age = s.recv_max - counter;
            if age >= WINDOW || s.recv_window & (1u64 << age) != 0 {
                return Err(ChannelError::Replay(counter));
            }
            s.recv_window |= 1u64 << age;
        }
        Ok(pt)
    }
}

/// A sealed C <-> T message as it travels outside one process (the files of `terminal sync
/// --upload / --upload-services / --lists` and `center ingest`): the sender's and receiver's IDs
/// in clear (0 is the center) so the receiver knows which KT opens it, and the sealed message.
/// Both IDs are also in the sealed message's authenticated header: changing them here makes
/// it fail to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub from: u64,
    pub to: u64,
    pub sealed: Vec<u8>,
}

impl Transfer {
    pub fn encode(&self) -> Vec<u8> {
        Encoder::new(Tag::SealedTransfer).u64(self.from).u64(self.to).bytes(&self.sealed).finish()
    }

    pub fn decode(b: &[u8]) -> std::result::Result<Self, Malformed> {
        let f = Fields::open(b, Tag::SealedTransfer, 3, "sealed transfer")?;
        let t = Transfer { from: f.u64(0, "sender")?, to: f.u64(1, "receiver")?, sealed: f.bytes(2).to_vec() };
        t.msg_type()?;
        Ok(t)
    }

    /// The message type in the sealed header (in clear, and authenticated): what the receiver
    /// must open it as.
    pub fn msg_type(&self) -> std::result::Result<u64, Malformed> {
        sealed_type(&self.sealed)
    }
}

/// The message type of a sealed message, read from its clear header without opening it.
pub fn sealed_type(sealed: &[u8]) -> std::result::Result<u64, Malformed> {
    let f = Fields::open(sealed, Tag::Sealed, 5, "sealed message")?;
    f.u64(0, "type")
}

/// Fig. 8: the center (or the card dispenser it supplies) sends (KT, KO) or (KU, KO) to party
/// `id` under the manufacturing key Ktemp.
pub fn seal_first_delivery(ktemp: &SymKey, id: u64, key: &SymKey, ko: &SymKey) -> Result<Vec<u8>> {
    let pt = Encoder::new(Tag::KeyDelivery).bytes(key).bytes(ko).finish();
    seal_raw(ktemp, Tag::KeyDelivery as u64, Direction::Manufacturing, 1, 0, id, &pt)
}

/// The receiving side of the first delivery: accepted once (`already` says whether keys were
/// delivered before); returns (KT or KU, KO).
pub fn open_first_delivery(ktemp: &SymKey, id: u64, sealed: &[u8], already: bool) -> std::result::Result<(SymKey, SymKey), ChannelError> {
    if already {
        return Err(ChannelError::AlreadyDelivered);
    }
    let (counter, pt) = open_raw(ktemp, Tag::KeyDelivery as u64, Direction::Manufacturing, 0, id, sealed)?;
    if counter != 1 {
        return Err(ChannelError::Replay(counter));
    }
    let f = Fields::open(&pt, Tag::KeyDelivery, 2, "key delivery")?;
    Ok((f.fixed(0, "key")?, f.fixed(1, "KO")?))
}

/// The message type of a sealed APDU on a card link: the container tag of the command or
/// response ([`Tag::ApduSmCommand`], [`Tag::ApduSmResponse`]) and the instruction byte, so an
/// answer to one command never opens as the answer to another.
pub fn apdu_kind(response: bool, ins: u8) -> u64 {
    let tag = if response { Tag::ApduSmResponse } else { Tag::ApduSmCommand };
    ((tag as u64) << 8) | ins as u64
}

/// The key of one secure-messaging session on a card link (docs/apdu.md, "Secure
/// messaging"): HKDF-SHA256 over the link key (KU for D <-> U, KO for T <-> U), the link, the
/// card's IDU and both parties' fresh 16-octet randoms. A session's key is new every time, so
/// nothing recorded in an earlier session authenticates in a later one, and the counters
/// inside a session never repeat.
pub fn card_session_key(link_key: &SymKey, link: u8, idu: u64, r_host: &[u8], r_card: &[u8]) -> SymKey {
    let hk = Hkdf::<Sha256>::new(Some(SALT), link_key);
    let info = Encoder::new(Tag::SealedHeader).str("card session").u64(link as u64).u64(idu).bytes(r_host).bytes(r_card).finish();
    let mut out = [0u8; 32];
    hk.expand(&info, &mut out).expect("32 octets is a valid HKDF-SHA256 length");
    out
}

/// A fresh master secret KA from the OS.
pub fn new_master_secret() -> Result<SymKey> {
    random_bytes()
}
