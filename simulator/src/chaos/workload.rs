//! The devices of a chaos run and what they report: telemetry all the
//! time, alarms and care events at random moments, each device through the
//! firmware outbox (kept until receipted) with its [`DeviceLog`] as the
//! ground truth. The devices live in the harness and are never killed.
//!
//! [`DeviceLog`]: crate::device::DeviceLog

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use trygg_gateway::config::{Device, DeviceType};
use trygg_protocol::EventKind;
use trygg_uplink::mqtt_url::MqttUrl;

use crate::device::{spawn_device, DeviceHandle};
use crate::home::usual_alarm;

/// How busy the home is.
#[derive(Clone, Debug)]
pub struct Pace {
    /// Telemetry events per second, over the whole home.
    pub telemetry_per_s: f64,
    /// Mean seconds between alarms in the home.
    pub alarm_every_s: f64,
    /// Mean seconds between care events (medication, technical).
    pub care_every_s: f64,
}

/// The device types of a care home's room, in the order ids are handed out.
const ROOM: [DeviceType; 7] = [
    DeviceType::SafetyButton,
    DeviceType::FallSensor,
    DeviceType::DoorSensor,
    DeviceType::BedSensor,
    DeviceType::MotionSensor,
    DeviceType::MedicineDispenser,
    DeviceType::SmokeDetector,
];

fn short(t: DeviceType) -> &'static str {
    match t {
        DeviceType::SafetyButton => "button",
        DeviceType::PullCord => "cord",
        DeviceType::FallSensor => "fall",
        DeviceType::DoorSensor => "door",
        DeviceType::BedSensor => "bed",
        DeviceType::MotionSensor => "motion",
        DeviceType::SmokeDetector => "smoke",
        DeviceType::WaterSensor => "water",
        DeviceType::EpilepsySensor => "epilepsy",
        DeviceType::MedicineDispenser => "dispenser",
        DeviceType::Thermometer => "thermo",
    }
}

/// The devices: the gateway's default home (`None`), or a care home of `n`
/// devices, room after room of button, fall sensor, door, bed, motion
/// sensor, dispenser and smoke detector (`button-001`, `fall-001`, ...).
pub fn devices(care_home: Option<usize>) -> Vec<Device> {
    let home = trygg_gateway::Config::default_config().devices;
    let Some(n) = care_home else {
        return home;
    };
    let template = home[0].clone();
    (0..n)
        .map(|i| {
            let t = ROOM[i % ROOM.len()];
            let room = i / ROOM.len() + 1;
            Device {
                id: format!("{}-{room:03}", short(t)),
                device_type: t,
                room: Some(format!("room-{room:03}")),
                resident: Some(format!("r-{room:04}")),
                ..template.clone()
            }
        })
        .collect()
}

/// Whether a device of this type sends telemetry, and what.
fn telemetry(t: DeviceType, rng: &mut StdRng, toggle: &mut bool) -> Option<(EventKind, f32)> {
    *toggle = !*toggle;
    Some(match t {
        DeviceType::DoorSensor if *toggle => (EventKind::DoorOpened, 0.0),
        DeviceType::DoorSensor => (EventKind::DoorClosed, 0.0),
        DeviceType::BedSensor if *toggle => (EventKind::BedOccupied, 0.0),
        DeviceType::BedSensor => (EventKind::BedVacated, 0.0),
        DeviceType::MotionSensor => (EventKind::Motion, 0.0),
        DeviceType::SmokeDetector | DeviceType::Thermometer => {
            (EventKind::Temperature, 20.0 + rng.random_range(0.0..3.0f32))
        }
        _ => return None,
    })
}

/// A care event a device of this type might send.
fn care_event(t: DeviceType, rng: &mut StdRng) -> EventKind {
    let kinds: &[EventKind] = match t {
        DeviceType::MedicineDispenser => &[
            EventKind::DoseDispensed,
            EventKind::DoseNotConfirmed,
            EventKind::RefillNeeded,
            EventKind::DispenserOpen,
        ],
        _ => &[
            EventKind::BatteryLow,
            EventKind::Tamper,
            EventKind::TestAlarm,
            EventKind::PowerFailure,
            EventKind::PowerRestored,
        ],
    };
    kinds[rng.random_range(0..kinds.len())]
}

/// An exponentially distributed wait with this mean.
fn exp_wait(rng: &mut StdRng, mean_s: f64) -> Duration {
    let u: f64 = rng.random_range(f64::EPSILON..1.0);
    Duration::from_secs_f64((-u.ln() * mean_s).min(mean_s * 10.0))
}

/// The running devices; their generators stop with the token.
#[derive(Clone)]
pub struct Workload {
    pub devices: Vec<(Device, DeviceHandle)>,
    /// The generators, so that [`Workload::stopped`] can wait for the
    /// last event they were sending when told to stop.
    generators: TaskTracker,
}

