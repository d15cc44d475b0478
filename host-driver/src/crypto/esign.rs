//! IEEE P1363a ESIGN with EMSA5-MGF1(H): the scheme Crypto++ ships as `ESIGN<H>`.
//!
//! |n| = 3L, n = p²q, k = L − 1, e ≥ 8. See docs/crypto.md for the algorithms and the places
//! where Kessai is deliberately stricter than Crypto++ (length and range of s).

use num_bigint::BigUint;
use num_integer::Integer;
use num_traits::{One, ToPrimitive, Zero};
use rand_core::TryCryptoRng;
use signature::{Keypair, RandomizedSigner, SignatureEncoding, Signer, Verifier};

use super::mont::PublicExp;
use super::{emsa5, HashAlg, MessageVerifier, Scheme, VerifyError};
use crate::error::{Error, Result};

/// Key sizes `keygen` makes. Larger multiples of 3 load and verify; 1152 only for NTT's vectors.
pub const KEYGEN_BITS: [usize; 3] = [1536, 2046, 3072];
pub const DEFAULT_BITS: usize = 3072;
pub const DEFAULT_E: u32 = 32;
pub const MIN_E: u32 = 8;
/// Smallest and largest modulus accepted when loading a key.
pub const MIN_BITS: usize = 1152;
pub const MAX_BITS: usize = 6144;

/// An ESIGN public key (n, e), checked on construction, with its verify constants precomputed.
#[derive(Clone, Debug)]
pub struct PublicKey {
    n: BigUint,
    e: u32,
    /// Bit length of each prime, |n| / 3.
    l: usize,
    exp: PublicExp,
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.n == other.n && self.e == other.e
    }
}
impl Eq for PublicKey {}

impl PublicKey {
    pub fn new(n: BigUint, e: &BigUint) -> Result<Self> {
        let bits = n.bits() as usize;
        if bits % 3 != 0 {
            return Err(Error::key(format!("ESIGN modulus has {bits} bits, expected a multiple of 3 (|n| = 3L)")));
        }
        if !(MIN_BITS..=MAX_BITS).contains(&bits) {
            return Err(Error::key(format!("ESIGN modulus has {bits} bits, expected {MIN_BITS}..={MAX_BITS}")));
        }
        if !n.bit(0) {
            return Err(Error::key("ESIGN modulus is even, expected n = p²q with odd primes"));
        }
        let e = match e.to_u32() {
            Some(e) if e >= MIN_E => e,
            Some(e) => return Err(Error::key(format!("ESIGN public exponent e = {e}, expected e >= {MIN_E}"))),
            None => return Err(Error::key(format!("ESIGN public exponent has {} bits, expected at most 32", e.bits()))),
        };
        let exp = PublicExp::new(&n, e).expect("odd modulus > 1 and e >= 8");
        Ok(PublicKey { l: bits / 3, n, e, exp })
    }

