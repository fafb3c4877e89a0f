//! Technician sessions and lock-outs: a plain state machine in memory,
//! with `now` as an argument (no clock inside).
//!
//! - A session is found by the SHA-256 of its token; the token itself is
//!   only in the technician's cookie. It ends at logout, after `idle`
//!   without a request, after `absolute` since login, or when the account
//!   it was opened for is removed or its password changed (the caller
//!   compares [`Session::credential`] with the account file).
//! - [`MAX_FAILURES`] wrong passwords in a row lock the username out for
//!   [`LOCKOUT_MS`]; a right password during the lock-out is refused too.
//!   Only known usernames are tracked, so the map cannot be grown by
//!   guessing names.
//!
//! Sessions and lock-outs do not survive a restart of the gateway: a
//! technician logs in again; an attacker gets no more tries than a
//! restart (which needs a hand on the Pi) would give anyway.

use std::collections::HashMap;

/// Wrong passwords in a row before a lock-out.
pub const MAX_FAILURES: u32 = 5;
/// How long a lock-out lasts.
pub const LOCKOUT_MS: u64 = 15 * 60 * 1000;
/// The most sessions at once; a new login past it ends the oldest.
pub const MAX_SESSIONS: usize = 32;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub username: String,
    pub csrf: String,
    /// The account's password hash at login: a session whose account no
    /// longer has it has ended.
    pub credential: String,
    pub created_ms: u64,
    pub last_seen_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub idle_ms: u64,
    pub absolute_ms: u64,
}

/// What a wrong password did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Counted: this many in a row.
    Counted(u32),
    /// This failure locked the account until then.
    LockedNow { until_ms: u64 },
}

