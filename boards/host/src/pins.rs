//! Simulated input pins: an embedded-hal 1.0 [`InputPin`] whose level is
//! set from elsewhere (a test, a simulated resident, stdin), so a simulated
//! press goes through the firmware's debounce, pre-alarm and hold-off code
//! (`trygg_firmware::input`) exactly as a real one does.
//!
//! The pin and its [`PinDriver`] share one atomic level. The firmware
//! samples the pin when it polls (every 10 ms in [`crate::node`]): a level
//! held for less than a poll period may be missed, as on a real board.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use embedded_hal::digital::{ErrorType, InputPin};
use trygg_firmware::input::Polarity;

/// The input side, handed to `AlarmButton` or `BinarySensor`.
#[derive(Debug)]
pub struct SimPin {
    high: Arc<AtomicBool>,
}

/// The side that sets the level, in the sensor's own terms (active or
/// not): the polarity is applied here, as the wiring would.
#[derive(Clone, Debug)]
pub struct PinDriver {
    high: Arc<AtomicBool>,
    polarity: Polarity,
}

/// A simulated pin, inactive at the start (high for an active-low button
/// with its pull-up).
pub fn sim_pin(polarity: Polarity) -> (SimPin, PinDriver) {
    let high = Arc::new(AtomicBool::new(polarity == Polarity::ActiveLow));
    (SimPin { high: high.clone() }, PinDriver { high, polarity })
}

impl ErrorType for SimPin {
    type Error = Infallible;
}

impl InputPin for SimPin {
    fn is_high(&mut self) -> Result<bool, Infallible> {
        Ok(self.high.load(Ordering::Acquire))
    }

    fn is_low(&mut self) -> Result<bool, Infallible> {
        Ok(!self.high.load(Ordering::Acquire))
    }
}

impl PinDriver {
    /// Sets the input active (pressed, open, motion) or not.
    pub fn set(&self, active: bool) {
        let high = match self.polarity {
            Polarity::ActiveHigh => active,
            Polarity::ActiveLow => !active,
        };
        self.high.store(high, Ordering::Release);
    }

    pub fn is_active(&self) -> bool {
        let high = self.high.load(Ordering::Acquire);
        match self.polarity {
            Polarity::ActiveHigh => high,
            Polarity::ActiveLow => !high,
        }
    }

    /// The contact closes (button held down, door open, motion).
    pub fn press(&self) {
        self.set(true);
    }

    /// The contact opens again.
    pub fn release(&self) {
        self.set(false);
    }

    /// A press as a hand makes it: the contact bounces `bounces` times
    /// (1 ms apart) on the way in and out, and is held for `hold` between.
    /// Returns 100 ms after the release, so that the release has counted
    /// (past any debounce) before a next press: no hand is faster.
    pub async fn click(&self, hold: Duration, bounces: u32) {
        for _ in 0..bounces {
            self.press();
            tokio::time::sleep(Duration::from_millis(1)).await;
            self.release();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.press();
        tokio::time::sleep(hold).await;
        for _ in 0..bounces {
            self.release();
            tokio::time::sleep(Duration::from_millis(1)).await;
            self.press();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.release();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_active_low_pin_reads_high_until_pressed() {
        let (mut pin, driver) = sim_pin(Polarity::ActiveLow);
        assert!(pin.is_high().unwrap());
        driver.press();
        assert!(pin.is_low().unwrap());
        assert!(driver.is_active());
        driver.release();
        assert!(pin.is_high().unwrap());
    }

    #[test]
    fn an_active_high_pin_reads_low_until_active() {
        let (mut pin, driver) = sim_pin(Polarity::ActiveHigh);
        assert!(pin.is_low().unwrap());
        driver.set(true);
        assert!(pin.is_high().unwrap());
    }
}

#[cfg(test)]
mod button_tests {
    use super::*;
    use trygg_firmware::input::{Action, AlarmButton, ButtonSettings};

    #[tokio::test]
    async fn two_clicks_are_two_alarms() {
        let s = ButtonSettings {
            pre_alarm_ms: 0,
            ..ButtonSettings::button()
        };
        let (pin, driver) = sim_pin(s.polarity);
        let mut b = AlarmButton::new(pin, s);
        let start = std::time::Instant::now();
        let poller = tokio::spawn(async move {
            let mut got = vec![];
            for _ in 0..200 {
                if let Some(a) = b.poll(start.elapsed().as_millis() as u64).unwrap() {
                    got.push(a);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            got
        });
        driver.click(Duration::from_millis(200), 5).await;
        driver.click(Duration::from_millis(150), 3).await;
        let got = poller.await.unwrap();
        assert_eq!(got, vec![Action::Raise(s.kind), Action::Raise(s.kind)]);
    }
}
