//! Model check: the journal and a plain in-memory queue, driven side by
//! side through random appends, re-sends, receipts, crashes and restarts,
//! must always agree on what is pending, in which lane and order, under
//! which lane sequence number.
//!
//! A crash is modelled as a power cut right after the last commit returned:
//! the file is copied as it is on disk while the journal is still open and
//! the copy is opened (redb sees an unclean shutdown and repairs it). What
//! was committed must all be there; lane sequences must never be reused.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use proptest::prelude::*;
use trygg_gateway::journal::{Group, Journal, NewEvent, Outcome};
use trygg_protocol::{DeviceEvent, EventKind, Lane};
use trygg_uplink::SeqRange;

#[derive(Clone, Debug)]
enum Op {
    /// A device sends events: (device, kind) pairs in one group.
    Append(Vec<(u8, EventKind)>),
    /// A device re-sends one of its recent events.
    Resend(u8, usize),
    /// The backend receipts the oldest `n` pending records of a lane.
    Receipt(Lane, usize),
    /// Power cut after the last commit, then restart.
    Crash,
    /// A clean restart.
    Restart,
}

fn kind() -> impl Strategy<Value = EventKind> {
    prop_oneof![
        Just(EventKind::ButtonPress),
        Just(EventKind::BatteryLow),
        Just(EventKind::Motion),
        Just(EventKind::Temperature)
    ]
}

fn lane() -> impl Strategy<Value = Lane> {
    prop_oneof![Just(Lane::Alarm), Just(Lane::Care), Just(Lane::Telemetry)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => proptest::collection::vec((0u8..3, kind()), 1..6).prop_map(Op::Append),
        2 => (0u8..3, 0usize..4).prop_map(|(d, back)| Op::Resend(d, back)),
        3 => (lane(), 1usize..4).prop_map(|(l, n)| Op::Receipt(l, n)),
        1 => Just(Op::Crash),
        1 => Just(Op::Restart),
    ]
}

/// What the journal must hold: per lane, (lane seq, device, device seq).
#[derive(Default)]
struct Model {
    lanes: [VecDeque<(u64, String, u64)>; 3],
    next: [u64; 3],
    committed: BTreeSet<(String, u64)>,
    sent: BTreeMap<String, Vec<(u64, EventKind)>>,
    next_device_seq: u64,
}

fn event(device: &str, seq: u64, kind: EventKind) -> NewEvent {
    NewEvent {
        device: device.into(),
        event: DeviceEvent {
            seq,
            kind,
            ts: None,
            battery: None,
            value: None,
        },
        resident: None,
        room: None,
    }
}

fn assert_agree(journal: &Journal, model: &Model) {
    let got: Vec<(Lane, u64, String, u64)> = journal
        .reader()
        .pending_records()
        .unwrap()
        .into_iter()
        .map(|r| (r.lane, r.seq, r.device, r.device_seq))
        .collect();
    let want: Vec<(Lane, u64, String, u64)> = Lane::ALL
        .iter()
        .flat_map(|&l| {
            model.lanes[l.index()]
                .iter()
                .map(move |(s, d, ds)| (l, *s, d.clone(), *ds))
        })
        .collect();
    assert_eq!(got, want);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn journal_agrees_with_an_in_memory_queue(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut path = dir.path().join("journal-0.redb");
        // Sealed, as the service keeps it.
        let sealer = std::sync::Arc::new(trygg_gateway::seal::Sealer::new(&[0x5e; 32]));
        let mut journal = Journal::open_sealed(&path, sealer.clone()).unwrap();
        let mut model = Model { next: [1; 3], next_device_seq: 1, ..Model::default() };
        let mut generation = 0;
        for op in ops {
            match op {
                Op::Append(events) => {
                    let mut group = Group::default();
                    for (d, kind) in &events {
                        let device = format!("dev-{d}");
                        let seq = model.next_device_seq;
                        model.next_device_seq += 1;
                        model.sent.entry(device.clone()).or_default().push((seq, *kind));
                        group.events.push(event(&device, seq, *kind));
                    }
                    let result = journal.apply(&group).unwrap();
                    for (e, outcome) in group.events.iter().zip(&result.outcomes) {
                        let lane = e.event.kind.lane();
                        prop_assert_eq!(outcome, &Outcome::Committed { lane, seq: model.next[lane.index()] });
                        model.lanes[lane.index()].push_back((model.next[lane.index()], e.device.clone(), e.event.seq));
                        model.next[lane.index()] += 1;
                        model.committed.insert((e.device.clone(), e.event.seq));
                    }
                }
                Op::Resend(d, back) => {
                    let device = format!("dev-{d}");
                    let Some(&(seq, kind)) = model.sent.get(&device).and_then(|v| v.iter().rev().nth(back)) else { continue };
                    let group = Group { events: vec![event(&device, seq, kind)], ..Group::default() };
                    let result = journal.apply(&group).unwrap();
                    prop_assert_eq!(&result.outcomes, &vec![Outcome::Duplicate], "a re-send is never journaled twice");
                }
                Op::Receipt(lane, n) => {
                    let queue = &mut model.lanes[lane.index()];
                    let n = n.min(queue.len());
                    if n == 0 { continue }
                    let first = queue[0].0;
                    let last = queue[n - 1].0;
                    let group = Group { receipted: vec![SeqRange { lane, first, last }], ..Group::default() };
                    let result = journal.apply(&group).unwrap();
                    prop_assert_eq!(result.deleted, n as u64);
                    queue.drain(..n);
                }
                Op::Crash => {
                    generation += 1;
                    let copy = dir.path().join(format!("journal-{generation}.redb"));
                    std::fs::copy(&path, &copy).unwrap();
                    drop(journal);
                    path = copy;
                    journal = Journal::open_sealed(&path, sealer.clone()).unwrap();
                }
                Op::Restart => {
                    drop(journal);
                    journal = Journal::open_sealed(&path, sealer.clone()).unwrap();
                }
            }
            assert_agree(&journal, &model);
        }
        // Whatever happened, every committed event is either pending or was
        // receipted, and lane sequences went on where they were.
        let probe = Group { events: vec![event("dev-probe", 1, EventKind::Fall)], ..Group::default() };
        let r = journal.apply(&probe).unwrap();
        prop_assert_eq!(&r.outcomes, &vec![Outcome::Committed { lane: Lane::Alarm, seq: model.next[0] }]);
    }
}

