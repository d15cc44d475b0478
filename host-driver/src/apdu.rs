//! ISO/IEC 7816-4 command and response APDUs: the card's interface (docs/apdu.md).
//!
//! Hand-written rather than taken from a crate: the codec is ~100 lines, it must be strict in
//! exactly the ways docs/apdu.md states (all four cases, short and extended length, Lc = 0
//! refused, no trailing bytes), and it has to run unchanged on the card side, where a crate's
//! allocator and feature assumptions would be in the way. The crates we looked at either do only
//! short length or only one side of the link.

use std::fmt;

/// The class byte of every Kessai command (proprietary class, no secure messaging, channel 0).
pub const CLA: u8 = 0x80;
/// The class byte of a sealed command (proprietary class, secure messaging, channel 0).
pub const CLA_SM: u8 = 0x84;

/// Instruction bytes (docs/apdu.md).
pub mod ins {
    pub const GET_STATUS: u8 = 0x10;
    pub const GET_CERTIFICATE: u8 = 0x12;
    pub const OPEN_SESSION: u8 = 0x14;
    pub const GENERATE_KEY: u8 = 0x20;
    pub const PERSONALIZE: u8 = 0x22;
    pub const DELIVER_KEYS: u8 = 0x24;
    pub const LOAD: u8 = 0x30;
    pub const READ_VALUE: u8 = 0x32;
    pub const RECHARGE_INIT: u8 = 0x34;
    pub const RECHARGE_COMMIT: u8 = 0x36;
    pub const PAY_AUTH: u8 = 0x40;
    pub const PAY_COMMIT: u8 = 0x42;
    pub const DETAIN: u8 = 0x44;
    pub const CREDIT_SETUP: u8 = 0x50;
    pub const CREDIT_AUTH: u8 = 0x52;
    pub const VERIFY_SETTING: u8 = 0x54;
    pub const SET_PASSWORD: u8 = 0x56;
    pub const VERIFY_PASSWORD: u8 = 0x58;
    pub const SIGN_SERVICE: u8 = 0x5A;
}

/// Status words (ISO 7816-4 meanings).
pub mod sw {
    pub const OK: u16 = 0x9000;
    /// Memory failure: an EEPROM write did not complete (power cut).
    pub const MEMORY_FAILURE: u16 = 0x6581;
    pub const WRONG_LENGTH: u16 = 0x6700;
    /// Security status not satisfied: a signature did not verify.
    pub const SECURITY: u16 = 0x6982;
    /// Authentication method blocked: the card has locked itself.
    pub const BLOCKED: u16 = 0x6983;
    /// Secure messaging expected: the card holds its link keys and takes this command sealed only.
    pub const SM_MISSING: u16 = 0x6987;
    /// Sealed command refused: it does not authenticate (altered, or sealed in another
    /// session or under another key), or no session is open.
    pub const SM_INCORRECT: u16 = 0x6988;
    /// Sealed command refused: its counter was seen before in this session (replayed).
    pub const SM_REPLAY: u16 = 0x6989;
    /// Conditions of use not satisfied: wrong life-cycle stage, no session, stale state.
    pub const CONDITIONS: u16 = 0x6985;
    /// Incorrect parameters in the data field.
    pub const WRONG_DATA: u16 = 0x6A80;
    /// Not enough memory space (a record larger than its EEPROM slot).
    pub const NO_SPACE: u16 = 0x6A84;
    pub const WRONG_P1P2: u16 = 0x6B00;
    pub const INS_NOT_SUPPORTED: u16 = 0x6D00;
    pub const CLA_NOT_SUPPORTED: u16 = 0x6E00;
    pub const UNKNOWN: u16 = 0x6F00;
    /// Verification failed (setting number, password); the low nibble is the tries left.
    pub const VERIFY_FAILED: u16 = 0x63C0;

