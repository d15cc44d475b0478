//! Bit-accurate software model of the verify engine's arithmetic, at the RTL's word size.
//!
//! The hardware multiplies only 16 × 16 → 32 bits (rust-hdl's native multiply, one iCE40
//! SB_MAC16 or ECP5 MULT18X18D each), so this model does too: it is the golden reference each
//! rust-hdl block is simulated against, and its operation counts give the cycle budget.

use num_bigint::BigUint;
use num_traits::One;
#[cfg(test)]
use num_traits::Zero;

pub const WORD_BITS: usize = 16;

/// Little-endian 16-bit words of `x`, zero-padded to `len`.
pub fn to_words(x: &BigUint, len: usize) -> Vec<u16> {
    let mut w: Vec<u16> = x
        .to_bytes_le()
        .chunks(2)
        .map(|c| c[0] as u16 | (*c.get(1).unwrap_or(&0) as u16) << 8)
        .collect();
    assert!(w.len() <= len, "value wider than {len} words");
    w.resize(len, 0);
    w
}

pub fn from_words(w: &[u16]) -> BigUint {
    let bytes: Vec<u8> = w.iter().flat_map(|x| x.to_le_bytes()).collect();
    BigUint::from_bytes_le(&bytes)
}

/// n0' = −n⁻¹ mod 2^16 (n odd). Newton's iteration: 4 steps from 1 bit of precision to 16.
pub fn n0_prime(n0: u16) -> u16 {
    assert!(n0 & 1 == 1, "modulus must be odd");
    let mut inv: u16 = 1;
    for _ in 0..4 {
        inv = inv.wrapping_mul(2u16.wrapping_sub(n0.wrapping_mul(inv)));
    }
    inv.wrapping_neg()
}

/// Word-serial CIOS Montgomery product a·b·R⁻¹ mod n with R = 2^(16·s), fully reduced.
/// Uses only 16×16→32 products and 32-bit sums, as the datapath does.
pub fn mont_mul(a: &[u16], b: &[u16], n: &[u16], n0p: u16) -> Vec<u16> {
    let s = n.len();
    let mut t = vec![0u16; s + 2];
    for i in 0..s {
        let mut c: u32 = 0;
        for j in 0..s {
            let x = t[j] as u32 + a[j] as u32 * b[i] as u32 + c;
            t[j] = x as u16;
            c = x >> 16;
        }
        let x = t[s] as u32 + c;
        t[s] = x as u16;
        t[s + 1] = (x >> 16) as u16;
        let m = t[0].wrapping_mul(n0p) as u32;
        let x = t[0] as u32 + m * n[0] as u32;
        let mut c = x >> 16;
        for j in 1..s {
            let x = t[j] as u32 + m * n[j] as u32 + c;
            t[j - 1] = x as u16;
            c = x >> 16;
        }
        let x = t[s] as u32 + c;
        t[s - 1] = x as u16;
        t[s] = t[s + 1] + (x >> 16) as u16;
    }
    // Final conditional subtraction: ESIGN compares top bits, so the result must be canonical.
    let mut out = t[..s].to_vec();
    let ge = t[s] != 0 || {
        let mut ge = true;
        for k in (0..s).rev() {
            if out[k] != n[k] {
                ge = out[k] > n[k];
                break;
            }
        }
        ge
    };
    if ge {
        let mut borrow = 0i32;
        for k in 0..s {
            let d = out[k] as i32 - n[k] as i32 - borrow;
            out[k] = d as u16;
            borrow = (d < 0) as i32;
        }
    }
    out
}

