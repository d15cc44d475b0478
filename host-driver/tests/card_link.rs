//! Fig. 8 on the card links: every APDU between a terminal (KO) or the dispenser (KU) and a
//! card travels sealed in a secure-messaging session (docs/apdu.md). A ciphertext altered or
//! replayed on the wire is refused by the card (6988 / 6989) and by the terminal or dispenser,
//! and nothing changes: not the card's EEPROM, not the terminal's records.

mod common;

use common::*;
use kessai::apdu::{ins, sw, CardLink, Command, LinkError, Response};
use kessai::card::{Area, Card, CardClient, Eeprom};
use kessai::dispenser::{Dispenser, LoadFlow};
use kessai::terminal::{CreditFlow, PayFlow};

type Hook<'a> = Box<dyn FnMut(u8, &mut Vec<u8>) + 'a>;

/// The wire between host and card, seen by a man in the middle: raw (sealed) command and
/// answer bytes, with the instruction byte (which stays in clear).
struct Wire<'a> {
    card: &'a mut Card,
    cmd: Hook<'a>,
    resp: Hook<'a>,
}

impl<'a> Wire<'a> {
    fn new(card: &'a mut Card) -> Self {
        Wire { card, cmd: Box::new(|_, _| {}), resp: Box::new(|_, _| {}) }
    }
}

impl CardLink for Wire<'_> {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, LinkError> {
        let ins = command.get(1).copied().unwrap_or(0);
        let mut c = command.to_vec();
        (self.cmd)(ins, &mut c);
        let mut r = self.card.process(&c);
        (self.resp)(ins, &mut r);
        Ok(r)
    }
}

/// Flips one bit of the ciphertext in a sealed command (before its two Le bytes) or answer
/// (before its two status bytes).
fn flip_ciphertext(raw: &mut [u8]) {
    let n = raw.len();
    raw[n - 3] ^= 0x10;
}

fn eeprom(c: &Card) -> Vec<u8> {
    std::fs::read(c.path()).unwrap()
}

#[test]
fn every_command_after_issue_travels_sealed() {
    let mut w = World::new("cl-sealed");
    let mut t = w.terminal("t");
    let mut card = w.card("u", 1_000);
    let mut seen: Vec<(u8, u8)> = Vec::new();
    {
        let mut wire = Wire::new(&mut card);
        wire.cmd = Box::new(|i, c| seen.push((i, c[0])));
        t.pay(&mut wire, 100, PayFlow::Fig9, NOW).unwrap();
    }
    // OPEN SESSION in clear, the rest sealed (CLA 84).
    assert_eq!(seen[0], (ins::OPEN_SESSION, 0x80));
    assert!(seen.len() >= 4 && seen[1..].iter().all(|(_, cla)| *cla == 0x84), "{seen:02x?}");
    // A command in clear to a card holding its keys: 6987, whatever it is.
    let r = Response::decode(&card.process(&Command::new(ins::GET_CERTIFICATE, 0, 0, vec![], Some(65536)).encode())).unwrap();
    assert_eq!(r.sw, sw::SM_MISSING);
    // GET STATUS stays public.
    assert_eq!(value(&mut card), 900);
}

#[test]
fn tampered_ciphertext_on_the_terminal_link_is_refused_and_changes_nothing() {
    let mut w = World::new("cl-tamper-t");
    let mut t = w.terminal("t");
    let mut card = w.card("u", 1_000);
    let before = eeprom(&card);
    let pending = t.pending_records();
    for target in [ins::GET_CERTIFICATE, ins::PAY_AUTH, ins::PAY_COMMIT] {
        // Altered command: the card answers 6988 and the terminal refuses.
        let mut wire = Wire::new(&mut card);
        wire.cmd = Box::new(move |i, c| if i == target { flip_ciphertext(c) });
        let msg = refused(t.pay(&mut wire, 100, PayFlow::Fig9, NOW), "cipher channel");
        drop(wire);
        assert!(msg.contains("6988"), "{msg}");
        assert_eq!(eeprom(&card), before, "INS {target:02X}: the card changed");
        // Altered answer: the terminal refuses it (the card did nothing yet on these two).
        if target != ins::PAY_COMMIT {
            let mut wire = Wire::new(&mut card);
            wire.resp = Box::new(move |i, r| if i == target { flip_ciphertext(r) });
            let msg = refused(t.pay(&mut wire, 100, PayFlow::Fig9, NOW), "cipher channel");
            drop(wire);
            assert!(msg.contains("authentication failed"), "{msg}");
            assert_eq!(eeprom(&card), before);
        }
    }
    assert_eq!(t.pending_records(), pending, "no usage record kept for a refused payment");
    assert_eq!(t.pay(&mut card, 100, PayFlow::Fig9, NOW).unwrap().v_after, 900);
}

