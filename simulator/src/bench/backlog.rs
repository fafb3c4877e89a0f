//! `trygg-sim bench drain | memory | recovery | outage`: the gateway holding
//! a large backlog after an outage, next to a Mosquitto bridge holding the
//! same backlog, measured in one run.
//!
//! **The outage.** The gateway (a child process, `trygg-sim serve-gateway`)
//! has its uplink pointed at a port where nothing listens yet; the
//! backend's development CA is made beforehand, so the backend can be
//! started on that port later and the gateway trusts it. Device connections
//! publish `events` events over MQTT (QoS 1, each connection keeping up to
//! `window` without a receipt) from many devices: per connection mostly
//! motion sensors (telemetry), some medicine dispensers (`dose_dispensed`,
//! care lane) and a few safety buttons (`button_press`, alarm lane). Of each
//! connection's events 1 in 100 is an alarm and 1 in 20 a care event. An
//! event counts once its device holds the gateway's `committed` receipt
//! (after the journal's fsync). Then one more alarm is published LAST, from
//! a device of its own, after the whole backlog.
//!
//! **The peer.** Mosquitto A with a bridge (`connection`, `topic # out 1`,
//! `cleansession false`, so A queues for the bridge while it is down;
//! `max_queued_messages 0`, unlimited) to Mosquitto B, which is down. The
//! same messages, on the same topics, from the same publishers, each
//! counted at A's PUBACK (A holds them in RAM). A has `persistence true`
//! with `autosave_interval 0`: it writes its database only when it stops,
//! so persistence costs nothing during the run and there is a file to
//! restart from. A subscriber with a persistent session on B (registered
//! before B went down) receives what the bridge forwards.
//!
//! What each mode measures (`outage` does all three on one backlog):
//!
//! - **memory**: the gateway's VmRSS, VmHWM and RssAnon from
//!   /proc/PID/status once the backlog is held, and after a restart; the
//!   journal's size on disk; Mosquitto A's memory holding the same.
//! - **recovery**: SIGKILL the gateway, start it again on the same journal
//!   and time, from the spawn: the journal open (its log line), the device
//!   broker accepting TCP, `/healthz` answering 200, and the ready line.
//!   Once with the journal in the page cache, once with the file's pages
//!   dropped from it first (`dd iflag=nocache`, what a reboot does), and
//!   once after a clean stop (SIGTERM), which shows what the start costs
//!   without redb's repair. Peer: Mosquitto A stopped with SIGTERM (it
//!   saves its database; SIGKILL would lose the backlog) and started again,
//!   timed to its port accepting, warm and cold.
//! - **drain**: "link restored" is the moment the backend's broker port
//!   (Mosquitto B's port) first accepts a connection. From there: the
//!   uplink connected (the gateway's log line; the bridge's local
//!   `$SYS/broker/connection/+/state` notification), the first alarm at the
//!   backend, the alarm published last, every alarm, and every event (the
//!   gateway's journal empty again, i.e. all committed and receipted by the
//!   backend; every message at B's subscriber). The backend's times are its
//!   own commit times (`raised_ms` and `last_repeat_ms` of its alarms).
//!   The drain rate is the backlog over (connected .. everything).
//!
//! Everything shares the machine's cores; the peer runs after trygg, not
//! at the same time.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeFilter};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use trygg_gateway::config::{Device, DeviceType};
use trygg_protocol::{topic, EventKind, Lane, Receipt, ReceiptStatus};
use trygg_uplink::mqtt_url::MqttUrl;

use super::{
    event_payload, filesystem_of, find_mosquitto, gateway_status, note, progress, split, utc_date,
    Subscriber, Tally, SETTLE,
};
use crate::chaos::services::free_port;

pub const DEFAULT_EVENTS: u64 = 1_000_000;
pub const QUICK_EVENTS: u64 = 20_000;
/// The device that publishes the one alarm after the backlog.
const LAST_DEVICE: &str = "bench-last-button";
const GATEWAY_ID: &str = "bench-outage-gw";
/// The persistent session on Mosquitto B that receives the drain.
const SUB_ID: &str = "bench-drain-subscriber";
/// The gateway's and Mosquitto's memory goal while holding the backlog.
const MEMORY_GOAL_MIB: f64 = 64.0;
const FIRST_ALARM_GOAL_MS: f64 = 1000.0;
const START_GOAL_MS: f64 = 1000.0;
/// How long a drain may go without progress before the bench gives up.
const DRAIN_STALL: Duration = Duration::from_secs(120);
const START_TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------
// Command line

/// The outage benchmarks: a backlog of --events buffered while the
/// backend is unreachable.
#[derive(clap::Subcommand, Clone, Debug)]
pub enum BacklogBench {
    /// Time from link restored to the first alarm at the backend, to the
    /// alarm published last, to every alarm and to an empty journal; the
    /// drain rate. Peer: a Mosquitto bridge draining the same backlog.
    Drain(BacklogArgs),
    /// The gateway's VmRSS / VmHWM (from /proc) holding the backlog, and the
    /// journal's size on disk. Peer: Mosquitto holding the same backlog.
    Memory(BacklogArgs),
    /// SIGKILL the gateway holding the backlog, restart it, time it to
    /// serving (journal open, device broker, /healthz, ready line); warm,
    /// cold (file dropped from the page cache) and after a clean stop.
    /// Peer: Mosquitto restarting from its persistence file.
    Recovery(BacklogArgs),
    /// All three on one backlog: memory, recovery, then the drain (of the
    /// restarted gateway, so its reconnect back-off starts afresh).
    Outage(BacklogArgs),
}

#[derive(clap::Args, Clone, Debug)]
pub struct BacklogArgs {
    /// Events buffered during the outage [default: 1000000, --quick 20000].
    #[arg(long)]
    pub events: Option<u64>,
    /// A CI-sized run: 20 000 events (under a minute).
    #[arg(long)]
    pub quick: bool,
    /// Device connections publishing the backlog.
    #[arg(long, default_value_t = 8)]
    pub publishers: usize,
    /// Unconfirmed events each connection may have at once.
    #[arg(long, default_value_t = 500)]
    pub window: usize,
    /// Devices per connection: mostly motion sensors, 1 in 8 a medicine
    /// dispenser, 1 in 16 a safety button.
    #[arg(long, default_value_t = 32)]
    pub devices: usize,
    /// Put the journals in a temporary directory here (default: the
    /// system's temporary directory). Use the disk you mean to measure.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The Mosquitto executable (default: found in the usual places).
    #[arg(long)]
    pub mosquitto: Option<PathBuf>,
    /// The gateway's `uplink.window`, batches awaiting the backend's
    /// receipt [default: the gateway's own default].
    #[arg(long)]
    pub uplink_window: Option<usize>,
    /// The gateway's `uplink.max_batch_records` [default: the gateway's
    /// own default].
    #[arg(long)]
    pub uplink_batch: Option<usize>,
    /// Where the devices meet the gateway: its embedded broker (rumqttd,
    /// in the gateway's process), or a Mosquitto of its own (the gateway's
    /// `local_broker.mode = "external"`), whose memory is then shown apart.
    #[arg(long, value_enum, default_value_t = DeviceBroker::Embedded)]
    pub device_broker: DeviceBroker,
    /// Measure trygg only.
    #[arg(long)]
    pub no_peer: bool,
    /// Keep the data directory (journals, logs) and print where it is.
    #[arg(long)]
    pub keep: bool,
    /// Print the figures as JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Where the devices meet the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceBroker {
    /// The gateway's embedded broker (rumqttd, in the gateway's process).
    Embedded,
    /// A Mosquitto of its own, beside the gateway.
    Mosquitto,
}

/// What one run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Want {
    pub memory: bool,
    pub recovery: bool,
    pub drain: bool,
}

impl BacklogBench {
    fn split(&self) -> (&'static str, Want, &BacklogArgs) {
        let w = |memory, recovery, drain| Want {
            memory,
            recovery,
            drain,
        };
        match self {
            BacklogBench::Drain(a) => ("drain", w(false, false, true), a),
            BacklogBench::Memory(a) => ("memory", w(true, false, false), a),
            BacklogBench::Recovery(a) => ("recovery", w(false, true, false), a),
            BacklogBench::Outage(a) => ("outage", w(true, true, true), a),
        }
    }
}

