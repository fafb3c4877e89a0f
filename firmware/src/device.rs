//! A device: its queue of events awaiting receipt, kept on flash, its
//! sequence numbers, heartbeats, battery and settings, behind a transport.
//!
//! The board's main loop owns a [`Device`] and its inputs
//! ([`crate::input`], [`crate::dispenser`]). It calls [`Device::poll`]
//! every few milliseconds, hands it what the inputs ask for
//! ([`Device::act`]), and hands it what arrives from the gateway: receipts
//! ([`Device::on_receipt`]) and settings ([`Device::on_config`]). The
//! transport only moves bytes; it may refuse at any time and the device
//! offers the event again later.
//!
//! Invariants:
//! - an event is written to flash before it is first sent, and leaves the
//!   queue only on a receipt (committed, duplicate or rejected) for its
//!   sequence number, or evicted by a full queue for a more important one;
//! - a sequence number is never reused, across power loss too: at every
//!   start the counter moves on by [`BOOT_SKIP`] and that is written down
//!   first, so up to that many numbers handed out while the flash was
//!   failing are never handed out again (an event whose write was torn by
//!   the power cut itself was never sent: its number may come again);
//! - a receipt for a sequence number the device does not hold (late,
//!   repeated, or a stranger's) changes nothing and is counted;
//! - bad settings change nothing and are reported (`config_rejected`).

use embedded_storage::nor_flash::NorFlash;
use trygg_protocol::{DeviceEvent, EventKind, Heartbeat, Receipt, ReceiptStatus};

use crate::config::{ConfigError, ConfigUpdate};
use crate::input::{Action, Fault};
use crate::outbox::{Outbox, PushError};
use crate::store::Store;

/// How far the sequence counter moves on at every start.
pub const BOOT_SKIP: u64 = 1024;

/// Where a payload goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leaf {
    /// `trygg/v1/dev/{id}/evt`, QoS 1.
    Event,
    /// `trygg/v1/dev/{id}/hb`, QoS 0.
    Heartbeat,
}

/// The link to the gateway's broker. It only moves bytes: the device keeps
/// every event until its receipt, whatever the transport says.
pub trait Transport {
    type Error: core::fmt::Debug;
    /// Hands a payload over. An error means "not now": nothing is lost.
    fn publish(&mut self, leaf: Leaf, payload: &[u8]) -> Result<(), Self::Error>;
}

/// Settings the board chooses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceSettings {
    /// Heartbeat period (the gateway's supervision period must be longer).
    pub heartbeat_ms: u64,
    /// First re-send interval; doubles per attempt up to `max_retry_ms`.
    pub retry_ms: u64,
    pub max_retry_ms: u64,
    /// `battery_low` at or below this; again only after it rose 10 above.
    pub battery_low_percent: u8,
}

impl Default for DeviceSettings {
    /// Heartbeat every 5 minutes (the gateway's shortest supervision period
    /// is 15), re-send after 2 s doubling to a minute, battery low at 20 %.
    fn default() -> Self {
        DeviceSettings {
            heartbeat_ms: 300_000,
            retry_ms: 2_000,
            max_retry_ms: 60_000,
            battery_low_percent: 20,
        }
    }
}

/// `device_fault` values.
pub mod fault_code {
    pub const STUCK_INPUT: f32 = 1.0;
    pub const CHATTERING_INPUT: f32 = 2.0;
    pub const STORAGE: f32 = 3.0;
}

/// Why an event could not be raised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RaiseError {
    /// The queue is full of events at least as important (alarms): the
    /// gateway has not answered for a long time.
    Full,
}

/// What became of a message on the receipt topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReceiptOutcome {
    /// The event left the queue.
    Done { seq: u64, status: ReceiptStatus },
    /// No such event queued: a late or repeated receipt. Ignored.
    Unknown { seq: u64 },
    /// Not a receipt at all. Ignored.
    Malformed,
}

/// What happened, for diagnostics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub raised: u32,
    /// Events handed to the transport (re-sends included).
    pub sends: u32,
    pub receipted: u32,
    pub rejected: u32,
    pub unknown_receipts: u32,
    pub malformed_receipts: u32,
    pub refused: u32,
    pub evicted: u32,
    pub recovered: u32,
    pub store_failures: u32,
    pub configs_applied: u32,
    pub configs_rejected: u32,
    pub heartbeats: u32,
}

/// A device with a queue of at most `N` events.
pub struct Device<T, F: NorFlash, const N: usize> {
    transport: T,
    store: Option<Store<F, N>>,
    outbox: Outbox<N>,
    settings: DeviceSettings,
    connected: bool,
    next_seq: u64,
    next_heartbeat_ms: u64,
    battery: Option<u8>,
    battery_low: bool,
    rssi: Option<i16>,
    clock: Option<(u64, u64)>,
    storage_fault_reported: bool,
    counters: Counters,
}

