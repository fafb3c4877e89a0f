//! Digital inputs: debouncing, the alarm button with its pre-alarm window,
//! and binary sensors (door contact, bed or chair pad, PIR motion, fall
//! input, smoke, water).
//!
//! Everything is polled: call `poll(now_ms)` every few milliseconds (10 ms
//! is plenty) with a monotonic clock. Pins are any embedded-hal 1.0
//! [`InputPin`]; the pin is handed back by `release`.
//!
//! A contact that bounces gives one edge, not three: a level counts only
//! once it has held for the debounce time. A pin that changes too often
//! (more than [`CHATTER_CHANGES`] raw changes within a second) is
//! *chattering*, a wiring or sensor fault: it is reported once as an
//! [`DeviceFault`](trygg_protocol::EventKind::DeviceFault) and its edges are
//! ignored until it has been quiet for [`CHATTER_QUIET_MS`]. A button held
//! far longer than anyone presses one is *stuck* (a pendant trapped under a
//! body is an alarm, raised at the long press; the stuck report is for the
//! technician).

use embedded_hal::digital::InputPin;
use trygg_protocol::EventKind;

/// Raw level changes within one second that make an input chattering.
pub const CHATTER_CHANGES: u16 = 20;
/// Quiet time after which a chattering input is trusted again.
pub const CHATTER_QUIET_MS: u64 = 10_000;

/// Which level means active.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Polarity {
    /// Active when the pin reads high.
    ActiveHigh,
    /// Active when the pin reads low (a contact to ground with a pull-up).
    ActiveLow,
}

/// A debounced level change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edge {
    Active,
    Inactive,
}

/// A fault found on an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Active far longer than it can be in use.
    Stuck,
    /// Changing too fast to be a real signal.
    Chattering,
}

/// A pin, debounced, watched for chatter.
pub struct Debounced<P> {
    pin: P,
    polarity: Polarity,
    debounce_ms: u64,
    stable: bool,
    raw: bool,
    raw_since_ms: u64,
    stable_since_ms: u64,
    window_start_ms: u64,
    changes: u16,
    chattering: bool,
    last_change_ms: u64,
}

impl<P: InputPin> Debounced<P> {
    /// Starts inactive: a level already active at start gives an
    /// [`Edge::Active`] after the debounce time.
    pub fn new(pin: P, polarity: Polarity, debounce_ms: u64) -> Self {
        Debounced {
            pin,
            polarity,
            debounce_ms,
            stable: false,
            raw: false,
            raw_since_ms: 0,
            stable_since_ms: 0,
            window_start_ms: 0,
            changes: 0,
            chattering: false,
            last_change_ms: 0,
        }
    }

    /// Samples the pin. Returns the debounced edge, if the level changed,
    /// and whether chattering just began.
    pub fn poll(&mut self, now_ms: u64) -> Result<(Option<Edge>, bool), P::Error> {
        let high = self.pin.is_high()?;
        let active = match self.polarity {
            Polarity::ActiveHigh => high,
            Polarity::ActiveLow => !high,
        };
        let mut began_chattering = false;
        if now_ms.saturating_sub(self.window_start_ms) >= 1000 {
            self.window_start_ms = now_ms;
            self.changes = 0;
        }
        if active != self.raw {
            self.raw = active;
            self.raw_since_ms = now_ms;
            self.last_change_ms = now_ms;
            self.changes = self.changes.saturating_add(1);
            if self.changes > CHATTER_CHANGES && !self.chattering {
                self.chattering = true;
                began_chattering = true;
            }
        }
        if self.chattering {
            if now_ms.saturating_sub(self.last_change_ms) >= CHATTER_QUIET_MS {
                self.chattering = false;
            } else {
                return Ok((None, began_chattering));
            }
        }
        if self.raw != self.stable && now_ms.saturating_sub(self.raw_since_ms) >= self.debounce_ms {
            self.stable = self.raw;
            self.stable_since_ms = now_ms;
            let edge = if self.stable {
                Edge::Active
            } else {
                Edge::Inactive
            };
            return Ok((Some(edge), began_chattering));
        }
        Ok((None, began_chattering))
    }

    /// The debounced level.
    pub fn is_active(&self) -> bool {
        self.stable
    }

