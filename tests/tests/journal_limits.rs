//! A bounded journal, end to end: during an outage telemetry gives way at
//! the configured limit (oldest first, each drop counted and reported to
//! the backend), alarms never do; and when the disk itself fills up, the
//! reserve keeps alarms flowing and the gateway keeps running.

use std::time::Duration;

use serde_json::Value;
use trygg_tests::*;
use trygg_uplink::mqtt_url::MqttUrl;

const MOTION: &str = "trygg/v1/dev/motion-1/evt";
const BUTTON: &str = "trygg/v1/dev/button-1/evt";

fn motion(seq: u64) -> String {
    format!(r#"{{"v":1,"seq":{seq},"kind":"motion","value":1.0}}"#)
}

fn press(seq: u64) -> String {
    format!(r#"{{"v":1,"seq":{seq},"kind":"button_press"}}"#)
}

/// Waits for `n` receipts and returns them.
async fn receipts(dev: &mut RawDevice, n: usize) -> Vec<(String, Value)> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match tokio::time::timeout(Duration::from_secs(30), dev.receipts.recv()).await {
            Ok(Some(r)) => got.push(r),
            _ => panic!("{} of {n} receipts arrived", got.len()),
        }
    }
    got
}

/// The gateway pointed at a backend that is not there yet, whose TLS files
/// already exist (the backend reuses them when it starts).
fn offline_setup(dir: &std::path::Path) -> (std::net::SocketAddr, trygg_gateway::Config) {
    let backend_dir = dir.join("backend");
    let pki = trygg_uplink::tls::DevPki::ensure(&backend_dir.join("tls")).unwrap();
    let addr = free_addr();
    let url = MqttUrl {
        host: "127.0.0.1".into(),
        port: addr.port(),
        tls: true,
    };
    let mut config = gateway_config(&dir.join("gateway"), &url, &pki.ca_cert);
    for d in &mut config.devices {
        d.supervision_s = Some(0);
    }
    (addr, config)
}

