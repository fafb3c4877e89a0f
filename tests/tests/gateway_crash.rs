//! The gateway killed with SIGKILL in the middle of a stream, and
//! restarted: every event a device got a receipt for reaches the backend,
//! exactly once.

use std::collections::BTreeSet;
use std::time::Duration;

use trygg_protocol::EventKind;
use trygg_sim::device::{spawn_device, DeviceHandle};
use trygg_tests::*;
use trygg_uplink::mqtt_url::MqttUrl;

async fn stream(devices: &[(DeviceHandle, EventKind)], for_how_long: Duration) {
    let until = tokio::time::Instant::now() + for_how_long;
    while tokio::time::Instant::now() < until {
        for (d, kind) in devices {
            d.emit(*kind).await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_killed_mid_stream_loses_no_receipted_event_and_duplicates_none() {
    // A fixed device-broker port, so devices find the restarted gateway.
    killed_mid_stream(|c| c.local_broker.listen = free_addr()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_killed_mid_stream_with_mosquitto_loses_no_receipted_event_and_duplicates_none() {
    // Mosquitto outlives the gateway and keeps its persistent session: what
    // it delivered but the gateway never acked comes again on restart.
    let mosquitto = Mosquitto::start().unwrap_or_else(|e| panic!("{e}"));
    let url = mosquitto.url.to_string();
    killed_mid_stream(move |c| {
        c.local_broker.mode = trygg_gateway::config::BrokerMode::External;
        c.local_broker.url = url;
    })
    .await;
    drop(mosquitto);
}

async fn killed_mid_stream(local_broker: impl FnOnce(&mut trygg_gateway::Config)) {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let backend = start_backend(&dir.path().join("backend")).await;

    let mut config = gateway_config(
        &dir.path().join("gateway"),
        &backend.ready.broker,
        &backend.ready.ca_file,
    );
    local_broker(&mut config);
    // Enrolled for real: a code from the backend, used by the gateway at start.
    prepare_enrollment(&mut config).await;
    let config_file = write_config(dir.path(), "gateway.toml", &config);
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_trygg-gateway-under-test"));
    let args = ["--config", config_file.to_str().unwrap()];
    let gateway = ChildService::start(exe, &args, "trygg-gateway ready:").await;
    let broker = MqttUrl::parse(&gateway.field("device-broker")).unwrap();

    let devices = vec![
        (
            spawn_device("button-1", &broker, None),
            EventKind::ButtonPress,
        ),
        (spawn_device("motion-1", &broker, None), EventKind::Motion),
        (spawn_device("door-1", &broker, None), EventKind::DoorOpened),
    ];
    stream(&devices, Duration::from_millis(1500)).await;
    let receipted_before_kill: usize = devices.iter().map(|(d, _)| d.log().receipted().len()).sum();
    gateway.kill9().await;
    // Devices go on while the gateway is dead; their outboxes keep it all.
    stream(&devices, Duration::from_millis(500)).await;
    let gateway = ChildService::start(exe, &args, "trygg-gateway ready:").await;
    stream(&devices, Duration::from_millis(1000)).await;

    for (d, _) in &devices {
        assert!(
            d.wait_all_receipted(Duration::from_secs(60)).await,
            "{}: events never receipted: {:?}",
            d.id,
            d.log().unreceipted()
        );
    }
    assert!(
        receipted_before_kill > 50,
        "the stream was under way when the gateway died ({receipted_before_kill} receipted)"
    );

    for (d, kind) in &devices {
        let log = d.log();
        let receipted: BTreeSet<u64> = log.receipted().into_iter().collect();
        let stored = eventually(
            Duration::from_secs(30),
            &format!(
                "{}'s {} receipted events at the backend",
                d.id,
                receipted.len()
            ),
            || {
                let api = backend.api.clone();
                let id = d.id.clone();
                let want = receipted.len();
                async move {
                    let seqs = api.device_seqs(&id).await;
                    (seqs.len() >= want).then_some(seqs)
                }
            },
        )
        .await;
        let unique: BTreeSet<u64> = stored.iter().copied().collect();
        assert_eq!(
            unique.len(),
            stored.len(),
            "{}: an event is stored twice",
            d.id
        );
        let missing: Vec<_> = receipted.difference(&unique).collect();
        assert!(
            missing.is_empty(),
            "{}: receipted but lost: {missing:?}",
            d.id
        );
        if kind.needs_handling() {
            let alarms: Vec<_> = backend
                .api
                .all_alarms()
                .await
                .into_iter()
                .filter(|a| a["device"] == d.id.as_str())
                .collect();
            let ids: BTreeSet<String> = alarms
                .iter()
                .map(|a| a["event_id"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(ids.len(), alarms.len(), "{}: an alarm is shown twice", d.id);
            // Presses while the alarm is open add to it as repeats.
            let reports: u64 = alarms
                .iter()
                .map(|a| 1 + a["repeats"].as_u64().unwrap_or(0))
                .sum();
            assert_eq!(
                reports,
                receipted.len() as u64,
                "{}: every press counted once on an alarm",
                d.id
            );
        }
    }
    let status = gateway.terminate().await;
    assert!(
        status.success(),
        "SIGTERM stops the gateway cleanly: {status}"
    );
}
