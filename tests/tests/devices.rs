//! The device register of a running gateway, end to end: a device paired
//! through the local API with its key connects and is taken at once, one
//! removed is cut off, a swap carries room and resident to the
//! replacement (which gets a key of its own), and `trygg-gateway
//! test-alarm` is confirmed by the backend without opening an alarm.

use std::time::Duration;

use serde_json::{json, Value};
use trygg_tests::*;

fn evt(seq: u64, kind: &str) -> String {
    format!(r#"{{"v":1,"seq":{seq},"kind":"{kind}"}}"#)
}

async fn stored_events(api: &Api) -> Vec<Value> {
    api.get("/api/v1/events?limit=10000").await["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The backend's stored event of `device` (the record's device or the
/// device it is about) and `kind`, within 15 s.
async fn event_at_backend(api: &Api, device: &str, kind: &str) -> Value {
    eventually(
        Duration::from_secs(15),
        &format!("{kind} of {device} at the backend"),
        || {
            let (api, device, kind) = (api.clone(), device.to_string(), kind.to_string());
            async move {
                stored_events(&api).await.into_iter().find(|e| {
                    e["kind"] == kind.as_str()
                        && (e["device"] == device.as_str() || e["subject"] == device.as_str())
                })
            }
        },
    )
    .await
}

async fn delete(base: &str, path: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .delete(format!("{base}{path}"))
        .send()
        .await
        .expect("local API reachable");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Whether `device`'s event `seq` reached the backend within `wait`.
async fn at_backend(api: &Api, device: &str, seq: u64, wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if api.device_seqs(device).await.contains(&seq) {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn devices_are_paired_swapped_and_removed_on_a_running_gateway() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let backend = start_backend(&dir.path().join("backend")).await;
    let mut config = gateway_config(
        &dir.path().join("gateway"),
        &backend.ready.broker,
        &backend.ready.ca_file,
    );
    // Unknown devices are refused outright here (first contact has its
    // own test).
    config.local_broker.first_contact = false;
    let gateway = start_gateway(config).await;
    let api = &gateway.local_api;
    let mut dev = RawDevice::connect(&gateway.ready.device_broker).await;

    // Not paired yet: it cannot even connect.
    let refused = dev.connect_as("button-7").await;
    assert!(refused.is_err(), "an unpaired device connected");
    assert!(
        api.metric("device_connects_refused_total", "reason=\"unknown_device\"")
            .await
            >= 1.0
    );

    // Paired through the API with the key from its label: it connects, and
    // its next event is committed, with its place.
    let (status, body) = api
        .post(
            "/api/v1/devices",
            json!({"id": "button-7", "type": "safety_button", "room": "kitchen", "resident": "r-0042", "supervision_s": 600, "key": device_key("button-7")}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["room"], "kitchen");
    assert_eq!(body["supervision_s"], 600);
    assert_eq!(body["health"]["supervision"], "ok");
    assert_eq!(body["has_key"], true);
    assert!(body.get("key").is_none(), "a key given is never shown back");
    dev.publish(
        "trygg/v1/dev/button-7/hb",
        r#"{"v":1,"battery":77,"rssi":-58}"#,
    )
    .await;
    dev.publish("trygg/v1/dev/button-7/evt", evt(2, "battery_low"))
        .await;
    let r = dev.receipt_on("trygg/v1/dev/button-7/ack").await;
    assert_eq!(r["status"], "committed", "{r}");
    let e = event_at_backend(&backend.api, "button-7", "battery_low").await;
    assert_eq!(
        (&e["room"], &e["resident"]),
        (&json!("kitchen"), &json!("r-0042")),
        "{e}"
    );

    // Health in the list: battery, signal, last message.
    let shown = api.get("/api/v1/devices/button-7").await;
    assert_eq!(shown["health"]["battery"], 77, "{shown}");
    assert_eq!(shown["health"]["rssi"], -58, "{shown}");
    assert!(
        shown["health"]["last_seen_ms"].as_u64().is_some(),
        "{shown}"
    );
    let list = api.get("/api/v1/devices").await["devices"]
        .as_array()
        .cloned()
        .unwrap();
    assert_eq!(list.len(), 8, "the 7 of the config and button-7");

    // Pairing it again, a bad id or a bad key: refused with a clear message.
    let (status, body) = api
        .post(
            "/api/v1/devices",
            json!({"id": "button-7", "type": "pull_cord"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("already paired"),
        "{body}"
    );
    let (status, body) = api
        .post(
            "/api/v1/devices",
            json!({"id": "bad id", "type": "pull_cord"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = api
        .post(
            "/api/v1/devices",
            json!({"id": "x-1", "type": "teleporter"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("teleporter"),
        "{body}"
    );
    let (status, body) = api
        .post(
            "/api/v1/devices",
            json!({"id": "x-1", "type": "pull_cord", "key": "short"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("label"), "{body}");

    // Swap: the replacement carries room and resident and has a key of its
    // own, generated and shown once; the old one is cut off.
    let (status, body) = api
        .post(
            "/api/v1/devices/button-7/swap",
            json!({"new_id": "button-8"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            &body["type"],
            &body["room"],
            &body["resident"],
            &body["supervision_s"]
        ),
        (
            &json!("safety_button"),
            &json!("kitchen"),
            &json!("r-0042"),
            &json!(600)
        ),
        "{body}"
    );
    let new_key = body["key"].as_str().expect("a generated key").to_string();
    assert_eq!(new_key.len(), 32, "{body}");
    // The old device's key is not the new one's.
    dev.set_key("button-8", &device_key("button-7"));
    assert!(
        dev.connect_as("button-8").await.is_err(),
        "button-8 with button-7's key"
    );
    let mut dev8 = RawDevice::connect(&gateway.ready.device_broker).await;
    dev8.set_key("button-8", &new_key);
    dev8.publish("trygg/v1/dev/button-8/evt", evt(1, "tamper"))
        .await;
    let r = dev8.receipt_on("trygg/v1/dev/button-8/ack").await;
    assert_eq!(r["status"], "committed", "{r}");
    let e = event_at_backend(&backend.api, "button-8", "tamper").await;
    assert_eq!(
        (&e["room"], &e["resident"]),
        (&json!("kitchen"), &json!("r-0042")),
        "{e}"
    );
    // button-7 is still connected from before: its next publish closes its
    // connection, the event goes nowhere, and it cannot connect again.
    dev.publish("trygg/v1/dev/button-7/evt", evt(3, "button_press"))
        .await;
    eventually(
        Duration::from_secs(10),
        "button-7's connection closed",
        || {
            let dev = &dev;
            async move { (dev.connection_errors("button-7").await > 0).then_some(()) }
        },
    )
    .await;
    assert!(!at_backend(&backend.api, "button-7", 3, Duration::from_secs(2)).await);
    let mut again = RawDevice::connect(&gateway.ready.device_broker).await;
    assert!(again.connect_as("button-7").await.is_err());
    again.set_key("button-7", &new_key);
    assert!(again.connect_as("button-7").await.is_err());

    // Remove: it cannot connect any more, and what it sent goes nowhere.
    let (status, body) = delete(&api.base, "/api/v1/devices/button-8").await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = delete(&api.base, "/api/v1/devices/button-8").await;
    assert_eq!(status, 404);
    dev8.publish("trygg/v1/dev/button-8/evt", evt(2, "button_press"))
        .await;
    eventually(
        Duration::from_secs(10),
        "button-8's connection closed",
        || {
            let dev8 = &dev8;
            async move { (dev8.connection_errors("button-8").await > 0).then_some(()) }
        },
    )
    .await;
    let mut gone = RawDevice::connect(&gateway.ready.device_broker).await;
    gone.set_key("button-8", &new_key);
    assert!(
        gone.connect_as("button-8").await.is_err(),
        "a removed device connected"
    );
    assert!(!at_backend(&backend.api, "button-8", 2, Duration::from_secs(2)).await);

    // The register survives a restart; the config's [[devices]] does not
    // put the removed one back.
    gateway.stop.cancel();
    gateway.task.await.unwrap().unwrap();
    let mut config = gateway_config(
        &dir.path().join("gateway"),
        &backend.ready.broker,
        &backend.ready.ca_file,
    );
    config.devices.retain(|d| d.id != "door-1");
    let gateway = start_gateway(config).await;
    let ids: Vec<String> = gateway.local_api.get("/api/v1/devices").await["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    assert!(
        ids.contains(&"door-1".to_string()),
        "the register wins: {ids:?}"
    );
    assert!(
        !ids.iter()
            .any(|i| i.starts_with("button-7") || i == "button-8"),
        "{ids:?}"
    );
    gateway.stop.cancel();
    let _ = gateway.task.await;
    backend.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_alarm_from_the_cli_is_confirmed_by_the_backend_and_opens_no_alarm() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let backend = start_backend(&dir.path().join("backend")).await;
    let config = gateway_config(
        &dir.path().join("gateway"),
        &backend.ready.broker,
        &backend.ready.ca_file,
    );
    let gateway = start_gateway(config.clone()).await;
    // The CLI finds the running gateway through the config's local_api.listen.
    let mut cli_config = config;
    cli_config.local_api.listen = gateway.ready.local_api;
    let path = write_config(dir.path(), "gateway.toml", &cli_config);
    let exe = env!("CARGO_BIN_EXE_trygg-gateway-under-test");
    let out = tokio::process::Command::new(exe)
        .args([
            "--config",
            path.to_str().unwrap(),
            "test-alarm",
            "--device",
            "button-1",
        ])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("confirmed by the backend in"), "{stdout}");

    // Raised by the gateway (its own id and counter), with the device's place,
    // and listed under the device as well (`subject`).
    let e = event_at_backend(&backend.api, &cli_config.gateway_id, "test_alarm").await;
    assert_eq!(
        (&e["room"], &e["resident"]),
        (&json!("bedroom"), &json!("r-7f3a")),
        "{e}"
    );
    assert_eq!(e["subject"], "button-1", "{e}");
    assert!(
        backend
            .api
            .events("button-1")
            .await
            .iter()
            .any(|x| x["event_id"] == e["event_id"]),
        "the device's own listing holds its test alarm"
    );
    assert!(
        backend
            .api
            .all_alarms()
            .await
            .iter()
            .all(|a| a["kind"] != "test_alarm"),
        "a test alarm is not a care alarm"
    );

    // `device list` prints the table with the health columns.
    let out = tokio::process::Command::new(exe)
        .args(["--config", path.to_str().unwrap(), "device", "list"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.starts_with("ID") && stdout.contains("BATTERY") && stdout.contains("button-1"),
        "{stdout}"
    );

    // The gateway stopped: the CLI says how to start it.
    gateway.stop.cancel();
    let _ = gateway.task.await;
    let out = tokio::process::Command::new(exe)
        .args(["--config", path.to_str().unwrap(), "device", "list"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is trygg-gateway running?"), "{stderr}");
    backend.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_alarm_without_an_uplink_says_it_is_committed_but_not_confirmed() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let backend = start_backend(&dir.path().join("backend")).await;
    // The backend's CA, but nobody listening where the uplink goes.
    let nowhere = trygg_uplink::mqtt_url::MqttUrl {
        host: "127.0.0.1".into(),
        port: free_addr().port(),
        tls: true,
    };
    let config = gateway_config(
        &dir.path().join("gateway"),
        &nowhere,
        &backend.ready.ca_file,
    );
    let gateway = start_gateway(config).await;
    let exe = env!("CARGO_BIN_EXE_trygg-gateway-under-test");
    let api = gateway.ready.local_api.to_string();
    let out = tokio::process::Command::new(exe)
        .args(["test-alarm", "--api", &api, "--timeout-s", "1"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("committed on the gateway") && stderr.contains("not confirmed"),
        "{stderr}"
    );
    // It is in the journal, waiting for the uplink.
    let status = gateway.local_api.get("/api/v1/status").await;
    assert_eq!(status["journal_pending"]["care"], 1, "{status}");
    gateway.stop.cancel();
    let _ = gateway.task.await;
    backend.stop.cancel();
}
