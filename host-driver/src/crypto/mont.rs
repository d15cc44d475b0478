//! Montgomery arithmetic on 64-bit limbs for the software verify path.
//!
//! Written by hand rather than taken from a crate because verification with a small public
//! exponent is a handful of multiplications at a fixed modulus: a general bigint (num-bigint,
//! crypto-bigint's boxed types) spends most of that time allocating and dividing. Here a verify
//! allocates once and runs CIOS Montgomery products (Koç et al. 1996); the same algorithm, on
//! 16-bit words, is what the RTL implements, so this is also the shape the hardware is checked
//! against. Every result is checked against num-bigint in the tests below.
//!
//! Not constant-time: it only ever sees public values (n, e, signature).

use num_bigint::BigUint;
use num_traits::{One, Zero};

/// A fixed odd modulus with its Montgomery constants, R = 2^(64·limbs).
#[derive(Clone, Debug)]
pub struct MontModulus {
    n: Vec<u64>,
    /// −n⁻¹ mod 2^64.
    n0_inv: u64,
    /// R² mod n, to enter Montgomery form.
    r2: Vec<u64>,
}

/// Little-endian limbs of `x`, zero-padded to `len` (x must fit).
pub fn to_limbs(x: &BigUint, len: usize) -> Vec<u64> {
    let mut v = x.to_u64_digits();
    debug_assert!(v.len() <= len);
    v.resize(len, 0);
    v
}

pub fn from_limbs(limbs: &[u64]) -> BigUint {
    BigUint::new(limbs.iter().flat_map(|&l| [l as u32, (l >> 32) as u32]).collect())
}

/// x^e mod n for e a power of two, by squaring: at 3072 bits about ten times faster than
/// `BigUint::modpow`, whose set-up dominates for so small an exponent.
pub(super) fn pow_2k_mod(x: &BigUint, e: u32, n: &BigUint) -> BigUint {
    debug_assert!(e.is_power_of_two());
    (0..e.trailing_zeros()).fold(x % n, |y, _| &y * &y % n)
}

/// Compare two equal-length little-endian limb strings.
pub(super) fn geq(a: &[u64], b: &[u64]) -> bool {
    for i in (0..a.len()).rev() {
        if a[i] != b[i] {
            return a[i] > b[i];
        }
    }
    true
}

pub(super) fn sub_in_place(a: &mut [u64], b: &[u64]) {
    let mut borrow = 0u64;
    for i in 0..a.len() {
        let (d1, b1) = a[i].overflowing_sub(b[i]);
        let (d2, b2) = d1.overflowing_sub(borrow);
        a[i] = d2;
        borrow = (b1 | b2) as u64;
    }
}

impl MontModulus {
    /// None unless n is odd and > 1.
    pub fn new(n: &BigUint) -> Option<Self> {
        if n.is_zero() || n.is_one() || !n.bit(0) {
            return None;
        }
        let digits = n.to_u64_digits();
        let limbs = digits.len();
        // Newton iteration for n⁻¹ mod 2^64: each step doubles the number of correct bits.
        let n0 = digits[0];
        let mut inv: u64 = 1;
        for _ in 0..6 {
            inv = inv.wrapping_mul(2u64.wrapping_sub(n0.wrapping_mul(inv)));
        }
        let r2 = (BigUint::one() << (128 * limbs)) % n;
        Some(MontModulus { n: digits, n0_inv: inv.wrapping_neg(), r2: to_limbs(&r2, limbs) })
    }

    pub fn limbs(&self) -> usize {
        self.n.len()
    }

    pub fn modulus(&self) -> BigUint {
        from_limbs(&self.n)
    }