impl<T: Transport, F: NorFlash, const N: usize> Device<T, F, N> {
    /// Starts the device: replays the flash, queues what was not receipted
    /// before the power went, and moves the sequence counter on. A blank
    /// flash starts at `first_seq`. A flash that cannot be used leaves the
    /// device running from RAM, with a `device_fault` (storage) raised.
    pub fn new(
        transport: T,
        flash: F,
        first_seq: u64,
        settings: DeviceSettings,
        now_ms: u64,
    ) -> Self {
        let mut device = Device {
            transport,
            store: None,
            outbox: Outbox::new(settings.retry_ms, settings.max_retry_ms),
            settings,
            connected: false,
            next_seq: first_seq,
            next_heartbeat_ms: now_ms,
            battery: None,
            battery_low: false,
            rssi: None,
            clock: None,
            storage_fault_reported: false,
            counters: Counters::default(),
        };
        match Store::<F, N>::open(flash, first_seq) {
            Ok((mut store, recovered)) => {
                for ev in recovered.events {
                    // Recovered events fit: the queue held them before.
                    let _ = device.outbox.push(ev, now_ms);
                    device.counters.recovered += 1;
                }
                // Numbers handed out after the last durable write (while the
                // flash was failing) are below the reservation.
                device.next_seq = store.next_seq().saturating_add(BOOT_SKIP);
                let reserved = store.reserve(device.next_seq, device.outbox.events());
                device.store = Some(store);
                if recovered.overflow > 0 || reserved.is_err() {
                    device.storage_fault(now_ms);
                }
            }
            Err(_) => device.storage_fault(now_ms),
        }
        device
    }

