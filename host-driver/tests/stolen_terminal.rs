//! Figs. 10-12: time stamps and stolen terminals. Every test is a refusal that fails if the
//! check it targets is removed.

mod common;

use common::*;
use kessai::accel::ListKind;
use kessai::apdu::{ins, sw};
use kessai::card::{CardClient, ABNORMAL_DETAINED};
use kessai::messages::*;
use kessai::terminal::PayFlow;

#[test]
fn stolen_terminal_cards_updated_before_the_theft_pass_after_are_detained() {
    let mut w = World::new("stolen");
    let mut s = w.terminal("ts"); // to be stolen
    let mut b = w.terminal("tb");
    let mut before = w.card("before", 5_000);
    let mut before5 = w.card("before5", 5_000);
    let mut after = w.card("after", 5_000);

    // S ticks twice and reports t = 2 to the center; cards paid at S now carry t^a = 2.
    assert_eq!(s.tick().unwrap(), 1);
    assert_eq!(s.tick().unwrap(), 2);
    s.sync_with(&mut w.center, NOW).unwrap();
    s.pay(&mut before, 100, PayFlow::Fig9, NOW).unwrap(); // Fig. 12
    s.pay(&mut before5, 100, PayFlow::Fig5, NOW).unwrap(); // Fig. 10's exchange (no nonces)
    assert_eq!(CardClient::new(&mut before).status().unwrap().provenance, "payment, time-stamped (Figs. 10-12)");
    // It ticks again but is stolen before it reports: the center knows t^j = 2.
    s.tick().unwrap();
    assert_eq!(w.center.report_stolen(s.idt()).unwrap(), 2);
    w.center.issue_lists(NOW).unwrap();
    // The thief uses it: this card now holds t^a = 3.
    s.pay(&mut after, 100, PayFlow::Fig9, NOW).unwrap();
    // The stolen terminal can neither report ticks nor upload any more.
    refused(s.sync_with(&mut w.center, NOW), "troubled");

    b.sync_with(&mut w.center, NOW).unwrap();
    let hit = b.accelerator().list_lookup(ListKind::TroubledTerminals, s.idt()).unwrap();
    assert!(hit.found && hit.t == 2, "{hit:?}");
    assert_eq!(hit.ts0, ts0_tag(&b.lists().unwrap().troubled[0].ts0), "the board holds a digest of TS0, not TS0");

    let r = b.pay(&mut before, 100, PayFlow::Fig9, NOW).unwrap();
    assert_eq!((r.v_after, r.checks), (4_800, 5), "cert, SU, SA(nT^a), ST^a, ST^a(TS^a * S^a)");
    let r = b.pay(&mut before5, 100, PayFlow::Fig5, NOW).unwrap();
    assert_eq!((r.v_after, r.checks), (4_800, 5));

    let idu_after = idu(&mut after);
    refused(b.pay(&mut after, 100, PayFlow::Fig9, NOW), "detained");
    let st = CardClient::new(&mut after).status().unwrap();
    assert!(st.locked && st.abnormality == ABNORMAL_DETAINED, "{st:?}");
    assert_eq!(st.value, 4_900, "value untouched");
    let d = b.detentions().unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].idu, d[0].idt_a, d[0].t_a, d[0].t_j), (idu_after, s.idt(), 3, 2));
    // A detained card is refused everywhere, by the card itself.
    refused(b.pay(&mut after, 1, PayFlow::Fig9, NOW), "locked");

    // The list survives a restart of terminal B (reloaded into the accelerator).
    let mut b = w.reopen(b);
    let mut before2 = before;
    b.pay(&mut before2, 100, PayFlow::Fig9, NOW).unwrap();
}