    /// out = a·b·R⁻¹ mod n, fully reduced, for a, b < n. `t` is scratch of at least limbs.
    ///
    /// Finely integrated product scanning (Koç, Acar, Kaliski 1996): column by column, the
    /// product and reduction terms go into one three-word accumulator, so the only carry chain
    /// is the accumulator's and nothing is stored until a column is done.
    pub fn mul(&self, a: &[u64], b: &[u64], out: &mut [u64], t: &mut [u64]) {
        let s = self.n.len();
        let (a, b, n) = (&a[..s], &b[..s], &self.n[..]);
        let m = &mut t[..s];
        let mut acc = Acc::default();
        for i in 0..s {
            // Two accumulators, two independent carry chains the CPU can overlap.
            let (mut p, mut r) = (Acc::default(), Acc::default());
            for (((x, y), u), w) in a[..i].iter().zip(b[1..=i].iter().rev()).zip(&m[..i]).zip(n[1..=i].iter().rev()) {
                p.mac(*x, *y);
                r.mac(*u, *w);
            }
            acc.add(&p);
            acc.add(&r);
            acc.mac(a[i], b[0]);
            m[i] = acc.low().wrapping_mul(self.n0_inv);
            acc.mac(m[i], n[0]);
            debug_assert_eq!(acc.low(), 0);
            acc.shift();
        }
        self.finish_columns(acc, |acc, i| {
            for (x, y) in a[i - s + 1..].iter().zip(b[i - s + 1..].iter().rev()) {
                acc.mac(*x, *y);
            }
        }, m, out);
    }

    /// out = a²·R⁻¹ mod n: as `mul`, but each cross product a[j]·a[i−j] is computed once and
    /// doubled, about 25 % fewer word products.
    pub fn sqr(&self, a: &[u64], out: &mut [u64], t: &mut [u64]) {
        let s = self.n.len();
        let (a, n) = (&a[..s], &self.n[..]);
        let m = &mut t[..s];
        let mut acc = Acc::default();
        for i in 0..s {
            let mut r = Acc::default();
            for (x, y) in m[..i].iter().zip(n[1..=i].iter().rev()) {
                r.mac(*x, *y);
            }
            square_column(&mut acc, a, 0, i);
            acc.add(&r);
            m[i] = acc.low().wrapping_mul(self.n0_inv);
            acc.mac(m[i], n[0]);
            debug_assert_eq!(acc.low(), 0);
            acc.shift();
        }
        self.finish_columns(acc, |acc, i| square_column(acc, a, i - s + 1, i), m, out);
    }

    /// Columns s..2s: the upper half of the product (via `column`) plus the reduction terms;
    /// then the final conditional subtraction that makes the result canonical.
    fn finish_columns(&self, mut acc: Acc, column: impl Fn(&mut Acc, usize), m: &[u64], out: &mut [u64]) {
        let s = self.n.len();
        let n = &self.n[..];
        let out = &mut out[..s];
        for i in s..2 * s {
            let mut r = Acc::default();
            for (x, y) in m[i - s + 1..].iter().zip(n[i - s + 1..].iter().rev()) {
                r.mac(*x, *y);
            }
            column(&mut acc, i);
            acc.add(&r);
            out[i - s] = acc.low();
            acc.shift();
        }
        // Result < 2n: what is left in the accumulator is at most one bit above the limbs.
        if acc.low() != 0 || geq(out, n) {
            sub_in_place(out, n);
        }
    }
}

/// Column i of a², from index `from` on: 2·Σ a[j]·a[i−j] over j < i−j, plus a[i/2]² if i is even.
#[inline(always)]
fn square_column(acc: &mut Acc, a: &[u64], from: usize, i: usize) {
    let mut cross = Acc::default();
    let half = i.div_ceil(2);
    if from < half {
        for (x, y) in a[from..half].iter().zip(a[i + 1 - half..=i - from].iter().rev()) {
            cross.mac(*x, *y);
        }
    }
    acc.add(&cross);
    acc.add(&cross);
    if i % 2 == 0 {
        acc.mac(a[i / 2], a[i / 2]);
    }
}

