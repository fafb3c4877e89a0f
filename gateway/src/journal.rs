//! The gateway's journal: every accepted device event, durable, until the
//! backend's receipt covers it.
//!
//! # On disk (redb, one file `gateway.redb`)
//!
//! | table            | key                   | value                          |
//! |------------------|-----------------------|--------------------------------|
//! | `lane_alarm`     | lane seq (u64)        | uplink `Record` as JSON        |
//! | `lane_care`      | lane seq              | same                           |
//! | `lane_telemetry` | lane seq              | same                           |
//! | `lane_next`      | lane index (u8)       | next lane seq to assign        |
//! | `device_last`    | device id             | highest device seq committed   |
//! | `device_runs`    | (device id, first)    | last: committed seqs as runs   |
//! | `dead_letters`   | id (u64)              | `DeadLetter` as JSON           |
//! | `silent_devices` | device id             | when reported silent (Unix ms) |
//! | `devices`        | device id             | register entry (`config::Device`) as JSON |
//! | `pending_devices`| device id             | join request (`register::PendingDevice`) as JSON |
//!
//! # What is durable when
//!
//! [`Journal::apply`] writes one group (events, dead letters and receipted
//! deletions) in ONE write transaction committed with
//! `Durability::Immediate` (fsync). Only after it returns may the caller
//! acknowledge anything to a device or a broker. A crash before the commit
//! loses nothing that was acknowledged: the broker redelivers and devices
//! re-send. A crash after it and before the acknowledgements makes devices
//! re-send events that are already committed; `device_runs` recognises
//! them and they are receipted as duplicates, never journaled twice.
//!
//! The device register (`devices`, see [`crate::register`]) changes one
//! change per durable transaction ([`Journal::write_devices`]), apart from
//! the event groups; the `registered` counter says it was seeded from the
//! config once, so a device removed is not put back by the next start.
//!
//! Lane sequence numbers are assigned at commit, start at 1 and never
//! repeat: `lane_next` is written in the same transaction as the records.
//! Receipted records are deleted by exact range, never by "everything
//! below", so a record the backend has not confirmed cannot be deleted.
//!
//! A torn write is redb's to repair: it keeps the last committed
//! transaction and discards a partial one on open. A file redb cannot open
//! at all (cut short, grown with junk, its header overwritten) is set aside
//! under a new name by [`Journal::open_or_set_aside`] and a fresh journal is
//! started, so the gateway serves at once: a gateway that will not start
//! loses every alarm to come. What the damaged file held stays on disk for
//! a person to recover; nothing in it is sent.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    TableHandle,
};
use serde::{Deserialize, Serialize};
use trygg_protocol::{DeviceEvent, Lane};
use trygg_uplink::{Record, SeqRange};

use crate::seal::Sealer;

const LANE_TABLES: [TableDefinition<u64, &[u8]>; 3] = [
    TableDefinition::new("lane_alarm"),
    TableDefinition::new("lane_care"),
    TableDefinition::new("lane_telemetry"),
];
const LANE_NEXT: TableDefinition<u8, u64> = TableDefinition::new("lane_next");
const DEVICE_LAST: TableDefinition<&str, u64> = TableDefinition::new("device_last");
/// Before `device_runs`: one row per remembered seq. Converted at open.
const DEVICE_RECENT: TableDefinition<(&str, u64), ()> = TableDefinition::new("device_recent");
/// The seqs committed per device, as runs `first..=last` that neither
/// overlap nor touch: a device counting up with every event needs one row,
/// and a hole (an event not taken yet: deferred while the disk was full, or
/// still in the device's outbox behind its newer alarms) costs one more.
const DEVICE_RUNS: TableDefinition<(&str, u64), u64> = TableDefinition::new("device_runs");
const DEAD_LETTERS: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");
/// Named counters kept with the records: bytes per lane, the gateway's own
/// event counter, telemetry dropped and not yet reported.
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
/// Devices the gateway has reported silent, with when (Unix ms).
const SILENT: TableDefinition<&str, u64> = TableDefinition::new("silent_devices");
/// The device register: id to `config::Device` as JSON.
const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("devices");
/// Unknown devices asking to join (first contact): id to
/// `register::PendingDevice` as JSON.
const PENDING: TableDefinition<&str, &[u8]> = TableDefinition::new("pending_devices");
/// Named byte strings: `key_check`, a value sealed with the data key, so a
/// journal opened with another key is known at once.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const KEY_CHECK: &str = "key_check";
/// In `meta`: the last settings version pushed by the backend, sealed JSON
/// ([`RemoteConfigState`]).
const REMOTE_CONFIG: &str = "remote_config";

/// The settings the backend pushed: the last version applied, and the
/// answer to the last version received (applied or refused).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RemoteConfigState {
    /// 0 while none was applied.
    pub applied_version: u64,
    /// Those of `applied_version`.
    pub settings: trygg_uplink::remote_config::GatewaySettings,
    pub last: trygg_uplink::remote_config::ConfigResult,
    pub at_ms: u64,
}
/// In `counters`: 1 once the register was seeded from the config.
const REGISTER_SEEDED: &str = "register_seeded";

const BYTES_KEYS: [&str; 3] = ["bytes_alarm", "bytes_care", "bytes_telemetry"];
const SYSTEM_SEQ: &str = "system_seq";
const DROPPED_UNREPORTED: &str = "telemetry_dropped_unreported";
/// The page cache redb may keep in memory. The journal is read mostly at
/// its head (the oldest records go up first), so a small cache serves it;
/// redb's default (1 GiB) would let a long outage take the Pi's memory.
const CACHE_BYTES: usize = 16 * 1024 * 1024;
/// The file that holds disk space back for alarms; see [`Journal::release_reserve`].
pub const RESERVE_FILE: &str = "alarm-reserve.bin";

/// The span of sequence numbers per device, below the highest committed,
/// that is remembered to recognise re-sends. An event may arrive out of
/// order within it (alarms overtake telemetry; telemetry deferred on a full
/// disk comes later); one older than that is refused as a sequence gone
/// backwards, because a re-send can no longer be told from a counter that
/// went back. Committed seqs are kept as runs, so the window is wide.
pub const RECENT_WINDOW: u64 = 1 << 20;
/// Dead letters kept; the oldest go first.
pub const MAX_DEAD_LETTERS: u64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The storage failed: disk full, I/O error, corrupt file. Worth a retry
    /// after the cause is fixed; nothing in the group was acknowledged.
    #[error("journal storage error: {0}")]
    Storage(#[from] redb::Error),
    /// The journal is being reopened after a storage error; try again.
    #[error("journal is being reopened after a storage error")]
    Reopening,
    #[error("journal record is not valid JSON: {0}")]
    Record(#[from] serde_json::Error),
    #[error("journal value cannot be opened: {0}")]
    Sealed(#[from] crate::seal::SealError),
    /// The journal was sealed with another data key: it cannot be read.
    #[error("the journal was encrypted with another key and cannot be read")]
    KeyMismatch,
}

impl JournalError {
    /// The disk (not the configured limit) is full.
    pub fn is_disk_full(&self) -> bool {
        match self {
            JournalError::Storage(redb::Error::Io(io)) => {
                io.kind() == std::io::ErrorKind::StorageFull || io.raw_os_error() == Some(28)
            }
            JournalError::Storage(e) => {
                let t = e.to_string();
                t.contains("No space left") || t.contains("StorageFull")
            }
            _ => false,
        }
    }
}

fn st<E: Into<redb::Error>>(e: E) -> JournalError {
    JournalError::Storage(e.into())
}

/// An event that passed validation and names a known device.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub device: String,
    pub event: DeviceEvent,
    pub resident: Option<String>,
    pub room: Option<String>,
}

/// A payload refused at ingest, kept for inspection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    #[serde(default)]
    pub id: u64,
    pub at_ms: u64,
    pub topic: String,
    pub reason_code: String,
    pub reason: String,
    /// The payload as text (lossy), at most 4 KiB.
    pub payload: String,
    pub payload_len: usize,
}

/// An event the gateway raises itself (a device gone silent, telemetry
/// dropped). It travels as the gateway's own device: `device` is the
/// gateway id and `device_seq` the gateway's own counter, kept in the
/// journal; `subject` names the device it is about.
#[derive(Clone, Debug, PartialEq)]
pub struct SystemEvent {
    pub kind: trygg_protocol::EventKind,
    pub subject: Option<String>,
    pub value: Option<f32>,
    pub resident: Option<String>,
    pub room: Option<String>,
}

/// What to do with new telemetry when the journal's limit is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Drop the oldest telemetry to make room (the default: the newest
    /// readings are the ones a carer wants).
    #[default]
    DropOldest,
    /// Refuse the new telemetry (a `rejected` receipt: the device drops it).
    Refuse,
}

/// Limits on what the journal keeps. Alarms are never evicted nor refused;
/// medication and technical events are never evicted; only telemetry is
/// dropped, and every drop is counted and reported upstream.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// The gateway's id: the `device` of the events it raises itself.
    pub source_id: String,
    /// The most record bytes kept (all lanes). `None`: no limit.
    pub max_bytes: Option<u64>,
    /// Of `max_bytes`, what only alarms may use.
    pub alarm_reserve_bytes: u64,
    pub when_full: WhenFull,
    /// Telemetry older than this (since the gateway committed it) is dropped.
    pub telemetry_max_age_ms: Option<u64>,
    /// Drops are reported upstream at most this often, as one
    /// `telemetry_dropped` event counting them.
    pub drop_report_every_ms: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            source_id: "gateway".into(),
            max_bytes: None,
            alarm_reserve_bytes: 0,
            when_full: WhenFull::DropOldest,
            telemetry_max_age_ms: None,
            drop_report_every_ms: 60_000,
        }
    }
}

