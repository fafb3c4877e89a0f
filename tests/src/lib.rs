//! The harness for Trygg's end-to-end tests: start the backend and gateways
//! in-process or as child processes, run a real Mosquitto, talk to the API.

pub mod fuzz;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use trygg_uplink::mqtt_url::MqttUrl;

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| trygg_uplink::broker::default_log_filter("warn").into()),
        )
        .with_test_writer()
        .try_init();
}

/// A free loopback port (bound and released: another process could take
/// it in between, which is rare enough for tests).
pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a free port");
    l.local_addr().expect("its address")
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The backend's HTTP API.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(addr: SocketAddr) -> Api {
        Api {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
        }
    }

    pub async fn get(&self, path: &str) -> Value {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("API reachable");
        resp.json().await.expect("API answers JSON")
    }

    pub async fn text(&self, path: &str) -> String {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("API reachable")
            .text()
            .await
            .unwrap_or_default()
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("API reachable");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn alarms(&self, state: &str) -> Vec<Value> {
        self.get(&format!("/api/v1/alarms?state={state}")).await["alarms"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub async fn all_alarms(&self) -> Vec<Value> {
        self.get("/api/v1/alarms").await["alarms"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Stored events of one device, oldest arrival first.
    pub async fn events(&self, device: &str) -> Vec<Value> {
        let mut v = self
            .get(&format!("/api/v1/events?device={device}&limit=10000"))
            .await["events"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        v.reverse();
        v
    }

    /// Device seqs stored for a device.
    pub async fn device_seqs(&self, device: &str) -> Vec<u64> {
        self.events(device)
            .await
            .iter()
            .filter_map(|e| e["device_seq"].as_u64())
            .collect()
    }

    /// Value of a metric line (sum over label sets if `labels` is empty).
    pub async fn metric(&self, name: &str, labels: &str) -> f64 {
        parse_metric(&self.text("/metrics").await, name, labels)
    }
}

/// Reads a metric from Prometheus text (see `trygg_uplink::metrics::read`).
pub use trygg_uplink::metrics::read as parse_metric;

/// A backend started in this process. Its embedded broker lives until the
/// test process ends (rumqttd cannot be stopped).
pub struct InProcessBackend {
    pub ready: trygg_bridge::Ready,
    pub api: Api,
    pub stop: CancellationToken,
}

pub fn bridge_config(dir: &Path, broker: SocketAddr, api: SocketAddr) -> trygg_bridge::Config {
    let defaults = trygg_bridge::Config::default();
    trygg_bridge::Config {
        data_dir: dir.to_path_buf(),
        broker: trygg_bridge::config::BrokerConfig {
            listen: broker,
            ..defaults.broker
        },
        api: trygg_bridge::config::ApiConfig { listen: api },
        // A free port: tests run side by side.
        console: trygg_bridge::config::ConsoleConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            ..defaults.console
        },
        enrollment: trygg_bridge::config::EnrollmentConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            ..defaults.enrollment
        },
        ..defaults
    }
}

pub async fn start_backend(dir: &Path) -> InProcessBackend {
    start_backend_with(dir, |_| {}).await
}

/// A backend with some of its config changed by `tune`.
pub async fn start_backend_with(
    dir: &Path,
    tune: impl FnOnce(&mut trygg_bridge::Config),
) -> InProcessBackend {
    let mut config = bridge_config(
        dir,
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
    );
    tune(&mut config);
    let stop = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(trygg_bridge::run(
        config,
        Some(tx),
        stop.clone().cancelled_owned(),
    ));
    let ready = tokio::time::timeout(Duration::from_secs(20), rx)
        .await
        .expect("backend ready in 20 s")
        .expect("backend started");
    register_backend(&ready);
    InProcessBackend {
        api: Api::new(ready.api),
        ready,
        stop,
    }
}

/// The backends started by this test process, by their broker's URL: where
/// a gateway aimed at that broker enrolls (its enrollment endpoint and the
/// service API that makes codes).
static BACKENDS: std::sync::Mutex<Vec<(String, SocketAddr, String)>> =
    std::sync::Mutex::new(Vec::new());

/// Tells the harness about a backend (in-process ones are registered by
/// [`start_backend`]; a child-process backend by its test).
pub fn register_backend(ready: &trygg_bridge::Ready) {
    BACKENDS.lock().expect("registry").push((
        ready.broker.to_string(),
        ready.api,
        ready.enroll_url(),
    ));
}

/// Tells the harness about a backend running as a child process, from its
/// ready line (`broker=`, `enroll=`) and its API address.
pub fn register_child_backend(broker: &MqttUrl, api: SocketAddr, enroll_url: &str) {
    BACKENDS
        .lock()
        .expect("registry")
        .push((broker.to_string(), api, enroll_url.to_string()));
}

fn backend_of(uplink: &str) -> Option<(SocketAddr, String)> {
    BACKENDS
        .lock()
        .expect("registry")
        .iter()
        .rev()
        .find(|(b, _, _)| b == uplink)
        .map(|(_, api, enroll)| (*api, enroll.clone()))
}

/// A one-time enrollment code for `gateway`, made through the backend's
/// service API (as `trygg-bridge enroll-code create` does while it runs).
pub async fn enrollment_code(api: SocketAddr, gateway: &str) -> String {
    let v = trygg_uplink::enroll::create_code_via_api(api, gateway, "Test site 1", 3600, "test")
        .await
        .unwrap_or_else(|e| panic!("an enrollment code for {gateway}: {e}"));
    v["code"].as_str().expect("a code").to_string()
}

/// Gets a gateway going to a registered backend enrolled for real: unless
/// it has an identity already, a code is made for its `gateway_id` and put
/// in its `[enrollment] code_file`, and the gateway enrolls with it when it
/// starts. [`start_gateway`] does this; a test that starts the gateway as a
/// child process calls it before writing the config.
pub async fn prepare_enrollment(config: &mut trygg_gateway::Config) {
    let identity = trygg_uplink::enroll::IdentityFiles::in_data_dir(&config.data_dir);
    if identity.exists() || config.enrollment.code_file.is_some() {
        return;
    }
    let Some((api, enroll)) = backend_of(&config.uplink.url) else {
        return;
    };
    let code = enrollment_code(api, &config.gateway_id).await;
    std::fs::create_dir_all(&config.data_dir).expect("gateway data dir");
    let file = config.data_dir.join("enroll-code");
    std::fs::write(&file, code).expect("code file written");
    config.enrollment.url = enroll;
    config.enrollment.code_file = Some(file);
}

/// A client TLS config with a real enrolled identity for `gateway` at
/// `backend` (key and certificate in `dir`): for tests that play a
/// gateway by hand. Its MQTT client id must be `trygg-uplink-{gateway}`.
pub async fn enrolled_tls(
    backend: &trygg_bridge::Ready,
    gateway: &str,
    dir: &Path,
) -> std::sync::Arc<rustls::ClientConfig> {
    let code = enrollment_code(backend.api, gateway).await;
    let files = trygg_uplink::enroll::IdentityFiles::in_dir(dir);
    trygg_uplink::enroll::enroll(
        &backend.enroll_url(),
        &backend.ca_file,
        gateway,
        &code,
        &files,
    )
    .await
    .unwrap_or_else(|e| panic!("{gateway} enrolls: {e}"));
    trygg_uplink::tls::client_config_with_identity(&backend.ca_file, &files.cert, &files.key)
        .expect("an mTLS client config")
}

/// A gateway config for tests: embedded broker on a free port, the given
/// backend, the default device register.
pub fn gateway_config(dir: &Path, uplink: &MqttUrl, ca_file: &Path) -> trygg_gateway::Config {
    let mut c = trygg_gateway::Config::default_config();
    c.data_dir = dir.to_path_buf();
    c.local_broker.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    c.uplink.url = uplink.to_string();
    c.uplink.ca_file = ca_file.to_path_buf();
    c.uplink.receipt_timeout_s = 5;
    c.local_api.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    if let Some((_, enroll)) = backend_of(&c.uplink.url) {
        c.enrollment.url = enroll;
    }
    // The technician page on loopback, on a free port (HTTPS all the same).
    if let Some(t) = c.technician.as_mut() {
        t.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    }
    // Each device paired with its test key (see `device_key`).
    trygg_sim::keys::with_keys(&mut c.devices);
    c
}

pub struct InProcessGateway {
    pub ready: trygg_gateway::Ready,
    pub local_api: Api,
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), trygg_gateway::GatewayError>>,
}

pub async fn start_gateway(mut config: trygg_gateway::Config) -> InProcessGateway {
    prepare_enrollment(&mut config).await;
    let stop = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(trygg_gateway::run(
        config,
        Some(tx),
        stop.clone().cancelled_owned(),
    ));
    let ready = match tokio::time::timeout(Duration::from_secs(20), rx)
        .await
        .expect("gateway ready in 20 s")
    {
        Ok(r) => r,
        Err(_) => match task.await {
            Ok(Err(e)) => panic!("the gateway did not start: {e}"),
            other => panic!("the gateway did not start: {other:?}"),
        },
    };
    InProcessGateway {
        local_api: Api::new(ready.local_api),
        ready,
        stop,
        task,
    }
}

/// A service running as a child process, killed when dropped.
pub struct ChildService {
    pub child: Child,
    /// The `... ready: key=value ...` line it printed.
    pub ready_line: String,
    /// What it printed on stdout after the ready line, so far.
    printed: std::sync::Arc<std::sync::Mutex<String>>,
}

impl ChildService {
    /// Starts `exe` with `args` and waits for a stdout line starting with
    /// `ready_prefix`.
    pub async fn start(exe: &Path, args: &[&str], ready_prefix: &str) -> ChildService {
        let mut child = Command::new(exe)
            .args(args)
            .env("RUST_LOG", trygg_uplink::broker::default_log_filter("warn"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready_line = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with(ready_prefix) {
                    return line;
                }
            }
            panic!("{} exited before it was ready", exe.display());
        })
        .await
        .unwrap_or_else(|_| panic!("{} not ready within 30 s", exe.display()));
        // Keep draining stdout so the child never blocks on a full pipe.
        let printed = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let keep = printed.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(mut p) = keep.lock() {
                    if p.len() < 1 << 20 {
                        p.push_str(&line);
                        p.push('\n');
                    }
                }
            }
        });
        ChildService {
            child,
            ready_line,
            printed,
        }
    }

    /// What it printed on stdout after its ready line, until now (the first
    /// MiB).
    pub fn stdout_so_far(&self) -> String {
        self.printed.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// The value of `key=` in the ready line.
    pub fn field(&self, key: &str) -> String {
        self.ready_line
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in `{}`", self.ready_line))
            .to_string()
    }

    /// SIGKILL: no shutdown, no flush, like a power cut for the process.
    pub async fn kill9(mut self) {
        self.child.start_kill().expect("SIGKILL");
        let _ = self.child.wait().await;
    }

    /// SIGTERM and wait for a clean exit.
    pub async fn terminate(self) -> std::process::ExitStatus {
        self.stop_with("-TERM").await
    }

    /// SIGINT (Ctrl-C) and wait for a clean exit.
    pub async fn interrupt(self) -> std::process::ExitStatus {
        self.stop_with("-INT").await
    }

    async fn stop_with(mut self, signal: &str) -> std::process::ExitStatus {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg(signal)
                .arg(pid.to_string())
                .status();
        }
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("exits within 20 s of kill {signal}"))
            .expect("exit status")
    }
}

