//! The gateway's own I/O on a Raspberry Pi: a local alarm button, a UPS's
//! mains-fail input, a status LED and a buzzer (pin map and wiring:
//! `docs/boards.md`, `boards/pi-gateway`).
//!
//! [`LocalIo`] is the bookkeeping, generic over embedded-hal 1.0 pins and
//! driven by [`LocalIo::tick`] with an explicit `now`: no clock, no tokio,
//! no rpi-pal. [`drive`] is the task that ticks it every [`TICK`] with the
//! gateway's state and hands what it raises to the journal, the way
//! supervision does.
//!
//! What it promises:
//! - **A press is one alarm.** An input changes state only after its raw
//!   level has held for the debounce time (button 50 ms, mains 1 s), so a
//!   bouncing contact gives one `button_press`, raised by the gateway as
//!   itself (subject `local-button`).
//! - **Mains failure and return** are `power_failure` / `power_restored`.
//!   Both inputs start as "not active": a button held or mains out when
//!   the gateway starts is reported like a new press or failure.
//! - **Bad input never hurts.** An input with more than
//!   [`Settings::chatter_edges`] raw changes in [`Settings::chatter_window`]
//!   is chattering; a button held longer than [`Settings::stuck_after`] is
//!   stuck. Either is reported once as `device_fault` (value: the edges in
//!   the window, or the seconds held), and a chattering input is ignored
//!   until it has been quiet for a whole window. A pin that cannot be read
//!   skips that sample. Nothing here panics on any input.
//! - **The LED says whether help can come**: steady = all well; slow blink
//!   (1 s on, 1 s off) = the uplink has been down longer than
//!   `local_io.uplink_down_signal_s`; fast blink (4 per second) = the
//!   journal cannot commit or the disk is full. The worst state wins.
//! - **The buzzer** sounds three short beeps every 2 s for 30 s when an
//!   alarm is raised (the local button or any paired device's) while the
//!   uplink has been down that long; it stops when the uplink is back.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use embedded_hal::digital::{InputPin, OutputPin};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use trygg_protocol::EventKind;

use crate::config::{GpioMode, Level};
use crate::journal::SystemEvent;
use crate::supervision::Raised;

/// How often [`drive`] samples the inputs and sets the outputs.
pub const TICK: Duration = Duration::from_millis(20);

/// The subjects the gateway's own input events are raised under.
pub const BUTTON_SUBJECT: &str = "local-button";
pub const MAINS_SUBJECT: &str = "mains-fail-input";

/// How long the buzzer pattern lasts after an alarm, and its period.
pub const BUZZ_FOR: Duration = Duration::from_secs(30);
const BUZZ_PERIOD_MS: u128 = 2000;
const SLOW_BLINK_MS: u128 = 2000;
const FAST_BLINK_MS: u128 = 250;

/// Timings and identities; [`Settings::from_config`] for the gateway's.
#[derive(Clone, Debug)]
pub struct Settings {
    pub button_debounce: Duration,
    pub mains_debounce: Duration,
    /// The button held longer than this is stuck.
    pub stuck_after: Duration,
    /// More raw changes than `chatter_edges` within `chatter_window` is
    /// chattering.
    pub chatter_window: Duration,
    pub chatter_edges: usize,
    pub uplink_down_signal: Duration,
    pub mains_fail_active_high: bool,
    /// For the local button's alarms.
    pub resident: Option<String>,
    pub room: Option<String>,
}

impl Settings {
    pub fn from_config(c: &crate::config::LocalIo) -> Settings {
        Settings {
            button_debounce: Duration::from_millis(50),
            mains_debounce: Duration::from_secs(1),
            stuck_after: Duration::from_secs(60),
            chatter_window: Duration::from_secs(10),
            // A resident pressing as fast as a person can (about 5 a
            // second, 10 edges) stays well below this.
            chatter_edges: 40,
            uplink_down_signal: Duration::from_secs(c.uplink_down_signal_s),
            mains_fail_active_high: c.mains_fail_active == Level::High,
            resident: c.resident.clone(),
            room: c.room.clone(),
        }
    }
}

/// What the rest of the gateway says, read at each tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GatewayState {
    /// Connected to the backend's broker.
    pub uplink_connected: bool,
    /// The journal cannot commit, or the disk is full.
    pub journal_failing: bool,
    /// Alarms from paired devices committed since start (a counter: a rise
    /// is a new alarm).
    pub alarms_committed: u64,
}

