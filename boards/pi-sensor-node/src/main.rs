use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use trygg_pi_sensor_node::{parse_broker, run, Hardware, NodeConfig, PinMap, STDIN_HELP};

/// A Raspberry Pi sensor node for Trygg: PIR motion, a door contact and an
/// optional alarm button on the GPIO header, running the same device logic
/// as Trygg's alarm devices (debounce, events kept on flash until the
/// gateway's receipt) and sending to the gateway's MQTT broker.
///
/// Pin map (BCM numbers; header pins in docs/boards.md, "Sensor node"):
/// pir=17 (active high, pull-down), door=27 (reed contact to GND, open
/// reads high), button=22 (to GND, pressed reads low; only if given).
///
/// Examples:
///
///   trygg-sensor-node --device-id motion-1 --broker mqtt://gateway.local:1883
///
///   trygg-sensor-node --device-id door-1 --pins door=27,button=22
///
///   # on a PC, pins driven from stdin:
///   trygg-sensor-node --simulated --device-id motion-1 --broker mqtt://127.0.0.1:1883 --flash /tmp/motion-1.flash
#[derive(Parser, Debug)]
#[command(name = "trygg-sensor-node", version, verbatim_doc_comment, after_help = after_help())]
struct Args {
    /// The node's id in the gateway's device register (e.g. motion-1).
    #[arg(long, env = "TRYGG_DEVICE_ID")]
    device_id: String,
    /// The gateway's device broker.
    #[arg(long, env = "TRYGG_BROKER", default_value = "mqtt://127.0.0.1:1883")]
    broker: String,
    /// The node's key (its MQTT password), as paired with the gateway
    /// (`trygg-gateway device add ID --key KEY`); the broker refuses a
    /// node without it. Prefer the environment variable: arguments show
    /// in the process list.
    #[arg(long, env = "TRYGG_DEVICE_KEY", hide_env_values = true)]
    key: Option<String>,
    /// Inputs and their BCM GPIO numbers: any of pir=, door=, button=.
    #[arg(long, default_value = "pir=17,door=27")]
    pins: PinMap,
    /// The file that keeps unreceipted events and the sequence counter
    /// across restarts (64 KiB). Default:
    /// /var/lib/trygg-sensor-node/DEVICE_ID.flash. One file per node.
    #[arg(long)]
    flash: Option<PathBuf>,
    /// No GPIO: simulated pins driven by lines on stdin (see below).
    #[arg(long)]
    simulated: bool,
}

fn after_help() -> String {
    format!(
        "With --simulated, stdin lines drive the pins:\n{STDIN_HELP}\n\n\
         Stdout has one line per thing the node did (ready, queued, receipt, link up/down);\n\
         logs go to stderr (RUST_LOG=debug for more). Exit status: 0 after SIGTERM or Ctrl-C,\n\
         2 if it cannot start (no GPIO, a bad argument, an unusable flash file)."
    )
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rumqttc=warn".into()),
        )
        .init();
    let (broker_host, broker_port) = match parse_broker(&args.broker) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let config = NodeConfig {
        flash: args.flash.unwrap_or_else(|| {
            PathBuf::from(format!(
                "/var/lib/trygg-sensor-node/{}.flash",
                args.device_id
            ))
        }),
        device_id: args.device_id,
        broker_host,
        broker_port,
        key: args.key,
        pins: args.pins,
        hardware: if args.simulated {
            Hardware::Simulated
        } else {
            Hardware::Gpio
        },
        settings: Default::default(),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let result = runtime.block_on(run(config, stdin, shutdown()));
    // tokio reads stdin on a blocking thread that no shutdown interrupts:
    // a runtime dropped normally would wait for the next line forever.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("trygg-sensor-node: error: {e}");
    ExitCode::from(2)
}

async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