/// Writes a TOML config file for a child process.
pub fn write_config<T: serde::Serialize>(dir: &Path, name: &str, config: &T) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, toml::to_string(config).expect("config serializes"))
        .expect("config written");
    path
}

/// A real Mosquitto on a loopback port, in-memory, killed when dropped.
pub struct Mosquitto {
    child: std::process::Child,
    pub url: MqttUrl,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts `mosquitto`, or returns an error saying how to install it.
    pub fn start() -> Result<Mosquitto, String> {
        Mosquitto::start_with(|port| {
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_inflight_messages 1000\nmax_queued_messages 100000\n")
        })
    }

    /// Starts `mosquitto` with the config `conf(port)` makes (its listener
    /// on `port`, on 127.0.0.1); `url` is plain `mqtt://` (set `tls` when
    /// the config makes it TLS).
    pub fn start_with(conf: impl FnOnce(u16) -> String) -> Result<Mosquitto, String> {
        let exe = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .ok_or("mosquitto is not installed: run `sudo apt-get install -y mosquitto` (scripts/test does)")?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let addr = free_addr();
        let conf_path = dir.path().join("mosquitto.conf");
        std::fs::write(&conf_path, conf(addr.port())).map_err(|e| e.to_string())?;
        let child = std::process::Command::new(exe)
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {exe}: {e}"))?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            if std::time::Instant::now() > deadline {
                return Err(format!("mosquitto did not listen on {addr} within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Mosquitto {
            child,
            url: MqttUrl {
                host: "127.0.0.1".into(),
                port: addr.port(),
                tls: false,
            },
            _dir: dir,
        })
    }
}