#[test]
fn replayed_ciphertext_on_the_terminal_link_is_refused_and_changes_nothing() {
    let mut w = World::new("cl-replay-t");
    let mut t = w.terminal("t");
    let mut card = w.card("u", 1_000);
    let mut commit = Vec::new();
    let mut auth_answer = Vec::new();
    {
        let mut wire = Wire::new(&mut card);
        wire.cmd = Box::new(|i, c| if i == ins::PAY_COMMIT { commit = c.clone() });
        wire.resp = Box::new(|i, r| if i == ins::PAY_AUTH { auth_answer = r.clone() });
        t.pay(&mut wire, 100, PayFlow::Fig9, NOW).unwrap();
    }
    let after_one = eeprom(&card);
    // The same sealed PAY COMMIT again, in the same session: counter seen, 6989.
    let r = Response::decode(&card.process(&commit)).unwrap();
    assert_eq!(r.sw, sw::SM_REPLAY);
    assert_eq!(eeprom(&card), after_one, "a replayed commit changed the card");
    assert_eq!(value(&mut card), 900, "spent once");
    // In a later session (new key) it does not even authenticate: 6988.
    let _ = secure(&w.center, &mut card);
    assert_eq!(Response::decode(&card.process(&commit)).unwrap().sw, sw::SM_INCORRECT);
    assert_eq!(eeprom(&card), after_one);
    // Terminal side: the card's sealed answer of the earlier session (V = 1000) replayed into
    // a new session is refused before any signature is looked at.
    let pending = t.pending_records();
    let mut wire = Wire::new(&mut card);
    let old = auth_answer.clone();
    wire.resp = Box::new(move |i, r| if i == ins::PAY_AUTH { *r = old.clone() });
    refused(t.pay(&mut wire, 100, PayFlow::Fig9, NOW), "cipher channel");
    drop(wire);
    // Within one session: the answer to GET CERTIFICATE replayed as the answer to PAY AUTH.
    let mut cert_answer = Vec::new();
    let mut wire = Wire::new(&mut card);
    wire.resp = Box::new(move |i, r| {
        if i == ins::GET_CERTIFICATE {
            cert_answer = r.clone();
        } else if i == ins::PAY_AUTH {
            *r = cert_answer.clone();
        }
    });
    let msg = refused(t.pay(&mut wire, 100, PayFlow::Fig9, NOW), "cipher channel");
    drop(wire);
    assert!(msg.contains("type"), "{msg}");
    assert_eq!(eeprom(&card), after_one);
    assert_eq!(t.pending_records(), pending);
}

/// The counter itself: an answer replayed within one session under the same instruction.
#[test]
fn a_replayed_answer_with_a_used_counter_is_refused() {
    let mut w = World::new("cl-counter");
    let mut t = w.terminal("t");
    let mut card = w.card_credit("u", b"4711");
    let idu = idu(&mut card);
    let mut first = None;
    let mut wire = Wire::new(&mut card);
    wire.resp = Box::new(move |i, r| {
        if i == ins::VERIFY_SETTING {
            match &first {
                None => first = Some(r.clone()),
                Some(f) => *r = f.clone(),
            }
        }
    });
    let msg = refused(t.register_password(&mut wire, &[idu], &[b"0000", b"4711"], b"271828", true, NOW), "cipher channel");
    drop(wire);
    assert!(msg.contains("replayed"), "{msg}");
    // The card never stored a password: the registration still has to happen.
    refused(t.credit_pay(&mut card, &[b"271828"], 10, CreditFlow::Fig17, NOW), "no password");
}

#[test]
fn plain_answers_cannot_complete_a_flow() {
    let mut w = World::new("cl-strip");
    let mut t = w.terminal("t");
    let mut card = w.card("u", 1_000);
    let before = eeprom(&card);
    // A man in the middle strips the seal and answers a bare 9000.
    let mut wire = Wire::new(&mut card);
    wire.resp = Box::new(|i, r| if i == ins::PAY_AUTH { *r = vec![0x90, 0x00] });
    refused(t.pay(&mut wire, 100, PayFlow::Fig9, NOW), "in clear");
    drop(wire);
    assert_eq!(eeprom(&card), before);
}

