//! The settings a gateway may send a device (topic
//! `trygg/v1/dev/{device_id}/cfg`), decoded within a fixed buffer:
//!
//! `{"v":1,"heartbeat_s":900,"pre_alarm_s":10}`
//!
//! Every field but `v` is optional: what is absent stays as it is. Fields
//! this firmware does not know are ignored (a newer gateway may send more).
//! A message that is too large, not JSON, of another schema version or with
//! a value out of range changes nothing and is reported back as a
//! `config_rejected` event.

use serde::Deserialize;
use trygg_protocol::SCHEMA_VERSION;

/// The largest config message a device reads.
pub const MAX_CONFIG: usize = 512;
/// Heartbeat period bounds, seconds.
pub const HEARTBEAT_S: core::ops::RangeInclusive<u32> = 10..=86_400;
/// Pre-alarm window bounds, seconds.
pub const PRE_ALARM_S: core::ops::RangeInclusive<u16> = 0..=60;

/// The settings a config message carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct ConfigUpdate {
    pub v: u16,
    #[serde(default)]
    pub heartbeat_s: Option<u32>,
    #[serde(default)]
    pub pre_alarm_s: Option<u16>,
}

/// Why a config message was not applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    TooLarge,
    Malformed,
    WrongSchemaVersion,
    /// The named field is out of its range.
    OutOfRange(&'static str),
}

impl ConfigError {
    /// A short stable code (sent as the `config_rejected` event's value).
    pub fn code(self) -> u8 {
        match self {
            ConfigError::TooLarge => 1,
            ConfigError::Malformed => 2,
            ConfigError::WrongSchemaVersion => 3,
            ConfigError::OutOfRange(_) => 4,
        }
    }
}

impl ConfigUpdate {
    pub fn decode(bytes: &[u8]) -> Result<ConfigUpdate, ConfigError> {
        if bytes.len() > MAX_CONFIG {
            return Err(ConfigError::TooLarge);
        }
        let (c, _): (ConfigUpdate, usize) =
            serde_json_core::from_slice(bytes).map_err(|_| ConfigError::Malformed)?;
        if c.v != SCHEMA_VERSION {
            return Err(ConfigError::WrongSchemaVersion);
        }
        if c.heartbeat_s.is_some_and(|s| !HEARTBEAT_S.contains(&s)) {
            return Err(ConfigError::OutOfRange("heartbeat_s"));
        }
        if c.pre_alarm_s.is_some_and(|s| !PRE_ALARM_S.contains(&s)) {
            return Err(ConfigError::OutOfRange("pre_alarm_s"));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_with_some_fields_sets_only_those() {
        let c = ConfigUpdate::decode(br#"{"v":1,"pre_alarm_s":0,"future":"x"}"#).unwrap();
        assert_eq!(c.pre_alarm_s, Some(0));
        assert_eq!(c.heartbeat_s, None);
    }

    #[test]
    fn bad_configs_are_refused_with_a_reason() {
        let big = [b' '; MAX_CONFIG + 1];
        for (bytes, want) in [
            (&big[..], ConfigError::TooLarge),
            (&b"{\"v\":1,"[..], ConfigError::Malformed),
            (&b"\xff\xfe"[..], ConfigError::Malformed),
            (&br#"{"v":2}"#[..], ConfigError::WrongSchemaVersion),
            (
                &br#"{"v":1,"heartbeat_s":1}"#[..],
                ConfigError::OutOfRange("heartbeat_s"),
            ),
            (
                &br#"{"v":1,"pre_alarm_s":600}"#[..],
                ConfigError::OutOfRange("pre_alarm_s"),
            ),
            (&br#"{"v":1,"heartbeat_s":-5}"#[..], ConfigError::Malformed),
        ] {
            assert_eq!(
                ConfigUpdate::decode(bytes),
                Err(want),
                "{:?}",
                core::str::from_utf8(bytes)
            );
        }
    }
}
