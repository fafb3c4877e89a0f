//! Decommission: when the service in a home ends, the gateway delivers what
//! it still holds, has the backend take it off the service (its certificate
//! revoked, its supervision ended), then wipes itself and stops.
//!
//! 1. **Delivering**: the gateway keeps running (an alarm pressed now still
//!    goes up) until its journal holds nothing the backend has not
//!    receipted, or the time given runs out (then it stops, wiping nothing).
//! 2. **Revoking**: it sends `trygg/v1/gw/{id}/decommission` and waits for
//!    the backend's `decommission-result`.
//! 3. **Wiping**: it shuts down, erases its data key (so whatever is left
//!    of the journal on the card can never be read), removes everything in
//!    its data directory and the key-encryption key file, and leaves only a
//!    `DECOMMISSIONED` note there, so that it will not start again by
//!    mistake.
//!
//! With `force`, steps 1 and 2 are skipped: for a gateway whose backend is
//! out of reach for good; what it held is lost, and the caller is told how
//! much first.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

/// The note a decommissioned gateway leaves in its data directory.
pub const MARKER: &str = "DECOMMISSIONED";

/// Where a decommission is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "phase")]
pub enum Phase {
    /// Not asked for.
    Idle,
    /// Waiting for the journal to be delivered.
    Delivering,
    /// Waiting for the backend to revoke this gateway.
    Revoking,
    /// Shutting down and wiping.
    Wiping,
    /// It stopped before wiping: nothing was wiped.
    Failed { reason: String },
}

/// The decommission's state, shared by the local API and the flow.
#[derive(Debug)]
pub struct Decommission {
    phase: Mutex<Phase>,
    /// Set once the flow has decided to wipe; the service wipes after its
    /// shutdown.
    wipe: std::sync::atomic::AtomicBool,
    /// Ends the service (the flow's way to stop it).
    pub stop: tokio_util::sync::CancellationToken,
}

impl Default for Decommission {
    fn default() -> Self {
        Decommission {
            phase: Mutex::new(Phase::Idle),
            wipe: false.into(),
            stop: tokio_util::sync::CancellationToken::new(),
        }
    }
}

impl Decommission {
    pub fn phase(&self) -> Phase {
        self.phase.lock().map(|p| p.clone()).unwrap_or(Phase::Idle)
    }

    pub fn set(&self, phase: Phase) {
        if let Ok(mut p) = self.phase.lock() {
            *p = phase;
        }
    }

    /// Starts one, unless one is under way (then `false`).
    pub fn begin(&self) -> bool {
        let Ok(mut p) = self.phase.lock() else {
            return false;
        };
        match *p {
            Phase::Idle | Phase::Failed { .. } => {
                *p = Phase::Delivering;
                true
            }
            _ => false,
        }
    }

    /// Wipe at shutdown, and shut down now.
    pub fn wipe_and_stop(&self) {
        self.set(Phase::Wiping);
        self.wipe.store(true, std::sync::atomic::Ordering::SeqCst);
        self.stop.cancel();
    }

    /// Stop without wiping.
    pub fn fail(&self, reason: String) {
        tracing::error!(reason = %reason, "decommission stopped: nothing was wiped; the gateway goes on serving");
        self.set(Phase::Failed { reason });
    }

    pub fn wipe_requested(&self) -> bool {
        self.wipe.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// What a decommission may wait for.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub deliver_within: Duration,
    pub revoke_within: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum WipeError {
    #[error(
        "{0} does not look like a gateway's data directory (no journal, no key): refusing to wipe it"
    )]
    NotADataDir(PathBuf),
    #[error("wiping {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Wipes the gateway: the data key first (crypto-erase), then every file
/// in `data_dir`, then the KEK file if given; leaves the marker. Returns
/// what it removed.
pub fn wipe(
    data_dir: &Path,
    journal: &Path,
    data_key: &Path,
    kek_file: Option<&Path>,
    gateway_id: &str,
) -> Result<Vec<PathBuf>, WipeError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WipeError::Io { path, source }
    };
    if !journal.exists() && !data_key.exists() {
        return Err(WipeError::NotADataDir(data_dir.to_path_buf()));
    }
    let mut removed = Vec::new();
    if crate::seal::erase_key_file(data_key).map_err(io(data_key))? {
        removed.push(data_key.to_path_buf());
    }
    for entry in std::fs::read_dir(data_dir).map_err(io(data_dir))? {
        let path = entry.map_err(io(data_dir))?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).map_err(io(&path))?;
        } else {
            std::fs::remove_file(&path).map_err(io(&path))?;
        }
        removed.push(path);
    }
    if let Some(kek) = kek_file {
        if crate::seal::erase_key_file(kek).map_err(io(kek))? {
            removed.push(kek.to_path_buf());
        }
    }
    let marker = data_dir.join(MARKER);
    std::fs::write(
        &marker,
        format!(
            "gateway {gateway_id} was decommissioned at Unix ms {}: its journal, keys and \
             settings were wiped.\nTo use this device again, remove this file, make a new \
             config and enroll it anew (docs/operations.md).\n",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0)
        ),
    )
    .map_err(io(&marker))?;
    if let Ok(d) = std::fs::File::open(data_dir) {
        let _ = d.sync_all();
    }
    Ok(removed)
}

/// The marker, if this data directory belongs to a decommissioned gateway.
pub fn marker_in(data_dir: &Path) -> Option<PathBuf> {
    let m = data_dir.join(MARKER);
    m.exists().then_some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wipe_erases_the_key_and_everything_else_and_leaves_the_marker() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("identity")).unwrap();
        let journal = data.join("gateway.redb");
        let key = data.join("journal.key");
        let kek = dir.path().join("kek.hex");
        for f in [&journal, &key, &kek, &data.join("identity/key.pem")] {
            std::fs::write(f, b"secret").unwrap();
        }
        let removed = wipe(&data, &journal, &key, Some(&kek), "gw-1").unwrap();
        assert_eq!(removed[0], key, "the data key goes first");
        assert!(!kek.exists() && !journal.exists() && !data.join("identity").exists());
        let left: Vec<_> = std::fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from(MARKER)]);
        assert!(marker_in(&data).is_some());
    }

    #[test]
    fn wipe_refuses_a_directory_that_is_not_a_gateways() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("precious.txt"), b"x").unwrap();
        let e = wipe(
            dir.path(),
            &dir.path().join("gateway.redb"),
            &dir.path().join("journal.key"),
            None,
            "gw-1",
        )
        .unwrap_err();
        assert!(matches!(e, WipeError::NotADataDir(_)));
        assert!(dir.path().join("precious.txt").exists());
    }

    #[test]
    fn only_one_decommission_at_a_time_and_a_failed_one_may_start_again() {
        let d = Decommission::default();
        assert!(d.begin());
        assert!(!d.begin());
        d.fail("backend out of reach".into());
        assert!(d.begin());
        d.wipe_and_stop();
        assert!(d.wipe_requested() && d.stop.is_cancelled());
        assert_eq!(d.phase(), Phase::Wiping);
    }
}