/// Runs one of the outage benchmarks and prints its figures.
pub async fn main(cmd: BacklogBench) -> anyhow::Result<()> {
    let (mode, want, args) = cmd.split();
    let events = args.events.unwrap_or(if args.quick {
        QUICK_EVENTS
    } else {
        DEFAULT_EVENTS
    });
    if args.publishers == 0 || args.window == 0 || events < args.publishers as u64 {
        bail!("--publishers and --window must be at least 1, and --events at least --publishers");
    }
    let layout = Layout::new(args.publishers, args.devices);
    let base = match &args.data_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            tempfile::Builder::new()
                .prefix("trygg-bench-outage-")
                .tempdir_in(d)?
        }
        None => tempfile::Builder::new()
            .prefix("trygg-bench-outage-")
            .tempdir()?,
    };
    let dir = base.path().to_path_buf();
    let mosquitto = if args.no_peer {
        Err("skipped (--no-peer)".to_string())
    } else {
        find_mosquitto(args.mosquitto.as_deref())
    };
    let mut report = BacklogReport {
        mode,
        date: utc_date(),
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        data_fs: filesystem_of(&dir),
        load_start: loadavg(),
        load_end: String::new(),
        mosquitto: mosquitto
            .as_ref()
            .map(|(exe, v)| format!("{v} ({})", exe.display()))
            .map_err(|e| e.clone()),
        events,
        connections: args.publishers,
        window: args.window,
        devices: layout.total(),
        mix: layout.mix(events),
        payload_bytes: event_payload(1, EventKind::Motion).len(),
        trygg: Side::default(),
        peer: None,
        problems: Vec::new(),
    };
    note(format!(
        "outage bench ({mode}): {events} events from {} devices over {} connections; {} cores; data in {} ({}); load {}",
        report.devices,
        report.connections,
        report.cores,
        dir.display(),
        report.data_fs,
        report.load_start
    ));
    if report.data_fs.starts_with("tmpfs") {
        report.problems.push(
            "the journals are on tmpfs: fsync and cold starts cost nothing there; use --data-dir on a real disk".into(),
        );
    }
    let ctx = Ctx {
        want,
        device_broker: args.device_broker,
        mosquitto: find_mosquitto(args.mosquitto.as_deref())
            .ok()
            .map(|(exe, _)| exe),
        uplink_window: args.uplink_window,
        uplink_batch: args.uplink_batch,
        events,
        window: args.window,
        layout,
        dir: dir.clone(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?,
    };
    let run = async {
        let mut trygg = Side::default();
        if let Err(e) = trygg_side(&ctx, &mut trygg).await {
            report.problems.push(format!("trygg: {e:#}"));
        }
        report.trygg = trygg;
        match &mosquitto {
            Ok((exe, _)) => {
                let mut peer = Side::default();
                if let Err(e) = mosquitto_side(&ctx, exe, &mut peer).await {
                    report.problems.push(format!("mosquitto: {e:#}"));
                }
                report.peer = Some(peer);
            }
            Err(e) => note(format!("no peer: {e}")),
        }
    };
    tokio::select! {
        _ = run => {}
        _ = tokio::signal::ctrl_c() => report.problems.push("interrupted".into()),
    }
    report.load_end = loadavg();
    report.check_goals();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.json())?);
    } else {
        print!("{}", report.table());
    }
    if args.keep {
        let kept = base.keep();
        eprintln!("bench: data kept in {}", kept.display());
    }
    Ok(())
}

struct Ctx {
    want: Want,
    device_broker: DeviceBroker,
    mosquitto: Option<PathBuf>,
    uplink_window: Option<usize>,
    uplink_batch: Option<usize>,
    events: u64,
    window: usize,
    layout: Layout,
    dir: PathBuf,
    http: reqwest::Client,
}

// ---------------------------------------------------------------------------
// The workload

/// Which devices send what: per connection, mostly motion sensors, some
/// medicine dispensers, a few safety buttons.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub conns: usize,
    /// Devices per connection, by lane: alarm (buttons), care
    /// (dispensers), telemetry (motion sensors).
    pub per_lane: [usize; 3],
}

impl Layout {
    pub fn new(conns: usize, per_conn: usize) -> Layout {
        let per_conn = per_conn.max(3);
        let buttons = (per_conn / 16).max(1);
        let dispensers = (per_conn / 8).max(1);
        Layout {
            conns,
            per_lane: [buttons, dispensers, per_conn - buttons - dispensers],
        }
    }

    pub fn total(&self) -> usize {
        self.conns * self.per_lane.iter().sum::<usize>() + 1
    }

    pub fn device(&self, conn: usize, lane: Lane, i: usize) -> String {
        let what = match lane {
            Lane::Alarm => "button",
            Lane::Care => "dispenser",
            Lane::Telemetry => "motion",
        };
        format!("bench-o{conn}-{what}-{i}")
    }

    /// The devices of one connection, lane by lane.
    fn conn_devices(&self, conn: usize) -> Vec<(Lane, String)> {
        Lane::ALL
            .iter()
            .flat_map(|&lane| {
                (0..self.per_lane[lane.index()]).map(move |i| (lane, self.device(conn, lane, i)))
            })
            .collect()
    }

    /// The gateway's device register: every bench device, unsupervised
    /// (a silence alarm is not what is measured).
    fn register(&self) -> Vec<Device> {
        let device = |id: String, device_type| Device {
            id,
            device_type,
            room: Some("bench".into()),
            resident: Some("r-bench".into()),
            supervision_s: Some(0),
            key_hash: None,
            heartbeat_s: None,
            pre_alarm_s: None,
        };
        let mut out: Vec<Device> = (0..self.conns)
            .flat_map(|c| self.conn_devices(c))
            .map(|(lane, id)| {
                let t = match lane {
                    Lane::Alarm => DeviceType::SafetyButton,
                    Lane::Care => DeviceType::MedicineDispenser,
                    Lane::Telemetry => DeviceType::MotionSensor,
                };
                device(id, t)
            })
            .collect();
        out.push(device(LAST_DEVICE.into(), DeviceType::SafetyButton));
        out
    }

    /// Events per lane when `total` are spread over the connections (the
    /// alarm published last not included).
    pub fn mix(&self, total: u64) -> [u64; 3] {
        let mut out = [0u64; 3];
        for n in split(total, self.conns) {
            let m = lane_counts(n);
            for i in 0..3 {
                out[i] += m[i];
            }
        }
        out
    }
}

/// The lane of a connection's `k`-th event (from 0): 1 in 100 an alarm,
/// 1 in 20 a care event, the rest telemetry.
pub fn lane_of(k: u64) -> Lane {
    if k % 100 == 99 {
        Lane::Alarm
    } else if k % 20 == 9 {
        Lane::Care
    } else {
        Lane::Telemetry
    }
}

/// How many of the first `n` events [`lane_of`] puts in each lane.
pub fn lane_counts(n: u64) -> [u64; 3] {
    let alarm = n / 100;
    let care = (n + 10) / 20;
    [alarm, care, n - alarm - care]
}

fn kind_of(lane: Lane) -> EventKind {
    match lane {
        Lane::Alarm => EventKind::ButtonPress,
        Lane::Care => EventKind::DoseDispensed,
        Lane::Telemetry => EventKind::Motion,
    }
}

/// Whether a message on `topic` is one of the bench's alarms.
fn is_alarm_topic(t: &str) -> bool {
    t.contains("-button-") || t.contains(LAST_DEVICE)
}

// ---------------------------------------------------------------------------
// Figures

/// Memory of a process, from /proc/PID/status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mem {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub anon_kib: u64,
}

impl Mem {
    fn mib(kib: u64) -> f64 {
        kib as f64 / 1024.0
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "vm_rss_mib": Mem::mib(self.rss_kib),
            "vm_hwm_mib": Mem::mib(self.hwm_kib),
            "rss_anon_mib": Mem::mib(self.anon_kib),
        })
    }
}

/// Reads VmRSS, VmHWM and RssAnon out of /proc/PID/status text.
pub fn parse_status(text: &str) -> Option<Mem> {
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    Some(Mem {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
        anon_kib: field("RssAnon:").unwrap_or(0),
    })
}

