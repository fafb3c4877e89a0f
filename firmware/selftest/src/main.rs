//! Trygg's device logic on a Cortex-M4, under QEMU (`mps2-an386`).
//!
//! The image runs the real `trygg_firmware::Device` (queue on flash,
//! sequence numbers, receipts, settings) and its alarm button, compiled for
//! `thumbv7em-none-eabihf`, against an emulated gateway behind the
//! [`Transport`] trait. Nothing of the device logic is mocked: only the
//! world around it is (the link, the flash in RAM, a scripted pin, time).
//!
//! Each scenario prints `ok <name>` or `FAIL <name> (src/main.rs:<line>):
//! <why>`; the image then leaves QEMU through semihosting with success
//! only if every scenario passed, after printing
//! `selftest passed: <n> scenarios`. A panic also exits with failure
//! (panic-semihosting, `exit` feature).
//!
//! Time is simulated: every call takes `now_ms`, so no timer is needed and
//! a run is the same every time.
#![no_std]
#![no_main]
#![deny(unsafe_code)]
// A failure ends the run at once: the size of `Err(Failure)` costs nothing
// worth saving, and the message stays next to the scenario's name.
#![allow(clippy::result_large_err)]

use core::cell::Cell;
use core::convert::Infallible;
use core::fmt::Write as _;

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use heapless::{Deque, String, Vec};
use panic_semihosting as _;
use trygg_firmware::config::ConfigError;
use trygg_firmware::device::BOOT_SKIP;
use trygg_firmware::flash::MemFlash;
use trygg_firmware::input::{Action, AlarmButton, ButtonSettings};
use trygg_firmware::{Device, DeviceSettings, Leaf, RaiseError, ReceiptOutcome, Transport};
use trygg_protocol::{DeviceEvent, EventKind, Heartbeat, Lane, Receipt, ReceiptStatus};

/// Queue capacity: small, so that scenario 4 fills it.
const QUEUE: usize = 8;
/// 4 sectors of 4 KiB, as a small SPI NOR part is used by a device.
type Flash = MemFlash<{ 4 * 4096 }, 4096>;
type Dev = Device<Gateway, Flash, QUEUE>;

// ---------------------------------------------------------------------------
// Failures

/// Why a scenario failed, and where.
struct Failure {
    line: u32,
    msg: String<240>,
}

type Outcome = Result<(), Failure>;

/// A scenario: its name and how to run it.
type Scenario = (&'static str, fn() -> Outcome);

/// Fails the scenario with a message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            let mut msg = String::<240>::new();
            // A message longer than the buffer is cut, not lost.
            let _ = write!(msg, $($fmt)+);
            return Err(Failure { line: line!(), msg });
        }
    };
}

/// Fails the scenario unless `left == right`, showing both.
macro_rules! ensure_eq {
    ($left:expr, $right:expr) => {
        // A `match`, as in `assert_eq!`, keeps temporaries alive.
        match (&$left, &$right) {
            (l, r) => {
                ensure!(
                    *l == *r,
                    "{} is {:?}, expected {:?}",
                    stringify!($left),
                    l,
                    r
                );
            }
        }
    };
}

/// An event raised, or the scenario fails.
#[track_caller]
fn raised(r: Result<u64, RaiseError>) -> Result<u64, Failure> {
    r.map_err(|e| {
        let mut msg = String::new();
        let _ = write!(msg, "raise refused: {e:?}");
        Failure {
            line: core::panic::Location::caller().line(),
            msg,
        }
    })
}

/// The flash `Device::power_off` hands back, or the scenario fails (a
/// device that stopped using its flash has none to give).
#[track_caller]
fn flash_back(flash: Option<Flash>) -> Result<Flash, Failure> {
    flash.ok_or_else(|| Failure {
        line: core::panic::Location::caller().line(),
        msg: String::try_from("power_off gave no flash back: the device had dropped it")
            .unwrap_or_default(),
    })
}

// ---------------------------------------------------------------------------
// The emulated gateway

/// The transport refused: the link is down.
#[derive(Debug)]
struct LinkDown;

