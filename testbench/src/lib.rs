//! Shared helpers for the cross-check suites in tests/: scratch directories and a reader for
//! Crypto++'s test-vector files (`TestVectors/*.txt`), which carry NTT's published ESIGN vectors.

pub mod sim;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A directory under the system temp dir, removed on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let nonce: u64 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
        let dir = std::env::temp_dir().join(format!("kessai-{name}-{}-{nonce:x}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }
    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
    pub fn write(&self, file: &str, data: &[u8]) -> PathBuf {
        let p = self.path(file);
        std::fs::write(&p, data).expect("write scratch file");
        p
    }
    pub fn dir(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One `Test:` line of a Crypto++ vector file with the fields in force at that point.
#[derive(Debug, Clone)]
pub struct VectorTest {
    pub name: String,
    pub test: String,
    pub fields: BTreeMap<String, Vec<u8>>,
}

impl VectorTest {
    pub fn field(&self, key: &str) -> &[u8] {
        self.fields.get(key).unwrap_or_else(|| panic!("vector '{}' test '{}' has no field {key}", self.name, self.test))
    }
}

/// Crypto++'s format: `Key: value` lines, `\` continues a value on the next line, a value is a
/// "quoted string" or hex, `Test: X` runs a test with the fields set so far (fields carry over
/// to later tests of the same block), `AlgorithmType:` starts a new block.
pub fn parse_cryptopp_vectors(text: &str) -> Vec<VectorTest> {
    let mut joined = String::new();
    for line in text.lines() {
        let l = line.trim_end();
        if let Some(stripped) = l.strip_suffix('\\') {
            joined.push_str(stripped.trim_start());
        } else {
            joined.push_str(l.trim_start());
            joined.push('\n');
        }
    }
    let mut out = Vec::new();
    let mut fields: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut name = String::new();
    for line in joined.lines() {
        let Some((key, value)) = line.split_once(':') else { continue };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "AlgorithmType" => fields.clear(),
            "Name" => name = value.to_string(),
            "Test" => out.push(VectorTest { name: name.clone(), test: value.to_string(), fields: fields.clone() }),
            _ => {
                let bytes = if let Some(s) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                    s.as_bytes().to_vec()
                } else {
                    hex::decode(value.replace(' ', "")).unwrap_or_else(|_| value.as_bytes().to_vec())
                };
                fields.insert(key.to_string(), bytes);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_continuations_strings_and_carry_over() {
        let v = parse_cryptopp_vectors(
            "AlgorithmType: Signature\nName: X\nKeyFormat: DER\nPublicKey: \\\n\t0102\\\n\t03\nMessage: \"hi\"\nTest: Verify\nMessage: ff\nTest: NotVerify\n",
        );
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].field("PublicKey"), &[1, 2, 3]);
        assert_eq!(v[0].field("Message"), b"hi");
        assert_eq!(v[1].field("Message"), &[0xff]);
        assert_eq!(v[1].field("PublicKey"), &[1, 2, 3]);
        assert_eq!(v[1].test, "NotVerify");
    }
}
