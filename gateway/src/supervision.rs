//! Silence is an event: every paired device has a supervision period, and
//! a device heard from neither by event nor by heartbeat for longer than it
//! raises `device_silent` (SCAIP 0123). Its next message raises
//! `device_resumed`, which clears the alarm at the backend.
//!
//! [`Supervisor`] is the bookkeeping, without I/O or clocks of its own;
//! [`supervise`] is the task that feeds it the device messages ingest saw
//! and hands what it raises to the journal. Which devices are silent is
//! kept in the journal (written with the event), so a restart neither
//! forgets an open silence nor raises it twice; a restarted gateway gives
//! every other device a full period before calling it silent.
//!
//! The devices watched follow the live register ([`Supervisor::follow`]):
//! a device paired is watched from then, as if just heard from; one
//! removed or swapped away is no longer watched.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use trygg_protocol::EventKind;

use crate::journal::SystemEvent;
use crate::register::Register;

struct Watch {
    period: Duration,
    last_seen: Instant,
    silent: bool,
    resident: Option<String>,
    room: Option<String>,
}

/// Which devices were heard from when, and which are silent.
pub struct Supervisor {
    watches: HashMap<String, Watch>,
}

impl Supervisor {
    /// Starts watching every supervised device of `register` as if heard
    /// from `now`; those in `silent` (from the journal) are silent still.
    pub fn new(register: &Register, silent: &[String], now: Instant) -> Supervisor {
        let mut s = Supervisor {
            watches: HashMap::new(),
        };
        s.follow(register, now);
        for id in silent {
            if let Some(w) = s.watches.get_mut(id) {
                w.silent = true;
            }
        }
        s
    }

    /// Brings the watches in line with `register`: new devices are watched
    /// as if heard from `now`, removed ones forgotten, and a changed
    /// period, room or resident taken over.
    pub fn follow(&mut self, register: &Register, now: Instant) {
        self.watches.retain(|id, _| {
            register
                .get(id)
                .is_some_and(|d| register.supervision_period(d).is_some())
        });
        for d in register.devices() {
            let Some(period) = register.supervision_period(d) else {
                continue;
            };
            let w = self.watches.entry(d.id.clone()).or_insert_with(|| Watch {
                period,
                last_seen: now,
                silent: false,
                resident: None,
                room: None,
            });
            w.period = period;
            w.resident.clone_from(&d.resident);
            w.room.clone_from(&d.room);
        }
    }

    /// A message came from `device`. If it had been reported silent, the
    /// event that clears it.
    pub fn seen(&mut self, device: &str, now: Instant) -> Option<SystemEvent> {
        let w = self.watches.get_mut(device)?;
        let was_silent = w.silent;
        let silent_for = now.saturating_duration_since(w.last_seen);
        w.last_seen = now;
        w.silent = false;
        was_silent.then(|| SystemEvent {
            kind: EventKind::DeviceResumed,
            subject: Some(device.to_string()),
            value: Some(silent_for.as_secs() as f32),
            resident: w.resident.clone(),
            room: w.room.clone(),
        })
    }