/// The gateway at the other end of the link, as the device sees it: it
/// decodes every event as the real gateway does, journals its sequence
/// number, and answers with a receipt (`committed` the first time,
/// `duplicate` for a re-send). Receipts wait in `receipts` until
/// [`exchange`] hands them to the device, so a scenario can lose them.
struct Gateway {
    /// When false, every publish is refused.
    link_up: bool,
    /// Every event accepted, in order, re-sends included (the newest 64).
    received: Deque<DeviceEvent, 64>,
    /// Sequence numbers journaled (the newest 64).
    journal: Deque<u64, 64>,
    /// Receipts not yet delivered.
    receipts: Vec<(u64, ReceiptStatus), 32>,
    heartbeats: u32,
    refused: u32,
    /// Payloads the gateway could not decode: a wire-format bug.
    undecodable: u32,
}

impl Gateway {
    fn new() -> Self {
        Gateway {
            link_up: true,
            received: Deque::new(),
            journal: Deque::new(),
            receipts: Vec::new(),
            heartbeats: 0,
            refused: 0,
            undecodable: 0,
        }
    }

    fn received_seqs(&self) -> Vec<u64, 64> {
        self.received.iter().map(|e| e.seq).collect()
    }
}

impl Transport for Gateway {
    type Error = LinkDown;

    fn publish(&mut self, leaf: Leaf, payload: &[u8]) -> Result<(), LinkDown> {
        if !self.link_up {
            self.refused += 1;
            return Err(LinkDown);
        }
        match leaf {
            Leaf::Heartbeat => {
                if Heartbeat::decode(payload).is_ok() {
                    self.heartbeats += 1;
                } else {
                    self.undecodable += 1;
                }
            }
            Leaf::Event => {
                let Ok(ev) = DeviceEvent::decode(payload) else {
                    self.undecodable += 1;
                    return Ok(());
                };
                if self.received.is_full() {
                    self.received.pop_front();
                }
                let _ = self.received.push_back(ev);
                let status = if self.journal.iter().any(|s| *s == ev.seq) {
                    ReceiptStatus::Duplicate
                } else {
                    if self.journal.is_full() {
                        self.journal.pop_front();
                    }
                    let _ = self.journal.push_back(ev.seq);
                    ReceiptStatus::Committed
                };
                // More than 32 unanswered: not answered, the device re-sends.
                let _ = self.receipts.push((ev.seq, status));
            }
        }
        Ok(())
    }
}

/// A receipt as the gateway puts it on `trygg/v1/dev/{id}/ack`.
fn receipt_bytes(seq: u64, status: ReceiptStatus) -> Vec<u8, 96> {
    let mut buf = [0u8; 96];
    let n = Receipt::new(seq, status, None)
        .encode(&mut buf)
        .expect("a receipt fits in 96 bytes");
    Vec::from_slice(&buf[..n]).expect("same size")
}

/// One turn of the board's main loop: the device sends what is due, and
/// the gateway's receipts come back.
fn exchange(dev: &mut Dev, now_ms: u64) -> Vec<ReceiptOutcome, 32> {
    dev.poll(now_ms);
    deliver_receipts(dev)
}

fn deliver_receipts(dev: &mut Dev) -> Vec<ReceiptOutcome, 32> {
    let receipts = core::mem::take(&mut dev.transport().receipts);
    let mut outcomes = Vec::new();
    for (seq, status) in receipts {
        let _ = outcomes.push(dev.on_receipt(&receipt_bytes(seq, status)));
    }
    outcomes
}

fn new_device(gateway: Gateway, flash: Flash, now_ms: u64) -> Dev {
    Device::new(gateway, flash, 1, DeviceSettings::default(), now_ms)
}

fn pending(dev: &Dev) -> Vec<(u64, EventKind, Option<f32>), QUEUE> {
    dev.pending_events()
        .map(|e| (e.seq, e.kind, e.value))
        .collect()
}

// ---------------------------------------------------------------------------
// Scenarios

/// 1. An alarm raised while the link is down goes out on connect, with the
///    wall-clock time, and leaves the queue on its receipt.
fn alarm_raised_offline_is_sent_on_connect() -> Outcome {
    let mut dev = new_device(Gateway::new(), Flash::new(), 0);
    ensure!(dev.has_storage(), "a blank flash was not usable");
    dev.set_clock(0, 1_700_000_000);
    let seq = raised(dev.raise(EventKind::ButtonPress, None, 1_000))?;
    dev.poll(1_000);
    dev.poll(30_000);
    ensure!(
        dev.transport().received.is_empty() && dev.transport().heartbeats == 0,
        "sent while disconnected"
    );
    ensure_eq!(dev.pending(), 1);

    dev.on_connected(60_000);
    let outcomes = exchange(&mut dev, 60_000);
    ensure_eq!(
        outcomes.as_slice(),
        &[ReceiptOutcome::Done {
            seq,
            status: ReceiptStatus::Committed
        }][..]
    );
    let gw = dev.transport();
    ensure_eq!(gw.received.len(), 1);
    let ev = *gw.received.front().unwrap();
    ensure_eq!(
        (ev.seq, ev.kind, ev.ts),
        (seq, EventKind::ButtonPress, Some(1_700_000_001))
    );
    ensure_eq!(gw.heartbeats, 1);
    ensure_eq!(gw.undecodable, 0);
    ensure_eq!(dev.pending(), 0);
    ensure_eq!(dev.counters().receipted, 1);
    Ok(())
}

