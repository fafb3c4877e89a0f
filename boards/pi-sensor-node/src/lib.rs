//! A Raspberry Pi sensor node: a Pi Zero (or any Pi) with a PIR motion
//! sensor, a door contact and optionally an alarm button, running Trygg's
//! firmware logic (`trygg-firmware`: debounce, hold-off, the queue kept
//! until receipted, sequence numbers) and talking MQTT to the gateway.
//!
//! ## Pin map (default `--pins pir=17,door=27`; wiring in `docs/boards.md`)
//!
//! | input        | BCM | header pin | active | pull (internal) | event |
//! |--------------|-----|------------|--------|-----------------|-------|
//! | PIR motion   |  17 | 11         | high   | down            | `motion` (at most one per 30 s) |
//! | door contact |  27 | 13         | high (door open) | up    | `door_opened` / `door_closed` |
//! | alarm button |  22 | 15 (only with `button=22`) | low | up  | `button_press` (10 s pre-alarm, a second press cancels; held 2 s: at once) |
//!
//! ## What is durable when
//!
//! The queue and the sequence counter live in a flash file (`--flash`,
//! [`trygg_board_host::FileFlash`], fsync per write): an event is on disk
//! before it is first sent and leaves only on the gateway's receipt. A node
//! killed or unplugged re-sends, after its restart, every event that had no
//! receipt, with its original sequence number (the gateway answers
//! `duplicate` if it had it).
//!
//! ## Without a Pi
//!
//! `--simulated` replaces the GPIO with simulated pins driven by lines on
//! stdin (`pir on`, `door open`, `button press`, `help`): for a developer
//! and for the aarch64 smoke test under qemu. Without `--simulated`, a
//! machine with no Raspberry Pi GPIO gets [`NodeError::NoGpio`], a message
//! that says what to do, never a panic.

use std::future::Future;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use trygg_board_host::node::unix_ms;
use trygg_board_host::{
    sim_pin, ButtonInput, FileFlash, FileFlashError, Happened, HostDevice, Input, LinkOptions,
    PinDriver, SensorInput, Source, POLL_EVERY,
};
use trygg_firmware::input::{
    AlarmButton, BinarySensor, ButtonSettings, Polarity, SensorKind, SensorSettings,
};
use trygg_firmware::DeviceSettings;

/// Events the node keeps until receipted. A node that cannot reach its
/// gateway for long drops the oldest telemetry first (the firmware's rule),
/// never an alarm.
pub const QUEUE: usize = 64;
/// Flash sector: 128 records of 64 bytes, twice the queue.
pub const SECTOR: usize = 8192;
/// Sectors in the flash file (64 KiB).
pub const SECTORS: usize = 8;

/// Which input is on which BCM GPIO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinMap {
    pub pir: Option<u8>,
    pub door: Option<u8>,
    pub button: Option<u8>,
}

impl Default for PinMap {
    fn default() -> Self {
        PinMap {
            pir: Some(17),
            door: Some(27),
            button: None,
        }
    }
}

impl FromStr for PinMap {
    type Err = String;

