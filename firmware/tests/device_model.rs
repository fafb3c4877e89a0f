//! The device's queue, checked against a model through random raises,
//! lost messages, lost receipts, link drops, power cuts (some tearing a
//! flash write), late and unknown receipts.
//!
//! What must hold:
//! - every event `raise` accepted reaches the gateway, unless a full queue
//!   evicted it for a more important one (never an alarm), or the power
//!   was cut while it was being written (the one event torn);
//! - a sequence number never names two different events;
//! - once everything is receipted nothing is sent again (no event re-sent
//!   forever);
//! - an alarm is refused only when the queue is full of alarms.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use trygg_firmware::flash::MemFlash;
use trygg_firmware::{Device, DeviceSettings, Leaf, RaiseError, Transport};
use trygg_protocol::{DeviceEvent, EventKind, Lane, Receipt, ReceiptStatus};

const N: usize = 8;
type Flash = MemFlash<{ 4 * 1024 }, 1024>;

/// The link: what the device published, not yet seen by the gateway.
#[derive(Default)]
struct Link {
    up: bool,
    in_flight: Vec<Vec<u8>>,
}

impl Transport for Link {
    type Error = ();
    fn publish(&mut self, leaf: Leaf, payload: &[u8]) -> Result<(), ()> {
        if !self.up {
            return Err(());
        }
        if leaf == Leaf::Event {
            self.in_flight.push(payload.to_vec());
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
enum Op {
    Raise(u8),
    Tick(u64),
    /// The gateway takes what is in flight (or the link loses it).
    Gateway {
        lose: bool,
    },
    /// Receipts reach the device (or are lost).
    Receipts {
        lose: bool,
    },
    LinkDown,
    LinkUp,
    /// The power goes; `Some(b)`: in the middle of a raise, after `b` bytes
    /// of flash writing.
    PowerCut(Option<u16>),
    UnknownReceipt(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..3).prop_map(Op::Raise),
        4 => (0u64..3000).prop_map(Op::Tick),
        4 => any::<bool>().prop_map(|lose| Op::Gateway { lose }),
        3 => any::<bool>().prop_map(|lose| Op::Receipts { lose }),
        1 => Just(Op::LinkDown),
        2 => Just(Op::LinkUp),
        1 => prop::option::of(0u16..200).prop_map(Op::PowerCut),
        1 => (0u64..5000).prop_map(Op::UnknownReceipt),
    ]
}

fn kind(class: u8) -> EventKind {
    match class {
        0 => EventKind::ButtonPress,
        1 => EventKind::DoseNotConfirmed,
        _ => EventKind::Motion,
    }
}

struct World {
    device: Option<Device<Link, Flash, N>>,
    now: u64,
    /// Committed at the gateway: seq → the event.
    committed: BTreeMap<u64, DeviceEvent>,
    /// Receipts on their way to the device.
    receipts: Vec<Vec<u8>>,
    /// Accepted by `raise`: seq → kind.
    accepted: BTreeMap<u64, EventKind>,
    /// Evicted by a full queue.
    evicted: BTreeSet<u64>,
    /// Torn by a power cut while being written.
    torn: BTreeSet<u64>,
}

fn settings() -> DeviceSettings {
    DeviceSettings {
        heartbeat_ms: 60_000,
        retry_ms: 100,
        max_retry_ms: 1_000,
        battery_low_percent: 20,
    }
}

impl World {
    fn new() -> World {
        World {
            device: Some(Device::new(Link::default(), Flash::new(), 1, settings(), 0)),
            now: 0,
            committed: BTreeMap::new(),
            receipts: Vec::new(),
            accepted: BTreeMap::new(),
            evicted: BTreeSet::new(),
            torn: BTreeSet::new(),
        }
    }

    fn dev(&mut self) -> &mut Device<Link, Flash, N> {
        self.device.as_mut().unwrap()
    }

    fn raise(&mut self, kind: EventKind) -> Option<u64> {
        let now = self.now;
        let before: BTreeSet<u64> = self.dev().pending_events().map(|e| e.seq).collect();
        let alarms_before = self
            .dev()
            .pending_events()
            .filter(|e| e.kind.lane() == Lane::Alarm)
            .count();
        match self.dev().raise(kind, None, now) {
            Ok(seq) => {
                let after: BTreeSet<u64> = self.dev().pending_events().map(|e| e.seq).collect();
                for gone in before.difference(&after) {
                    let k = self.accepted.get(gone).copied();
                    assert_ne!(
                        k.map(|k| k.lane()),
                        Some(Lane::Alarm),
                        "an alarm was evicted"
                    );
                    self.evicted.insert(*gone);
                }
                // Only a number torn by a power cut (never sent) comes again.
                if self.accepted.insert(seq, kind).is_some() {
                    assert!(self.torn.remove(&seq), "seq {seq} handed out twice");
                }
                Some(seq)
            }
            Err(RaiseError::Full) => {
                if kind.lane() == Lane::Alarm {
                    assert_eq!(alarms_before, N, "an alarm refused with room for it");
                }
                None
            }
        }
    }

    fn step(&mut self, op: &Op) {
        match op {
            Op::Raise(c) => {
                self.raise(kind(*c));
            }
            Op::Tick(ms) => {
                self.now += ms;
                let now = self.now;
                self.dev().poll(now);
            }
            Op::Gateway { lose } => {
                let sent = std::mem::take(&mut self.dev().transport().in_flight);
                if *lose {
                    return;
                }
                for payload in sent {
                    let ev = DeviceEvent::decode(&payload).expect("the device sends valid events");
                    let status = match self.committed.get(&ev.seq) {
                        Some(first) => {
                            assert_eq!(first, &ev, "seq {} names two events", ev.seq);
                            ReceiptStatus::Duplicate
                        }
                        None => {
                            self.committed.insert(ev.seq, ev);
                            ReceiptStatus::Committed
                        }
                    };
                    let mut buf = [0u8; 128];
                    let n = Receipt::new(ev.seq, status, None).encode(&mut buf).unwrap();
                    self.receipts.push(buf[..n].to_vec());
                }
            }
            Op::Receipts { lose } => {
                let rs = std::mem::take(&mut self.receipts);
                if !lose {
                    for r in rs {
                        self.dev().on_receipt(&r);
                    }
                }
            }
            Op::LinkDown => {
                self.dev().transport().up = false;
                self.dev().on_disconnected();
            }
            Op::LinkUp => {
                let now = self.now;
                self.dev().transport().up = true;
                self.dev().on_connected(now);
            }
            Op::UnknownReceipt(seq) => {
                let pending: BTreeSet<u64> = self.dev().pending_events().map(|e| e.seq).collect();
                if !pending.contains(seq) {
                    let mut buf = [0u8; 128];
                    let n = Receipt::new(*seq, ReceiptStatus::Committed, None)
                        .encode(&mut buf)
                        .unwrap();
                    let before = self.dev().pending();
                    self.dev().on_receipt(&buf[..n]);
                    assert_eq!(self.dev().pending(), before);
                }
            }
            Op::PowerCut(cut) => {
                let (link, flash) = self.device.take().unwrap().power_off();
                let mut flash = flash.expect("the flash never fails here but for power");
                if let Some(bytes) = cut {
                    // Power fails in the middle of the next raise's writes.
                    flash.cut_power_after(*bytes as usize);
                    let mut d: Device<Link, Flash, N> =
                        Device::new(link, flash, 1, settings(), self.now);
                    let before: BTreeSet<u64> = d.pending_events().map(|e| e.seq).collect();
                    if let Ok(seq) = d.raise(EventKind::Motion, None, self.now) {
                        self.accepted.insert(seq, EventKind::Motion);
                        self.torn.insert(seq);
                    }
                    let after: BTreeSet<u64> = d.pending_events().map(|e| e.seq).collect();
                    self.evicted.extend(before.difference(&after));
                    let (link, flash) = d.power_off();
                    let mut flash = flash.unwrap();
                    flash.power_on();
                    self.device = Some(Device::new(link, flash, 1, settings(), self.now));
                } else {
                    self.device = Some(Device::new(link, flash, 1, settings(), self.now));
                }
                // What was in RAM is gone, and the link must be set up again.
                let d = self.dev();
                d.transport().in_flight.clear();
                d.transport().up = false;
            }
        }
    }

    /// The link heals and stays up until everything is receipted.
    fn heal(&mut self) {
        let now = self.now;
        self.dev().transport().up = true;
        self.dev().on_connected(now);
        for _ in 0..500 {
            self.step(&Op::Tick(500));
            self.step(&Op::Gateway { lose: false });
            self.step(&Op::Receipts { lose: false });
            if self.dev().pending() == 0 {
                break;
            }
        }
        assert_eq!(
            self.dev().pending(),
            0,
            "the queue drains once the link is good"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_accepted_event_arrives_once_and_nothing_is_resent_forever(ops in prop::collection::vec(op(), 1..200)) {
        let mut w = World::new();
        for op in &ops {
            w.step(op);
        }
        w.heal();
        for (seq, kind) in &w.accepted {
            if w.evicted.contains(seq) || w.torn.contains(seq) {
                continue;
            }
            let got = w.committed.get(seq);
            prop_assert!(got.is_some(), "{kind} seq {seq} accepted but never arrived");
            prop_assert_eq!(got.unwrap().kind, *kind);
        }
        // Nothing arrives that was not raised (recovery invents nothing).
        for (seq, ev) in &w.committed {
            prop_assert!(
                w.accepted.get(seq) == Some(&ev.kind) || ev.kind == EventKind::DeviceFault,
                "seq {} arrived as {} but was raised as {:?}", seq, ev.kind, w.accepted.get(seq)
            );
        }
        // All receipted: ten minutes more send nothing but heartbeats.
        let sends = w.dev().counters().sends;
        for _ in 0..120 {
            w.step(&Op::Tick(5_000));
        }
        prop_assert_eq!(w.dev().counters().sends, sends);
        prop_assert!(w.dev().transport().in_flight.is_empty());
    }
}

#[test]
fn a_power_cut_keeps_unreceipted_events_and_sequence_numbers_move_on() {
    let mut w = World::new();
    let a = w.raise(EventKind::Fall).unwrap();
    let b = w.raise(EventKind::Temperature).unwrap();
    w.step(&Op::PowerCut(None));
    let pending: Vec<u64> = w.dev().pending_events().map(|e| e.seq).collect();
    assert_eq!(pending, [a, b]);
    let c = w.raise(EventKind::Motion).unwrap();
    assert!(
        c > b + 1000,
        "the counter moved on past anything handed out: {c}"
    );
    w.heal();
    assert_eq!(w.committed.keys().copied().collect::<Vec<_>>(), [a, b, c]);
}

#[test]
fn a_full_queue_evicts_telemetry_for_alarms_and_refuses_a_ninth_alarm() {
    let mut w = World::new();
    for _ in 0..N {
        w.raise(EventKind::Motion).unwrap();
    }
    for _ in 0..N {
        w.raise(EventKind::ButtonPress).unwrap();
    }
    assert_eq!(w.evicted.len(), N);
    assert_eq!(w.raise(EventKind::ButtonPress), None);
    assert_eq!(w.raise(EventKind::Motion), None);
    assert_eq!(w.dev().counters().refused, 2);
    w.heal();
}

#[test]
fn unknown_and_malformed_receipts_change_nothing_and_are_counted() {
    let mut w = World::new();
    w.raise(EventKind::ButtonPress).unwrap();
    w.step(&Op::UnknownReceipt(4242));
    assert_eq!(
        w.dev().on_receipt(b"{not json"),
        trygg_firmware::ReceiptOutcome::Malformed
    );
    assert_eq!(
        w.dev().on_receipt(&[0xff; 300]),
        trygg_firmware::ReceiptOutcome::Malformed
    );
    let c = *w.dev().counters();
    assert_eq!((c.unknown_receipts, c.malformed_receipts), (1, 2));
    assert_eq!(w.dev().pending(), 1);
}

#[test]
fn settings_from_the_gateway_apply_and_bad_ones_are_reported() {
    let mut w = World::new();
    let now = w.now;
    let c = w
        .dev()
        .on_config(br#"{"v":1,"heartbeat_s":60,"pre_alarm_s":0}"#, now)
        .unwrap();
    assert_eq!(c.pre_alarm_s, Some(0));
    assert_eq!(w.dev().settings().heartbeat_ms, 60_000);
    assert!(w
        .dev()
        .on_config(br#"{"v":1,"heartbeat_s":0}"#, now)
        .is_err());
    assert!(w.dev().on_config(&[b'{'; 2000], now).is_err());
    assert_eq!(w.dev().settings().heartbeat_ms, 60_000, "unchanged");
    let kinds: Vec<(EventKind, Option<f32>)> = w
        .dev()
        .pending_events()
        .map(|e| (e.kind, e.value))
        .collect();
    assert_eq!(
        kinds,
        [
            (EventKind::ConfigRejected, Some(4.0)),
            (EventKind::ConfigRejected, Some(1.0))
        ]
    );
}

#[test]
fn heartbeats_go_at_the_period_with_battery_and_low_battery_is_raised_once() {
    let mut w = World::new();
    w.dev().set_battery(50, 0);
    w.step(&Op::LinkUp);
    w.step(&Op::Tick(0));
    assert_eq!(w.dev().counters().heartbeats, 1);
    w.step(&Op::Tick(59_000));
    assert_eq!(w.dev().counters().heartbeats, 1);
    w.step(&Op::Tick(1_000));
    assert_eq!(w.dev().counters().heartbeats, 2);
    for level in [19, 18, 15, 25, 19] {
        w.dev().set_battery(level, 0);
    }
    let lows = w
        .dev()
        .pending_events()
        .filter(|e| e.kind == EventKind::BatteryLow)
        .count();
    assert_eq!(lows, 1, "once, until it has risen 10 above the threshold");
    w.dev().set_battery(31, 0);
    w.dev().set_battery(10, 0);
    let lows = w
        .dev()
        .pending_events()
        .filter(|e| e.kind == EventKind::BatteryLow)
        .count();
    assert_eq!(lows, 2);
}

#[test]
fn a_flash_that_fails_leaves_the_device_working_from_ram_and_says_so() {
    let mut flash = Flash::new();
    flash.cut_power_after(0);
    // Writes fail from the start (a worn or broken flash).
    let mut d: Device<Link, Flash, N> = Device::new(Link::default(), flash, 1, settings(), 0);
    let seq = d.raise(EventKind::ButtonPress, None, 0).unwrap();
    let kinds: Vec<EventKind> = d.pending_events().map(|e| e.kind).collect();
    assert!(kinds.contains(&EventKind::ButtonPress), "{kinds:?}");
    assert!(kinds.contains(&EventKind::DeviceFault), "{kinds:?}");
    assert!(d.counters().store_failures >= 1);
    d.transport().up = true;
    d.on_connected(0);
    d.poll(0);
    let sent: Vec<u64> = d
        .transport()
        .in_flight
        .iter()
        .map(|p| DeviceEvent::decode(p).unwrap().seq)
        .collect();
    assert!(sent.contains(&seq), "the alarm goes out even so");
}
