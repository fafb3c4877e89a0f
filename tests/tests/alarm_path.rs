//! A button press travels device -> local broker -> gateway journal ->
//! uplink (MQTT v5, TLS) -> cloud-bridge -> API, as an open alarm.

use std::time::Duration;

use trygg_protocol::{EventKind, ReceiptStatus};
use trygg_sim::device::spawn_device;
use trygg_tests::*;

async fn press_reaches_the_backend(
    gateway_config: impl FnOnce(&InProcessBackend, &std::path::Path) -> trygg_gateway::Config,
) {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let backend = start_backend(&dir.path().join("backend")).await;
    let gateway = start_gateway(gateway_config(&backend, &dir.path().join("gateway"))).await;

    let button = spawn_device("button-1", &gateway.ready.device_broker, None);
    let seq = button.emit(EventKind::ButtonPress).await.unwrap();
    let (status, _) = button
        .wait_receipt(seq, Duration::from_secs(10))
        .await
        .expect("the gateway's receipt");
    assert_eq!(status, ReceiptStatus::Committed);

    let open = eventually(
        Duration::from_secs(10),
        "the alarm open at the backend",
        || {
            let api = backend.api.clone();
            async move {
                let open = api.alarms("open").await;
                (!open.is_empty()).then_some(open)
            }
        },
    )
    .await;
    assert_eq!(open.len(), 1, "{open:?}");
    let alarm = &open[0];
    assert_eq!(alarm["kind"], "button_press");
    assert_eq!(alarm["severity"], "red");
    assert_eq!(alarm["device"], "button-1");
    assert_eq!(alarm["device_seq"], seq);
    assert_eq!(alarm["resident"], "r-7f3a");
    assert_eq!(alarm["room"], "bedroom");
    assert_eq!(alarm["state"], "open");

    // The carer's side of the path: acknowledge, then close with a note.
    let id = alarm["id"].as_u64().unwrap();
    let (s, a) = backend
        .api
        .post(
            &format!("/api/v1/alarms/{id}/acknowledge"),
            serde_json::json!({"by": "kari"}),
        )
        .await;
    assert_eq!((s, a["state"].as_str()), (200, Some("acknowledged")));
    let (s, a) = backend
        .api
        .post(
            &format!("/api/v1/alarms/{id}/close"),
            serde_json::json!({"by": "kari", "note": "visited; all well", "cause": "real"}),
        )
        .await;
    assert_eq!((s, a["state"].as_str()), (200, Some("closed")));
    assert_eq!(a["cause"], "real");
    assert!(backend.api.alarms("open").await.is_empty());

    // The journal is emptied once the backend's receipt arrived.
    eventually(
        Duration::from_secs(10),
        "the gateway journal to drain",
        || {
            let api = gateway.local_api.clone();
            async move {
                (api.get("/api/v1/status").await["journal_pending"]["alarm"] == 0).then_some(())
            }
        },
    )
    .await;
    gateway.stop.cancel();
    gateway.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn button_press_reaches_the_backend_as_an_open_alarm_with_the_embedded_broker() {
    press_reaches_the_backend(|backend, dir| {
        gateway_config(dir, &backend.ready.broker, &backend.ready.ca_file)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn button_press_reaches_the_backend_as_an_open_alarm_with_mosquitto_as_the_local_broker() {
    let mosquitto = Mosquitto::start().unwrap_or_else(|e| panic!("{e}"));
    let url = mosquitto.url.clone();
    press_reaches_the_backend(move |backend, dir| {
        let mut c = gateway_config(dir, &backend.ready.broker, &backend.ready.ca_file);
        c.local_broker.mode = trygg_gateway::config::BrokerMode::External;
        c.local_broker.url = url.to_string();
        c
    })
    .await;
    drop(mosquitto);
}
