//! Fig. 8: the cipher channel on its own, and around a list bundle and an upload.

mod common;

use common::*;
use kessai::channel::*;
use kessai::encoding::Tag;
use kessai::terminal::PayFlow;

fn pair(ka: &SymKey, idt: u64) -> (Channel, Channel) {
    let kt = terminal_key(ka, idt);
    (
        Channel::new(kt, 0, idt, Direction::CenterToTerminal, Direction::TerminalToCenter),
        Channel::new(kt, idt, 0, Direction::TerminalToCenter, Direction::CenterToTerminal),
    )
}

#[test]
fn keys_are_derived_per_party_and_differ() {
    let ka = [7u8; 32];
    assert_eq!(terminal_key(&ka, 1), terminal_key(&ka, 1));
    assert_ne!(terminal_key(&ka, 1), terminal_key(&ka, 2));
    assert_ne!(terminal_key(&ka, 1), card_key(&ka, 1), "KT and KU are separate domains");
    assert_ne!(common_key(&ka), terminal_key(&[8u8; 32], 1));
}

#[test]
fn round_trip_and_tampered_ciphertext_refused() {
    let (mut c, mut t) = pair(&new_master_secret().unwrap(), 3);
    let m = c.seal(Tag::ListBundle, b"bundle").unwrap();
    assert_eq!(t.open(Tag::ListBundle, &m).unwrap(), b"bundle");
    let m2 = c.seal(Tag::ListBundle, b"bundle two").unwrap();
    for i in [m2.len() - 1, m2.len() - 20, 40] {
        let mut bad = m2.clone();
        bad[i] ^= 1;
        assert!(t.open(Tag::ListBundle, &bad).is_err(), "flip at {i}");
    }
    // The counter is authenticated: moving it is an authentication failure.
    let f = kessai::encoding::decode(&m2).unwrap();
    let moved = kessai::encoding::Encoder::new(Tag::Sealed)
        .bytes(&f.fields[0])
        .bytes(&f.fields[1])
        .u64(99)
        .bytes(&f.fields[3])
        .bytes(&f.fields[4])
        .finish();
    assert_eq!(t.open(Tag::ListBundle, &moved), Err(ChannelError::Auth));
    // Wrong type, wrong direction (reflected back to its sender), wrong key.
    assert!(matches!(t.open(Tag::UsageBatch, &m2), Err(ChannelError::WrongType { .. })));
    assert!(matches!(c.open(Tag::ListBundle, &m2), Err(ChannelError::WrongDirection { .. })));
    let (_, mut other) = pair(&[1u8; 32], 3);
    assert_eq!(other.open(Tag::ListBundle, &m2), Err(ChannelError::Auth));
    // The untouched message still opens: failures changed nothing.
    assert_eq!(t.open(Tag::ListBundle, &m2).unwrap(), b"bundle two");
}

#[test]
fn replayed_ciphertext_refused_within_and_beyond_the_window() {
    let (mut c, mut t) = pair(&new_master_secret().unwrap(), 4);
    let first = c.seal(Tag::UsageBatch, b"1").unwrap();
    let msgs: Vec<Vec<u8>> = (0..70).map(|i| c.seal(Tag::UsageBatch, format!("{i}").as_bytes()).unwrap()).collect();
    t.open(Tag::UsageBatch, &msgs[5]).unwrap();
    // Out of order inside the window is fine, once.
    t.open(Tag::UsageBatch, &first).unwrap();
    assert_eq!(t.open(Tag::UsageBatch, &first), Err(ChannelError::Replay(1)));
    assert_eq!(t.open(Tag::UsageBatch, &msgs[5]), Err(ChannelError::Replay(7)));
    t.open(Tag::UsageBatch, &msgs[69]).unwrap();
    // Counter 2 is now more than 64 behind: refused even though never seen.
    assert_eq!(t.open(Tag::UsageBatch, &msgs[0]), Err(ChannelError::Replay(2)));
    // The state survives a restart (serde), and the replay is still refused.
    let saved = serde_json::to_string(&t.state).unwrap();
    let mut t2 = Channel::resume(terminal_key(&[0; 32], 4), 4, 0, Direction::TerminalToCenter, Direction::CenterToTerminal, serde_json::from_str(&saved).unwrap());
    assert!(t2.open(Tag::UsageBatch, &msgs[69]).is_err());
    // Nonces are random: the same plaintext twice gives different ciphertexts.
    assert_ne!(c.seal(Tag::UsageBatch, b"x").unwrap()[..60], c.seal(Tag::UsageBatch, b"x").unwrap()[..60]);
}

