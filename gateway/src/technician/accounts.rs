//! Technician accounts, kept on the gateway in `{data_dir}/technicians.json`
//! (never in the repository, never in the config file):
//!
//! ```text
//! {"version": 1, "technicians": [{"username": "...", "password_hash": "$argon2id$...",
//!   "created_ms": n, "changed_ms": n}]}
//! ```
//!
//! What is durable when: `trygg-gateway technician add|remove|passwd` is the
//! only writer. It writes the whole file to a temporary file beside it,
//! fsyncs it, renames it over the old one and fsyncs the directory, so a
//! crash leaves the old file or the new one, never a torn one. Two such
//! commands at once are kept apart by `technicians.json.lock` (made with
//! O_EXCL; one older than [`STALE_LOCK`] is taken over). The running gateway
//! only reads the file, at every login and every request of a session, so
//! an account removed or a password changed ends that technician's sessions
//! at their next request, without a restart.
//!
//! The file holds argon2id hashes only (mode 0600), never a password.
//! `technician-audit.log` beside it is an append-only JSON-lines record of
//! every change, login, failed login and action on the page.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The shortest password accepted.
pub const MIN_PASSWORD: usize = 10;
/// A lock file older than this is left over from a command that died.
pub const STALE_LOCK: Duration = Duration::from_secs(30);

