//! Device credentials and topic ACLs, decided without I/O (apart from the
//! random numbers).
//!
//! A device's MQTT identity: client id = username = its device id, and
//! password = its **key**, a random secret (at least 16 characters; the
//! gateway generates 32 hex digits when a technician gives none). The
//! gateway keeps only a hash of the key, in Mosquitto's own password-file
//! format (PBKDF2-HMAC-SHA512, `$7$iterations$salt$hash`, base64, as
//! `mosquitto_passwd` writes it), so the same string serves the embedded
//! broker's check and Mosquitto's `password_file`.
//!
//! The ACL: a device may publish only to its own `evt` and `hb` topics and
//! subscribe only to its own `ack` and `cfg`; the gateway's own client
//! (username [`gateway_username`]) reads and writes every device topic.

use std::num::NonZeroU32;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};

/// PBKDF2 iterations, as `mosquitto_passwd` uses by default. Keys are
/// random 128-bit secrets, not passwords a person chose: the iterations
/// do not guard them against guessing, the key's length does. Mosquitto
/// hashes every CONNECT with the count in the file, so a low one keeps
/// connects cheap on a Pi.
pub const ITERATIONS: u32 = 101;
const SALT_LEN: usize = 12;
const HASH_LEN: usize = 64;
/// The shortest key accepted.
pub const MIN_KEY_CHARS: usize = 16;
/// The longest key accepted.
pub const MAX_KEY_CHARS: usize = 128;
/// Device ids that start with this are refused: the gateway's own broker
/// client is named so.
pub const RESERVED_PREFIX: &str = "trygg-gateway";

/// The username (and client id) of the gateway's own client at the
/// device broker.
pub fn gateway_username(gateway_id: &str) -> String {
    format!("{RESERVED_PREFIX}-{gateway_id}")
}

/// Why a key was refused.
pub fn check_key(key: &str) -> Result<(), String> {
    let n = key.chars().count();
    if !(MIN_KEY_CHARS..=MAX_KEY_CHARS).contains(&n) || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "a device key must be {MIN_KEY_CHARS}-{MAX_KEY_CHARS} visible ASCII characters (no spaces): type the key from the device's label, or leave it out and the gateway generates one"
        ));
    }
    Ok(())
}

/// A new random key: 16 bytes as 32 lowercase hex digits.
pub fn generate_key() -> String {
    let mut b = [0u8; 16];
    SystemRandom::new()
        .fill(&mut b)
        .expect("the system's random number generator");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The key's hash in Mosquitto's `$7$` format, with a fresh salt.
pub fn hash_key(key: &str) -> String {
    let mut salt = [0u8; SALT_LEN];
    SystemRandom::new()
        .fill(&mut salt)
        .expect("the system's random number generator");
    hash_with(key, &salt, ITERATIONS)
}

fn hash_with(key: &str, salt: &[u8], iterations: u32) -> String {
    let mut out = [0u8; HASH_LEN];
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA512,
        NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN),
        salt,
        key.as_bytes(),
        &mut out,
    );
    format!(
        "$7${iterations}${}${}",
        STANDARD.encode(salt),
        STANDARD.encode(out)
    )
}

/// Whether `hash` is a `$7$` hash this module (and Mosquitto) can check.
pub fn is_valid_hash(hash: &str) -> bool {
    parse_hash(hash).is_some()
}

fn parse_hash(hash: &str) -> Option<(NonZeroU32, Vec<u8>, Vec<u8>)> {
    let mut parts = hash.strip_prefix("$7$")?.split('$');
    let iterations: u32 = parts.next()?.parse().ok()?;
    let salt = STANDARD.decode(parts.next()?).ok()?;
    let digest = STANDARD.decode(parts.next()?).ok()?;
    if parts.next().is_some() || salt.is_empty() || digest.len() != HASH_LEN {
        return None;
    }
    Some((NonZeroU32::new(iterations)?, salt, digest))
}

/// Whether `key` matches `hash` (in constant time); `false` for a hash
/// that is not one.
pub fn verify_key(key: &str, hash: &str) -> bool {
    let Some((iterations, salt, digest)) = parse_hash(hash) else {
        return false;
    };
    ring::pbkdf2::verify(
        ring::pbkdf2::PBKDF2_HMAC_SHA512,
        iterations,
        &salt,
        key.as_bytes(),
        &digest,
    )
    .is_ok()
}

/// Publish or subscribe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Publish,
    Subscribe,
}

/// Who a broker client is, once authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity<'a> {
    /// The gateway's own client.
    Gateway,
    /// A device (paired, or asking to join) with this id.
    Device(&'a str),
}

/// The topic leaves a device may publish to and subscribe to.
pub const DEVICE_PUBLISH: [&str; 2] = ["evt", "hb"];
pub const DEVICE_SUBSCRIBE: [&str; 2] = ["ack", "cfg"];

/// Whether `who` may publish to, or subscribe to, `topic` (for a
/// subscription: the filter, so a wildcard is refused to a device).
pub fn allowed(who: Identity<'_>, access: Access, topic: &str) -> bool {
    match who {
        Identity::Gateway => topic.starts_with(trygg_protocol::topic::PREFIX),
        Identity::Device(id) => {
            let Some(leaf) = topic
                .strip_prefix(trygg_protocol::topic::PREFIX)
                .and_then(|rest| rest.strip_prefix(id))
                .and_then(|rest| rest.strip_prefix('/'))
            else {
                return false;
            };
            match access {
                Access::Publish => DEVICE_PUBLISH.contains(&leaf),
                Access::Subscribe => DEVICE_SUBSCRIBE.contains(&leaf),
            }
        }
    }
}

