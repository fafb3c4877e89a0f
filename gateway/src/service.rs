//! The async shell: local MQTT, the journal thread, acknowledgements, the
//! uplink and the local API, started and stopped in order.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use trygg_protocol::{topic, Heartbeat, Lane, Receipt, ReceiptStatus};
use trygg_uplink::backoff::Backoff;
use trygg_uplink::broker::{BrokerSettings, EmbeddedBroker, MqttVersion};
use trygg_uplink::metrics::Metrics;
use trygg_uplink::mqtt_url::MqttUrl;
use trygg_uplink::{contract, SeqRange, UplinkReceipt};

use crate::config::{BrokerMode, Config};
use crate::ingest::{classify, Incoming};
use crate::journal::{Group, Journal, JournalError, JournalReader, Outcome, SetAside};
use crate::register::{Change, Register, RegisterError};
use crate::supervision::{supervise, Raised, Supervisor};
use crate::uplink::UplinkState;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("embedded broker: {0}")]
    Broker(#[from] trygg_uplink::broker::BrokerError),
    #[error("uplink TLS: {0}")]
    Tls(#[from] trygg_uplink::tls::TlsError),
    #[error("local API on {addr}: {source}")]
    LocalApi {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("config: {0}")]
    Config(String),
    #[error("technician page: {0}")]
    Technician(String),
    #[error(
        "{0} (local_io.gpio = \"on\" requires it; set it to \"auto\" or \"off\" to run without)"
    )]
    LocalIo(#[from] trygg_board_pi_gateway::OpenError),
    #[error(
        "the journal stopped unexpectedly (see the log); nothing uncommitted was acknowledged"
    )]
    JournalStopped,
    #[error("encryption at rest: {0}")]
    Key(#[from] crate::seal::KeyError),
    #[error(
        "this gateway was decommissioned ({0}): it holds no keys or data and will not start. \
         To use the device again, remove that file, make a new config and enroll it anew \
         (docs/operations.md)"
    )]
    Decommissioned(std::path::PathBuf),
    #[error("decommission: {0}")]
    Wipe(#[from] crate::decommission::WipeError),
}

/// Where a started gateway can be reached.
#[derive(Clone, Debug)]
pub struct Ready {
    pub device_broker: MqttUrl,
    pub local_api: SocketAddr,
    /// The technician page, when `[technician]` is configured.
    pub technician: Option<TechnicianReady>,
}

/// Where the technician page listens and how its certificate is checked.
#[derive(Clone, Debug)]
pub struct TechnicianReady {
    pub addr: SocketAddr,
    /// SHA-256 of the page's certificate, `AB:CD:...`.
    pub fingerprint: String,
    /// The certificate (PEM), for a client that pins it.
    pub cert: std::path::PathBuf,
}

/// Shared, in-memory view for the local API.
pub(crate) struct Shared {
    pub metrics: Metrics,
    pub reader: JournalReader,
    pub last_heartbeat: Mutex<HashMap<String, (u64, Heartbeat)>>,
    pub uplink_connected: std::sync::atomic::AtomicBool,
    /// Why the journal cannot commit, while it cannot.
    pub journal_error: Mutex<Option<String>>,
    /// A damaged journal file this run found and set aside.
    pub journal_set_aside: Option<crate::journal::SetAside>,
    /// Devices reported silent and not heard from since.
    pub silent: Arc<Mutex<Vec<String>>>,
    /// The disk filled up and has not had room since.
    pub disk_full: std::sync::atomic::AtomicBool,
    /// Alarms from devices committed since start (the local buzzer sounds
    /// for a new one while the uplink is down).
    pub alarms_committed: std::sync::atomic::AtomicU64,
    /// The device register as committed: ingest and supervision read it,
    /// the journal thread changes it after the durable write.
    pub register: Arc<RwLock<Register>>,
    /// When each device was last heard from (any message), Unix ms.
    pub last_seen: Mutex<HashMap<String, u64>>,
    /// Where the gateway stands with the backend: enrolled or not, its
    /// certificate refused or not (`crate::enrollment`).
    pub identity: Mutex<crate::enrollment::IdentityState>,
    /// The way to the journal thread for the local API's requests; taken
    /// away at shutdown so that the journal can close.
    pub admin: Mutex<Option<mpsc::Sender<JournalCmd>>>,
    /// Who may connect to the embedded broker; the join requests.
    pub gate: Arc<crate::device_auth::DeviceGate>,
    /// The gateway's own credentials at the device broker.
    pub broker_client: BrokerClient,
    /// The broker as configured (Mosquitto's files are written from it).
    pub local_broker: crate::config::LocalBroker,
    /// The heartbeat to the backend, seconds (the config's, or the
    /// backend's pushed settings).
    pub heartbeat_s: std::sync::atomic::AtomicU64,
    /// Devices whose `cfg` is to be (re)published to them, retained.
    pub device_cfg: Mutex<Option<mpsc::UnboundedSender<String>>>,
    /// A decommission, if one was asked for.
    pub decommission: crate::decommission::Decommission,
    /// Requests for the uplink connection.
    pub uplink_cmd: Mutex<Option<mpsc::Sender<UplinkCmd>>>,
}

