//! The `trygg-bridge` command line; `main.rs` only calls [`main`].

use std::path::PathBuf;

use crate::access::{Lang, NewUser, Resident, Role, UserError, MIN_PASSWORD};
use crate::config::{Config, DEFAULT_TOML};
use crate::store::{Store, StoreError};
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
    /// Console users: add one (the first administrator too), list them.
    ///
    /// These open the store in the config's data_dir; stop the bridge
    /// first (the store is one process's at a time).
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// The residents register: who a pseudonymous id is, and their unit.
    Resident {
        #[command(subcommand)]
        action: ResidentAction,
    },
    /// Put a gateway in a unit: its alarms without a registered resident
    /// go to that unit's staff.
    ///
    /// Example:
    ///
    ///   trygg-bridge gateway-unit --gateway gw-1 --unit sentrum
    #[command(verbatim_doc_comment)]
    GatewayUnit {
        /// The gateway's id (as in its config, `gateway_id`).
        #[arg(long)]
        gateway: String,
        /// The unit (e.g. `sentrum`).
        #[arg(long)]
        unit: String,
    },
}

#[derive(Subcommand)]
enum UserAction {
    /// Add a console user. There is no default user and no default
    /// password: make the first administrator with this.
    ///
    /// The password is asked for twice on the terminal (not echoed), or
    /// read as one line from stdin with --password-stdin. At least 10
    /// characters.
    ///
    /// Examples:
    ///
    ///   trygg-bridge user add --username admin --role administrator --units '*'
    ///   trygg-bridge user add --username kari --role operator --units sentrum \
    ///       --groups home-care --display-name "Kari Nordmann" --lang nb
    ///   printf '%s\n' "$PASSWORD" | trygg-bridge user add --username ola \
    ///       --role nurse --units sentrum,nord --password-stdin
    #[command(verbatim_doc_comment)]
    Add {
        /// 1-64 characters of a-z, 0-9, '.', '_' or '-'.
        #[arg(long)]
        username: String,
        /// operator, nurse, technician or administrator.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// The units whose residents and alarms the user sees,
        /// comma-separated, or '*' for all.
        #[arg(long, value_delimiter = ',', required = true)]
        units: Vec<String>,
        /// Escalation groups, comma-separated (e.g. home-care,response-centre).
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// The name shown to colleagues ("Taken by Kari"); the username if
        /// not given.
        #[arg(long)]
        display_name: Option<String>,
        /// The console's language for this user: nb (bokmål) or en.
        #[arg(long, default_value = "nb", value_parser = parse_lang)]
        lang: Lang,
        /// Read the password as one line from stdin instead of asking on
        /// the terminal (for scripts; never put it on the command line).
        #[arg(long)]
        password_stdin: bool,
    },
    /// List the users: username, role, units, groups, language, state.
    List,
}

#[derive(Subcommand)]
enum ResidentAction {
    /// Add a resident to the register, or replace the one with this id.
    /// The name stays here at the backend: gateways know only the id.
    ///
    /// Example:
    ///
    ///   trygg-bridge resident add --id r-7f3a --name "Ola Nordmann" \
    ///       --unit sentrum --address "Storgata 1, 0155 Oslo" \
    ///       --notes "Key safe by the door, code with the duty nurse"
    #[command(verbatim_doc_comment)]
    Add {
        /// The pseudonymous id the gateway's device register uses
        /// (`resident = "r-7f3a"`).
        #[arg(long)]
        id: String,
        #[arg(long)]
        name: String,
        /// The unit whose staff see this resident's alarms.
        #[arg(long)]
        unit: String,
        #[arg(long, default_value = "")]
        address: String,
        /// Notes for responders (key safe, pets, language, ...).
        #[arg(long, default_value = "")]
        notes: String,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s)
        .ok_or_else(|| format!("unknown role {s:?}: operator, nurse, technician or administrator"))
}

