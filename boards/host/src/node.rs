//! The device loop on a host: a firmware [`Device`] with its inputs, driven
//! by tokio, connected through [`crate::mqtt`].
//!
//! [`HostDevice::step`] is the whole shell (STYLE.md, 1): it waits for the
//! link or the poll tick, hands what came to the firmware
//! (`on_receipt`, `on_config`, `on_connected`, `on_disconnected`), samples
//! the inputs and passes their actions to `Device::act`, and lets the
//! device send what is due. Everything it decides is the firmware's.
//!
//! What the device did is reported as [`Happened`], for a log or a test's
//! ground truth: every event it queued (whoever raised it: the caller, an
//! input, the device itself), every event a full queue evicted or refused,
//! every receipt. The firmware reports evictions as a count only, so the
//! evicted sequence number is found here by comparing the queue before and
//! after; see [`HostDevice::with_device`].
//!
//! `step` is cancel-safe: it only awaits the link's channel and the tick,
//! and does its work after, without awaiting. It can sit in a `select!`
//! next to a command channel or a shutdown signal.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use embedded_hal::digital::InputPin;
use embedded_storage::nor_flash::NorFlash;
use tokio::sync::mpsc;
use tokio::time::{Interval, MissedTickBehavior};
use trygg_firmware::config::{ConfigError, ConfigUpdate};
use trygg_firmware::input::{Action, AlarmButton, BinarySensor};
use trygg_firmware::{Device, DeviceSettings, RaiseError, ReceiptOutcome};
use trygg_protocol::{EventKind, Receipt, ReceiptStatus};

use crate::mqtt::{connect, LinkEvent, LinkOptions, MqttTransport};

/// How often inputs are sampled and the device polled by default: the
/// firmware's inputs are written for 10 ms.
pub const POLL_EVERY: Duration = Duration::from_millis(10);

/// One of the device's inputs, sampled every poll.
pub trait Input: Send {
    /// Its name in logs and in [`Happened::Input`]: `button`, `pir`, `door`.
    fn name(&self) -> &str;
    /// Samples the pin. A pin that cannot be read gives `None` (and is
    /// logged once).
    fn poll(&mut self, now_ms: u64) -> Option<Action>;
    /// Applies settings from the gateway.
    fn apply(&mut self, _update: &ConfigUpdate) {}
}

/// An alarm button or pull cord on a pin.
pub struct ButtonInput<P> {
    name: String,
    button: AlarmButton<P>,
    failing: bool,
}

impl<P: InputPin> ButtonInput<P> {
    pub fn new(name: &str, button: AlarmButton<P>) -> Self {
        ButtonInput {
            name: name.to_string(),
            button,
            failing: false,
        }
    }
}

impl<P: InputPin + Send> Input for ButtonInput<P> {
    fn name(&self) -> &str {
        &self.name
    }

    fn poll(&mut self, now_ms: u64) -> Option<Action> {
        let r = self.button.poll(now_ms);
        read_or_log(&self.name, &mut self.failing, r)
    }

    fn apply(&mut self, update: &ConfigUpdate) {
        if let Some(s) = update.pre_alarm_s {
            self.button.set_pre_alarm_ms(s as u64 * 1000);
        }
    }
}

/// A binary sensor (door, PIR, bed pad, ...) on a pin.
pub struct SensorInput<P> {
    name: String,
    sensor: BinarySensor<P>,
    failing: bool,
}

impl<P: InputPin> SensorInput<P> {
    pub fn new(name: &str, sensor: BinarySensor<P>) -> Self {
        SensorInput {
            name: name.to_string(),
            sensor,
            failing: false,
        }
    }
}

impl<P: InputPin + Send> Input for SensorInput<P> {
    fn name(&self) -> &str {
        &self.name
    }

    fn poll(&mut self, now_ms: u64) -> Option<Action> {
        let r = self.sensor.poll(now_ms);
        read_or_log(&self.name, &mut self.failing, r)
    }
}

fn read_or_log<E: core::fmt::Debug>(
    name: &str,
    failing: &mut bool,
    r: Result<Option<Action>, E>,
) -> Option<Action> {
    match r {
        Ok(a) => {
            if std::mem::take(failing) {
                tracing::info!(input = name, "input readable again");
            }
            a
        }
        Err(e) => {
            if !std::mem::replace(failing, true) {
                tracing::warn!(input = name, error = ?e, "input cannot be read");
            }
            None
        }
    }
}

/// Who raised an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// [`HostDevice::raise`]: a scripted event.
    Caller,
    /// An input, by name.
    Input(String),
    /// The device itself (a bad config, low battery, a flash fault).
    Device,
    /// Queued before the restart, found on the flash.
    Flash,
}