/// Mosquitto's password file: one `username:hash` line per credential.
pub fn mosquitto_password_file<'a>(
    entries: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    let mut out = String::from("# Written by trygg-gateway from its device register; do not edit (changes are overwritten).\n");
    for (user, hash) in entries {
        out.push_str(user);
        out.push(':');
        out.push_str(hash);
        out.push('\n');
    }
    out
}

/// Mosquitto's ACL file: the gateway reads and writes every device topic;
/// each device writes its own `evt` and `hb` and reads its own `ack` and
/// `cfg`. Nobody else may do anything.
pub fn mosquitto_acl_file<'a>(
    gateway_user: &str,
    devices: impl IntoIterator<Item = &'a str>,
) -> String {
    let prefix = trygg_protocol::topic::PREFIX;
    let mut out = format!(
        "# Written by trygg-gateway from its device register; do not edit (changes are overwritten).\n\nuser {gateway_user}\ntopic readwrite {prefix}#\n"
    );
    for id in devices {
        out.push_str(&format!("\nuser {id}\n"));
        for leaf in DEVICE_PUBLISH {
            out.push_str(&format!("topic write {prefix}{id}/{leaf}\n"));
        }
        for leaf in DEVICE_SUBSCRIBE {
            out.push_str(&format!("topic read {prefix}{id}/{leaf}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_verifies_against_its_hash_and_nothing_else_does() {
        let key = generate_key();
        assert_eq!(key.len(), 32);
        assert!(check_key(&key).is_ok());
        let h = hash_key(&key);
        assert!(h.starts_with("$7$101$"), "{h}");
        assert!(is_valid_hash(&h));
        assert!(verify_key(&key, &h));
        assert!(!verify_key(&generate_key(), &h));
        assert!(!verify_key(&key, "$7$101$bm9wZQ==$short"));
        assert!(!verify_key(&key, "plain"));
        // A fresh salt each time.
        assert_ne!(hash_key(&key), h);
    }

    #[test]
    fn the_hash_is_the_one_mosquitto_passwd_writes() {
        // `mosquitto_passwd -b file button-1 0123456789abcdef0123456789abcdef`
        // (mosquitto 2.0) wrote this line; the key must verify against it.
        let line = mosquitto_passwd_line();
        let (_, hash) = line.split_once(':').unwrap();
        assert!(verify_key("0123456789abcdef0123456789abcdef", hash));
        assert!(!verify_key("0123456789abcdef0123456789abcdee", hash));
        // And ours, with the same salt, is byte for byte the same.
        let (iterations, salt, _) = parse_hash(hash).unwrap();
        assert_eq!(
            hash_with("0123456789abcdef0123456789abcdef", &salt, iterations.get()),
            hash
        );
    }

    fn mosquitto_passwd_line() -> &'static str {
        include_str!("../testdata/mosquitto_passwd.txt").trim()
    }

    #[test]
    fn short_long_or_spaced_keys_are_refused_with_what_to_do() {
        for k in ["short", &"x".repeat(129), "has a space in it 12345"] {
            let e = check_key(k).unwrap_err();
            assert!(e.contains("label"), "{e}");
        }
        assert!(check_key("ABCD-EFGH-JKLM-NPQR").is_ok());
    }

    #[test]
    fn a_device_may_use_only_its_own_topics() {
        use Access::*;
        let me = Identity::Device("button-1");
        assert!(allowed(me, Publish, "trygg/v1/dev/button-1/evt"));
        assert!(allowed(me, Publish, "trygg/v1/dev/button-1/hb"));
        assert!(allowed(me, Subscribe, "trygg/v1/dev/button-1/ack"));
        assert!(allowed(me, Subscribe, "trygg/v1/dev/button-1/cfg"));
        for (a, t) in [
            (Publish, "trygg/v1/dev/button-2/evt"),
            (Publish, "trygg/v1/dev/button-1/ack"),
            (Publish, "trygg/v1/dev/button-1/cfg"),
            (Publish, "trygg/v1/dev/button-10/evt"),
            (Publish, "trygg/v1/dev/button-1/evt/x"),
            (Publish, "trygg/v1/sim/button-1/press"),
            (Subscribe, "trygg/v1/dev/+/ack"),
            (Subscribe, "trygg/v1/dev/#"),
            (Subscribe, "#"),
            (Subscribe, "trygg/v1/dev/button-1/evt"),
            (Subscribe, "trygg/v1/dev/button-1/+"),
        ] {
            assert!(!allowed(me, a, t), "{a:?} {t}");
        }
        assert!(allowed(Identity::Gateway, Subscribe, "trygg/v1/dev/+/evt"));
        assert!(allowed(Identity::Gateway, Publish, "trygg/v1/dev/x/ack"));
        assert!(!allowed(Identity::Gateway, Publish, "elsewhere/x"));
    }

    #[test]
    fn the_mosquitto_files_name_each_credential_and_topic() {
        let p = mosquitto_password_file([("gw", "$7$1$a$b"), ("button-1", "$7$1$c$d")]);
        assert!(p.contains("\ngw:$7$1$a$b\nbutton-1:$7$1$c$d\n"), "{p}");
        let a = mosquitto_acl_file("gw", ["button-1"]);
        assert!(
            a.contains("user gw\ntopic readwrite trygg/v1/dev/#\n"),
            "{a}"
        );
        assert!(a.contains(
            "user button-1\ntopic write trygg/v1/dev/button-1/evt\ntopic write trygg/v1/dev/button-1/hb\ntopic read trygg/v1/dev/button-1/ack\ntopic read trygg/v1/dev/button-1/cfg\n"
        ), "{a}");
    }
}
