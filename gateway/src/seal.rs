//! Encryption at rest: what the journal keeps is sealed with a per-gateway
//! key, so a copy of the SD card reveals no event, resident id, room or
//! register entry.
//!
//! # Keys
//!
//! - The **data key** (256 bits, random, made at the first start) seals the
//!   journal's values with XChaCha20-Poly1305 (RustCrypto's
//!   `chacha20poly1305`): a fresh random 192-bit nonce per value, the table's
//!   name as associated data. It is kept in `{data_dir}/journal.key`, itself
//!   sealed with the key-encryption key.
//! - The **key-encryption key** (KEK) comes from `[encryption] key_source`:
//!   `file:PATH` (hex; made if missing) or `command:PROGRAM ARGS...` (prints
//!   the key as hex, e.g. `rpi-otp-private-key`, which reads the key a
//!   Raspberry Pi 4/5 keeps in its SoC's one-time-programmable memory).
//!   A KEK file on the same disk as the journal protects a copied journal,
//!   not a stolen SD card; the gateway says so at start.
//!
//! Erasing `journal.key` makes the journal unreadable for good, whatever
//! the KEK: that is how `trygg-gateway decommission` wipes (see
//! [`erase_key_file`]), and why a key on OTP memory, which cannot be
//! erased, still allows a wipe.
//!
//! # What stays readable
//!
//! Table names, device ids as keys (the devices' own hardware ids, which
//! name no person), sequence counters and byte counts. Every record (kind,
//! times, resident id, room, value), dead letter and register entry is
//! sealed.

use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

/// First byte of a sealed value. Plain JSON (a journal written before
/// encryption at rest) starts with `{`.
const SEALED_V1: u8 = 0x01;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Bytes a sealed value takes beyond its plaintext.
pub const OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;
/// The key file's first bytes.
const KEY_FILE_MAGIC: &[u8; 8] = b"TRYGGDK1";
/// Name of the sealed data key beside the journal.
pub const KEY_FILE: &str = "journal.key";

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("a sealed value failed authentication (wrong key, or the file was altered)")]
    Authentication,
    #[error("a stored value is neither sealed nor plain JSON")]
    Unknown,
    #[error("the journal is encrypted but no key was given")]
    NoKey,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key source {0:?} is not understood: use \"file:PATH\" or \"command:PROGRAM [ARGS]\"")]
    Source(String),
    #[error("cannot read the key-encryption key from {path}: {source}")]
    ReadKek {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the key command {command:?} failed: {reason}")]
    Command { command: String, reason: String },
    #[error("{from} does not hold a 256-bit key as 64 hex digits{hint}")]
    Malformed { from: String, hint: &'static str },
    #[error("cannot read the data key {path}: {source}")]
    ReadKey {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the data key {path} cannot be opened with this key-encryption key (a different KEK, \
         or the file is damaged)"
    )]
    Unseal { path: PathBuf },
}

/// Seals and opens journal values. [`Sealer::none`] keeps them plain: for
/// tests and tools only; the service always seals.
pub struct Sealer {
    cipher: Option<XChaCha20Poly1305>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("sealing", &self.cipher.is_some())
            .finish()
    }
}

impl Sealer {
    pub fn new(key: &[u8; 32]) -> Sealer {
        Sealer {
            cipher: Some(XChaCha20Poly1305::new(key.into())),
        }
    }

    /// Stores values as they are.
    pub fn none() -> Sealer {
        Sealer { cipher: None }
    }

    pub fn seals(&self) -> bool {
        self.cipher.is_some()
    }

    /// `plain` sealed for `table` (or as it is, without a key).
    pub fn seal(&self, table: &str, plain: &[u8]) -> Vec<u8> {
        let Some(cipher) = &self.cipher else {
            return plain.to_vec();
        };
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: table.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 seals any length the journal holds");
        let mut out = Vec::with_capacity(OVERHEAD + plain.len());
        out.push(SEALED_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// The plaintext of a stored value of `table`. Plain JSON is taken as it
    /// is (a journal from before encryption at rest; it is delivered and
    /// deleted as usual).
    pub fn open<'a>(
        &self,
        table: &str,
        stored: &'a [u8],
    ) -> Result<std::borrow::Cow<'a, [u8]>, SealError> {
        match stored.first() {
            Some(b'{') => Ok(std::borrow::Cow::Borrowed(stored)),
            Some(&SEALED_V1) if stored.len() >= OVERHEAD => {
                let cipher = self.cipher.as_ref().ok_or(SealError::NoKey)?;
                let (nonce, body) = stored[1..].split_at(NONCE_LEN);
                cipher
                    .decrypt(
                        XNonce::from_slice(nonce),
                        Payload {
                            msg: body,
                            aad: table.as_bytes(),
                        },
                    )
                    .map(std::borrow::Cow::Owned)
                    .map_err(|_| SealError::Authentication)
            }
            _ => Err(SealError::Unknown),
        }
    }