#[test]
fn first_delivery_under_ktemp_once_only() {
    let ka = new_master_secret().unwrap();
    let ktemp = [3u8; 32];
    let (kt, ko) = (terminal_key(&ka, 9), common_key(&ka));
    let d = seal_first_delivery(&ktemp, 9, &kt, &ko).unwrap();
    assert_eq!(open_first_delivery(&ktemp, 9, &d, false).unwrap(), (kt, ko));
    assert_eq!(open_first_delivery(&ktemp, 9, &d, true), Err(ChannelError::AlreadyDelivered));
    assert_eq!(open_first_delivery(&ktemp, 8, &d, false), Err(ChannelError::Auth), "bound to the IDT");
    assert_eq!(open_first_delivery(&[4u8; 32], 9, &d, false), Err(ChannelError::Auth));
}

/// The C <-> T path: list bundles and uploads travel sealed under KT; a tampered or replayed
/// ciphertext is refused and changes nothing.
#[test]
fn sealed_bundles_and_uploads_between_center_and_terminal() {
    let mut w = World::new("channel-ct");
    let mut t = w.terminal("t");
    let mut card = w.card("u", 1_000);
    t.pay(&mut card, 100, PayFlow::Fig9, NOW).unwrap();
    // An upload sealed by the terminal: ingested once; the same ciphertext again is a replay.
    let (id, sealed) = t.export_sealed_batch(NOW).unwrap().unwrap();
    let r = w.center.ingest_sealed(t.idt(), &sealed, NOW).unwrap();
    assert_eq!(r.records, 1);
    refused(w.center.ingest_sealed(t.idt(), &sealed, NOW), "replayed");
    t.ack_batch(&id).unwrap();
    // A tampered upload does not authenticate (and is not ingested).
    t.pay(&mut card, 100, PayFlow::Fig9, NOW).unwrap();
    let (_, sealed) = t.export_sealed_batch(NOW).unwrap().unwrap();
    let mut bad = sealed.clone();
    let n = bad.len();
    bad[n - 5] ^= 1;
    refused(w.center.ingest_sealed(t.idt(), &bad, NOW), "authentication failed");
    // Another terminal's KT does not open it either.
    let other = w.terminal("t2");
    refused(w.center.ingest_sealed(other.idt(), &sealed, NOW), "authentication failed");
    assert_eq!(w.center.report().unwrap().usage_records, 1);
    // Bundles: a sealed bundle loads; tampered and replayed ones are refused.
    w.center.report_lost(kessai::card::CardClient::new(&mut card).status().unwrap().idu.unwrap()).unwrap();
    w.center.issue_lists(NOW).unwrap();
    let b = w.center.sealed_lists_for(t.idt()).unwrap().unwrap();
    let mut bad = b.clone();
    let n = bad.len();
    bad[n - 1] ^= 1;
    refused(t.load_sealed_lists(&bad, NOW), "authentication failed");
    assert_eq!(t.load_sealed_lists(&b, NOW).unwrap().cards, 1);
    refused(t.load_sealed_lists(&b, NOW), "replayed");
    // sync_with uses the sealed path end to end.
    let s = t.sync_with(&mut w.center, NOW).unwrap();
    assert_eq!(s.uploaded.len(), 1);
    refused(t.pay(&mut card, 1, PayFlow::Fig9, NOW), "lost");
}