impl Workload {
    /// Connects every device to `broker` and starts their daily life.
    pub fn start(
        devices: &[Device],
        broker: &MqttUrl,
        seed: u64,
        pace: &Pace,
        stop: CancellationToken,
    ) -> Workload {
        let handles: Vec<(Device, DeviceHandle)> = devices
            .iter()
            .map(|d| {
                (
                    d.clone(),
                    spawn_device(&d.id, broker, Some(Duration::from_secs(5))),
                )
            })
            .collect();
        let generators = TaskTracker::new();
        let mut probe = StdRng::seed_from_u64(0);
        let talkers = devices
            .iter()
            .filter(|d| telemetry(d.device_type, &mut probe, &mut false).is_some())
            .count()
            .max(1);
        let mean = talkers as f64 / pace.telemetry_per_s.max(0.001);
        for (i, (d, h)) in handles.iter().enumerate() {
            if telemetry(d.device_type, &mut probe, &mut false).is_none() {
                continue;
            }
            let (t, h, stop) = (d.device_type, h.clone(), stop.clone());
            let mut rng = StdRng::seed_from_u64(seed ^ (1000 + i as u64));
            generators.spawn(async move {
                let mut toggle = false;
                loop {
                    let wait = exp_wait(&mut rng, mean);
                    tokio::select! { _ = stop.cancelled() => break, _ = tokio::time::sleep(wait) => {} }
                    if let Some((kind, value)) = telemetry(t, &mut rng, &mut toggle) {
                        let sent = if kind == EventKind::Temperature {
                            h.emit_value(kind, value).await
                        } else {
                            h.emit(kind).await
                        };
                        if sent.is_none() {
                            break;
                        }
                    }
                }
            });
        }
        // Alarms and care events: now and then, from any device.
        for (which, mean) in [(0u64, pace.alarm_every_s), (1, pace.care_every_s)] {
            if mean <= 0.0 || handles.is_empty() {
                continue;
            }
            let all = handles.clone();
            let stop = stop.clone();
            let mut rng = StdRng::seed_from_u64(seed ^ (2000 + which));
            generators.spawn(async move {
                loop {
                    let wait = exp_wait(&mut rng, mean);
                    tokio::select! { _ = stop.cancelled() => break, _ = tokio::time::sleep(wait) => {} }
                    let (d, h) = &all[rng.random_range(0..all.len())];
                    let kind = if which == 0 {
                        usual_alarm(d.device_type)
                    } else {
                        care_event(d.device_type, &mut rng)
                    };
                    if h.emit(kind).await.is_none() {
                        break;
                    }
                }
            });
        }
        generators.close();
        Workload {
            devices: handles,
            generators,
        }
    }

    /// Waits until every generator has stopped (after its token was
    /// cancelled): from then on nothing new is sent.
    pub async fn stopped(&self) {
        self.generators.wait().await;
    }

    /// Sends `n` telemetry events at once, spread over the devices that
    /// send telemetry; returns how many were queued.
    pub async fn burst(&self, n: usize, seed: u64) -> usize {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut toggle = false;
        let talkers: Vec<&(Device, DeviceHandle)> = self
            .devices
            .iter()
            .filter(|(d, _)| telemetry(d.device_type, &mut rng, &mut false).is_some())
            .collect();
        let mut sent = 0;
        for i in 0..n {
            let Some((d, h)) = talkers.get(i % talkers.len().max(1)) else {
                break;
            };
            if let Some((kind, value)) = telemetry(d.device_type, &mut rng, &mut toggle) {
                if h.emit_value(kind, value).await.is_some() {
                    sent += 1;
                }
            }
        }
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_care_home_has_unique_valid_ids_in_rooms() {
        let d = devices(Some(30));
        assert_eq!(d.len(), 30);
        let ids: std::collections::BTreeSet<&str> = d.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids.len(), 30);
        assert!(ids
            .iter()
            .all(|i| trygg_protocol::topic::is_valid_device_id(i)));
        assert_eq!(d[7].id, "button-002");
    }

    #[test]
    fn the_default_home_is_the_gateways_default_register() {
        assert_eq!(
            devices(None),
            trygg_gateway::Config::default_config().devices
        );
    }

    #[test]
    fn exponential_waits_have_about_the_mean_asked_for() {
        let mut rng = StdRng::seed_from_u64(1);
        let n = 20_000;
        let sum: f64 = (0..n).map(|_| exp_wait(&mut rng, 2.0).as_secs_f64()).sum();
        let mean = sum / n as f64;
        assert!((1.9..2.1).contains(&mean), "{mean}");
    }
}
