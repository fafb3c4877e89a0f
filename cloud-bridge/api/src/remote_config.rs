//! Settings pushed from the backend to a gateway (national guidance: the
//! alarm reception must be able to change a safety alarm's settings
//! remotely).
//!
//! ```text
//! trygg/v1/gw/{id}/config         backend -> gateway  ConfigPush, QoS 1, retained
//! trygg/v1/gw/{id}/config-result  gateway -> backend  ConfigResult, QoS 1
//! ```
//!
//! Each version is the whole set of settings the backend manages for that
//! gateway (so a gateway that was away and gets only the latest retained
//! version misses nothing). What a version leaves out stays as it is at
//! the gateway. A gateway applies a version durably (or refuses all of it)
//! and says so; a version at or below the one it applied is answered again
//! without applying anything.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const CONFIG_RESULT_FILTER: &str = "trygg/v1/gw/+/config-result";
/// The largest config push a gateway reads.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;
/// Bounds, shared by the backend (which refuses before pushing) and the
/// gateway (which refuses what it is sent).
pub const HEARTBEAT_S: std::ops::RangeInclusive<u64> = 1..=3600;
pub const SUPERVISION_S: std::ops::RangeInclusive<u64> = 0..=7 * 24 * 3600;
pub const DEVICE_HEARTBEAT_S: std::ops::RangeInclusive<u32> = 10..=86_400;
pub const DEVICE_PRE_ALARM_S: std::ops::RangeInclusive<u16> = 0..=60;

/// A gateway being decommissioned asks the backend to take it off the
/// service (revoke its certificate, end its supervision), QoS 1, payload
/// [`Decommission`]; the backend answers on [`decommission_result_topic`]
/// with a [`DecommissionResult`] once that is durable.
pub const DECOMMISSION_FILTER: &str = "trygg/v1/gw/+/decommission";

pub fn decommission_topic(gateway: &str) -> String {
    format!("trygg/v1/gw/{gateway}/decommission")
}

pub fn decommission_result_topic(gateway: &str) -> String {
    format!("trygg/v1/gw/{gateway}/decommission-result")
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decommission {
    pub v: u16,
    /// Events the gateway still held when it asked (0 unless forced).
    #[serde(default)]
    pub pending: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecommissionResult {
    pub v: u16,
    /// The gateway is off the service: its certificate revoked, its
    /// supervision ended.
    pub done: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub fn config_topic(gateway: &str) -> String {
    format!("trygg/v1/gw/{gateway}/config")
}

pub fn config_result_topic(gateway: &str) -> String {
    format!("trygg/v1/gw/{gateway}/config-result")
}

/// One version of a gateway's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigPush {
    pub v: u16,
    /// Counts up from 1 per gateway.
    pub version: u64,
    pub settings: GatewaySettings,
}

/// The settings the backend manages. Every field is optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySettings {
    /// The gateway's heartbeat to the backend, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_s: Option<u64>,
    /// Supervision periods by device type (`safety_button`, ...), seconds;
    /// 0 turns supervision off for the type.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub supervision_periods_s: BTreeMap<String, u64>,
    /// Per device (it must be paired at the gateway).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub devices: BTreeMap<String, DeviceSettings>,
}

/// One device's settings: the gateway's supervision of it, and what the
/// gateway sends the device on its `cfg` topic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSettings {
    /// Seconds; 0 turns supervision off for this device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervision_s: Option<u64>,
    /// The device's heartbeat period, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_s: Option<u32>,
    /// How long a safety button's press may be cancelled, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_alarm_s: Option<u16>,
}

