//! The `trygg-sim` command line; `main.rs` only calls [`main`].

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{SimConfig, DEFAULT_TOML};
use crate::home::{press_topic, result_topic, PressResult};
use anyhow::Context;
use clap::{Parser, Subcommand};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use trygg_uplink::mqtt_url::MqttUrl;

/// Trygg's simulator: a whole alarm chain on one laptop, no hardware.
///
/// Run everything:   trygg-sim demo
/// Press a button:   trygg-sim press --device button-1      (while the demo runs)
/// Measure:          trygg-sim bench
/// Break things:     trygg-sim chaos --cycles 20             (faults, then a loss check)
#[derive(Parser)]
#[command(name = "trygg-sim", version, verbatim_doc_comment)]
struct Cli {
    /// Configuration file (TOML); `trygg-sim config generate` prints the
    /// defaults.
    #[arg(long, short, env = "TRYGG_SIM_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the backend, a gateway and a simulated home; Ctrl-C stops all.
    ///
    /// Prints `trygg demo ready: device-broker=... api=...` when up, then
    /// how to look at alarms and press a button from another terminal.
    Demo {
        /// Keep data in this directory instead of a temporary one.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Press a simulated device in a running demo and wait for the
    /// gateway's receipt.
    ///
    /// A safety button or pull cord is pressed on its (simulated) pin: the
    /// firmware debounces it and raises the alarm. Other devices, and any
    /// --kind, raise the event directly. Either way it goes through the
    /// device's firmware queue: it is re-sent until the gateway confirms it
    /// is on disk.
    Press {
        /// The device, e.g. button-1, fall-1, smoke-1, door-1.
        #[arg(long)]
        device: String,
        /// The event kind to raise (default: the device's usual alarm), e.g.
        /// button_press, fall, smoke_fire, test_alarm.
        #[arg(long)]
        kind: Option<String>,
        /// The demo's control broker (`control-broker=` in its ready line;
        /// the device broker lets only paired devices in).
        #[arg(long, default_value = "mqtt://127.0.0.1:1884")]
        broker: String,
    },
    /// Measure the gateway against Mosquitto, on loopback, in one run.
    ///
    /// Prints figures, not pass/fail: each is next to a peer measured in the
    /// same run, so read the ratios rather than the absolute numbers.
    ///
    /// 1. Durable ingest: --publishers device connections (MQTT 3.1.1, QoS 1)
    ///    send --events motion events (or what fits in --max-seconds) through
    ///    a gateway, each keeping up to --window events without a receipt.
    ///    An event counts once its device holds the gateway's `committed`
    ///    receipt, sent only after the journal commit holding it was fsynced.
    ///    Rate = events / (first publish .. last receipt). Run with the
    ///    embedded broker and with Mosquitto as the gateway's local broker;
    ///    the backend runs in-process and takes all.
    /// 2. Peer: the same publishers against a plain, in-memory Mosquitto
    ///    (PUBACK-paced, same window) with one QoS 1 subscriber; a message
    ///    counts once the subscriber has it. Mosquitto acks from RAM.
    ///    Goal: durable ingest >= 1.5x this.
    /// 3. Alarm latency: while --background-rate telemetry events/s flow
    ///    through the gateway, a safety button sends --alarms presses 20-50 ms
    ///    apart; each is timed from publish to its `new` alarm on the backend
    ///    API's event stream (and to its receipt at the device).
    /// 4. Peer: Mosquitto A bridged (`topic # out 1`) to Mosquitto B, the same
    ///    load and presses published to A and timed to a subscriber on B.
    ///    Goal: trygg's alarm p99 within 3x of the bridge's p99.
    ///
    /// For reference, the embedded broker (rumqttd) alone is measured like
    /// Mosquitto in 2: a ceiling for the gateway on that broker.
    ///
    /// Reading the table: `ratio` is events/s over Mosquitto's (above 1 is
    /// faster); `ev/commit` is the journal's mean group size, i.e. events per
    /// fsync; `missing` counts presses never seen; `bg ev/s` is the background
    /// rate actually achieved. Any shortfall is printed under "Problems".
    ///
    /// Needs Mosquitto for the peers (`apt-get install mosquitto`); without
    /// it the trygg figures are still measured. Progress goes to stderr, the
    /// table (or --json) to stdout. Defaults take 1-2 minutes; --quick
    /// is a smoke check of every phase in well under 30 s. Run it in release
    /// mode: cargo run --release -p trygg-sim -- bench
    ///
    /// The outage benchmarks are subcommands: `bench drain`, `bench memory`,
    /// `bench recovery`, `bench outage` (all three); see `bench drain --help`.
    #[command(verbatim_doc_comment, args_conflicts_with_subcommands = true)]
    Bench {
        /// A backlog of 1 000 000 events held through an outage: drained,
        /// held in memory, recovered after SIGKILL.
        #[command(subcommand)]
        backlog: Option<crate::bench::backlog::BacklogBench>,
        /// Small numbers, every phase: a smoke check (< 30 s).
        #[arg(long)]
        quick: bool,
        /// Print the figures as JSON instead of the table.
        #[arg(long)]
        json: bool,
        /// Events per ingest run, over all publishers
        /// [default: 200000, --quick 20000]...
        #[arg(long)]
        events: Option<u64>,
        /// ...or as many as fit in this many seconds, whichever is less
        /// [default: 30, --quick 5].
        #[arg(long)]
        max_seconds: Option<u64>,
        /// Device connections publishing in the ingest runs.
        #[arg(long, default_value_t = 8)]
        publishers: usize,
        /// Unconfirmed events each publisher may have at once.
        #[arg(long, default_value_t = 500)]
        window: usize,
        /// Button presses in the latency runs [default: 300, --quick 40].
        #[arg(long)]
        alarms: Option<usize>,
        /// Background telemetry events/s during the latency runs.
        #[arg(long, default_value_t = 1000)]
        background_rate: u32,
        /// Put the journals in a temporary directory here (default: the
        /// system's temporary directory). Use the disk you mean to measure.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The Mosquitto executable (default: found in the usual places).
        #[arg(long)]
        mosquitto: Option<PathBuf>,
    },
    /// Inject faults into a running chain and check that nothing was lost.
    ///
    /// Runs the backend (trygg-bridge) and a gateway as CHILD PROCESSES of
    /// this binary, a simulated home in this process, and between the
    /// gateway's uplink and the backend's broker a TCP proxy it controls.
    /// Then, at random moments drawn from --seed:
    ///
    ///   - SIGKILLs the gateway and the bridge (--cycles times each) and
    ///     starts them again on the same ports and data; their embedded
    ///     brokers die and restart with them;
    ///   - with --device-broker mosquitto, the devices and the gateway meet
    ///     at a Mosquitto (in memory) that is SIGKILLed and restarted too;
    ///   - breaks the uplink: cut (connections reset, new ones refused),
    ///     stall (open but silent), delay (latency), throttle (bytes/s),
    ///     reset (every connection closed abruptly, once);
    ///   - fills the gateway's disk: its data directory is a small tmpfs
    ///     (needs root; skipped, loudly, when it cannot be mounted) that a
    ///     ballast file fills for a few seconds while the home sends a
    ///     burst of telemetry. The gateway must go on.
    ///
    /// The devices (never killed) send telemetry all the time and alarms and
    /// care events now and then, through the firmware outbox: each keeps an
    /// event until the gateway's receipt. After the faults the home stops,
    /// everything heals, and the harness waits until every device outbox
    /// and the gateway's journal are empty (--drain-timeout). Then it
    /// checks, from the devices' own records:
    ///
    ///   - every event a device got a `committed` or `duplicate` receipt for
    ///     is stored at the backend exactly once (by event id
    ///     gateway/device/seq; telemetry the gateway reports dropped by its
    ///     policy, as `telemetry_dropped`, may be missing up to that count);
    ///   - every event that needs handling is shown once: as its own alarm
    ///     or as a repeat on the open alarm of its device and kind;
    ///   - no lane sequence number is missing at the backend without a
    ///     `sequence_gap` alarm naming it, once the bridge's grace period
    ///     for gaps has passed (gap alarms are listed either way);
    ///   - no valid event was rejected, nothing is stored that no device sent.
    ///
    /// One progress line per fault; a summary with counts at the end. Exit
    /// status 1 if anything was lost, duplicated, left undrained, or a
    /// service failed to start or stop. A failed run keeps its data and the
    /// services' logs (gateway.log, bridge.log) and prints a replay line:
    /// the same seed gives the same faults at the same offsets and the same
    /// events, though not the same timing of the system under test.
    ///
    /// Examples:
    ///   trygg-sim chaos                                  10 cycles, about 40 s
    ///   trygg-sim chaos --cycles 20 --seed 42
    ///   trygg-sim chaos --device-broker mosquitto --devices 60 --duration 10m
    ///   sudo trygg-sim chaos --disk-fills 3               (disk fills need root)
    ///
    /// Run it in release mode for long runs: cargo run --release -p trygg-sim -- chaos
    #[command(verbatim_doc_comment)]
    Chaos {
        /// The random seed for faults and events (default: a fresh one,
        /// printed at the start).
        #[arg(long)]
        seed: Option<u64>,
        /// SIGKILL-and-restart cycles of the gateway, and of the bridge.
        #[arg(long, default_value_t = 10)]
        cycles: u32,
        /// How long the faults go on, e.g. 90s, 10m, 1h [default: 3 s per
        /// cycle]. The cycles are spread over it.
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
        /// A care home of N devices (rooms of button, fall, door, bed,
        /// motion, dispenser, smoke) instead of the default home of 7.
        #[arg(long)]
        devices: Option<usize>,
        /// Where devices and gateway meet: the gateway's embedded broker, or
        /// a Mosquitto child that is killed on its own.
        #[arg(long, value_enum, default_value_t = crate::chaos::DeviceBroker::Embedded)]
        device_broker: crate::chaos::DeviceBroker,
        /// Uplink faults [default: --cycles, at least 5: one of each kind].
        #[arg(long)]
        link_faults: Option<u32>,
        /// Mosquitto kills, with --device-broker mosquitto [default:
        /// --cycles / 2, at least 1].
        #[arg(long)]
        broker_restarts: Option<u32>,
        /// Times the gateway's disk is filled (0: none, no tmpfs).
        #[arg(long, default_value_t = 1)]
        disk_fills: u32,
        /// Size of the gateway's tmpfs, MiB.
        #[arg(long, default_value_t = 64)]
        disk_mib: u64,
        /// Telemetry events per second, over the whole home.
        #[arg(long, default_value_t = 30.0)]
        rate: f64,
        /// Mean seconds between alarms in the home.
        #[arg(long, default_value_t = 1.0)]
        alarm_every: f64,
        /// Mean seconds between care events (medication, technical).
        #[arg(long, default_value_t = 1.0)]
        care_every: f64,
        /// The longest the drain may take after the faults, e.g. 120s.
        #[arg(long, value_parser = parse_duration, default_value = "120s")]
        drain_timeout: Duration,
        /// Keep data and logs here, a new or empty directory (default: a
        /// temporary directory, removed after a passing run).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The Mosquitto executable (default: found in the usual places).
        #[arg(long)]
        mosquitto: Option<PathBuf>,
        /// Also write the summary as JSON to this file.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Run a gateway from a config file (the chaos harness's child process).
    #[command(hide = true)]
    ServeGateway { config_file: PathBuf },
    /// Run the backend from a config file (the chaos harness's child process).
    #[command(hide = true)]
    ServeBridge { config_file: PathBuf },
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

/// Reads `90`, `90s`, `5m` or `1h`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a duration such as 90s, 5m or 1h"))?;
    let secs = match unit {
        "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("`{s}`: the unit must be s, m or h")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("`{s}` is not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Print the default configuration, with comments.
    Generate,
}

/// Parses the command line and runs what it asks.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                match cli.command {
                    // The bench's own progress is enough; the services' info
                    // lines (one per alarm) would bury it.
                    Command::Bench { .. } | Command::Chaos { .. } => {
                        trygg_uplink::broker::default_log_filter("warn").into()
                    }
                    _ => trygg_uplink::broker::default_log_filter(
                        "warn,trygg_gateway=info,trygg_bridge=info,trygg_sim=info",
                    )
                    .into(),
                }
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let sim = match &cli.config {
        Some(p) => SimConfig::load(p)?,
        None => SimConfig::default_config(),
    };
    match cli.command {
        Command::Config {
            action: ConfigAction::Generate,
        } => {
            print!("{DEFAULT_TOML}");
            Ok(())
        }
        Command::Demo { data_dir } => {
            let mut sim = sim;
            if let Some(d) = data_dir {
                sim.demo.data_dir = d;
            }
            tokio::runtime::Runtime::new()?.block_on(crate::demo::run_demo(
                sim,
                None,
                trygg_uplink::shutdown::signal(),
            ))
        }
        Command::Chaos {
            seed,
            cycles,
            duration,
            devices,
            device_broker,
            link_faults,
            broker_restarts,
            disk_fills,
            disk_mib,
            rate,
            alarm_every,
            care_every,
            drain_timeout,
            data_dir,
            mosquitto,
            report,
        } => {
            let opts = crate::chaos::ChaosOptions {
                seed,
                cycles,
                duration,
                devices,
                device_broker,
                link_faults,
                broker_restarts,
                disk_fills,
                disk_mib,
                pace: crate::chaos::workload::Pace {
                    telemetry_per_s: rate,
                    alarm_every_s: alarm_every,
                    care_every_s: care_every,
                },
                drain_timeout,
                data_dir,
                mosquitto,
                report,
            };
            // Ctrl-C drops the run: its children are killed and the tmpfs
            // unmounted as the runtime goes.
            let rt = tokio::runtime::Runtime::new()?;
            let outcome = rt.block_on(async {
                tokio::select! {
                    r = crate::chaos::run_chaos(opts) => Some(r),
                    _ = trygg_uplink::shutdown::signal() => None,
                }
            });
            drop(rt);
            let Some(report) = outcome else {
                anyhow::bail!("interrupted; nothing was checked");
            };
            let report = report?;
            if !report.passed() {
                // The summary above says what and how to replay it.
                std::process::exit(1);
            }
            Ok(())
        }
        Command::ServeGateway { config_file } => {
            let config = trygg_gateway::Config::load(&config_file)?;
            tokio::runtime::Runtime::new()?.block_on(async move {
                let (tx, rx) = tokio::sync::oneshot::channel::<trygg_gateway::Ready>();
                let printer = tokio::spawn(async move {
                    if let Ok(r) = rx.await {
                        println!(
                            "trygg-gateway ready: device-broker={} local-api=http://{}",
                            r.device_broker, r.local_api
                        );
                    }
                });
                trygg_gateway::run(config, Some(tx), trygg_uplink::shutdown::signal()).await?;
                let _ = printer.await;
                anyhow::Ok(())
            })
        }
        Command::ServeBridge { config_file } => {
            let config = trygg_bridge::Config::load(&config_file)?;
            tokio::runtime::Runtime::new()?.block_on(async move {
                let (tx, rx) = tokio::sync::oneshot::channel();
                tokio::spawn(async move {
                    if let Ok(ready) = rx.await {
                        println!("{ready}");
                    }
                });
                trygg_bridge::run(config, Some(tx), trygg_uplink::shutdown::signal()).await?;
                anyhow::Ok(())
            })
        }
        Command::Press {
            device,
            kind,
            broker,
        } => tokio::runtime::Runtime::new()?.block_on(press(&device, kind.as_deref(), &broker)),
        Command::Bench {
            backlog: Some(backlog),
            ..
        } => tokio::runtime::Runtime::new()?.block_on(crate::bench::backlog::main(backlog)),
        Command::Bench {
            backlog: None,
            quick,
            json,
            events,
            max_seconds,
            publishers,
            window,
            alarms,
            background_rate,
            data_dir,
            mosquitto,
        } => {
            let base = if quick {
                crate::bench::BenchOptions::quick()
            } else {
                crate::bench::BenchOptions::full()
            };
            let opts = crate::bench::BenchOptions {
                events: events.unwrap_or(base.events),
                max_seconds: max_seconds.unwrap_or(base.max_seconds),
                publishers,
                window,
                alarms: alarms.unwrap_or(base.alarms),
                background_rate,
                data_dir,
                mosquitto,
            };
            let report = tokio::runtime::Runtime::new()?.block_on(crate::bench::run_bench(opts))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report.json())?);
            } else {
                print!("{}", report.table());
            }
            Ok(())
        }
    }
}