/// One group commit's worth of work.
#[derive(Debug, Default)]
pub struct Group {
    pub events: Vec<NewEvent>,
    pub system: Vec<SystemEvent>,
    pub dead_letters: Vec<DeadLetter>,
    pub receipted: Vec<SeqRange>,
    /// Look for telemetry past its maximum age (a timer sets this).
    pub sweep: bool,
}

impl Group {
    /// Nothing to write: heartbeats alone must not cost an fsync.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.system.is_empty()
            && self.dead_letters.is_empty()
            && self.receipted.is_empty()
            && !self.sweep
    }
}

/// What became of each event of a group, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Committed {
        lane: Lane,
        seq: u64,
    },
    /// Committed before: a re-send.
    Duplicate,
    /// The device's sequence went backwards to a number never seen.
    Backwards {
        last: u64,
    },
    /// Telemetry refused because the journal is at its limit
    /// ([`WhenFull::Refuse`]); counted as dropped.
    Refused,
    /// Telemetry not taken while the disk is full: no receipt, so the
    /// device keeps it and sends it again later.
    Deferred,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupResult {
    pub outcomes: Vec<Outcome>,
    /// Records deleted because the backend receipted them.
    pub deleted: u64,
    /// Records of the gateway's own events committed.
    pub system: u64,
    /// Where each of the group's own events (`Group::system`, in order)
    /// was committed: lane and lane seq.
    pub system_seqs: Vec<(Lane, u64)>,
    /// Telemetry dropped by this group, by reason: journal limit, age.
    pub dropped_limit: u64,
    pub dropped_age: u64,
}

impl GroupResult {
    /// Whether the group added anything for the uplink to send.
    pub fn added_records(&self) -> bool {
        self.system > 0
            || self
                .outcomes
                .iter()
                .any(|o| matches!(o, Outcome::Committed { .. }))
    }
}

/// The open database, shared with readers. Empty while the journal is
/// being reopened after a storage error.
type Slot = Arc<RwLock<Option<Arc<Database>>>>;

fn db_of(slot: &Slot) -> Result<Arc<Database>, JournalError> {
    slot.read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .ok_or(JournalError::Reopening)
}

pub struct Journal {
    slot: Slot,
    path: PathBuf,
    next: [u64; 3],
    commits: u64,
    policy: Policy,
    last_drop_report_ms: u64,
    disk_full: bool,
    squeeze: bool,
    reserve_bytes: u64,
    sealer: Arc<Sealer>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Journal {
    /// Opens (or creates) the journal, repairing it if the last run was cut,
    /// with values kept plain: for tests and tools ([`Journal::open_sealed`]
    /// is the service's).
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        Self::open_sealed(path, Arc::new(Sealer::none()))
    }

    /// Opens (or creates) the journal, its values sealed by `sealer`.
    /// [`JournalError::KeyMismatch`] if it was sealed with another key.
    pub fn open_sealed(path: &Path, sealer: Arc<Sealer>) -> Result<Journal, JournalError> {
        let (db, next) = Self::open_db(path, &sealer)?;
        Ok(Journal {
            sealer,
            slot: Arc::new(RwLock::new(Some(Arc::new(db)))),
            path: path.to_path_buf(),
            next,
            commits: 0,
            policy: Policy::default(),
            last_drop_report_ms: 0,
            disk_full: false,
            squeeze: false,
            reserve_bytes: 0,
        })
    }

    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    fn reserve_path(&self) -> PathBuf {
        self.path.with_file_name(RESERVE_FILE)
    }

