//! Mosquitto's password and ACL files, written from the device register
//! whenever it changes, and Mosquitto told to reload them.
//!
//! Each file is written whole to a temporary file beside it (mode 0600),
//! synced, and renamed over the old one, so Mosquitto never reads half a
//! file. Mosquitto re-reads both on SIGHUP and then re-checks its
//! connected clients: a removed device, or the old device of a swap, is
//! disconnected.

use std::io::Write;
use std::path::Path;

use crate::config::LocalBroker;
use crate::credentials;
use crate::register::Register;

/// Writes both files for `register` and asks Mosquitto to reload them.
pub fn sync(
    broker: &LocalBroker,
    gateway_user: &str,
    gateway_key_hash: &str,
    register: &Register,
) -> Result<(), String> {
    let (Some(password_file), Some(acl_file)) =
        (&broker.mosquitto_password_file, &broker.mosquitto_acl_file)
    else {
        return Ok(());
    };
    // A device without a key has no line: it cannot connect.
    let mut entries = vec![(gateway_user, gateway_key_hash)];
    let mut users = Vec::new();
    for d in register.devices() {
        if let Some(h) = &d.key_hash {
            entries.push((d.id.as_str(), h.as_str()));
            users.push(d.id.as_str());
        }
    }
    write_atomic(
        password_file,
        &credentials::mosquitto_password_file(entries),
    )
    .map_err(|e| format!("writing {}: {e}", password_file.display()))?;
    write_atomic(
        acl_file,
        &credentials::mosquitto_acl_file(gateway_user, users),
    )
    .map_err(|e| format!("writing {}: {e}", acl_file.display()))?;
    reload(broker)
}

/// Writes both files with no one in them, not even the gateway
/// (decommission), and asks Mosquitto to reload them: every client is
/// refused from then on.
pub fn empty(broker: &LocalBroker) -> Result<(), String> {
    let (Some(password_file), Some(acl_file)) =
        (&broker.mosquitto_password_file, &broker.mosquitto_acl_file)
    else {
        return Ok(());
    };
    let note = "# Emptied by trygg-gateway decommission: no device and no gateway may connect.\n";
    write_atomic(password_file, note)
        .map_err(|e| format!("writing {}: {e}", password_file.display()))?;
    write_atomic(acl_file, note).map_err(|e| format!("writing {}: {e}", acl_file.display()))?;
    reload(broker)
}

/// Writes `text` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir
        .unwrap_or(Path::new("."))
        .join(format!(".{name}.tmp-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    drop(f);
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Some(d) = dir {
        if let Ok(d) = std::fs::File::open(d) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// SIGHUP to the pid in `mosquitto_pid_file`, and/or the reload command.
fn reload(broker: &LocalBroker) -> Result<(), String> {
    if let Some(pid_file) = &broker.mosquitto_pid_file {
        let text = std::fs::read_to_string(pid_file).map_err(|e| {
            format!(
                "reading Mosquitto's pid file {}: {e} (is Mosquitto running, with pid_file set to it?)",
                pid_file.display()
            )
        })?;
        let pid: u32 = text.trim().parse().map_err(|_| {
            format!(
                "Mosquitto's pid file {} holds `{}`, not a pid",
                pid_file.display(),
                text.trim().chars().take(40).collect::<String>()
            )
        })?;
        let status = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .map_err(|e| format!("running `kill -HUP {pid}`: {e}"))?;
        if !status.success() {
            return Err(format!(
                "`kill -HUP {pid}` (Mosquitto, from {}) failed: is it running, and may this user signal it?",
                pid_file.display()
            ));
        }
    }
    if let Some(cmd) = &broker.mosquitto_reload_command {
        let out = std::process::Command::new("sh")
            .args(["-c", cmd])
            .output()
            .map_err(|e| format!("running `{cmd}`: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "`{cmd}` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn the_files_list_every_keyed_device_and_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default_config();
        config.local_broker.mode = crate::config::BrokerMode::External;
        config.local_broker.mosquitto_password_file = Some(dir.path().join("passwd"));
        config.local_broker.mosquitto_acl_file = Some(dir.path().join("acl"));
        config.local_broker.mosquitto_reload_command =
            Some(format!("touch {}", dir.path().join("reloaded").display()));
        let mut register = Register::from_config(&config);
        let mut b = config.device("button-1").unwrap().clone();
        b.key_hash = Some(credentials::hash_key("0123456789abcdef"));
        register.extend([b]);
        sync(
            &config.local_broker,
            "trygg-gateway-gw",
            "$7$101$a$b",
            &register,
        )
        .unwrap();
        let p = std::fs::read_to_string(dir.path().join("passwd")).unwrap();
        assert!(
            p.contains("\ntrygg-gateway-gw:$7$101$a$b\nbutton-1:$7$101$"),
            "{p}"
        );
        // Devices without a key cannot connect: no line.
        assert!(!p.contains("fall-1"), "{p}");
        let a = std::fs::read_to_string(dir.path().join("acl")).unwrap();
        assert!(a.contains("topic write trygg/v1/dev/button-1/evt"), "{a}");
        assert!(!a.contains("fall-1"), "{a}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("passwd"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(dir.path().join("reloaded").exists());
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
    }

    #[test]
    fn a_failed_reload_says_what_to_check() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default_config();
        config.local_broker.mode = crate::config::BrokerMode::External;
        config.local_broker.mosquitto_password_file = Some(dir.path().join("passwd"));
        config.local_broker.mosquitto_acl_file = Some(dir.path().join("acl"));
        config.local_broker.mosquitto_pid_file = Some(dir.path().join("none.pid"));
        let e = sync(
            &config.local_broker,
            "gw",
            "$7$101$a$b",
            &Register::from_config(&config),
        )
        .unwrap_err();
        assert!(e.contains("pid_file"), "{e}");
    }

    #[test]
    fn decommission_empties_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default_config();
        config.local_broker.mode = crate::config::BrokerMode::External;
        config.local_broker.mosquitto_password_file = Some(dir.path().join("passwd"));
        config.local_broker.mosquitto_acl_file = Some(dir.path().join("acl"));
        config.local_broker.mosquitto_reload_command = Some("true".into());
        let mut register = Register::from_config(&config);
        let mut b = config.device("button-1").unwrap().clone();
        b.key_hash = Some(credentials::hash_key("0123456789abcdef"));
        register.extend([b]);
        sync(&config.local_broker, "gw", "$7$101$a$b", &register).unwrap();
        empty(&config.local_broker).unwrap();
        for f in ["passwd", "acl"] {
            let text = std::fs::read_to_string(dir.path().join(f)).unwrap();
            assert!(!text.contains("button-1") && !text.contains("gw"), "{text}");
        }
    }
}