#[derive(Debug)]
pub struct Sessions {
    policy: Policy,
    by_key: HashMap<String, Session>,
    failures: HashMap<String, (u32, u64)>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh random token (256 bits, hex).
pub fn new_token() -> String {
    hex(&rand::random::<[u8; 32]>())
}

fn key(token: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}

/// Whether two secrets are equal, in time that does not depend on where
/// they differ.
pub fn same_secret(want: &str, given: &str) -> bool {
    let (w, g) = (want.as_bytes(), given.as_bytes());
    !w.is_empty()
        && w.len() == g.len()
        && w.iter().zip(g).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

impl Sessions {
    pub fn new(policy: Policy) -> Sessions {
        Sessions {
            policy,
            by_key: HashMap::new(),
            failures: HashMap::new(),
        }
    }

    /// Until when `username` is locked out, if it is now.
    pub fn locked_until(&self, username: &str, now_ms: u64) -> Option<u64> {
        self.failures
            .get(username)
            .map(|(_, until)| *until)
            .filter(|until| *until > now_ms)
    }

    /// Counts a wrong password for a known username.
    pub fn failed(&mut self, username: &str, now_ms: u64) -> Failure {
        let entry = self.failures.entry(username.to_string()).or_insert((0, 0));
        entry.0 += 1;
        if entry.0 >= MAX_FAILURES {
            entry.0 = 0;
            entry.1 = now_ms + LOCKOUT_MS;
            Failure::LockedNow { until_ms: entry.1 }
        } else {
            Failure::Counted(entry.0)
        }
    }

    /// A right password: the count starts again, and a session opens.
    /// Returns the token (for the cookie) and the session.
    pub fn open(&mut self, username: &str, credential: &str, now_ms: u64) -> (String, Session) {
        self.failures.remove(username);
        self.expire(now_ms);
        while self.by_key.len() >= MAX_SESSIONS {
            let oldest = self
                .by_key
                .iter()
                .min_by_key(|(_, s)| s.last_seen_ms)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => self.by_key.remove(&k),
                None => break,
            };
        }
        let token = new_token();
        let session = Session {
            username: username.to_string(),
            csrf: new_token(),
            credential: credential.to_string(),
            created_ms: now_ms,
            last_seen_ms: now_ms,
        };
        self.by_key.insert(key(&token), session.clone());
        (token, session)
    }

    /// The live session of `token`, its last use moved to `now_ms`.
    pub fn get(&mut self, token: &str, now_ms: u64) -> Option<Session> {
        let k = key(token);
        let s = self.by_key.get_mut(&k)?;
        let idle = now_ms.saturating_sub(s.last_seen_ms) > self.policy.idle_ms;
        let old = now_ms.saturating_sub(s.created_ms) > self.policy.absolute_ms;
        if idle || old {
            self.by_key.remove(&k);
            return None;
        }
        s.last_seen_ms = now_ms;
        Some(s.clone())
    }

    /// Ends the session of `token`; its username if there was one.
    pub fn close(&mut self, token: &str) -> Option<String> {
        self.by_key.remove(&key(token)).map(|s| s.username)
    }

    /// Ends every session of `username`.
    pub fn close_all_of(&mut self, username: &str) {
        self.by_key.retain(|_, s| s.username != username);
    }

    fn expire(&mut self, now_ms: u64) {
        let p = self.policy;
        self.by_key.retain(|_, s| {
            now_ms.saturating_sub(s.last_seen_ms) <= p.idle_ms
                && now_ms.saturating_sub(s.created_ms) <= p.absolute_ms
        });
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        idle_ms: 1_000,
        absolute_ms: 10_000,
    };

    #[test]
    fn a_session_is_found_by_its_token_only() {
        let mut s = Sessions::new(POLICY);
        let (token, session) = s.open("kari", "h1", 0);
        assert_eq!(s.get(&token, 10).unwrap().username, "kari");
        assert_eq!(session.csrf.len(), 64);
        assert!(
            s.get(&session.csrf, 10).is_none(),
            "the csrf token is no session"
        );
        assert!(s.get("", 10).is_none());
    }

    #[test]
    fn a_session_ends_when_idle_too_long() {
        let mut s = Sessions::new(POLICY);
        let (token, _) = s.open("kari", "h1", 0);
        assert!(s.get(&token, 900).is_some());
        assert!(s.get(&token, 1_800).is_some(), "a request keeps it alive");
        assert!(s.get(&token, 2_801).is_none());
        assert!(s.get(&token, 2_802).is_none(), "and it stays ended");
    }

    #[test]
    fn a_session_ends_after_its_absolute_limit_however_busy() {
        let mut s = Sessions::new(POLICY);
        let (token, _) = s.open("kari", "h1", 0);
        let mut now = 0;
        while now < 10_000 {
            now += 500;
            assert!(s.get(&token, now).is_some(), "at {now}");
        }
        assert!(s.get(&token, 10_500).is_none());
    }

    #[test]
    fn logout_ends_the_session() {
        let mut s = Sessions::new(POLICY);
        let (token, _) = s.open("kari", "h1", 0);
        assert_eq!(s.close(&token).as_deref(), Some("kari"));
        assert!(s.get(&token, 1).is_none());
    }

    #[test]
    fn five_wrong_passwords_lock_the_username_out_for_fifteen_minutes() {
        let mut s = Sessions::new(POLICY);
        for i in 1..MAX_FAILURES {
            assert_eq!(s.failed("kari", 100), Failure::Counted(i));
            assert_eq!(s.locked_until("kari", 100), None);
        }
        assert_eq!(
            s.failed("kari", 100),
            Failure::LockedNow {
                until_ms: 100 + LOCKOUT_MS
            }
        );
        assert_eq!(s.locked_until("kari", 101), Some(100 + LOCKOUT_MS));
        assert_eq!(s.locked_until("ola", 101), None, "others are not locked");
        assert_eq!(s.locked_until("kari", 100 + LOCKOUT_MS), None);
    }

    #[test]
    fn a_right_password_resets_the_count() {
        let mut s = Sessions::new(POLICY);
        for _ in 1..MAX_FAILURES {
            s.failed("kari", 0);
        }
        s.open("kari", "h", 0);
        assert_eq!(s.failed("kari", 0), Failure::Counted(1));
    }

    #[test]
    fn sessions_are_bounded_and_the_oldest_goes() {
        let mut s = Sessions::new(Policy {
            idle_ms: u64::MAX / 4,
            absolute_ms: u64::MAX / 4,
        });
        let (first, _) = s.open("kari", "h", 0);
        for i in 1..=MAX_SESSIONS as u64 {
            s.open("kari", "h", i);
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(s.get(&first, 1_000).is_none());
    }

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
        assert!(!same_secret("", ""));
    }
}
