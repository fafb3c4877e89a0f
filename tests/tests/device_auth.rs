//! Device credentials and topic ACLs end to end, with the embedded broker
//! and with a real Mosquitto: a device may use only its own topics, a
//! wrong key cannot connect (and repeated wrong keys are raised at the
//! backend), a device paired through the CLI connects and its alarm
//! arrives, and an unknown device asking to join (first contact) waits
//! until a technician accepts it, keeping its alarm until then.

use std::time::Duration;

use serde_json::{json, Value};
use trygg_tests::*;

fn evt(seq: u64, kind: &str) -> String {
    format!(r#"{{"v":1,"seq":{seq},"kind":"{kind}"}}"#)
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

async fn connection_closed(dev: &RawDevice, id: &str) {
    eventually(
        Duration::from_secs(10),
        &format!("{id}'s connection closed by the broker"),
        || async move { (dev.connection_errors(id).await > 0).then_some(()) },
    )
    .await;
}

/// Connects as `id` with its key and subscribes to `filter`; whether the
/// broker closed the connection within 5 s.
async fn subscribe_is_refused(
    broker: &trygg_uplink::mqtt_url::MqttUrl,
    id: &str,
    filter: &str,
) -> bool {
    use rumqttc::{Event, MqttOptions, Packet, QoS};
    let mut opts = MqttOptions::new(id, broker.host.clone(), broker.port);
    opts.set_credentials(id, device_key(id));
    let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 10);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, eventloop.poll()).await {
            Err(_) => return false,
            Ok(Err(_)) => return true,
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
            }
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_broker_a_device_cannot_publish_or_listen_to_another_devices_topics() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let backend = start_backend(&dir.path().join("backend")).await;
    let gateway = start_gateway(gateway_config(
        &dir.path().join("gateway"),
        &backend.ready.broker,
        &backend.ready.ca_file,
    ))
    .await;
    let broker = gateway.ready.device_broker.clone();
    let mut dev = RawDevice::connect(&broker).await;

    // button-1 (with its own key) publishes a fall as fall-1: refused, and
    // its connection is closed.
    dev.publish_as("button-1", "trygg/v1/dev/fall-1/evt", evt(77, "fall"))
        .await;
    connection_closed(&dev, "button-1").await;
    assert!(
        gateway
            .local_api
            .metric("device_access_refused_total", "")
            .await
            >= 1.0
    );

    // Reading another device's receipts, or everyone's: refused too.
    assert!(subscribe_is_refused(&broker, "door-1", "trygg/v1/dev/fall-1/ack").await);
    assert!(subscribe_is_refused(&broker, "door-1", "trygg/v1/dev/+/ack").await);
    // (Its own: allowed.)
    assert!(!subscribe_is_refused(&broker, "door-1", "trygg/v1/dev/door-1/ack").await);

    // fall-1 itself is served, and the forged event never got anywhere.
    dev.publish("trygg/v1/dev/fall-1/evt", evt(78, "fall"))
        .await;
    assert_eq!(
        dev.receipt_on("trygg/v1/dev/fall-1/ack").await["status"],
        "committed"
    );
    assert!(at_backend(&backend.api, "fall-1", 78, Duration::from_secs(15)).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        backend.api.device_seqs("fall-1").await,
        vec![78],
        "the event button-1 published as fall-1 reached the backend"
    );
    let letters = gateway.local_api.get("/api/v1/dead-letters").await;
    assert!(
        letters["dead_letters"].as_array().unwrap().is_empty(),
        "the forged event reached the gateway: {letters}"
    );
    gateway.stop.cancel();
    let _ = gateway.task.await;
    backend.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_key_cannot_connect_and_repeated_wrong_keys_are_raised_at_the_backend() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let backend = start_backend(&dir.path().join("backend")).await;
    let config = gateway_config(
        &dir.path().join("gateway"),
        &backend.ready.broker,
        &backend.ready.ca_file,
    );
    let gateway_id = config.gateway_id.clone();
    let gateway = start_gateway(config).await;
    let broker = gateway.ready.device_broker.clone();

    for _ in 0..3 {
        let mut thief = RawDevice::connect(&broker).await;
        thief.set_key("button-1", "not-the-key-0123456789");
        assert!(
            thief.connect_as("button-1").await.is_err(),
            "button-1 connected with a wrong key"
        );
    }
    assert!(
        gateway
            .local_api
            .metric("device_connects_refused_total", "reason=\"wrong_key\"")
            .await
            >= 3.0
    );
    // A possible attack: raised once as the gateway's own technical event,
    // about button-1, with its place.
    let raised = eventually(
        Duration::from_secs(15),
        "device_auth_failed at the backend",
        || {
            let (api, gw) = (backend.api.clone(), gateway_id.clone());
            async move {
                api.events(&gw)
                    .await
                    .into_iter()
                    .find(|e| e["kind"] == "device_auth_failed")
            }
        },
    )
    .await;
    assert_eq!(raised["subject"], "button-1", "{raised}");
    assert_eq!(raised["room"], "bedroom", "{raised}");
    // More wrong keys right away raise nothing more (rate-limited).
    let mut thief = RawDevice::connect(&broker).await;
    thief.set_key("button-1", "not-the-key-0123456789");
    assert!(thief.connect_as("button-1").await.is_err());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let n = backend
        .api
        .events(&gateway_id)
        .await
        .iter()
        .filter(|e| e["kind"] == "device_auth_failed")
        .count();
    assert_eq!(n, 1);

    // The device with its own key is not locked out.
    let mut dev = RawDevice::connect(&broker).await;
    dev.publish("trygg/v1/dev/button-1/evt", evt(1, "button_press"))
        .await;
    assert_eq!(
        dev.receipt_on("trygg/v1/dev/button-1/ack").await["status"],
        "committed"
    );
    gateway.stop.cancel();
    let _ = gateway.task.await;
    backend.stop.cancel();
}

