//! Who may see and do what at the backend, as Normen asks: users with a
//! role and units, password login, sessions, the residents register, and an
//! append-only audit log. All of it lives in the bridge's store
//! (`bridge.redb`), beside the alarms:
//!
//! ```text
//! users           username           -> User (argon2id hash, never the password)
//! sessions        sha256(token) hex  -> Session (the token itself is only in the cookie)
//! residents       pseudonymous id    -> Resident (names never travel to a gateway)
//! gateway_units   gateway id         -> unit
//! audit           number             -> AuditEntry (only ever appended)
//! ```
//!
//! What is durable when: every change here is one durable transaction
//! (fsync) before anyone is told; an audit entry for an alarm action is
//! written in the same transaction as the action ([`crate::store::Op::Audited`]),
//! so there is never an acknowledged alarm without its entry, nor the
//! reverse.
//!
//! Rules:
//! - a user sees an alarm only if it belongs to one of their units: the
//!   unit of its resident (from the register), else the unit of its gateway,
//!   else nobody's but a user with the unit `*`;
//! - technicians see technical alarms only; nurses, operators and
//!   administrators see both care and technical alarms of their units;
//!   only administrators manage users, residents and read the audit log;
//! - five wrong passwords in a row lock the user out for fifteen minutes,
//!   and every failure is audited; a locked user's right password is
//!   refused too, with the same message as a wrong one;
//! - a session ends at logout, after `idle` without a request, or after
//!   `absolute` (a shift), whichever comes first.

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use trygg_protocol::{Category, EventKind};

use crate::alarm::Alarm;
use crate::store::{Store, StoreError};

pub(crate) const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
pub(crate) const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
pub(crate) const RESIDENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("residents");
pub(crate) const GATEWAY_UNITS: TableDefinition<&str, &str> = TableDefinition::new("gateway_units");
pub(crate) const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

/// Wrong passwords in a row before a lock-out.
pub const MAX_FAILURES: u32 = 5;
/// How long a lock-out lasts.
pub const LOCKOUT_MS: u64 = 15 * 60 * 1000;
/// The shortest password accepted.
pub const MIN_PASSWORD: usize = 10;
/// The unit that stands for every unit.
pub const ALL_UNITS: &str = "*";

/// What a user may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Response-centre or home-care operator: receives, acknowledges,
    /// closes alarms.
    Operator,
    /// As an operator, and reads the residents' notes for responders.
    Nurse,
    /// Technical alarms only (device silent, gateway offline, battery...).
    Technician,
    /// Manages users, residents, units; reads the audit log.
    Administrator,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "operator" => Some(Role::Operator),
            "nurse" => Some(Role::Nurse),
            "technician" => Some(Role::Technician),
            "administrator" | "admin" => Some(Role::Administrator),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Nurse => "nurse",
            Role::Technician => "technician",
            Role::Administrator => "administrator",
        }
    }
}

/// The language a user reads the console in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lang {
    /// Norwegian bokmål.
    #[default]
    Nb,
    En,
}

impl Lang {
    pub fn parse(s: &str) -> Option<Lang> {
        match s {
            "nb" | "no" | "nb-NO" => Some(Lang::Nb),
            "en" | "en-GB" | "en-US" => Some(Lang::En),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Lang::Nb => "nb",
            Lang::En => "en",
        }
    }
}

/// A user as stored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct User {
    pub username: String,
    pub display_name: String,
    pub role: Role,
    /// The units whose residents and alarms this user sees (`*`: all).
    pub units: Vec<String>,
    /// Escalation groups this user belongs to (e.g. `home-care`).
    #[serde(default)]
    pub groups: Vec<String>,
    pub lang: Lang,
    /// argon2id, PHC string.
    pub password_hash: String,
    pub failures: u32,
    pub locked_until_ms: u64,
    pub disabled: bool,
    pub created_ms: u64,
}

/// What creating a user needs.
#[derive(Clone, Debug)]
pub struct NewUser {
    pub username: String,
    pub display_name: String,
    pub role: Role,
    pub units: Vec<String>,
    pub groups: Vec<String>,
    pub lang: Lang,
    pub password: String,
}