    /// Holds `bytes` of disk back for alarms: a file of zeros beside the
    /// journal, written out (not sparse) and synced. When the disk fills,
    /// [`Journal::release_reserve`] deletes it so that alarms still commit.
    /// Returns whether the reserve is in place.
    pub fn ensure_reserve(&mut self, bytes: u64) -> bool {
        use std::io::Write;
        self.reserve_bytes = bytes;
        let path = self.reserve_path();
        if std::fs::metadata(&path).is_ok_and(|m| m.len() >= bytes) {
            self.disk_full = false;
            return true;
        }
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&path)?;
            let zeros = vec![0u8; 64 * 1024];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(zeros.len() as u64) as usize;
                f.write_all(&zeros[..n])?;
                left -= n as u64;
            }
            f.sync_all()
        };
        match write() {
            Ok(()) => {
                self.disk_full = false;
                true
            }
            Err(_) => {
                let _ = std::fs::remove_file(&path);
                false
            }
        }
    }

    /// Deletes the reserve file, giving its space to the journal. Returns
    /// whether there was one. From now on, until [`Journal::ensure_reserve`]
    /// succeeds again, telemetry is deferred (see [`Outcome::Deferred`]).
    pub fn release_reserve(&mut self) -> bool {
        self.disk_full = true;
        std::fs::remove_file(self.reserve_path()).is_ok()
    }

    /// The disk is full even without the reserve: the next commit first
    /// drops the oldest telemetry (up to 1024 records) to free pages for
    /// what matters more.
    pub fn squeeze(&mut self) {
        self.squeeze = true;
    }

    /// Tries to take the disk reserve back (after a full disk).
    pub fn retake_reserve(&mut self) -> bool {
        self.ensure_reserve(self.reserve_bytes)
    }

    /// Whether the disk was found full and has not had room since.
    pub fn disk_full(&self) -> bool {
        self.disk_full
    }

    /// Opens the journal; if the file is damaged beyond what redb repairs,
    /// renames it to `<name>.damaged-<unix ms>` and starts a fresh one.
    /// Returns what was set aside, if anything. Errors that are not about
    /// the file's contents (permissions, a full disk, another process
    /// holding it) are returned as they are: a fresh file would not help.
    pub fn open_or_set_aside(path: &Path) -> Result<(Journal, Option<SetAside>), JournalError> {
        Self::open_or_set_aside_sealed(path, Arc::new(Sealer::none()))
    }

    /// [`Journal::open_or_set_aside`] with values sealed by `sealer`.
    pub fn open_or_set_aside_sealed(
        path: &Path,
        sealer: Arc<Sealer>,
    ) -> Result<(Journal, Option<SetAside>), JournalError> {
        match Self::open_sealed(path, sealer.clone()) {
            Ok(j) => Ok((j, None)),
            Err(JournalError::Storage(e)) if is_damage(&e) => {
                let aside = path.with_extension(format!("redb.damaged-{}", now_ms()));
                std::fs::rename(path, &aside).map_err(|e| st(redb::StorageError::Io(e)))?;
                let journal = Self::open_sealed(path, sealer)?;
                Ok((
                    journal,
                    Some(SetAside {
                        path: aside,
                        reason: e.to_string(),
                    }),
                ))
            }
            Err(e) => Err(e),
        }
    }

    /// Closes and opens the file again. After an I/O error (a full disk)
    /// redb refuses every write until the database is reopened; this is how
    /// the gateway recovers once space is freed, without a restart. Readers
    /// see [`JournalError::Reopening`] meanwhile. Fails while a reader still
    /// holds the old handle; the caller tries again.
    pub fn reopen(&mut self) -> Result<(), JournalError> {
        let old = self.slot.write().unwrap_or_else(|e| e.into_inner()).take();
        drop(old);
        let (db, next) = Self::open_db(&self.path, &self.sealer)?;
        self.next = next;
        *self.slot.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(db));
        Ok(())
    }

    fn open_db(path: &Path, sealer: &Sealer) -> Result<(Database, [u64; 3]), JournalError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| st(redb::StorageError::Io(e)))?;
        }
        let repaired = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .set_repair_callback({
                let repaired = repaired.clone();
                move |s| {
                    repaired.store(true, std::sync::atomic::Ordering::Relaxed);
                    let p = s.progress();
                    tracing::warn!(progress = p, "repairing journal after an unclean shutdown");
                }
            })
            .create(path)
            .map_err(st)?;
        // Every page's checksum, once per start: an SD card can rot a page
        // that redb would otherwise meet (and panic on) at the next write.
        // A repair (after a power cut or a kill) has just walked every tree
        // and verified its checksums, so the check is only needed after a
        // clean stop; skipping it after a repair halves the restart time
        // with a large backlog (docs/benchmarks.md, recovery).
        let repaired = repaired.load(std::sync::atomic::Ordering::Relaxed);
        if !repaired && !db.check_integrity().map_err(st)? {
            tracing::warn!(path = %path.display(), "the journal failed its integrity check and was repaired");
        }
        let txn = db.begin_write().map_err(st)?;
        let mut next = [1u64; 3];
        {
            for t in LANE_TABLES {
                txn.open_table(t).map_err(st)?;
            }
            txn.open_table(DEVICE_LAST).map_err(st)?;
            // Seqs remembered one per row (journals before runs) become runs.
            let mut runs = txn.open_table(DEVICE_RUNS).map_err(st)?;
            {
                let mut old = txn.open_table(DEVICE_RECENT).map_err(st)?;
                while let Some((k, _)) = old.pop_first().map_err(st)? {
                    let (device, seq) = k.value();
                    let device = device.to_string();
                    drop(k);
                    if !run_contains(&runs, &device, seq)? {
                        run_insert(&mut runs, &device, seq)?;
                    }
                }
            }
            txn.open_table(DEAD_LETTERS).map_err(st)?;
            txn.open_table(SILENT).map_err(st)?;
            txn.open_table(DEVICES).map_err(st)?;
            txn.open_table(PENDING).map_err(st)?;
            // The key check: written once with the first key; a journal
            // sealed with another key is refused before anything is read.
            {
                let mut meta = txn.open_table(META).map_err(st)?;
                let check = meta.get(KEY_CHECK).map_err(st)?.map(|v| v.value().to_vec());
                let plain = |v: &[u8]| v.first() == Some(&b'{');
                match check {
                    // Sealed: only its own key opens it.
                    Some(stored) if !plain(&stored) => {
                        if !sealer.seals() || sealer.open(META.name(), &stored).is_err() {
                            return Err(JournalError::KeyMismatch);
                        }
                    }
                    // Plain (kept without a key so far): sealed from now on.
                    Some(_) if !sealer.seals() => {}
                    _ => {
                        let check = sealer.seal(META.name(), b"{\"trygg\":1}");
                        meta.insert(KEY_CHECK, check.as_slice()).map_err(st)?;
                        // Register entries and dead letters kept plain by a
                        // journal from before encryption at rest: sealed now.
                        if sealer.seals() {
                            reseal_plain(&txn, sealer)?;
                        }
                    }
                }
            }
            // Bytes per lane are kept with the records; a journal written
            // before they were is counted once.
            let mut counters = txn.open_table(COUNTERS).map_err(st)?;
            for lane in Lane::ALL {
                if counters
                    .get(BYTES_KEYS[lane.index()])
                    .map_err(st)?
                    .is_none()
                {
                    let table = txn.open_table(LANE_TABLES[lane.index()]).map_err(st)?;
                    let mut total = 0u64;
                    for item in table.iter().map_err(st)? {
                        total += item.map_err(st)?.1.value().len() as u64;
                    }
                    counters
                        .insert(BYTES_KEYS[lane.index()], total)
                        .map_err(st)?;
                }
            }
            let t = txn.open_table(LANE_NEXT).map_err(st)?;
            for lane in Lane::ALL {
                if let Some(v) = t.get(lane as u8).map_err(st)? {
                    next[lane.index()] = v.value();
                }
            }
        }
        txn.commit().map_err(st)?;
        Ok((db, next))
    }

    /// Drops not yet reported upstream whose report is due: the report
    /// rides on the next commit, so with no traffic housekeeping asks for
    /// one (a `sweep`) to send it.
    pub fn drop_report_due(&self) -> Result<bool, JournalError> {
        if now_ms().saturating_sub(self.last_drop_report_ms) < self.policy.drop_report_every_ms {
            return Ok(false);
        }
        let db = db_of(&self.slot)?;
        let txn = db.begin_read().map_err(st)?;
        let counters = match txn.open_table(COUNTERS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(false),
            Err(e) => return Err(st(e)),
        };
        let unreported = counters
            .get(DROPPED_UNREPORTED)
            .map_err(st)?
            .map(|v| v.value())
            .unwrap_or(0);
        Ok(unreported > 0)
    }

    /// Durable commits made since this journal was opened.
    pub fn commits(&self) -> u64 {
        self.commits
    }

    /// A handle for reading pending records from another thread.
    pub fn reader(&self) -> JournalReader {
        JournalReader {
            slot: self.slot.clone(),
            sealer: self.sealer.clone(),
        }
    }

    /// The device register as kept; at the first start (a journal never
    /// seeded) `seed` is written into it first, in one durable
    /// transaction, and returned. Afterwards the table wins over `seed`.
    pub fn devices_or_seed(
        &mut self,
        seed: &[crate::config::Device],
    ) -> Result<(Vec<crate::config::Device>, bool), JournalError> {
        let db = db_of(&self.slot)?;
        let seeded = {
            let txn = db.begin_read().map_err(st)?;
            let counters = txn.open_table(COUNTERS).map_err(st)?;
            counters
                .get(REGISTER_SEEDED)
                .map_err(st)?
                .is_some_and(|v| v.value() > 0)
        };
        if !seeded {
            let mut txn = db.begin_write().map_err(st)?;
            txn.set_durability(Durability::Immediate).map_err(st)?;
            {
                let mut devices = txn.open_table(DEVICES).map_err(st)?;
                for d in seed {
                    if devices.get(d.id.as_str()).map_err(st)?.is_none() {
                        let sealed = self.sealer.seal(DEVICES.name(), &serde_json::to_vec(d)?);
                        devices
                            .insert(d.id.as_str(), sealed.as_slice())
                            .map_err(st)?;
                    }
                }
                let mut counters = txn.open_table(COUNTERS).map_err(st)?;
                counters.insert(REGISTER_SEEDED, 1).map_err(st)?;
            }
            txn.commit().map_err(st)?;
        }
        Ok((self.reader().devices()?, !seeded))
    }

    /// Writes (`Some`) or removes (`None`) one join request, durably.
    pub fn write_pending(
        &mut self,
        id: &str,
        request: Option<&crate::register::PendingDevice>,
    ) -> Result<(), JournalError> {
        let db = db_of(&self.slot)?;
        let mut txn = db.begin_write().map_err(st)?;
        txn.set_durability(Durability::Immediate).map_err(st)?;
        {
            let mut pending = txn.open_table(PENDING).map_err(st)?;
            match request {
                Some(r) => {
                    pending
                        .insert(
                            id,
                            self.sealer
                                .seal(PENDING.name(), &serde_json::to_vec(r)?)
                                .as_slice(),
                        )
                        .map_err(st)?;
                }
                None => {
                    pending.remove(id).map_err(st)?;
                }
            }
        }
        txn.commit().map_err(st)?;
        self.commits += 1;
        Ok(())
    }

    /// Writes (`Some`) and removes (`None`) register entries in one
    /// durable transaction; a device removed is no longer kept as silent.
    pub fn write_devices(
        &mut self,
        writes: &[(String, Option<crate::config::Device>)],
    ) -> Result<(), JournalError> {
        let db = db_of(&self.slot)?;
        let mut txn = db.begin_write().map_err(st)?;
        txn.set_durability(Durability::Immediate).map_err(st)?;
        {
            let mut devices = txn.open_table(DEVICES).map_err(st)?;
            let mut silent = txn.open_table(SILENT).map_err(st)?;
            let mut pending = txn.open_table(PENDING).map_err(st)?;
            for (id, d) in writes {
                match d {
                    Some(d) => {
                        let sealed = self.sealer.seal(DEVICES.name(), &serde_json::to_vec(d)?);
                        devices.insert(id.as_str(), sealed.as_slice()).map_err(st)?;
                        // Paired: no longer asking to join.
                        pending.remove(id.as_str()).map_err(st)?;
                    }
                    None => {
                        devices.remove(id.as_str()).map_err(st)?;
                        silent.remove(id.as_str()).map_err(st)?;
                    }
                }
            }
        }
        txn.commit().map_err(st)?;
        self.commits += 1;
        Ok(())
    }

    /// Records a settings version from the backend, with the register
    /// entries it changes, in one durable transaction.
    pub fn write_remote_config(
        &mut self,
        state: &RemoteConfigState,
        writes: &[(String, crate::config::Device)],
    ) -> Result<(), JournalError> {
        let db = db_of(&self.slot)?;
        let mut txn = db.begin_write().map_err(st)?;
        txn.set_durability(Durability::Immediate).map_err(st)?;
        {
            let mut devices = txn.open_table(DEVICES).map_err(st)?;
            for (id, d) in writes {
                let sealed = self.sealer.seal(DEVICES.name(), &serde_json::to_vec(d)?);
                devices.insert(id.as_str(), sealed.as_slice()).map_err(st)?;
            }
            let mut meta = txn.open_table(META).map_err(st)?;
            let sealed = self.sealer.seal(META.name(), &serde_json::to_vec(state)?);
            meta.insert(REMOTE_CONFIG, sealed.as_slice()).map_err(st)?;
        }
        txn.commit().map_err(st)?;
        self.commits += 1;
        Ok(())
    }

    /// Commits one group in one durable transaction.
    pub fn apply(&mut self, group: &Group) -> Result<GroupResult, JournalError> {
        if group.is_empty() {
            return Ok(GroupResult::default());
        }
        let db = db_of(&self.slot)?;
        let mut txn = db.begin_write().map_err(st)?;
        txn.set_durability(Durability::Immediate).map_err(st)?;
        let now = now_ms();
        let mut next = self.next;
        let mut result = GroupResult::default();
        let mut refused: Vec<DeadLetter> = Vec::new();
        let mut drop_reported = false;
        {
            let mut lanes = [
                txn.open_table(LANE_TABLES[0]).map_err(st)?,
                txn.open_table(LANE_TABLES[1]).map_err(st)?,
                txn.open_table(LANE_TABLES[2]).map_err(st)?,
            ];
            let mut last = txn.open_table(DEVICE_LAST).map_err(st)?;
            let mut runs = txn.open_table(DEVICE_RUNS).map_err(st)?;
            let mut counters = txn.open_table(COUNTERS).map_err(st)?;
            let mut silent = txn.open_table(SILENT).map_err(st)?;
            let mut bytes = [0u64; 3];
            for lane in Lane::ALL {
                bytes[lane.index()] = counter(&counters, BYTES_KEYS[lane.index()])?;
            }
            let mut room = Room {
                policy: &self.policy,
                bytes,
                dropped_limit: 0,
            };

            // Receipted records leave first: they make room.
            for r in &group.receipted {
                let table = &mut lanes[r.lane.index()];
                let mut freed = 0u64;
                let mut n = 0u64;
                table
                    .retain_in(r.first..=r.last, |_, v| {
                        freed += v.len() as u64;
                        n += 1;
                        false
                    })
                    .map_err(st)?;
                room.bytes[r.lane.index()] -= freed.min(room.bytes[r.lane.index()]);
                result.deleted += n;
            }
            if group.sweep {
                if let Some(max_age) = self.policy.telemetry_max_age_ms {
                    let (n, freed) = drop_older_than(
                        &mut lanes[Lane::Telemetry.index()],
                        &self.sealer,
                        now.saturating_sub(max_age),
                    )?;
                    result.dropped_age += n;
                    room.bytes[Lane::Telemetry.index()] -= freed;
                }
            }

            for e in &group.events {
                let seq = e.event.seq;
                let prev = last.get(e.device.as_str()).map_err(st)?.map(|v| v.value());
                if run_contains(&runs, &e.device, seq)? {
                    result.outcomes.push(Outcome::Duplicate);
                    continue;
                }
                if let Some(prev) = prev {
                    // Within the window, an older seq is normal: a device sends
                    // alarms before its older telemetry. Beyond it, we can no
                    // longer tell a re-send from a counter that went back.
                    if seq.saturating_add(RECENT_WINDOW) <= prev {
                        result.outcomes.push(Outcome::Backwards { last: prev });
                        refused.push(refused_letter(
                            e,
                            now,
                            "sequence_backwards",
                            format!("sequence {seq} went backwards (last committed {prev})"),
                        ));
                        continue;
                    }
                }
                let lane = e.event.kind.lane();
                if lane == Lane::Telemetry && self.disk_full {
                    result.outcomes.push(Outcome::Deferred);
                    continue;
                }
                let record = Record {
                    lane,
                    seq: next[lane.index()],
                    device: e.device.clone(),
                    device_seq: seq,
                    kind: e.event.kind,
                    ts: e.event.ts,
                    committed_ms: now,
                    battery: e.event.battery,
                    value: e.event.value,
                    resident: e.resident.clone(),
                    room: e.room.clone(),
                    subject: None,
                };
                let json = self.sealer.seal(
                    LANE_TABLES[lane.index()].name(),
                    &serde_json::to_vec(&record)?,
                );
                if !room.make_room(lane, json.len() as u64, &mut lanes[Lane::Telemetry.index()])? {
                    result.outcomes.push(Outcome::Refused);
                    room.dropped_limit += 1;
                    refused.push(refused_letter(
                        e,
                        now,
                        "journal_full",
                        "the journal is at its size limit; telemetry is refused (journal.when_full = \"refuse\")".into(),
                    ));
                    continue;
                }
                put(
                    &mut lanes[lane.index()],
                    &mut next,
                    &mut room.bytes,
                    lane,
                    &json,
                )?;
                run_insert(&mut runs, &e.device, seq)?;
                // Only a new highest moves the window; an older arrival
                // must not lower it.
                if prev.is_none_or(|p| seq > p) {
                    last.insert(e.device.as_str(), seq).map_err(st)?;
                    // Forget runs wholly below the window, every 1024 seqs:
                    // what lingers is still a true memory.
                    if seq >= RECENT_WINDOW && seq % 1024 == 0 {
                        let cutoff = seq - RECENT_WINDOW;
                        runs.retain_in(
                            (e.device.as_str(), 0)..=(e.device.as_str(), cutoff),
                            |_, last| last >= cutoff,
                        )
                        .map_err(st)?;
                    }
                }
                result.outcomes.push(Outcome::Committed {
                    lane,
                    seq: record.seq,
                });
            }
            // The disk is full even without the reserve: the oldest
            // telemetry makes way for what is still taken.
            if self.squeeze {
                let (n, freed) = pop_oldest(&mut lanes[Lane::Telemetry.index()], 1024, u64::MAX)?;
                room.dropped_limit += n;
                room.bytes[Lane::Telemetry.index()] -=
                    freed.min(room.bytes[Lane::Telemetry.index()]);
            }
            result.dropped_limit = room.dropped_limit;

            // The gateway's own events, and the report of what was dropped.
            let mut system: Vec<SystemEvent> = group.system.clone();
            let stored = counter(&counters, DROPPED_UNREPORTED)?;
            let mut unreported = stored + result.dropped_limit + result.dropped_age;
            if unreported > 0
                && now.saturating_sub(self.last_drop_report_ms) >= self.policy.drop_report_every_ms
            {
                system.push(SystemEvent {
                    kind: trygg_protocol::EventKind::TelemetryDropped,
                    subject: None,
                    value: Some(unreported as f32),
                    resident: None,
                    room: None,
                });
                drop_reported = true;
                unreported = 0;
            }
            if unreported != stored {
                counters
                    .insert(DROPPED_UNREPORTED, unreported)
                    .map_err(st)?;
            }
            let mut system_seq = counter(&counters, SYSTEM_SEQ)?;
            for ev in &system {
                system_seq += 1;
                let lane = ev.kind.lane();
                let record = Record {
                    lane,
                    seq: next[lane.index()],
                    device: self.policy.source_id.clone(),
                    device_seq: system_seq,
                    kind: ev.kind,
                    ts: Some(now / 1000),
                    committed_ms: now,
                    battery: None,
                    value: ev.value,
                    resident: ev.resident.clone(),
                    room: ev.room.clone(),
                    subject: ev.subject.clone(),
                };
                let json = self.sealer.seal(
                    LANE_TABLES[lane.index()].name(),
                    &serde_json::to_vec(&record)?,
                );
                room.make_room(lane, json.len() as u64, &mut lanes[Lane::Telemetry.index()])?;
                result.system_seqs.push((lane, record.seq));
                put(
                    &mut lanes[lane.index()],
                    &mut next,
                    &mut room.bytes,
                    lane,
                    &json,
                )?;
                if let Some(subject) = &ev.subject {
                    match ev.kind {
                        trygg_protocol::EventKind::DeviceSilent => {
                            silent.insert(subject.as_str(), now).map_err(st)?;
                        }
                        trygg_protocol::EventKind::DeviceResumed => {
                            silent.remove(subject.as_str()).map_err(st)?;
                        }
                        _ => {}
                    }
                }
                result.system += 1;
            }
            if !system.is_empty() {
                counters.insert(SYSTEM_SEQ, system_seq).map_err(st)?;
            }
            // Room made for the gateway's own events is reported next time.
            let extra = room.dropped_limit - result.dropped_limit;
            if extra > 0 {
                counters
                    .insert(DROPPED_UNREPORTED, unreported + extra)
                    .map_err(st)?;
                result.dropped_limit = room.dropped_limit;
            }
            for lane in Lane::ALL {
                counters
                    .insert(BYTES_KEYS[lane.index()], room.bytes[lane.index()])
                    .map_err(st)?;
            }

            let mut next_table = txn.open_table(LANE_NEXT).map_err(st)?;
            for lane in Lane::ALL {
                if next[lane.index()] != self.next[lane.index()] {
                    next_table
                        .insert(lane as u8, next[lane.index()])
                        .map_err(st)?;
                }
            }
            if !group.dead_letters.is_empty() || !refused.is_empty() {
                let mut dl = txn.open_table(DEAD_LETTERS).map_err(st)?;
                let mut id = dl
                    .last()
                    .map_err(st)?
                    .map(|(k, _)| k.value() + 1)
                    .unwrap_or(1);
                for d in group.dead_letters.iter().chain(&refused) {
                    let mut d = d.clone();
                    d.id = id;
                    let sealed = self
                        .sealer
                        .seal(DEAD_LETTERS.name(), &serde_json::to_vec(&d)?);
                    dl.insert(id, sealed.as_slice()).map_err(st)?;
                    id += 1;
                }
                if id > MAX_DEAD_LETTERS + 1 {
                    dl.retain_in(..id - MAX_DEAD_LETTERS, |_, _| false)
                        .map_err(st)?;
                }
            }
        }
        txn.commit().map_err(st)?;
        self.commits += 1;
        self.next = next;
        if drop_reported {
            self.last_drop_report_ms = now;
        }
        self.squeeze = false;
        Ok(result)
    }
}

