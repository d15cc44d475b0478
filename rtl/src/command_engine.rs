//! Command engine: takes the receiver's complete requests in order, validates them, executes
//! them against the [`KeyStore`], the [`VerifyUnit`] and the list memory ([`LISTS_IN_SPRAM`]), and writes the
//! reply (STATUS + data) into the transmitter's reply RAM. The table it implements is
//! `docs/frames.md`.
//!
//! # Flow (one request at a time)
//!
//! `Idle` (a request waits, the verify unit and the list memory are idle) → `Fetch` (payload
//! bytes 0..8 into the 72-bit header register `hdr`, 10 cycles) → `Wait` (the key store reads
//! the slot named by byte 0) → `Prep` (latches the slot's word count) → `Prep2` (every
//! validation of the command's fixed fields, one flag each, registered, and VERIFY's field
//! total) → `Prep3` (VERIFY's exact length against that total) → `Check` (the first failing
//! flag gives the status; four cycles instead of one long one, the clock's old critical
//! path) → the command's own states → `RWait` (the request buffer is released if still held;
//! waits until the transmitter has finished the previous reply) → `RStatus`, `RLoad` / `REmit`
//! (STATUS, then each reply field big-endian, one byte a cycle) → `RDone` (hands the reply to
//! the transmitter) → `Idle`.
//!
//! Validation order (the first failing check gives the status; nothing has been changed when an
//! error is answered, except the documented partial append of `LIST_FULL`):
//!
//! * unknown `CMD` → UNKNOWN_CMD;
//! * `LEN` shorter than the fixed fields (or ≠ the exact length of a fixed-size command) →
//!   BAD_LENGTH;
//! * slot ≥ `key_slots` / list > 1 → BAD_SLOT;
//! * LOAD_KEY: `words` = 0 or > `max_words` → BAD_SIZE, `LEN` ≠ 7 + 4w → BAD_LENGTH, slot 0
//!   locked → LOCKED, e = 0 or n even → BAD_PARAM;
//! * VERIFY: slot never loaded → NO_KEY, mode > 1 or ESIGN `top_shift` ≥ 16w → BAD_PARAM,
//!   `LEN` ≠ 4 + 2w + 2r → BAD_LENGTH;
//! * LOCK_MASTER: slot 0 never loaded → NO_KEY;
//! * LIST_APPEND: `LEN − 1` not a multiple of the entry size (8 / 20) → BAD_LENGTH.
//!
//! # Big integers
//!
//! Frames carry them big-endian: payload byte `j` of a `2w`-byte field belongs to word
//! `w − 1 − ⌊j/2⌋` (high byte for even `j`). One copy loop reads the request buffer a byte a cycle
//! and writes a word every second cycle: for LOAD_KEY `n` then `R²` into the key store (word 0
//! of `n` last but before `R²`, so the key store's n0' computation overlaps the `R²` copy),
//! for VERIFY `s` then the reference into the verify unit. The reference words go to word
//! addresses `w − 1 − ⌊j/2⌋` as well, so an ESIGN reference of `r = w − ⌊top_shift/16⌋` words
//! lands at `⌊top_shift/16⌋ … w − 1`.
//!
//! # VERIFY
//!
//! Copy `s` and the reference from the request buffer (2w + 2r + 2 cycles), **release the
//! request buffer** (the receiver takes the next request while the exponentiation runs), copy
//! `n` from the key store unless the verify unit still holds this slot's `n` (same slot as
//! the last VERIFY, not reloaded since), copy `R²` (w + 1 cycles each), start the verify unit,
//! count the cycles while it is busy ([`VerifyUnit::cycles`]), reply `verdict`, `cycles`.
//!
//! # Reset
//!
//! `reset` returns to `Idle`, drops a reply not yet taken, clears the statistics, forgets the
//! verify unit's cached `n` and unlocks the master slot (the key store's `unlock`; the UART
//! never unlocks it). Keys and lists stay. A verify run or lookup in flight finishes on its
//! own; `Idle` waits for it before taking a request.

use crate::key_store::KeyStore;
#[cfg(not(feature = "spram-lists"))]
use crate::list_memory::ListMemory as Lists;
#[cfg(feature = "spram-lists")]
use crate::list_memory_spram::ListMemorySpram as Lists;
use crate::stats_file::StatsFile;
use crate::verify_unit::VerifyUnit;
use rust_hdl::prelude::*;

/// Whether this build keeps the lists in SPRAM ([`crate::list_memory_spram::ListMemorySpram`],
/// feature `spram-lists`, the UP5K build) or in block RAM ([`crate::list_memory::ListMemory`]).
/// The two have the same ports; the lookup takes `2·count + 4` cycles instead of `count + 1`.
pub const LISTS_IN_SPRAM: bool = cfg!(feature = "spram-lists");

/// Command codes.
pub const CMD_INFO: u64 = 0x01;
pub const CMD_LOAD_KEY: u64 = 0x02;
pub const CMD_LOCK_MASTER: u64 = 0x03;
pub const CMD_VERIFY: u64 = 0x04;
pub const CMD_LIST_CLEAR: u64 = 0x05;
pub const CMD_LIST_APPEND: u64 = 0x06;
pub const CMD_LIST_COMMIT: u64 = 0x07;
pub const CMD_LIST_LOOKUP: u64 = 0x08;
pub const CMD_LIST_STATUS: u64 = 0x09;
pub const CMD_STATS: u64 = 0x0A;

/// Build parameters reported by INFO.
#[derive(Clone, Copy, Debug)]
pub struct EngineConfig {
    pub max_words: u16,
    pub clock_hz: u32,
    pub clocks_per_bit: u16,
    pub idle_timeout: u32,
}

impl EngineConfig {
    pub fn max_payload(&self) -> u16 {
        8 + 4 * self.max_words
    }
}

#[derive(Copy, Clone, Debug, PartialEq, LogicState)]
pub enum EngState {
    Idle,
    Fetch,
    Wait,
    Prep,
    Prep2,
    Prep3,
    Check,
    LkPar,
    LkPar2,
    Copy,
    KeyEnd,
    N0Wait,
    VKey,
    VStart,
    VWait,
    AppLen,
    AppCopy,
    AppEnd,
    Exec,
    LkWait,
    RWait,
    RStatus,
    RLoad,
    RStat,
    REmit,
    RDone,
}

#[derive(LogicBlock)]
pub struct CommandEngine<
    const VAW: usize,
    const L: usize,
    const KAW: usize,
    const SLOTS: usize,
    const LAW: usize,
> {
    pub clock: Signal<In, Clock>,
    pub reset: Signal<In, Bit>,
    // request side (FrameRx)
    pub req_valid: Signal<In, Bit>,
    pub req_cmd: Signal<In, Bits<8>>,
    pub req_seq: Signal<In, Bits<8>>,
    pub req_len: Signal<In, Bits<16>>,
    pub req_done: Signal<Out, Bit>,
    pub rd_index: Signal<Out, Bits<16>>,
    pub rd_data: Signal<In, Bits<8>>,
    // reply side (FrameTx)
    pub rep_valid: Signal<Out, Bit>,
    pub rep_cmd: Signal<Out, Bits<8>>,
    pub rep_seq: Signal<Out, Bits<8>>,
    pub rep_len: Signal<Out, Bits<16>>,
    pub rep_status: Signal<Out, Bits<8>>,
    pub rep_take: Signal<In, Bit>,
    pub rep_busy: Signal<In, Bit>,
    pub rw_addr: Signal<Out, Bits<6>>,
    pub rw_data: Signal<Out, Bits<8>>,
    pub rw_en: Signal<Out, Bit>,
    /// The transmitter's reply events (bit 0 OK, 1 BAD_CRC, 2 other error, 3 BUSY), one cycle
    /// each: STATS fields 0…3.
    pub st_ev: Signal<In, Bits<4>>,
    pub busy: Signal<Out, Bit>,
    // the engines
    ks: KeyStore<KAW, SLOTS>,
    vu: VerifyUnit<VAW, L>,
    lm: Lists<LAW>,
    // build parameters
    c_lanes: Constant<Bits<8>>,
    c_max_bits: Constant<Bits<16>>,
    c_max_words: Constant<Bits<16>>,
    c_slots: Constant<Bits<8>>,
    c_list_cap: Constant<Bits<16>>,
    c_max_payload: Constant<Bits<16>>,
    c_clock_hz: Constant<Bits<32>>,
    c_cpb: Constant<Bits<16>>,
    c_idle: Constant<Bits<32>>,
    // registers
    state: DFF<EngState>,
    cmd: DFF<Bits<8>>,
    // cmd is one of 0x01…0x0A (latched with it, so Check decodes the low nibble only)
    known: DFF<Bit>,
    seq: DFF<Bits<8>>,
    len: DFF<Bits<16>>,
    hdr: DFF<Bits<72>>,
    ptr: DFF<Bits<16>>,
    held: DFF<Bit>,
    status: DFF<Bits<8>>,
    // the validation, pipelined (Prep latches the slot's word count, Prep2 every comparison,
    // Check only picks the first failing one): one long cycle was the board's critical path
    kw_q: DFF<Bits<16>>,
    ck: DFF<Bits<16>>,
    ckw: Signal<Local, Bits<16>>,
    // copy loop
    j: DFF<Bits<16>>,
    ctot: DFF<Bits<16>>,
    cw: DFF<Bits<16>>, // words per field − 1
    av: DFF<Bit>,
    aj: DFF<Bit>,
    wi: DFF<Bits<16>>,
    f2: DFF<Bit>,
    hi: DFF<Bits<8>>,
    // key-store → verify-unit copy
    ki: DFF<Bits<16>>,
    kv: DFF<Bit>,
    ka: DFF<Bits<16>>,
    kpass: DFF<Bit>,
    vu_slot: DFF<Bits<8>>,
    vu_ok: DFF<Bit>,
    // append
    rem: DFF<Bits<16>>,
    eb: DFF<Bits<8>>,
    app_pend: DFF<Bit>,
    ts0_q: DFF<Bits<64>>,
    t_q: DFF<Bits<32>>,
    // cycle counts, verdict, statistics
    cyc: DFF<Bits<32>>,
    verdict_q: DFF<Bits<8>>,
    stats: StatsFile,
    ev: Signal<Local, Bits<12>>,
    st_rd: Signal<Local, Bit>,
    // reply
    rep_v: DFF<Bit>,
    rep_l: DFF<Bits<16>>,
    fj: DFF<Bits<8>>,
    fb: DFF<Bits<4>>,
    sh: DFF<Bits<32>>,
    wa: DFF<Bits<6>>,
    // combinational: header fields
    b0: Signal<Local, Bits<8>>,
    f_e: Signal<Local, Bits<32>>,
    c4: Signal<Local, Bits<4>>,
    f_words: Signal<Local, Bits<16>>,
    f_mode: Signal<Local, Bits<8>>,
    f_shift: Signal<Local, Bits<16>>,
    f_id: Signal<Local, Bits<64>>,
    id_next: Signal<Local, Bits<64>>,
    kw: Signal<Local, Bits<16>>,
    r16: Signal<Local, Bits<16>>,
    esize: Signal<Local, Bits<16>>,
    w2: Signal<Local, Bits<16>>,
    w4: Signal<Local, Bits<16>>,
    vtot: Signal<Local, Bits<16>>,
    // combinational: copy loop
    cm1: Signal<Local, Bits<16>>,
    widx: Signal<Local, Bits<16>>,
    word: Signal<Local, Bits<16>>,
    wr1: Signal<Local, Bit>,
    wr2: Signal<Local, Bit>,
    is_load: Signal<Local, Bit>,
    // combinational: reply fields
    fv: Signal<Local, Bits<32>>,
    fnb: Signal<Local, Bits<4>>,
    nf: Signal<Local, Bits<8>>,
    // child inputs (each assigned once at the end)
    rd_idx: Signal<Local, Bits<16>>,
    rel: Signal<Local, Bit>,
    rw_en_l: Signal<Local, Bit>,
    ks_rd_slot: Signal<Local, Bits<8>>,
    ks_wr_index: Signal<Local, Bits<16>>,
    ks_wr_data: Signal<Local, Bits<16>>,
    ks_wr_n: Signal<Local, Bit>,
    ks_wr_r2: Signal<Local, Bit>,
    ks_wr_words: Signal<Local, Bit>,
    ks_wr_e: Signal<Local, Bit>,
    ks_lock: Signal<Local, Bit>,
    vu_wr_addr: Signal<Local, Bits<16>>,
    vu_wr_data: Signal<Local, Bits<16>>,
    vu_wr_n: Signal<Local, Bit>,
    vu_wr_r2: Signal<Local, Bit>,
    vu_wr_sig: Signal<Local, Bit>,
    vu_wr_ref: Signal<Local, Bit>,
    vu_start: Signal<Local, Bit>,
    lm_clear: Signal<Local, Bit>,
    lm_append: Signal<Local, Bit>,
    lm_commit: Signal<Local, Bit>,
    lm_lookup: Signal<Local, Bit>,
}