    pub fn n(&self) -> &BigUint {
        &self.n
    }
    pub fn e(&self) -> u32 {
        self.e
    }
    pub fn modulus_bits(&self) -> usize {
        3 * self.l
    }
    /// Which software arithmetic verifies with this key ("avx512-ifma" or "portable").
    pub fn arithmetic(&self) -> &'static str {
        self.exp.arithmetic()
    }

    /// This key verifying on the portable arithmetic, whatever the CPU offers.
    pub fn with_portable_arithmetic(&self) -> Self {
        PublicKey { exp: self.exp.portable(), ..self.clone() }
    }

    /// k = L − 1: the bit length of the message representative f.
    pub fn k(&self) -> usize {
        self.l - 1
    }
    /// Signatures are exactly this many octets.
    pub fn signature_len(&self) -> usize {
        self.modulus_bits().div_ceil(8)
    }

    /// Checks a signature against a representative f (⌈k/8⌉ octets) the strict way: exact
    /// length, 0 < s < n, and (s^e mod n) >> (2k+2) == f. This is also what the verify unit of
    /// the RTL computes; the host supplies f.
    pub fn verify_representative(&self, f: &[u8], sig: &[u8]) -> std::result::Result<(), VerifyError> {
        let s = self.parse_signature(sig)?;
        let y = self.exp.pow_big(&s);
        if (y >> (2 * self.k() + 2)) == BigUint::from_bytes_be(f) {
            Ok(())
        } else {
            Err(VerifyError::Mismatch("top bits of s^e mod n differ from EMSA5(M)".into()))
        }
    }

    /// The signature as an integer, with the length and range rules applied.
    pub fn parse_signature(&self, sig: &[u8]) -> std::result::Result<BigUint, VerifyError> {
        if sig.len() != self.signature_len() {
            return Err(VerifyError::Malformed(format!(
                "length {} bytes, expected {} for a {}-bit modulus",
                sig.len(),
                self.signature_len(),
                self.modulus_bits()
            )));
        }
        let s = BigUint::from_bytes_be(sig);
        if s.is_zero() {
            return Err(VerifyError::Malformed("s = 0".into()));
        }
        if s >= self.n {
            return Err(VerifyError::Malformed("s >= n".into()));
        }
        Ok(s)
    }

    pub fn verify(&self, hash: HashAlg, msg: &[u8], sig: &[u8]) -> std::result::Result<(), VerifyError> {
        self.verify_representative(&emsa5::encode(hash, msg, self.k()), sig)
    }
}

/// An ESIGN private key (p, q) with its public half.
#[derive(Clone)]
pub struct PrivateKey {
    public: PublicKey,
    p: BigUint,
    q: BigUint,
    pq: BigUint,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "esign::PrivateKey({} bits, e = {}, ..)", self.public.modulus_bits(), self.public.e)
    }
}

impl PrivateKey {
    /// Checks what Crypto++'s `Validate` checks and a little more: p ≠ q, both of L bits and
    /// prime, n = p²q.
    pub fn from_components(n: BigUint, e: &BigUint, p: BigUint, q: BigUint) -> Result<Self> {
        let public = PublicKey::new(n, e)?;
        let l = public.l as u64;
        if p.bits() != l || q.bits() != l {
            return Err(Error::key(format!(
                "ESIGN primes have {} and {} bits, expected {l} each (|n|/3)",
                p.bits(),
                q.bits()
            )));
        }
        if p == q {
            return Err(Error::key("ESIGN primes p and q are equal"));
        }
        if &p * &p * &q != public.n {
            return Err(Error::key("ESIGN key inconsistent: n != p²q"));
        }
        for (name, x) in [("p", &p), ("q", &q)] {
            if !is_probable_prime(x) {
                return Err(Error::key(format!("ESIGN key: {name} is not prime")));
            }
        }
        if (&p).is_multiple_of(&BigUint::from(public.e)) {
            return Err(Error::key("ESIGN key: p divides e"));
        }
        let pq = &p * &q;
        Ok(PrivateKey { public, p, q, pq })
    }

    /// A fresh key from the OS CSPRNG. `bits` must be one of [`KEYGEN_BITS`].
    pub fn generate(bits: usize, e: u32) -> Result<Self> {
        Self::generate_with_rng(&mut getrandom::SysRng, bits, e)
    }

    pub fn generate_with_rng<R: TryCryptoRng + ?Sized>(rng: &mut R, bits: usize, e: u32) -> Result<Self> {
        if !KEYGEN_BITS.contains(&bits) {
            return Err(Error::usage(format!("ESIGN key size {bits} bits, expected one of {KEYGEN_BITS:?}")));
        }
        if e < MIN_E {
            return Err(Error::usage(format!("ESIGN public exponent e = {e}, expected e >= {MIN_E}")));
        }
        let l = bits / 3;
        loop {
            let p = random_esign_prime(rng, l)?;
            let q = random_esign_prime(rng, l)?;
            if p == q {
                continue;
            }
            let n = &p * &p * &q;
            // Primes from [204·2^(L−8), 2^L) give |n| = 3L exactly; check rather than trust.
            if n.bits() as usize != bits {
                continue;
            }
            return Self::from_components(n, &BigUint::from(e), p, q);
        }
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }
    pub fn p(&self) -> &BigUint {
        &self.p
    }
    pub fn q(&self) -> &BigUint {
        &self.q
    }

