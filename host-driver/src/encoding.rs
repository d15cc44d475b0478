//! Canonical encoding of everything the protocol signs (the patent's `a * b`).
//!
//! ```text
//! "KSAI"  u16 tag  u16 count  { u32 len  len octets }*count
//! ```
//! All integers big-endian. The tag says which message this is (domain separation: a signature
//! over one kind never verifies as another), the count and the per-field lengths make the split
//! into fields unique, and decoding accepts exactly one byte string per message (no trailing
//! bytes, no non-minimal big integers). Written by hand because it is 60 lines and the format,
//! not a serialization library's, is what gets signed and documented (docs/encoding.md).

use num_bigint::BigUint;

const MAGIC: &[u8; 4] = b"KSAI";

/// Message types, one per signature the patent's flows make. Numbers are stable: never reuse one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Tag {
    /// SA(nT * IDT): the center certifies a terminal key (Fig. 4A).
    TerminalCertificate = 0x0101,
    /// SA(nU * IDU): the center certifies a card key (Fig. 4B).
    CardCertificate = 0x0102,
    /// SA(IDC): the center certifies a dispenser / issuing company.
    CompanyCertificate = 0x0103,
    /// SA(V * IDU): a value loaded by the center (Fig. 4C, 7).
    LoadValue = 0x0201,
    /// SU(V): the card signs its current value for a terminal (Fig. 5, 6).
    CardValue = 0x0202,
    /// ST(V' * IDU): the terminal signs the value after a payment (Fig. 5, 6, 9).
    TerminalValue = 0x0203,
    /// A usage-management record (Fig. 9); never signed alone, carried inside a [`Tag::UsageBatch`].
    UsageRecord = 0x0204,
    /// ST(IDT * batch id * records): a terminal's signed upload of usage records (Fig. 9).
    UsageBatch = 0x0205,
    /// SU(Y * X * V * V'): the card asks for a recharge from V to V' (Fig. 7).
    RechargeRequest = 0x0206,
    /// SA(Y * X * V' * IDU): the center's answer to a recharge request (Fig. 7).
    RechargeValue = 0x0207,
    /// Hashed, never signed: h = H(IDU, R^a, X, IDT^a, V'), the usage-management digest (Fig. 9).
    UsageDigest = 0x0208,
    /// A signed, versioned list bundle from the center (invalid cards, troubled terminals).
    ListBundle = 0x0301,
    /// ST(TS * S): a time-stamped terminal signature (Figs. 10-12).
    TimeStamp = 0x0401,
    /// Hashed, never signed: one step TS_{i+1} = H(TS_i) of a terminal's time stamp (Fig. 11).
    TimeStampStep = 0x0402,
    /// ST(IDT * t): a terminal reports its update count t to the center (Fig. 11).
    TickReport = 0x0403,
    /// ST(IDT * IDU * R * IDT^a * t^a): a terminal tells a card to detain itself (Figs. 10-12).
    Detain = 0x0404,
    /// SA_old(nA_new) and SA_new(nA_old): a master key rollover announcement.
    MasterRollover = 0x0104,
    /// SA(IDU): the center certifies the ID of a card without a signing key (Fig. 10).
    CardIdCertificate = 0x0106,
    /// SU(M * IDU): a card-signed credit service record (Fig. 17).
    ServiceRecord = 0x0501,
    /// SA(IDU * expiry): the center authorizes a card for credit service (Figs. 13-17).
    CreditCertificate = 0x0105,
    /// SU(R * X): the card answers a terminal's challenge in a credit session (Figs. 15-17).
    CreditAuth = 0x0502,
    /// ST(R * X * Nc): the terminal registers a password on the card (Figs. 13, 15).
    SetPassword = 0x0503,
    /// ST(IDT * batch id * records): a terminal's signed upload of service records (2M6).
    ServiceBatch = 0x0504,
    /// One service record (IDU, D, V, ...) inside a [`Tag::ServiceBatch`]; never signed alone.
    ServiceEntry = 0x0505,

    // 0x7Fxx: containers for storage and transport. Nothing is ever signed under these tags;
    // they exist so every byte string a party parses has the same strict decoder.
    /// A signed message in transit: [body, signature].
    Envelope = 0x7F01,
    /// Where a card's value came from (load, recharge or payment) with its signatures.
    Provenance = 0x7F02,
    /// The card's area 6M1 (keys, certificate) as stored in its EEPROM.
    CardArea1 = 0x7F03,
    /// The card's area 6M2 (value and provenance, lock state) as stored in its EEPROM.
    CardArea2 = 0x7F04,
    /// The credit part of 6M2: Ns, Nc, try counters, credit certificate, last record M.
    CardCredit = 0x7F05,
    /// A sealed (AEAD) message of the cipher channel (Fig. 8): type, direction, counter, nonce,
    /// ciphertext.
    Sealed = 0x7F06,
    /// The associated data of a sealed message (never sent, only authenticated).
    SealedHeader = 0x7F07,
    /// Keys delivered under Ktemp (Fig. 8): key, KO.
    KeyDelivery = 0x7F08,
    /// The card's key area in its EEPROM (Fig. 8): Ktemp (until the delivery), KU, KO.
    CardKeys = 0x7F09,
    /// APDU data fields (docs/apdu.md), one tag per command or response layout.
    ApduStatus = 0x7F10,
    ApduPublicKey = 0x7F11,
    ApduPersonalize = 0x7F12,
    ApduLoad = 0x7F13,
    ApduChallenge = 0x7F14,
    ApduValue = 0x7F15,
    ApduRechargeInit = 0x7F16,
    ApduRechargeOffer = 0x7F17,
    ApduRechargeCommit = 0x7F18,
    ApduPayAuth = 0x7F19,
    ApduPayCommit = 0x7F1A,
    ApduDetain = 0x7F1B,
    ApduCreditSetup = 0x7F1C,
    ApduCreditAuth = 0x7F1D,
    ApduCreditInfo = 0x7F1E,
    ApduSecret = 0x7F1F,
    ApduSetPassword = 0x7F20,
    ApduServiceRecord = 0x7F21,
    /// The plaintext inside a sealed command APDU (secure messaging): P1-P2, data.
    ApduSmCommand = 0x7F22,
    /// The plaintext inside a sealed response APDU: status word, data.
    ApduSmResponse = 0x7F23,
    /// OPEN SESSION answer: IDU, the card's random.
    ApduSession = 0x7F24,
    /// A sealed C <-> T message as it travels (a file, a link): sender ID, receiver ID (0: the
    /// center), the [`Tag::Sealed`] message. Both IDs are also in the authenticated header.
    SealedTransfer = 0x7F25,
    /// The center's acknowledgement of an upload (C -> T, sealed): the batch's tag
    /// ([`Tag::UsageBatch`] or [`Tag::ServiceBatch`]), the batch id.
    UploadAck = 0x7F26,
    /// What a terminal needs to follow master key rollovers (C -> T, sealed): its certificate
    /// under the current key, then the signed announcements, oldest first.
    RolloverDelivery = 0x7F27,
}