/// What the uplink connection is asked to do.
pub(crate) enum UplinkCmd {
    /// Ask the backend to take this gateway off the service; answered with
    /// the backend's word.
    Decommission {
        pending: u64,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

impl Shared {
    /// Asks for `id`'s settings to be published to it (if it has any).
    pub fn publish_cfg(&self, id: &str) {
        if let Some(tx) = self.device_cfg.lock().ok().and_then(|t| t.clone()) {
            let _ = tx.send(id.to_string());
        }
    }
}

/// The gateway's own client at the device broker: its username and key
/// (kept in the journal, generated at the first start) and the key's hash.
#[derive(Clone)]
pub(crate) struct BrokerClient {
    pub username: String,
    pub key: String,
    pub key_hash: String,
}

/// The gateway's own broker key, kept (sealed) in its journal, made at
/// the first start.
fn broker_client(config: &Config, journal: &mut Journal) -> Result<BrokerClient, JournalError> {
    let key = journal.broker_client_key(crate::credentials::generate_key)?;
    Ok(BrokerClient {
        username: crate::credentials::gateway_username(&config.gateway_id),
        key_hash: crate::credentials::hash_key(&key),
        key,
    })
}

impl Shared {
    /// Sends a request to the journal thread; `None` when it is stopping.
    pub async fn ask(&self, cmd: JournalCmd) -> Option<()> {
        let tx = self.admin.lock().ok()?.clone()?;
        tx.send(cmd).await.ok()
    }
}

/// What goes to the journal thread.
pub(crate) enum JournalCmd {
    Device(Publish),
    Receipted(Vec<SeqRange>),
    Raised(Raised),
    /// A change to the device register, answered once durable.
    Devices {
        change: Change,
        reply: oneshot::Sender<Result<(), DeviceChangeError>>,
    },
    /// Write a join request (from the gate's memory) to the journal.
    PendingSeen(String),
    /// Pair a device that asked to join, with the key it presented.
    Accept {
        device: crate::config::Device,
        reply: oneshot::Sender<Result<(), DeviceChangeError>>,
    },
    /// Forget a join request.
    Reject {
        id: String,
        reply: oneshot::Sender<Result<(), DeviceChangeError>>,
    },
    /// A settings version from the backend (or why it could not be read):
    /// applied durably or refused; answered with what to tell the backend.
    RemoteConfig {
        push: Result<trygg_uplink::remote_config::ConfigPush, (u64, String)>,
        reply: oneshot::Sender<trygg_uplink::remote_config::ConfigResult>,
    },
    /// Raise `test_alarm` as the gateway about `subject`; answered with
    /// where it was committed.
    TestAlarm {
        subject: Option<String>,
        reply: TestAlarmReply,
    },
}

/// Where a test alarm was committed, or why it was not.
pub(crate) type TestAlarmReply = oneshot::Sender<Result<(Lane, u64), DeviceChangeError>>;

/// Why the journal thread refused a request of the local API.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeviceChangeError {
    #[error(transparent)]
    Register(#[from] RegisterError),
    /// The journal could not commit it; worth a retry once the cause
    /// (a full or failing disk, see /healthz) is fixed.
    #[error("the journal could not commit it: {0}")]
    Journal(#[from] JournalError),
}

/// What the acknowledger does after a commit, in order.
struct AckWork {
    publish: Publish,
    receipt: Option<(String, Vec<u8>)>,
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Opens the journal sealed with this gateway's data key (`crate::seal`).
///
/// A gateway that will not start loses every alarm to come, so a journal
/// that cannot be read with the key at hand (the data key file lost or
/// damaged, or sealed under another key-encryption key) is set aside with
/// its key file, loudly, and a fresh one is started, as for a damaged file.
/// Only a key-encryption key that cannot be had at all stops the start:
/// that is an installation fault, found at install.
pub(crate) fn open_journal(config: &Config) -> Result<(Journal, Option<SetAside>), GatewayError> {
    use crate::seal::{data_key, KeyError, Sealer};
    let source = config.key_source()?;
    if let Some(kek_file) = source.file() {
        if crate::seal::same_filesystem(kek_file, &config.data_dir) {
            tracing::warn!(
                kek = %kek_file.display(),
                "the key-encryption key is a file on the same disk as the journal: a copied journal cannot be read, but a stolen SD card can. On a Raspberry Pi 4/5 keep it in the SoC's OTP memory: [encryption] key_source = \"command:rpi-otp-private-key\" (docs/operations.md)"
            );
        }
    }
    let kek = source.kek(true)?;
    let key_path = config.data_key_path();
    let path = config.journal_path();
    let mut set_aside: Option<SetAside> = None;
    let set_aside_now = |why: String| -> Result<SetAside, GatewayError> {
        let stamp = now_ms();
        let aside = path.with_extension(format!("redb.unreadable-{stamp}"));
        let io = |e| GatewayError::Journal(JournalError::Storage(redb::StorageError::Io(e).into()));
        if path.exists() {
            std::fs::rename(&path, &aside).map_err(io)?;
        }
        if key_path.exists() {
            std::fs::rename(
                &key_path,
                key_path.with_extension(format!("key.unreadable-{stamp}")),
            )
            .map_err(io)?;
        }
        tracing::error!(
            set_aside = %aside.display(),
            reason = %why,
            "THE JOURNAL CANNOT BE READ WITH THIS GATEWAY'S KEY: it was set aside and a fresh journal started. Events it held that the backend had not receipted are not sent. Restore the key (journal.key and the key-encryption key) to read it."
        );
        Ok(SetAside {
            path: aside,
            reason: why,
        })
    };
    if !key_path.exists() && path.exists() {
        // A journal without its key: sealed under a key now lost, or one
        // from before encryption at rest (which opens plain, and is sealed
        // from now on). The key check in the journal tells them apart.
        tracing::info!(key = %key_path.display(), "no data key yet: making one");
    }
    let key = match data_key(&key_path, &kek) {
        Ok((key, made)) => {
            if made {
                tracing::info!(key = %key_path.display(), "made this gateway's data key (sealed with the key-encryption key)");
            }
            key
        }
        Err(e @ KeyError::Unseal { .. }) => {
            set_aside = Some(set_aside_now(e.to_string())?);
            data_key(&key_path, &kek)?.0
        }
        Err(e) => return Err(e.into()),
    };
    let sealer = Arc::new(Sealer::new(&key));
    match Journal::open_or_set_aside_sealed(&path, sealer.clone()) {
        Ok((j, aside)) => Ok((j, aside.or(set_aside))),
        Err(JournalError::KeyMismatch) => {
            // Sealed under a data key that is gone: a new key, a new journal.
            let aside = set_aside_now(
                "the journal was sealed with a data key that is not this gateway's".into(),
            )?;
            let (key, _) = data_key(&key_path, &kek)?;
            let (j, _) = Journal::open_or_set_aside_sealed(&path, Arc::new(Sealer::new(&key)))?;
            Ok((j, Some(aside)))
        }
        Err(e) => Err(e.into()),
    }
}

/// Runs the gateway until `shutdown` completes.
pub async fn run(
    config: Config,
    ready: Option<oneshot::Sender<Ready>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), GatewayError> {
    trygg_uplink::tls::install_crypto_provider();
    if let Some(marker) = crate::decommission::marker_in(&config.data_dir) {
        return Err(GatewayError::Decommissioned(marker));
    }
    // The Pi's own pins first: with `local_io.gpio = "on"` and no GPIO,
    // stop before touching anything else.
    let local_pins = crate::local_io::open(&config.local_io)?;
    let uplink_url =
        MqttUrl::parse(&config.uplink.url).map_err(|e| GatewayError::Config(e.to_string()))?;
    // The backend's CA must be readable from the start (enrollment and the
    // uplink both trust the backend by it); the client certificate may come
    // later (`crate::enrollment`).
    trygg_uplink::tls::client_config(&config.uplink.ca_file)?;
    let identity_files = trygg_uplink::enroll::IdentityFiles::in_data_dir(&config.data_dir);
    let identity = if identity_files.exists() {
        crate::enrollment::enrolled_state(&identity_files)
    } else {
        crate::enrollment::IdentityState::NotEnrolled
    };

    let policy = config.journal_policy();
    let disk_reserve = config.journal.disk_reserve_mib * 1024 * 1024;
    let seed = config.devices.clone();
    let journal_config = config.clone();
    let (journal, set_aside, reserved, (devices, seeded)) =
        tokio::task::spawn_blocking(move || {
            let (mut j, aside) = open_journal(&journal_config)?;
            j.set_policy(policy);
            let reserved = disk_reserve == 0 || j.ensure_reserve(disk_reserve);
            let devices = j.devices_or_seed(&seed)?;
            Ok::<_, GatewayError>((j, aside, reserved, devices))
        })
        .await
        .expect("journal open task")?;
    let mut register = Register::empty(&config);
    register.extend(devices);
    // Settings the backend pushed win over the config's.
    let mut heartbeat_s = config.uplink.heartbeat_s;
    if let Some(remote) = journal.reader().remote_config()? {
        register.set_periods(&crate::remote_config::periods_of(&remote));
        if let Some(h) = remote.settings.heartbeat_s {
            heartbeat_s = h;
        }
        tracing::info!(
            version = remote.applied_version,
            "settings pushed by the backend applied over the config"
        );
    }
    if seeded {
        tracing::info!(
            devices = register.len(),
            "device register seeded from the config's [[devices]]; from now on it is changed with `trygg-gateway device ...`"
        );
    }
    // The register is sealed in the journal; the config file is not.
    let in_clear = config
        .devices
        .iter()
        .filter(|d| d.resident.is_some() || d.room.is_some())
        .count();
    if in_clear > 0 {
        tracing::warn!(
            devices = in_clear,
            "the config file's [[devices]] hold residents' ids and rooms in clear text; the register (encrypted in the journal) has them now: remove the [[devices]] entries from the config file"
        );
    }
    if !seeded {
        for d in &config.devices {
            if register.get(&d.id) != Some(d) {
                tracing::warn!(
                    device = %d.id,
                    "[[devices]] entry differs from the gateway's device register, which wins: use `trygg-gateway device add|swap|remove` to change the register"
                );
            }
        }
    }
    if !reserved {
        tracing::error!(
            bytes = disk_reserve,
            dir = %config.data_dir.display(),
            "cannot set disk space aside for alarms (is the disk full?): free some space; alarms are taken, telemetry waits on the devices until then"
        );
    }
    let mut journal = journal;
    let client = broker_client(&config, &mut journal)?;
    let pending_at_start = journal.reader().pending_devices()?;
    let embedded_auth =
        config.local_broker.mode == BrokerMode::Embedded && config.local_broker.device_auth;
    let register = Arc::new(RwLock::new(register));
    let gate = Arc::new(crate::device_auth::DeviceGate::new(
        register.clone(),
        pending_at_start,
        client.username.clone(),
        client.key_hash.clone(),
        embedded_auth && config.local_broker.first_contact,
    ));
    let silent_at_start: Vec<String> = journal
        .reader()
        .silent_devices()?
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    let shared = Arc::new(Shared {
        metrics: Metrics::new(),
        reader: journal.reader(),
        last_heartbeat: Mutex::new(HashMap::new()),
        uplink_connected: false.into(),
        journal_error: Mutex::new(None),
        journal_set_aside: set_aside.clone(),
        silent: Arc::new(Mutex::new(silent_at_start.clone())),
        disk_full: (!reserved).into(),
        alarms_committed: 0.into(),
        register,
        last_seen: Mutex::new(HashMap::new()),
        admin: Mutex::new(None),
        identity: Mutex::new(identity),
        gate,
        broker_client: client,
        local_broker: config.local_broker.clone(),
        heartbeat_s: heartbeat_s.into(),
        device_cfg: Mutex::new(None),
        decommission: Default::default(),
        uplink_cmd: Mutex::new(None),
    });
    shared.metrics.set(
        "local_io_gpio",
        "",
        if local_pins.is_some() { 1.0 } else { 0.0 },
    );
    if let Some(aside) = &set_aside {
        tracing::error!(
            damaged = %aside.path.display(),
            reason = %aside.reason,
            "the journal file was damaged beyond repair: it is kept aside under a new name and a fresh journal is serving; events in it that the backend had not receipted are not sent"
        );
        shared.metrics.inc("journal_set_aside_total", "");
    }
    let pending = shared.reader.pending_counts()?;
    tracing::info!(path = %config.journal_path().display(), alarm = pending[0], care = pending[1], telemetry = pending[2], "journal open");

    let device_broker = match config.local_broker.mode {
        BrokerMode::Embedded => {
            let (authenticator, authorizer) = if embedded_auth {
                let (a, z) = embedded_access(Arc::downgrade(&shared));
                (Some(a), Some(z))
            } else {
                // Config validation refused this beyond loopback unless
                // explicitly forced.
                let beyond = !config.local_broker.listen.ip().is_loopback();
                tracing::warn!(
                    listen = %config.local_broker.listen,
                    "THE EMBEDDED BROKER CHECKS NO DEVICE KEYS (local_broker.device_auth = false, for development only): {}",
                    if beyond {
                        "it listens beyond loopback, so anyone on this network can send events as any device"
                    } else {
                        "any program on this machine can send events as any device"
                    }
                );
                (None, None)
            };
            let settings = BrokerSettings {
                listen: config.local_broker.listen,
                version: MqttVersion::V4,
                tls: None,
                max_payload: 256 * 1024,
                max_inflight: 1000,
                log_segment_bytes: BrokerSettings::SMALL_LOG.0,
                log_segments: BrokerSettings::SMALL_LOG.1,
                tls_config: None,
                authenticator,
                authorizer,
            };
            let broker = tokio::task::spawn_blocking(move || EmbeddedBroker::start(settings))
                .await
                .expect("broker task")?;
            // Listening on every interface: this process dials loopback.
            let host = if broker.addr.ip().is_unspecified() {
                std::net::Ipv4Addr::LOCALHOST.to_string()
            } else {
                broker.addr.ip().to_string()
            };
            MqttUrl {
                host,
                port: broker.addr.port(),
                tls: false,
            }
        }
        BrokerMode::External => {
            if config.local_broker.manages_mosquitto() {
                let s = shared.clone();
                tokio::task::spawn_blocking(move || sync_mosquitto(&s))
                    .await
                    .expect("mosquitto sync task");
            } else {
                tracing::warn!(
                    url = %config.local_broker.url,
                    "the gateway does not manage this broker's device credentials (no local_broker.mosquitto_password_file): unless the broker checks them itself, anyone who reaches it can send events as any device"
                );
            }
            MqttUrl::parse(&config.local_broker.url)
                .map_err(|e| GatewayError::Config(e.to_string()))?
        }
    };

    let cancel = CancellationToken::new();
    let config = Arc::new(config);

    // Local MQTT: persistent session, QoS 1, manual acks.
    let mut opts = MqttOptions::new(
        format!("trygg-gateway-{}", config.gateway_id),
        device_broker.host.clone(),
        device_broker.port,
    );
    if embedded_auth || config.local_broker.manages_mosquitto() {
        opts.set_credentials(
            shared.broker_client.username.clone(),
            shared.broker_client.key.clone(),
        );
    }
    opts.set_clean_session(false)
        .set_manual_acks(true)
        .set_keep_alive(Duration::from_secs(10))
        .set_max_packet_size(1024 * 1024, 64 * 1024)
        .set_inflight(1000);
    let (local, mut local_loop) = AsyncClient::new(opts, 10_000);
    // Device settings (`cfg`, retained) as the register says, to the devices
    // named on this channel; all of them at every connect.
    let (cfg_tx, mut cfg_rx) = mpsc::unbounded_channel::<String>();
    if let Ok(mut slot) = shared.device_cfg.lock() {
        *slot = Some(cfg_tx);
    }
    {
        let local = local.clone();
        // Not `shared`: that would keep the journal open after shutdown.
        let register = shared.register.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            loop {
                let id = tokio::select! {
                    _ = cancel.cancelled() => break,
                    id = cfg_rx.recv() => match id {
                        Some(id) => id,
                        None => break,
                    },
                };
                let payload = register
                    .read()
                    .ok()
                    .and_then(|r| r.get(&id).and_then(|d| d.cfg_payload()));
                if let Some(payload) = payload {
                    let topic = topic::device_topic(&id, "cfg");
                    if local
                        .publish(topic.as_str(), QoS::AtLeastOnce, true, payload)
                        .await
                        .is_err()
                    {
                        break;
                    }
                    tracing::debug!(device = %id, "device settings published");
                }
            }
        });
    }
    // Receipts and acks are small writes: without TCP_NODELAY, Nagle holds
    // each second one back for the peer's delayed ACK (40 ms on Linux).
    local_loop.network_options.set_tcp_nodelay(true);

    let (journal_tx, journal_rx) = mpsc::channel::<JournalCmd>(8192);
    let (seen_tx, seen_rx) = mpsc::unbounded_channel::<String>();
    let (ack_tx, ack_rx) = mpsc::unbounded_channel::<Vec<AckWork>>();
    let (committed_tx, committed_rx) = watch::channel(0u64);
    if let Ok(mut admin) = shared.admin.lock() {
        *admin = Some(journal_tx.clone());
    }

    // The journal thread: group commit, then release acknowledgements. If
    // it ever ends before shutdown (a panic), the gateway stops with an
    // error so that its supervisor restarts it.
    let journal_stopped = CancellationToken::new();
    let journal_thread = {
        let config = config.clone();
        let shared = shared.clone();
        let cancel = cancel.clone();
        let stopped = journal_stopped.clone();
        std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || {
                let _stopped = stopped.drop_guard();
                journal_loop(
                    journal,
                    journal_rx,
                    ack_tx,
                    committed_tx,
                    &config,
                    &shared,
                    &cancel,
                )
            })
            .expect("spawning the journal thread")
    };

    // Acknowledgements go out through the local connection; once the last
    // one is queued the acknowledger disconnects and says so.
    let acks_done = CancellationToken::new();
    let acker = {
        let (client, done) = (local.clone(), acks_done.clone());
        tokio::spawn(async move {
            ack_loop(client.clone(), ack_rx).await;
            let _ = client.disconnect().await;
            done.cancel();
        })
    };

    // Local API.
    let listener = tokio::net::TcpListener::bind(config.local_api.listen)
        .await
        .map_err(|source| GatewayError::LocalApi {
            addr: config.local_api.listen,
            source,
        })?;
    let local_api = listener
        .local_addr()
        .map_err(|source| GatewayError::LocalApi {
            addr: config.local_api.listen,
            source,
        })?;
    let api = tokio::spawn(crate::local_api::serve(
        listener,
        shared.clone(),
        cancel.clone(),
    ));

    // The technician page, over HTTPS with the gateway's own certificate.
    let (technician, technician_page) = match &config.technician {
        None => {
            tracing::info!("technician page off: add [technician] listen = \"0.0.0.0:8443\" to the config to serve it");
            (None, None)
        }
        Some(t) => match start_technician_page(t, &config.data_dir, &shared, &cancel).await {
            Ok((page, task)) => (Some(page), Some(task)),
            Err(e) => {
                cancel.cancel();
                return Err(e);
            }
        },
    };

    // Supervision: what ingest hears from, silences raised and cleared,
    // and the journal's housekeeping timer.
    let (raised_tx, mut raised_rx) = mpsc::channel::<Raised>(64);
    let supervisor = {
        let journal_tx = journal_tx.clone();
        tokio::spawn(async move {
            while let Some(r) = raised_rx.recv().await {
                if journal_tx.send(JournalCmd::Raised(r)).await.is_err() {
                    break;
                }
            }
        });
        let start = Supervisor::new(
            &shared.register.read().unwrap_or_else(|e| e.into_inner()),
            &silent_at_start,
            tokio::time::Instant::now(),
        );
        tokio::spawn(supervise(
            start,
            shared.register.clone(),
            seen_rx,
            raised_tx.clone(),
            shared.silent.clone(),
            cancel.clone(),
        ))
    };
    // The Pi's own button, mains-fail input, LED and buzzer, when present.
    let local_io = local_pins.map(|pins| {
        let settings = crate::local_io::Settings::from_config(&config.local_io);
        let io = crate::local_io::LocalIo::new(
            settings,
            pins.button,
            pins.mains_fail,
            pins.led,
            pins.buzzer,
            Instant::now(),
        );
        tokio::spawn(crate::local_io::drive(
            io,
            shared.clone(),
            raised_tx.clone(),
            cancel.clone(),
        ))
    });
    drop(raised_tx);

    let (uplink_cmd_tx, uplink_cmd_rx) = mpsc::channel::<UplinkCmd>(4);
    if let Ok(mut slot) = shared.uplink_cmd.lock() {
        *slot = Some(uplink_cmd_tx);
    }
    let uplink = tokio::spawn(crate::enrollment::supervise_uplink(
        uplink_cmd_rx,
        config.clone(),
        uplink_url,
        shared.clone(),
        journal_tx.clone(),
        committed_rx,
        cancel.clone(),
    ));

    // Take input until shutdown.
    let subscribed = CancellationToken::new();
    let ingest = {
        let subscribed = subscribed.clone();
        let cancel = cancel.clone();
        let shared = shared.clone();
        let local = local.clone();
        let acks_done = acks_done.clone();
        tokio::spawn(async move {
            let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
            // On shutdown, stop taking input (drop the journal's sender) but
            // keep the connection polled until the acknowledgements of what
            // was taken are out, for at most 5 s.
            let mut journal_tx = Some(journal_tx);
            let mut drain_until =
                tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600);
            loop {
                let event = tokio::select! {
                    _ = cancel.cancelled(), if journal_tx.is_some() => {
                        journal_tx = None;
                        drain_until = tokio::time::Instant::now() + Duration::from_secs(5);
                        continue;
                    }
                    _ = acks_done.cancelled() => break,
                    _ = tokio::time::sleep_until(drain_until) => break,
                    e = local_loop.poll() => e,
                };
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        backoff.reset();
                        tracing::info!(
                            session_present = ack.session_present,
                            "connected to the device broker"
                        );
                        for filter in [topic::EVENTS_FILTER, topic::HEARTBEATS_FILTER] {
                            let _ = local.subscribe(filter, QoS::AtLeastOnce).await;
                        }
                        // The embedded broker forgets retained settings
                        // when it restarts with the gateway: say them again.
                        let ids: Vec<String> = shared
                            .register
                            .read()
                            .map(|r| r.devices().map(|d| d.id.clone()).collect())
                            .unwrap_or_default();
                        for id in ids {
                            shared.publish_cfg(&id);
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => subscribed.cancel(),
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        // Once shutdown began nothing more is taken or acked:
                        // the broker keeps it for the next session.
                        if let Some(tx) = &journal_tx {
                            shared.metrics.inc("device_messages_received_total", "");
                            // Any message is a sign of life, even one refused.
                            if let Some(t) = topic::DeviceTopic::parse(&p.topic) {
                                let id = t.device_id().to_string();
                                if let Ok(mut seen) = shared.last_seen.lock() {
                                    // Unknown ids are not kept: a stranger
                                    // could fill the map with them.
                                    if seen.contains_key(&id)
                                        || shared
                                            .register
                                            .read()
                                            .is_ok_and(|r| r.get(&id).is_some())
                                    {
                                        seen.insert(id.clone(), now_ms());
                                    }
                                }
                                let _ = seen_tx.send(id);
                            }
                            if tx.send(JournalCmd::Device(p)).await.is_err() {
                                break;
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(_) if journal_tx.is_none() => break,
                    Err(e) => {
                        let delay = backoff.next_delay();
                        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "device broker connection lost");
                        tokio::select! {
                            _ = cancel.cancelled() => break,
                            _ = tokio::time::sleep(delay) => {}
                        }
                    }
                }
            }
        })
    };

    // Ready means taking events: subscribed at the device broker. (A
    // message published before the subscription would find no one.)
    tokio::pin!(shutdown);
    let decommissioned = shared.decommission.stop.clone();
    let mut stopping = tokio::select! {
        _ = subscribed.cancelled() => None,
        _ = &mut shutdown => Some(false),
        _ = decommissioned.cancelled() => Some(false),
        _ = journal_stopped.cancelled() => Some(true),
    };
    if stopping.is_none() {
        if let Some(ready) = ready {
            let _ = ready.send(Ready {
                device_broker: device_broker.clone(),
                local_api,
                technician: technician.clone(),
            });
        }
        tracing::info!(%device_broker, %local_api, gateway = %config.gateway_id, "gateway running");
        stopping = Some(tokio::select! {
            _ = &mut shutdown => false,
            _ = decommissioned.cancelled() => false,
            _ = journal_stopped.cancelled() => true,
        });
    }
    let journal_failed = stopping == Some(true);
    if journal_failed {
        tracing::error!(
            "the journal stopped unexpectedly; stopping the gateway so that it is restarted"
        );
    }
    tracing::info!("shutting down: no new input, committing what was taken");
    cancel.cancel();
    if let Ok(mut admin) = shared.admin.lock() {
        *admin = None;
    }
    // The settings publisher holds the shared state; without its channel
    // it ends, and with it the last hold on the journal (a gateway started
    // again in this process must be able to open it).
    if let Ok(mut cfg) = shared.device_cfg.lock() {
        *cfg = None;
    }
    // Input stops at once; the journal commits what was taken and closes
    // when its last sender (ingest, uplink) is gone; the acknowledger then
    // sends the last receipts while ingest keeps the connection polled.
    let _ = supervisor.await;
    if let Some(local_io) = local_io {
        let _ = local_io.await;
    }
    let _ = uplink.await;
    let _ = tokio::task::spawn_blocking(move || journal_thread.join()).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), acker).await;
    let _ = tokio::time::timeout(Duration::from_secs(6), ingest).await;
    let _ = api.await;
    if let Some(page) = technician_page {
        let _ = page.await;
    }
    tracing::info!("gateway stopped");
    if journal_failed {
        return Err(GatewayError::JournalStopped);
    }
    if shared.decommission.wipe_requested() {
        let kek = config.key_source()?;
        let removed = crate::decommission::wipe(
            &config.data_dir,
            &config.journal_path(),
            &config.data_key_path(),
            kek.file(),
            &config.gateway_id,
        )?;
        tracing::warn!(
            files = removed.len(),
            dir = %config.data_dir.display(),
            "DECOMMISSIONED: the data key was erased and the journal, keys and settings removed; this gateway will not start again"
        );
        // Mosquitto's files hold the devices' key hashes: emptied, so
        // no device (nor this gateway) connects any more.
        if config.local_broker.manages_mosquitto() {
            if let Err(e) = crate::mosquitto::empty(&config.local_broker) {
                tracing::error!(error = %e, "Mosquitto's password and ACL files could not be emptied: empty them by hand");
            }
        }
    }
    Ok(())
}