/// 2. The gateway journals an event but its receipt is lost, then the link
///    drops: the device re-sends with the same sequence number only after
///    each retry interval, the gateway answers `duplicate`, and the late
///    original receipt changes nothing.
fn link_drop_resends_with_same_seq() -> Outcome {
    let mut dev = new_device(Gateway::new(), Flash::new(), 0);
    dev.on_connected(0);
    let seq = raised(dev.raise(EventKind::Fall, None, 0))?;
    dev.poll(0);
    let lost = core::mem::take(&mut dev.transport().receipts);
    ensure_eq!(lost.as_slice(), &[(seq, ReceiptStatus::Committed)][..]);

    dev.transport().link_up = false;
    // Retry interval 2 s, doubling: due at 2 s, 6 s, 14 s.
    for (now, refused) in [(1_999, 0), (2_000, 1), (5_999, 1), (6_000, 2)] {
        dev.poll(now);
        ensure!(
            dev.transport().refused == refused,
            "at {} ms: {} publishes refused, expected {}",
            now,
            dev.transport().refused,
            refused
        );
    }
    dev.transport().link_up = true;
    ensure!(exchange(&mut dev, 13_999).is_empty(), "re-sent before 14 s");
    ensure_eq!(dev.pending(), 1);

    let outcomes = exchange(&mut dev, 14_000);
    ensure_eq!(
        outcomes.as_slice(),
        &[ReceiptOutcome::Done {
            seq,
            status: ReceiptStatus::Duplicate
        }][..]
    );
    ensure_eq!(dev.transport().received_seqs().as_slice(), &[seq, seq][..]);
    ensure_eq!(dev.pending(), 0);

    // The first receipt turns up after all.
    let late = dev.on_receipt(&receipt_bytes(seq, ReceiptStatus::Committed));
    ensure_eq!(late, ReceiptOutcome::Unknown { seq });
    ensure_eq!(dev.counters().unknown_receipts, 1);
    ensure_eq!(dev.counters().receipted, 1);
    ensure_eq!(dev.pending(), 0);
    exchange(&mut dev, 200_000);
    ensure_eq!(dev.transport().received.len(), 2);
    ensure_eq!(dev.transport().undecodable, 0);
    Ok(())
}

/// 3. The power goes with events unreceipted: after a restart on the same
///    flash they are back (same numbers, kinds, values), a receipted one is
///    not, and new numbers are higher than any handed out before.
fn power_loss_keeps_unreceipted_events() -> Outcome {
    let mut dev = new_device(Gateway::new(), Flash::new(), 0);
    let a = raised(dev.raise(EventKind::Temperature, Some(21.5), 0))?;
    let b = raised(dev.raise(EventKind::ButtonPress, None, 10))?;
    let c = raised(dev.raise(EventKind::DoorOpened, None, 20))?;
    let done = dev.on_receipt(&receipt_bytes(b, ReceiptStatus::Committed));
    ensure_eq!(
        done,
        ReceiptOutcome::Done {
            seq: b,
            status: ReceiptStatus::Committed
        }
    );
    let highest = dev.next_seq() - 1;
    ensure_eq!(highest, c);

    let (gw, flash) = dev.power_off();
    let flash = flash_back(flash)?;
    // RAM is gone; the clock starts again at 0.
    let mut dev = new_device(gw, flash, 0);
    ensure!(dev.has_storage(), "the flash was not usable after restart");
    ensure_eq!(
        pending(&dev).as_slice(),
        &[
            (a, EventKind::Temperature, Some(21.5)),
            (c, EventKind::DoorOpened, None)
        ][..]
    );
    ensure_eq!(dev.counters().recovered, 2);
    ensure!(
        dev.next_seq() >= highest + 1 + BOOT_SKIP,
        "next seq {} after restart, highest before {}: not moved on by BOOT_SKIP",
        dev.next_seq(),
        highest
    );
    let d = raised(dev.raise(EventKind::Fall, None, 5))?;
    ensure!(d > highest, "new seq {} not above {}", d, highest);

    dev.on_connected(100);
    let outcomes = exchange(&mut dev, 100);
    ensure_eq!(outcomes.len(), 3);
    // The alarm goes first, then the rest oldest first.
    ensure_eq!(dev.transport().received_seqs().as_slice(), &[d, a, c][..]);
    ensure_eq!(dev.pending(), 0);

    // Receipts are durable too: nothing comes back after a second restart.
    let (gw, flash) = dev.power_off();
    let mut dev = new_device(gw, flash_back(flash)?, 0);
    ensure_eq!(dev.pending(), 0);
    ensure!(
        dev.next_seq() > d,
        "seq {} reused after {}",
        dev.next_seq(),
        d
    );
    ensure_eq!(dev.transport().undecodable, 0);
    Ok(())
}

