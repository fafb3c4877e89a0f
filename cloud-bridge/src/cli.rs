//! The `trygg-bridge` command line; `main.rs` only calls [`main`].

use std::path::PathBuf;

use crate::config::{Config, DEFAULT_TOML};
use anyhow::Context;
use clap::{Parser, Subcommand};

/// Trygg's municipal backend: takes gateways' uplinks over MQTT v5/TLS,
/// commits every event before receipting it, raises alarms and serves the
/// staff API (acknowledge, close with a note, live stream, metrics).
///
/// With no config file it runs with the defaults: an embedded broker on
/// mqtts://127.0.0.1:8883 with a generated development CA, the API on
/// http://127.0.0.1:8080, and its data in ./trygg-bridge-data. When ready it
/// prints one line on stdout:
///
///   trygg-bridge ready: broker=mqtts://HOST:PORT api=http://HOST:PORT ca=PATH
///
/// Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) for more.
#[derive(Parser)]
#[command(name = "trygg-bridge", version, verbatim_doc_comment)]
struct Cli {
    /// A TOML config file. It needs to hold only what differs from the
    /// defaults (see `trygg-bridge config generate`); an unknown key is an
    /// error.
    #[arg(
        long,
        short,
        value_name = "FILE",
        env = "TRYGG_BRIDGE_CONFIG",
        global = true
    )]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bridge until Ctrl-C or SIGTERM (the default).
    Run,
    /// Work with the configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Print the default configuration, with a comment on every setting.
    /// Start a config file with `trygg-bridge config generate > bridge.toml`.
    Generate,
    /// Read the config (--config or the defaults), check it, and say what is
    /// wrong, naming the field.
    Check,
}

fn load(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Config::load(p).with_context(|| format!("config {}", p.display())),
        None => {
            let c = Config::default();
            c.validate()?;
            Ok(c)
        }
    }
}

/// Parses the command line and runs what it asks.
#[tokio::main]
pub async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Config {
            action: ConfigAction::Generate,
        } => {
            print!("{DEFAULT_TOML}");
            Ok(())
        }
        Command::Config {
            action: ConfigAction::Check,
        } => {
            load(cli.config.as_ref())?;
            println!("config is valid");
            Ok(())
        }
        Command::Run => {
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                        tracing_subscriber::EnvFilter::new(
                            trygg_uplink::broker::default_log_filter("info,rumqttc=warn"),
                        )
                    }),
                )
                .init();
            let config = load(cli.config.as_ref())?;
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                if let Ok(ready) = ready_rx.await {
                    println!("{ready}");
                }
            });
            crate::run(config, Some(ready_tx), trygg_uplink::shutdown::signal()).await?;
            Ok(())
        }
    }
}
