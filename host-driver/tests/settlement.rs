//! The prepaid settlement system end to end, in-process: center, dispenser, virtual cards and
//! terminals on the software accelerator. Each test is a rejection path that fails if the check
//! it targets is removed. Keys are ESIGN-1536, generated once per test binary.

use std::path::PathBuf;
use std::sync::OnceLock;

use kessai::accel::software::SoftwareAccelerator;
use kessai::accel::{Accelerator, ListKind};
use kessai::apdu::{ins, sw, CardLink, Command, LinkError, Response};
use kessai::card::{Card, CardClient, Eeprom, LinkKind, SecureLink, ABNORMAL_VALUE_RISE};
use kessai::center::{Center, CenterConfig};
use kessai::crypto::esign;
use kessai::dispenser::{Dispenser, LoadFlow};
use kessai::encoding::{Encoder, Tag};
use kessai::messages::*;
use kessai::terminal::{PayFlow, Terminal};

const NOW: u64 = 1_800_000_000;
const BITS: usize = 1536;
const IDC: u64 = 7;

/// Master key and four terminal keys, made once.
fn keys() -> &'static Vec<esign::PrivateKey> {
    static K: OnceLock<Vec<esign::PrivateKey>> = OnceLock::new();
    K.get_or_init(|| (0..5).map(|_| esign::PrivateKey::generate(BITS, 32).unwrap()).collect())
}

struct World {
    dir: PathBuf,
    center: Center,
    terminal_keys: usize,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The accelerator of the test run: software, or the simulated board with
/// `KESSAI_TEST_BACKEND=sim` (as tests/common does).
fn sw_accel() -> Box<dyn Accelerator> {
    match std::env::var("KESSAI_TEST_BACKEND").as_deref() {
        Ok("sim") => {
            use kessai::accel::backend::{open, BackendSpec, SimSpec};
            open(&BackendSpec::Sim(SimSpec { quiet: true, ..Default::default() })).expect("simulated board")
        }
        _ => Box::new(SoftwareAccelerator::default()),
    }
}

impl World {
    fn new(name: &str) -> World {
        let dir = std::env::temp_dir().join(format!("kessai-settle-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = CenterConfig { bits: BITS, ..Default::default() };
        let center = Center::init_with_key(&dir.join("center"), keys()[0].clone(), config, NOW).unwrap();
        World { dir, center, terminal_keys: 1 }
    }

    fn p(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn terminal(&mut self, name: &str) -> Terminal {
        let key = keys()[self.terminal_keys].clone();
        self.terminal_keys += 1;
        let e = self.center.enroll_terminal_with_key(key, NOW).unwrap();
        Terminal::install(&self.p(name), &e, sw_accel(), NOW).unwrap()
    }

    fn reopen(&self, t: &Terminal) -> Terminal {
        Terminal::open(t.dir(), sw_accel()).unwrap()
    }

    fn card(&mut self, name: &str, value: u64) -> Card {
        let mut c = Card::manufacture(&self.p(name), &self.center.manufacturing_key().unwrap()).unwrap();
        Dispenser::new(IDC).issue_card(&mut self.center, &mut c, BITS, NOW).unwrap();
        if value > 0 {
            Dispenser::new(IDC).load(&mut self.center, &mut c, value, LoadFlow::Fig7, NOW).unwrap();
        }
        c
    }
}

/// OPEN SESSION on the terminal link under KO, as every terminal does first (Fig. 8): the
/// test then speaks to the card as a terminal would.
fn secure<'a>(w: &World, card: &'a mut Card) -> SecureLink<'a> {
    let ko = w.center.common_key().unwrap();
    SecureLink::open(card, LinkKind::Terminal, move |_| Ok(ko)).unwrap()
}

/// A terminal's certificate as its state directory holds it.
fn terminal_cert(w: &World, name: &str) -> Certificate {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(w.p(name).join("terminal.json")).unwrap()).unwrap();
    Certificate::from_bytes(Subject::Terminal, &hex::decode(v["certificate"].as_str().unwrap()).unwrap()).unwrap()
}

fn value(c: &mut Card) -> u64 {
    CardClient::new(c).status().unwrap().value
}

fn idu(c: &mut Card) -> u64 {
    CardClient::new(c).status().unwrap().idu.unwrap()
}

#[track_caller]
fn refused(r: Result<impl std::fmt::Debug, Fail>, needle: &str) -> String {
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
struct Tamper<'a, F: FnMut(u8, &mut Response)> {
    card: &'a mut Card,
    f: F,
}

impl<F: FnMut(u8, &mut Response)> CardLink for Tamper<'_, F> {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, LinkError> {
        // The card's chip itself lies: the rewrite happens before the answer is sealed.
        let f = &mut self.f;
        Ok(self.card.process_with(command, &mut |i, r| f(i, r)))
    }
}

