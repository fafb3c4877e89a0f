//! Gateway settings set at the backend and pushed to the gateway
//! (`trygg_uplink::remote_config`): versioned, kept, confirmed, audited.
//!
//! Setting a gateway's settings stores a new version (the previous plus
//! one) with who set it, in one durable transaction with its audit entry,
//! and only then publishes it, retained, on the gateway's config topic. The
//! gateway answers on `config-result`; the answer is stored with the
//! version it names and audited as the gateway's. A gateway that is away
//! gets the retained version when it comes back; the bridge publishes the
//! latest version of every gateway again whenever it (re)subscribes.
//!
//! Table `gateway_settings`: gateway id -> [`GatewaySettingsRecord`] (JSON).

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use trygg_uplink::remote_config::{ConfigPush, ConfigResult, GatewaySettings};

use crate::access::{append_audit, AuditEntry};
use crate::store::{Store, StoreError};

const GATEWAY_SETTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("gateway_settings");
/// Gateways taken off the service: id -> when (Unix ms).
pub(crate) const DECOMMISSIONED: TableDefinition<&str, u64> =
    TableDefinition::new("decommissioned");

/// One gateway's settings as the backend keeps them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GatewaySettingsRecord {
    pub gateway: String,
    pub version: u64,
    pub settings: GatewaySettings,
    pub set_by: String,
    pub set_ms: u64,
    /// `pending` until the gateway answers this version, then `applied` or
    /// `refused`.
    pub state: String,
    /// The gateway's reason, when it refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_ms: Option<u64>,
}

impl GatewaySettingsRecord {
    /// The message that carries this version to the gateway.
    pub fn push(&self) -> ConfigPush {
        ConfigPush {
            v: 1,
            version: self.version,
            settings: self.settings.clone(),
        }
    }
}

/// A publish for the uplink's connection to carry.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Outgoing {
    pub fn config(record: &GatewaySettingsRecord) -> Outgoing {
        Outgoing {
            topic: trygg_uplink::remote_config::config_topic(&record.gateway),
            payload: serde_json::to_vec(&record.push()).expect("pushes serialize"),
            retain: true,
        }
    }
}