impl Mosquitto {
    /// SIGHUP: Mosquitto reads its config again (and its TLS files and
    /// CRL).
    pub fn reload(&self) {
        let _ = std::process::Command::new("kill")
            .arg("-HUP")
            .arg(self.child.id().to_string())
            .status();
    }
}

/// Where a Mosquitto that checks device credentials reads them, for the
/// gateway's `[local_broker] mosquitto_*` settings.
pub struct MosquittoAuth {
    pub password_file: PathBuf,
    pub acl_file: PathBuf,
    pub pid_file: PathBuf,
}

impl Mosquitto {
    /// A Mosquitto as a gateway on a Pi runs it: no anonymous clients, the
    /// password and ACL files the gateway writes (empty until it does), and
    /// a pid file for the gateway's SIGHUP.
    pub fn start_with_auth() -> Result<(Mosquitto, MosquittoAuth), String> {
        let exe = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .ok_or("mosquitto is not installed: run `sudo apt-get install -y mosquitto` (scripts/test does)")?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let auth = MosquittoAuth {
            password_file: dir.path().join("trygg.passwd"),
            acl_file: dir.path().join("trygg.acl"),
            pid_file: dir.path().join("mosquitto.pid"),
        };
        for f in [&auth.password_file, &auth.acl_file] {
            std::fs::write(f, "").map_err(|e| e.to_string())?;
        }
        let addr = free_addr();
        let conf = dir.path().join("mosquitto.conf");
        // `user`: Mosquitto re-reads the files on SIGHUP as the user it runs
        // as, and they are private to the gateway's user (this test's).
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        std::fs::write(
            &conf,
            format!(
                "listener {} 127.0.0.1\nallow_anonymous false\npassword_file {}\nacl_file {}\nuser {user}\npersistence false\nmax_inflight_messages 1000\nmax_queued_messages 100000\n",
                addr.port(),
                auth.password_file.display(),
                auth.acl_file.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let child = std::process::Command::new(exe)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {exe}: {e}"))?;
        std::fs::write(&auth.pid_file, format!("{}\n", child.id())).map_err(|e| e.to_string())?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            if std::time::Instant::now() > deadline {
                return Err(format!("mosquitto did not listen on {addr} within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok((
            Mosquitto {
                child,
                url: MqttUrl {
                    host: "127.0.0.1".into(),
                    port: addr.port(),
                    tls: false,
                },
                _dir: dir,
            },
            auth,
        ))
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The key of a device in the tests (and the simulator, same process):
/// [`gateway_config`] pairs every device with it.
pub use trygg_sim::keys::device_key;

/// The device a device topic names.
fn device_of(topic: &str) -> String {
    topic
        .strip_prefix("trygg/v1/dev/")
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("`{topic}` is not a device topic"))
        .to_string()
}

/// One device's connection to the device broker.
struct RawConn {
    client: rumqttc::AsyncClient,
    /// Times the connection failed (the broker closed it, or refused it).
    errors: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Publishes raw payloads to the device broker, as a misbehaving device
/// would, and collects the receipts that come back. Each device id
/// publishes on a connection of its own, as that device: client id =
/// username = device id, password = its key ([`device_key`] unless
/// [`RawDevice::set_key`] gave another), so the broker's checks apply.
pub struct RawDevice {
    broker: MqttUrl,
    conns: tokio::sync::Mutex<std::collections::HashMap<String, RawConn>>,
    keys: std::collections::HashMap<String, String>,
    tx: tokio::sync::mpsc::UnboundedSender<(String, Value)>,
    pub receipts: tokio::sync::mpsc::UnboundedReceiver<(String, Value)>,
}

impl RawDevice {
    /// A device client of `broker`; connections are made as needed.
    pub async fn connect(broker: &MqttUrl) -> RawDevice {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        RawDevice {
            broker: broker.clone(),
            conns: Default::default(),
            keys: Default::default(),
            tx,
            receipts: rx,
        }
    }

    /// Device `id` connects with `key` from now on.
    pub fn set_key(&mut self, id: &str, key: &str) {
        self.keys.insert(id.to_string(), key.to_string());
    }

    /// Connects as `id` (if not yet) and waits until subscribed to its
    /// receipts; `Err` with why when the broker refuses it within 5 s.
    pub async fn connect_as(&self, id: &str) -> Result<(), String> {
        use rumqttc::{Event, MqttOptions, Packet, QoS};
        let mut conns = self.conns.lock().await;
        if conns.contains_key(id) {
            return Ok(());
        }
        let key = self.keys.get(id).cloned().unwrap_or_else(|| device_key(id));
        let mut opts = MqttOptions::new(id, self.broker.host.clone(), self.broker.port);
        opts.set_credentials(id, key)
            .set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 100);
        let ack = format!("trygg/v1/dev/{id}/ack");
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
        let errors = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (sub, tx, errs) = (client.clone(), self.tx.clone(), errors.clone());
        tokio::spawn(async move {
            let mut subscribed_tx = Some(subscribed_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = sub.subscribe(ack.clone(), QoS::AtLeastOnce).await;
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(t) = subscribed_tx.take() {
                            let _ = t.send(Ok(()));
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let v = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                        if tx.send((p.topic.clone(), v)).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        errs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if let Some(t) = subscribed_tx.take() {
                            let _ = t.send(Err(e.to_string()));
                            break;
                        }
                        if tx.is_closed() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        match tokio::time::timeout(Duration::from_secs(5), subscribed_rx).await {
            Ok(Ok(Ok(()))) => {
                conns.insert(id.to_string(), RawConn { client, errors });
                Ok(())
            }
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err("connection task ended".into()),
            Err(_) => Err("not connected and subscribed within 5 s".into()),
        }
    }

    /// How often device `id`'s connection failed (closed by the broker).
    pub async fn connection_errors(&self, id: &str) -> u64 {
        self.conns
            .lock()
            .await
            .get(id)
            .map(|c| c.errors.load(std::sync::atomic::Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// Publishes `payload` to `topic` as device `id` (which may not be the
    /// topic's device: the broker should refuse that).
    pub async fn publish_as(&self, id: &str, topic: &str, payload: impl Into<Vec<u8>>) {
        if let Err(e) = self.connect_as(id).await {
            panic!("device {id} cannot connect to {}: {e}", self.broker);
        }
        let conns = self.conns.lock().await;
        conns[id]
            .client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload.into())
            .await
            .expect("publish queued");
    }

    /// Subscribes to `filter` (QoS 1) as the device it names (connecting
    /// it if needed); what arrives comes with the receipts.
    pub async fn subscribe(&self, filter: &str) {
        let id = device_of(filter);
        if let Err(e) = self.connect_as(&id).await {
            panic!("device {id} cannot connect to {}: {e}", self.broker);
        }
        let conns = self.conns.lock().await;
        conns[&id]
            .client
            .subscribe(filter, rumqttc::QoS::AtLeastOnce)
            .await
            .expect("subscribe queued");
    }

    /// Publishes `payload` to `topic` as the device the topic names.
    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.publish_as(&device_of(topic), topic, payload).await
    }

    /// The next receipt on `topic`, within 10 s.
    pub async fn receipt_on(&mut self, topic: &str) -> Value {
        tokio::time::timeout(Duration::from_secs(10), async {
            while let Some((t, v)) = self.receipts.recv().await {
                if t == topic {
                    return v;
                }
            }
            panic!("receipt stream ended");
        })
        .await
        .unwrap_or_else(|_| panic!("no receipt on {topic} within 10 s"))
    }
}