    /// How many bytes `plain_len` bytes take once stored.
    pub fn stored_len(&self, plain_len: usize) -> usize {
        if self.cipher.is_some() {
            plain_len + OVERHEAD
        } else {
            plain_len
        }
    }
}

/// Where the key-encryption key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    File(PathBuf),
    Command(Vec<String>),
}

impl KeySource {
    pub fn parse(s: &str) -> Result<KeySource, KeyError> {
        if let Some(path) = s.strip_prefix("file:") {
            if path.trim().is_empty() {
                return Err(KeyError::Source(s.into()));
            }
            return Ok(KeySource::File(PathBuf::from(path.trim())));
        }
        if let Some(cmd) = s.strip_prefix("command:") {
            let words: Vec<String> = cmd.split_whitespace().map(str::to_string).collect();
            if words.is_empty() {
                return Err(KeyError::Source(s.into()));
            }
            return Ok(KeySource::Command(words));
        }
        Err(KeyError::Source(s.into()))
    }

    /// The KEK. A `file:` source that does not exist yet is made (random,
    /// mode 0600) when `create` is set.
    pub fn kek(&self, create: bool) -> Result<[u8; 32], KeyError> {
        match self {
            KeySource::File(path) => {
                if !path.exists() && create {
                    let mut key = [0u8; 32];
                    rand::rng().fill_bytes(&mut key);
                    write_private(path, format!("{}\n", hex(&key)).as_bytes())?;
                    tracing::info!(path = %path.display(), "made a new key-encryption key");
                    return Ok(key);
                }
                let text = std::fs::read_to_string(path).map_err(|source| KeyError::ReadKek {
                    path: path.clone(),
                    source,
                })?;
                parse_hex_key(&text, &path.display().to_string(), "")
            }
            KeySource::Command(words) => {
                let out = std::process::Command::new(&words[0])
                    .args(&words[1..])
                    .output()
                    .map_err(|e| KeyError::Command {
                        command: words.join(" "),
                        reason: e.to_string(),
                    })?;
                if !out.status.success() {
                    return Err(KeyError::Command {
                        command: words.join(" "),
                        reason: format!(
                            "{}: {}",
                            out.status,
                            String::from_utf8_lossy(&out.stderr).trim()
                        ),
                    });
                }
                parse_hex_key(
                    &String::from_utf8_lossy(&out.stdout),
                    &words.join(" "),
                    " (on a Raspberry Pi, program the OTP key once: \
                     rpi-otp-private-key -w $(openssl rand -hex 32))",
                )
            }
        }
    }

    /// The KEK file, when the source is one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            KeySource::File(p) => Some(p),
            KeySource::Command(_) => None,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex_key(text: &str, from: &str, hint: &'static str) -> Result<[u8; 32], KeyError> {
    let t = text.trim();
    let malformed = || KeyError::Malformed {
        from: from.to_string(),
        hint,
    };
    if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed());
    }
    let mut key = [0u8; 32];
    for (i, k) in key.iter_mut().enumerate() {
        *k = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).map_err(|_| malformed())?;
    }
    // An OTP never programmed reads as zeros.
    if key.iter().all(|&b| b == 0) {
        return Err(malformed());
    }
    Ok(key)
}

/// Writes `bytes` to `path` (mode 0600), durably: temp file, fsync, rename,
/// fsync of the directory.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    use std::io::Write;
    let err = |source| KeyError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(err)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// The data key sealed in `path` with `kek`; made (random) and stored when
