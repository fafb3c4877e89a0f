//! The device register: which devices this gateway accepts events from,
//! and each one's type, room, resident (a pseudonym, never a name) and
//! supervision period.
//!
//! The running gateway owns it. It is kept in the journal's `devices`
//! table (see [`crate::journal`]), so a change survives a restart: it is
//! checked here, written in one durable transaction, and only then applied
//! to the [`Register`] in memory that ingest and supervision read. The
//! `[[devices]]` of the config seed the table at the first start (a
//! journal without a register); from then on the table wins and
//! `[[devices]]` is not read again (a start logs the config devices that
//! are not in it).
//!
//! [`Register`] is plain bookkeeping, no I/O: [`Register::check`] says
//! whether a [`Change`] may be made and [`Register::apply`] makes it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Config, Device, DeviceType};

/// The longest supervision period a device may be given (a week).
pub const MAX_SUPERVISION_S: u64 = 7 * 24 * 3600;
/// The longest room name.
pub const MAX_ROOM_CHARS: usize = 64;

/// A change to the register, as one durable transaction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Change {
    /// Pair a new device.
    Add(Device),
    /// Move every setting of `old` to `new_id`; `old` is no longer paired.
    /// The replacement gets its own key (`new_key_hash`), never the old one's.
    Swap {
        old: String,
        new_id: String,
        #[serde(default)]
        new_key_hash: Option<String>,
    },
    /// Give a paired device a new key (the old one stops working).
    Rekey {
        id: String,
        key_hash: String,
    },
    Remove(String),
}

/// A device that connected with an id not in the register, while first
/// contact was allowed: it waits for a technician to accept or reject it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingDevice {
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    /// Connection attempts so far.
    pub attempts: u64,
    /// The hash of the key it presented: its credential once accepted.
    pub key_hash: String,
}

/// The most join requests kept at once: a stranger could otherwise fill
/// the journal with made-up ids.
pub const MAX_PENDING: usize = 64;

/// Why a change was refused. `AlreadyPaired` and `NotFound` are about the
/// register's state; `Invalid` about the request itself (final: asking
/// again will not help).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error("device `{0}` is already paired with this gateway (remove it first, or swap it)")]
    AlreadyPaired(String),
    #[error("device `{0}` is not paired with this gateway")]
    NotFound(String),
    #[error("device `{0}` is not asking to join (see `trygg-gateway device pending`)")]
    NotPending(String),
    #[error("`{field}` {problem}")]
    Invalid { field: String, problem: String },
}

