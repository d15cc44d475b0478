//! s ↦ s^e mod n with AVX-512 IFMA, for the x86_64 machines that have it.
//!
//! The portable code in `mont.rs` multiplies 64-bit limbs one product at a time. IFMA
//! (`vpmadd52luq`/`vpmadd52huq`) does eight 52×52-bit products per instruction and adds the
//! low or high 52 bits of each to a 64-bit lane, so numbers here are in radix 2^52, eight
//! digits to a zmm register, and each lane has 12 spare bits to absorb carries until the end of
//! a product. The product is Gueron's almost Montgomery multiplication (AMM) as in OpenSSL's
//! rsaz-avx512 (Gueron & Krasnov; Drucker & Gueron 2019): per digit b[i], add a·b[i] and y·n
//! with y chosen to clear the lowest digit, shift everything down one digit, and normalise
//! the carries once at the end. Results are only "almost" reduced (< 2n), which is enough to
//! feed the next product; `IfmaExp::pow` makes its result canonical before returning.
//!
//! Two departures from a literal transcription, both measured (about 10 % together on a
//! Xeon with IFMA): the lowest digit, on which the next y depends, is tracked in a scalar
//! register ahead of the vectors, and the high halves are summed apart from the accumulator,
//! because the dependency chains through each accumulator register, not the multipliers,
//! limit the speed.
//!
//! Only public values pass through here (n, e, signature), so nothing is constant-time.

// The AVX-512 intrinsics are stable since Rust 1.89: the workspace's rust-version.

use core::arch::x86_64::*;

use num_bigint::BigUint;
use num_traits::One;

use super::mont::{geq, pow_2k_mod, sub_in_place, to_limbs};

const DIGIT_BITS: usize = 52;
const MASK: u64 = (1 << DIGIT_BITS) - 1;
/// Smaller moduli (no key the crate makes or loads; small test moduli) stay on the portable
/// path, where conversions and set-up would not dominate.
const MIN_BITS: u64 = 1024;
/// Largest number of zmm registers per number we compile for (16 · 8 digits ≈ 6650 bits).
const MAX_VECS: usize = 16;

/// Runs `$body` with a `const $v: usize` equal to `$vecs`: the number of zmm registers per
/// number is a const generic, so that the accumulator can live in registers.
macro_rules! with_vecs {
    ($vecs:expr, $v:ident => $body:expr) => {
        with_vecs!(@arms $vecs, $v, $body, 3 4 5 6 7 8 9 10 11 12 13 14 15 16)
    };
    (@arms $vecs:expr, $v:ident, $body:expr, $($n:literal)*) => {
        match $vecs {
            $($n => {
                const $v: usize = $n;
                $body
            })*
            _ => unreachable!("vecs is checked against MAX_VECS in IfmaExp::new"),
        }
    };
}

/// s ↦ s^e mod n with everything that depends on (n, e) in radix 2^52. Only exists on a CPU
/// with avx512f and avx512ifma: `new` checks, and `pow` relies on that.
#[derive(Clone, Debug)]
pub(crate) struct IfmaExp {
    /// Digits per number, L: R = 2^(52·L) > 4n, the bound under which AMM keeps results < 2n.
    digits: usize,
    /// zmm registers per number, ⌈L/8⌉; the digits above L are zero.
    vecs: usize,
    /// n in radix 2^52, 8·vecs digits.
    n: Vec<u64>,
    /// n in 64-bit limbs plus one zero limb (a result < 2n may need the extra bit).
    n64: Vec<u64>,
    /// −n⁻¹ mod 2^52.
    k0: u64,
    e: u32,
    /// For e = 2^t: R^e mod n, as in `PublicExp`. Otherwise R² mod n, to enter Montgomery form.
    r_factor: Vec<u64>,
}