fn flip_last(b: &mut [u8]) {
    let n = b.len();
    b[n - 1] ^= 1;
}

/// Rewrites field `i` of a canonical message.
fn rewrite(msg: &[u8], i: usize, f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let d = kessai::encoding::decode(msg).unwrap();
    let mut fields = d.fields.clone();
    f(&mut fields[i]);
    fields.iter().fold(Encoder::new(d.tag), |e, x| e.bytes(x)).finish()
}

// ---------------------------------------------------------------------------------------------

#[test]
fn pays_at_two_terminals_with_every_check_on_the_accelerator() {
    let mut w = World::new("happy");
    let mut a = w.terminal("ta");
    let mut b = w.terminal("tb");
    let mut card = w.card("u1", 10_000);
    let mut card2 = w.card("u2", 0);
    Dispenser::new(IDC).load(&mut w.center, &mut card2, 500, LoadFlow::Fig4c, NOW).unwrap();
    Dispenser::new(IDC).load(&mut w.center, &mut card2, 250, LoadFlow::Fig4c, NOW).unwrap();
    assert_eq!(value(&mut card2), 750);

    let r = a.pay(&mut card, 1_200, PayFlow::Fig9, NOW).unwrap();
    assert_eq!((r.v_before, r.v_after, r.checks, r.batches), (10_000, 8_800, 3, 1), "cert, SU, SA(load)");
    let r = b.pay(&mut card, 300, PayFlow::Fig9, NOW).unwrap();
    assert_eq!((r.v_after, r.checks, r.batches), (8_500, 4, 1), "cert, SU, SA(nT^a), ST^a");
    let r = a.pay(&mut card, 500, PayFlow::Fig5, NOW).unwrap();
    assert_eq!(r.v_after, 8_000);
    let r = b.pay(&mut card2, 750, PayFlow::Fig9, NOW).unwrap();
    assert_eq!(r.v_after, 0, "V >= v: the whole value can be spent");
    refused(b.pay(&mut card2, 1, PayFlow::Fig9, NOW), "card holds 0");
    refused(a.pay(&mut card, 8_001, PayFlow::Fig9, NOW), "card holds 8000");
    assert_eq!(value(&mut card), 8_000, "a refused payment changes nothing");
    // Recharge after payments: the center checks the last terminal's signatures.
    Dispenser::new(IDC).load(&mut w.center, &mut card, 1_000, LoadFlow::Fig7, NOW).unwrap();
    Dispenser::new(IDC).load(&mut w.center, &mut card, 1, LoadFlow::Fig4c, NOW).unwrap();
    assert_eq!(value(&mut card), 9_001);
    // Every check went to the accelerator: its VERIFY count is the terminal's.
    let stats = a.accelerator().stats().unwrap();
    assert_eq!(stats.verifies as usize, a.checks_done);
    assert_eq!(stats.valid, stats.verifies);
    assert!(a.pending_records() == 2 && b.pending_records() == 2);
}

