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
    /// The technicians' web page; without this section it is not served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub technician: Option<TechnicianPage>,
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
    /// Embedded broker: devices must connect with their id and key, and
    /// may use only their own topics. `false` is for development only: the
    /// gateway says so loudly, and refuses to listen beyond loopback
    /// without it unless `allow_unauthenticated_beyond_loopback`.
    #[serde(default = "yes")]
    pub device_auth: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_unauthenticated_beyond_loopback: bool,
    /// Embedded broker: an unknown device may connect with a key of its
    /// choosing, confined to its own topics, and waits as a join request
    /// (`trygg-gateway device pending`) until a technician accepts it; its
    /// events are kept on the device until then. Mosquitto cannot do this.
    #[serde(default = "yes")]
    pub first_contact: bool,
    /// External Mosquitto: the password and ACL files the gateway writes
    /// from its register (mosquitto.conf's `password_file` and `acl_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mosquitto_password_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mosquitto_acl_file: Option<PathBuf>,
    /// How to make Mosquitto reload them: SIGHUP to the pid in this file,
    /// and/or this command (run with `sh -c`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mosquitto_pid_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mosquitto_reload_command: Option<String>,
}

fn yes() -> bool {
    true
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl LocalBroker {
    /// Whether the gateway writes Mosquitto's password and ACL files.
    pub fn manages_mosquitto(&self) -> bool {
        self.mode == BrokerMode::External && self.mosquitto_password_file.is_some()
    }
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

/// The technicians' page and API on the home's network (`[technician]`),
/// always over HTTPS with the gateway's own certificate.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TechnicianPage {
    pub listen: SocketAddr,
    /// A session ends after this many minutes without a request.
    #[serde(default = "default_session_idle")]
    pub session_idle_min: u64,
    /// A session ends this many hours after login, however busy.
    #[serde(default = "default_session_max")]
    pub session_max_h: u64,
}

fn default_session_idle() -> u64 {
    30
}

fn default_session_max() -> u64 {
    8
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
    /// The hash of the device's key (its MQTT password), in Mosquitto's
    /// `$7$` format (see [`crate::credentials`]); never the key itself.
    /// A device without one cannot connect to a broker that checks keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_hash: Option<String>,
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
        let b = &self.local_broker;
        if b.mode == BrokerMode::Embedded
            && !b.device_auth
            && !b.listen.ip().is_loopback()
            && !b.allow_unauthenticated_beyond_loopback
        {
            return Err(invalid(
                "local_broker.device_auth",
                "is false while the embedded broker listens beyond loopback: anyone on the network could send events as any device. Turn device_auth on, listen on 127.0.0.1, or (never in a home) set allow_unauthenticated_beyond_loopback = true",
            ));
        }
        if b.mosquitto_password_file.is_some() != b.mosquitto_acl_file.is_some() {
            return Err(invalid(
                "local_broker.mosquitto_acl_file",
                "mosquitto_password_file and mosquitto_acl_file go together: give both (see docs/operations.md, Mosquitto)",
            ));
        }
        if b.mosquitto_password_file.is_some()
            && b.mosquitto_pid_file.is_none()
            && b.mosquitto_reload_command.is_none()
        {
            return Err(invalid(
                "local_broker.mosquitto_pid_file",
                "the gateway must be able to make Mosquitto reload its files: give mosquitto_pid_file (Mosquitto's pid_file) or mosquitto_reload_command (e.g. \"systemctl reload mosquitto\")",
            ));
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
                "must be a loopback address: it has no login (technicians on the home's network use the [technician] page, which has)",
            ));
        }
        if let Some(t) = &self.technician {
            if t.session_idle_min == 0 || t.session_idle_min > 24 * 60 {
                return Err(invalid(
                    "technician.session_idle_min",
                    "must be 1 to 1440 (a day)",
                ));
            }
            if t.session_max_h == 0 || t.session_max_h > 24 {
                return Err(invalid("technician.session_max_h", "must be 1 to 24"));
            }
            if t.listen == self.local_api.listen && t.listen.port() != 0 {
                return Err(invalid(
                    "technician.listen",
                    "must differ from local_api.listen",
                ));
            }
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
            if d.key_hash
                .as_deref()
                .is_some_and(|h| !crate::credentials::is_valid_hash(h))
            {
                return Err(invalid(
                    format!("devices[{i}].key_hash"),
                    "is not a `$7$...` hash as mosquitto_passwd writes it: leave it out and pair the device with `trygg-gateway device rekey ID`",
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
    fn the_technician_page_is_on_by_default_and_optional() {
        let c = Config::default_config();
        let t = c.technician.expect("[technician] in the generated config");
        assert_eq!(t.listen.port(), 8443);
        assert!(
            t.listen.ip().is_unspecified(),
            "reachable on the home's network"
        );
        assert_eq!((t.session_idle_min, t.session_max_h), (30, 8));
        let text = DEFAULT_TOML.replace("[technician]", "[technician_off]");
        let text: String = text.split("[technician_off]").next().unwrap().to_string()
            + &DEFAULT_TOML[DEFAULT_TOML.find("[local_io]").unwrap()..];
        let c = Config::from_toml(&text, Path::new("x")).unwrap();
        assert!(c.technician.is_none());
        let text = DEFAULT_TOML.replace("session_max_h = 8", "session_max_h = 0");
        let err = Config::from_toml(&text, Path::new("x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("technician.session_max_h"), "{err}");
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
