//! The sensor node binary (`--simulated`: pins from stdin) against a real
//! gateway and backend: a PIR event gets its receipt and reaches the
//! backend; an event that got no receipt survives a SIGKILL in the flash
//! file and is delivered, with its sequence number, after the restart.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use trygg_tests::*;
use trygg_uplink::mqtt_url::MqttUrl;

struct Node {
    child: Child,
    out: Lines<BufReader<ChildStdout>>,
}

impl Node {
    fn start(broker: &MqttUrl, flash: &Path) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_trygg-sensor-node"))
            .args(["--simulated", "--device-id", "motion-1", "--broker"])
            .arg(format!("mqtt://{}:{}", broker.host, broker.port))
            .arg("--flash")
            .arg(flash)
            // Its key, as the gateway paired it (gateway_config).
            .env("TRYGG_DEVICE_KEY", device_key("motion-1"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the sensor node starts");
        let out = BufReader::new(child.stdout.take().unwrap()).lines();
        Node { child, out }
    }

    async fn say(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }

    /// The next stdout line that starts with `prefix`.
    async fn expect(&mut self, prefix: &str) -> String {
        let wait = async {
            loop {
                match self.out.next_line().await {
                    Ok(Some(l)) if l.starts_with(prefix) => return l,
                    Ok(Some(_)) => {}
                    other => panic!("the node ended before `{prefix}`: {other:?}"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(15), wait)
            .await
            .unwrap_or_else(|_| panic!("no `{prefix}` line from the node in 15 s"))
    }
}

fn field(line: &str, key: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in `{line}`"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pir_event_gets_its_receipt_and_an_unreceipted_one_survives_a_kill() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let backend = start_backend(&dir.path().join("backend")).await;
    let gateway = start_gateway(gateway_config(
        &dir.path().join("gateway"),
        &backend.ready.broker,
        &backend.ready.ca_file,
    ))
    .await;
    let flash = dir.path().join("motion-1.flash");

    // Motion, through the gateway: queued, receipted, at the backend.
    let mut node = Node::start(&gateway.ready.device_broker, &flash);
    node.expect("trygg-sensor-node ready:").await;
    node.expect("link up").await;
    node.say("pir on").await;
    let queued = node.expect("queued ").await;
    assert_eq!(field(&queued, "kind"), "motion");
    assert_eq!(field(&queued, "by"), "pir");
    let first: u64 = field(&queued, "seq").parse().unwrap();
    let receipt = node.expect("receipt ").await;
    assert_eq!(field(&receipt, "seq"), first.to_string());
    assert_eq!(field(&receipt, "status"), "committed");
    node.child.kill().await.unwrap();

    // Motion while the node's broker has no gateway behind it: no receipt;
    // then SIGKILL.
    let lonely = Mosquitto::start().unwrap_or_else(|e| panic!("{e}"));
    let mut node = Node::start(&lonely.url, &flash);
    let ready = node.expect("trygg-sensor-node ready:").await;
    assert_eq!(field(&ready, "queued"), "0");
    assert!(field(&ready, "next-seq").parse::<u64>().unwrap() > first);
    node.expect("link up").await;
    node.say("pir on").await;
    let queued = node.expect("queued ").await;
    let second: u64 = field(&queued, "seq").parse().unwrap();
    assert!(second > first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    node.child.kill().await.unwrap(); // SIGKILL: a power cut

    // Restarted, with the gateway: the event comes back from the flash
    // file with its number and is delivered.
    let mut node = Node::start(&gateway.ready.device_broker, &flash);
    let ready = node.expect("trygg-sensor-node ready:").await;
    assert_eq!(field(&ready, "queued"), "1");
    let recovered = node.expect("recovered ").await;
    assert_eq!(field(&recovered, "seq"), second.to_string());
    assert_eq!(field(&recovered, "kind"), "motion");
    let receipt = node.expect("receipt ").await;
    assert_eq!(field(&receipt, "seq"), second.to_string());
    assert_eq!(field(&receipt, "status"), "committed");

    let seqs = eventually(
        Duration::from_secs(10),
        "both events at the backend",
        || {
            let api = backend.api.clone();
            async move {
                let seqs = api.device_seqs("motion-1").await;
                (seqs.len() >= 2).then_some(seqs)
            }
        },
    )
    .await;
    assert_eq!(seqs, vec![first, second]);

    // SIGTERM: a clean stop, exit 0, with stdin still open (tokio's
    // `wait` would close it, and EOF would hide a stop stuck reading it).
    let _stdin = node.child.stdin.take();
    let pid = node.child.id().unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let status = tokio::time::timeout(Duration::from_secs(10), node.child.wait())
        .await
        .expect("the node stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");

    gateway.stop.cancel();
    gateway.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn without_gpio_and_without_simulated_it_says_so_and_exits_non_zero() {
    if Path::new("/dev/gpiomem").exists() || Path::new("/dev/gpiomem0").exists() {
        return; // a real Pi
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_trygg-sensor-node"))
        .args(["--device-id", "motion-1", "--flash"])
        .arg(dir.path().join("f"))
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no Raspberry Pi GPIO found"), "{err}");
    assert!(err.contains("--simulated"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