/// Flips one bit of the ciphertext (inside the AEAD tag region) of a sealed message.
fn flip(sealed: &[u8]) -> Vec<u8> {
    let mut bad = sealed.to_vec();
    let n = bad.len();
    bad[n - 3] ^= 0x10;
    bad
}

/// A sealed usage upload is refused when replayed after the center restarts: the replay window
/// lives in the center's database, written in the ingest's transaction. A crash before the
/// commit records neither the batch nor the counter, so the retry goes through.
#[test]
fn replayed_usage_upload_refused_after_a_center_restart() {
    let mut w = World::new("channel-restart");
    let mut t = w.terminal("t");
    let mut card = w.card("u", 1_000);
    t.pay(&mut card, 100, PayFlow::Fig9, NOW).unwrap();
    let (id, sealed) = t.export_sealed_batch(NOW).unwrap().unwrap();
    // Power cut inside the transaction: nothing recorded, not even the counter.
    let err = w.center.ingest_sealed_with(t.idt(), &sealed, NOW, &mut || Err(kessai::Error::Store("power cut".into()))).unwrap_err();
    assert!(!err.is_refusal(), "{err}");
    assert_eq!(w.center.report().unwrap().batches, 0);
    assert_eq!(w.center.ingest_sealed(t.idt(), &sealed, NOW).unwrap().records, 1);
    // Restart the center: the replay is still refused and changes nothing.
    let cdir = w.center.dir().to_path_buf();
    w.center = kessai::center::Center::open(&cdir).unwrap();
    refused(w.center.ingest_sealed(t.idt(), &sealed, NOW), "replayed");
    let r = w.center.report().unwrap();
    assert_eq!((r.batches, r.usage_records), (1, 1));
    // The terminal's retry of the same batch (sealed again, new counter) is a duplicate.
    let (id2, again) = t.export_sealed_batch(NOW).unwrap().unwrap();
    assert_eq!(id2, id);
    assert!(w.center.ingest_sealed(t.idt(), &again, NOW).unwrap().duplicate);
    // The acknowledgement travels sealed; tampered or replayed, it drops nothing.
    let ack = w.center.sealed_ack(t.idt(), Tag::UsageBatch, &id).unwrap();
    refused(t.accept_sealed_ack(&flip(&ack)), "authentication failed");
    assert_eq!(t.pending_records(), 1);
    assert_eq!(t.accept_sealed_ack(&ack).unwrap(), (Tag::UsageBatch, id));
    assert_eq!(t.pending_records(), 0);
    refused(t.accept_sealed_ack(&ack), "replayed");
    // Tick reports are sealed too; a replayed one is refused after a restart.
    t.tick().unwrap();
    let tick = t.sealed_tick_report(NOW).unwrap();
    assert_eq!(w.center.record_tick_sealed(t.idt(), &tick, NOW).unwrap(), 1);
    w.center = kessai::center::Center::open(&cdir).unwrap();
    refused(w.center.record_tick_sealed(t.idt(), &tick, NOW), "replayed");
    refused(w.center.record_tick_sealed(t.idt(), &flip(&t.sealed_tick_report(NOW).unwrap()), NOW), "authentication failed");
}