fn mem_of(pid: u32) -> Option<Mem> {
    parse_status(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// Filling the backlog while the uplink is down.
#[derive(Clone, Debug, Default)]
pub struct Fill {
    pub sent: u64,
    pub confirmed: u64,
    pub not_committed: u64,
    pub seconds: f64,
}

impl Fill {
    fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.confirmed as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// What the backlog takes on disk.
#[derive(Clone, Debug, Default)]
pub struct Stored {
    /// Trygg: records per lane in the journal.
    pub records: Option<[u64; 3]>,
    /// Trygg: the bytes of the records (what journal.max_mib counts).
    pub record_bytes: Option<u64>,
    pub file: String,
    pub file_bytes: u64,
    pub allocated_bytes: u64,
    /// Trygg: the journal's size limit in force.
    pub limit_mib: Option<u64>,
    pub dropped: Option<u64>,
}

/// One start of a service, times from the spawn.
#[derive(Clone, Debug, Default)]
pub struct Start {
    pub label: String,
    /// SIGTERM until the old process was gone (Mosquitto saves then).
    pub stop_ms: Option<f64>,
    /// The gateway's "journal open" log line.
    pub journal_open_ms: Option<f64>,
    /// redb said it was repairing the journal.
    pub repaired: bool,
    /// The device broker (the gateway's embedded one; Mosquitto's port)
    /// accepting TCP.
    pub accepting_ms: Option<f64>,
    pub healthz_ms: Option<f64>,
    pub ready_ms: Option<f64>,
    /// Bytes of the file in the page cache just before the start
    /// (`fincore`), when known.
    pub cached_bytes: Option<u64>,
}

impl Start {
    /// Serving: every sign of it there is.
    pub fn serving_ms(&self) -> Option<f64> {
        [self.accepting_ms, self.healthz_ms, self.ready_ms]
            .into_iter()
            .flatten()
            .reduce(f64::max)
    }
}

/// The drain after the link returns; times in ms from "link restored".
#[derive(Clone, Debug, Default)]
pub struct Drain {
    pub records: u64,
    /// The backend's process start until its broker port accepted.
    pub backend_start_ms: f64,
    pub connected_ms: Option<f64>,
    pub first_message_ms: Option<f64>,
    pub first_alarm_ms: Option<f64>,
    pub last_published_alarm_ms: Option<f64>,
    pub all_alarms_ms: Option<f64>,
    pub alarms_seen: u64,
    pub alarms_expected: u64,
    pub everything_ms: Option<f64>,
    pub messages_seen: u64,
    /// The highest VmRSS sampled (every 100 ms) during the drain, and the
    /// process's VmHWM at its end.
    pub peak_rss_kib: Option<u64>,
    pub end_mem: Option<Mem>,
}

impl Drain {
    /// Events/s from the uplink's connection to the last event.
    pub fn rate(&self) -> Option<f64> {
        let (c, e) = (self.connected_ms?, self.everything_ms?);
        (e > c).then(|| self.records as f64 / ((e - c) / 1000.0))
    }

    /// Events/s from "link restored" to the last event.
    pub fn rate_from_restore(&self) -> Option<f64> {
        let e = self.everything_ms?;
        (e > 0.0).then(|| self.records as f64 / (e / 1000.0))
    }
}

/// One side of the comparison.
#[derive(Clone, Debug, Default)]
pub struct Side {
    /// Trygg with --device-broker mosquitto: that Mosquitto's memory after
    /// the fill.
    pub device_broker_mem: Option<Mem>,
    /// Trygg: the gateway's uplink window and batch size.
    pub uplink: Option<(usize, usize)>,
    pub fill: Option<Fill>,
    pub stored: Option<Stored>,
    pub mem_filled: Option<Mem>,
    /// The first start (empty), then the restarts with the backlog.
    pub starts: Vec<Start>,
    pub mem_restarted: Option<Mem>,
    pub drain: Option<Drain>,
}

pub struct BacklogReport {
    pub mode: &'static str,
    pub date: String,
    pub cores: usize,
    pub data_fs: String,
    pub load_start: String,
    pub load_end: String,
    pub mosquitto: Result<String, String>,
    pub events: u64,
    pub connections: usize,
    pub window: usize,
    pub devices: usize,
    pub mix: [u64; 3],
    pub payload_bytes: usize,
    pub trygg: Side,
    pub peer: Option<Side>,
    pub problems: Vec<String>,
}

fn f1(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.0}")).unwrap_or_else(|| "-".into())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

impl BacklogReport {
    fn goals(&self) -> Vec<(String, Option<bool>)> {
        let mut g = Vec::new();
        let t = &self.trygg;
        if let Some(m) = t.mem_filled {
            let worst = [Some(m), t.mem_restarted]
                .into_iter()
                .flatten()
                .map(|m| m.rss_kib.max(m.hwm_kib))
                .max()
                .unwrap_or(0);
            g.push((
                format!(
                    "gateway memory holding the backlog < {MEMORY_GOAL_MIB:.0} MiB (highest VmRSS/VmHWM: {:.1} MiB)",
                    Mem::mib(worst)
                ),
                Some(Mem::mib(worst) < MEMORY_GOAL_MIB),
            ));
        }
        for s in t.starts.iter().skip(1) {
            g.push((
                format!(
                    "gateway start to serving < {START_GOAL_MS:.0} ms, {}: {} ms",
                    s.label,
                    f1(s.serving_ms())
                ),
                s.serving_ms().map(|v| v < START_GOAL_MS),
            ));
        }
        if let Some(d) = &t.drain {
            g.push((
                format!(
                    "first alarm at the backend < {FIRST_ALARM_GOAL_MS:.0} ms after the link returns: {} ms",
                    f1(d.first_alarm_ms)
                ),
                d.first_alarm_ms.map(|v| v < FIRST_ALARM_GOAL_MS),
            ));
            if let (Some(c), Some(a)) = (d.connected_ms, d.first_alarm_ms) {
                g.push((
                    format!("  (of which after the uplink connected: {:.0} ms)", a - c),
                    None,
                ));
            }
            let peer_rate = self
                .peer
                .as_ref()
                .and_then(|p| p.drain.as_ref())
                .and_then(|d| d.rate());
            g.push((
                format!(
                    "drain rate >= the Mosquitto bridge's: {} vs {} events/s",
                    f1(d.rate()),
                    f1(peer_rate)
                ),
                d.rate().zip(peer_rate).map(|(a, b)| a >= b),
            ));
        }
        g
    }

    fn check_goals(&mut self) {
        let t = &self.trygg;
        if let Some(f) = &t.fill {
            if f.confirmed < f.sent || f.not_committed > 0 {
                self.problems.push(format!(
                    "trygg fill: {} of {} confirmed, {} not `committed`",
                    f.confirmed, f.sent, f.not_committed
                ));
            }
        }
        if let Some(d) = t.stored.as_ref().and_then(|s| s.dropped) {
            if d > 0 {
                self.problems.push(format!(
                    "the gateway dropped {d} telemetry events at its journal limit: raise journal.max_mib"
                ));
            }
        }
        let drains = [("trygg", t.drain.as_ref())].into_iter().chain([(
            "mosquitto",
            self.peer.as_ref().and_then(|p| p.drain.as_ref()),
        )]);
        let mut more = Vec::new();
        for (who, d) in drains {
            if let Some(d) = d {
                if d.alarms_seen != d.alarms_expected {
                    more.push(format!(
                        "{who} drain: {} alarms seen at the far end, {} expected",
                        d.alarms_seen, d.alarms_expected
                    ));
                }
                if d.everything_ms.is_none() {
                    more.push(format!("{who} drain did not finish"));
                }
                if d.messages_seen < d.records {
                    more.push(format!(
                        "{who} drain: {} of {} at the far end",
                        d.messages_seen, d.records
                    ));
                }
            }
        }
        self.problems.extend(more);
    }

    /// The table printed at the end.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "trygg bench {}, {}: {} cores, data on {}, load average {} at the start and {} at the end; mosquitto: {}",
            self.mode,
            self.date,
            self.cores,
            self.data_fs,
            self.load_start,
            self.load_end,
            match &self.mosquitto {
                Ok(v) => v.clone(),
                Err(e) => format!("not measured ({e})"),
            }
        );
        let _ = writeln!(
            s,
            "Backlog: {} events of {} bytes ({} alarms, {} care, {} telemetry) from {} devices over {} connections (window {}), then 1 alarm published last",
            self.events,
            self.payload_bytes,
            self.mix[0],
            self.mix[1],
            self.mix[2],
            self.devices,
            self.connections,
            self.window
        );
        let sides: Vec<(&str, &Side)> = [("trygg", &self.trygg)]
            .into_iter()
            .chain(self.peer.as_ref().map(|p| ("mosquitto A", p)))
            .collect();

        let _ = writeln!(s);
        let _ = writeln!(s, "Filling the backlog while the backend is unreachable");
        let _ = writeln!(
            s,
            "  {:<58} {:>10} {:>9}",
            "confirmed when", "events/s", "seconds"
        );
        for (who, side) in &sides {
            if let Some(f) = &side.fill {
                let what = if who.starts_with("trygg") {
                    "trygg: `committed` receipt at the device (fsynced)"
                } else {
                    "mosquitto A: PUBACK (in RAM, queued for the bridge)"
                };
                let _ = writeln!(s, "  {:<58} {:>10.0} {:>9.2}", what, f.rate(), f.seconds);
            }
        }
        for (who, side) in &sides {
            if let Some(st) = &side.stored {
                match (st.records, st.record_bytes) {
                    (Some(r), Some(b)) => {
                        let _ = writeln!(
                            s,
                            "  {who}: {} records (alarm {}, care {}, telemetry {}), {:.1} MiB of records (limit {} MiB, {} dropped); {} {:.1} MiB, {:.1} MiB allocated",
                            r.iter().sum::<u64>(),
                            r[0],
                            r[1],
                            r[2],
                            mib(b),
                            st.limit_mib.map(|l| l.to_string()).unwrap_or_default(),
                            st.dropped.unwrap_or(0),
                            st.file,
                            mib(st.file_bytes),
                            mib(st.allocated_bytes)
                        );
                    }
                    _ => {
                        let _ = writeln!(
                            s,
                            "  {who}: {} {:.1} MiB, {:.1} MiB allocated (written when it stopped)",
                            st.file,
                            mib(st.file_bytes),
                            mib(st.allocated_bytes)
                        );
                    }
                }
            }
        }

        if sides.iter().any(|(_, x)| x.mem_filled.is_some()) {
            let _ = writeln!(s);
            let _ = writeln!(s, "Memory holding the backlog (/proc/PID/status)");
            let _ = writeln!(
                s,
                "  {:<58} {:>10} {:>10} {:>11}",
                "", "VmRSS MiB", "VmHWM MiB", "RssAnon MiB"
            );
            for (who, side) in &sides {
                for (when, m) in [
                    ("after the fill", side.mem_filled),
                    ("after a restart", side.mem_restarted),
                ] {
                    if let Some(m) = m {
                        let _ = writeln!(
                            s,
                            "  {:<58} {:>10.1} {:>10.1} {:>11.1}",
                            format!("{who}, {when}"),
                            Mem::mib(m.rss_kib),
                            Mem::mib(m.hwm_kib),
                            Mem::mib(m.anon_kib)
                        );
                    }
                }
                if let Some(m) = side.device_broker_mem {
                    let _ = writeln!(
                        s,
                        "  {:<58} {:>10.1} {:>10.1} {:>11.1}",
                        format!("{who}'s device broker (Mosquitto), after the fill"),
                        Mem::mib(m.rss_kib),
                        Mem::mib(m.hwm_kib),
                        Mem::mib(m.anon_kib)
                    );
                }
                if let Some(d) = &side.drain {
                    if let (Some(p), Some(m)) = (d.peak_rss_kib, d.end_mem) {
                        let _ = writeln!(
                            s,
                            "  {:<58} {:>10.1} {:>10.1} {:>11.1}",
                            format!("{who}, draining (peak VmRSS sampled)"),
                            Mem::mib(p),
                            Mem::mib(m.hwm_kib),
                            Mem::mib(m.anon_kib)
                        );
                    }
                }
            }
        }

        if sides.iter().any(|(_, x)| x.starts.len() > 1) {
            let _ = writeln!(s);
            let _ = writeln!(
                s,
                "Start to serving, ms from the spawn (trygg killed with SIGKILL; Mosquitto stopped with SIGTERM, which saves its database)"
            );
            let _ = writeln!(
                s,
                "  {:<46} {:>8} {:>9} {:>9} {:>8} {:>8} {:>9} {:>10}",
                "", "stop", "journal", "accepts", "healthz", "ready", "serving", "cached MiB"
            );
            for (who, side) in &sides {
                for st in &side.starts {
                    let _ = writeln!(
                        s,
                        "  {:<46} {:>8} {:>9} {:>9} {:>8} {:>8} {:>9} {:>10}",
                        format!("{who}, {}", st.label),
                        f1(st.stop_ms),
                        f1(st.journal_open_ms),
                        f1(st.accepting_ms),
                        f1(st.healthz_ms),
                        f1(st.ready_ms),
                        f1(st.serving_ms()),
                        st.cached_bytes
                            .map(|b| format!("{:.1}", mib(b)))
                            .unwrap_or_else(|| "-".into())
                    );
                }
            }
        }

        if sides.iter().any(|(_, x)| x.drain.is_some()) {
            let _ = writeln!(s);
            let _ = writeln!(
                s,
                "Drain, ms from the link restored (the backend's / Mosquitto B's port accepting){}",
                self.trygg
                    .uplink
                    .map(|(w, b)| format!(
                        "; gateway uplink window {w} batches of up to {b} records"
                    ))
                    .unwrap_or_default()
            );
            let _ = writeln!(
                s,
                "  {:<22} {:>8} {:>9} {:>9} {:>9} {:>11} {:>10} {:>10} {:>10} {:>10}",
                "",
                "backend",
                "connected",
                "1st msg",
                "1st alarm",
                "last-publ.",
                "all alarms",
                "all events",
                "ev/s conn.",
                "ev/s rest."
            );
            for (who, side) in &sides {
                if let Some(d) = &side.drain {
                    let _ = writeln!(
                        s,
                        "  {:<22} {:>8} {:>9} {:>9} {:>9} {:>11} {:>10} {:>10} {:>10} {:>10}",
                        who,
                        f1(Some(d.backend_start_ms)),
                        f1(d.connected_ms),
                        f1(d.first_message_ms),
                        f1(d.first_alarm_ms),
                        f1(d.last_published_alarm_ms),
                        f1(d.all_alarms_ms),
                        f1(d.everything_ms),
                        f1(d.rate()),
                        f1(d.rate_from_restore())
                    );
                }
            }
            let _ = writeln!(
                s,
                "  (backend: its start until its port accepted, not counted in the rest; ev/s conn.: backlog / (connected .. all events); ev/s rest.: from the link restored)"
            );
        }

        let goals = self.goals();
        if !goals.is_empty() {
            let _ = writeln!(s);
            let _ = writeln!(s, "Goals");
            for (what, met) in goals {
                let verdict = match met {
                    Some(true) => "met",
                    Some(false) => "NOT met",
                    None => "",
                };
                let _ = writeln!(s, "  {what} {verdict}");
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
        let side = |x: &Side| {
            json!({
                "uplink": x.uplink.map(|(w, b)| json!({"window": w, "max_batch_records": b})),
                "fill": x.fill.as_ref().map(|f| json!({
                    "sent": f.sent, "confirmed": f.confirmed, "not_committed": f.not_committed,
                    "seconds": f.seconds, "per_second": f.rate(),
                })),
                "stored": x.stored.as_ref().map(|s| json!({
                    "records": s.records, "record_bytes": s.record_bytes, "file": s.file,
                    "file_bytes": s.file_bytes, "allocated_bytes": s.allocated_bytes,
                    "limit_mib": s.limit_mib, "dropped": s.dropped,
                })),
                "memory_after_fill": x.mem_filled.map(|m| m.json()),
                "device_broker_memory_after_fill": x.device_broker_mem.map(|m| m.json()),
                "memory_after_restart": x.mem_restarted.map(|m| m.json()),
                "starts": x.starts.iter().map(|s| json!({
                    "label": s.label, "stop_ms": s.stop_ms, "journal_open_ms": s.journal_open_ms,
                    "repaired": s.repaired, "accepting_ms": s.accepting_ms, "healthz_ms": s.healthz_ms,
                    "ready_ms": s.ready_ms, "serving_ms": s.serving_ms(), "cached_bytes": s.cached_bytes,
                })).collect::<Vec<_>>(),
                "drain": x.drain.as_ref().map(|d| json!({
                    "records": d.records, "backend_start_ms": d.backend_start_ms,
                    "connected_ms": d.connected_ms, "first_message_ms": d.first_message_ms,
                    "first_alarm_ms": d.first_alarm_ms,
                    "last_published_alarm_ms": d.last_published_alarm_ms,
                    "all_alarms_ms": d.all_alarms_ms, "alarms_seen": d.alarms_seen,
                    "alarms_expected": d.alarms_expected, "everything_ms": d.everything_ms,
                    "messages_seen": d.messages_seen,
                    "per_second_from_connected": d.rate(),
                    "per_second_from_restore": d.rate_from_restore(),
                    "peak_rss_mib": d.peak_rss_kib.map(Mem::mib),
                    "memory_at_end": d.end_mem.map(|m| m.json()),
                })),
            })
        };
        json!({
            "mode": self.mode,
            "date": self.date,
            "cores": self.cores,
            "data_fs": self.data_fs,
            "load_start": self.load_start,
            "load_end": self.load_end,
            "mosquitto": match &self.mosquitto { Ok(v) => json!(v), Err(_) => json!(null) },
            "events": self.events,
            "connections": self.connections,
            "window": self.window,
            "devices": self.devices,
            "mix": {"alarm": self.mix[0], "care": self.mix[1], "telemetry": self.mix[2]},
            "payload_bytes": self.payload_bytes,
            "trygg": side(&self.trygg),
            "mosquitto_bridge": self.peer.as_ref().map(side),
            "goals": self.goals().into_iter().map(|(what, met)| json!({"goal": what, "met": met})).collect::<Vec<_>>(),
            "problems": self.problems,
        })
    }
}

// ---------------------------------------------------------------------------
// Trygg

async fn trygg_side(ctx: &Ctx, out: &mut Side) -> anyhow::Result<()> {
    let base = ctx.dir.join("trygg");
    let (gw_dir, bridge_dir) = (base.join("gateway"), base.join("backend"));
    std::fs::create_dir_all(&gw_dir)?;
    std::fs::create_dir_all(&bridge_dir)?;
    let pki = trygg_uplink::tls::DevPki::ensure(&bridge_dir.join("tls"))?;
    let (dev_port, api_port, backend_port, backend_api) =
        (free_port()?, free_port()?, free_port()?, free_port()?);
    let local = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));

    let mut gw = trygg_gateway::Config::default_config();
    gw.gateway_id = GATEWAY_ID.into();
    gw.data_dir = gw_dir.clone();
    gw.local_broker.listen = local(dev_port);
    // One bench connection carries many devices' events (thousands of
    // devices): what is measured is the journal and the uplink, so the
    // embedded broker checks no device keys here (loopback only; the
    // gateway warns). The device-auth cost is in `trygg-sim bench`.
    gw.local_broker.device_auth = false;
    let external = ctx.device_broker == DeviceBroker::Mosquitto;
    if external {
        gw.local_broker.mode = trygg_gateway::config::BrokerMode::External;
        gw.local_broker.url = format!("mqtt://127.0.0.1:{dev_port}");
    }
    gw.local_api.listen = local(api_port);
    gw.uplink.url = format!("mqtts://127.0.0.1:{backend_port}");
    gw.uplink.ca_file = pki.ca_cert.clone();
    if let Some(w) = ctx.uplink_window {
        gw.uplink.window = w;
    }
    if let Some(b) = ctx.uplink_batch {
        gw.uplink.max_batch_records = b;
    }
    out.uplink = Some((gw.uplink.window, gw.uplink.max_batch_records));
    // The default limit holds a million events (about 200 bytes of record
    // each); a bigger backlog gets a bigger limit, so that nothing is
    // dropped and the figures are about holding everything.
    let need_mib = ctx.events.saturating_mul(400) / (1024 * 1024) + gw.journal.alarm_reserve_mib;
    gw.journal.max_mib = gw.journal.max_mib.max(need_mib);
    gw.devices = ctx.layout.register();
    gw.validate()?;
    // Enrolled before the backend first runs: the backlog builds up with
    // the backend away (the backend reuses this store and gateway CA).
    trygg_bridge::enrollment::provision_offline(
        &bridge_dir,
        GATEWAY_ID,
        &trygg_uplink::enroll::IdentityFiles::in_data_dir(&gw.data_dir),
    )
    .map_err(|e| anyhow::anyhow!("provisioning the gateway: {e}"))?;
    let journal_path = gw.journal_path();
    let limit_mib = gw.journal.max_mib;
    let gw_conf = base.join("gateway.toml");
    std::fs::write(&gw_conf, toml::to_string(&gw)?)?;
    let bridge_conf = base.join("backend.toml");
    std::fs::write(
        &bridge_conf,
        format!(
            "data_dir = {:?}\n[broker]\nlisten = \"127.0.0.1:{backend_port}\"\n[api]\nlisten = \"127.0.0.1:{backend_api}\"\n[console]\nlisten = \"127.0.0.1:0\"\n[enrollment]\nlisten = \"127.0.0.1:0\"\n",
            bridge_dir
        ),
    )?;

    let exe = std::env::current_exe().context("finding this executable to run the services")?;
    let mut gateway = ChildProc::new(
        "gateway",
        exe.clone(),
        vec!["serve-gateway".into(), gw_conf.into()],
        base.join("gateway.log"),
        &[
            ("trygg-gateway ready:", "ready"),
            ("journal open", "journal_open"),
            ("repairing journal", "repairing"),
            ("uplink connected", "uplink_connected"),
        ],
    );
    let mut backend = ChildProc::new(
        "backend",
        exe,
        vec!["serve-bridge".into(), bridge_conf.into()],
        base.join("backend.log"),
        &[("trygg-bridge ready:", "ready")],
    );
    let gw_api = local(api_port);
    let device_broker = MqttUrl {
        host: "127.0.0.1".into(),
        port: dev_port,
        tls: false,
    };

    // With an external device broker, it runs all along; the gateway's
    // start is then timed without it.
    let mut device_mosquitto = None;
    if external {
        let exe = ctx
            .mosquitto
            .clone()
            .context("--device-broker mosquitto needs Mosquitto")?;
        let dir = base.join("device-mosquitto");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("m.conf"), mosquitto_conf(dev_port, &dir, None))?;
        let mut m = ChildProc::new(
            "device-mosquitto",
            exe,
            vec!["-c".into(), dir.join("m.conf").into()],
            dir.join("device-mosquitto.log"),
            &[(" running", "ready")],
        );
        m.spawn()?;
        m.wait_mark("ready", START_TIMEOUT).await?;
        device_mosquitto = Some(m);
    }
    let device_probe = (!external).then(|| local(dev_port));
    note("trygg: starting the gateway (backend unreachable)");
    let first = start_gateway(
        &mut gateway,
        "first start, empty",
        ctx,
        gw_api,
        device_probe,
    )
    .await?;
    out.starts.push(first);

    note(format!(
        "trygg: filling the journal with {} events",
        ctx.events
    ));
    let fill = fill(
        &device_broker,
        ctx,
        Confirm::Receipt,
        "trygg fill (receipts)",
    )
    .await?;
    let last = publish_last(&device_broker, Confirm::Receipt).await;
    out.fill = Some(fill);
    last.context("the alarm published last")?;

    let status = gateway_status(&ctx.http, gw_api).await?;
    let lane = |v: &serde_json::Value| -> [u64; 3] {
        ["alarm", "care", "telemetry"].map(|l| v[l].as_u64().unwrap_or(0))
    };
    let records = lane(&status["journal_pending"]);
    let metrics = ctx
        .http
        .get(format!("http://{gw_api}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let dropped =
        trygg_uplink::metrics::read(&metrics, "journal_telemetry_dropped_total", "") as u64;
    let (file_bytes, allocated_bytes) = file_size(&journal_path);
    out.stored = Some(Stored {
        records: Some(records),
        record_bytes: Some(lane(&status["journal_pending_bytes"]).iter().sum()),
        file: "journal gateway.redb".into(),
        file_bytes,
        allocated_bytes,
        limit_mib: Some(limit_mib),
        dropped: Some(dropped),
    });
    note(format!(
        "trygg: journal holds {} records, file {:.1} MiB",
        records.iter().sum::<u64>(),
        mib(file_bytes)
    ));

    if ctx.want.memory {
        // A moment for the last receipts' buffers to be freed.
        tokio::time::sleep(Duration::from_millis(500)).await;
        out.mem_filled = gateway.mem();
        out.device_broker_mem = device_mosquitto.as_ref().and_then(|m| m.mem());
    }

    // The recovery runs three restarts; the memory bench one, to see what
    // holding the backlog costs without the history of taking it in.
    let restarts: &[(&str, Stop)] = if ctx.want.recovery {
        &[
            ("after SIGKILL, warm", Stop::Kill),
            ("after SIGKILL, cold", Stop::KillCold),
            ("after SIGTERM, warm", Stop::Term),
        ]
    } else if ctx.want.memory {
        &[("after SIGKILL, warm", Stop::Kill)]
    } else {
        &[]
    };
    if !restarts.is_empty() {
        for &(label, how) in restarts {
            note(format!("trygg: restart {label}"));
            let stop_ms = match how {
                Stop::Kill | Stop::KillCold => {
                    gateway.kill9().await;
                    None
                }
                Stop::Term => Some(ms(gateway.terminate(Duration::from_secs(30)).await?)),
            };
            if how == Stop::KillCold {
                drop_from_page_cache(&journal_path)?;
            }
            let cached = cached_bytes(&journal_path);
            let mut s = start_gateway(&mut gateway, label, ctx, gw_api, device_probe).await?;
            s.stop_ms = stop_ms;
            s.cached_bytes = cached;
            out.starts.push(s);
        }
        if ctx.want.memory {
            tokio::time::sleep(Duration::from_secs(1)).await;
            out.mem_restarted = gateway.mem();
        }
    }

    if ctx.want.drain {
        note("trygg: the backend starts; draining");
        let expected_alarms = records[0];
        let total: u64 = records.iter().sum();
        let sampler = MemSampler::start(gateway.pid());
        let spawned = Instant::now();
        backend.spawn()?;
        let restored = wait_port(&mut backend, local(backend_port), START_TIMEOUT).await?;
        let restored_wall = unix_ms();
        let mut d = Drain {
            records: total,
            backend_start_ms: ms(restored - spawned),
            alarms_expected: expected_alarms,
            ..Drain::default()
        };
        backend.wait_mark("ready", START_TIMEOUT).await?;
        // The journal is empty once the backend has committed and
        // receipted everything.
        let mut last_pending = u64::MAX;
        let mut moved = Instant::now();
        loop {
            if d.connected_ms.is_none() {
                d.connected_ms = gateway
                    .mark("uplink_connected")
                    .map(|t| ms(t.saturating_duration_since(restored)));
            }
            if let Ok(s) = gateway_status(&ctx.http, gw_api).await {
                let pending: u64 = lane(&s["journal_pending"]).iter().sum();
                if pending == 0 {
                    d.everything_ms = Some(ms(restored.elapsed()));
                    break;
                }
                if pending != last_pending {
                    last_pending = pending;
                    moved = Instant::now();
                }
            }
            if moved.elapsed() > DRAIN_STALL {
                note(format!(
                    "trygg: the drain made no progress for {DRAIN_STALL:?} ({last_pending} left)"
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if d.connected_ms.is_none() {
            d.connected_ms = gateway
                .mark("uplink_connected")
                .map(|t| ms(t.saturating_duration_since(restored)));
        }
        d.peak_rss_kib = sampler.stop().await;
        d.end_mem = gateway.mem();
        // What the backend committed, and when.
        let alarms: serde_json::Value = ctx
            .http
            .get(format!("http://127.0.0.1:{backend_api}/api/v1/alarms"))
            .send()
            .await?
            .json()
            .await?;
        let since = |t: u64| t as f64 - restored_wall as f64;
        let mut first: Option<u64> = None;
        let mut all: Option<u64> = None;
        for a in alarms["alarms"].as_array().into_iter().flatten() {
            let device = a["device"].as_str().unwrap_or("");
            if !device.starts_with("bench-") || a["kind"] != "button_press" {
                continue;
            }
            let Some(raised) = a["raised_ms"].as_u64() else {
                continue;
            };
            let latest = a["last_repeat_ms"].as_u64().unwrap_or(raised);
            d.alarms_seen += 1 + a["repeats"].as_u64().unwrap_or(0);
            first = Some(first.map_or(raised, |f| f.min(raised)));
            all = Some(all.map_or(latest, |x| x.max(latest)));
            if device == LAST_DEVICE {
                d.last_published_alarm_ms = Some(since(raised));
            }
        }
        d.first_alarm_ms = first.map(since);
        d.first_message_ms = d.first_alarm_ms;
        d.all_alarms_ms = all.map(since);
        let bm = ctx
            .http
            .get(format!("http://127.0.0.1:{backend_api}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        d.messages_seen = trygg_uplink::metrics::read(&bm, "records_stored_total", "") as u64;
        out.drain = Some(d);
    }
    gateway.terminate(Duration::from_secs(30)).await.ok();
    backend.terminate(Duration::from_secs(30)).await.ok();
    if let Some(mut m) = device_mosquitto {
        m.terminate(Duration::from_secs(30)).await.ok();
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Kill,
    KillCold,
    Term,
}

/// Starts the gateway and times it to serving.
async fn start_gateway(
    gw: &mut ChildProc,
    label: &str,
    ctx: &Ctx,
    api: SocketAddr,
    device: Option<SocketAddr>,
) -> anyhow::Result<Start> {
    gw.spawn()?;
    let t0 = gw.spawned;
    let deadline = t0 + START_TIMEOUT;
    let device_port = async {
        let device = device?;
        loop {
            if tokio::net::TcpStream::connect(device).await.is_ok() {
                return Some(t0.elapsed());
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    let http = ctx.http.clone();
    let healthz = async move {
        loop {
            if let Ok(r) = http
                .get(format!("http://{api}/healthz"))
                .timeout(Duration::from_secs(1))
                .send()
                .await
            {
                if r.status().is_success() {
                    return Some(t0.elapsed());
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let (accepting, healthz) = tokio::join!(device_port, healthz);
    gw.wait_mark("ready", START_TIMEOUT).await?;
    let since = |name| gw.mark(name).map(|t| ms(t.saturating_duration_since(t0)));
    let s = Start {
        label: label.into(),
        stop_ms: None,
        journal_open_ms: since("journal_open"),
        repaired: gw.mark("repairing").is_some(),
        accepting_ms: accepting.map(ms),
        healthz_ms: healthz.map(ms),
        ready_ms: since("ready"),
        cached_bytes: None,
    };
    note(format!(
        "  journal open {} ms, device broker {} ms, /healthz {} ms, ready {} ms{}",
        f1(s.journal_open_ms),
        f1(s.accepting_ms),
        f1(s.healthz_ms),
        f1(s.ready_ms),
        if s.repaired {
            " (redb repaired it)"
        } else {
            ""
        }
    ));
    Ok(s)
}

// ---------------------------------------------------------------------------
// Mosquitto

fn mosquitto_conf(port: u16, dir: &Path, bridge_to: Option<u16>) -> String {
    let mut c = format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nautosave_interval 0\nmax_inflight_messages 1000\nmax_queued_messages 0\n",
        dir.display()
    );
    if running_as_root() {
        // Mosquitto started as root drops to the user `mosquitto`, who
        // cannot write the bench's directory.
        c.push_str("user root\n");
    }
    if let Some(b) = bridge_to {
        c.push_str(&format!(
            "connection bench-drain\naddress 127.0.0.1:{b}\ntopic # out 1\ncleansession false\nnotifications true\nnotifications_local_only true\nbridge_protocol_version mqttv311\n"
        ));
    }
    c
}

async fn mosquitto_side(ctx: &Ctx, exe: &Path, out: &mut Side) -> anyhow::Result<()> {
    let base = ctx.dir.join("mosquitto");
    let (a_dir, b_dir) = (base.join("a"), base.join("b"));
    std::fs::create_dir_all(&a_dir)?;
    std::fs::create_dir_all(&b_dir)?;
    let (a_port, b_port) = (free_port()?, free_port()?);
    let local = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let url = |port| MqttUrl {
        host: "127.0.0.1".into(),
        port,
        tls: false,
    };
    std::fs::write(
        a_dir.join("a.conf"),
        mosquitto_conf(a_port, &a_dir, Some(b_port)),
    )?;
    std::fs::write(b_dir.join("b.conf"), mosquitto_conf(b_port, &b_dir, None))?;
    let mosq = |name, dir: &Path, conf: &str| {
        ChildProc::new(
            name,
            exe.to_path_buf(),
            vec!["-c".into(), dir.join(conf).into()],
            dir.join(format!("{name}.log")),
            // Logged as it enters its main loop. A SIGTERM that comes
            // before is lost (the loop sets its run flag again), so stops
            // wait for it.
            &[(" running", "ready")],
        )
    };
    let mut a = mosq("mosquitto-a", &a_dir, "a.conf");
    let mut b = mosq("mosquitto-b", &b_dir, "b.conf");
    let db = a_dir.join("mosquitto.db");

    // B once, to leave a persistent session for the subscriber behind.
    note("mosquitto: registering the subscriber's session on B, then B goes down");
    b.spawn()?;
    wait_port(&mut b, local(b_port), START_TIMEOUT).await?;
    b.wait_mark("ready", START_TIMEOUT).await?;
    let sub = PersistentSub::connect(&url(b_port), Arc::new(Arrivals::default())).await?;
    sub.wait_connected(Duration::from_secs(10)).await?;
    sub.close().await;
    b.terminate(Duration::from_secs(30)).await?;

    note("mosquitto: starting A (its bridge to B is down)");
    a.spawn()?;
    let accepting = wait_port(&mut a, local(a_port), START_TIMEOUT).await?;
    let running = a.wait_mark("ready", START_TIMEOUT).await?;
    out.starts.push(Start {
        label: "first start, empty".into(),
        accepting_ms: Some(ms(accepting - a.spawned)),
        ready_ms: Some(ms(running - a.spawned)),
        ..Start::default()
    });
    // The bridge's own notice on A: "1" when it has connected to B.
    let bridge_up: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let watcher = {
        let up = bridge_up.clone();
        Subscriber::connect(
            &url(a_port),
            "$SYS/broker/connection/+/state",
            move |_, p| {
                if p == b"1" {
                    if let Ok(mut v) = up.lock() {
                        v.push(Instant::now());
                    }
                }
            },
        )
        .await?
    };

    note(format!("mosquitto: filling A with {} messages", ctx.events));
    let f = fill(
        &url(a_port),
        ctx,
        Confirm::PubAck,
        "mosquitto fill (PUBACKs)",
    )
    .await?;
    let sent = f.sent + 1;
    let expected_alarms = ctx.layout.mix(f.sent)[0] + 1;
    out.fill = Some(f);
    publish_last(&url(a_port), Confirm::PubAck)
        .await
        .context("the message published last")?;
    if ctx.want.memory {
        tokio::time::sleep(Duration::from_millis(500)).await;
        out.mem_filled = a.mem();
    }

    let restarts: &[(&str, bool)] = if ctx.want.recovery {
        &[
            ("after SIGTERM (saves), warm", false),
            ("after SIGTERM (saves), cold", true),
        ]
    } else if ctx.want.memory {
        &[("after SIGTERM (saves), warm", false)]
    } else {
        &[]
    };
    if !restarts.is_empty() {
        for &(label, cold) in restarts {
            note(format!("mosquitto: restart {label}"));
            let stop = a.terminate(Duration::from_secs(600)).await?;
            let (file_bytes, allocated_bytes) = file_size(&db);
            out.stored = Some(Stored {
                file: "persistence mosquitto.db".into(),
                file_bytes,
                allocated_bytes,
                ..Stored::default()
            });
            if cold {
                drop_from_page_cache(&db)?;
            }
            let cached = cached_bytes(&db);
            a.spawn()?;
            let t = wait_port(&mut a, local(a_port), Duration::from_secs(600)).await?;
            let running = a.wait_mark("ready", Duration::from_secs(600)).await?;
            let s = Start {
                label: label.into(),
                stop_ms: Some(ms(stop)),
                accepting_ms: Some(ms(t - a.spawned)),
                ready_ms: Some(ms(running - a.spawned)),
                cached_bytes: cached,
                ..Start::default()
            };
            note(format!(
                "  stopped (saving) in {} ms, listening {} ms and running {} ms after the spawn; db {:.1} MiB",
                f1(s.stop_ms),
                f1(s.accepting_ms),
                f1(s.ready_ms),
                mib(file_bytes)
            ));
            out.starts.push(s);
        }
        if ctx.want.memory {
            tokio::time::sleep(Duration::from_secs(1)).await;
            out.mem_restarted = a.mem();
        }
    }

    if ctx.want.drain {
        note("mosquitto: B starts; draining over the bridge");
        let arrivals = Arc::new(Arrivals::default());
        let sampler = MemSampler::start(a.pid());
        let spawned = Instant::now();
        b.spawn()?;
        let restored = wait_port(&mut b, local(b_port), START_TIMEOUT).await?;
        let sub = PersistentSub::connect(&url(b_port), arrivals.clone()).await?;
        let mut last = 0;
        let mut moved = Instant::now();
        loop {
            let n = arrivals.tally.count.load(Ordering::Relaxed);
            if n >= sent {
                break;
            }
            if n != last {
                last = n;
                moved = Instant::now();
            } else if moved.elapsed() > DRAIN_STALL {
                note(format!(
                    "mosquitto: the drain made no progress for {DRAIN_STALL:?} ({n} of {sent})"
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let since = |t: Option<Instant>| t.map(|t| ms(t.saturating_duration_since(restored)));
        let n = arrivals.tally.count.load(Ordering::Relaxed);
        let d = Drain {
            records: sent,
            backend_start_ms: ms(restored - spawned),
            connected_ms: since(
                bridge_up
                    .lock()
                    .ok()
                    .and_then(|v| v.iter().find(|t| **t >= restored).copied()),
            ),
            first_message_ms: since(arrivals.first.get().copied()),
            first_alarm_ms: since(arrivals.first_alarm.get().copied()),
            last_published_alarm_ms: since(arrivals.last_published.get().copied()),
            all_alarms_ms: since(arrivals.last_alarm.lock().ok().and_then(|l| *l)),
            alarms_seen: arrivals.alarms.load(Ordering::Relaxed),
            alarms_expected: expected_alarms,
            everything_ms: (n >= sent)
                .then(|| since(arrivals.tally.last.lock().ok().and_then(|l| *l)))
                .flatten(),
            messages_seen: n,
            peak_rss_kib: sampler.stop().await,
            end_mem: a.mem(),
        };
        out.drain = Some(d);
        sub.close().await;
    }
    watcher.close().await;
    a.terminate(Duration::from_secs(600)).await.ok();
    b.terminate(Duration::from_secs(60)).await.ok();
    Ok(())
}

// ---------------------------------------------------------------------------
// Clients

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Confirm {
    /// The gateway's receipt on each device's `ack` topic.
    Receipt,
    /// The broker's PUBACK.
    PubAck,
}

/// One connection publishing for many devices, with at most `window`
/// events unconfirmed.
struct FillConn {
    client: AsyncClient,
    window: Arc<Semaphore>,
    net: JoinHandle<()>,
}

impl FillConn {
    async fn connect(
        url: &MqttUrl,
        name: &str,
        devices: &[String],
        window: usize,
        confirm: Confirm,
        tally: Arc<Tally>,
        not_committed: Arc<AtomicU64>,
    ) -> anyhow::Result<FillConn> {
        let mut opts = MqttOptions::new(
            format!("{name}-{}", rand::random::<u32>()),
            url.host.clone(),
            url.port,
        );
        opts.set_keep_alive(Duration::from_secs(30))
            .set_clean_session(true)
            .set_inflight(u16::try_from(window + 16).unwrap_or(u16::MAX));
        let (client, mut eventloop) = AsyncClient::new(opts, window + 16);
        eventloop.network_options.set_tcp_nodelay(true);
        let sem = Arc::new(Semaphore::new(window));
        let acks: Vec<SubscribeFilter> = devices
            .iter()
            .map(|d| {
                SubscribeFilter::new(topic::device_topic(d, "ack").to_string(), QoS::AtLeastOnce)
            })
            .collect();
        let (ready_tx, ready_rx) = oneshot::channel::<()>();
        let net = {
            let client = client.clone();
            let sem = sem.clone();
            tokio::spawn(async move {
                let mut ready_tx = Some(ready_tx);
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => match confirm {
                            Confirm::Receipt => {
                                let _ = client.subscribe_many(acks.clone()).await;
                            }
                            Confirm::PubAck => {
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
                        Ok(Event::Incoming(Packet::PubAck(_))) if confirm == Confirm::PubAck => {
                            tally.bump();
                            sem.add_permits(1);
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) if confirm == Confirm::Receipt => {
                            let Ok(r) = Receipt::decode(&p.payload) else {
                                continue;
                            };
                            if r.status == ReceiptStatus::Committed {
                                tally.bump();
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
            .map_err(|_| anyhow::anyhow!("{name}: no connection to {url} within 10 s"))?
            .map_err(|_| anyhow::anyhow!("{name}: connection task ended"))?;
        Ok(FillConn {
            client,
            window: sem,
            net,
        })
    }

    /// Publishes once there is room in the window.
    async fn publish(&self, topic: &str, payload: Vec<u8>) -> bool {
        let Ok(permit) = self.window.acquire().await else {
            return false;
        };
        permit.forget();
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .is_ok()
    }

    async fn close(self) {
        let _ = self.client.disconnect().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.net.abort();
    }
}

/// Publishes the backlog over the layout's connections; returns once every
/// event is confirmed (or confirmations stopped for [`SETTLE`]).
async fn fill(url: &MqttUrl, ctx: &Ctx, confirm: Confirm, what: &str) -> anyhow::Result<Fill> {
    let tally = Arc::new(Tally::default());
    let not_committed = Arc::new(AtomicU64::new(0));
    let layout = &ctx.layout;
    let mut conns = Vec::new();
    for c in 0..layout.conns {
        let devices: Vec<String> = layout.conn_devices(c).into_iter().map(|d| d.1).collect();
        conns.push(
            FillConn::connect(
                url,
                &format!("bench-o{c}"),
                &devices,
                ctx.window,
                confirm,
                tally.clone(),
                not_committed.clone(),
            )
            .await?,
        );
    }
    let started = Instant::now();
    let shown = progress(what, tally.clone(), ctx.events);
    let counts = split(ctx.events, layout.conns);
    let sent = futures::future::join_all(conns.iter().zip(counts).enumerate().map(
        |(c, (conn, n))| async move {
            // Per lane: the device topics, and how many went to each lane.
            let topics: Vec<Vec<String>> = Lane::ALL
                .iter()
                .map(|&l| {
                    (0..layout.per_lane[l.index()])
                        .map(|i| topic::device_topic(&layout.device(c, l, i), "evt").to_string())
                        .collect()
                })
                .collect();
            let mut seqs: Vec<Vec<u64>> = topics.iter().map(|t| vec![0; t.len()]).collect();
            let mut used = [0usize; 3];
            let mut sent = 0u64;
            for k in 0..n {
                let lane = lane_of(k).index();
                let i = used[lane] % topics[lane].len();
                used[lane] += 1;
                seqs[lane][i] += 1;
                let payload = event_payload(seqs[lane][i], kind_of(Lane::ALL[lane]));
                if !conn.publish(&topics[lane][i], payload).await {
                    break;
                }
                sent += 1;
            }
            sent
        },
    ))
    .await
    .iter()
    .sum::<u64>();
    let confirmed = tally.wait_for(sent, SETTLE).await;
    shown.abort();
    let seconds = tally.last_since(started);
    for c in conns {
        c.close().await;
    }
    Ok(Fill {
        sent,
        confirmed,
        not_committed: not_committed.load(Ordering::Relaxed),
        seconds,
    })
}

/// The alarm published after the whole backlog, from a device of its own.
async fn publish_last(url: &MqttUrl, confirm: Confirm) -> anyhow::Result<()> {
    let tally = Arc::new(Tally::default());
    let not_committed = Arc::new(AtomicU64::new(0));
    let conn = FillConn::connect(
        url,
        "bench-last",
        &[LAST_DEVICE.to_string()],
        1,
        confirm,
        tally.clone(),
        not_committed.clone(),
    )
    .await?;
    let t = topic::device_topic(LAST_DEVICE, "evt").to_string();
    conn.publish(&t, event_payload(1, EventKind::ButtonPress))
        .await;
    let n = tally.wait_for(1, SETTLE).await;
    conn.close().await;
    if n < 1 {
        bail!(
            "not confirmed within {SETTLE:?} ({} other answers)",
            not_committed.load(Ordering::Relaxed)
        );
    }
    Ok(())
}

/// When the drain's messages arrived at Mosquitto B's subscriber.
#[derive(Default)]
struct Arrivals {
    tally: Tally,
    alarms: AtomicU64,
    first: OnceLock<Instant>,
    first_alarm: OnceLock<Instant>,
    last_published: OnceLock<Instant>,
    last_alarm: Mutex<Option<Instant>>,
}

impl Arrivals {
    fn on_publish(&self, t: &str) {
        let now = Instant::now();
        self.tally.bump();
        self.first.get_or_init(|| now);
        if is_alarm_topic(t) {
            self.alarms.fetch_add(1, Ordering::Relaxed);
            self.first_alarm.get_or_init(|| now);
            if let Ok(mut l) = self.last_alarm.lock() {
                *l = Some(now);
            }
            if t.contains(LAST_DEVICE) {
                self.last_published.get_or_init(|| now);
            }
        }
    }
}

/// The subscriber on Mosquitto B, with a persistent session so that
/// nothing the bridge forwards is lost before it is connected. It
/// reconnects every 5 ms until B is there.
struct PersistentSub {
    client: AsyncClient,
    net: JoinHandle<()>,
    connected: Arc<OnceLock<Instant>>,
}

impl PersistentSub {
    async fn connect(url: &MqttUrl, arrivals: Arc<Arrivals>) -> anyhow::Result<PersistentSub> {
        let mut opts = MqttOptions::new(SUB_ID, url.host.clone(), url.port);
        opts.set_keep_alive(Duration::from_secs(30))
            .set_clean_session(false)
            .set_inflight(1000);
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        eventloop.network_options.set_tcp_nodelay(true);
        let connected: Arc<OnceLock<Instant>> = Arc::default();
        let net = {
            let client = client.clone();
            let connected = connected.clone();
            tokio::spawn(async move {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            let _ = client
                                .subscribe(topic::EVENTS_FILTER, QoS::AtLeastOnce)
                                .await;
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            connected.get_or_init(Instant::now);
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => arrivals.on_publish(&p.topic),
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                }
            })
        };
        Ok(PersistentSub {
            client,
            net,
            connected,
        })
    }

    async fn wait_connected(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while self.connected.get().is_none() {
            if Instant::now() > deadline {
                bail!("the subscriber did not connect to Mosquitto B within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    async fn close(self) {
        let _ = self.client.disconnect().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.net.abort();
    }
}

// ---------------------------------------------------------------------------
// Processes

/// A service run as a child process: its pid (for /proc), its output in a
/// log, and when lines containing given words first appeared.
struct ChildProc {
    name: &'static str,
    program: PathBuf,
    args: Vec<OsString>,
    log: PathBuf,
    markers: Vec<(&'static str, &'static str)>,
    child: Option<tokio::process::Child>,
    spawned: Instant,
    marks: Arc<Mutex<HashMap<&'static str, Instant>>>,
    starts: u32,
}

impl ChildProc {
    fn new(
        name: &'static str,
        program: PathBuf,
        args: Vec<OsString>,
        log: PathBuf,
        markers: &[(&'static str, &'static str)],
    ) -> ChildProc {
        ChildProc {
            name,
            program,
            args,
            log,
            markers: markers.to_vec(),
            child: None,
            spawned: Instant::now(),
            marks: Arc::default(),
            starts: 0,
        }
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        writeln!(log, "----- trygg-sim bench: start #{} -----", self.starts)?;
        let log = Arc::new(Mutex::new(log));
        if let Ok(mut m) = self.marks.lock() {
            m.clear();
        }
        self.spawned = Instant::now();
        let mut child = tokio::process::Command::new(&self.program)
            .args(&self.args)
            // The services' info lines carry the marks; no colours.
            .env("RUST_LOG", "warn,trygg_gateway=info,trygg_bridge=info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {} ({})", self.name, self.program.display()))?;
        let out = child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Send + Unpin>);
        let err = child
            .stderr
            .take()
            .map(|e| Box::new(e) as Box<dyn tokio::io::AsyncRead + Send + Unpin>);
        for stream in [out, err].into_iter().flatten() {
            let (log, marks, markers) = (log.clone(), self.marks.clone(), self.markers.clone());
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let now = Instant::now();
                    for (needle, name) in &markers {
                        if line.contains(needle) {
                            if let Ok(mut m) = marks.lock() {
                                m.entry(name).or_insert(now);
                            }
                        }
                    }
                    if let Ok(mut l) = log.lock() {
                        let _ = writeln!(l, "{line}");
                    }
                }
            });
        }
        self.child = Some(child);
        Ok(())
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref()?.id()
    }

    fn mem(&self) -> Option<Mem> {
        mem_of(self.pid()?)
    }

    fn mark(&self, name: &str) -> Option<Instant> {
        self.marks.lock().ok()?.get(name).copied()
    }

    async fn wait_mark(&mut self, name: &str, timeout: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(t) = self.mark(name) {
                return Ok(t);
            }
            self.check_running()?;
            if Instant::now() > deadline {
                bail!(
                    "{}: no `{name}` within {timeout:?}; see {}",
                    self.name,
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                self.child = None;
                bail!(
                    "{} exited ({status}); see {}",
                    self.name,
                    self.log.display()
                );
            }
        }
        Ok(())
    }

    /// SIGKILL: no shutdown, no flush.
    async fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }

    /// SIGTERM; returns how long it took to exit (SIGKILL after `timeout`).
    async fn terminate(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let Some(mut c) = self.child.take() else {
            bail!("{} is not running", self.name);
        };
        let t0 = Instant::now();
        if let Some(pid) = c.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        match tokio::time::timeout(timeout, c.wait()).await {
            Ok(_) => Ok(t0.elapsed()),
            Err(_) => {
                let _ = c.start_kill();
                let _ = c.wait().await;
                bail!("{} did not stop within {timeout:?}", self.name)
            }
        }
    }
}

/// Waits until `addr` accepts TCP; returns when it first did.
async fn wait_port(
    proc: &mut ChildProc,
    addr: SocketAddr,
    timeout: Duration,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(Instant::now());
        }
        proc.check_running()?;
        if Instant::now() > deadline {
            bail!("{} did not listen on {addr} within {timeout:?}", proc.name);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Samples a process's VmRSS every 100 ms and keeps the highest.
struct MemSampler {
    stop: CancellationToken,
    task: JoinHandle<Option<u64>>,
}

impl MemSampler {
    fn start(pid: Option<u32>) -> MemSampler {
        let stop = CancellationToken::new();
        let task = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let pid = pid?;
                let mut peak = 0;
                loop {
                    if let Some(m) = mem_of(pid) {
                        peak = peak.max(m.rss_kib);
                    }
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
                Some(peak)
            })
        };
        MemSampler { stop, task }
    }

    async fn stop(self) -> Option<u64> {
        self.stop.cancel();
        self.task.await.ok().flatten()
    }
}

// ---------------------------------------------------------------------------
// The machine

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|r| r.split_whitespace().next().map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// A file's length and the space allocated to it.
fn file_size(path: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .map(|m| (m.len(), m.blocks() * 512))
        .unwrap_or((0, 0))
}

/// Drops a file's pages from the page cache, as after a reboot, without
/// root: `dd iflag=nocache count=0` (GNU coreutils) asks the kernel to
/// forget the whole file. Its pages are clean (fsynced), so nothing is lost.
fn drop_from_page_cache(path: &Path) -> anyhow::Result<()> {
    let status = std::process::Command::new("dd")
        .arg(format!("if={}", path.display()))
        .args(["iflag=nocache", "count=0", "status=none"])
        .status()
        .context("running dd to drop the file from the page cache")?;
    if !status.success() {
        bail!("dd iflag=nocache failed ({status})");
    }
    Ok(())
}

/// Bytes of a file in the page cache (`fincore`, util-linux), if known.
fn cached_bytes(path: &Path) -> Option<u64> {
    let out = std::process::Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES"])
        .arg(path)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_counts_agree_with_lane_of() {
        for n in [0, 1, 9, 10, 99, 100, 101, 12_345, 125_000] {
            let mut c = [0u64; 3];
            for k in 0..n {
                c[lane_of(k).index()] += 1;
            }
            assert_eq!(lane_counts(n), c, "n = {n}");
        }
    }

    #[test]
    fn the_mix_is_mostly_telemetry() {
        let m = Layout::new(8, 32).mix(1_000_000);
        assert_eq!(m.iter().sum::<u64>(), 1_000_000);
        assert_eq!(m[0], 10_000);
        assert_eq!(m[1], 50_000);
    }

    #[test]
    fn the_layout_names_each_device_once() {
        let l = Layout::new(8, 32);
        let reg = l.register();
        assert_eq!(reg.len(), l.total());
        let mut ids: Vec<&str> = reg.iter().map(|d| d.id.as_str()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), reg.len());
        assert_eq!(l.per_lane, [2, 4, 26]);
        assert!(is_alarm_topic(&format!(
            "trygg/v1/dev/{}/evt",
            l.device(3, Lane::Alarm, 1)
        )));
        assert!(is_alarm_topic("trygg/v1/dev/bench-last-button/evt"));
        assert!(!is_alarm_topic(&format!(
            "trygg/v1/dev/{}/evt",
            l.device(3, Lane::Care, 1)
        )));
    }

    #[test]
    fn memory_is_read_from_proc_status() {
        let text = "Name:\tx\nVmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\nRssAnon:\t   30720 kB\n";
        assert_eq!(
            parse_status(text),
            Some(Mem {
                rss_kib: 40960,
                hwm_kib: 51200,
                anon_kib: 30720
            })
        );
        assert_eq!(parse_status("Name: x\n"), None);
        assert!(mem_of(std::process::id()).is_some_and(|m| m.rss_kib > 0));
    }

    #[test]
    fn mosquitto_peer_queues_for_the_bridge_while_it_is_down() {
        let c = mosquitto_conf(1883, Path::new("/tmp/x"), Some(1884));
        assert!(c.contains("cleansession false"), "{c}");
        assert!(c.contains("max_queued_messages 0"));
        assert!(c.contains("persistence_location /tmp/x/"));
        assert!(!mosquitto_conf(1, Path::new("/y"), None).contains("connection"));
    }

    #[test]
    fn serving_is_the_last_sign_of_it() {
        let s = Start {
            accepting_ms: Some(5.0),
            healthz_ms: Some(9.0),
            ready_ms: Some(7.0),
            ..Start::default()
        };
        assert_eq!(s.serving_ms(), Some(9.0));
    }
}