/// A resident in the register. The gateway knows only `id`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Resident {
    /// The pseudonymous id the gateway puts on events (`resident`).
    pub id: String,
    pub name: String,
    pub unit: String,
    pub address: String,
    /// Notes for responders (key safe, pets, language, ...).
    pub notes: String,
}

/// A logged-in session as stored (under the hash of its token).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Session {
    pub username: String,
    /// The synchronizer token every form and every API write must carry.
    pub csrf: String,
    pub created_ms: u64,
    pub last_seen_ms: u64,
}

/// Who is asking, once their session is checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Principal {
    pub username: String,
    pub display_name: String,
    pub role: Role,
    pub units: Vec<String>,
    pub groups: Vec<String>,
    pub lang: Lang,
    pub csrf: String,
}

/// One line of the audit log.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AuditEntry {
    #[serde(default)]
    pub id: u64,
    pub at_ms: u64,
    /// The user, `anonymous` before login, or `trygg` for the system.
    pub actor: String,
    /// What was done: `login`, `login_failed`, `logout`, `view_resident`,
    /// `acknowledge`, `close`, `escalate`, `user_create`, `denied`, ...
    pub action: String,
    /// What it was done to (`alarm/42`, `resident/r-17`, `user/kari`).
    pub target: String,
    /// `ok`, or why it was refused.
    pub outcome: String,
    /// The client's address, where known.
    #[serde(default)]
    pub remote: String,
}

impl AuditEntry {
    pub fn new(
        actor: &str,
        action: &str,
        target: &str,
        outcome: &str,
        remote: &str,
        at_ms: u64,
    ) -> Self {
        AuditEntry {
            id: 0,
            at_ms,
            actor: actor.to_string(),
            action: action.to_string(),
            target: target.to_string(),
            outcome: outcome.to_string(),
            remote: remote.to_string(),
        }
    }
}

/// What to search the audit log for.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub action: Option<String>,
    /// A substring of the target.
    pub target: Option<String>,
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
    pub limit: usize,
}

/// Session lifetimes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionPolicy {
    pub idle_ms: u64,
    pub absolute_ms: u64,
}

impl Default for SessionPolicy {
    /// Idle 8 hours (a console on a wall screen stays logged in through a
    /// quiet night), absolute 13 hours (a shift and handover).
    fn default() -> Self {
        SessionPolicy {
            idle_ms: 8 * 3600 * 1000,
            absolute_ms: 13 * 3600 * 1000,
        }
    }
}

/// Why a login failed. The person sees one message for all of them.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("wrong username or password")]
    Wrong,
    #[error("locked out after repeated failures")]
    Locked { until_ms: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a user could not be created or changed.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("username must be 1-64 characters of a-z, 0-9, '.', '_' or '-'")]
    BadUsername,
    #[error("a user named {0} exists already")]
    Exists(String),
    #[error("the password must be at least {MIN_PASSWORD} characters")]
    WeakPassword,
    #[error("a user needs at least one unit (or '*' for all)")]
    NoUnits,
    #[error(transparent)]
    Store(#[from] StoreError),
}

macro_rules! via_store_error {
    ($($e:ty),*) => {$(
        impl From<redb::TableError> for $e {
            fn from(e: redb::TableError) -> Self { StoreError::from(e).into() }
        }
        impl From<redb::StorageError> for $e {
            fn from(e: redb::StorageError) -> Self { StoreError::from(e).into() }
        }
    )*};
}
via_store_error!(UserError, LoginError);

/// Hashes a password with argon2id (the crate's defaults: 19 MiB, 2 passes).
pub fn hash_password(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt =
        SaltString::encode_b64(&rand::random::<[u8; 16]>()).expect("16 bytes encode as a salt");
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashes any password")
        .to_string()
}