#[test]
fn forged_or_swapped_certificates_and_signatures_are_refused() {
    let mut w = World::new("forged");
    let mut a = w.terminal("ta");
    let mut b = w.terminal("tb");
    let mut card = w.card("u1", 1_000);
    let mut other = w.card("u2", 1_000);
    a.pay(&mut card, 100, PayFlow::Fig9, NOW).unwrap();

    // SA(nU * IDU) forged.
    let mut t = Tamper { card: &mut card, f: |i, r: &mut Response| if i == ins::GET_CERTIFICATE { r.data = rewrite(&r.data, 1, |s| flip_last(s)) } };
    refused(b.pay(&mut t, 1, PayFlow::Fig9, NOW), "SA(nU * IDU)");
    // SA swapped: another card's certificate in front of this card's SU.
    let other_cert = CardClient::new(&mut secure(&w, &mut other)).certificate().unwrap().signed.to_bytes();
    let mut t = Tamper { card: &mut card, f: move |i, r: &mut Response| if i == ins::GET_CERTIFICATE { r.data = other_cert.clone() } };
    refused(b.pay(&mut t, 1, PayFlow::Fig9, NOW), "SU(R * X * V)");
    // SU forged.
    let mut t = Tamper { card: &mut card, f: |i, r: &mut Response| if i == ins::PAY_AUTH { r.data = rewrite(&r.data, 3, |s| flip_last(s)) } };
    refused(b.pay(&mut t, 1, PayFlow::Fig9, NOW), "SU(R * X * V)");
    // ST^a of the last terminal forged inside the provenance.
    let mut t = Tamper {
        card: &mut card,
        f: |i, r: &mut Response| {
            if i == ins::PAY_AUTH {
                r.data = rewrite(&r.data, 4, |p| *p = rewrite(p, 4, |s| flip_last(s)))
            }
        },
    };
    refused(b.pay(&mut t, 1, PayFlow::Fig9, NOW), "ST^a");
    // SA(nT^a * IDT^a) swapped: terminal b's certificate in place of terminal a's.
    let b_cert = terminal_cert(&w, "tb").signed.to_bytes();
    let mut t = Tamper {
        card: &mut card,
        f: move |i, r: &mut Response| {
            if i == ins::PAY_AUTH {
                r.data = rewrite(&r.data, 4, |p| *p = rewrite(p, 1, |c| *c = b_cert.clone()))
            }
        },
    };
    refused(b.pay(&mut t, 1, PayFlow::Fig9, NOW), "ST^a");
    assert_eq!(value(&mut card), 900, "nothing was spent");

    // The card refuses a forged terminal certificate (SA(nT * IDT)) and a forged ST.
    let a_cert = terminal_cert(&w, "ta").signed.to_bytes();
    let forged = Signed::from_bytes(&a_cert, "c").map(|mut s| {
        flip_last(&mut s.sig);
        s
    });
    let forged = Certificate::parse(Subject::Terminal, forged.unwrap()).unwrap();
    let err = CardClient::new(&mut secure(&w, &mut card)).pay_auth(&forged, &[1; 16]).unwrap_err();
    assert_eq!(err.sw(), Some(sw::SECURITY));
    let genuine = Certificate::from_bytes(Subject::Terminal, &a_cert).unwrap();
    let mut link = secure(&w, &mut card);
    let mut cl = CardClient::new(&mut link);
    cl.pay_auth(&genuine, &[1; 16]).unwrap();
    // ST made by terminal b's key under terminal a's certificate: swapped ST.
    let st = keys()[2].sign(HASH, b"anything").unwrap();
    assert_eq!(cl.pay_commit(1, &st).unwrap_err().sw(), Some(sw::SECURITY));
    assert_eq!(value(&mut card), 900);
}

#[test]
fn replayed_messages_from_an_earlier_session_are_refused() {
    let mut w = World::new("replay");
    let mut a = w.terminal("ta");
    let mut card = w.card("u1", 1_000);
    // Record the card's answer and the terminal's commit of one session.
    let mut seen: Vec<(u8, Response)> = Vec::new();
    {
        let mut t = Tamper { card: &mut card, f: |i, r: &mut Response| seen.push((i, r.clone())) };
        a.pay(&mut t, 100, PayFlow::Fig9, NOW).unwrap();
    }
    let old_auth = seen.iter().find(|(i, _)| *i == ins::PAY_AUTH).unwrap().1.clone();
    // Terminal side: the old answer (V = 1000) replayed into a new session is refused: R differs.
    let replay = old_auth.clone();
    let mut t = Tamper { card: &mut card, f: move |i, r: &mut Response| if i == ins::PAY_AUTH { *r = replay.clone() } };
    refused(a.pay(&mut t, 100, PayFlow::Fig9, NOW), "SU(R * X * V)");
    // Card side, cipher channel: the terminal's sealed commit of an earlier session replayed
    // into a new one does not authenticate under the new session key (6988).
    let st_old = {
        // Capture the terminal's commit by making a real session and taking its ST.
        let mut cmds: Vec<Vec<u8>> = Vec::new();
        struct Spy<'a> {
            card: &'a mut Card,
            cmds: &'a mut Vec<Vec<u8>>,
        }
        impl CardLink for Spy<'_> {
            fn transmit(&mut self, c: &[u8]) -> Result<Vec<u8>, LinkError> {
                self.cmds.push(c.to_vec());
                Ok(self.card.process(c))
            }
        }
        a.pay(&mut Spy { card: &mut card, cmds: &mut cmds }, 50, PayFlow::Fig9, NOW).unwrap();
        cmds.into_iter().find(|c| c[1] == ins::PAY_COMMIT).unwrap()
    };
    assert_eq!(value(&mut card), 850);
    let a_cert = terminal_cert(&w, "ta");
    CardClient::new(&mut secure(&w, &mut card)).pay_auth(&a_cert, &[9; 16]).unwrap();
    let r = Response::decode(&card.process(&st_old)).unwrap();
    assert_eq!(r.sw, sw::SM_INCORRECT, "replayed sealed commit");
    assert_eq!(value(&mut card), 850);
    // After a power-up there is no session at all: refused as well.
    let mut card = Card::open(card.path()).unwrap();
    let r = Response::decode(&card.process(&st_old)).unwrap();
    assert_eq!(r.sw, sw::SM_INCORRECT);
    // Signature level (a party holding KO re-seals an old ST in a new session): ST(R * X * V'
    // * IDU) of an earlier session is refused, X differs.
    let idu = idu(&mut card);
    let mut link = secure(&w, &mut card);
    let mut cl = CardClient::new(&mut link);
    let ans = cl.pay_auth(&a_cert, &[9; 16]).unwrap();
    let st = keys()[1].sign(HASH, &terminal_value_body(a_cert.id, idu, &[9; 16], &ans.x, ans.value - 50)).unwrap();
    cl.pay_commit(ans.value - 50, &st).unwrap();
    cl.pay_auth(&a_cert, &[9; 16]).unwrap();
    assert_eq!(cl.pay_commit(ans.value - 50, &st).unwrap_err().sw(), Some(sw::SECURITY), "replayed ST");
    assert_eq!(value(&mut card), 800);
    // And a commit without a flow session is refused outright.
    let mut link = secure(&w, &mut card);
    assert_eq!(CardClient::new(&mut link).pay_commit(700, &st).unwrap_err().sw(), Some(sw::CONDITIONS));
}