impl Tag {
    pub fn from_u16(v: u16) -> Option<Tag> {
        use Tag::*;
        [
            TerminalCertificate,
            CardCertificate,
            CompanyCertificate,
            LoadValue,
            CardValue,
            TerminalValue,
            UsageRecord,
            ListBundle,
            TimeStamp,
            TimeStampStep,
            TickReport,
            Detain,
            MasterRollover,
            CardIdCertificate,
            ServiceRecord,
            CreditCertificate,
            CreditAuth,
            SetPassword,
            ServiceBatch,
            ServiceEntry,
            CardCredit,
            Sealed,
            SealedHeader,
            KeyDelivery,
            CardKeys,
            UsageBatch,
            RechargeRequest,
            RechargeValue,
            UsageDigest,
            Envelope,
            Provenance,
            CardArea1,
            CardArea2,
            ApduStatus,
            ApduPublicKey,
            ApduPersonalize,
            ApduLoad,
            ApduChallenge,
            ApduValue,
            ApduRechargeInit,
            ApduRechargeOffer,
            ApduRechargeCommit,
            ApduPayAuth,
            ApduPayCommit,
            ApduDetain,
            ApduCreditSetup,
            ApduCreditAuth,
            ApduCreditInfo,
            ApduSecret,
            ApduSetPassword,
            ApduServiceRecord,
            ApduSmCommand,
            ApduSmResponse,
            ApduSession,
            SealedTransfer,
            UploadAck,
            RolloverDelivery,
        ]
        .into_iter()
        .find(|t| *t as u16 == v)
    }
}

