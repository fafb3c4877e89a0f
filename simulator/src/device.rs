//! A simulated device: the firmware's [`Device`](trygg_firmware::Device)
//! (queue on flash, sequence numbers, retry, heartbeats) with a simulated
//! alarm button, behind a real MQTT connection ([`trygg_board_host`]). A
//! simulated press ([`DeviceHandle::press_button`]) goes through the same
//! debounce, queue and retry code as a press on a device in a home; a
//! scripted event ([`DeviceHandle::emit`]) enters the same queue directly.
//!
//! A [`DeviceLog`] records what the device queued and which receipts it
//! got: the ground truth the end-to-end tests and the chaos harness compare
//! the backend against. It is written from what the firmware did
//! ([`Happened`]), not from what the simulator asked for, so an event the
//! device raised on its own (a `config_rejected`, a stuck button) is in it
//! too.
//!
//! The flash is in RAM (a simulated device keeps nothing across a restart
//! of the simulator) and blank at every start, so the first sequence number
//! is the current Unix time in milliseconds (plus the firmware's boot skip):
//! a restarted simulator never goes backwards.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify};
use trygg_board_host::node::unix_ms;
use trygg_board_host::{
    sim_pin, ButtonInput, FileFlash, Happened, HostDevice, Input, LinkOptions, PinDriver, Source,
    POLL_EVERY,
};
use trygg_firmware::input::{AlarmButton, ButtonSettings};
use trygg_firmware::DeviceSettings;
use trygg_protocol::{EventKind, ReceiptStatus};
use trygg_uplink::mqtt_url::MqttUrl;

/// Events a simulated device holds until receipted.
pub const OUTBOX_CAPACITY: usize = 4096;

/// Flash sector size of a simulated device: 64-byte records for about
/// twice the queue, so even with the queue full the log moves to the next
/// sector (copying the live events) at most once per 4096 events.
const SECTOR: usize = 64 * (OUTBOX_CAPACITY + 2).next_power_of_two();

type SimDevice = HostDevice<FileFlash<SECTOR>, OUTBOX_CAPACITY>;

/// A refused event gets no sequence number from the device (it never
/// leaves it); in the log it is numbered down from here, a range no device
/// counter reaches.
const REFUSED_FROM: u64 = u64::MAX;

/// What a device has sent and what the gateway answered.
#[derive(Debug, Default, Clone)]
pub struct DeviceLog {
    /// Every event the device queued, by seq.
    pub sent: BTreeMap<u64, EventKind>,
    /// The first receipt per seq, with the time from queueing to receipt.
    pub receipts: BTreeMap<u64, (ReceiptStatus, Duration)>,
    /// Events the device refused because its queue was full (of alarms).
    pub refused: u64,
    /// Their numbers in this log (see `REFUSED_FROM`): never sent, so
    /// never receipted.
    pub refused_seqs: BTreeSet<u64>,
    /// Events a full queue evicted to make room for a more important one
    /// (the firmware's rule: the oldest of the least important lane).
    pub evicted: BTreeSet<u64>,
    /// Why the gateway rejected an event, by seq.
    pub rejections: BTreeMap<u64, String>,
    /// Every `duplicate` receipt that arrived, the first for its seq or not.
    pub duplicate_receipts: u64,
}

impl DeviceLog {
    /// Seqs the gateway confirmed as committed (or as already committed).
    pub fn receipted(&self) -> Vec<u64> {
        self.receipts
            .iter()
            .filter(|(_, (s, _))| matches!(s, ReceiptStatus::Committed | ReceiptStatus::Duplicate))
            .map(|(seq, _)| *seq)
            .collect()
    }

    /// Events still in the queue: sent, not receipted, not given up.
    pub fn unreceipted(&self) -> usize {
        self.sent
            .keys()
            .filter(|s| {
                !self.receipts.contains_key(s)
                    && !self.refused_seqs.contains(s)
                    && !self.evicted.contains(s)
            })
            .count()
    }
}

/// How a simulated device is made.
#[derive(Clone, Debug)]
pub struct DeviceOptions {
    /// Heartbeat period; `None`: the device sends none (a silent device).
    pub heartbeat_every: Option<Duration>,
    /// What its alarm button raises (`button_press`, `pull_cord`). The
    /// button has no pre-alarm window: a press is an alarm at once.
    pub button: EventKind,
    /// Its key (MQTT password); `None`: its simulated key
    /// ([`crate::keys::device_key`]).
    pub key: Option<String>,
}