async fn cli(args: &[&str]) -> (bool, String, String) {
    let exe = env!("CARGO_BIN_EXE_trygg-gateway-under-test");
    let out = tokio::process::Command::new(exe)
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_device_paired_through_the_cli_connects_and_its_alarm_reaches_the_backend() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let backend = start_backend(&dir.path().join("backend")).await;
    let gateway = start_gateway(gateway_config(
        &dir.path().join("gateway"),
        &backend.ready.broker,
        &backend.ready.ca_file,
    ))
    .await;
    let api = gateway.ready.local_api.to_string();
    let broker = gateway.ready.device_broker.clone();

    // With the key from its label.
    let key = device_key("button-5");
    let (ok, out, err) = cli(&[
        "device",
        "add",
        "button-5",
        "--type",
        "safety_button",
        "--room",
        "hall",
        "--resident",
        "r-0005",
        "--key",
        &key,
        "--api",
        &api,
    ])
    .await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("paired button-5"), "{out}");
    assert!(!out.contains(&key), "a key given is not printed: {out}");
    let button = trygg_sim::device::spawn_device("button-5", &broker, None);
    let seq = button
        .press_button()
        .await
        .expect("the press raised an alarm");
    let (status, _) = button
        .wait_receipt(seq, Duration::from_secs(15))
        .await
        .expect("a receipt for the alarm");
    assert_eq!(status, trygg_protocol::ReceiptStatus::Committed);
    let alarm = eventually(
        Duration::from_secs(15),
        "button-5's alarm open at the backend",
        || {
            let api = backend.api.clone();
            async move {
                api.alarms("open")
                    .await
                    .into_iter()
                    .find(|a| a["device"] == "button-5")
            }
        },
    )
    .await;
    assert_eq!(
        (&alarm["room"], &alarm["kind"]),
        (&json!("hall"), &json!("button_press"))
    );

    // Without one: the gateway makes one and prints it once; it works.
    let (ok, out, err) = cli(&[
        "device",
        "add",
        "cord-9",
        "--type",
        "pull_cord",
        "--api",
        &api,
    ])
    .await;
    assert!(ok, "{out}{err}");
    let printed = out
        .lines()
        .find_map(|l| l.strip_prefix("key "))
        .unwrap_or_else(|| panic!("no key printed: {out}"))
        .trim()
        .to_string();
    assert_eq!(printed.len(), 32, "{out}");
    let mut dev = RawDevice::connect(&broker).await;
    dev.set_key("cord-9", &printed);
    dev.publish("trygg/v1/dev/cord-9/evt", evt(1, "pull_cord"))
        .await;
    assert_eq!(
        dev.receipt_on("trygg/v1/dev/cord-9/ack").await["status"],
        "committed"
    );
    // `device show` says it has a key, never which.
    let (ok, out, _) = cli(&["device", "show", "cord-9", "--api", &api]).await;
    assert!(
        ok && out.contains("key") && out.contains("set") && !out.contains(&printed),
        "{out}"
    );
    // A short key is refused with what to do.
    let (ok, _, err) = cli(&[
        "device",
        "add",
        "cord-10",
        "--type",
        "pull_cord",
        "--key",
        "1234",
        "--api",
        &api,
    ])
    .await;
    assert!(!ok);
    assert!(err.contains("label"), "{err}");
    gateway.stop.cancel();
    let _ = gateway.task.await;
    backend.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn first_contact_an_unknown_device_waits_to_join_and_its_kept_alarm_arrives_once_accepted() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let backend = start_backend(&dir.path().join("backend")).await;
    let gateway = start_gateway(gateway_config(
        &dir.path().join("gateway"),
        &backend.ready.broker,
        &backend.ready.ca_file,
    ))
    .await;
    let api = gateway.ready.local_api.to_string();
    let broker = gateway.ready.device_broker.clone();

    // A new button, never paired, raises an alarm: it may connect, but the
    // alarm is not taken (no receipt: the button keeps it).
    let button = trygg_sim::device::spawn_device("button-new", &broker, None);
    let seq = button
        .press_button()
        .await
        .expect("the press raised an alarm");
    let pending = eventually(Duration::from_secs(10), "button-new asking to join", || {
        let a = gateway.local_api.clone();
        async move {
            let list = a.get("/api/v1/devices/pending").await;
            list.as_array()
                .and_then(|l| l.iter().find(|p| p["device"] == "button-new").cloned())
        }
    })
    .await;
    assert!(pending["attempts"].as_u64().unwrap() >= 1, "{pending}");
    assert!(
        pending["first_seen_ms"].as_u64().unwrap() <= pending["last_seen_ms"].as_u64().unwrap()
    );
    assert!(
        button
            .wait_receipt(seq, Duration::from_secs(3))
            .await
            .is_none(),
        "a receipt before it was accepted"
    );
    assert!(!at_backend(&backend.api, "button-new", seq, Duration::from_millis(500)).await);
    let (ok, out, err) = cli(&["device", "pending", "--api", &api]).await;
    assert!(ok && out.contains("button-new"), "{out}{err}");

    // And someone else presenting another key for its id is refused.
    let mut thief = RawDevice::connect(&broker).await;
    thief.set_key("button-new", "another-key-0123456789");
    assert!(thief.connect_as("button-new").await.is_err());

    // Accepted by the technician: paired with the key it presented, and
    // the alarm it kept arrives.
    let (ok, out, err) = cli(&[
        "device",
        "accept",
        "button-new",
        "--type",
        "safety_button",
        "--room",
        "hall",
        "--resident",
        "r-0007",
        "--api",
        &api,
    ])
    .await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("accepted button-new"), "{out}");
    let (status, _) = button
        .wait_receipt(seq, Duration::from_secs(20))
        .await
        .expect("the kept alarm receipted after accept");
    assert_eq!(status, trygg_protocol::ReceiptStatus::Committed);
    let alarm = eventually(
        Duration::from_secs(15),
        "button-new's alarm at the backend",
        || {
            let api = backend.api.clone();
            async move {
                api.alarms("open")
                    .await
                    .into_iter()
                    .find(|a| a["device"] == "button-new")
            }
        },
    )
    .await;
    assert_eq!(alarm["room"], "hall");
    let list = gateway.local_api.get("/api/v1/devices/pending").await;
    assert_eq!(list, json!([]));
    let shown = gateway.local_api.get("/api/v1/devices/button-new").await;
    assert_eq!(shown["has_key"], true, "{shown}");

    // Accepting it again, or one not asking: refused with a clear message.
    let (status, body) = gateway
        .local_api
        .post(
            "/api/v1/devices/pending/button-new/accept",
            json!({"type": "safety_button"}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("not asking to join"),
        "{body}"
    );

    // Another unknown device asks, and is rejected.
    let stranger = RawDevice::connect(&broker).await;
    stranger
        .connect_as("stranger-2")
        .await
        .expect("first contact lets it connect");
    let http = reqwest::Client::new();
    let url = format!("http://{api}/api/v1/devices/pending/stranger-2");
    eventually(Duration::from_secs(10), "stranger-2 asking to join", || {
        let a = gateway.local_api.clone();
        async move {
            let list = a.get("/api/v1/devices/pending").await;
            list.as_array()
                .is_some_and(|l| l.iter().any(|p| p["device"] == "stranger-2"))
                .then_some(())
        }
    })
    .await;
    // Asking to join, it is confined to its own topics like any device.
    stranger
        .publish_as(
            "stranger-2",
            "trygg/v1/dev/button-1/evt",
            evt(555, "button_press"),
        )
        .await;
    connection_closed(&stranger, "stranger-2").await;
    assert!(!at_backend(&backend.api, "button-1", 555, Duration::from_secs(2)).await);
    let r = http.delete(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let r = http.delete(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let list: Value = gateway.local_api.get("/api/v1/devices/pending").await;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|p| p["device"] != "stranger-2"),
        "{list}"
    );
    gateway.stop.cancel();
    let _ = gateway.task.await;
    backend.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mosquitto_a_device_cannot_publish_to_another_devices_topic_and_pairing_and_removal_hold() {
    init_tracing();
    let (mosquitto, auth) = Mosquitto::start_with_auth().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let backend = start_backend(&dir.path().join("backend")).await;
    let mut config = gateway_config(
        &dir.path().join("gateway"),
        &backend.ready.broker,
        &backend.ready.ca_file,
    );
    config.local_broker.mode = trygg_gateway::config::BrokerMode::External;
    config.local_broker.url = mosquitto.url.to_string();
    config.local_broker.mosquitto_password_file = Some(auth.password_file.clone());
    config.local_broker.mosquitto_acl_file = Some(auth.acl_file.clone());
    config.local_broker.mosquitto_pid_file = Some(auth.pid_file.clone());
    let gateway = start_gateway(config).await;
    let broker = mosquitto.url.clone();
    let passwd = std::fs::read_to_string(&auth.password_file).unwrap();
    assert!(passwd.contains("\nbutton-1:$7$101$"), "{passwd}");

    // button-1 publishes a fall as fall-1: Mosquitto drops it.
    let mut dev = RawDevice::connect(&broker).await;
    dev.publish_as("button-1", "trygg/v1/dev/fall-1/evt", evt(77, "fall"))
        .await;
    // Each device's own events go through.
    dev.publish("trygg/v1/dev/button-1/evt", evt(1, "button_press"))
        .await;
    assert_eq!(
        dev.receipt_on("trygg/v1/dev/button-1/ack").await["status"],
        "committed"
    );
    dev.publish("trygg/v1/dev/fall-1/evt", evt(78, "fall"))
        .await;
    assert_eq!(
        dev.receipt_on("trygg/v1/dev/fall-1/ack").await["status"],
        "committed"
    );
    assert!(at_backend(&backend.api, "fall-1", 78, Duration::from_secs(15)).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        backend.api.device_seqs("fall-1").await,
        vec![78],
        "the event button-1 published as fall-1 reached the backend"
    );

    // A wrong key, or an unknown device: Mosquitto refuses the connection.
    let mut thief = RawDevice::connect(&broker).await;
    thief.set_key("button-1", "not-the-key-0123456789");
    assert!(thief.connect_as("button-1").await.is_err());
    assert!(thief.connect_as("stranger-1").await.is_err());

    // Paired through the API: the gateway rewrites the files and Mosquitto
    // reloads them; the new device connects.
    let (status, body) = gateway
        .local_api
        .post(
            "/api/v1/devices",
            json!({"id": "button-9", "type": "safety_button", "room": "hall", "key": device_key("button-9")}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let new = RawDevice::connect(&broker).await;
    eventually(
        Duration::from_secs(10),
        "button-9 connecting to Mosquitto",
        || {
            let new = &new;
            async move { new.connect_as("button-9").await.ok() }
        },
    )
    .await;
    new.publish("trygg/v1/dev/button-9/evt", evt(1, "button_press"))
        .await;
    assert!(at_backend(&backend.api, "button-9", 1, Duration::from_secs(15)).await);

    // Removed: Mosquitto drops its connection on reload, and refuses it.
    let r = reqwest::Client::new()
        .delete(format!(
            "{}/api/v1/devices/button-9",
            gateway.local_api.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    connection_closed(&new, "button-9").await;
    let again = RawDevice::connect(&broker).await;
    assert!(
        again.connect_as("button-9").await.is_err(),
        "a removed device connected"
    );
    let acl = std::fs::read_to_string(&auth.acl_file).unwrap();
    assert!(!acl.contains("button-9"), "{acl}");
    gateway.stop.cancel();
    let _ = gateway.task.await;
    backend.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_first_contact_off_a_pairing_window_lets_an_unknown_device_ask_to_join() {
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
    let api = gateway.ready.local_api.to_string();
    let broker = gateway.ready.device_broker.clone();

    let dev = RawDevice::connect(&broker).await;
    assert!(
        dev.connect_as("button-20").await.is_err(),
        "first contact is off"
    );
    let (ok, out, err) = cli(&["device", "pairing-window", "--minutes", "1", "--api", &api]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("pairing window open for 1 min"), "{out}");
    dev.connect_as("button-20")
        .await
        .expect("connects while the window is open");
    let list = gateway.local_api.get("/api/v1/devices/pending").await;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|p| p["device"] == "button-20"),
        "{list}"
    );
    // Out of range: refused with what to do.
    let (status, body) = gateway
        .local_api
        .post("/api/v1/devices/pending/window", json!({"seconds": 7200}))
        .await;
    assert_eq!(status, 422, "{body}");
    gateway.stop.cancel();
    let _ = gateway.task.await;
    backend.stop.cancel();
}