/// Makes (once) or loads the page's certificate, binds, and serves the
/// technician page until `cancel`.
async fn start_technician_page(
    t: &crate::config::TechnicianPage,
    data_dir: &std::path::Path,
    shared: &Arc<Shared>,
    cancel: &CancellationToken,
) -> Result<(TechnicianReady, tokio::task::JoinHandle<()>), GatewayError> {
    use crate::technician::{tls, WebState};
    let fail = |e: String| GatewayError::Technician(e);
    let (dir, ip) = (data_dir.to_path_buf(), t.listen.ip());
    let cert = tokio::task::spawn_blocking(move || tls::ensure(&dir, ip))
        .await
        .map_err(|e| fail(e.to_string()))?
        .map_err(|e| fail(e.to_string()))?;
    let server = tls::server_config(&cert).map_err(|e| fail(e.to_string()))?;
    let tcp = tokio::net::TcpListener::bind(t.listen)
        .await
        .map_err(|e| fail(format!("cannot listen on {}: {e}", t.listen)))?;
    let listener = tls::TlsListener::new(tcp, server).map_err(|e| fail(e.to_string()))?;
    let addr = axum::serve::Listener::local_addr(&listener).map_err(|e| fail(e.to_string()))?;
    if cert.made_now {
        tracing::info!(cert = %cert.cert.display(), "technician page: made its own TLS certificate (once; it is kept)");
    }
    let accounts = crate::technician::accounts::AccountsFile::in_dir(data_dir)
        .load()
        .map(|a| a.technicians.len());
    match accounts {
        Ok(0) => tracing::warn!("technician page: no technician account yet; add one with `trygg-gateway technician add NAME`"),
        Ok(n) => tracing::info!(accounts = n, "technician page: accounts found"),
        Err(e) => tracing::error!(error = %e, "technician page: the accounts file cannot be read; logins fail until it is fixed"),
    }
    tracing::info!(
        url = %format!("https://{addr}/"),
        fingerprint = %format!("SHA256:{}", cert.fingerprint),
        "technician page listening; check that the browser shows this certificate fingerprint"
    );
    let policy = crate::technician::sessions::Policy {
        idle_ms: t.session_idle_min * 60_000,
        absolute_ms: t.session_max_h * 3_600_000,
    };
    let state = WebState::new(shared.clone(), data_dir.to_path_buf(), policy);
    let task = tokio::spawn(crate::technician::serve(listener, state, cancel.clone()));
    Ok((
        TechnicianReady {
            addr,
            fingerprint: cert.fingerprint,
            cert: cert.cert,
        },
        task,
    ))
}