    /// Since when the debounced level has held.
    pub fn since_ms(&self) -> u64 {
        self.stable_since_ms
    }

    pub fn is_chattering(&self) -> bool {
        self.chattering
    }

    /// Gives the pin back.
    pub fn release(self) -> P {
        self.pin
    }
}

/// What an input asks the device to do.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Action {
    /// Raise this event.
    Raise(EventKind),
    /// The pre-alarm window began: beep or blink until `until_ms`; a second
    /// press cancels.
    PreAlarm { until_ms: u64 },
    /// The user cancelled in the pre-alarm window: nothing is sent.
    Cancelled,
    /// Report a fault on this input (as a `device_fault` event).
    Fault(Fault),
}

/// Alarm button or pull cord settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ButtonSettings {
    /// What a press raises: `ButtonPress` or `PullCord`.
    pub kind: EventKind,
    pub polarity: Polarity,
    pub debounce_ms: u64,
    /// The window after a short press in which a second press cancels
    /// (national practice: about 10 s). 0 raises the alarm at the press.
    pub pre_alarm_ms: u64,
    /// A press held this long raises the alarm at once, pre-alarm or not.
    pub long_press_ms: u64,
    /// Held this long, the button is stuck.
    pub stuck_ms: u64,
}

impl ButtonSettings {
    /// A pendant or wall button: 30 ms debounce, 10 s pre-alarm, 2 s long
    /// press, stuck after a minute.
    pub const fn button() -> Self {
        ButtonSettings {
            kind: EventKind::ButtonPress,
            polarity: Polarity::ActiveLow,
            debounce_ms: 30,
            pre_alarm_ms: 10_000,
            long_press_ms: 2_000,
            stuck_ms: 60_000,
        }
    }