/// A column accumulator holding lo + hi·2^64: low and high halves of the word products are
/// summed separately, so a multiply-accumulate is two add-with-carry pairs and no carry flag is
/// ever materialised. A column has at most 4s products, far below the 2^64 that would overflow.
#[derive(Default, Clone, Copy)]
struct Acc {
    lo: u128,
    hi: u128,
}

impl Acc {
    #[inline(always)]
    fn mac(&mut self, x: u64, y: u64) {
        let p = (x as u128) * (y as u128);
        self.lo += p as u64 as u128;
        self.hi += p >> 64;
    }
    #[inline(always)]
    fn add(&mut self, other: &Acc) {
        self.lo += other.lo;
        self.hi += other.hi;
    }
    #[inline(always)]
    fn low(&self) -> u64 {
        self.lo as u64
    }
    /// Divide by 2^64 (the low word has been consumed).
    #[inline(always)]
    fn shift(&mut self) {
        self.lo = (self.lo >> 64) + self.hi;
        self.hi = 0;
    }
}

/// s ↦ s^e mod n for one public key, with everything that depends only on (n, e) precomputed.
#[derive(Clone, Debug)]
pub struct PublicExp {
    m: MontModulus,
    e: u32,
    /// For e = 2^t: R^e mod n, which undoes the R⁻¹ that t plain squarings accumulate, so
    /// s^(2^t) costs t squarings and one product, with no conversion into Montgomery form.
    r_pow_e: Option<Vec<u64>>,
    /// The AVX-512 IFMA version of `pow`, when the CPU has it and n is large enough.
    #[cfg(target_arch = "x86_64")]
    ifma: Option<super::mont_ifma::IfmaExp>,
}

/// False if `KESSAI_NO_IFMA` is set (to anything but "" or "0"): then every `PublicExp` takes
/// the portable path even on a CPU with IFMA, so both can be exercised and compared on one
/// machine. Read once per process.
#[cfg(target_arch = "x86_64")]
fn ifma_allowed() -> bool {
    static ALLOWED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ALLOWED.get_or_init(|| !no_ifma_requested(std::env::var_os("KESSAI_NO_IFMA").as_deref()))
}

#[cfg(target_arch = "x86_64")]
fn no_ifma_requested(var: Option<&std::ffi::OsStr>) -> bool {
    var.is_some_and(|v| !v.is_empty() && v != "0")
}