    /// IFSP-ESIGN on a representative f with a fresh r for every attempt.
    pub fn sign_representative<R: TryCryptoRng + ?Sized>(&self, rng: &mut R, f: &[u8]) -> Result<Vec<u8>> {
        let pb = &self.public;
        let n = &pb.n;
        let e = BigUint::from(pb.e);
        let k = pb.k();
        let z = BigUint::from_bytes_be(f) << (2 * k + 2);
        let w1_bound = BigUint::one() << (2 * k + 1);
        loop {
            // r uniform in (0, pq) with p ∤ r; never reused (a repeat reveals p).
            let r = random_below(rng, &self.pq)?;
            if r.is_zero() || (&r).is_multiple_of(&self.p) {
                continue;
            }
            let re = r.modpow(&e, n);
            let a = (&z + n - &re) % n;
            let w0 = a.div_ceil(&self.pq);
            let w1 = &w0 * &self.pq - &a;
            if w1 >= w1_bound {
                continue;
            }
            let denom = (&e * &re) % &self.p;
            let inv = denom.modinv(&self.p).ok_or_else(|| Error::crypto("e·r^e not invertible mod p"))?;
            let t = (&w0 * &r % &self.p) * inv % &self.p;
            let s = &r + t * &self.pq;
            let sig = i2osp(&s, pb.signature_len());
            // Check before release: a fault in the arithmetic must never leave as a signature.
            pb.verify_representative(f, &sig)
                .map_err(|e| Error::crypto(format!("ESIGN self-check of a fresh signature failed: {e}")))?;
            return Ok(sig);
        }
    }

    pub fn sign_with_rng<R: TryCryptoRng + ?Sized>(&self, rng: &mut R, hash: HashAlg, msg: &[u8]) -> Result<Vec<u8>> {
        self.sign_representative(rng, &emsa5::encode(hash, msg, self.public.k()))
    }

    /// Signs with r from the OS CSPRNG.
    pub fn sign(&self, hash: HashAlg, msg: &[u8]) -> Result<Vec<u8>> {
        self.sign_with_rng(&mut getrandom::SysRng, hash, msg)
    }
}

/// I2OSP: fixed-length big-endian.
pub fn i2osp(x: &BigUint, len: usize) -> Vec<u8> {
    let b = x.to_bytes_be();
    assert!(b.len() <= len, "integer longer than its field");
    let mut out = vec![0u8; len - b.len()];
    out.extend_from_slice(&b);
    out
}

fn random_below<R: TryCryptoRng + ?Sized>(rng: &mut R, bound: &BigUint) -> Result<BigUint> {
    let bits = bound.bits() as usize;
    let mut buf = vec![0u8; bits.div_ceil(8)];
    loop {
        rng.try_fill_bytes(&mut buf).map_err(|_| Error::crypto("OS random number generator failed"))?;
        if bits % 8 != 0 {
            buf[0] &= (1u8 << (bits % 8)) - 1;
        }
        let x = BigUint::from_bytes_be(&buf);
        if &x < bound {
            return Ok(x);
        }
    }
}

fn to_boxed(x: &BigUint) -> crypto_bigint::BoxedUint {
    let bytes = x.to_bytes_be();
    let bits = (bytes.len() * 8).max(64) as u32;
    crypto_bigint::BoxedUint::from_be_slice(&bytes, bits).expect("fits by construction")
}

fn is_probable_prime(x: &BigUint) -> bool {
    crypto_primes::is_prime(crypto_primes::Flavor::Any, &to_boxed(x))
}

/// Odd primes below 2000, for trial division before the probabilistic test.
fn small_primes() -> &'static [u32] {
    static P: std::sync::OnceLock<Vec<u32>> = std::sync::OnceLock::new();
    P.get_or_init(|| (3u32..2000).filter(|&n| (2..n).take_while(|d| d * d <= n).all(|d| n % d != 0)).collect())
}