/// What the LED shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LedPattern {
    Steady,
    SlowBlink,
    FastBlink,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputFault {
    Stuck,
    Chattering,
}

impl InputFault {
    pub fn as_str(self) -> &'static str {
        match self {
            InputFault::Stuck => "stuck",
            InputFault::Chattering => "chattering",
        }
    }
}

/// What a tick saw; [`Observed::event`] is what goes to the journal.
#[derive(Clone, Debug, PartialEq)]
pub enum Observed {
    ButtonPressed,
    MainsFailed,
    MainsRestored,
    /// Reported once per fault; `value` is the raw edges in the window
    /// (chattering) or the seconds held (stuck).
    InputFault {
        input: &'static str,
        fault: InputFault,
        value: f32,
    },
    /// The input works again (not an event: the fault was reported).
    InputRecovered {
        input: &'static str,
    },
}

impl Observed {
    /// The event to journal, if this is one.
    pub fn event(&self, settings: &Settings) -> Option<SystemEvent> {
        let event = |kind, subject: Option<&str>, value| SystemEvent {
            kind,
            subject: subject.map(str::to_string),
            value,
            resident: None,
            room: None,
        };
        Some(match self {
            Observed::ButtonPressed => SystemEvent {
                resident: settings.resident.clone(),
                room: settings.room.clone(),
                ..event(EventKind::ButtonPress, Some(BUTTON_SUBJECT), None)
            },
            // The gateway's own power: no subject.
            Observed::MainsFailed => event(EventKind::PowerFailure, None, None),
            Observed::MainsRestored => event(EventKind::PowerRestored, None, None),
            Observed::InputFault { input, value, .. } => {
                event(EventKind::DeviceFault, Some(input), Some(*value))
            }
            Observed::InputRecovered { .. } => return None,
        })
    }
}

/// One debounced input with its fault watch.
struct Input {
    name: &'static str,
    debounce: Duration,
    stuck_after: Option<Duration>,
    /// The debounced state: active (pressed, mains out) or not.
    stable: bool,
    stable_since: Instant,
    raw: bool,
    raw_since: Instant,
    /// Raw changes within the chatter window, oldest first; at most
    /// `chatter_edges + 1` are kept.
    edges: VecDeque<Instant>,
    fault: Option<InputFault>,
}

enum Change {
    Activated,
    Released,
    Fault(InputFault, f32),
    Recovered,
}

impl Input {
    fn new(
        name: &'static str,
        debounce: Duration,
        stuck_after: Option<Duration>,
        now: Instant,
    ) -> Input {
        Input {
            name,
            debounce,
            stuck_after,
            stable: false,
            stable_since: now,
            raw: false,
            raw_since: now,
            edges: VecDeque::new(),
            fault: None,
        }
    }

    fn sample(&mut self, active: bool, now: Instant, s: &Settings) -> Option<Change> {
        if active != self.raw {
            self.raw = active;
            self.raw_since = now;
            self.edges.push_back(now);
            if self.edges.len() > s.chatter_edges + 1 {
                self.edges.pop_front();
            }
        }
        while self
            .edges
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > s.chatter_window)
        {
            self.edges.pop_front();
        }
        if self.fault == Some(InputFault::Chattering) {
            if !self.edges.is_empty() {
                return None;
            }
            // Quiet for a whole window: take its level as it is now,
            // without reporting a change nobody could trust.
            self.fault = None;
            self.stable = self.raw;
            self.stable_since = now;
            return Some(Change::Recovered);
        }
        if self.edges.len() > s.chatter_edges {
            self.fault = Some(InputFault::Chattering);
            return Some(Change::Fault(
                InputFault::Chattering,
                self.edges.len() as f32,
            ));
        }
        if self.raw != self.stable && now.saturating_duration_since(self.raw_since) >= self.debounce
        {
            self.stable = self.raw;
            self.stable_since = now;
            if !self.stable && self.fault == Some(InputFault::Stuck) {
                self.fault = None;
                return Some(Change::Recovered);
            }
            return Some(if self.stable {
                Change::Activated
            } else {
                Change::Released
            });
        }
        if let Some(limit) = self.stuck_after {
            let held = now.saturating_duration_since(self.stable_since);
            if self.stable && self.fault.is_none() && held > limit {
                self.fault = Some(InputFault::Stuck);
                return Some(Change::Fault(InputFault::Stuck, held.as_secs() as f32));
            }
        }
        None
    }
}

