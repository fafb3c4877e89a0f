//! The check at the end of a chaos run: the devices' own records against
//! what the backend holds. Pure: records in, [`Verdict`] out.
//!
//! The ground truth is each device's [`DeviceLog`]: what it sent and which
//! receipts it got. An event whose device holds a `committed` or
//! `duplicate` receipt is on the gateway's disk, so it must reach the
//! backend. What is checked, and nothing more:
//!
//! 1. **Nothing receipted is lost.** Every receipted event is stored at the
//!    backend under its event id `gateway/device/seq`. The one excuse:
//!    telemetry the gateway dropped by its policy and reported as
//!    `telemetry_dropped` events (their `value` is how many): if no more
//!    receipted telemetry is missing than was reported dropped, it is
//!    counted as dropped, not lost. Alarms and care events have no excuse.
//! 2. **Nothing is stored twice.** No event id appears twice in the
//!    backend's arrival order.
//! 3. **No alarm is shown twice, none is missing.** At most one alarm per
//!    event id, and every stored event that needs handling (red, yellow)
//!    is accounted for exactly once: it opened an alarm, or it was counted
//!    as a repeat on the open alarm of the same device and kind (the
//!    backend folds repeats). So per device and kind, alarms + repeats =
//!    events; more means an event was shown twice, fewer that one was not
//!    shown.
//! 4. **No gap goes unreported.** The lane sequence numbers stored for the
//!    gateway run 1..=highest in each lane; any that is missing must lie in
//!    a range some `sequence_gap` alarm names. The bridge raises that alarm
//!    only once the gap has outlived its grace period, so the harness looks
//!    again after it before calling a gap silent. (A gap after the highest
//!    stored number cannot be seen from here; the drain makes sure the
//!    gateway's journal is empty, so nothing should be behind it.) Gap
//!    alarms are listed either way, with whether the records turned up
//!    later and the bridge closed the alarm.
//! 5. **Valid events are not thrown away.** A `rejected` receipt for one of
//!    the harness's (valid) events fails the run, except telemetry refused
//!    by the gateway's journal policy. A rejection "went backwards" always
//!    fails: it is an event the device dropped for good.
//! 6. **The backend holds nothing a device did not send**, apart from the
//!    gateway's own events (device id = the gateway's id), listed by kind.
//!
//! Events a device gave up on itself (its outbox was full) were never
//! receipted and are only counted. Events still in an outbox at the end
//! mean the drain did not finish, which fails the run.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Deserialize;
use trygg_protocol::{EventKind, Lane, ReceiptStatus};
use trygg_uplink::contract::event_id;

use crate::device::DeviceLog;

/// An event as `/api/v1/events` shows it (the fields the check reads).
#[derive(Clone, Debug, Deserialize)]
pub struct BackendEvent {
    pub event_id: String,
    pub gateway: String,
    pub device: String,
    pub device_seq: u64,
    pub lane: String,
    pub seq: u64,
    pub kind: String,
    #[serde(default)]
    pub value: Option<f64>,
}

/// An alarm as `/api/v1/alarms` shows it (the fields the check reads).
#[derive(Clone, Debug, Deserialize)]
pub struct BackendAlarm {
    pub id: u64,
    pub event_id: String,
    pub device: String,
    pub kind: String,
    #[serde(default)]
    pub detail: Option<String>,
    /// Further events of this device and kind counted on this alarm.
    #[serde(default)]
    pub repeats: u64,
    /// `open`, `acknowledged` or `closed`.
    #[serde(default)]
    pub state: String,
}

/// What the backend holds: every stored event in arrival order, and every
/// alarm.
#[derive(Clone, Debug, Default)]
pub struct BackendView {
    pub events: Vec<BackendEvent>,
    pub alarms: Vec<BackendAlarm>,
}

/// A `sequence_gap` alarm, read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GapAlarm {
    pub lane: String,
    pub first: u64,
    pub last: u64,
    /// Every record of the range was stored after all.
    pub filled_later: bool,
    /// The alarm is closed (the bridge closes it when the gap fills).
    pub closed: bool,
}

/// Per lane: alarm, care, telemetry.
pub type Lanes = [u64; 3];

