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
            "data_dir = {:?}\n[broker]\nlisten = \"127.0.0.1:0\"\n[api]\nlisten = \"127.0.0.1:0\"\n",
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
        ["broker", "api", "ca"]
    );
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
