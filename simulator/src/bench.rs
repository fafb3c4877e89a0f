//! `trygg-sim bench`: the gateway's figures next to Mosquitto's, measured
//! in one run on loopback so that what counts is the ratio, not the machine.
//!
//! What is measured, and what "done" means for each figure:
//!
//! - **Durable ingest.** `publishers` device connections (rumqttc, MQTT
//!   v3.1.1, QoS 1) each keep up to `window` events without a receipt and
//!   publish `events` in total. An event is done when its device holds the
//!   gateway's `committed` receipt, which the gateway sends only after the
//!   group commit holding it has been fsynced. Rate = events / (first
//!   publish .. last receipt). Run against the gateway with its embedded
//!   broker and, if Mosquitto is installed, with Mosquitto as its local
//!   broker. The backend runs in-process and takes everything forwarded;
//!   "backend caught up" is the time until the gateway's journal is empty
//!   again (every event receipted by the backend, after its own fsync).
//! - **Peer: Mosquitto QoS 1.** The same publishers against a plain
//!   Mosquitto (in memory, no persistence), each keeping up to `window`
//!   messages without a PUBACK, and one QoS 1 subscriber. Done when the
//!   subscriber has received the message. Mosquitto acknowledges from RAM:
//!   this is the rate of a broker that promises nothing across a crash.
//! - **Alarm latency.** While background publishers send telemetry at
//!   `background_rate` events/s through the same gateway, one safety button
//!   sends `alarms` button presses 20–50 ms apart. Each is timed from its
//!   publish to its `new` alarm on the backend API's server-sent event
//!   stream (matched by device and device sequence), and, on the way, to
//!   its receipt at the device.
//! - **Peer: a Mosquitto bridge.** Mosquitto A bridges `# out 1` to
//!   Mosquitto B; the same background load and the same presses are
//!   published to A and timed to a QoS 1 subscriber on B.
//!
//! Everything shares the machine's cores: the publishers, the brokers, the
//! gateway and the backend. That is true for the peers as well.
//!
//! The outage benchmarks (`bench drain`, `bench memory`, `bench recovery`,
//! `bench outage`: a large backlog held and drained) are in [`backlog`].

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use trygg_gateway::config::{BrokerMode, Device, DeviceType};
use trygg_protocol::{topic, DeviceEvent, EventKind, Receipt, ReceiptStatus};
use trygg_uplink::mqtt_url::MqttUrl;

pub mod backlog;

/// How much to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Events per throughput run, over all publishers...
    pub events: u64,
    /// ...or as many as fit in this many seconds, whichever is less.
    pub max_seconds: u64,
    pub publishers: usize,
    /// Events (or, for Mosquitto, messages) a publisher may have
    /// unconfirmed at once.
    pub window: usize,
    pub alarms: usize,
    /// Telemetry events/s sent in the background of the latency runs.
    pub background_rate: u32,
    /// Where the journals go (a temporary directory under it); the default
    /// is the system's temporary directory. Put it on the disk you mean to
    /// measure, not on tmpfs.
    pub data_dir: Option<PathBuf>,
    /// The Mosquitto executable; found in the usual places when `None`.
    pub mosquitto: Option<PathBuf>,
}

impl BenchOptions {
    /// About two minutes on a 2-core machine.
    pub fn full() -> BenchOptions {
        BenchOptions {
            events: 200_000,
            max_seconds: 30,
            publishers: 8,
            window: 500,
            alarms: 300,
            background_rate: 1000,
            data_dir: None,
            mosquitto: None,
        }
    }

    /// A smoke check: every phase, small numbers, well under 30 s.
    pub fn quick() -> BenchOptions {
        BenchOptions {
            events: 20_000,
            max_seconds: 5,
            alarms: 40,
            ..BenchOptions::full()
        }
    }
}

const BG_PUBLISHERS: usize = 4;
const ALARM_DEVICE: &str = "bench-button-1";
const ALARM_GAP_MS: (u64, u64) = (20, 50);
/// How long to wait for the last alarm, or the last receipt, to arrive.
const SETTLE: Duration = Duration::from_secs(20);

fn note(msg: impl AsRef<str>) {
    eprintln!("bench: {}", msg.as_ref());
}

// ---------------------------------------------------------------------------
// Figures

/// One throughput run.
#[derive(Clone, Debug)]
pub struct Throughput {
    pub what: String,
    pub events: u64,
    pub confirmed: u64,
    pub seconds: f64,
    /// Confirmations other than `committed` (duplicates, rejections).
    pub not_committed: u64,
    /// Gateway runs: events per journal commit on average.
    pub events_per_commit: Option<f64>,
    /// Gateway runs: seconds from the first publish until the backend had
    /// receipted everything (the gateway's journal was empty again).
    pub backend_caught_up_s: Option<f64>,
}

impl Throughput {
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.confirmed as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// One latency run.
#[derive(Clone, Debug)]
pub struct Latency {
    pub what: String,
    pub sent: usize,
    /// Sorted.
    pub samples: Vec<Duration>,
    /// Background events/s actually sent during the run.
    pub background_rate: f64,
}

impl Latency {
    pub fn missing(&self) -> usize {
        self.sent - self.samples.len()
    }

    /// Nearest-rank percentile, `p` in 0..=100.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        if self.samples.is_empty() {
            return None;
        }
        let rank = ((p / 100.0) * self.samples.len() as f64).ceil() as usize;
        Some(self.samples[rank.clamp(1, self.samples.len()) - 1])
    }

    fn ms(&self, p: f64) -> Option<f64> {
        self.percentile(p).map(|d| d.as_secs_f64() * 1000.0)
    }
}

/// Everything one run measured.
#[derive(Clone, Debug)]
pub struct Report {
    pub date: String,
    pub cores: usize,
    pub journal_fs: String,
    pub mosquitto: Result<String, String>,
    pub options: BenchOptions,
    pub payload_bytes: usize,
    pub trygg_ingest: Option<Throughput>,
    pub trygg_ingest_mosquitto: Option<Throughput>,
    pub mosquitto_qos1: Option<Throughput>,
    /// The embedded broker alone, measured like Mosquitto: where the
    /// gateway's ceiling with that broker lies.
    pub rumqttd_qos1: Option<Throughput>,
    pub trygg_receipt_latency: Option<Latency>,
    pub trygg_alarm_latency: Option<Latency>,
    pub bridge_latency: Option<Latency>,
    pub problems: Vec<String>,
}

