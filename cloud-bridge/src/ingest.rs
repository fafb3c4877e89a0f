//! What to do with an uplink batch: pure decisions, no I/O.
//!
//! [`check_batch`] turns a payload into a [`Batch`] or a [`Rejected`] with a
//! reason (the payload then goes to the dead letters). [`ingest`] takes a
//! checked batch and a [`Ledger`] (what the store already knows that this
//! batch touches) and returns what to persist:
//!
//! - **exactly once in front of a person**: a record whose event id
//!   (gateway, device, device sequence) is stored already is a duplicate; it
//!   is counted and receipted again, but never stored twice nor a second
//!   alarm;
//! - **a gap is never silent**: a lane sequence that jumps past
//!   `highest + 1` records the missing range; the store raises one
//!   `sequence_gap` alarm naming it if the range is still missing after a
//!   grace period (records can be late: a batch lost while the backend's
//!   broker restarted is sent again after the gateway's receipt timeout),
//!   and clears the alarm if the records turn up after all;
//! - a lane sequence below the highest with a new event id (a gateway that
//!   lost its journal and started over, say) is accepted and counted;
//! - every new red or yellow event opens an alarm (the store adds it to an
//!   alarm of the same device and kind that is not closed yet, as a repeat);
//! - an event the gateway raises about one of its devices (`subject`) is
//!   shown as that device's; `device_resumed` clears the device's
//!   `device_silent` alarm, `power_restored` its `power_failure` alarm.
//!
//! The receipt names every `(lane, seq)` of the batch, duplicates included:
//! the gateway may delete them all once the store has committed.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use trygg_protocol::{EventKind, Lane};
use trygg_uplink::contract::{self, Batch, UplinkReceipt, MAX_BATCH_BYTES, SCHEMA_VERSION};

use crate::alarm::NewAlarm;

/// A payload the bridge will not ingest, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// A short, stable label for the metric (`reason="..."`).
    pub reason: &'static str,
    /// What a person reading the dead letter needs to know.
    pub message: String,
}

fn rejected(reason: &'static str, message: impl Into<String>) -> Rejected {
    Rejected {
        reason,
        message: message.into(),
    }
}

/// Checks a batch payload that arrived on `topic_gateway`'s batch topic.
pub fn check_batch(topic_gateway: &str, payload: &[u8]) -> Result<Batch, Rejected> {
    if payload.len() > MAX_BATCH_BYTES {
        return Err(rejected(
            "too_large",
            format!(
                "payload is {} bytes; at most {MAX_BATCH_BYTES} are read",
                payload.len()
            ),
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| rejected("malformed_json", format!("not JSON: {e}")))?;
    match value.get("v").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(SCHEMA_VERSION) => {}
        Some(v) => {
            return Err(rejected(
                "unsupported_version",
                format!("schema version {v}; this bridge reads {SCHEMA_VERSION}"),
            ))
        }
        None => return Err(rejected("unsupported_version", "no schema version \"v\"")),
    }
    let batch: Batch = serde_json::from_value(value)
        .map_err(|e| rejected("invalid_batch", format!("not a batch: {e}")))?;
    if batch.gateway != topic_gateway {
        return Err(rejected(
            "gateway_mismatch",
            format!(
                "batch names gateway {:?} but came on the topic of {topic_gateway:?}",
                batch.gateway
            ),
        ));
    }
    for r in &batch.records {
        if r.seq == 0 {
            return Err(rejected(
                "invalid_record",
                format!("record of {:?} has lane sequence 0", r.device),
            ));
        }
        if !trygg_protocol::topic::is_valid_device_id(&r.device) {
            return Err(rejected(
                "invalid_record",
                format!("device id {:?} is not valid", r.device),
            ));
        }
    }
    Ok(batch)
}

/// An event as the bridge stores it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub event_id: String,
    pub gateway: String,
    pub device: String,
    pub device_seq: u64,
    pub lane: Lane,
    pub seq: u64,
    pub kind: EventKind,
    /// When the gateway committed it, Unix milliseconds.
    pub committed_ms: u64,
    /// When the bridge committed it, Unix milliseconds.
    pub stored_ms: u64,
    pub batch: u64,
    pub ts: Option<u64>,
    pub battery: Option<u8>,
    pub value: Option<f32>,
    pub resident: Option<String>,
    pub room: Option<String>,
    /// For an event the gateway raised about one of its devices (a test
    /// alarm, a silence): that device. Listed under it as well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

/// What the store knows that one gateway's batch touches.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ledger {
    /// Those of the batch's event ids that are stored already.
    pub stored: HashSet<String>,
    /// The highest lane sequence seen from this gateway, per lane.
    pub lane_high: HashMap<Lane, u64>,
}