/// A credit terminal's upload of service records (2M6) travels sealed under KT: a tampered
/// one is refused at the center and nothing is billed; a replay is refused; the honest one
/// bills once.
#[test]
fn tampered_service_upload_refused_and_nothing_billed() {
    let mut w = World::new("channel-services");
    let mut t = w.terminal("t");
    let mut card = w.card("u", 0);
    kessai::dispenser::Dispenser::new(IDC).setup_credit(&mut w.center, &mut card, b"4711", NOW + 365 * DAY, NOW).unwrap();
    let id = idu(&mut card);
    t.register_password(&mut card, &[id], &[b"4711"], b"271828", true, NOW).unwrap();
    t.credit_pay(&mut card, &[b"271828"], 700, kessai::terminal::CreditFlow::Fig17, NOW).unwrap();
    let (bid, sealed) = t.export_sealed_service_batch(NOW).unwrap().unwrap();
    refused(w.center.ingest_services_sealed(t.idt(), &flip(&sealed), NOW), "authentication failed");
    // The same ciphertext presented as a usage upload: wrong type, refused.
    refused(w.center.ingest_sealed(t.idt(), &sealed, NOW), "type");
    assert!(w.center.monthly_totals().unwrap().is_empty(), "nothing billed");
    let r = w.center.ingest_services_sealed(t.idt(), &sealed, NOW).unwrap();
    assert_eq!((r.records, r.card_signed), (1, 1));
    refused(w.center.ingest_services_sealed(t.idt(), &sealed, NOW), "replayed");
    assert_eq!(w.center.monthly_totals().unwrap()[0].total, 700, "billed once");
    // The acknowledgement of the service batch leaves the usage outbox alone.
    let mut u = w.card("v", 1_000);
    t.pay(&mut u, 10, PayFlow::Fig9, NOW).unwrap();
    let (uid, _) = t.export_sealed_batch(NOW).unwrap().unwrap();
    let ack = w.center.sealed_ack(t.idt(), Tag::ServiceBatch, &bid).unwrap();
    assert_eq!(t.accept_sealed_ack(&ack).unwrap(), (Tag::ServiceBatch, bid));
    assert_eq!(t.pending_services().unwrap(), 0);
    assert_eq!(t.outbox_kind(&uid).unwrap(), Some(Tag::UsageBatch));
    // The rest goes up with the sealed sync, services included.
    t.credit_pay(&mut card, &[b"271828"], 5, kessai::terminal::CreditFlow::Fig16, NOW).unwrap();
    assert_eq!(t.sync_with(&mut w.center, NOW).unwrap().uploaded.len(), 1);
    assert_eq!(t.upload_services(&mut w.center, NOW).unwrap()[0].records, 1);
    assert_eq!((t.pending_records(), t.pending_services().unwrap()), (0, 0));
    assert_eq!(w.center.monthly_totals().unwrap()[0].total, 705);
}

/// A list bundle sealed for the terminal: a tampered or replayed one (also after the terminal
/// restarts) is refused and the lists held, on disk and in the accelerator, are unchanged.
#[test]
fn replayed_or_tampered_list_bundle_leaves_the_lists_unchanged() {
    let mut w = World::new("channel-lists");
    let mut t = w.terminal("t");
    let mut card = w.card("u", 1_000);
    let lists_file = t.dir().join(kessai::terminal::LISTS_FILE);
    let v1 = std::fs::read(&lists_file).unwrap();
    w.center.report_lost(idu(&mut card)).unwrap();
    w.center.issue_lists(NOW).unwrap();
    let b2 = w.center.sealed_lists_for(t.idt()).unwrap().unwrap();
    refused(t.load_sealed_lists(&flip(&b2), NOW), "authentication failed");
    assert_eq!((t.list_version(), std::fs::read(&lists_file).unwrap()), (Some(1), v1.clone()));
    t.pay(&mut card, 1, PayFlow::Fig9, NOW).unwrap();
    // A bundle sealed for another terminal does not open here.
    let other = w.terminal("t2");
    let for_other = w.center.sealed_lists_for(other.idt()).unwrap().unwrap();
    refused(t.load_sealed_lists(&for_other, NOW), "authentication failed");
    assert_eq!(t.load_sealed_lists(&b2, NOW).unwrap().version, 2);
    let v2 = std::fs::read(&lists_file).unwrap();
    assert_ne!(v1, v2);
    refused(t.load_sealed_lists(&b2, NOW), "replayed");
    // After a restart the replay window is still there.
    let mut t = w.reopen(t);
    refused(t.load_sealed_lists(&b2, NOW), "replayed");
    assert_eq!((t.list_version(), std::fs::read(&lists_file).unwrap()), (Some(2), v2));
    refused(t.pay(&mut card, 1, PayFlow::Fig9, NOW), "lost");
}
