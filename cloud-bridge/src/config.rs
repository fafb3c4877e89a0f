//! Configuration: a serde struct whose defaults live in the embedded
//! `trygg-bridge.toml`.
//!
//! A user's file is laid over the embedded defaults key by key and the
//! result is read with `deny_unknown_fields`, so a file needs to hold only
//! what it changes and a misspelt key is an error, never a silent default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use trygg_uplink::mqtt_url::MqttUrl;

/// The defaults, with comments that teach each setting.
pub const DEFAULT_TOML: &str = include_str!("../trygg-bridge.toml");

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The redb store and generated development TLS files live here.
    pub data_dir: PathBuf,
    pub broker: BrokerConfig,
    /// Where gateways exchange a one-time code for their certificate.
    pub enrollment: EnrollmentConfig,
    pub api: ApiConfig,
    pub supervision: SupervisionConfig,
    /// Who an unacknowledged alarm goes to next, and when (`escalation`).
    pub escalation: crate::escalation::EscalationConfig,
    pub console: ConsoleConfig,
}

/// The staff console (`docs/console.md`): pages with login, served apart
/// from the loopback service API.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Port 0 picks a free port. Beyond loopback only with TLS.
    pub listen: SocketAddr,
    /// PEM certificate chain and private key: the console is served over
    /// HTTPS when both are given.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// A session unused this many minutes ends.
    pub idle_min: u64,
    /// A session ends this many hours after login, used or not.
    pub absolute_h: u64,
}

impl ConsoleConfig {
    pub fn session_policy(&self) -> crate::access::SessionPolicy {
        crate::access::SessionPolicy {
            idle_ms: self.idle_min.saturating_mul(60_000),
            absolute_ms: self.absolute_h.saturating_mul(3_600_000),
        }
    }

    pub fn tls(&self) -> bool {
        self.tls_cert.is_some() && self.tls_key.is_some()
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SupervisionConfig {
    /// A gateway heard from in no way for this long is reported offline.
    pub gateway_offline_after_s: u64,
    /// A gap in a gateway's lane sequence still missing after this long
    /// raises `sequence_gap`.
    pub gap_grace_s: u64,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BrokerMode {
    /// rumqttd in this process, MQTT v5 over TLS.
    Embedded,
    /// A broker somewhere else, at `url`.
    External,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    pub mode: BrokerMode,
    /// The embedded broker's listener; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The external broker.
    pub url: String,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// Gateway enrollment and the gateway CA (`crate::enrollment`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentConfig {
    /// The HTTPS listener for `POST /enroll/v1`; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Its certificate and key (PEM); else the broker's, else the
    /// development ones.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// The gateway CA; else made in `{data_dir}/gateway-ca`.
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    #[serde(default)]
    pub ca_key: Option<PathBuf>,
    /// How long a gateway's certificate is valid.
    pub cert_valid_days: u64,
    /// Where the bridge keeps a CRL of the gateway CA (for an external
    /// broker); else `{data_dir}/gateway-ca/crl.pem`.
    #[serde(default)]
    pub crl_file: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Loopback only until the API has a login; port 0 picks a free port.
    pub listen: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config is not valid TOML or has a wrong or unknown key: {0}")]
    Parse(String),
    #[error("config field `{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl Default for Config {
    fn default() -> Self {
        Config::from_toml_str("").expect("the embedded trygg-bridge.toml is valid")
    }
}

impl Config {
    /// Reads `text` laid over the embedded defaults. Does not validate.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let parse = |s: &str| {
            s.parse::<toml::Table>()
                .map_err(|e| ConfigError::Parse(e.to_string()))
        };
        let mut merged = parse(DEFAULT_TOML)?;
        merge(&mut merged, parse(text)?);
        toml::Value::Table(merged)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let config = Config::from_toml_str(&text)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot, naming the field at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason: &str| {
            Err(ConfigError::Invalid {
                field,
                reason: reason.into(),
            })
        };
        if self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir", "must not be empty");
        }
        if self.supervision.gateway_offline_after_s == 0 {
            return invalid(
                "supervision.gateway_offline_after_s",
                "must be at least 1 (and longer than the gateways' uplink.heartbeat_s)",
            );
        }
        if !self.api.listen.ip().is_loopback() {
            return Err(ConfigError::Invalid {
                field: "api.listen",
                reason: format!(
                    "{} is not a loopback address; the service API has no login, so it may listen \
                     on 127.0.0.1 or [::1] only: staff reach alarms through the console \
                     ([console] listen, with TLS)",
                    self.api.listen
                ),
            });
        }
        let c = &self.console;
        if c.tls_cert.is_some() != c.tls_key.is_some() {
            return invalid(
                "console.tls_cert",
                "give tls_cert and tls_key together (PEM files), or neither for plain HTTP on loopback",
            );
        }
        if !c.listen.ip().is_loopback() && !c.tls() {
            return Err(ConfigError::Invalid {
                field: "console.listen",
                reason: format!(
                    "{} is not a loopback address and no TLS is configured; passwords and session \
                     cookies must not cross a network in clear: set console.tls_cert and \
                     console.tls_key, or listen on 127.0.0.1 behind a TLS proxy",
                    c.listen
                ),
            });
        }
        if c.idle_min == 0 || c.absolute_h == 0 {
            return invalid(
                "console.idle_min",
                "idle_min and absolute_h must be at least 1",
            );
        }
        let e = &self.enrollment;
        if e.tls_cert.is_some() != e.tls_key.is_some() {
            return invalid(
                "enrollment.tls_cert",
                "give tls_cert and tls_key together (PEM files), or neither to use the broker's certificate",
            );
        }
        if e.ca_cert.is_some() != e.ca_key.is_some() {
            return invalid(
                "enrollment.ca_cert",
                "give ca_cert and ca_key together (PEM files), or neither for a gateway CA made in {data_dir}/gateway-ca",
            );
        }
        if !(1..=3650).contains(&e.cert_valid_days) {
            return invalid("enrollment.cert_valid_days", "must be 1 to 3650");
        }
        self.escalation.validate()?;
        let b = &self.broker;
        match b.mode {
            BrokerMode::Embedded => {
                if b.cert_file.is_some() != b.key_file.is_some() {
                    return invalid(
                        "broker.cert_file",
                        "give cert_file and key_file together, or neither for a generated development certificate",
                    );
                }
                if b.cert_file.is_some() && b.ca_file.is_none() {
                    return invalid(
                        "broker.ca_file",
                        "required with cert_file: the bridge's own MQTT client must trust the broker's certificate",
                    );
                }
            }
            BrokerMode::External => {
                let url = MqttUrl::parse(&b.url).map_err(|e| ConfigError::Invalid {
                    field: "broker.url",
                    reason: e.to_string(),
                })?;
                if url.tls && b.ca_file.is_none() {
                    return invalid("broker.ca_file", "required for an external mqtts:// broker");
                }
            }
        }
        Ok(())
    }
}