/// A run of lane sequence numbers that never arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    pub lane: Lane,
    pub first: u64,
    pub last: u64,
}

/// A new event whose lane sequence is not above the highest seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Regression {
    pub lane: Lane,
    pub seq: u64,
    pub highest: u64,
}

/// What to persist for one batch, and what to tell.
#[derive(Clone, Debug, PartialEq)]
pub struct Ingested {
    pub gateway: String,
    pub events: Vec<StoredEvent>,
    pub alarms: Vec<NewAlarm>,
    pub duplicates: Vec<String>,
    pub gaps: Vec<Gap>,
    pub regressions: Vec<Regression>,
    /// Alarms whose cause is gone: close the open alarm of this device and
    /// kind, with this note.
    pub clears: Vec<Clear>,
    /// Records that filled an earlier gap (set by the store).
    pub filled: u64,
    pub receipt: UplinkReceipt,
}

/// An alarm the system closes because its cause is gone.
#[derive(Clone, Debug, PartialEq)]
pub struct Clear {
    pub gateway: String,
    pub device: String,
    pub kind: EventKind,
    pub note: String,
}

/// Decides what `batch` adds to the store, updating `ledger` as if it had
/// been persisted (so a second copy in the same batch is a duplicate).
pub fn ingest(ledger: &mut Ledger, batch: &Batch, now_ms: u64) -> Ingested {
    let gw = batch.gateway.as_str();
    let mut out = Ingested {
        gateway: gw.to_string(),
        events: Vec::new(),
        alarms: Vec::new(),
        duplicates: Vec::new(),
        gaps: Vec::new(),
        regressions: Vec::new(),
        clears: Vec::new(),
        filled: 0,
        receipt: UplinkReceipt {
            v: SCHEMA_VERSION,
            batch: batch.batch,
            committed: contract::ranges_of(batch.records.iter().map(|r| (r.lane, r.seq)).collect()),
        },
    };
    for r in &batch.records {
        let event_id = contract::event_id(gw, &r.device, r.device_seq);
        let is_new = !ledger.stored.contains(&event_id);
        let highest = ledger.lane_high.get(&r.lane).copied().unwrap_or(0);
        // Saturating: above a lane at u64::MAX (a broken or hostile
        // gateway's) there is no gap, and `highest + 1` would overflow.
        if r.seq > highest.saturating_add(1) {
            let gap = Gap {
                lane: r.lane,
                first: highest + 1,
                last: r.seq - 1,
            };
            out.gaps.push(gap);
        } else if r.seq <= highest && is_new {
            out.regressions.push(Regression {
                lane: r.lane,
                seq: r.seq,
                highest,
            });
        }
        if r.seq > highest {
            ledger.lane_high.insert(r.lane, r.seq);
        }
        if !is_new {
            out.duplicates.push(event_id);
            continue;
        }
        ledger.stored.insert(event_id.clone());
        // What the gateway raises about a device is shown as the device's.
        let device = r.subject.as_ref().unwrap_or(&r.device);
        if r.kind == EventKind::DeviceResumed {
            out.clears.push(Clear {
                gateway: gw.to_string(),
                device: device.clone(),
                kind: EventKind::DeviceSilent,
                note: format!(
                    "Cleared by the system: the device was heard from again after {} s of silence. / Avsluttet av systemet: enheten ble hørt fra igjen.",
                    r.value.unwrap_or(0.0) as u64
                ),
            });
        }
        if r.kind == EventKind::PowerRestored {
            out.clears.push(Clear {
                gateway: gw.to_string(),
                device: device.clone(),
                kind: EventKind::PowerFailure,
                note: "Cleared by the system: mains power is back. / Avsluttet av systemet: strømmen er tilbake.".to_string(),
            });
        }
        if r.kind.needs_handling() {
            out.alarms.push(NewAlarm {
                event_id: event_id.clone(),
                gateway: gw.to_string(),
                device: device.clone(),
                device_seq: r.device_seq,
                kind: r.kind,
                resident: r.resident.clone(),
                room: r.room.clone(),
                detail: (r.kind == EventKind::DeviceSilent).then(|| {
                    format!(
                        "not heard from for {} s / ikke hørt fra på {} s",
                        r.value.unwrap_or(0.0) as u64,
                        r.value.unwrap_or(0.0) as u64
                    )
                }),
                gateway_committed_ms: Some(r.committed_ms),
                device_ts: r.ts,
            });
        }
        out.events.push(StoredEvent {
            event_id,
            gateway: gw.to_string(),
            device: r.device.clone(),
            device_seq: r.device_seq,
            lane: r.lane,
            seq: r.seq,
            kind: r.kind,
            committed_ms: r.committed_ms,
            stored_ms: now_ms,
            batch: batch.batch,
            ts: r.ts,
            battery: r.battery,
            value: r.value,
            resident: r.resident.clone(),
            room: r.room.clone(),
            subject: r.subject.clone(),
        });
    }
    out
}