#[test]
fn signatures_spliced_from_another_flow_are_refused() {
    let mut w = World::new("splice");
    let mut a = w.terminal("ta");
    let mut card = w.card("u1", 1_000);
    // The provenance says "Fig. 7 recharge"; relabelled as a Fig. 4C load with the same SA, the
    // tag (LoadValue vs RechargeValue) separates the domains.
    let mut t = Tamper {
        card: &mut card,
        f: |i, r: &mut Response| {
            if i == ins::PAY_AUTH {
                r.data = rewrite(&r.data, 4, |p| {
                    let d = kessai::encoding::decode(p).unwrap();
                    *p = Encoder::new(Tag::Provenance).u64(1).u64(IDC).u64(0).bytes(&d.fields[4]).finish();
                })
            }
        },
    };
    refused(a.pay(&mut t, 1, PayFlow::Fig9, NOW), "SA(V * IDU)");
    // The card's own SU(R * X * V) offered back to it as the terminal's ST: refused.
    let a_cert = terminal_cert(&w, "ta");
    let mut link = secure(&w, &mut card);
    let mut cl = CardClient::new(&mut link);
    let ans = cl.pay_auth(&a_cert, &[3; 16]).unwrap();
    assert_eq!(cl.pay_commit(ans.value, &ans.su).unwrap_err().sw(), Some(sw::SECURITY));
    // A signature over a certificate body is not a signature over a value with the same fields.
    let cert = CardClient::new(&mut secure(&w, &mut card)).certificate().unwrap();
    let load = load_value_body(1, cert.id, IDC, 0, 1_000);
    assert!(w.center.master_public().key.verify(HASH, &load, &cert.signed.sig).is_err());
    assert_eq!(value(&mut card), 1_000);
}

#[test]
fn a_terminal_raising_the_value_locks_the_card() {
    let mut w = World::new("raise");
    let mut a = w.terminal("ta");
    let mut card = w.card("u1", 1_000);
    refused(a.pay_with_value(&mut card, 1_001, NOW), "locked");
    let s = CardClient::new(&mut card).status().unwrap();
    assert!(s.locked);
    assert_eq!(s.abnormality, ABNORMAL_VALUE_RISE);
    assert_eq!(s.value, 1_000);
    // Locked for good: paying, loading, even a genuine lower value are refused.
    refused(a.pay(&mut card, 1, PayFlow::Fig9, NOW), "locked");
    assert!(Dispenser::new(IDC).load(&mut w.center, &mut card, 5, LoadFlow::Fig7, NOW).is_err());
    let mut c2 = Card::open(card.path()).unwrap();
    assert!(CardClient::new(&mut c2).status().unwrap().locked, "the lock survives power-off");
}

