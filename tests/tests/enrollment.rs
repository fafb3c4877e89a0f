//! Gateway enrollment and identity, end to end (issue 5): one-time codes
//! made with `trygg-bridge enroll-code create`, exchanged by
//! `trygg-gateway enroll` for a client certificate from the backend's
//! gateway CA; mutual TLS on the uplink with revocation; each gateway only
//! its own topics. Real binaries, real TLS, real files.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use trygg_protocol::{EventKind, ReceiptStatus};
use trygg_sim::device::spawn_device;
use trygg_tests::*;
use trygg_uplink::contract::{Batch, Record};

const GATEWAY_EXE: &str = env!("CARGO_BIN_EXE_trygg-gateway-under-test");
const BRIDGE_EXE: &str = env!("CARGO_BIN_EXE_trygg-bridge-under-test");

/// Runs a binary; exit success, stdout, stderr.
async fn run(exe: &str, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(exe)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A config file for `trygg-bridge` commands aimed at a running backend
/// (same data dir, so its store is in use and the CLI goes through the API).
fn bridge_cli_config(dir: &Path, backend: &InProcessBackend, data_dir: &Path) -> PathBuf {
    let path = dir.join("bridge-cli.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = {:?}\n[api]\nlisten = \"{}\"\n[enrollment]\nlisten = \"{}\"\n",
            data_dir.display().to_string(),
            backend.ready.api,
            backend.ready.enroll
        ),
    )
    .unwrap();
    path
}

/// `trygg-bridge enroll-code create`: the code it printed.
async fn create_code(bridge_conf: &Path, gateway: &str) -> String {
    let (ok, out, err) = run(
        BRIDGE_EXE,
        &[
            "--config",
            bridge_conf.to_str().unwrap(),
            "enroll-code",
            "create",
            "--gateway",
            gateway,
            "--site",
            "Frogner 12",
            "--valid",
            "1h",
        ],
    )
    .await;
    assert!(ok, "enroll-code create failed: {err}");
    assert!(
        out.contains("trygg-gateway enroll --code"),
        "says what to do: {out}"
    );
    out.lines()
        .map(str::trim)
        .find(|l| l.len() == 19 && l.split('-').count() == 4)
        .unwrap_or_else(|| panic!("no code in: {out}"))
        .to_string()
}

/// `trygg-gateway enroll --code`.
async fn enroll_cli(gw_conf: &Path, code: &str) -> (bool, String, String) {
    run(
        GATEWAY_EXE,
        &[
            "--config",
            gw_conf.to_str().unwrap(),
            "enroll",
            "--code",
            code,
        ],
    )
    .await
}

/// A gateway config that does not enroll by itself (its code file is
/// never there).
fn unenrolled(dir: &Path, backend: &InProcessBackend) -> trygg_gateway::Config {
    let mut c = gateway_config(dir, &backend.ready.broker, &backend.ready.ca_file);
    c.enrollment.code_file = Some(dir.join("no-code-here"));
    c
}

async fn access_refused(
    backend: &InProcessBackend,
    gateway: &str,
    needle: &str,
) -> serde_json::Value {
    eventually(
        Duration::from_secs(10),
        &format!("an access_refused alarm for {gateway} mentioning {needle}"),
        || {
            let api = backend.api.clone();
            let (gateway, needle) = (gateway.to_string(), needle.to_string());
            async move {
                api.all_alarms().await.into_iter().find(|a| {
                    a["kind"] == "access_refused"
                        && a["gateway"] == gateway.as_str()
                        && a["detail"].as_str().unwrap_or("").contains(&needle)
                })
            }
        },
    )
    .await
}

