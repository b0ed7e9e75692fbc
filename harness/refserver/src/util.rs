//! Small helpers: RFC 3339 timestamps, file digests, logging.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// One log line on stderr: `<rfc3339> <LEVEL> <message>`.
#[macro_export]
macro_rules! log {
    ($level:literal, $($arg:tt)*) => {
        eprintln!("{} {:<5} {}", $crate::util::rfc3339(std::time::SystemTime::now()), $level, format_args!($($arg)*))
    };
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// RFC 3339 in UTC with nanoseconds, trailing zeros trimmed, as Go's `time.RFC3339Nano`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = d.as_secs() as i64;
    let nanos = d.subsec_nanos();
    let (y, mo, da) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let (h, mi, s) = (sod / 3600, (sod % 3600) / 60, sod % 60);
    let mut out = format!("{y:04}-{mo:02}-{da:02}T{h:02}:{mi:02}:{s:02}");
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Go's `time.Now().Add(math.MaxInt64)`-ish "forever", as Ollama shows it for keep_alive < 0.
pub fn forever() -> SystemTime {
    SystemTime::now() + Duration::from_nanos(i64::MAX as u64)
}

pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// sha256 of a file, cached in a sidecar `.<name>.o3sha256` next to it (keyed by size and mtime).
/// A sidecar that cannot be written is not an error.
pub fn cached_sha256(path: &Path) -> io::Result<String> {
    let meta = std::fs::metadata(path)?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let key = format!("{} {}", meta.len(), mtime);
    let sidecar = path.with_file_name(format!(
        ".{}.o3sha256",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("model")
    ));
    if let Ok(text) = std::fs::read_to_string(&sidecar)
        && let Some((k, digest)) = text.trim().rsplit_once(' ')
        && k == key
        && digest.len() == 64
    {
        return Ok(digest.to_string());
    }
    let digest = sha256_file(path)?;
    let _ = std::fs::write(&sidecar, format!("{key} {digest}\n"));
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_format() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 120_000_000);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.12Z");
        let t = UNIX_EPOCH + Duration::new(951_782_400, 5); // leap day 2000
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.000000005Z");
        let year: u32 = rfc3339(forever())[..4].parse().unwrap();
        assert!((2318..=2320).contains(&year), "{year}");
    }

    #[test]
    fn sha256_and_sidecar() {
        let dir = std::env::temp_dir().join(format!("o3ref-sha-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.gguf");
        std::fs::write(&p, b"abc").unwrap();
        let want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_file(&p).unwrap(), want);
        assert_eq!(cached_sha256(&p).unwrap(), want);
        assert!(dir.join(".x.gguf.o3sha256").exists());
        assert_eq!(cached_sha256(&p).unwrap(), want);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