/// The outcome of the check, with the counts for the summary.
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    pub sent: Lanes,
    /// Holding a `committed` or `duplicate` receipt.
    pub receipted: Lanes,
    /// Receipted events whose first receipt said `duplicate` (the gateway
    /// had committed it, the `committed` receipt was lost).
    pub receipted_as_duplicate: u64,
    /// Every `duplicate` receipt the devices got: re-sends the gateway
    /// recognised and did not journal again.
    pub duplicate_receipts: u64,
    pub delivered: Lanes,
    /// Stored, though the device never got a receipt for it (the receipt
    /// was lost with a crash; the event is there all the same).
    pub delivered_unreceipted: u64,
    /// Receipted, not stored, not excused: event ids.
    pub lost: Vec<String>,
    /// Receipted telemetry missing at the backend within what the gateway
    /// reported dropped.
    pub telemetry_missing_excused: u64,
    /// The sum of the `value`s of the gateway's `telemetry_dropped` events.
    pub telemetry_dropped_reported: u64,
    /// Whether the event model knows `telemetry_dropped` at all.
    pub drop_reports_supported: bool,
    /// Event ids stored more than once.
    pub duplicated: Vec<String>,
    /// Event ids with more than one alarm, and devices and kinds whose
    /// alarms and repeats count more events than were stored.
    pub alarms_twice: Vec<String>,
    /// Devices and kinds whose alarms and repeats count fewer events than
    /// were stored.
    pub alarms_missing: Vec<String>,
    /// Stored events counted as repeats on an open alarm.
    pub alarm_repeats: u64,
    pub gap_alarms: Vec<GapAlarm>,
    /// Lane sequence ranges missing at the backend with no gap alarm.
    pub silent_gaps: Vec<(String, u64, u64)>,
    /// Telemetry refused by the gateway's policy (a `rejected` receipt).
    pub rejected_telemetry: u64,
    /// Other rejections: `event id: reason`.
    pub rejected: Vec<String>,
    /// Events a device's full outbox refused or evicted (never receipted).
    pub given_up_by_devices: u64,
    /// Events still waiting in a device outbox at the end.
    pub still_in_outboxes: u64,
    /// Stored for a device that never sent it: event ids.
    pub never_sent: Vec<String>,
    /// The gateway's own events at the backend, by kind.
    pub gateway_events: BTreeMap<String, u64>,
    /// Alarms at the backend by kind.
    pub alarms_by_kind: BTreeMap<String, u64>,
}

fn total(l: &Lanes) -> u64 {
    l.iter().sum()
}

impl Verdict {
    /// What failed, one line each; empty when the run passed.
    pub fn failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        let some = |v: &[String]| {
            let mut s = v.iter().take(10).cloned().collect::<Vec<_>>().join(", ");
            if v.len() > 10 {
                s.push_str(&format!(", ... ({} more)", v.len() - 10));
            }
            s
        };
        if !self.lost.is_empty() {
            f.push(format!(
                "LOST: {} receipted events never reached the backend: {}",
                self.lost.len(),
                some(&self.lost)
            ));
        }
        if !self.duplicated.is_empty() {
            f.push(format!(
                "DUPLICATED: {} events stored more than once: {}",
                self.duplicated.len(),
                some(&self.duplicated)
            ));
        }
        if !self.alarms_twice.is_empty() {
            f.push(format!("ALARM SHOWN TWICE: {}", some(&self.alarms_twice)));
        }
        if !self.alarms_missing.is_empty() {
            f.push(format!("ALARM MISSING: {}", some(&self.alarms_missing)));
        }
        if !self.silent_gaps.is_empty() {
            let g: Vec<String> = self
                .silent_gaps
                .iter()
                .map(|(l, a, b)| format!("{l} {a}..={b}"))
                .collect();
            f.push(format!(
                "SILENT GAP: lane sequences missing at the backend without a sequence_gap alarm: {}",
                some(&g)
            ));
        }
        if !self.rejected.is_empty() {
            f.push(format!(
                "REJECTED: the gateway refused {} valid events (the devices dropped them): {}",
                self.rejected.len(),
                some(&self.rejected)
            ));
        }
        if !self.never_sent.is_empty() {
            f.push(format!(
                "UNKNOWN EVENTS: the backend holds {} events no device sent: {}",
                self.never_sent.len(),
                some(&self.never_sent)
            ));
        }
        if self.still_in_outboxes > 0 {
            f.push(format!(
                "NOT DRAINED: {} events still wait in device outboxes (never receipted by the gateway)",
                self.still_in_outboxes
            ));
        }
        f
    }

    pub fn passed(&self) -> bool {
        self.failures().is_empty()
    }

    pub fn sent_total(&self) -> u64 {
        total(&self.sent)
    }

    pub fn receipted_total(&self) -> u64 {
        total(&self.receipted)
    }

    pub fn delivered_total(&self) -> u64 {
        total(&self.delivered)
    }
}

