//! `trygg-sim chaos`: the whole chain under faults, checked end to end
//! from the devices' own records.
//!
//! ```text
//!  devices (this process,        gateway (child)          link proxy        bridge (child)
//!  never killed; DeviceLog  -->  embedded broker or  -->  (this process) --> embedded broker,
//!  is the ground truth)          Mosquitto (child)        cut/stall/delay/    store, API
//!                                journal on a small       throttle/reset
//!                                tmpfs (disk fills)
//! ```
//!
//! The gateway and the bridge run as child processes of this binary
//! (hidden subcommands `serve-gateway FILE` and `serve-bridge FILE`), so
//! that they can be SIGKILLed, like a power cut for the process, and
//! started again on the same ports and data. Their embedded brokers die
//! and restart with them; with `--device-broker mosquitto` the device
//! broker is a Mosquitto child, in memory, killed and restarted as well.
//!
//! A run: start everything, let the home run a moment, inject the faults
//! of the [`plan`] (each target on its own clock, so faults overlap), then
//! stop producing, heal everything, wait for the drain (every device
//! outbox empty, the gateway's journal empty), and check the devices'
//! records against the backend ([`verdict`]). The seed fixes the schedule
//! of faults and of events, not the timing of the system under test.

pub mod plan;
pub mod proxy;
pub mod services;
pub mod verdict;
pub mod workload;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use trygg_uplink::mqtt_url::MqttUrl;

use plan::{Fault, LinkFault, Plan, PlanOptions, Step};
use proxy::{LinkMode, LinkProxy};
use services::{LifetimeCounter, Readiness, Service, SmallDisk};
use verdict::{BackendAlarm, BackendEvent, BackendView, Verdict};
use workload::{Pace, Workload};

/// The gateway's id in chaos runs.
pub const GATEWAY_ID: &str = "gw-chaos-1";
/// The most events the backend API lists at once (`MAX_EVENT_LIMIT`).
const API_EVENT_LIMIT: usize = trygg_bridge::api::MAX_EVENT_LIMIT;
/// Telemetry events the home sends at once while the gateway's disk is
/// full: the journal must grow then, so the fill bites (with a quiet home
/// the journal reuses its own free pages and never notices a full disk).
const DISK_BURST: usize = 1500;
/// How much longer a disk fill is held while the gateway has not noticed
/// it yet.
const DISK_FILL_GRACE: Duration = Duration::from_secs(10);
/// The gateway's uplink receipt timeout in chaos runs (a home's default is
/// 15 s): stalls outlast it.
const RECEIPT_TIMEOUT_S: u64 = 5;
/// The bridge's grace period for a lane gap before it raises the alarm (a
/// home's default is 30 s): longer than the receipt timeout, after which
/// the gateway sends again what is late.
const GAP_GRACE_S: u64 = 10;
/// How long a service may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Which broker the devices and the gateway meet at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceBroker {
    /// The gateway's embedded broker: it restarts with the gateway.
    Embedded,
    /// A Mosquitto child process, killed and restarted on its own.
    Mosquitto,
}

/// What to run and how hard.
#[derive(Clone, Debug)]
pub struct ChaosOptions {
    pub seed: Option<u64>,
    /// SIGKILL-and-restart cycles of the gateway, and of the bridge.
    pub cycles: u32,
    /// How long the faults go on; default 3 s per cycle.
    pub duration: Option<Duration>,
    /// A care home of this many devices instead of the default home.
    pub devices: Option<usize>,
    pub device_broker: DeviceBroker,
    /// Default: `cycles`, at least 5 (one of each kind).
    pub link_faults: Option<u32>,
    /// Mosquitto kills; default `cycles / 2`, at least 1.
    pub broker_restarts: Option<u32>,
    pub disk_fills: u32,
    pub disk_mib: u64,
    pub pace: Pace,
    pub drain_timeout: Duration,
    pub data_dir: Option<PathBuf>,
    pub mosquitto: Option<PathBuf>,
    /// Write the summary as JSON here.
    pub report: Option<PathBuf>,
}

impl ChaosOptions {
    fn phase(&self) -> Duration {
        self.duration
            .unwrap_or(Duration::from_secs(3) * self.cycles.max(1))
    }

    fn plan_options(&self, disk_ok: bool) -> PlanOptions {
        PlanOptions {
            phase: self.phase(),
            gateway_kills: self.cycles,
            bridge_kills: self.cycles,
            mosquitto_kills: match self.device_broker {
                DeviceBroker::Mosquitto => self.broker_restarts.unwrap_or((self.cycles / 2).max(1)),
                DeviceBroker::Embedded => 0,
            },
            link_faults: self.link_faults.unwrap_or(self.cycles.max(5)),
            disk_fills: if disk_ok { self.disk_fills } else { 0 },
            receipt_timeout: Duration::from_secs(RECEIPT_TIMEOUT_S),
        }
    }
}

/// What the faults did, counted as they happen.
#[derive(Debug, Default)]
struct Tally {
    kills: BTreeMap<&'static str, u32>,
    restarts: BTreeMap<&'static str, u32>,
    slowest_start: BTreeMap<&'static str, Duration>,
    /// A service that ended without being killed, or would not start.
    problems: Vec<String>,
    link: BTreeMap<&'static str, u32>,
    disk_fills: u32,
    ballast_bytes: u64,
    /// Seconds the gateway reported "journal cannot commit" while the disk
    /// was full (sampled once a second).
    full_seconds_noticed: u32,
}