async fn metric_at_least(backend: &InProcessBackend, name: &str, labels: &str, n: f64) {
    eventually(
        Duration::from_secs(10),
        &format!("{name}{{{labels}}} >= {n}"),
        || {
            let api = backend.api.clone();
            let (name, labels) = (name.to_string(), labels.to_string());
            async move { (api.metric(&name, &labels).await >= n).then_some(()) }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_enrolls_with_a_good_code_and_its_alarm_arrives_over_mutual_tls() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("backend");
    let backend = start_backend(&data).await;
    let bridge_conf = bridge_cli_config(dir.path(), &backend, &data);
    let code = create_code(&bridge_conf, "gw-demo-1").await;

    let config = unenrolled(&dir.path().join("gateway"), &backend);
    let gw_conf = write_config(dir.path(), "gateway.toml", &config);
    let (ok, out, err) = enroll_cli(&gw_conf, &code).await;
    assert!(ok, "enroll failed: {err}");
    let certs = backend.api.get("/api/v1/gateways").await["certificates"].clone();
    let fingerprint = certs[0]["fingerprint"].as_str().unwrap().to_string();
    assert_eq!(certs[0]["gateway"], "gw-demo-1");
    assert_eq!(certs[0]["site"], "Frogner 12");
    assert!(
        out.contains("Enrolled gateway gw-demo-1")
            && out.contains(&fingerprint)
            && out.contains("valid until")
            && out.contains("Next:"),
        "says what was enrolled, the fingerprint, the expiry and what next: {out}"
    );
    let key = config.data_dir.join("identity/gateway.key");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the key is the gateway user's alone");
    }

    let gateway = start_gateway(config).await;
    let status = gateway.local_api.get("/api/v1/status").await;
    assert_eq!(status["identity"]["state"], "enrolled", "{status}");
    assert_eq!(
        status["identity"]["certificate_sha256"],
        fingerprint.as_str()
    );
    let button = spawn_device("button-1", &gateway.ready.device_broker, None);
    let seq = button.emit(EventKind::ButtonPress).await.unwrap();
    eventually(Duration::from_secs(15), "the alarm at the backend", || {
        let api = backend.api.clone();
        async move {
            api.device_seqs("button-1")
                .await
                .contains(&seq)
                .then_some(())
        }
    })
    .await;
    gateway.stop.cancel();
    let _ = gateway.task.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_used_or_wrong_code_is_refused_counted_and_raised() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("backend");
    let backend = start_backend(&data).await;
    let bridge_conf = bridge_cli_config(dir.path(), &backend, &data);
    let code = create_code(&bridge_conf, "gw-demo-1").await;

    let first = write_config(
        dir.path(),
        "first.toml",
        &unenrolled(&dir.path().join("first"), &backend),
    );
    assert!(enroll_cli(&first, &code).await.0, "the first use works");

    let second_config = unenrolled(&dir.path().join("second"), &backend);
    let second = write_config(dir.path(), "second.toml", &second_config);
    let (ok, _, err) = enroll_cli(&second, &code).await;
    assert!(!ok);
    assert!(
        err.contains("used already") && err.contains("ask for a new one"),
        "a clear message with what to do: {err}"
    );
    assert!(
        !second_config.data_dir.join("identity/gateway.key").exists()
            && !second_config
                .data_dir
                .join("identity/gateway.key.pending")
                .exists(),
        "a refused enrollment leaves no key behind"
    );
    let (ok, _, err) = enroll_cli(&second, "AAAA-BBBB-CCCC-DDDD").await;
    assert!(!ok);
    assert!(err.contains("not known"), "{err}");

    metric_at_least(
        &backend,
        "enroll_refused_total",
        "reason=\"used_code\"",
        1.0,
    )
    .await;
    metric_at_least(
        &backend,
        "enroll_refused_total",
        "reason=\"unknown_code\"",
        1.0,
    )
    .await;
    let alarm = access_refused(&backend, "gw-demo-1", "used_code").await;
    assert_eq!(alarm["device"], "enrollment");
    assert_eq!(alarm["category"], "technical");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_code_is_refused() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("backend");
    // A code made two hours ago, valid for one.
    std::fs::create_dir_all(&data).unwrap();
    let code = {
        let store = trygg_bridge::store::Store::open(&data.join("bridge.redb")).unwrap();
        let two_hours_ago = trygg_bridge::store::now_ms() - 2 * 3600 * 1000;
        store
            .create_enroll_code(
                "gw-demo-1",
                "Frogner 12",
                3600 * 1000,
                "kari",
                "",
                two_hours_ago,
            )
            .unwrap()
            .0
    };
    let backend = start_backend(&data).await;
    let gw_conf = write_config(
        dir.path(),
        "gateway.toml",
        &unenrolled(&dir.path().join("gateway"), &backend),
    );
    let (ok, _, err) = enroll_cli(&gw_conf, &code).await;
    assert!(!ok);
    assert!(err.contains("expired"), "{err}");
    metric_at_least(
        &backend,
        "enroll_refused_total",
        "reason=\"expired_code\"",
        1.0,
    )
    .await;
    access_refused(&backend, "gw-demo-1", "expired_code").await;
}

/// A fake enrollment endpoint that, while the request is in flight, reads
/// the gateway's new private key from its disk and checks the request
/// against it; answers 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_private_key_never_leaves_the_gateway() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let pki = trygg_uplink::tls::DevPki::ensure(&dir.path().join("pki")).unwrap();
    let server =
        trygg_bridge::console::tls::server_config(&pki.server_cert, &pki.server_key).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let gw_dir = dir.path().join("gateway");
    let pending_key = gw_dir.join("identity/gateway.key.pending");
    let seen = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = tokio_rustls::TlsAcceptor::from(server)
            .accept(tcp)
            .await
            .unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = tls.read(&mut buf).await.unwrap();
            request.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&request);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap();
                if body.len() >= len {
                    break;
                }
            }
        }
        let key = std::fs::read_to_string(&pending_key)
            .expect("the key is on the gateway's disk while it asks");
        let answer = br#"{"reason":"unknown_code","error":"this enrollment code is not known"}"#;
        let head = format!(
            "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            answer.len()
        );
        tls.write_all(head.as_bytes()).await.unwrap();
        tls.write_all(answer).await.unwrap();
        tls.shutdown().await.unwrap();
        (String::from_utf8(request).unwrap(), key)
    });

    let mut config = trygg_gateway::Config::default_config();
    config.data_dir = gw_dir.clone();
    config.uplink.ca_file = pki.ca_cert.clone();
    config.enrollment.url = format!("https://127.0.0.1:{port}");
    let gw_conf = write_config(dir.path(), "gateway.toml", &config);
    let (ok, _, err) = enroll_cli(&gw_conf, "K7QX-M2PD-9RTF-H4WC").await;
    assert!(!ok && err.contains("not known"), "{err}");

    let (request, key) = seen.await.unwrap();
    let body: serde_json::Value =
        serde_json::from_str(request.split_once("\r\n\r\n").unwrap().1).unwrap();
    let fields: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        ["code", "csr", "gateway", "v"],
        "nothing else is sent"
    );
    assert!(key.contains("PRIVATE KEY"));
    let key_body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(
        !request.contains("PRIVATE"),
        "no private key in the request"
    );
    for chunk in key_body.as_bytes().chunks(16) {
        assert!(
            !request.contains(std::str::from_utf8(chunk).unwrap()),
            "no part of the key's PEM in the request"
        );
    }
    // The CSR carries the key's public half, signed by it.
    let csr = rcgen::CertificateSigningRequestParams::from_pem(body["csr"].as_str().unwrap())
        .expect("a CSR with a valid signature");
    let pair = rcgen::KeyPair::from_pem(&key).unwrap();
    use rcgen::PublicKeyData;
    assert_eq!(csr.public_key.der_bytes(), pair.der_bytes());
    assert!(
        !gw_dir.join("identity/gateway.key.pending").exists()
            && !gw_dir.join("identity/gateway.key").exists(),
        "a refused enrollment leaves no key behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unenrolled_gateway_journals_says_so_and_is_refused_by_the_backend() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let backend = start_backend(&dir.path().join("backend")).await;

    // A real gateway without a certificate: events are taken and kept.
    let gateway = start_gateway(unenrolled(&dir.path().join("gateway"), &backend)).await;
    let health = reqwest::get(format!("http://{}/healthz", gateway.ready.local_api))
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 503);
    let text = health.text().await.unwrap();
    assert!(
        text.contains("NOT ENROLLED") && text.contains("enroll --code"),
        "says what to run: {text}"
    );
    let button = spawn_device("button-1", &gateway.ready.device_broker, None);
    let seq = button.emit(EventKind::ButtonPress).await.unwrap();
    let (status, _) = button
        .wait_receipt(seq, Duration::from_secs(10))
        .await
        .expect("the gateway's receipt");
    assert_eq!(status, ReceiptStatus::Committed, "journaled all the same");
    let s = gateway.local_api.get("/api/v1/status").await;
    assert_eq!(s["identity"]["state"], "not_enrolled", "{s}");
    assert_eq!(s["journal_pending"]["alarm"], 1, "{s}");

    // A client without a certificate, playing gateway: closed at its first
    // publish, counted, raised; nothing it sent is stored.
    let (client, mut eventloop) = connect(
        &backend,
        "trygg-uplink-gw-demo-1",
        trygg_uplink::tls::client_config(&backend.ready.ca_file).unwrap(),
    );
    client
        .publish(
            "trygg/v1/gw/gw-demo-1/batch",
            QoS::AtLeastOnce,
            false,
            batch("gw-demo-1", "button-9"),
        )
        .await
        .unwrap();
    assert!(closed(&mut eventloop).await, "the connection is closed");
    metric_at_least(
        &backend,
        "uplink_tls_refused_total",
        "reason=\"no_certificate\"",
        1.0,
    )
    .await;
    access_refused(&backend, "unknown", "no client certificate").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(backend.api.events("button-9").await.is_empty());
    assert!(backend.api.events("button-1").await.is_empty());
    gateway.stop.cancel();
    let _ = gateway.task.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_gateway_is_refused_at_its_next_connection() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("backend");
    let backend = start_backend(&data).await;
    let config = gateway_config(
        &dir.path().join("gateway"),
        &backend.ready.broker,
        &backend.ready.ca_file,
    );
    let gateway = start_gateway(config.clone()).await;
    let button = spawn_device("button-1", &gateway.ready.device_broker, None);
    let first = button.emit(EventKind::ButtonPress).await.unwrap();
    eventually(
        Duration::from_secs(15),
        "the first alarm at the backend",
        || {
            let api = backend.api.clone();
            async move {
                api.device_seqs("button-1")
                    .await
                    .contains(&first)
                    .then_some(())
            }
        },
    )
    .await;

    // Revoked while the bridge runs (the CLI goes through its API).
    let bridge_conf = bridge_cli_config(dir.path(), &backend, &data);
    let (ok, out, err) = run(
        BRIDGE_EXE,
        &[
            "--config",
            bridge_conf.to_str().unwrap(),
            "gateway",
            "revoke",
            "gw-demo-1",
            "--reason",
            "kit stolen",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("1 certificate(s) revoked"), "{out}");
    let certs = backend.api.get("/api/v1/gateways").await["certificates"].clone();
    assert_eq!(certs[0]["revoked"]["reason"], "kit stolen");

    // Its next connection: the gateway restarts.
    drop(button);
    gateway.stop.cancel();
    let _ = gateway.task.await;
    let gateway = start_gateway(config).await;
    let s = eventually(
        Duration::from_secs(15),
        "the gateway to see its certificate refused",
        || {
            let api = gateway.local_api.clone();
            async move {
                let s = api.get("/api/v1/status").await;
                (s["identity"]["state"] == "certificate_refused").then_some(s)
            }
        },
    )
    .await;
    assert!(
        s["identity"]["problem"]
            .as_str()
            .unwrap()
            .contains("enroll --code"),
        "{s}"
    );
    let health = reqwest::get(format!("http://{}/healthz", gateway.ready.local_api))
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 503);
    let fall = spawn_device("fall-1", &gateway.ready.device_broker, None);
    let second = fall.emit(EventKind::Fall).await.unwrap();
    let (status, _) = fall
        .wait_receipt(second, Duration::from_secs(10))
        .await
        .expect("the gateway's receipt");
    assert_eq!(status, ReceiptStatus::Committed);
    metric_at_least(
        &backend,
        "uplink_tls_refused_total",
        "reason=\"revoked\"",
        1.0,
    )
    .await;
    let alarm = access_refused(&backend, "gw-demo-1", "revoked").await;
    assert_eq!(alarm["device"], "uplink");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        backend.api.events("fall-1").await.is_empty(),
        "nothing from a revoked gateway is taken"
    );
    let s = gateway.local_api.get("/api/v1/status").await;
    assert_eq!(s["journal_pending"]["alarm"], 1, "kept in its journal: {s}");
    gateway.stop.cancel();
    let _ = gateway.task.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_foreign_or_expired_certificate_is_refused() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("backend");
    let backend = start_backend(&data).await;

    // Another CA's certificate for a real gateway id.
    let (der, key) = foreign_certificate("Some other CA", "gw-demo-1");
    let (client, mut eventloop) = connect(
        &backend,
        "trygg-uplink-gw-demo-1",
        identity_tls(&backend, &der, &key),
    );
    let _ = client
        .publish(
            "trygg/v1/gw/gw-demo-1/batch",
            QoS::AtLeastOnce,
            false,
            batch("gw-demo-1", "button-7"),
        )
        .await;
    assert!(closed(&mut eventloop).await);
    metric_at_least(
        &backend,
        "uplink_tls_refused_total",
        "reason=\"unknown_issuer\"",
        1.0,
    )
    .await;
    access_refused(&backend, "gw-demo-1", "UnknownIssuer").await;

    // A foreign CA posing under the gateway CA's own name.
    let foreign_ca =
        trygg_bridge::enrollment::GatewayCa::load_or_create(&dir.path().join("foreign"), 30)
            .unwrap();
    let (cert, key) = foreign_ca
        .issue_own("gw-demo-2", trygg_bridge::store::now_ms())
        .unwrap();
    let (client, mut eventloop) = connect(
        &backend,
        "trygg-uplink-gw-demo-2",
        identity_tls(&backend, &cert.der, &key),
    );
    let _ = client
        .publish(
            "trygg/v1/gw/gw-demo-2/batch",
            QoS::AtLeastOnce,
            false,
            batch("gw-demo-2", "button-5"),
        )
        .await;
    assert!(closed(&mut eventloop).await);
    metric_at_least(
        &backend,
        "uplink_tls_refused_total",
        "reason=\"bad_signature\"",
        1.0,
    )
    .await;

    // The backend's own CA, but expired (issued as if three years ago with
    // a one-day validity).
    let own_ca =
        trygg_bridge::enrollment::GatewayCa::load_or_create(&data.join("gateway-ca"), 1).unwrap();
    let (cert, key) = own_ca
        .issue_own(
            "gw-old",
            trygg_bridge::store::now_ms() - 3 * 365 * 86_400_000,
        )
        .unwrap();
    let (client, mut eventloop) = connect(
        &backend,
        "trygg-uplink-gw-old",
        identity_tls(&backend, &cert.der, &key),
    );
    let _ = client
        .publish(
            "trygg/v1/gw/gw-old/batch",
            QoS::AtLeastOnce,
            false,
            batch("gw-old", "button-8"),
        )
        .await;
    assert!(closed(&mut eventloop).await);
    metric_at_least(
        &backend,
        "uplink_tls_refused_total",
        "reason=\"expired\"",
        1.0,
    )
    .await;

    // Signed by the backend's CA and valid, but never issued through
    // enrollment (not in the store): refused too.
    let (cert, key) = own_ca
        .issue_own("gw-forged", trygg_bridge::store::now_ms())
        .unwrap();
    let (client, mut eventloop) = connect(
        &backend,
        "trygg-uplink-gw-forged",
        identity_tls(&backend, &cert.der, &key),
    );
    let _ = client
        .publish(
            "trygg/v1/gw/gw-forged/batch",
            QoS::AtLeastOnce,
            false,
            batch("gw-forged", "button-6"),
        )
        .await;
    assert!(closed(&mut eventloop).await);
    metric_at_least(
        &backend,
        "uplink_tls_refused_total",
        "reason=\"not_issued\"",
        1.0,
    )
    .await;

    tokio::time::sleep(Duration::from_secs(1)).await;
    for d in ["button-5", "button-6", "button-7", "button-8"] {
        assert!(backend.api.events(d).await.is_empty(), "{d}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_may_not_publish_to_another_gateways_topic() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let backend = start_backend(&dir.path().join("backend")).await;
    let tls = enrolled_tls(&backend.ready, "gw-a", &dir.path().join("gw-a")).await;

    // gw-a, well-formed, as gw-b: closed, nothing stored.
    let (client, mut eventloop) = connect(&backend, "trygg-uplink-gw-a", tls.clone());
    client
        .publish(
            "trygg/v1/gw/gw-b/batch",
            QoS::AtLeastOnce,
            false,
            batch("gw-b", "button-b"),
        )
        .await
        .unwrap();
    assert!(closed(&mut eventloop).await, "the connection is closed");
    metric_at_least(
        &backend,
        "uplink_tls_refused_total",
        "reason=\"topic_denied\"",
        1.0,
    )
    .await;
    access_refused(
        &backend,
        "gw-a",
        "may not publish to `trygg/v1/gw/gw-b/batch`",
    )
    .await;

    // Nor may it take another gateway's client id.
    let (client, mut eventloop) = connect(&backend, "trygg-uplink-gw-b", tls.clone());
    let _ = client
        .publish(
            "trygg/v1/gw/gw-a/batch",
            QoS::AtLeastOnce,
            false,
            batch("gw-a", "button-c"),
        )
        .await;
    assert!(
        closed(&mut eventloop).await,
        "a borrowed client id is closed too"
    );

    // Its own topic works.
    let (client, eventloop) = connect(&backend, "trygg-uplink-gw-a", tls);
    tokio::spawn(drive(eventloop));
    client
        .publish(
            "trygg/v1/gw/gw-a/batch",
            QoS::AtLeastOnce,
            false,
            batch("gw-a", "button-a"),
        )
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "gw-a's own batch stored", || {
        let api = backend.api.clone();
        async move { (!api.events("button-a").await.is_empty()).then_some(()) }
    })
    .await;
    assert!(
        backend.api.events("button-b").await.is_empty(),
        "gw-b's topic stayed closed"
    );
    assert!(backend.api.events("button-c").await.is_empty());
}