impl IfmaExp {
    /// None if the CPU lacks avx512f/avx512ifma or n is outside the sizes compiled for; n must be
    /// odd and e ≥ 1 (the caller has checked).
    pub(crate) fn new(n: &BigUint, e: u32) -> Option<Self> {
        if !(is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512ifma")) {
            return None;
        }
        let bits = n.bits();
        // +2 bits: AMM needs 4n < R.
        let digits = (bits as usize + 2).div_ceil(DIGIT_BITS);
        let vecs = digits.div_ceil(8);
        if bits < MIN_BITS || vecs > MAX_VECS || e == 0 || !n.bit(0) {
            return None;
        }
        let n64 = to_limbs(n, n.to_u64_digits().len() + 1);
        // Newton iteration for n⁻¹ mod 2^64, as in MontModulus::new.
        let mut inv: u64 = 1;
        for _ in 0..6 {
            inv = inv.wrapping_mul(2u64.wrapping_sub(n64[0].wrapping_mul(inv)));
        }
        let r = (BigUint::one() << (DIGIT_BITS * digits)) % n;
        let r_factor = if e.is_power_of_two() { pow_2k_mod(&r, e, n) } else { &r * &r % n };
        Some(IfmaExp {
            digits,
            vecs,
            n: digits_of(&n64, 8 * vecs),
            n64,
            k0: inv.wrapping_neg() & MASK,
            e,
            r_factor: digits_of(&r_factor.to_u64_digits(), 8 * vecs),
        })
    }

    /// s^e mod n, fully reduced, as `limbs` 64-bit limbs; s < n.
    pub(crate) fn pow(&self, s: &[u64], limbs: usize) -> Vec<u64> {
        let len = 8 * self.vecs;
        let (mut s52, mut x52) = ([0u64; 8 * MAX_VECS], [0u64; 8 * MAX_VECS]);
        to_digits(s, &mut s52[..len]);
        // SAFETY: an IfmaExp is only built (in `new`) after detecting avx512f and avx512ifma,
        // which is all `pow_vecs` needs.
        with_vecs!(self.vecs, V => unsafe { pow_vecs::<V>(self, &s52[..len], &mut x52[..len]) });
        // AMM leaves x < 2n: one conditional subtraction makes it canonical.
        let mut x = vec![0u64; self.n64.len()];
        from_digits(&x52[..len], &mut x);
        if geq(&x, &self.n64) {
            sub_in_place(&mut x, &self.n64);
        }
        debug_assert!(x[limbs..].iter().all(|&l| l == 0));
        x.truncate(limbs);
        x
    }
}

fn digits_of(x: &[u64], len: usize) -> Vec<u64> {
    let mut out = vec![0u64; len];
    to_digits(x, &mut out);
    out
}

/// Radix 2^64 → radix 2^52: fills `out` (x must fit). Each digit is cut from at most two limbs.
fn to_digits(x: &[u64], out: &mut [u64]) {
    let limb = |i: usize| x.get(i).copied().unwrap_or(0);
    for (d, out) in out.iter_mut().enumerate() {
        let (i, shift) = (d * DIGIT_BITS / 64, d * DIGIT_BITS % 64);
        // The second limb's part; a shift by 64 would overflow, and contributes nothing anyway.
        let next = if shift == 0 { 0 } else { limb(i + 1) << (64 - shift) };
        *out = ((limb(i) >> shift) | next) & MASK;
    }
    debug_assert!(bit_len(x, 64) <= out.len() * DIGIT_BITS, "value does not fit");
}

/// Radix 2^52 (normalised digits) → radix 2^64: fills `out` (x must fit). Each limb is put
/// together from at most three digits.
fn from_digits(x: &[u64], out: &mut [u64]) {
    let digit = |i: usize| x.get(i).copied().unwrap_or(0);
    for (l, out) in out.iter_mut().enumerate() {
        let (i, shift) = (l * 64 / DIGIT_BITS, l * 64 % DIGIT_BITS);
        let mut v = (digit(i) >> shift) | (digit(i + 1) << (DIGIT_BITS - shift));
        if 2 * DIGIT_BITS - shift < 64 {
            v |= digit(i + 2) << (2 * DIGIT_BITS - shift);
        }
        *out = v;
    }
    debug_assert!(bit_len(x, DIGIT_BITS) <= out.len() * 64, "value does not fit");
}