async fn press(device: &str, kind: Option<&str>, broker: &str) -> anyhow::Result<()> {
    let url = MqttUrl::parse(broker)?;
    let mut opts = MqttOptions::new(
        format!("trygg-sim-press-{}", rand::random::<u32>()),
        url.host.clone(),
        url.port,
    );
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(opts, 10);
    let wait = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    client.subscribe(result_topic(device), QoS::AtLeastOnce).await?;
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    client.publish(press_topic(device), QoS::AtLeastOnce, false, kind.unwrap_or("").as_bytes().to_vec()).await?;
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    return Ok::<PressResult, anyhow::Error>(serde_json::from_slice(&p.payload)?);
                }
                Ok(_) => {}
                Err(e) => anyhow::bail!("cannot reach the demo's control broker at {url}: {e}. Is `trygg-sim demo` running? Its ready line names it (control-broker=)."),
            }
        }
    };
    let result = tokio::time::timeout(Duration::from_secs(15), wait)
        .await
        .context(
        "no answer within 15 s: is `trygg-sim demo` running, and is --broker its control-broker?",
    )??;
    if let Some(e) = result.error {
        anyhow::bail!("{e}");
    }
    match (result.status.as_str(), result.seq, result.receipt_ms) {
        ("committed", Some(seq), Some(ms)) => {
            println!(
                "{device}: {} sent as seq {seq}; the gateway committed it to disk in {ms:.1} ms.",
                result.kind
            );
            println!("It is on its way to the backend: look for it in the demo's output or at /api/v1/alarms?state=open.");
            Ok(())
        }
        (status, seq, _) => anyhow::bail!(
            "{device}: {} (seq {seq:?}) got `{status}` from the gateway",
            result.kind
        ),
    }
}
