//! The gateway's configuration: a serde struct whose defaults live in the
//! embedded `trygg-gateway.toml` (`trygg-gateway config generate`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use trygg_uplink::mqtt_url::MqttUrl;

/// The default configuration, with comments: what `config generate` prints.
pub const DEFAULT_TOML: &str = include_str!("../trygg-gateway.toml");

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub gateway_id: String,
    pub data_dir: PathBuf,
    pub local_broker: LocalBroker,
    pub uplink: Uplink,
    /// How this gateway gets its client certificate for the uplink.
    #[serde(default)]
    pub enrollment: Enrollment,
    #[serde(default)]
    pub journal: Journal,
    #[serde(default)]
    pub supervision: Supervision,
    pub local_api: LocalApi,
    #[serde(default)]
    pub local_io: LocalIo,
    #[serde(default)]
    pub encryption: Encryption,
    #[serde(default)]
    pub devices: Vec<Device>,
}

/// Encryption at rest (`[encryption]`): see `crate::seal`. Always on; this
/// only says where the key-encryption key comes from.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Encryption {
    /// `file:PATH` or `command:PROGRAM [ARGS]`; unset: `file:{data_dir}/kek.hex`
    /// (beside the journal: a development default, and the gateway says so).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_source: Option<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BrokerMode {
    Embedded,
    External,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LocalBroker {
    pub mode: BrokerMode,
    pub listen: SocketAddr,
    pub url: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Uplink {
    pub url: String,
    pub ca_file: PathBuf,
    #[serde(default = "default_batch_records")]
    pub max_batch_records: usize,
    #[serde(default = "default_window")]
    pub window: usize,
    #[serde(default = "default_receipt_timeout")]
    pub receipt_timeout_s: u64,
    /// A heartbeat to the backend this often, so that it can tell a quiet
    /// home from a gateway that is gone.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_s: u64,
    /// The longest wait between reconnect attempts while the backend is
    /// out of reach (the wait doubles from 200 ms up to this, with jitter).
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_ms: u64,
}

/// Enrollment with the backend (`trygg-gateway enroll`): the gateway's
/// key and certificate live in `{data_dir}/identity/`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Enrollment {
    /// The backend's enrollment endpoint, `https://HOST:PORT`. Its server
    /// certificate must chain to `uplink.ca_file`.
    #[serde(default = "default_enroll_url")]
    pub url: String,
    /// For automated setups: a file holding a one-time code. A gateway
    /// started without an identity enrolls with it by itself, then deletes
    /// the file.
    #[serde(default)]
    pub code_file: Option<PathBuf>,
}

impl Default for Enrollment {
    fn default() -> Self {
        Enrollment {
            url: default_enroll_url(),
            code_file: None,
        }
    }
}

fn default_enroll_url() -> String {
    "https://127.0.0.1:8884".into()
}

fn default_reconnect_max() -> u64 {
    1000
}

fn default_heartbeat() -> u64 {
    30
}

fn default_batch_records() -> usize {
    256
}
fn default_window() -> usize {
    4
}
fn default_receipt_timeout() -> u64 {
    15
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Journal {
    pub max_group: usize,
    /// The most the journal keeps, in MiB (records of all lanes).
    pub max_mib: u64,
    /// Of `max_mib`, the part only alarms may use.
    pub alarm_reserve_mib: u64,
    /// At the limit: drop the oldest telemetry, or refuse new telemetry.
    pub when_full: crate::journal::WhenFull,
    /// Telemetry older than this is dropped; 0 keeps it however old.
    pub telemetry_max_age_h: u64,
    /// Disk space held back in a file beside the journal, released to
    /// alarms when the disk itself fills up.
    pub disk_reserve_mib: u64,
    /// Drops are reported upstream at most this often.
    pub drop_report_s: u64,
}

impl Default for Journal {
    fn default() -> Self {
        Journal {
            max_group: 1024,
            max_mib: 512,
            alarm_reserve_mib: 32,
            when_full: crate::journal::WhenFull::DropOldest,
            telemetry_max_age_h: 168,
            disk_reserve_mib: 8,
            drop_report_s: 60,
        }
    }
}

/// How long a device may be silent (no event, no heartbeat) before the
/// gateway raises `device_silent`, by device type. A device's own
/// `supervision_s` overrides it; 0 turns supervision off.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Supervision {
    pub periods_s: std::collections::BTreeMap<DeviceType, u64>,
}