impl Report {
    pub fn ingest_ratio(&self) -> Option<f64> {
        let (t, m) = (self.trygg_ingest.as_ref()?, self.mosquitto_qos1.as_ref()?);
        (m.rate() > 0.0).then(|| t.rate() / m.rate())
    }

    pub fn latency_ratio(&self) -> Option<f64> {
        let t = self.trygg_alarm_latency.as_ref()?.ms(99.0)?;
        let b = self.bridge_latency.as_ref()?.ms(99.0)?;
        (b > 0.0).then(|| t / b)
    }

    /// The table printed at the end.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let o = &self.options;
        let mut s = String::new();
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "trygg bench, {}: {} cores, journals on {}, mosquitto: {}",
            self.date,
            self.cores,
            self.journal_fs,
            match &self.mosquitto {
                Ok(v) => v.clone(),
                Err(e) => format!("not found ({e})"),
            }
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "Ingest: up to {} events or {} s, {} bytes each, {} publishers, window {} unconfirmed each",
            o.events, o.max_seconds, self.payload_bytes, o.publishers, o.window
        );
        let _ = writeln!(
            s,
            "  {:<58} {:>10} {:>8} {:>9} {:>10}",
            "done when", "events/s", "seconds", "ratio", "ev/commit"
        );
        let m_rate = self.mosquitto_qos1.as_ref().map(|m| m.rate());
        let ratio = |r: f64| match m_rate {
            Some(m) if m > 0.0 => format!("{:.2}x", r / m),
            _ => "-".into(),
        };
        for t in [
            &self.trygg_ingest,
            &self.trygg_ingest_mosquitto,
            &self.mosquitto_qos1,
            &self.rumqttd_qos1,
        ]
        .into_iter()
        .flatten()
        {
            let _ = writeln!(
                s,
                "  {:<58} {:>10.0} {:>8.2} {:>9} {:>10}",
                t.what,
                t.rate(),
                t.seconds,
                ratio(t.rate()),
                t.events_per_commit
                    .map(|c| format!("{c:.1}"))
                    .unwrap_or_default()
            );
            if t.confirmed < t.events || t.not_committed > 0 {
                // Not an error in the rate (it counts what was confirmed),
                // but worth seeing.
                let _ = writeln!(
                    s,
                    "    ! only {} of {} confirmed, {} not `committed`",
                    t.confirmed, t.events, t.not_committed
                );
            }
        }
        for t in [&self.trygg_ingest, &self.trygg_ingest_mosquitto]
            .into_iter()
            .flatten()
        {
            if let Some(c) = t.backend_caught_up_s {
                let _ = writeln!(
                    s,
                    "  {:<58} {:>10.0} {:>8.2}",
                    format!("  ...and forwarded to the backend and receipted there"),
                    t.confirmed as f64 / c,
                    c
                );
            }
        }
        match self.ingest_ratio() {
            Some(r) => {
                let _ = writeln!(
                    s,
                    "  durable ingest / mosquitto QoS 1: {r:.2}x   (goal >= 1.50x: {})",
                    if r >= 1.5 { "met" } else { "NOT met" }
                );
            }
            None => {
                let _ = writeln!(s, "  durable ingest / mosquitto QoS 1: not measured");
            }
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "Alarm latency: {} presses {}-{} ms apart, under {} telemetry events/s",
            o.alarms, ALARM_GAP_MS.0, ALARM_GAP_MS.1, o.background_rate
        );
        let _ = writeln!(
            s,
            "  {:<44} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}",
            "from publish to", "p50 ms", "p90 ms", "p99 ms", "max ms", "missing", "bg ev/s"
        );
        let f = |v: Option<f64>| v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into());
        for l in [
            &self.trygg_receipt_latency,
            &self.trygg_alarm_latency,
            &self.bridge_latency,
        ]
        .into_iter()
        .flatten()
        {
            let _ = writeln!(
                s,
                "  {:<44} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9.0}",
                l.what,
                f(l.ms(50.0)),
                f(l.ms(90.0)),
                f(l.ms(99.0)),
                f(l.ms(100.0)),
                l.missing(),
                l.background_rate
            );
        }
        match self.latency_ratio() {
            Some(r) => {
                let _ = writeln!(
                    s,
                    "  alarm p99 / mosquitto bridge p99: {r:.1}x   (goal <= 3x: {})",
                    if r <= 3.0 { "met" } else { "NOT met" }
                );
            }
            None => {
                let _ = writeln!(s, "  alarm p99 / mosquitto bridge p99: not measured");
            }
        }
        if !self.problems.is_empty() {
            let _ = writeln!(s);
            let _ = writeln!(s, "Problems:");
            for p in &self.problems {
                let _ = writeln!(s, "  - {p}");
            }
        }
        s
    }

    pub fn json(&self) -> serde_json::Value {
        let t = |t: &Option<Throughput>| {
            t.as_ref().map(|t| {
                json!({
                    "what": t.what, "events": t.events, "confirmed": t.confirmed,
                    "not_committed": t.not_committed, "seconds": t.seconds,
                    "per_second": t.rate(), "events_per_commit": t.events_per_commit,
                    "backend_caught_up_s": t.backend_caught_up_s,
                })
            })
        };
        let l = |l: &Option<Latency>| {
            l.as_ref().map(|l| {
                json!({
                    "what": l.what, "sent": l.sent, "missing": l.missing(),
                    "p50_ms": l.ms(50.0), "p90_ms": l.ms(90.0), "p99_ms": l.ms(99.0),
                    "max_ms": l.ms(100.0), "background_per_second": l.background_rate,
                })
            })
        };
        let o = &self.options;
        json!({
            "date": self.date,
            "cores": self.cores,
            "journal_fs": self.journal_fs,
            "mosquitto": match &self.mosquitto { Ok(v) => json!(v), Err(_) => json!(null) },
            "options": {
                "events": o.events, "max_seconds": o.max_seconds, "publishers": o.publishers, "window": o.window,
                "alarms": o.alarms, "background_rate": o.background_rate,
                "payload_bytes": self.payload_bytes,
            },
            "ingest": {
                "trygg_embedded": t(&self.trygg_ingest),
                "trygg_mosquitto_local": t(&self.trygg_ingest_mosquitto),
                "mosquitto_qos1": t(&self.mosquitto_qos1),
                "rumqttd_qos1": t(&self.rumqttd_qos1),
                "ratio": self.ingest_ratio(),
                "goal": 1.5,
            },
            "latency": {
                "trygg_receipt": l(&self.trygg_receipt_latency),
                "trygg_alarm_api": l(&self.trygg_alarm_latency),
                "mosquitto_bridge": l(&self.bridge_latency),
                "ratio_p99": self.latency_ratio(),
                "goal": 3.0,
            },
            "problems": self.problems,
        })
    }
}

