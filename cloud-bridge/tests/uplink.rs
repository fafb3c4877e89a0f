//! The bridge in-process: embedded broker on TLS, a gateway's MQTT v5
//! client, the JSON API over plain HTTP/1.1.
//!
//! One scenario, in the order a municipality lives it: a button press
//! arrives, is receipted, becomes one alarm, arrives again and is still one
//! alarm, is taken and closed; garbage is kept aside and counted; the bridge
//! stops in order and its store opens again afterwards.

use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use rumqttc::{TlsConfiguration, Transport};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use trygg_bridge::alarm::AlarmState;
use trygg_bridge::store::Store;
use trygg_bridge::{Config, Ready};
use trygg_protocol::{EventKind, Lane};
use trygg_uplink::contract::{self, Batch, Record, SeqRange, UplinkReceipt};

const WAIT: Duration = Duration::from_secs(20);

/// A minimal HTTP/1.1 client: one request per connection.
async fn http(api: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(api).await.unwrap();
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {api}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut raw))
        .await
        .expect("http answer in time")
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, rest) = text.split_once("\r\n\r\n").expect("http head");
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

async fn get_json(api: SocketAddr, path: &str) -> Value {
    let (status, body) = http(api, "GET", path, None).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

async fn post_json(api: SocketAddr, path: &str, body: &str) -> (u16, Value) {
    let (status, body) = http(api, "POST", path, Some(body)).await;
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

/// A gateway's side of the uplink: publishes batches, hears receipts.
struct Gateway {
    client: AsyncClient,
    receipts: mpsc::UnboundedReceiver<UplinkReceipt>,
}

impl Gateway {
    /// Enrolls `id` for real (a code from the service API, a key made in
    /// `dir`, the certificate from the enrollment endpoint) and connects
    /// with it over mutual TLS.
    async fn connect(ready: &Ready, id: &str, dir: &std::path::Path) -> Gateway {
        let code = trygg_uplink::enroll::create_code_via_api(ready.api, id, "Test", 600, "test")
            .await
            .unwrap();
        let files = trygg_uplink::enroll::IdentityFiles::in_dir(dir);
        trygg_uplink::enroll::enroll(
            &ready.enroll_url(),
            &ready.ca_file,
            id,
            code["code"].as_str().unwrap(),
            &files,
        )
        .await
        .unwrap();
        let mut opts = MqttOptions::new(
            format!("trygg-uplink-{id}"),
            ready.broker.host.clone(),
            ready.broker.port,
        );
        opts.set_keep_alive(Duration::from_secs(10));
        let tls =
            trygg_uplink::tls::client_config_with_identity(&ready.ca_file, &files.cert, &files.key)
                .unwrap();
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        let (tx, receipts) = mpsc::unbounded_channel();
        let (subacked_tx, subacked) = oneshot::channel();
        let mut subacked_tx = Some(subacked_tx);
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(t) = subacked_tx.take() {
                            let _ = t.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx
                            .send(serde_json::from_slice(&p.payload).expect("receipt is JSON"))
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        client
            .subscribe(contract::receipt_topic("gw-test"), QoS::AtLeastOnce)
            .await
            .unwrap();
        tokio::time::timeout(WAIT, subacked)
            .await
            .expect("suback in time")
            .unwrap();
        Gateway { client, receipts }
    }

    async fn publish(&self, payload: Vec<u8>) {
        self.client
            .publish(
                contract::batch_topic("gw-test"),
                QoS::AtLeastOnce,
                false,
                payload,
            )
            .await
            .unwrap();
    }

    async fn receipt(&mut self) -> UplinkReceipt {
        tokio::time::timeout(WAIT, self.receipts.recv())
            .await
            .expect("receipt in time")
            .unwrap()
    }
}

fn record(lane: Lane, seq: u64, device: &str, device_seq: u64, kind: EventKind) -> Record {
    Record {
        lane,
        seq,
        device: device.into(),
        device_seq,
        kind,
        ts: Some(1_700_000_000),
        committed_ms: 1_700_000_000_000,
        battery: Some(80),
        value: None,
        resident: Some("r-7".into()),
        room: Some("bedroom".into()),
        subject: None,
    }
}

/// Reads an SSE response until `needle` shows up.
async fn sse_until(stream: &mut TcpStream, seen: &mut String, needle: &str) {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(WAIT, async {
        while !seen.contains(needle) {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "stream closed before {needle:?}; got {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{needle:?} on the stream in time; got {seen}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn button_press_is_receipted_after_commit_becomes_one_alarm_and_goes_through_the_workflow() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml_str(&format!(
        "data_dir = {:?}\n[broker]\nlisten = \"127.0.0.1:0\"\n[api]\nlisten = \"127.0.0.1:0\"\n[supervision]\ngap_grace_s = 1\n[enrollment]\nlisten = \"127.0.0.1:0\"\n",
        dir.path().display().to_string()
    ))
    .unwrap();
    let (ready_tx, ready_rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let bridge = tokio::spawn(trygg_bridge::run(config, Some(ready_tx), async move {
        let _ = stop_rx.await;
    }));
    let ready = tokio::time::timeout(WAIT, ready_rx)
        .await
        .expect("ready in time")
        .unwrap();
    assert!(ready.broker.tls && ready.broker.port != 0);
    assert!(ready.ca_file.exists());
    let line = ready.to_string();
    assert!(
        line.starts_with("trygg-bridge ready: broker=mqtts://127.0.0.1:")
            && line.contains(" api=http://127.0.0.1:"),
        "{line}"
    );
    let api = ready.api;

    assert_eq!(
        http(api, "GET", "/healthz", None).await,
        (200, "ok".to_string())
    );

    // The staff console listens before anything happens.
    let mut sse = TcpStream::connect(api).await.unwrap();
    sse.write_all(
        format!("GET /api/v1/stream HTTP/1.1\r\nhost: {api}\r\naccept: text/event-stream\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut sse_seen = String::new();
    sse_until(&mut sse, &mut sse_seen, "subscribed to alarm changes").await;
    assert!(sse_seen.starts_with("HTTP/1.1 200"), "{sse_seen}");

    let mut gw = Gateway::connect(&ready, "gw-test", &dir.path().join("gw-test")).await;
    let batch = Batch {
        v: contract::SCHEMA_VERSION,
        gateway: "gw-test".into(),
        batch: 1,
        records: vec![
            record(Lane::Alarm, 1, "button-1", 41, EventKind::ButtonPress),
            record(Lane::Telemetry, 1, "pir-1", 7, EventKind::Motion),
            record(Lane::Telemetry, 2, "pir-1", 8, EventKind::Motion),
        ],
    };
    let payload = serde_json::to_vec(&batch).unwrap();
    gw.publish(payload.clone()).await;
    let receipt = gw.receipt().await;
    let expected = UplinkReceipt {
        v: 1,
        batch: 1,
        committed: vec![
            SeqRange {
                lane: Lane::Alarm,
                first: 1,
                last: 1,
            },
            SeqRange {
                lane: Lane::Telemetry,
                first: 1,
                last: 2,
            },
        ],
    };
    assert_eq!(receipt, expected);

    // Receipted means committed: the alarm is there at once.
    let open = get_json(api, "/api/v1/alarms?state=open").await;
    let alarms = open["alarms"].as_array().unwrap();
    assert_eq!(alarms.len(), 1, "{open}");
    let alarm = &alarms[0];
    assert_eq!(alarm["kind"], "button_press");
    assert_eq!(alarm["severity"], "red");
    assert_eq!(alarm["vkp_alert"], "4.13");
    assert_eq!(alarm["event_id"], "gw-test/button-1/41");
    assert_eq!(alarm["resident"], "r-7");
    assert_eq!(alarm["state"], "open");
    let id = alarm["id"].as_u64().unwrap();
    sse_until(&mut sse, &mut sse_seen, r#""change":"new""#).await;
    assert!(
        sse_seen.contains("event: alarm") && sse_seen.contains("button_press"),
        "{sse_seen}"
    );

    // The same batch again (the gateway never heard the receipt, say):
    // receipted again, still one alarm, each event stored once.
    gw.publish(payload).await;
    assert_eq!(gw.receipt().await, expected);
    assert_eq!(
        get_json(api, "/api/v1/alarms").await["alarms"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        get_json(api, "/api/v1/events?device=button-1").await["events"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let events = get_json(api, "/api/v1/events?limit=10").await;
    let events = events["events"].as_array().unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["device_seq"], 8, "newest first");
    assert_eq!(events[2]["lane"], "alarm");
    let metrics = http(api, "GET", "/metrics", None).await.1;
    assert!(metrics.contains("records_duplicate_total 3"), "{metrics}");

    // The workflow, over the API.
    let path = |action: &str| format!("/api/v1/alarms/{id}/{action}");
    let (status, body) = post_json(api, &path("acknowledge"), r#"{"by":""}"#).await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = post_json(api, &path("acknowledge"), "not json").await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = post_json(api, &path("acknowledge"), r#"{"by":"kari"}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["state"].as_str(), body["acknowledged_by"].as_str()),
        (Some("acknowledged"), Some("kari"))
    );
    let (status, body) = post_json(api, &path("acknowledge"), r#"{"by":"ola"}"#).await;
    assert_eq!(status, 409);
    assert_eq!(
        body["error"],
        format!("alarm {id} is already acknowledged by kari")
    );
    sse_until(&mut sse, &mut sse_seen, r#""change":"acknowledged""#).await;
    let (status, body) = post_json(api, &path("close"), r#"{"by":"kari"}"#).await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = post_json(api, &path("close"), r#"{"by":"kari","note":"  "}"#).await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = post_json(
        api,
        &path("close"),
        r#"{"by":"kari","note":"Found in bed, pressed by mistake."}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "closed");
    assert_eq!(body["note"], "Found in bed, pressed by mistake.");
    let (status, _) = post_json(api, &path("close"), r#"{"by":"ola","note":"again"}"#).await;
    assert_eq!(status, 409);
    let (status, body) = post_json(api, "/api/v1/alarms/999/acknowledge", r#"{"by":"kari"}"#).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("999"));
    let (status, _) = http(api, "GET", "/api/v1/alarms/999", None).await;
    assert_eq!(status, 404);
    let big = format!(r#"{{"by":"kari","note":"{}"}}"#, "x".repeat(20 * 1024));
    let (status, _) = post_json(api, &path("close"), &big).await;
    assert_eq!(status, 413, "bodies over 16 KiB are refused");
    assert_eq!(
        get_json(api, &format!("/api/v1/alarms/{id}")).await["state"],
        "closed"
    );
    assert!(get_json(api, "/api/v1/alarms?state=open").await["alarms"]
        .as_array()
        .unwrap()
        .is_empty());
    sse_until(&mut sse, &mut sse_seen, r#""change":"closed""#).await;

    // Garbage is kept aside, counted, acked; the bridge goes on.
    gw.publish(b"this is not a batch".to_vec()).await;
    let mut mismatch = batch.clone();
    mismatch.gateway = "gw-other".into();
    gw.publish(serde_json::to_vec(&mismatch).unwrap()).await;
    let letters = tokio::time::timeout(WAIT, async {
        loop {
            let v = get_json(api, "/api/v1/dead-letters").await;
            if v["dead_letters"].as_array().unwrap().len() >= 2 {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("dead letters in time");
    let letters = letters["dead_letters"].as_array().unwrap();
    assert_eq!(letters[1]["reason"], "malformed_json");
    assert_eq!(letters[1]["payload"], "this is not a batch");
    assert_eq!(letters[1]["topic"], "trygg/v1/gw/gw-test/batch");
    assert_eq!(letters[0]["reason"], "gateway_mismatch");
    let metrics = http(api, "GET", "/metrics", None).await.1;
    assert!(
        metrics.contains(r#"batches_rejected_total{reason="malformed_json"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"batches_rejected_total{reason="gateway_mismatch"} 1"#),
        "{metrics}"
    );

    // A gap in the alarm lane is a technical alarm, never silent: raised
    // once the grace period (1 s here) has passed with the records missing.
    let next = Batch {
        v: 1,
        gateway: "gw-test".into(),
        batch: 2,
        records: vec![record(
            Lane::Alarm,
            4,
            "button-1",
            42,
            EventKind::ButtonPress,
        )],
    };
    gw.publish(serde_json::to_vec(&next).unwrap()).await;
    assert_eq!(
        gw.receipt().await.committed,
        vec![SeqRange {
            lane: Lane::Alarm,
            first: 4,
            last: 4
        }]
    );
    let found = std::time::Instant::now();
    let open = loop {
        let open = get_json(api, "/api/v1/alarms?state=open").await;
        let open = open["alarms"].as_array().unwrap().clone();
        if open.len() == 2 || found.elapsed() > WAIT {
            break open;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        found.elapsed() >= Duration::from_millis(900),
        "raised before the grace period"
    );
    assert_eq!(open.len(), 2, "{open:?}");
    assert_eq!(open[0]["kind"], "button_press", "red before yellow");
    assert_eq!(open[1]["kind"], "sequence_gap");
    assert_eq!(open[1]["detail"], "lane alarm: sequence 2 to 3 missing");

    let doc = get_json(api, "/api/v1/openapi.json").await;
    assert!(doc["paths"]["/api/v1/alarms/{id}/close"].is_object());

    // Stop in order; the open stream ends rather than holding shutdown up.
    stop_tx.send(()).unwrap();
    tokio::time::timeout(WAIT, bridge)
        .await
        .expect("bridge stops in time")
        .unwrap()
        .unwrap();
    let store =
        Store::open(&dir.path().join("bridge.redb")).expect("store released and opens again");
    let closed = store.alarms(Some(AlarmState::Closed)).unwrap();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].closed_by.as_deref(), Some("kari"));
}
