//! EMSA5-MGF1(H), the message encoding of IEEE P1363a ESIGN (Crypto++ `EMSA5Pad<P1363_MGF1>`).

use super::HashAlg;

/// MGF1 with counter from 0 (not KDF2, which starts at 1), `len` octets, no XOR.
pub fn mgf1(hash: HashAlg, seed: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + hash.output_len());
    let mut counter: u32 = 0;
    while out.len() < len {
        out.extend_from_slice(&hash.digest2(seed, &counter.to_be_bytes()));
        counter += 1;
    }
    out.truncate(len);
    out
}

/// f = MGF1_H(H(M)) cropped to k bits, as ⌈k/8⌉ big-endian octets.
pub fn encode(hash: HashAlg, msg: &[u8], k: usize) -> Vec<u8> {
    encode_digest(hash, &hash.digest(msg), k)
}

/// As [`encode`], from H(M) already computed (the prehash form).
pub fn encode_digest(hash: HashAlg, digest: &[u8], k: usize) -> Vec<u8> {
    let mut t = mgf1(hash, digest, k.div_ceil(8));
    if k % 8 != 0 {
        t[0] &= (1u8 << (k % 8)) - 1;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Intermediate values of NTT's vector no. 1 (SHA-1, |n| = 1152, k = 383), from the spec.
    #[test]
    fn ntt_vector_1_representative() {
        let m = hex::decode("86f28c1cb5e640548309b85dc6e64c1a").unwrap();
        let h = HashAlg::Sha1.digest(&m);
        assert_eq!(hex::encode(&h), "f89d18948a041dc31e425a54c500390945948425");
        let f = encode(HashAlg::Sha1, &m, 383);
        assert_eq!(f.len(), 48);
        let expect = "034a7d1c9cde494666a6235bcbb1778cf44aa420\
                      c6c472ea41b5e0edb30b7b23a9316842f06caa8b\
                      a52b4d051d74ea7d";
        assert_eq!(hex::encode(&f), expect);
    }

    #[test]
    fn crop_keeps_k_bits() {
        for k in [1023usize, 681, 511, 8, 9] {
            let f = encode(HashAlg::Sha256, b"kessai", k);
            assert_eq!(f.len(), k.div_ceil(8));
            if k % 8 != 0 {
                assert!(f[0] < (1 << (k % 8)), "k={k} top byte {:02x}", f[0]);
            }
        }
    }
}
