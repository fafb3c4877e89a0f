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
    /// One-time enrollment codes: make one for a gateway a technician is
    /// about to install, list those made.
    ///
    /// These work whether the bridge runs or not: with the bridge stopped
    /// they open its store, while it runs they ask its service API
    /// ([api] listen, loopback).
    EnrollCode {
        #[command(subcommand)]
        action: EnrollCodeAction,
    },
    /// Enrolled gateways: list their certificates, revoke one.
    Gateway {
        #[command(subcommand)]
        action: GatewayAction,
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
enum EnrollCodeAction {
    /// Make a one-time code for one gateway at one site. It is printed
    /// once (the backend keeps only its hash) and spent by its first use.
    ///
    /// Example:
    ///
    ///   trygg-bridge enroll-code create --gateway gw-123 --site "Frogner 12" --valid 24h
    #[command(verbatim_doc_comment)]
    Create {
        /// The gateway's id (its config's `gateway_id`).
        #[arg(long)]
        gateway: String,
        /// Where it is installed (an address or a name staff know).
        #[arg(long)]
        site: String,
        /// How long the code is valid: e.g. 30m, 24h, 7d (at most 30d).
        #[arg(long, default_value = "24h", value_parser = parse_duration_ms)]
        valid: u64,
    },
    /// List the codes made: gateway, site, who made it, state.
    List,
}

#[derive(Subcommand)]
enum GatewayAction {
    /// List the certificates issued to gateways, revoked or not.
    List,
    /// Revoke every certificate of a gateway (stolen, decommissioned,
    /// replaced): the uplink refuses it from its next connection attempt.
    /// Audited. Its unused enrollment codes are spent too.
    ///
    /// Example:
    ///
    ///   trygg-bridge gateway revoke gw-123 --reason "kit stolen"
    #[command(verbatim_doc_comment)]
    Revoke {
        /// The gateway's id.
        gateway: String,
        /// Why (kept in the audit log and on the certificate).
        #[arg(long)]
        reason: String,
    },
}

/// `30m`, `24h`, `7d`, `90s` or plain seconds, in ms.
fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration: write e.g. 30m, 24h or 7d"))?;
    let unit_ms = match unit {
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d (e.g. 24h)")),
    };
    Ok(n.saturating_mul(unit_ms))
}

/// Where a command that must also work while the bridge runs goes: the
/// store (bridge stopped) or the running bridge's loopback service API.
enum Backend {
    Store(Store),
    Api(std::net::SocketAddr),
}

fn open_store_or_api(config: &Config) -> anyhow::Result<Backend> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let path = config.data_dir.join("bridge.redb");
    match Store::open(&path) {
        Ok(s) => Ok(Backend::Store(s)),
        Err(StoreError::Redb(redb::Error::DatabaseAlreadyOpen)) => {
            if config.api.listen.port() == 0 {
                anyhow::bail!(
                    "the bridge is running, and its service API has no fixed port ([api] listen                      ends in :0) to ask it through: set one, or stop the bridge and run this again"
                );
            }
            Ok(Backend::Api(config.api.listen))
        }
        Err(e) => Err(e).with_context(|| format!("cannot open the store {}", path.display())),
    }
}

/// The JSON answer of the running bridge's API, or its error in plain words.
async fn api_answer(
    call: Result<(u16, Vec<u8>), trygg_uplink::enroll::EnrollError>,
    ok: u16,
) -> anyhow::Result<serde_json::Value> {
    let (status, body) = call.map_err(|e| {
        anyhow::anyhow!("the bridge's store is in use but its service API does not answer: {e}")
    })?;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if status != ok {
        anyhow::bail!(
            "{}",
            v["error"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| format!("the bridge answered HTTP {status}"))
        );
    }
    Ok(v)
}