impl Default for DeviceOptions {
    fn default() -> Self {
        DeviceOptions {
            heartbeat_every: None,
            button: EventKind::ButtonPress,
            key: None,
        }
    }
}

enum Cmd {
    Event(EventKind, Option<f32>, tokio::sync::oneshot::Sender<u64>),
}

/// What the device task shares with its handles.
#[derive(Default)]
struct Shared {
    log: Mutex<DeviceLog>,
    /// Seqs raised by the button, in order.
    presses: Mutex<Vec<u64>>,
    receipt: Notify,
    pressed: Notify,
}

/// A handle to a running simulated device.
#[derive(Clone)]
pub struct DeviceHandle {
    pub id: String,
    tx: mpsc::Sender<Cmd>,
    shared: Arc<Shared>,
    button: PinDriver,
}

impl DeviceHandle {
    /// Raises an event (a scripted one, not from an input) and returns its
    /// seq; the device sends it and re-sends it until receipted. `None` if
    /// the device has stopped.
    pub async fn emit(&self, kind: EventKind) -> Option<u64> {
        self.emit_inner(kind, None).await
    }

    pub async fn emit_value(&self, kind: EventKind, value: f32) -> Option<u64> {
        self.emit_inner(kind, Some(value)).await
    }

    async fn emit_inner(&self, kind: EventKind, value: Option<f32>) -> Option<u64> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx.send(Cmd::Event(kind, value, tx)).await.ok()?;
        rx.await.ok()
    }

    /// Presses the alarm button as a hand does (the contact bounces on the
    /// way in and out, held 150 ms) and returns the seq of the alarm the
    /// firmware raised, or `None` if it raised none within 2 s.
    pub async fn press_button(&self) -> Option<u64> {
        let before = self.presses().len();
        let wait = async {
            loop {
                let notified = self.shared.pressed.notified();
                if let Some(seq) = self.presses().get(before) {
                    return *seq;
                }
                notified.await;
            }
        };
        let (_, seq) = tokio::join!(
            self.button.click(Duration::from_millis(150), 3),
            tokio::time::timeout(Duration::from_secs(2), wait)
        );
        seq.ok()
    }

    /// The button's pin, to press in other ways (held, chattering).
    pub fn button_pin(&self) -> &PinDriver {
        &self.button
    }

    /// The seqs the button raised so far.
    pub fn presses(&self) -> Vec<u64> {
        self.shared
            .presses
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default()
    }

    pub fn log(&self) -> DeviceLog {
        self.shared
            .log
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// Waits until the event with this seq has a receipt, or the timeout.
    pub async fn wait_receipt(
        &self,
        seq: u64,
        timeout: Duration,
    ) -> Option<(ReceiptStatus, Duration)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.receipt.notified();
            if let Some(r) = self
                .shared
                .log
                .lock()
                .ok()
                .and_then(|l| l.receipts.get(&seq).copied())
            {
                return Some(r);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    /// Waits until every event sent so far has a receipt.
    pub async fn wait_all_receipted(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.receipt.notified();
            if self
                .shared
                .log
                .lock()
                .map(|l| l.unreceipted() == 0)
                .unwrap_or(false)
            {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }
}

/// Starts a simulated device with an alarm button (`button_press`)
/// connected to `broker`.
pub fn spawn_device(id: &str, broker: &MqttUrl, heartbeat_every: Option<Duration>) -> DeviceHandle {
    spawn_device_with(
        id,
        broker,
        DeviceOptions {
            heartbeat_every,
            ..DeviceOptions::default()
        },
    )
}

/// Starts a simulated device connected to `broker`.
pub fn spawn_device_with(id: &str, broker: &MqttUrl, options: DeviceOptions) -> DeviceHandle {
    let (tx, mut rx) = mpsc::channel::<Cmd>(1024);
    let shared = Arc::new(Shared::default());
    let button_settings = ButtonSettings {
        kind: options.button,
        pre_alarm_ms: 0,
        ..ButtonSettings::button()
    };
    let (pin, button) = sim_pin(button_settings.polarity);
    let handle = DeviceHandle {
        id: id.to_string(),
        tx,
        shared: shared.clone(),
        button,
    };
    let mut link = LinkOptions::new(id, &broker.host, broker.port);
    link.heartbeats = options.heartbeat_every.is_some();
    link.key = Some(
        options
            .key
            .clone()
            .unwrap_or_else(|| crate::keys::device_key(id)),
    );
    let settings = DeviceSettings {
        heartbeat_ms: options
            .heartbeat_every
            .map_or(3_600_000, |d| d.as_millis() as u64),
        retry_ms: 1000,
        max_retry_ms: 8000,
        ..DeviceSettings::default()
    };
    let inputs: Vec<Box<dyn Input>> = vec![Box::new(ButtonInput::new(
        "button",
        AlarmButton::new(pin, button_settings),
    ))];
    let flash = FileFlash::<SECTOR>::in_ram(2);
    let id = id.to_string();
    tokio::spawn(async move {
        let mut device = SimDevice::start(&link, flash, unix_ms(), settings, inputs, POLL_EVERY);
        device.with_device(Source::Device, |d, now| {
            d.set_battery(90, now);
            d.set_rssi(-60);
        });
        let mut recorder = Recorder {
            id,
            shared,
            queued_at: HashMap::new(),
            refused: 0,
        };
        recorder.record(&mut device);
        loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(Cmd::Event(kind, value, reply)) => {
                        let raised = device.raise(kind, value);
                        let refused_as = recorder.record(&mut device);
                        let _ = reply.send(raised.ok().or(refused_as).unwrap_or(REFUSED_FROM));
                    }
                    None => break,
                },
                _ = device.step() => {
                    recorder.record(&mut device);
                }
            }
        }
        device.disconnect();
    });
    handle
}