/// Enrolls the gateway of `offline_setup` before its backend first runs
/// (the backend's store and gateway CA are made here and reused when it
/// starts); after any mount over its data dir.
fn provision(dir: &std::path::Path, config: &trygg_gateway::Config) {
    trygg_bridge::enrollment::provision_offline(
        &dir.join("backend"),
        &config.gateway_id,
        &trygg_uplink::enroll::IdentityFiles::in_data_dir(&config.data_dir),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_the_limit_telemetry_gives_way_counted_and_reported_and_alarms_all_arrive() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (backend_addr, mut config) = offline_setup(dir.path());
    // 1 MiB for telemetry and care, 1 more for alarms only.
    config.journal.max_mib = 2;
    config.journal.alarm_reserve_mib = 1;
    config.journal.drop_report_s = 1;
    provision(dir.path(), &config);
    let gateway = start_gateway(config).await;
    let mut dev = RawDevice::connect(&gateway.ready.device_broker).await;

    // An outage: 12 000 motion events (about 150 bytes each) with presses
    // among them.
    const N: u64 = 12_000;
    let mut presses = 0u64;
    for seq in 1..=N {
        dev.publish(MOTION, motion(seq)).await;
        if seq % 1500 == 0 {
            presses += 1;
            dev.publish(BUTTON, press(presses)).await;
        }
    }
    let got = receipts(&mut dev, (N + presses) as usize).await;
    assert!(
        got.iter().all(|(_, r)| r["status"] == "committed"),
        "drop_oldest takes every new event"
    );
    let dropped = gateway
        .local_api
        .metric("journal_telemetry_dropped_total", "reason=\"limit\"")
        .await as u64;
    assert!(dropped > 3000, "dropped {dropped}");
    let status = gateway.local_api.get("/api/v1/status").await;
    let bytes = &status["journal_pending_bytes"];
    assert!(
        bytes["telemetry"].as_u64().unwrap() + bytes["care"].as_u64().unwrap() <= 1 << 20,
        "telemetry stays out of the alarm reserve: {status}"
    );
    assert_eq!(status["journal_pending"]["alarm"], presses);

    // The link comes back.
    let backend = start_backend_with(&dir.path().join("backend"), |c| {
        c.broker.listen = backend_addr;
    })
    .await;
    eventually(Duration::from_secs(60), "the journal to drain", || {
        let api = gateway.local_api.clone();
        async move {
            let s = api.get("/api/v1/status").await;
            let p = &s["journal_pending"];
            (p["alarm"] == 0 && p["care"] == 0 && p["telemetry"] == 0).then_some(())
        }
    })
    .await;
    // Every press arrived, on one alarm.
    let buttons = backend.api.device_seqs("button-1").await;
    assert_eq!(buttons.len() as u64, presses);
    // Every drop is reported: what the last commits left unreported goes
    // with housekeeping's next sweep (every 10 s), traffic or not.
    let gateway_id = trygg_gateway::Config::default_config().gateway_id;
    let dropped = eventually(
        Duration::from_secs(30),
        "every drop to be reported upstream",
        || {
            let (api, local, id) = (
                backend.api.clone(),
                gateway.local_api.clone(),
                gateway_id.clone(),
            );
            async move {
                let dropped = local
                    .metric("journal_telemetry_dropped_total", "reason=\"limit\"")
                    .await as u64;
                let reported: f64 = api
                    .events(&id)
                    .await
                    .iter()
                    .filter(|e| e["kind"] == "telemetry_dropped")
                    .map(|e| e["value"].as_f64().unwrap())
                    .sum();
                (reported as u64 == dropped).then_some(dropped)
            }
        },
    )
    .await;
    // What arrived plus what was dropped is what was sent.
    let motions = backend.api.device_seqs("motion-1").await;
    let newest = *motions.iter().max().unwrap();
    assert_eq!(newest, N, "the newest telemetry is kept");
    assert_eq!(motions.len() as u64 + dropped, N);
}

/// Unmounts on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_keeps_alarms_flowing_from_the_reserve_and_the_gateway_running() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (backend_addr, mut config) = offline_setup(dir.path());
    // A real, small disk for the gateway's data (mounting needs root, as
    // CI has; elsewhere this test says why it cannot run and fails).
    let disk = dir.path().join("gateway");
    let _mount = Tmpfs::mount(&disk, "16m")
        .unwrap_or_else(|e| panic!("this test mounts a 16 MiB tmpfs and needs root (sudo): {e}"));
    config.journal.disk_reserve_mib = 2;
    provision(dir.path(), &config);
    let gateway = start_gateway(config).await;
    let mut dev = RawDevice::connect(&gateway.ready.device_broker).await;

    // Fill the disk: a ballast file takes what it can, then telemetry the rest.
    let ballast = disk.join("ballast");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&ballast).unwrap();
        let chunk = vec![7u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let mut seq = 0u64;
    let full = loop {
        for _ in 0..200 {
            seq += 1;
            dev.publish(MOTION, motion(seq)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let status = gateway.local_api.get("/api/v1/status").await;
        if status["disk_full"] == true {
            break status;
        }
        assert!(seq < 200_000, "the disk never filled: {status}");
    };
    assert!(
        full["journal_error"]
            .as_str()
            .unwrap_or_default()
            .contains("disk full"),
        "{full}"
    );
    while dev.receipts.try_recv().is_ok() {}

    // Alarms still commit, from the reserve.
    for p in 1..=5 {
        dev.publish(BUTTON, press(p)).await;
    }
    let mut committed = 0;
    while committed < 5 {
        let (topic, r) = tokio::time::timeout(Duration::from_secs(20), dev.receipts.recv())
            .await
            .expect("alarm receipts while the disk is full")
            .unwrap();
        if topic.contains("button-1") {
            assert_eq!(r["status"], "committed", "{r}");
            committed += 1;
        }
    }
    // Telemetry meanwhile is deferred: no receipt, the device keeps it.
    let deferred_before = gateway
        .local_api
        .metric("journal_telemetry_deferred_total", "")
        .await;
    seq += 1;
    dev.publish(MOTION, motion(seq)).await;
    eventually(Duration::from_secs(10), "telemetry deferred", || {
        let api = gateway.local_api.clone();
        async move {
            (api.metric("journal_telemetry_deferred_total", "").await > deferred_before)
                .then_some(())
        }
    })
    .await;
    let health = gateway.local_api.text("/healthz").await;
    assert!(
        health.contains("disk full"),
        "healthz tells a technician what is wrong: {health}"
    );

    // Space is freed: the reserve is retaken and telemetry is taken again.
    std::fs::remove_file(&ballast).unwrap();
    eventually(
        Duration::from_secs(30),
        "the disk to have room again",
        || {
            let api = gateway.local_api.clone();
            async move { (api.get("/api/v1/status").await["disk_full"] == false).then_some(()) }
        },
    )
    .await;
    while dev.receipts.try_recv().is_ok() {}
    dev.publish(MOTION, motion(seq)).await;
    let (_, r) = tokio::time::timeout(Duration::from_secs(10), dev.receipts.recv())
        .await
        .expect("telemetry receipted again")
        .unwrap();
    assert_eq!(r["status"], "committed", "{r}");

    // And every alarm reaches the backend when the link is back.
    let backend = start_backend_with(&dir.path().join("backend"), |c| {
        c.broker.listen = backend_addr;
    })
    .await;
    eventually(
        Duration::from_secs(60),
        "the presses at the backend",
        || {
            let api = backend.api.clone();
            async move { (api.device_seqs("button-1").await.len() == 5).then_some(()) }
        },
    )
    .await;
}