/// What the device did.
#[derive(Clone, Debug, PartialEq)]
pub enum Happened {
    /// An event entered the queue (written to flash, to be sent).
    Raised {
        seq: u64,
        kind: EventKind,
        value: Option<f32>,
        by: Source,
    },
    /// A full queue refused an event: it got no sequence number.
    Refused {
        kind: EventKind,
        by: Source,
    },
    /// A full queue pushed this event out for a more important one.
    Evicted {
        seq: u64,
        kind: EventKind,
    },
    /// A receipt arrived. `held`: for an event in the queue (which left
    /// it); otherwise late or repeated, and ignored.
    Receipt {
        seq: u64,
        status: ReceiptStatus,
        reason: Option<String>,
        held: bool,
    },
    /// Something on the receipt topic that is not a receipt.
    MalformedReceipt,
    /// Settings from the gateway, applied or rejected.
    Config(Result<ConfigUpdate, ConfigError>),
    /// An input asked for something other than an event: the pre-alarm
    /// window began (beep), or the user cancelled.
    Input {
        name: String,
        action: Action,
    },
    Connected,
    Disconnected {
        reason: String,
    },
}

/// A firmware device with a queue of `N` events on flash `F`, its inputs
/// and its MQTT link.
pub struct HostDevice<F: NorFlash, const N: usize> {
    device: Box<Device<MqttTransport, F, N>>,
    inputs: Vec<Box<dyn Input>>,
    link: mpsc::UnboundedReceiver<LinkEvent>,
    link_open: bool,
    started: Instant,
    tick: Interval,
    /// What the queue holds, by seq: to name what an eviction took.
    held: BTreeMap<u64, EventKind>,
    happened: Vec<Happened>,
}

