//! Settings pushed from the backend (`trygg_uplink::remote_config`): what a
//! version changes here, decided without I/O.
//!
//! A version is applied whole or not at all: every device it names must be
//! paired, every device type known, every value in range. Applied, it is
//! kept in the journal (with the register entries it changes, in one
//! durable transaction) and answered `applied`; the supervision periods
//! and the heartbeat it sets are put back at every start. Refused, nothing
//! changes and the answer says why.

use std::collections::BTreeMap;

use trygg_uplink::remote_config::{ConfigPush, ConfigResult};

use crate::config::{Device, DeviceType};
use crate::journal::RemoteConfigState;
use crate::register::Register;

/// What an accepted version changes.
#[derive(Debug)]
pub(crate) struct Plan {
    pub state: RemoteConfigState,
    /// Register entries as they become.
    pub writes: Vec<(String, Device)>,
    pub periods: BTreeMap<DeviceType, u64>,
}

/// A device type by its name in the config (`safety_button`, ...).
fn device_type(name: &str) -> Option<DeviceType> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
}

/// What `push` changes at a gateway whose register is `register`, or why
/// it is refused.
pub(crate) fn plan(push: &ConfigPush, register: &Register, now_ms: u64) -> Result<Plan, String> {
    if push.v != 1 {
        return Err(format!(
            "schema version {} is not understood (this gateway reads 1)",
            push.v
        ));
    }
    if push.version == 0 {
        return Err("version must count up from 1".into());
    }
    let s = &push.settings;
    s.check()?;
    let mut periods = BTreeMap::new();
    for (name, secs) in &s.supervision_periods_s {
        let t = device_type(name).ok_or_else(|| {
            format!("supervision_periods_s: {name:?} is not a device type this gateway knows")
        })?;
        periods.insert(t, *secs);
    }
    let mut writes = Vec::new();
    for (id, d) in &s.devices {
        let Some(current) = register.get(id) else {
            return Err(format!(
                "devices.{id}: no such device is paired at this gateway (pair it first, or take it out of the settings)"
            ));
        };
        let mut next = current.clone();
        if let Some(v) = d.supervision_s {
            next.supervision_s = Some(v);
        }
        if let Some(v) = d.heartbeat_s {
            next.heartbeat_s = Some(v);
        }
        if let Some(v) = d.pre_alarm_s {
            next.pre_alarm_s = Some(v);
        }
        if &next != current {
            writes.push((id.clone(), next));
        }
    }
    Ok(Plan {
        state: RemoteConfigState {
            applied_version: push.version,
            settings: s.clone(),
            last: ConfigResult {
                v: 1,
                version: push.version,
                applied: true,
                error: None,
            },
            at_ms: now_ms,
        },
        writes,
        periods,
    })
}

/// The state kept for a refused version: what was applied stays.
pub(crate) fn refused(
    prev: Option<&RemoteConfigState>,
    version: u64,
    error: String,
    now_ms: u64,
) -> RemoteConfigState {
    RemoteConfigState {
        applied_version: prev.map_or(0, |p| p.applied_version),
        settings: prev.map(|p| p.settings.clone()).unwrap_or_default(),
        last: ConfigResult {
            v: 1,
            version,
            applied: false,
            error: Some(error),
        },
        at_ms: now_ms,
    }
}

/// The supervision periods an applied state sets.
pub(crate) fn periods_of(state: &RemoteConfigState) -> BTreeMap<DeviceType, u64> {
    state
        .settings
        .supervision_periods_s
        .iter()
        .filter_map(|(n, s)| device_type(n).map(|t| (t, *s)))
        .collect()
}

/// Reads a push, or says why not; the version is read from what can be
/// read, so the refusal can name it.
pub(crate) fn parse(payload: &[u8]) -> Result<ConfigPush, (u64, String)> {
    if payload.len() > trygg_uplink::remote_config::MAX_CONFIG_BYTES {
        return Err((
            0,
            format!(
                "{} bytes is more than a config push may be ({} bytes)",
                payload.len(),
                trygg_uplink::remote_config::MAX_CONFIG_BYTES
            ),
        ));
    }
    serde_json::from_slice::<ConfigPush>(payload).map_err(|e| {
        let version = serde_json::from_slice::<serde_json::Value>(payload)
            .ok()
            .and_then(|v| v.get("version").and_then(|v| v.as_u64()))
            .unwrap_or(0);
        (version, format!("not a config push: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use trygg_uplink::remote_config::{DeviceSettings, GatewaySettings};

    fn register() -> Register {
        let config: crate::config::Config =
            toml::from_str(include_str!("../trygg-gateway.toml")).unwrap();
        Register::from_config(&config)
    }

    fn push(version: u64, settings: GatewaySettings) -> ConfigPush {
        ConfigPush {
            v: 1,
            version,
            settings,
        }
    }

    #[test]
    fn a_version_sets_periods_and_device_settings_of_paired_devices() {
        let r = register();
        let mut s = GatewaySettings::default();
        s.supervision_periods_s.insert("safety_button".into(), 600);
        s.devices.insert(
            "button-1".into(),
            DeviceSettings {
                supervision_s: Some(300),
                pre_alarm_s: Some(5),
                heartbeat_s: None,
            },
        );
        let p = plan(&push(2, s), &r, 7).unwrap();
        assert_eq!(p.periods[&DeviceType::SafetyButton], 600);
        assert_eq!(p.writes.len(), 1);
        let (id, d) = &p.writes[0];
        assert_eq!(id, "button-1");
        assert_eq!((d.supervision_s, d.pre_alarm_s), (Some(300), Some(5)));
        assert_eq!(d.room, r.get("button-1").unwrap().room, "the rest stays");
        assert_eq!(d.cfg_payload().unwrap(), r#"{"pre_alarm_s":5,"v":1}"#);
        assert!(p.state.last.applied);
    }

    #[test]
    fn an_unknown_device_or_type_or_a_bad_value_refuses_the_whole_version() {
        let r = register();
        let mut s = GatewaySettings::default();
        s.devices.insert("ghost".into(), DeviceSettings::default());
        assert!(plan(&push(1, s), &r, 0)
            .unwrap_err()
            .contains("no such device"));
        let mut s = GatewaySettings::default();
        s.supervision_periods_s.insert("toaster".into(), 60);
        assert!(plan(&push(1, s), &r, 0).unwrap_err().contains("toaster"));
        let s = GatewaySettings {
            heartbeat_s: Some(99_999),
            ..Default::default()
        };
        assert!(plan(&push(1, s), &r, 0)
            .unwrap_err()
            .contains("heartbeat_s"));
        assert!(plan(&push(0, GatewaySettings::default()), &r, 0).is_err());
    }

    #[test]
    fn a_malformed_push_is_refused_naming_its_version_where_it_can() {
        assert_eq!(
            parse(br#"{"v":1,"version":4,"settings":{"x":1}}"#)
                .unwrap_err()
                .0,
            4
        );
        assert_eq!(parse(b"junk").unwrap_err().0, 0);
        assert!(parse(&vec![b' '; 70_000])
            .unwrap_err()
            .1
            .contains("more than"));
        assert!(parse(br#"{"v":1,"version":4,"settings":{}}"#).is_ok());
    }
}