/// The decommission flow (see `crate::decommission`): deliver, have the
/// backend revoke, then stop and wipe; or stop trying, wiping nothing.
pub(crate) async fn decommission_flow(
    shared: Arc<Shared>,
    force: bool,
    limits: crate::decommission::Limits,
) {
    use crate::decommission::Phase;
    let d = &shared.decommission;
    let pending = || {
        shared
            .reader
            .pending_counts()
            .map(|p| p.iter().sum::<u64>())
            .unwrap_or(u64::MAX)
    };
    if force {
        tracing::warn!(
            pending = pending(),
            "decommission forced: what the journal still holds is not delivered, and the backend is not asked to revoke this gateway"
        );
        d.wipe_and_stop();
        return;
    }
    tracing::warn!("decommission: delivering what the journal holds, then asking the backend to revoke this gateway");
    let deadline = tokio::time::Instant::now() + limits.deliver_within;
    loop {
        let left = pending();
        if left == 0 {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            d.fail(format!(
                "{left} events still wait for the backend's receipt after {} s: bring the uplink back and try again, or decommission with --force (they are lost)",
                limits.deliver_within.as_secs()
            ));
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    d.set(Phase::Revoking);
    let tx = shared.uplink_cmd.lock().ok().and_then(|t| t.clone());
    let Some(tx) = tx else {
        d.fail("the uplink is stopping".into());
        return;
    };
    let (reply, answer) = oneshot::channel();
    if tx
        .send(UplinkCmd::Decommission {
            pending: pending(),
            reply,
        })
        .await
        .is_err()
    {
        d.fail("the uplink is stopping".into());
        return;
    }
    match tokio::time::timeout(limits.revoke_within, answer).await {
        Ok(Ok(Ok(()))) => {
            tracing::warn!("the backend took this gateway off the service; wiping");
            d.wipe_and_stop();
        }
        Ok(Ok(Err(e))) => d.fail(format!("the backend refused: {e}")),
        Ok(Err(_)) => d.fail("the uplink stopped".into()),
        Err(_) => d.fail(format!(
            "the backend did not confirm within {} s: check the uplink (trygg-gateway status) and try again, or decommission with --force",
            limits.revoke_within.as_secs()
        )),
    }
}

fn journal_loop(
    mut journal: Journal,
    mut rx: mpsc::Receiver<JournalCmd>,
    ack_tx: mpsc::UnboundedSender<Vec<AckWork>>,
    committed_tx: watch::Sender<u64>,
    config: &Config,
    shared: &Shared,
    cancel: &CancellationToken,
) {
    let metrics = &shared.metrics;
    let mut generation = 0u64;
    while let Some(first) = rx.blocking_recv() {
        let mut cmds = vec![first];
        while cmds.len() < config.journal.max_group {
            match rx.try_recv() {
                Ok(c) => cmds.push(c),
                Err(_) => break,
            }
        }
        let mut group = Group::default();
        // Per publish: which event of the group it is, or its rejection.
        let mut plans: Vec<(Publish, Plan)> = Vec::new();
        // Test alarms waiting for their commit: index in `group.system`.
        let mut tests: Vec<(usize, TestAlarmReply)> = Vec::new();
        for cmd in cmds {
            match cmd {
                JournalCmd::Devices { change, reply } => {
                    // In order with the messages around it: those before
                    // were classified against the register before it.
                    let _ = reply.send(change_devices(&mut journal, shared, &change));
                }
                JournalCmd::PendingSeen(id) => {
                    if let Some(request) = shared.gate.pending_get(&id) {
                        if let Err(e) = journal.write_pending(&id, Some(&request)) {
                            tracing::warn!(device = %id, error = %e, "cannot record the join request in the journal; it is kept in memory");
                        }
                    }
                }
                JournalCmd::Accept { mut device, reply } => {
                    let result = match shared.gate.pending_get(&device.id) {
                        None => Err(RegisterError::NotPending(device.id.clone()).into()),
                        Some(request) => {
                            device.key_hash = Some(request.key_hash);
                            let r =
                                change_devices(&mut journal, shared, &Change::Add(device.clone()));
                            if r.is_ok() {
                                shared.gate.pending_remove(&device.id);
                                tracing::info!(device = %device.id, "join request accepted: the device is paired with the key it presented; its events are taken from now on");
                            }
                            r
                        }
                    };
                    let _ = reply.send(result);
                }
                JournalCmd::Reject { id, reply } => {
                    let result = if shared.gate.is_pending(&id) {
                        journal
                            .write_pending(&id, None)
                            .map(|()| {
                                shared.gate.pending_remove(&id);
                                shared
                                    .metrics
                                    .inc("device_join_requests_rejected_total", "");
                                tracing::info!(device = %id, "join request rejected");
                            })
                            .map_err(DeviceChangeError::from)
                    } else {
                        Err(RegisterError::NotPending(id).into())
                    };
                    let _ = reply.send(result);
                }
                JournalCmd::RemoteConfig { push, reply } => {
                    let _ = reply.send(remote_config(&mut journal, shared, push));
                }
                JournalCmd::TestAlarm { subject, reply } => {
                    let place =
                        subject.as_deref().map(|id| {
                            shared.register.read().ok().and_then(|r| {
                                r.get(id).map(|d| (d.resident.clone(), d.room.clone()))
                            })
                        });
                    let (resident, room) = match place {
                        Some(Some(p)) => p,
                        Some(None) => {
                            let id = subject.unwrap_or_default();
                            let _ = reply.send(Err(RegisterError::NotFound(id).into()));
                            continue;
                        }
                        None => (
                            config.local_io.resident.clone(),
                            config.local_io.room.clone(),
                        ),
                    };
                    tracing::info!(
                        device = subject.as_deref().unwrap_or(&config.gateway_id),
                        "test alarm raised from the local API"
                    );
                    tests.push((group.system.len(), reply));
                    group.system.push(crate::journal::SystemEvent {
                        kind: trygg_protocol::EventKind::TestAlarm,
                        subject,
                        value: None,
                        resident,
                        room,
                    });
                }
                JournalCmd::Receipted(ranges) => group.receipted.extend(ranges),
                JournalCmd::Raised(Raised::Events(events)) => {
                    for e in &events {
                        if e.kind == trygg_protocol::EventKind::DeviceSilent {
                            metrics.inc("devices_silent_raised_total", "");
                        }
                    }
                    group.system.extend(events);
                }
                JournalCmd::Raised(Raised::Housekeeping) => {
                    housekeeping(&mut journal, &mut group, shared);
                }
                JournalCmd::Device(p) => {
                    let topic = p.topic.clone();
                    // A device asking to join: nothing it sends is taken
                    // (no receipt either, so it keeps its events) until a
                    // technician accepts it.
                    if let Some(t) = topic::DeviceTopic::parse(&topic) {
                        let id = t.device_id();
                        if shared.gate.is_pending(id)
                            && shared.register.read().is_ok_and(|r| r.get(id).is_none())
                        {
                            metrics.inc("device_messages_pending_total", "");
                            tracing::debug!(device = %id, "message from a device asking to join: not taken until it is accepted");
                            plans.push((p, Plan::Nothing));
                            continue;
                        }
                    }
                    let incoming = {
                        let register = shared.register.read().unwrap_or_else(|e| e.into_inner());
                        classify(&topic, &p.payload, &register)
                    };
                    match incoming {
                        Incoming::Event(e) => {
                            plans.push((
                                p,
                                Plan::Event {
                                    index: group.events.len(),
                                    device: e.device.clone(),
                                    seq: e.event.seq,
                                },
                            ));
                            group.events.push(e);
                        }
                        Incoming::Heartbeat { device, heartbeat } => {
                            metrics.inc("device_heartbeats_total", "");
                            if let Ok(mut map) = shared.last_heartbeat.lock() {
                                map.insert(device, (now_ms(), heartbeat));
                            }
                            plans.push((p, Plan::Nothing));
                        }
                        Incoming::Rejected(r) => {
                            tracing::warn!(topic = %topic, reason = %r.reason, code = r.code, "device payload rejected");
                            metrics.inc(
                                "device_payloads_rejected_total",
                                &format!("reason=\"{}\"", r.code),
                            );
                            group
                                .dead_letters
                                .push(r.dead_letter(&topic, &p.payload, now_ms()));
                            let receipt = match (&r.device, r.seq) {
                                (Some(d), Some(seq)) => Some(receipt_for(
                                    d,
                                    seq,
                                    ReceiptStatus::Rejected,
                                    Some(&r.reason),
                                )),
                                _ => None,
                            };
                            plans.push((p, Plan::Reply(receipt)));
                        }
                    }
                }
            }
        }
        let started = Instant::now();
        let result = loop {
            match journal.apply(&group) {
                Ok(r) => {
                    if !journal.disk_full() {
                        set_journal_error(shared, None);
                    }
                    break r;
                }
                Err(e) if e.is_disk_full() && !journal.disk_full() => {
                    // The disk itself is full: give the alarm reserve to the
                    // journal and try again at once, deferring telemetry.
                    let released = journal.release_reserve();
                    shared
                        .disk_full
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    metrics.inc("journal_disk_full_total", "");
                    set_journal_error(shared, Some(format!("disk full: {e}")));
                    tracing::error!(
                        error = %e,
                        reserve_released = released,
                        "THE DISK IS FULL: alarm reserve released; alarms, medication and technical events are still taken, telemetry is deferred (devices keep it) and the oldest telemetry gives way. Free space on the gateway's disk"
                    );
                    if let Err(e) = journal.reopen() {
                        tracing::warn!(error = %e, "journal reopen failed; will try again");
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
                Err(e) => {
                    // Nothing of this group is acknowledged; devices and the
                    // broker keep their copies. Reopen (redb refuses every
                    // write after an I/O error until then) and try again;
                    // with the disk still full, telemetry makes room first.
                    if e.is_disk_full() {
                        journal.squeeze();
                    }
                    tracing::error!(error = %e, events = group.events.len(), "journal commit failed; nothing of it was acknowledged; retrying in 1 s (is the disk full?)");
                    metrics.inc("journal_commit_failures_total", "");
                    set_journal_error(shared, Some(e.to_string()));
                    if cancel.is_cancelled() {
                        tracing::warn!("stopping with an uncommitted group: devices and the broker keep it for next time");
                        return;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                    if let Err(e) = journal.reopen() {
                        tracing::warn!(error = %e, "journal reopen failed; will try again");
                    }
                }
            }
        };
        for (index, reply) in tests {
            let _ = reply.send(Ok(result.system_seqs[index]));
        }
        if !group.is_empty() {
            metrics.inc("journal_commits_total", "");
            metrics.set(
                "journal_last_commit_seconds",
                "",
                started.elapsed().as_secs_f64(),
            );
        }
        if result.deleted > 0 {
            metrics.add("journal_records_receipted_total", "", result.deleted);
        }
        for (n, reason) in [
            (result.dropped_limit, "reason=\"limit\""),
            (result.dropped_age, "reason=\"age\""),
        ] {
            if n > 0 {
                metrics.add("journal_telemetry_dropped_total", reason, n);
                tracing::warn!(
                    dropped = n,
                    reason = reason.trim_start_matches("reason="),
                    "telemetry dropped from the journal (it is reported to the backend as telemetry_dropped)"
                );
            }
        }
        let mut work = Vec::with_capacity(plans.len());
        let new_records = result.added_records();
        let mut committed = [0u64; 3];
        for (publish, plan) in plans {
            let receipt = match plan {
                Plan::Nothing => None,
                Plan::Reply(r) => r,
                Plan::Event { index, device, seq } => match &result.outcomes[index] {
                    Outcome::Committed { lane, .. } => {
                        committed[lane.index()] += 1;
                        Some(receipt_for(&device, seq, ReceiptStatus::Committed, None))
                    }
                    Outcome::Duplicate => {
                        metrics.inc("device_events_duplicate_total", "");
                        Some(receipt_for(&device, seq, ReceiptStatus::Duplicate, None))
                    }
                    Outcome::Refused => {
                        metrics.inc("device_payloads_rejected_total", "reason=\"journal_full\"");
                        Some(receipt_for(
                            &device,
                            seq,
                            ReceiptStatus::Rejected,
                            Some("journal full: telemetry refused"),
                        ))
                    }
                    Outcome::Deferred => {
                        // No receipt: the device keeps it and sends it again.
                        metrics.inc("journal_telemetry_deferred_total", "");
                        None
                    }
                    Outcome::Backwards { last } => {
                        let reason =
                            format!("sequence {seq} went backwards (last committed {last})");
                        tracing::warn!(device = %device, reason = %reason, "device payload rejected");
                        metrics.inc(
                            "device_payloads_rejected_total",
                            "reason=\"sequence_backwards\"",
                        );
                        Some(receipt_for(
                            &device,
                            seq,
                            ReceiptStatus::Rejected,
                            Some(&reason),
                        ))
                    }
                },
            };
            work.push(AckWork { publish, receipt });
        }
        for lane in Lane::ALL {
            if committed[lane.index()] > 0 {
                metrics.add(
                    "journal_events_committed_total",
                    LANE_LABELS[lane.index()],
                    committed[lane.index()],
                );
            }
        }
        if committed[Lane::Alarm.index()] > 0 {
            shared.alarms_committed.fetch_add(
                committed[Lane::Alarm.index()],
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        if !work.is_empty() && ack_tx.send(work).is_err() {
            break;
        }
        if new_records || result.deleted > 0 {
            generation += 1;
            let _ = committed_tx.send(generation);
        }
    }
    tracing::info!("journal closed");
}

/// Checks a register change, makes it durable, and only then lets ingest
/// and supervision see it.
fn change_devices(
    journal: &mut Journal,
    shared: &Shared,
    change: &Change,
) -> Result<(), DeviceChangeError> {
    let writes = shared
        .register
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .check(change)?;
    journal.write_devices(&writes)?;
    shared
        .register
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .apply(&writes);
    // A device paired is no longer asking to join (the journal dropped
    // its request in the same transaction).
    for (id, d) in &writes {
        if d.is_some() {
            shared.gate.pending_remove(id);
        }
    }
    match change {
        Change::Add(d) => {
            shared.publish_cfg(&d.id);
            tracing::info!(device = %d.id, kind = ?d.device_type, "device paired")
        }
        Change::Swap { old, new_id, .. } => {
            shared.publish_cfg(new_id);
            tracing::info!(old = %old, new = %new_id, "device swapped: settings moved to the replacement, which has its own key; the old id is refused from now on")
        }
        Change::Rekey { id, .. } => {
            tracing::info!(device = %id, "device given a new key: the old key no longer connects")
        }
        Change::Remove(id) => tracing::info!(device = %id, "device removed from the register"),
    }
    shared.metrics.inc("device_register_changes_total", "");
    if shared.local_broker.manages_mosquitto() {
        sync_mosquitto(shared);
    }
    Ok(())
}

/// The embedded broker's authenticator and authorizer, backed by the
/// gate. They hold the gateway weakly: rumqttd outlives a gateway stopped
/// in-process, and refuses everyone once it is gone.
fn embedded_access(
    shared: std::sync::Weak<Shared>,
) -> (
    trygg_uplink::broker::Authenticator,
    trygg_uplink::broker::Authorizer,
) {
    use crate::device_auth::Verdict;
    let weak = shared.clone();
    // A device retrying with a wrong key would fill the log: one line per
    // client id and reason every 10 s (the metric counts them all).
    let logged: Mutex<HashMap<(String, &'static str), Instant>> = Mutex::new(HashMap::new());
    let authenticate = move |client_id: &str, username: &str, password: &str| -> bool {
        let Some(s) = weak.upgrade() else {
            return false;
        };
        let send = |cmd: JournalCmd| {
            let tx = s.admin.lock().ok().and_then(|a| a.clone());
            if let Some(tx) = tx {
                let _ = tx.try_send(cmd);
            }
        };
        match s
            .gate
            .authenticate(client_id, username, password, now_ms(), Instant::now())
        {
            Verdict::Gateway | Verdict::Device => true,
            Verdict::Pending { write } => {
                if write {
                    s.metrics.inc("device_join_requests_total", "");
                    tracing::warn!(device = %username, "an unknown device is asking to join (first contact): it may connect, but nothing it sends is taken until a technician accepts it (`trygg-gateway device pending`, then `device accept` or `device reject`)");
                    send(JournalCmd::PendingSeen(username.to_string()));
                }
                true
            }
            Verdict::Refused {
                code,
                reason,
                raise,
            } => {
                s.metrics.inc(
                    "device_connects_refused_total",
                    &format!("reason=\"{code}\""),
                );
                let client: String = client_id.chars().take(80).collect();
                let due = logged.lock().is_ok_and(|mut m| {
                    if m.len() > 1000 {
                        m.clear();
                    }
                    let key = (client.clone(), code);
                    let due = m
                        .get(&key)
                        .is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
                    if due {
                        m.insert(key, Instant::now());
                    }
                    due
                });
                if due {
                    tracing::warn!(client_id = %client, code, "device connection refused (logged once per 10 s per device and reason; device_connects_refused_total counts each): {reason}");
                }
                if let Some(event) = raise {
                    s.metrics.inc("device_auth_failed_raised_total", "");
                    tracing::error!(device = %username, "repeated wrong keys for a paired device (possible attack): raising device_auth_failed at the backend");
                    send(JournalCmd::Raised(Raised::Events(vec![event])));
                }
                false
            }
        }
    };
    let authorize = move |r: &trygg_uplink::broker::AccessRequest| -> bool {
        let Some(s) = shared.upgrade() else {
            return false;
        };
        let access = match r.access {
            trygg_uplink::broker::Access::Publish => crate::credentials::Access::Publish,
            trygg_uplink::broker::Access::Subscribe => crate::credentials::Access::Subscribe,
        };
        let ok = s.gate.authorize(r.username, access, r.topic);
        if !ok {
            s.metrics.inc("device_access_refused_total", "");
            tracing::warn!(
                client_id = %r.client_id.chars().take(80).collect::<String>(),
                topic = %r.topic.chars().take(128).collect::<String>(),
                access = ?access,
                "device refused a topic that is not its own (or it is no longer paired): its connection is closed"
            );
        }
        ok
    };
    (Arc::new(authenticate), Arc::new(authorize))
}

/// Writes Mosquitto's password and ACL files from the register and makes
/// it reload them; a failure is logged and counted (the register change
/// stands, and the next change or restart writes the files again).
fn sync_mosquitto(shared: &Shared) {
    let register = shared
        .register
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let c = &shared.broker_client;
    match crate::mosquitto::sync(&shared.local_broker, &c.username, &c.key_hash, &register) {
        Ok(()) => {
            shared.metrics.inc("mosquitto_files_written_total", "");
            tracing::info!(
                devices = register.len(),
                "Mosquitto's password and ACL files written and reload requested"
            );
        }
        Err(e) => {
            shared.metrics.inc("mosquitto_sync_failures_total", "");
            tracing::error!(error = %e, "MOSQUITTO'S DEVICE CREDENTIALS ARE NOT UP TO DATE: the last register change does not hold at the broker until this is fixed (it is retried at the next change or restart)");
        }
    }
}

/// Applies a settings version from the backend, or refuses it; returns the
/// answer. A version at or below the last one is answered as before.
fn remote_config(
    journal: &mut Journal,
    shared: &Shared,
    push: Result<trygg_uplink::remote_config::ConfigPush, (u64, String)>,
) -> trygg_uplink::remote_config::ConfigResult {
    use crate::remote_config::{plan, refused};
    use trygg_uplink::remote_config::ConfigResult;
    let prev = match journal.reader().remote_config() {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the last settings version; the push is not applied now");
            return ConfigResult {
                v: 1,
                version: push.as_ref().map(|p| p.version).unwrap_or_else(|(v, _)| *v),
                applied: false,
                error: Some(format!("the gateway's journal cannot be read: {e}")),
            };
        }
    };
    let version = push.as_ref().map(|p| p.version).unwrap_or_else(|(v, _)| *v);
    if let Some(prev) = &prev {
        if version == prev.last.version && version > 0 {
            return prev.last.clone();
        }
        if version < prev.last.version {
            return ConfigResult {
                v: 1,
                version,
                applied: false,
                error: Some(format!(
                    "version {version} is older than version {} this gateway has",
                    prev.last.version
                )),
            };
        }
    }
    let now = now_ms();
    let outcome = {
        let register = shared.register.read().unwrap_or_else(|e| e.into_inner());
        push.and_then(|p| plan(&p, &register, now).map_err(|e| (p.version, e)))
    };
    match outcome {
        Ok(plan) => {
            if let Err(e) = journal.write_remote_config(&plan.state, &plan.writes) {
                tracing::error!(error = %e, version, "settings version not applied: the journal could not commit it");
                return ConfigResult {
                    v: 1,
                    version,
                    applied: false,
                    error: Some(format!("the gateway's journal could not commit it: {e}")),
                };
            }
            {
                let mut register = shared.register.write().unwrap_or_else(|e| e.into_inner());
                let writes: Vec<_> = plan
                    .writes
                    .iter()
                    .map(|(id, d)| (id.clone(), Some(d.clone())))
                    .collect();
                register.apply(&writes);
                register.set_periods(&plan.periods);
            }
            if let Some(h) = plan.state.settings.heartbeat_s {
                shared
                    .heartbeat_s
                    .store(h, std::sync::atomic::Ordering::Relaxed);
            }
            for (id, _) in &plan.writes {
                shared.publish_cfg(id);
            }
            shared.metrics.inc("config_versions_applied_total", "");
            tracing::info!(
                version,
                devices = plan.writes.len(),
                periods = plan.periods.len(),
                "settings from the backend applied"
            );
            plan.state.last
        }
        Err((version, error)) => {
            shared.metrics.inc("config_versions_refused_total", "");
            tracing::warn!(version, error = %error, "settings from the backend refused; nothing of them was applied");
            let state = refused(prev.as_ref(), version, error, now);
            if version > 0 {
                if let Err(e) = journal.write_remote_config(&state, &[]) {
                    tracing::error!(error = %e, "the refusal could not be kept; it is answered all the same");
                }
            }
            state.last
        }
    }
}

/// The journal's timer: retake the disk reserve after a full disk, and
/// sweep telemetry past its age when there is some.
fn housekeeping(journal: &mut Journal, group: &mut Group, shared: &Shared) {
    if journal.disk_full() {
        // The reserve file is only retaken once the disk has room for it.
        if journal.retake_reserve() {
            shared
                .disk_full
                .store(false, std::sync::atomic::Ordering::Relaxed);
            set_journal_error(shared, None);
            tracing::info!(
                "the disk has room again: alarm reserve retaken, telemetry is taken again"
            );
        }
    }
    if let Some(max_age) = journal.policy().telemetry_max_age_ms {
        let cutoff = now_ms().saturating_sub(max_age);
        if shared
            .reader
            .oldest_committed_ms(Lane::Telemetry)
            .ok()
            .flatten()
            .is_some_and(|t| t < cutoff)
        {
            group.sweep = true;
        }
    }
    if journal.drop_report_due().unwrap_or(false) {
        group.sweep = true;
    }
}

pub(crate) const LANE_LABELS: [&str; 3] =
    [r#"lane="alarm""#, r#"lane="care""#, r#"lane="telemetry""#];

fn set_journal_error(shared: &Shared, error: Option<String>) {
    if let Ok(mut e) = shared.journal_error.lock() {
        *e = error;
    }
}

enum Plan {
    Event {
        index: usize,
        device: String,
        seq: u64,
    },
    Reply(Option<(String, Vec<u8>)>),
    Nothing,
}

fn receipt_for(
    device: &str,
    seq: u64,
    status: ReceiptStatus,
    reason: Option<&str>,
) -> (String, Vec<u8>) {
    let reason = reason.map(|r| {
        let mut end = r.len().min(200);
        while !r.is_char_boundary(end) {
            end -= 1;
        }
        &r[..end]
    });
    let mut buf = [0u8; 512];
    let n = Receipt::new(seq, status, reason)
        .encode(&mut buf)
        .unwrap_or(0);
    (
        topic::device_topic(device, "ack").to_string(),
        buf[..n].to_vec(),
    )
}

async fn ack_loop(client: AsyncClient, mut rx: mpsc::UnboundedReceiver<Vec<AckWork>>) {
    while let Some(work) = rx.recv().await {
        for w in work {
            if let Some((topic, payload)) = w.receipt {
                let _ = client
                    .publish(topic, QoS::AtLeastOnce, false, payload)
                    .await;
            }
            let _ = client.ack(&w.publish).await;
        }
    }
}

/// What the uplink's network half reports to its bookkeeping half.
enum UplinkEvent {
    Connected,
    /// The backend says whether it takes batches (retained status).
    Backend(bool),
    Disconnected(String),
    Receipt(UplinkReceipt),
    /// A settings version from the backend.
    Config(Bytes),
    /// The backend's answer to this gateway's decommission.
    Decommissioned(Bytes),
}

// The uplink's inputs are separate channels on purpose: each has its own
// owner and lifetime (the journal's ends at shutdown, the commands' never).
// The commands are borrowed: `crate::enrollment` runs the loop again with a
// new certificate, and the same commands.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn uplink_loop(
    cmds: &mut mpsc::Receiver<UplinkCmd>,
    config: Arc<Config>,
    url: MqttUrl,
    tls: Arc<rustls::ClientConfig>,
    shared: Arc<Shared>,
    journal_tx: mpsc::Sender<JournalCmd>,
    mut committed: watch::Receiver<u64>,
    cancel: CancellationToken,
) {
    use rumqttc::v5::mqttbytes::v5::{LastWill, Packet as P5};
    use rumqttc::v5::mqttbytes::QoS as Q5;
    use rumqttc::v5::{AsyncClient as Client5, Event as E5, MqttOptions as Opts5};

    let gw = config.gateway_id.clone();
    let status_topic = contract::status_topic(&gw);
    let receipt_topic = contract::receipt_topic(&gw);
    let batch_topic = contract::batch_topic(&gw);
    let heartbeat_topic = contract::heartbeat_topic(&gw);
    let config_topic = trygg_uplink::remote_config::config_topic(&gw);
    let config_result_topic = trygg_uplink::remote_config::config_result_topic(&gw);
    let decommission_result_topic = trygg_uplink::remote_config::decommission_result_topic(&gw);
    let mut decommission_reply: Option<oneshot::Sender<Result<(), String>>> = None;
    let mut last_heartbeat = Instant::now();
    let mut opts = Opts5::new(format!("trygg-uplink-{gw}"), url.host.clone(), url.port);
    opts.set_clean_start(false)
        .set_session_expiry_interval(Some(24 * 3600))
        .set_keep_alive(Duration::from_secs(10))
        .set_max_packet_size(Some(4 * 1024 * 1024))
        .set_last_will(LastWill::new(
            status_topic.clone(),
            "offline",
            Q5::AtLeastOnce,
            true,
            None,
        ))
        .set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls),
        ));
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    opts.set_network_options(network);
    let (client, mut eventloop) = Client5::new(opts, 1000);

    let (ev_tx, mut ev_rx) = mpsc::channel::<UplinkEvent>(1000);
    let net = {
        let cancel = cancel.clone();
        let client = client.clone();
        let receipt_topic = receipt_topic.clone();
        let status_topic = status_topic.clone();
        let config_topic = config_topic.clone();
        let decommission_result_topic = decommission_result_topic.clone();
        let reconnect_max = Duration::from_millis(config.uplink.reconnect_max_ms);
        tokio::spawn(async move {
            let mut backoff = Backoff::new(Duration::from_millis(200), reconnect_max);
            loop {
                let event = tokio::select! {
                    _ = cancel.cancelled() => break,
                    e = eventloop.poll() => e,
                };
                match event {
                    Ok(E5::Incoming(P5::ConnAck(_))) => {
                        backoff.reset();
                        let _ = client
                            .subscribe(receipt_topic.clone(), Q5::AtLeastOnce)
                            .await;
                        let _ = client
                            .subscribe(contract::BRIDGE_STATUS_TOPIC, Q5::AtLeastOnce)
                            .await;
                        let _ = client
                            .subscribe(config_topic.clone(), Q5::AtLeastOnce)
                            .await;
                        let _ = client
                            .subscribe(decommission_result_topic.clone(), Q5::AtLeastOnce)
                            .await;
                        let _ = client
                            .publish(status_topic.clone(), Q5::AtLeastOnce, true, "online")
                            .await;
                        let _ = ev_tx.send(UplinkEvent::Connected).await;
                    }
                    Ok(E5::Incoming(P5::Publish(p)))
                        if p.topic.as_ref() == contract::BRIDGE_STATUS_TOPIC.as_bytes() =>
                    {
                        let online = p.payload.as_ref() == b"online";
                        let _ = ev_tx.send(UplinkEvent::Backend(online)).await;
                    }
                    Ok(E5::Incoming(P5::Publish(p)))
                        if p.topic.as_ref() == config_topic.as_bytes() =>
                    {
                        let _ = ev_tx.send(UplinkEvent::Config(p.payload)).await;
                    }
                    Ok(E5::Incoming(P5::Publish(p)))
                        if p.topic.as_ref() == decommission_result_topic.as_bytes() =>
                    {
                        let _ = ev_tx.send(UplinkEvent::Decommissioned(p.payload)).await;
                    }
                    Ok(E5::Incoming(P5::Publish(p))) => {
                        match serde_json::from_slice::<UplinkReceipt>(&p.payload) {
                            Ok(r) => {
                                let _ = ev_tx.send(UplinkEvent::Receipt(r)).await;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "uplink receipt unreadable; ignored")
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = ev_tx.send(UplinkEvent::Disconnected(e.to_string())).await;
                        let delay = backoff.next_delay();
                        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "uplink connection lost");
                        tokio::select! {
                            _ = cancel.cancelled() => break,
                            _ = tokio::time::sleep(delay) => {}
                        }
                    }
                }
            }
        })
    };

    let mut state = UplinkState::new(
        config.uplink.window,
        Duration::from_secs(config.uplink.receipt_timeout_s),
    );
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let max_records = config.uplink.max_batch_records;
    let mut journal_open = true;
    loop {
        // Send while there is something to send and room to send it.
        loop {
            let sendable = state.sendable();
            if sendable.is_empty() {
                break;
            }
            let mut picked = Vec::new();
            for (lane, after) in sendable {
                if picked.len() >= max_records {
                    break;
                }
                match shared
                    .reader
                    .read_after(lane, after, max_records - picked.len())
                {
                    Ok(mut recs) => picked.append(&mut recs),
                    Err(e) => tracing::error!(error = %e, "journal read failed"),
                }
            }
            // Keep the batch well under what the backend reads.
            let mut bytes = 0;
            let fits = picked
                .iter()
                .take_while(|p| {
                    bytes += p.json.len() + 1;
                    bytes <= contract::MAX_BATCH_BYTES / 2
                })
                .count();
            picked.truncate(fits.max(1));
            if picked.is_empty() {
                break;
            }
            let seqs: Vec<(Lane, u64)> = picked.iter().map(|p| (p.lane, p.seq)).collect();
            let id = state.on_sent(&seqs, Instant::now());
            let payload = batch_json(&gw, id, &picked);
            shared
                .metrics
                .add("uplink_records_sent_total", "", picked.len() as u64);
            if client
                .publish(batch_topic.clone(), Q5::AtLeastOnce, false, payload)
                .await
                .is_err()
            {
                break;
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(cmd) = cmds.recv() => match cmd {
                UplinkCmd::Decommission { pending, reply } => {
                    let body = serde_json::to_vec(&trygg_uplink::remote_config::Decommission { v: 1, pending })
                        .expect("serializes");
                    let topic = trygg_uplink::remote_config::decommission_topic(&gw);
                    if let Err(e) = client.publish(topic, Q5::AtLeastOnce, false, body).await {
                        let _ = reply.send(Err(format!("cannot send the request: {e}")));
                    } else {
                        tracing::info!("asked the backend to take this gateway off the service");
                        decommission_reply = Some(reply);
                    }
                }
            },
            ev = ev_rx.recv() => match ev {
                Some(UplinkEvent::Decommissioned(payload)) => {
                    let answer = serde_json::from_slice::<trygg_uplink::remote_config::DecommissionResult>(&payload);
                    if let Some(reply) = decommission_reply.take() {
                        let _ = reply.send(match answer {
                            Ok(r) if r.done => Ok(()),
                            Ok(r) => Err(r.error.unwrap_or_else(|| "no reason given".into())),
                            Err(e) => Err(format!("unreadable answer: {e}")),
                        });
                    }
                }
                Some(UplinkEvent::Connected) => {
                    tracing::info!(url = %url, "uplink connected; waiting for the backend to say it is listening");
                    shared.uplink_connected.store(true, std::sync::atomic::Ordering::Relaxed);
                    if let Ok(mut id) = shared.identity.lock() {
                        if matches!(*id, crate::enrollment::IdentityState::CertificateRefused { .. }) {
                            *id = crate::enrollment::enrolled_state(&trygg_uplink::enroll::IdentityFiles::in_data_dir(&config.data_dir));
                        }
                    }
                }
                // The backend repeats its status; only a change counts.
                Some(UplinkEvent::Backend(true)) if !state.connected() => {
                    tracing::info!("the backend is listening; sending everything not yet receipted");
                    state.on_connected();
                }
                Some(UplinkEvent::Backend(true)) => {}
                Some(UplinkEvent::Backend(false)) => {
                    if state.connected() {
                        tracing::warn!("the backend says it is offline; events stay in the journal");
                    }
                    state.on_disconnected();
                }
                Some(UplinkEvent::Disconnected(reason)) => {
                    if let Some(alert) = crate::enrollment::certificate_refusal(&reason) {
                        shared.metrics.inc("uplink_certificate_refused_total", "");
                        if let Ok(mut id) = shared.identity.lock() {
                            let fingerprint = match &*id {
                                crate::enrollment::IdentityState::Enrolled { fingerprint, .. }
                                | crate::enrollment::IdentityState::CertificateRefused { fingerprint, .. } => fingerprint.clone(),
                                _ => String::new(),
                            };
                            let refused = crate::enrollment::IdentityState::CertificateRefused { fingerprint, alert };
                            if *id != refused {
                                tracing::error!(problem = %refused.problem().unwrap_or_default(), "the backend refused this gateway's certificate");
                                *id = refused;
                            }
                        }
                    }
                    // (A new connection waits for the backend's word again.)
                    if state.connected() {
                        tracing::warn!(reason = %reason, "uplink down; events stay in the journal");
                    }
                    shared.uplink_connected.store(false, std::sync::atomic::Ordering::Relaxed);
                    state.on_disconnected();
                }
                Some(UplinkEvent::Config(payload)) => {
                    // Applied (or refused) by the journal thread, answered
                    // once durable; uplink traffic goes on meanwhile.
                    let push = crate::remote_config::parse(&payload);
                    if let Err((version, e)) = &push {
                        tracing::warn!(version, error = %e, "a settings push from the backend cannot be read");
                    }
                    let (reply, answer) = oneshot::channel();
                    if journal_tx.send(JournalCmd::RemoteConfig { push, reply }).await.is_err() {
                        break;
                    }
                    let client = client.clone();
                    let topic = config_result_topic.clone();
                    tokio::spawn(async move {
                        if let Ok(result) = answer.await {
                            let body = serde_json::to_vec(&result).expect("results serialize");
                            let _ = client.publish(topic, Q5::AtLeastOnce, false, body).await;
                        }
                    });
                }
                Some(UplinkEvent::Receipt(r)) => {
                    shared.metrics.inc("uplink_receipts_total", "");
                    let ranges = state.on_receipt(&r);
                    if !ranges.is_empty() && journal_tx.send(JournalCmd::Receipted(ranges)).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            changed = committed.changed(), if journal_open => {
                // The journal is gone only at shutdown; stop listening then.
                journal_open = changed.is_ok();
            }
            _ = tick.tick() => {
                let heartbeat_every = Duration::from_secs(
                    shared.heartbeat_s.load(std::sync::atomic::Ordering::Relaxed).max(1),
                );
                if state.connected() && last_heartbeat.elapsed() >= heartbeat_every {
                    last_heartbeat = Instant::now();
                    let _ = client
                        .try_publish(heartbeat_topic.clone(), Q5::AtMostOnce, false, now_ms().to_string());
                }
                if state.on_tick(Instant::now()) {
                    tracing::warn!("uplink receipt overdue; sending everything not yet receipted again");
                    shared.metrics.inc("uplink_resends_total", "");
                }
            }
        }
    }
    let _ = client
        .publish(status_topic, Q5::AtLeastOnce, true, "offline")
        .await;
    let _ = client.disconnect().await;
    let _ = net.await;
}

/// The batch as JSON, built from the records' stored JSON without
/// re-encoding them.
fn batch_json(gateway: &str, batch: u64, records: &[crate::journal::Pending]) -> Bytes {
    let mut out = Vec::with_capacity(64 + records.iter().map(|r| r.json.len() + 1).sum::<usize>());
    out.extend_from_slice(format!("{{\"v\":{},\"gateway\":", contract::SCHEMA_VERSION).as_bytes());
    out.extend_from_slice(
        serde_json::to_string(gateway)
            .unwrap_or_default()
            .as_bytes(),
    );
    out.extend_from_slice(format!(",\"batch\":{batch},\"records\":[").as_bytes());
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&r.json);
    }
    out.extend_from_slice(b"]}");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_json_is_a_valid_batch() {
        let rec = trygg_uplink::Record {
            lane: Lane::Alarm,
            seq: 1,
            device: "b".into(),
            device_seq: 2,
            kind: trygg_protocol::EventKind::Fall,
            ts: None,
            committed_ms: 3,
            battery: None,
            value: None,
            resident: None,
            room: None,
            subject: None,
        };
        let json = serde_json::to_vec(&rec).unwrap();
        let p = crate::journal::Pending {
            lane: Lane::Alarm,
            seq: 1,
            stored_len: json.len() as u64,
            json,
        };
        let b: trygg_uplink::Batch =
            serde_json::from_slice(&batch_json("gw\"1", 9, &[p.clone(), p])).unwrap();
        assert_eq!(
            (b.gateway.as_str(), b.batch, b.records.len()),
            ("gw\"1", 9, 2)
        );
    }
}
