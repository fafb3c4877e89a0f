//! An electronic medicine dispenser's events: a dose falls due, is taken
//! (or not within the confirmation window), the supply runs low and out,
//! the lid is opened.
//!
//! The schedule itself lives in the dispenser (or with the pharmacy); this
//! logic is told when a dose is due ([`Dispenser::dose_due`]) and watches
//! two inputs: the tray sensor (the dose was taken out) and the lid switch.

use embedded_hal::digital::InputPin;
use trygg_protocol::EventKind;

use crate::input::{Action, Debounced, Edge, Fault, Polarity};

/// Dispenser settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DispenserSettings {
    /// A due dose not taken within this time raises `dose_not_confirmed`.
    pub confirm_ms: u64,
    /// `refill_needed` when this many doses are left.
    pub refill_at: u16,
    pub polarity: Polarity,
    pub debounce_ms: u64,
}

impl Default for DispenserSettings {
    /// 30 minutes to take a dose; refill at 7 doses left.
    fn default() -> Self {
        DispenserSettings {
            confirm_ms: 30 * 60 * 1000,
            refill_at: 7,
            polarity: Polarity::ActiveHigh,
            debounce_ms: 50,
        }
    }
}

/// The dispenser's logic over its tray and lid inputs.
pub struct Dispenser<Tray, Lid> {
    tray: Debounced<Tray>,
    lid: Debounced<Lid>,
    settings: DispenserSettings,
    doses_left: u16,
    due_since_ms: Option<u64>,
}

impl<Tray: InputPin, Lid: InputPin<Error = Tray::Error>> Dispenser<Tray, Lid> {
    pub fn new(tray: Tray, lid: Lid, doses_left: u16, settings: DispenserSettings) -> Self {
        Dispenser {
            tray: Debounced::new(tray, settings.polarity, settings.debounce_ms),
            lid: Debounced::new(lid, settings.polarity, settings.debounce_ms),
            settings,
            doses_left,
            due_since_ms: None,
        }
    }

    pub fn doses_left(&self) -> u16 {
        self.doses_left
    }

    /// Refilled with `doses`.
    pub fn refilled(&mut self, doses: u16) {
        self.doses_left = doses;
    }

    /// A dose is due now. With none left, that is `dispenser_empty`.
    pub fn dose_due(&mut self, now_ms: u64) -> Option<Action> {
        if self.doses_left == 0 {
            return Some(Action::Raise(EventKind::DispenserEmpty));
        }
        self.due_since_ms = Some(now_ms);
        None
    }

    /// Polls both inputs; at most one action per poll (the rest come at the
    /// next).
    pub fn poll(&mut self, now_ms: u64) -> Result<Option<Action>, Tray::Error> {
        let (tray, tray_chatter) = self.tray.poll(now_ms)?;
        let (lid, lid_chatter) = self.lid.poll(now_ms)?;
        if tray_chatter || lid_chatter {
            return Ok(Some(Action::Fault(Fault::Chattering)));
        }
        if lid == Some(Edge::Active) {
            return Ok(Some(Action::Raise(EventKind::DispenserOpen)));
        }
        if tray == Some(Edge::Active) && self.due_since_ms.take().is_some() {
            self.doses_left = self.doses_left.saturating_sub(1);
            return Ok(Some(Action::Raise(EventKind::DoseDispensed)));
        }
        if let Some(since) = self.due_since_ms {
            if now_ms.saturating_sub(since) >= self.settings.confirm_ms {
                self.due_since_ms = None;
                return Ok(Some(Action::Raise(EventKind::DoseNotConfirmed)));
            }
        }
        Ok(None)
    }

    /// What the supply level calls for after a dose: `refill_needed` at the
    /// threshold, `dispenser_empty` at none. Call after `dose_dispensed`.
    pub fn supply_action(&self) -> Option<Action> {
        match self.doses_left {
            0 => Some(Action::Raise(EventKind::DispenserEmpty)),
            n if n == self.settings.refill_at => Some(Action::Raise(EventKind::RefillNeeded)),
            _ => None,
        }
    }

    pub fn release(self) -> (Tray, Lid) {
        (self.tray.release(), self.lid.release())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::digital::{Mock as PinMock, State, Transaction as T};

    fn pin(levels: &[State]) -> PinMock {
        PinMock::new(
            &levels
                .iter()
                .map(|l| T::get(*l))
                .collect::<std::vec::Vec<_>>(),
        )
    }

    fn settings() -> DispenserSettings {
        DispenserSettings {
            confirm_ms: 1_000,
            refill_at: 1,
            ..DispenserSettings::default()
        }
    }

    #[test]
    fn a_due_dose_taken_is_dispensed_and_the_supply_runs_low_then_out() {
        use State::{High as H, Low as L};
        // Tray: taken at 100 ms, back at 300, taken again at 600.
        let mut tray = std::vec![L; 10];
        tray.extend([H; 20]);
        tray.extend([L; 30]);
        tray.extend([H; 20]);
        let lid = std::vec![L; 80];
        let mut d = Dispenser::new(pin(&tray), pin(&lid), 2, settings());
        let mut got = std::vec::Vec::new();
        assert_eq!(d.dose_due(0), None);
        for i in 0..80u64 {
            if i == 40 {
                assert_eq!(d.dose_due(i * 10), None);
            }
            if let Some(a) = d.poll(i * 10).unwrap() {
                got.push(a);
                got.extend(d.supply_action());
            }
        }
        assert_eq!(
            got,
            [
                Action::Raise(EventKind::DoseDispensed),
                Action::Raise(EventKind::RefillNeeded),
                Action::Raise(EventKind::DoseDispensed),
                Action::Raise(EventKind::DispenserEmpty),
            ]
        );
        assert_eq!(
            d.dose_due(900),
            Some(Action::Raise(EventKind::DispenserEmpty))
        );
        let (t, l) = d.release();
        t.done_all(l);
    }

    #[test]
    fn a_dose_not_taken_in_time_is_not_confirmed_once_and_the_lid_is_reported() {
        use State::{High as H, Low as L};
        let tray = std::vec![L; 150];
        let mut lid = std::vec![L; 120];
        lid.extend([H; 30]);
        let mut d = Dispenser::new(pin(&tray), pin(&lid), 10, settings());
        d.dose_due(0);
        let got: std::vec::Vec<(u64, Action)> = (0..150u64)
            .filter_map(|i| d.poll(i * 10).unwrap().map(|a| (i * 10, a)))
            .collect();
        assert_eq!(
            got,
            [
                (1_000, Action::Raise(EventKind::DoseNotConfirmed)),
                (1_250, Action::Raise(EventKind::DispenserOpen)),
            ]
        );
        let (t, l) = d.release();
        t.done_all(l);
    }

    trait DoneAll {
        fn done_all(self, other: Self);
    }

    impl DoneAll for PinMock {
        fn done_all(mut self, mut other: Self) {
            self.done();
            other.done();
        }
    }
}
