//! A simulated home: the gateway's registered devices, each a simulated
//! device, producing plausible daily life and an alarm now and then, and
//! answering `trygg-sim press` commands.
//!
//! Commands travel over the device broker, so `press` works from another
//! terminal:
//! `trygg/v1/sim/{device}/press` (payload: an event kind, or empty for the
//! device's usual alarm) and the answer on `trygg/v1/sim/{device}/result`.

use std::collections::HashMap;
use std::time::Duration;

use rand::Rng;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use trygg_gateway::config::{Device, DeviceType};
use trygg_protocol::{EventKind, ReceiptStatus};
use trygg_uplink::mqtt_url::MqttUrl;

use crate::config::Home;
use crate::device::{spawn_device_with, DeviceHandle, DeviceOptions};

pub const PRESS_FILTER: &str = "trygg/v1/sim/+/press";

pub fn press_topic(device: &str) -> String {
    format!("trygg/v1/sim/{device}/press")
}

pub fn result_topic(device: &str) -> String {
    format!("trygg/v1/sim/{device}/result")
}

/// The answer to a press.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PressResult {
    pub device: String,
    pub kind: String,
    pub seq: Option<u64>,
    /// `committed`, `duplicate`, `rejected`, or `timeout`.
    pub status: String,
    /// From the device's publish to the gateway's receipt.
    pub receipt_ms: Option<f64>,
    pub error: Option<String>,
}

/// The alarm a device of this type raises when pressed or triggered.
pub fn usual_alarm(t: DeviceType) -> EventKind {
    match t {
        DeviceType::SafetyButton => EventKind::ButtonPress,
        DeviceType::PullCord => EventKind::PullCord,
        DeviceType::FallSensor => EventKind::Fall,
        DeviceType::DoorSensor => EventKind::Wandering,
        DeviceType::BedSensor => EventKind::LeftBed,
        DeviceType::MotionSensor => EventKind::Inactivity,
        DeviceType::SmokeDetector => EventKind::SmokeFire,
        DeviceType::WaterSensor => EventKind::Water,
        DeviceType::EpilepsySensor => EventKind::Epilepsy,
        DeviceType::MedicineDispenser => EventKind::DoseNotConfirmed,
        DeviceType::Thermometer => EventKind::TestAlarm,
    }
}

/// What the alarm button of a device of this type raises.
fn button_kind(t: DeviceType) -> EventKind {
    match t {
        DeviceType::PullCord => EventKind::PullCord,
        _ => EventKind::ButtonPress,
    }
}

/// The resident raises a device's usual alarm: a safety button or pull
/// cord is pressed (its pin, through the firmware's debounce); any other
/// device raises its alarm as a scripted event.
async fn raise_usual_alarm(d: &Device, h: &DeviceHandle) -> Option<u64> {
    match d.device_type {
        DeviceType::SafetyButton | DeviceType::PullCord => h.press_button().await,
        t => h.emit(usual_alarm(t)).await,
    }
}

/// What a device of this type reports in daily life, with a value.
fn daily_life(
    t: DeviceType,
    rng: &mut impl Rng,
    state: &mut bool,
) -> Option<(EventKind, Option<f32>)> {
    *state = !*state;
    Some(match t {
        DeviceType::DoorSensor => (
            if *state {
                EventKind::DoorOpened
            } else {
                EventKind::DoorClosed
            },
            None,
        ),
        DeviceType::BedSensor => (
            if *state {
                EventKind::BedOccupied
            } else {
                EventKind::BedVacated
            },
            None,
        ),
        DeviceType::MotionSensor => (EventKind::Motion, None),
        DeviceType::SmokeDetector | DeviceType::Thermometer => (
            EventKind::Temperature,
            Some(20.0 + rng.random_range(0.0..3.0f32)),
        ),
        DeviceType::MedicineDispenser => (EventKind::DoseDispensed, None),
        _ => return None,
    })
}

/// A running home.
pub struct SimHome {
    pub devices: HashMap<String, (Device, DeviceHandle)>,
}