    pub fn name(sw: u16) -> &'static str {
        match sw {
            OK => "OK",
            MEMORY_FAILURE => "memory failure (write interrupted)",
            WRONG_LENGTH => "wrong length",
            SECURITY => "security status not satisfied (signature did not verify)",
            BLOCKED => "card locked",
            SM_MISSING => "secure messaging expected (command sent in clear)",
            SM_INCORRECT => "sealed command did not authenticate (altered, or no session)",
            SM_REPLAY => "sealed command replayed (counter seen before)",
            CONDITIONS => "conditions of use not satisfied",
            WRONG_DATA => "incorrect data field",
            NO_SPACE => "not enough memory space",
            WRONG_P1P2 => "wrong P1-P2",
            INS_NOT_SUPPORTED => "instruction not supported",
            CLA_NOT_SUPPORTED => "class not supported",
            s if s & 0xFFF0 == VERIFY_FAILED => "verification failed (tries left in the low nibble)",
            _ => "unknown status",
        }
    }
}

/// Largest Ne: extended length, Le = 0000.
pub const MAX_NE: usize = 65536;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    pub cla: u8,
    pub ins: u8,
    pub p1: u8,
    pub p2: u8,
    pub data: Vec<u8>,
    /// Ne, the most response bytes expected: `None` for none (cases 1 and 3).
    pub le: Option<usize>,
}

impl Command {
    pub fn new(ins: u8, p1: u8, p2: u8, data: Vec<u8>, le: Option<usize>) -> Self {
        Command { cla: CLA, ins, p1, p2, data, le }
    }

    /// Short form where it fits (Nc ≤ 255, Ne ≤ 256), extended otherwise.
    pub fn encode(&self) -> Vec<u8> {
        assert!(self.data.len() <= 65535, "Nc at most 65535");
        assert!(self.le.is_none_or(|n| (1..=MAX_NE).contains(&n)), "Ne 1..=65536");
        let mut out = vec![self.cla, self.ins, self.p1, self.p2];
        let extended = self.data.len() > 255 || self.le.is_some_and(|n| n > 256);
        if !self.data.is_empty() {
            if extended {
                out.push(0);
                out.extend_from_slice(&(self.data.len() as u16).to_be_bytes());
            } else {
                out.push(self.data.len() as u8);
            }
            out.extend_from_slice(&self.data);
        }
        if let Some(n) = self.le {
            if extended {
                if self.data.is_empty() {
                    out.push(0);
                }
                out.extend_from_slice(&((n % 65536) as u16).to_be_bytes());
            } else {
                out.push((n % 256) as u8);
            }
        }
        out
    }

    /// Parses a command APDU; the error is the status word to answer with.
    pub fn decode(b: &[u8]) -> Result<Self, u16> {
        if b.len() < 4 {
            return Err(sw::WRONG_LENGTH);
        }
        let (cla, ins, p1, p2) = (b[0], b[1], b[2], b[3]);
        let body = &b[4..];
        let ne = |short: u8| if short == 0 { 256 } else { short as usize };
        let ne_ext = |hi: u8, lo: u8| match u16::from_be_bytes([hi, lo]) {
            0 => MAX_NE,
            n => n as usize,
        };
        let (data, le) = match body.len() {
            0 => (Vec::new(), None),                // case 1
            1 => (Vec::new(), Some(ne(body[0]))),   // case 2S
            _ if body[0] != 0 => {
                let lc = body[0] as usize;
                match body.len() - 1 {
                    n if n == lc => (body[1..].to_vec(), None),                          // case 3S
                    n if n == lc + 1 => (body[1..1 + lc].to_vec(), Some(ne(body[1 + lc]))), // case 4S
                    _ => return Err(sw::WRONG_LENGTH),
                }
            }
            3 => (Vec::new(), Some(ne_ext(body[1], body[2]))), // case 2E
            n if n > 3 => {
                let lc = u16::from_be_bytes([body[1], body[2]]) as usize;
                if lc == 0 {
                    return Err(sw::WRONG_LENGTH);
                }
                match n - 3 {
                    m if m == lc => (body[3..].to_vec(), None),                                       // case 3E
                    m if m == lc + 2 => (body[3..3 + lc].to_vec(), Some(ne_ext(body[3 + lc], body[4 + lc]))), // case 4E
                    _ => return Err(sw::WRONG_LENGTH),
                }
            }
            _ => return Err(sw::WRONG_LENGTH),
        };
        Ok(Command { cla, ins, p1, p2, data, le })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub data: Vec<u8>,
    pub sw: u16,
}

impl Response {
    pub fn ok(data: Vec<u8>) -> Self {
        Response { data, sw: sw::OK }
    }
    pub fn status(sw: u16) -> Self {
        Response { data: Vec::new(), sw }
    }
    pub fn encode(&self) -> Vec<u8> {
        let mut v = self.data.clone();
        v.extend_from_slice(&self.sw.to_be_bytes());
        v
    }
    pub fn decode(b: &[u8]) -> Result<Self, LinkError> {
        if b.len() < 2 {
            return Err(LinkError(format!("response of {} bytes, expected at least the 2 status bytes", b.len())));
        }
        let (data, s) = b.split_at(b.len() - 2);
        Ok(Response { data: data.to_vec(), sw: u16::from_be_bytes([s[0], s[1]]) })
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SW {:04X} ({})", self.sw, sw::name(self.sw))
    }
}

/// The link to a card failed (no card, reader error): no status word came back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("card link: {0}")]
pub struct LinkError(pub String);

/// Anything that carries APDUs to a card: the virtual card itself, later a PC/SC reader.
pub trait CardLink {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, LinkError>;