fn corrupt(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

impl Store {
    /// Stores `settings` as the gateway's next version, audited as
    /// `actor`'s, durably. The caller then publishes it.
    pub fn set_gateway_settings(
        &self,
        gateway: &str,
        settings: GatewaySettings,
        actor: &str,
        remote: &str,
        now_ms: u64,
    ) -> Result<GatewaySettingsRecord, StoreError> {
        let txn = self.begin_durable()?;
        let record = {
            let mut t = txn.open_table(GATEWAY_SETTINGS)?;
            let version = match t.get(gateway)? {
                Some(v) => {
                    serde_json::from_slice::<GatewaySettingsRecord>(v.value())
                        .map_err(corrupt)?
                        .version
                }
                None => 0,
            } + 1;
            let record = GatewaySettingsRecord {
                gateway: gateway.to_string(),
                version,
                settings,
                set_by: actor.to_string(),
                set_ms: now_ms,
                state: "pending".into(),
                error: None,
                answered_ms: None,
            };
            let json = serde_json::to_vec(&record).map_err(corrupt)?;
            t.insert(gateway, json.as_slice())?;
            record
        };
        append_audit(
            &txn,
            AuditEntry::new(
                actor,
                "gateway_settings",
                &format!("gateway/{gateway}"),
                &format!(
                    "ok: version {} {}",
                    record.version,
                    serde_json::to_string(&record.settings).unwrap_or_default()
                ),
                remote,
                now_ms,
            ),
        )?;
        txn.commit()?;
        Ok(record)
    }

    /// Records a gateway's answer to a version, audited as the gateway's.
    /// An answer to another version than the latest is audited only.
    pub fn gateway_settings_answered(
        &self,
        gateway: &str,
        result: &ConfigResult,
        now_ms: u64,
    ) -> Result<Option<GatewaySettingsRecord>, StoreError> {
        let txn = self.begin_durable()?;
        let updated = {
            let mut t = txn.open_table(GATEWAY_SETTINGS)?;
            let current = match t.get(gateway)? {
                Some(v) => Some(
                    serde_json::from_slice::<GatewaySettingsRecord>(v.value()).map_err(corrupt)?,
                ),
                None => None,
            };
            match current {
                Some(mut r) if r.version == result.version => {
                    r.state = if result.applied { "applied" } else { "refused" }.into();
                    r.error = result.error.clone();
                    r.answered_ms = Some(now_ms);
                    let json = serde_json::to_vec(&r).map_err(corrupt)?;
                    t.insert(gateway, json.as_slice())?;
                    Some(r)
                }
                _ => None,
            }
        };
        let outcome = match (&result.error, result.applied) {
            (_, true) => format!("ok: version {} applied", result.version),
            (Some(e), false) => format!("refused: version {}: {e}", result.version),
            (None, false) => format!("refused: version {}", result.version),
        };
        append_audit(
            &txn,
            AuditEntry::new(
                &format!("gateway/{gateway}"),
                "gateway_settings_answer",
                &format!("gateway/{gateway}"),
                &outcome,
                "",
                now_ms,
            ),
        )?;
        txn.commit()?;
        Ok(updated)
    }

    /// Takes a gateway off the service at its own request (it has delivered
    /// everything and is about to wipe itself), audited as the gateway's.
    /// Its supervision ends; its certificate is revoked by the caller.
    pub fn decommission_gateway(
        &self,
        gateway: &str,
        pending: u64,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let txn = self.begin_durable()?;
        txn.open_table(DECOMMISSIONED)?.insert(gateway, now_ms)?;
        append_audit(
            &txn,
            AuditEntry::new(
                &format!("gateway/{gateway}"),
                "gateway_decommission",
                &format!("gateway/{gateway}"),
                &if pending == 0 {
                    "ok: everything delivered; the gateway wipes itself".to_string()
                } else {
                    format!("ok: {pending} events were NOT delivered; the gateway wipes itself")
                },
                "",
                now_ms,
            ),
        )?;
        txn.commit()?;
        Ok(())
    }

    /// When `gateway` was decommissioned, if it was.
    pub fn decommissioned(&self, gateway: &str) -> Result<Option<u64>, StoreError> {
        let txn = self.db().begin_read()?;
        let t = match txn.open_table(DECOMMISSIONED) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(t.get(gateway)?.map(|v| v.value()))
    }

    /// A gateway's settings, if any were set.
    pub fn gateway_settings(
        &self,
        gateway: &str,
    ) -> Result<Option<GatewaySettingsRecord>, StoreError> {
        let txn = self.db().begin_read()?;
        let t = match txn.open_table(GATEWAY_SETTINGS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        match t.get(gateway)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(corrupt)?)),
            None => Ok(None),
        }
    }

    /// Every gateway's settings (to publish again after a reconnect).
    pub fn all_gateway_settings(&self) -> Result<Vec<GatewaySettingsRecord>, StoreError> {
        let txn = self.db().begin_read()?;
        let t = match txn.open_table(GATEWAY_SETTINGS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for item in t.iter()? {
            let (_, v) = item?;
            out.push(serde_json::from_slice(v.value()).map_err(corrupt)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_up_and_answers_land_on_their_version_audited() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let s = GatewaySettings {
            heartbeat_s: Some(60),
            ..Default::default()
        };
        let r1 = store
            .set_gateway_settings("gw-1", s.clone(), "admin", "127.0.0.1", 1)
            .unwrap();
        let r2 = store
            .set_gateway_settings("gw-1", s, "admin", "127.0.0.1", 2)
            .unwrap();
        assert_eq!(
            (r1.version, r2.version, r2.state.as_str()),
            (1, 2, "pending")
        );
        // A late answer to version 1 does not mark version 2.
        let late = ConfigResult {
            v: 1,
            version: 1,
            applied: true,
            error: None,
        };
        assert!(store
            .gateway_settings_answered("gw-1", &late, 3)
            .unwrap()
            .is_none());
        let refused = ConfigResult {
            v: 1,
            version: 2,
            applied: false,
            error: Some("devices.x: no such device".into()),
        };
        let r = store
            .gateway_settings_answered("gw-1", &refused, 4)
            .unwrap()
            .unwrap();
        assert_eq!(r.state, "refused");
        assert_eq!(store.gateway_settings("gw-1").unwrap().unwrap(), r);
        assert_eq!(store.all_gateway_settings().unwrap().len(), 1);
        let audit = store
            .audit(&crate::access::AuditQuery {
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
        assert_eq!(
            actions,
            [
                "gateway_settings_answer",
                "gateway_settings_answer",
                "gateway_settings",
                "gateway_settings"
            ]
        );
        assert!(audit[0].outcome.contains("no such device"));
        assert_eq!(audit[0].actor, "gateway/gw-1");
    }
}