impl Default for Supervision {
    fn default() -> Self {
        use DeviceType::*;
        Supervision {
            periods_s: [
                (SafetyButton, 900),
                (PullCord, 3600),
                (FallSensor, 900),
                (DoorSensor, 3600),
                (BedSensor, 3600),
                (MotionSensor, 3600),
                (SmokeDetector, 3600),
                (WaterSensor, 3600),
                (EpilepsySensor, 900),
                (MedicineDispenser, 3600),
                (Thermometer, 3600),
            ]
            .into_iter()
            .collect(),
        }
    }
}

/// Whether the gateway uses the Raspberry Pi's GPIO for its own button,
/// LED, buzzer and mains-fail input.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum GpioMode {
    /// Use it if this is a Pi with GPIO; otherwise say so once and run.
    #[default]
    Auto,
    /// Refuse to start without it.
    On,
    /// Never touch it.
    Off,
}

/// The gateway's own I/O on a Raspberry Pi (`[local_io]`): see
/// `docs/boards.md` for the wiring and what the LED and buzzer say.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalIo {
    pub gpio: GpioMode,
    /// The uplink down longer than this: the LED blinks slowly, and an
    /// alarm sounds the buzzer (help may not be coming).
    pub uplink_down_signal_s: u64,
    /// BCM pin numbers, when the board is wired other than the default map.
    pub pins: LocalIoPins,
    /// The UPS's mains-fail signal is "high" or "low" while mains is out.
    pub mains_fail_active: Level,
    /// Pseudonymous resident id and room for the local button's alarms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resident: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
}

