//! The binary as a person or a test harness runs it.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_trygg-bridge");

#[test]
fn config_generate_prints_the_defaults_which_parse_and_validate() {
    let out = std::process::Command::new(BIN)
        .args(["config", "generate"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text, trygg_bridge::config::DEFAULT_TOML);
    let c = trygg_bridge::Config::from_toml_str(&text).unwrap();
    c.validate().unwrap();
}

#[test]
fn a_misspelt_config_key_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bridge.toml");
    std::fs::write(&path, "[api]\nlisten_addr = \"127.0.0.1:0\"\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["config", "check"])
        .env("TRYGG_BRIDGE_CONFIG", &path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen_addr"));
}

#[tokio::test]
async fn run_prints_one_ready_line_with_the_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bridge.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = {:?}\n[broker]\nlisten = \"127.0.0.1:0\"\n[api]\nlisten = \"127.0.0.1:0\"\n[console]\nlisten = \"127.0.0.1:0\"\n[enrollment]\nlisten = \"127.0.0.1:0\"\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("ready line in time")
        .unwrap()
        .expect("a line");
    let rest = line
        .strip_prefix("trygg-bridge ready: ")
        .unwrap_or_else(|| panic!("{line}"));
    let fields: Vec<(&str, &str)> = rest
        .split(' ')
        .map(|kv| kv.split_once('=').unwrap())
        .collect();
    assert_eq!(
        fields.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
        ["broker", "api", "ca", "console", "enroll", "gateway_ca"]
    );
    assert!(fields[3].1.starts_with("http://127.0.0.1:"), "{line}");
    assert!(fields[4].1.starts_with("https://127.0.0.1:"), "{line}");
    assert!(std::path::Path::new(fields[5].1).exists(), "{line}");
    assert!(fields[0].1.starts_with("mqtts://127.0.0.1:"));
    assert!(std::path::Path::new(fields[2].1).exists());
    let api = fields[1].1.strip_prefix("http://").unwrap();

    let mut s = tokio::net::TcpStream::connect(api).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"),
        "{answer}"
    );
    child.kill().await.unwrap();
}

/// A config whose data dir is in `dir`, for the register commands.
fn data_config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("bridge.toml");
    std::fs::write(
        &path,
        format!("data_dir = {:?}\n", dir.join("data").display().to_string()),
    )
    .unwrap();
    path
}

/// Runs `trygg-bridge --config CONFIG ARGS` with `stdin` as its input.
fn run_with_stdin(config: &std::path::Path, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

const ADD_ADMIN: &[&str] = &[
    "user",
    "add",
    "--username",
    "admin",
    "--role",
    "administrator",
    "--units",
    "*",
    "--display-name",
    "Anne Admin",
    "--password-stdin",
];

#[test]
fn user_add_makes_the_first_administrator_from_a_password_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let config = data_config(dir.path());
    let out = run_with_stdin(&config, ADD_ADMIN, "correct horse battery\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("user admin added"));

    let list = run_with_stdin(&config, &["user", "list"], "");
    assert!(list.status.success());
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("admin ") && l.contains("administrator") && l.contains('*')),
        "{text}"
    );

    let store = trygg_bridge::store::Store::open(&dir.path().join("data/bridge.redb")).unwrap();
    let user = store.user("admin").unwrap().expect("stored");
    assert_eq!(user.role, trygg_bridge::access::Role::Administrator);
    assert_eq!(user.units, ["*"]);
    assert_eq!(user.display_name, "Anne Admin");
    assert!(user.password_hash.starts_with("$argon2id$"));
    assert!(trygg_bridge::access::verify_password(
        &user.password_hash,
        "correct horse battery"
    ));
    let created = store
        .audit(&trygg_bridge::access::AuditQuery {
            action: Some("user_create".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].target, "user/admin");
    assert!(created[0].actor.starts_with("cli:"), "{:?}", created[0]);
}

#[test]
fn user_add_refuses_a_weak_password_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = data_config(dir.path());
    let out = run_with_stdin(&config, ADD_ADMIN, "admin123\n");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at least 10 characters"), "{err}");
    assert!(!err.contains("backtrace"), "{err}");
    // No password at all is refused too, never defaulted.
    let out = run_with_stdin(&config, ADD_ADMIN, "");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no password"));
    let store = trygg_bridge::store::Store::open(&dir.path().join("data/bridge.redb")).unwrap();
    assert!(store.users().unwrap().is_empty());
}

#[test]
fn user_add_refuses_a_duplicate_and_keeps_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let config = data_config(dir.path());
    assert!(
        run_with_stdin(&config, ADD_ADMIN, "correct horse battery\n")
            .status
            .success()
    );
    let out = run_with_stdin(&config, ADD_ADMIN, "another long password\n");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("a user named admin exists already"), "{err}");
    let store = trygg_bridge::store::Store::open(&dir.path().join("data/bridge.redb")).unwrap();
    let user = store.user("admin").unwrap().unwrap();
    assert!(trygg_bridge::access::verify_password(
        &user.password_hash,
        "correct horse battery"
    ));
}