/// Bit length of a number stored in words of `width` bits.
fn bit_len(x: &[u64], width: usize) -> usize {
    x.iter().rposition(|&w| w != 0).map_or(0, |i| width * i + 64 - x[i].leading_zeros() as usize)
}

/// The modulus as the inner loop wants it.
struct Modulus<const V: usize> {
    n: [__m512i; V],
    /// n's digits 0 and 1, for the scalar side of `amm`.
    n0: u64,
    n1: u64,
    k0: u64,
    digits: usize,
}

impl<const V: usize> Modulus<V> {
    #[target_feature(enable = "avx512f")]
    fn new(ctx: &IfmaExp) -> Self {
        Modulus { n: load(&ctx.n), n0: ctx.n[0], n1: ctx.n[1], k0: ctx.k0, digits: ctx.digits }
    }
}

/// The exponentiation with V zmm registers per number, from radix-2^52 `s` (< n) to `out` (< 2n).
#[target_feature(enable = "avx512f,avx512ifma")]
fn pow_vecs<const V: usize>(ctx: &IfmaExp, s: &[u64], out: &mut [u64]) {
    let m = Modulus::<V>::new(ctx);
    let s = load::<V>(s);
    let factor = load::<V>(&ctx.r_factor);
    let x = if ctx.e.is_power_of_two() {
        // t squarings leave s^(2^t)·R^−(2^t−1); the product with R^(2^t) removes that.
        let mut x = s;
        for _ in 0..ctx.e.trailing_zeros() {
            x = amm(&x, &x, &m);
        }
        amm(&x, &factor, &m)
    } else {
        // Left-to-right square-and-multiply on s·R, then a product with 1 to leave the domain.
        let sm = amm(&s, &factor, &m);
        let mut x = sm;
        let top = 31 - ctx.e.leading_zeros();
        for bit in (0..top).rev() {
            x = amm(&x, &x, &m);
            if (ctx.e >> bit) & 1 == 1 {
                x = amm(&x, &sm, &m);
            }
        }
        let mut one = [_mm512_setzero_si512(); V];
        one[0] = _mm512_maskz_mov_epi64(1, _mm512_set1_epi64(1));
        amm(&x, &one, &m)
    };
    store(x, out);
}

