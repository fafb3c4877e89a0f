//! The bridge's store: one redb file, `{data_dir}/bridge.redb`.
//!
//! What is durable when: every write goes through [`Store::commit`], one
//! write transaction with `Durability::Immediate` (one fsync) for a whole
//! group of operations; only after `commit` returns does anyone hear of it:
//! an uplink receipt, an MQTT ack, an API answer, a stream message. A crash
//! before that loses the group and nobody was told it was kept: the gateway
//! sends the batch again, the carer presses again. redb's commit is atomic,
//! so a torn write leaves the previous commit in place.
//!
//! [`StoreWriter`] is the one thread that writes. It takes whatever
//! operations are waiting, commits them in one transaction (group commit:
//! an SD card's fsync costs 1-20 ms however much it carries), then answers
//! each. Readers use their own read transactions and never wait for it.
//!
//! Tables (values are JSON, so a person can read a dump):
//!
//! ```text
//! events          event id           -> StoredEvent
//! event_order     arrival number     -> event id       (newest first listing)
//! device_events   (device, arrival)  -> event id       (listing per device)
//! lanes           (gateway, lane)    -> highest lane sequence seen
//! alarms          alarm id           -> Alarm
//! alarm_events    event id           -> alarm id       (an event raises or repeats one alarm)
//! open_alarms     (gateway, device, kind) -> alarm id  (the alarm not closed yet, for repeats and clears)
//! gaps            (gateway, lane, first) -> (last, found ms, alarm id or 0)   (lane sequences still missing)
//! dead_letters    id                 -> DeadLetter
//! counters        name               -> next number
//! ```
//!
//! An alarm's escalation (`escalation_level`, `escalated_to`, `escalations`)
//! is kept on the alarm itself, so a restart carries on where it was.

use std::path::Path;
use std::sync::Arc;

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};
use trygg_protocol::{EventKind, Lane};
use trygg_uplink::contract::Batch;
use trygg_uplink::metrics::Metrics;

use crate::alarm::{Alarm, AlarmState, Change, WorkflowError};
use crate::ingest::{self, Ingested, Ledger, StoredEvent};

const EVENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("events");
const EVENT_ORDER: TableDefinition<u64, &str> = TableDefinition::new("event_order");
const DEVICE_EVENTS: TableDefinition<(&str, u64), &str> = TableDefinition::new("device_events");
const LANES: TableDefinition<(&str, u8), u64> = TableDefinition::new("lanes");
const ALARMS: TableDefinition<u64, &[u8]> = TableDefinition::new("alarms");
const ALARM_EVENTS: TableDefinition<&str, u64> = TableDefinition::new("alarm_events");
const OPEN_ALARMS: TableDefinition<(&str, &str, &str), u64> = TableDefinition::new("open_alarms");
const GAPS: TableDefinition<(&str, u8, u64), (u64, u64, u64)> = TableDefinition::new("gaps");
const DEAD_LETTERS: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");

/// How much of a rejected payload is kept.
pub const MAX_DEAD_LETTER_PAYLOAD: usize = 64 * 1024;
/// The most operations one commit carries.
const MAX_GROUP: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The disk or the file: worth a retry only after a person looked.
    #[error("store: {0}")]
    Redb(#[from] redb::Error),
    #[error("store holds a record it cannot read: {0}")]
    Corrupt(String),
    #[error("store writer has stopped")]
    Stopped,
    #[error("store commit failed: {0}")]
    CommitFailed(String),
}

macro_rules! redb_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Redb(e.into()) }
        }
    )*};
}
redb_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// A payload kept aside because it could not be ingested.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: u64,
    pub at_ms: u64,
    pub reason: String,
    pub message: String,
    pub topic: String,
    /// The payload as text (lossy UTF-8), cut at 64 KiB.
    pub payload: String,
    pub payload_bytes: usize,
}

/// A device the bridge has heard from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownDevice {
    pub gateway: String,
    pub device: String,
    /// The resident named on its latest event, if any.
    pub resident: Option<String>,
    /// When the bridge stored its first event, Unix ms.
    pub first_ms: u64,
}

/// One write for the store.
#[derive(Debug)]
pub enum Op {
    Ingest(Batch),
    DeadLetter {
        reason: &'static str,
        message: String,
        topic: String,
        payload: Vec<u8>,
    },
    Acknowledge {
        alarm: u64,
        by: String,
    },
    Close {
        alarm: u64,
        by: String,
        note: Option<String>,
        /// Why it happened, when the closer says.
        cause: Option<crate::alarm::Cause>,
    },
    /// Nothing heard from a gateway for its period: raise `gateway_offline`.
    GatewayOffline {
        gateway: String,
        silent_s: u64,
    },
    /// A gateway offline is heard from again: clear its alarm.
    GatewayBack {
        gateway: String,
    },
    /// A wrong enrollment code, or a gateway certificate the uplink
    /// refused: raise (or repeat) `access_refused` about `subject` (for
    /// example `enrollment` or `uplink`) of `gateway` (`unknown` when the
    /// caller could not tell which).
    AccessRefused {
        gateway: String,
        subject: String,
        detail: String,
    },
    /// Raise `sequence_gap` for gaps found before `found_before_ms` and
    /// still missing.
    RaiseGaps {
        found_before_ms: u64,
    },
    /// Escalates every open alarm whose next step of the chain has come by
    /// `as_of_ms`, each step with an `escalate` audit entry by `trygg` in
    /// this transaction (`crate::escalation`).
    Escalate {
        policy: Arc<crate::escalation::EscalationConfig>,
        as_of_ms: u64,
    },
    /// An operation and its audit entry, in the same transaction; the
    /// entry's outcome says whether an alarm action was refused, and why.
    Audited(Box<Op>, crate::access::AuditEntry),
}

/// Why an alarm action was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    #[error("alarm {0} does not exist")]
    NotFound(u64),
    #[error(transparent)]
    Workflow(#[from] WorkflowError),
}

/// What an alarm action came to: the alarm as it now is, and what changed
/// (`None` when the action was already done, e.g. acknowledged twice).
pub type ActionOutcome = Result<(Box<Alarm>, Option<Change>), ActionError>;

/// What one [`Op`] came to, once committed.
#[derive(Debug)]
pub enum Done {
    Ingested {
        ingested: Ingested,
        raised: Vec<Alarm>,
        /// Alarms that took a repeat instead of a new alarm being raised.
        repeated: Vec<Alarm>,
        /// Alarms the system closed because their cause is gone.
        cleared: Vec<Alarm>,
    },
    /// What gateway supervision raised or cleared.
    Supervised {
        gateway: String,
        raised: Vec<Alarm>,
        cleared: Vec<Alarm>,
    },
    DeadLettered(DeadLetter),
    Alarm(ActionOutcome),
    /// The alarms escalated, as they now are.
    Escalated(Vec<Alarm>),
}