impl<const VAW: usize, const L: usize, const KAW: usize, const SLOTS: usize, const LAW: usize>
    CommandEngine<VAW, L, KAW, SLOTS, LAW>
{
    pub fn new(cfg: EngineConfig) -> Self {
        let mw = cfg.max_words as usize;
        assert!(mw >= 1, "max_words >= 1");
        // the validation arithmetic is 16 bits wide: 16·max_words and 4·max_words + 8 fit
        assert!(mw <= 4095, "max_words <= 4095");
        assert!(
            mw <= VerifyUnit::<VAW, L>::MAX_WORDS,
            "max_words {mw} > VerifyUnit MAX_WORDS {}",
            VerifyUnit::<VAW, L>::MAX_WORDS
        );
        assert!(mw <= 1 << KAW, "max_words {mw} > key slot words {}", 1 << KAW);
        assert!((2..=255).contains(&SLOTS), "2 <= key slots <= 255");
        assert!(LAW <= 15, "list capacity up to 2^15");
        assert!(L <= 255);
        let c = |v: u64| Constant::new(v.into());
        Self {
            clock: Default::default(),
            reset: Default::default(),
            req_valid: Default::default(),
            req_cmd: Default::default(),
            req_seq: Default::default(),
            req_len: Default::default(),
            req_done: Default::default(),
            rd_index: Default::default(),
            rd_data: Default::default(),
            rep_valid: Default::default(),
            rep_cmd: Default::default(),
            rep_seq: Default::default(),
            rep_len: Default::default(),
            rep_status: Default::default(),
            rep_take: Default::default(),
            rep_busy: Default::default(),
            rw_addr: Default::default(),
            rw_data: Default::default(),
            rw_en: Default::default(),
            st_ev: Default::default(),
            busy: Default::default(),
            ks: Default::default(),
            vu: Default::default(),
            lm: Default::default(),
            c_lanes: Constant::new((L as u64).into()),
            c_max_bits: Constant::new((16 * mw as u64).into()),
            c_max_words: Constant::new((mw as u64).into()),
            c_slots: Constant::new((SLOTS as u64).into()),
            c_list_cap: Constant::new(((1u64 << LAW) & 0xffff).into()),
            c_max_payload: Constant::new((cfg.max_payload() as u64).into()),
            c_clock_hz: c(cfg.clock_hz as u64),
            c_cpb: Constant::new((cfg.clocks_per_bit as u64).into()),
            c_idle: c(cfg.idle_timeout as u64),
            state: Default::default(),
            cmd: Default::default(),
            known: Default::default(),
            seq: Default::default(),
            len: Default::default(),
            hdr: Default::default(),
            ptr: Default::default(),
            held: Default::default(),
            status: Default::default(),
            kw_q: Default::default(),
            ck: Default::default(),
            ckw: Default::default(),
            j: Default::default(),
            ctot: Default::default(),
            cw: Default::default(),
            av: Default::default(),
            aj: Default::default(),
            wi: Default::default(),
            f2: Default::default(),
            hi: Default::default(),
            ki: Default::default(),
            kv: Default::default(),
            ka: Default::default(),
            kpass: Default::default(),
            vu_slot: Default::default(),
            vu_ok: Default::default(),
            rem: Default::default(),
            eb: Default::default(),
            app_pend: Default::default(),
            ts0_q: Default::default(),
            t_q: Default::default(),
            cyc: Default::default(),
            verdict_q: Default::default(),
            stats: Default::default(),
            ev: Default::default(),
            st_rd: Default::default(),
            rep_v: Default::default(),
            rep_l: Default::default(),
            fj: Default::default(),
            fb: Default::default(),
            sh: Default::default(),
            wa: Default::default(),
            b0: Default::default(),
            f_e: Default::default(),
            c4: Default::default(),
            f_words: Default::default(),
            f_mode: Default::default(),
            f_shift: Default::default(),
            f_id: Default::default(),
            id_next: Default::default(),
            kw: Default::default(),
            r16: Default::default(),
            esize: Default::default(),
            w2: Default::default(),
            w4: Default::default(),
            vtot: Default::default(),
            cm1: Default::default(),
            widx: Default::default(),
            word: Default::default(),
            wr1: Default::default(),
            wr2: Default::default(),
            is_load: Default::default(),
            fv: Default::default(),
            fnb: Default::default(),
            nf: Default::default(),
            rd_idx: Default::default(),
            rel: Default::default(),
            rw_en_l: Default::default(),
            ks_rd_slot: Default::default(),
            ks_wr_index: Default::default(),
            ks_wr_data: Default::default(),
            ks_wr_n: Default::default(),
            ks_wr_r2: Default::default(),
            ks_wr_words: Default::default(),
            ks_wr_e: Default::default(),
            ks_lock: Default::default(),
            vu_wr_addr: Default::default(),
            vu_wr_data: Default::default(),
            vu_wr_n: Default::default(),
            vu_wr_r2: Default::default(),
            vu_wr_sig: Default::default(),
            vu_wr_ref: Default::default(),
            vu_start: Default::default(),
            lm_clear: Default::default(),
            lm_append: Default::default(),
            lm_commit: Default::default(),
            lm_lookup: Default::default(),
        }
    }
}