    /// Devices that have been silent longer than their period since the
    /// last check: one `device_silent` each, once per silence. Its value is
    /// the seconds since the device was last heard from.
    pub fn check(&mut self, now: Instant) -> Vec<SystemEvent> {
        let mut out: Vec<SystemEvent> = self
            .watches
            .iter_mut()
            .filter(|(_, w)| !w.silent && now.saturating_duration_since(w.last_seen) > w.period)
            .map(|(id, w)| {
                w.silent = true;
                SystemEvent {
                    kind: EventKind::DeviceSilent,
                    subject: Some(id.clone()),
                    value: Some(now.saturating_duration_since(w.last_seen).as_secs() as f32),
                    resident: w.resident.clone(),
                    room: w.room.clone(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.subject.cmp(&b.subject));
        out
    }

    /// Devices reported silent and not heard from since.
    pub fn silent(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .watches
            .iter()
            .filter(|(_, w)| w.silent)
            .map(|(id, _)| id.clone())
            .collect();
        v.sort();
        v
    }
}

/// What the supervision task sends to the journal.
#[derive(Debug)]
pub enum Raised {
    /// Events to journal (and send up).
    Events(Vec<SystemEvent>),
    /// Time for the journal's housekeeping (telemetry age, disk reserve).
    Housekeeping,
}

/// How often silence is checked and housekeeping asked for.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);
pub const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(10);

/// Runs until `cancel`: takes the device ids ingest heard from on `seen`,
/// and sends what it raises to `out`. `silent_now` is updated for the
/// local API.
pub async fn supervise(
    mut supervisor: Supervisor,
    register: std::sync::Arc<std::sync::RwLock<Register>>,
    mut seen: mpsc::UnboundedReceiver<String>,
    out: mpsc::Sender<Raised>,
    silent_now: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    cancel: CancellationToken,
) {
    let mut check = tokio::time::interval(CHECK_EVERY);
    let mut housekeeping = tokio::time::interval(HOUSEKEEPING_EVERY);
    loop {
        let raised = tokio::select! {
            _ = cancel.cancelled() => break,
            id = seen.recv() => match id {
                Some(id) => supervisor.seen(&id, Instant::now()).into_iter().collect(),
                None => break,
            },
            _ = check.tick() => {
                if let Ok(r) = register.read() {
                    supervisor.follow(&r, Instant::now());
                }
                let raised = supervisor.check(Instant::now());
                if let Ok(mut s) = silent_now.lock() {
                    *s = supervisor.silent();
                }
                raised
            }
            _ = housekeeping.tick() => {
                if out.send(Raised::Housekeeping).await.is_err() {
                    break;
                }
                continue;
            }
        };
        if raised.is_empty() {
            continue;
        }
        for e in &raised {
            let device = e.subject.as_deref().unwrap_or("");
            match e.kind {
                EventKind::DeviceSilent => tracing::warn!(
                    device,
                    silent_s = e.value.unwrap_or(0.0) as u64,
                    "device silent longer than its supervision period: raising device_silent"
                ),
                _ => tracing::info!(device, "device heard from again: device_silent cleared"),
            }
        }
        if let Ok(mut s) = silent_now.lock() {
            *s = supervisor.silent();
        }
        if out.send(Raised::Events(raised)).await.is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Register {
        Register::from_config(&raw_config())
    }

    fn raw_config() -> crate::config::Config {
        let mut c = crate::config::Config::default_config();
        // button-1 is a safety button (900 s); make fall-1 unsupervised and
        // door-1 short, to see the override work.
        for d in &mut c.devices {
            match d.id.as_str() {
                "fall-1" => d.supervision_s = Some(0),
                "door-1" => d.supervision_s = Some(60),
                _ => {}
            }
        }
        c
    }

    fn subjects(v: &[SystemEvent]) -> Vec<&str> {
        v.iter().filter_map(|e| e.subject.as_deref()).collect()
    }

    #[test]
    fn a_device_silent_past_its_period_is_reported_once_and_cleared_by_its_next_message() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(&config(), &[], t0);
        assert!(s.check(t0 + Duration::from_secs(60)).is_empty());
        let raised = s.check(t0 + Duration::from_secs(61));
        assert_eq!(subjects(&raised), vec!["door-1"]);
        assert_eq!(raised[0].kind, EventKind::DeviceSilent);
        assert_eq!(raised[0].room.as_deref(), Some("hallway"));
        assert!(
            s.check(t0 + Duration::from_secs(120)).is_empty(),
            "once per silence"
        );
        let back = s.seen("door-1", t0 + Duration::from_secs(130)).unwrap();
        assert_eq!(back.kind, EventKind::DeviceResumed);
        assert_eq!(back.value, Some(130.0));
        assert!(s.seen("door-1", t0 + Duration::from_secs(131)).is_none());
        assert!(s.silent().is_empty());
    }

    #[test]
    fn periods_come_from_the_device_type_unless_the_device_overrides_them() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(&config(), &[], t0);
        s.seen("door-1", t0 + Duration::from_secs(900));
        let raised = s.check(t0 + Duration::from_secs(901));
        // The safety button's type period is 900 s; fall-1 is off (0).
        assert_eq!(subjects(&raised), vec!["button-1"]);
        let raised = s.check(t0 + Duration::from_secs(3601));
        assert!(!subjects(&raised).contains(&"fall-1"));
        assert!(subjects(&raised).contains(&"motion-1"));
    }

    #[test]
    fn a_silence_from_before_a_restart_is_neither_raised_again_nor_forgotten() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(&config(), &["door-1".to_string()], t0);
        assert!(!subjects(&s.check(t0 + Duration::from_secs(3000))).contains(&"door-1"));
        assert_eq!(
            s.seen("door-1", t0 + Duration::from_secs(3001))
                .unwrap()
                .kind,
            EventKind::DeviceResumed
        );
    }

    #[test]
    fn unknown_devices_are_not_supervised() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(&config(), &[], t0);
        assert!(s.seen("stranger", t0).is_none());
        assert!(!subjects(&s.check(t0 + Duration::from_secs(99_999))).contains(&"stranger"));
    }

