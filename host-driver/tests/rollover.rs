//! Master key rollover: cards and terminals under the old key keep working until the old key's
//! grace period ends; then everything under it is refused.

mod common;

use common::*;
use kessai::card::CardClient;
use kessai::dispenser::{Dispenser, LoadFlow};
use kessai::messages::*;
use kessai::terminal::PayFlow;

#[test]
fn old_and_new_keys_work_together_until_the_old_one_expires() {
    let mut w = World::new("rollover");
    let mut a = w.terminal("ta"); // enrolled under key 1
    let mut c_old_terminal = w.terminal("tc"); // stays behind (no sync)
    let mut old = w.card("old", 5_000); // certified under key 1
    assert_eq!(CardClient::new(&mut secure(&w.center, &mut old)).certificate().unwrap().master_index, 1);

    let new_master = w.center.roll_master_with_key(keys()[1].clone(), NOW, 10 * DAY).unwrap();
    assert_eq!(new_master.index, 2);
    // A terminal that has not followed the rollover refuses the new bundle (unknown index).
    let bundle = w.center.latest_lists().unwrap().unwrap();
    refused(c_old_terminal.load_lists(&bundle, NOW), "master key 2");
    // A forged announcement (someone else's key as "key 2") is refused and changes nothing.
    let (chain, cert) = w.center.rollover_for(c_old_terminal.idt(), 1).unwrap().unwrap();
    let mut forged = chain.clone();
    let mut msg = MasterRolloverMsg::parse(&forged[0].body).unwrap();
    msg.new.key = keys()[3].public_key().clone();
    forged[0].body = msg.body();
    refused(c_old_terminal.accept_rollover(&forged, cert.clone(), NOW), "SA_old");
    assert_eq!(c_old_terminal.master_index(), 1);
    // The genuine one is taken.
    assert_eq!(c_old_terminal.accept_rollover(&chain, cert, NOW).unwrap(), 2);

    // A follows at its sync: new bundle, new certificate, old key retired.
    a.sync_with(&mut w.center, NOW).unwrap();
    assert_eq!(a.master_index(), 2);
    let mut b = w.terminal("tb"); // enrolled under key 2, with a certificate under key 1 too
    let mut new = w.card("new", 4_000);
    assert_eq!(CardClient::new(&mut secure(&w.center, &mut new)).certificate().unwrap().master_index, 2);

    // Every pairing works during the grace period, and old provenance keeps verifying.
    assert_eq!(a.pay(&mut old, 100, PayFlow::Fig9, NOW + DAY).unwrap().v_after, 4_900);
    assert_eq!(b.pay(&mut old, 100, PayFlow::Fig9, NOW + DAY).unwrap().v_after, 4_800);
    assert_eq!(a.pay(&mut new, 100, PayFlow::Fig9, NOW + DAY).unwrap().v_after, 3_900);
    assert_eq!(b.pay(&mut new, 100, PayFlow::Fig9, NOW + DAY).unwrap().v_after, 3_800);
    // A restart puts the new nA in slot 0; the old one goes to a scratch slot when needed.
    let mut a = w.reopen(a);
    assert_eq!(a.pay(&mut old, 100, PayFlow::Fig9, NOW + DAY).unwrap().v_after, 4_700);
    // The center still loads an old card, signing under the key the card holds.
    Dispenser::new(IDC).load(&mut w.center, &mut old, 50, LoadFlow::Fig4c, NOW + DAY).unwrap();
    Dispenser::new(IDC).load(&mut w.center, &mut old, 50, LoadFlow::Fig7, NOW + DAY).unwrap();
    assert_eq!(value(&mut old), 4_800);

    // After the grace period: a certificate under the retired key is refused, though the
    // certificate itself has years to run.
    let late = NOW + 11 * DAY;
    w.center.issue_lists(late).unwrap();
    a.sync_with(&mut w.center, late).unwrap();
    b.sync_with(&mut w.center, late).unwrap();
    assert!(CardClient::new(&mut secure(&w.center, &mut old)).certificate().unwrap().expires > late);
    refused(a.pay(&mut old, 100, PayFlow::Fig9, late), "retired master key 1");
    refused(b.pay(&mut old, 100, PayFlow::Fig9, late), "retired master key 1");
    refused(Dispenser::new(IDC).load(&mut w.center, &mut old, 50, LoadFlow::Fig7, late), "retired master key 1");
    assert_eq!(value(&mut old), 4_800, "nothing changed");
    // The new card is unaffected.
    assert_eq!(a.pay(&mut new, 100, PayFlow::Fig9, late).unwrap().v_after, 3_700);

    // The center reopens on the new key.
    let dir = w.center.dir().to_path_buf();
    let reopened = kessai::center::Center::open(&dir).unwrap();
    assert_eq!(reopened.master_public(), new_master);
}