/// An output written only when its level changes (and again after a
/// failed write).
struct Output<P> {
    pin: P,
    written: Option<bool>,
}

impl<P: OutputPin> Output<P> {
    fn set(&mut self, on: bool) {
        if self.written == Some(on) {
            return;
        }
        let ok = if on {
            self.pin.set_high().is_ok()
        } else {
            self.pin.set_low().is_ok()
        };
        self.written = ok.then_some(on);
    }
}

/// The local button, mains-fail input, LED and buzzer, and what they mean.
pub struct LocalIo<B, M, L, Z> {
    settings: Settings,
    button_pin: B,
    mains_pin: M,
    button: Input,
    mains: Input,
    led: Output<L>,
    buzzer: Output<Z>,
    /// Blink phases count from here.
    origin: Instant,
    uplink_down_since: Option<Instant>,
    alarms_seen: Option<u64>,
    /// The buzzer pattern's start, while it sounds.
    buzzing_since: Option<Instant>,
    read_errors: u64,
}

impl<B, M, L, Z> LocalIo<B, M, L, Z>
where
    B: InputPin,
    M: InputPin,
    L: OutputPin,
    Z: OutputPin,
{
    /// Takes the pins; nothing is read or written until the first tick.
    /// The uplink counts as down from `now` until a tick says otherwise.
    pub fn new(
        settings: Settings,
        button: B,
        mains_fail: M,
        led: L,
        buzzer: Z,
        now: Instant,
    ) -> Self {
        LocalIo {
            button: Input::new(
                BUTTON_SUBJECT,
                settings.button_debounce,
                Some(settings.stuck_after),
                now,
            ),
            mains: Input::new(MAINS_SUBJECT, settings.mains_debounce, None, now),
            settings,
            button_pin: button,
            mains_pin: mains_fail,
            led: Output {
                pin: led,
                written: None,
            },
            buzzer: Output {
                pin: buzzer,
                written: None,
            },
            origin: now,
            uplink_down_since: Some(now),
            alarms_seen: None,
            buzzing_since: None,
            read_errors: 0,
        }
    }

    /// Samples the inputs, then sets the LED and buzzer for `state`.
    pub fn tick(&mut self, now: Instant, state: &GatewayState) -> Vec<Observed> {
        let mut out = Vec::new();
        let s = &self.settings;
        // Button: pressed pulls the line to GND.
        match self.button_pin.is_low() {
            Ok(pressed) => match self.button.sample(pressed, now, s) {
                Some(Change::Activated) => out.push(Observed::ButtonPressed),
                Some(change) => out.extend(other(change, self.button.name)),
                None => {}
            },
            Err(_) => self.read_errors += 1,
        }
        let mains = if s.mains_fail_active_high {
            self.mains_pin.is_high()
        } else {
            self.mains_pin.is_low()
        };
        match mains {
            Ok(failed) => match self.mains.sample(failed, now, s) {
                Some(Change::Activated) => out.push(Observed::MainsFailed),
                Some(Change::Released) => out.push(Observed::MainsRestored),
                Some(change) => out.extend(other(change, self.mains.name)),
                None => {}
            },
            Err(_) => self.read_errors += 1,
        }

        if state.uplink_connected {
            self.uplink_down_since = None;
        } else if self.uplink_down_since.is_none() {
            self.uplink_down_since = Some(now);
        }
        let down_too_long = self
            .uplink_down_since
            .is_some_and(|t| now.saturating_duration_since(t) > self.settings.uplink_down_signal);

        let device_alarm = self
            .alarms_seen
            .is_some_and(|seen| state.alarms_committed > seen);
        self.alarms_seen = Some(state.alarms_committed);
        if down_too_long && (device_alarm || out.contains(&Observed::ButtonPressed)) {
            self.buzzing_since = Some(now);
        }
        if !down_too_long
            || self
                .buzzing_since
                .is_some_and(|t| now.saturating_duration_since(t) >= BUZZ_FOR)
        {
            self.buzzing_since = None;
        }
        let buzz = self.buzzing_since.is_some_and(|t| {
            // Three 200 ms beeps, 200 ms apart, every 2 s.
            let phase = now.saturating_duration_since(t).as_millis() % BUZZ_PERIOD_MS;
            matches!(phase, 0..200 | 400..600 | 800..1000)
        });
        self.buzzer.set(buzz);

        let since = now.saturating_duration_since(self.origin).as_millis();
        let led_on = match self.led_pattern(state, down_too_long) {
            LedPattern::Steady => true,
            LedPattern::SlowBlink => since % SLOW_BLINK_MS < SLOW_BLINK_MS / 2,
            LedPattern::FastBlink => since % FAST_BLINK_MS < FAST_BLINK_MS / 2,
        };
        self.led.set(led_on);
        out
    }

    fn led_pattern(&self, state: &GatewayState, down_too_long: bool) -> LedPattern {
        if state.journal_failing {
            LedPattern::FastBlink
        } else if down_too_long {
            LedPattern::SlowBlink
        } else {
            LedPattern::Steady
        }
    }

    /// Samples that could not be read (each skipped).
    pub fn read_errors(&self) -> u64 {
        self.read_errors
    }

    /// Whether the buzzer pattern is running.
    pub fn buzzing(&self) -> bool {
        self.buzzing_since.is_some()
    }

    /// LED dark and buzzer quiet (a stopped gateway shows nothing), and the
    /// pins handed back.
    pub fn release(mut self) -> (B, M, L, Z) {
        self.led.set(false);
        self.buzzer.set(false);
        (
            self.button_pin,
            self.mains_pin,
            self.led.pin,
            self.buzzer.pin,
        )
    }
}