fn invalid(field: &str, problem: impl Into<String>) -> RegisterError {
    RegisterError::Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

/// The paired devices, by id, and the supervision periods by type.
#[derive(Clone, Debug, Default)]
pub struct Register {
    devices: BTreeMap<String, Device>,
    gateway_id: String,
    periods_s: BTreeMap<DeviceType, u64>,
}

impl Register {
    /// An empty register for the gateway of `config` (its id, its
    /// supervision periods by type), without its `[[devices]]`.
    pub fn empty(config: &Config) -> Register {
        Register {
            devices: BTreeMap::new(),
            gateway_id: config.gateway_id.clone(),
            periods_s: config.supervision.periods_s.clone(),
        }
    }

    /// The register as the config's `[[devices]]` describe it (what a
    /// first start seeds the journal with; and for tools and tests).
    pub fn from_config(config: &Config) -> Register {
        let mut r = Register::empty(config);
        r.extend(config.devices.iter().cloned());
        r
    }

    /// Puts devices in as they are (read back from the journal).
    pub fn extend(&mut self, devices: impl IntoIterator<Item = Device>) {
        for d in devices {
            self.devices.insert(d.id.clone(), d);
        }
    }

    pub fn get(&self, id: &str) -> Option<&Device> {
        self.devices.get(id)
    }

    /// Every device, by id.
    pub fn devices(&self) -> impl Iterator<Item = &Device> {
        self.devices.values()
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// The gateway this register belongs to.
    pub fn gateway_id(&self) -> &str {
        &self.gateway_id
    }

    /// The supervision periods by type.
    pub fn periods(&self) -> &BTreeMap<DeviceType, u64> {
        &self.periods_s
    }

    /// Sets periods by type (from the backend), over the config's.
    pub fn set_periods(&mut self, periods: &BTreeMap<DeviceType, u64>) {
        for (t, s) in periods {
            self.periods_s.insert(*t, *s);
        }
    }

    /// A device's supervision period: its own, else its type's, else an
    /// hour; `None` when it is not supervised (0).
    pub fn supervision_period(&self, device: &Device) -> Option<Duration> {
        let s = device
            .supervision_s
            .or_else(|| self.periods_s.get(&device.device_type).copied())
            .unwrap_or(3600);
        (s > 0).then(|| Duration::from_secs(s))
    }

    /// Whether `change` may be made, and if so the devices it writes
    /// (`Some`) and removes (`None`), in order.
    pub fn check(&self, change: &Change) -> Result<Vec<(String, Option<Device>)>, RegisterError> {
        match change {
            Change::Add(d) => {
                self.check_new_id("id", &d.id)?;
                check_settings(d)?;
                Ok(vec![(d.id.clone(), Some(d.clone()))])
            }
            Change::Swap {
                old,
                new_id,
                new_key_hash,
            } => {
                let Some(current) = self.devices.get(old) else {
                    return Err(RegisterError::NotFound(old.clone()));
                };
                self.check_new_id("new_id", new_id)?;
                check_key_hash(new_key_hash.as_deref())?;
                let moved = Device {
                    id: new_id.clone(),
                    key_hash: new_key_hash.clone(),
                    ..current.clone()
                };
                Ok(vec![(old.clone(), None), (new_id.clone(), Some(moved))])
            }
            Change::Rekey { id, key_hash } => {
                let Some(current) = self.devices.get(id) else {
                    return Err(RegisterError::NotFound(id.clone()));
                };
                check_key_hash(Some(key_hash))?;
                let rekeyed = Device {
                    key_hash: Some(key_hash.clone()),
                    ..current.clone()
                };
                Ok(vec![(id.clone(), Some(rekeyed))])
            }
            Change::Remove(id) => {
                if !self.devices.contains_key(id) {
                    return Err(RegisterError::NotFound(id.clone()));
                }
                Ok(vec![(id.clone(), None)])
            }
        }
    }

    /// Makes a change [`Register::check`] allowed (after it is durable).
    pub fn apply(&mut self, writes: &[(String, Option<Device>)]) {
        for (id, d) in writes {
            match d {
                Some(d) => self.devices.insert(id.clone(), d.clone()),
                None => self.devices.remove(id),
            };
        }
    }

    fn check_new_id(&self, field: &str, id: &str) -> Result<(), RegisterError> {
        if !trygg_protocol::topic::is_valid_device_id(id) {
            return Err(invalid(
                field,
                format!(
                    "`{}` is not a device id: 1-64 characters of A-Z, a-z, 0-9, '-' or '_'",
                    id.chars().take(80).collect::<String>()
                ),
            ));
        }
        if id.starts_with(crate::credentials::RESERVED_PREFIX) {
            return Err(invalid(
                field,
                format!(
                    "ids starting with `{}` are the gateway's own broker clients",
                    crate::credentials::RESERVED_PREFIX
                ),
            ));
        }
        if id == self.gateway_id {
            return Err(invalid(
                field,
                "is this gateway's own id (it reports its own events under it)",
            ));
        }
        if self.devices.contains_key(id) {
            return Err(RegisterError::AlreadyPaired(id.into()));
        }
        Ok(())
    }
}

fn check_key_hash(hash: Option<&str>) -> Result<(), RegisterError> {
    if hash.is_some_and(|h| !crate::credentials::is_valid_hash(h)) {
        return Err(invalid(
            "key_hash",
            "is not a `$7$...` hash as mosquitto_passwd writes it (give the key itself as `key`)",
        ));
    }
    Ok(())
}

fn check_settings(d: &Device) -> Result<(), RegisterError> {
    check_key_hash(d.key_hash.as_deref())?;
    if let Some(room) = &d.room {
        if room.trim().is_empty()
            || room.chars().count() > MAX_ROOM_CHARS
            || room.chars().any(char::is_control)
        {
            return Err(invalid(
                "room",
                format!("must be 1-{MAX_ROOM_CHARS} printable characters"),
            ));
        }
    }
    if let Some(resident) = &d.resident {
        // The same alphabet as ids: a pseudonym such as `r-7f3a`. A space
        // is refused, which also keeps most names out.
        if !trygg_protocol::topic::is_valid_device_id(resident) {
            return Err(invalid(
                "resident",
                "must be the resident's pseudonymous id (1-64 characters of A-Z, a-z, 0-9, '-' or '_'), never a name",
            ));
        }
    }
    use trygg_uplink::remote_config::{DEVICE_HEARTBEAT_S, DEVICE_PRE_ALARM_S};
    if d.heartbeat_s
        .is_some_and(|h| !DEVICE_HEARTBEAT_S.contains(&h))
    {
        return Err(invalid(
            "heartbeat_s",
            format!("must be {DEVICE_HEARTBEAT_S:?} seconds"),
        ));
    }
    if d.pre_alarm_s
        .is_some_and(|p| !DEVICE_PRE_ALARM_S.contains(&p))
    {
        return Err(invalid(
            "pre_alarm_s",
            format!("must be {DEVICE_PRE_ALARM_S:?} seconds"),
        ));
    }
    if d.supervision_s.is_some_and(|s| s > MAX_SUPERVISION_S) {
        return Err(invalid(
            "supervision_s",
            format!("must be 0 (off) to {MAX_SUPERVISION_S} (a week)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(id: &str) -> Device {
        Device {
            id: id.into(),
            device_type: DeviceType::SafetyButton,
            room: Some("kitchen".into()),
            resident: Some("r-42".into()),
            supervision_s: Some(120),
            key_hash: None,
            heartbeat_s: None,
            pre_alarm_s: None,
        }
    }

    fn change(r: &mut Register, c: Change) -> Result<(), RegisterError> {
        let writes = r.check(&c)?;
        r.apply(&writes);
        Ok(())
    }

    #[test]
    fn the_config_seeds_the_register_with_its_devices_and_periods() {
        let config = Config::default_config();
        let r = Register::from_config(&config);
        assert_eq!(r.len(), config.devices.len());
        let b = r.get("button-1").unwrap();
        assert_eq!(r.supervision_period(b), Some(Duration::from_secs(900)));
    }

    #[test]
    fn an_added_device_is_paired_with_all_its_settings() {
        let mut r = Register::from_config(&Config::default_config());
        change(&mut r, Change::Add(device("button-2"))).unwrap();
        assert_eq!(r.get("button-2"), Some(&device("button-2")));
        assert_eq!(
            r.supervision_period(r.get("button-2").unwrap()),
            Some(Duration::from_secs(120))
        );
    }

    #[test]
    fn an_id_already_paired_is_refused_and_nothing_changes() {
        let mut r = Register::from_config(&Config::default_config());
        let before = r.get("button-1").cloned();
        assert_eq!(
            change(&mut r, Change::Add(device("button-1"))),
            Err(RegisterError::AlreadyPaired("button-1".into()))
        );
        assert_eq!(r.get("button-1").cloned(), before);
    }

    #[test]
    fn bad_ids_and_settings_are_refused_with_the_field_named() {
        let mut r = Register::from_config(&Config::default_config());
        let gw = Config::default_config().gateway_id;
        for (d, field) in [
            (device("a b"), "id"),
            (device(""), "id"),
            (device(&gw), "id"),
            (device("trygg-gateway-x"), "id"),
            (
                Device {
                    key_hash: Some("plain".into()),
                    ..device("x-1")
                },
                "key_hash",
            ),
            (
                Device {
                    resident: Some("Kari Nordmann".into()),
                    ..device("x-1")
                },
                "resident",
            ),
            (
                Device {
                    room: Some(" ".into()),
                    ..device("x-1")
                },
                "room",
            ),
            (
                Device {
                    supervision_s: Some(MAX_SUPERVISION_S + 1),
                    heartbeat_s: None,
                    pre_alarm_s: None,
                    ..device("x-1")
                },
                "supervision_s",
            ),
        ] {
            match change(&mut r, Change::Add(d)) {
                Err(RegisterError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn swap_carries_every_setting_to_the_new_id_and_unpairs_the_old() {
        let mut r = Register::from_config(&Config::default_config());
        change(&mut r, Change::Add(device("button-2"))).unwrap();
        change(
            &mut r,
            Change::Swap {
                old: "button-2".into(),
                new_id: "button-3".into(),
                new_key_hash: None,
            },
        )
        .unwrap();
        assert!(r.get("button-2").is_none());
        assert_eq!(r.get("button-3"), Some(&device("button-3")));
    }

    #[test]
    fn swap_refuses_an_unknown_old_or_a_paired_new_id() {
        let mut r = Register::from_config(&Config::default_config());
        let swap = |old: &str, new_id: &str| Change::Swap {
            old: old.into(),
            new_id: new_id.into(),
            new_key_hash: None,
        };
        assert_eq!(
            change(&mut r, swap("nope", "x-1")),
            Err(RegisterError::NotFound("nope".into()))
        );
        assert_eq!(
            change(&mut r, swap("button-1", "fall-1")),
            Err(RegisterError::AlreadyPaired("fall-1".into()))
        );
        assert!(r.get("button-1").is_some() && r.get("fall-1").is_some());
    }

    #[test]
    fn a_removed_device_is_no_longer_paired() {
        let mut r = Register::from_config(&Config::default_config());
        change(&mut r, Change::Remove("door-1".into())).unwrap();
        assert!(r.get("door-1").is_none());
        assert_eq!(
            change(&mut r, Change::Remove("door-1".into())),
            Err(RegisterError::NotFound("door-1".into()))
        );
    }

    #[test]
    fn swap_gives_the_replacement_its_own_key_and_rekey_replaces_a_key() {
        let mut r = Register::from_config(&Config::default_config());
        let old_hash = crate::credentials::hash_key("old-key-0123456789");
        let new_hash = crate::credentials::hash_key("new-key-0123456789");
        change(
            &mut r,
            Change::Add(Device {
                key_hash: Some(old_hash.clone()),
                ..device("button-2")
            }),
        )
        .unwrap();
        change(
            &mut r,
            Change::Swap {
                old: "button-2".into(),
                new_id: "button-3".into(),
                new_key_hash: Some(new_hash.clone()),
            },
        )
        .unwrap();
        assert_eq!(r.get("button-3").unwrap().key_hash, Some(new_hash));
        let third = crate::credentials::hash_key("third-key-0123456789");
        change(
            &mut r,
            Change::Rekey {
                id: "button-3".into(),
                key_hash: third.clone(),
            },
        )
        .unwrap();
        assert_eq!(r.get("button-3").unwrap().key_hash, Some(third));
        assert_eq!(r.get("button-3").unwrap().room, device("x").room);
        assert!(matches!(
            change(
                &mut r,
                Change::Rekey {
                    id: "nope".into(),
                    key_hash: old_hash
                }
            ),
            Err(RegisterError::NotFound(_))
        ));
    }
}