#[test]
fn tampered_or_replayed_ciphertext_on_the_dispenser_link_is_refused() {
    let mut w = World::new("cl-disp");
    let mut card = w.card("u", 1_000);
    let d = Dispenser::new(IDC);
    // Altered commands: READ VALUE / LOAD (Fig. 4C), RECHARGE INIT / COMMIT (Fig. 7).
    for (flow, target) in [(LoadFlow::Fig4c, ins::READ_VALUE), (LoadFlow::Fig4c, ins::LOAD), (LoadFlow::Fig7, ins::RECHARGE_INIT), (LoadFlow::Fig7, ins::RECHARGE_COMMIT)] {
        let before = eeprom(&card);
        let mut wire = Wire::new(&mut card);
        wire.cmd = Box::new(move |i, c| if i == target { flip_ciphertext(c) });
        let msg = refused(d.load(&mut w.center, &mut wire, 500, flow, NOW), "cipher channel");
        drop(wire);
        assert!(msg.contains("6988"), "{target:02X}: {msg}");
        assert_eq!(eeprom(&card), before, "INS {target:02X}");
        // Altered answers.
        let mut wire = Wire::new(&mut card);
        wire.resp = Box::new(move |i, r| if i == target { flip_ciphertext(r) });
        refused(d.load(&mut w.center, &mut wire, 500, flow, NOW), "cipher channel");
        drop(wire);
        if target != ins::LOAD && target != ins::RECHARGE_COMMIT {
            assert_eq!(eeprom(&card), before, "INS {target:02X}");
        }
    }
    // The dispenser link is keyed with this card's KU: a session opened on it with KO (or
    // another card's KU) gets 6988 for its first command.
    let ko = w.center.common_key().unwrap();
    let mut l = kessai::card::SecureLink::open(&mut card, kessai::card::LinkKind::Dispenser, move |_| Ok(ko)).unwrap();
    assert_eq!(CardClient::new(&mut l).status().unwrap_err().sw(), Some(sw::SM_INCORRECT));
    assert_eq!(value(&mut card), 1_000 + 500 + 500, "the two loads whose answer (not command) was altered went through on the card");
    // Replay: the sealed RECHARGE COMMIT applied once only.
    let mut commit = Vec::new();
    {
        let mut wire = Wire::new(&mut card);
        wire.cmd = Box::new(|i, c| if i == ins::RECHARGE_COMMIT { commit = c.clone() });
        d.load(&mut w.center, &mut wire, 5, LoadFlow::Fig7, NOW).unwrap();
    }
    let after = eeprom(&card);
    assert_eq!(Response::decode(&card.process(&commit)).unwrap().sw, sw::SM_REPLAY);
    let _ = secure_dispenser(&w.center, &mut card);
    assert_eq!(Response::decode(&card.process(&commit)).unwrap().sw, sw::SM_INCORRECT);
    assert_eq!(eeprom(&card), after);
    assert_eq!(value(&mut card), 2_005);
}

#[test]
fn ktemp_serves_the_first_delivery_only() {
    let mut w = World::new("cl-ktemp");
    let card = w.card("u", 0);
    let idu = {
        let mut c = Card::open(card.path()).unwrap();
        idu(&mut c)
    };
    // Ktemp is gone from the key area once KU and KO are in.
    let keys = Eeprom::open(card.path()).unwrap().read(Area::Keys).unwrap().unwrap();
    assert!(kessai::encoding::decode(&keys).unwrap().fields[0].is_empty(), "Ktemp still on the card");
    // A second delivery: refused in clear (6987) and sealed (6985).
    let delivery = w.center.card_key_delivery(idu).unwrap();
    let mut card = Card::open(card.path()).unwrap();
    let before = eeprom(&card);
    assert_eq!(CardClient::new(&mut card).deliver_keys(&delivery).unwrap_err().sw(), Some(sw::SM_MISSING));
    assert_eq!(CardClient::new(&mut secure(&w.center, &mut card)).deliver_keys(&delivery).unwrap_err().sw(), Some(sw::CONDITIONS));
    assert_eq!(eeprom(&card), before);
    // A delivery sealed for another card is refused, and the card stays without keys.
    let mut blank = Card::manufacture(&w.p("blank"), &w.center.manufacturing_key().unwrap()).unwrap();
    let mut c = CardClient::new(&mut blank);
    let nu = c.generate_key(BITS).unwrap();
    let cert = w.center.certify_card(&nu, NOW).unwrap();
    c.personalize(&w.center.master_public(), &cert).unwrap();
    assert_eq!(c.deliver_keys(&delivery).unwrap_err().sw(), Some(sw::SECURITY));
    let mut wrong_ktemp = w.center.card_key_delivery(cert.id).unwrap();
    let n = wrong_ktemp.len();
    wrong_ktemp[n - 1] ^= 1;
    assert_eq!(c.deliver_keys(&wrong_ktemp).unwrap_err().sw(), Some(sw::SECURITY));
    let r = Response::decode(&blank.process(&Command::new(ins::OPEN_SESSION, 2, 0, kessai::encoding::Encoder::new(kessai::encoding::Tag::ApduChallenge).bytes(&[1; 16]).finish(), Some(65536)).encode())).unwrap();
    assert_eq!(r.sw, sw::CONDITIONS, "no keys, no session");
    CardClient::new(&mut blank).deliver_keys(&w.center.card_key_delivery(cert.id).unwrap()).unwrap();
    let _ = secure(&w.center, &mut blank);
}