/// Left-to-right square-and-multiply into and out of Montgomery form, as the exponent
/// sequencer runs it. Returns s^e mod n and the number of Montgomery products used.
pub fn mod_exp(s: &BigUint, e: u32, n: &BigUint) -> (BigUint, u32) {
    assert!(e >= 1);
    let words = (n.bits() as usize).div_ceil(WORD_BITS);
    let nw = to_words(n, words);
    let n0p = n0_prime(nw[0]);
    let r2 = (BigUint::one() << (2 * WORD_BITS * words)) % n;
    let mut products = 0;
    let mut mm = |a: &[u16], b: &[u16]| {
        products += 1;
        mont_mul(a, b, &nw, n0p)
    };
    let sm = mm(&to_words(s, words), &to_words(&r2, words));
    let mut x = sm.clone();
    for bit in (0..31 - e.leading_zeros()).rev() {
        x = mm(&x, &x);
        if (e >> bit) & 1 == 1 {
            x = mm(&x, &sm);
        }
    }
    let mut one = vec![0u16; words];
    one[0] = 1;
    let y = mm(&x, &one);
    (from_words(&y), products)
}

/// Montgomery products per exponentiation: 2 conversions, one squaring per bit below the top,
/// one multiply per further set bit. e = 32 → 7, e = 65537 → 19 (the bench's compute limit).
pub fn products_for(e: u32) -> u32 {
    2 + (31 - e.leading_zeros()) + e.count_ones() - 1
}

/// ESIGN's hardware check: the bits of y above 2k+2 = 2L equal f (|n| = 3L).
pub fn esign_top_matches(y: &BigUint, f: &BigUint, modulus_bits: usize) -> bool {
    (y >> (2 * (modulus_bits / 3))) == *f
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn n0_prime_is_minus_inverse() {
        for n0 in (1u16..=u16::MAX).step_by(2) {
            assert_eq!(n0.wrapping_mul(n0_prime(n0)), u16::MAX, "n0 = {n0}");
        }
    }

    #[test]
    fn products_match_the_sequencer() {
        let n = BigUint::from(1_000_003u32) * BigUint::from(999_983u32);
        for e in [3u32, 8, 32, 1024, 65537, 0x8000_0001] {
            let (y, used) = mod_exp(&BigUint::from(12345u32), e, &n);
            assert_eq!(y, BigUint::from(12345u32).modpow(&BigUint::from(e), &n));
            assert_eq!(used, products_for(e), "e = {e}");
        }
        assert_eq!(products_for(32), 7);
        assert_eq!(products_for(65537), 19);
    }

    proptest! {
        #[test]
        fn mont_mul_matches_bigint(nb in proptest::collection::vec(any::<u8>(), 2..64),
                                   ab in proptest::collection::vec(any::<u8>(), 0..64),
                                   bb in proptest::collection::vec(any::<u8>(), 0..64)) {
            let n = BigUint::from_bytes_be(&nb) | BigUint::one();
            prop_assume!(n > BigUint::one());
            let words = (n.bits() as usize).div_ceil(16);
            let a = BigUint::from_bytes_be(&ab) % &n;
            let b = BigUint::from_bytes_be(&bb) % &n;
            let nw = to_words(&n, words);
            let got = from_words(&mont_mul(&to_words(&a, words), &to_words(&b, words), &nw, n0_prime(nw[0])));
            let rinv = (BigUint::one() << (16 * words)).modinv(&n).unwrap();
            prop_assert_eq!(got, a * b * rinv % &n);
        }

        #[test]
        fn mod_exp_matches_bigint(nb in proptest::collection::vec(any::<u8>(), 2..48),
                                  sb in proptest::collection::vec(any::<u8>(), 0..48),
                                  e in 1u32..u32::MAX) {
            let n = BigUint::from_bytes_be(&nb) | BigUint::one();
            prop_assume!(n > BigUint::one());
            let s = BigUint::from_bytes_be(&sb) % &n;
            prop_assert_eq!(mod_exp(&s, e, &n).0, s.modpow(&BigUint::from(e), &n));
        }
    }

    #[test]
    fn edge_operands_all_ones_modulus() {
        // n = 2^(16k) − 1 makes every word 0xffff: the carry chains are longest here.
        let n = (BigUint::one() << 3072) - BigUint::one();
        for s in [BigUint::zero(), BigUint::one(), &n - BigUint::one()] {
            for e in [8u32, 32, 1024, 65537] {
                assert_eq!(mod_exp(&s, e, &n).0, s.modpow(&BigUint::from(e), &n));
            }
        }
    }
}