/// The technical alarm for a gap. Its event id names the gap, so it is
/// raised once however often the batch after it is redelivered.
pub fn gap_alarm(gateway: &str, gap: Gap) -> NewAlarm {
    let missing = if gap.first == gap.last {
        format!("sequence {} missing", gap.first)
    } else {
        format!("sequence {} to {} missing", gap.first, gap.last)
    };
    NewAlarm {
        event_id: format!("{gateway}/sequence-gap/{}/{}", gap.lane, gap.first),
        gateway: gateway.to_string(),
        device: gateway.to_string(),
        device_seq: gap.first,
        kind: EventKind::SequenceGap,
        resident: None,
        room: None,
        detail: Some(format!("lane {}: {missing}", gap.lane)),
        gateway_committed_ms: None,
        device_ts: None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use trygg_uplink::contract::{Record, SeqRange};

    pub(crate) fn record(
        lane: Lane,
        seq: u64,
        device: &str,
        device_seq: u64,
        kind: EventKind,
    ) -> Record {
        Record {
            lane,
            seq,
            device: device.into(),
            device_seq,
            kind,
            ts: Some(1_700_000_000),
            committed_ms: 1_700_000_000_000,
            battery: None,
            value: None,
            resident: Some("r-1".into()),
            room: Some("bedroom".into()),
            subject: None,
        }
    }

    pub(crate) fn batch(n: u64, records: Vec<Record>) -> Batch {
        Batch {
            v: SCHEMA_VERSION,
            gateway: "gw-1".into(),
            batch: n,
            records,
        }
    }

    fn press(seq: u64, device_seq: u64) -> Record {
        record(
            Lane::Alarm,
            seq,
            "button-1",
            device_seq,
            EventKind::ButtonPress,
        )
    }

    #[test]
    fn button_press_is_stored_and_opens_one_alarm() {
        let mut ledger = Ledger::default();
        let out = ingest(&mut ledger, &batch(1, vec![press(1, 10)]), 5);
        assert_eq!(out.events.len(), 1);
        assert_eq!(out.events[0].event_id, "gw-1/button-1/10");
        assert_eq!(out.events[0].stored_ms, 5);
        assert_eq!(out.alarms.len(), 1);
        assert_eq!(out.alarms[0].kind, EventKind::ButtonPress);
        assert_eq!(
            out.receipt.committed,
            vec![SeqRange {
                lane: Lane::Alarm,
                first: 1,
                last: 1
            }]
        );
    }

    #[test]
    fn duplicate_record_is_not_a_second_alarm_but_is_receipted_again() {
        let mut ledger = Ledger::default();
        let b = batch(1, vec![press(1, 10)]);
        ingest(&mut ledger, &b, 5);
        let again = ingest(&mut ledger, &b, 6);
        assert!(again.events.is_empty() && again.alarms.is_empty());
        assert_eq!(again.duplicates, vec!["gw-1/button-1/10".to_string()]);
        assert!(again.gaps.is_empty() && again.regressions.is_empty());
        assert_eq!(
            again.receipt.committed,
            vec![SeqRange {
                lane: Lane::Alarm,
                first: 1,
                last: 1
            }]
        );
    }

    #[test]
    fn a_record_twice_in_one_batch_is_stored_once() {
        let mut ledger = Ledger::default();
        let out = ingest(&mut ledger, &batch(1, vec![press(1, 10), press(2, 10)]), 5);
        assert_eq!(
            (out.events.len(), out.alarms.len(), out.duplicates.len()),
            (1, 1, 1)
        );
    }

    #[test]
    fn gap_is_found_naming_the_missing_range_and_its_alarm_says_so() {
        let mut ledger = Ledger::default();
        ingest(&mut ledger, &batch(1, vec![press(4, 1)]), 5);
        ledger.lane_high.insert(Lane::Alarm, 4);
        let out = ingest(&mut ledger, &batch(2, vec![press(8, 2), press(9, 3)]), 6);
        assert_eq!(
            out.gaps,
            vec![Gap {
                lane: Lane::Alarm,
                first: 5,
                last: 7
            }]
        );
        // The alarm waits for the grace period (the store raises it).
        assert_eq!(out.alarms.len(), 2, "both presses, not yet the gap");
        let alarm = gap_alarm("gw-1", out.gaps[0]);
        assert_eq!(alarm.kind, EventKind::SequenceGap);
        assert_eq!(
            alarm.detail.as_deref(),
            Some("lane alarm: sequence 5 to 7 missing")
        );
        assert_eq!(alarm.gateway, "gw-1");
        assert_eq!(ledger.lane_high[&Lane::Alarm], 9);
    }

    #[test]
    fn first_record_of_a_lane_above_one_is_a_gap_from_one() {
        let mut ledger = Ledger::default();
        let out = ingest(&mut ledger, &batch(1, vec![press(3, 1)]), 5);
        assert_eq!(
            out.gaps,
            vec![Gap {
                lane: Lane::Alarm,
                first: 1,
                last: 2
            }]
        );
    }

    #[test]
    fn lanes_are_counted_apart() {
        let mut ledger = Ledger::default();
        let out = ingest(
            &mut ledger,
            &batch(
                1,
                vec![
                    press(1, 1),
                    record(Lane::Telemetry, 1, "pir-1", 1, EventKind::Motion),
                    record(Lane::Telemetry, 2, "pir-1", 2, EventKind::Motion),
                ],
            ),
            5,
        );
        assert!(out.gaps.is_empty());
        assert_eq!(out.receipt.committed.len(), 2);
    }

    #[test]
    fn telemetry_makes_no_alarm() {
        let mut ledger = Ledger::default();
        let out = ingest(
            &mut ledger,
            &batch(
                1,
                vec![record(Lane::Telemetry, 1, "pir-1", 1, EventKind::Motion)],
            ),
            5,
        );
        assert_eq!(out.events.len(), 1);
        assert!(out.alarms.is_empty());
    }

    #[test]
    fn yellow_technical_event_opens_an_alarm() {
        let mut ledger = Ledger::default();
        let out = ingest(
            &mut ledger,
            &batch(
                1,
                vec![record(Lane::Care, 1, "pir-1", 1, EventKind::BatteryLow)],
            ),
            5,
        );
        assert_eq!(out.alarms.len(), 1);
    }

    #[test]
    fn new_event_below_the_highest_sequence_is_accepted_as_a_regression() {
        let mut ledger = Ledger::default();
        ledger.lane_high.insert(Lane::Alarm, 50);
        let out = ingest(&mut ledger, &batch(1, vec![press(3, 99)]), 5);
        assert_eq!(out.events.len(), 1);
        assert_eq!(out.alarms.len(), 1);
        assert_eq!(
            out.regressions,
            vec![Regression {
                lane: Lane::Alarm,
                seq: 3,
                highest: 50
            }]
        );
        assert!(out.gaps.is_empty());
        assert_eq!(ledger.lane_high[&Lane::Alarm], 50);
    }

    #[test]
    fn lane_sequence_at_u64_max_is_no_overflow_and_no_gap_after() {
        let mut ledger = Ledger::default();
        let out = ingest(
            &mut ledger,
            &batch(1, vec![press(u64::MAX, 1), press(1, 2)]),
            5,
        );
        assert_eq!(out.gaps.len(), 1, "only the jump to u64::MAX");
        assert_eq!(out.regressions.len(), 1);
        assert_eq!(out.events.len(), 2);
    }

    #[test]
    fn redelivered_old_record_is_neither_gap_nor_regression() {
        let mut ledger = Ledger::default();
        ingest(&mut ledger, &batch(1, vec![press(1, 1), press(2, 2)]), 5);
        let out = ingest(&mut ledger, &batch(2, vec![press(1, 1)]), 6);
        assert!(out.regressions.is_empty() && out.gaps.is_empty());
    }

    #[test]
    fn check_batch_accepts_a_good_batch() {
        let b = batch(1, vec![press(1, 1)]);
        assert_eq!(check_batch("gw-1", &serde_json::to_vec(&b).unwrap()), Ok(b));
    }

    #[test]
    fn check_batch_names_each_reason() {
        let reason = |gw: &str, p: &[u8]| check_batch(gw, p).unwrap_err().reason;
        assert_eq!(reason("gw-1", b"garbage"), "malformed_json");
        assert_eq!(
            reason("gw-1", &vec![b' '; MAX_BATCH_BYTES + 1]),
            "too_large"
        );
        assert_eq!(
            reason(
                "gw-1",
                br#"{"v":2,"gateway":"gw-1","batch":1,"records":[]}"#
            ),
            "unsupported_version"
        );
        assert_eq!(
            reason("gw-1", br#"{"gateway":"gw-1"}"#),
            "unsupported_version"
        );
        assert_eq!(
            reason("gw-1", br#"{"v":1,"gateway":"gw-1"}"#),
            "invalid_batch"
        );
        let b = serde_json::to_vec(&batch(1, vec![press(1, 1)])).unwrap();
        assert_eq!(reason("gw-2", &b), "gateway_mismatch");
        let b = serde_json::to_vec(&batch(1, vec![press(0, 1)])).unwrap();
        assert_eq!(reason("gw-1", &b), "invalid_record");
    }
}
