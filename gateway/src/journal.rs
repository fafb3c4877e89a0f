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
//! | `device_recent`  | (device id, seq)      | () — the last 1024 seqs        |
//! | `dead_letters`   | id (u64)              | `DeadLetter` as JSON           |
//!
//! # What is durable when
//!
//! [`Journal::apply`] writes one group (events, dead letters and receipted
//! deletions) in ONE write transaction committed with
//! `Durability::Immediate` (fsync). Only after it returns may the caller
//! acknowledge anything to a device or a broker. A crash before the commit
//! loses nothing that was acknowledged: the broker redelivers and devices
//! re-send. A crash after it and before the acknowledgements makes devices
//! re-send events that are already committed; `device_recent` recognises
//! them and they are receipted as duplicates, never journaled twice.
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
};
use serde::{Deserialize, Serialize};
use trygg_protocol::{DeviceEvent, Lane};
use trygg_uplink::{Record, SeqRange};

const LANE_TABLES: [TableDefinition<u64, &[u8]>; 3] = [
    TableDefinition::new("lane_alarm"),
    TableDefinition::new("lane_care"),
    TableDefinition::new("lane_telemetry"),
];
const LANE_NEXT: TableDefinition<u8, u64> = TableDefinition::new("lane_next");
const DEVICE_LAST: TableDefinition<&str, u64> = TableDefinition::new("device_last");
const DEVICE_RECENT: TableDefinition<(&str, u64), ()> = TableDefinition::new("device_recent");
const DEAD_LETTERS: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");

/// The span of sequence numbers per device, below the highest committed,
/// that is remembered to recognise re-sends. An event may arrive out of
/// order within it (alarms overtake telemetry); one older than that is
/// refused as a sequence gone backwards.
pub const RECENT_WINDOW: u64 = 1024;
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

/// One group commit's worth of work.
#[derive(Debug, Default)]
pub struct Group {
    pub events: Vec<NewEvent>,
    pub dead_letters: Vec<DeadLetter>,
    pub receipted: Vec<SeqRange>,
}

