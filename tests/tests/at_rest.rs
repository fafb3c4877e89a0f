//! Privacy on the gateway, end to end: what a running gateway keeps on disk
//! cannot be read without its key, and `trygg-gateway decommission`
//! delivers what it holds, has the backend take it off the service, and
//! leaves nothing readable behind.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use trygg_gateway::journal::{Journal, JournalError};
use trygg_tests::*;

/// Strings that must never be found in the gateway's files.
const SECRETS: [&str; 4] = [
    "r-secret-4711",
    "Soverom-nord",
    "button_press",
    "committed_ms",
];

fn evt(seq: u64) -> String {
    format!(r#"{{"v":1,"seq":{seq},"kind":"button_press"}}"#)
}

/// Every file under `dir`, read whole.
fn all_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

fn assert_nothing_readable(dir: &Path) {
    let files = all_bytes(dir);
    assert!(!files.is_empty());
    for (name, bytes) in files {
        for s in SECRETS {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                "{s:?} is readable in {name}"
            );
        }
    }
}

async fn pair_secret_device(api: &Api) {
    let (status, body) = api
        .post(
            "/api/v1/devices",
            json!({"id": "button-9", "type": "safety_button", "room": "Soverom-nord", "resident": "r-secret-4711", "key": device_key("button-9")}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_journal_cannot_be_read_without_the_gateways_key() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let backend = start_backend(&dir.path().join("backend")).await;
    // The uplink points nowhere: events stay in the journal.
    let nowhere =
        trygg_uplink::mqtt_url::MqttUrl::parse(&format!("mqtts://{}", free_addr())).unwrap();
    let data = dir.path().join("gateway");
    let mut config = gateway_config(&data, &nowhere, &backend.ready.ca_file);
    let gateway = start_gateway(config.clone()).await;
    pair_secret_device(&gateway.local_api).await;
    let mut dev = RawDevice::connect(&gateway.ready.device_broker).await;
    for seq in 1..=3 {
        dev.publish("trygg/v1/dev/button-9/evt", evt(seq)).await;
        let r = dev.receipt_on("trygg/v1/dev/button-9/ack").await;
        assert_eq!(r["status"], "committed", "{r}");
    }

    // A decommission cannot deliver them: it stops, wiping nothing, and the
    // gateway goes on serving.
    let (status, body) = gateway
        .local_api
        .post(
            "/api/v1/decommission",
            json!({"confirm": "someone-else", "deliver_within_s": 1}),
        )
        .await;
    assert_eq!(
        status, 422,
        "the gateway id must be typed to confirm: {body}"
    );
    let (status, body) = gateway
        .local_api
        .post(
            "/api/v1/decommission",
            json!({"confirm": config.gateway_id, "deliver_within_s": 1}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let failed = eventually(
        Duration::from_secs(10),
        "the decommission to give up",
        || {
            let api = gateway.local_api.clone();
            async move {
                let s = api.get("/api/v1/decommission").await;
                (s["decommission"]["phase"] == "failed").then_some(s)
            }
        },
    )
    .await;
    assert!(
        failed["decommission"]["reason"]
            .as_str()
            .unwrap()
            .contains("3 events still wait"),
        "{failed}"
    );
    dev.publish("trygg/v1/dev/button-9/evt", evt(4)).await;
    let r = dev.receipt_on("trygg/v1/dev/button-9/ack").await;
    assert_eq!(r["status"], "committed", "still serving: {r}");

    gateway.stop.cancel();
    gateway.task.await.unwrap().unwrap();

    // On disk: nothing readable, in any file of the data directory.
    assert_nothing_readable(&data);
    let journal = config.journal_path();
    assert!(matches!(
        Journal::open(&journal),
        Err(JournalError::KeyMismatch)
    ));
    let stranger = std::sync::Arc::new(trygg_gateway::seal::Sealer::new(&[9; 32]));
    assert!(matches!(
        Journal::open_sealed(&journal, stranger),
        Err(JournalError::KeyMismatch)
    ));
    // With the gateway's own keys it is all there.
    let sealer = trygg_gateway::seal::existing_sealer(
        &config.key_source().unwrap(),
        &config.data_key_path(),
    )
    .unwrap();
    let j = Journal::open_sealed(&journal, std::sync::Arc::new(sealer)).unwrap();
    let held = j.reader().pending_records().unwrap();
    assert_eq!(held.len(), 4);
    assert!(held
        .iter()
        .all(|r| r.resident.as_deref() == Some("r-secret-4711")));
    drop(j);

    // A key-encryption key that is not the one it was sealed with: the
    // gateway sets the journal aside (saying so) and serves afresh.
    let kek = config.data_dir.join("other-kek.hex");
    std::fs::write(&kek, format!("{}\n", "5a".repeat(32))).unwrap();
    config.encryption.key_source = Some(format!("file:{}", kek.display()));
    config.uplink.url = backend.ready.broker.to_string();
    let gateway = start_gateway(config.clone()).await;
    let status = gateway.local_api.get("/api/v1/status").await;
    assert!(
        status["journal_set_aside"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("cannot be opened with this key-encryption key")),
        "{status}"
    );
    gateway.stop.cancel();
    gateway.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn decommission_delivers_then_is_revoked_then_wipes_everything() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let backend = start_backend_with(&dir.path().join("backend"), |c| {
        c.supervision.gateway_offline_after_s = 2;
    })
    .await;
    let data = dir.path().join("gateway");
    let mut config = gateway_config(&data, &backend.ready.broker, &backend.ready.ca_file);
    config.uplink.heartbeat_s = 1;
    let gateway = start_gateway(config.clone()).await;
    pair_secret_device(&gateway.local_api).await;
    let mut dev = RawDevice::connect(&gateway.ready.device_broker).await;
    for seq in 1..=5 {
        dev.publish("trygg/v1/dev/button-9/evt", evt(seq)).await;
        let r = dev.receipt_on("trygg/v1/dev/button-9/ack").await;
        assert_eq!(r["status"], "committed", "{r}");
    }

    let mut cli_config = config.clone();
    cli_config.local_api.listen = gateway.ready.local_api;
    let path = write_config(dir.path(), "gateway.toml", &cli_config);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_trygg-gateway-under-test"))
        .args(["--config", path.to_str().unwrap(), "decommission", "--yes"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("done: gateway"), "{stdout}");
    assert!(!path.exists(), "the config file is removed too");

    // The gateway stopped by itself, having wiped its data directory.
    tokio::time::timeout(Duration::from_secs(20), gateway.task)
        .await
        .expect("the gateway stops after a decommission")
        .unwrap()
        .unwrap();
    let left: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec![trygg_gateway::decommission::MARKER.to_string()]);
    assert_nothing_readable(&data);

    // Everything it held reached the backend first, exactly once.
    let seqs = backend.api.device_seqs("button-9").await;
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    assert_eq!(
        backend
            .api
            .metric("gateways_decommissioned_total", "")
            .await,
        1.0
    );
    // The backend stopped supervising it: silent past the period, no alarm.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let offline: Vec<Value> = backend
        .api
        .all_alarms()
        .await
        .into_iter()
        .filter(|a| a["kind"] == "gateway_offline")
        .collect();
    assert!(offline.is_empty(), "{offline:?}");

    // It will not start again by mistake.
    config.local_api.listen = "127.0.0.1:0".parse().unwrap();
    let e = trygg_gateway::run(config, None, std::future::pending())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("decommissioned"), "{e}");
}