/// The journal's limit, applied record by record within one transaction.
struct Room<'p> {
    policy: &'p Policy,
    bytes: [u64; 3],
    dropped_limit: u64,
}

impl Room<'_> {
    /// Makes room for `len` bytes in `lane` by dropping the oldest
    /// telemetry where the policy allows. Returns false when the record
    /// must be refused: only telemetry ever is.
    fn make_room(
        &mut self,
        lane: Lane,
        len: u64,
        telemetry: &mut redb::Table<u64, &[u8]>,
    ) -> Result<bool, JournalError> {
        let Some(max) = self.policy.max_bytes else {
            return Ok(true);
        };
        let t = Lane::Telemetry.index();
        // Alarms may use the whole limit; everything else leaves the
        // reserve to them.
        let over = |b: &[u64; 3]| -> u64 {
            let (used, budget) = if lane == Lane::Alarm {
                (b.iter().sum::<u64>(), max)
            } else {
                (
                    b[Lane::Care.index()] + b[t],
                    max.saturating_sub(self.policy.alarm_reserve_bytes),
                )
            };
            (used + len).saturating_sub(budget)
        };
        let need = over(&self.bytes);
        if need == 0 {
            return Ok(true);
        }
        if lane == Lane::Telemetry && self.policy.when_full == WhenFull::Refuse {
            return Ok(false);
        }
        let (n, freed) = pop_oldest(telemetry, u64::MAX, need)?;
        self.dropped_limit += n;
        self.bytes[t] -= freed.min(self.bytes[t]);
        // Alarms, medication and technical events are kept even over the
        // limit (the disk's own reserve still stands behind them);
        // telemetry that still does not fit is the one dropped.
        Ok(lane != Lane::Telemetry || over(&self.bytes) == 0)
    }
}

