//! The Raspberry Pi gateway's own I/O: which pin is what, and opening them.
//!
//! Four signals, by BCM GPIO number (physical header pin in brackets; the
//! wiring is in `docs/boards.md`):
//!
//! | signal      | BCM | pin | direction | active | pull      |
//! |-------------|-----|-----|-----------|--------|-----------|
//! | alarm button|  17 |  11 | input     | low    | up (to 3.3 V); the button shorts to GND (pin 9) |
//! | status LED  |  27 |  13 | output    | high   | - (LED + 330 Ω to GND, pin 14) |
//! | buzzer      |  22 |  15 | output    | high   | - (NPN transistor driving a 5 V active buzzer) |
//! | mains fail  |   6 |  31 | input     | configurable, high by default | down when active high, up when active low |
//!
//! [`open`] hands back embedded-hal 1.0 pins ([`GatewayPins`]); the logic
//! that uses them (`trygg_gateway::local_io`) knows nothing of rpi-pal and
//! is tested with embedded-hal-mock. Where there is no Raspberry Pi GPIO
//! (a PC, CI, qemu) [`open`] returns [`OpenError::NoGpio`] with a message
//! meant to be logged as it is; it never panics.

#![deny(unsafe_code)]

/// The local alarm button: BCM 17, header pin 11. To GND, internal pull-up:
/// pressed reads low.
pub const BUTTON_BCM: u8 = 17;
/// The status LED: BCM 27, header pin 13. High lights it.
pub const LED_BCM: u8 = 27;
/// The buzzer (through a transistor): BCM 22, header pin 15. High sounds it.
pub const BUZZER_BCM: u8 = 22;
/// The UPS board's mains-fail signal: BCM 6, header pin 31.
pub const MAINS_FAIL_BCM: u8 = 6;

/// The header pin (1-40) of a BCM GPIO number, for messages and docs.
pub const fn physical_pin(bcm: u8) -> Option<u8> {
    Some(match bcm {
        2 => 3,
        3 => 5,
        4 => 7,
        17 => 11,
        27 => 13,
        22 => 15,
        10 => 19,
        9 => 21,
        11 => 23,
        0 => 27,
        5 => 29,
        6 => 31,
        13 => 33,
        19 => 35,
        26 => 37,
        14 => 8,
        15 => 10,
        18 => 12,
        23 => 16,
        24 => 18,
        25 => 22,
        8 => 24,
        7 => 26,
        1 => 28,
        12 => 32,
        16 => 36,
        20 => 38,
        21 => 40,
        _ => return None,
    })
}

/// The highest BCM number on the 40-pin header.
pub const MAX_BCM: u8 = 27;

/// Which BCM pin is which signal; [`PinMap::default`] is the documented map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinMap {
    pub button: u8,
    pub led: u8,
    pub buzzer: u8,
    pub mains_fail: u8,
    /// The mains-fail signal is high while mains is out (pulled down), or
    /// low (pulled up: an open-collector or relay output to GND).
    pub mains_fail_active_high: bool,
}

impl Default for PinMap {
    fn default() -> Self {
        PinMap {
            button: BUTTON_BCM,
            led: LED_BCM,
            buzzer: BUZZER_BCM,
            mains_fail: MAINS_FAIL_BCM,
            mains_fail_active_high: true,
        }
    }
}

impl PinMap {
    /// The first problem with this map: a pin off the header, or one pin
    /// used twice. (`field`, problem) for the config's error.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let pins = [
            ("button", self.button),
            ("led", self.led),
            ("buzzer", self.buzzer),
            ("mains_fail", self.mains_fail),
        ];
        for (i, (name, pin)) in pins.iter().enumerate() {
            if *pin > MAX_BCM {
                return Err((
                    name,
                    format!("BCM {pin} is not on the 40-pin header (0-27)"),
                ));
            }
            if let Some((other, _)) = pins[..i].iter().find(|(_, p)| p == pin) {
                return Err((name, format!("BCM {pin} is already the {other} pin")));
            }
        }
        Ok(())
    }
}

/// Why the gateway's pins could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Not a Raspberry Pi, or no GPIO device (a PC, CI, qemu, a container
    /// without /dev/gpiomem): final on this machine, nothing to retry.
    #[error(
        "no Raspberry Pi GPIO here ({0}): local button, LED, buzzer and mains-fail input are off"
    )]
    NoGpio(String),
    /// A Pi, but the GPIO device may not be opened by this user.
    #[error("Raspberry Pi GPIO present but not usable ({0}): run as a user in the `gpio` group; local button, LED, buzzer and mains-fail input are off")]
    PermissionDenied(String),
    /// A pin is taken by another program or is not on this board.
    #[error("GPIO pin {signal} (BCM {bcm}): {problem}")]
    Pin {
        signal: &'static str,
        bcm: u8,
        problem: String,
    },
}

#[cfg(target_os = "linux")]
mod pi {
    use super::{OpenError, PinMap};
    use rpi_pal::gpio::{Error, Gpio};

    /// An input pin (button, mains fail): embedded-hal 1.0 `InputPin`.
    pub type Input = rpi_pal::gpio::InputPin;
    /// An output pin (LED, buzzer): embedded-hal 1.0 `OutputPin`.
    pub type Output = rpi_pal::gpio::OutputPin;

    /// The device files rpi-pal maps: BCM283x/2711 (`/dev/gpiomem`) and
    /// the Pi 5's RP1 (`/dev/gpiomem0`), besides the character device.
    const DEVICES: [&str; 3] = ["/dev/gpiomem", "/dev/gpiomem0", "/dev/gpiochip0"];