/// the file does not exist. Returns the key and whether it was made now.
pub fn data_key(path: &Path, kek: &[u8; 32]) -> Result<([u8; 32], bool), KeyError> {
    let wrapper = Sealer::new(kek);
    match std::fs::read(path) {
        Ok(bytes) => {
            let unseal = || KeyError::Unseal {
                path: path.to_path_buf(),
            };
            let body = bytes.strip_prefix(KEY_FILE_MAGIC).ok_or_else(unseal)?;
            let plain = wrapper.open("data-key", body).map_err(|_| unseal())?;
            let key: [u8; 32] = plain.as_ref().try_into().map_err(|_| unseal())?;
            Ok((key, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; 32];
            rand::rng().fill_bytes(&mut key);
            let mut bytes = KEY_FILE_MAGIC.to_vec();
            bytes.extend_from_slice(&wrapper.seal("data-key", &key));
            write_private(path, &bytes)?;
            Ok((key, true))
        }
        Err(source) => Err(KeyError::ReadKey {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The sealer of an existing journal, for tools that read it while the
/// gateway is stopped; makes no key.
pub fn existing_sealer(source: &KeySource, key_path: &Path) -> Result<Sealer, KeyError> {
    if !key_path.exists() {
        return Err(KeyError::ReadKey {
            path: key_path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no data key: the gateway has not run here, or it was decommissioned",
            ),
        });
    }
    let kek = source.kek(false)?;
    Ok(Sealer::new(&data_key(key_path, &kek)?.0))
}

/// Overwrites a key file with random bytes, syncs it and removes it. Once
/// the data key is gone, the journal cannot be read with any KEK.
pub fn erase_key_file(path: &Path) -> std::io::Result<bool> {
    use std::io::Write;
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len() as usize,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    {
        let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
        let mut junk = vec![0u8; len.max(64)];
        rand::rng().fill_bytes(&mut junk);
        f.write_all(&junk)?;
        f.sync_all()?;
    }
    std::fs::remove_file(path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(true)
}

/// Whether two paths are on the same filesystem (a KEK file beside the
/// journal protects a copied journal, not a stolen card).
#[cfg(unix)]
pub fn same_filesystem(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let dev = |p: &Path| {
        let mut p = p.to_path_buf();
        loop {
            if let Ok(m) = std::fs::metadata(&p) {
                return Some(m.dev());
            }
            if !p.pop() {
                return std::fs::metadata(".").ok().map(|m| m.dev());
            }
        }
    };
    dev(a).is_some() && dev(a) == dev(b)
}

#[cfg(not(unix))]
pub fn same_filesystem(_: &Path, _: &Path) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_table() {
        let s = Sealer::new(&[7; 32]);
        let sealed = s.seal("lane_alarm", b"{\"kind\":\"fall\"}");
        assert_eq!(sealed.len(), 15 + OVERHEAD);
        assert!(!sealed.windows(4).any(|w| w == b"fall"));
        assert_eq!(
            s.open("lane_alarm", &sealed).unwrap().as_ref(),
            b"{\"kind\":\"fall\"}"
        );
        assert!(matches!(
            s.open("lane_care", &sealed),
            Err(SealError::Authentication)
        ));
        assert!(matches!(
            Sealer::new(&[8; 32]).open("lane_alarm", &sealed),
            Err(SealError::Authentication)
        ));
        assert!(matches!(
            Sealer::none().open("lane_alarm", &sealed),
            Err(SealError::NoKey)
        ));
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(s.open("lane_alarm", &flipped).is_err());
        // Plain JSON from before encryption at rest is still read.
        assert_eq!(s.open("lane_alarm", b"{}").unwrap().as_ref(), b"{}");
        assert!(matches!(s.open("x", b"junk"), Err(SealError::Unknown)));
    }

    #[test]
    fn the_data_key_is_made_once_sealed_and_erased_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let source =
            KeySource::parse(&format!("file:{}", dir.path().join("kek").display())).unwrap();
        let kek = source.kek(true).unwrap();
        assert_eq!(source.kek(false).unwrap(), kek);
        let path = dir.path().join(KEY_FILE);
        let (key, made) = data_key(&path, &kek).unwrap();
        assert!(made);
        assert_eq!(data_key(&path, &kek).unwrap(), (key, false));
        let on_disk = std::fs::read(&path).unwrap();
        assert!(
            !on_disk.windows(32).any(|w| w == key),
            "the data key is stored sealed"
        );
        assert!(matches!(
            data_key(&path, &[1; 32]),
            Err(KeyError::Unseal { .. })
        ));
        assert!(erase_key_file(&path).unwrap());
        assert!(!path.exists());
        assert!(!erase_key_file(&path).unwrap());
    }

    #[test]
    fn key_sources_parse_and_refuse_what_is_not_a_key() {
        assert!(KeySource::parse("kek.hex").is_err());
        assert!(KeySource::parse("file:").is_err());
        assert!(KeySource::parse("command:  ").is_err());
        let echo = KeySource::parse(&format!("command:echo {}", "ab".repeat(32))).unwrap();
        assert_eq!(echo.kek(false).unwrap(), [0xab; 32]);
        // An OTP never programmed reads as zeros: refused, with the fix.
        let zeros = KeySource::parse(&format!("command:echo {}", "00".repeat(32))).unwrap();
        let e = zeros.kek(false).unwrap_err().to_string();
        assert!(e.contains("rpi-otp-private-key -w"), "{e}");
        assert!(KeySource::parse("command:false")
            .unwrap()
            .kek(false)
            .is_err());
        assert!(KeySource::parse("command:echo short")
            .unwrap()
            .kek(false)
            .is_err());
    }
}