async fn enroll_code_command(config: &Config, action: EnrollCodeAction) -> anyhow::Result<()> {
    match action {
        EnrollCodeAction::Create {
            gateway,
            site,
            valid,
        } => {
            let (code, expires_ms) = match open_store_or_api(config)? {
                Backend::Store(store) => {
                    let (code, record) = store.create_enroll_code(
                        &gateway,
                        &site,
                        valid,
                        &cli_actor(),
                        "cli",
                        now_ms(),
                    )?;
                    (code, record.expires_ms)
                }
                Backend::Api(api) => {
                    let v = api_answer(
                        trygg_uplink::enroll::api_post(
                            api,
                            "/api/v1/enrollment-codes",
                            &serde_json::json!({
                                "gateway": gateway,
                                "site": site,
                                "valid_s": valid / 1000,
                                "by": cli_actor(),
                            }),
                        )
                        .await,
                        201,
                    )
                    .await?;
                    (
                        v["code"].as_str().unwrap_or_default().to_string(),
                        v["expires_ms"].as_u64().unwrap_or_default(),
                    )
                }
            };
            let e = &config.enrollment.listen;
            println!(
                "Enrollment code for gateway {gateway} at \"{site}\":\n\n    {code}\n\n\
                 Valid until {}, for one use. It is shown only now (the backend keeps only its\n\
                 hash): give it to the technician installing the gateway. On the gateway, run\n\n    \
                 trygg-gateway enroll --code {code}\n\n\
                 The gateway gets its certificate from this backend's enrollment endpoint\n\
                 (https://HOST:{}, its config's [enrollment] url) and then connects to the uplink\n\
                 with it. A wrong, used or expired code is refused and raised as an access_refused\n\
                 technical alarm.",
                trygg_uplink::enroll::utc_text(expires_ms),
                e.port()
            );
            Ok(())
        }
        EnrollCodeAction::List => {
            let codes: Vec<crate::enrollment::EnrollCode> = match open_store_or_api(config)? {
                Backend::Store(store) => store.enroll_codes()?,
                Backend::Api(api) => {
                    let v = api_answer(
                        trygg_uplink::enroll::api_get(api, "/api/v1/enrollment-codes").await,
                        200,
                    )
                    .await?;
                    serde_json::from_value(v["codes"].clone()).context("the bridge's answer")?
                }
            };
            if codes.is_empty() {
                println!("no enrollment codes yet: make one with\n  trygg-bridge enroll-code create --gateway ID --site \"ADDRESS\"");
                return Ok(());
            }
            let now = now_ms();
            println!(
                "{:<20} {:<24} {:<16} {:<22} STATE",
                "GATEWAY", "SITE", "MADE BY", "EXPIRES"
            );
            for c in codes {
                let state = match c.used_ms {
                    Some(at) => format!("used {}", trygg_uplink::enroll::utc_text(at)),
                    None if c.expires_ms <= now => "expired".to_string(),
                    None => "open".to_string(),
                };
                println!(
                    "{:<20} {:<24} {:<16} {:<22} {state}",
                    c.gateway,
                    c.site,
                    c.created_by,
                    trygg_uplink::enroll::utc_text(c.expires_ms)
                );
            }
            Ok(())
        }
    }
}

async fn gateway_command(config: &Config, action: GatewayAction) -> anyhow::Result<()> {
    match action {
        GatewayAction::List => {
            let certs: Vec<crate::enrollment::GatewayCert> = match open_store_or_api(config)? {
                Backend::Store(store) => store.gateway_certs()?,
                Backend::Api(api) => {
                    let v = api_answer(
                        trygg_uplink::enroll::api_get(api, "/api/v1/gateways").await,
                        200,
                    )
                    .await?;
                    serde_json::from_value(v["certificates"].clone())
                        .context("the bridge's answer")?
                }
            };
            if certs.is_empty() {
                println!("no gateway is enrolled yet (trygg-bridge enroll-code create, then trygg-gateway enroll on the gateway)");
                return Ok(());
            }
            let now = now_ms();
            println!(
                "{:<20} {:<24} {:<18} {:<22} STATE",
                "GATEWAY", "SITE", "CERTIFICATE", "EXPIRES"
            );
            for c in certs {
                let state = match &c.revoked {
                    Some(r) => format!(
                        "revoked {} by {}: {}",
                        trygg_uplink::enroll::utc_text(r.at_ms),
                        r.by,
                        r.reason
                    ),
                    None if c.not_after_ms <= now => "expired".into(),
                    None => "valid".into(),
                };
                println!(
                    "{:<20} {:<24} {:<18} {:<22} {state}",
                    c.gateway,
                    c.site,
                    &c.fingerprint[..16],
                    trygg_uplink::enroll::utc_text(c.not_after_ms)
                );
            }
            Ok(())
        }
        GatewayAction::Revoke { gateway, reason } => {
            if reason.trim().is_empty() {
                anyhow::bail!("give a --reason (stolen, decommissioned, replaced, ...): it is kept in the audit log");
            }
            let revoked = match open_store_or_api(config)? {
                Backend::Store(store) => {
                    store.revoke_gateway(&gateway, &cli_actor(), &reason, "cli", now_ms())?
                }
                Backend::Api(api) => {
                    let v = api_answer(
                        trygg_uplink::enroll::api_post(
                            api,
                            &format!("/api/v1/gateways/{gateway}/revoke"),
                            &serde_json::json!({ "by": cli_actor(), "reason": reason }),
                        )
                        .await,
                        200,
                    )
                    .await?;
                    v["revoked"].as_u64().unwrap_or_default() as usize
                }
            };
            if revoked == 0 {
                println!("gateway {gateway} held no valid certificate: nothing revoked (recorded in the audit log)");
            } else {
                println!(
                    "gateway {gateway}: {revoked} certificate(s) revoked; the uplink refuses it from its \
                     next connection attempt. To bring it back, enroll it again with a new code."
                );
            }
            Ok(())
        }
    }
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
        Command::EnrollCode { action } => plainly(
            async {
                let config = load(cli.config.as_ref())?;
                enroll_code_command(&config, action).await
            }
            .await,
        ),
        Command::Gateway { action } => plainly(
            async {
                let config = load(cli.config.as_ref())?;
                gateway_command(&config, action).await
            }
            .await,
        ),
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