#[test]
fn user_add_without_a_terminal_nor_password_stdin_says_how() {
    let dir = tempfile::tempdir().unwrap();
    let config = data_config(dir.path());
    let out = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["user", "add", "--username", "kari", "--role", "operator"])
        .args(["--units", "sentrum"])
        .stdin(Stdio::null())
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--password-stdin"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn resident_add_and_gateway_unit_fill_the_register() {
    let dir = tempfile::tempdir().unwrap();
    let config = data_config(dir.path());
    let out = run_with_stdin(
        &config,
        &[
            "resident",
            "add",
            "--id",
            "r-7f3a",
            "--name",
            "Ola Nordmann",
            "--unit",
            "sentrum",
            "--address",
            "Storgata 1",
            "--notes",
            "Key safe 1234",
        ],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_with_stdin(
        &config,
        &["gateway-unit", "--gateway", "gw-1", "--unit", "nord"],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = trygg_bridge::store::Store::open(&dir.path().join("data/bridge.redb")).unwrap();
    let r = store.resident("r-7f3a").unwrap().unwrap();
    assert_eq!(
        (r.name.as_str(), r.unit.as_str(), r.notes.as_str()),
        ("Ola Nordmann", "sentrum", "Key safe 1234")
    );
}

#[tokio::test]
async fn register_commands_say_plainly_when_the_bridge_holds_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bridge.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = {:?}\n[broker]\nlisten = \"127.0.0.1:0\"\n[api]\nlisten = \"127.0.0.1:0\"\n\
             [console]\nlisten = \"127.0.0.1:0\"\n[enrollment]\nlisten = \"127.0.0.1:0\"\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    let mut bridge = tokio::process::Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(bridge.stdout.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("ready line in time")
        .unwrap()
        .expect("a line");
    let out = run_with_stdin(&path, ADD_ADMIN, "correct horse battery\n");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the bridge is running"), "{err}");
    assert!(err.contains("stop it first"), "{err}");
    bridge.kill().await.unwrap();
}

/// With the bridge stopped, enrollment codes and revocation work on the
/// store itself: a code made, listed without the code, spent by an
/// enrollment, the gateway revoked, each audited.
#[test]
fn enrollment_commands_work_on_the_store_with_the_bridge_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bridge.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = {:?}\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| run_with_stdin(&path, args, "");
    let out = run(&[
        "enroll-code",
        "create",
        "--gateway",
        "gw-123",
        "--site",
        "Frogner 12",
        "--valid",
        "2h",
    ]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = text
        .lines()
        .map(str::trim)
        .find(|l| l.len() == 19 && l.split('-').count() == 4)
        .unwrap_or_else(|| panic!("{text}"))
        .to_string();
    assert!(text.contains("trygg-gateway enroll --code"), "{text}");

    let out = run(&["enroll-code", "list"]);
    let list = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(list.contains("gw-123") && list.contains("open"), "{list}");
    assert!(!list.contains(&code), "the code is never shown again");

    // A bad id and a bad duration are refused plainly.
    let out = run(&["enroll-code", "create", "--gateway", "gw/1", "--site", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a gateway id"));
    let out = run(&[
        "enroll-code",
        "create",
        "--gateway",
        "gw-1",
        "--site",
        "x",
        "--valid",
        "3y",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("24h"));

    // Spend it as the endpoint would, then revoke.
    {
        let store = trygg_bridge::store::Store::open(&dir.path().join("data/bridge.redb")).unwrap();
        let ca = trygg_bridge::enrollment::GatewayCa::load_or_create(
            &dir.path().join("data/gateway-ca"),
            730,
        )
        .unwrap();
        let (_key, csr) = trygg_uplink::enroll::new_key_and_csr("gw-123").unwrap();
        let request = trygg_uplink::enroll::EnrollRequest {
            v: 1,
            gateway: "gw-123".into(),
            code: code.clone(),
            csr,
        };
        store
            .redeem_enroll_code(&request, &ca, "10.0.0.2", trygg_bridge::store::now_ms())
            .unwrap();
    }
    let out = run(&["gateway", "list"]);
    let list = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(list.contains("gw-123") && list.contains("valid"), "{list}");
    let out = run(&["gateway", "revoke", "gw-123", "--reason", "kit stolen"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 certificate(s) revoked"));
    let out = run(&["gateway", "list"]);
    let list = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        list.contains("revoked") && list.contains("kit stolen"),
        "{list}"
    );

    let store = trygg_bridge::store::Store::open(&dir.path().join("data/bridge.redb")).unwrap();
    let actions: Vec<String> = store
        .audit(&trygg_bridge::access::AuditQuery::default())
        .unwrap()
        .into_iter()
        .map(|a| a.action)
        .collect();
    assert_eq!(
        actions,
        ["gateway_revoke", "gateway_enroll", "enroll_code_create"]
    );
}