// ---------------------------------------------------------------------------
// The run

/// Runs every phase and returns the figures. Progress goes to stderr.
pub async fn run_bench(opts: BenchOptions) -> anyhow::Result<Report> {
    if opts.publishers == 0 || opts.window == 0 || opts.events < opts.publishers as u64 {
        bail!("--publishers and --window must be at least 1, and --events at least --publishers");
    }
    let base = match &opts.data_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            tempfile::Builder::new()
                .prefix("trygg-bench-")
                .tempdir_in(d)?
        }
        None => tempfile::Builder::new().prefix("trygg-bench-").tempdir()?,
    };
    let dir = base.path().to_path_buf();
    let mosquitto = find_mosquitto(opts.mosquitto.as_deref());
    let mut report = Report {
        date: utc_date(),
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        journal_fs: filesystem_of(&dir),
        mosquitto: mosquitto
            .as_ref()
            .map(|(exe, version)| format!("{version} ({})", exe.display()))
            .map_err(|e| e.clone()),
        payload_bytes: event_payload(1, EventKind::Motion).len(),
        options: opts.clone(),
        trygg_ingest: None,
        trygg_ingest_mosquitto: None,
        mosquitto_qos1: None,
        rumqttd_qos1: None,
        trygg_receipt_latency: None,
        trygg_alarm_latency: None,
        bridge_latency: None,
        problems: Vec::new(),
    };
    note(format!(
        "{} cores; data in {} ({}); mosquitto: {}",
        report.cores,
        dir.display(),
        report.journal_fs,
        match &report.mosquitto {
            Ok(v) => v.clone(),
            Err(e) => format!("NOT FOUND, peers skipped: {e}"),
        }
    ));
    if report.journal_fs.starts_with("tmpfs") {
        report.problems.push(
            "the journals are on tmpfs: fsync costs nothing there, so the trygg figures flatter it; use --data-dir on a real disk".into(),
        );
    }

    let cancel = CancellationToken::new();
    let mut held = Held::default();
    // On Ctrl-C the phase in progress is dropped, which kills its
    // Mosquittos, and the services stop in order below.
    let result = tokio::select! {
        r = phases(&opts, &dir, mosquitto.ok(), &mut report, &mut held, &cancel) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    if let Err(e) = result {
        report
            .problems
            .push(format!("the run stopped early: {e:#}"));
    }
    // Stop the services (they commit what they took) before their brokers
    // and the data directory go.
    note("stopping");
    cancel.cancel();
    let stopping = futures::future::join_all(held.tasks);
    if tokio::time::timeout(Duration::from_secs(20), stopping)
        .await
        .is_err()
    {
        note("the services did not stop within 20 s");
    }
    drop(held.brokers);
    Ok(report)
}

/// What runs until the end of the bench: the services (stopped by the
/// cancel token) and the Mosquittos they use.
#[derive(Default)]
struct Held {
    tasks: Vec<JoinHandle<()>>,
    brokers: Vec<Mosquitto>,
}

async fn start_backend(
    dir: &Path,
    held: &mut Held,
    cancel: &CancellationToken,
) -> anyhow::Result<trygg_bridge::Ready> {
    let mut config = trygg_bridge::Config {
        data_dir: dir.join("backend"),
        ..Default::default()
    };
    config.broker.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    config.api.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    config.console.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    config.enrollment.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let (tx, rx) = oneshot::channel();
    let shutdown = cancel.clone().cancelled_owned();
    let task = tokio::spawn(async move {
        if let Err(e) = trygg_bridge::run(config, Some(tx), shutdown).await {
            tracing::error!(error = %e, "bench backend stopped with an error");
        }
    });
    held.tasks.push(task);
    rx.await.context("the backend stopped before it was ready")
}

fn bench_devices(opts: &BenchOptions) -> Vec<Device> {
    let device = |id: String, device_type| Device {
        key_hash: Some(crate::keys::key_hash(&id)),
        id,
        device_type,
        room: Some("bench".into()),
        resident: Some("r-bench".into()),
        supervision_s: None,
        heartbeat_s: None,
        pre_alarm_s: None,
    };
    let mut d: Vec<Device> = (0..opts.publishers)
        .map(|i| device(format!("bench-motion-{i}"), DeviceType::MotionSensor))
        .collect();
    d.extend((0..BG_PUBLISHERS).map(|i| device(format!("bench-bg-{i}"), DeviceType::MotionSensor)));
    d.push(device(ALARM_DEVICE.into(), DeviceType::SafetyButton));
    d
}