    /// `pir=17,door=27,button=22`: any of the three, each once, on BCM
    /// 2 to 27 (0 and 1 are the HAT EEPROM's).
    fn from_str(s: &str) -> Result<PinMap, String> {
        let mut map = PinMap {
            pir: None,
            door: None,
            button: None,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, bcm) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}`: write INPUT=BCM, e.g. pir=17"))?;
            let bcm: u8 = bcm
                .trim()
                .parse()
                .ok()
                .filter(|b| (2..=27).contains(b))
                .ok_or_else(|| format!("`{part}`: the BCM GPIO number must be 2 to 27"))?;
            let slot = match name.trim() {
                "pir" => &mut map.pir,
                "door" => &mut map.door,
                "button" => &mut map.button,
                other => {
                    return Err(format!(
                        "`{other}` is not an input of the node: pir, door or button"
                    ))
                }
            };
            if slot.replace(bcm).is_some() {
                return Err(format!("`{}` is given twice", name.trim()));
            }
        }
        let used: Vec<u8> = map.inputs().into_iter().map(|(_, b)| b).collect();
        if used.is_empty() {
            return Err("no inputs: give at least one of pir=, door=, button=".into());
        }
        if (1..used.len()).any(|i| used[..i].contains(&used[i])) {
            return Err(format!("two inputs on one pin in `{s}`"));
        }
        Ok(map)
    }
}

impl std::fmt::Display for PinMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .inputs()
            .into_iter()
            .map(|(n, b)| format!("{n}={b}"))
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl PinMap {
    /// The inputs in use, by name.
    pub fn inputs(&self) -> Vec<(&'static str, u8)> {
        [
            ("pir", self.pir),
            ("door", self.door),
            ("button", self.button),
        ]
        .into_iter()
        .filter_map(|(n, b)| b.map(|b| (n, b)))
        .collect()
    }
}

/// Where the hardware layer comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hardware {
    /// The Pi's GPIO through rpi-pal.
    Gpio,
    /// Simulated pins, driven by lines on stdin.
    Simulated,
}

/// How the node runs.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Its id in the gateway's device register.
    pub device_id: String,
    pub broker_host: String,
    pub broker_port: u16,
    /// Its key (MQTT password), as paired with the gateway
    /// (`trygg-gateway device add ID --key KEY`).
    pub key: Option<String>,
    pub pins: PinMap,
    pub flash: PathBuf,
    pub hardware: Hardware,
    pub settings: DeviceSettings,
}

/// Why the node could not run.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Final on this machine: not a Pi, or no GPIO device.
    #[error("no Raspberry Pi GPIO found ({0}): run on a Pi, or use --simulated to drive the pins from stdin")]
    NoGpio(String),
    /// Final until fixed: the user may not open the GPIO.
    #[error(
        "no permission to open the GPIO ({0}): add the user to the `gpio` group, or run as root"
    )]
    GpioPermission(String),
    /// A pin is in use by another program or not on this board.
    #[error("GPIO pin {input} (BCM {bcm}): {problem}")]
    Pin {
        input: &'static str,
        bcm: u8,
        problem: String,
    },
    /// The flash file cannot be used; retryable if the disk was the cause.
    #[error("flash file {path}: {source}")]
    Flash {
        path: PathBuf,
        source: FileFlashError,
    },
    #[error(
        "bad --broker `{0}`: write mqtt://HOST:PORT (plain MQTT to the gateway's device broker)"
    )]
    BadBroker(String),
    #[error("bad --device-id `{0}`: 1-64 of A-Z a-z 0-9 _ -")]
    BadDeviceId(String),
}

/// `mqtt://host:port` (port 1883 if left out).
pub fn parse_broker(url: &str) -> Result<(String, u16), NodeError> {
    let bad = || NodeError::BadBroker(url.to_string());
    let rest = url.strip_prefix("mqtt://").ok_or_else(bad)?;
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad())?),
        None => (rest, 1883),
    };
    if host.is_empty() || host.contains('/') {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// The inputs as the firmware sees them, and for simulated pins their
/// drivers by input name.
type Inputs = (Vec<Box<dyn Input>>, Vec<(&'static str, PinDriver)>);

fn button_settings() -> ButtonSettings {
    ButtonSettings::button()
}

fn sensor_settings(name: &str) -> SensorSettings {
    match name {
        "pir" => SensorSettings::for_kind(SensorKind::Motion),
        // A reed contact to GND with the pull-up: closed door reads low,
        // open reads high.
        _ => SensorSettings::for_kind(SensorKind::Door),
    }
}

fn polarity(name: &str) -> Polarity {
    if name == "button" {
        button_settings().polarity
    } else {
        sensor_settings(name).polarity
    }
}

fn simulated_inputs(map: &PinMap) -> Inputs {
    let mut inputs: Vec<Box<dyn Input>> = Vec::new();
    let mut drivers = Vec::new();
    for (name, _) in map.inputs() {
        let (pin, driver) = sim_pin(polarity(name));
        inputs.push(input(name, pin));
        drivers.push((name, driver));
    }
    (inputs, drivers)
}

fn input<P>(name: &'static str, pin: P) -> Box<dyn Input>
where
    P: embedded_hal::digital::InputPin + Send + 'static,
{
    if name == "button" {
        Box::new(ButtonInput::new(
            name,
            AlarmButton::new(pin, button_settings()),
        ))
    } else {
        Box::new(SensorInput::new(
            name,
            BinarySensor::new(pin, sensor_settings(name)),
        ))
    }
}

#[cfg(target_os = "linux")]
fn gpio_inputs(map: &PinMap) -> Result<Inputs, NodeError> {
    use rpi_pal::gpio::{Error, Gpio};
    // rpi-pal's device files: BCM283x/2711 (`/dev/gpiomem`), the Pi 5's
    // RP1 (`/dev/gpiomem0`), and the character device. Where none exists,
    // say so in plain words before rpi-pal tries.
    const DEVICES: [&str; 3] = ["/dev/gpiomem", "/dev/gpiomem0", "/dev/gpiochip0"];
    if !DEVICES.iter().any(|d| std::path::Path::new(d).exists()) {
        return Err(NodeError::NoGpio(format!("{} missing", DEVICES.join(", "))));
    }
    let gpio = Gpio::new().map_err(|e| match e {
        Error::UnknownModel => NodeError::NoGpio(
            "this is not a Raspberry Pi model rpi-pal knows (/proc/device-tree/compatible)".into(),
        ),
        Error::PermissionDenied(path) => NodeError::GpioPermission(path),
        other => NodeError::NoGpio(other.to_string()),
    })?;
    let mut inputs: Vec<Box<dyn Input>> = Vec::new();
    for (name, bcm) in map.inputs() {
        let pin = gpio.get(bcm).map_err(|e| NodeError::Pin {
            input: name,
            bcm,
            problem: e.to_string(),
        })?;
        let pin = match polarity(name) {
            // An active-high sensor output (PIR) idles low: pull down.
            Polarity::ActiveHigh if name == "pir" => pin.into_input_pulldown(),
            // Contacts to GND: pull up.
            _ => pin.into_input_pullup(),
        };
        inputs.push(input(name, pin));
    }
    Ok((inputs, Vec::new()))
}

#[cfg(not(target_os = "linux"))]
fn gpio_inputs(_: &PinMap) -> Result<Inputs, NodeError> {
    Err(NodeError::NoGpio("not Linux".into()))
}

/// What stdin may say in `--simulated` mode.
pub const STDIN_HELP: &str = "\
pir on | pir off          motion sensor output high / low
door open | door closed   door contact
button press              press and release the alarm button (150 ms)
button down | button up   hold it / let go
help                      this text";

/// Runs the node until `shutdown`. With [`Hardware::Simulated`], `stdin`
/// drives the pins.
pub async fn run<R>(
    config: NodeConfig,
    stdin: R,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError>
where
    R: AsyncBufRead + Unpin + Send + 'static,
{
    if !trygg_protocol::topic::is_valid_device_id(&config.device_id) {
        return Err(NodeError::BadDeviceId(config.device_id.clone()));
    }
    let (inputs, drivers) = match config.hardware {
        Hardware::Gpio => gpio_inputs(&config.pins)?,
        Hardware::Simulated => simulated_inputs(&config.pins),
    };
    let flash_err = |source| NodeError::Flash {
        path: config.flash.clone(),
        source,
    };
    if let Some(dir) = config.flash.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| flash_err(e.into()))?;
    }
    let flash = FileFlash::<SECTOR>::open(&config.flash, SECTORS).map_err(flash_err)?;
    let mut link = LinkOptions::new(&config.device_id, &config.broker_host, config.broker_port);
    link.key = config.key.clone();
    let mut node = HostDevice::<_, QUEUE>::start(
        &link,
        flash,
        // A blank flash (a new node, or its file lost) starts at the clock,
        // above anything it sent before: the gateway never sees it go back.
        unix_ms(),
        config.settings,
        inputs,
        POLL_EVERY,
    );
    println!(
        "trygg-sensor-node ready: device={} broker=mqtt://{}:{} pins={} flash={} hardware={} next-seq={} queued={}",
        config.device_id,
        config.broker_host,
        config.broker_port,
        config.pins,
        config.flash.display(),
        match config.hardware {
            Hardware::Gpio => "gpio",
            Hardware::Simulated => "simulated",
        },
        node.device().next_seq(),
        node.device().pending(),
    );
    if !node.device().has_storage() {
        tracing::error!(flash = %config.flash.display(), "flash file unusable: running from RAM; a restart loses the queue");
    }
    report(&mut node);
    if config.hardware == Hardware::Simulated {
        tokio::spawn(drive_from_stdin(stdin, drivers));
    }
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = node.step() => report(&mut node),
        }
    }
    // Everything queued is on flash already: nothing to flush.
    let pending = node.device().pending();
    node.disconnect();
    tracing::info!(
        pending,
        "sensor node stopped; unreceipted events stay on flash"
    );
    Ok(())
}

/// One line on stdout per thing the device did: the node's own record,
/// also what the tests and the smoke script read.
fn report<const N: usize>(node: &mut HostDevice<FileFlash<SECTOR>, N>) {
    for h in node.drain() {
        match h {
            Happened::Raised { seq, kind, by, .. } => {
                let by = match by {
                    Source::Input(name) => name,
                    Source::Flash => "flash".into(),
                    Source::Device => "device".into(),
                    Source::Caller => "caller".into(),
                };
                let what = if by == "flash" { "recovered" } else { "queued" };
                println!("{what} seq={seq} kind={} by={by}", kind.wire());
            }
            Happened::Refused { kind, by } => {
                println!(
                    "refused kind={} by={by:?} reason=queue-full-of-alarms",
                    kind.wire()
                )
            }
            Happened::Evicted { seq, kind } => {
                println!("evicted seq={seq} kind={}", kind.wire())
            }
            Happened::Receipt {
                seq,
                status,
                reason,
                held,
            } => {
                let status = format!("{status:?}").to_lowercase();
                match (held, reason) {
                    (true, Some(r)) => println!("receipt seq={seq} status={status} reason={r:?}"),
                    (true, None) => println!("receipt seq={seq} status={status}"),
                    (false, _) => tracing::debug!(seq, status, "late or repeated receipt ignored"),
                }
            }
            Happened::MalformedReceipt => tracing::warn!("malformed receipt ignored"),
            Happened::Config(Ok(c)) => println!(
                "config applied heartbeat_s={:?} pre_alarm_s={:?}",
                c.heartbeat_s, c.pre_alarm_s
            ),
            Happened::Config(Err(e)) => println!("config rejected error={e:?}"),
            Happened::Input { name, action } => println!("input {name} {action:?}"),
            Happened::Connected => println!("link up"),
            Happened::Disconnected { reason } => println!("link down reason={reason:?}"),
        }
    }
}

async fn drive_from_stdin<R: AsyncBufRead + Unpin>(
    stdin: R,
    drivers: Vec<(&'static str, PinDriver)>,
) {
    let mut lines = stdin.lines();
    loop {
        let line = match lines.next_line().await {
            Ok(Some(l)) => l,
            Ok(None) => {
                tracing::info!(
                    "stdin closed: the pins stay as they are; SIGTERM or Ctrl-C stops the node"
                );
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "stdin unreadable: the pins stay as they are");
                return;
            }
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some((&name, rest)) = words.split_first() else {
            continue;
        };
        if name == "help" {
            println!("{STDIN_HELP}");
            continue;
        }
        let Some((_, pin)) = drivers.iter().find(|(n, _)| *n == name) else {
            println!(
                "pin error: no input `{name}` on this node (see --pins; `help` lists commands)"
            );
            continue;
        };
        match (name, rest) {
            ("pir", ["on"]) | ("door", ["open"]) | ("button", ["down"]) => pin.set(true),
            ("pir", ["off"]) | ("door", ["closed" | "close"]) | ("button", ["up"]) => {
                pin.set(false)
            }
            ("button", ["press"]) => {
                let pin = pin.clone();
                tokio::spawn(async move { pin.click(Duration::from_millis(150), 0).await });
            }
            _ => {
                println!("pin error: `{line}` is not a command (`help` lists them)");
                continue;
            }
        }
        println!("pin {} {}", name, rest.join(" "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_pin_map_is_pir_17_and_door_27() {
        assert_eq!(PinMap::default().to_string(), "pir=17,door=27");
        assert_eq!("pir=17,door=27".parse::<PinMap>(), Ok(PinMap::default()));
    }

    #[test]
    fn a_pin_map_names_what_is_wrong() {
        let err = |s: &str| s.parse::<PinMap>().unwrap_err();
        assert!(err("pir=17,door=17").contains("two inputs on one pin"));
        assert!(err("pir=40").contains("2 to 27"));
        assert!(err("smoke=5").contains("pir, door or button"));
        assert!(err("pir=5,pir=6").contains("twice"));
        assert!(err("").contains("no inputs"));
        assert_eq!(
            "button=22".parse::<PinMap>().map(|m| m.inputs()),
            Ok(vec![("button", 22)])
        );
    }

    #[test]
    fn a_broker_is_an_mqtt_url() {
        assert_eq!(
            parse_broker("mqtt://127.0.0.1:1884").unwrap(),
            ("127.0.0.1".into(), 1884)
        );
        assert_eq!(
            parse_broker("mqtt://gw.local").unwrap(),
            ("gw.local".into(), 1883)
        );
        assert!(parse_broker("mqtts://gw:8883").is_err());
        assert!(parse_broker("gw:1883").is_err());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn no_gpio_is_a_clear_error_not_a_panic() {
        if std::path::Path::new("/dev/gpiomem").exists() {
            return; // a real Pi
        }
        let err = gpio_inputs(&PinMap::default()).err().expect("no GPIO here");
        let text = err.to_string();
        assert!(text.starts_with("no Raspberry Pi GPIO found"), "{text}");
        assert!(text.contains("--simulated"), "{text}");
    }
}