// In `update` the command and status codes are literals (a Rust `const` would become an
// undefined name in the generated Verilog): commands 0x01 INFO … 0x0A STATS and statuses 0x00 OK
// … 0x0B BUSY as in the tables above and in `docs/frames.md`.
impl<const VAW: usize, const L: usize, const KAW: usize, const SLOTS: usize, const LAW: usize>
    Logic for CommandEngine<VAW, L, KAW, SLOTS, LAW>
{
    #[hdl_gen]
    fn update(&mut self) {
        self.ks.clock.next = self.clock.val();
        self.vu.clock.next = self.clock.val();
        self.lm.clock.next = self.clock.val();
        dff_setup!(
            self, clock, state, cmd, known, seq, len, hdr, ptr, held, status, kw_q, ck, j, ctot, cw, av, aj, wi, f2, hi,
            ki, kv, ka, kpass, vu_slot, vu_ok, rem, eb, app_pend, ts0_q, t_q, cyc,
            verdict_q,
            rep_v, rep_l, fj, fb, sh, wa
        );

        // ------------------------------------------------------------ outputs
        self.busy.next = (self.state.q.val() != EngState::Idle) || self.vu.busy.val();
        self.rep_valid.next = self.rep_v.q.val();
        self.rep_cmd.next = self.cmd.q.val();
        self.rep_seq.next = self.seq.q.val();
        self.rep_len.next = self.rep_l.q.val();
        self.rep_status.next = self.status.q.val();

        // ------------------------------------------------------------ header fields
        // hdr holds payload bytes 0..8, byte 0 in bits 71..64
        // the command's low nibble: enough past Check, which answers every code above 0x0A
        // with UNKNOWN_CMD (no command state, no reply fields); one LUT level instead of two
        self.c4.next = self.cmd.q.val().get_bits::<4>(0);
        self.b0.next = self.hdr.q.val().get_bits::<8>(64);
        self.f_e.next = self.hdr.q.val().get_bits::<32>(32);
        self.f_words.next = self.hdr.q.val().get_bits::<16>(16);
        self.f_mode.next = self.hdr.q.val().get_bits::<8>(56);
        self.f_shift.next = self.hdr.q.val().get_bits::<16>(40);
        self.f_id.next = self.hdr.q.val().get_bits::<64>(0);
        // LIST_APPEND: the next byte of an entry's ID (cards: from the buffer; terminals: the
        // top byte of the TS0 shift register, which the t shift register feeds)
        if self.b0.val().get_bit(0) {
            self.id_next.next = (self.f_id.val() << 8) | bit_cast::<64, 8>(self.ts0_q.q.val().get_bits::<8>(56));
        } else {
            self.id_next.next = (self.f_id.val() << 8) | bit_cast::<64, 8>(self.rd_data.val());
        }
        self.kw.next = self.kw_q.q.val();
        self.r16.next = self.kw.val();
        if self.f_mode.val() == 1 {
            self.r16.next = self.kw.val() - (self.f_shift.val() >> 4);
        }
        self.esize.next = 8.into();
        if self.b0.val().get_bit(0) {
            self.esize.next = 20.into();
        }
        self.is_load.next = self.c4.val() == 2;
        self.w2.next = self.f_words.val() << 1;
        self.w4.next = self.f_words.val() << 2;
        self.vtot.next = (self.kw.val() + self.r16.val()) << 1;
        // every check of the command's fixed fields, one bit each (Check picks the first)
        self.ckw.next = 0.into();
        if self.len.q.val() != 0 {
            self.ckw.next = self.ckw.val() | 0x0001;
        }
        if self.len.q.val() < 7 {
            self.ckw.next = self.ckw.val() | 0x0002;
        }
        if self.len.q.val() < 4 {
            self.ckw.next = self.ckw.val() | 0x0004;
        }
        if self.b0.val() >= self.c_slots.val() {
            self.ckw.next = self.ckw.val() | 0x0008;
        }
        if (self.f_words.val() == 0) || (self.f_words.val() > self.c_max_words.val()) {
            self.ckw.next = self.ckw.val() | 0x0010;
        }
        if self.len.q.val() != self.w4.val() + 7 {
            self.ckw.next = self.ckw.val() | 0x0020;
        }
        if (self.b0.val() == 0) && self.ks.locked.val() {
            self.ckw.next = self.ckw.val() | 0x0040;
        }
        if self.f_e.val() == 0 {
            self.ckw.next = self.ckw.val() | 0x0080;
        }
        if self.kw.val() == 0 {
            self.ckw.next = self.ckw.val() | 0x0100;
        }
        if self.f_mode.val() > 1 {
            self.ckw.next = self.ckw.val() | 0x0200;
        }
        if (self.f_mode.val() == 1) && (self.f_shift.val() >= (self.kw.val() << 4)) {
            self.ckw.next = self.ckw.val() | 0x0400;
        }
        if self.b0.val() > 1 {
            self.ckw.next = self.ckw.val() | 0x1000;
        }
        if self.len.q.val() != 1 {
            self.ckw.next = self.ckw.val() | 0x2000;
        }
        if self.len.q.val() != 5 {
            self.ckw.next = self.ckw.val() | 0x4000;
        }
        if self.len.q.val() != 9 {
            self.ckw.next = self.ckw.val() | 0x8000;
        }

        // ------------------------------------------------------------ copy loop datapath
        // a byte of the copied fields arrives on rd_data (aj: its index is odd, the word is
        // complete); word wi of the first (f2 low) or the second field is written. wi counts
        // down from cw = w − 1 in each field (big-endian: word w − 1 first)
        self.word.next = (bit_cast::<16, 8>(self.hi.q.val()) << 8) | bit_cast::<16, 8>(self.rd_data.val());
        self.widx.next = self.wi.q.val();
        if self.is_load.val() {
            self.cm1.next = self.f_words.val() - 1;
        } else {
            self.cm1.next = self.kw.val() - 1;
        }

        // ------------------------------------------------------------ defaults
        self.rd_idx.next = self.ptr.q.val();
        self.rel.next = false;
        self.rw_en_l.next = false;
        self.ev.next = 0.into();
        self.st_rd.next = false;
        self.ks_rd_slot.next = self.b0.val();
        if self.c4.val() == 3 {
            self.ks_rd_slot.next = 0.into();
        }
        self.ks_wr_index.next = self.widx.val();
        self.ks_wr_data.next = self.word.val();
        self.ks_wr_n.next = false;
        self.ks_wr_r2.next = false;
        self.ks_wr_words.next = false;
        self.ks_wr_e.next = false;
        self.ks_lock.next = false;
        self.vu_wr_addr.next = self.widx.val();
        self.vu_wr_data.next = self.word.val();
        self.vu_wr_n.next = false;
        self.vu_wr_r2.next = false;
        self.vu_wr_sig.next = false;
        self.vu_wr_ref.next = false;
        self.vu_start.next = false;
        self.lm_clear.next = false;
        self.lm_append.next = false;
        self.lm_commit.next = false;
        self.lm_lookup.next = false;
        self.wr1.next = false;
        self.wr2.next = false;

        // ------------------------------------------------------------ reply fields
        // (value left-aligned in 32 bits, byte count, field count; LOOKUP's 64-bit TS0 is two
        // 4-byte fields)
        self.fv.next = 0.into();
        self.fnb.next = 4.into();
        self.nf.next = 0.into();
        if self.c4.val() == 1 {
            self.nf.next = 9.into();
            if self.fj.q.val() == 0 {
                self.fv.next = bit_cast::<32, 8>(1.into()) << 24;
                self.fnb.next = 1.into();
            } else if self.fj.q.val() == 1 {
                self.fv.next = bit_cast::<32, 8>(self.c_lanes.val()) << 24;
                self.fnb.next = 1.into();
            } else if self.fj.q.val() == 2 {
                self.fv.next = bit_cast::<32, 16>(self.c_max_bits.val()) << 16;
                self.fnb.next = 2.into();
            } else if self.fj.q.val() == 3 {
                self.fv.next = bit_cast::<32, 8>(self.c_slots.val()) << 24;
                self.fnb.next = 1.into();
            } else if self.fj.q.val() == 4 {
                self.fv.next = bit_cast::<32, 16>(self.c_list_cap.val()) << 16;
                self.fnb.next = 2.into();
            } else if self.fj.q.val() == 5 {
                self.fv.next = bit_cast::<32, 16>(self.c_max_payload.val()) << 16;
                self.fnb.next = 2.into();
            } else if self.fj.q.val() == 6 {
                self.fv.next = self.c_clock_hz.val();
            } else if self.fj.q.val() == 7 {
                self.fv.next = bit_cast::<32, 16>(self.c_cpb.val()) << 16;
                self.fnb.next = 2.into();
            } else {
                self.fv.next = self.c_idle.val();
            }
        } else if self.c4.val() == 4 {
            self.nf.next = 2.into();
            if self.fj.q.val() == 0 {
                self.fv.next = bit_cast::<32, 8>(self.verdict_q.q.val()) << 24;
                self.fnb.next = 1.into();
            } else {
                // cyc holds the run's count until the next run starts
                self.fv.next = self.cyc.q.val();
            }
        } else if self.c4.val() == 6 {
            self.nf.next = 1.into();
            self.fv.next = bit_cast::<32, 16>(self.lm.staged.val()) << 16;
            self.fnb.next = 2.into();
        } else if self.c4.val() == 7 {
            self.nf.next = 1.into();
            self.fv.next = bit_cast::<32, 16>(self.lm.count.val()) << 16;
            self.fnb.next = 2.into();
        } else if self.c4.val() == 8 {
            self.nf.next = 6.into();
            if self.fj.q.val() == 0 {
                self.fv.next = bit_cast::<32, 1>(self.lm.found.val().into()) << 24;
                self.fnb.next = 1.into();
            } else if self.fj.q.val() == 1 {
                self.fv.next = self.lm.hit_ts0.val().get_bits::<32>(32);
            } else if self.fj.q.val() == 2 {
                self.fv.next = self.lm.hit_ts0.val().get_bits::<32>(0);
            } else if self.fj.q.val() == 3 {
                self.fv.next = self.lm.hit_t.val();
            } else if self.fj.q.val() == 4 {
                self.fv.next = self.lm.version.val();
            } else {
                self.fv.next = self.cyc.q.val();
            }
        } else if self.c4.val() == 9 {
            self.nf.next = 4.into();
            if self.fj.q.val() == 0 {
                self.fv.next = bit_cast::<32, 16>(self.lm.count.val()) << 16;
                self.fnb.next = 2.into();
            } else if self.fj.q.val() == 1 {
                self.fv.next = bit_cast::<32, 16>(self.lm.staged.val()) << 16;
                self.fnb.next = 2.into();
            } else if self.fj.q.val() == 2 {
                self.fv.next = self.lm.version.val();
            } else {
                self.fv.next = bit_cast::<32, 1>(self.lm.full.val().into()) << 24;
                self.fnb.next = 1.into();
            }
        } else if self.c4.val() == 10 {
            // the twelve counters come from the stats file (RLoad → RStat), not through fv
            self.nf.next = 12.into();
        }

        // ------------------------------------------------------------ sequencer
        match self.state.q.val() {
            EngState::Idle => {
                if self.req_valid.val() && !self.vu.busy.val() && !self.lm.busy.val() {
                    self.cmd.d.next = self.req_cmd.val();
                    self.known.d.next = (self.req_cmd.val() >= 0x01) && (self.req_cmd.val() <= 0x0A);
                    self.seq.d.next = self.req_seq.val();
                    self.len.d.next = self.req_len.val();
                    self.held.d.next = true;
                    self.status.d.next = 0x00.into();
                    self.ptr.d.next = 0.into();
                    self.state.d.next = EngState::Fetch;
                }
            }
            EngState::Fetch => {
                // byte ptr − 1 arrives; byte ptr is addressed
                if self.ptr.q.val() != 0 {
                    self.hdr.d.next = (self.hdr.q.val() << 8) | bit_cast::<72, 8>(self.rd_data.val());
                }
                if self.ptr.q.val() == 9 {
                    self.state.d.next = EngState::Wait;
                } else {
                    self.ptr.d.next = self.ptr.q.val() + 1;
                }
            }
            EngState::Wait => {
                // the key store reads the slot of byte 0 (rd_slot registered)
                self.state.d.next = EngState::Prep;
            }
            EngState::Prep => {
                self.kw_q.d.next = self.ks.rd_words.val();
                self.state.d.next = EngState::Prep2;
            }
            EngState::Prep2 => {
                self.ck.d.next = self.ckw.val();
                self.ctot.d.next = self.vtot.val();
                self.state.d.next = EngState::Prep3;
            }
            EngState::Prep3 => {
                // VERIFY's exact length from the registered total (the subtract, add and compare
                // behind one register were a long path)
                if self.len.q.val() != self.ctot.q.val() + 4 {
                    self.ck.d.next = self.ck.q.val() | 0x0800;
                }
                self.state.d.next = EngState::Check;
            }
            EngState::Check => {
                self.state.d.next = EngState::RWait;
                self.j.d.next = 0.into();
                self.av.d.next = false;
                self.eb.d.next = 0.into();
                self.app_pend.d.next = false;
                if !self.known.q.val() {
                    self.status.d.next = 0x03.into();
                } else if (self.c4.val() == 1) || (self.c4.val() == 10) {
                    if self.ck.q.val().get_bit(0) {
                        self.status.d.next = 0x02.into();
                    }
                } else if self.c4.val() == 3 {
                    if self.ck.q.val().get_bit(0) {
                        self.status.d.next = 0x02.into();
                    } else if self.ck.q.val().get_bit(8) {
                        self.status.d.next = 0x09.into();
                    } else {
                        self.state.d.next = EngState::Exec;
                    }
                } else if self.c4.val() == 2 {
                    if self.ck.q.val().get_bit(1) {
                        self.status.d.next = 0x02.into();
                    } else if self.ck.q.val().get_bit(3) {
                        self.status.d.next = 0x05.into();
                    } else if self.ck.q.val().get_bit(4)
                    {
                        self.status.d.next = 0x07.into();
                    } else if self.ck.q.val().get_bit(5) {
                        self.status.d.next = 0x02.into();
                    } else if self.ck.q.val().get_bit(6) {
                        self.status.d.next = 0x06.into();
                    } else if self.ck.q.val().get_bit(7) {
                        self.status.d.next = 0x08.into();
                    } else {
                        // n's last byte (its word 0's low byte) for the parity check
                        self.ptr.d.next = self.w2.val() + 6;
                        self.state.d.next = EngState::LkPar;
                    }
                } else if self.c4.val() == 4 {
                    if self.ck.q.val().get_bit(2) {
                        self.status.d.next = 0x02.into();
                    } else if self.ck.q.val().get_bit(3) {
                        self.status.d.next = 0x05.into();
                    } else if self.ck.q.val().get_bit(8) {
                        self.status.d.next = 0x09.into();
                    } else if self.ck.q.val().get_bit(9) {
                        self.status.d.next = 0x08.into();
                    } else if self.ck.q.val().get_bit(10) {
                        self.status.d.next = 0x08.into();
                    } else if self.ck.q.val().get_bit(11) {
                        self.status.d.next = 0x02.into();
                    } else {
                        self.ptr.d.next = 4.into();
                        self.cw.d.next = self.cm1.val();
                        self.wi.d.next = self.cm1.val();
                        self.f2.d.next = false;
                        self.state.d.next = EngState::Copy;
                    }
                } else if (self.c4.val() == 5)
                    || (self.c4.val() == 9)
                {
                    if self.ck.q.val().get_bit(13) {
                        self.status.d.next = 0x02.into();
                    } else if self.ck.q.val().get_bit(12) {
                        self.status.d.next = 0x05.into();
                    } else {
                        self.state.d.next = EngState::Exec;
                    }
                } else if self.c4.val() == 7 {
                    if self.ck.q.val().get_bit(14) {
                        self.status.d.next = 0x02.into();
                    } else if self.ck.q.val().get_bit(12) {
                        self.status.d.next = 0x05.into();
                    } else {
                        self.state.d.next = EngState::Exec;
                    }
                } else if self.c4.val() == 8 {
                    if self.ck.q.val().get_bit(15) {
                        self.status.d.next = 0x02.into();
                    } else if self.ck.q.val().get_bit(12) {
                        self.status.d.next = 0x05.into();
                    } else {
                        self.state.d.next = EngState::Exec;
                    }
                } else if self.c4.val() == 6 {
                    if !self.ck.q.val().get_bit(0) {
                        // LEN = 0 (flag 0 is LEN ≠ 0)
                        self.status.d.next = 0x02.into();
                    } else if self.ck.q.val().get_bit(12) {
                        self.status.d.next = 0x05.into();
                    } else {
                        self.rem.d.next = self.len.q.val() - 1;
                        self.state.d.next = EngState::AppLen;
                    }
                } else {
                    self.status.d.next = 0x03.into();
                }
            }
            // ---------------------------------------------------------------- LOAD_KEY
            EngState::LkPar => {
                // the parity byte's address is on the read port this cycle
                self.state.d.next = EngState::LkPar2;
            }
            EngState::LkPar2 => {
                if !self.rd_data.val().get_bit(0) {
                    self.status.d.next = 0x08.into();
                    self.state.d.next = EngState::RWait;
                } else {
                    self.ptr.d.next = 7.into();
                    self.ctot.d.next = self.w4.val();
                    self.cw.d.next = self.cm1.val();
                    self.wi.d.next = self.cm1.val();
                    self.f2.d.next = false;
                    self.state.d.next = EngState::Copy;
                }
            }
            // ---------------------------------------------------------------- copy loop
            EngState::Copy => {
                // issue
                self.av.d.next = false;
                if self.j.q.val() != self.ctot.q.val() {
                    self.ptr.d.next = self.ptr.q.val() + 1;
                    self.j.d.next = self.j.q.val() + 1;
                    self.av.d.next = true;
                    self.aj.d.next = self.j.q.val().get_bit(0);
                }
                // arrival
                if self.av.q.val() {
                    if self.aj.q.val() {
                        self.wr1.next = !self.f2.q.val();
                        self.wr2.next = self.f2.q.val();
                        if self.wi.q.val() == 0 {
                            self.wi.d.next = self.cw.q.val();
                            self.f2.d.next = true;
                        } else {
                            self.wi.d.next = self.wi.q.val() - 1;
                        }
                    } else {
                        self.hi.d.next = self.rd_data.val();
                    }
                } else if self.j.q.val() == self.ctot.q.val() {
                    if self.is_load.val() {
                        self.state.d.next = EngState::KeyEnd;
                    } else {
                        // VERIFY: the request buffer is no longer needed
                        self.rel.next = true;
                        self.held.d.next = false;
                        self.ki.d.next = 0.into();
                        self.kv.d.next = false;
                        self.kpass.d.next = self.vu_ok.q.val() && (self.vu_slot.q.val() == self.b0.val());
                        self.state.d.next = EngState::VKey;
                    }
                }
                self.ks_wr_n.next = self.wr1.val() && self.is_load.val();
                self.ks_wr_r2.next = self.wr2.val() && self.is_load.val();
                self.vu_wr_sig.next = self.wr1.val() && !self.is_load.val();
                self.vu_wr_ref.next = self.wr2.val() && !self.is_load.val();
            }
            EngState::KeyEnd => {
                self.ks_wr_words.next = true;
                self.ks_wr_e.next = true;
                self.ks_wr_data.next = self.f_words.val();
                self.state.d.next = EngState::N0Wait;
            }
            EngState::N0Wait => {
                if !self.ks.n0p_busy.val() {
                    if self.vu_slot.q.val() == self.b0.val() {
                        self.vu_ok.d.next = false;
                    }
                    self.state.d.next = EngState::RWait;
                }
            }
            // ---------------------------------------------------------------- VERIFY
            EngState::VKey => {
                // pass 0: n, pass 1: R²; key-store word ki addressed, word ka arrives
                self.kv.d.next = false;
                if self.ki.q.val() != self.kw.val() {
                    self.ki.d.next = self.ki.q.val() + 1;
                    self.kv.d.next = true;
                    self.ka.d.next = self.ki.q.val();
                }
                self.vu_wr_addr.next = self.ka.q.val();
                if self.kpass.q.val() {
                    self.vu_wr_data.next = self.ks.rd_r2.val();
                    self.vu_wr_r2.next = self.kv.q.val();
                } else {
                    self.vu_wr_data.next = self.ks.rd_n.val();
                    self.vu_wr_n.next = self.kv.q.val();
                }
                if !self.kv.q.val() && (self.ki.q.val() == self.kw.val()) {
                    if self.kpass.q.val() {
                        self.state.d.next = EngState::VStart;
                    } else {
                        self.kpass.d.next = true;
                        self.ki.d.next = 0.into();
                    }
                }
            }
            EngState::VStart => {
                self.vu_start.next = true;
                self.vu_slot.d.next = self.b0.val();
                self.vu_ok.d.next = true;
                self.cyc.d.next = 0.into();
                self.state.d.next = EngState::VWait;
            }
            EngState::VWait => {
                if self.vu.busy.val() {
                    self.cyc.d.next = self.cyc.q.val() + 1;
                }
                if self.vu.done.val() {
                    self.verdict_q.d.next = bit_cast::<8, 2>(self.vu.verdict.val());
                    // verifies, by verdict, last and total cycles (fields 4…9)
                    if self.vu.verdict.val() == 1 {
                        self.ev.next = 0x330.into();
                    } else if self.vu.verdict.val() == 2 {
                        self.ev.next = 0x350.into();
                    } else {
                        self.ev.next = 0x390.into();
                    }
                    self.state.d.next = EngState::RWait;
                }
            }
            // ---------------------------------------------------------------- LIST_APPEND
            EngState::AppLen => {
                if self.rem.q.val() == 0 {
                    self.ptr.d.next = 1.into();
                    self.state.d.next = EngState::AppCopy;
                } else if self.rem.q.val() < self.esize.val() {
                    self.status.d.next = 0x02.into();
                    self.state.d.next = EngState::RWait;
                } else {
                    self.rem.d.next = self.rem.q.val() - self.esize.val();
                }
            }
            EngState::AppCopy => {
                self.av.d.next = false;
                if self.ptr.q.val() != self.len.q.val() {
                    self.ptr.d.next = self.ptr.q.val() + 1;
                    self.av.d.next = true;
                }
                self.app_pend.d.next = false;
                self.lm_append.next = self.app_pend.q.val();
                if self.av.q.val() {
                    // the entry's ID is shifted into hdr's payload bytes 1..8 (byte 0, the
                    // list, stays), so the list memory's `id` is always f_id
                    self.hdr.d.next = (bit_cast::<72, 8>(self.b0.val()) << 64)
                        | bit_cast::<72, 64>(self.id_next.val());
                    if self.b0.val().get_bit(0) {
                        self.t_q.d.next = (self.t_q.q.val() << 8) | bit_cast::<32, 8>(self.rd_data.val());
                        self.ts0_q.d.next = (self.ts0_q.q.val() << 8)
                            | bit_cast::<64, 8>(self.t_q.q.val().get_bits::<8>(24));
                    }
                    if bit_cast::<16, 8>(self.eb.q.val()) == (self.esize.val() - 1) {
                        self.eb.d.next = 0.into();
                        self.app_pend.d.next = true;
                    } else {
                        self.eb.d.next = self.eb.q.val() + 1;
                    }
                } else if (self.ptr.q.val() == self.len.q.val()) && !self.app_pend.q.val() {
                    self.state.d.next = EngState::AppEnd;
                }
            }
            EngState::AppEnd => {
                // the last append's full flag and staged count are visible now
                if self.lm.full.val() {
                    self.status.d.next = 0x0A.into();
                }
                self.state.d.next = EngState::RWait;
            }
            // ---------------------------------------------------------------- one-strobe commands
            EngState::Exec => {
                self.state.d.next = EngState::RWait;
                if self.c4.val() == 3 {
                    self.ks_lock.next = true;
                } else if self.c4.val() == 5 {
                    self.lm_clear.next = true;
                } else if self.c4.val() == 7 {
                    self.lm_commit.next = true;
                } else if self.c4.val() == 8 {
                    self.lm_lookup.next = true;
                    self.cyc.d.next = 0.into();
                    self.state.d.next = EngState::LkWait;
                }
            }
            EngState::LkWait => {
                if self.lm.busy.val() {
                    self.cyc.d.next = self.cyc.q.val() + 1;
                }
                if self.lm.done.val() {
                    // lookups, last lookup cycles (fields 10, 11)
                    self.ev.next = 0xC00.into();
                    self.state.d.next = EngState::RWait;
                }
            }
            // ---------------------------------------------------------------- reply
            EngState::RWait => {
                if self.held.q.val() {
                    self.rel.next = true;
                    self.held.d.next = false;
                }
                if !self.rep_v.q.val() && !self.rep_busy.val() {
                    self.state.d.next = EngState::RStatus;
                }
            }
            EngState::RStatus => {
                self.rw_en_l.next = true;
                self.wa.d.next = 1.into();
                self.fj.d.next = 0.into();
                if (self.status.q.val() == 0x00) && (self.nf.val() != 0) {
                    self.state.d.next = EngState::RLoad;
                } else {
                    self.state.d.next = EngState::RDone;
                }
            }
            EngState::RLoad => {
                self.sh.d.next = self.fv.val();
                self.fb.d.next = self.fnb.val();
                self.state.d.next = EngState::REmit;
                if self.c4.val() == 10 {
                    self.st_rd.next = true;
                    self.state.d.next = EngState::RStat;
                }
            }
            EngState::RStat => {
                if self.stats.rd_valid.val() {
                    self.sh.d.next = self.stats.rd_value.val();
                    self.fb.d.next = 4.into();
                    self.state.d.next = EngState::REmit;
                }
            }
            EngState::REmit => {
                self.rw_en_l.next = true;
                self.wa.d.next = self.wa.q.val() + 1;
                self.sh.d.next = self.sh.q.val() << 8;
                self.fb.d.next = self.fb.q.val() - 1;
                if self.fb.q.val() == 1 {
                    self.fj.d.next = self.fj.q.val() + 1;
                    if (self.fj.q.val() + 1) == self.nf.val() {
                        self.state.d.next = EngState::RDone;
                    } else {
                        self.state.d.next = EngState::RLoad;
                    }
                }
            }
            EngState::RDone => {
                self.rep_v.d.next = true;
                self.rep_l.d.next = bit_cast::<16, 6>(self.wa.q.val());
                self.state.d.next = EngState::Idle;
            }
            _ => {
                self.state.d.next = EngState::Idle;
            }
        }
        if self.rep_take.val() {
            self.rep_v.d.next = false;
        }

        // ------------------------------------------------------------ reset
        if self.reset.val() {
            self.state.d.next = EngState::Idle;
            self.held.d.next = false;
            self.rep_v.d.next = false;
            self.vu_ok.d.next = false;
        }

        // ------------------------------------------------------------ children, once each
        self.req_done.next = self.rel.val() && !self.reset.val();
        self.rd_index.next = self.rd_idx.val();
        self.rw_addr.next = self.wa.q.val();
        self.rw_data.next = self.sh.q.val().get_bits::<8>(24);
        if self.state.q.val() == EngState::RStatus {
            self.rw_addr.next = 0.into();
            self.rw_data.next = self.status.q.val();
        }
        self.rw_en.next = self.rw_en_l.val();

        self.stats.clock.next = self.clock.val();
        self.stats.reset.next = self.reset.val();
        self.stats.ev.next = self.ev.val() | bit_cast::<12, 4>(self.st_ev.val());
        self.stats.val.next = self.cyc.q.val();
        self.stats.rd_req.next = self.st_rd.val();
        self.stats.rd_field.next = self.fj.q.val().get_bits::<4>(0);

        self.ks.wr_slot.next = self.b0.val();
        self.ks.wr_index.next = self.ks_wr_index.val();
        self.ks.wr_data.next = self.ks_wr_data.val();
        self.ks.wr_e_data.next = self.f_e.val();
        self.ks.wr_n.next = self.ks_wr_n.val() && !self.reset.val();
        self.ks.wr_r2.next = self.ks_wr_r2.val() && !self.reset.val();
        self.ks.wr_words.next = self.ks_wr_words.val() && !self.reset.val();
        self.ks.wr_e.next = self.ks_wr_e.val() && !self.reset.val();
        self.ks.lock.next = self.ks_lock.val() && !self.reset.val();
        self.ks.unlock.next = self.reset.val();
        self.ks.rd_slot.next = self.ks_rd_slot.val();
        self.ks.rd_index.next = self.ki.q.val();

        self.vu.wr_addr.next = self.vu_wr_addr.val();
        self.vu.wr_data.next = self.vu_wr_data.val();
        self.vu.wr_n.next = self.vu_wr_n.val();
        self.vu.wr_r2.next = self.vu_wr_r2.val();
        self.vu.wr_sig.next = self.vu_wr_sig.val();
        self.vu.wr_ref.next = self.vu_wr_ref.val();
        self.vu.rd_addr.next = 0.into();
        self.vu.words.next = self.ks.rd_words.val();
        self.vu.n0p.next = self.ks.rd_n0p.val();
        self.vu.e.next = self.ks.rd_e.val();
        self.vu.mode.next = self.f_mode.val().get_bit(0);
        self.vu.top_shift.next = bit_cast::<32, 16>(self.f_shift.val());
        self.vu.start.next = self.vu_start.val() && !self.reset.val();

        self.lm.list.next = self.b0.val().get_bit(0);
        self.lm.clear.next = self.lm_clear.val() && !self.reset.val();
        self.lm.append.next = self.lm_append.val() && !self.reset.val();
        self.lm.commit.next = self.lm_commit.val() && !self.reset.val();
        self.lm.lookup.next = self.lm_lookup.val() && !self.reset.val();
        self.lm.id.next = self.f_id.val();
        self.lm.rec_ts0.next = self.ts0_q.q.val();
        self.lm.rec_t.next = self.t_q.q.val();
        self.lm.commit_version.next = self.f_e.val();
    }
}