#[test]
fn a_value_signed_for_another_card_is_refused() {
    let mut w = World::new("otheridu");
    let mut a = w.terminal("ta");
    let mut card = w.card("u1", 100);
    let mut other = w.card("u2", 5_000);
    let other_idu = idu(&mut other);
    // A LOAD signed for the other card's IDU, sent to this card.
    let seq = CardClient::new(&mut card).status().unwrap().seq;
    let sa = keys()[0].sign(HASH, &load_value_body(1, other_idu, IDC, seq, 5_000)).unwrap();
    assert_eq!(CardClient::new(&mut secure(&w, &mut card)).load(IDC, seq, 5_000, &sa).unwrap_err().sw(), Some(sw::SECURITY));
    // The other card's provenance (SA(5000 * IDU')) shown by this card to a terminal.
    let mut spy_prov = Vec::new();
    {
        let mut t = Tamper { card: &mut other, f: |i, r: &mut Response| if i == ins::PAY_AUTH { spy_prov = r.data.clone() } };
        a.pay(&mut t, 1, PayFlow::Fig9, NOW).unwrap();
    }
    let prov = kessai::encoding::decode(&spy_prov).unwrap().fields[4].clone();
    let mut t = Tamper {
        card: &mut card,
        f: move |i, r: &mut Response| {
            if i == ins::PAY_AUTH {
                r.data = rewrite(&r.data, 4, |p| *p = prov.clone());
            }
        },
    };
    refused(a.pay(&mut t, 1, PayFlow::Fig9, NOW), "SA(Y * X * V * IDU)");
    assert_eq!(value(&mut card), 100);
}

#[test]
fn blacklisted_and_lost_cards_are_refused() {
    let mut w = World::new("lost");
    let mut a = w.terminal("ta");
    let mut card = w.card("u1", 1_000);
    let mut fine = w.card("u2", 1_000);
    a.pay(&mut card, 1, PayFlow::Fig9, NOW).unwrap();
    w.center.report_lost(idu(&mut card)).unwrap();
    w.center.issue_lists(NOW + 10).unwrap();
    let s = a.sync_with(&mut w.center, NOW + 10).unwrap();
    assert_eq!(s.list_version, Some(2));
    refused(a.pay(&mut card, 1, PayFlow::Fig9, NOW + 20), "reported lost");
    a.pay(&mut fine, 1, PayFlow::Fig9, NOW + 20).unwrap();
    // The answer came from the accelerator's list memory, and it survives a restart.
    let id = idu(&mut card);
    assert!(a.accelerator().list_lookup(ListKind::InvalidCards, id).unwrap().found);
    let mut again = w.reopen(&a);
    assert!(again.accelerator().list_lookup(ListKind::InvalidCards, id).unwrap().found);
    refused(again.pay(&mut card, 1, PayFlow::Fig5, NOW + 20), "reported lost");
    // The center refuses to load it too.
    assert!(Dispenser::new(IDC).load(&mut w.center, &mut card, 5, LoadFlow::Fig7, NOW).unwrap_err().is_refusal());
    // A terminal whose list has expired refuses every card until it syncs.
    refused(a.pay(&mut fine, 1, PayFlow::Fig9, NOW + 8 * 86_400), "expired");
}

#[test]
fn a_copied_card_is_caught_at_the_center_and_refused_at_another_terminal() {
    let mut w = World::new("clone");
    let mut a = w.terminal("ta");
    let mut b = w.terminal("tb");
    let mut card = w.card("u1", 1_000);
    a.pay(&mut card, 100, PayFlow::Fig9, NOW).unwrap();
    std::fs::copy(w.p("u1"), w.p("u1-copy")).unwrap();
    let mut copy = Card::open(&w.p("u1-copy")).unwrap();
    a.pay(&mut card, 200, PayFlow::Fig9, NOW).unwrap();
    b.pay(&mut copy, 300, PayFlow::Fig9, NOW).unwrap();
    let ra = a.sync_with(&mut w.center, NOW).unwrap();
    assert!(ra.uploaded[0].clones.is_empty());
    let rb = b.sync_with(&mut w.center, NOW).unwrap();
    let id = idu(&mut card);
    assert_eq!(rb.uploaded[0].clones, vec![id], "the state after the first payment was spent twice");
    w.center.issue_lists(NOW + 1).unwrap();
    b.sync_with(&mut w.center, NOW + 1).unwrap();
    refused(b.pay(&mut copy, 1, PayFlow::Fig9, NOW + 2), "invalid (copied card)");
    refused(b.pay(&mut card, 1, PayFlow::Fig9, NOW + 2), "invalid (copied card)");
    let rep = w.center.report().unwrap();
    assert_eq!(rep.clones.len(), 1);
    assert_eq!(rep.cards.iter().find(|c| c.idu == id).unwrap().status, "invalid");
}