/// Builds one canonical message.
#[derive(Debug)]
pub struct Encoder {
    tag: Tag,
    fields: Vec<Vec<u8>>,
}

impl Encoder {
    pub fn new(tag: Tag) -> Self {
        Encoder { tag, fields: Vec::new() }
    }
    pub fn bytes(mut self, b: &[u8]) -> Self {
        self.fields.push(b.to_vec());
        self
    }
    pub fn str(self, s: &str) -> Self {
        self.bytes(s.as_bytes())
    }
    /// Money and counters: always 8 octets, so 5 and 0x0005 cannot differ.
    pub fn u64(self, v: u64) -> Self {
        self.bytes(&v.to_be_bytes())
    }
    /// A big integer (a modulus, say) as minimal big-endian octets; zero is the empty string.
    pub fn uint(self, v: &BigUint) -> Self {
        let b = if v.bits() == 0 { Vec::new() } else { v.to_bytes_be() };
        self.bytes(&b)
    }
    pub fn finish(self) -> Vec<u8> {
        let count = u16::try_from(self.fields.len()).expect("at most 65535 fields");
        let mut out = Vec::with_capacity(8 + self.fields.iter().map(|f| 4 + f.len()).sum::<usize>());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.tag as u16).to_be_bytes());
        out.extend_from_slice(&count.to_be_bytes());
        for f in &self.fields {
            let len = u32::try_from(f.len()).expect("field under 4 GiB");
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(f);
        }
        out
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message too short: {0}")]
    Truncated(&'static str),
    #[error("bad magic, expected \"KSAI\"")]
    Magic,
    #[error("unknown message tag 0x{0:04x}")]
    UnknownTag(u16),
    #[error("message tag {got:?}, expected {expected:?}")]
    WrongTag { expected: Tag, got: Tag },
    #[error("{0} trailing bytes after the last field")]
    Trailing(usize),
    #[error("field {index}: {what}")]
    Field { index: usize, what: String },
    #[error("{got} fields, expected {expected}")]
    Count { expected: usize, got: usize },
}

/// A decoded canonical message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub tag: Tag,
    pub fields: Vec<Vec<u8>>,
}