/// 4. A full queue: each alarm pushes out the oldest telemetry, nothing
///    pushes out an alarm, and after a restart the alarms are what is left.
fn full_queue_keeps_alarms() -> Outcome {
    let mut dev = new_device(Gateway::new(), Flash::new(), 0);
    let mut telemetry: Vec<u64, QUEUE> = Vec::new();
    for i in 0..QUEUE as u64 {
        let seq = raised(dev.raise(EventKind::Motion, Some(i as f32), i))?;
        let _ = telemetry.push(seq);
    }
    ensure!(
        dev.raise(EventKind::Temperature, Some(20.0), 10).is_err(),
        "telemetry did not refuse telemetry in a full queue"
    );
    let mut alarms: Vec<u64, QUEUE> = Vec::new();
    for i in 0..QUEUE {
        let seq = raised(dev.raise(EventKind::ButtonPress, None, 100 + i as u64))?;
        let _ = alarms.push(seq);
        // The oldest telemetry left; the newer stays.
        let held: Vec<u64, QUEUE> = dev.pending_events().map(|e| e.seq).collect();
        ensure!(
            !held.contains(&telemetry[i]) && telemetry[i + 1..].iter().all(|s| held.contains(s)),
            "after alarm {}: queue {:?}",
            i,
            held
        );
    }
    ensure_eq!(dev.counters().evicted, QUEUE as u32);
    ensure_eq!(dev.raise(EventKind::Fall, None, 200), Err(RaiseError::Full));
    ensure_eq!(
        dev.raise(EventKind::Motion, None, 201),
        Err(RaiseError::Full)
    );
    ensure_eq!(dev.counters().refused, 3);

    let (gw, flash) = dev.power_off();
    let mut dev = new_device(gw, flash_back(flash)?, 0);
    let held: Vec<u64, QUEUE> = dev.pending_events().map(|e| e.seq).collect();
    ensure_eq!(held, alarms);
    ensure!(
        dev.pending_events().all(|e| e.kind.lane() == Lane::Alarm),
        "a non-alarm survived"
    );

    dev.on_connected(0);
    let outcomes = exchange(&mut dev, 0);
    ensure_eq!(outcomes.len(), QUEUE);
    ensure_eq!(dev.transport().received_seqs(), {
        let mut v: Vec<u64, 64> = Vec::new();
        let _ = v.extend_from_slice(&alarms);
        v
    });
    ensure_eq!(dev.pending(), 0);
    Ok(())
}

