//! A simulated device: the firmware's [`Outbox`] behind a real MQTT
//! connection, so a simulated press goes through the same keep-until-
//! receipted logic as a device in a home.
//!
//! A [`DeviceLog`] records what the device sent and which receipts it got:
//! the ground truth the end-to-end tests and the chaos harness compare the
//! backend against.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, Notify};
use trygg_firmware::Outbox;
use trygg_protocol::{topic, DeviceEvent, EventKind, Heartbeat, Lane, Receipt, ReceiptStatus};
use trygg_uplink::mqtt_url::MqttUrl;

/// Events a simulated device holds until receipted.
pub const OUTBOX_CAPACITY: usize = 4096;

/// What a device has sent and what the gateway answered.
#[derive(Debug, Default, Clone)]
pub struct DeviceLog {
    /// Every event pushed, by seq.
    pub sent: BTreeMap<u64, EventKind>,
    /// The first receipt per seq, with the time from push to receipt.
    pub receipts: BTreeMap<u64, (ReceiptStatus, Duration)>,
    /// Events the outbox refused because it was full.
    pub refused: u64,
    /// Their seqs: never sent, so never receipted.
    pub refused_seqs: BTreeSet<u64>,
    /// Events a full outbox evicted to make room for a more important one
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

    /// Events still in the outbox: sent, not receipted, not given up.
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

enum Cmd {
    Event(EventKind, Option<f32>, tokio::sync::oneshot::Sender<u64>),
}

/// A handle to a running simulated device.
#[derive(Clone)]
pub struct DeviceHandle {
    pub id: String,
    tx: mpsc::Sender<Cmd>,
    log: Arc<Mutex<DeviceLog>>,
    receipt: Arc<Notify>,
}

impl DeviceHandle {
    /// Queues an event and returns its seq; the device sends it and
    /// re-sends it until receipted. `None` if the device has stopped.
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