pub fn decode(msg: &[u8]) -> Result<Decoded, DecodeError> {
    if msg.len() < 8 {
        return Err(DecodeError::Truncated("header"));
    }
    if &msg[..4] != MAGIC {
        return Err(DecodeError::Magic);
    }
    let raw_tag = u16::from_be_bytes([msg[4], msg[5]]);
    let tag = Tag::from_u16(raw_tag).ok_or(DecodeError::UnknownTag(raw_tag))?;
    let count = u16::from_be_bytes([msg[6], msg[7]]) as usize;
    let mut rest = &msg[8..];
    let mut fields = Vec::with_capacity(count);
    for _ in 0..count {
        if rest.len() < 4 {
            return Err(DecodeError::Truncated("field length"));
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        rest = &rest[4..];
        if rest.len() < len {
            return Err(DecodeError::Truncated("field body"));
        }
        fields.push(rest[..len].to_vec());
        rest = &rest[len..];
    }
    if !rest.is_empty() {
        return Err(DecodeError::Trailing(rest.len()));
    }
    Ok(Decoded { tag, fields })
}

impl Decoded {
    pub fn expect(self, tag: Tag, count: usize) -> Result<Self, DecodeError> {
        if self.tag != tag {
            return Err(DecodeError::WrongTag { expected: tag, got: self.tag });
        }
        if self.fields.len() != count {
            return Err(DecodeError::Count { expected: count, got: self.fields.len() });
        }
        Ok(self)
    }
    pub fn u64(&self, index: usize) -> Result<u64, DecodeError> {
        let f = &self.fields[index];
        let arr: [u8; 8] = f.as_slice().try_into().map_err(|_| DecodeError::Field {
            index,
            what: format!("integer of {} octets, expected 8", f.len()),
        })?;
        Ok(u64::from_be_bytes(arr))
    }
    pub fn uint(&self, index: usize) -> Result<BigUint, DecodeError> {
        let f = &self.fields[index];
        if f.first() == Some(&0) {
            return Err(DecodeError::Field { index, what: "big integer with a leading zero octet".into() });
        }
        Ok(BigUint::from_bytes_be(f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout_is_as_documented() {
        let m = Encoder::new(Tag::LoadValue).u64(500).bytes(b"U1").finish();
        assert_eq!(
            hex::encode(&m),
            "4b534149020100020000000800000000000001f4000000025531"
        );
    }

    #[test]
    fn shifting_bytes_between_fields_changes_the_encoding() {
        let a = Encoder::new(Tag::CardCertificate).bytes(b"ab").bytes(b"c").finish();
        let b = Encoder::new(Tag::CardCertificate).bytes(b"a").bytes(b"bc").finish();
        assert_ne!(a, b);
        let c = Encoder::new(Tag::TerminalCertificate).bytes(b"ab").bytes(b"c").finish();
        assert_ne!(a, c, "the tag separates domains");
    }

    #[test]
    fn rejects_malformed() {
        let m = Encoder::new(Tag::UsageRecord).u64(1).finish();
        assert_eq!(decode(&m[..m.len() - 1]), Err(DecodeError::Truncated("field body")));
        let mut t = m.clone();
        t.push(0);
        assert_eq!(decode(&t), Err(DecodeError::Trailing(1)));
        let mut bad = m.clone();
        bad[4] = 0xff;
        assert!(matches!(decode(&bad), Err(DecodeError::UnknownTag(_))));
        assert_eq!(decode(b"XXXX\x01\x01\x00\x00"), Err(DecodeError::Magic));
        let d = decode(&m).unwrap();
        assert!(d.clone().expect(Tag::LoadValue, 1).is_err());
        assert!(d.clone().expect(Tag::UsageRecord, 2).is_err());
        let e = decode(&Encoder::new(Tag::CardValue).bytes(&[0, 1]).finish()).unwrap();
        assert!(e.uint(0).is_err());
        assert!(e.u64(0).is_err());
    }

    proptest! {
        #[test]
        fn round_trip(fields in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8),
                      v in any::<u64>(), tag_ix in 0usize..10) {
            let tags = [Tag::TerminalCertificate, Tag::CardCertificate, Tag::CompanyCertificate, Tag::LoadValue,
                        Tag::CardValue, Tag::TerminalValue, Tag::UsageRecord, Tag::ListBundle, Tag::TimeStamp,
                        Tag::ServiceRecord];
            let tag = tags[tag_ix];
            let mut e = Encoder::new(tag).u64(v);
            for f in &fields { e = e.bytes(f); }
            let m = e.finish();
            let d = decode(&m).unwrap();
            prop_assert_eq!(d.tag, tag);
            prop_assert_eq!(d.u64(0).unwrap(), v);
            prop_assert_eq!(&d.fields[1..], &fields[..]);
        }

        /// Two different field lists never encode to the same bytes.
        #[test]
        fn injective(a in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..6), 0..4),
                     b in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..6), 0..4)) {
            let enc = |fs: &Vec<Vec<u8>>| fs.iter().fold(Encoder::new(Tag::ListBundle), |e, f| e.bytes(f)).finish();
            prop_assert_eq!(a == b, enc(&a) == enc(&b));
        }
    }
}