    /// A pull cord: as a button, raising `PullCord`.
    pub const fn pull_cord() -> Self {
        ButtonSettings {
            kind: EventKind::PullCord,
            ..Self::button()
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ButtonState {
    Idle,
    /// Pressed; not yet an alarm.
    Held {
        since_ms: u64,
    },
    /// Released after a short press; the alarm goes at `until_ms`.
    PreAlarm {
        until_ms: u64,
    },
    /// Pressed again to cancel, or held after the alarm went: wait for the
    /// release.
    WaitRelease {
        since_ms: u64,
    },
}

/// An alarm button or pull cord.
pub struct AlarmButton<P> {
    input: Debounced<P>,
    settings: ButtonSettings,
    state: ButtonState,
    stuck_reported: bool,
}

impl<P: InputPin> AlarmButton<P> {
    pub fn new(pin: P, settings: ButtonSettings) -> Self {
        AlarmButton {
            input: Debounced::new(pin, settings.polarity, settings.debounce_ms),
            settings,
            state: ButtonState::Idle,
            stuck_reported: false,
        }
    }

    /// Changes the pre-alarm window (from the device's configuration).
    pub fn set_pre_alarm_ms(&mut self, ms: u64) {
        self.settings.pre_alarm_ms = ms;
    }

    pub fn settings(&self) -> &ButtonSettings {
        &self.settings
    }

    /// Whether the pre-alarm window is open (the device should beep).
    pub fn in_pre_alarm(&self) -> bool {
        matches!(self.state, ButtonState::PreAlarm { .. })
    }

    pub fn poll(&mut self, now_ms: u64) -> Result<Option<Action>, P::Error> {
        let (edge, chatter) = self.input.poll(now_ms)?;
        if chatter {
            return Ok(Some(Action::Fault(Fault::Chattering)));
        }
        let s = self.settings;
        let (next, action) = match (self.state, edge) {
            (ButtonState::Idle, Some(Edge::Active)) if s.pre_alarm_ms == 0 => (
                ButtonState::WaitRelease { since_ms: now_ms },
                Some(Action::Raise(s.kind)),
            ),
            (ButtonState::Idle, Some(Edge::Active)) => {
                (ButtonState::Held { since_ms: now_ms }, None)
            }
            (ButtonState::Held { .. }, Some(Edge::Inactive)) => {
                let until_ms = now_ms + s.pre_alarm_ms;
                (
                    ButtonState::PreAlarm { until_ms },
                    Some(Action::PreAlarm { until_ms }),
                )
            }
            (ButtonState::Held { since_ms }, None) if now_ms - since_ms >= s.long_press_ms => (
                ButtonState::WaitRelease { since_ms },
                Some(Action::Raise(s.kind)),
            ),
            (ButtonState::PreAlarm { .. }, Some(Edge::Active)) => (
                ButtonState::WaitRelease { since_ms: now_ms },
                Some(Action::Cancelled),
            ),
            (ButtonState::PreAlarm { until_ms }, None) if now_ms >= until_ms => {
                (ButtonState::Idle, Some(Action::Raise(s.kind)))
            }
            (ButtonState::WaitRelease { .. }, Some(Edge::Inactive)) => {
                self.stuck_reported = false;
                (ButtonState::Idle, None)
            }
            (ButtonState::WaitRelease { since_ms }, None)
                if !self.stuck_reported && now_ms - since_ms >= s.stuck_ms =>
            {
                self.stuck_reported = true;
                (self.state, Some(Action::Fault(Fault::Stuck)))
            }
            (state, _) => (state, None),
        };
        self.state = next;
        Ok(action)
    }

    pub fn release(self) -> P {
        self.input.release()
    }
}

/// What a binary sensor is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SensorKind {
    /// Door contact: opened / closed.
    Door,
    /// Bed or chair pad: occupied / vacated.
    BedPad,
    /// PIR motion: motion, at most one per hold-off.
    Motion,
    /// Fall detector output.
    Fall,
    /// Smoke detector relay.
    Smoke,
    /// Water-leak probe.
    Water,
}

impl SensorKind {
    /// The events of the active and the inactive edge.
    pub fn events(self) -> (Option<EventKind>, Option<EventKind>) {
        match self {
            SensorKind::Door => (Some(EventKind::DoorOpened), Some(EventKind::DoorClosed)),
            SensorKind::BedPad => (Some(EventKind::BedOccupied), Some(EventKind::BedVacated)),
            SensorKind::Motion => (Some(EventKind::Motion), None),
            SensorKind::Fall => (Some(EventKind::Fall), None),
            SensorKind::Smoke => (Some(EventKind::SmokeFire), None),
            SensorKind::Water => (Some(EventKind::Water), None),
        }
    }
}

/// A binary sensor's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SensorSettings {
    pub kind: SensorKind,
    pub polarity: Polarity,
    pub debounce_ms: u64,
    /// After an active event, further active edges within this time raise
    /// nothing (a PIR sensor fires on every movement).
    pub hold_off_ms: u64,
}

impl SensorSettings {
    /// Sensible defaults by kind: a PIR holds off for 30 s, a bed pad
    /// debounces for 2 s (a turn in bed is not leaving it).
    pub const fn for_kind(kind: SensorKind) -> Self {
        let (debounce_ms, hold_off_ms) = match kind {
            SensorKind::Motion => (50, 30_000),
            SensorKind::BedPad => (2_000, 0),
            SensorKind::Door => (50, 0),
            SensorKind::Fall | SensorKind::Smoke | SensorKind::Water => (50, 0),
        };
        SensorSettings {
            kind,
            polarity: Polarity::ActiveHigh,
            debounce_ms,
            hold_off_ms,
        }
    }
}

/// A sensor on one input pin.
pub struct BinarySensor<P> {
    input: Debounced<P>,
    settings: SensorSettings,
    last_active_ms: Option<u64>,
}

impl<P: InputPin> BinarySensor<P> {
    pub fn new(pin: P, settings: SensorSettings) -> Self {
        BinarySensor {
            input: Debounced::new(pin, settings.polarity, settings.debounce_ms),
            settings,
            last_active_ms: None,
        }
    }

    pub fn poll(&mut self, now_ms: u64) -> Result<Option<Action>, P::Error> {
        let (edge, chatter) = self.input.poll(now_ms)?;
        if chatter {
            return Ok(Some(Action::Fault(Fault::Chattering)));
        }
        let (on, off) = self.settings.kind.events();
        Ok(match edge {
            Some(Edge::Active) => {
                let held_off = self
                    .last_active_ms
                    .is_some_and(|t| now_ms.saturating_sub(t) < self.settings.hold_off_ms);
                if held_off {
                    None
                } else {
                    self.last_active_ms = Some(now_ms);
                    on.map(Action::Raise)
                }
            }
            Some(Edge::Inactive) => off.map(Action::Raise),
            None => None,
        })
    }