/// 5. Receipts for unknown numbers and malformed receipts are ignored and
///    counted; bad settings change nothing and raise `config_rejected`;
///    good ones change the heartbeat period.
fn bad_receipts_and_settings_change_nothing() -> Outcome {
    let mut dev = new_device(Gateway::new(), Flash::new(), 0);
    let s = raised(dev.raise(EventKind::Temperature, Some(19.0), 0))?;

    let stranger = dev.on_receipt(&receipt_bytes(s + 100, ReceiptStatus::Committed));
    ensure_eq!(stranger, ReceiptOutcome::Unknown { seq: s + 100 });
    for junk in [
        &b"{\"v\":1,\"seq\":"[..],
        &b"\xff\xfe"[..],
        &br#"{"v":2,"seq":1,"status":"committed"}"#[..],
        &br#"{"v":1,"seq":1,"status":"eaten"}"#[..],
    ] {
        ensure_eq!(dev.on_receipt(junk), ReceiptOutcome::Malformed);
    }
    ensure_eq!(dev.counters().unknown_receipts, 1);
    ensure_eq!(dev.counters().malformed_receipts, 4);
    ensure_eq!(dev.counters().receipted, 0);
    ensure_eq!(
        pending(&dev).as_slice(),
        &[(s, EventKind::Temperature, Some(19.0))][..]
    );

    let before = *dev.settings();
    ensure_eq!(
        dev.on_config(b"{\"v\":1,\"heartbeat_s\":", 10),
        Err(ConfigError::Malformed)
    );
    ensure_eq!(
        dev.on_config(br#"{"v":1,"heartbeat_s":1}"#, 20),
        Err(ConfigError::OutOfRange("heartbeat_s"))
    );
    ensure_eq!(*dev.settings(), before);
    ensure_eq!(dev.counters().configs_rejected, 2);
    ensure_eq!(
        pending(&dev).as_slice(),
        &[
            (s, EventKind::Temperature, Some(19.0)),
            (s + 1, EventKind::ConfigRejected, Some(2.0)),
            (s + 2, EventKind::ConfigRejected, Some(4.0)),
        ][..]
    );

    let update = dev.on_config(br#"{"v":1,"heartbeat_s":60,"pre_alarm_s":5}"#, 30);
    ensure!(
        matches!(update, Ok(c) if c.heartbeat_s == Some(60) && c.pre_alarm_s == Some(5)),
        "good config: {:?}",
        update
    );
    ensure_eq!(dev.settings().heartbeat_ms, 60_000);
    ensure_eq!(dev.counters().configs_applied, 1);

    // Connecting sends the queue and a heartbeat; the next one is due a
    // minute later (it was five).
    dev.on_connected(1_000);
    ensure_eq!(exchange(&mut dev, 1_000).len(), 3);
    ensure_eq!(dev.pending(), 0);
    ensure_eq!(dev.transport().heartbeats, 1);
    exchange(&mut dev, 60_999);
    ensure_eq!(dev.transport().heartbeats, 1);
    exchange(&mut dev, 61_000);
    ensure_eq!(dev.transport().heartbeats, 2);
    ensure_eq!(dev.transport().undecodable, 0);
    Ok(())
}

/// A pin that plays a script of levels against the simulated clock:
/// `(from_ms, high)` steps, high before the first.
struct ScriptedPin<'a> {
    clock: &'a Cell<u64>,
    script: &'static [(u64, bool)],
}

impl ScriptedPin<'_> {
    fn level(&self) -> bool {
        let now = self.clock.get();
        self.script
            .iter()
            .rev()
            .find(|(from, _)| *from <= now)
            .is_none_or(|(_, high)| *high)
    }
}

impl embedded_hal::digital::ErrorType for ScriptedPin<'_> {
    type Error = Infallible;
}

impl embedded_hal::digital::InputPin for ScriptedPin<'_> {
    fn is_high(&mut self) -> Result<bool, Infallible> {
        Ok(self.level())
    }

    fn is_low(&mut self) -> Result<bool, Infallible> {
        Ok(!self.level())
    }
}

/// A pendant press (active low) that bounces going down and coming up.
const BOUNCY_PRESS: &[(u64, bool)] = &[
    (100, false),
    (103, true),
    (105, false),
    (108, true),
    (110, false),
    // Held for about 0.3 s, a short press.
    (400, true),
    (402, false),
    (405, true),
];