impl<F, const N: usize> HostDevice<F, N>
where
    F: NorFlash + Send,
    F::Error: Send,
{
    /// Starts the device on `flash` (replaying it: events not receipted
    /// before are queued again, reported as raised by [`Source::Flash`])
    /// and connects. A blank flash starts counting at `first_seq`.
    ///
    /// Must be called within a tokio runtime.
    pub fn start(
        link: &LinkOptions,
        flash: F,
        first_seq: u64,
        settings: DeviceSettings,
        inputs: Vec<Box<dyn Input>>,
        poll_every: Duration,
    ) -> Self {
        let (transport, events) = connect(link);
        let started = Instant::now();
        let device = build_device(transport, flash, first_seq, settings);
        let mut tick = tokio::time::interval(poll_every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut host = HostDevice {
            device,
            inputs,
            link: events,
            link_open: true,
            started,
            tick,
            held: BTreeMap::new(),
            happened: Vec::new(),
        };
        let now = host.now_ms();
        host.device.set_clock(now, unix_ms() / 1000);
        let recovered: Vec<_> = host.device.pending_events().collect();
        for e in recovered {
            host.held.insert(e.seq, e.kind);
            host.happened.push(Happened::Raised {
                seq: e.seq,
                kind: e.kind,
                value: e.value,
                by: if e.kind == EventKind::DeviceFault && !host.device.has_storage() {
                    Source::Device
                } else {
                    Source::Flash
                },
            });
        }
        host
    }

    /// Milliseconds since the start: the device's monotonic clock.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Raises an event now (a scripted event, not from an input) and sends
    /// it if the link is up. Returns its sequence number.
    pub fn raise(&mut self, kind: EventKind, value: Option<f32>) -> Result<u64, RaiseError> {
        let r = self.with_device(Source::Caller, |d, now| d.raise(kind, value, now));
        if r.is_err() {
            self.happened.push(Happened::Refused {
                kind,
                by: Source::Caller,
            });
        }
        self.poll_device();
        r
    }

    /// Runs `f` on the device and reports what it queued or evicted,
    /// attributing new events to `by`. Use this, not a bare reference, for
    /// anything that may raise (`set_battery`, `on_config`, ...).
    pub fn with_device<R>(
        &mut self,
        by: Source,
        f: impl FnOnce(&mut Device<MqttTransport, F, N>, u64) -> R,
    ) -> R {
        let now = self.now_ms();
        let next = self.device.next_seq();
        let evicted = self.device.counters().evicted;
        let r = f(&mut self.device, now);
        if self.device.counters().evicted != evicted {
            // The firmware counts evictions but does not name them: the
            // victim is what we held and the queue no longer does.
            let live: BTreeSet<u64> = self.device.pending_events().map(|e| e.seq).collect();
            let gone: Vec<u64> = self
                .held
                .keys()
                .filter(|s| !live.contains(s))
                .copied()
                .collect();
            for seq in gone {
                if let Some(kind) = self.held.remove(&seq) {
                    self.happened.push(Happened::Evicted { seq, kind });
                }
            }
        }
        if self.device.next_seq() != next {
            let new: Vec<_> = self
                .device
                .pending_events()
                .filter(|e| e.seq >= next)
                .collect();
            for e in new {
                self.held.insert(e.seq, e.kind);
                self.happened.push(Happened::Raised {
                    seq: e.seq,
                    kind: e.kind,
                    value: e.value,
                    by: by.clone(),
                });
            }
        }
        r
    }

    /// The device, to look at.
    pub fn device(&self) -> &Device<MqttTransport, F, N> {
        &self.device
    }

    /// Takes what happened since the last call, oldest first.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Happened> {
        self.happened.drain(..)
    }

    /// Waits for the link or the next poll tick and does what is due.
    /// Cancel-safe.
    pub async fn step(&mut self) {
        tokio::select! {
            ev = self.link.recv(), if self.link_open => match ev {
                Some(ev) => self.on_link(ev),
                None => self.link_open = false,
            },
            _ = self.tick.tick() => self.poll_inputs(),
        }
        self.poll_device();
    }

    /// Closes the MQTT connection (what was not receipted stays on flash).
    pub fn disconnect(&mut self) {
        let _ = self.device.transport().client().try_disconnect();
    }

    fn poll_device(&mut self) {
        let now = self.now_ms();
        self.device.poll(now);
    }

    fn poll_inputs(&mut self) {
        let now = self.now_ms();
        for i in 0..self.inputs.len() {
            let Some(action) = self.inputs[i].poll(now) else {
                continue;
            };
            let name = self.inputs[i].name().to_string();
            let by = Source::Input(name.clone());
            match self.with_device(by.clone(), |d, now| d.act(action, now)) {
                Some(Ok(_)) => {}
                Some(Err(RaiseError::Full)) => {
                    let kind = match action {
                        Action::Raise(k) => k,
                        _ => EventKind::DeviceFault,
                    };
                    self.happened.push(Happened::Refused { kind, by });
                }
                None => self.happened.push(Happened::Input { name, action }),
            }
        }
    }

    fn on_link(&mut self, ev: LinkEvent) {
        let now = self.now_ms();
        match ev {
            LinkEvent::Connected => {
                self.device.set_clock(now, unix_ms() / 1000);
                self.device.on_connected(now);
                self.happened.push(Happened::Connected);
            }
            LinkEvent::Disconnected { reason } => {
                self.device.on_disconnected();
                self.happened.push(Happened::Disconnected { reason });
            }
            LinkEvent::Receipt(payload) => {
                let decoded = Receipt::decode(&payload)
                    .ok()
                    .map(|r| (r.status, r.reason.map(str::to_string)));
                match (self.device.on_receipt(&payload), decoded) {
                    (ReceiptOutcome::Malformed, _) | (_, None) => {
                        self.happened.push(Happened::MalformedReceipt)
                    }
                    (ReceiptOutcome::Done { seq, status }, Some((_, reason))) => {
                        self.held.remove(&seq);
                        self.happened.push(Happened::Receipt {
                            seq,
                            status,
                            reason,
                            held: true,
                        });
                    }
                    (ReceiptOutcome::Unknown { seq }, Some((status, reason))) => {
                        self.happened.push(Happened::Receipt {
                            seq,
                            status,
                            reason,
                            held: false,
                        })
                    }
                }
            }
            LinkEvent::Config(payload) => {
                let r = self.with_device(Source::Device, |d, now| d.on_config(&payload, now));
                if let Ok(update) = &r {
                    for input in &mut self.inputs {
                        input.apply(update);
                    }
                }
                self.happened.push(Happened::Config(r));
            }
        }
    }
}

/// Builds the device on a thread of its own with a stack to match: a
/// queue of thousands of events is a struct of hundreds of kilobytes, and
/// its replay more on the stack, more than a tokio worker's 2 MiB holds in
/// a debug build.
fn build_device<F, const N: usize>(
    transport: MqttTransport,
    flash: F,
    first_seq: u64,
    settings: DeviceSettings,
) -> Box<Device<MqttTransport, F, N>>
where
    F: NorFlash + Send,
    F::Error: Send,
{
    let now = 0;
    // A debug build keeps several copies of the queue on the stack at once
    // (the device, the store's replay, moves between them); the pages are
    // only touched as used.
    let stack = 32 * std::mem::size_of::<Device<MqttTransport, F, N>>() + (8 << 20);
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("trygg-device-start".into())
            .stack_size(stack)
            .spawn_scoped(s, move || {
                Box::new(Device::new(transport, flash, first_seq, settings, now))
            })
            .expect("a thread to start the device on")
            .join()
            .expect("the device to start")
    })
}

/// The wall clock in Unix milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