#[test]
fn old_expired_or_badly_signed_list_bundles_are_refused() {
    let mut w = World::new("lists");
    let mut a = w.terminal("ta");
    let v1 = w.center.latest_lists().unwrap().unwrap();
    refused(a.load_lists(&v1, NOW), "not newer");
    let v2 = w.center.issue_lists(NOW + 5).unwrap();
    let mut bad = v2.clone();
    flip_last(&mut bad.sig);
    refused(a.load_lists(&bad, NOW + 5), "SA(list bundle)");
    // Signed by a key that is not nA.
    let other = Signed::sign(&keys()[1], v2.body.clone()).unwrap();
    refused(a.load_lists(&other, NOW + 5), "SA(list bundle)");
    // Expired.
    refused(a.load_lists(&v2, NOW + 8 * 86_400), "expired");
    // Another master key index.
    let b = ListBundle { master_index: 2, ..ListBundle::parse(&v2.body).unwrap() };
    refused(a.load_lists(&b.sign(&keys()[0]).unwrap(), NOW + 5), "master key 2");
    assert_eq!(a.list_version(), Some(1), "nothing was taken");
    assert_eq!(a.accelerator().list_status(ListKind::InvalidCards).unwrap().version, 1);
    a.load_lists(&v2, NOW + 5).unwrap();
    refused(a.load_lists(&v2, NOW + 5), "not newer");
    assert_eq!(a.accelerator().list_status(ListKind::InvalidCards).unwrap().version, 2);
}

#[test]
fn a_batch_uploaded_twice_is_counted_once() {
    let mut w = World::new("twice");
    let mut a = w.terminal("ta");
    let mut card = w.card("u1", 1_000);
    a.pay(&mut card, 1, PayFlow::Fig9, NOW).unwrap();
    a.pay(&mut card, 2, PayFlow::Fig9, NOW).unwrap();
    let (id, bytes) = a.export_batch(NOW).unwrap().unwrap();
    // Not acknowledged: the terminal offers the same batch again.
    assert_eq!(a.export_batch(NOW).unwrap().unwrap().0, id);
    let r1 = w.center.ingest(&bytes, NOW).unwrap();
    let r2 = w.center.ingest(&bytes, NOW).unwrap();
    assert!(!r1.duplicate && r2.duplicate);
    assert!(r2.clones.is_empty(), "a re-upload is not a clone");
    let rep = w.center.report().unwrap();
    assert_eq!((rep.batches, rep.usage_records), (1, 2));
    // A tampered batch is refused and changes nothing.
    let mut s = Signed::from_bytes(&bytes, "b").unwrap();
    flip_last(&mut s.sig);
    refused(w.center.ingest(&s.to_bytes(), NOW), "ST over the batch");
    a.ack_batch(&id).unwrap();
    assert!(a.export_batch(NOW).unwrap().is_none());
}

#[test]
fn an_ingest_dropped_before_commit_loses_nothing() {
    let mut w = World::new("dropped");
    let mut a = w.terminal("ta");
    let mut card = w.card("u1", 1_000);
    a.pay(&mut card, 1, PayFlow::Fig9, NOW).unwrap();
    let (id1, b1) = a.export_batch(NOW).unwrap().unwrap();
    w.center.ingest(&b1, NOW).unwrap();
    a.ack_batch(&id1).unwrap();
    a.pay(&mut card, 2, PayFlow::Fig9, NOW).unwrap();
    let (_, b2) = a.export_batch(NOW).unwrap().unwrap();
    let err = w.center.ingest_with(&b2, NOW, &mut || Err(kessai::Error::Store("power cut".into()))).unwrap_err();
    assert!(err.to_string().contains("power cut"));
    let dir = w.center.dir().to_path_buf();
    let reopened = Center::open(&dir).unwrap();
    let rep = reopened.report().unwrap();
    assert_eq!((rep.batches, rep.usage_records), (1, 1), "the first batch is whole, the second absent");
    let mut reopened = reopened;
    let r = reopened.ingest(&b2, NOW).unwrap();
    assert!(!r.duplicate);
    assert_eq!(reopened.report().unwrap().usage_records, 2);
}

// ---------------------------------------------------------------------------------------------
// Tearing: a power cut after byte k of every card write of every flow