/// Lays `over` onto `base`, table by table.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_parse_and_validate() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.broker.mode, BrokerMode::Embedded);
        assert_eq!(c.api.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.broker.ca_file, None);
    }

    #[test]
    fn a_file_needs_only_what_it_changes() {
        let c = Config::from_toml_str("[api]\nlisten = \"127.0.0.1:0\"\n").unwrap();
        assert_eq!(c.api.listen.port(), 0);
        assert_eq!(c.broker.listen, "127.0.0.1:8883".parse().unwrap());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = Config::from_toml_str("[api]\nlisen = \"127.0.0.1:0\"\n").unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
    }

    #[test]
    fn api_on_a_public_address_is_refused_naming_the_field() {
        let c = Config::from_toml_str("[api]\nlisten = \"0.0.0.0:8080\"\n").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("api.listen") && err.contains("no login"),
            "{err}"
        );
    }

    #[test]
    fn console_defaults_to_loopback_without_tls() {
        let c = Config::default();
        assert_eq!(c.console.listen, "127.0.0.1:8081".parse().unwrap());
        assert!(!c.console.tls());
        assert_eq!(
            c.console.session_policy(),
            crate::access::SessionPolicy::default()
        );
    }

    #[test]
    fn console_beyond_loopback_without_tls_is_refused_naming_the_field() {
        let c = Config::from_toml_str("[console]\nlisten = \"0.0.0.0:8081\"\n").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("console.listen"), "{err}");
        let c = Config::from_toml_str(
            "[console]\nlisten = \"0.0.0.0:8443\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        let c = Config::from_toml_str("[console]\ntls_cert = \"c.pem\"\n").unwrap();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("console.tls_cert"));
    }

    #[test]
    fn external_tls_broker_needs_a_ca_file() {
        let c = Config::from_toml_str("[broker]\nmode = \"external\"\n").unwrap();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("broker.ca_file"));
        let c =
            Config::from_toml_str("[broker]\nmode = \"external\"\nurl = \"http://x:1\"\n").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("broker.url"));
    }
}
