//! Every kind of bad input is rejected with a clear reason, counted in a
//! metric, kept aside as a dead letter, and the service goes on serving.

use std::time::Duration;

use serde_json::Value;
use trygg_tests::*;

const BUTTON: &str = "trygg/v1/dev/button-1/evt";
const BUTTON_ACK: &str = "trygg/v1/dev/button-1/ack";

async fn dead_letter(gateway: &InProcessGateway, code: &str) -> Value {
    eventually(
        Duration::from_secs(10),
        &format!("a `{code}` dead letter at the gateway"),
        || {
            let api = gateway.local_api.clone();
            let code = code.to_string();
            async move {
                let list = api.get("/api/v1/dead-letters").await["dead_letters"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                list.into_iter().find(|d| d["reason_code"] == code.as_str())
            }
        },
    )
    .await
}

fn assert_rejected(receipt: &Value, seq: u64, reason_contains: &str) {
    assert_eq!(receipt["status"], "rejected", "{receipt}");
    assert_eq!(receipt["seq"], seq, "{receipt}");
    let reason = receipt["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(reason_contains),
        "reason `{reason}` should mention `{reason_contains}`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_bad_device_payload_is_rejected_counted_kept_aside_and_the_gateway_goes_on() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let backend = start_backend(&dir.path().join("backend")).await;
    let mut config = gateway_config(
        &dir.path().join("gateway"),
        &backend.ready.broker,
        &backend.ready.ca_file,
    );
    config.local_broker.first_contact = false;
    let gateway = start_gateway(config).await;
    let mut dev = RawDevice::connect(&gateway.ready.device_broker).await;

    // Malformed JSON: no seq can be read, so no receipt; a dead letter.
    dev.publish(BUTTON, r#"{"v":1,"seq":"#).await;
    let d = dead_letter(&gateway, "malformed_json").await;
    assert_eq!(d["payload"], r#"{"v":1,"seq":"#);
    assert!(
        d["reason"].as_str().unwrap().starts_with("malformed JSON"),
        "{d}"
    );

    // A wrong schema version.
    dev.publish(BUTTON, r#"{"v":2,"seq":5,"kind":"fall"}"#)
        .await;
    assert_rejected(&dev.receipt_on(BUTTON_ACK).await, 5, "schema version 2");
    dead_letter(&gateway, "wrong_schema_version").await;

    // A missing field.
    dev.publish(BUTTON, r#"{"v":1,"seq":6}"#).await;
    assert_rejected(&dev.receipt_on(BUTTON_ACK).await, 6, "missing field `kind`");
    dead_letter(&gateway, "missing_field").await;

    // An unknown device (first contact off): refused at the broker, counted.
    assert!(dev.connect_as("stranger-9").await.is_err());
    eventually(Duration::from_secs(5), "the refusal counted", || {
        let api = gateway.local_api.clone();
        async move {
            (api.metric("device_connects_refused_total", "reason=\"unknown_device\"")
                .await
                >= 1.0)
                .then_some(())
        }
    })
    .await;

    // A payload over 4 KiB: refused unread, kept (cut to 4 KiB) with its size.
    let big = format!(
        r#"{{"v":1,"seq":8,"kind":"fall","pad":"{}"}}"#,
        "x".repeat(5000)
    );
    dev.publish(BUTTON, big.clone()).await;
    let d = dead_letter(&gateway, "too_large").await;
    assert_eq!(d["payload_len"], big.len());
    assert_eq!(d["payload"].as_str().unwrap().len(), 4096);

    // A sequence going backwards (beyond the re-send window).
    dev.publish(
        "trygg/v1/dev/fall-1/evt",
        r#"{"v":1,"seq":3000000,"kind":"fall"}"#,
    )
    .await;
    assert_eq!(
        dev.receipt_on("trygg/v1/dev/fall-1/ack").await["status"],
        "committed"
    );
    dev.publish(
        "trygg/v1/dev/fall-1/evt",
        r#"{"v":1,"seq":5,"kind":"fall"}"#,
    )
    .await;
    assert_rejected(
        &dev.receipt_on("trygg/v1/dev/fall-1/ack").await,
        5,
        "went backwards",
    );
    dead_letter(&gateway, "sequence_backwards").await;

    // Each counted under its reason.
    let metrics = gateway.local_api.text("/metrics").await;
    for reason in [
        "malformed_json",
        "wrong_schema_version",
        "missing_field",
        "too_large",
        "sequence_backwards",
    ] {
        let n = parse_metric(
            &metrics,
            "device_payloads_rejected_total",
            &format!("reason=\"{reason}\""),
        );
        assert_eq!(
            n, 1.0,
            "device_payloads_rejected_total{{reason=\"{reason}\"}} in:\n{metrics}"
        );
    }

    // And the gateway goes on serving everyone else.
    dev.publish(BUTTON, r#"{"v":1,"seq":9,"kind":"button_press"}"#)
        .await;
    assert_eq!(dev.receipt_on(BUTTON_ACK).await["status"], "committed");
    eventually(
        Duration::from_secs(10),
        "the good press at the backend",
        || {
            let api = backend.api.clone();
            async move { api.device_seqs("button-1").await.contains(&9).then_some(()) }
        },
    )
    .await;
    assert_eq!(
        backend.api.device_seqs("fall-1").await,
        vec![3000000],
        "the refused event never left the gateway"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_the_backend_cannot_parse_is_kept_aside_and_the_backend_goes_on() {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let backend = start_backend(&dir.path().join("backend")).await;

    // A misbehaving gateway, enrolled, over the same mutual TLS the real
    // ones use.
    let tls = enrolled_tls(&backend.ready, "gw-bad", &dir.path().join("gw-bad")).await;
    let mut opts = MqttOptions::new(
        "trygg-uplink-gw-bad",
        backend.ready.broker.host.clone(),
        backend.ready.broker.port,
    );
    opts.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(tls),
    ));
    let (client, mut eventloop) = AsyncClient::new(opts, 10);
    tokio::spawn(async move {
        while let Ok(e) = eventloop.poll().await {
            let _: Event = e;
        }
    });
    client
        .publish(
            "trygg/v1/gw/gw-bad/batch",
            QoS::AtLeastOnce,
            false,
            "this is not a batch",
        )
        .await
        .unwrap();

    let d = eventually(
        Duration::from_secs(15),
        "a dead letter at the backend",
        || {
            let api = backend.api.clone();
            async move {
                let list = api.get("/api/v1/dead-letters").await["dead_letters"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                list.into_iter().next()
            }
        },
    )
    .await;
    assert_eq!(d["payload"], "this is not a batch", "{d}");
    assert_eq!(d["topic"], "trygg/v1/gw/gw-bad/batch", "{d}");
    assert!(backend.api.metric("batches_rejected_total", "").await >= 1.0);

    // The backend goes on: a real gateway's alarm still arrives.
    let gateway = start_gateway(gateway_config(
        &dir.path().join("gateway"),
        &backend.ready.broker,
        &backend.ready.ca_file,
    ))
    .await;
    let mut dev = RawDevice::connect(&gateway.ready.device_broker).await;
    dev.publish(BUTTON, r#"{"v":1,"seq":1,"kind":"button_press"}"#)
        .await;
    assert_eq!(dev.receipt_on(BUTTON_ACK).await["status"], "committed");
    eventually(Duration::from_secs(10), "the alarm at the backend", || {
        let api = backend.api.clone();
        async move { (api.alarms("open").await.len() == 1).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_journal_file_redb_cannot_open_is_set_aside_and_the_gateway_serves_at_once() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let backend = start_backend(&dir.path().join("backend")).await;
    let gateway_dir = dir.path().join("gateway");
    std::fs::create_dir_all(&gateway_dir).unwrap();
    std::fs::write(gateway_dir.join("gateway.redb"), vec![0x5a; 64 * 1024]).unwrap();

    let gateway = start_gateway(gateway_config(
        &gateway_dir,
        &backend.ready.broker,
        &backend.ready.ca_file,
    ))
    .await;
    let status = gateway.local_api.get("/api/v1/status").await;
    let aside = status["journal_set_aside"]["path"]
        .as_str()
        .expect("status names the file set aside");
    assert!(std::path::Path::new(aside).exists(), "{aside}");
    assert_eq!(
        parse_metric(
            &gateway.local_api.text("/metrics").await,
            "journal_set_aside_total",
            ""
        ),
        1.0
    );

    let mut dev = RawDevice::connect(&gateway.ready.device_broker).await;
    dev.publish(BUTTON, r#"{"v":1,"seq":1,"kind":"button_press"}"#)
        .await;
    assert_eq!(dev.receipt_on(BUTTON_ACK).await["status"], "committed");
    eventually(Duration::from_secs(10), "the alarm at the backend", || {
        let api = backend.api.clone();
        async move { (api.alarms("open").await.len() == 1).then_some(()) }
    })
    .await;
}
