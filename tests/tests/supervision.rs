//! Silence is an event, end to end: a device that stops talking raises
//! `device_silent` at the backend and its next message clears it; a gateway
//! that is killed raises `gateway_offline` within the configured period
//! and clears it when it comes back.

use std::time::Duration;

use serde_json::Value;
use trygg_tests::*;
use trygg_uplink::mqtt_url::MqttUrl;

async fn alarm_of(api: &Api, kind: &str, device: &str, state: &str, within: Duration) -> Value {
    eventually(
        within,
        &format!("a {state} {kind} alarm for {device}"),
        || {
            let (api, kind, device, state) = (
                api.clone(),
                kind.to_string(),
                device.to_string(),
                state.to_string(),
            );
            async move {
                api.all_alarms().await.into_iter().find(|a| {
                    a["kind"] == kind.as_str()
                        && a["device"] == device.as_str()
                        && a["state"] == state.as_str()
                })
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_device_raises_device_silent_and_its_next_message_clears_it() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let backend = start_backend(&dir.path().join("backend")).await;
    let mut config = gateway_config(
        &dir.path().join("gateway"),
        &backend.ready.broker,
        &backend.ready.ca_file,
    );
    for d in &mut config.devices {
        d.supervision_s = Some(if d.id == "door-1" { 2 } else { 0 });
    }
    let gateway = start_gateway(config).await;
    let dev = RawDevice::connect(&gateway.ready.device_broker).await;
    dev.publish("trygg/v1/dev/door-1/hb", r#"{"v":1,"battery":80}"#)
        .await;

    let started = std::time::Instant::now();
    let silent = alarm_of(
        &backend.api,
        "device_silent",
        "door-1",
        "open",
        Duration::from_secs(15),
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "raised before the period was over"
    );
    assert_eq!(
        silent["category"], "technical",
        "shown apart from care alarms"
    );
    assert_eq!(silent["room"], "hallway");
    assert_eq!(silent["label_nb"], "Enhet taus");
    // Low battery, tamper and power failure are technical alarms too, and
    // the API shows technical alarms apart from care alarms.
    let mut seq = 0;
    for kind in ["battery_low", "tamper", "power_failure", "button_press"] {
        seq += 1;
        dev.publish(
            "trygg/v1/dev/button-1/evt",
            format!(r#"{{"v":1,"seq":{seq},"kind":"{kind}"}}"#),
        )
        .await;
    }
    let technical = eventually(Duration::from_secs(10), "four technical alarms", || {
        let api = backend.api.clone();
        async move {
            let list = api.get("/api/v1/alarms?group=technical").await["alarms"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            (list.len() == 4).then_some(list)
        }
    })
    .await;
    let mut kinds: Vec<&str> = technical
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        vec!["battery_low", "device_silent", "power_failure", "tamper"]
    );
    let care = backend.api.get("/api/v1/alarms?group=care").await["alarms"]
        .as_array()
        .cloned()
        .unwrap();
    assert_eq!(care.len(), 1);
    assert_eq!(care[0]["kind"], "button_press");

    let status = gateway.local_api.get("/api/v1/status").await;
    assert_eq!(status["devices_silent"], serde_json::json!(["door-1"]));

    // Its next message (a heartbeat) clears it, once.
    dev.publish("trygg/v1/dev/door-1/hb", r#"{"v":1,"battery":80}"#)
        .await;
    let cleared = alarm_of(
        &backend.api,
        "device_silent",
        "door-1",
        "closed",
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(cleared["closed_by"], "trygg");
    assert_eq!(cleared["id"], silent["id"]);
    let resumed: Vec<Value> = backend
        .api
        .events(&gateway_id())
        .await
        .into_iter()
        .filter(|e| e["kind"] == "device_resumed")
        .collect();
    assert_eq!(resumed.len(), 1, "{resumed:?}");
    // Nobody else was supervised, so no other device went silent.
    assert!(backend
        .api
        .all_alarms()
        .await
        .iter()
        .filter(|a| a["kind"] == "device_silent")
        .all(|a| a["device"] == "door-1"));
}

fn gateway_id() -> String {
    trygg_gateway::Config::default_config().gateway_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_gateway_raises_gateway_offline_and_clears_it_when_back() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let backend = start_backend_with(&dir.path().join("backend"), |c| {
        c.supervision.gateway_offline_after_s = 4;
    })
    .await;
    let mut config = gateway_config(
        &dir.path().join("gateway"),
        &backend.ready.broker,
        &backend.ready.ca_file,
    );
    config.uplink.heartbeat_s = 1;
    config.local_broker.listen = free_addr();
    for d in &mut config.devices {
        d.supervision_s = Some(0);
    }
    // Enrolled for real: a code from the backend, used by the gateway at start.
    prepare_enrollment(&mut config).await;
    let config_file = write_config(dir.path(), "gateway.toml", &config);
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_trygg-gateway-under-test"));
    let args = ["--config", config_file.to_str().unwrap()];
    let gateway = ChildService::start(exe, &args, "trygg-gateway ready:").await;
    let _ = MqttUrl::parse(&gateway.field("device-broker")).unwrap();
    let gw = gateway_id();

    // Heart-beating, it stays online well past the period.
    eventually(Duration::from_secs(10), "the first heartbeat", || {
        let api = backend.api.clone();
        async move {
            let text = api.text("/metrics").await;
            text.contains("gateways_offline 0").then_some(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        backend
            .api
            .all_alarms()
            .await
            .iter()
            .all(|a| a["kind"] != "gateway_offline"),
        "a heart-beating gateway is not offline"
    );

    gateway.kill9().await;
    let killed_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let offline = alarm_of(
        &backend.api,
        "gateway_offline",
        &gw,
        "open",
        Duration::from_secs(15),
    )
    .await;
    // The last heartbeat came at most 1 s before the kill; the period is 4 s.
    let after_ms = offline["raised_ms"].as_u64().unwrap() as i64 - killed_ms as i64;
    assert!(
        (2000..=10_000).contains(&after_ms),
        "gateway_offline raised {after_ms} ms after the kill; the period is 4 s"
    );
    assert_eq!(offline["severity"], "yellow");
    assert_eq!(offline["category"], "technical");

    let gateway = ChildService::start(exe, &args, "trygg-gateway ready:").await;
    let cleared = alarm_of(
        &backend.api,
        "gateway_offline",
        &gw,
        "closed",
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(cleared["closed_by"], "trygg");
    let all: Vec<Value> = backend
        .api
        .all_alarms()
        .await
        .into_iter()
        .filter(|a| a["kind"] == "gateway_offline")
        .collect();
    assert_eq!(all.len(), 1, "raised once: {all:?}");
    gateway.terminate().await;
}