/// Runs `step` on a fork of `card` with the power cut after each k; checks that the area reads
/// old or new, never anything else, and that every few k the card still pays correctly.
fn tear_every_byte(
    w: &mut World,
    term: &mut Terminal,
    card: &Card,
    name: &str,
    area_new: impl Fn(&Card) -> Option<Vec<u8>>,
    step: impl Fn(&mut Card) -> u16,
    usable: bool,
    deterministic: bool,
) {
    let old = area_new(card);
    let probe = w.p(&format!("{name}-probe"));
    let _ = std::fs::remove_file(&probe);
    let mut full = card.fork(&probe).unwrap();
    assert_eq!(step(&mut full), sw::OK, "{name}: the uncut step succeeds");
    let new = area_new(&full).unwrap();
    assert_ne!(Some(&new), old.as_ref());
    let _ = &new;
    let total = Eeprom::write_len(new.len());
    let fork = w.p(&format!("{name}-fork"));
    let (mut saw_old, mut saw_new) = (0, 0);
    for k in 0..=total {
        let _ = std::fs::remove_file(&fork);
        let mut c = card.fork(&fork).unwrap();
        c.set_power_cut(Some(k));
        let s = step(&mut c);
        if deterministic {
            assert_eq!(s == sw::OK, k >= total, "{name}: k = {k}, SW {s:04X}");
        }
        drop(c);
        let mut c = Card::open(&fork).unwrap();
        let got = area_new(&c);
        if s == sw::OK {
            // Complete: the new record (a fresh key pair differs run to run, so only "new").
            assert!(got.is_some() && got != old, "{name}: k = {k}: write reported done but the area is old");
            if deterministic {
                assert_eq!(got.as_ref(), Some(&new), "{name}: k = {k}");
            }
            saw_new += 1;
        } else {
            assert_eq!(s, sw::MEMORY_FAILURE, "{name}: k = {k}");
            assert_eq!(got, old, "{name}: k = {k}: a torn write left neither the old record nor the new one");
            saw_old += 1;
        }
        if usable && (k % 97 == 0 || k + 1 >= total) {
            let before = value(&mut c);
            let r = term.pay(&mut c, 1, PayFlow::Fig9, NOW).unwrap_or_else(|e| panic!("{name}: k = {k}: {e}"));
            assert_eq!(r.v_after, before - 1);
        }
    }
    assert!(saw_old >= total.min(100) && saw_new >= 1, "{name}: {saw_old} old, {saw_new} new");
}

fn usage_bytes(c: &Card) -> Option<Vec<u8>> {
    c.usage_record_bytes().unwrap()
}

#[test]
fn cards_torn_at_every_byte_of_every_write_hold_old_or_new() {
    let mut w = World::new("tear");
    let mut t = w.terminal("ta");
    let mut card = w.card("u1", 1_000);
    t.pay(&mut card, 10, PayFlow::Fig9, NOW).unwrap();
    let master = w.center.master_public();
    let cert = CardClient::new(&mut secure(&w, &mut card)).certificate().unwrap();
    let t_cert = terminal_cert(&w, "ta");
    let t_key = keys()[1].clone();

    // Fig. 5/6/9 PAY COMMIT: the card is in a session; the commit is replayed on forks, each
    // with a copy of the host's end of the secure session.
    let r = [5u8; 16];
    let mut link = secure(&w, &mut card);
    let ans = CardClient::new(&mut link).pay_auth(&t_cert, &r).unwrap();
    let sess = link.session.clone();
    let st = t_key.sign(HASH, &terminal_value_body(t_cert.id, cert.id, &r, &ans.x, ans.value - 7)).unwrap();
    let (v_new, st2, s2) = (ans.value - 7, st.clone(), sess.clone());
    tear_every_byte(&mut w, &mut t, &card, "pay", usage_bytes, move |c| {
        CardClient::new(&mut SecureLink::resume(c, s2.clone())).pay_commit(v_new, &st2).err().and_then(|e| e.sw()).unwrap_or(sw::OK)
    }, true, true);

    // The lock written when a terminal raises the value.
    let st_up = t_key.sign(HASH, &terminal_value_body(t_cert.id, cert.id, &r, &ans.x, ans.value + 1)).unwrap();
    let v_up = ans.value + 1;
    tear_every_byte(&mut w, &mut t, &card, "lock", usage_bytes, move |c| {
        match CardClient::new(&mut SecureLink::resume(c, sess.clone())).pay_commit(v_up, &st_up).err().and_then(|e| e.sw()) {
            Some(sw::BLOCKED) => sw::OK,
            Some(s) => s,
            None => 0x0000,
        }
    }, false, true);

    // Fig. 4C LOAD (no session needed).
    let mut card = Card::open(card.path()).unwrap();
    let st = CardClient::new(&mut card).status().unwrap();
    let sa = keys()[0].sign(HASH, &load_value_body(master.index, cert.id, IDC, st.seq, st.value + 50)).unwrap();
    let (seq, v) = (st.seq, st.value + 50);
    let ku = w.center.card_link_key(cert.id).unwrap();
    let sess = SecureLink::open(&mut card, LinkKind::Dispenser, move |_| Ok(ku)).unwrap().session;
    let s2 = sess.clone();
    tear_every_byte(&mut w, &mut t, &card, "load", usage_bytes, move |c| {
        CardClient::new(&mut SecureLink::resume(c, s2.clone())).load(IDC, seq, v, &sa).err().and_then(|e| e.sw()).unwrap_or(sw::OK)
    }, true, true);

    // Fig. 7 RECHARGE COMMIT.
    let y = [8u8; 16];
    let mut link = SecureLink::resume(&mut card, sess);
    let offer = CardClient::new(&mut link).recharge_init(IDC, &y, st.value + 70).unwrap();
    let sess = link.session.clone();
    let sa = keys()[0].sign(HASH, &recharge_value_body(master.index, cert.id, IDC, &y, &offer.x, st.value + 70)).unwrap();
    tear_every_byte(&mut w, &mut t, &card, "recharge", usage_bytes, move |c| {
        CardClient::new(&mut SecureLink::resume(c, sess.clone())).recharge_commit(&sa).err().and_then(|e| e.sw()).unwrap_or(sw::OK)
    }, true, true);

    // Fig. 4B: GENERATE KEY and PERSONALIZE write 6M1.
    let blank = Card::manufacture(&w.p("blank"), &w.center.manufacturing_key().unwrap()).unwrap();
    let personal = |c: &Card| -> Option<Vec<u8>> {
        Eeprom::open(c.path()).unwrap().read(kessai::card::Area::Personal).unwrap()
    };
    tear_every_byte(&mut w, &mut t, &blank, "genkey", personal, |c| {
        CardClient::new(c).generate_key(BITS).err().and_then(|e| e.sw()).unwrap_or(sw::OK)
    }, false, false);
    let mut keyed = Card::open(&w.p("blank")).unwrap();
    let nu = CardClient::new(&mut keyed).generate_key(BITS).unwrap();
    let cert = w.center.certify_card(&nu, NOW).unwrap();
    tear_every_byte(&mut w, &mut t, &keyed, "personalize", personal, move |c| {
        CardClient::new(c).personalize(&master, &cert).err().and_then(|e| e.sw()).unwrap_or(sw::OK)
    }, false, true);
}