/// a·b·R⁻¹ mod n up to one multiple of n (result < 2n for a, b < 2n), normalised digits.
#[target_feature(enable = "avx512f,avx512ifma")]
#[inline]
#[allow(clippy::needless_range_loop)] // r[j], a[j], n[j] side by side read as the algebra does
fn amm<const V: usize>(a: &[__m512i; V], b: &[__m512i; V], m: &Modulus<V>) -> [__m512i; V] {
    // The scalar side below needs b[i], a0·b[i] and a1·b[i]: all of them up front, as vectors.
    let (a0, a1) = (_mm512_set1_epi64(lane(a[0], 0) as i64), _mm512_set1_epi64(lane(a[0], 1) as i64));
    let zero = _mm512_setzero_si512();
    let mut b_digits = [[0u64; 8]; V];
    let (mut a0b_lo, mut a0b_hi, mut a1b_lo) = (b_digits, b_digits, b_digits);
    for j in 0..V {
        store([b[j]], &mut b_digits[j]);
        store([_mm512_madd52lo_epu64(zero, a0, b[j])], &mut a0b_lo[j]);
        store([_mm512_madd52hi_epu64(zero, a0, b[j])], &mut a0b_hi[j]);
        store([_mm512_madd52lo_epu64(zero, a1, b[j])], &mut a1b_lo[j]);
    }
    let mut r = [zero; V];
    // The lowest digit of the accumulator is kept in `acc`, a scalar, and computed ahead of the
    // vector unit: each y depends on the one before through it, and a round trip through the
    // vector unit (broadcast, multiply-add, extract) would make that chain the bottleneck.
    // Lane 0 of r is never read; it is overwritten at the end.
    let mut acc: u64 = 0;
    let n0_hi = m.n0 << (64 - DIGIT_BITS);
    for i in 0..m.digits {
        let [bi, a0bi_lo, a0bi_hi, a1bi_lo] = [&b_digits, &a0b_lo, &a0b_hi, &a1b_lo].map(|x| x.as_flattened()[i]);
        // The lowest digit with the low half of a0·b[i]; y makes t + n0·y ≡ 0 mod 2^52.
        let t = acc + a0bi_lo;
        let y = t.wrapping_mul(m.k0) & MASK;
        // The next lowest digit: what r already holds there, the low halves of a1·b[i] and
        // n1·y, and the carry out of this digit. That carry is the high halves of a0·b[i] and
        // n0·y, t's bits above 52, and 1 unless t's low bits are 0 (with the low half of n0·y
        // they add up to 0 or to 2^52).
        let ahead = lane(r[0], 1) + a1bi_lo + a0bi_hi + (t >> DIGIT_BITS) + ((t & MASK) != 0) as u64;
        acc = ahead + (m.n1.wrapping_mul(y) & MASK) + ((n0_hi as u128 * y as u128) >> 64) as u64;
        let (bv, yv) = (_mm512_set1_epi64(bi as i64), _mm512_set1_epi64(y as i64));
        for j in 0..V {
            r[j] = _mm512_madd52lo_epu64(r[j], a[j], bv);
        }
        for j in 0..V {
            r[j] = _mm512_madd52lo_epu64(r[j], m.n[j], yv);
        }
        // Digit 0 is now a multiple of 2^52: shift down one digit.
        for j in 0..V - 1 {
            r[j] = _mm512_alignr_epi64::<1>(r[j + 1], r[j]);
        }
        r[V - 1] = _mm512_alignr_epi64::<1>(zero, r[V - 1]);
        // High halves land one digit up, i.e. at the same index after the shift. They are
        // summed on the side and added in one go, which keeps r's dependency chain short.
        for j in 0..V {
            let h = _mm512_madd52hi_epu64(_mm512_madd52hi_epu64(zero, a[j], bv), m.n[j], yv);
            r[j] = _mm512_add_epi64(r[j], h);
        }
    }
    r[0] = _mm512_mask_mov_epi64(r[0], 1, _mm512_set1_epi64(acc as i64));
    normalize(r)
}

/// Propagate carries so that every lane is < 2^52.
///
/// Each lane gained less than 4·2^52 per digit of b, so it is < 4L·2^52 ≤ 2^61 (L ≤ 128); lane 0,
/// `acc`, is < 2^62. So the carry out of a lane is < 2^10, and after adding each lane's carry to
/// the next, a lane is at most 2^52 − 1 + 2^10: at most one more carry, which can ripple only
/// through lanes equal to 2^52 − 1. That ripple is an add on bit masks (one bit per lane), as in
/// a carry-lookahead adder: lanes that generate (> 2^52 − 1) and lanes that propagate (= 2^52 − 1).
#[target_feature(enable = "avx512f")]
#[inline]
fn normalize<const V: usize>(mut r: [__m512i; V]) -> [__m512i; V] {
    let mask = _mm512_set1_epi64(MASK as i64);
    let mut prev_carry = _mm512_setzero_si512();
    for x in r.iter_mut() {
        let carry = _mm512_srli_epi64::<52>(*x);
        // Lanes of `carry` moved up one, lane 0 taking the top lane of the previous register.
        let carry_in = _mm512_alignr_epi64::<7>(carry, prev_carry);
        *x = _mm512_add_epi64(_mm512_and_si512(*x, mask), carry_in);
        prev_carry = carry;
    }
    let (mut generate, mut propagate) = (0u128, 0u128);
    for (j, x) in r.iter().enumerate() {
        generate |= (_mm512_cmpgt_epu64_mask(*x, mask) as u128) << (8 * j);
        propagate |= (_mm512_cmpeq_epu64_mask(*x, mask) as u128) << (8 * j);
    }
    // A carry enters lane i iff some lane below generates and every lane in between propagates.
    // The result is < 2^(52L), so nothing carries out of the top lane.
    let carry_in = (generate << 1).wrapping_add(propagate) ^ propagate;
    for (j, x) in r.iter_mut().enumerate() {
        // +1 − 2^52 then masking: the same as +1 mod 2^52.
        *x = _mm512_mask_sub_epi64(*x, (carry_in >> (8 * j)) as u8, *x, mask);
        *x = _mm512_and_si512(*x, mask);
    }
    r
}

