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
/// Devices:      trygg-gateway --config gateway.toml device list
/// Test alarm:   trygg-gateway --config gateway.toml test-alarm --device button-1
/// Technicians:  trygg-gateway --config gateway.toml technician add kari.tekniker
/// End service:  trygg-gateway --config gateway.toml decommission
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
    /// Enroll this gateway with the backend: exchange a one-time code for
    /// the gateway's client certificate (mutual TLS on the uplink).
    ///
    /// The gateway makes its private key here ({data_dir}/identity/
    /// gateway.key, readable by its user only); only a certificate request
    /// goes to the backend's enrollment endpoint ([enrollment] url, over
    /// HTTPS trusted via uplink.ca_file). Running it again with a new code
    /// renews the certificate. A running gateway picks the new certificate
    /// up within seconds.
    ///
    /// Example:
    ///   trygg-gateway -c /etc/trygg/gateway.toml enroll --code K7QX-M2PD-9RTF-H4WC
    #[command(verbatim_doc_comment)]
    Enroll {
        /// The one-time code from the backend (trygg-bridge enroll-code create).
        #[arg(long)]
        code: String,
    },
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
    /// Pair, list, show, swap and remove devices (asks the running gateway).
    ///
    /// The running gateway owns the device register (kept in its journal);
    /// these commands ask it through its local API (`local_api.listen` in
    /// the config, or --api). A change is durable when the command returns,
    /// and the gateway takes or refuses the device's events from then on,
    /// without a restart.
    ///
    /// Examples:
    ///   trygg-gateway -c /etc/trygg/gateway.toml device list
    ///   trygg-gateway -c /etc/trygg/gateway.toml device add button-2 --type safety_button --room bedroom --resident r-7f3a
    ///   trygg-gateway -c /etc/trygg/gateway.toml device show button-2
    ///   trygg-gateway -c /etc/trygg/gateway.toml device swap button-2 button-9   # broken button-2 replaced by button-9
    ///   trygg-gateway -c /etc/trygg/gateway.toml device remove button-9
    ///   trygg-gateway -c /etc/trygg/gateway.toml device list --json | jq '.devices[].health'
    #[command(verbatim_doc_comment)]
    Device {
        #[command(subcommand)]
        action: DeviceAction,
        #[command(flatten)]
        out: ApiArgs,
    },
    /// Send a test alarm end to end and wait for the backend's confirmation.
    ///
    /// The gateway raises a `test_alarm` event (technical, green: the
    /// backend records it as a test and opens no care alarm) about the
    /// device, with its room and resident, commits it, and waits until the
    /// backend has receipted it. Prints the time it took; exits non-zero if
    /// the backend has not confirmed it within --timeout-s (it stays
    /// committed on the gateway and goes up when the uplink is back).
    ///
    /// Examples:
    ///   trygg-gateway -c /etc/trygg/gateway.toml test-alarm --device button-1
    ///   trygg-gateway -c /etc/trygg/gateway.toml test-alarm            # as the gateway itself
    #[command(verbatim_doc_comment)]
    TestAlarm {
        /// The paired device the test is about (its room and resident go
        /// with it). Without it, the gateway itself.
        #[arg(long)]
        device: Option<String>,
        /// How long to wait for the backend's confirmation, in seconds (at most 300).
        #[arg(long, default_value_t = 30)]
        timeout_s: u64,
        #[command(flatten)]
        out: ApiArgs,
    },
    /// End this gateway's service for good: deliver what it holds, have the
    /// backend revoke it, then wipe its journal, keys and settings.
    ///
    /// Asks the running gateway (its local API). It goes on taking alarms
    /// while it delivers; once its journal is empty it asks the backend to
    /// revoke its certificate and stop supervising it, and on the backend's
    /// word it stops, erases its data key (what is left on the card can
    /// never be read), removes its data directory's contents and its
    /// key-encryption key file, and leaves a DECOMMISSIONED note so it will
    /// not start again. This command then removes the config file (unless
    /// --keep-config). If anything fails before the wipe, nothing is wiped
    /// and the gateway goes on serving.
    ///
    /// Examples:
    ///   trygg-gateway -c /etc/trygg/gateway.toml decommission
    ///   trygg-gateway -c /etc/trygg/gateway.toml decommission --yes --deliver-within-s 1800
    ///   trygg-gateway -c /etc/trygg/gateway.toml decommission --force   # backend gone for good: what is held is LOST
    #[command(verbatim_doc_comment)]
    Decommission {
        /// Do not ask for the gateway id to confirm (for scripts).
        #[arg(long)]
        yes: bool,
        /// Skip delivery and the backend's revocation: for a backend that
        /// is gone for good. What the journal still holds is LOST, and the
        /// backend must revoke this gateway by hand.
        #[arg(long)]
        force: bool,
        /// How long to wait for the journal to be delivered, seconds.
        #[arg(long, default_value_t = 600)]
        deliver_within_s: u64,
        /// Leave the config file (it names the gateway and where its
        /// devices are).
        #[arg(long)]
        keep_config: bool,
        #[command(flatten)]
        out: ApiArgs,
    },
    /// Technician accounts for the gateway's web page (`[technician]`).
    ///
    /// The accounts live on this gateway only, in data_dir/technicians.json
    /// (argon2id hashes, never a password), and work whether the gateway
    /// runs or not: a running gateway reads the file at every login and
    /// request, so a removed account or changed password ends that
    /// technician's sessions at once. Every change is logged in
    /// data_dir/technician-audit.log.
    ///
    /// The page: https://<gateway's address>:8443/ (`[technician] listen`).
    /// The browser warns about the gateway's own certificate: compare the
    /// SHA-256 fingerprint it shows with `technician fingerprint`.
    ///
    /// Examples:
    ///   trygg-gateway -c /etc/trygg/gateway.toml technician add kari.tekniker
    ///   echo "$PASSWORD" | trygg-gateway -c /etc/trygg/gateway.toml technician add kari.tekniker --password-stdin
    ///   trygg-gateway -c /etc/trygg/gateway.toml technician list
    ///   trygg-gateway -c /etc/trygg/gateway.toml technician passwd kari.tekniker
    ///   trygg-gateway -c /etc/trygg/gateway.toml technician remove kari.tekniker
    ///   trygg-gateway -c /etc/trygg/gateway.toml technician fingerprint
    #[command(verbatim_doc_comment)]
    Technician {
        #[command(subcommand)]
        action: TechnicianAction,
    },
}

