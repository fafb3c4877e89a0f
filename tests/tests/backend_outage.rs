//! The backend (its broker and the cloud-bridge) down for a while, then
//! back: everything buffered in the gateway's journal arrives exactly once,
//! alarms first.

use std::collections::BTreeSet;
use std::time::Duration;

use trygg_protocol::EventKind;
use trygg_sim::device::spawn_device;
use trygg_tests::*;
use trygg_uplink::mqtt_url::MqttUrl;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_buffered_during_a_backend_outage_arrive_once_and_alarms_first() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (broker, api_addr) = (free_addr(), free_addr());
    let config_file = dir.path().join("bridge.toml");
    std::fs::write(
        &config_file,
        format!(
            "data_dir = {:?}\n[broker]\nlisten = \"{broker}\"\n[api]\nlisten = \"{api_addr}\"\n[console]\nlisten = \"127.0.0.1:0\"\n[enrollment]\nlisten = \"127.0.0.1:0\"\n",
            dir.path().join("backend")
        ),
    )
    .unwrap();
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_trygg-bridge-under-test"));
    let args = ["--config", config_file.to_str().unwrap()];
    let bridge = ChildService::start(exe, &args, "trygg-bridge ready:").await;
    let uplink = MqttUrl::parse(&bridge.field("broker")).unwrap();
    let ca = std::path::PathBuf::from(bridge.field("ca"));
    let api = Api::new(api_addr);
    register_child_backend(&uplink, api_addr, &bridge.field("enroll"));

    let gateway = start_gateway(gateway_config(&dir.path().join("gateway"), &uplink, &ca)).await;
    let broker_url = gateway.ready.device_broker.clone();
    let button = spawn_device("button-1", &broker_url, None);
    let motion = spawn_device("motion-1", &broker_url, None);
    let dispenser = spawn_device("dispenser-1", &broker_url, None);

    // Before the outage: the path works.
    let first = button.emit(EventKind::ButtonPress).await.unwrap();
    eventually(
        Duration::from_secs(15),
        "the first alarm at the backend",
        || {
            let api = api.clone();
            async move {
                api.device_seqs("button-1")
                    .await
                    .contains(&first)
                    .then_some(())
            }
        },
    )
    .await;

    bridge.kill9().await;

    // During the outage: a telemetry backlog, then care events and alarms.
    for _ in 0..400 {
        motion.emit(EventKind::Motion).await;
    }
    for _ in 0..10 {
        dispenser.emit(EventKind::DoseNotConfirmed).await;
    }
    for _ in 0..5 {
        button.emit(EventKind::ButtonPress).await;
    }
    for d in [&button, &motion, &dispenser] {
        assert!(
            d.wait_all_receipted(Duration::from_secs(30)).await,
            "{}: the gateway must receipt while the backend is down",
            d.id
        );
    }
    let pending = gateway.local_api.get("/api/v1/status").await["journal_pending"].clone();
    assert_eq!(
        pending["telemetry"], 400,
        "the backlog waits in the journal: {pending}"
    );
    assert_eq!(pending["alarm"], 5, "{pending}");
    tokio::time::sleep(Duration::from_secs(2)).await;

    let bridge = ChildService::start(exe, &args, "trygg-bridge ready:").await;

    for d in [&button, &motion, &dispenser] {
        let sent: BTreeSet<u64> = d.log().receipted().into_iter().collect();
        let stored = eventually(
            Duration::from_secs(60),
            &format!("all of {}'s events at the backend", d.id),
            || {
                let api = api.clone();
                let id = d.id.clone();
                let want = sent.len();
                async move {
                    let seqs = api.device_seqs(&id).await;
                    (seqs.len() >= want).then_some(seqs)
                }
            },
        )
        .await;
        let unique: BTreeSet<u64> = stored.iter().copied().collect();
        assert_eq!(unique.len(), stored.len(), "{}: stored twice", d.id);
        assert_eq!(
            unique, sent,
            "{}: what the backend has is what the device was receipted",
            d.id
        );
    }

    // Alarms first: in the backend's arrival order, every buffered alarm
    // came before any of the buffered telemetry.
    let all = api.get("/api/v1/events?limit=10000").await["events"]
        .as_array()
        .cloned()
        .unwrap();
    let arrival: Vec<&serde_json::Value> = all
        .iter()
        .rev()
        .filter(|e| e["device_seq"] != first)
        .collect();
    let last_alarm = arrival.iter().rposition(|e| e["lane"] == "alarm").unwrap();
    let first_telemetry = arrival
        .iter()
        .position(|e| e["lane"] == "telemetry")
        .unwrap();
    let last_care = arrival.iter().rposition(|e| e["lane"] == "care").unwrap();
    assert!(
        last_alarm < first_telemetry,
        "an alarm arrived after telemetry: alarm #{last_alarm}, telemetry #{first_telemetry}"
    );
    assert!(
        last_care < first_telemetry,
        "a care event arrived after telemetry"
    );
    let open = api.alarms("open").await;
    let presses: Vec<_> = open
        .iter()
        .filter(|a| a["kind"] == "button_press")
        .collect();
    assert_eq!(
        presses.len(),
        1,
        "presses of one button while its alarm is open make one alarm"
    );
    assert_eq!(
        presses[0]["repeats"].as_u64().unwrap() + 1,
        6,
        "every press counted on it, none twice"
    );
    assert!(
        open.iter().all(|a| a["kind"] != "sequence_gap"),
        "no gap was reported: none happened"
    );

    eventually(
        Duration::from_secs(20),
        "the gateway journal to drain",
        || {
            let local = gateway.local_api.clone();
            async move {
                let p = local.get("/api/v1/status").await["journal_pending"].clone();
                (p["alarm"] == 0 && p["care"] == 0 && p["telemetry"] == 0).then_some(())
            }
        },
    )
    .await;
    gateway.stop.cancel();
    let _ = gateway.task.await;
    bridge.terminate().await;
}
