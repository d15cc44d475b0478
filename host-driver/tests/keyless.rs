//! Fig. 10: a card without a signing key, authenticated by the center's SA(IDU), with the time
//! stamps of Figs. 10-11 deciding about values written by a stolen terminal. Every test is a
//! refusal that fails if the check it targets is removed.

mod common;

use common::*;
use kessai::apdu::{ins, Response};
use kessai::card::{CardClient, ABNORMAL_DETAINED};
use kessai::dispenser::{Dispenser, LoadFlow};
use kessai::messages::*;
use kessai::terminal::PayFlow;

#[test]
fn a_card_without_a_signing_key_pays_on_sa_idu() {
    let mut w = World::new("keyless");
    let mut a = w.terminal("ta");
    let mut b = w.terminal("tb");
    let mut card = w.card_keyless("u", 1_000);
    let cert = CardClient::new(&mut secure(&w.center, &mut card)).identity().unwrap();
    assert!(matches!(cert, CardIdentity::Keyless(_)) && cert.key().is_none());
    // Asked for Fig. 9, the terminal runs Fig. 10: SA(IDU) and the center's SA(V * IDU).
    let r = a.pay(&mut card, 100, PayFlow::Fig9, NOW).unwrap();
    assert_eq!((r.flow, r.v_after, r.checks), (PayFlow::Fig10, 900, 2), "SA(IDU), SA(V * IDU)");
    let r = b.pay(&mut card, 100, PayFlow::Fig9, NOW).unwrap();
    assert_eq!((r.v_after, r.checks), (800, 3), "SA(IDU), SA(nT^a * IDT^a), ST^a(V' * IDU)");

    // SA(IDU) forged.
    let mut t = Tamper { card: &mut card, f: |i, r: &mut Response| if i == ins::GET_CERTIFICATE { r.data = rewrite(&r.data, 1, |s| { let n = s.len(); s[n - 1] ^= 1 }) } };
    refused(a.pay(&mut t, 1, PayFlow::Fig9, NOW), "SA(IDU)");
    // The value raised inside the card: ST^a(V' * IDU) no longer covers it.
    let mut t = Tamper { card: &mut card, f: |i, r: &mut Response| if i == ins::PAY_AUTH { r.data = rewrite(&r.data, 0, |v| *v = 5_000u64.to_be_bytes().to_vec()) } };
    refused(a.pay(&mut t, 1, PayFlow::Fig9, NOW), "ST^a");
    // A card showing SA(IDU) but answering with a signature is not what it claims.
    let mut t = Tamper { card: &mut card, f: |i, r: &mut Response| if i == ins::PAY_AUTH { r.data = rewrite(&r.data, 3, |s| *s = vec![1; 192]) } };
    refused(a.pay(&mut t, 1, PayFlow::Fig9, NOW), "no signing key");
    assert_eq!(value(&mut card), 800, "nothing spent by the refusals");
    // Loads by Fig. 4C (the provenance vouches for V); Fig. 7 and credit need a card key.
    let d = Dispenser::new(IDC);
    assert_eq!(d.load(&mut w.center, &mut card, 50, LoadFlow::Fig4c, NOW).unwrap().v_new, 850);
    refused(d.load(&mut w.center, &mut card, 50, LoadFlow::Fig7, NOW), "no signing key");
    refused(d.setup_credit(&mut w.center, &mut card, b"4711", NOW + DAY, NOW), "no signing key");
    assert_eq!(value(&mut card), 850);
}