#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
}

impl Store {
    /// Opens or creates the store; after a crash redb repairs the file
    /// first, which takes time in proportion to its size.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        {
            txn.open_table(EVENTS)?;
            txn.open_table(EVENT_ORDER)?;
            txn.open_table(DEVICE_EVENTS)?;
            txn.open_table(LANES)?;
            txn.open_table(ALARMS)?;
            txn.open_table(ALARM_EVENTS)?;
            txn.open_table(OPEN_ALARMS)?;
            txn.open_table(GAPS)?;
            txn.open_table(DEAD_LETTERS)?;
            txn.open_table(COUNTERS)?;
            txn.open_table(crate::access::USERS)?;
            txn.open_table(crate::access::SESSIONS)?;
            txn.open_table(crate::access::RESIDENTS)?;
            txn.open_table(crate::access::GATEWAY_UNITS)?;
            txn.open_table(crate::access::AUDIT)?;
            txn.open_table(crate::enrollment::ENROLL_CODES)?;
            txn.open_table(crate::enrollment::GATEWAY_CERTS)?;
        }
        txn.commit()?;
        Ok(Store { db: Arc::new(db) })
    }

    pub(crate) fn db(&self) -> &Database {
        &self.db
    }

    /// A write transaction that fsyncs at commit.
    pub(crate) fn begin_durable(&self) -> Result<WriteTransaction, StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        Ok(txn)
    }

    /// Carries out `ops` in one durable transaction. An alarm action that is
    /// refused writes nothing and does not spoil the others; a storage error
    /// loses the whole group (and nobody has been told otherwise).
    pub fn commit(&self, ops: Vec<Op>, now_ms: u64) -> Result<Vec<Done>, StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let mut done = Vec::with_capacity(ops.len());
        for op in ops {
            done.push(apply(&txn, op, now_ms)?);
        }
        txn.commit()?;
        Ok(done)
    }

    /// Alarms in one state (or all), red before yellow, then oldest first.
    pub fn alarms(&self, state: Option<AlarmState>) -> Result<Vec<Alarm>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ALARMS)?;
        let mut out = Vec::new();
        // A full scan: fine for a municipality's thousands of alarms a year;
        // an index by state comes when the numbers say so.
        for entry in table.iter()? {
            let (_, v) = entry?;
            let alarm: Alarm = from_json(v.value())?;
            if state.is_none_or(|s| s == alarm.state) {
                out.push(alarm);
            }
        }
        out.sort_by(|a, b| {
            let rank = |a: &Alarm| if a.severity == "red" { 0 } else { 1 };
            (rank(a), a.raised_ms, a.id).cmp(&(rank(b), b.raised_ms, b.id))
        });
        Ok(out)
    }

    /// Every gateway that has sent a batch, and whether it has a
    /// `gateway_offline` alarm open.
    pub fn gateways(&self) -> Result<Vec<(String, bool)>, StoreError> {
        let txn = self.db.begin_read()?;
        let lanes = txn.open_table(LANES)?;
        let open = txn.open_table(OPEN_ALARMS)?;
        let mut out: Vec<(String, bool)> = Vec::new();
        for entry in lanes.iter()? {
            let gw = entry?.0.value().0.to_string();
            if out.last().is_some_and(|(g, _)| *g == gw) {
                continue;
            }
            let offline = open
                .get((gw.as_str(), gw.as_str(), EventKind::GatewayOffline.wire()))?
                .is_some();
            out.push((gw, offline));
        }
        // A decommissioned gateway is silent for good, and rightly.
        if let Ok(gone) = txn.open_table(crate::settings::DECOMMISSIONED) {
            out.retain(|(g, _)| !matches!(gone.get(g.as_str()), Ok(Some(_))));
        }
        Ok(out)
    }

    /// Whether any gap found before `found_before_ms` is still missing
    /// without an alarm (a read, so the check costs no fsync).
    pub fn gaps_due(&self, found_before_ms: u64) -> Result<bool, StoreError> {
        let txn = self.db.begin_read()?;
        let gaps = txn.open_table(GAPS)?;
        for entry in gaps.iter()? {
            let (_, v) = entry?;
            let (_, found, alarm) = v.value();
            if alarm == 0 && found < found_before_ms {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Every device that has sent an event (not the gateways themselves),
    /// with its gateway, the resident named on its latest event and when it
    /// was first heard of. One range read per device, not per event.
    pub fn devices(&self) -> Result<Vec<KnownDevice>, StoreError> {
        use std::ops::Bound;
        let txn = self.db.begin_read()?;
        let by_device = txn.open_table(DEVICE_EVENTS)?;
        let events = txn.open_table(EVENTS)?;
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let first = match &after {
                None => by_device.iter()?.next(),
                Some(d) => by_device
                    .range::<(&str, u64)>((
                        Bound::Excluded((d.as_str(), u64::MAX)),
                        Bound::Unbounded,
                    ))?
                    .next(),
            };
            let Some(first) = first else { break };
            let (key, first_id) = first?;
            let device = key.value().0.to_string();
            let first_id = first_id.value().to_string();
            let last_id = match by_device
                .range((device.as_str(), 0u64)..=(device.as_str(), u64::MAX))?
                .next_back()
            {
                Some(e) => e?.1.value().to_string(),
                None => first_id.clone(),
            };
            let read = |id: &str| -> Result<Option<StoredEvent>, StoreError> {
                events.get(id)?.map(|v| from_json(v.value())).transpose()
            };
            if let (Some(first), Some(last)) = (read(&first_id)?, read(&last_id)?) {
                // Listed under its key: a device, or a device a gateway
                // raised an event about (`subject`); not the gateway itself.
                if device != last.gateway {
                    out.push(KnownDevice {
                        gateway: last.gateway,
                        device: device.clone(),
                        resident: last.resident,
                        first_ms: first.stored_ms,
                    });
                }
            }
            after = Some(device);
        }
        Ok(out)
    }

    /// Whether any open alarm's next escalation step has come by
    /// `as_of_ms` (a read, so the check costs no fsync).
    pub fn escalations_due(
        &self,
        policy: &crate::escalation::EscalationConfig,
        as_of_ms: u64,
    ) -> Result<bool, StoreError> {
        let txn = self.db.begin_read()?;
        let ids = not_closed(&txn.open_table(OPEN_ALARMS)?, &txn.open_table(GAPS)?)?;
        let alarms = txn.open_table(ALARMS)?;
        for id in ids {
            if let Some(v) = alarms.get(id)? {
                let alarm: Alarm = from_json(v.value())?;
                if policy
                    .next_due_ms(&alarm)
                    .is_some_and(|due| due <= as_of_ms)
                {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    pub fn alarm(&self, id: u64) -> Result<Option<Alarm>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ALARMS)?;
        table.get(id)?.map(|v| from_json(v.value())).transpose()
    }

    /// The newest events first, of one device or of all.
    pub fn events(
        &self,
        device: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let txn = self.db.begin_read()?;
        let events = txn.open_table(EVENTS)?;
        let ids: Vec<String> = match device {
            Some(d) => {
                let t = txn.open_table(DEVICE_EVENTS)?;
                let mut ids = Vec::new();
                for entry in t.range((d, 0u64)..=(d, u64::MAX))?.rev().take(limit) {
                    ids.push(entry?.1.value().to_string());
                }
                ids
            }
            None => {
                let t = txn.open_table(EVENT_ORDER)?;
                let mut ids = Vec::new();
                for entry in t.iter()?.rev().take(limit) {
                    ids.push(entry?.1.value().to_string());
                }
                ids
            }
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(v) = events.get(id.as_str())? {
                out.push(from_json(v.value())?);
            }
        }
        Ok(out)
    }

    /// The newest dead letters first.
    pub fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(DEAD_LETTERS)?;
        let mut out = Vec::new();
        for entry in table.iter()?.rev().take(limit) {
            out.push(from_json(entry?.1.value())?);
        }
        Ok(out)
    }
}

fn ingest_batch(txn: &WriteTransaction, batch: &Batch, now_ms: u64) -> Result<Done, StoreError> {
    let gw = batch.gateway.as_str();
    let mut ledger = Ledger::default();
    {
        let events = txn.open_table(EVENTS)?;
        for r in &batch.records {
            let id = trygg_uplink::contract::event_id(gw, &r.device, r.device_seq);
            if events.get(id.as_str())?.is_some() {
                ledger.stored.insert(id);
            }
        }
        let lanes = txn.open_table(LANES)?;
        for lane in Lane::ALL {
            if let Some(high) = lanes.get((gw, lane as u8))? {
                ledger.lane_high.insert(lane, high.value());
            }
        }
    }
    let mut ingested = ingest::ingest(&mut ledger, batch, now_ms);
    {
        let mut lanes = txn.open_table(LANES)?;
        for (lane, high) in &ledger.lane_high {
            lanes.insert((gw, *lane as u8), *high)?;
        }
    }
    {
        let mut events = txn.open_table(EVENTS)?;
        let mut order = txn.open_table(EVENT_ORDER)?;
        let mut by_device = txn.open_table(DEVICE_EVENTS)?;
        for e in &ingested.events {
            let n = next(txn, "event")?;
            events.insert(e.event_id.as_str(), to_json(e).as_slice())?;
            order.insert(n, e.event_id.as_str())?;
            by_device.insert((e.device.as_str(), n), e.event_id.as_str())?;
            if let Some(subject) = e.subject.as_deref().filter(|s| *s != e.device) {
                by_device.insert((subject, n), e.event_id.as_str())?;
            }
        }
    }
    let mut fx = Effects::default();
    // New gaps wait for their grace period; records below the highest may
    // fill earlier ones (and clear their alarm once a gap is whole again).
    {
        let mut gaps = txn.open_table(GAPS)?;
        for g in &ingested.gaps {
            gaps.insert((gw, g.lane as u8, g.first), (g.last, now_ms, 0))?;
        }
    }
    let mut filled_alarms = Vec::new();
    let mut regressions = Vec::new();
    for r in std::mem::take(&mut ingested.regressions) {
        match fill_gap(txn, gw, r.lane, r.seq)? {
            Fill::NotInAGap => regressions.push(r),
            Fill::Filled { emptied_alarm } => {
                ingested.filled += 1;
                filled_alarms.extend(emptied_alarm);
            }
        }
    }
    ingested.regressions = regressions;
    for new in &ingested.alarms {
        raise_or_repeat(txn, new, now_ms, &mut fx)?;
    }
    for id in filled_alarms {
        clear_by_id(
            txn,
            id,
            "Cleared by the system: the missing records arrived after all. / Avsluttet av systemet: de manglende hendelsene kom likevel.",
            now_ms,
            &mut fx,
        )?;
    }
    for c in &ingested.clears {
        clear(txn, &c.gateway, &c.device, c.kind, &c.note, now_ms, &mut fx)?;
    }
    Ok(Done::Ingested {
        ingested,
        raised: fx.raised,
        repeated: fx.repeated,
        cleared: fx.cleared,
    })
}

/// What raising and clearing did to alarms in one operation.
#[derive(Default)]
struct Effects {
    raised: Vec<Alarm>,
    repeated: Vec<Alarm>,
    cleared: Vec<Alarm>,
}

/// Opens an alarm for `new`, or counts it as a repeat of the alarm of the
/// same device and kind that is not closed yet. Raises nothing for an
/// event id that already raised or repeated one (a redelivered batch, a
/// gap alarm named by its gap). Returns the id of the alarm the event
/// belongs to.
fn raise_or_repeat(
    txn: &WriteTransaction,
    new: &crate::alarm::NewAlarm,
    now_ms: u64,
    fx: &mut Effects,
) -> Result<u64, StoreError> {
    let mut alarms = txn.open_table(ALARMS)?;
    let mut alarm_events = txn.open_table(ALARM_EVENTS)?;
    let mut open = txn.open_table(OPEN_ALARMS)?;
    if let Some(id) = alarm_events.get(new.event_id.as_str())? {
        return Ok(id.value());
    }
    let key = (new.gateway.as_str(), new.device.as_str(), new.kind.wire());
    let open_id = open.get(key)?.map(|v| v.value());
    if let Some(id) = open_id {
        let found = alarms
            .get(id)?
            .map(|v| from_json::<Alarm>(v.value()))
            .transpose()?;
        if let Some(mut alarm) = found.filter(|a| a.takes_repeats()) {
            alarm.repeat(now_ms);
            alarms.insert(id, to_json(&alarm).as_slice())?;
            alarm_events.insert(new.event_id.as_str(), id)?;
            fx.repeated.push(alarm);
            return Ok(id);
        }
    }
    let id = next(txn, "alarm")?;
    let alarm = Alarm::raise(id, new.clone(), now_ms);
    alarms.insert(id, to_json(&alarm).as_slice())?;
    alarm_events.insert(new.event_id.as_str(), id)?;
    if alarm.takes_repeats() {
        open.insert(key, id)?;
    }
    fx.raised.push(alarm);
    Ok(id)
}

enum Fill {
    NotInAGap,
    /// The record was missing. If its gap is now whole and no other part
    /// of it is missing, the gap's alarm (if raised) can be cleared.
    Filled {
        emptied_alarm: Option<u64>,
    },
}

/// A record with lane sequence `seq` arrived: take it out of the gap that
/// holds it, splitting the gap if it was in the middle.
fn fill_gap(txn: &WriteTransaction, gw: &str, lane: Lane, seq: u64) -> Result<Fill, StoreError> {
    let mut gaps = txn.open_table(GAPS)?;
    let l = lane as u8;
    let holder = match gaps.range((gw, l, 0)..=(gw, l, seq))?.next_back() {
        Some(entry) => {
            let (k, v) = entry?;
            let (_, _, first) = k.value();
            let (last, found, alarm) = v.value();
            (last >= seq).then_some((first, last, found, alarm))
        }
        None => None,
    };
    let Some((first, last, found, alarm)) = holder else {
        return Ok(Fill::NotInAGap);
    };
    gaps.remove((gw, l, first))?;
    if first < seq {
        gaps.insert((gw, l, first), (seq - 1, found, alarm))?;
    }
    if seq < last {
        gaps.insert((gw, l, seq + 1), (last, found, alarm))?;
    }
    let mut emptied_alarm = None;
    if alarm != 0 && first == seq && last == seq {
        let mut still = false;
        for entry in gaps.range((gw, l, 0)..=(gw, l, u64::MAX))? {
            if entry?.1.value().2 == alarm {
                still = true;
                break;
            }
        }
        if !still {
            emptied_alarm = Some(alarm);
        }
    }
    Ok(Fill::Filled { emptied_alarm })
}

/// Raises `sequence_gap` for every gap found before `found_before_ms`
/// that is still missing and has no alarm yet.
fn raise_gaps(
    txn: &WriteTransaction,
    found_before_ms: u64,
    now_ms: u64,
    fx: &mut Effects,
) -> Result<(), StoreError> {
    let due: Vec<(String, u8, u64, u64, u64)> = {
        let gaps = txn.open_table(GAPS)?;
        let mut due = Vec::new();
        for entry in gaps.iter()? {
            let (k, v) = entry?;
            let (gw, lane, first) = k.value();
            let (last, found, alarm) = v.value();
            if alarm == 0 && found < found_before_ms {
                due.push((gw.to_string(), lane, first, last, found));
            }
        }
        due
    };
    for (gw, lane, first, last, found) in due {
        let Some(lane_v) = Lane::ALL.into_iter().find(|x| *x as u8 == lane) else {
            continue;
        };
        let gap = ingest::Gap {
            lane: lane_v,
            first,
            last,
        };
        let id = raise_or_repeat(txn, &ingest::gap_alarm(&gw, gap), now_ms, fx)?;
        txn.open_table(GAPS)?
            .insert((gw.as_str(), lane, first), (last, found, id))?;
    }
    Ok(())
}

/// Closes, as the system, the open alarm of this device and kind.
fn clear(
    txn: &WriteTransaction,
    gateway: &str,
    device: &str,
    kind: EventKind,
    note: &str,
    now_ms: u64,
    fx: &mut Effects,
) -> Result<(), StoreError> {
    let open = txn
        .open_table(OPEN_ALARMS)?
        .remove((gateway, device, kind.wire()))?
        .map(|v| v.value());
    match open {
        Some(id) => clear_by_id(txn, id, note, now_ms, fx),
        None => Ok(()),
    }
}

/// Closes alarm `id` as the system, if it is not closed yet.
fn clear_by_id(
    txn: &WriteTransaction,
    id: u64,
    note: &str,
    now_ms: u64,
    fx: &mut Effects,
) -> Result<(), StoreError> {
    let mut alarms = txn.open_table(ALARMS)?;
    let found = alarms
        .get(id)?
        .map(|v| from_json::<Alarm>(v.value()))
        .transpose()?;
    if let Some(mut alarm) = found {
        if alarm.clear(note, now_ms).is_some() {
            alarms.insert(id, to_json(&alarm).as_slice())?;
            fx.cleared.push(alarm);
        }
    }
    Ok(())
}

fn act(
    txn: &WriteTransaction,
    id: u64,
    transition: impl FnOnce(&mut Alarm) -> Result<Option<Change>, WorkflowError>,
) -> Result<ActionOutcome, StoreError> {
    let mut table = txn.open_table(ALARMS)?;
    let found = table
        .get(id)?
        .map(|v| from_json::<Alarm>(v.value()))
        .transpose()?;
    let Some(mut alarm) = found else {
        return Ok(Err(ActionError::NotFound(id)));
    };
    match transition(&mut alarm) {
        Ok(change) => {
            if change.is_some() {
                table.insert(id, to_json(&alarm).as_slice())?;
            }
            if change == Some(Change::Closed) {
                let mut open = txn.open_table(OPEN_ALARMS)?;
                let key = (
                    alarm.gateway.as_str(),
                    alarm.device.as_str(),
                    alarm.kind.wire(),
                );
                if open.get(key)?.is_some_and(|v| v.value() == id) {
                    open.remove(key)?;
                }
            }
            Ok(Ok((Box::new(alarm), change)))
        }
        Err(e) => Ok(Err(e.into())),
    }
}

/// The alarms that may not be closed: those of `open_alarms`, and the gap
/// alarms, which take no repeats and so are only in `gaps`. A superset
/// (an alarm closed by hand keeps its gap until it is filled): the caller
/// checks each alarm's state.
fn not_closed(
    open: &impl ReadableTable<(&'static str, &'static str, &'static str), u64>,
    gaps: &impl ReadableTable<(&'static str, u8, u64), (u64, u64, u64)>,
) -> Result<std::collections::BTreeSet<u64>, StoreError> {
    let mut ids = std::collections::BTreeSet::new();
    for entry in open.iter()? {
        ids.insert(entry?.1.value());
    }
    for entry in gaps.iter()? {
        let alarm = entry?.1.value().2;
        if alarm != 0 {
            ids.insert(alarm);
        }
    }
    Ok(ids)
}

/// Takes every escalation step that has come by `as_of_ms`, with an audit
/// entry for each in this transaction.
fn escalate(
    txn: &WriteTransaction,
    policy: &crate::escalation::EscalationConfig,
    as_of_ms: u64,
) -> Result<Vec<Alarm>, StoreError> {
    let ids = not_closed(&txn.open_table(OPEN_ALARMS)?, &txn.open_table(GAPS)?)?;
    let mut alarms = txn.open_table(ALARMS)?;
    let mut out = Vec::new();
    for id in ids {
        let found = alarms
            .get(id)?
            .map(|v| from_json::<Alarm>(v.value()))
            .transpose()?;
        let Some(mut alarm) = found else { continue };
        if !policy.applies_to(&alarm) {
            continue;
        }
        let taken = alarm.escalate(&policy.chain, as_of_ms);
        if taken.is_empty() {
            continue;
        }
        alarms.insert(id, to_json(&alarm).as_slice())?;
        for e in &taken {
            let after_s = policy
                .chain
                .get(usize::from(e.level))
                .map_or(0, |s| s.after_s);
            crate::access::append_audit(
                txn,
                crate::access::AuditEntry::new(
                    crate::alarm::SYSTEM_ACTOR,
                    "escalate",
                    &format!("alarm/{id}"),
                    &format!(
                        "ok: level {} to {}, unacknowledged {after_s} s",
                        e.level, e.group
                    ),
                    "",
                    as_of_ms,
                ),
            )?;
        }
        out.push(alarm);
    }
    Ok(out)
}

/// Hands out the next number of a counter, starting at 1.
/// Carries out one operation within `txn`.
fn apply(txn: &WriteTransaction, op: Op, now_ms: u64) -> Result<Done, StoreError> {
    Ok(match op {
        Op::Ingest(batch) => ingest_batch(txn, &batch, now_ms)?,
        Op::DeadLetter {
            reason,
            message,
            topic,
            payload,
        } => {
            let id = next(txn, "dead_letter")?;
            let cut = &payload[..payload.len().min(MAX_DEAD_LETTER_PAYLOAD)];
            let letter = DeadLetter {
                id,
                at_ms: now_ms,
                reason: reason.into(),
                message,
                topic,
                payload: String::from_utf8_lossy(cut).into_owned(),
                payload_bytes: payload.len(),
            };
            txn.open_table(DEAD_LETTERS)?
                .insert(id, to_json(&letter).as_slice())?;
            Done::DeadLettered(letter)
        }
        Op::Acknowledge { alarm, by } => {
            Done::Alarm(act(txn, alarm, |a| a.acknowledge(&by, now_ms))?)
        }
        Op::Close {
            alarm,
            by,
            note,
            cause,
        } => Done::Alarm(act(txn, alarm, |a| {
            a.close(&by, note.as_deref(), cause, now_ms).map(Some)
        })?),
        Op::GatewayOffline { gateway, silent_s } => {
            let mut fx = Effects::default();
            let new = crate::alarm::NewAlarm {
                    event_id: format!("{gateway}/gateway-offline/{now_ms}"),
                    gateway: gateway.clone(),
                    device: gateway.clone(),
                    device_seq: 0,
                    kind: EventKind::GatewayOffline,
                    resident: None,
                    room: None,
                    detail: Some(format!(
                        "nothing heard from the gateway for {silent_s} s / ingenting hørt fra gatewayen på {silent_s} s"
                    )),
                    gateway_committed_ms: None,
                    device_ts: None,
                };
            raise_or_repeat(txn, &new, now_ms, &mut fx)?;
            Done::Supervised {
                gateway,
                raised: fx.raised,
                cleared: fx.cleared,
            }
        }
        Op::AccessRefused {
            gateway,
            subject,
            detail,
        } => {
            let mut fx = Effects::default();
            let new = crate::alarm::NewAlarm {
                event_id: format!("{gateway}/access-refused/{subject}/{now_ms}"),
                gateway: gateway.clone(),
                device: subject,
                device_seq: 0,
                kind: EventKind::AccessRefused,
                resident: None,
                room: None,
                detail: Some(detail),
                gateway_committed_ms: None,
                device_ts: None,
            };
            raise_or_repeat(txn, &new, now_ms, &mut fx)?;
            Done::Supervised {
                gateway,
                raised: fx.raised,
                cleared: fx.cleared,
            }
        }
        Op::RaiseGaps { found_before_ms } => {
            let mut fx = Effects::default();
            raise_gaps(txn, found_before_ms, now_ms, &mut fx)?;
            Done::Supervised {
                gateway: String::new(),
                raised: fx.raised,
                cleared: fx.cleared,
            }
        }
        Op::GatewayBack { gateway } => {
            let mut fx = Effects::default();
            clear(
                    txn,
                    &gateway,
                    &gateway,
                    EventKind::GatewayOffline,
                    "Cleared by the system: the gateway is heard from again. / Avsluttet av systemet: gatewayen er tilbake.",
                    now_ms,
                    &mut fx,
                )?;
            Done::Supervised {
                gateway,
                raised: fx.raised,
                cleared: fx.cleared,
            }
        }
        Op::Escalate { policy, as_of_ms } => Done::Escalated(escalate(txn, &policy, as_of_ms)?),
        Op::Audited(op, mut entry) => {
            let done = apply(txn, *op, now_ms)?;
            if let Done::Alarm(Err(e)) = &done {
                entry.outcome = format!("refused: {e}");
            }
            crate::access::append_audit(txn, entry)?;
            done
        }
    })
}

fn next(txn: &WriteTransaction, name: &str) -> Result<u64, StoreError> {
    let mut t = txn.open_table(COUNTERS)?;
    let n = t.get(name)?.map(|v| v.value()).unwrap_or(0) + 1;
    t.insert(name, n)?;
    Ok(n)
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("store records serialize")
}

fn from_json<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A change to an alarm, as the stream tells it.
#[derive(Clone, Debug, Serialize)]
pub struct AlarmChange {
    pub change: Change,
    pub alarm: Alarm,
}

type Reply = oneshot::Sender<Result<Done, StoreError>>;

/// The handle to the one thread that writes. Cheap to clone; the thread
/// ends, after committing what it was given, once every handle is gone.
#[derive(Clone)]
pub struct StoreWriter {
    tx: mpsc::Sender<(Op, Reply)>,
}

impl StoreWriter {
    /// Starts the writer thread. Join the returned handle to know the last
    /// commit is done.
    pub fn spawn(
        store: Store,
        metrics: Arc<Metrics>,
        changes: broadcast::Sender<AlarmChange>,
    ) -> (StoreWriter, std::thread::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<(Op, Reply)>(4096);
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    let mut group = vec![first];
                    while group.len() < MAX_GROUP {
                        match rx.try_recv() {
                            Ok(op) => group.push(op),
                            Err(_) => break,
                        }
                    }
                    let (ops, replies): (Vec<Op>, Vec<Reply>) = group.into_iter().unzip();
                    let n = ops.len();
                    match store.commit(ops, now_ms()) {
                        Ok(done) => {
                            metrics.inc("store_commits_total", "");
                            metrics.add("store_ops_committed_total", "", n as u64);
                            for (d, reply) in done.into_iter().zip(replies) {
                                report(&d, &metrics, &changes);
                                let _ = reply.send(Ok(d));
                            }
                        }
                        Err(e) => {
                            metrics.inc("store_commit_failures_total", "");
                            tracing::error!(error = %e, ops = n, "store commit failed");
                            let text = e.to_string();
                            for reply in replies {
                                let _ = reply.send(Err(StoreError::CommitFailed(text.clone())));
                            }
                        }
                    }
                }
                tracing::info!("store writer stopped");
            })
            .expect("spawning the store writer");
        (StoreWriter { tx }, handle)
    }

    /// Commits `op` (with whatever else is waiting) and returns what it came
    /// to, once durable.
    pub async fn submit(&self, op: Op) -> Result<Done, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((op, reply))
            .await
            .map_err(|_| StoreError::Stopped)?;
        answer.await.map_err(|_| StoreError::Stopped)?
    }

    /// Queues `op` now and returns a future for its outcome, so the caller
    /// can take its next input while this one commits.
    pub async fn enqueue(
        &self,
        op: Op,
    ) -> Result<oneshot::Receiver<Result<Done, StoreError>>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((op, reply))
            .await
            .map_err(|_| StoreError::Stopped)?;
        Ok(answer)
    }
}