/// The gateway's answer to a version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigResult {
    pub v: u16,
    pub version: u64,
    pub applied: bool,
    /// Why it was refused (nothing of it was applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl GatewaySettings {
    /// Checks ranges and ids (not which device types and devices exist:
    /// the gateway knows those). The error names the field and the fix.
    pub fn check(&self) -> Result<(), String> {
        if let Some(h) = self.heartbeat_s {
            if !HEARTBEAT_S.contains(&h) {
                return Err(format!(
                    "heartbeat_s: {h} is out of range ({}..={} seconds)",
                    HEARTBEAT_S.start(),
                    HEARTBEAT_S.end()
                ));
            }
        }
        for (kind, s) in &self.supervision_periods_s {
            if !SUPERVISION_S.contains(s) {
                return Err(format!(
                    "supervision_periods_s.{kind}: {s} is out of range (0 = off, at most {} seconds)",
                    SUPERVISION_S.end()
                ));
            }
        }
        for (id, d) in &self.devices {
            if !trygg_protocol::topic::is_valid_device_id(id) {
                return Err(format!(
                    "devices: {:?} is not a device id (1-64 characters of A-Z, a-z, 0-9, '-' or '_')",
                    id.chars().take(80).collect::<String>()
                ));
            }
            if let Some(s) = d.supervision_s {
                if !SUPERVISION_S.contains(&s) {
                    return Err(format!(
                        "devices.{id}.supervision_s: {s} is out of range (0 = off, at most {} seconds)",
                        SUPERVISION_S.end()
                    ));
                }
            }
            if let Some(h) = d.heartbeat_s {
                if !DEVICE_HEARTBEAT_S.contains(&h) {
                    return Err(format!(
                        "devices.{id}.heartbeat_s: {h} is out of range ({}..={} seconds)",
                        DEVICE_HEARTBEAT_S.start(),
                        DEVICE_HEARTBEAT_S.end()
                    ));
                }
            }
            if let Some(p) = d.pre_alarm_s {
                if !DEVICE_PRE_ALARM_S.contains(&p) {
                    return Err(format!(
                        "devices.{id}.pre_alarm_s: {p} is out of range ({}..={} seconds)",
                        DEVICE_PRE_ALARM_S.start(),
                        DEVICE_PRE_ALARM_S.end()
                    ));
                }
            }
        }
        Ok(())
    }
}

impl DeviceSettings {
    /// What the device is sent on its `cfg` topic, if anything.
    pub fn device_cfg(&self) -> Option<String> {
        if self.heartbeat_s.is_none() && self.pre_alarm_s.is_none() {
            return None;
        }
        let mut m = serde_json::Map::new();
        m.insert("v".into(), 1.into());
        if let Some(h) = self.heartbeat_s {
            m.insert("heartbeat_s".into(), h.into());
        }
        if let Some(p) = self.pre_alarm_s {
            m.insert("pre_alarm_s".into(), p.into());
        }
        Some(serde_json::Value::Object(m).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_round_trips_and_unknown_fields_are_refused() {
        let json = r#"{"v":1,"version":3,"settings":{"heartbeat_s":60,
            "supervision_periods_s":{"safety_button":600},
            "devices":{"button-1":{"supervision_s":300,"pre_alarm_s":5}}}}"#;
        let p: ConfigPush = serde_json::from_str(json).unwrap();
        assert_eq!(p.version, 3);
        assert!(p.settings.check().is_ok());
        assert_eq!(
            p.settings.devices["button-1"].device_cfg().unwrap(),
            r#"{"pre_alarm_s":5,"v":1}"#
        );
        let back: ConfigPush = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
        let typo = r#"{"v":1,"version":3,"settings":{"hearbeat_s":60}}"#;
        assert!(serde_json::from_str::<ConfigPush>(typo).is_err());
    }

    #[test]
    fn out_of_range_values_are_named() {
        let mut s = GatewaySettings {
            heartbeat_s: Some(0),
            ..Default::default()
        };
        assert!(s.check().unwrap_err().starts_with("heartbeat_s"));
        s.heartbeat_s = None;
        s.devices.insert(
            "b".into(),
            DeviceSettings {
                pre_alarm_s: Some(61),
                ..Default::default()
            },
        );
        assert!(s.check().unwrap_err().starts_with("devices.b.pre_alarm_s"));
        s.devices.clear();
        s.devices.insert("a b".into(), DeviceSettings::default());
        assert!(s.check().unwrap_err().contains("not a device id"));
    }
}