/// A gateway on a fresh journal, with its embedded broker or `external`.
async fn start_gateway(
    id: &str,
    dir: &Path,
    opts: &BenchOptions,
    backend: &trygg_bridge::Ready,
    held: &mut Held,
    external: Option<&MqttUrl>,
    cancel: &CancellationToken,
) -> anyhow::Result<trygg_gateway::Ready> {
    let mut gw = trygg_gateway::Config::default_config();
    gw.gateway_id = id.into();
    gw.data_dir = dir.join(id);
    match external {
        None => {
            gw.local_broker.mode = BrokerMode::Embedded;
            gw.local_broker.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        }
        Some(url) => {
            gw.local_broker.mode = BrokerMode::External;
            gw.local_broker.url = url.to_string();
        }
    }
    gw.uplink.url = backend.broker.to_string();
    gw.uplink.ca_file = backend.ca_file.clone();
    gw.local_api.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    gw.devices = bench_devices(opts);
    gw.validate()?;
    std::fs::create_dir_all(&gw.data_dir)?;
    crate::enroll::enroll_gateway(backend, &mut gw, "Bench", "trygg-sim bench").await?;
    let (tx, rx) = oneshot::channel();
    let shutdown = cancel.clone().cancelled_owned();
    let name = id.to_string();
    held.tasks.push(tokio::spawn(async move {
        if let Err(e) = trygg_gateway::run(gw, Some(tx), shutdown).await {
            tracing::error!(gateway = %name, error = %e, "bench gateway stopped with an error");
        }
    }));
    let ready = rx
        .await
        .context("the gateway stopped before it was ready")?;
    // Forwarding must be possible before we measure anything.
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = gateway_status(&http, ready.local_api).await {
            if s["uplink_connected"].as_bool() == Some(true) {
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("gateway {id} did not connect to the backend within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(ready)
}

async fn phases(
    opts: &BenchOptions,
    dir: &Path,
    mosquitto: Option<(PathBuf, String)>,
    report: &mut Report,
    held: &mut Held,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let steps = if mosquitto.is_some() { 6 } else { 3 };
    let mut step = 0;
    let mut next = |what: &str| {
        step += 1;
        note(format!("[{step}/{steps}] {what}"));
    };
    note("starting the backend");
    let backend = start_backend(dir, held, cancel).await?;
    let http = reqwest::Client::new();
    let ingest_devices: Vec<String> = (0..opts.publishers)
        .map(|i| format!("bench-motion-{i}"))
        .collect();

    // 1. Durable ingest, embedded broker.
    next("durable ingest through the gateway (embedded broker)");
    let gw = start_gateway("bench-gw-embedded", dir, opts, &backend, held, None, cancel).await?;
    let t = gateway_ingest(
        "trygg, embedded broker: `committed` receipt at the device",
        &gw,
        &ingest_devices,
        opts,
        &http,
    )
    .await?;
    report.trygg_ingest = Some(t);

    // 1b. The same with Mosquitto as the gateway's local broker.
    if let Some((exe, _)) = &mosquitto {
        next("durable ingest through the gateway (Mosquitto as its local broker)");
        let m = Mosquitto::start(exe, None)?;
        let gw2 = start_gateway(
            "bench-gw-mosquitto",
            dir,
            opts,
            &backend,
            held,
            Some(&m.url),
            cancel,
        )
        .await?;
        match gateway_ingest(
            "trygg, Mosquitto as local broker: receipt at the device",
            &gw2,
            &ingest_devices,
            opts,
            &http,
        )
        .await
        {
            Ok(t) => report.trygg_ingest_mosquitto = Some(t),
            Err(e) => report
                .problems
                .push(format!("gateway with Mosquitto as local broker: {e:#}")),
        }
        held.brokers.push(m);
    }

    // 2. Peer: plain Mosquitto QoS 1.
    if let Some((exe, version)) = &mosquitto {
        next("peer: Mosquitto QoS 1 throughput");
        let m = Mosquitto::start(exe, None)?;
        let t = broker_ingest(
            &format!("{version} QoS 1: subscriber has it (RAM)"),
            &m.url,
            &ingest_devices,
            opts,
        )
        .await?;
        report.mosquitto_qos1 = Some(t);
    }

    // For reference: the gateway's embedded broker alone, as a broker.
    next("reference: the embedded broker (rumqttd) alone, QoS 1 throughput");
    let settings = trygg_uplink::broker::BrokerSettings {
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        version: trygg_uplink::broker::MqttVersion::V4,
        tls: None,
        max_payload: 256 * 1024,
        max_inflight: 1000,
        log_segment_bytes: trygg_uplink::broker::BrokerSettings::SMALL_LOG.0,
        log_segments: trygg_uplink::broker::BrokerSettings::SMALL_LOG.1,
        tls_config: None,
        authenticator: None,
        authorizer: None,
    };
    let rumqttd =
        tokio::task::spawn_blocking(move || trygg_uplink::broker::EmbeddedBroker::start(settings))
            .await??;
    let url = MqttUrl {
        host: rumqttd.addr.ip().to_string(),
        port: rumqttd.addr.port(),
        tls: false,
    };
    match broker_ingest(
        "rumqttd (the embedded broker) QoS 1: subscriber has it",
        &url,
        &ingest_devices,
        opts,
    )
    .await
    {
        Ok(t) => report.rumqttd_qos1 = Some(t),
        Err(e) => report.problems.push(format!("rumqttd alone: {e:#}")),
    }

    // 3. Alarm latency through the first gateway and the backend.
    next("alarm latency: device -> gateway -> backend API, under background load");
    let (receipts, alarms) = trygg_latency(&gw, &backend, opts).await?;
    report.trygg_receipt_latency = Some(receipts);
    report.trygg_alarm_latency = Some(alarms);

    // 4. Peer: a Mosquitto bridge.
    if let Some((exe, _)) = &mosquitto {
        next("peer: alarm latency over a Mosquitto bridge, under the same load");
        let b = Mosquitto::start(exe, None)?;
        let a = Mosquitto::start(exe, Some(&b.url))?;
        report.bridge_latency = Some(bridge_latency(&a.url, &b.url, opts).await?);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Throughput

async fn gateway_ingest(
    what: &str,
    gw: &trygg_gateway::Ready,
    devices: &[String],
    opts: &BenchOptions,
    http: &reqwest::Client,
) -> anyhow::Result<Throughput> {
    let tally = Arc::new(Tally::default());
    let not_committed = Arc::new(AtomicU64::new(0));
    let mut pubs = Vec::new();
    for d in devices {
        pubs.push(
            Publisher::connect(
                &gw.device_broker,
                d,
                opts.window,
                Confirm::Receipt {
                    tally: tally.clone(),
                    not_committed: not_committed.clone(),
                },
                None,
            )
            .await?,
        );
    }
    let before = gateway_metrics(http, gw.local_api)
        .await
        .unwrap_or_default();
    let started = Instant::now();
    let progress = progress(what, tally.clone(), opts.events);
    let sent = send_all(&pubs, opts).await;
    let done = tally.wait_for(sent, SETTLE).await;
    progress.abort();
    let seconds = tally.last_since(started);
    let after = gateway_metrics(http, gw.local_api)
        .await
        .unwrap_or_default();
    let commits = after.get("journal_commits_total").copied().unwrap_or(0.0)
        - before.get("journal_commits_total").copied().unwrap_or(0.0);
    let committed = after
        .get("journal_events_committed_total")
        .copied()
        .unwrap_or(0.0)
        - before
            .get("journal_events_committed_total")
            .copied()
            .unwrap_or(0.0);
    for p in pubs {
        p.close().await;
    }
    // Wait for the backend to take everything, so the next phase runs on
    // an idle machine, and say how long that took.
    note("waiting for the backend to receipt everything forwarded");
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut caught_up = None;
    while Instant::now() < deadline {
        if let Ok(s) = gateway_status(http, gw.local_api).await {
            let p = &s["journal_pending"];
            let pending: u64 = ["alarm", "care", "telemetry"]
                .iter()
                .map(|l| p[l].as_u64().unwrap_or(u64::MAX / 4))
                .sum();
            if pending == 0 {
                caught_up = Some(started.elapsed().as_secs_f64());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if caught_up.is_none() {
        note("the backend did not catch up within 180 s; going on");
    }
    Ok(Throughput {
        what: what.into(),
        events: sent,
        confirmed: done,
        seconds,
        not_committed: not_committed.load(Ordering::Relaxed),
        events_per_commit: (commits > 0.0).then(|| committed / commits),
        backend_caught_up_s: caught_up,
    })
}

async fn broker_ingest(
    what: &str,
    url: &MqttUrl,
    devices: &[String],
    opts: &BenchOptions,
) -> anyhow::Result<Throughput> {
    let received = Arc::new(Tally::default());
    let sub = {
        let received = received.clone();
        Subscriber::connect(url, topic::EVENTS_FILTER, move |_, _| received.bump()).await?
    };
    let pubacks = Arc::new(Tally::default());
    let mut pubs = Vec::new();
    for d in devices {
        pubs.push(
            Publisher::connect(
                url,
                d,
                opts.window,
                Confirm::PubAck {
                    tally: pubacks.clone(),
                },
                None,
            )
            .await?,
        );
    }
    let started = Instant::now();
    let progress = progress(what, received.clone(), opts.events);
    let sent = send_all(&pubs, opts).await;
    let done = received.wait_for(sent, SETTLE).await;
    progress.abort();
    let seconds = received.last_since(started);
    for p in pubs {
        p.close().await;
    }
    sub.close().await;
    Ok(Throughput {
        what: what.into(),
        events: sent,
        confirmed: done,
        seconds,
        not_committed: 0,
        events_per_commit: None,
        backend_caught_up_s: None,
    })
}

/// Sends `opts.events` over the publishers, or what fits in
/// `opts.max_seconds`; returns how many were published.
async fn send_all(pubs: &[Publisher], opts: &BenchOptions) -> u64 {
    let stop = CancellationToken::new();
    let timer = {
        let stop = stop.clone();
        let limit = Duration::from_secs(opts.max_seconds.max(1));
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            stop.cancel();
        })
    };
    let counts = split(opts.events, pubs.len());
    let sent = futures::future::join_all(
        pubs.iter()
            .zip(counts)
            .map(|(p, n)| p.send_run(1, n, EventKind::Motion, None, &stop)),
    )
    .await;
    timer.abort();
    sent.iter().sum()
}

fn split(total: u64, parts: usize) -> Vec<u64> {
    let parts = parts as u64;
    (0..parts)
        .map(|i| total / parts + u64::from(i < total % parts))
        .collect()
}

fn progress(what: &str, tally: Arc<Tally>, target: u64) -> JoinHandle<()> {
    let what = what.to_string();
    tokio::spawn(async move {
        let started = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let n = tally.count.load(Ordering::Relaxed);
            note(format!(
                "  {what}: {n}/{target} after {:.0} s",
                started.elapsed().as_secs_f64()
            ));
        }
    })
}

// ---------------------------------------------------------------------------
// Latency

type Arrivals = Arc<Mutex<HashMap<u64, Instant>>>;

async fn trygg_latency(
    gw: &trygg_gateway::Ready,
    backend: &trygg_bridge::Ready,
    opts: &BenchOptions,
) -> anyhow::Result<(Latency, Latency)> {
    let seen: Arrivals = Arc::default();
    let sse = AlarmStream::connect(backend.api, ALARM_DEVICE, seen.clone()).await?;
    let bg_tally = Arc::new(Tally::default());
    let not_committed = Arc::new(AtomicU64::new(0));
    let mut bg = Vec::new();
    for i in 0..BG_PUBLISHERS {
        bg.push(
            Publisher::connect(
                &gw.device_broker,
                &format!("bench-bg-{i}"),
                opts.window,
                Confirm::Receipt {
                    tally: bg_tally.clone(),
                    not_committed: not_committed.clone(),
                },
                None,
            )
            .await?,
        );
    }
    let receipts: Arrivals = Arc::default();
    let button = Publisher::connect(
        &gw.device_broker,
        ALARM_DEVICE,
        opts.window,
        Confirm::Receipt {
            tally: Arc::new(Tally::default()),
            not_committed: not_committed.clone(),
        },
        Some(receipts.clone()),
    )
    .await?;
    let sent = press_under_load(&bg, &button, opts, |n| {
        let got = seen.lock().map(|m| m.len()).unwrap_or(0);
        got >= n
    })
    .await;
    let (sent_at, bg_rate) = sent;
    sse.close();
    for p in bg {
        p.close().await;
    }
    button.close().await;
    if not_committed.load(Ordering::Relaxed) > 0 {
        note("some latency-run events were not `committed`");
    }
    Ok((
        latency(
            "trygg: `committed` receipt at the device",
            &sent_at,
            &receipts,
            bg_rate,
        ),
        latency(
            "trygg: `new` alarm on the backend API (SSE)",
            &sent_at,
            &seen,
            bg_rate,
        ),
    ))
}

async fn bridge_latency(a: &MqttUrl, b: &MqttUrl, opts: &BenchOptions) -> anyhow::Result<Latency> {
    let seen: Arrivals = Arc::default();
    let alarm_topic = topic::device_topic(ALARM_DEVICE, "evt").to_string();
    let probe_topic = topic::device_topic("bench-probe", "evt").to_string();
    let probed = Arc::new(AtomicU64::new(0));
    let sub = {
        let seen = seen.clone();
        let probed = probed.clone();
        let probe_topic = probe_topic.clone();
        Subscriber::connect(b, topic::EVENTS_FILTER, move |t, payload| {
            if t == alarm_topic {
                if let Ok(e) = DeviceEvent::decode(payload) {
                    if let Ok(mut m) = seen.lock() {
                        m.entry(e.seq).or_insert_with(Instant::now);
                    }
                }
            } else if t == probe_topic {
                probed.fetch_add(1, Ordering::Relaxed);
            }
        })
        .await?
    };
    // The bridge connects on its own time: wait until a probe crosses it.
    let probe = Publisher::connect(
        a,
        "bench-probe",
        10,
        Confirm::PubAck {
            tally: Arc::new(Tally::default()),
        },
        None,
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seq = 1;
    while probed.load(Ordering::Relaxed) == 0 {
        if Instant::now() > deadline {
            bail!("the Mosquitto bridge did not pass a message within 20 s");
        }
        probe
            .send_run(seq, 1, EventKind::Motion, None, &CancellationToken::new())
            .await;
        seq += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    probe.close().await;

    let bg_tally = Arc::new(Tally::default());
    let mut bg = Vec::new();
    for i in 0..BG_PUBLISHERS {
        bg.push(
            Publisher::connect(
                a,
                &format!("bench-bg-{i}"),
                opts.window,
                Confirm::PubAck {
                    tally: bg_tally.clone(),
                },
                None,
            )
            .await?,
        );
    }
    let button = Publisher::connect(
        a,
        ALARM_DEVICE,
        opts.window,
        Confirm::PubAck {
            tally: Arc::new(Tally::default()),
        },
        None,
    )
    .await?;
    let (sent_at, bg_rate) = press_under_load(&bg, &button, opts, |n| {
        seen.lock().map(|m| m.len()).unwrap_or(0) >= n
    })
    .await;
    for p in bg {
        p.close().await;
    }
    button.close().await;
    sub.close().await;
    Ok(latency(
        "mosquitto bridge: subscriber on B has it",
        &sent_at,
        &seen,
        bg_rate,
    ))
}

/// Runs the background load, presses the button `opts.alarms` times, waits
/// for `all_seen(n)` (or `SETTLE`), stops the load. Returns when each
/// press was published and the background rate achieved.
async fn press_under_load(
    bg: &[Publisher],
    button: &Publisher,
    opts: &BenchOptions,
    all_seen: impl Fn(usize) -> bool,
) -> (HashMap<u64, Instant>, f64) {
    let stop = CancellationToken::new();
    let period = Duration::from_secs_f64(bg.len() as f64 / f64::from(opts.background_rate.max(1)));
    let started = Instant::now();
    let load = futures::future::join_all(
        bg.iter()
            .map(|p| p.send_run(1, u64::MAX, EventKind::Motion, Some(period), &stop)),
    );
    let never = CancellationToken::new();
    let presses = async {
        // A second of load first, so the presses meet a running pipeline.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut sent_at = HashMap::new();
        for seq in 1..=opts.alarms as u64 {
            let gap =
                ALARM_GAP_MS.0 + rand::random::<u64>() % (ALARM_GAP_MS.1 - ALARM_GAP_MS.0 + 1);
            tokio::time::sleep(Duration::from_millis(gap)).await;
            sent_at.insert(seq, Instant::now());
            button
                .send_run(seq, 1, EventKind::ButtonPress, None, &never)
                .await;
            if seq % 100 == 0 {
                note(format!("  {seq}/{} presses", opts.alarms));
            }
        }
        let deadline = Instant::now() + SETTLE;
        while !all_seen(opts.alarms) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let elapsed = started.elapsed().as_secs_f64();
        stop.cancel();
        (sent_at, elapsed)
    };
    let (sent, (sent_at, elapsed)) = tokio::join!(load, presses);
    let bg_sent: u64 = sent.iter().sum();
    (sent_at, bg_sent as f64 / elapsed)
}

fn latency(
    what: &str,
    sent_at: &HashMap<u64, Instant>,
    arrivals: &Arrivals,
    bg_rate: f64,
) -> Latency {
    let arrivals = arrivals.lock().map(|m| m.clone()).unwrap_or_default();
    let mut samples: Vec<Duration> = sent_at
        .iter()
        .filter_map(|(seq, t0)| {
            arrivals
                .get(seq)
                .map(|t1| t1.saturating_duration_since(*t0))
        })
        .collect();
    samples.sort();
    Latency {
        what: what.into(),
        sent: sent_at.len(),
        samples,
        background_rate: bg_rate,
    }
}

// ---------------------------------------------------------------------------
// Clients

/// A counter that remembers when it last moved.
#[derive(Default)]
struct Tally {
    count: AtomicU64,
    last: Mutex<Option<Instant>>,
}

impl Tally {
    fn bump(&self) {
        if let Ok(mut l) = self.last.lock() {
            *l = Some(Instant::now());
            self.count.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn wait_for(&self, target: u64, settle: Duration) -> u64 {
        // `settle` is how long we wait with no progress before giving up.
        let mut seen = 0;
        let mut moved = Instant::now();
        loop {
            let n = self.count.load(Ordering::Relaxed);
            if n >= target {
                return n;
            }
            if n != seen {
                seen = n;
                moved = Instant::now();
            } else if moved.elapsed() > settle {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn last_since(&self, t0: Instant) -> f64 {
        self.last
            .lock()
            .ok()
            .and_then(|l| *l)
            .map(|l| l.saturating_duration_since(t0).as_secs_f64())
            .unwrap_or(0.0)
    }
}

/// What frees a slot in a publisher's window.
#[derive(Clone)]
enum Confirm {
    /// The gateway's receipt on `trygg/v1/dev/{id}/ack`.
    Receipt {
        tally: Arc<Tally>,
        not_committed: Arc<AtomicU64>,
    },
    /// The broker's PUBACK.
    PubAck { tally: Arc<Tally> },
}

/// One device connection that publishes QoS 1 events with at most
/// `window` unconfirmed.
struct Publisher {
    client: AsyncClient,
    window: Arc<Semaphore>,
    evt_topic: String,
    net: JoinHandle<()>,
}

fn event_payload(seq: u64, kind: EventKind) -> Vec<u8> {
    let mut buf = [0u8; 128];
    let n = DeviceEvent {
        seq,
        kind,
        ts: None,
        battery: Some(90),
        value: None,
    }
    .encode(&mut buf)
    .unwrap_or(0);
    buf[..n].to_vec()
}

impl Publisher {
    /// Connects (and subscribes to its receipts when confirmed by them);
    /// `receipts` records when each `committed` receipt arrived.
    async fn connect(
        url: &MqttUrl,
        device: &str,
        window: usize,
        confirm: Confirm,
        receipts: Option<Arrivals>,
    ) -> anyhow::Result<Publisher> {
        // As a device connects to the gateway's broker: client id =
        // username = device id, its key as password (a bare broker ignores them).
        let mut opts = MqttOptions::new(device, url.host.clone(), url.port);
        opts.set_credentials(device, crate::keys::device_key(device));
        opts.set_keep_alive(Duration::from_secs(30))
            .set_clean_session(true)
            .set_inflight(u16::try_from(window + 16).unwrap_or(u16::MAX));
        let (client, mut eventloop) = AsyncClient::new(opts, window + 16);
        // As a device sends: at once (the same for every peer measured).
        eventloop.network_options.set_tcp_nodelay(true);
        let sem = Arc::new(Semaphore::new(window));
        let ack_topic = topic::device_topic(device, "ack").to_string();
        let (ready_tx, ready_rx) = oneshot::channel::<()>();
        let net = {
            let client = client.clone();
            let sem = sem.clone();
            tokio::spawn(async move {
                let mut ready_tx = Some(ready_tx);
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => match &confirm {
                            Confirm::Receipt { .. } => {
                                let _ = client.subscribe(ack_topic.clone(), QoS::AtLeastOnce).await;
                            }
                            Confirm::PubAck { .. } => {
                                if let Some(tx) = ready_tx.take() {
                                    let _ = tx.send(());
                                }
                            }
                        },
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            if let Some(tx) = ready_tx.take() {
                                let _ = tx.send(());
                            }
                        }
                        Ok(Event::Incoming(Packet::PubAck(_))) => {
                            if let Confirm::PubAck { tally } = &confirm {
                                tally.bump();
                                sem.add_permits(1);
                            }
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            let Confirm::Receipt {
                                tally,
                                not_committed,
                            } = &confirm
                            else {
                                continue;
                            };
                            let Ok(r) = Receipt::decode(&p.payload) else {
                                continue;
                            };
                            if r.status == ReceiptStatus::Committed {
                                tally.bump();
                                if let Some(m) = &receipts {
                                    if let Ok(mut m) = m.lock() {
                                        m.entry(r.seq).or_insert_with(Instant::now);
                                    }
                                }
                            } else {
                                not_committed.fetch_add(1, Ordering::Relaxed);
                            }
                            sem.add_permits(1);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::debug!(error = %e, "bench publisher connection error");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            })
        };
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .map_err(|_| anyhow::anyhow!("{device}: no connection to {url} within 10 s"))?
            .map_err(|_| anyhow::anyhow!("{device}: connection task ended"))?;
        Ok(Publisher {
            client,
            window: sem,
            evt_topic: topic::device_topic(device, "evt").to_string(),
            net,
        })
    }

    /// Publishes `count` events from `first_seq`, waiting for window room,
    /// one per `period` if given, until `stop`. Returns how many were
    /// published.
    async fn send_run(
        &self,
        first_seq: u64,
        count: u64,
        kind: EventKind,
        period: Option<Duration>,
        stop: &CancellationToken,
    ) -> u64 {
        let mut tick = period.map(|period| {
            let mut i = tokio::time::interval(period);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            i
        });
        let mut sent = 0;
        while sent < count {
            if let Some(tick) = tick.as_mut() {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
            }
            let permit = tokio::select! {
                _ = stop.cancelled() => break,
                p = self.window.acquire() => p,
            };
            let Ok(permit) = permit else {
                break;
            };
            permit.forget();
            let payload = event_payload(first_seq + sent, kind);
            if self
                .client
                .publish(self.evt_topic.clone(), QoS::AtLeastOnce, false, payload)
                .await
                .is_err()
            {
                break;
            }
            sent += 1;
        }
        sent
    }

    async fn close(self) {
        let _ = self.client.disconnect().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.net.abort();
    }
}

/// A QoS 1 subscriber that calls `on_publish(topic, payload)` for each
/// message.
struct Subscriber {
    client: AsyncClient,
    net: JoinHandle<()>,
}

impl Subscriber {
    async fn connect(
        url: &MqttUrl,
        filter: &str,
        on_publish: impl Fn(&str, &[u8]) + Send + 'static,
    ) -> anyhow::Result<Subscriber> {
        let mut opts = MqttOptions::new(
            format!("bench-sub-{}", rand::random::<u32>()),
            url.host.clone(),
            url.port,
        );
        opts.set_keep_alive(Duration::from_secs(30))
            .set_clean_session(true);
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        eventloop.network_options.set_tcp_nodelay(true);
        let (ready_tx, ready_rx) = oneshot::channel::<()>();
        let filter = filter.to_string();
        let net = {
            let client = client.clone();
            tokio::spawn(async move {
                let mut ready_tx = Some(ready_tx);
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            let _ = client.subscribe(filter.clone(), QoS::AtLeastOnce).await;
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            if let Some(tx) = ready_tx.take() {
                                let _ = tx.send(());
                            }
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => on_publish(&p.topic, &p.payload),
                        Ok(_) => {}
                        Err(e) => {
                            tracing::debug!(error = %e, "bench subscriber connection error");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            })
        };
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .map_err(|_| anyhow::anyhow!("subscriber: no connection to {url} within 10 s"))?
            .map_err(|_| anyhow::anyhow!("subscriber: connection task ended"))?;
        Ok(Subscriber { client, net })
    }

    async fn close(self) {
        let _ = self.client.disconnect().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.net.abort();
    }
}

/// The backend's alarm stream, recording when each `new` alarm of one
/// device arrived, by device sequence.
struct AlarmStream {
    task: JoinHandle<()>,
}

impl AlarmStream {
    async fn connect(api: SocketAddr, device: &str, seen: Arrivals) -> anyhow::Result<AlarmStream> {
        let resp = reqwest::Client::new()
            .get(format!("http://{api}/api/v1/stream"))
            .send()
            .await
            .context("the backend's alarm stream")?
            .error_for_status()?;
        let mut stream = resp.bytes_stream();
        // The stream opens with a comment once it is subscribed.
        let mut buf = match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            Ok(Some(Ok(chunk))) => String::from_utf8_lossy(&chunk).into_owned(),
            _ => bail!("the backend's alarm stream said nothing within 10 s"),
        };
        let device = device.to_string();
        let task = tokio::spawn(async move {
            loop {
                while let Some(end) = buf.find("\n\n") {
                    let message: String = buf.drain(..end + 2).collect();
                    for line in message.lines() {
                        let Some(data) = line.strip_prefix("data:") else {
                            continue;
                        };
                        let Ok(v) = serde_json::from_str::<serde_json::Value>(data.trim()) else {
                            continue;
                        };
                        let a = &v["alarm"];
                        if v["change"] == "new" && a["device"] == device.as_str() {
                            if let (Some(seq), Ok(mut m)) = (a["device_seq"].as_u64(), seen.lock())
                            {
                                m.entry(seq).or_insert_with(Instant::now);
                            }
                        }
                    }
                }
                match stream.next().await {
                    Some(Ok(chunk)) => buf.push_str(&String::from_utf8_lossy(&chunk)),
                    _ => break,
                }
            }
        });
        Ok(AlarmStream { task })
    }

    fn close(self) {
        self.task.abort();
    }
}

async fn gateway_status(
    http: &reqwest::Client,
    api: SocketAddr,
) -> anyhow::Result<serde_json::Value> {
    Ok(http
        .get(format!("http://{api}/api/v1/status"))
        .send()
        .await?
        .json()
        .await?)
}

/// The gateway's metrics, summed over labels.
async fn gateway_metrics(
    http: &reqwest::Client,
    api: SocketAddr,
) -> anyhow::Result<HashMap<String, f64>> {
    let text = http
        .get(format!("http://{api}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let out = ["journal_commits_total", "journal_events_committed_total"]
        .into_iter()
        .map(|name| {
            (
                name.to_string(),
                trygg_uplink::metrics::read(&text, name, ""),
            )
        })
        .collect();
    Ok(out)
}

// ---------------------------------------------------------------------------
// Mosquitto

/// Finds the Mosquitto executable and its version line.
fn find_mosquitto(given: Option<&Path>) -> Result<(PathBuf, String), String> {
    let exe = match given {
        Some(p) => p.to_path_buf(),
        None => [
            "/usr/sbin/mosquitto",
            "/usr/bin/mosquitto",
            "/usr/local/sbin/mosquitto",
            "/usr/local/bin/mosquitto",
            "/opt/homebrew/sbin/mosquitto",
        ]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or("mosquitto is not installed; install it with `apt-get install mosquitto` (Debian, Ubuntu) or `brew install mosquitto`, or pass --mosquitto PATH")?,
    };
    let out = std::process::Command::new(&exe)
        .arg("-h")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let version = text
        .lines()
        .next()
        .unwrap_or("mosquitto (unknown version)")
        .trim()
        .to_string();
    Ok((exe, version))
}

/// A Mosquitto on a free loopback port, in memory, killed when dropped.
/// With `bridge_to`, it bridges every topic out to that broker, QoS 1.
struct Mosquitto {
    child: std::process::Child,
    url: MqttUrl,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    fn start(exe: &Path, bridge_to: Option<&MqttUrl>) -> anyhow::Result<Mosquitto> {
        let dir = tempfile::tempdir()?;
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        // The same in-flight allowance the gateway uses towards its broker,
        // and no limit on queued messages: with the default (1000) a slow
        // subscriber loses QoS 1 messages, which is no way to win a race.
        let mut conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_inflight_messages 1000\nmax_queued_messages 0\n"
        );
        if let Some(b) = bridge_to {
            conf.push_str(&format!(
                "connection bench-bridge\naddress {}:{}\ntopic # out 1\ncleansession true\nnotifications false\nbridge_protocol_version mqttv311\n",
                b.host, b.port
            ));
        }
        let path = dir.path().join("mosquitto.conf");
        std::fs::write(&path, conf)?;
        let child = std::process::Command::new(exe)
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", exe.display()))?;
        let mut m = Mosquitto {
            child,
            url: MqttUrl {
                host: "127.0.0.1".into(),
                port,
                tls: false,
            },
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            if let Ok(Some(status)) = m.child.try_wait() {
                bail!("mosquitto exited at start ({status})");
            }
            if Instant::now() > deadline {
                let _ = m.child.kill();
                bail!("mosquitto did not listen on port {port} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        m.url.port = port;
        Ok(m)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// The machine

/// Today's date, UTC, as YYYY-MM-DD.
fn utc_date() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Howard Hinnant's civil_from_days.
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The file system holding `path` (type and device), from /proc/mounts.
fn filesystem_of(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else {
        return "an unknown file system".into();
    };
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (dev, point, fs) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(point)
                .then(|| (point.len(), format!("{fs} ({dev})")))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, s)| s)
        .unwrap_or_else(|| "an unknown file system".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lat(ms: &[u64]) -> Latency {
        Latency {
            what: String::new(),
            sent: ms.len(),
            samples: ms.iter().map(|m| Duration::from_millis(*m)).collect(),
            background_rate: 0.0,
        }
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let l = lat(&(1..=100).collect::<Vec<_>>());
        assert_eq!(l.ms(50.0), Some(50.0));
        assert_eq!(l.ms(99.0), Some(99.0));
        assert_eq!(l.ms(100.0), Some(100.0));
        assert_eq!(lat(&[7]).ms(99.0), Some(7.0));
        assert_eq!(lat(&[]).ms(50.0), None);
    }

    #[test]
    fn split_spreads_the_remainder() {
        assert_eq!(split(10, 4), vec![3, 3, 2, 2]);
        assert_eq!(split(8, 8).iter().sum::<u64>(), 8);
    }

    #[test]
    fn utc_date_is_a_date() {
        let d = utc_date();
        assert_eq!(d.len(), 10);
        assert!(d.starts_with("20"));
    }
}