    pub fn is_active(&self) -> bool {
        self.input.is_active()
    }

    pub fn release(self) -> P {
        self.input.release()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::digital::{Mock as PinMock, State, Transaction as T};

    /// A pin read at 10 ms steps: `levels[i]` at `i * 10` ms.
    fn pin(levels: &[State]) -> PinMock {
        PinMock::new(
            &levels
                .iter()
                .map(|l| T::get(*l))
                .collect::<std::vec::Vec<_>>(),
        )
    }

    fn run<F: FnMut(u64) -> Option<Action>>(n: usize, mut f: F) -> std::vec::Vec<(u64, Action)> {
        (0..n as u64)
            .filter_map(|i| f(i * 10).map(|a| (i * 10, a)))
            .collect()
    }

    use State::{High as H, Low as L};

    /// The actions of `n` polls, without their times.
    fn actions<F: FnMut(u64) -> Option<Action>>(n: usize, f: F) -> std::vec::Vec<Action> {
        run(n, f).into_iter().map(|(_, a)| a).collect()
    }

    fn repeat(level: State, n: usize) -> std::vec::Vec<State> {
        std::vec![level; n]
    }

    #[test]
    fn a_bouncing_press_with_no_pre_alarm_raises_one_alarm() {
        // Active low: bounces L H L H then held low, then released.
        let mut levels = std::vec![H, L, H, L, H];
        levels.extend(repeat(L, 10));
        levels.extend([H, L, H]);
        levels.extend(repeat(H, 10));
        let n = levels.len();
        let mut b = AlarmButton::new(
            pin(&levels),
            ButtonSettings {
                pre_alarm_ms: 0,
                ..ButtonSettings::button()
            },
        );
        let got = run(n, |t| b.poll(t).unwrap());
        assert_eq!(
            got.iter().map(|(_, a)| *a).collect::<std::vec::Vec<_>>(),
            [Action::Raise(EventKind::ButtonPress)]
        );
        b.release().done();
    }

    #[test]
    fn a_short_press_opens_the_pre_alarm_window_and_the_alarm_goes_when_it_ends() {
        let mut levels = repeat(L, 10);
        levels.extend(repeat(H, 120));
        let n = levels.len();
        let mut b = AlarmButton::new(
            pin(&levels),
            ButtonSettings {
                pre_alarm_ms: 1_000,
                ..ButtonSettings::button()
            },
        );
        let got = run(n, |t| b.poll(t).unwrap());
        assert_eq!(got.len(), 2, "{got:?}");
        let (t0, Action::PreAlarm { until_ms }) = got[0] else {
            panic!("{got:?}")
        };
        assert_eq!(until_ms, t0 + 1_000);
        assert_eq!(got[1], (until_ms, Action::Raise(EventKind::ButtonPress)));
        b.release().done();
    }

    #[test]
    fn a_second_press_in_the_pre_alarm_window_cancels() {
        let mut levels = repeat(L, 10);
        levels.extend(repeat(H, 20));
        levels.extend(repeat(L, 10));
        levels.extend(repeat(H, 150));
        let n = levels.len();
        let mut b = AlarmButton::new(
            pin(&levels),
            ButtonSettings {
                pre_alarm_ms: 1_000,
                ..ButtonSettings::button()
            },
        );
        let got = actions(n, |t| b.poll(t).unwrap());
        assert!(matches!(got[0], Action::PreAlarm { .. }));
        assert_eq!(&got[1..], &[Action::Cancelled]);
        b.release().done();
    }

    #[test]
    fn a_long_press_raises_the_alarm_at_once_without_waiting_for_the_window() {
        let mut levels = repeat(L, 300);
        levels.extend(repeat(H, 5));
        let n = levels.len();
        let mut b = AlarmButton::new(pin(&levels), ButtonSettings::pull_cord());
        let got = run(n, |t| b.poll(t).unwrap());
        assert_eq!(got.len(), 1, "{got:?}");
        // Debounce 30 ms, then 2 s held.
        assert_eq!(got[0], (2_030, Action::Raise(EventKind::PullCord)));
        b.release().done();
    }

    #[test]
    fn a_stuck_button_raises_its_alarm_once_and_one_fault() {
        let levels = repeat(L, 700);
        let mut b = AlarmButton::new(
            pin(&levels),
            ButtonSettings {
                stuck_ms: 5_000,
                ..ButtonSettings::button()
            },
        );
        let got = actions(700, |t| b.poll(t).unwrap());
        assert_eq!(
            got,
            [
                Action::Raise(EventKind::ButtonPress),
                Action::Fault(Fault::Stuck)
            ]
        );
        b.release().done();
    }

    #[test]
    fn a_chattering_contact_is_one_fault_and_no_events_until_it_is_quiet() {
        let mut levels: std::vec::Vec<State> =
            (0..100).map(|i| if i % 2 == 0 { H } else { L }).collect();
        levels.extend(repeat(L, 1_100));
        levels.extend(repeat(H, 10));
        let n = levels.len();
        let mut door = BinarySensor::new(pin(&levels), SensorSettings::for_kind(SensorKind::Door));
        let got = actions(n, |t| door.poll(t).unwrap());
        // Opened (H) during the first changes, then chattering: one fault.
        // Quiet (low = closed) for 11 s: trusted again, so opening it
        // counts.
        assert!(got.contains(&Action::Fault(Fault::Chattering)), "{got:?}");
        assert_eq!(
            got.iter().filter(|a| matches!(a, Action::Fault(_))).count(),
            1
        );
        assert_eq!(
            got.last(),
            Some(&Action::Raise(EventKind::DoorOpened)),
            "{got:?}"
        );
        door.release().done();
    }

    #[test]
    fn a_door_contact_reports_opened_and_closed() {
        let mut levels = repeat(L, 5);
        levels.extend(repeat(H, 10));
        levels.extend(repeat(L, 10));
        let n = levels.len();
        let mut door = BinarySensor::new(pin(&levels), SensorSettings::for_kind(SensorKind::Door));
        let got = actions(n, |t| door.poll(t).unwrap());
        assert_eq!(
            got,
            [
                Action::Raise(EventKind::DoorOpened),
                Action::Raise(EventKind::DoorClosed)
            ]
        );
        door.release().done();
    }

    #[test]
    fn a_pir_sensor_holds_off_repeated_motion() {
        let mut levels = std::vec::Vec::new();
        for _ in 0..5 {
            levels.extend(repeat(H, 10));
            levels.extend(repeat(L, 10));
        }
        let n = levels.len();
        let mut pir = BinarySensor::new(
            pin(&levels),
            SensorSettings {
                hold_off_ms: 500,
                ..SensorSettings::for_kind(SensorKind::Motion)
            },
        );
        let got = run(n, |t| pir.poll(t).unwrap());
        // Active edges at 50, 250, 450, 650, 850 ms: 50 and 650 get through.
        assert_eq!(
            got.iter().map(|(t, _)| *t).collect::<std::vec::Vec<_>>(),
            [50, 650]
        );
        pir.release().done();
    }

    #[test]
    fn bed_pad_fall_smoke_and_water_raise_their_kinds() {
        for (kind, on, off) in [
            (
                SensorKind::BedPad,
                EventKind::BedOccupied,
                Some(EventKind::BedVacated),
            ),
            (SensorKind::Fall, EventKind::Fall, None),
            (SensorKind::Smoke, EventKind::SmokeFire, None),
            (SensorKind::Water, EventKind::Water, None),
        ] {
            let mut levels = repeat(H, 210);
            levels.extend(repeat(L, 210));
            let n = levels.len();
            let mut s = BinarySensor::new(pin(&levels), SensorSettings::for_kind(kind));
            let got = actions(n, |t| s.poll(t).unwrap());
            let mut want = std::vec![Action::Raise(on)];
            want.extend(off.map(Action::Raise));
            assert_eq!(got, want, "{kind:?}");
            s.release().done();
        }
    }
}