fn other(change: Change, input: &'static str) -> Option<Observed> {
    match change {
        Change::Fault(fault, value) => Some(Observed::InputFault {
            input,
            fault,
            value,
        }),
        Change::Recovered => Some(Observed::InputRecovered { input }),
        // A button's release means nothing by itself.
        Change::Activated | Change::Released => None,
    }
}

/// Opens the Pi's pins as `local_io.gpio` says: `None` when it is off, or
/// when it is `auto` and there is no usable GPIO (said once in the log).
/// With `on`, a missing GPIO is an error that stops the gateway.
pub fn open(
    config: &crate::config::LocalIo,
) -> Result<Option<trygg_board_pi_gateway::GatewayPins>, trygg_board_pi_gateway::OpenError> {
    use trygg_board_pi_gateway::OpenError;
    if config.gpio == GpioMode::Off {
        tracing::info!(
            "local button, LED, buzzer and mains-fail input are off (local_io.gpio = \"off\")"
        );
        return Ok(None);
    }
    match trygg_board_pi_gateway::open(&config.pin_map()) {
        Ok(pins) => {
            let map = config.pin_map();
            tracing::info!(
                button_bcm = map.button,
                led_bcm = map.led,
                buzzer_bcm = map.buzzer,
                mains_fail_bcm = map.mains_fail,
                "local button, LED, buzzer and mains-fail input on the Raspberry Pi's GPIO"
            );
            Ok(Some(pins))
        }
        Err(e) if config.gpio == GpioMode::On => Err(e),
        Err(e @ OpenError::NoGpio(_)) => {
            tracing::info!("{e} (local_io.gpio = \"auto\")");
            Ok(None)
        }
        Err(e) => {
            tracing::warn!("{e} (local_io.gpio = \"auto\": running without them)");
            Ok(None)
        }
    }
}