#[test]
fn keyless_cards_updated_by_a_stolen_terminal_before_pass_after_are_detained() {
    let mut w = World::new("keyless-stolen");
    let mut s = w.terminal("ts");
    let mut b = w.terminal("tb");
    let mut before = w.card_keyless("before", 1_000);
    let mut after = w.card_keyless("after", 1_000);
    s.tick().unwrap();
    s.tick().unwrap();
    s.sync_with(&mut w.center, NOW).unwrap(); // the center has t = 2
    assert_eq!(s.pay(&mut before, 100, PayFlow::Fig9, NOW).unwrap().flow, PayFlow::Fig10); // t^a = 2
    assert_eq!(w.center.report_stolen(s.idt()).unwrap(), 2);
    w.center.issue_lists(NOW).unwrap();
    s.tick().unwrap();
    s.pay(&mut after, 100, PayFlow::Fig9, NOW).unwrap(); // t^a = 3, by the thief
    b.sync_with(&mut w.center, NOW).unwrap();

    // t^a = 2 <= t^j = 2: accepted once ST^a(TS^a * S^a) verifies against TS^a = F^2(TS_0).
    let r = b.pay(&mut before, 100, PayFlow::Fig9, NOW).unwrap();
    assert_eq!((r.v_after, r.checks), (800, 4), "SA(IDU), SA(nT^a), ST^a, ST^a(TS^a * S^a)");
    // t^a = 3 > t^j: refused and detained.
    let idu_after = idu(&mut after);
    refused(b.pay(&mut after, 100, PayFlow::Fig9, NOW), "detained");
    let st = CardClient::new(&mut after).status().unwrap();
    assert!(st.locked && st.abnormality == ABNORMAL_DETAINED, "{st:?}");
    assert_eq!(st.value, 900);
    let d = b.detentions().unwrap();
    assert_eq!((d.len(), d[0].idu, d[0].t_a, d[0].t_j), (1, idu_after, 3, 2));
    refused(b.pay(&mut after, 1, PayFlow::Fig9, NOW), "locked");
}

#[test]
fn keyless_forged_stamps_and_lies_about_t_are_refused() {
    let mut w = World::new("keyless-forged");
    let mut s = w.terminal("ts");
    let mut b = w.terminal("tb");
    let mut card = w.card_keyless("u", 1_000);
    for _ in 0..3 {
        s.tick().unwrap();
    }
    s.sync_with(&mut w.center, NOW).unwrap();
    s.pay(&mut card, 100, PayFlow::Fig9, NOW).unwrap(); // t^a = 3 = t^j
    w.center.report_stolen(s.idt()).unwrap();
    w.center.issue_lists(NOW).unwrap();
    b.sync_with(&mut w.center, NOW).unwrap();

    // The stamp's signature altered.
    let mut t = Tamper { card: &mut card, f: |i, r: &mut Response| if i == ins::PAY_AUTH { r.data = with_provenance(&r.data, |f| f[6][10] ^= 1) } };
    refused(b.pay(&mut t, 100, PayFlow::Fig9, NOW), "time stamp");
    // The card lies about t, downwards and upwards: the stamp was made for 3.
    for lie in [2u64, 1, 4, 9] {
        let mut t = Tamper { card: &mut card, f: move |i, r: &mut Response| if i == ins::PAY_AUTH { r.data = with_provenance(&r.data, |f| f[5] = lie.to_be_bytes().to_vec()) } };
        refused(b.pay(&mut t, 100, PayFlow::Fig9, NOW), "time stamp");
    }
    // The stamp stripped (an unstamped payment record of a listed terminal).
    let mut t = Tamper {
        card: &mut card,
        f: |i, r: &mut Response| {
            if i == ins::PAY_AUTH {
                r.data = with_provenance(&r.data, |f| {
                    f.truncate(5);
                    f[0] = 3u64.to_be_bytes().to_vec();
                })
            }
        },
    };
    refused(b.pay(&mut t, 100, PayFlow::Fig9, NOW), "no time stamp");
    assert!(b.detentions().unwrap().is_empty(), "a lie is refused, not detained");
    assert!(!CardClient::new(&mut card).status().unwrap().locked);
    // The genuine card passes.
    assert_eq!(b.pay(&mut card, 100, PayFlow::Fig9, NOW).unwrap().v_after, 800);
}