/// Whether `password` matches `hash`.
pub fn verify_password(hash: &str, password: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(hash)
        .map(|h| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash to verify against when the user does not exist, so a wrong
/// username takes as long as a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("no user has this password"))
}

fn valid_username(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

fn token_key(token: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    hex(d.as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh random token (256 bits, hex).
pub fn new_token() -> String {
    hex(&rand::random::<[u8; 32]>())
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("access records serialize")
}

fn parse<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(b).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Appends an audit entry within `txn`; returns its number.
pub(crate) fn append_audit(
    txn: &WriteTransaction,
    mut entry: AuditEntry,
) -> Result<u64, StoreError> {
    let mut t = txn.open_table(AUDIT)?;
    let id = t.last()?.map(|(k, _)| k.value() + 1).unwrap_or(1);
    entry.id = id;
    t.insert(id, json(&entry).as_slice())?;
    Ok(id)
}

impl Principal {
    fn of(user: &User, csrf: &str) -> Principal {
        Principal {
            username: user.username.clone(),
            display_name: user.display_name.clone(),
            role: user.role,
            units: user.units.clone(),
            groups: user.groups.clone(),
            lang: user.lang,
            csrf: csrf.to_string(),
        }
    }

    pub fn has_unit(&self, unit: Option<&str>) -> bool {
        self.units
            .iter()
            .any(|u| u == ALL_UNITS || Some(u.as_str()) == unit)
    }

    /// Whether this user may see alarms of this kind at all (by role).
    pub fn may_see_kind(&self, kind: EventKind) -> bool {
        match self.role {
            Role::Technician => kind.category() == Category::Technical,
            _ => true,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Administrator
    }
}

impl Store {
    /// Creates a user. The password is hashed here; it is never stored.
    pub fn create_user(&self, new: NewUser, actor: &str, now_ms: u64) -> Result<User, UserError> {
        if !valid_username(&new.username) {
            return Err(UserError::BadUsername);
        }
        if new.password.chars().count() < MIN_PASSWORD {
            return Err(UserError::WeakPassword);
        }
        if new.units.is_empty() {
            return Err(UserError::NoUnits);
        }
        let user = User {
            username: new.username.clone(),
            display_name: if new.display_name.is_empty() {
                new.username.clone()
            } else {
                new.display_name
            },
            role: new.role,
            units: new.units,
            groups: new.groups,
            lang: new.lang,
            password_hash: hash_password(&new.password),
            failures: 0,
            locked_until_ms: 0,
            disabled: false,
            created_ms: now_ms,
        };
        let txn = self.begin_durable()?;
        {
            let mut users = txn.open_table(USERS)?;
            if users.get(user.username.as_str())?.is_some() {
                return Err(UserError::Exists(user.username));
            }
            users.insert(user.username.as_str(), json(&user).as_slice())?;
        }
        append_audit(
            &txn,
            AuditEntry::new(
                actor,
                "user_create",
                &format!("user/{}", user.username),
                &format!(
                    "ok: role {}, units {}",
                    user.role.as_str(),
                    user.units.join(",")
                ),
                "",
                now_ms,
            ),
        )?;
        txn.commit().map_err(StoreError::from)?;
        Ok(user)
    }

    pub fn user(&self, username: &str) -> Result<Option<User>, StoreError> {
        self.record(USERS, username)
    }

    pub fn users(&self) -> Result<Vec<User>, StoreError> {
        self.records(USERS)
    }

    /// One JSON record of a table keyed by name.
    fn record<T: for<'de> Deserialize<'de>>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let txn = self.db().begin_read()?;
        let t = match txn.open_table(table) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        t.get(key)?.map(|v| parse(v.value())).transpose()
    }

    /// Every JSON record of a table keyed by name, in key order.
    fn records<T: for<'de> Deserialize<'de>>(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<T>, StoreError> {
        let txn = self.db().begin_read()?;
        let t = txn.open_table(table)?;
        let mut out = Vec::new();
        for e in t.iter()? {
            out.push(parse(e?.1.value())?);
        }
        Ok(out)
    }

    /// Checks a password (the caller runs this off the async threads: argon2
    /// takes tens of milliseconds). On success, a new session: its token
    /// (for the cookie, never stored) and who it is.
    pub fn login(
        &self,
        username: &str,
        password: &str,
        remote: &str,
        now_ms: u64,
    ) -> Result<(String, Principal), LoginError> {
        let user = self.user(username)?;
        let target = format!("user/{username}");
        let Some(mut user) = user.filter(|u| !u.disabled) else {
            let _ = verify_password(decoy_hash(), password);
            self.audit_now(AuditEntry::new(
                "anonymous",
                "login_failed",
                &target,
                "no such user",
                remote,
                now_ms,
            ))?;
            return Err(LoginError::Wrong);
        };
        if user.locked_until_ms > now_ms {
            self.audit_now(AuditEntry::new(
                username,
                "login_failed",
                &target,
                "locked out",
                remote,
                now_ms,
            ))?;
            return Err(LoginError::Locked {
                until_ms: user.locked_until_ms,
            });
        }
        let ok = verify_password(&user.password_hash, password);
        let txn = self.begin_durable()?;
        let result = if ok {
            user.failures = 0;
            user.locked_until_ms = 0;
            let token = new_token();
            let session = Session {
                username: user.username.clone(),
                csrf: new_token(),
                created_ms: now_ms,
                last_seen_ms: now_ms,
            };
            txn.open_table(SESSIONS)?
                .insert(token_key(&token).as_str(), json(&session).as_slice())?;
            append_audit(
                &txn,
                AuditEntry::new(username, "login", &target, "ok", remote, now_ms),
            )?;
            Ok((token, Principal::of(&user, &session.csrf)))
        } else {
            user.failures += 1;
            let outcome = if user.failures >= MAX_FAILURES {
                user.locked_until_ms = now_ms + LOCKOUT_MS;
                user.failures = 0;
                format!("wrong password; locked out for {} min", LOCKOUT_MS / 60_000)
            } else {
                format!("wrong password ({} in a row)", user.failures)
            };
            append_audit(
                &txn,
                AuditEntry::new(username, "login_failed", &target, &outcome, remote, now_ms),
            )?;
            Err(LoginError::Wrong)
        };
        txn.open_table(USERS)?
            .insert(user.username.as_str(), json(&user).as_slice())?;
        txn.commit().map_err(StoreError::from)?;
        result
    }

    /// Who holds this session token, if it is still valid. Refreshes its
    /// last use (at most once a minute, to spare the disk).
    pub fn session(
        &self,
        token: &str,
        policy: SessionPolicy,
        now_ms: u64,
    ) -> Result<Option<Principal>, StoreError> {
        let key = token_key(token);
        let session: Option<Session> = {
            let txn = self.db().begin_read()?;
            let t = match txn.open_table(SESSIONS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            t.get(key.as_str())?.map(|v| parse(v.value())).transpose()?
        };
        let Some(mut session) = session else {
            return Ok(None);
        };
        let expired = now_ms.saturating_sub(session.last_seen_ms) > policy.idle_ms
            || now_ms.saturating_sub(session.created_ms) > policy.absolute_ms;
        let user = self.user(&session.username)?.filter(|u| !u.disabled);
        if expired || user.is_none() {
            let txn = self.begin_durable()?;
            txn.open_table(SESSIONS)?.remove(key.as_str())?;
            txn.commit()?;
            return Ok(None);
        }
        if now_ms.saturating_sub(session.last_seen_ms) > 60_000 {
            session.last_seen_ms = now_ms;
            let txn = self.begin_durable()?;
            txn.open_table(SESSIONS)?
                .insert(key.as_str(), json(&session).as_slice())?;
            txn.commit()?;
        }
        Ok(user.map(|u| Principal::of(&u, &session.csrf)))
    }

    /// Sets the language a user reads the console in (their profile).
    /// `Ok(false)` if there is no such user.
    pub fn set_lang(&self, username: &str, lang: Lang) -> Result<bool, StoreError> {
        let txn = self.begin_durable()?;
        let found = {
            let mut users = txn.open_table(USERS)?;
            let user: Option<User> = users.get(username)?.map(|v| parse(v.value())).transpose()?;
            match user {
                Some(mut u) => {
                    u.lang = lang;
                    users.insert(username, json(&u).as_slice())?;
                    true
                }
                None => false,
            }
        };
        txn.commit()?;
        Ok(found)
    }

    /// Disables a user (they can no longer log in, and every session of
    /// theirs ends at once) or enables them again. Audited. `Ok(false)` if
    /// there is no such user.
    pub fn set_disabled(
        &self,
        username: &str,
        disabled: bool,
        actor: &str,
        remote: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let txn = self.begin_durable()?;
        let found = {
            let mut users = txn.open_table(USERS)?;
            let user: Option<User> = users.get(username)?.map(|v| parse(v.value())).transpose()?;
            match user {
                Some(mut u) => {
                    u.disabled = disabled;
                    u.failures = 0;
                    u.locked_until_ms = 0;
                    users.insert(username, json(&u).as_slice())?;
                    true
                }
                None => false,
            }
        };
        if found && disabled {
            let mut sessions = txn.open_table(SESSIONS)?;
            let mut theirs = Vec::new();
            for e in sessions.iter()? {
                let (k, v) = e?;
                let session: Session = parse(v.value())?;
                if session.username == username {
                    theirs.push(k.value().to_string());
                }
            }
            for k in theirs {
                sessions.remove(k.as_str())?;
            }
        }
        append_audit(
            &txn,
            AuditEntry::new(
                actor,
                if disabled {
                    "user_disable"
                } else {
                    "user_enable"
                },
                &format!("user/{username}"),
                if found { "ok" } else { "refused: no such user" },
                remote,
                now_ms,
            ),
        )?;
        txn.commit()?;
        Ok(found)
    }

    /// Ends a session (logout).
    pub fn logout(
        &self,
        token: &str,
        actor: &str,
        remote: &str,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let txn = self.begin_durable()?;
        txn.open_table(SESSIONS)?
            .remove(token_key(token).as_str())?;
        append_audit(
            &txn,
            AuditEntry::new(
                actor,
                "logout",
                &format!("user/{actor}"),
                "ok",
                remote,
                now_ms,
            ),
        )?;
        txn.commit()?;
        Ok(())
    }

    /// Adds or replaces a resident.
    pub fn put_resident(&self, r: &Resident, actor: &str, now_ms: u64) -> Result<(), StoreError> {
        let txn = self.begin_durable()?;
        txn.open_table(RESIDENTS)?
            .insert(r.id.as_str(), json(r).as_slice())?;
        append_audit(
            &txn,
            AuditEntry::new(
                actor,
                "resident_put",
                &format!("resident/{}", r.id),
                "ok",
                "",
                now_ms,
            ),
        )?;
        txn.commit()?;
        Ok(())
    }

    pub fn resident(&self, id: &str) -> Result<Option<Resident>, StoreError> {
        self.record(RESIDENTS, id)
    }

    pub fn residents(&self) -> Result<Vec<Resident>, StoreError> {
        self.records(RESIDENTS)
    }

    /// Puts a gateway in a unit (its alarms without a registered resident
    /// go to that unit).
    pub fn set_gateway_unit(
        &self,
        gateway: &str,
        unit: &str,
        actor: &str,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let txn = self.begin_durable()?;
        txn.open_table(GATEWAY_UNITS)?.insert(gateway, unit)?;
        append_audit(
            &txn,
            AuditEntry::new(
                actor,
                "gateway_unit",
                &format!("gateway/{gateway}"),
                &format!("ok: unit {unit}"),
                "",
                now_ms,
            ),
        )?;
        txn.commit()?;
        Ok(())
    }

    /// The unit an alarm belongs to: its resident's, else its gateway's.
    pub fn unit_of(&self, alarm: &Alarm) -> Result<Option<String>, StoreError> {
        self.unit_for(alarm.resident.as_deref(), &alarm.gateway)
    }

    /// The unit of whatever belongs to this resident at this gateway: the
    /// resident's (if registered), else the gateway's.
    pub fn unit_for(
        &self,
        resident: Option<&str>,
        gateway: &str,
    ) -> Result<Option<String>, StoreError> {
        if let Some(r) = resident {
            if let Some(res) = self.resident(r)? {
                return Ok(Some(res.unit));
            }
        }
        let txn = self.db().begin_read()?;
        let t = match txn.open_table(GATEWAY_UNITS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(t.get(gateway)?.map(|v| v.value().to_string()))
    }

    /// Whether `who` may see `alarm`: by role and unit.
    pub fn may_see(&self, who: &Principal, alarm: &Alarm) -> Result<bool, StoreError> {
        if !who.may_see_kind(alarm.kind) {
            return Ok(false);
        }
        Ok(who.has_unit(self.unit_of(alarm)?.as_deref()))
    }

    /// Writes one audit entry on its own (a view, a refusal, a login).
    pub fn audit_now(&self, entry: AuditEntry) -> Result<u64, StoreError> {
        let txn = self.begin_durable()?;
        let id = append_audit(&txn, entry)?;
        txn.commit()?;
        Ok(id)
    }

    /// Searches the audit log, newest first.
    pub fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let txn = self.db().begin_read()?;
        let t = match txn.open_table(AUDIT) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let limit = if q.limit == 0 { 100 } else { q.limit };
        let mut out = Vec::new();
        for e in t.iter()?.rev() {
            let a: AuditEntry = parse(e?.1.value())?;
            if q.since_ms.is_some_and(|s| a.at_ms < s) {
                break;
            }
            if q.until_ms.is_some_and(|u| a.at_ms > u)
                || q.actor.as_deref().is_some_and(|x| a.actor != x)
                || q.action.as_deref().is_some_and(|x| a.action != x)
                || q.target.as_deref().is_some_and(|x| !a.target.contains(x))
            {
                continue;
            }
            out.push(a);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("bridge.redb")).unwrap();
        (dir, s)
    }

    fn kari() -> NewUser {
        NewUser {
            username: "kari".into(),
            display_name: "Kari Nordmann".into(),
            role: Role::Operator,
            units: vec!["sentrum".into()],
            groups: vec!["home-care".into()],
            lang: Lang::Nb,
            password: "correct horse battery".into(),
        }
    }

    #[test]
    fn a_password_is_stored_only_as_an_argon2id_hash() {
        let (_d, s) = store();
        let u = s.create_user(kari(), "setup", 1).unwrap();
        assert!(
            u.password_hash.starts_with("$argon2id$"),
            "{}",
            u.password_hash
        );
        assert!(!u.password_hash.contains("horse"));
        assert!(verify_password(&u.password_hash, "correct horse battery"));
        assert!(!verify_password(&u.password_hash, "correct horse batter"));
    }

    #[test]
    fn bad_users_are_refused_with_a_reason() {
        let (_d, s) = store();
        let mut weak = kari();
        weak.password = "short".into();
        assert!(matches!(
            s.create_user(weak, "a", 1),
            Err(UserError::WeakPassword)
        ));
        let mut bad = kari();
        bad.username = "Kari Nordmann".into();
        assert!(matches!(
            s.create_user(bad, "a", 1),
            Err(UserError::BadUsername)
        ));
        let mut none = kari();
        none.units.clear();
        assert!(matches!(
            s.create_user(none, "a", 1),
            Err(UserError::NoUnits)
        ));
        s.create_user(kari(), "a", 1).unwrap();
        assert!(matches!(
            s.create_user(kari(), "a", 1),
            Err(UserError::Exists(_))
        ));
    }

    #[test]
    fn login_gives_a_session_that_logout_and_time_end() {
        let (_d, s) = store();
        s.create_user(kari(), "setup", 1).unwrap();
        let p = SessionPolicy {
            idle_ms: 1000,
            absolute_ms: 5000,
        };
        let (token, who) = s
            .login("kari", "correct horse battery", "127.0.0.1", 10)
            .unwrap();
        assert_eq!(who.role, Role::Operator);
        assert_eq!(s.session(&token, p, 500).unwrap().unwrap().csrf, who.csrf);
        assert!(s.session("forged", p, 500).unwrap().is_none());
        assert!(
            s.session(&token, p, 2000).unwrap().is_none(),
            "idle too long"
        );
        let (token, _) = s
            .login("kari", "correct horse battery", "127.0.0.1", 10)
            .unwrap();
        s.logout(&token, "kari", "127.0.0.1", 20).unwrap();
        assert!(s.session(&token, p, 30).unwrap().is_none());
        let actions: Vec<String> = s
            .audit(&AuditQuery::default())
            .unwrap()
            .into_iter()
            .map(|a| a.action)
            .collect();
        assert_eq!(actions, ["logout", "login", "login", "user_create"]);
    }

    #[test]
    fn five_wrong_passwords_lock_the_user_out_and_every_try_is_audited() {
        let (_d, s) = store();
        s.create_user(kari(), "setup", 1).unwrap();
        for i in 0..MAX_FAILURES {
            assert!(matches!(
                s.login("kari", "guess", "10.0.0.9", 100 + i as u64),
                Err(LoginError::Wrong)
            ));
        }
        // Now even the right password is refused, until the lock-out ends.
        assert!(matches!(
            s.login("kari", "correct horse battery", "10.0.0.9", 200),
            Err(LoginError::Locked { .. })
        ));
        assert!(s
            .login(
                "kari",
                "correct horse battery",
                "10.0.0.9",
                200 + LOCKOUT_MS
            )
            .is_ok());
        let failed = s
            .audit(&AuditQuery {
                action: Some("login_failed".into()),
                ..AuditQuery::default()
            })
            .unwrap();
        assert_eq!(failed.len(), MAX_FAILURES as usize + 1);
        assert!(failed[0].outcome.contains("locked"));
        assert!(failed.iter().all(|a| a.remote == "10.0.0.9"));
        // A user that does not exist: the same answer, audited.
        assert!(matches!(
            s.login("nobody", "x", "10.0.0.9", 300),
            Err(LoginError::Wrong)
        ));
    }

    #[test]
    fn a_disabled_user_cannot_log_in_and_their_sessions_end_at_once() {
        let (_d, s) = store();
        s.create_user(kari(), "setup", 1).unwrap();
        let p = SessionPolicy::default();
        let (token, _) = s
            .login("kari", "correct horse battery", "127.0.0.1", 10)
            .unwrap();
        assert!(s
            .set_disabled("kari", true, "admin", "10.0.0.1", 20)
            .unwrap());
        assert!(
            s.session(&token, p, 30).unwrap().is_none(),
            "the open session ended"
        );
        assert!(matches!(
            s.login("kari", "correct horse battery", "127.0.0.1", 40),
            Err(LoginError::Wrong)
        ));
        assert!(s
            .set_disabled("kari", false, "admin", "10.0.0.1", 50)
            .unwrap());
        assert!(s
            .login("kari", "correct horse battery", "127.0.0.1", 60)
            .is_ok());
        assert!(!s
            .set_disabled("nobody", true, "admin", "10.0.0.1", 70)
            .unwrap());
        let actions: Vec<String> = s
            .audit(&AuditQuery::default())
            .unwrap()
            .into_iter()
            .map(|a| a.action)
            .take(5)
            .collect();
        assert_eq!(
            actions,
            [
                "user_disable",
                "login",
                "user_enable",
                "login_failed",
                "user_disable"
            ]
        );
    }

    #[test]
    fn units_and_roles_decide_who_sees_an_alarm() {
        let (_d, s) = store();
        s.put_resident(
            &Resident {
                id: "r-17".into(),
                name: "Ola".into(),
                unit: "sentrum".into(),
                address: "Storgata 1".into(),
                notes: "Key safe 1234".into(),
            },
            "admin",
            1,
        )
        .unwrap();
        s.set_gateway_unit("gw-2", "nord", "admin", 1).unwrap();
        let alarm = |gateway: &str, resident: Option<&str>, kind: EventKind| {
            crate::alarm::Alarm::raise(
                1,
                crate::alarm::NewAlarm {
                    event_id: "e".into(),
                    gateway: gateway.into(),
                    device: "button-1".into(),
                    device_seq: 1,
                    kind,
                    resident: resident.map(String::from),
                    room: None,
                    detail: None,
                    gateway_committed_ms: None,
                    device_ts: None,
                },
                1,
            )
        };
        let who = |role: Role, unit: &str| Principal {
            username: "u".into(),
            display_name: "u".into(),
            role,
            units: vec![unit.into()],
            groups: vec![],
            lang: Lang::En,
            csrf: String::new(),
        };
        let press = alarm("gw-1", Some("r-17"), EventKind::ButtonPress);
        let battery = alarm("gw-2", None, EventKind::BatteryLow);
        let orphan = alarm("gw-9", None, EventKind::Fall);
        assert!(s.may_see(&who(Role::Operator, "sentrum"), &press).unwrap());
        assert!(!s.may_see(&who(Role::Operator, "nord"), &press).unwrap());
        assert!(s.may_see(&who(Role::Operator, "nord"), &battery).unwrap());
        assert!(
            !s.may_see(&who(Role::Technician, "sentrum"), &press)
                .unwrap(),
            "technicians see technical alarms only"
        );
        assert!(s.may_see(&who(Role::Technician, "nord"), &battery).unwrap());
        assert!(!s.may_see(&who(Role::Operator, "sentrum"), &orphan).unwrap());
        assert!(s.may_see(&who(Role::Operator, ALL_UNITS), &orphan).unwrap());
    }
}
