//! `kessai bench` turns verifies per second into payments per second with the number of
//! signature checks each flow needs (`bench::hw::FLOWS`). Those numbers must be what the
//! terminal really batches: each flow is run here and its receipt's count compared.

mod common;

use common::*;
use kessai::bench::hw::FLOWS;
use kessai::terminal::PayFlow;

#[test]
fn the_checks_per_payment_in_the_bench_are_the_terminals() {
    let mut w = World::new("bench-flows");
    let mut a = w.terminal("ta");
    let mut b = w.terminal("tb");
    let mut card = w.card("u", 5_000);

    // Value from a load (Figs. 4/6).
    let r = a.pay(&mut card, 100, PayFlow::Fig9, NOW).unwrap();
    assert_eq!(r.checks, FLOWS[0].checks, "{}", FLOWS[0].name);
    // Value written by terminal A's payment (Fig. 9).
    let r = b.pay(&mut card, 100, PayFlow::Fig9, NOW).unwrap();
    assert_eq!(r.checks, FLOWS[1].checks, "{}", FLOWS[1].name);
    // Terminal B wrote it last and is now on the troubled-terminal list (Fig. 12): A checks
    // B's time stamp too.
    w.center.report_stolen(b.idt()).unwrap();
    w.center.issue_lists(NOW).unwrap();
    a.sync_with(&mut w.center, NOW).unwrap();
    let r = a.pay(&mut card, 100, PayFlow::Fig9, NOW).unwrap();
    assert_eq!(r.checks, FLOWS[2].checks, "{}", FLOWS[2].name);
    assert_eq!(value(&mut card), 4_700);
}