fn has_small_factor(c: &BigUint) -> bool {
    let digits: Vec<u32> = c.iter_u32_digits().collect();
    small_primes().iter().any(|&p| {
        let r = digits.iter().rev().fold(0u64, |r, &d| ((r << 32) | d as u64) % p as u64);
        r == 0
    })
}

/// A prime of exactly L bits, uniform among the primes of [204·2^(L−8), 2^L): the range
/// Crypto++ draws from so that p²q has 3L bits. Independent uniform odd candidates, trial
/// division, then crypto-primes' BPSW test. (crypto-primes' own sieve walks from one random
/// start; with a lower bound on the range it was seen to stall, and it favours primes after
/// long gaps.)
fn random_esign_prime<R: TryCryptoRng + ?Sized>(rng: &mut R, l: usize) -> Result<BigUint> {
    let min = BigUint::from(204u32) << (l - 8);
    let span = (BigUint::one() << l) - &min;
    loop {
        let c = (&min + random_below(rng, &span)?) | BigUint::one();
        if c.bits() as usize == l && !has_small_factor(&c) && is_probable_prime(&c) {
            return Ok(c);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// RustCrypto `signature` traits.

/// An ESIGN signature: ⌈|n|/8⌉ big-endian octets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature(Vec<u8>);

impl Signature {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl TryFrom<&[u8]> for Signature {
    type Error = signature::Error;
    fn try_from(b: &[u8]) -> std::result::Result<Self, signature::Error> {
        if b.is_empty() {
            return Err(signature::Error::new());
        }
        Ok(Signature(b.to_vec()))
    }
}

impl From<Signature> for Vec<u8> {
    fn from(s: Signature) -> Vec<u8> {
        s.0
    }
}

impl SignatureEncoding for Signature {
    type Repr = Vec<u8>;
}

/// A private key bound to a hash, as Crypto++'s `ESIGN<H>::Signer`.
#[derive(Clone, Debug)]
pub struct SigningKey {
    key: PrivateKey,
    hash: HashAlg,
}

impl SigningKey {
    pub fn new(key: PrivateKey, hash: HashAlg) -> Self {
        SigningKey { key, hash }
    }
    pub fn private_key(&self) -> &PrivateKey {
        &self.key
    }
}

/// A public key bound to a hash, as Crypto++'s `ESIGN<H>::Verifier`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyingKey {
    key: PublicKey,
    hash: HashAlg,
}

impl VerifyingKey {
    pub fn new(key: PublicKey, hash: HashAlg) -> Self {
        VerifyingKey { key, hash }
    }
    pub fn public_key(&self) -> &PublicKey {
        &self.key
    }
    pub fn hash(&self) -> HashAlg {
        self.hash
    }
}

impl RandomizedSigner<Signature> for SigningKey {
    fn try_sign_with_rng<R: TryCryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        msg: &[u8],
    ) -> std::result::Result<Signature, signature::Error> {
        self.key
            .sign_with_rng(rng, self.hash, msg)
            .map(Signature)
            .map_err(signature::Error::from_source)
    }
}

impl Signer<Signature> for SigningKey {
    /// Draws r from the OS CSPRNG: ESIGN cannot be made deterministic safely.
    fn try_sign(&self, msg: &[u8]) -> std::result::Result<Signature, signature::Error> {
        self.try_sign_with_rng(&mut getrandom::SysRng, msg)
    }
}

impl Verifier<Signature> for VerifyingKey {
    fn verify(&self, msg: &[u8], sig: &Signature) -> std::result::Result<(), signature::Error> {
        self.key.verify(self.hash, msg, &sig.0).map_err(signature::Error::from_source)
    }
}

impl Keypair for SigningKey {
    type VerifyingKey = VerifyingKey;
    fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey::new(self.key.public.clone(), self.hash)
    }
}

impl MessageVerifier for VerifyingKey {
    fn scheme(&self) -> Scheme {
        Scheme::Esign
    }
    fn modulus_bits(&self) -> usize {
        self.key.modulus_bits()
    }
    fn verify_message(&self, msg: &[u8], sig: &[u8]) -> std::result::Result<(), VerifyError> {
        self.key.verify(self.hash, msg, sig)
    }
}

/// Exposed for the tests and the RTL reference: the raw ESIGN function s ↦ s^e mod n.
pub fn apply(public: &PublicKey, s: &BigUint) -> BigUint {
    public.exp.pow_big(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    /// One 1536-bit key for the unit tests (generation dominates their time).
    fn key1536() -> &'static PrivateKey {
        static K: OnceLock<PrivateKey> = OnceLock::new();
        K.get_or_init(|| PrivateKey::generate(1536, 32).unwrap())
    }

    #[test]
    fn generated_key_has_exact_shape() {
        let k = key1536();
        assert_eq!(k.public_key().n().bits(), 1536);
        assert_eq!(k.p().bits(), 512);
        assert_eq!(k.q().bits(), 512);
        assert!(k.p() >= &(BigUint::from(204u32) << 504));
        assert_eq!(k.public_key().k(), 511);
    }

    #[test]
    fn sign_verify_round_trip_and_corruption() {
        let k = key1536();
        for hash in [HashAlg::Sha256, HashAlg::Sha1] {
            for msg in [&b""[..], b"kessai", &[0xa5u8; 1000]] {
                let sig = k.sign(hash, msg).unwrap();
                assert_eq!(sig.len(), 192);
                k.public_key().verify(hash, msg, &sig).unwrap();
                let mut bad = sig.clone();
                bad[100] ^= 0x01;
                assert!(matches!(k.public_key().verify(hash, msg, &bad), Err(VerifyError::Mismatch(_))));
                let other = if hash == HashAlg::Sha256 { HashAlg::Sha1 } else { HashAlg::Sha256 };
                assert!(k.public_key().verify(other, msg, &sig).is_err());
            }
        }
    }

    #[test]
    fn two_signatures_of_one_message_differ() {
        let k = key1536();
        let a = k.sign(HashAlg::Sha256, b"same").unwrap();
        let b = k.sign(HashAlg::Sha256, b"same").unwrap();
        assert_ne!(a, b, "r must be fresh for every signature");
    }

    /// Why r must never repeat: two signatures made with one r give away pq, hence p.
    #[test]
    fn a_repeated_r_reveals_the_key() {
        /// A deterministic stream: two instances with one seed replay the same r candidates.
        struct Replay(u64, u64);
        impl rand_core::TryRng for Replay {
            type Error = std::convert::Infallible;
            fn try_next_u32(&mut self) -> std::result::Result<u32, Self::Error> {
                Ok(self.try_next_u64()? as u32)
            }
            fn try_next_u64(&mut self) -> std::result::Result<u64, Self::Error> {
                self.1 += 1;
                let h = HashAlg::Sha256.digest2(&self.0.to_le_bytes(), &self.1.to_le_bytes());
                Ok(u64::from_le_bytes(h[..8].try_into().unwrap()))
            }
            fn try_fill_bytes(&mut self, dst: &mut [u8]) -> std::result::Result<(), Self::Error> {
                for chunk in dst.chunks_mut(8) {
                    let v = self.try_next_u64()?.to_le_bytes();
                    chunk.copy_from_slice(&v[..chunk.len()]);
                }
                Ok(())
            }
        }
        impl rand_core::TryCryptoRng for Replay {}
        let k = key1536();
        let pq = k.p() * k.q();
        // Both messages accept the first candidate for some seed; then r is shared.
        let leaked = (0u64..64).find_map(|seed| {
            let s1 = BigUint::from_bytes_be(&k.sign_with_rng(&mut Replay(seed, 0), HashAlg::Sha256, b"one").unwrap());
            let s2 = BigUint::from_bytes_be(&k.sign_with_rng(&mut Replay(seed, 0), HashAlg::Sha256, b"two").unwrap());
            let d = if s1 > s2 { &s1 - &s2 } else { &s2 - &s1 };
            let g = d.gcd(k.public_key().n());
            (g == pq).then_some(g)
        });
        let pq = leaked.expect("a shared r leaks pq");
        assert_eq!(k.public_key().n() / &pq, *k.p());
    }

    #[test]
    fn strict_rejections() {
        let k = key1536();
        let pk = k.public_key();
        let sig = k.sign(HashAlg::Sha256, b"m").unwrap();
        let s = BigUint::from_bytes_be(&sig);
        // s + n may still fit in the length (|n| is a multiple of 8 here): must be refused.
        let s_plus_n = &s + pk.n();
        if s_plus_n.bits() <= 1536 {
            let e = pk.verify(HashAlg::Sha256, b"m", &i2osp(&s_plus_n, 192)).unwrap_err();
            assert_eq!(e, VerifyError::Malformed("s >= n".into()));
        }
        // Same value with a leading zero octet: Crypto++ accepts it, we do not.
        let mut long = vec![0u8];
        long.extend_from_slice(&sig);
        assert!(matches!(pk.verify(HashAlg::Sha256, b"m", &long), Err(VerifyError::Malformed(_))));
        assert!(matches!(pk.verify(HashAlg::Sha256, b"m", &[]), Err(VerifyError::Malformed(_))));
        assert!(matches!(pk.verify(HashAlg::Sha256, b"m", &[0u8; 192]), Err(VerifyError::Malformed(_))));
        assert!(matches!(pk.verify(HashAlg::Sha256, b"m", &i2osp(pk.n(), 192)), Err(VerifyError::Malformed(_))));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Sign/verify round trip on arbitrary messages; any single flipped bit is refused.
        #[test]
        fn sign_verify_property(msg in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
                                bit in 0usize..1536, sha1 in proptest::prelude::any::<bool>()) {
            let k = key1536();
            let hash = if sha1 { HashAlg::Sha1 } else { HashAlg::Sha256 };
            let sig = k.sign(hash, &msg).unwrap();
            proptest::prop_assert!(k.public_key().verify(hash, &msg, &sig).is_ok());
            let mut bad = sig.clone();
            bad[bit / 8] ^= 0x80 >> (bit % 8);
            proptest::prop_assert!(k.public_key().verify(hash, &msg, &bad).is_err());
        }

        /// The signature value lands where the scheme says: s^e mod n = 0 ‖ f ‖ w1 with w1 < 2^(2k+1).
        #[test]
        fn signature_structure(msg in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let k = key1536();
            let pk = k.public_key();
            let sig = k.sign(HashAlg::Sha256, &msg).unwrap();
            let y = apply(pk, &BigUint::from_bytes_be(&sig));
            let f = BigUint::from_bytes_be(&emsa5::encode(HashAlg::Sha256, &msg, pk.k()));
            proptest::prop_assert_eq!(&y >> (2 * pk.k() + 2), f);
            proptest::prop_assert!(!y.bit((2 * pk.k() + 1) as u64), "w1 bound bit must be clear");
        }
    }

    #[test]
    fn key_checks() {
        let k = key1536();
        let n = k.public_key().n().clone();
        assert!(PublicKey::new(n.clone(), &BigUint::from(7u32)).is_err());
        assert!(PublicKey::new(n.clone(), &(BigUint::one() << 40)).is_err());
        assert!(PublicKey::new(&n >> 1, &BigUint::from(32u32)).is_err());
        assert!(PublicKey::new(&n + 1u32, &BigUint::from(32u32)).is_err());
        assert!(PrivateKey::from_components(n.clone(), &BigUint::from(32u32), k.q().clone(), k.p().clone()).is_err());
        assert!(PrivateKey::from_components(n, &BigUint::from(32u32), k.p().clone(), k.q().clone()).is_ok());
        assert!(PrivateKey::generate(1024, 32).is_err());
        assert!(PrivateKey::generate(1536, 4).is_err());
    }
}