/// The accounts file's name in the data dir.
pub const FILE: &str = "technicians.json";
/// The audit log's name in the data dir.
pub const AUDIT_FILE: &str = "technician-audit.log";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Technician {
    pub username: String,
    /// argon2id, PHC string.
    pub password_hash: String,
    pub created_ms: u64,
    pub changed_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Accounts {
    pub version: u32,
    pub technicians: Vec<Technician>,
}

impl Default for Accounts {
    fn default() -> Self {
        Accounts {
            version: 1,
            technicians: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("username must be 1-64 characters of a-z, 0-9, '.', '_' or '-' (e.g. kari.tekniker)")]
    BadUsername,
    #[error(
        "a technician named {0} exists already (change the password with `technician passwd {0}`)"
    )]
    Exists(String),
    #[error("no technician named {0} (see `trygg-gateway technician list`)")]
    NotFound(String),
    #[error("the password must be at least {MIN_PASSWORD} characters")]
    WeakPassword,
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is damaged ({message}); restore it from a backup, or move it away and add the technicians again")]
    Corrupt { path: PathBuf, message: String },
    #[error("another technician command holds {0}; try again in a moment (if none is running, delete that file)")]
    Busy(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AccountError + '_ {
    move |source| AccountError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether `s` is a username we accept.
pub fn valid_username(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// Hashes a password with argon2id (the crate's defaults: 19 MiB, 2 passes).
pub fn hash_password(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt =
        SaltString::encode_b64(&rand::random::<[u8; 16]>()).expect("16 bytes encode as a salt");
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashes any password")
        .to_string()
}

/// Whether `password` matches `hash`.
pub fn verify_password(hash: &str, password: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(hash)
        .map(|h| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash to verify against when the username is unknown, so a wrong
/// username takes as long as a wrong password.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("no technician has this password"))
}

impl Accounts {
    pub fn get(&self, username: &str) -> Option<&Technician> {
        self.technicians.iter().find(|t| t.username == username)
    }

    /// Adds a technician (the password is hashed here).
    pub fn add(&mut self, username: &str, password: &str, now_ms: u64) -> Result<(), AccountError> {
        if !valid_username(username) {
            return Err(AccountError::BadUsername);
        }
        if self.get(username).is_some() {
            return Err(AccountError::Exists(username.into()));
        }
        if password.chars().count() < MIN_PASSWORD {
            return Err(AccountError::WeakPassword);
        }
        self.technicians.push(Technician {
            username: username.into(),
            password_hash: hash_password(password),
            created_ms: now_ms,
            changed_ms: now_ms,
        });
        self.technicians.sort_by(|a, b| a.username.cmp(&b.username));
        Ok(())
    }

    pub fn remove(&mut self, username: &str) -> Result<(), AccountError> {
        let before = self.technicians.len();
        self.technicians.retain(|t| t.username != username);
        if self.technicians.len() == before {
            return Err(AccountError::NotFound(username.into()));
        }
        Ok(())
    }

    pub fn set_password(
        &mut self,
        username: &str,
        password: &str,
        now_ms: u64,
    ) -> Result<(), AccountError> {
        if password.chars().count() < MIN_PASSWORD {
            return Err(AccountError::WeakPassword);
        }
        let t = self
            .technicians
            .iter_mut()
            .find(|t| t.username == username)
            .ok_or_else(|| AccountError::NotFound(username.into()))?;
        t.password_hash = hash_password(password);
        t.changed_ms = now_ms;
        Ok(())
    }
}

/// The accounts file of a data dir.
#[derive(Clone, Debug)]
pub struct AccountsFile {
    dir: PathBuf,
}

impl AccountsFile {
    pub fn in_dir(data_dir: &Path) -> AccountsFile {
        AccountsFile {
            dir: data_dir.to_path_buf(),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// The accounts; none when the file does not exist yet.
    pub fn load(&self) -> Result<Accounts, AccountError> {
        let path = self.path();
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Accounts::default()),
            Err(e) => return Err(io(&path)(e)),
        };
        serde_json::from_slice(&text).map_err(|e| AccountError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })
    }

    /// Loads, lets `change` change, and writes back atomically, holding the
    /// lock file throughout.
    pub fn update<T>(
        &self,
        change: impl FnOnce(&mut Accounts) -> Result<T, AccountError>,
    ) -> Result<T, AccountError> {
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let _lock = LockFile::take(&self.dir.join(format!("{FILE}.lock")))?;
        let mut accounts = self.load()?;
        let out = change(&mut accounts)?;
        self.write(&accounts)?;
        Ok(out)
    }

    fn write(&self, accounts: &Accounts) -> Result<(), AccountError> {
        let path = self.path();
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        let body = serde_json::to_vec_pretty(accounts).expect("accounts serialize");
        {
            let mut f = private_file(&tmp, true).map_err(io(&tmp))?;
            f.write_all(&body).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        Ok(())
    }
}

/// Opens a file readable by its owner only (0600 on Unix).
fn private_file(path: &Path, truncate: bool) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true);
    if truncate {
        o.truncate(true);
    } else {
        o.append(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}

/// `path`, made with O_EXCL; removed when dropped.
struct LockFile(PathBuf);

impl LockFile {
    fn take(path: &Path) -> Result<LockFile, AccountError> {
        for _ in 0..50 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
            {
                Ok(mut f) => {
                    let _ = writeln!(f, "{}", std::process::id());
                    return Ok(LockFile(path.to_path_buf()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let stale = std::fs::metadata(path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > STALE_LOCK);
                    if stale {
                        tracing::warn!(path = %path.display(), "taking over a stale technician accounts lock");
                        let _ = std::fs::remove_file(path);
                        continue;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(io(path)(e)),
            }
        }
        Err(AccountError::Busy(path.to_path_buf()))
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One line of `technician-audit.log`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditLine {
    pub at_ms: u64,
    /// The technician, `cli` for a change made on the command line, or
    /// `anonymous` before a login.
    pub who: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    /// The client's address (empty for the command line).
    pub remote: String,
}

/// Appends `line` to the audit log of `data_dir` (O_APPEND: whole lines from
/// several processes do not interleave). A failure is logged, not fatal:
/// the tracing log has the same facts.
pub fn audit(data_dir: &Path, line: &AuditLine) {
    let path = data_dir.join(AUDIT_FILE);
    let mut text = serde_json::to_string(line).expect("audit lines serialize");
    text.push('\n');
    let result = std::fs::create_dir_all(data_dir)
        .and_then(|_| private_file(&path, false))
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|_| f.sync_data()));
    if let Err(e) = result {
        tracing::error!(path = %path.display(), error = %e, "cannot append to the technician audit log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_kept_only_as_an_argon2id_hash() {
        let dir = tempfile::tempdir().unwrap();
        let file = AccountsFile::in_dir(dir.path());
        file.update(|a| a.add("kari", "correct horse battery", 1))
            .unwrap();
        let text = std::fs::read_to_string(file.path()).unwrap();
        assert!(!text.contains("correct horse"), "{text}");
        let a = file.load().unwrap();
        let t = a.get("kari").unwrap();
        assert!(t.password_hash.starts_with("$argon2id$"), "{t:?}");
        assert!(verify_password(&t.password_hash, "correct horse battery"));
        assert!(!verify_password(&t.password_hash, "correct horse batterY"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(file.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        }
    }

    #[test]
    fn bad_usernames_short_passwords_and_duplicates_are_refused() {
        let mut a = Accounts::default();
        assert!(matches!(
            a.add("Kari Nordmann", "long enough pw", 1),
            Err(AccountError::BadUsername)
        ));
        assert!(matches!(
            a.add("kari", "short", 1),
            Err(AccountError::WeakPassword)
        ));
        a.add("kari", "long enough pw", 1).unwrap();
        assert!(matches!(
            a.add("kari", "long enough pw", 1),
            Err(AccountError::Exists(_))
        ));
        assert!(matches!(a.remove("ola"), Err(AccountError::NotFound(_))));
        assert!(matches!(
            a.set_password("ola", "long enough pw", 2),
            Err(AccountError::NotFound(_))
        ));
    }

    #[test]
    fn passwd_changes_the_hash_and_remove_forgets_the_technician() {
        let dir = tempfile::tempdir().unwrap();
        let file = AccountsFile::in_dir(dir.path());
        file.update(|a| a.add("kari", "first password", 1)).unwrap();
        file.update(|a| a.set_password("kari", "second password", 2))
            .unwrap();
        let a = file.load().unwrap();
        let t = a.get("kari").unwrap();
        assert!(verify_password(&t.password_hash, "second password"));
        assert!(!verify_password(&t.password_hash, "first password"));
        assert_eq!(t.changed_ms, 2);
        file.update(|a| a.remove("kari")).unwrap();
        assert!(file.load().unwrap().get("kari").is_none());
        assert!(!dir.path().join("technicians.json.lock").exists());
    }

    #[test]
    fn a_damaged_file_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        let err = AccountsFile::in_dir(dir.path())
            .load()
            .unwrap_err()
            .to_string();
        assert!(err.contains("technicians.json"), "{err}");
        assert!(err.contains("damaged"), "{err}");
    }

    #[test]
    fn a_held_lock_makes_a_second_writer_wait_then_say_busy() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("technicians.json.lock");
        std::fs::write(&lock, b"1").unwrap();
        let err = AccountsFile::in_dir(dir.path())
            .update(|a| a.add("kari", "long enough pw", 1))
            .unwrap_err();
        assert!(matches!(err, AccountError::Busy(_)), "{err}");
        assert!(AccountsFile::in_dir(dir.path())
            .load()
            .unwrap()
            .technicians
            .is_empty());
    }
}