fn parse_lang(s: &str) -> Result<Lang, String> {
    Lang::parse(s).ok_or_else(|| format!("unknown language {s:?}: nb or en"))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Who the audit log names for a change made here: `cli:` and the login.
fn cli_actor() -> String {
    let who = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{who}")
}

/// A register command's outcome for a person: on error one line
/// `error: ...` (with its causes) on stderr and exit code 1, no backtrace.
fn plainly(result: anyhow::Result<()>) -> anyhow::Result<()> {
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

/// Opens the bridge's store in the config's data dir, or says plainly why
/// not (most often: the bridge itself has it open).
fn open_store(config: &Config) -> anyhow::Result<Store> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let path = config.data_dir.join("bridge.redb");
    match Store::open(&path) {
        Ok(s) => Ok(s),
        Err(StoreError::Redb(redb::Error::DatabaseAlreadyOpen)) => anyhow::bail!(
            "the bridge is running (its store {} is open in another process): stop it first \
             and run this again, or, while it runs, use the console's admin pages \
             (/admin/users, /admin/residents) as an administrator",
            path.display()
        ),
        Err(e) => Err(e).with_context(|| format!("cannot open the store {}", path.display())),
    }
}

/// The password: one line of stdin, or asked twice on the terminal.
fn read_new_password(from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("cannot read the password from stdin")?;
        let password = line.trim_end_matches(['\n', '\r']).to_string();
        if password.is_empty() {
            anyhow::bail!("no password on stdin (--password-stdin reads one line)");
        }
        return Ok(password);
    }
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "stdin is not a terminal, so the password cannot be asked for: give it as one \
             line on stdin with --password-stdin"
        );
    }
    let no_tty = |e: std::io::Error| {
        anyhow::anyhow!(
            "cannot ask for the password on a terminal ({e}); give it as one line on stdin \
             with --password-stdin"
        )
    };
    let first =
        rpassword::prompt_password("New password (at least 10 characters): ").map_err(no_tty)?;
    if first.chars().count() < MIN_PASSWORD {
        return Err(UserError::WeakPassword.into());
    }
    let second = rpassword::prompt_password("The same password again: ").map_err(no_tty)?;
    if first != second {
        anyhow::bail!("the two passwords differ; nothing was changed");
    }
    Ok(first)
}

fn user_command(config: &Config, action: UserAction) -> anyhow::Result<()> {
    match action {
        UserAction::Add {
            username,
            role,
            units,
            groups,
            display_name,
            lang,
            password_stdin,
        } => {
            let units: Vec<String> = units
                .iter()
                .map(|u| u.trim().to_string())
                .filter(|u| !u.is_empty())
                .collect();
            let groups: Vec<String> = groups
                .iter()
                .map(|g| g.trim().to_string())
                .filter(|g| !g.is_empty())
                .collect();
            // Open the store first: no point asking for a password the
            // store cannot take.
            let store = open_store(config)?;
            if store.user(&username)?.is_some() {
                return Err(UserError::Exists(username).into());
            }
            let password = read_new_password(password_stdin)?;
            let user = store.create_user(
                NewUser {
                    username,
                    display_name: display_name.unwrap_or_default(),
                    role,
                    units,
                    groups,
                    lang,
                    password,
                },
                &cli_actor(),
                now_ms(),
            )?;
            println!(
                "user {} added: role {}, units {}{}",
                user.username,
                user.role.as_str(),
                user.units.join(","),
                if user.groups.is_empty() {
                    String::new()
                } else {
                    format!(", groups {}", user.groups.join(","))
                }
            );
            Ok(())
        }
        UserAction::List => {
            let store = open_store(config)?;
            let users = store.users()?;
            if users.is_empty() {
                println!(
                    "no users yet: add the first administrator with\n  \
                     trygg-bridge user add --username admin --role administrator --units '*'"
                );
                return Ok(());
            }
            let now = now_ms();
            println!(
                "{:<20} {:<14} {:<20} {:<24} {:<4} STATE",
                "USERNAME", "ROLE", "UNITS", "GROUPS", "LANG"
            );
            for u in users {
                let state = if u.disabled {
                    "disabled"
                } else if u.locked_until_ms > now {
                    "locked out"
                } else {
                    "active"
                };
                println!(
                    "{:<20} {:<14} {:<20} {:<24} {:<4} {state}",
                    u.username,
                    u.role.as_str(),
                    u.units.join(","),
                    if u.groups.is_empty() {
                        "-".to_string()
                    } else {
                        u.groups.join(",")
                    },
                    u.lang.as_str(),
                );
            }
            Ok(())
        }
    }
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
        Command::User { action } => {
            plainly(load(cli.config.as_ref()).and_then(|c| user_command(&c, action)))
        }
        Command::Resident {
            action:
                ResidentAction::Add {
                    id,
                    name,
                    unit,
                    address,
                    notes,
                },
        } => plainly((|| {
            let config = load(cli.config.as_ref())?;
            let store = open_store(&config)?;
            let replaced = store.resident(&id)?.is_some();
            store.put_resident(
                &Resident {
                    id: id.clone(),
                    name,
                    unit: unit.clone(),
                    address,
                    notes,
                },
                &cli_actor(),
                now_ms(),
            )?;
            println!(
                "resident {id} {} in unit {unit}",
                if replaced { "replaced" } else { "added" }
            );
            Ok(())
        })()),
        Command::GatewayUnit { gateway, unit } => plainly((|| {
            let config = load(cli.config.as_ref())?;
            let store = open_store(&config)?;
            store.set_gateway_unit(&gateway, &unit, &cli_actor(), now_ms())?;
            println!("gateway {gateway} is in unit {unit}");
            Ok(())
        })()),
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