    pub fn open(map: &PinMap) -> Result<super::GatewayPins, OpenError> {
        // Look before rpi-pal does: where none of its devices exists, say
        // so in plain words (and never fall back to mapping /dev/mem).
        if !DEVICES.iter().any(|d| std::path::Path::new(d).exists()) {
            return Err(OpenError::NoGpio(format!("{} missing", DEVICES.join(", "))));
        }
        let gpio = Gpio::new().map_err(|e| match e {
            Error::UnknownModel => OpenError::NoGpio(
                "this is not a Raspberry Pi model rpi-pal knows (/proc/device-tree/compatible)"
                    .into(),
            ),
            Error::PermissionDenied(path) => OpenError::PermissionDenied(path),
            other => OpenError::NoGpio(other.to_string()),
        })?;
        let pin = |signal: &'static str, bcm: u8| {
            gpio.get(bcm).map_err(|e| OpenError::Pin {
                signal,
                bcm,
                problem: e.to_string(),
            })
        };
        let button = pin("button", map.button)?.into_input_pullup();
        let mains = pin("mains_fail", map.mains_fail)?;
        let mains_fail = if map.mains_fail_active_high {
            mains.into_input_pulldown()
        } else {
            mains.into_input_pullup()
        };
        // Outputs start low (LED dark, buzzer quiet) and fall back to
        // inputs when dropped (rpi-pal's reset on drop), so a stopped
        // gateway leaves neither on.
        let led = pin("led", map.led)?.into_output_low();
        let buzzer = pin("buzzer", map.buzzer)?.into_output_low();
        Ok(super::GatewayPins {
            button,
            mains_fail,
            led,
            buzzer,
        })
    }
}

#[cfg(not(target_os = "linux"))]
mod pi {
    //! No rpi-pal off Linux: pins that cannot exist, and `open` says so.
    use super::{OpenError, PinMap};
    use core::convert::Infallible;

    #[derive(Debug)]
    pub enum Input {}
    #[derive(Debug)]
    pub enum Output {}

    impl embedded_hal::digital::ErrorType for Input {
        type Error = Infallible;
    }
    impl embedded_hal::digital::InputPin for Input {
        fn is_high(&mut self) -> Result<bool, Infallible> {
            match *self {}
        }
        fn is_low(&mut self) -> Result<bool, Infallible> {
            match *self {}
        }
    }
    impl embedded_hal::digital::ErrorType for Output {
        type Error = Infallible;
    }
    impl embedded_hal::digital::OutputPin for Output {
        fn set_low(&mut self) -> Result<(), Infallible> {
            match *self {}
        }
        fn set_high(&mut self) -> Result<(), Infallible> {
            match *self {}
        }
    }

    pub fn open(_map: &PinMap) -> Result<super::GatewayPins, OpenError> {
        Err(OpenError::NoGpio("not Linux".into()))
    }
}

pub use pi::{Input, Output};

/// The gateway's four pins, opened and set up (pulls, outputs low).
#[derive(Debug)]
pub struct GatewayPins {
    pub button: Input,
    pub mains_fail: Input,
    pub led: Output,
    pub buzzer: Output,
}

/// Opens the Pi's GPIO and sets up the four pins of `map`. On a machine
/// without Raspberry Pi GPIO: [`OpenError::NoGpio`], whose message says
/// what is missing and what is off.
pub fn open(map: &PinMap) -> Result<GatewayPins, OpenError> {
    map.check().map_err(|(signal, problem)| OpenError::Pin {
        signal,
        bcm: match signal {
            "button" => map.button,
            "led" => map.led,
            "buzzer" => map.buzzer,
            _ => map.mains_fail,
        },
        problem,
    })?;
    pi::open(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_map_is_on_the_header_and_uses_each_pin_once() {
        let map = PinMap::default();
        assert_eq!(map.check(), Ok(()));
        assert_eq!(physical_pin(map.button), Some(11));
        assert_eq!(physical_pin(map.led), Some(13));
        assert_eq!(physical_pin(map.buzzer), Some(15));
        assert_eq!(physical_pin(map.mains_fail), Some(31));
    }

    #[test]
    fn a_pin_used_twice_or_off_the_header_is_named() {
        let twice = PinMap {
            buzzer: LED_BCM,
            ..PinMap::default()
        };
        let (field, problem) = twice.check().unwrap_err();
        assert_eq!(field, "buzzer");
        assert!(problem.contains("led"), "{problem}");
        let off = PinMap {
            button: 40,
            ..PinMap::default()
        };
        assert_eq!(off.check().unwrap_err().0, "button");
    }

    #[test]
    fn every_header_gpio_has_a_physical_pin() {
        for bcm in 0..=MAX_BCM {
            assert!(physical_pin(bcm).is_some(), "BCM {bcm}");
        }
        assert_eq!(physical_pin(28), None);
    }

    /// This machine (a PC or CI) has no Raspberry Pi GPIO: opening says so
    /// clearly instead of panicking. Skipped on a real Pi.
    #[test]
    fn opening_without_raspberry_pi_gpio_says_what_is_off() {
        if std::path::Path::new("/dev/gpiomem").exists()
            || std::path::Path::new("/dev/gpiomem0").exists()
        {
            return;
        }
        let err = open(&PinMap::default()).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, OpenError::NoGpio(_)), "{text}");
        assert!(text.starts_with("no Raspberry Pi GPIO here ("), "{text}");
        assert!(
            text.ends_with("local button, LED, buzzer and mains-fail input are off"),
            "{text}"
        );
    }
}
