//! The `trygg-gateway` command line; `main.rs` only calls [`main`].

use std::path::PathBuf;

use crate::config::{Config, DEFAULT_TOML};
use anyhow::Context;
use clap::{Parser, Subcommand};

/// The Trygg home gateway.
///
/// Collects events from safety alarms and sensors over MQTT, commits each
/// to its journal on disk before acknowledging it, and forwards them,
/// alarms first, to the municipal backend over MQTT v5 with TLS.
///
/// Start:        trygg-gateway --config gateway.toml
/// New config:   trygg-gateway config generate > gateway.toml
/// Try it all:   trygg-sim demo   (backend, gateway and a simulated home)
#[derive(Parser)]
#[command(name = "trygg-gateway", version, verbatim_doc_comment)]
struct Cli {
    /// Configuration file (TOML). Without it, the built-in defaults
    /// (`trygg-gateway config generate` shows them) are used.
    #[arg(long, short, env = "TRYGG_GATEWAY_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Run,
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// List the payloads the gateway refused, newest first (reads the journal
    /// of a stopped gateway; a running one serves them on its local API at
    /// /api/v1/dead-letters).
    DeadLetters {
        /// How many to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Print the default configuration, with comments, to stdout.
    Generate,
    /// Check a configuration file and say what is wrong with it.
    Check,
}

fn load(path: &Option<PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => Ok(Config::default_config()),
    }
}

/// Parses the command line and runs what it asks.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                trygg_uplink::broker::default_log_filter("info,rumqttc=warn").into()
            }),
        )
        .with_writer(std::io::stderr)
        .init();
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
            let path = cli
                .config
                .context("give the file to check with --config FILE")?;
            Config::load(&path)?;
            println!("{} is valid", path.display());
            Ok(())
        }
        Command::DeadLetters { limit } => {
            let config = load(&cli.config)?;
            let journal =
                crate::journal::Journal::open(&config.journal_path()).with_context(|| {
                    format!(
                        "opening {} (is the gateway still running?)",
                        config.journal_path().display()
                    )
                })?;
            for d in journal.reader().dead_letters(limit)? {
                println!("{}", serde_json::to_string(&d)?);
            }
            Ok(())
        }
        Command::Run => {
            let config = load(&cli.config)?;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async move {
                let (tx, rx) = tokio::sync::oneshot::channel::<crate::Ready>();
                let printer = tokio::spawn(async move {
                    if let Ok(r) = rx.await {
                        println!(
                            "trygg-gateway ready: device-broker={} local-api=http://{}",
                            r.device_broker, r.local_api
                        );
                    }
                });
                let shutdown = trygg_uplink::shutdown::signal();
                crate::run(config, Some(tx), shutdown).await?;
                let _ = printer.await;
                anyhow::Ok(())
            })
        }
    }
}