/// With a size limit: alarms and care events are never lost, telemetry
/// leaves only oldest first and only as counted, the byte count kept with
/// the records matches the records through crashes and restarts, and
/// telemetry never eats into the alarms' reserve.
mod limited {
    use super::*;
    use trygg_gateway::journal::{Policy, WhenFull};

    const MAX: u64 = 3000;
    const RESERVE: u64 = 1000;

    fn policy() -> Policy {
        Policy {
            source_id: "gw-model".into(),
            max_bytes: Some(MAX),
            alarm_reserve_bytes: RESERVE,
            when_full: WhenFull::DropOldest,
            telemetry_max_age_ms: None,
            // Never due: no report records to tell apart in this model.
            drop_report_every_ms: u64::MAX,
        }
    }

    fn open(path: &std::path::Path) -> Journal {
        // Sealed, as the service keeps it.
        let sealer = std::sync::Arc::new(trygg_gateway::seal::Sealer::new(&[0x5e; 32]));
        let mut j = Journal::open_sealed(path, sealer).unwrap();
        j.set_policy(policy());
        j
    }

    fn pending(journal: &Journal, lane: Lane) -> Vec<(String, u64)> {
        journal
            .reader()
            .read_after(lane, 0, usize::MAX)
            .unwrap()
            .iter()
            .map(|p| {
                let r: trygg_uplink::Record = serde_json::from_slice(&p.json).unwrap();
                (r.device, r.device_seq)
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn alarms_are_never_lost_and_telemetry_goes_oldest_first(ops in proptest::collection::vec(op(), 1..60)) {
            let dir = tempfile::tempdir().unwrap();
            let mut path = dir.path().join("journal-0.redb");
            let mut journal = open(&path);
            // Per lane, what must be pending, oldest first.
            let mut lanes: [VecDeque<(String, u64)>; 3] = Default::default();
            let mut next_seq = 1u64;
            let mut generation = 0;
            for op in ops {
                match op {
                    Op::Append(events) => {
                        let mut group = Group::default();
                        for (d, kind) in &events {
                            group.events.push(event(&format!("dev-{d}"), next_seq, *kind));
                            next_seq += 1;
                        }
                        let result = journal.apply(&group).unwrap();
                        let mut refused = 0u64;
                        for (e, outcome) in group.events.iter().zip(&result.outcomes) {
                            let lane = e.event.kind.lane();
                            match outcome {
                                Outcome::Committed { .. } => {
                                    lanes[lane.index()].push_back((e.device.clone(), e.event.seq));
                                }
                                // Care events fill what telemetry may use and
                                // no older telemetry is left: the new one goes.
                                Outcome::Refused => {
                                    prop_assert_eq!(lane, Lane::Telemetry, "only telemetry is ever refused");
                                    refused += 1;
                                }
                                other => prop_assert!(false, "{:?}", other),
                            }
                        }
                        // Drops come off the front of the telemetry queue:
                        // the oldest go, and exactly as many as counted.
                        let got = pending(&journal, Lane::Telemetry);
                        let t = &mut lanes[Lane::Telemetry.index()];
                        let dropped = t.len() - got.len();
                        prop_assert_eq!(dropped as u64 + refused, result.dropped_limit);
                        t.drain(..dropped);
                    }
                    Op::Resend(_, _) => {}
                    Op::Receipt(lane, n) => {
                        let all = journal.reader().read_after(lane, 0, n).unwrap();
                        let Some(last) = all.last() else { continue };
                        let first = all[0].seq;
                        let group = Group { receipted: vec![SeqRange { lane, first, last: last.seq }], ..Group::default() };
                        let result = journal.apply(&group).unwrap();
                        lanes[lane.index()].drain(..result.deleted as usize);
                    }
                    Op::Crash => {
                        generation += 1;
                        let copy = dir.path().join(format!("journal-{generation}.redb"));
                        std::fs::copy(&path, &copy).unwrap();
                        drop(journal);
                        path = copy;
                        journal = open(&path);
                    }
                    Op::Restart => {
                        drop(journal);
                        journal = open(&path);
                    }
                }
                for lane in Lane::ALL {
                    prop_assert_eq!(
                        pending(&journal, lane),
                        lanes[lane.index()].iter().cloned().collect::<Vec<_>>(),
                        "lane {}", lane
                    );
                }
                // The byte count kept with the records is the records' size.
                let bytes = journal.reader().pending_bytes().unwrap();
                for lane in Lane::ALL {
                    let real: u64 = journal.reader().read_after(lane, 0, usize::MAX).unwrap().iter().map(|p| p.stored_len).sum();
                    prop_assert_eq!(bytes[lane.index()], real, "bytes of lane {}", lane);
                }
                // Telemetry never takes the alarms' reserve.
                if !lanes[Lane::Telemetry.index()].is_empty() {
                    prop_assert!(bytes[1] + bytes[2] <= MAX - RESERVE, "{:?}", bytes);
                }
            }
        }
    }
}
