//! Keys for simulated devices: each device's MQTT password, derived from
//! its id and a secret made at random for this process, so that the
//! simulator (and the tests, which run in one process with it) can pair
//! devices and connect them without keeping a list. Nothing here is for a
//! real home: there every key is random and on the device's label.

use std::sync::OnceLock;

use ring::rand::SecureRandom;
use trygg_gateway::config::Device;

static SECRET: OnceLock<ring::hmac::Key> = OnceLock::new();

fn random_secret() -> [u8; 32] {
    let mut b = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("the system's random number generator");
    b
}

fn secret() -> &'static ring::hmac::Key {
    SECRET.get_or_init(|| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &random_secret()))
}

/// Takes the secret from `path` (made there, mode 0600, if missing), so
/// that keys stay the same across runs on one data dir. Without effect
/// once a key was derived in this process.
pub fn init_from_file(path: &std::path::Path) -> std::io::Result<()> {
    let hex = match std::fs::read_to_string(path) {
        Ok(t) if t.trim().len() == 64 => t.trim().to_string(),
        _ => {
            let h: String = random_secret().iter().map(|b| format!("{b:02x}")).collect();
            trygg_gateway::mosquitto::write_atomic(path, &format!("{h}\n"))?;
            h
        }
    };
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect();
    let _ = SECRET.set(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes));
    Ok(())
}

/// The key of simulated device `id` (32 hex digits), the same for the
/// whole process.
pub fn device_key(id: &str) -> String {
    let tag = ring::hmac::sign(secret(), id.as_bytes());
    tag.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The hash the gateway keeps for [`device_key`] of `id`.
pub fn key_hash(id: &str) -> String {
    trygg_gateway::credentials::hash_key(&device_key(id))
}

/// Gives every device without one the hash of its simulated key.
pub fn with_keys(devices: &mut [Device]) {
    for d in devices {
        if d.key_hash.is_none() {
            d.key_hash = Some(key_hash(&d.id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_device_has_its_own_key_that_its_hash_verifies() {
        let (a, b) = (device_key("button-1"), device_key("button-2"));
        assert_ne!(a, b);
        assert_eq!(a, device_key("button-1"));
        assert!(trygg_gateway::credentials::check_key(&a).is_ok());
        assert!(trygg_gateway::credentials::verify_key(
            &a,
            &key_hash("button-1")
        ));
        assert!(!trygg_gateway::credentials::verify_key(
            &b,
            &key_hash("button-1")
        ));
    }
}