#[derive(Subcommand)]
enum TechnicianAction {
    /// Make an account. The password (at least 10 characters) is asked
    /// twice on the terminal, hidden, or read as one line from stdin with
    /// --password-stdin (for scripts).
    Add {
        /// 1-64 of a-z 0-9 . _ - (e.g. kari.tekniker; a work id is fine).
        username: String,
        /// Read the password as one line from stdin instead of asking.
        #[arg(long)]
        password_stdin: bool,
    },
    /// The accounts, with when each was made and its password last changed.
    List,
    /// Delete an account; its sessions end at their next request.
    Remove { username: String },
    /// Set a new password; the account's sessions end at their next request.
    Passwd {
        username: String,
        /// Read the password as one line from stdin instead of asking.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Print the SHA-256 fingerprint of the page's certificate (made on
    /// first start), to compare with what the phone's browser shows.
    Fingerprint,
}

#[derive(clap::Args)]
struct ApiArgs {
    /// Print JSON instead of text (for scripts).
    #[arg(long, global = true)]
    json: bool,
    /// The running gateway's local API, e.g. 127.0.0.1:9464 (default:
    /// `local_api.listen` of the config).
    #[arg(long, global = true, env = "TRYGG_GATEWAY_API")]
    api: Option<String>,
}

#[derive(Subcommand)]
enum DeviceAction {
    /// Every paired device with its health: battery, signal, last message,
    /// supervision state (ok, silent, off).
    List,
    /// One device and its health.
    Show { id: String },
    /// Pair a device: its events are taken from now on.
    ///
    /// Example:
    ///   trygg-gateway device add button-2 --type safety_button --room bedroom --resident r-7f3a
    #[command(verbatim_doc_comment)]
    Add {
        /// The device's id, as in its topics (1-64 of A-Z a-z 0-9 - _).
        id: String,
        /// safety_button, pull_cord, fall_sensor, door_sensor, bed_sensor,
        /// motion_sensor, smoke_detector, water_sensor, epilepsy_sensor,
        /// medicine_dispenser or thermometer.
        #[arg(long = "type")]
        device_type: String,
        /// Where it is, e.g. bedroom.
        #[arg(long)]
        room: Option<String>,
        /// The resident's pseudonymous id (never a name), e.g. r-7f3a.
        #[arg(long)]
        resident: Option<String>,
        /// Its supervision period in seconds instead of its type's; 0 turns
        /// supervision off.
        #[arg(long)]
        supervision_s: Option<u64>,
        /// The device's key (its MQTT password), from its label. Left out,
        /// the gateway generates one and prints it once: load it into the
        /// device.
        #[arg(long)]
        key: Option<String>,
    },
    /// Replace a device: every setting (type, room, resident, supervision
    /// period) moves to NEW_ID in one step; OLD_ID is refused from then on.
    /// The replacement gets its own key (--key, or one generated and
    /// printed once).
    ///
    /// Example:
    ///   trygg-gateway device swap button-2 button-9 --key K7P2-9XQ4-...
    #[command(verbatim_doc_comment)]
    Swap {
        old_id: String,
        new_id: String,
        #[arg(long)]
        key: Option<String>,
    },
    /// Give a paired device a new key (the old one stops working at its
    /// next connect).
    Rekey {
        id: String,
        #[arg(long)]
        key: Option<String>,
    },
    /// Unpair a device: it cannot connect, and its events get `rejected`
    /// (unknown_device), from now on.
    Remove { id: String },
    /// Unknown devices asking to join (first contact, embedded broker).
    Pending,
    /// Accept a device asking to join: it is paired with the key it
    /// presented, and the events it kept are taken.
    ///
    /// Example:
    ///   trygg-gateway device accept button-5 --type safety_button --room hall --resident r-7f3a
    #[command(verbatim_doc_comment)]
    Accept {
        id: String,
        #[arg(long = "type")]
        device_type: String,
        #[arg(long)]
        room: Option<String>,
        #[arg(long)]
        resident: Option<String>,
        #[arg(long)]
        supervision_s: Option<u64>,
    },
    /// Reject a device asking to join (it may ask again).
    Reject { id: String },
    /// Let unknown devices ask to join for a while, even with
    /// `first_contact = false` (embedded broker).
    PairingWindow {
        /// How long, 1 to 60.
        #[arg(long, default_value_t = 10)]
        minutes: u64,
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

/// A technician's command that failed: its message alone on stderr (no
/// backtrace), exit status 1.
fn exit_on_error(result: anyhow::Result<()>) -> anyhow::Result<()> {
    if let Err(e) = result {
        eprintln!("trygg-gateway: {e:#}");
        std::process::exit(1);
    }
    Ok(())
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
            let sealer =
                crate::seal::existing_sealer(&config.key_source()?, &config.data_key_path())?;
            let journal = crate::journal::Journal::open_sealed(
                &config.journal_path(),
                std::sync::Arc::new(sealer),
            )
            .with_context(|| {
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
        Command::Device { action, out } => {
            let config = load(&cli.config)?;
            let api = crate::device_cli::LocalApiClient::new(crate::device_cli::resolve(
                out.api.as_deref(),
                config.local_api.listen,
            )?);
            use crate::device_cli::DeviceAsk;
            let ask = match action {
                DeviceAction::List => DeviceAsk::List,
                DeviceAction::Show { id } => DeviceAsk::Show(id),
                DeviceAction::Add {
                    id,
                    device_type,
                    room,
                    resident,
                    supervision_s,
                    key,
                } => DeviceAsk::Add(serde_json::json!({
                    "id": id,
                    "type": device_type,
                    "room": room,
                    "resident": resident,
                    "supervision_s": supervision_s,
                    "key": key,
                })),
                DeviceAction::Swap {
                    old_id,
                    new_id,
                    key,
                } => DeviceAsk::Swap {
                    old: old_id,
                    new_id,
                    key,
                },
                DeviceAction::Rekey { id, key } => DeviceAsk::Rekey { id, key },
                DeviceAction::Remove { id } => DeviceAsk::Remove(id),
                DeviceAction::Pending => DeviceAsk::Pending,
                DeviceAction::Accept {
                    id,
                    device_type,
                    room,
                    resident,
                    supervision_s,
                } => DeviceAsk::Accept {
                    id,
                    settings: serde_json::json!({
                        "type": device_type,
                        "room": room,
                        "resident": resident,
                        "supervision_s": supervision_s,
                    }),
                },
                DeviceAction::Reject { id } => DeviceAsk::Reject(id),
                DeviceAction::PairingWindow { minutes } => DeviceAsk::PairingWindow(minutes),
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            exit_on_error(rt.block_on(crate::device_cli::device(&api, ask, out.json)))
        }
        Command::TestAlarm {
            device,
            timeout_s,
            out,
        } => {
            let config = load(&cli.config)?;
            let api = crate::device_cli::LocalApiClient::new(crate::device_cli::resolve(
                out.api.as_deref(),
                config.local_api.listen,
            )?);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            exit_on_error(rt.block_on(crate::device_cli::test_alarm(
                &api,
                device,
                std::time::Duration::from_secs(timeout_s.min(300)),
                out.json,
            )))
        }
        Command::Enroll { code } => {
            let config = load(&cli.config)?;
            let rt = tokio::runtime::Runtime::new()?;
            match rt.block_on(crate::enrollment::enroll_command(&config, &code)) {
                Ok(text) => {
                    println!("{text}");
                    Ok(())
                }
                Err(e) => {
                    let hint = match &e {
                        trygg_uplink::enroll::EnrollError::Refused(r) => r.error.clone(),
                        trygg_uplink::enroll::EnrollError::Unreachable { .. } => format!(
                            "{e}: check [enrollment] url in the config and that this gateway \
                             can reach the backend, then run this again (the code is not spent)"
                        ),
                        other => other.to_string(),
                    };
                    tracing::warn!(gateway = %config.gateway_id, error = %e, "enrollment failed");
                    eprintln!("trygg-gateway: enrollment failed: {hint}");
                    std::process::exit(1);
                }
            }
        }
        Command::Decommission {
            yes,
            force,
            deliver_within_s,
            keep_config,
            out,
        } => {
            let config = load(&cli.config)?;
            let api = crate::device_cli::LocalApiClient::new(crate::device_cli::resolve(
                out.api.as_deref(),
                config.local_api.listen,
            )?);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let ask = crate::device_cli::DecommissionAsk {
                gateway_id: config.gateway_id.clone(),
                data_dir: config.data_dir.clone(),
                yes,
                force,
                deliver_within_s,
            };
            exit_on_error(rt.block_on(crate::device_cli::decommission(&api, ask)).and_then(
                |()| {
                    match (&cli.config, keep_config) {
                        (Some(path), false) => {
                            std::fs::remove_file(path).with_context(|| {
                                format!("removing the config file {}", path.display())
                            })?;
                            println!("removed the config file {}", path.display());
                        }
                        (Some(path), true) => println!(
                            "kept the config file {} (--keep-config): it names the gateway and where its devices are",
                            path.display()
                        ),
                        (None, _) => {}
                    }
                    println!(
                        "next: stop the service from starting again (sudo systemctl disable --now trygg-gateway), and unplug the devices"
                    );
                    Ok(())
                },
            ))
        }
        Command::Technician { action } => {
            let config = load(&cli.config)?;
            exit_on_error(technician_command(&config, action))
        }
        Command::Run => {
            let config = load(&cli.config)?;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async move {
                let (tx, rx) = tokio::sync::oneshot::channel::<crate::Ready>();
                let printer = tokio::spawn(async move {
                    if let Ok(r) = rx.await {
                        let technician = r
                            .technician
                            .map(|t| {
                                format!(
                                    " technician=https://{} fingerprint=SHA256:{}",
                                    t.addr, t.fingerprint
                                )
                            })
                            .unwrap_or_default();
                        println!(
                            "trygg-gateway ready: device-broker={} local-api=http://{}{technician}",
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

fn read_new_password(from_stdin: bool) -> anyhow::Result<String> {
    use crate::technician::accounts::{AccountError, MIN_PASSWORD};
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
    let first = rpassword::prompt_password(format!(
        "New password (at least {MIN_PASSWORD} characters): "
    ))
    .map_err(no_tty)?;
    if first.chars().count() < MIN_PASSWORD {
        return Err(AccountError::WeakPassword.into());
    }
    let second = rpassword::prompt_password("The same password again: ").map_err(no_tty)?;
    if first != second {
        anyhow::bail!("the two passwords differ; nothing was changed");
    }
    Ok(first)
}

fn technician_command(config: &Config, action: TechnicianAction) -> anyhow::Result<()> {
    use crate::technician::accounts::{audit, AccountsFile, AuditLine};
    let file = AccountsFile::in_dir(&config.data_dir);
    let now = crate::service::now_ms();
    let record = |action: &str, target: &str| {
        tracing::info!(%action, technician = %target, "technician account changed");
        audit(
            &config.data_dir,
            &AuditLine {
                at_ms: now,
                who: "cli".into(),
                action: action.into(),
                target: target.into(),
                outcome: "ok".into(),
                remote: String::new(),
            },
        );
    };
    match action {
        TechnicianAction::Add {
            username,
            password_stdin,
        } => {
            if !crate::technician::accounts::valid_username(&username) {
                return Err(crate::technician::accounts::AccountError::BadUsername.into());
            }
            if file.load()?.get(&username).is_some() {
                return Err(crate::technician::accounts::AccountError::Exists(username).into());
            }
            let password = read_new_password(password_stdin)?;
            file.update(|a| a.add(&username, &password, now))?;
            record("account_added", &username);
            match config.technician.as_ref().map(|t| t.listen.port()) {
                Some(0) => println!(
                    "technician {username} added; log in at the technician= address the gateway prints when it starts"
                ),
                port => println!(
                    "technician {username} added; log in at https://<this gateway's address>:{}/",
                    port.unwrap_or(8443)
                ),
            }
            if config.technician.is_none() {
                println!("note: the page is off in this config: add [technician] listen = \"0.0.0.0:8443\"");
            }
        }
        TechnicianAction::List => {
            let accounts = file.load()?;
            if accounts.technicians.is_empty() {
                println!(
                    "no technician accounts (add one with `trygg-gateway technician add NAME`)"
                );
            }
            for t in &accounts.technicians {
                println!(
                    "{}  created {}  password changed {}",
                    t.username,
                    utc(t.created_ms),
                    utc(t.changed_ms)
                );
            }
        }
        TechnicianAction::Remove { username } => {
            file.update(|a| a.remove(&username))?;
            record("account_removed", &username);
            println!("technician {username} removed; their sessions end at their next request");
        }
        TechnicianAction::Passwd {
            username,
            password_stdin,
        } => {
            if file.load()?.get(&username).is_none() {
                return Err(crate::technician::accounts::AccountError::NotFound(username).into());
            }
            let password = read_new_password(password_stdin)?;
            file.update(|a| a.set_password(&username, &password, now))?;
            record("password_changed", &username);
            println!("password of {username} changed; their sessions end at their next request");
        }
        TechnicianAction::Fingerprint => {
            let dir = crate::technician::tls::cert_dir(&config.data_dir);
            let pem = std::fs::read(dir.join("cert.pem")).with_context(|| {
                format!(
                    "no certificate in {} yet: the gateway makes it when it first starts with [technician] configured",
                    dir.display()
                )
            })?;
            let der = rustls_pemfile::certs(&mut pem.as_slice())
                .next()
                .context("cert.pem holds no certificate")??;
            println!(
                "SHA256:{}",
                crate::technician::tls::fingerprint(der.as_ref())
            );
        }
    }
    Ok(())
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM UTC`.
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}
