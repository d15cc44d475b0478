//! Reading and writing the CLI's data files: raw bytes or hex, written atomically.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Raw bytes, or with `hex` the bytes a hex file spells (whitespace ignored).
pub fn read_data(path: &Path, hex: bool) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if !hex {
        return Ok(raw);
    }
    let text: String = String::from_utf8(raw)
        .map_err(|_| Error::input(path, "--hex given but the file is not text"))?
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    hex::decode(&text).map_err(|e| Error::input(path, format!("--hex given but the file is not hex: {e}")))
}

pub fn write_data(path: &Path, data: &[u8], hex: bool) -> Result<()> {
    if hex {
        let mut s = hex::encode(data);
        s.push('\n');
        write_atomic(path, s.as_bytes())
    } else {
        write_atomic(path, data)
    }
}

/// Write to a temporary file beside `path`, sync, then rename over it: a reader sees the old
/// file or the new one, never a prefix.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    write_atomic_mode(path, data, 0o666)
}

/// As [`write_atomic`], readable and writable by the owner only (secret keys, card EEPROMs).
pub fn write_atomic_private(path: &Path, data: &[u8]) -> Result<()> {
    write_atomic_mode(path, data, 0o600)
}

fn write_atomic_mode(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| Error::input(path, "not a file name"))?;
    let tmp = dir.join(format!(".{}.tmp{}", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename is durable once the directory is synced.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_errors() {
        let dir = std::env::temp_dir().join(format!("kessai-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.hex");
        write_data(&p, &[0, 1, 0xfe], true).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "0001fe\n");
        assert_eq!(read_data(&p, true).unwrap(), vec![0, 1, 0xfe]);
        std::fs::write(&p, "zz").unwrap();
        let e = read_data(&p, true).unwrap_err().to_string();
        assert!(e.contains("x.hex") && e.contains("not hex"), "{e}");
        assert!(read_data(&dir.join("missing"), false).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