/// A card whose time stamp was forged, or that lies about t, is refused (not detained).
#[test]
fn forged_time_stamps_and_lies_about_t_are_refused() {
    let mut w = World::new("forged-ts");
    let mut s = w.terminal("ts");
    let mut b = w.terminal("tb");
    let mut card = w.card("u", 5_000);
    for _ in 0..3 {
        s.tick().unwrap();
    }
    s.sync_with(&mut w.center, NOW).unwrap(); // t^j will be 3
    s.pay(&mut card, 100, PayFlow::Fig9, NOW).unwrap(); // t^a = 3
    w.center.report_stolen(s.idt()).unwrap();
    w.center.issue_lists(NOW).unwrap();
    b.sync_with(&mut w.center, NOW).unwrap();

    // 1. The signature over the time stamp altered.
    let r = b.pay(
        &mut Tamper { card: &mut card, f: |i, r: &mut kessai::apdu::Response| if i == ins::PAY_AUTH { r.data = with_provenance(&r.data, |f| f[6][10] ^= 1) } },
        100,
        PayFlow::Fig9,
        NOW,
    );
    refused(r, "time stamp");
    // 2. The card lies about t: claims 2 (before the theft as well) with the stamp made for 3.
    let r = b.pay(
        &mut Tamper { card: &mut card, f: |i, r: &mut kessai::apdu::Response| if i == ins::PAY_AUTH { r.data = with_provenance(&r.data, |f| f[5] = 2u64.to_be_bytes().to_vec()) } },
        100,
        PayFlow::Fig9,
        NOW,
    );
    refused(r, "time stamp");
    // 3. A lie upward (t = 9 > t^j) is not believed either: the stamp does not verify, so the
    //    card is refused but not detained.
    let r = b.pay(
        &mut Tamper { card: &mut card, f: |i, r: &mut kessai::apdu::Response| if i == ins::PAY_AUTH { r.data = with_provenance(&r.data, |f| f[5] = 9u64.to_be_bytes().to_vec()) } },
        100,
        PayFlow::Fig9,
        NOW,
    );
    refused(r, "time stamp");
    assert!(b.detentions().unwrap().is_empty());
    // 4. The thief signs a stamp with the stolen key over a TS it made up (it cannot compute
    //    TS_1: it holds TS_3 only).
    let thief_key = common::keys()[2].clone();
    let r = b.pay(
        &mut Tamper {
            card: &mut card,
            f: |i, r: &mut kessai::apdu::Response| {
                if i == ins::PAY_AUTH {
                    r.data = with_provenance(&r.data, |f| {
                        let idt = Certificate::from_bytes(Subject::Terminal, &f[1]).unwrap().id;
                        let made_up = [0x5a; 32];
                        f[5] = 1u64.to_be_bytes().to_vec();
                        f[6] = thief_key.sign(HASH, &time_stamp_body(idt, 1, &made_up, &f[4])).unwrap();
                    })
                }
            },
        },
        100,
        PayFlow::Fig9,
        NOW,
    );
    refused(r, "time stamp");
    // 5. The time stamp stripped off (an old-style payment record).
    let r = b.pay(
        &mut Tamper {
            card: &mut card,
            f: |i, r: &mut kessai::apdu::Response| {
                if i == ins::PAY_AUTH {
                    r.data = with_provenance(&r.data, |f| {
                        f.truncate(5);
                        f[0] = 3u64.to_be_bytes().to_vec();
                    })
                }
            },
        },
        100,
        PayFlow::Fig9,
        NOW,
    );
    refused(r, "no time stamp");
    // The genuine card still passes (t^a = 3 = t^j).
    assert_eq!(b.pay(&mut card, 100, PayFlow::Fig9, NOW).unwrap().v_after, 4_800);
    assert!(!CardClient::new(&mut card).status().unwrap().locked);
}

/// DETAIN needs the session terminal's signature; a stranger cannot lock a card.
#[test]
fn detain_needs_the_terminals_signature() {
    let mut w = World::new("detain-sig");
    let mut t = w.terminal("t");
    let mut card = w.card("u", 1_000);
    let cert = {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(w.p("t").join("terminal.json")).unwrap()).unwrap();
        Certificate::from_bytes(Subject::Terminal, &hex::decode(v["certificate"].as_str().unwrap()).unwrap()).unwrap()
    };
    let mut link = secure(&w.center, &mut card);
    let mut c = CardClient::new(&mut link);
    c.pay_auth(&cert, &nonce().unwrap()).unwrap();
    assert_eq!(c.detain(9, 9, &[1; 192]).unwrap_err().sw(), Some(sw::SECURITY));
    // Without a session: conditions not satisfied.
    assert_eq!(c.detain(9, 9, &[1; 192]).unwrap_err().sw(), Some(sw::CONDITIONS));
    assert!(!c.status().unwrap().locked);
    t.pay(&mut card, 10, PayFlow::Fig9, NOW).unwrap();
}

/// The center refuses a tick report going backwards and one with a bad signature.
#[test]
fn tick_reports_only_move_forward() {
    let mut w = World::new("ticks");
    let mut t = w.terminal("t");
    t.tick().unwrap();
    t.tick().unwrap();
    let old = t.tick_report(NOW).unwrap();
    t.tick().unwrap();
    assert_eq!(w.center.record_tick(&t.tick_report(NOW).unwrap(), NOW).unwrap(), 3);
    refused(w.center.record_tick(&old, NOW), "below");
    let mut forged = t.tick_report(NOW).unwrap();
    forged.body = tick_report_body(t.idt(), 50, NOW);
    refused(w.center.record_tick(&forged, NOW), "ST of terminal");
    // The state on disk moved forward with the ticks: a restart keeps t.
    let t = w.reopen(t);
    assert_eq!(t.t(), 3);
}