/// A software board: what every request must be answered (sequential requests, no BUSY).
#[cfg(test)]
#[allow(dead_code)]
pub(crate) mod model {
    use super::*;
    pub use crate::frame_rx::*;
    use crate::top::harness::Reply;
    use num_bigint::BigUint;
    use num_traits::Zero;

    #[derive(Clone, Debug)]
    pub struct Key {
        pub e: u32,
        pub w: usize,
        pub n: BigUint,
        pub r2: BigUint,
    }

    #[derive(Clone, Debug, Default)]
    pub struct List {
        pub act: Vec<(u64, u64, u32)>,
        pub stg: Vec<(u64, u64, u32)>,
        pub ver: u32,
        pub full: bool,
    }

    /// Board parameters and state.
    pub struct Board {
        pub lanes: u8,
        pub max_words: usize,
        pub slots: usize,
        pub cap: usize,
        pub clock_hz: u32,
        pub cpb: u16,
        pub idle: u32,
        pub keys: Vec<Option<Key>>,
        pub locked: bool,
        pub lists: [List; 2],
        /// ok, bad crc, other errors, busy (replies sent)
        pub sent: [u32; 4],
        pub ver: [u32; 4],
        pub last_vc: u32,
        pub total_vc: u32,
        pub lookups: u32,
        pub last_lc: u32,
        /// `VerifyUnit::cycles(w, e)` and `cycles_rejected(w)` of the instance under test.
        pub vcycles: fn(usize, u32) -> usize,
        pub vrejected: fn(usize) -> usize,
    }