    /// Sends `cmd` and parses the answer.
    fn exchange(&mut self, cmd: &Command) -> Result<Response, LinkError> {
        Response::decode(&self.transmit(&cmd.encode())?)
    }
}

impl<L: CardLink + ?Sized> CardLink for &mut L {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, LinkError> {
        (**self).transmit(command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(c: Command) -> Vec<u8> {
        let b = c.encode();
        assert_eq!(Command::decode(&b), Ok(c));
        b
    }

    #[test]
    fn four_cases_short_and_extended() {
        assert_eq!(round(Command::new(0x10, 0, 0, vec![], None)), vec![0x80, 0x10, 0, 0]);
        assert_eq!(round(Command::new(0x10, 0, 0, vec![], Some(256))), vec![0x80, 0x10, 0, 0, 0]);
        assert_eq!(round(Command::new(0x10, 1, 2, vec![7, 8], None)), vec![0x80, 0x10, 1, 2, 2, 7, 8]);
        assert_eq!(round(Command::new(0x10, 1, 2, vec![7], Some(5))), vec![0x80, 0x10, 1, 2, 1, 7, 5]);
        assert_eq!(round(Command::new(0x10, 0, 0, vec![], Some(MAX_NE))), vec![0x80, 0x10, 0, 0, 0, 0, 0]);
        let big = vec![0xAB; 300];
        let b = round(Command::new(0x40, 0, 0, big.clone(), None));
        assert_eq!(&b[4..7], &[0, 0x01, 0x2C]);
        let b = round(Command::new(0x40, 0, 0, big, Some(MAX_NE)));
        assert_eq!(&b[b.len() - 2..], &[0, 0]);
        let b = round(Command::new(0x40, 0, 0, vec![1], Some(1000)));
        assert_eq!(b, vec![0x80, 0x40, 0, 0, 0, 0, 1, 1, 0x03, 0xE8]);
    }

    #[test]
    fn malformed_commands_are_wrong_length() {
        for bad in [&[0x80u8, 0x10, 0][..], &[0x80, 0x10, 0, 0, 3, 1, 2], &[0x80, 0x10, 0, 0, 0, 0, 0, 1], &[0x80, 0x10, 0, 0, 0, 0]] {
            assert_eq!(Command::decode(bad), Err(sw::WRONG_LENGTH), "{bad:02x?}");
        }
        // Extended with Lc = 0 is not a valid encoding.
        assert_eq!(Command::decode(&[0x80, 0x10, 0, 0, 0, 0, 0, 9]), Err(sw::WRONG_LENGTH));
    }

    #[test]
    fn responses() {
        let r = Response { data: vec![1, 2], sw: sw::SECURITY };
        assert_eq!(r.encode(), vec![1, 2, 0x69, 0x82]);
        assert_eq!(Response::decode(&r.encode()).unwrap(), r);
        assert!(Response::decode(&[0x90]).is_err());
    }
}