impl PublicExp {
    /// None unless n is odd and > 1 and e ≥ 1.
    pub fn new(n: &BigUint, e: u32) -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        let allow_ifma = ifma_allowed();
        #[cfg(not(target_arch = "x86_64"))]
        let allow_ifma = false;
        Self::with_ifma(n, e, allow_ifma)
    }

    /// As `new`, with the IFMA path used only if `allow_ifma` (and the CPU and n permit).
    pub(crate) fn with_ifma(n: &BigUint, e: u32, allow_ifma: bool) -> Option<Self> {
        let m = MontModulus::new(n)?;
        if e == 0 {
            return None;
        }
        #[cfg(target_arch = "x86_64")]
        let ifma = if allow_ifma { super::mont_ifma::IfmaExp::new(n, e) } else { None };
        #[cfg(target_arch = "x86_64")]
        let portable = ifma.is_none();
        #[cfg(not(target_arch = "x86_64"))]
        let (portable, _) = (true, allow_ifma);
        let r_pow_e = if portable && e.is_power_of_two() {
            let r = (BigUint::one() << (64 * m.limbs())) % n;
            Some(to_limbs(&pow_2k_mod(&r, e, n), m.limbs()))
        } else {
            None
        };
        Some(PublicExp {
            m,
            e,
            r_pow_e,
            #[cfg(target_arch = "x86_64")]
            ifma,
        })
    }

    /// Whether `pow` runs the AVX-512 IFMA code rather than the portable one.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn uses_ifma(&self) -> bool {
        self.ifma.is_some()
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub(crate) fn uses_ifma(&self) -> bool {
        false
    }

    /// Which arithmetic `pow` runs: "avx512-ifma" or "portable".
    pub fn arithmetic(&self) -> &'static str {
        if self.uses_ifma() {
            "avx512-ifma"
        } else {
            "portable"
        }
    }

    /// The same exponentiation on the portable path, to measure the two side by side.
    pub fn portable(&self) -> Self {
        Self::with_ifma(&self.modulus(), self.e, false).expect("already valid")
    }

    pub fn limbs(&self) -> usize {
        self.m.limbs()
    }

    pub fn modulus(&self) -> BigUint {
        self.m.modulus()
    }

    pub fn exponent(&self) -> u32 {
        self.e
    }

    /// s^e mod n, fully reduced; `s` as limbs, must be < n (the caller checks the range).
    pub fn pow(&self, s: &[u64]) -> Vec<u64> {
        let l = self.m.limbs();
        #[cfg(target_arch = "x86_64")]
        if let Some(ifma) = &self.ifma {
            return ifma.pow(&s[..l], l);
        }
        let mut scratch = vec![0u64; 2 * l + 2];
        let mut x = s.to_vec();
        let mut y = vec![0u64; l];
        if let Some(rpe) = &self.r_pow_e {
            // After t squarings x = s^(2^t)·R^-(2^t - 1); one product with R^(2^t) fixes that.
            for _ in 0..self.e.trailing_zeros() {
                self.m.sqr(&x, &mut y, &mut scratch);
                std::mem::swap(&mut x, &mut y);
            }
            self.m.mul(&x, rpe, &mut y, &mut scratch);
            return y;
        }
        // Left-to-right square-and-multiply in Montgomery form.
        let mut sm = vec![0u64; l];
        self.m.mul(s, &self.m.r2, &mut sm, &mut scratch);
        x.copy_from_slice(&sm);
        let top = 31 - self.e.leading_zeros();
        for bit in (0..top).rev() {
            self.m.sqr(&x, &mut y, &mut scratch);
            if (self.e >> bit) & 1 == 1 {
                self.m.mul(&y, &sm, &mut x, &mut scratch);
            } else {
                std::mem::swap(&mut x, &mut y);
            }
        }
        let mut one = vec![0u64; l];
        one[0] = 1;
        self.m.mul(&x, &one, &mut y, &mut scratch);
        y
    }

    pub fn pow_big(&self, s: &BigUint) -> BigUint {
        from_limbs(&self.pow(&to_limbs(s, self.limbs())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn odd_modulus(bytes: &[u8]) -> BigUint {
        let mut n = BigUint::from_bytes_be(bytes);
        n |= BigUint::one();
        if n.is_one() {
            n = BigUint::from(3u32);
        }
        n
    }

    proptest! {
        #[test]
        fn mul_and_sqr_match_bigint(nb in proptest::collection::vec(any::<u8>(), 1..100),
                                     ab in proptest::collection::vec(any::<u8>(), 0..100),
                                     bb in proptest::collection::vec(any::<u8>(), 0..100)) {
            let n = odd_modulus(&nb);
            let m = MontModulus::new(&n).unwrap();
            let l = m.limbs();
            let a = BigUint::from_bytes_be(&ab) % &n;
            let b = BigUint::from_bytes_be(&bb) % &n;
            let rinv = (BigUint::one() << (64 * l)).modinv(&n).unwrap();
            let mut out = vec![0; l];
            let mut t = vec![0; 2 * l + 2];
            m.mul(&to_limbs(&a, l), &to_limbs(&b, l), &mut out, &mut t);
            prop_assert_eq!(from_limbs(&out), (&a * &b * &rinv) % &n);
            m.sqr(&to_limbs(&a, l), &mut out, &mut t);
            prop_assert_eq!(from_limbs(&out), (&a * &a * &rinv) % &n);
        }

        #[test]
        fn pow_matches_bigint(nb in proptest::collection::vec(any::<u8>(), 1..200),
                              sb in proptest::collection::vec(any::<u8>(), 0..200),
                              e in prop_oneof![Just(3u32), Just(8), Just(32), Just(1024), Just(65537), 1u32..u32::MAX]) {
            let n = odd_modulus(&nb);
            let s = BigUint::from_bytes_be(&sb) % &n;
            let p = PublicExp::new(&n, e).unwrap();
            prop_assert_eq!(p.pow_big(&s), s.modpow(&BigUint::from(e), &n));
        }
    }

    #[test]
    fn edge_values_are_fully_reduced() {
        // n = 2^3072 - 1 - 2^64 style moduli stress the carries; s = n - 1 and s = 0, 1.
        for n in [
            (BigUint::one() << 3072) - BigUint::one(),
            (BigUint::one() << 3071) + BigUint::one(),
            (BigUint::one() << 64) - BigUint::one(),
            BigUint::from(3u32),
        ] {
            for e in [8u32, 32, 1024, 3, 65537] {
                let p = PublicExp::new(&n, e).unwrap();
                for s in [BigUint::zero(), BigUint::one(), &n - BigUint::one(), &n - BigUint::from(2u32) % &n] {
                    assert_eq!(p.pow_big(&s), s.modpow(&BigUint::from(e), &n), "n={n:x} e={e} s={s:x}");
                }
            }
        }
    }

    /// Both paths, whatever KESSAI_NO_IFMA says; PublicExp::new is covered by `dispatch`.
    #[test]
    fn both_paths_match_bigint() {
        for bits in [1024u64, 2048, 3072] {
            let n = (BigUint::one() << bits) - BigUint::from(189u32);
            let s = &n / 3u32;
            for e in [3u32, 32, 65537] {
                for allow in [false, true] {
                    let p = PublicExp::with_ifma(&n, e, allow).unwrap();
                    assert_eq!(p.pow_big(&s), s.modpow(&BigUint::from(e), &n), "bits={bits} e={e} ifma={allow}");
                    if !allow {
                        assert!(!p.uses_ifma());
                    }
                }
            }
        }
    }

    /// The IFMA path is really taken where the CPU has it, unless KESSAI_NO_IFMA asks otherwise:
    /// a dispatch that silently falls back would pass every comparison test.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn dispatch() {
        let cpu = is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512ifma");
        let env_off = no_ifma_requested(std::env::var_os("KESSAI_NO_IFMA").as_deref());
        let n3072 = (BigUint::one() << 3072) - BigUint::from(1103u32);
        assert_eq!(PublicExp::new(&n3072, 32).unwrap().uses_ifma(), cpu && !env_off);
        for bits in [1024u64, 1152, 1536, 2046, 2048, 3072, 4096, 6144] {
            let n = (BigUint::one() << bits) - BigUint::one();
            assert_eq!(PublicExp::with_ifma(&n, 32, true).unwrap().uses_ifma(), cpu, "{bits} bits");
            assert!(!PublicExp::with_ifma(&n, 32, false).unwrap().uses_ifma());
        }
        // Small moduli stay on the portable path.
        for n in [BigUint::from(3u32), (BigUint::one() << 1023) - BigUint::one()] {
            assert!(!PublicExp::with_ifma(&n, 32, true).unwrap().uses_ifma());
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn no_ifma_env_values() {
        use std::ffi::OsStr;
        assert!(!no_ifma_requested(None));
        assert!(!no_ifma_requested(Some(OsStr::new(""))));
        assert!(!no_ifma_requested(Some(OsStr::new("0"))));
        assert!(no_ifma_requested(Some(OsStr::new("1"))));
        assert!(no_ifma_requested(Some(OsStr::new("yes"))));
    }

    #[test]
    fn rejects_even_and_trivial_moduli() {
        assert!(MontModulus::new(&BigUint::from(10u32)).is_none());
        assert!(MontModulus::new(&BigUint::one()).is_none());
        assert!(MontModulus::new(&BigUint::zero()).is_none());
        assert!(PublicExp::new(&BigUint::from(7u32), 0).is_none());
    }
}
