//! Settings set at the backend reach the gateway: versioned, applied whole
//! or refused whole, confirmed back, audited, kept across a restart; the
//! device's own settings go to it on its `cfg` topic.

use std::time::Duration;

use serde_json::{json, Value};
use trygg_tests::*;

async fn put(api: &Api, path: &str, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .put(format!("{}{path}", api.base))
        .json(&body)
        .send()
        .await
        .expect("API reachable");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The backend's record once the gateway has answered `version`.
async fn answered(api: &Api, gateway: &str, version: u64) -> Value {
    eventually(
        Duration::from_secs(15),
        &format!("the gateway's answer to version {version}"),
        || {
            let api = api.clone();
            let path = format!("/api/v1/gateways/{gateway}/settings");
            async move {
                let r = api.get(&path).await;
                (r["version"] == version && r["state"] != "pending").then_some(r)
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn settings_are_pushed_applied_confirmed_and_kept() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let backend = start_backend(&dir.path().join("backend")).await;
    let config = gateway_config(
        &dir.path().join("gateway"),
        &backend.ready.broker,
        &backend.ready.ca_file,
    );
    let gw = config.gateway_id.clone();
    let gateway = start_gateway(config.clone()).await;
    let path = format!("/api/v1/gateways/{gw}/settings");

    // Refused at the backend before anything is pushed: named field.
    let (status, body) = put(&backend.api, &path, json!({"heartbeat_s": 0})).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("heartbeat_s"),
        "{body}"
    );
    let (status, body) = put(&backend.api, &path, json!({"hearbeat_s": 5})).await;
    assert_eq!(status, 422, "a misspelt field: {body}");

    // A device listens to its settings.
    let mut dev = RawDevice::connect(&gateway.ready.device_broker).await;
    dev.subscribe("trygg/v1/dev/button-1/cfg").await;

    let (status, body) = put(
        &backend.api,
        &path,
        json!({
            "heartbeat_s": 7,
            "supervision_periods_s": {"fall_sensor": 1200},
            "devices": {"button-1": {"supervision_s": 300, "pre_alarm_s": 5}}
        }),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        (body["version"].as_u64(), body["state"].as_str()),
        (Some(1), Some("pending"))
    );

    let r = answered(&backend.api, &gw, 1).await;
    assert_eq!(r["state"], "applied", "{r}");
    let cfg = dev.receipt_on("trygg/v1/dev/button-1/cfg").await;
    assert_eq!(cfg, json!({"v": 1, "pre_alarm_s": 5}));
    let device = gateway.local_api.get("/api/v1/devices/button-1").await;
    assert_eq!(device["supervision_s"], 300, "{device}");
    assert_eq!(device["pre_alarm_s"], 5, "{device}");
    let status = gateway.local_api.get("/api/v1/status").await;
    assert_eq!(status["heartbeat_s"], 7, "{status}");
    assert_eq!(status["settings"]["applied_version"], 1, "{status}");

    // A version naming a device this gateway does not have: refused whole,
    // with the reason, and nothing of it applied.
    let (status, _) = put(
        &backend.api,
        &path,
        json!({
            "heartbeat_s": 9,
            "devices": {"button-1": {"supervision_s": 120}, "ghost-9": {"supervision_s": 60}}
        }),
    )
    .await;
    assert_eq!(status, 202);
    let r = answered(&backend.api, &gw, 2).await;
    assert_eq!(r["state"], "refused", "{r}");
    assert!(r["error"].as_str().unwrap().contains("ghost-9"), "{r}");
    let device = gateway.local_api.get("/api/v1/devices/button-1").await;
    assert_eq!(
        device["supervision_s"], 300,
        "nothing of a refused version is applied"
    );
    let status = gateway.local_api.get("/api/v1/status").await;
    assert_eq!(status["heartbeat_s"], 7);
    assert_eq!(status["settings"]["last"]["applied"], false);

    // A restart keeps what was applied.
    gateway.stop.cancel();
    gateway.task.await.unwrap().unwrap();
    let gateway = start_gateway(config).await;
    let status = gateway.local_api.get("/api/v1/status").await;
    assert_eq!(status["heartbeat_s"], 7, "{status}");
    assert_eq!(status["settings"]["applied_version"], 1);
    let device = gateway.local_api.get("/api/v1/devices/button-1").await;
    assert_eq!(device["supervision_s"], 300);
    // The embedded broker started afresh: the device gets its settings again.
    let mut dev = RawDevice::connect(&gateway.ready.device_broker).await;
    dev.subscribe("trygg/v1/dev/button-1/cfg").await;
    assert_eq!(
        dev.receipt_on("trygg/v1/dev/button-1/cfg").await,
        json!({"v": 1, "pre_alarm_s": 5})
    );

    // A fixed version 3 is applied after the refused one.
    let (status, _) = put(
        &backend.api,
        &path,
        json!({"heartbeat_s": 9, "devices": {"button-1": {"supervision_s": 120}}}),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(answered(&backend.api, &gw, 3).await["state"], "applied");
    let device = gateway.local_api.get("/api/v1/devices/button-1").await;
    assert_eq!(device["supervision_s"], 120);
    assert_eq!(device["pre_alarm_s"], 5, "what a version leaves out stays");
    gateway.stop.cancel();
    let _ = gateway.task.await;
}