    pub fn be(x: &BigUint, bytes: usize) -> Vec<u8> {
        let v = x.to_bytes_be();
        assert!(v.len() <= bytes, "{x} does not fit {bytes} bytes");
        let mut out = vec![0u8; bytes - v.len()];
        out.extend(v);
        out
    }

    impl Board {
        pub fn reply(&mut self, cmd: u8, seq: u8, status: u8, data: Vec<u8>) -> Reply {
            let k = match status as u64 {
                ST_OK => 0,
                ST_BAD_CRC => 1,
                ST_BUSY => 3,
                _ => 2,
            };
            self.sent[k] = self.sent[k].wrapping_add(1);
            Reply {
                cmd: cmd & 0x7f, // replies carry CMD | 0x80
                seq,
                status,
                data: if status == 0 { data } else { vec![] },
                led_error: None,
            }
        }

        pub fn reset(&mut self) {
            self.locked = false;
            self.sent = [0; 4];
            self.ver = [0; 4];
            self.last_vc = 0;
            self.total_vc = 0;
            self.lookups = 0;
            self.last_lc = 0;
        }

        /// The answer to a well-formed (good CRC, not too long) request.
        pub fn handle(&mut self, cmd: u8, seq: u8, p: &[u8]) -> Reply {
            let (st, data) = self.exec(cmd, p);
            self.reply(cmd, seq, st as u8, data)
        }

