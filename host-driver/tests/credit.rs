//! Credit cards (Figs. 13-17): password registration, credit service, service records billed at
//! the center. Each test is a refusal that fails if the check it targets is removed.

mod common;

use common::*;
use kessai::card::{Card, CardClient, ABNORMAL_PASSWORD, ABNORMAL_SETTING_NUMBER};
use kessai::dispenser::Dispenser;
use kessai::messages::*;
use kessai::terminal::CreditFlow;

const NS: &[u8] = b"4711";
const NC: &[u8] = b"271828";

fn credit_card(w: &mut World, name: &str, expires: u64) -> Card {
    let mut c = w.card(name, 0);
    Dispenser::new(IDC).setup_credit(&mut w.center, &mut c, NS, expires, NOW).unwrap();
    c
}

#[test]
fn register_pay_and_bill_with_and_without_nonces() {
    let mut w = World::new("credit");
    let mut t = w.terminal("t");
    let mut card = credit_card(&mut w, "u", NOW + 365 * DAY);
    let mut card13 = credit_card(&mut w, "u13", NOW + 365 * DAY);
    let id = idu(&mut card);
    // No service before a password is registered.
    refused(t.credit_pay(&mut card, &[NC], 100, CreditFlow::Fig16, NOW), "no password");
    // Fig. 15 (nonces): wrong setting number twice, then right: the counter resets.
    assert_eq!(t.register_password(&mut card, &[id], &[b"0000", b"1111", NS], NC, true, NOW).unwrap(), id);
    // Fig. 13 (no nonces).
    let id13 = idu(&mut card13);
    t.register_password(&mut card13, &[1, id13], &[NS], b"1234", false, NOW).unwrap();

    let r = t.credit_pay(&mut card, &[b"000000", NC], 600, CreditFlow::Fig17, NOW).unwrap();
    assert!(r.card_signed);
    assert_eq!(r.checks, 4, "SA(nU * IDU), credit certificate, SU(R * X), SU(M * IDU)");
    t.credit_pay(&mut card, &[NC], 200, CreditFlow::Fig16, NOW).unwrap();
    t.credit_pay(&mut card, &[NC], 100, CreditFlow::Fig14, NOW).unwrap();
    t.credit_pay(&mut card13, &[b"1234"], 50, CreditFlow::Fig14, NOW).unwrap();
    let ups = t.upload_services(&mut w.center, NOW).unwrap();
    assert_eq!((ups.len(), ups[0].records, ups[0].card_signed), (1, 4, 1));
    let m = w.center.monthly_totals().unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!((m[0].idu, m[0].services, m[0].total, m[0].month.as_str()), (id, 3, 900, "2027-01"));
    assert_eq!((m[1].idu, m[1].total), (id13, 50));
    // The card keeps the last record it signed.
    assert!(!CardClient::new(&mut card).status().unwrap().locked);
}

#[test]
fn wrong_id_setting_number_or_password_three_times() {
    let mut w = World::new("credit-tries");
    let mut t = w.terminal("t");
    let mut a = credit_card(&mut w, "a", NOW + 365 * DAY);
    // Wrong ID number three times: the session ends, nothing written.
    let ida = idu(&mut a);
    refused(t.register_password(&mut a, &[1, 2, 3, ida], &[NS], NC, true, NOW), "identification number");
    refused(t.credit_pay(&mut a, &[NC], 1, CreditFlow::Fig16, NOW), "no password");
    // Wrong setting number three times: the card marks itself.
    refused(t.register_password(&mut a, &[ida], &[b"0000", b"1111", b"2222", NS], NC, true, NOW), "marked itself");
    let s = CardClient::new(&mut a).status().unwrap();
    assert!(s.locked && s.abnormality == ABNORMAL_SETTING_NUMBER, "{s:?}");
    refused(t.register_password(&mut a, &[ida], &[NS], NC, true, NOW), "locked");

    // Wrong password three times (across sessions: the counter is on the card): invalid.
    let mut b = credit_card(&mut w, "b", NOW + 365 * DAY);
    let idb = idu(&mut b);
    t.register_password(&mut b, &[idb], &[NS], NC, true, NOW).unwrap();
    refused(t.credit_pay(&mut b, &[b"000000", b"111111"], 10, CreditFlow::Fig16, NOW), "not matched");
    refused(t.credit_pay(&mut b, &[b"222222", NC], 10, CreditFlow::Fig17, NOW), "invalid");
    let s = CardClient::new(&mut b).status().unwrap();
    assert!(s.locked && s.abnormality == ABNORMAL_PASSWORD, "{s:?}");
    refused(t.credit_pay(&mut b, &[NC], 10, CreditFlow::Fig16, NOW), "locked");
    assert!(t.export_service_batch(NOW).unwrap().is_none(), "no service recorded");
}

