//! Who may connect to the embedded device broker, and what they may do:
//! the gateway's side of rumqttd's authenticator and authorizer, backed by
//! the device register (read live, so pairing, swap and removal take
//! effect at the next connect, and a removed device's next publish or
//! subscribe closes its connection).
//!
//! A CONNECT must carry client id = username = device id and password =
//! the device's key. An id not in the register, while first contact is
//! allowed, may connect (confined to its own topics like any device) and
//! becomes a join request ([`PendingDevice`]) that a technician accepts or
//! rejects; its events get no receipt, so it keeps them until then.
//! Repeated wrong keys for a paired id are raised as
//! `device_auth_failed` (a possible attack), at most once per device per
//! [`RAISE_EVERY`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use trygg_protocol::EventKind;

use crate::credentials::{self, Access, Identity};
use crate::journal::SystemEvent;
use crate::register::{PendingDevice, Register, MAX_PENDING};

/// Wrong keys for one paired id within [`WRONG_KEY_WINDOW`] that raise
/// `device_auth_failed`.
pub const WRONG_KEYS_TO_RAISE: u32 = 3;
pub const WRONG_KEY_WINDOW: Duration = Duration::from_secs(600);
/// At most one `device_auth_failed` per device this often.
pub const RAISE_EVERY: Duration = Duration::from_secs(600);
/// A join request's attempts are written to the journal at most this
/// often (its first one at once).
pub const PENDING_WRITE_EVERY: Duration = Duration::from_secs(30);

/// What became of a CONNECT.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Gateway,
    Device,
    /// An unknown id, let in as a join request. `write` when the journal
    /// should record the request now.
    Pending {
        write: bool,
    },
    /// Refused: a stable code for metrics and the reason for the log.
    Refused {
        code: &'static str,
        reason: String,
        /// A `device_auth_failed` to raise (repeated wrong keys).
        raise: Option<SystemEvent>,
    },
}

#[derive(Default)]
struct WrongKeys {
    window_start: Option<Instant>,
    count: u32,
    last_raised: Option<Instant>,
}

/// The gate of the embedded broker.
pub struct DeviceGate {
    register: Arc<RwLock<Register>>,
    /// Join requests as the journal keeps them (and attempts since).
    pub pending: Mutex<BTreeMap<String, (PendingDevice, Option<Instant>)>>,
    gateway_user: String,
    gateway_key_hash: String,
    first_contact: AtomicBool,
    /// A pairing window a technician opened: first contact is allowed
    /// until then even when the config turns it off.
    window_until: Mutex<Option<Instant>>,
    wrong: Mutex<HashMap<String, WrongKeys>>,
}

/// The longest pairing window.
pub const MAX_WINDOW: Duration = Duration::from_secs(3600);

fn refused(code: &'static str, reason: String) -> Verdict {
    Verdict::Refused {
        code,
        reason,
        raise: None,
    }
}

impl DeviceGate {
    pub fn new(
        register: Arc<RwLock<Register>>,
        pending: Vec<(String, PendingDevice)>,
        gateway_user: String,
        gateway_key_hash: String,
        first_contact: bool,
    ) -> DeviceGate {
        DeviceGate {
            register,
            pending: Mutex::new(
                pending
                    .into_iter()
                    .map(|(id, p)| (id, (p, Some(Instant::now()))))
                    .collect(),
            ),
            gateway_user,
            gateway_key_hash,
            first_contact: AtomicBool::new(first_contact),
            window_until: Mutex::new(None),
            wrong: Mutex::new(HashMap::new()),
        }
    }

    /// Whether an unknown device may ask to join now: first contact is on,
    /// or a pairing window is open.
    pub fn first_contact(&self) -> bool {
        self.first_contact.load(Ordering::Relaxed) || self.window_left().is_some()
    }

    /// Opens a pairing window of `length` (at most [`MAX_WINDOW`]).
    pub fn open_window(&self, length: Duration) {
        if let Ok(mut w) = self.window_until.lock() {
            *w = Some(Instant::now() + length.min(MAX_WINDOW));
        }
    }

    /// How long the pairing window stays open, if one is.
    pub fn window_left(&self) -> Option<Duration> {
        let until = (*self.window_until.lock().ok()?)?;
        until
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }

    /// The join requests, by id.
    pub fn pending_list(&self) -> Vec<(String, PendingDevice)> {
        self.pending
            .lock()
            .map(|m| {
                m.iter()
                    .map(|(id, (p, _))| (id.clone(), p.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn pending_get(&self, id: &str) -> Option<PendingDevice> {
        self.pending
            .lock()
            .ok()
            .and_then(|m| m.get(id).map(|(p, _)| p.clone()))
    }

    pub fn is_pending(&self, id: &str) -> bool {
        self.pending.lock().is_ok_and(|m| m.contains_key(id))
    }

    /// Forgets a join request (accepted or rejected).
    pub fn pending_remove(&self, id: &str) {
        if let Ok(mut m) = self.pending.lock() {
            m.remove(id);
        }
    }

    /// Decides a CONNECT.
    pub fn authenticate(
        &self,
        client_id: &str,
        username: &str,
        password: &str,
        now_ms: u64,
    ) -> Verdict {
        if username == self.gateway_user {
            return if client_id == username
                && credentials::verify_key(password, &self.gateway_key_hash)
            {
                Verdict::Gateway
            } else {
                refused(
                    "wrong_key",
                    format!("wrong key for the gateway's own client `{username}`"),
                )
            };
        }
        // Client id = username, or username + '.' + anything (a second
        // client of the same device, e.g. `mosquitto_sub -i button-1.sub`):
        // never another device's id, so no device can push another off.
        let own_client_id = client_id == username
            || client_id
                .strip_prefix(username)
                .is_some_and(|rest| rest.starts_with('.'));
        if !own_client_id {
            let user: String = username.chars().take(80).collect();
            return refused(
                "client_id_mismatch",
                format!(
                    "client id `{}` is not username `{user}` (nor `{user}.something`): a device connects with its device id as both",
                    client_id.chars().take(80).collect::<String>(),
                ),
            );
        }
        if !trygg_protocol::topic::is_valid_device_id(username)
            || username.starts_with(credentials::RESERVED_PREFIX)
        {
            return refused(
                "bad_device_id",
                format!(
                    "username `{}` is not a device id (1-64 characters of A-Z, a-z, 0-9, '-' or '_')",
                    username.chars().take(80).collect::<String>()
                ),
            );
        }
        let paired = self.register.read().ok().and_then(|r| {
            r.get(username)
                .map(|d| (d.key_hash.clone(), d.resident.clone(), d.room.clone()))
        });
        if let Some((hash, resident, room)) = paired {
            let Some(hash) = hash else {
                return refused(
                    "no_key",
                    format!("device `{username}` is paired without a key: give it one with `trygg-gateway device rekey {username} --key KEY` (the key on its label)"),
                );
            };
            if credentials::verify_key(password, &hash) {
                if let Ok(mut w) = self.wrong.lock() {
                    w.remove(username);
                }
                return Verdict::Device;
            }
            let raise = self.wrong_key(username, resident, room);
            return Verdict::Refused {
                code: "wrong_key",
                reason: format!("wrong key for paired device `{username}` (a device with the wrong key, or someone trying keys)"),
                raise,
            };
        }
        // Not paired: a join request, if first contact is allowed.
        let Ok(mut pending) = self.pending.lock() else {
            return refused("internal", "join requests unavailable".into());
        };
        if let Some((request, written)) = pending.get_mut(username) {
            if !credentials::verify_key(password, &request.key_hash) {
                return refused(
                    "wrong_key",
                    format!("device `{username}` asked to join before with another key; reject its request (`trygg-gateway device reject {username}`) to let it ask again"),
                );
            }
            request.attempts += 1;
            request.last_seen_ms = now_ms;
            let write = written.is_none_or(|at| at.elapsed() >= PENDING_WRITE_EVERY);
            if write {
                *written = Some(Instant::now());
            }
            return Verdict::Pending { write };
        }
        if !self.first_contact() {
            return refused(
                "unknown_device",
                format!("device `{username}` is not paired with this gateway: pair it with `trygg-gateway device add {username} --type TYPE --key KEY`"),
            );
        }
        if credentials::check_key(password).is_err() {
            return refused(
                "bad_key",
                format!("unknown device `{username}` asked to join with a key that is not one ({}-{} visible characters)", credentials::MIN_KEY_CHARS, credentials::MAX_KEY_CHARS),
            );
        }
        if pending.len() >= MAX_PENDING {
            return refused(
                "too_many_pending",
                format!("{MAX_PENDING} devices are already asking to join: accept or reject them (`trygg-gateway device pending`) before `{username}` can ask"),
            );
        }
        pending.insert(
            username.to_string(),
            (
                PendingDevice {
                    first_seen_ms: now_ms,
                    last_seen_ms: now_ms,
                    attempts: 1,
                    key_hash: credentials::hash_key(password),
                },
                Some(Instant::now()),
            ),
        );
        Verdict::Pending { write: true }
    }

    fn wrong_key(
        &self,
        id: &str,
        resident: Option<String>,
        room: Option<String>,
    ) -> Option<SystemEvent> {
        let mut all = self.wrong.lock().ok()?;
        let w = all.entry(id.to_string()).or_default();
        let now = Instant::now();
        if w.window_start
            .is_none_or(|s| now.duration_since(s) > WRONG_KEY_WINDOW)
        {
            w.window_start = Some(now);
            w.count = 0;
        }
        w.count += 1;
        if w.count < WRONG_KEYS_TO_RAISE
            || w.last_raised
                .is_some_and(|t| now.duration_since(t) < RAISE_EVERY)
        {
            return None;
        }
        w.last_raised = Some(now);
        Some(SystemEvent {
            kind: EventKind::DeviceAuthFailed,
            subject: Some(id.to_string()),
            value: Some(w.count as f32),
            resident,
            room,
        })
    }

    /// Whether an authenticated client may publish or subscribe to `topic`.
    /// A device no longer paired nor asking to join may do nothing (its
    /// connection is closed).
    pub fn authorize(&self, username: Option<&str>, access: Access, topic: &str) -> bool {
        let Some(user) = username else {
            return false;
        };
        if user == self.gateway_user {
            return credentials::allowed(Identity::Gateway, access, topic);
        }
        let known =
            self.register.read().is_ok_and(|r| r.get(user).is_some()) || self.is_pending(user);
        known && credentials::allowed(Identity::Device(user), access, topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Device};

    const KEY: &str = "0123456789abcdef0123";

    fn gate(first_contact: bool) -> (DeviceGate, Arc<RwLock<Register>>) {
        let config = Config::default_config();
        let mut r = Register::from_config(&config);
        r.extend([Device {
            key_hash: Some(credentials::hash_key(KEY)),
            ..config.device("button-1").unwrap().clone()
        }]);
        let r = Arc::new(RwLock::new(r));
        let g = DeviceGate::new(
            r.clone(),
            vec![],
            "trygg-gateway-gw".into(),
            credentials::hash_key("gateway-key-0123456789"),
            first_contact,
        );
        (g, r)
    }

    #[test]
    fn a_paired_device_connects_with_its_key_and_only_with_it() {
        let (g, _) = gate(false);
        assert_eq!(
            g.authenticate("button-1", "button-1", KEY, 1),
            Verdict::Device
        );
        // A second client of the same device (e.g. mosquitto_sub).
        assert_eq!(
            g.authenticate("button-1.sub", "button-1", KEY, 1),
            Verdict::Device
        );
        for (client, user, key, code) in [
            ("button-1", "button-1", "wrong-key-0123456789", "wrong_key"),
            ("other", "button-1", KEY, "client_id_mismatch"),
            ("button-10", "button-1", KEY, "client_id_mismatch"),
            ("button-1-x", "button-1", KEY, "client_id_mismatch"),
            ("fall-1", "fall-1", KEY, "no_key"),
            ("new-1", "new-1", KEY, "unknown_device"),
            ("a b", "a b", KEY, "bad_device_id"),
            ("trygg-gateway-gw", "trygg-gateway-gw", KEY, "wrong_key"),
        ] {
            match g.authenticate(client, user, key, 1) {
                Verdict::Refused {
                    code: c, reason, ..
                } => assert_eq!(c, code, "{user}: {reason}"),
                other => panic!("{user}: {other:?}"),
            }
        }
        assert_eq!(
            g.authenticate(
                "trygg-gateway-gw",
                "trygg-gateway-gw",
                "gateway-key-0123456789",
                1
            ),
            Verdict::Gateway
        );
    }

    #[test]
    fn repeated_wrong_keys_raise_device_auth_failed_once_per_period() {
        let (g, _) = gate(false);
        let mut raised = Vec::new();
        for _ in 0..10 {
            if let Verdict::Refused { raise: Some(e), .. } =
                g.authenticate("button-1", "button-1", "wrong-key-0123456789", 1)
            {
                raised.push(e);
            }
        }
        assert_eq!(raised.len(), 1, "{raised:?}");
        assert_eq!(raised[0].kind, EventKind::DeviceAuthFailed);
        assert_eq!(raised[0].subject.as_deref(), Some("button-1"));
        assert_eq!(raised[0].value, Some(WRONG_KEYS_TO_RAISE as f32));
    }

    #[test]
    fn first_contact_lets_an_unknown_device_ask_to_join_with_its_key() {
        let (g, _) = gate(true);
        assert_eq!(
            g.authenticate("new-1", "new-1", KEY, 5),
            Verdict::Pending { write: true }
        );
        // Again soon: counted, not written at once.
        assert_eq!(
            g.authenticate("new-1", "new-1", KEY, 6),
            Verdict::Pending { write: false }
        );
        let p = g.pending_get("new-1").unwrap();
        assert_eq!((p.first_seen_ms, p.last_seen_ms, p.attempts), (5, 6, 2));
        assert!(credentials::verify_key(KEY, &p.key_hash));
        // Another key for the same id is refused.
        assert!(matches!(
            g.authenticate("new-1", "new-1", "another-key-0123456789", 7),
            Verdict::Refused {
                code: "wrong_key",
                ..
            }
        ));
        // A join request is confined to its own topics.
        assert!(g.authorize(Some("new-1"), Access::Publish, "trygg/v1/dev/new-1/evt"));
        assert!(!g.authorize(Some("new-1"), Access::Publish, "trygg/v1/dev/button-1/evt"));
        // A key too short to be one is refused.
        assert!(matches!(
            g.authenticate("new-2", "new-2", "short", 7),
            Verdict::Refused {
                code: "bad_key",
                ..
            }
        ));
    }

    #[test]
    fn a_pairing_window_lets_unknown_devices_ask_while_it_is_open() {
        let (g, _) = gate(false);
        assert!(matches!(
            g.authenticate("new-1", "new-1", KEY, 1),
            Verdict::Refused {
                code: "unknown_device",
                ..
            }
        ));
        g.open_window(Duration::from_millis(300));
        assert!(g.window_left().is_some());
        assert_eq!(
            g.authenticate("new-1", "new-1", KEY, 2),
            Verdict::Pending { write: true }
        );
        std::thread::sleep(Duration::from_millis(350));
        assert!(g.window_left().is_none());
        assert!(matches!(
            g.authenticate("new-2", "new-2", KEY, 3),
            Verdict::Refused {
                code: "unknown_device",
                ..
            }
        ));
        // A request made while it was open stays until handled.
        assert!(g.is_pending("new-1"));
    }

    #[test]
    fn join_requests_are_bounded() {
        let (g, _) = gate(true);
        for i in 0..MAX_PENDING {
            let id = format!("new-{i}");
            assert!(matches!(
                g.authenticate(&id, &id, KEY, 1),
                Verdict::Pending { .. }
            ));
        }
        assert!(matches!(
            g.authenticate("one-more", "one-more", KEY, 1),
            Verdict::Refused {
                code: "too_many_pending",
                ..
            }
        ));
    }

    #[test]
    fn a_removed_device_may_do_nothing_more() {
        let (g, r) = gate(false);
        assert!(g.authorize(
            Some("button-1"),
            Access::Publish,
            "trygg/v1/dev/button-1/evt"
        ));
        assert!(!g.authorize(Some("button-1"), Access::Publish, "trygg/v1/dev/fall-1/evt"));
        assert!(!g.authorize(None, Access::Publish, "trygg/v1/dev/button-1/evt"));
        let writes = r
            .read()
            .unwrap()
            .check(&crate::register::Change::Remove("button-1".into()))
            .unwrap();
        r.write().unwrap().apply(&writes);
        assert!(!g.authorize(
            Some("button-1"),
            Access::Publish,
            "trygg/v1/dev/button-1/evt"
        ));
        assert!(g.authorize(
            Some("trygg-gateway-gw"),
            Access::Subscribe,
            "trygg/v1/dev/+/evt"
        ));
    }
}