    #[test]
    fn devices_paired_later_are_watched_and_removed_ones_forgotten() {
        use crate::register::Change;
        let t0 = Instant::now();
        let mut r = config();
        let mut s = Supervisor::new(&r, &["door-1".to_string()], t0);
        let mut new = r.get("door-1").unwrap().clone();
        new.id = "door-2".into();
        let writes = r.check(&Change::Add(new)).unwrap();
        r.apply(&writes);
        let writes = r.check(&Change::Remove("door-1".into())).unwrap();
        r.apply(&writes);
        s.follow(&r, t0 + Duration::from_secs(30));
        assert!(s.silent().is_empty(), "a removed device is not silent");
        assert!(s.check(t0 + Duration::from_secs(90)).is_empty());
        let raised = s.check(t0 + Duration::from_secs(91));
        assert_eq!(subjects(&raised), vec!["door-2"]);
        assert_eq!(raised[0].room.as_deref(), Some("hallway"));
    }

    /// The task under paused time: a device that stops heart-beating is
    /// reported after its period, not before, and cleared when it returns.
    #[tokio::test(start_paused = true)]
    async fn the_task_raises_and_clears_under_paused_time() {
        let mut c = raw_config();
        c.devices.retain(|d| d.id == "door-1");
        let register = std::sync::Arc::new(std::sync::RwLock::new(Register::from_config(&c)));
        let (seen_tx, seen_rx) = mpsc::unbounded_channel();
        let (out_tx, mut out_rx) = mpsc::channel(1024);
        let cancel = CancellationToken::new();
        let silent = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let task = tokio::spawn(supervise(
            Supervisor::new(&register.read().unwrap(), &[], Instant::now()),
            register.clone(),
            seen_rx,
            out_tx,
            silent.clone(),
            cancel.clone(),
        ));
        let next_events = |rx: &mut mpsc::Receiver<Raised>| {
            let mut got = None;
            while let Ok(r) = rx.try_recv() {
                if let Raised::Events(e) = r {
                    got = Some(e);
                }
            }
            got
        };
        // Heart-beating every 30 s for 5 minutes: never silent.
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_secs(30)).await;
            seen_tx.send("door-1".to_string()).unwrap();
        }
        tokio::time::sleep(Duration::from_secs(59)).await;
        assert!(next_events(&mut out_rx).is_none(), "silent too early");
        tokio::time::sleep(Duration::from_secs(3)).await;
        let raised = next_events(&mut out_rx).expect("device_silent after 60 s");
        assert_eq!(raised[0].kind, EventKind::DeviceSilent);
        assert_eq!(*silent.lock().unwrap(), vec!["door-1".to_string()]);
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(next_events(&mut out_rx).is_none(), "raised twice");
        seen_tx.send("door-1".to_string()).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        let cleared = next_events(&mut out_rx).expect("device_resumed");
        assert_eq!(cleared[0].kind, EventKind::DeviceResumed);
        assert!(silent.lock().unwrap().is_empty());
        cancel.cancel();
        task.await.unwrap();
    }
}