    pub fn log(&self) -> DeviceLog {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits until the event with this seq has a receipt, or the timeout.
    pub async fn wait_receipt(
        &self,
        seq: u64,
        timeout: Duration,
    ) -> Option<(ReceiptStatus, Duration)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.receipt.notified();
            if let Some(r) = self
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
            let notified = self.receipt.notified();
            if self
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

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The event a full outbox evicts for a newcomer of `lane`, by the
/// firmware's rule (`Outbox::push`): of the events in a less important lane
/// than the newcomer's, the oldest of the least important lane.
fn eviction_victim(held: &BTreeMap<u64, (Instant, Lane)>, lane: Lane) -> Option<u64> {
    held.iter()
        .filter(|(_, (_, l))| *l > lane)
        .max_by_key(|(seq, (_, l))| (*l, std::cmp::Reverse(**seq)))
        .map(|(seq, _)| *seq)
}

/// Starts a simulated device connected to `broker`.
///
/// Its sequence numbers start at the current Unix time in milliseconds, so
/// that a restarted simulator never goes backwards.
pub fn spawn_device(id: &str, broker: &MqttUrl, heartbeat_every: Option<Duration>) -> DeviceHandle {
    let (tx, mut rx) = mpsc::channel::<Cmd>(1024);
    let log = Arc::new(Mutex::new(DeviceLog::default()));
    let receipt = Arc::new(Notify::new());
    let handle = DeviceHandle {
        id: id.to_string(),
        tx,
        log: log.clone(),
        receipt: receipt.clone(),
    };

    let mut opts = MqttOptions::new(
        format!("dev-{id}-{}", rand::random::<u32>()),
        broker.host.clone(),
        broker.port,
    );
    opts.set_keep_alive(Duration::from_secs(5))
        .set_clean_session(true)
        .set_inflight(200);
    let (client, mut eventloop) = AsyncClient::new(opts, 4096);
    eventloop.network_options.set_tcp_nodelay(true);
    let id = id.to_string();
    let (net_tx, mut net_rx) = mpsc::unbounded_channel::<Option<Vec<u8>>>();
    // The network half: polls the connection, forwards receipts; `None`
    // means "(re)connected".
    let ack_topic = topic::device_topic(&id, "ack").to_string();
    let sub_client = client.clone();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = sub_client
                        .subscribe(ack_topic.clone(), QoS::AtLeastOnce)
                        .await;
                    if net_tx.send(None).is_err() {
                        break;
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if net_tx.send(Some(p.payload.to_vec())).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    if net_tx.is_closed() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    // The device half: the firmware outbox.
    tokio::spawn(async move {
        let started = Instant::now();
        let now = || started.elapsed().as_millis() as u64;
        let mut outbox: Box<Outbox<OUTBOX_CAPACITY>> = Box::new(Outbox::new(1000, 8000));
        // What the outbox holds, by seq (= push order): when, which lane.
        let mut pushed_at: BTreeMap<u64, (Instant, Lane)> = BTreeMap::new();
        let mut next_seq = unix_ms();
        let evt_topic = topic::device_topic(&id, "evt").to_string();
        let hb_topic = topic::device_topic(&id, "hb").to_string();
        let mut connected = false;
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let mut hb = tokio::time::interval(heartbeat_every.unwrap_or(Duration::from_secs(3600)));
        loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(Cmd::Event(kind, value, reply)) => {
                        let seq = next_seq;
                        let _ = reply.send(seq);
                        next_seq += 1;
                        let ev = DeviceEvent { seq, kind, ts: Some(unix_ms() / 1000), battery: Some(90), value };
                        let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
                        l.sent.insert(seq, kind);
                        let evicted_before = outbox.evicted();
                        if outbox.push(ev, now()).is_err() {
                            l.refused += 1;
                            l.refused_seqs.insert(seq);
                        } else {
                            if outbox.evicted() > evicted_before {
                                // The outbox does not say which; its rule does.
                                if let Some(victim) = eviction_victim(&pushed_at, kind.lane()) {
                                    pushed_at.remove(&victim);
                                    l.evicted.insert(victim);
                                }
                            }
                            pushed_at.insert(seq, (Instant::now(), kind.lane()));
                        }
                    }
                    None => break,
                },
                msg = net_rx.recv() => match msg {
                    Some(None) => {
                        connected = true;
                        outbox.resend_all(now());
                    }
                    Some(Some(payload)) => {
                        if let Ok(r) = Receipt::decode(&payload) {
                            let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
                            if r.status == ReceiptStatus::Duplicate && l.sent.contains_key(&r.seq) {
                                l.duplicate_receipts += 1;
                            }
                            if outbox.on_receipt(r.seq).is_some() {
                                let took = pushed_at.remove(&r.seq).map(|(t, _)| t.elapsed()).unwrap_or_default();
                                l.receipts.entry(r.seq).or_insert((r.status, took));
                                if r.status == ReceiptStatus::Rejected {
                                    l.rejections.insert(r.seq, r.reason.unwrap_or("").to_string());
                                }
                                drop(l);
                                receipt.notify_waiters();
                            }
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => {}
                _ = hb.tick(), if heartbeat_every.is_some() => {
                    let mut buf = [0u8; 64];
                    if let Ok(n) = (Heartbeat { v: 1, battery: Some(90), rssi: Some(-60) }).encode(&mut buf) {
                        let _ = client.try_publish(hb_topic.clone(), QoS::AtMostOnce, false, buf[..n].to_vec());
                    }
                }
            }
            if connected {
                while let Some(ev) = outbox.poll_send(now()) {
                    let mut buf = [0u8; 256];
                    let Ok(n) = ev.encode(&mut buf) else { break };
                    if client
                        .try_publish(
                            evt_topic.clone(),
                            QoS::AtLeastOnce,
                            false,
                            buf[..n].to_vec(),
                        )
                        .is_err()
                    {
                        // The connection's queue is full: the outbox offers it again later.
                        break;
                    }
                }
            }
        }
    });
    handle
}
