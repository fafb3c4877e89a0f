//! The simulator's configuration; defaults in the embedded `trygg-sim.toml`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const DEFAULT_TOML: &str = include_str!("../trygg-sim.toml");

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    pub demo: Demo,
    pub home: Home,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Demo {
    pub data_dir: PathBuf,
    pub device_broker_port: u16,
    pub api_port: u16,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Home {
    pub telemetry_every_s: f64,
    pub alarm_every_s: f64,
    pub heartbeat_every_s: u64,
}

impl SimConfig {
    pub fn default_config() -> SimConfig {
        toml::from_str(DEFAULT_TOML).expect("embedded default parses")
    }

    /// Parses a config file's text. Does not validate.
    pub fn from_toml_str(text: &str) -> Result<SimConfig, toml::de::Error> {
        toml::from_str(text)
    }

    pub fn load(path: &Path) -> anyhow::Result<SimConfig> {
        let text = std::fs::read_to_string(path)?;
        let c = SimConfig::from_toml_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.home.telemetry_every_s.is_nan() || self.home.telemetry_every_s <= 0.0 {
            anyhow::bail!("config field `home.telemetry_every_s` must be above 0");
        }
        if self.home.alarm_every_s < 0.0 {
            anyhow::bail!("config field `home.alarm_every_s` must be 0 (off) or more");
        }
        if self.home.heartbeat_every_s == 0 {
            anyhow::bail!("config field `home.heartbeat_every_s` must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn embedded_default_config_parses_and_validates() {
        super::SimConfig::default_config().validate().unwrap();
    }
}
