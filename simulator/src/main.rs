//! `trygg-sim`: see `trygg-sim --help`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use trygg_sim::config::{SimConfig, DEFAULT_TOML};
use trygg_sim::home::{press_topic, result_topic, PressResult};
use trygg_uplink::mqtt_url::MqttUrl;

/// Trygg's simulator: a whole alarm chain on one laptop, no hardware.
///
/// Run everything:   trygg-sim demo
/// Press a button:   trygg-sim press --device button-1      (while the demo runs)
/// Measure:          trygg-sim bench
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
    /// The press goes through the device's own outbox: it is re-sent until
    /// the gateway confirms it is on disk.
    Press {
        /// The device, e.g. button-1, fall-1, smoke-1, door-1.
        #[arg(long)]
        device: String,
        /// The event kind to raise (default: the device's usual alarm), e.g.
        /// button_press, fall, smoke_fire, test_alarm.
        #[arg(long)]
        kind: Option<String>,
        /// The demo's device broker (printed in its ready line).
        #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
        broker: String,
    },
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Print the default configuration, with comments.
    Generate,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,trygg_gateway=info,trygg_bridge=info,trygg_sim=info,rumqttd::server::broker=off".into()),
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
            tokio::runtime::Runtime::new()?.block_on(trygg_sim::demo::run_demo(
                sim,
                None,
                shutdown_signal(),
            ))
        }
        Command::Press {
            device,
            kind,
            broker,
        } => tokio::runtime::Runtime::new()?.block_on(press(&device, kind.as_deref(), &broker)),
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
                Err(e) => anyhow::bail!("cannot reach the demo's device broker at {url}: {e}. Is `trygg-sim demo` running? Its ready line names the broker."),
            }
        }
    };
    let result = tokio::time::timeout(Duration::from_secs(15), wait)
        .await
        .context(
        "no answer within 15 s: is `trygg-sim demo` running, and is --broker its device-broker?",
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

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