impl SimHome {
    /// Starts every device and the home's daily life; stops with `cancel`.
    /// Devices connect to `broker` (the gateway's device broker) with
    /// their simulated keys; presses are asked for on `control`, a broker
    /// of the simulator's own (the device broker lets no one but devices
    /// and the gateway in).
    pub fn start(
        devices: &[Device],
        broker: &MqttUrl,
        control: &MqttUrl,
        home: &Home,
        cancel: CancellationToken,
    ) -> SimHome {
        let hb = Duration::from_secs(home.heartbeat_every_s);
        let map: HashMap<String, (Device, DeviceHandle)> = devices
            .iter()
            .map(|d| {
                (
                    d.id.clone(),
                    (
                        d.clone(),
                        spawn_device_with(
                            &d.id,
                            broker,
                            DeviceOptions {
                                heartbeat_every: Some(hb),
                                button: button_kind(d.device_type),
                                ..DeviceOptions::default()
                            },
                        ),
                    ),
                )
            })
            .collect();
        for (device, handle) in map.values() {
            let (device, handle, cancel) = (device.clone(), handle.clone(), cancel.clone());
            let mean = home.telemetry_every_s;
            tokio::spawn(async move {
                let mut state = false;
                loop {
                    let wait = Duration::from_secs_f64(mean * rand::rng().random_range(0.5..1.5));
                    tokio::select! { _ = cancel.cancelled() => break, _ = tokio::time::sleep(wait) => {} }
                    let next = daily_life(device.device_type, &mut rand::rng(), &mut state);
                    match next {
                        Some((kind, Some(v))) => {
                            handle.emit_value(kind, v).await;
                        }
                        Some((kind, None)) => {
                            handle.emit(kind).await;
                        }
                        None => break,
                    }
                }
            });
        }
        if home.alarm_every_s > 0.0 {
            let alarmers: Vec<(Device, DeviceHandle)> = map
                .values()
                .filter(|(d, _)| {
                    matches!(
                        d.device_type,
                        DeviceType::SafetyButton | DeviceType::FallSensor
                    )
                })
                .cloned()
                .collect();
            let mean = home.alarm_every_s;
            let cancel = cancel.clone();
            tokio::spawn(async move {
                loop {
                    let wait = Duration::from_secs_f64(mean * rand::rng().random_range(0.5..1.5));
                    tokio::select! { _ = cancel.cancelled() => break, _ = tokio::time::sleep(wait) => {} }
                    if alarmers.is_empty() {
                        break;
                    }
                    let (d, h) = &alarmers[rand::rng().random_range(0..alarmers.len())];
                    raise_usual_alarm(d, h).await;
                }
            });
        }
        let home = SimHome { devices: map };
        home.serve_presses(control, cancel);
        home
    }

    fn serve_presses(&self, broker: &MqttUrl, cancel: CancellationToken) {
        let devices: HashMap<String, (Device, DeviceHandle)> = self.devices.clone();
        let mut opts = MqttOptions::new(
            format!("trygg-sim-home-{}", rand::random::<u32>()),
            broker.host.clone(),
            broker.port,
        );
        opts.set_keep_alive(Duration::from_secs(5));
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        tokio::spawn(async move {
            loop {
                let ev =
                    tokio::select! { _ = cancel.cancelled() => break, e = eventloop.poll() => e };
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = client.subscribe(PRESS_FILTER, QoS::AtLeastOnce).await;
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let device = p
                            .topic
                            .trim_start_matches("trygg/v1/sim/")
                            .trim_end_matches("/press")
                            .to_string();
                        let requested = String::from_utf8_lossy(&p.payload).trim().to_string();
                        let client = client.clone();
                        let entry = devices.get(&device).cloned();
                        tokio::spawn(async move {
                            let result = press(&device, &requested, entry).await;
                            let payload = serde_json::to_vec(&result).unwrap_or_default();
                            let _ = client
                                .publish(result_topic(&device), QoS::AtLeastOnce, false, payload)
                                .await;
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
                }
            }
        });
    }
}

async fn press(
    device: &str,
    requested: &str,
    entry: Option<(Device, DeviceHandle)>,
) -> PressResult {
    let fail = |kind: &str, error: String| PressResult {
        device: device.to_string(),
        kind: kind.to_string(),
        seq: None,
        status: "error".into(),
        receipt_ms: None,
        error: Some(error),
    };
    let Some((d, handle)) = entry else {
        return fail(
            requested,
            format!("the simulated home has no device `{device}`"),
        );
    };
    let kind = if requested.is_empty() {
        usual_alarm(d.device_type)
    } else {
        match EventKind::from_wire(requested) {
            Some(k) => k,
            None => {
                return fail(
                    requested,
                    format!("`{requested}` is not an event kind (see docs/protocol.md)"),
                )
            }
        }
    };
    let seq = if requested.is_empty() {
        raise_usual_alarm(&d, &handle).await
    } else {
        handle.emit(kind).await
    };
    let answer = match seq {
        Some(s) => handle.wait_receipt(s, Duration::from_secs(10)).await,
        None => None,
    };
    let (status, receipt_ms) = match answer {
        Some((s, took)) => (
            match s {
                ReceiptStatus::Committed => "committed",
                ReceiptStatus::Duplicate => "duplicate",
                ReceiptStatus::Rejected => "rejected",
            },
            Some(took.as_secs_f64() * 1000.0),
        ),
        None => ("timeout", None),
    };
    PressResult {
        device: device.into(),
        kind: kind.wire().into(),
        seq,
        status: status.into(),
        receipt_ms,
        error: None,
    }
}
