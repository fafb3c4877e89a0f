//! The chaos harness, short: `trygg-sim chaos` run through the real binary,
//! the gateway and the bridge SIGKILLed and restarted 20 times each, the
//! uplink cut, stalled, delayed, throttled and reset, the brokers restarted
//! (the embedded ones with their processes; Mosquitto on its own in the
//! second run), the gateway's disk filled; then nothing receipted may be
//! lost or stored twice. The harness does the checking (see
//! `simulator/src/chaos/verdict.rs`); this test runs it and reads its
//! report.
//!
//! The seed is fresh each run and printed; pin it with
//! `TRYGG_CHAOS_SEED=N` to replay a failure.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Runs `trygg-sim chaos` with `args`; returns its report and output.
async fn chaos(args: &[&str]) -> (Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let exe = Path::new(env!("CARGO_BIN_EXE_trygg-sim-under-test"));
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("chaos")
        .args(args)
        .arg("--report")
        .arg(&report)
        .kill_on_drop(true);
    if let Ok(seed) = std::env::var("TRYGG_CHAOS_SEED") {
        cmd.args(["--seed", &seed]);
    }
    let began = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .expect("the chaos run ends within 5 minutes")
        .expect("trygg-sim runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Shown by cargo when the test fails.
    println!(
        "{text}\n(trygg-sim chaos {args:?} took {:.0} s)",
        began.elapsed().as_secs_f64()
    );
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(&report)
            .unwrap_or_else(|e| panic!("no report ({e}); the run's output:\n{text}")),
    )
    .expect("the report is JSON");
    assert!(
        out.status.success() == json["passed"].as_bool().unwrap_or(false),
        "the exit status says what the report says: {}",
        out.status
    );
    (json, text)
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// What every run must show.
fn assert_no_loss(r: &Value, out: &str) {
    assert!(
        r["passed"] == true,
        "the chaos run failed: {}\n{out}",
        r["failures"]
    );
    let e = &r["events"];
    assert_eq!(n(&e["lost"]), 0, "{out}");
    assert_eq!(n(&e["duplicated"]), 0, "{out}");
    assert!(n(&e["receipted"]) > 300, "a real stream went through: {e}");
    assert!(
        n(&e["delivered"]) + n(&e["telemetry_missing_excused"]) == n(&e["receipted"]),
        "every receipted event is at the backend or reported dropped: {e}"
    );
    if let Some(why) = r["disk_skipped"].as_str() {
        // Not root, or a container without CAP_SYS_ADMIN: the harness
        // says so and goes on without the fill.
        eprintln!(
            "WARNING: the disk fill was skipped (root: {}): {why}",
            is_root()
        );
    } else {
        assert!(n(&r["disk_fills"]) >= 1, "the disk was filled: {r}");
        assert!(
            n(&r["disk_full_seconds_noticed"]) + n(&r["disk_full_hits_at_least"]) > 0,
            "the fill bit: the gateway noticed the full disk: {r}"
        );
    }
    let link = &r["link_faults"];
    for kind in ["cut", "stall", "delay", "throttle", "reset"] {
        assert!(n(&link[kind]) >= 1, "a link {kind}: {link}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_kills_of_gateway_and_bridge_with_link_faults_and_a_full_disk_lose_nothing() {
    let (r, out) = chaos(&["--cycles", "20", "--duration", "45s"]).await;
    assert_no_loss(&r, &out);
    assert!(n(&r["kills"]["gateway"]) >= 20, "{}", r["kills"]);
    assert!(n(&r["kills"]["bridge"]) >= 20, "{}", r["kills"]);
    assert_eq!(
        r["restarts"]["gateway"], r["kills"]["gateway"],
        "the gateway came back after every kill"
    );
    assert_eq!(r["restarts"]["bridge"], r["kills"]["bridge"]);
    // The embedded brokers die and come back with their processes.
    assert!(n(&r["broker_restarts"]["device"]) >= 20);
    assert!(n(&r["broker_restarts"]["backend"]) >= 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_killed_under_the_gateway_loses_nothing_either() {
    let (r, out) = chaos(&[
        "--device-broker",
        "mosquitto",
        "--cycles",
        "8",
        "--broker-restarts",
        "6",
        "--link-faults",
        "6",
        "--duration",
        "25s",
    ])
    .await;
    assert_no_loss(&r, &out);
    assert!(n(&r["kills"]["mosquitto"]) >= 6, "{}", r["kills"]);
    assert_eq!(r["restarts"]["mosquitto"], r["kills"]["mosquitto"]);
    assert!(n(&r["kills"]["gateway"]) >= 8);
    assert!(n(&r["kills"]["bridge"]) >= 8);
}