/// 6. A bouncing press of the alarm button, polled every millisecond,
///    gives one pre-alarm and then exactly one `button_press`, sent when
///    the pre-alarm window closes and not before.
fn bouncing_button_gives_one_alarm() -> Outcome {
    let clock = Cell::new(0);
    let pin = ScriptedPin {
        clock: &clock,
        script: BOUNCY_PRESS,
    };
    let mut button = AlarmButton::new(pin, ButtonSettings::button());
    let mut dev = new_device(Gateway::new(), Flash::new(), 0);
    dev.on_connected(0);

    let mut window: Option<u64> = None;
    let mut alarms = 0;
    for now in 0..=15_000u64 {
        clock.set(now);
        let action = match button.poll(now) {
            Ok(a) => a,
            Err(never) => match never {},
        };
        match action {
            None => {}
            Some(Action::PreAlarm { until_ms }) => {
                ensure!(window.is_none(), "a second pre-alarm at {} ms", now);
                // Released at 405 ms, debounced 30 ms later.
                ensure_eq!(until_ms, 435 + ButtonSettings::button().pre_alarm_ms);
                ensure!(button.in_pre_alarm(), "pre-alarm not shown");
                window = Some(until_ms);
            }
            Some(Action::Raise(kind)) => {
                ensure_eq!(kind, EventKind::ButtonPress);
                ensure!(
                    window.is_some_and(|until| now >= until),
                    "alarm at {} ms, before the window closed ({:?})",
                    now,
                    window
                );
                alarms += 1;
            }
            Some(other) => ensure!(false, "unexpected {:?} at {} ms", other, now),
        }
        if let Some(action) = action {
            match dev.act(action, now) {
                None | Some(Ok(_)) => {}
                Some(Err(e)) => ensure!(false, "act: {:?}", e),
            }
        }
        exchange(&mut dev, now);
        if window.is_none_or(|until| now < until) {
            ensure!(
                dev.transport().received.is_empty(),
                "an event went out at {} ms, inside the pre-alarm window",
                now
            );
        }
    }
    ensure_eq!(alarms, 1);
    let gw = dev.transport();
    ensure_eq!(gw.received.len(), 1);
    ensure_eq!(gw.received.front().unwrap().kind, EventKind::ButtonPress);
    ensure_eq!(dev.pending(), 0);
    Ok(())
}

/// 7. Hundreds of events through the flash ring: the log moves round the
///    sectors with the wear even, and a restart finds nothing pending and
///    a higher sequence number.
fn many_events_wear_the_flash_evenly() -> Outcome {
    let mut dev = new_device(Gateway::new(), Flash::new(), 0);
    dev.on_connected(0);
    let mut last = 0;
    for i in 0..600u64 {
        let now = i * 1_000;
        let kind = if i % 10 == 0 {
            EventKind::PullCord
        } else {
            EventKind::Temperature
        };
        last = raised(dev.raise(kind, Some(i as f32), now))?;
        let outcomes = exchange(&mut dev, now);
        ensure!(
            outcomes.len() == 1 && matches!(outcomes[0], ReceiptOutcome::Done { .. }),
            "event {}: {:?}",
            i,
            outcomes
        );
    }
    ensure_eq!(dev.counters().receipted, 600);
    ensure_eq!(dev.counters().store_failures, 0);
    let (gw, flash) = dev.power_off();
    let flash = flash_back(flash)?;
    let wear = flash.erase_counts();
    let (min, max) = (
        wear.iter().min().copied().unwrap_or(0),
        wear.iter().max().copied().unwrap_or(0),
    );
    ensure!(
        min >= 2 && max - min <= 1,
        "erases per sector {:?}: not round the ring evenly",
        wear
    );
    let dev = new_device(gw, flash, 0);
    ensure_eq!(dev.pending(), 0);
    ensure!(
        dev.next_seq() > last,
        "seq {} after {}",
        dev.next_seq(),
        last
    );
    Ok(())
}

// ---------------------------------------------------------------------------

#[entry]
fn main() -> ! {
    let scenarios: [Scenario; 7] = [
        (
            "alarm_raised_offline_is_sent_on_connect",
            alarm_raised_offline_is_sent_on_connect,
        ),
        (
            "link_drop_resends_with_same_seq",
            link_drop_resends_with_same_seq,
        ),
        (
            "power_loss_keeps_unreceipted_events",
            power_loss_keeps_unreceipted_events,
        ),
        ("full_queue_keeps_alarms", full_queue_keeps_alarms),
        (
            "bad_receipts_and_settings_change_nothing",
            bad_receipts_and_settings_change_nothing,
        ),
        (
            "bouncing_button_gives_one_alarm",
            bouncing_button_gives_one_alarm,
        ),
        (
            "many_events_wear_the_flash_evenly",
            many_events_wear_the_flash_evenly,
        ),
    ];
    for (name, run) in scenarios {
        match run() {
            Ok(()) => hprintln!("ok {}", name),
            Err(f) => {
                hprintln!("FAIL {} (src/main.rs:{}): {}", name, f.line, f.msg);
                exit(debug::EXIT_FAILURE);
            }
        }
    }
    hprintln!("selftest passed: {} scenarios", scenarios.len());
    exit(debug::EXIT_SUCCESS)
}

/// Leaves QEMU with this status (semihosting `SYS_EXIT`).
fn exit(status: debug::ExitStatus) -> ! {
    debug::exit(status);
    // Only reached without a semihosting host (a real board): stay put.
    loop {
        cortex_m::asm::wfi();
    }
}