        fn exec(&mut self, cmd: u8, p: &[u8]) -> (u64, Vec<u8>) {
            let len = p.len();
            let bslot = |s: u8, n: usize| (s as usize) >= n;
            match cmd as u64 {
                CMD_INFO | CMD_STATS if len != 0 => (ST_BAD_LENGTH, vec![]),
                CMD_INFO => {
                    let mut d = vec![1, self.lanes];
                    d.extend((16 * self.max_words as u16).to_be_bytes());
                    d.push(self.slots as u8);
                    d.extend((self.cap as u16).to_be_bytes());
                    d.extend((8 + 4 * self.max_words as u16).to_be_bytes());
                    d.extend(self.clock_hz.to_be_bytes());
                    d.extend(self.cpb.to_be_bytes());
                    d.extend(self.idle.to_be_bytes());
                    (ST_OK, d)
                }
                CMD_STATS => {
                    let mut d = vec![];
                    for v in self.sent.iter().chain(self.ver.iter()).chain(
                        [self.last_vc, self.total_vc, self.lookups, self.last_lc].iter(),
                    ) {
                        d.extend(v.to_be_bytes());
                    }
                    (ST_OK, d)
                }
                CMD_LOCK_MASTER => {
                    if len != 0 {
                        (ST_BAD_LENGTH, vec![])
                    } else if self.keys[0].is_none() {
                        (ST_NO_KEY, vec![])
                    } else {
                        self.locked = true;
                        (ST_OK, vec![])
                    }
                }
                CMD_LOAD_KEY => {
                    if len < 7 {
                        return (ST_BAD_LENGTH, vec![]);
                    }
                    let slot = p[0];
                    let e = u32::from_be_bytes(p[1..5].try_into().unwrap());
                    let w = u16::from_be_bytes([p[5], p[6]]) as usize;
                    if bslot(slot, self.slots) {
                        (ST_BAD_SLOT, vec![])
                    } else if w == 0 || w > self.max_words {
                        (ST_BAD_SIZE, vec![])
                    } else if len != 7 + 4 * w {
                        (ST_BAD_LENGTH, vec![])
                    } else if slot == 0 && self.locked {
                        (ST_LOCKED, vec![])
                    } else if e == 0 || p[7 + 2 * w - 1] & 1 == 0 {
                        (ST_BAD_PARAM, vec![])
                    } else {
                        self.keys[slot as usize] = Some(Key {
                            e,
                            w,
                            n: BigUint::from_bytes_be(&p[7..7 + 2 * w]),
                            r2: BigUint::from_bytes_be(&p[7 + 2 * w..]),
                        });
                        (ST_OK, vec![])
                    }
                }
                CMD_VERIFY => {
                    if len < 4 {
                        return (ST_BAD_LENGTH, vec![]);
                    }
                    let (slot, mode) = (p[0], p[1]);
                    let shift = u16::from_be_bytes([p[2], p[3]]) as usize;
                    if bslot(slot, self.slots) {
                        return (ST_BAD_SLOT, vec![]);
                    }
                    let Some(k) = self.keys[slot as usize].clone() else {
                        return (ST_NO_KEY, vec![]);
                    };
                    let w = k.w;
                    if mode > 1 || (mode == 1 && shift >= 16 * w) {
                        return (ST_BAD_PARAM, vec![]);
                    }
                    let r = if mode == 1 { w - shift / 16 } else { w };
                    if len != 4 + 2 * w + 2 * r {
                        return (ST_BAD_LENGTH, vec![]);
                    }
                    let s = BigUint::from_bytes_be(&p[4..4 + 2 * w]);
                    let rf = BigUint::from_bytes_be(&p[4 + 2 * w..]);
                    let (verdict, cycles) = if s.is_zero() || s >= k.n {
                        (3u8, (self.vrejected)(w))
                    } else {
                        let y = s.modpow(&BigUint::from(k.e), &k.n);
                        let ok = if mode == 0 {
                            y == rf
                        } else {
                            (y >> shift) == (rf << (16 * (shift / 16))) >> shift
                        };
                        (if ok { 1 } else { 2 }, (self.vcycles)(w, k.e))
                    };
                    let cycles = cycles as u32;
                    self.ver[0] += 1;
                    self.ver[verdict as usize] += 1;
                    self.last_vc = cycles;
                    self.total_vc = self.total_vc.wrapping_add(cycles);
                    let mut d = vec![verdict];
                    d.extend(cycles.to_be_bytes());
                    (ST_OK, d)
                }
                CMD_LIST_CLEAR | CMD_LIST_STATUS | CMD_LIST_COMMIT | CMD_LIST_LOOKUP
                | CMD_LIST_APPEND => {
                    let need = match cmd as u64 {
                        CMD_LIST_COMMIT => Some(5),
                        CMD_LIST_LOOKUP => Some(9),
                        CMD_LIST_APPEND => None,
                        _ => Some(1),
                    };
                    if len < 1 || need.is_some_and(|n| n != len) {
                        return (ST_BAD_LENGTH, vec![]);
                    }
                    if p[0] > 1 {
                        return (ST_BAD_SLOT, vec![]);
                    }
                    let cap = self.cap;
                    let l = &mut self.lists[p[0] as usize];
                    match cmd as u64 {
                        CMD_LIST_CLEAR => {
                            l.stg.clear();
                            l.full = false;
                            (ST_OK, vec![])
                        }
                        CMD_LIST_STATUS => {
                            let mut d = vec![];
                            d.extend((l.act.len() as u16).to_be_bytes());
                            d.extend((l.stg.len() as u16).to_be_bytes());
                            d.extend(l.ver.to_be_bytes());
                            d.push(l.full as u8);
                            (ST_OK, d)
                        }
                        CMD_LIST_COMMIT => {
                            l.act = std::mem::take(&mut l.stg);
                            l.full = false;
                            l.ver = u32::from_be_bytes(p[1..5].try_into().unwrap());
                            (ST_OK, (l.act.len() as u16).to_be_bytes().to_vec())
                        }
                        CMD_LIST_LOOKUP => {
                            let id = u64::from_be_bytes(p[1..9].try_into().unwrap());
                            let hit = l.act.iter().find(|e| e.0 == id).copied();
                            // ListMemory: count + 1; ListMemorySpram: 2·count + 4
                            let cyc = Lists::<1>::lookup_cycles(l.act.len()) as u32;
                            let mut d = vec![hit.is_some() as u8];
                            let (ts0, t) = hit.map(|e| (e.1, e.2)).unwrap_or((0, 0));
                            d.extend(ts0.to_be_bytes());
                            d.extend(t.to_be_bytes());
                            d.extend(l.ver.to_be_bytes());
                            d.extend(cyc.to_be_bytes());
                            self.lookups += 1;
                            self.last_lc = cyc;
                            (ST_OK, d)
                        }
                        _ => {
                            let es = if p[0] == 1 { 20 } else { 8 };
                            if (len - 1) % es != 0 {
                                return (ST_BAD_LENGTH, vec![]);
                            }
                            for ch in p[1..].chunks(es) {
                                let id = u64::from_be_bytes(ch[0..8].try_into().unwrap());
                                let (ts0, t) = if es == 20 {
                                    (
                                        u64::from_be_bytes(ch[8..16].try_into().unwrap()),
                                        u32::from_be_bytes(ch[16..20].try_into().unwrap()),
                                    )
                                } else {
                                    (0, 0)
                                };
                                if l.stg.len() < cap {
                                    l.stg.push((id, ts0, t));
                                } else {
                                    l.full = true;
                                }
                            }
                            if l.full {
                                (ST_LIST_FULL, vec![])
                            } else {
                                (ST_OK, (l.stg.len() as u16).to_be_bytes().to_vec())
                            }
                        }
                    }
                }
                _ => (ST_UNKNOWN_CMD, vec![]),
            }
        }
    }