/// Counters read from the services' metrics once a second.
#[derive(Debug, Default)]
struct Observed {
    gw_duplicates: LifetimeCounter,
    gw_commit_failures: LifetimeCounter,
    gw_disk_full: LifetimeCounter,
    gw_deferred: LifetimeCounter,
    gw_dropped: LifetimeCounter,
    gw_resends: LifetimeCounter,
    gw_set_aside: LifetimeCounter,
    br_duplicates: LifetimeCounter,
    br_stored: LifetimeCounter,
    br_gaps: LifetimeCounter,
    journal_pending: Option<u64>,
    journal_error: Option<String>,
}

/// Shared by the fault actors: the clock, the tallies, the printer.
struct Ctx {
    t0: Instant,
    tally: Mutex<Tally>,
    observed: Mutex<Observed>,
}

impl Ctx {
    /// One progress line.
    fn say(&self, msg: impl AsRef<str>) {
        println!(
            "chaos [{:>6.1}s] {}",
            self.t0.elapsed().as_secs_f64(),
            msg.as_ref()
        );
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn observed(&self) -> std::sync::MutexGuard<'_, Observed> {
        self.observed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The outcome of a run.
pub struct ChaosReport {
    pub seed: u64,
    pub verdict: Verdict,
    /// Everything that failed: the data check's findings, and problems
    /// outside it (a service that would not start, a journal set aside).
    pub failures: Vec<String>,
    /// The summary as JSON (what `--report` writes).
    pub json: Value,
}

impl ChaosReport {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Runs the chaos; returns the report (also printed). Fails only when the
/// harness itself cannot run (no executable, no ports...).
pub async fn run_chaos(o: ChaosOptions) -> anyhow::Result<ChaosReport> {
    let seed = o.seed.unwrap_or_else(rand::random);
    let ctx = Arc::new(Ctx {
        t0: Instant::now(),
        tally: Mutex::default(),
        observed: Mutex::default(),
    });
    ctx.say(format!(
        "seed {seed} (replay the same faults with --seed {seed}); {} cycles over {:.0} s, {} devices, device broker {:?}",
        o.cycles,
        o.phase().as_secs_f64(),
        o.devices.map_or("the home's 7".to_string(), |n| n.to_string()),
        o.device_broker
    ));

    // Where everything lives.
    let temp;
    let base = match &o.data_dir {
        Some(d) => {
            // Old events at the backend would read as events no device sent.
            if std::fs::read_dir(d).is_ok_and(|mut e| e.next().is_some()) {
                anyhow::bail!(
                    "--data-dir {} is not empty: give a new or empty directory (a backend with events from another run cannot be checked)",
                    d.display()
                );
            }
            std::fs::create_dir_all(d)?;
            temp = None;
            d.canonicalize()?
        }
        None => {
            let t = tempfile::Builder::new().prefix("trygg-chaos-").tempdir()?;
            let p = t.path().to_path_buf();
            temp = Some(t);
            p
        }
    };
    let (bridge_dir, gateway_dir) = (base.join("bridge"), base.join("gateway"));
    std::fs::create_dir_all(&bridge_dir)?;
    let mut disk_skipped = None;
    let disk = if o.disk_fills > 0 {
        match SmallDisk::mount(&gateway_dir, o.disk_mib) {
            Ok(d) => Some(d),
            Err(e) => {
                let why = format!("cannot mount a {} MiB tmpfs for the gateway's data at {}: {e}. Disk fills need root (CAP_SYS_ADMIN); run as root, or pass --disk-fills 0", o.disk_mib, gateway_dir.display());
                ctx.say(format!("!!! DISK FILLS SKIPPED: {why}"));
                disk_skipped = Some(why);
                std::fs::create_dir_all(&gateway_dir)?;
                None
            }
        }
    } else {
        std::fs::create_dir_all(&gateway_dir)?;
        None
    };
    let plan = plan::plan(seed, &o.plan_options(disk.is_some()));

    // Ports, configs, the CA the gateway must trust.
    let port = services::free_port;
    let (backend_broker, api, proxy_port, device_port, local_api, enroll_port) =
        (port()?, port()?, port()?, port()?, port()?, port()?);
    let pki = trygg_uplink::tls::DevPki::ensure(&bridge_dir.join("tls"))?;
    let bridge_conf = base.join("bridge.toml");
    std::fs::write(
        &bridge_conf,
        format!(
            "data_dir = {:?}\n[broker]\nlisten = \"127.0.0.1:{backend_broker}\"\n[api]\nlisten = \"127.0.0.1:{api}\"\n[supervision]\ngap_grace_s = {GAP_GRACE_S}\n[console]\nlisten = \"127.0.0.1:0\"\n[enrollment]\nlisten = \"127.0.0.1:{enroll_port}\"\n",
            bridge_dir
        ),
    )?;
    let devices = workload::devices(o.devices);
    let mut gw = trygg_gateway::Config::default_config();
    gw.gateway_id = GATEWAY_ID.into();
    gw.data_dir = gateway_dir.clone();
    gw.uplink.url = format!("mqtts://127.0.0.1:{proxy_port}");
    gw.uplink.ca_file = pki.ca_cert.clone();
    // Sooner re-sends after a stall, and drops reported at once, so the
    // drain does not wait on the defaults meant for a home.
    gw.uplink.receipt_timeout_s = RECEIPT_TIMEOUT_S;
    gw.journal.drop_report_s = 1;
    gw.local_api.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, local_api));
    // No technician page: chaos kills and restarts the gateway, and a page
    // on a fixed port would only get in the way.
    gw.technician = None;
    gw.devices = devices.clone();
    // The gateway enrolls at its first start with a one-time code the
    // backend makes once it runs (below); enrollment goes straight to the
    // backend, the uplink through the link proxy.
    let enroll_code_file = base.join("enroll-code");
    gw.enrollment.url = format!("https://127.0.0.1:{enroll_port}");
    gw.enrollment.code_file = Some(enroll_code_file.clone());
    let identity = trygg_uplink::enroll::IdentityFiles::in_data_dir(&gw.data_dir);
    // Each simulated device connects with its own key (this process's).
    crate::keys::with_keys(&mut gw.devices);
    let device_broker = MqttUrl {
        host: "127.0.0.1".into(),
        port: device_port,
        tls: false,
    };
    match o.device_broker {
        DeviceBroker::Embedded => {
            gw.local_broker.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, device_port));
        }
        DeviceBroker::Mosquitto => {
            gw.local_broker.mode = trygg_gateway::config::BrokerMode::External;
            gw.local_broker.url = device_broker.to_string();
        }
    }
    gw.validate()?;
    let gateway_conf = base.join("gateway.toml");
    std::fs::write(&gateway_conf, toml::to_string(&gw)?)?;

    let exe = std::env::current_exe().context("finding this executable to run the services")?;
    let serve = |what: &str, conf: &Path| -> Vec<OsString> { vec![what.into(), conf.into()] };
    let mut bridge = Service::new(
        "bridge",
        exe.clone(),
        serve("serve-bridge", &bridge_conf),
        Readiness::Line("trygg-bridge ready:"),
        base.join("bridge.log"),
    );
    let mut gateway = Service::new(
        "gateway",
        exe.clone(),
        serve("serve-gateway", &gateway_conf),
        Readiness::Line("trygg-gateway ready:"),
        base.join("gateway.log"),
    );
    let mut mosquitto = match o.device_broker {
        DeviceBroker::Mosquitto => {
            let m = services::find_mosquitto(o.mosquitto.as_deref())?;
            let conf = base.join("mosquitto.conf");
            std::fs::write(&conf, services::mosquitto_conf(device_port))?;
            Some(Service::new(
                "mosquitto",
                m,
                vec!["-c".into(), conf.into()],
                Readiness::Port(SocketAddr::from((Ipv4Addr::LOCALHOST, device_port))),
                base.join("mosquitto.log"),
            ))
        }
        DeviceBroker::Embedded => None,
    };
    ctx.say(format!(
        "data and logs in {} (gateway.log, bridge.log{})",
        base.display(),
        if mosquitto.is_some() {
            ", mosquitto.log"
        } else {
            ""
        }
    ));

    // Start: backend, link, device broker, gateway, home.
    let cancel = CancellationToken::new();
    bridge.start(START_TIMEOUT).await?;
    let proxy = Arc::new(
        LinkProxy::start(
            SocketAddr::from((Ipv4Addr::LOCALHOST, proxy_port)),
            SocketAddr::from((Ipv4Addr::LOCALHOST, backend_broker)),
            cancel.clone(),
        )
        .await?,
    );
    if let Some(m) = mosquitto.as_mut() {
        m.start(START_TIMEOUT).await?;
    }
    if !identity.exists() {
        let made = trygg_uplink::enroll::create_code_via_api(
            SocketAddr::from((Ipv4Addr::LOCALHOST, api)),
            GATEWAY_ID,
            "Chaos home",
            3600,
            "trygg-sim chaos",
        )
        .await
        .context("the backend made no enrollment code")?;
        std::fs::write(&enroll_code_file, made["code"].as_str().unwrap_or_default())?;
    }
    gateway.start(START_TIMEOUT).await?;
    // Faults wait until the gateway has its certificate.
    let enrolled_by = tokio::time::Instant::now() + START_TIMEOUT;
    while !identity.exists() {
        if tokio::time::Instant::now() > enrolled_by {
            anyhow::bail!("the gateway did not enroll within {START_TIMEOUT:?} (see gateway.log)");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let api_base = format!("http://127.0.0.1:{api}");
    let local_base = format!("http://127.0.0.1:{local_api}");
    let stop_home = CancellationToken::new();
    let home = Workload::start(&devices, &device_broker, seed, &o.pace, stop_home.clone());
    ctx.say(format!(
        "up: backend api {api_base}, gateway api {local_base}, device broker {device_broker}, uplink via the link proxy on 127.0.0.1:{proxy_port}; {} faults planned",
        plan.len()
    ));
    let monitor = tokio::spawn(monitor(
        ctx.clone(),
        http.clone(),
        (local_base.clone(), gateway.life()),
        (api_base.clone(), bridge.life()),
        cancel.clone(),
    ));
    let status = tokio::spawn(status_lines(
        ctx.clone(),
        home_progress(&home),
        cancel.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The faults.
    let phase_start = Instant::now();
    let faults_began = ctx.t0.elapsed();
    let Plan {
        gateway: gw_steps,
        bridge: br_steps,
        mosquitto: mq_steps,
        link: link_steps,
        disk: disk_steps,
    } = plan.clone();
    let watch_end = CancellationToken::new();
    let mut actors = Vec::new();
    let mut done = Vec::new();
    for (svc, steps) in [
        (Some(gateway), gw_steps),
        (Some(bridge), br_steps),
        (mosquitto.take(), mq_steps),
    ] {
        let Some(svc) = svc else { continue };
        let d = CancellationToken::new();
        done.push(d.clone());
        actors.push(tokio::spawn(process_actor(
            svc,
            steps,
            phase_start,
            ctx.clone(),
            d,
            watch_end.clone(),
        )));
    }
    let link_done = tokio::spawn(link_actor(
        proxy.clone(),
        link_steps,
        phase_start,
        ctx.clone(),
    ));
    let disk = disk.map(Arc::new);
    let disk_done = tokio::spawn(disk_actor(
        disk.clone(),
        disk_steps,
        phase_start,
        ctx.clone(),
        http.clone(),
        local_base.clone(),
        (home.clone(), seed),
    ));
    for d in &done {
        d.cancelled().await;
    }
    let _ = link_done.await;
    let _ = disk_done.await;
    let faults_took = ctx.t0.elapsed() - faults_began;

    // Heal, stop producing, drain.
    proxy.set(LinkMode::Up);
    if let Some(d) = &disk {
        let _ = d.free();
    }
    stop_home.cancel();
    home.stopped().await;
    ctx.say(format!(
        "faults over; the home stops producing. Draining: every device outbox and the gateway's journal must empty (at most {} s)",
        o.drain_timeout.as_secs()
    ));
    let drain_began = Instant::now();
    let deadline = drain_began + o.drain_timeout;
    let mut drained_devices = false;
    while Instant::now() < deadline {
        if home_progress(&home)().2 == 0 {
            drained_devices = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Empty twice, 1.5 s apart: a report of telemetry dropped just before
    // the drain is raised within `drop_report_s` (1 s) and must go up too.
    let mut drained_journal = false;
    let mut empty_since: Option<Instant> = None;
    while Instant::now() < deadline {
        match journal_pending(&http, &local_base).await {
            Some(0) => {
                let since = *empty_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= Duration::from_millis(1500) {
                    drained_journal = true;
                    break;
                }
            }
            _ => empty_since = None,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let drain_took = drain_began.elapsed();
    ctx.say(format!(
        "drain {} in {:.1} s (device outboxes {}, gateway journal {})",
        if drained_devices && drained_journal {
            "done"
        } else {
            "INCOMPLETE"
        },
        drain_took.as_secs_f64(),
        if drained_devices {
            "empty"
        } else {
            "NOT empty"
        },
        if drained_journal {
            "empty"
        } else {
            "NOT empty"
        },
    ));
    // The backend's own counters, once more, before the check.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    watch_end.cancel();
    let mut services: Vec<Service> = Vec::new();
    for a in actors {
        if let Ok(s) = a.await {
            services.push(s);
        }
    }

    // What the backend holds. A gap the bridge has not alarmed yet may be
    // inside its grace period: look again after it.
    let logs: Vec<(String, crate::device::DeviceLog)> = home
        .devices
        .iter()
        .map(|(d, h)| (d.id.clone(), h.log()))
        .collect();
    let mut view = fetch_backend(&http, &api_base).await;
    if view
        .as_ref()
        .is_ok_and(|v| !verdict::check(GATEWAY_ID, &logs, v).silent_gaps.is_empty())
    {
        ctx.say(format!("lane gaps without a gap alarm yet: waiting out the bridge's grace period ({GAP_GRACE_S} s) and looking again"));
        tokio::time::sleep(Duration::from_secs(GAP_GRACE_S + 3)).await;
        view = fetch_backend(&http, &api_base).await;
    }
    if view
        .as_ref()
        .is_ok_and(|v| v.events.len() >= API_EVENT_LIMIT)
    {
        ctx.say(format!("the backend holds {API_EVENT_LIMIT} events or more, more than its API lists at once: stopping it and reading its store file"));
        if let Some(b) = services.iter_mut().find(|s| s.name == "bridge") {
            b.terminate(Duration::from_secs(20)).await;
        }
        let path = bridge_dir.join("bridge.redb");
        view = tokio::task::spawn_blocking(move || read_store(&path)).await?;
    }
    let (verdict, mut problems) = match view {
        Ok(view) => (verdict::check(GATEWAY_ID, &logs, &view), Vec::new()),
        Err(e) => (
            Verdict::default(),
            vec![format!("cannot read the backend: {e:#}")],
        ),
    };
    if !drained_journal {
        problems.push(format!(
            "NOT DRAINED: the gateway's journal still held records after {} s",
            o.drain_timeout.as_secs()
        ));
    }

    // Stop in order: the gateway (clean, so its exit status says something),
    // the backend, Mosquitto.
    cancel.cancel();
    let _ = monitor.await;
    let _ = status.await;
    let mut exits = BTreeMap::new();
    for name in ["gateway", "bridge", "mosquitto"] {
        if let Some(s) = services.iter_mut().find(|s| s.name == name) {
            if s.is_running() {
                let status = s.terminate(Duration::from_secs(20)).await;
                exits.insert(name, status);
                if name != "mosquitto" && !status.is_some_and(|s| s.success()) {
                    problems.push(format!(
                        "{name} did not stop cleanly on SIGTERM at the end ({})",
                        status.map_or("killed after 20 s".into(), |s| s.to_string())
                    ));
                }
            }
        }
    }
    drop(disk);
    problems.extend(ctx.tally().problems.iter().cloned());

    let report = summarize(
        &o,
        seed,
        &ctx,
        &plan,
        verdict,
        problems,
        disk_skipped,
        faults_took,
        drain_took,
        &services,
    );
    if let Some(path) = &o.report {
        std::fs::write(path, serde_json::to_string_pretty(&report.json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    match (temp, report.passed()) {
        (Some(t), true) => drop(t),
        (Some(t), false) => {
            let kept = t.keep();
            println!("chaos: data and logs kept in {}", kept.display());
        }
        (None, _) => {}
    }
    Ok(report)
}

/// A closure giving (sent, done, waiting) over the home's devices.
fn home_progress(home: &Workload) -> impl Fn() -> (u64, u64, u64) + Send + 'static {
    let devices: Vec<crate::device::DeviceHandle> =
        home.devices.iter().map(|(_, h)| h.clone()).collect();
    move || {
        let mut out = (0, 0, 0);
        for h in &devices {
            let l = h.log();
            let waiting = l.unreceipted() as u64;
            out.0 += l.sent.len() as u64;
            out.1 += l.sent.len() as u64 - waiting;
            out.2 += waiting;
        }
        out
    }
}

/// Waits until `when`, restarting `svc` if it ends by itself meanwhile.
async fn watch_until(svc: &mut Service, when: Instant, ctx: &Ctx, stop: &CancellationToken) {
    loop {
        if let Some(status) = svc.exited() {
            let msg = format!(
                "{} ENDED BY ITSELF ({status}); see {}; starting it again",
                svc.name,
                svc.log.display()
            );
            ctx.say(format!("!!! {msg}"));
            ctx.tally().problems.push(msg);
            restart(svc, ctx).await;
        }
        let now = Instant::now();
        if now >= when || stop.is_cancelled() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep((when - now).min(Duration::from_millis(200))) => {}
            _ = stop.cancelled() => {}
        }
    }
}

/// Starts `svc` again, trying for as long as it takes (a service that
/// cannot start is a problem, reported; the run goes on).
async fn restart(svc: &mut Service, ctx: &Ctx) {
    for attempt in 1..=30 {
        match svc.start(START_TIMEOUT).await {
            Ok(took) => {
                let mut t = ctx.tally();
                *t.restarts.entry(svc.name).or_default() += 1;
                let slowest = t.slowest_start.entry(svc.name).or_default();
                *slowest = (*slowest).max(took);
                drop(t);
                if took > Duration::from_secs(5) {
                    ctx.say(format!(
                        "{} took {:.1} s to start again",
                        svc.name,
                        took.as_secs_f64()
                    ));
                }
                return;
            }
            Err(e) => {
                let msg = format!("{} did not start (attempt {attempt}): {e:#}", svc.name);
                ctx.say(format!("!!! {msg}"));
                ctx.tally().problems.push(msg);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Kills and restarts one service on its schedule; afterwards keeps
/// watching it until `watch_end`. Returns it, running.
async fn process_actor(
    mut svc: Service,
    steps: Vec<Step>,
    phase_start: Instant,
    ctx: Arc<Ctx>,
    done: CancellationToken,
    watch_end: CancellationToken,
) -> Service {
    let n = steps.len();
    let never = CancellationToken::new();
    for (i, step) in steps.into_iter().enumerate() {
        watch_until(&mut svc, phase_start + step.at, &ctx, &never).await;
        let down = match step.fault {
            Fault::KillGateway { down }
            | Fault::KillBridge { down }
            | Fault::KillMosquitto { down } => down,
            _ => continue,
        };
        svc.kill9().await;
        *ctx.tally().kills.entry(svc.name).or_default() += 1;
        ctx.say(format!(
            "kill -9 {} ({}/{n}); down for {:.2} s",
            svc.name,
            i + 1,
            down.as_secs_f64()
        ));
        tokio::time::sleep(down).await;
        restart(&mut svc, &ctx).await;
    }
    done.cancel();
    let forever = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    watch_until(&mut svc, forever, &ctx, &watch_end).await;
    svc
}

async fn link_actor(proxy: Arc<LinkProxy>, steps: Vec<Step>, phase_start: Instant, ctx: Arc<Ctx>) {
    let n = steps.len();
    for (i, step) in steps.into_iter().enumerate() {
        tokio::time::sleep_until(phase_start + step.at).await;
        let Fault::Link { fault, lasts } = step.fault else {
            continue;
        };
        *ctx.tally().link.entry(fault.name()).or_default() += 1;
        match fault {
            LinkFault::Reset => {
                proxy.reset();
                ctx.say(format!(
                    "link: reset every uplink connection ({}/{n})",
                    i + 1
                ));
                continue;
            }
            LinkFault::Cut => proxy.set(LinkMode::Cut),
            LinkFault::Stall => proxy.set(LinkMode::Stall),
            LinkFault::Delay(d) => proxy.set(LinkMode::Delay(d)),
            LinkFault::Throttle(b) => proxy.set(LinkMode::Throttle(b)),
        }
        ctx.say(format!(
            "link: {fault} for {:.1} s ({}/{n})",
            lasts.as_secs_f64(),
            i + 1
        ));
        tokio::time::sleep(lasts).await;
        proxy.set(LinkMode::Up);
    }
}

async fn disk_actor(
    disk: Option<Arc<SmallDisk>>,
    steps: Vec<Step>,
    phase_start: Instant,
    ctx: Arc<Ctx>,
    http: reqwest::Client,
    local_base: String,
    (home, seed): (Workload, u64),
) {
    let Some(disk) = disk else { return };
    let n = steps.len();
    for (i, step) in steps.into_iter().enumerate() {
        tokio::time::sleep_until(phase_start + step.at).await;
        let Fault::DiskFill { lasts } = step.fault else {
            continue;
        };
        let d = disk.clone();
        let filled = tokio::task::spawn_blocking(move || d.fill()).await;
        let bytes = match filled {
            Ok(Ok(b)) => b,
            other => {
                let msg = format!("disk fill failed: {other:?}");
                ctx.say(format!("!!! {msg}"));
                ctx.tally().problems.push(msg);
                let _ = disk.free();
                continue;
            }
        };
        {
            let mut t = ctx.tally();
            t.disk_fills += 1;
            t.ballast_bytes = t.ballast_bytes.max(bytes);
        }
        ctx.say(format!(
            "disk: the gateway's {} MiB disk filled ({:.1} MiB ballast) for {:.1} s, and a burst of {DISK_BURST} telemetry events ({}/{n})",
            disk.size_mib,
            bytes as f64 / (1 << 20) as f64,
            lasts.as_secs_f64(),
            i + 1
        ));
        let until = Instant::now() + lasts;
        // Until the gateway notices, more bursts (it may have been killed
        // when the fill began, or had free pages left), and the fill is held
        // up to DISK_FILL_GRACE longer: a fill that never bites tests nothing.
        let hard_until = until + DISK_FILL_GRACE;
        home.burst(DISK_BURST, seed ^ (3000 + i as u64)).await;
        let mut noticed = false;
        let mut more = 0u64;
        while Instant::now() < until || (!noticed && Instant::now() < hard_until) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let health = http.get(format!("{local_base}/healthz")).send().await;
            if health.is_ok_and(|r| r.status().as_u16() == 503) {
                ctx.tally().full_seconds_noticed += 1;
                noticed = true;
            } else if !noticed {
                more += 1;
                home.burst(DISK_BURST / 3, seed ^ (3000 + i as u64) ^ (more << 32))
                    .await;
            }
        }
        if let Err(e) = disk.free() {
            let msg = format!("removing the ballast failed: {e}");
            ctx.say(format!("!!! {msg}"));
            ctx.tally().problems.push(msg);
        }
    }
}

async fn metrics_text(http: &reqwest::Client, url: &str) -> Option<String> {
    http.get(url).send().await.ok()?.text().await.ok()
}

async fn journal_pending(http: &reqwest::Client, local_base: &str) -> Option<u64> {
    let v: Value = http
        .get(format!("{local_base}/api/v1/status"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let p = &v["journal_pending"];
    Some(
        ["alarm", "care", "telemetry"]
            .iter()
            .map(|l| p[l].as_u64().unwrap_or(0))
            .sum(),
    )
}

/// Reads the services' counters once a second.
async fn monitor(
    ctx: Arc<Ctx>,
    http: reqwest::Client,
    (local_base, gw_life): (String, Arc<AtomicU32>),
    (api_base, br_life): (String, Arc<AtomicU32>),
    cancel: CancellationToken,
) {
    use trygg_uplink::metrics::read;
    // A read counts for a life of the process only if it did not restart
    // while the read was made.
    let same_life = |life: &AtomicU32, before: u32| {
        let now = life.load(Ordering::SeqCst);
        (now == before).then_some(now)
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let gw_before = gw_life.load(Ordering::SeqCst);
        let gw = metrics_text(&http, &format!("{local_base}/metrics")).await;
        let status: Option<Value> =
            match http.get(format!("{local_base}/api/v1/status")).send().await {
                Ok(r) => r.json().await.ok(),
                Err(_) => None,
            };
        let gw_read = gw.zip(same_life(&gw_life, gw_before));
        let br_before = br_life.load(Ordering::SeqCst);
        let br = metrics_text(&http, &format!("{api_base}/metrics")).await;
        let br_read = br.zip(same_life(&br_life, br_before));
        let mut guard = ctx.observed();
        let o = &mut *guard;
        if let Some((t, l)) = gw_read {
            for (counter, name) in [
                (&mut o.gw_duplicates, "device_events_duplicate_total"),
                (&mut o.gw_commit_failures, "journal_commit_failures_total"),
                (&mut o.gw_disk_full, "journal_disk_full_total"),
                (&mut o.gw_deferred, "journal_telemetry_deferred_total"),
                (&mut o.gw_dropped, "journal_telemetry_dropped_total"),
                (&mut o.gw_resends, "uplink_resends_total"),
                (&mut o.gw_set_aside, "journal_set_aside_total"),
            ] {
                counter.observe(l, read(&t, name, ""));
            }
        }
        if let Some(s) = status {
            let p = &s["journal_pending"];
            o.journal_pending = Some(
                ["alarm", "care", "telemetry"]
                    .iter()
                    .map(|l| p[l].as_u64().unwrap_or(0))
                    .sum(),
            );
            if let Some(e) = s["journal_error"].as_str() {
                o.journal_error = Some(e.to_string());
            }
        } else {
            o.journal_pending = None;
        }
        if let Some((t, l)) = br_read {
            for (counter, name) in [
                (&mut o.br_duplicates, "records_duplicate_total"),
                (&mut o.br_stored, "records_stored_total"),
                (&mut o.br_gaps, "sequence_gaps_total"),
            ] {
                counter.observe(l, read(&t, name, ""));
            }
        }
    }
}

/// A status line every 10 s.
async fn status_lines(
    ctx: Arc<Ctx>,
    progress: impl Fn() -> (u64, u64, u64),
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        let (sent, done, waiting) = progress();
        let o = ctx.observed();
        let journal = o
            .journal_pending
            .map_or("unreachable".to_string(), |p| p.to_string());
        let line = format!(
            "status: devices sent {sent}, receipted {done}, waiting {waiting}; gateway journal {journal}; backend stored >= {}",
            o.br_stored.total()
        );
        drop(o);
        ctx.say(line);
    }
}

/// Every stored event (arrival order) and every alarm, from the API.
async fn fetch_backend(http: &reqwest::Client, api_base: &str) -> anyhow::Result<BackendView> {
    let get = |path: String| {
        let http = http.clone();
        async move {
            let mut last = None;
            for _ in 0..10 {
                match http.get(&path).send().await {
                    Ok(r) if r.status().is_success() => return Ok(r.json::<Value>().await?),
                    Ok(r) => last = Some(anyhow::anyhow!("{path}: {}", r.status())),
                    Err(e) => last = Some(e.into()),
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(last.unwrap_or_else(|| anyhow::anyhow!("{path}: no answer")))
        }
    };
    let events = get(format!("{api_base}/api/v1/events?limit={API_EVENT_LIMIT}")).await?;
    let alarms = get(format!("{api_base}/api/v1/alarms")).await?;
    let mut events: Vec<BackendEvent> =
        serde_json::from_value(events["events"].clone()).context("reading /api/v1/events")?;
    // The API lists the newest first.
    events.reverse();
    let alarms: Vec<BackendAlarm> =
        serde_json::from_value(alarms["alarms"].clone()).context("reading /api/v1/alarms")?;
    Ok(BackendView { events, alarms })
}

/// Every stored event and alarm, from the store file of a stopped bridge.
fn read_store(path: &Path) -> anyhow::Result<BackendView> {
    let store = trygg_bridge::store::Store::open(path)?;
    let mut events: Vec<BackendEvent> =
        serde_json::from_value(serde_json::to_value(store.events(None, usize::MAX)?)?)?;
    events.reverse();
    let alarms: Vec<BackendAlarm> =
        serde_json::from_value(serde_json::to_value(store.alarms(None)?)?)?;
    Ok(BackendView { events, alarms })
}

fn lanes(l: &verdict::Lanes) -> String {
    format!(
        "{} (alarm {}, care {}, telemetry {})",
        l.iter().sum::<u64>(),
        l[0],
        l[1],
        l[2]
    )
}

/// Prints the summary and builds the report.
#[allow(clippy::too_many_arguments)]
fn summarize(
    o: &ChaosOptions,
    seed: u64,
    ctx: &Ctx,
    plan: &Plan,
    verdict: Verdict,
    problems: Vec<String>,
    disk_skipped: Option<String>,
    faults_took: Duration,
    drain_took: Duration,
    services: &[Service],
) -> ChaosReport {
    let t = ctx.tally();
    let ob = ctx.observed();
    let kills = |n: &str| t.kills.get(n).copied().unwrap_or(0);
    let restarts = |n: &str| t.restarts.get(n).copied().unwrap_or(0);
    let link_total: u32 = t.link.values().sum();
    let link_list = t
        .link
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    let embedded = o.device_broker == DeviceBroker::Embedded;
    let device_broker_restarts = if embedded {
        kills("gateway")
    } else {
        kills("mosquitto")
    };
    let v = &verdict;
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!(
        "\n=== trygg-sim chaos summary: seed {seed}, {} devices, device broker {:?}, faults {:.0} s, drain {:.1} s ===",
        device_count(o),
        o.device_broker,
        faults_took.as_secs_f64(),
        drain_took.as_secs_f64()
    ));
    line("faults injected".into());
    line(format!(
        "  gateway        SIGKILL {} (planned {}), started again {}",
        kills("gateway"),
        plan.gateway.len(),
        restarts("gateway")
    ));
    line(format!(
        "  bridge         SIGKILL {} (planned {}), started again {}",
        kills("bridge"),
        plan.bridge.len(),
        restarts("bridge")
    ));
    line(format!(
        "  brokers        device broker restarted {device_broker_restarts} ({}), backend broker restarted {} (embedded, with the bridge)",
        if embedded {
            "embedded, with the gateway"
        } else {
            "Mosquitto, killed on its own"
        },
        kills("bridge")
    ));
    line(format!(
        "  link           {link_total} faults: {}",
        if link_list.is_empty() {
            "none".into()
        } else {
            link_list.clone()
        }
    ));
    line(match &disk_skipped {
        Some(why) => format!("  disk           SKIPPED: {why}"),
        None if o.disk_fills == 0 => "  disk           no fills (--disk-fills 0)".into(),
        None => format!(
            "  disk           {} fills of a {} MiB tmpfs ({:.1} MiB ballast); the gateway said \"journal cannot commit\" for {} s of it, hit a full disk {} times, deferred telemetry {} times",
            t.disk_fills,
            o.disk_mib,
            t.ballast_bytes as f64 / (1 << 20) as f64,
            t.full_seconds_noticed,
            ob.gw_disk_full.total(),
            ob.gw_deferred.total()
        ),
    });
    line("events (from the devices' own records)".into());
    line(format!("  sent           {}", lanes(&v.sent)));
    line(format!(
        "  receipted      {} ({} of them first answered `duplicate`)",
        lanes(&v.receipted),
        v.receipted_as_duplicate
    ));
    line(format!(
        "  delivered      {} receipted events at the backend, exactly once each; {} more that the devices never got a receipt for",
        lanes(&v.delivered),
        v.delivered_unreceipted
    ));
    line(format!(
        "  duplicates     suppressed: {} re-sends answered `duplicate` by the gateway; at least {} re-sent records deduplicated by the backend",
        v.duplicate_receipts,
        ob.br_duplicates.total()
    ));
    line(format!(
        "  dropped        telemetry by the gateway's policy: {} reported as telemetry_dropped{}, {} receipted telemetry missing within that; refused with a receipt: {}",
        v.telemetry_dropped_reported,
        if v.drop_reports_supported {
            ""
        } else {
            " (TODO: this event model has no `telemetry_dropped` kind yet, so none can be reported)"
        },
        v.telemetry_missing_excused,
        v.rejected_telemetry
    ));
    line(format!(
        "  given up       by devices with a full outbox: {}",
        v.given_up_by_devices
    ));
    line(format!("  LOST           {}", v.lost.len()));
    line(format!("  DUPLICATED     {}", v.duplicated.len()));
    let alarms_total: u64 = v.alarms_by_kind.values().sum();
    line(format!(
        "  alarms         {alarms_total} at the backend, {} more events counted as repeats on open alarms; shown twice {}, missing {}; by kind: {}",
        v.alarm_repeats,
        v.alarms_twice.len(),
        v.alarms_missing.len(),
        v.alarms_by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if v.gap_alarms.is_empty() {
        line("  sequence gaps  none reported, none silent".into());
    } else {
        line(format!(
            "  sequence gaps  {} sequence_gap alarms, {} silent gaps:",
            v.gap_alarms.len(),
            v.silent_gaps.len()
        ));
        for g in &v.gap_alarms {
            line(format!(
                "                 lane {} {}..={}: {}",
                g.lane,
                g.first,
                g.last,
                if g.filled_later && g.closed {
                    "the records arrived later; the bridge closed the alarm"
                } else if g.filled_later {
                    "the records arrived later; the alarm is STILL OPEN"
                } else {
                    "the records never arrived"
                }
            ));
        }
    }
    if !v.gateway_events.is_empty() {
        line(format!(
            "  gateway's own  {}",
            v.gateway_events
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    line(format!(
        "  seen meanwhile uplink resends >= {}, journal commit failures >= {}, backend gap alarms raised >= {}, journals set aside >= {}",
        ob.gw_resends.total(),
        ob.gw_commit_failures.total(),
        ob.br_gaps.total(),
        ob.gw_set_aside.total()
    ));
    let mut failures = v.failures();
    failures.extend(problems.iter().cloned());
    if ob.gw_set_aside.total() > 0 {
        failures.push(format!(
            "JOURNAL SET ASIDE: the gateway found its journal damaged {} times after a kill",
            ob.gw_set_aside.total()
        ));
    }
    if failures.is_empty() {
        line("result: PASS".into());
    } else {
        line("result: FAIL".into());
        for f in &failures {
            line(format!("  - {f}"));
        }
        line(format!(
            "replay: trygg-sim chaos --seed {seed} {}",
            replay_args(o)
        ));
    }
    print!("{out}");
    let logs: Vec<String> = services
        .iter()
        .map(|s| s.log.display().to_string())
        .collect();
    let json = json!({
        "seed": seed,
        "passed": failures.is_empty(),
        "failures": failures,
        "devices": device_count(o),
        "device_broker": format!("{:?}", o.device_broker).to_lowercase(),
        "faults_seconds": faults_took.as_secs_f64(),
        "drain_seconds": drain_took.as_secs_f64(),
        "kills": {"gateway": kills("gateway"), "bridge": kills("bridge"), "mosquitto": kills("mosquitto")},
        "restarts": {"gateway": restarts("gateway"), "bridge": restarts("bridge"), "mosquitto": restarts("mosquitto")},
        "broker_restarts": {"device": device_broker_restarts, "backend": kills("bridge"), "mosquitto": kills("mosquitto")},
        "link_faults": t.link,
        "disk_fills": t.disk_fills,
        "disk_skipped": disk_skipped,
        "disk_full_seconds_noticed": t.full_seconds_noticed,
        "disk_full_hits_at_least": ob.gw_disk_full.total(),
        "telemetry_deferred_at_least": ob.gw_deferred.total(),
        "events": {
            "sent": v.sent_total(),
            "receipted": v.receipted_total(),
            "delivered": v.delivered_total(),
            "delivered_unreceipted": v.delivered_unreceipted,
            "duplicate_receipts": v.duplicate_receipts,
            "backend_duplicates_at_least": ob.br_duplicates.total(),
            "telemetry_dropped_reported": v.telemetry_dropped_reported,
            "telemetry_missing_excused": v.telemetry_missing_excused,
            "rejected_telemetry": v.rejected_telemetry,
            "given_up_by_devices": v.given_up_by_devices,
            "lost": v.lost.len(),
            "duplicated": v.duplicated.len(),
        },
        "alarms": v.alarms_by_kind,
        "sequence_gap_alarms": v.gap_alarms.len(),
        "silent_gaps": v.silent_gaps.len(),
        "logs": logs,
    });
    drop(ob);
    drop(t);
    ChaosReport {
        seed,
        verdict,
        failures,
        json,
    }
}

fn device_count(o: &ChaosOptions) -> usize {
    o.devices.unwrap_or(7)
}

/// The options again, for the replay line.
fn replay_args(o: &ChaosOptions) -> String {
    let mut a = format!("--cycles {}", o.cycles);
    if let Some(d) = o.duration {
        a.push_str(&format!(" --duration {}s", d.as_secs()));
    }
    if let Some(n) = o.devices {
        a.push_str(&format!(" --devices {n}"));
    }
    if o.device_broker == DeviceBroker::Mosquitto {
        a.push_str(" --device-broker mosquitto");
    }
    if let Some(n) = o.link_faults {
        a.push_str(&format!(" --link-faults {n}"));
    }
    if let Some(n) = o.broker_restarts {
        a.push_str(&format!(" --broker-restarts {n}"));
    }
    a.push_str(&format!(
        " --disk-fills {} --rate {} --alarm-every {} --care-every {}",
        o.disk_fills, o.pace.telemetry_per_s, o.pace.alarm_every_s, o.pace.care_every_s
    ));
    a
}