#[test]
fn expired_and_lost_cards_are_refused() {
    let mut w = World::new("credit-expiry");
    let mut t = w.terminal("t");
    let mut c = credit_card(&mut w, "c", NOW + 5 * DAY);
    let id = idu(&mut c);
    t.register_password(&mut c, &[id], &[NS], NC, true, NOW).unwrap();
    t.credit_pay(&mut c, &[NC], 10, CreditFlow::Fig16, NOW + 4 * DAY).unwrap();
    let late = NOW + 6 * DAY;
    w.center.issue_lists(late).unwrap();
    t.sync_with(&mut w.center, late).unwrap();
    refused(t.credit_pay(&mut c, &[NC], 10, CreditFlow::Fig16, late), "expired");

    let mut l = credit_card(&mut w, "l", NOW + 365 * DAY);
    let idl = idu(&mut l);
    t.register_password(&mut l, &[idl], &[NS], NC, true, late).unwrap();
    w.center.report_lost(idl).unwrap();
    w.center.issue_lists(late).unwrap();
    t.sync_with(&mut w.center, late).unwrap();
    refused(t.credit_pay(&mut l, &[NC], 10, CreditFlow::Fig17, late), "lost");
}

#[test]
fn forged_or_altered_service_records_are_refused_at_the_center() {
    let mut w = World::new("credit-forged");
    let mut t = w.terminal("t"); // terminal key = keys()[2]
    let tkey = keys()[2].clone();
    let mut c = credit_card(&mut w, "c", NOW + 365 * DAY);
    let id = idu(&mut c);
    t.register_password(&mut c, &[id], &[NS], NC, true, NOW).unwrap();
    t.credit_pay(&mut c, &[NC], 500, CreditFlow::Fig17, NOW).unwrap();
    let (_, bytes) = t.export_service_batch(NOW).unwrap().unwrap();
    let signed = Signed::from_bytes(&bytes, "batch").unwrap();
    let batch = ServiceBatch::parse(&signed.body).unwrap();

    // 1. The terminal raises the charge after the card signed (and re-signs the batch itself).
    let mut altered = batch.clone();
    altered.entries[0].charge = 5_000;
    let up = Signed::sign(&tkey, altered.body()).unwrap();
    refused(w.center.ingest_services(&up.to_bytes(), NOW), "SU(M * IDU)");
    // 2. A record for the card the card never signed (forged SU).
    let mut forged = batch.clone();
    forged.batch_id = [9; 16];
    forged.entries[0].date += 1;
    let up = Signed::sign(&tkey, forged.body()).unwrap();
    refused(w.center.ingest_services(&up.to_bytes(), NOW), "SU(M * IDU)");
    // 3. Altered in transit without the terminal's key.
    let mut raw = signed.clone();
    raw.body = altered.body();
    refused(w.center.ingest_services(&raw.to_bytes(), NOW), "ST over the batch");
    assert!(w.center.monthly_totals().unwrap().is_empty(), "nothing filed");
    // The genuine upload is filed and billed, once.
    let r = w.center.ingest_services(&bytes, NOW).unwrap();
    assert_eq!((r.records, r.card_signed, r.duplicate), (1, 1, false));
    assert!(w.center.ingest_services(&bytes, NOW).unwrap().duplicate);
    assert_eq!(w.center.monthly_totals().unwrap()[0].total, 500);
}
