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
    /// The staff console's preferred port.
    #[serde(default = "default_console_port")]
    pub console_port: u16,
}

fn default_console_port() -> u16 {
    8081
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
        // Paces are drawn as 0.5..1.5 times the mean and slept: a day at
        // most keeps them finite and sleepable.
        const DAY: f64 = 86_400.0;
        let t = self.home.telemetry_every_s;
        if !(t > 0.0 && t <= DAY) {
            anyhow::bail!("config field `home.telemetry_every_s` must be above 0 and at most {DAY} (a day); it is {t}");
        }
        let a = self.home.alarm_every_s;
        if !(0.0..=DAY).contains(&a) {
            anyhow::bail!(
                "config field `home.alarm_every_s` must be 0 (off) to {DAY} (a day); it is {a}"
            );
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

    #[test]
    fn paces_that_cannot_be_slept_are_refused_by_name() {
        for (field, value) in [
            ("telemetry_every_s", "inf"),
            ("telemetry_every_s", "1e300"),
            ("telemetry_every_s", "nan"),
            ("alarm_every_s", "inf"),
            ("alarm_every_s", "nan"),
        ] {
            let mut c = super::SimConfig::default_config();
            let v: f64 = value.parse().unwrap();
            match field {
                "telemetry_every_s" => c.home.telemetry_every_s = v,
                _ => c.home.alarm_every_s = v,
            }
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{field} = {value}: {err}");
        }
    }
}