/// Lane 0 or 1 of x.
#[target_feature(enable = "avx512f")]
#[inline]
fn lane(x: __m512i, i: usize) -> u64 {
    let x = _mm512_castsi512_si128(x);
    (if i == 0 { _mm_cvtsi128_si64(x) } else { _mm_extract_epi64::<1>(x) }) as u64
}

/// The first 8·V digits of `x` as V registers.
#[target_feature(enable = "avx512f")]
#[inline]
fn load<const V: usize>(x: &[u64]) -> [__m512i; V] {
    let x = &x[..8 * V];
    let mut v = [_mm512_setzero_si512(); V];
    for (j, v) in v.iter_mut().enumerate() {
        // SAFETY: each chunk is 8 readable u64s; loadu has no alignment requirement.
        *v = unsafe { _mm512_loadu_epi64(x[8 * j..].as_ptr().cast()) };
    }
    v
}

#[target_feature(enable = "avx512f")]
#[inline]
fn store<const V: usize>(v: [__m512i; V], out: &mut [u64]) {
    let out = &mut out[..8 * V];
    for (j, x) in v.into_iter().enumerate() {
        // SAFETY: each chunk is 8 writable u64s; storeu has no alignment requirement.
        unsafe { _mm512_storeu_epi64(out[8 * j..].as_mut_ptr().cast(), x) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::mont::{from_limbs, PublicExp};
    use num_traits::Zero;
    use proptest::prelude::*;

    fn cpu_has_ifma() -> bool {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512ifma")
    }

    /// The IFMA context, which must exist on a CPU with IFMA for n in range: a silent None
    /// would let the tests below pass while testing nothing.
    fn ifma(n: &BigUint, e: u32) -> Option<IfmaExp> {
        let x = IfmaExp::new(n, e);
        let in_range = n.bits() >= MIN_BITS && (n.bits() as usize + 2).div_ceil(DIGIT_BITS) <= 8 * MAX_VECS;
        assert_eq!(x.is_some(), cpu_has_ifma() && in_range, "IfmaExp::new for {} bits", n.bits());
        x
    }

    impl IfmaExp {
        /// One AMM on radix-2^52 operands (each < 2n), for testing it in isolation.
        fn amm_digits(&self, a: &[u64], b: &[u64]) -> Vec<u64> {
            #[target_feature(enable = "avx512f,avx512ifma")]
            fn run<const V: usize>(ctx: &IfmaExp, a: &[u64], b: &[u64], out: &mut [u64]) {
                store(amm(&load::<V>(a), &load::<V>(b), &Modulus::new(ctx)), out);
            }
            let mut out = vec![0u64; 8 * self.vecs];
            // SAFETY: IfmaExp exists only on a CPU with avx512f and avx512ifma.
            with_vecs!(self.vecs, V => unsafe { run::<V>(self, a, b, &mut out) });
            out
        }
    }

    /// Σ digit_i · 2^(52 i), for digits of any size.
    fn digits_value(d: &[u64]) -> BigUint {
        d.iter().rev().fold(BigUint::zero(), |acc, &x| (acc << DIGIT_BITS) + x)
    }

    /// An odd modulus of exactly `bits` bits from random words.
    fn modulus(bits: u64, words: &[u64]) -> BigUint {
        let mut n = from_limbs(words) & ((BigUint::one() << bits) - 1u32);
        n.set_bit(bits - 1, true);
        n.set_bit(0, true);
        n
    }

    /// s^e mod n through IfmaExp directly and through PublicExp with IFMA allowed.
    fn check_pow(n: &BigUint, s: &BigUint, e: u32) {
        let expect = s.modpow(&BigUint::from(e), n);
        if let Some(x) = ifma(n, e) {
            let l = n.to_u64_digits().len();
            let got = x.pow(&to_limbs(s, l), l);
            assert_eq!(got.len(), l);
            assert_eq!(from_limbs(&got), expect, "IfmaExp n={n:x} s={s:x} e={e}");
        }
        let p = PublicExp::with_ifma(n, e, true).unwrap();
        assert_eq!(p.uses_ifma(), ifma(n, e).is_some());
        assert_eq!(p.pow_big(s), expect, "PublicExp n={n:x} s={s:x} e={e}");
    }

    fn key_bits() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(1152u64),
            Just(1536),
            Just(2046),
            Just(2048),
            Just(3072),
            Just(4096),
            Just(6144),
            1024u64..=6144,
        ]
    }

    /// 52·L − 2 bits is the largest modulus with L digits (R > 4n); one or two bits more need
    /// another digit.
    fn digit_boundary_bits() -> impl Strategy<Value = u64> {
        (20u64..=128, 0u64..3).prop_map(|(l, d)| 52 * l - d)
    }

    fn exponent() -> impl Strategy<Value = u32> {
        prop_oneof![Just(3u32), Just(8), Just(32), Just(1024), Just(65537), 1u32..=u32::MAX]
    }

    /// Moduli of `bits` bits: all-ones words, just above 2^(bits−1), a sparse one, and a
    /// pseudo-random one (structured moduli keep some intermediate values small).
    fn edge_moduli(bits: u64) -> Vec<BigUint> {
        let top = BigUint::one() << (bits - 1);
        let mut state = bits;
        let words: Vec<u64> = (0..bits.div_ceil(64))
            .map(|_| {
                // splitmix64
                state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let z = (state ^ (state >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^ (z >> 31)
            })
            .collect();
        vec![
            (BigUint::one() << bits) - 1u32,
            &top + 1u32,
            &top + (BigUint::one() << (bits / 2)) + 1u32,
            modulus(bits, &words),
        ]
    }

    fn edge_operands(n: &BigUint) -> Vec<BigUint> {
        vec![BigUint::zero(), BigUint::one(), BigUint::from(2u32), n - 1u32, n - 2u32, n >> 1]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn pow_matches_bigint(bits in key_bits(),
                              nw in proptest::collection::vec(any::<u64>(), 96),
                              sw in proptest::collection::vec(any::<u64>(), 96),
                              pick in 0usize..8,
                              e in exponent()) {
            let n = modulus(bits, &nw);
            // Mostly random operands, sometimes the edge values.
            let s = edge_operands(&n).get(pick).cloned().unwrap_or_else(|| from_limbs(&sw) % &n);
            check_pow(&n, &s, e);
        }

        /// AMM on its own, with inputs anywhere below 2n as the exponentiation feeds it: the
        /// result must be congruent to a·b·R⁻¹, below 2n and in normalised digits.
        #[test]
        fn amm_is_almost_montgomery(bits in prop_oneof![key_bits(), digit_boundary_bits()],
                                    all_ones in any::<bool>(),
                                    nw in proptest::collection::vec(any::<u64>(), 96),
                                    aw in proptest::collection::vec(any::<u64>(), 97),
                                    bw in proptest::collection::vec(any::<u64>(), 97),
                                    pick in 0usize..6) {
            let n = if all_ones { (BigUint::one() << bits) - 1u32 } else { modulus(bits, &nw) };
            let Some(x) = ifma(&n, 3) else { return Ok(()) };
            let two_n = &n << 1;
            let edge = [&two_n - 1u32, n.clone(), &n - 1u32, BigUint::zero()];
            let a = edge.get(pick).cloned().unwrap_or_else(|| from_limbs(&aw) % &two_n);
            let b = edge.get(pick / 2).cloned().unwrap_or_else(|| from_limbs(&bw) % &two_n);
            let [a52, b52] = [&a, &b].map(|v| digits_of(&v.to_u64_digits(), 8 * x.vecs));
            let out = x.amm_digits(&a52, &b52);
            prop_assert!(out.iter().all(|&d| d <= MASK), "digit above 2^52");
            let r = digits_value(&out);
            prop_assert!(r < two_n);
            let rinv = (BigUint::one() << (DIGIT_BITS * x.digits)).modinv(&n).unwrap();
            prop_assert_eq!(r % &n, a * b * rinv % &n);
        }

        /// Normalisation keeps the value and leaves every lane < 2^52, including when a
        /// carry ripples through lanes of exactly 2^52 − 1 and across registers.
        #[test]
        fn normalize_keeps_value(lanes in proptest::collection::vec(
            prop_oneof![Just(MASK), Just(MASK + 1), Just(0), 0..=MASK, 0..(1u64 << 62)], 8 * MAX_VECS)) {
            check_normalize::<3>(&lanes[..24]);
            check_normalize::<MAX_VECS>(&lanes);
        }
    }

    /// Normalises lanes (the top one replaced by 0, so the value fits) and checks the result.
    fn check_normalize<const V: usize>(lanes: &[u64]) {
        #[target_feature(enable = "avx512f")]
        fn run<const V: usize>(lanes: &[u64], out: &mut [u64]) {
            store(normalize(load::<V>(lanes)), out);
        }
        if !cpu_has_ifma() {
            return;
        }
        let mut lanes = lanes[..8 * V].to_vec();
        lanes[8 * V - 1] = 0;
        let mut out = vec![0u64; 8 * V];
        // SAFETY: avx512f was detected just above.
        unsafe { run::<V>(&lanes, &mut out) };
        assert!(out.iter().all(|&d| d <= MASK), "digit above 2^52: {out:x?}");
        assert_eq!(digits_value(&out), digits_value(&lanes), "lanes {lanes:x?}");
    }

    #[test]
    fn normalize_ripples_through_every_lane() {
        // Lane 0 carries one into a run of all-ones lanes that reaches the last register.
        let mut lanes = vec![MASK; 8 * MAX_VECS];
        lanes[0] = MASK + 1;
        check_normalize::<MAX_VECS>(&lanes);
        check_normalize::<3>(&lanes);
        // The largest carries `amm` can leave, out of every lane at once.
        check_normalize::<MAX_VECS>(&vec![(1 << 62) - 1; 8 * MAX_VECS]);
    }

    #[test]
    fn edge_moduli_and_operands() {
        // Sizes at the digit and register boundaries: 52·L − 2 bits is the largest with L
        // digits (R > 4n), so 1246 and 3326 fill 3 and 8 registers exactly, 1247 and 3327 need
        // one digit in a further register; 6654 is the largest IFMA size. Plus the key sizes.
        let boundaries = [1246, 1247, 1248, 1558, 1559, 2078, 2079, 3066, 3067, 3326, 3327, 6654];
        for bits in boundaries.into_iter().chain([1024, 1152, 2046, 2048, 3072, 4096, 6144]) {
            for n in edge_moduli(bits) {
                for e in [1u32, 2, 3, 8, 32, 1024, 65537, u32::MAX, 1 << 31] {
                    for s in edge_operands(&n) {
                        check_pow(&n, &s, e);
                    }
                }
            }
        }
    }

    #[test]
    fn sizes_outside_the_range_use_the_portable_path() {
        for bits in [8u64, 64, 1023, 6655, 8192] {
            for n in edge_moduli(bits) {
                assert!(ifma(&n, 32).is_none());
                let p = PublicExp::with_ifma(&n, 32, true).unwrap();
                assert!(!p.uses_ifma());
                let s = &n - 2u32;
                assert_eq!(p.pow_big(&s), s.modpow(&BigUint::from(32u32), &n));
            }
        }
    }

    #[test]
    fn conversions_round_trip() {
        let x: Vec<u64> = (0..48u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1 << 63).collect();
        for len in [60, 61, 64, 128] {
            let d = digits_of(&x, len);
            assert!(d.iter().all(|&v| v <= MASK));
            assert_eq!(digits_value(&d), from_limbs(&x));
            let mut back = vec![u64::MAX; 49];
            from_digits(&d, &mut back);
            assert_eq!(back, [x.as_slice(), &[0]].concat());
        }
    }
}