/// Writes what the firmware did into the [`DeviceLog`].
struct Recorder {
    id: String,
    shared: Arc<Shared>,
    queued_at: HashMap<u64, Instant>,
    refused: u64,
}

impl Recorder {
    /// Returns the log's number for the last event refused, if one was.
    fn record(&mut self, device: &mut SimDevice) -> Option<u64> {
        let happened: Vec<Happened> = device.drain().collect();
        if happened.is_empty() {
            return None;
        }
        let mut refused_as = None;
        let (mut receipted, mut pressed) = (false, false);
        let mut l = self.shared.log.lock().unwrap_or_else(|e| e.into_inner());
        for h in happened {
            match h {
                Happened::Raised { seq, kind, by, .. } => {
                    l.sent.insert(seq, kind);
                    self.queued_at.insert(seq, Instant::now());
                    if matches!(&by, Source::Input(name) if name == "button") {
                        if let Ok(mut p) = self.shared.presses.lock() {
                            p.push(seq);
                        }
                        pressed = true;
                    }
                    if by != Source::Caller {
                        tracing::debug!(device = %self.id, seq, kind = kind.wire(), ?by, "event raised");
                    }
                }
                Happened::Refused { kind, .. } => {
                    let n = REFUSED_FROM - self.refused;
                    self.refused += 1;
                    l.refused += 1;
                    l.refused_seqs.insert(n);
                    l.sent.insert(n, kind);
                    refused_as = Some(n);
                }
                Happened::Evicted { seq, .. } => {
                    self.queued_at.remove(&seq);
                    l.evicted.insert(seq);
                }
                Happened::Receipt {
                    seq,
                    status,
                    reason,
                    held,
                } => {
                    if status == ReceiptStatus::Duplicate && l.sent.contains_key(&seq) {
                        l.duplicate_receipts += 1;
                    }
                    if held {
                        let took = self
                            .queued_at
                            .remove(&seq)
                            .map(|t| t.elapsed())
                            .unwrap_or_default();
                        l.receipts.entry(seq).or_insert((status, took));
                        if status == ReceiptStatus::Rejected {
                            l.rejections.insert(seq, reason.unwrap_or_default());
                        }
                        receipted = true;
                    }
                }
                other => tracing::trace!(device = %self.id, happened = ?other, "device"),
            }
        }
        drop(l);
        if receipted {
            self.shared.receipt.notify_waiters();
        }
        if pressed {
            self.shared.pressed.notify_waiters();
        }
        refused_as
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_press_of_the_button_is_one_alarm_even_without_a_gateway() {
        let broker = MqttUrl {
            host: "127.0.0.1".into(),
            port: 9,
            tls: false,
        };
        let d = spawn_device("button-1", &broker, None);
        let first = d.press_button().await.expect("an alarm");
        let second = d.press_button().await.expect("a second alarm");
        assert!(second > first);
        assert_eq!(d.presses(), vec![first, second]);
        assert_eq!(d.log().unreceipted(), 2);
    }
}