/// Runs until `cancel`: ticks `io` every [`TICK`] with the gateway's state
/// from `shared`, logs and counts what it sees, and sends the events to
/// `out`. Leaves the LED dark and the buzzer quiet when it stops.
pub(crate) async fn drive<B, M, L, Z>(
    mut io: LocalIo<B, M, L, Z>,
    shared: Arc<crate::service::Shared>,
    out: mpsc::Sender<Raised>,
    cancel: CancellationToken,
) where
    B: InputPin,
    M: InputPin,
    L: OutputPin,
    Z: OutputPin,
{
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut read_errors = 0;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let state = GatewayState {
            uplink_connected: shared.uplink_connected.load(Ordering::Relaxed),
            journal_failing: shared.disk_full.load(Ordering::Relaxed)
                || shared
                    .journal_error
                    .lock()
                    .map(|e| e.is_some())
                    .unwrap_or(true),
            alarms_committed: shared.alarms_committed.load(Ordering::Relaxed),
        };
        let observed = io.tick(Instant::now(), &state);
        if io.read_errors() > read_errors {
            if read_errors == 0 {
                tracing::warn!("a local input pin could not be read; the sample was skipped");
            }
            shared.metrics.add(
                "local_io_read_errors_total",
                "",
                io.read_errors() - read_errors,
            );
            read_errors = io.read_errors();
        }
        if observed.is_empty() {
            continue;
        }
        let metrics = &shared.metrics;
        for o in &observed {
            match o {
                Observed::ButtonPressed => {
                    metrics.inc("local_io_button_presses_total", "");
                    tracing::warn!(
                        buzzer = io.buzzing(),
                        "local alarm button pressed: raising button_press"
                    );
                }
                Observed::MainsFailed => {
                    metrics.inc("local_io_mains_failures_total", "");
                    tracing::warn!("mains power lost (UPS signal): raising power_failure");
                }
                Observed::MainsRestored => {
                    tracing::info!("mains power back (UPS signal): raising power_restored");
                }
                Observed::InputFault {
                    input,
                    fault,
                    value,
                } => {
                    metrics.inc(
                        "local_io_input_faults_total",
                        &format!("input=\"{input}\",fault=\"{}\"", fault.as_str()),
                    );
                    tracing::warn!(input, fault = fault.as_str(), value, "local input fault: raising device_fault; the input is not trusted until it behaves");
                }
                Observed::InputRecovered { input } => {
                    tracing::info!(input, "local input behaves again");
                }
            }
        }
        let events: Vec<SystemEvent> = observed
            .iter()
            .filter_map(|o| o.event(&io.settings))
            .collect();
        if !events.is_empty() && out.send(Raised::Events(events)).await.is_err() {
            break;
        }
    }
    let _ = io.release();
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::digital::{Mock, State, Transaction as Tx};

    fn settings() -> Settings {
        Settings::from_config(&crate::config::LocalIo {
            resident: Some("r-7f3a".into()),
            room: Some("hallway".into()),
            ..Default::default()
        })
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    const WELL: GatewayState = GatewayState {
        uplink_connected: true,
        journal_failing: false,
        alarms_committed: 0,
    };

    /// A script of ticks: when, the button pressed or not, mains out or
    /// not, and the gateway's state.
    #[derive(Default)]
    struct Script {
        ticks: Vec<(Duration, bool, bool, GatewayState)>,
    }

    impl Script {
        fn at(mut self, at: Duration, pressed: bool, mains_out: bool, state: GatewayState) -> Self {
            self.ticks.push((at, pressed, mains_out, state));
            self
        }

        /// From the last tick (or 0) on, every `step` for `length`.
        fn hold(
            mut self,
            pressed: bool,
            mains_out: bool,
            length: Duration,
            step: Duration,
            state: GatewayState,
        ) -> Self {
            let start = self.ticks.last().map(|t| t.0 + step).unwrap_or_default();
            let mut at = start;
            while at < start + length {
                self.ticks.push((at, pressed, mains_out, state));
                at += step;
            }
            self
        }

        fn end(&self) -> Duration {
            self.ticks.last().map(|t| t.0).unwrap_or_default()
        }

        /// Runs it against mocks expecting exactly these reads and the
        /// given LED and buzzer writes (plus dark and quiet at release);
        /// every mock is `.done()`.
        fn run(&self, led: &[Tx], buzzer: &[Tx]) -> Vec<(Duration, Observed)> {
            let level = |high: bool| Tx::get(if high { State::High } else { State::Low });
            let button = Mock::new(&self.ticks.iter().map(|t| level(!t.1)).collect::<Vec<_>>());
            let mains = Mock::new(&self.ticks.iter().map(|t| level(t.2)).collect::<Vec<_>>());
            let mut led = led.to_vec();
            let mut buzzer = buzzer.to_vec();
            for writes in [&mut led, &mut buzzer] {
                let last_high = writes
                    .iter()
                    .rev()
                    .find(|t| **t == Tx::set(State::High) || **t == Tx::set(State::Low))
                    == Some(&Tx::set(State::High));
                if last_high {
                    writes.push(Tx::set(State::Low));
                }
            }
            let t0 = Instant::now();
            let mut io = LocalIo::new(
                settings(),
                button,
                mains,
                Mock::new(&led),
                Mock::new(&buzzer),
                t0,
            );
            let mut seen = Vec::new();
            for (at, _, _, state) in &self.ticks {
                for o in io.tick(t0 + *at, state) {
                    seen.push((*at, o));
                }
            }
            assert_eq!(io.read_errors(), 0);
            let (mut b, mut m, mut l, mut z) = io.release();
            b.done();
            m.done();
            l.done();
            z.done();
            seen
        }
    }

    fn only(seen: &[(Duration, Observed)]) -> Vec<Observed> {
        seen.iter().map(|(_, o)| o.clone()).collect()
    }

    /// The LED lit at the first tick and the buzzer quiet: all well.
    fn steady() -> Vec<Tx> {
        vec![Tx::set(State::High)]
    }
    fn quiet() -> Vec<Tx> {
        vec![Tx::set(State::Low)]
    }

    #[test]
    fn a_bouncing_press_raises_one_button_alarm_as_the_gateway_itself() {
        let tick = TICK;
        let mut s = Script::default().hold(false, false, ms(200), tick, WELL);
        // Press with contact bounce, held, released with bounce.
        for pressed in [true, false, true, false, true] {
            s = s.hold(pressed, false, tick, tick, WELL);
        }
        s = s.hold(true, false, ms(400), tick, WELL);
        for pressed in [false, true, false, true, false] {
            s = s.hold(pressed, false, tick, tick, WELL);
        }
        s = s.hold(false, false, ms(400), tick, WELL);
        let seen = s.run(&steady(), &quiet());
        assert_eq!(
            only(&seen),
            vec![Observed::ButtonPressed],
            "bounce is not three alarms"
        );
        let e = seen[0].1.event(&settings()).unwrap();
        assert_eq!(e.kind, EventKind::ButtonPress);
        assert_eq!(e.subject.as_deref(), Some(BUTTON_SUBJECT));
        assert_eq!(e.resident.as_deref(), Some("r-7f3a"));
        assert_eq!(e.room.as_deref(), Some("hallway"));
    }

    #[test]
    fn a_glitch_shorter_than_the_debounce_raises_nothing() {
        let s = Script::default()
            .hold(false, false, ms(100), TICK, WELL)
            .hold(true, false, ms(40), TICK, WELL)
            .hold(false, false, ms(100), TICK, WELL);
        assert!(s.run(&steady(), &quiet()).is_empty());
    }

    #[test]
    fn two_presses_are_two_alarms() {
        let s = Script::default()
            .hold(true, false, ms(200), TICK, WELL)
            .hold(false, false, ms(200), TICK, WELL)
            .hold(true, false, ms(200), TICK, WELL);
        assert_eq!(
            only(&s.run(&steady(), &quiet())),
            vec![Observed::ButtonPressed, Observed::ButtonPressed]
        );
    }

    #[test]
    fn mains_failure_and_return_are_one_technical_event_each() {
        let s = Script::default()
            .hold(false, false, ms(500), TICK, WELL)
            // The UPS's signal flickers as mains goes, then holds.
            .hold(false, true, ms(300), TICK, WELL)
            .hold(false, false, ms(100), TICK, WELL)
            .hold(false, true, ms(3000), TICK, WELL)
            .hold(false, false, ms(3000), TICK, WELL);
        let seen = s.run(&steady(), &quiet());
        assert_eq!(
            only(&seen),
            vec![Observed::MainsFailed, Observed::MainsRestored]
        );
        // Reported a debounce (1 s) after the signal settled.
        assert_eq!(seen[0].0, ms(500 + 300 + 100 + 1000));
        let kinds: Vec<EventKind> = seen
            .iter()
            .map(|(_, o)| o.event(&settings()).unwrap().kind)
            .collect();
        assert_eq!(
            kinds,
            vec![EventKind::PowerFailure, EventKind::PowerRestored]
        );
        assert!(seen[0].1.event(&settings()).unwrap().subject.is_none());
    }

    #[test]
    fn mains_out_when_the_gateway_starts_is_reported() {
        let s = Script::default().hold(false, true, ms(1500), TICK, WELL);
        assert_eq!(
            only(&s.run(&steady(), &quiet())),
            vec![Observed::MainsFailed]
        );
    }

    #[test]
    fn a_button_held_past_a_minute_is_reported_stuck_once_and_works_again_when_released() {
        let s = Script::default()
            .hold(
                true,
                false,
                Duration::from_secs(120),
                Duration::from_secs(1),
                WELL,
            )
            .hold(
                false,
                false,
                Duration::from_secs(2),
                Duration::from_secs(1),
                WELL,
            )
            .hold(
                true,
                false,
                Duration::from_secs(2),
                Duration::from_secs(1),
                WELL,
            );
        let seen = s.run(&steady(), &quiet());
        assert_eq!(
            only(&seen),
            vec![
                Observed::ButtonPressed,
                Observed::InputFault {
                    input: BUTTON_SUBJECT,
                    fault: InputFault::Stuck,
                    value: 61.0
                },
                Observed::InputRecovered {
                    input: BUTTON_SUBJECT
                },
                Observed::ButtonPressed,
            ]
        );
        let fault = seen[1].1.event(&settings()).unwrap();
        assert_eq!(fault.kind, EventKind::DeviceFault);
        assert_eq!(fault.subject.as_deref(), Some(BUTTON_SUBJECT));
        assert!(seen[2].1.event(&settings()).is_none());
    }

    #[test]
    fn a_chattering_button_is_reported_once_raises_no_alarm_and_recovers_after_a_quiet_window() {
        let mut s = Script::default();
        // A loose contact: a new level every tick for 5 s, ending released.
        for i in 0..=250 {
            s = s.at(TICK * i, i % 2 == 1, false, WELL);
        }
        let end = s.end();
        let s = s
            .at(end + Duration::from_secs(5), false, false, WELL)
            .at(end + Duration::from_secs(11), false, false, WELL)
            .hold(true, false, ms(100), TICK, WELL);
        let seen = s.run(&steady(), &quiet());
        assert_eq!(
            only(&seen),
            vec![
                Observed::InputFault {
                    input: BUTTON_SUBJECT,
                    fault: InputFault::Chattering,
                    value: 41.0
                },
                Observed::InputRecovered {
                    input: BUTTON_SUBJECT
                },
                Observed::ButtonPressed,
            ]
        );
    }

    #[test]
    fn a_chattering_mains_input_is_reported_once_and_not_as_power_events() {
        let mut s = Script::default();
        // A loose wire: a new level every 100 ms for 8 s, faster than the
        // 1 s debounce, so no power event; the 41st edge is chattering.
        for i in 0..80u32 {
            s = s.at(ms(100) * i, false, i % 2 == 1, WELL);
        }
        assert_eq!(
            only(&s.run(&steady(), &quiet())),
            vec![Observed::InputFault {
                input: MAINS_SUBJECT,
                fault: InputFault::Chattering,
                value: 41.0
            }]
        );
    }

    #[test]
    fn the_led_is_steady_when_well_slow_when_the_uplink_is_down_too_long_fast_when_the_journal_fails(
    ) {
        let down = GatewayState {
            uplink_connected: false,
            ..WELL
        };
        let failing = GatewayState {
            journal_failing: true,
            ..down
        };
        let s = Script::default()
            .at(Duration::ZERO, false, false, WELL)
            .at(Duration::from_secs(1), false, false, down)
            // Down 119 s, 120 s: still steady.
            .at(Duration::from_secs(120), false, false, down)
            .at(Duration::from_secs(121), false, false, down)
            // Down longer than 120 s: 1 s on (even seconds), 1 s off.
            .at(ms(121_500), false, false, down)
            .at(ms(122_000), false, false, down)
            .at(ms(122_900), false, false, down)
            .at(ms(123_000), false, false, down)
            // The journal fails: 125 ms on, 125 ms off.
            .at(ms(124_000), false, false, failing)
            .at(ms(124_100), false, false, failing)
            .at(ms(124_130), false, false, failing)
            .at(ms(124_250), false, false, failing)
            // All well again.
            .at(ms(130_500), false, false, WELL);
        let led = [
            Tx::set(State::High), // 0: well
            Tx::set(State::Low),  // 121.5: slow blink, off half
            Tx::set(State::High), // 122.0: on half
            Tx::set(State::Low),  // 123.0
            Tx::set(State::High), // 124.0: fast blink, on
            Tx::set(State::Low),  // 124.13: off
            Tx::set(State::High), // 124.25: on
        ];
        // 130.5: steady, already lit: nothing written.
        assert!(s.run(&led, &quiet()).is_empty());
    }

    #[test]
    fn a_device_alarm_sounds_the_buzzer_only_while_the_uplink_is_down_too_long() {
        let down = |alarms| GatewayState {
            uplink_connected: false,
            journal_failing: false,
            alarms_committed: alarms,
        };
        let s = Script::default()
            .at(Duration::ZERO, false, false, down(0))
            // An alarm 10 s into the outage: help is presumably on its way
            // as soon as the link is back; no buzzer.
            .at(Duration::from_secs(10), false, false, down(1))
            // Another after 130 s: three beeps every 2 s.
            .at(ms(130_000), false, false, down(2))
            .at(ms(130_100), false, false, down(2))
            .at(ms(130_300), false, false, down(2))
            .at(ms(130_450), false, false, down(2))
            .at(ms(130_700), false, false, down(2))
            .at(ms(130_900), false, false, down(2))
            // The uplink is back: quiet at once, LED steady.
            .at(
                ms(130_950),
                false,
                false,
                GatewayState {
                    uplink_connected: true,
                    ..down(2)
                },
            );
        let buzzer = [
            Tx::set(State::Low),  // 0
            Tx::set(State::High), // 130.0: beep
            Tx::set(State::Low),  // 130.3: pause
            Tx::set(State::High), // 130.45: beep
            Tx::set(State::Low),  // 130.7: pause
            Tx::set(State::High), // 130.9: beep
            Tx::set(State::Low),  // 130.95: uplink back
        ];
        // The LED is in the on half of the slow blink at 130.x: lit throughout.
        assert!(s.run(&steady(), &buzzer).is_empty());
    }

    #[test]
    fn the_local_button_while_the_uplink_is_down_too_long_raises_the_alarm_and_sounds_the_buzzer_for_30_s(
    ) {
        let down = GatewayState {
            uplink_connected: false,
            ..WELL
        };
        let s = Script::default()
            .at(Duration::ZERO, false, false, down)
            .at(ms(124_000), true, false, down)
            .at(ms(124_060), true, false, down)
            .at(ms(124_300), false, false, down)
            .at(ms(152_060), false, false, down)
            .at(ms(154_060), false, false, down);
        let buzzer = [
            Tx::set(State::Low),  // 0
            Tx::set(State::High), // 124.06: pressed, beep
            Tx::set(State::Low),  // 124.3: pause
            Tx::set(State::High), // 152.06: 28 s in, a beep
            Tx::set(State::Low),  // 154.06: 30 s: over
        ];
        let seen = Script::run(&s, &steady(), &buzzer);
        assert_eq!(only(&seen), vec![Observed::ButtonPressed]);
        assert_eq!(seen[0].0, ms(124_060));
    }

    #[test]
    fn an_unreadable_pin_skips_the_sample_without_panicking() {
        use embedded_hal_mock::eh1::MockError;
        let err = || Tx::get(State::High).with_error(MockError::Io(std::io::ErrorKind::Other));
        let button = Mock::new(&[err(), Tx::get(State::Low), Tx::get(State::Low)]);
        let mains = Mock::new(&[Tx::get(State::Low), err(), Tx::get(State::Low)]);
        let led = Mock::new(&[Tx::set(State::High), Tx::set(State::Low)]);
        let buzzer = Mock::new(&[Tx::set(State::Low)]);
        let t0 = Instant::now();
        let mut io = LocalIo::new(settings(), button, mains, led, buzzer, t0);
        assert!(io.tick(t0, &WELL).is_empty());
        assert!(io.tick(t0 + ms(20), &WELL).is_empty());
        assert_eq!(io.tick(t0 + ms(80), &WELL), vec![Observed::ButtonPressed]);
        assert_eq!(io.read_errors(), 2);
        let (mut b, mut m, mut l, mut z) = io.release();
        b.done();
        m.done();
        l.done();
        z.done();
    }
}