/// Reads `lane {lane}: sequence {first}[ to {last}] missing`.
fn parse_gap(detail: &str) -> Option<(String, u64, u64)> {
    let rest = detail.strip_prefix("lane ")?;
    let (lane, rest) = rest.split_once(':')?;
    let rest = rest.trim().strip_prefix("sequence ")?;
    let mut words = rest.split_whitespace();
    let first: u64 = words.next()?.parse().ok()?;
    let last = match words.next() {
        Some("to") => words.next()?.parse().ok()?,
        _ => first,
    };
    Some((lane.to_string(), first, last))
}

/// Runs of consecutive numbers in a sorted list.
fn runs(sorted: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &n in sorted {
        match out.last_mut() {
            Some((_, last)) if *last + 1 == n => *last = n,
            _ => out.push((n, n)),
        }
    }
    out
}

/// Compares the devices' records with the backend's.
pub fn check(gateway: &str, devices: &[(String, DeviceLog)], backend: &BackendView) -> Verdict {
    let mut v = Verdict {
        drop_reports_supported: EventKind::from_wire("telemetry_dropped").is_some(),
        ..Verdict::default()
    };

    // Event id -> how often stored; and the first copy of each.
    let mut stored: HashMap<&str, (u32, &BackendEvent)> = HashMap::new();
    for e in &backend.events {
        stored.entry(e.event_id.as_str()).or_insert((0, e)).0 += 1;
    }
    let mut duplicated: Vec<String> = stored
        .iter()
        .filter(|(_, (n, _))| *n > 1)
        .map(|(id, _)| id.to_string())
        .collect();
    duplicated.sort();
    v.duplicated = duplicated;

    for e in backend.events.iter().filter(|e| e.device == gateway) {
        *v.gateway_events.entry(e.kind.clone()).or_default() += 1;
        if e.kind == "telemetry_dropped" {
            v.telemetry_dropped_reported += e.value.unwrap_or(0.0).max(0.0) as u64;
        }
    }

    let mut alarms: HashMap<&str, u32> = HashMap::new();
    for a in &backend.alarms {
        *alarms.entry(a.event_id.as_str()).or_default() += 1;
        *v.alarms_by_kind.entry(a.kind.clone()).or_default() += 1;
    }
    let mut twice: Vec<String> = alarms
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, n)| format!("{id} has {n} alarms"))
        .collect();
    twice.sort();
    v.alarms_twice = twice;

    // Per device and kind: stored events that need handling, against what
    // the alarms account for (each alarm its own event plus its repeats).
    let mut needs: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for (_, e) in stored.values() {
        if e.device != gateway && EventKind::from_wire(&e.kind).is_some_and(|k| k.needs_handling())
        {
            *needs
                .entry((e.device.as_str(), e.kind.as_str()))
                .or_default() += 1;
        }
    }
    let mut shown: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for a in &backend.alarms {
        if needs.contains_key(&(a.device.as_str(), a.kind.as_str())) {
            *shown
                .entry((a.device.as_str(), a.kind.as_str()))
                .or_default() += 1 + a.repeats;
            v.alarm_repeats += a.repeats;
        }
    }
    for (key, &n) in &needs {
        let m = shown.get(key).copied().unwrap_or(0);
        let what = format!(
            "{} {}: {n} events stored, alarms and repeats count {m}",
            key.0, key.1
        );
        if m > n {
            v.alarms_twice.push(what);
        } else if m < n {
            v.alarms_missing.push(what);
        }
    }

    let mut missing_telemetry = Vec::new();
    let known: BTreeSet<&str> = devices.iter().map(|(id, _)| id.as_str()).collect();
    for (id, log) in devices {
        v.duplicate_receipts += log.duplicate_receipts;
        v.given_up_by_devices += (log.refused_seqs.len() + log.evicted.len()) as u64;
        v.still_in_outboxes += log.unreceipted() as u64;
        for (&seq, &kind) in &log.sent {
            let lane = kind.lane().index();
            v.sent[lane] += 1;
            let eid = event_id(gateway, id, seq);
            let receipt = log.receipts.get(&seq).map(|(s, _)| *s);
            let is_stored = stored.contains_key(eid.as_str());
            match receipt {
                Some(ReceiptStatus::Committed) | Some(ReceiptStatus::Duplicate) => {
                    v.receipted[lane] += 1;
                    if receipt == Some(ReceiptStatus::Duplicate) {
                        v.receipted_as_duplicate += 1;
                    }
                    if is_stored {
                        v.delivered[lane] += 1;
                    } else if kind.lane() == Lane::Telemetry {
                        missing_telemetry.push(eid.clone());
                    } else {
                        v.lost.push(eid.clone());
                    }
                }
                Some(ReceiptStatus::Rejected) => {
                    let reason = log.rejections.get(&seq).cloned().unwrap_or_default();
                    if kind.lane() == Lane::Telemetry && !reason.contains("went backwards") {
                        v.rejected_telemetry += 1;
                    } else {
                        v.rejected
                            .push(format!("{eid} ({}): {reason}", kind.wire()));
                    }
                }
                None => {
                    if is_stored {
                        v.delivered_unreceipted += 1;
                    }
                }
            }
        }
    }
    if missing_telemetry.len() as u64 <= v.telemetry_dropped_reported {
        v.telemetry_missing_excused = missing_telemetry.len() as u64;
    } else {
        v.lost.append(&mut missing_telemetry);
    }
    v.lost.sort();

    for e in &backend.events {
        if e.device == gateway {
            continue;
        }
        let sent = devices
            .iter()
            .find(|(id, _)| *id == e.device)
            .is_some_and(|(_, log)| log.sent.contains_key(&e.device_seq));
        if !sent || !known.contains(e.device.as_str()) {
            v.never_sent.push(e.event_id.clone());
        }
    }
    v.never_sent.sort();
    v.never_sent.dedup();

    // Lane sequences: what is stored, what the gap alarms name.
    let mut lane_seqs: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for e in backend.events.iter().filter(|e| e.gateway == gateway) {
        lane_seqs.entry(e.lane.as_str()).or_default().insert(e.seq);
    }
    let gap_prefix = format!("{gateway}/sequence-gap/");
    for a in &backend.alarms {
        if a.kind != "sequence_gap" || !a.event_id.starts_with(&gap_prefix) {
            continue;
        }
        let Some((lane, first, last)) = a.detail.as_deref().and_then(parse_gap) else {
            continue;
        };
        let have = lane_seqs.get(lane.as_str());
        let filled_later = have.is_some_and(|s| (first..=last).all(|n| s.contains(&n)));
        v.gap_alarms.push(GapAlarm {
            lane,
            first,
            last,
            filled_later,
            closed: a.state == "closed",
        });
    }
    v.gap_alarms
        .sort_by(|a, b| (&a.lane, a.first).cmp(&(&b.lane, b.first)));
    for (lane, seqs) in &lane_seqs {
        let high = seqs.last().copied().unwrap_or(0);
        let missing: Vec<u64> = (1..=high).filter(|n| !seqs.contains(n)).collect();
        let reported = |n: u64| {
            v.gap_alarms
                .iter()
                .any(|g| g.lane == *lane && g.first <= n && n <= g.last)
        };
        let silent: Vec<u64> = missing.into_iter().filter(|n| !reported(*n)).collect();
        for (a, b) in runs(&silent) {
            v.silent_gaps.push((lane.to_string(), a, b));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const GW: &str = "gw-1";

    fn log(events: &[(u64, EventKind, Option<ReceiptStatus>)]) -> DeviceLog {
        let mut l = DeviceLog::default();
        for (seq, kind, r) in events {
            l.sent.insert(*seq, *kind);
            if let Some(r) = r {
                l.receipts.insert(*seq, (*r, Duration::ZERO));
            }
        }
        l
    }

    fn ev(device: &str, device_seq: u64, kind: EventKind, seq: u64) -> BackendEvent {
        BackendEvent {
            event_id: event_id(GW, device, device_seq),
            gateway: GW.into(),
            device: device.into(),
            device_seq,
            lane: kind.lane().as_str().into(),
            seq,
            kind: kind.wire().into(),
            value: None,
        }
    }

    fn alarm(id: u64, event: &BackendEvent) -> BackendAlarm {
        BackendAlarm {
            id,
            event_id: event.event_id.clone(),
            device: event.device.clone(),
            kind: event.kind.clone(),
            detail: None,
            repeats: 0,
            state: "open".into(),
        }
    }

    fn gap_alarm(id: u64, lane: &str, first: u64, last: u64) -> BackendAlarm {
        BackendAlarm {
            id,
            event_id: format!("{GW}/sequence-gap/{lane}/{first}"),
            device: GW.into(),
            kind: "sequence_gap".into(),
            detail: Some(format!("lane {lane}: sequence {first} to {last} missing")),
            repeats: 0,
            state: "open".into(),
        }
    }

    const C: Option<ReceiptStatus> = Some(ReceiptStatus::Committed);

    #[test]
    fn every_receipted_event_stored_once_with_its_alarm_passes() {
        let devices = vec![(
            "b".to_string(),
            log(&[(10, EventKind::ButtonPress, C), (11, EventKind::Motion, C)]),
        )];
        let e1 = ev("b", 10, EventKind::ButtonPress, 1);
        let e2 = ev("b", 11, EventKind::Motion, 1);
        let backend = BackendView {
            alarms: vec![alarm(1, &e1)],
            events: vec![e1, e2],
        };
        let v = check(GW, &devices, &backend);
        assert!(v.passed(), "{:?}", v.failures());
        assert_eq!(
            (v.sent_total(), v.receipted_total(), v.delivered_total()),
            (2, 2, 2)
        );
    }

    #[test]
    fn a_receipted_alarm_missing_at_the_backend_is_lost() {
        let devices = vec![("b".to_string(), log(&[(10, EventKind::ButtonPress, C)]))];
        let v = check(GW, &devices, &BackendView::default());
        assert_eq!(v.lost, vec!["gw-1/b/10".to_string()]);
        assert!(!v.passed());
    }

    #[test]
    fn an_unreceipted_event_may_be_missing_but_must_not_wait_in_an_outbox() {
        let devices = vec![("b".to_string(), log(&[(10, EventKind::Motion, None)]))];
        let v = check(GW, &devices, &BackendView::default());
        assert!(v.lost.is_empty());
        assert_eq!(v.still_in_outboxes, 1);
        assert!(!v.passed(), "not drained");
    }

    #[test]
    fn an_event_stored_twice_is_duplicated() {
        let devices = vec![("m".to_string(), log(&[(5, EventKind::Motion, C)]))];
        let e = ev("m", 5, EventKind::Motion, 1);
        let backend = BackendView {
            events: vec![e.clone(), e],
            alarms: vec![],
        };
        let v = check(GW, &devices, &backend);
        assert_eq!(v.duplicated, vec!["gw-1/m/5".to_string()]);
    }

    #[test]
    fn two_alarms_for_one_event_fail() {
        let devices = vec![("b".to_string(), log(&[(1, EventKind::Fall, C)]))];
        let e = ev("b", 1, EventKind::Fall, 1);
        let backend = BackendView {
            alarms: vec![alarm(1, &e), alarm(2, &e)],
            events: vec![e],
        };
        let v = check(GW, &devices, &backend);
        assert!(!v.alarms_twice.is_empty());
        assert!(!v.passed());
    }

    #[test]
    fn repeats_on_an_open_alarm_account_for_their_events() {
        let devices = vec![(
            "b".to_string(),
            log(&[
                (1, EventKind::Fall, C),
                (2, EventKind::Fall, C),
                (3, EventKind::Fall, C),
            ]),
        )];
        let events: Vec<_> = (1..=3).map(|n| ev("b", n, EventKind::Fall, n)).collect();
        let mut a = alarm(1, &events[0]);
        a.repeats = 2;
        let backend = BackendView {
            events: events.clone(),
            alarms: vec![a.clone()],
        };
        assert!(check(GW, &devices, &backend).passed());
        a.repeats = 1;
        let fewer = BackendView {
            events: events.clone(),
            alarms: vec![a.clone()],
        };
        assert_eq!(check(GW, &devices, &fewer).alarms_missing.len(), 1);
        a.repeats = 3;
        let more = BackendView {
            events,
            alarms: vec![a],
        };
        assert_eq!(check(GW, &devices, &more).alarms_twice.len(), 1);
    }

    #[test]
    fn missing_telemetry_within_the_reported_drops_is_excused() {
        let devices = vec![(
            "m".to_string(),
            log(&[(1, EventKind::Motion, C), (2, EventKind::Motion, C)]),
        )];
        let mut report = ev(GW, 1, EventKind::Motion, 1);
        report.kind = "telemetry_dropped".into();
        report.lane = "care".into();
        report.value = Some(2.0);
        let backend = BackendView {
            events: vec![report],
            alarms: vec![],
        };
        let v = check(GW, &devices, &backend);
        assert!(v.passed(), "{:?}", v.failures());
        assert_eq!(v.telemetry_missing_excused, 2);
    }

    #[test]
    fn more_missing_telemetry_than_reported_dropped_is_lost() {
        let devices = vec![(
            "m".to_string(),
            log(&[(1, EventKind::Motion, C), (2, EventKind::Motion, C)]),
        )];
        let v = check(GW, &devices, &BackendView::default());
        assert_eq!(v.lost.len(), 2);
    }

    #[test]
    fn a_lane_gap_without_a_gap_alarm_is_silent_and_with_one_is_reported() {
        let devices = vec![(
            "m".to_string(),
            log(&[(1, EventKind::Motion, C), (2, EventKind::Motion, C)]),
        )];
        let backend = BackendView {
            events: vec![
                ev("m", 1, EventKind::Motion, 1),
                ev("m", 2, EventKind::Motion, 4),
            ],
            alarms: vec![],
        };
        let v = check(GW, &devices, &backend);
        assert_eq!(v.silent_gaps, vec![("telemetry".to_string(), 2, 3)]);
        let reported = BackendView {
            alarms: vec![gap_alarm(9, "telemetry", 2, 3)],
            ..backend
        };
        let v = check(GW, &devices, &reported);
        assert!(v.silent_gaps.is_empty());
        assert_eq!(v.gap_alarms.len(), 1);
        assert!(!v.gap_alarms[0].filled_later);
    }

    #[test]
    fn a_gap_alarm_whose_records_arrived_later_says_so() {
        let devices = vec![(
            "m".to_string(),
            log(&[(1, EventKind::Motion, C), (2, EventKind::Motion, C)]),
        )];
        let backend = BackendView {
            events: vec![
                ev("m", 2, EventKind::Motion, 2),
                ev("m", 1, EventKind::Motion, 1),
            ],
            alarms: vec![gap_alarm(1, "telemetry", 1, 1)],
        };
        let v = check(GW, &devices, &backend);
        assert!(v.passed());
        assert!(v.gap_alarms[0].filled_later);
    }

    #[test]
    fn a_sequence_backwards_rejection_fails_even_for_telemetry() {
        let mut l = log(&[
            (1, EventKind::Motion, Some(ReceiptStatus::Rejected)),
            (2, EventKind::Motion, Some(ReceiptStatus::Rejected)),
        ]);
        l.rejections
            .insert(1, "sequence 1 went backwards (last committed 5000)".into());
        l.rejections.insert(2, "journal full".into());
        let v = check(GW, &[("m".to_string(), l)], &BackendView::default());
        assert_eq!(v.rejected.len(), 1);
        assert_eq!(v.rejected_telemetry, 1);
    }

    #[test]
    fn an_event_no_device_sent_fails_but_the_gateways_own_do_not() {
        let devices = vec![("m".to_string(), log(&[]))];
        let mut own = ev(GW, 1, EventKind::DeviceSilent, 1);
        own.lane = "care".into();
        let backend = BackendView {
            events: vec![ev("m", 77, EventKind::Motion, 1), own],
            alarms: vec![],
        };
        let v = check(GW, &devices, &backend);
        assert_eq!(v.never_sent, vec!["gw-1/m/77".to_string()]);
        assert_eq!(v.gateway_events.get("device_silent"), Some(&1));
    }

    #[test]
    fn gap_details_are_read_back() {
        assert_eq!(
            parse_gap("lane alarm: sequence 5 to 7 missing"),
            Some(("alarm".into(), 5, 7))
        );
        assert_eq!(
            parse_gap("lane care: sequence 3 missing"),
            Some(("care".into(), 3, 3))
        );
        assert_eq!(parse_gap("something else"), None);
    }
}