/// Whether `seq` of `device` was committed (within the window).
fn run_contains(
    runs: &redb::Table<(&str, u64), u64>,
    device: &str,
    seq: u64,
) -> Result<bool, JournalError> {
    let mut before = runs.range((device, 0)..=(device, seq)).map_err(st)?;
    Ok(match before.next_back() {
        Some(item) => item.map_err(st)?.1.value() >= seq,
        None => false,
    })
}

/// Adds `seq` (not committed before) to `device`'s runs, joining the runs
/// it touches.
fn run_insert(
    runs: &mut redb::Table<(&str, u64), u64>,
    device: &str,
    seq: u64,
) -> Result<(), JournalError> {
    let below = {
        let mut r = runs.range((device, 0)..=(device, seq)).map_err(st)?;
        match r.next_back() {
            Some(item) => {
                let (k, v) = item.map_err(st)?;
                Some((k.value().1, v.value()))
            }
            None => None,
        }
    };
    let above = match seq.checked_add(1) {
        Some(next) => runs
            .get((device, next))
            .map_err(st)?
            .map(|v| (next, v.value())),
        None => None,
    };
    let joins_below = below.filter(|(_, last)| last.checked_add(1) == Some(seq));
    match (joins_below, above) {
        (Some((first, _)), Some((next, last))) => {
            runs.remove((device, next)).map_err(st)?;
            runs.insert((device, first), last).map_err(st)?;
        }
        (Some((first, _)), None) => {
            runs.insert((device, first), seq).map_err(st)?;
        }
        (None, Some((next, last))) => {
            runs.remove((device, next)).map_err(st)?;
            runs.insert((device, seq), last).map_err(st)?;
        }
        (None, None) => {
            runs.insert((device, seq), seq).map_err(st)?;
        }
    }
    Ok(())
}

/// Seals the plain values of `devices` and `dead_letters` (a journal from
/// before encryption at rest), in the caller's transaction. Lane records
/// stay as they are: they leave with the next receipts.
fn reseal_plain(txn: &redb::WriteTransaction, sealer: &Sealer) -> Result<(), JournalError> {
    let is_plain = |v: &[u8]| v.first() == Some(&b'{');
    let mut devices = txn.open_table(DEVICES).map_err(st)?;
    let mut plain = Vec::new();
    for item in devices.iter().map_err(st)? {
        let (k, v) = item.map_err(st)?;
        if is_plain(v.value()) {
            plain.push((k.value().to_string(), v.value().to_vec()));
        }
    }
    for (k, v) in plain {
        let sealed = sealer.seal(DEVICES.name(), &v);
        devices.insert(k.as_str(), sealed.as_slice()).map_err(st)?;
    }
    let mut pending = txn.open_table(PENDING).map_err(st)?;
    let mut plain = Vec::new();
    for item in pending.iter().map_err(st)? {
        let (k, v) = item.map_err(st)?;
        if is_plain(v.value()) {
            plain.push((k.value().to_string(), v.value().to_vec()));
        }
    }
    for (k, v) in plain {
        let sealed = sealer.seal(PENDING.name(), &v);
        pending.insert(k.as_str(), sealed.as_slice()).map_err(st)?;
    }
    let mut letters = txn.open_table(DEAD_LETTERS).map_err(st)?;
    let mut plain = Vec::new();
    for item in letters.iter().map_err(st)? {
        let (k, v) = item.map_err(st)?;
        if is_plain(v.value()) {
            plain.push((k.value(), v.value().to_vec()));
        }
    }
    for (k, v) in plain {
        let sealed = sealer.seal(DEAD_LETTERS.name(), &v);
        letters.insert(k, sealed.as_slice()).map_err(st)?;
    }
    Ok(())
}

fn counter(table: &redb::Table<&str, u64>, key: &str) -> Result<u64, JournalError> {
    Ok(table.get(key).map_err(st)?.map(|v| v.value()).unwrap_or(0))
}

fn put(
    table: &mut redb::Table<u64, &[u8]>,
    next: &mut [u64; 3],
    bytes: &mut [u64; 3],
    lane: Lane,
    json: &[u8],
) -> Result<(), JournalError> {
    let seq = next[lane.index()];
    table.insert(seq, json).map_err(st)?;
    next[lane.index()] += 1;
    bytes[lane.index()] += json.len() as u64;
    Ok(())
}

/// Drops the oldest records until `max` are gone or `need` bytes are
/// freed. Returns how many went and the bytes they held.
fn pop_oldest(
    table: &mut redb::Table<u64, &[u8]>,
    max: u64,
    need: u64,
) -> Result<(u64, u64), JournalError> {
    let (mut n, mut freed) = (0u64, 0u64);
    while n < max && freed < need {
        match table.pop_first().map_err(st)? {
            Some((_, v)) => {
                freed += v.value().len() as u64;
                n += 1;
            }
            None => break,
        }
    }
    Ok((n, freed))
}

/// Drops telemetry the gateway committed before `cutoff_ms`, oldest first.
fn drop_older_than(
    table: &mut redb::Table<u64, &[u8]>,
    sealer: &Sealer,
    cutoff_ms: u64,
) -> Result<(u64, u64), JournalError> {
    #[derive(Deserialize)]
    struct Age {
        committed_ms: u64,
    }
    let (mut n, mut freed) = (0u64, 0u64);
    loop {
        let old = match table.first().map_err(st)? {
            Some((_, v)) => sealer
                .open(LANE_TABLES[Lane::Telemetry.index()].name(), v.value())
                .ok()
                .and_then(|plain| serde_json::from_slice::<Age>(&plain).ok())
                .map(|a| a.committed_ms < cutoff_ms)
                .unwrap_or(true),
            None => false,
        };
        if !old {
            break;
        }
        if let Some((_, v)) = table.pop_first().map_err(st)? {
            freed += v.value().len() as u64;
            n += 1;
        }
    }
    Ok((n, freed))
}

fn refused_letter(e: &NewEvent, now: u64, code: &str, reason: String) -> DeadLetter {
    let mut buf = [0u8; 512];
    let n = e.event.encode(&mut buf).unwrap_or(0);
    DeadLetter {
        id: 0,
        at_ms: now,
        topic: trygg_protocol::topic::device_topic(&e.device, "evt").to_string(),
        reason_code: code.into(),
        reason,
        payload: String::from_utf8_lossy(&buf[..n]).into_owned(),
        payload_len: n,
    }
}

/// A damaged journal file, renamed and replaced by a fresh one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetAside {
    pub path: PathBuf,
    pub reason: String,
}

/// Whether redb refused a file for its contents, as opposed to the
/// surroundings (I/O, locks).
fn is_damage(e: &redb::Error) -> bool {
    match e {
        redb::Error::Corrupted(_) => true,
        // "Not a redb database: magic number mismatch" and its kin.
        redb::Error::Io(io) => io.kind() == std::io::ErrorKind::InvalidData,
        _ => false,
    }
}

/// Reads the journal while the writer goes on.
#[derive(Clone)]
pub struct JournalReader {
    slot: Slot,
    sealer: Arc<Sealer>,
}

/// A pending record as stored: its lane, seq and JSON.
#[derive(Clone, Debug)]
pub struct Pending {
    pub lane: Lane,
    pub seq: u64,
    /// The record's JSON (opened, when the journal seals).
    pub json: Vec<u8>,
    /// What the record takes in the journal (sealed), as the limits count.
    pub stored_len: u64,
}

impl JournalReader {
    /// Up to `max` records of `lane` with a seq above `after`, oldest first.
    pub fn read_after(
        &self,
        lane: Lane,
        after: u64,
        max: usize,
    ) -> Result<Vec<Pending>, JournalError> {
        let txn = db_of(&self.slot)?.begin_read().map_err(st)?;
        let table = txn.open_table(LANE_TABLES[lane.index()]).map_err(st)?;
        let mut out = Vec::new();
        for item in table
            .range(after.saturating_add(1)..)
            .map_err(st)?
            .take(max)
        {
            let (k, v) = item.map_err(st)?;
            out.push(Pending {
                lane,
                seq: k.value(),
                stored_len: v.value().len() as u64,
                json: self
                    .sealer
                    .open(LANE_TABLES[lane.index()].name(), v.value())?
                    .into_owned(),
            });
        }
        Ok(out)
    }

    /// Records waiting per lane.
    pub fn pending_counts(&self) -> Result<[u64; 3], JournalError> {
        let txn = db_of(&self.slot)?.begin_read().map_err(st)?;
        let mut out = [0u64; 3];
        for lane in Lane::ALL {
            out[lane.index()] = txn
                .open_table(LANE_TABLES[lane.index()])
                .map_err(st)?
                .len()
                .map_err(st)?;
        }
        Ok(out)
    }

    /// Bytes of records waiting per lane (what the size limit counts).
    pub fn pending_bytes(&self) -> Result<[u64; 3], JournalError> {
        let txn = db_of(&self.slot)?.begin_read().map_err(st)?;
        let table = txn.open_table(COUNTERS).map_err(st)?;
        let mut out = [0u64; 3];
        for lane in Lane::ALL {
            out[lane.index()] = table
                .get(BYTES_KEYS[lane.index()])
                .map_err(st)?
                .map(|v| v.value())
                .unwrap_or(0);
        }
        Ok(out)
    }