// -- raw uplink clients ------------------------------------------------------

/// A client certificate (DER) and key (PEM) for `cn` from a CA made here.
fn foreign_certificate(ca_name: &str, cn: &str) -> (Vec<u8>, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.der().to_vec(), key.serialize_pem())
}

fn identity_tls(
    backend: &InProcessBackend,
    der: &[u8],
    key_pem: &str,
) -> Arc<rustls::ClientConfig> {
    trygg_uplink::tls::client_config_with_cert(
        &backend.ready.ca_file,
        vec![rustls::pki_types::CertificateDer::from(der.to_vec())],
        trygg_uplink::tls::read_key_pem(key_pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn connect(
    backend: &InProcessBackend,
    client_id: &str,
    tls: Arc<rustls::ClientConfig>,
) -> (AsyncClient, rumqttc::v5::EventLoop) {
    let mut opts = MqttOptions::new(
        client_id,
        backend.ready.broker.host.clone(),
        backend.ready.broker.port,
    );
    opts.set_keep_alive(Duration::from_secs(5));
    opts.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(tls),
    ));
    AsyncClient::new(opts, 10)
}

/// Drives the connection until the broker closes it (`true`) or 10 s pass.
async fn closed(eventloop: &mut rumqttc::v5::EventLoop) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, eventloop.poll()).await {
            Err(_) => return false,
            Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

async fn drive(mut eventloop: rumqttc::v5::EventLoop) {
    while let Ok(e) = eventloop.poll().await {
        let _: Event = e;
    }
}

fn batch(gateway: &str, device: &str) -> Vec<u8> {
    let record = Record {
        lane: EventKind::ButtonPress.lane(),
        seq: 1,
        device: device.into(),
        device_seq: 1,
        kind: EventKind::ButtonPress,
        ts: None,
        committed_ms: 1,
        battery: None,
        value: None,
        resident: None,
        room: None,
        subject: None,
    };
    serde_json::to_vec(&Batch {
        v: 1,
        gateway: gateway.into(),
        batch: 1,
        records: vec![record],
    })
    .unwrap()
}

/// Mosquitto at the backend, configured as docs/operations.md says
/// (`require_certificate`, `use_identity_as_username`, the ACL patterns):
/// an enrolled gateway's alarm arrives through it; a client without a
/// certificate cannot connect; another gateway's topic is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_mosquitto_at_the_backend_the_documented_mtls_setup_holds() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("backend");
    // The files Mosquitto needs exist before the bridge first runs.
    let pki = trygg_uplink::tls::DevPki::ensure(&data.join("tls")).unwrap();
    let ca =
        trygg_bridge::enrollment::GatewayCa::load_or_create(&data.join("gateway-ca"), 730).unwrap();
    let acl = dir.path().join("trygg.acl");
    std::fs::write(&acl, MOSQUITTO_ACL).unwrap();
    // Mosquitto needs the CRL at start; the bridge keeps it current.
    let crl = data.join("gateway-ca/crl.pem");
    std::fs::write(
        &crl,
        ca.crl_pem(&[], trygg_bridge::store::now_ms()).unwrap(),
    )
    .unwrap();
    let conf = |port: u16| {
        format!(
            "per_listener_settings false\nallow_anonymous false\npersistence false\nuser root\n\
             acl_file {}\nlistener {port} 127.0.0.1\ncertfile {}\nkeyfile {}\ncafile {}\n\
             require_certificate true\nuse_identity_as_username true\ncrlfile {}\n",
            acl.display(),
            pki.server_cert.display(),
            pki.server_key.display(),
            ca.cert_file.display(),
            crl.display()
        )
    };
    let mosquitto = Mosquitto::start_with(conf).unwrap_or_else(|e| panic!("{e}"));
    let url = trygg_uplink::mqtt_url::MqttUrl {
        tls: true,
        ..mosquitto.url.clone()
    };
    let (ca_file, broker_url) = (pki.ca_cert.clone(), url.to_string());
    let backend = start_backend_with(&data, move |c| {
        c.broker.mode = trygg_bridge::config::BrokerMode::External;
        c.broker.url = broker_url;
        c.broker.ca_file = Some(ca_file);
    })
    .await;
    assert_eq!(backend.ready.broker, url);

    let gateway = start_gateway(gateway_config(
        &dir.path().join("gateway"),
        &backend.ready.broker,
        &backend.ready.ca_file,
    ))
    .await;
    let button = spawn_device("button-1", &gateway.ready.device_broker, None);
    let seq = button.emit(EventKind::ButtonPress).await.unwrap();
    eventually(
        Duration::from_secs(15),
        "the alarm at the backend through Mosquitto",
        || {
            let api = backend.api.clone();
            async move {
                api.device_seqs("button-1")
                    .await
                    .contains(&seq)
                    .then_some(())
            }
        },
    )
    .await;

    // Without a certificate: no connection.
    let (_client, mut eventloop) = connect(
        &backend,
        "trygg-uplink-gw-demo-1",
        trygg_uplink::tls::client_config(&backend.ready.ca_file).unwrap(),
    );
    assert!(
        matches!(
            tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await,
            Ok(Err(_))
        ),
        "a client without a certificate is refused"
    );

    // gw-a, enrolled, writing to gw-b's topic: Mosquitto drops it; its own
    // topic goes through.
    let tls = enrolled_tls(&backend.ready, "gw-a", &dir.path().join("gw-a")).await;
    let (client, eventloop) = connect(&backend, "trygg-uplink-gw-a", tls);
    tokio::spawn(drive(eventloop));
    client
        .publish(
            "trygg/v1/gw/gw-b/batch",
            QoS::AtLeastOnce,
            false,
            batch("gw-b", "button-b"),
        )
        .await
        .unwrap();
    client
        .publish(
            "trygg/v1/gw/gw-a/batch",
            QoS::AtLeastOnce,
            false,
            batch("gw-a", "button-a"),
        )
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "gw-a's own batch stored", || {
        let api = backend.api.clone();
        async move { (!api.events("button-a").await.is_empty()).then_some(()) }
    })
    .await;
    assert!(
        backend.api.events("button-b").await.is_empty(),
        "Mosquitto's ACL kept gw-a out of gw-b's topic"
    );

    // Revoked: the bridge writes the CRL, Mosquitto reloads it, and the
    // gateway is refused at its next connection.
    let before = std::fs::read_to_string(&crl).unwrap();
    let (status, _) = backend
        .api
        .post(
            "/api/v1/gateways/gw-demo-1/revoke",
            serde_json::json!({"by": "test", "reason": "kit stolen"}),
        )
        .await;
    assert_eq!(status, 200);
    eventually(Duration::from_secs(15), "the CRL rewritten", || {
        let (crl, before) = (crl.clone(), before.clone());
        async move { (std::fs::read_to_string(&crl).ok()? != before).then_some(()) }
    })
    .await;
    mosquitto.reload();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let config = gateway_config(
        &dir.path().join("gateway"),
        &backend.ready.broker,
        &backend.ready.ca_file,
    );
    drop(button);
    gateway.stop.cancel();
    let _ = gateway.task.await;
    let gateway = start_gateway(config).await;
    eventually(
        Duration::from_secs(15),
        "the gateway refused by Mosquitto",
        || {
            let api = gateway.local_api.clone();
            async move {
                let s = api.get("/api/v1/status").await;
                (s["identity"]["state"] == "certificate_refused").then_some(())
            }
        },
    )
    .await;
    gateway.stop.cancel();
    let _ = gateway.task.await;
    drop(mosquitto);
}

/// The ACL of docs/operations.md ("Mosquitto at the backend").
const MOSQUITTO_ACL: &str = "\
pattern write trygg/v1/gw/%u/batch
pattern write trygg/v1/gw/%u/heartbeat
pattern write trygg/v1/gw/%u/status
pattern write trygg/v1/gw/%u/config-result
pattern write trygg/v1/gw/%u/decommission
pattern read trygg/v1/gw/%u/receipt
pattern read trygg/v1/gw/%u/config
pattern read trygg/v1/gw/%u/decommission-result
pattern read trygg/v1/bridge/status

user trygg-bridge
topic readwrite #
";