    /// xorshift64*, deterministic test data.
    pub struct Rng(pub u64);
    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        pub fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        pub fn big(&mut self, bits: usize) -> BigUint {
            let words: Vec<u32> = (0..bits.div_ceil(32)).map(|_| self.next() as u32).collect();
            let x = BigUint::from_slice(&words);
            x & ((BigUint::from(1u8) << bits) - 1u8)
        }
        /// An odd modulus of exactly `16·w` bits.
        pub fn modulus(&mut self, w: usize) -> BigUint {
            let bits = 16 * w;
            self.big(bits) | (BigUint::from(1u8) << (bits - 1)) | BigUint::from(1u8)
        }
    }

    /// LOAD_KEY payload.
    pub fn load_key(slot: u8, e: u32, w: usize, n: &BigUint) -> Vec<u8> {
        let r2 = (BigUint::from(1u8) << (32 * w)) % n;
        let mut p = vec![slot];
        p.extend(e.to_be_bytes());
        p.extend((w as u16).to_be_bytes());
        p.extend(be(n, 2 * w));
        p.extend(be(&r2, 2 * w));
        p
    }

    /// VERIFY payload: FULL (`shift` = None) or ESIGN with the reference `f·2^shift` cut to
    /// its top `w − ⌊shift/16⌋` words (`low` fills the ignored bits below `shift`).
    pub fn verify(slot: u8, w: usize, s: &BigUint, shift: Option<usize>, reference: &BigUint) -> Vec<u8> {
        let mut p = vec![slot, shift.is_some() as u8];
        p.extend((shift.unwrap_or(0) as u16).to_be_bytes());
        p.extend(be(s, 2 * w));
        match shift {
            None => p.extend(be(reference, 2 * w)),
            Some(sh) => {
                let r = w - sh / 16;
                p.extend(be(&(reference >> (16 * (sh / 16))), 2 * r));
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::model::*;
    use super::*;
    use crate::top::harness::{request, run_core, Reply, Step};
    use crate::top::TopConfig;
    use num_bigint::BigUint;
    use num_traits::One;

    // 128-bit build: VerifyUnit<2, 2> (8 words), KeyStore<3, 3>, ListMemory<3>, 2 × 64-byte buffers
    const VAW: usize = 2;
    const L: usize = 2;
    const KAW: usize = 3;
    const SLOTS: usize = 3;
    const LAW: usize = 3;
    const BAW: usize = 7;
    const MW: usize = 8;

    pub(crate) fn config() -> TopConfig {
        TopConfig {
            max_words: MW as u16,
            clock_hz: 12_000_000,
            clocks_per_bit: 4,
            idle_timeout: 300,
        }
    }

    pub(crate) fn board(cfg: &TopConfig) -> Board {
        Board {
            lanes: L as u8,
            max_words: MW,
            slots: SLOTS,
            cap: 1 << LAW,
            clock_hz: cfg.clock_hz,
            cpb: cfg.clocks_per_bit,
            idle: cfg.idle_timeout,
            keys: vec![None; SLOTS],
            locked: false,
            lists: Default::default(),
            sent: [0; 4],
            ver: [0; 4],
            last_vc: 0,
            total_vc: 0,
            lookups: 0,
            last_lc: 0,
            vcycles: VerifyUnit::<VAW, L>::cycles,
            vrejected: VerifyUnit::<VAW, L>::cycles_rejected,
        }
    }

    /// A request script with the replies the model expects, one request at a time.
    pub(crate) struct Script {
        pub steps: Vec<Step>,
        pub want: Vec<Reply>,
        pub seq: u8,
        pub board: Board,
        /// replies per status code, for coverage
        pub seen: [usize; 12],
    }

    impl Script {
        pub fn new(board: Board) -> Self {
            Script { steps: vec![], want: vec![], seq: 0, board, seen: [0; 12] }
        }
        fn push(&mut self, frame: Vec<u8>, want: Reply) {
            self.seen[want.status as usize] += 1;
            self.steps.push(Step::Send(frame));
            self.want.push(want);
            self.steps.push(Step::Wait(self.want.len()));
        }
        /// A well-formed request, answered by the model.
        pub fn req(&mut self, cmd: u8, p: &[u8]) {
            self.seq = self.seq.wrapping_add(1);
            let want = self.board.handle(cmd, self.seq, p);
            self.push(request(cmd, self.seq, p), want);
        }
        /// A request with its CRC broken: BAD_CRC.
        pub fn bad_crc(&mut self, cmd: u8, p: &[u8]) {
            self.seq = self.seq.wrapping_add(1);
            let mut f = request(cmd, self.seq, p);
            // any byte but the sync and LEN (a corrupted LEN is a different error)
            let cand: Vec<usize> = (1..f.len()).filter(|&k| k != 3 && k != 4).collect();
            let k = cand[self.seq as usize % cand.len()];
            f[k] ^= 0x10;
            // what the receiver saw as CMD / SEQ
            let want = self.board.reply(f[1], f[2], ST_BAD_CRC as u8, vec![]);
            self.push(f, want);
        }
        /// Only a header with LEN > MAX_PAYLOAD: TOO_LONG.
        pub fn too_long(&mut self, cmd: u8, len: u16) {
            self.seq = self.seq.wrapping_add(1);
            let mut f = vec![0xA5, cmd, self.seq];
            f.extend(len.to_be_bytes());
            let want = self.board.reply(cmd, self.seq, ST_TOO_LONG as u8, vec![]);
            self.push(f, want);
        }
        pub fn reset(&mut self) {
            self.steps.push(Step::Reset);
            self.steps.push(Step::Idle(4));
            self.board.reset();
        }
    }

    pub(crate) fn check(out: &[Reply], want: &[Reply], check_led: bool) {
        assert_eq!(out.len(), want.len(), "reply count");
        for (k, (g, w)) in out.iter().zip(want).enumerate() {
            assert_eq!(
                (g.cmd, g.seq, g.status, &g.data),
                (w.cmd, w.seq, w.status, &w.data),
                "reply {k}: got {g:02x?}, want {w:02x?}"
            );
            if check_led {
                assert_eq!(g.led_error, Some(g.status != 0), "reply {k}: led_error");
            }
        }
    }

    /// Keys, verifies (FULL and ESIGN, VALID / INVALID / ERROR, the n cache across slots and
    /// reloads), the master lock, and every validation error of the command table.
    pub(crate) fn keys_and_verifies(sc: &mut Script, rng: &mut Rng) {
        let c = |x: u64| x as u8;
        // before any key
        sc.req(c(CMD_INFO), &[]);
        sc.req(c(CMD_VERIFY), &[1, 0, 0, 0]); // NO_KEY
        sc.req(c(CMD_LOCK_MASTER), &[]); // NO_KEY
        for cmd in [0x00u8, 0x0B, 0x7F, 0xFF] {
            sc.req(cmd, &[1, 2, 3]); // UNKNOWN_CMD
        }
        sc.req(c(CMD_INFO), &[0]); // BAD_LENGTH
        sc.req(c(CMD_STATS), &[0, 0]); // BAD_LENGTH
        let n0 = rng.modulus(MW);
        let good0 = load_key(0, 65537, MW, &n0);
        sc.req(c(CMD_LOAD_KEY), &good0[..5]); // BAD_LENGTH (short)
        let mut p = good0.clone();
        p[0] = SLOTS as u8; // BAD_SLOT
        sc.req(c(CMD_LOAD_KEY), &p);
        p[0] = 0xFF;
        sc.req(c(CMD_LOAD_KEY), &p);
        sc.req(c(CMD_LOAD_KEY), &[1, 0, 0, 0, 3, 0, 0]); // BAD_SIZE (0 words)
        sc.req(c(CMD_LOAD_KEY), &[1, 0, 0, 0, 3, 0, 9]); // BAD_SIZE (> max_words)
        sc.req(c(CMD_LOAD_KEY), &good0[..good0.len() - 2]); // BAD_LENGTH
        let mut p = good0.clone();
        p[1..5].copy_from_slice(&[0, 0, 0, 0]); // e = 0: BAD_PARAM
        sc.req(c(CMD_LOAD_KEY), &p);
        let even = &n0 - BigUint::one();
        sc.req(c(CMD_LOAD_KEY), &load_key(0, 3, MW, &even)[..7 + 2 * MW].iter().chain(be(&BigUint::one(), 2 * MW).iter()).copied().collect::<Vec<u8>>()); // even n: BAD_PARAM
        sc.req(c(CMD_VERIFY), &[0, 0, 0, 0]); // still NO_KEY: nothing was loaded

        // three keys
        let e2 = (rng.next() as u32) | 0x8000_0000;
        let keys: Vec<(u8, u32, usize, BigUint)> = vec![
            (0, 65537, MW, n0),
            (1, 3, 4, rng.modulus(4)),
            (2, e2, 5, rng.modulus(5)),
        ];
        for (slot, e, w, n) in &keys {
            sc.req(c(CMD_LOAD_KEY), &load_key(*slot, *e, *w, n));
        }
        let verify_case = |sc: &mut Script, rng: &mut Rng, k: &(u8, u32, usize, BigUint), kind: u64| {
            let (slot, e, w, n) = k;
            let w = *w;
            let s = rng.big(16 * w) % n;
            let y = s.modpow(&BigUint::from(*e), n);
            match kind {
                0 => sc.req(c(CMD_VERIFY), &verify(*slot, w, &s, None, &y)), // VALID
                1 => {
                    let bad = &y ^ (BigUint::one() << rng.below(16 * w as u64));
                    sc.req(c(CMD_VERIFY), &verify(*slot, w, &s, None, &bad)) // INVALID
                }
                2 => sc.req(c(CMD_VERIFY), &verify(*slot, w, &BigUint::ZERO, None, &y)), // ERROR s = 0
                3 => sc.req(c(CMD_VERIFY), &verify(*slot, w, n, None, &y)), // ERROR s = n
                4 => {
                    let top = (BigUint::one() << (16 * w)) - 1u8;
                    sc.req(c(CMD_VERIFY), &verify(*slot, w, &top, None, &y)) // ERROR s > n
                }
                _ => {
                    // ESIGN: shift anywhere in the modulus, garbage below it, VALID or a flipped
                    // bit at or above the shift (INVALID)
                    let shift = match kind {
                        5 => 0,
                        6 => 16 * w - 1,
                        7 => 16 * (rng.below(w as u64) as usize),
                        _ => rng.below(16 * w as u64) as usize,
                    };
                    let f = &y >> shift;
                    let low = rng.big(shift.max(1)) & ((BigUint::one() << shift) - 1u8);
                    let mut rf = (f << shift) | low;
                    if kind >= 9 {
                        rf ^= BigUint::one() << (shift + rng.below((16 * w - shift) as u64) as usize);
                    }
                    sc.req(c(CMD_VERIFY), &verify(*slot, w, &s, Some(shift), &rf))
                }
            }
        };
        for kind in 0..11 {
            for k in &keys {
                verify_case(sc, rng, k, kind);
            }
        }
        // same slot twice (n cached), then a reload of that slot: the new n must be used
        verify_case(sc, rng, &keys[1], 0);
        verify_case(sc, rng, &keys[1], 0);
        let k1 = (1u8, 5u32, 6usize, rng.modulus(6));
        sc.req(c(CMD_LOAD_KEY), &load_key(k1.0, k1.1, k1.2, &k1.3));
        verify_case(sc, rng, &k1, 0);
        verify_case(sc, rng, &k1, 1);
        // VERIFY validation
        let s = BigUint::from(2u8);
        let full = verify(1, 6, &s, None, &s);
        sc.req(c(CMD_VERIFY), &full[..3]); // BAD_LENGTH
        sc.req(c(CMD_VERIFY), &full[..full.len() - 1]); // BAD_LENGTH
        let mut p = full.clone();
        p.push(0);
        sc.req(c(CMD_VERIFY), &p); // BAD_LENGTH
        let mut p = full.clone();
        p[0] = SLOTS as u8;
        sc.req(c(CMD_VERIFY), &p); // BAD_SLOT
        let mut p = full.clone();
        p[1] = 2;
        sc.req(c(CMD_VERIFY), &p); // BAD_PARAM (mode)
        let mut p = verify(1, 6, &s, Some(16), &s);
        p[2..4].copy_from_slice(&(16u16 * 6).to_be_bytes());
        sc.req(c(CMD_VERIFY), &p); // BAD_PARAM (shift = 16w)
        let p = verify(1, 6, &s, Some(40), &s);
        sc.req(c(CMD_VERIFY), &p[..p.len() - 2]); // BAD_LENGTH (ESIGN r)
        // master lock
        sc.req(c(CMD_LOCK_MASTER), &[0]); // BAD_LENGTH
        sc.req(c(CMD_LOCK_MASTER), &[]);
        let n_new = rng.modulus(MW);
        sc.req(c(CMD_LOAD_KEY), &load_key(0, 3, MW, &n_new)); // LOCKED
        sc.req(c(CMD_LOCK_MASTER), &[]); // again: OK
        verify_case(sc, rng, &keys[0], 0); // slot 0 unchanged
        verify_case(sc, rng, &keys[2], 1);
        sc.req(c(CMD_LOAD_KEY), &load_key(2, 7, 3, &rng.modulus(3))); // other slots writable
        sc.req(c(CMD_STATS), &[]);
    }

    /// Random list commands (both lists, overflow, stale banks) against the model.
    pub(crate) fn lists(sc: &mut Script, rng: &mut Rng, n: usize) {
        let c = |x: u64| x as u8;
        let pool: Vec<u64> = (0..12).map(|k| if k < 2 { [0, u64::MAX][k] } else { rng.next() }).collect();
        let cap_entries = |l: u8| if l == 1 { 1 } else { 4 };
        for _ in 0..n {
            let l = rng.below(2) as u8;
            match rng.below(20) {
                0 => sc.req(c(CMD_LIST_CLEAR), &[l]),
                1..=2 => sc.req(c(CMD_LIST_COMMIT), &[&[l][..], &(rng.next() as u32).to_be_bytes()].concat()),
                3..=5 => {
                    let id = if rng.below(6) == 0 { rng.next() } else { pool[rng.below(12) as usize] };
                    sc.req(c(CMD_LIST_LOOKUP), &[&[l][..], &id.to_be_bytes()].concat())
                }
                6 => sc.req(c(CMD_LIST_STATUS), &[l]),
                7 => {
                    // malformed: list 2, lengths, entry size
                    match rng.below(5) {
                        0 => sc.req(c(CMD_LIST_STATUS), &[2]),
                        1 => sc.req(c(CMD_LIST_APPEND), &[l, 1, 2, 3]),
                        2 => sc.req(c(CMD_LIST_LOOKUP), &[l, 1, 2, 3, 4, 5, 6, 7]),
                        3 => sc.req(c(CMD_LIST_APPEND), &[]),
                        _ => sc.req(c(CMD_LIST_COMMIT), &[l, 0, 0, 0]),
                    }
                }
                _ => {
                    let k = rng.below(cap_entries(l) as u64 + 1) as usize;
                    let mut p = vec![l];
                    for _ in 0..k {
                        p.extend(pool[rng.below(12) as usize].to_be_bytes());
                        if l == 1 {
                            p.extend(rng.next().to_be_bytes());
                            p.extend((rng.next() as u32).to_be_bytes());
                        }
                    }
                    sc.req(c(CMD_LIST_APPEND), &p)
                }
            }
        }
        sc.req(c(CMD_LIST_STATUS), &[0]);
        sc.req(c(CMD_LIST_STATUS), &[1]);
        sc.req(c(CMD_STATS), &[]);
    }

    /// The whole command table through the frame layer at byte level, against the model.
    #[test]
    fn engine_answers_like_the_model() {
        let cfg = config();
        let mut sc = Script::new(board(&cfg));
        let mut rng = Rng(0x1234_5678_9abc_def1);
        keys_and_verifies(&mut sc, &mut rng);
        // receiver errors between engine requests
        sc.bad_crc(CMD_INFO as u8, &[]);
        sc.bad_crc(CMD_VERIFY as u8, &[1, 2, 3, 4, 5]);
        sc.too_long(CMD_LOAD_KEY as u8, cfg.max_payload() + 1);
        sc.too_long(CMD_VERIFY as u8, 0xFFFF);
        sc.req(CMD_STATS as u8, &[]);
        lists(&mut sc, &mut rng, 250);
        // a half frame, dropped after the idle timeout; the next frame works
        sc.steps.push(Step::Send(vec![0xA5, 0x01, 0x77, 0x00]));
        sc.steps.push(Step::Idle(cfg.idle_timeout as u64 + 20));
        sc.req(CMD_INFO as u8, &[]);
        // reset: statistics and the lock cleared, keys and lists kept
        sc.reset();
        sc.req(CMD_STATS as u8, &[]);
        let n_new = rng.modulus(MW);
        sc.req(CMD_LOAD_KEY as u8, &load_key(0, 17, MW, &n_new));
        sc.req(CMD_LIST_STATUS as u8, &[1]);
        let s = BigUint::from(12345u32);
        let y = s.modpow(&BigUint::from(17u8), &n_new);
        sc.req(CMD_VERIFY as u8, &verify(0, MW, &s, None, &y));
        sc.req(CMD_STATS as u8, &[]);
        for (st, n) in sc.seen.iter().enumerate().take(ST_BUSY as usize) {
            assert!(*n > 0, "no reply with status {st:#04x} in the script");
        }
        let mut verdicts = [0usize; 4];
        for r in sc.want.iter().filter(|r| r.cmd == CMD_VERIFY as u8 && r.status == 0) {
            verdicts[r.data[0] as usize] += 1;
        }
        assert!(verdicts[1] > 10 && verdicts[2] > 10 && verdicts[3] > 5, "verdict coverage {verdicts:?}");
        let out = run_core::<VAW, L, KAW, SLOTS, LAW, BAW>(cfg, sc.steps, 2, 3, 2_000_000);
        check(&out.replies, &sc.want, true);
        println!("{} replies in {} cycles", out.replies.len(), out.cycles);
    }

    /// VERIFY's copy-in cost: cycles with `led_busy` high for one verify minus the verify unit's
    /// own cycles, with and without the n copy.
    #[test]
    fn verify_copy_in_cycles() {
        let cfg = config();
        let mut sc = Script::new(board(&cfg));
        let mut rng = Rng(77);
        let n = rng.modulus(MW);
        sc.req(CMD_LOAD_KEY as u8, &load_key(1, 3, MW, &n));
        sc.steps.push(Step::Idle(50));
        let s = rng.big(16 * MW) % &n;
        let y = s.modpow(&BigUint::from(3u8), &n);
        let out0 = run_core::<VAW, L, KAW, SLOTS, LAW, BAW>(cfg, sc.steps.clone(), 2, 3, 100_000);
        check(&out0.replies, &sc.want, true);
        // first verify (copies n), second (n cached)
        sc.req(CMD_VERIFY as u8, &verify(1, MW, &s, None, &y));
        sc.steps.push(Step::Idle(50));
        let out1 = run_core::<VAW, L, KAW, SLOTS, LAW, BAW>(cfg, sc.steps.clone(), 2, 3, 100_000);
        sc.req(CMD_VERIFY as u8, &verify(1, MW, &s, None, &y));
        sc.steps.push(Step::Idle(50));
        let out2 = run_core::<VAW, L, KAW, SLOTS, LAW, BAW>(cfg, sc.steps.clone(), 2, 3, 100_000);
        check(&out2.replies, &sc.want, true);
        assert_eq!(out2.replies[1].u8(0), 1, "VALID");
        let vc = VerifyUnit::<VAW, L>::cycles(MW, 3) as u64;
        let first = out1.busy_cycles - out0.busy_cycles;
        let second = out2.busy_cycles - out1.busy_cycles;
        println!("w = {MW}: verify busy {first} (n copied) / {second} (n cached) cycles, verify unit {vc}");
        // request: fetch 10 + wait/check 2 + copy (2w + 2w + 1) + key copies (w + 1 each) +
        // start + the run + reply (status + 5 bytes); the n copy is w + 2 cycles
        assert!(first > vc && second > vc && first - second == MW as u64 + 2, "{first} {second}");
        assert!(first - vc < 12 * MW as u64 + 40, "copy-in too slow: {}", first - vc);
    }
}