impl Default for LocalIo {
    fn default() -> Self {
        LocalIo {
            gpio: GpioMode::Auto,
            uplink_down_signal_s: 120,
            pins: LocalIoPins::default(),
            mains_fail_active: Level::High,
            resident: None,
            room: None,
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    High,
    Low,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LocalIoPins {
    pub button: u8,
    pub led: u8,
    pub buzzer: u8,
    pub mains_fail: u8,
}

impl Default for LocalIoPins {
    fn default() -> Self {
        use trygg_board_pi_gateway as board;
        LocalIoPins {
            button: board::BUTTON_BCM,
            led: board::LED_BCM,
            buzzer: board::BUZZER_BCM,
            mains_fail: board::MAINS_FAIL_BCM,
        }
    }
}

impl LocalIo {
    /// The board's pin map with this config's overrides.
    pub fn pin_map(&self) -> trygg_board_pi_gateway::PinMap {
        trygg_board_pi_gateway::PinMap {
            button: self.pins.button,
            led: self.pins.led,
            buzzer: self.pins.buzzer,
            mains_fail: self.pins.mains_fail,
            mains_fail_active_high: self.mains_fail_active == Level::High,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LocalApi {
    pub listen: SocketAddr,
}

/// A device the gateway accepts events from.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Device {
    pub id: String,
    #[serde(rename = "type")]
    pub device_type: DeviceType,
    #[serde(default)]
    pub room: Option<String>,
    /// Pseudonymous resident id; never a name.
    #[serde(default)]
    pub resident: Option<String>,
    /// This device's supervision period in seconds, instead of its type's;
    /// 0 turns supervision off for it.
    #[serde(default)]
    pub supervision_s: Option<u64>,
    /// Sent to the device on its `cfg` topic (retained): its heartbeat
    /// period, seconds. Usually set from the backend (config push).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_s: Option<u32>,
    /// Sent to the device on its `cfg` topic: how long a press may be
    /// cancelled before it is an alarm, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_alarm_s: Option<u16>,
}

impl Device {
    /// What the device is sent on its `cfg` topic, if anything.
    pub fn cfg_payload(&self) -> Option<String> {
        trygg_uplink::remote_config::DeviceSettings {
            supervision_s: None,
            heartbeat_s: self.heartbeat_s,
            pre_alarm_s: self.pre_alarm_s,
        }
        .device_cfg()
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum DeviceType {
    SafetyButton,
    PullCord,
    FallSensor,
    DoorSensor,
    BedSensor,
    MotionSensor,
    SmokeDetector,
    WaterSensor,
    EpilepsySensor,
    MedicineDispenser,
    Thermometer,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config field `{field}`: {problem}")]
    Invalid { field: String, problem: String },
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

impl Config {
    /// The embedded defaults.
    pub fn default_config() -> Config {
        toml::from_str(DEFAULT_TOML).expect("the embedded default config parses")
    }

    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !trygg_protocol::topic::is_valid_device_id(&self.gateway_id) {
            return Err(invalid(
                "gateway_id",
                "must be 1-64 characters of A-Z, a-z, 0-9, '-' or '_'",
            ));
        }
        if self.local_broker.mode == BrokerMode::External {
            let url = MqttUrl::parse(&self.local_broker.url)
                .map_err(|e| invalid("local_broker.url", e.to_string()))?;
            if url.tls {
                return Err(invalid(
                    "local_broker.url",
                    "TLS to the local broker is not supported yet; use mqtt://",
                ));
            }
        }
        let uplink =
            MqttUrl::parse(&self.uplink.url).map_err(|e| invalid("uplink.url", e.to_string()))?;
        if !uplink.tls {
            return Err(invalid(
                "uplink.url",
                "must be mqtts://: events leave the home only over TLS",
            ));
        }
        trygg_uplink::enroll::HttpsUrl::parse(&self.enrollment.url)
            .map_err(|e| invalid("enrollment.url", e.to_string()))?;
        if self.uplink.max_batch_records == 0 || self.uplink.max_batch_records > 10_000 {
            return Err(invalid("uplink.max_batch_records", "must be 1 to 10000"));
        }
        if self.uplink.window == 0 || self.uplink.window > 64 {
            return Err(invalid("uplink.window", "must be 1 to 64"));
        }
        if self.uplink.receipt_timeout_s == 0 {
            return Err(invalid("uplink.receipt_timeout_s", "must be at least 1"));
        }
        if self.journal.max_group == 0 {
            return Err(invalid("journal.max_group", "must be at least 1"));
        }
        if self.journal.max_mib == 0 {
            return Err(invalid("journal.max_mib", "must be at least 1"));
        }
        if self.journal.alarm_reserve_mib >= self.journal.max_mib {
            return Err(invalid(
                "journal.alarm_reserve_mib",
                format!(
                    "must be less than journal.max_mib ({}): the rest is for everything but alarms",
                    self.journal.max_mib
                ),
            ));
        }
        if self.uplink.reconnect_max_ms < 200 {
            return Err(invalid("uplink.reconnect_max_ms", "must be at least 200"));
        }
        if self.uplink.heartbeat_s == 0 {
            return Err(invalid("uplink.heartbeat_s", "must be at least 1"));
        }
        if !self.local_api.listen.ip().is_loopback() {
            return Err(invalid(
                "local_api.listen",
                "must be a loopback address until the technician login exists (it has no authentication)",
            ));
        }
        if self.local_io.uplink_down_signal_s == 0 || self.local_io.uplink_down_signal_s > 86_400 {
            return Err(invalid(
                "local_io.uplink_down_signal_s",
                "must be 1 to 86400 (a day)",
            ));
        }
        if let Err(e) = self.key_source() {
            return Err(invalid("encryption.key_source", e.to_string()));
        }
        if let Err((pin, problem)) = self.local_io.pin_map().check() {
            return Err(invalid(format!("local_io.pins.{pin}"), problem));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, d) in self.devices.iter().enumerate() {
            if !trygg_protocol::topic::is_valid_device_id(&d.id) {
                return Err(invalid(
                    format!("devices[{i}].id"),
                    "must be 1-64 characters of A-Z, a-z, 0-9, '-' or '_'",
                ));
            }
            if d.id == self.gateway_id {
                return Err(invalid(
                    format!("devices[{i}].id"),
                    "must differ from gateway_id: the gateway reports its own events under its id",
                ));
            }
            if !seen.insert(d.id.as_str()) {
                return Err(invalid(
                    format!("devices[{i}].id"),
                    format!("`{}` is listed twice", d.id),
                ));
            }
        }
        Ok(())
    }

    /// Where the key-encryption key comes from.
    pub fn key_source(&self) -> Result<crate::seal::KeySource, crate::seal::KeyError> {
        match &self.encryption.key_source {
            Some(s) => crate::seal::KeySource::parse(s),
            None => Ok(crate::seal::KeySource::File(self.data_dir.join("kek.hex"))),
        }
    }

    /// The sealed data key beside the journal.
    pub fn data_key_path(&self) -> PathBuf {
        self.data_dir.join(crate::seal::KEY_FILE)
    }

    pub fn journal_path(&self) -> PathBuf {
        self.data_dir.join("gateway.redb")
    }

    pub fn device(&self, id: &str) -> Option<&Device> {
        self.devices.iter().find(|d| d.id == id)
    }

    /// A device's supervision period; `None` when it is not supervised.
    pub fn supervision_period(&self, device: &Device) -> Option<std::time::Duration> {
        let s = device
            .supervision_s
            .or_else(|| self.supervision.periods_s.get(&device.device_type).copied())
            .unwrap_or(3600);
        (s > 0).then(|| std::time::Duration::from_secs(s))
    }

    /// The journal's limits, from `[journal]`.
    pub fn journal_policy(&self) -> crate::journal::Policy {
        const MIB: u64 = 1024 * 1024;
        crate::journal::Policy {
            source_id: self.gateway_id.clone(),
            max_bytes: Some(self.journal.max_mib * MIB),
            alarm_reserve_bytes: self.journal.alarm_reserve_mib * MIB,
            when_full: self.journal.when_full,
            telemetry_max_age_ms: (self.journal.telemetry_max_age_h > 0)
                .then(|| self.journal.telemetry_max_age_h * 3600 * 1000),
            drop_report_every_ms: self.journal.drop_report_s * 1000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_config_parses_and_validates() {
        let c = Config::from_toml(DEFAULT_TOML, Path::new("default")).unwrap();
        assert_eq!(c.devices.len(), 7);
        assert_eq!(c.local_broker.mode, BrokerMode::Embedded);
    }

    #[test]
    fn unknown_field_is_refused_with_its_name() {
        let text = format!("{DEFAULT_TOML}\nbogus = 1\n");
        let err = Config::from_toml(&text, Path::new("x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn plain_uplink_is_refused() {
        let text = DEFAULT_TOML.replace("mqtts://127.0.0.1:8883", "mqtt://127.0.0.1:8883");
        let err = Config::from_toml(&text, Path::new("x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("uplink.url"), "{err}");
    }

    #[test]
    fn local_io_defaults_to_auto_with_the_boards_pin_map() {
        let c = Config::default_config();
        assert_eq!(c.local_io.gpio, GpioMode::Auto);
        assert_eq!(c.local_io.uplink_down_signal_s, 120);
        assert_eq!(
            c.local_io.pin_map(),
            trygg_board_pi_gateway::PinMap::default()
        );
        // And a config without [local_io] at all means the same.
        let text = DEFAULT_TOML.replace("[local_io]", "[local_io_gone]");
        let text: String = text.split("[local_io_gone]").next().unwrap().to_string();
        let c: Config = toml::from_str(&text).unwrap();
        assert_eq!(c.local_io.gpio, GpioMode::Auto);
    }

    #[test]
    fn a_bad_local_io_field_is_named() {
        for (from, to, field) in [
            (
                "uplink_down_signal_s = 120",
                "uplink_down_signal_s = 0",
                "local_io.uplink_down_signal_s",
            ),
            ("gpio = \"auto\"", "gpio = \"maybe\"", "gpio"),
            (
                "gpio = \"auto\"",
                "gpio = \"auto\"\npins = { led = 17 }",
                "local_io.pins.led",
            ),
            (
                "gpio = \"auto\"",
                "gpio = \"auto\"\npins = { buzzer = 30 }",
                "local_io.pins.buzzer",
            ),
            ("gpio = \"auto\"", "gpio = \"auto\"\nbuzer = 1", "buzer"),
        ] {
            let text = DEFAULT_TOML.replace(from, to);
            assert_ne!(text, DEFAULT_TOML, "{from}");
            let err = Config::from_toml(&text, Path::new("x"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
    }

    #[test]
    fn duplicate_device_is_refused() {
        let text =
            format!("{DEFAULT_TOML}\n[[devices]]\nid = \"button-1\"\ntype = \"safety_button\"\n");
        let err = Config::from_toml(&text, Path::new("x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("devices[7].id"), "{err}");
    }
}