    /// Raises an event now. Returns its sequence number.
    pub fn raise(
        &mut self,
        kind: EventKind,
        value: Option<f32>,
        now_ms: u64,
    ) -> Result<u64, RaiseError> {
        let victim = match self.outbox.victim_for(kind) {
            Ok(v) => v,
            Err(PushError::Full) => {
                self.counters.refused += 1;
                return Err(RaiseError::Full);
            }
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let event = DeviceEvent {
            seq,
            kind,
            ts: self.unix_s(now_ms),
            battery: self.battery,
            value,
        };
        let mut failed = false;
        if let Some(store) = self.store.as_mut() {
            if let Some(v) = victim {
                failed |= store.append_done(v.seq, self.outbox.events()).is_err();
            }
            let live = self
                .outbox
                .events()
                .filter(move |e| Some(e.seq) != victim.map(|v| v.seq));
            failed |= store.append_event(&event, live).is_err();
        }
        // Sent even if the flash failed: an alarm must go out. The counter
        // moves on at the next start, so the number is never reused.
        if self.outbox.push(event, now_ms).ok().flatten().is_some() {
            self.counters.evicted += 1;
        }
        self.counters.raised += 1;
        if failed {
            self.storage_fault(now_ms);
        }
        Ok(seq)
    }

    /// Does what an input asks: raises its event, or reports its fault.
    /// Pre-alarm and cancel are for the board (a beep, a light): `None`.
    pub fn act(&mut self, action: Action, now_ms: u64) -> Option<Result<u64, RaiseError>> {
        match action {
            Action::Raise(kind) => Some(self.raise(kind, None, now_ms)),
            Action::Fault(f) => {
                let code = match f {
                    Fault::Stuck => fault_code::STUCK_INPUT,
                    Fault::Chattering => fault_code::CHATTERING_INPUT,
                };
                Some(self.raise(EventKind::DeviceFault, Some(code), now_ms))
            }
            Action::PreAlarm { .. } | Action::Cancelled => None,
        }
    }

    /// The link is up (again): everything queued is sent at once, and a
    /// heartbeat.
    pub fn on_connected(&mut self, now_ms: u64) {
        self.connected = true;
        self.outbox.resend_all(now_ms);
        self.next_heartbeat_ms = now_ms;
    }

    /// The link is down: nothing is sent until it is up.
    pub fn on_disconnected(&mut self) {
        self.connected = false;
    }

    /// A message on `trygg/v1/dev/{id}/ack`.
    pub fn on_receipt(&mut self, payload: &[u8]) -> ReceiptOutcome {
        let Ok(r) = Receipt::decode(payload) else {
            self.counters.malformed_receipts += 1;
            return ReceiptOutcome::Malformed;
        };
        if !self.outbox.events().any(|e| e.seq == r.seq) {
            self.counters.unknown_receipts += 1;
            return ReceiptOutcome::Unknown { seq: r.seq };
        }
        if let Some(store) = self.store.as_mut() {
            // If this fails the event comes back after a restart and is
            // answered `duplicate`: harmless.
            if store.append_done(r.seq, self.outbox.events()).is_err() {
                self.counters.store_failures += 1;
            }
        }
        self.outbox.on_receipt(r.seq);
        self.counters.receipted += 1;
        if r.status == ReceiptStatus::Rejected {
            self.counters.rejected += 1;
        }
        ReceiptOutcome::Done {
            seq: r.seq,
            status: r.status,
        }
    }

    /// A message on `trygg/v1/dev/{id}/cfg`. Applies the heartbeat period;
    /// returns the update so the board applies the rest (the pre-alarm
    /// window of its button). A bad message changes nothing and raises
    /// `config_rejected` (value: the error's code).
    pub fn on_config(&mut self, payload: &[u8], now_ms: u64) -> Result<ConfigUpdate, ConfigError> {
        match ConfigUpdate::decode(payload) {
            Ok(c) => {
                if let Some(s) = c.heartbeat_s {
                    self.settings.heartbeat_ms = s as u64 * 1000;
                    self.next_heartbeat_ms = self
                        .next_heartbeat_ms
                        .min(now_ms + self.settings.heartbeat_ms);
                }
                self.counters.configs_applied += 1;
                Ok(c)
            }
            Err(e) => {
                self.counters.configs_rejected += 1;
                let _ = self.raise(EventKind::ConfigRejected, Some(e.code() as f32), now_ms);
                Err(e)
            }
        }
    }

    /// The battery level, measured by the board. Crossing the threshold
    /// raises `battery_low` once.
    pub fn set_battery(&mut self, percent: u8, now_ms: u64) {
        let percent = percent.min(100);
        self.battery = Some(percent);
        if !self.battery_low && percent <= self.settings.battery_low_percent {
            self.battery_low = true;
            let _ = self.raise(EventKind::BatteryLow, Some(percent as f32), now_ms);
        } else if self.battery_low
            && percent >= self.settings.battery_low_percent.saturating_add(10)
        {
            self.battery_low = false;
        }
    }

    /// Radio signal strength, for heartbeats.
    pub fn set_rssi(&mut self, rssi: i16) {
        self.rssi = Some(rssi);
    }

    /// Sets the wall clock: `unix_s` is the time at `now_ms`. Events carry
    /// `ts` from then on.
    pub fn set_clock(&mut self, now_ms: u64, unix_s: u64) {
        self.clock = Some((now_ms, unix_s));
    }

    /// Sends what is due: queued events (alarms first, then oldest), and the
    /// heartbeat. Stops at the first refusal of the transport.
    pub fn poll(&mut self, now_ms: u64) {
        if !self.connected {
            return;
        }
        let mut buf = [0u8; 256];
        while let Some(ev) = self.outbox.poll_send(now_ms) {
            let Ok(n) = ev.encode(&mut buf) else {
                continue;
            };
            if self.transport.publish(Leaf::Event, &buf[..n]).is_err() {
                // Offered again after the retry interval; the link is full
                // or down, so no heartbeat either this time.
                return;
            }
            self.counters.sends += 1;
        }
        if now_ms >= self.next_heartbeat_ms {
            self.next_heartbeat_ms = now_ms + self.settings.heartbeat_ms;
            let hb = Heartbeat {
                v: trygg_protocol::SCHEMA_VERSION,
                battery: self.battery,
                rssi: self.rssi,
            };
            if let Ok(n) = hb.encode(&mut buf) {
                if self.transport.publish(Leaf::Heartbeat, &buf[..n]).is_ok() {
                    self.counters.heartbeats += 1;
                }
            }
        }
    }

    /// Events awaiting their receipt.
    pub fn pending(&self) -> usize {
        self.outbox.len()
    }

    /// The events awaiting their receipt, oldest first.
    pub fn pending_events(&self) -> impl Iterator<Item = DeviceEvent> + '_ {
        self.outbox.events()
    }

    /// The sequence number the next event gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    pub fn settings(&self) -> &DeviceSettings {
        &self.settings
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn transport(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Whether the flash is in use (not failed).
    pub fn has_storage(&self) -> bool {
        self.store.is_some()
    }

    /// The power goes: returns the transport and the flash (if it was in
    /// use), as they are. Everything in RAM is gone.
    pub fn power_off(self) -> (T, Option<F>) {
        (self.transport, self.store.map(Store::release))
    }

    fn unix_s(&self, now_ms: u64) -> Option<u64> {
        self.clock
            .map(|(at_ms, unix_s)| unix_s + now_ms.saturating_sub(at_ms) / 1000)
    }

    fn storage_fault(&mut self, now_ms: u64) {
        self.counters.store_failures += 1;
        if !self.storage_fault_reported {
            self.storage_fault_reported = true;
            // Without flash: the event is queued in RAM only.
            let store = self.store.take();
            let _ = self.raise(EventKind::DeviceFault, Some(fault_code::STORAGE), now_ms);
            self.store = store;
        }
    }
}