    /// When the gateway committed the oldest record waiting in `lane`.
    pub fn oldest_committed_ms(&self, lane: Lane) -> Result<Option<u64>, JournalError> {
        #[derive(Deserialize)]
        struct Age {
            committed_ms: u64,
        }
        let txn = db_of(&self.slot)?.begin_read().map_err(st)?;
        let table = txn.open_table(LANE_TABLES[lane.index()]).map_err(st)?;
        let first = table.first().map_err(st)?;
        Ok(match first {
            Some((_, v)) => Some(
                serde_json::from_slice::<Age>(
                    &self
                        .sealer
                        .open(LANE_TABLES[lane.index()].name(), v.value())?,
                )?
                .committed_ms,
            ),
            None => None,
        })
    }

    /// Join requests of unknown devices (first contact), by id.
    pub fn pending_devices(
        &self,
    ) -> Result<Vec<(String, crate::register::PendingDevice)>, JournalError> {
        let txn = db_of(&self.slot)?.begin_read().map_err(st)?;
        let table = match txn.open_table(PENDING) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(st(e)),
        };
        let mut out = Vec::new();
        for item in table.iter().map_err(st)? {
            let (k, v) = item.map_err(st)?;
            out.push((
                k.value().to_string(),
                serde_json::from_slice(&self.sealer.open(PENDING.name(), v.value())?)?,
            ));
        }
        Ok(out)
    }

    /// Devices reported silent and not heard from since, with when.
    pub fn silent_devices(&self) -> Result<Vec<(String, u64)>, JournalError> {
        let txn = db_of(&self.slot)?.begin_read().map_err(st)?;
        let table = txn.open_table(SILENT).map_err(st)?;
        let mut out = Vec::new();
        for item in table.iter().map_err(st)? {
            let (k, v) = item.map_err(st)?;
            out.push((k.value().to_string(), v.value()));
        }
        Ok(out)
    }

    /// The device register as kept, by id.
    pub fn devices(&self) -> Result<Vec<crate::config::Device>, JournalError> {
        let txn = db_of(&self.slot)?.begin_read().map_err(st)?;
        let table = txn.open_table(DEVICES).map_err(st)?;
        let mut out = Vec::new();
        for item in table.iter().map_err(st)? {
            let (_, v) = item.map_err(st)?;
            out.push(serde_json::from_slice(
                &self.sealer.open(DEVICES.name(), v.value())?,
            )?);
        }
        Ok(out)
    }

    /// Whether record `seq` of `lane` is still waiting for the backend's
    /// receipt (after its commit, `false` means receipted, or dropped as
    /// telemetry past its limit or age).
    pub fn is_pending(&self, lane: Lane, seq: u64) -> Result<bool, JournalError> {
        let txn = db_of(&self.slot)?.begin_read().map_err(st)?;
        let table = txn.open_table(LANE_TABLES[lane.index()]).map_err(st)?;
        Ok(table.get(seq).map_err(st)?.is_some())
    }

    /// All pending records, decoded, lane by lane (for tests and tools).
    pub fn pending_records(&self) -> Result<Vec<Record>, JournalError> {
        let mut out = Vec::new();
        for lane in Lane::ALL {
            for p in self.read_after(lane, 0, usize::MAX)? {
                out.push(serde_json::from_slice(&p.json)?);
            }
        }
        Ok(out)
    }

    /// The last settings version the backend pushed, if any.
    pub fn remote_config(&self) -> Result<Option<RemoteConfigState>, JournalError> {
        let txn = db_of(&self.slot)?.begin_read().map_err(st)?;
        let table = match txn.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(st(e)),
        };
        let Some(v) = table.get(REMOTE_CONFIG).map_err(st)? else {
            return Ok(None);
        };
        Ok(Some(serde_json::from_slice(
            &self.sealer.open(META.name(), v.value())?,
        )?))
    }

    /// The newest dead letters, newest first.
    pub fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, JournalError> {
        let txn = db_of(&self.slot)?.begin_read().map_err(st)?;
        let table = txn.open_table(DEAD_LETTERS).map_err(st)?;
        let mut out = Vec::new();
        for item in table.iter().map_err(st)?.rev().take(limit) {
            let (_, v) = item.map_err(st)?;
            out.push(serde_json::from_slice(
                &self.sealer.open(DEAD_LETTERS.name(), v.value())?,
            )?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trygg_protocol::EventKind;

    fn ev(device: &str, seq: u64, kind: EventKind) -> NewEvent {
        NewEvent {
            device: device.into(),
            event: DeviceEvent {
                seq,
                kind,
                ts: None,
                battery: None,
                value: None,
            },
            resident: Some("r-1".into()),
            room: None,
        }
    }

    fn group(events: Vec<NewEvent>) -> Group {
        Group {
            events,
            ..Default::default()
        }
    }

    fn sealed(path: &Path, key: u8) -> Result<Journal, JournalError> {
        Journal::open_sealed(path, Arc::new(Sealer::new(&[key; 32])))
    }

    #[test]
    fn a_sealed_journal_keeps_nothing_readable_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.redb");
        let mut j = sealed(&path, 1).unwrap();
        let mut press = ev("button-secret-7", 1, EventKind::ButtonPress);
        press.resident = Some("resident-pseudonym-42".into());
        press.room = Some("Soverom".into());
        j.apply(&group(vec![press])).unwrap();
        let device = crate::config::Device {
            id: "bed-sensor-9".into(),
            device_type: crate::config::DeviceType::BedSensor,
            room: Some("Stue-room".into()),
            resident: Some("resident-pseudonym-42".into()),
            supervision_s: None,
            key_hash: None,
            heartbeat_s: None,
            pre_alarm_s: None,
        };
        j.devices_or_seed(std::slice::from_ref(&device)).unwrap();
        // Read back in the clear through the journal.
        let recs = j.reader().pending_records().unwrap();
        assert_eq!(recs[0].resident.as_deref(), Some("resident-pseudonym-42"));
        assert_eq!(j.reader().devices().unwrap(), vec![device]);
        drop(j);
        // Not on disk.
        let raw = std::fs::read(&path).unwrap();
        for secret in [
            &b"resident-pseudonym-42"[..],
            b"Soverom",
            b"Stue-room",
            b"button_press",
            b"committed_ms",
        ] {
            assert!(
                !raw.windows(secret.len()).any(|w| w == secret),
                "{} is readable in the journal file",
                String::from_utf8_lossy(secret)
            );
        }
        // Another key, or none, cannot open it.
        assert!(matches!(sealed(&path, 2), Err(JournalError::KeyMismatch)));
        assert!(matches!(
            Journal::open(&path),
            Err(JournalError::KeyMismatch)
        ));
        // The right key can, after both refusals.
        let j = sealed(&path, 1).unwrap();
        assert_eq!(j.reader().pending_records().unwrap().len(), 1);
    }

    #[test]
    fn a_plain_journal_from_before_sealing_is_read_and_its_register_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.redb");
        let mut j = Journal::open(&path).unwrap();
        j.apply(&group(vec![ev("b", 1, EventKind::Fall)])).unwrap();
        let device = crate::config::Device {
            id: "b".into(),
            device_type: crate::config::DeviceType::SafetyButton,
            room: Some("Kjokken-room".into()),
            resident: None,
            supervision_s: None,
            key_hash: None,
            heartbeat_s: None,
            pre_alarm_s: None,
        };
        j.devices_or_seed(std::slice::from_ref(&device)).unwrap();
        drop(j);
        // Opened with a key: the pending record is still read (and sent),
        // the register is sealed now, new records are sealed.
        let mut j = sealed(&path, 3).unwrap();
        assert_eq!(j.reader().pending_records().unwrap().len(), 1);
        assert_eq!(j.reader().devices().unwrap(), vec![device]);
        j.apply(&group(vec![ev("b", 2, EventKind::Fall)])).unwrap();
        assert_eq!(j.reader().pending_records().unwrap().len(), 2);
        drop(j);
        let j = sealed(&path, 3).unwrap();
        let stored = {
            let db = db_of(&j.slot).unwrap();
            let txn = db.begin_read().unwrap();
            let t = txn.open_table(DEVICES).unwrap();
            let v = t.get("b").unwrap().unwrap().value().to_vec();
            v
        };
        assert_ne!(stored.first(), Some(&b'{'), "the register entry is sealed");
        drop(j);
        assert!(matches!(sealed(&path, 4), Err(JournalError::KeyMismatch)));
    }

    #[test]
    fn events_get_lane_sequences_starting_at_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("j.redb")).unwrap();
        let r = j
            .apply(&group(vec![
                ev("b", 1, EventKind::Motion),
                ev("b", 2, EventKind::ButtonPress),
                ev("b", 3, EventKind::Motion),
            ]))
            .unwrap();
        assert_eq!(
            r.outcomes,
            vec![
                Outcome::Committed {
                    lane: Lane::Telemetry,
                    seq: 1
                },
                Outcome::Committed {
                    lane: Lane::Alarm,
                    seq: 1
                },
                Outcome::Committed {
                    lane: Lane::Telemetry,
                    seq: 2
                },
            ]
        );
        assert_eq!(j.reader().pending_counts().unwrap(), [1, 0, 2]);
    }

    #[test]
    fn resent_event_is_a_duplicate_even_in_the_same_group() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("j.redb")).unwrap();
        let r = j
            .apply(&group(vec![
                ev("b", 5, EventKind::Fall),
                ev("b", 5, EventKind::Fall),
            ]))
            .unwrap();
        assert_eq!(r.outcomes[1], Outcome::Duplicate);
        let r = j.apply(&group(vec![ev("b", 5, EventKind::Fall)])).unwrap();
        assert_eq!(r.outcomes, vec![Outcome::Duplicate]);
        assert_eq!(j.reader().pending_counts().unwrap(), [1, 0, 0]);
    }

    #[test]
    fn older_event_within_the_window_is_accepted_because_alarms_overtake_telemetry() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("j.redb")).unwrap();
        j.apply(&group(vec![ev("b", 10, EventKind::Fall)])).unwrap();
        let r = j
            .apply(&group(vec![
                ev("b", 9, EventKind::Motion),
                ev("b", 9, EventKind::Motion),
            ]))
            .unwrap();
        assert_eq!(
            r.outcomes,
            vec![
                Outcome::Committed {
                    lane: Lane::Telemetry,
                    seq: 1
                },
                Outcome::Duplicate
            ]
        );
    }

    #[test]
    fn an_older_arrival_does_not_lower_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("j.redb")).unwrap();
        let top = 3 * RECENT_WINDOW;
        j.apply(&group(vec![ev("b", top, EventKind::Fall)]))
            .unwrap();
        let r = j
            .apply(&group(vec![ev("b", top - 1000, EventKind::Motion)]))
            .unwrap();
        assert!(matches!(r.outcomes[0], Outcome::Committed { .. }));
        let r = j
            .apply(&group(vec![ev(
                "b",
                top - RECENT_WINDOW,
                EventKind::Motion,
            )]))
            .unwrap();
        assert_eq!(r.outcomes, vec![Outcome::Backwards { last: top }]);
    }

    #[test]
    fn sequence_going_backwards_beyond_the_window_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("j.redb")).unwrap();
        let top = RECENT_WINDOW + 5000;
        j.apply(&group(vec![ev("b", top, EventKind::Fall)]))
            .unwrap();
        let r = j.apply(&group(vec![ev("b", 9, EventKind::Fall)])).unwrap();
        assert_eq!(r.outcomes, vec![Outcome::Backwards { last: top }]);
        let dl = j.reader().dead_letters(10).unwrap();
        assert_eq!(dl[0].reason_code, "sequence_backwards");
        assert!(dl[0].payload.contains(r#""seq":9"#));
        assert!(dl[0].reason.contains(&format!("last committed {top}")));
    }

    #[test]
    fn telemetry_held_back_far_behind_newer_alarms_is_still_taken_once() {
        // A device whose telemetry waited (a full disk, its own backlog)
        // while thousands of its newer alarms were committed.
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("j.redb")).unwrap();
        let alarms: Vec<_> = (5001..=10_000)
            .map(|s| ev("d", s, EventKind::ButtonPress))
            .collect();
        j.apply(&group(alarms)).unwrap();
        let late: Vec<_> = (1..=5000).map(|s| ev("d", s, EventKind::Motion)).collect();
        let r = j.apply(&group(late.clone())).unwrap();
        assert!(r
            .outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Committed { .. })));
        // Re-sent, every one of them is a duplicate, from either end.
        let r = j.apply(&group(late)).unwrap();
        assert!(r.outcomes.iter().all(|o| *o == Outcome::Duplicate));
        let r = j
            .apply(&group(vec![ev("d", 7777, EventKind::ButtonPress)]))
            .unwrap();
        assert_eq!(r.outcomes, vec![Outcome::Duplicate]);
    }

    #[test]
    fn runs_join_and_split_as_seqs_arrive_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("j.redb")).unwrap();
        for s in [5u64, 7, 6, 1, 3, 2, 10, 4] {
            let r = j
                .apply(&group(vec![ev("x", s, EventKind::Motion)]))
                .unwrap();
            assert!(matches!(r.outcomes[0], Outcome::Committed { .. }), "{s}");
        }
        for s in 1..=7u64 {
            let r = j
                .apply(&group(vec![ev("x", s, EventKind::Motion)]))
                .unwrap();
            assert_eq!(r.outcomes, vec![Outcome::Duplicate], "{s}");
        }
        for s in [8u64, 9, 11] {
            let r = j
                .apply(&group(vec![ev("x", s, EventKind::Motion)]))
                .unwrap();
            assert!(matches!(r.outcomes[0], Outcome::Committed { .. }), "{s}");
        }
    }

    #[test]
    fn receipt_deletes_exactly_its_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("j.redb")).unwrap();
        j.apply(&group(
            (1..=5).map(|s| ev("m", s, EventKind::Motion)).collect(),
        ))
        .unwrap();
        let r = j
            .apply(&Group {
                receipted: vec![SeqRange {
                    lane: Lane::Telemetry,
                    first: 2,
                    last: 3,
                }],
                ..Default::default()
            })
            .unwrap();
        assert_eq!(r.deleted, 2);
        let left: Vec<u64> = j
            .reader()
            .read_after(Lane::Telemetry, 0, 10)
            .unwrap()
            .iter()
            .map(|p| p.seq)
            .collect();
        assert_eq!(left, vec![1, 4, 5]);
    }

    #[test]
    fn lane_sequences_and_records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.redb");
        {
            let mut j = Journal::open(&path).unwrap();
            j.apply(&group(vec![ev("b", 1, EventKind::ButtonPress)]))
                .unwrap();
            j.apply(&Group {
                receipted: vec![SeqRange {
                    lane: Lane::Alarm,
                    first: 1,
                    last: 1,
                }],
                ..Default::default()
            })
            .unwrap();
        }
        let mut j = Journal::open(&path).unwrap();
        let r = j
            .apply(&group(vec![
                ev("b", 2, EventKind::ButtonPress),
                ev("b", 1, EventKind::ButtonPress),
            ]))
            .unwrap();
        assert_eq!(
            r.outcomes,
            vec![
                Outcome::Committed {
                    lane: Lane::Alarm,
                    seq: 2
                },
                Outcome::Duplicate
            ]
        );
    }

    #[test]
    fn an_empty_group_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("j.redb")).unwrap();
        assert_eq!(j.apply(&Group::default()).unwrap(), GroupResult::default());
        assert_eq!(j.commits(), 0);
        j.apply(&group(vec![ev("b", 1, EventKind::Motion)]))
            .unwrap();
        assert_eq!(j.commits(), 1);
    }

    #[test]
    fn reopen_keeps_records_and_readers_follow() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("j.redb")).unwrap();
        j.apply(&group(vec![ev("b", 1, EventKind::Fall)])).unwrap();
        let reader = j.reader();
        j.reopen().unwrap();
        j.apply(&group(vec![ev("b", 2, EventKind::Fall)])).unwrap();
        assert_eq!(
            reader.pending_counts().unwrap(),
            [2, 0, 0],
            "an old reader follows the reopened file"
        );
    }

    #[test]
    fn dead_letters_are_kept_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("j.redb")).unwrap();
        let dl = |reason: &str| DeadLetter {
            id: 0,
            at_ms: 1,
            topic: "t".into(),
            reason_code: reason.into(),
            reason: reason.into(),
            payload: "x".into(),
            payload_len: 1,
        };
        j.apply(&Group {
            dead_letters: vec![dl("a"), dl("b")],
            ..Default::default()
        })
        .unwrap();
        let got = j.reader().dead_letters(10).unwrap();
        assert_eq!(
            got.iter().map(|d| d.reason.as_str()).collect::<Vec<_>>(),
            vec!["b", "a"]
        );
        assert_eq!(got[0].id, 2);
    }

    fn limited(max_bytes: u64, reserve: u64, when_full: WhenFull) -> Policy {
        Policy {
            source_id: "gw-t".into(),
            max_bytes: Some(max_bytes),
            alarm_reserve_bytes: reserve,
            when_full,
            telemetry_max_age_ms: None,
            drop_report_every_ms: 60_000,
        }
    }

    fn kinds_pending(j: &Journal) -> Vec<(EventKind, u64)> {
        j.reader()
            .pending_records()
            .unwrap()
            .iter()
            .map(|r| (r.kind, r.device_seq))
            .collect()
    }

    #[test]
    fn at_the_limit_the_oldest_telemetry_gives_way_and_alarms_stay() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("j.redb")).unwrap();
        // One motion record is about 130 bytes: room for about 15 of
        // everything but alarms, and 8 more for alarms only.
        j.set_policy(limited(3000, 1000, WhenFull::DropOldest));
        let mut seq = 0;
        let mut next = || {
            seq += 1;
            seq
        };
        for _ in 0..40 {
            j.apply(&group(vec![ev("m", next(), EventKind::Motion)]))
                .unwrap();
        }
        let bytes = j.reader().pending_bytes().unwrap();
        assert!(
            bytes[2] <= 2000,
            "telemetry stays out of the reserve: {bytes:?}"
        );
        let left: Vec<u64> = kinds_pending(&j)
            .iter()
            .filter(|k| k.0 == EventKind::Motion)
            .map(|k| k.1)
            .collect();
        assert_eq!(*left.last().unwrap(), 40, "the newest is kept");
        assert!(
            left.windows(2).all(|w| w[1] == w[0] + 1),
            "oldest went first"
        );
        // Alarms use the reserve, and past it still are never refused.
        let mut outcomes = Vec::new();
        for _ in 0..30 {
            outcomes.extend(
                j.apply(&group(vec![ev("b", next(), EventKind::ButtonPress)]))
                    .unwrap()
                    .outcomes,
            );
        }
        assert!(outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Committed { .. })));
        let pending = j.reader().pending_counts().unwrap();
        assert_eq!(pending[0], 30, "every alarm kept");
        assert_eq!(pending[2], 0, "telemetry made way for them");
    }

    #[test]
    fn drops_are_counted_and_reported_upstream_as_one_event() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("j.redb")).unwrap();
        j.set_policy(limited(2000, 500, WhenFull::DropOldest));
        let mut dropped = 0;
        for s in 1..=30 {
            dropped += j
                .apply(&group(vec![ev("m", s, EventKind::Motion)]))
                .unwrap()
                .dropped_limit;
        }
        assert!(dropped > 10, "{dropped}");
        let reports: Vec<Record> = j
            .reader()
            .pending_records()
            .unwrap()
            .into_iter()
            .filter(|r| r.kind == EventKind::TelemetryDropped)
            .collect();
        // The first drop is reported at once; the rest wait for the next
        // report (at most one a minute) and are kept counted until then.
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].device, "gw-t", "the gateway reports as itself");
        assert_eq!(reports[0].lane, Lane::Care);
        assert_eq!(reports[0].value, Some(1.0));
        let mut p = j.policy().clone();
        p.drop_report_every_ms = 0;
        j.set_policy(p);
        j.apply(&group(vec![ev("m", 31, EventKind::Motion)]))
            .unwrap();
        let total: f32 = j
            .reader()
            .pending_records()
            .unwrap()
            .iter()
            .filter(|r| r.kind == EventKind::TelemetryDropped)
            .map(|r| r.value.unwrap())
            .sum();
        assert!(
            total as u64 >= dropped,
            "{total} reported, {dropped} dropped"
        );
    }

    #[test]
    fn drops_left_unreported_are_reported_without_new_traffic() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("j.redb")).unwrap();
        let mut p = limited(2000, 500, WhenFull::DropOldest);
        p.drop_report_every_ms = 200;
        j.set_policy(p);
        let mut dropped = 0;
        for s in 1..=30 {
            dropped += j
                .apply(&group(vec![ev("m", s, EventKind::Motion)]))
                .unwrap()
                .dropped_limit;
        }
        assert!(dropped > 10, "{dropped}");
        let reported = |j: &Journal| -> u64 {
            j.reader()
                .pending_records()
                .unwrap()
                .iter()
                .filter(|r| r.kind == EventKind::TelemetryDropped)
                .map(|r| r.value.unwrap() as u64)
                .sum()
        };
        assert!(reported(&j) < dropped, "the rest waits for the next report");
        assert!(!j.drop_report_due().unwrap(), "not before the interval");
        std::thread::sleep(std::time::Duration::from_millis(250));
        // The devices have gone quiet; housekeeping's empty sweep carries it.
        assert!(j.drop_report_due().unwrap());
        j.apply(&Group {
            sweep: true,
            ..Group::default()
        })
        .unwrap();
        assert!(!j.drop_report_due().unwrap());
        // Reports may themselves have pushed out telemetry, counted later.
        assert!(reported(&j) >= dropped, "{} of {dropped}", reported(&j));
    }

    #[test]
    fn refuse_policy_refuses_new_telemetry_but_never_care_events() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("j.redb")).unwrap();
        j.set_policy(limited(1500, 500, WhenFull::Refuse));
        let mut refused = 0;
        for s in 1..=20 {
            let r = j
                .apply(&group(vec![ev("m", s, EventKind::Motion)]))
                .unwrap();
            if r.outcomes == vec![Outcome::Refused] {
                refused += 1;
            }
        }
        assert!(refused > 5, "{refused}");
        let r = j
            .apply(&group(vec![ev("d", 1, EventKind::DoseNotConfirmed)]))
            .unwrap();
        assert!(matches!(
            r.outcomes[0],
            Outcome::Committed {
                lane: Lane::Care,
                ..
            }
        ));
        let dl = j.reader().dead_letters(1).unwrap();
        assert_eq!(dl[0].reason_code, "journal_full");
    }

    #[test]
    fn telemetry_past_its_age_is_swept_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("j.redb")).unwrap();
        j.apply(&group(vec![
            ev("m", 1, EventKind::Motion),
            ev("b", 1, EventKind::Fall),
        ]))
        .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        j.apply(&group(vec![ev("m", 2, EventKind::Motion)]))
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut p = limited(1 << 30, 0, WhenFull::DropOldest);
        p.telemetry_max_age_ms = Some(10);
        j.set_policy(p);
        let r = j
            .apply(&Group {
                sweep: true,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(r.dropped_age, 2, "both are older than 10 ms by now");
        let kinds: Vec<EventKind> = kinds_pending(&j).iter().map(|k| k.0).collect();
        assert_eq!(kinds, vec![EventKind::Fall, EventKind::TelemetryDropped]);
    }

    #[test]
    fn with_the_disk_full_telemetry_is_deferred_and_alarms_still_commit() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("j.redb")).unwrap();
        assert!(j.ensure_reserve(64 * 1024));
        assert!(dir.path().join(RESERVE_FILE).exists());
        j.apply(&group(vec![ev("m", 1, EventKind::Motion)]))
            .unwrap();
        assert!(j.release_reserve());
        assert!(!dir.path().join(RESERVE_FILE).exists());
        let r = j
            .apply(&group(vec![
                ev("m", 2, EventKind::Motion),
                ev("b", 1, EventKind::ButtonPress),
            ]))
            .unwrap();
        assert_eq!(r.outcomes[0], Outcome::Deferred);
        assert!(matches!(
            r.outcomes[1],
            Outcome::Committed {
                lane: Lane::Alarm,
                ..
            }
        ));
        assert_eq!(
            r.dropped_limit, 0,
            "nothing dropped while the reserve lasts"
        );
        // Full even so: the oldest telemetry makes room.
        j.squeeze();
        let r = j
            .apply(&group(vec![ev("b", 2, EventKind::ButtonPress)]))
            .unwrap();
        assert_eq!(r.dropped_limit, 1, "the oldest telemetry made room");
        assert!(j.retake_reserve());
        assert!(!j.disk_full());
        let r = j
            .apply(&group(vec![ev("m", 2, EventKind::Motion)]))
            .unwrap();
        assert!(
            matches!(r.outcomes[0], Outcome::Committed { .. }),
            "taken again"
        );
    }

    #[test]
    fn the_register_is_seeded_once_and_its_changes_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.redb");
        let config = crate::config::Config::default_config();
        let mut j = Journal::open(&path).unwrap();
        let (devices, seeded) = j.devices_or_seed(&config.devices).unwrap();
        assert!(seeded);
        assert_eq!(devices.len(), config.devices.len());
        let mut moved = config.device("door-1").unwrap().clone();
        moved.id = "door-2".into();
        j.write_devices(&[
            ("door-1".into(), None),
            ("door-2".into(), Some(moved.clone())),
        ])
        .unwrap();
        drop(j);
        // The config still lists door-1: the table wins after the first start.
        let mut j = Journal::open(&path).unwrap();
        let (devices, seeded) = j.devices_or_seed(&config.devices).unwrap();
        assert!(!seeded);
        assert!(devices.iter().all(|d| d.id != "door-1"));
        assert!(devices.contains(&moved));
    }

    #[test]
    fn a_join_request_is_kept_until_it_is_paired_or_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.redb");
        let config = crate::config::Config::default_config();
        let request = crate::register::PendingDevice {
            first_seen_ms: 1,
            last_seen_ms: 2,
            attempts: 3,
            key_hash: crate::credentials::hash_key("0123456789abcdef"),
        };
        let mut j = Journal::open(&path).unwrap();
        j.devices_or_seed(&config.devices).unwrap();
        j.write_pending("new-1", Some(&request)).unwrap();
        j.write_pending("new-2", Some(&request)).unwrap();
        drop(j);
        let mut j = Journal::open(&path).unwrap();
        assert_eq!(
            j.reader().pending_devices().unwrap(),
            vec![("new-1".into(), request.clone()), ("new-2".into(), request)]
        );
        // Pairing takes it off the list in the same transaction.
        let mut d = config.device("door-1").unwrap().clone();
        d.id = "new-1".into();
        j.write_devices(&[("new-1".into(), Some(d))]).unwrap();
        j.write_pending("new-2", None).unwrap();
        assert!(j.reader().pending_devices().unwrap().is_empty());
    }

    #[test]
    fn silences_are_kept_with_the_events_that_raise_and_clear_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.redb");
        let sys = |kind| SystemEvent {
            kind,
            subject: Some("door-1".into()),
            value: None,
            resident: None,
            room: None,
        };
        {
            let mut j = Journal::open(&path).unwrap();
            let r = j
                .apply(&Group {
                    system: vec![sys(EventKind::DeviceSilent)],
                    ..Default::default()
                })
                .unwrap();
            assert_eq!(r.system, 1);
            assert!(r.added_records());
        }
        let mut j = Journal::open(&path).unwrap();
        let silent = j.reader().silent_devices().unwrap();
        assert_eq!(silent.len(), 1);
        assert_eq!(silent[0].0, "door-1");
        j.apply(&Group {
            system: vec![sys(EventKind::DeviceResumed)],
            ..Default::default()
        })
        .unwrap();
        assert!(j.reader().silent_devices().unwrap().is_empty());
        let recs = j.reader().pending_records().unwrap();
        assert_eq!(
            recs.iter().map(|r| r.device_seq).collect::<Vec<_>>(),
            vec![1, 2],
            "the gateway's own counter survives a restart"
        );
        assert_eq!(recs[0].subject.as_deref(), Some("door-1"));
    }
}