/// Logs once and counts once for each committed thing worth telling, and
/// tells the alarm stream.
fn report(done: &Done, metrics: &Metrics, changes: &broadcast::Sender<AlarmChange>) {
    match done {
        Done::Supervised {
            gateway,
            raised,
            cleared,
        } => {
            for a in raised {
                if a.kind == EventKind::SequenceGap {
                    tracing::warn!(alarm = a.id, gateway = %a.gateway, detail = a.detail.as_deref().unwrap_or(""), "sequence gap still missing after the grace period: alarm raised");
                } else {
                    metrics.inc("gateways_offline_raised_total", "");
                    tracing::warn!(alarm = a.id, gateway = %gateway, "gateway offline: alarm raised");
                }
                let _ = changes.send(AlarmChange {
                    change: Change::New,
                    alarm: a.clone(),
                });
            }
            for a in cleared {
                tracing::info!(alarm = a.id, kind = %a.kind, gateway = %a.gateway, "alarm cleared by the system");
                let _ = changes.send(AlarmChange {
                    change: Change::Closed,
                    alarm: a.clone(),
                });
            }
        }
        Done::Ingested {
            ingested,
            raised,
            repeated,
            cleared,
        } => {
            let gw = ingested.gateway.as_str();
            metrics.add("records_stored_total", "", ingested.events.len() as u64);
            if !ingested.duplicates.is_empty() {
                metrics.add(
                    "records_duplicate_total",
                    "",
                    ingested.duplicates.len() as u64,
                );
                tracing::info!(
                    gateway = gw,
                    count = ingested.duplicates.len(),
                    "duplicate records receipted again"
                );
            }
            if ingested.filled > 0 {
                metrics.add("sequence_gaps_filled_total", "", ingested.filled);
            }
            for g in &ingested.gaps {
                metrics.inc("sequence_gaps_total", "");
                tracing::warn!(gateway = gw, lane = %g.lane, first = g.first, last = g.last, "sequence gap found: alarm if still missing after the grace period");
            }
            for r in &ingested.regressions {
                metrics.inc("sequence_regressions_total", "");
                tracing::warn!(gateway = gw, lane = %r.lane, seq = r.seq, highest = r.highest, "sequence went back; new event accepted");
            }
            for a in raised {
                metrics.inc(
                    "alarms_raised_total",
                    &format!("severity=\"{}\"", a.severity),
                );
                tracing::info!(alarm = a.id, kind = %a.kind, gateway = gw, device = %a.device, "alarm raised");
                let _ = changes.send(AlarmChange {
                    change: Change::New,
                    alarm: a.clone(),
                });
            }
            for a in repeated {
                metrics.inc("alarm_repeats_total", "");
                tracing::info!(alarm = a.id, kind = %a.kind, gateway = gw, device = %a.device, repeats = a.repeats, "alarm repeated");
                let _ = changes.send(AlarmChange {
                    change: Change::Repeated,
                    alarm: a.clone(),
                });
            }
            for a in cleared {
                tracing::info!(alarm = a.id, kind = %a.kind, gateway = gw, device = %a.device, "alarm cleared by the system");
                let _ = changes.send(AlarmChange {
                    change: Change::Closed,
                    alarm: a.clone(),
                });
            }
        }
        Done::DeadLettered(d) => {
            tracing::debug!(id = d.id, reason = %d.reason, "dead letter kept");
        }
        Done::Alarm(Ok((alarm, Some(change)))) => {
            let by = match change {
                Change::Closed => alarm.closed_by.as_deref(),
                _ => alarm.acknowledged_by.as_deref(),
            };
            tracing::info!(alarm = alarm.id, change = ?change, by = by.unwrap_or(""), "alarm changed");
            let _ = changes.send(AlarmChange {
                change: *change,
                alarm: alarm.as_ref().clone(),
            });
        }
        Done::Alarm(_) => {}
        Done::Escalated(alarms) => {
            for a in alarms {
                metrics.inc("alarms_escalated_total", "");
                tracing::warn!(alarm = a.id, kind = %a.kind, level = a.escalation_level, group = a.escalated_to.as_deref().unwrap_or(""), "alarm not acknowledged in time: escalated");
                let _ = changes.send(AlarmChange {
                    change: Change::Escalated,
                    alarm: a.clone(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::tests::{batch, record};

    #[test]
    fn committed_state_survives_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bridge.redb");
        let b = batch(
            1,
            vec![
                record(Lane::Alarm, 1, "button-1", 1, EventKind::ButtonPress),
                record(Lane::Telemetry, 1, "pir-1", 1, EventKind::Motion),
            ],
        );
        {
            let store = Store::open(&path).unwrap();
            let done = store.commit(vec![Op::Ingest(b.clone())], 10).unwrap();
            let Done::Ingested { raised, .. } = &done[0] else {
                panic!("{done:?}")
            };
            assert_eq!(raised.len(), 1);
            let done = store
                .commit(
                    vec![Op::Acknowledge {
                        alarm: raised[0].id,
                        by: "kari".into(),
                    }],
                    20,
                )
                .unwrap();
            assert!(matches!(
                &done[0],
                Done::Alarm(Ok((_, Some(Change::Acknowledged))))
            ));
        }
        let store = Store::open(&path).unwrap();
        let alarms = store.alarms(None).unwrap();
        assert_eq!(alarms.len(), 1);
        assert_eq!(alarms[0].state, AlarmState::Acknowledged);
        assert_eq!(alarms[0].acknowledged_by.as_deref(), Some("kari"));
        assert_eq!(store.events(None, 10).unwrap().len(), 2);
        assert_eq!(store.events(Some("pir-1"), 10).unwrap().len(), 1);

        // The same batch after the restart: a duplicate, not a second alarm;
        // the lane high survived too, so no gap either.
        let done = store.commit(vec![Op::Ingest(b)], 30).unwrap();
        let Done::Ingested {
            ingested, raised, ..
        } = &done[0]
        else {
            panic!("{done:?}")
        };
        assert!(raised.is_empty() && ingested.gaps.is_empty());
        assert_eq!(ingested.duplicates.len(), 2);
        assert_eq!(store.alarms(None).unwrap().len(), 1);
        let next = batch(
            2,
            vec![record(
                Lane::Alarm,
                3,
                "button-1",
                2,
                EventKind::ButtonPress,
            )],
        );
        let done = store.commit(vec![Op::Ingest(next)], 40).unwrap();
        let Done::Ingested { ingested, .. } = &done[0] else {
            panic!("{done:?}")
        };
        assert_eq!(ingested.gaps.len(), 1, "seq 2 is missing after the restart");
    }

    #[test]
    fn group_commit_sees_earlier_batches_of_the_same_group() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("bridge.redb")).unwrap();
        let b = batch(
            1,
            vec![record(
                Lane::Alarm,
                1,
                "button-1",
                1,
                EventKind::ButtonPress,
            )],
        );
        let done = store
            .commit(vec![Op::Ingest(b.clone()), Op::Ingest(b)], 10)
            .unwrap();
        assert_eq!(done.len(), 2);
        assert_eq!(store.alarms(Some(AlarmState::Open)).unwrap().len(), 1);
    }

    #[test]
    fn refused_action_does_not_spoil_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("bridge.redb")).unwrap();
        let b = batch(
            1,
            vec![record(
                Lane::Alarm,
                1,
                "button-1",
                1,
                EventKind::ButtonPress,
            )],
        );
        let done = store
            .commit(
                vec![
                    Op::Ingest(b),
                    Op::Close {
                        alarm: 1,
                        by: "kari".into(),
                        note: None,
                        cause: None,
                    },
                    Op::Acknowledge {
                        alarm: 99,
                        by: "kari".into(),
                    },
                    Op::Acknowledge {
                        alarm: 1,
                        by: "ola".into(),
                    },
                ],
                10,
            )
            .unwrap();
        assert!(matches!(
            &done[1],
            Done::Alarm(Err(ActionError::Workflow(WorkflowError::Invalid(_))))
        ));
        assert!(matches!(
            &done[2],
            Done::Alarm(Err(ActionError::NotFound(99)))
        ));
        assert_eq!(
            store.alarm(1).unwrap().unwrap().acknowledged_by.as_deref(),
            Some("ola")
        );
    }

    #[test]
    fn dead_letter_payload_is_cut_at_64_kib() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("bridge.redb")).unwrap();
        store
            .commit(
                vec![Op::DeadLetter {
                    reason: "too_large",
                    message: "big".into(),
                    topic: "trygg/v1/gw/gw-1/batch".into(),
                    payload: vec![b'x'; 100_000],
                }],
                10,
            )
            .unwrap();
        let letters = store.dead_letters(10).unwrap();
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].payload.len(), MAX_DEAD_LETTER_PAYLOAD);
        assert_eq!(letters[0].payload_bytes, 100_000);
    }

    fn ingested(done: &[Done]) -> (&Vec<Alarm>, &Vec<Alarm>, &Vec<Alarm>) {
        match &done[0] {
            Done::Ingested {
                raised,
                repeated,
                cleared,
                ..
            } => (raised, repeated, cleared),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn repeats_of_an_open_alarm_are_counted_on_it_until_it_is_closed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("bridge.redb")).unwrap();
        let door = |seq: u64| record(Lane::Alarm, seq, "door-1", seq, EventKind::Wandering);
        let done = store
            .commit(vec![Op::Ingest(batch(1, vec![door(1)]))], 10)
            .unwrap();
        let id = ingested(&done).0[0].id;
        // Twenty more from the same door while it is open: one alarm.
        let more: Vec<_> = (2..=21).map(door).collect();
        let done = store.commit(vec![Op::Ingest(batch(2, more))], 20).unwrap();
        let (raised, repeated, _) = ingested(&done);
        assert!(raised.is_empty());
        assert_eq!(repeated.last().unwrap().repeats, 20);
        assert_eq!(store.alarms(None).unwrap().len(), 1);
        // Every event is still stored.
        assert_eq!(store.events(Some("door-1"), 100).unwrap().len(), 21);
        // Another kind from the same device is an alarm of its own.
        let fall = record(Lane::Alarm, 22, "door-1", 22, EventKind::Fall);
        let done = store
            .commit(vec![Op::Ingest(batch(3, vec![fall]))], 25)
            .unwrap();
        assert_eq!(ingested(&done).0.len(), 1);
        // Once closed, the next press opens a new alarm.
        store
            .commit(
                vec![Op::Close {
                    alarm: id,
                    by: "kari".into(),
                    note: Some("door closed".into()),
                    cause: Some(crate::alarm::Cause::Real),
                }],
                30,
            )
            .unwrap();
        let done = store
            .commit(vec![Op::Ingest(batch(4, vec![door(23)]))], 40)
            .unwrap();
        assert_eq!(ingested(&done).0.len(), 1);
        assert_ne!(ingested(&done).0[0].id, id);
    }

    #[test]
    fn power_restored_clears_the_power_failure_alarm_of_that_device_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("bridge.redb")).unwrap();
        let ev = |seq: u64, device: &str, kind| record(Lane::Care, seq, device, seq, kind);
        store
            .commit(
                vec![Op::Ingest(batch(
                    1,
                    vec![
                        ev(1, "gw-1", EventKind::PowerFailure),
                        ev(2, "dispenser-1", EventKind::PowerFailure),
                    ],
                ))],
                10,
            )
            .unwrap();
        let done = store
            .commit(
                vec![Op::Ingest(batch(
                    2,
                    vec![ev(3, "gw-1", EventKind::PowerRestored)],
                ))],
                20,
            )
            .unwrap();
        let cleared = &ingested(&done).2;
        assert_eq!(cleared.len(), 1);
        assert_eq!(cleared[0].device, "gw-1");
        assert!(cleared[0]
            .note
            .as_deref()
            .unwrap_or("")
            .contains("mains power is back"));
        let open = store.alarms(Some(AlarmState::Open)).unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].device, "dispenser-1");
    }

    #[test]
    fn a_device_whose_latest_event_the_gateway_raised_about_it_is_still_a_known_device() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("bridge.redb")).unwrap();
        let press = record(Lane::Alarm, 1, "button-1", 1, EventKind::ButtonPress);
        let mut test = record(Lane::Care, 1, "gw-1", 1, EventKind::TestAlarm);
        test.subject = Some("button-1".into());
        store
            .commit(vec![Op::Ingest(batch(1, vec![press, test]))], 10)
            .unwrap();
        let known: Vec<String> = store
            .devices()
            .unwrap()
            .into_iter()
            .map(|d| d.device)
            .collect();
        assert_eq!(known, ["button-1"], "listed once, the gateway not at all");
        let listed = store.events(Some("button-1"), 10).unwrap();
        assert_eq!(
            listed.len(),
            2,
            "the test alarm is listed under the device too"
        );
    }

    #[test]
    fn device_resumed_clears_the_devices_silent_alarm() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("bridge.redb")).unwrap();
        let system = |seq: u64, kind| {
            let mut r = record(Lane::Care, seq, "gw-1", seq, kind);
            r.subject = Some("button-1".into());
            r.value = Some(1000.0);
            r
        };
        let done = store
            .commit(
                vec![Op::Ingest(batch(
                    1,
                    vec![system(1, EventKind::DeviceSilent)],
                ))],
                10,
            )
            .unwrap();
        let silent = &ingested(&done).0[0];
        assert_eq!(silent.device, "button-1", "shown as the silent device's");
        assert!(silent.detail.as_deref().unwrap().contains("1000 s"));
        let done = store
            .commit(
                vec![Op::Ingest(batch(
                    2,
                    vec![system(2, EventKind::DeviceResumed)],
                ))],
                20,
            )
            .unwrap();
        let cleared = &ingested(&done).2;
        assert_eq!(cleared.len(), 1);
        assert_eq!(cleared[0].state, AlarmState::Closed);
        assert_eq!(
            cleared[0].closed_by.as_deref(),
            Some(crate::alarm::SYSTEM_ACTOR)
        );
        assert!(store.alarms(Some(AlarmState::Open)).unwrap().is_empty());
    }

    #[test]
    fn gateway_offline_is_raised_once_and_cleared_when_it_is_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bridge.redb");
        {
            let store = Store::open(&path).unwrap();
            store
                .commit(
                    vec![Op::Ingest(batch(
                        1,
                        vec![record(Lane::Telemetry, 1, "m", 1, EventKind::Motion)],
                    ))],
                    5,
                )
                .unwrap();
            assert_eq!(store.gateways().unwrap(), vec![("gw-1".to_string(), false)]);
            let off = || Op::GatewayOffline {
                gateway: "gw-1".into(),
                silent_s: 181,
            };
            let done = store.commit(vec![off()], 10).unwrap();
            let Done::Supervised { raised, .. } = &done[0] else {
                panic!("{done:?}")
            };
            assert_eq!(raised[0].kind, EventKind::GatewayOffline);
            assert_eq!(raised[0].severity, "yellow");
            assert_eq!(store.gateways().unwrap(), vec![("gw-1".to_string(), true)]);
        }
        // Remembered across a restart, and cleared by the next sign of life.
        let store = Store::open(&path).unwrap();
        let done = store
            .commit(
                vec![Op::GatewayBack {
                    gateway: "gw-1".into(),
                }],
                20,
            )
            .unwrap();
        let Done::Supervised { cleared, .. } = &done[0] else {
            panic!("{done:?}")
        };
        assert_eq!(cleared.len(), 1);
        assert!(store.alarms(Some(AlarmState::Open)).unwrap().is_empty());
        assert_eq!(store.gateways().unwrap(), vec![("gw-1".to_string(), false)]);
    }

    #[test]
    fn a_gap_raises_its_alarm_only_after_the_grace_period_and_is_cleared_when_filled() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("bridge.redb")).unwrap();
        let m = |seq: u64| record(Lane::Telemetry, seq, "m", seq, EventKind::Motion);
        store
            .commit(vec![Op::Ingest(batch(1, vec![m(1), m(6)]))], 1000)
            .unwrap();
        // Found at 1000: not due for a grace that ends before it.
        assert!(!store.gaps_due(1000).unwrap());
        assert!(store.gaps_due(1001).unwrap());
        let done = store
            .commit(
                vec![Op::RaiseGaps {
                    found_before_ms: 1001,
                }],
                2000,
            )
            .unwrap();
        let Done::Supervised { raised, .. } = &done[0] else {
            panic!("{done:?}")
        };
        assert_eq!(raised.len(), 1);
        assert_eq!(
            raised[0].detail.as_deref(),
            Some("lane telemetry: sequence 2 to 5 missing")
        );
        assert!(!store.gaps_due(u64::MAX).unwrap(), "raised once");
        // The records come late, out of order: 3, then 2, 5, 4.
        for (n, seq) in [3u64, 2, 5].into_iter().enumerate() {
            let done = store
                .commit(vec![Op::Ingest(batch(2 + n as u64, vec![m(seq)]))], 3000)
                .unwrap();
            assert!(ingested(&done).2.is_empty(), "still missing after {seq}");
            let Done::Ingested { ingested, .. } = &done[0] else {
                panic!()
            };
            assert_eq!(ingested.filled, 1);
            assert!(ingested.regressions.is_empty(), "a fill is no regression");
        }
        let done = store
            .commit(vec![Op::Ingest(batch(9, vec![m(4)]))], 4000)
            .unwrap();
        let cleared = ingested(&done).2;
        assert_eq!(cleared.len(), 1, "the gap is whole: its alarm is cleared");
        assert_eq!(cleared[0].kind, EventKind::SequenceGap);
        assert_eq!(
            cleared[0].closed_by.as_deref(),
            Some(crate::alarm::SYSTEM_ACTOR)
        );
    }

    #[test]
    fn a_gap_filled_within_the_grace_period_never_raises_an_alarm() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("bridge.redb")).unwrap();
        let m = |seq: u64| record(Lane::Alarm, seq, "b", seq, EventKind::ButtonPress);
        store
            .commit(vec![Op::Ingest(batch(1, vec![m(1), m(3)]))], 1000)
            .unwrap();
        store
            .commit(vec![Op::Ingest(batch(2, vec![m(2)]))], 1500)
            .unwrap();
        assert!(!store.gaps_due(u64::MAX).unwrap());
        assert!(store
            .alarms(None)
            .unwrap()
            .iter()
            .all(|a| a.kind != EventKind::SequenceGap));
    }
}