#[test]
fn malformed_apdus_change_nothing() {
    let mut w = World::new("malformed");
    let mut card = w.card("u1", 1_000);
    let before = std::fs::read(card.path()).unwrap();
    for (ins, data) in [
        (ins::PAY_AUTH, vec![1, 2, 3]),
        (ins::PAY_COMMIT, vec![]),
        (ins::LOAD, Encoder::new(Tag::ApduLoad).u64(1).finish()),
        (ins::RECHARGE_INIT, Encoder::new(Tag::ApduRechargeInit).u64(1).bytes(&[0; 3]).u64(5).finish()),
        (ins::READ_VALUE, Encoder::new(Tag::ApduChallenge).bytes(&[0; 15]).finish()),
        (ins::PERSONALIZE, vec![0; 300]),
    ] {
        let cmd = Command::new(ins, 0, 0, data, None).encode();
        // In clear: the card holds its link keys and takes sealed commands only.
        let r = Response::decode(&card.process(&cmd)).unwrap();
        assert_eq!(r.sw, sw::SM_MISSING, "INS {ins:02X} in clear");
        // Sealed in a genuine session: the data field itself is refused.
        let r = Response::decode(&secure(&w, &mut card).transmit(&cmd).unwrap()).unwrap();
        assert!(r.sw == sw::WRONG_DATA || r.sw == sw::CONDITIONS, "INS {ins:02X}: SW {:04X}", r.sw);
    }
    assert_eq!(std::fs::read(card.path()).unwrap(), before);
    assert_eq!(value(&mut card), 1_000);
}

#[test]
fn a_board_with_too_few_key_slots_checks_one_by_one_and_expired_cards_are_refused() {
    let mut w = World::new("slots");
    let mut a = w.terminal("ta");
    let mut card = w.card("u1", 1_000);
    a.pay(&mut card, 1, PayFlow::Fig9, NOW).unwrap();
    // Master plus one scratch slot: nU and nT^a cannot both be loaded for one batch.
    let small: Box<dyn Accelerator> = Box::new(SoftwareAccelerator::new(2, 4096, 256));
    let mut b = {
        let e = w.center.enroll_terminal_with_key(keys()[2].clone(), NOW).unwrap();
        Terminal::install(&w.p("tb"), &e, small, NOW).unwrap()
    };
    let r = b.pay(&mut card, 1, PayFlow::Fig9, NOW).unwrap();
    assert_eq!((r.checks, r.batches), (4, 4));
    let mut t = Tamper { card: &mut card, f: |i, r: &mut Response| if i == ins::PAY_AUTH { r.data = rewrite(&r.data, 3, |s| flip_last(s)) } };
    refused(b.pay(&mut t, 1, PayFlow::Fig9, NOW), "SU(R * X * V)");
    // Card certificates expire (5 years by default); the terminal's clock decides.
    let later = NOW + 6 * 365 * 86_400;
    let fresh = w.center.issue_lists(later - 10).unwrap();
    a.load_lists(&fresh, later - 10).unwrap();
    refused(a.pay(&mut card, 1, PayFlow::Fig9, later), "expired");
}