impl Group {
    /// Nothing to write: heartbeats alone must not cost an fsync.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.dead_letters.is_empty() && self.receipted.is_empty()
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
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupResult {
    pub outcomes: Vec<Outcome>,
    pub deleted: u64,
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
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Journal {
    /// Opens (or creates) the journal, repairing it if the last run was cut.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        let (db, next) = Self::open_db(path)?;
        Ok(Journal {
            slot: Arc::new(RwLock::new(Some(Arc::new(db)))),
            path: path.to_path_buf(),
            next,
            commits: 0,
        })
    }

    /// Opens the journal; if the file is damaged beyond what redb repairs,
    /// renames it to `<name>.damaged-<unix ms>` and starts a fresh one.
    /// Returns what was set aside, if anything. Errors that are not about
    /// the file's contents (permissions, a full disk, another process
    /// holding it) are returned as they are: a fresh file would not help.
    pub fn open_or_set_aside(path: &Path) -> Result<(Journal, Option<SetAside>), JournalError> {
        match Self::open(path) {
            Ok(j) => Ok((j, None)),
            Err(JournalError::Storage(e)) if is_damage(&e) => {
                let aside = path.with_extension(format!("redb.damaged-{}", now_ms()));
                std::fs::rename(path, &aside).map_err(|e| st(redb::StorageError::Io(e)))?;
                let journal = Self::open(path)?;
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
        let (db, next) = Self::open_db(&self.path)?;
        self.next = next;
        *self.slot.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(db));
        Ok(())
    }

    fn open_db(path: &Path) -> Result<(Database, [u64; 3]), JournalError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| st(redb::StorageError::Io(e)))?;
        }
        let mut db = Database::builder()
            .set_repair_callback(|s| {
                let p = s.progress();
                tracing::warn!(progress = p, "repairing journal after an unclean shutdown");
            })
            .create(path)
            .map_err(st)?;
        // Every page's checksum, once per start: an SD card can rot a page
        // that redb would otherwise meet (and panic on) at the next write.
        // The journal is kept small (receipted records leave it), so this
        // costs milliseconds.
        if !db.check_integrity().map_err(st)? {
            tracing::warn!(path = %path.display(), "the journal failed its integrity check and was repaired");
        }
        let txn = db.begin_write().map_err(st)?;
        let mut next = [1u64; 3];
        {
            for t in LANE_TABLES {
                txn.open_table(t).map_err(st)?;
            }
            txn.open_table(DEVICE_LAST).map_err(st)?;
            txn.open_table(DEVICE_RECENT).map_err(st)?;
            txn.open_table(DEAD_LETTERS).map_err(st)?;
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

    /// Durable commits made since this journal was opened.
    pub fn commits(&self) -> u64 {
        self.commits
    }

    /// A handle for reading pending records from another thread.
    pub fn reader(&self) -> JournalReader {
        JournalReader {
            slot: self.slot.clone(),
        }
    }

    /// Commits one group in one durable transaction.
    pub fn apply(&mut self, group: &Group) -> Result<GroupResult, JournalError> {
        if group.is_empty() {
            return Ok(GroupResult::default());
        }
        let db = db_of(&self.slot)?;
        let mut txn = db.begin_write().map_err(st)?;
        txn.set_durability(Durability::Immediate).map_err(st)?;
        let mut next = self.next;
        let mut result = GroupResult::default();
        let mut refused: Vec<DeadLetter> = Vec::new();
        {
            let mut lanes = [
                txn.open_table(LANE_TABLES[0]).map_err(st)?,
                txn.open_table(LANE_TABLES[1]).map_err(st)?,
                txn.open_table(LANE_TABLES[2]).map_err(st)?,
            ];
            let mut last = txn.open_table(DEVICE_LAST).map_err(st)?;
            let mut recent = txn.open_table(DEVICE_RECENT).map_err(st)?;
            let committed_ms = now_ms();
            for e in &group.events {
                let seq = e.event.seq;
                let prev = last.get(e.device.as_str()).map_err(st)?.map(|v| v.value());
                if recent.get((e.device.as_str(), seq)).map_err(st)?.is_some() {
                    result.outcomes.push(Outcome::Duplicate);
                    continue;
                }
                if let Some(prev) = prev {
                    // Within the window, an older seq is normal: a device sends
                    // alarms before its older telemetry. Beyond it, we can no
                    // longer tell a re-send from a counter that went back.
                    if seq.saturating_add(RECENT_WINDOW) <= prev {
                        result.outcomes.push(Outcome::Backwards { last: prev });
                        let mut buf = [0u8; 512];
                        let n = e.event.encode(&mut buf).unwrap_or(0);
                        refused.push(DeadLetter {
                            id: 0,
                            at_ms: committed_ms,
                            topic: trygg_protocol::topic::device_topic(&e.device, "evt")
                                .to_string(),
                            reason_code: "sequence_backwards".into(),
                            reason: format!(
                                "sequence {seq} went backwards (last committed {prev})"
                            ),
                            payload: String::from_utf8_lossy(&buf[..n]).into_owned(),
                            payload_len: n,
                        });
                        continue;
                    }
                }
                let lane = e.event.kind.lane();
                let lane_seq = next[lane.index()];
                next[lane.index()] += 1;
                let record = Record {
                    lane,
                    seq: lane_seq,
                    device: e.device.clone(),
                    device_seq: seq,
                    kind: e.event.kind,
                    ts: e.event.ts,
                    committed_ms,
                    battery: e.event.battery,
                    value: e.event.value,
                    resident: e.resident.clone(),
                    room: e.room.clone(),
                };
                let bytes = serde_json::to_vec(&record)?;
                lanes[lane.index()]
                    .insert(lane_seq, bytes.as_slice())
                    .map_err(st)?;
                recent.insert((e.device.as_str(), seq), ()).map_err(st)?;
                // Only a new highest moves the window; an older arrival
                // must not lower it.
                if prev.is_none_or(|p| seq > p) {
                    last.insert(e.device.as_str(), seq).map_err(st)?;
                    // Forget seqs below the window, every 64 seqs: what
                    // lingers is still a true memory of a committed event.
                    if seq >= RECENT_WINDOW && seq % 64 == 0 {
                        let cutoff = seq - RECENT_WINDOW;
                        recent
                            .retain_in(
                                (e.device.as_str(), 0)..=(e.device.as_str(), cutoff),
                                |_, _| false,
                            )
                            .map_err(st)?;
                    }
                }
                result.outcomes.push(Outcome::Committed {
                    lane,
                    seq: lane_seq,
                });
            }
            for r in &group.receipted {
                let table = &mut lanes[r.lane.index()];
                let before = table.len().map_err(st)?;
                table
                    .retain_in(r.first..=r.last, |_, _| false)
                    .map_err(st)?;
                result.deleted += before - table.len().map_err(st)?;
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
                    dl.insert(id, serde_json::to_vec(&d)?.as_slice())
                        .map_err(st)?;
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
        Ok(result)
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
}

/// A pending record as stored: its lane, seq and JSON.
#[derive(Clone, Debug)]
pub struct Pending {
    pub lane: Lane,
    pub seq: u64,
    pub json: Vec<u8>,
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
                json: v.value().to_vec(),
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

    /// The newest dead letters, newest first.
    pub fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, JournalError> {
        let txn = db_of(&self.slot)?.begin_read().map_err(st)?;
        let table = txn.open_table(DEAD_LETTERS).map_err(st)?;
        let mut out = Vec::new();
        for item in table.iter().map_err(st)?.rev().take(limit) {
            let (_, v) = item.map_err(st)?;
            out.push(serde_json::from_slice(v.value())?);
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
        j.apply(&group(vec![ev("b", 5000, EventKind::Fall)]))
            .unwrap();
        let r = j
            .apply(&group(vec![ev("b", 4000, EventKind::Motion)]))
            .unwrap();
        assert!(matches!(r.outcomes[0], Outcome::Committed { .. }));
        let r = j
            .apply(&group(vec![ev("b", 3000, EventKind::Motion)]))
            .unwrap();
        assert_eq!(r.outcomes, vec![Outcome::Backwards { last: 5000 }]);
    }

    #[test]
    fn sequence_going_backwards_beyond_the_window_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("j.redb")).unwrap();
        j.apply(&group(vec![ev("b", 5000, EventKind::Fall)]))
            .unwrap();
        let r = j.apply(&group(vec![ev("b", 9, EventKind::Fall)])).unwrap();
        assert_eq!(r.outcomes, vec![Outcome::Backwards { last: 5000 }]);
        let dl = j.reader().dead_letters(10).unwrap();
        assert_eq!(dl[0].reason_code, "sequence_backwards");
        assert!(dl[0].payload.contains(r#""seq":9"#));
        assert!(dl[0].reason.contains("last committed 5000"));
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
}
