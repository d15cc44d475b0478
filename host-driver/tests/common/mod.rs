//! Shared by the Figs. 8-17 tests: a world of center, terminals and cards with 1536-bit keys
//! made once per test binary. The accelerator comes from `accel::backend::open`, the same code
//! path as the CLI: the software backend by default, the simulated board with
//! `KESSAI_TEST_BACKEND=sim`.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use kessai::accel::backend::{open, BackendSpec, SimSpec};
use kessai::accel::Accelerator;
use kessai::apdu::{CardLink, LinkError, Response};
use kessai::card::{Card, CardClient, LinkKind, SecureLink};
use kessai::center::{Center, CenterConfig};
use kessai::crypto::esign;
use kessai::dispenser::{Dispenser, LoadFlow};
use kessai::encoding::Encoder;
use kessai::messages::*;
use kessai::terminal::Terminal;

pub const NOW: u64 = 1_800_000_000;
pub const DAY: u64 = 86_400;
pub const BITS: usize = 1536;
pub const IDC: u64 = 7;

/// Keys 0 and 1 are master keys; the rest go to terminals in turn.
pub fn keys() -> &'static Vec<esign::PrivateKey> {
    static K: OnceLock<Vec<esign::PrivateKey>> = OnceLock::new();
    K.get_or_init(|| (0..7).map(|_| esign::PrivateKey::generate(BITS, 32).unwrap()).collect())
}

pub fn accel() -> Box<dyn Accelerator> {
    let spec = match std::env::var("KESSAI_TEST_BACKEND").as_deref() {
        Ok("sim") => BackendSpec::Sim(SimSpec { quiet: true, ..Default::default() }),
        _ => BackendSpec::Software,
    };
    let a = open(&spec).expect("accelerator backend");
    if matches!(spec, BackendSpec::Sim(_)) {
        assert!(a.name().contains("sim"), "KESSAI_TEST_BACKEND=sim but the backend is {}", a.name());
    }
    a
}

pub struct World {
    pub dir: PathBuf,
    pub center: Center,
    next_key: usize,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl World {
    pub fn new(name: &str) -> World {
        let dir = std::env::temp_dir().join(format!("kessai-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = CenterConfig { bits: BITS, ..Default::default() };
        let center = Center::init_with_key(&dir.join("center"), keys()[0].clone(), config, NOW).unwrap();
        World { dir, center, next_key: 2 }
    }

    pub fn p(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn terminal(&mut self, name: &str) -> Terminal {
        let key = keys()[self.next_key].clone();
        self.next_key = if self.next_key + 1 >= keys().len() { 2 } else { self.next_key + 1 };
        let e = self.center.enroll_terminal_with_key(key, NOW).unwrap();
        Terminal::install(&self.p(name), &e, accel(), NOW).unwrap()
    }

    pub fn reopen(&self, t: Terminal) -> Terminal {
        let dir = t.dir().to_path_buf();
        drop(t);
        Terminal::open(&dir, accel()).unwrap()
    }

    pub fn card(&mut self, name: &str, value: u64) -> Card {
        let mut c = Card::manufacture(&self.p(name), &self.center.manufacturing_key().unwrap()).unwrap();
        Dispenser::new(IDC).issue_card(&mut self.center, &mut c, BITS, NOW).unwrap();
        if value > 0 {
            Dispenser::new(IDC).load(&mut self.center, &mut c, value, LoadFlow::Fig7, NOW).unwrap();
        }
        c
    }
}

/// OPEN SESSION on the terminal link under KO (Fig. 8), as every terminal does first.
pub fn secure<'a>(center: &Center, card: &'a mut Card) -> SecureLink<'a> {
    let ko = center.common_key().unwrap();
    SecureLink::open(card, LinkKind::Terminal, move |_| Ok(ko)).unwrap()
}

/// OPEN SESSION on the dispenser link under KU, as the dispenser does.
pub fn secure_dispenser<'a>(center: &Center, card: &'a mut Card) -> SecureLink<'a> {
    let idu = CardClient::new(card).status().unwrap().idu.unwrap();
    let ku = center.card_link_key(idu).unwrap();
    SecureLink::open(card, LinkKind::Dispenser, move |_| Ok(ku)).unwrap()
}

impl World {
    /// A credit card (Figs. 13-17) with setting number `ns`, credit valid for a year.
    pub fn card_credit(&mut self, name: &str, ns: &[u8]) -> Card {
        let mut c = self.card(name, 0);
        Dispenser::new(IDC).setup_credit(&mut self.center, &mut c, ns, NOW + 365 * DAY, NOW).unwrap();
        c
    }

    /// A card without a signing key (Fig. 10), loaded by Fig. 4C.
    pub fn card_keyless(&mut self, name: &str, value: u64) -> Card {
        let mut c = Card::manufacture(&self.p(name), &self.center.manufacturing_key().unwrap()).unwrap();
        Dispenser::new(IDC).issue_keyless_card(&mut self.center, &mut c, NOW).unwrap();
        if value > 0 {
            Dispenser::new(IDC).load(&mut self.center, &mut c, value, LoadFlow::Fig4c, NOW).unwrap();
        }
        c
    }
}

pub fn value(c: &mut Card) -> u64 {
    CardClient::new(c).status().unwrap().value
}

pub fn idu(c: &mut Card) -> u64 {
    CardClient::new(c).status().unwrap().idu.unwrap()
}

#[track_caller]
pub fn refused(r: Result<impl std::fmt::Debug, Fail>, needle: &str) -> String {
    match r {
        Err(f @ Fail::Refused { .. }) => {
            let s = f.to_string();
            assert!(s.contains(needle), "refusal should mention {needle:?}: {s}");
            s
        }
        other => panic!("expected a refusal mentioning {needle:?}, got {other:?}"),
    }
}

/// A link that lets a test rewrite what the card answers: a fake card (altered chip, holding
/// the link keys), so its lies arrive sealed and only the signature checks can catch them.
pub struct Tamper<'a, F: FnMut(u8, &mut Response)> {
    pub card: &'a mut Card,
    pub f: F,
}

impl<F: FnMut(u8, &mut Response)> CardLink for Tamper<'_, F> {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, LinkError> {
        // The card's chip itself lies: the rewrite happens before the answer is sealed.
        let f = &mut self.f;
        Ok(self.card.process_with(command, &mut |i, r| f(i, r)))
    }
}

/// Rewrites the provenance inside a PAY AUTH answer (the card's 6M2 as a forger would).
pub fn with_provenance(data: &[u8], f: impl FnOnce(&mut Vec<Vec<u8>>)) -> Vec<u8> {
    rewrite(data, 4, |prov| {
        let d = kessai::encoding::decode(prov).unwrap();
        let mut fields = d.fields.clone();
        f(&mut fields);
        *prov = fields.iter().fold(kessai::encoding::Encoder::new(d.tag), |e, x| e.bytes(x)).finish();
    })
}

/// Rewrites field `i` of a canonical message.
pub fn rewrite(msg: &[u8], i: usize, f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let d = kessai::encoding::decode(msg).unwrap();
    let mut fields = d.fields.clone();
    f(&mut fields[i]);
    fields.iter().fold(Encoder::new(d.tag), |e, x| e.bytes(x)).finish()
}
