//! trygg-bridge: the municipal side of Trygg.
//!
//! It terminates gateway uplinks (MQTT v5 over TLS, through an embedded or
//! an external broker), commits every batch to its store before receipting
//! it, deduplicates by event id, detects gaps in each gateway's lane
//! sequences, runs the alarm workflow and serves the staff console's API.
//!
//! - [`ingest`] and [`alarm`]: the pure decisions (what a batch adds, what
//!   a transition is allowed to do), tested without I/O;
//! - [`store`]: redb, one writer thread with group commit;
//! - [`uplink`]: the MQTT client shell;
//! - [`api`]: the JSON API (axum);
//! - [`escalation`]: unacknowledged alarms up the configured chain;
//! - [`enrollment`] and [`mtls`]: the gateway CA, one-time enrollment
//!   codes, mutual TLS with revocation and per-gateway topics on the uplink;
//! - [`run`]: wires them together and shuts them down in order.

pub mod access;
pub mod alarm;
pub mod api;
pub mod benefits;
pub mod cli;
pub mod config;
pub mod console;
pub mod enrollment;
pub mod escalation;
pub mod ingest;
pub mod mtls;
pub mod settings;
pub mod store;
pub mod supervision;
pub mod uplink;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{broadcast, oneshot};
use tokio_util::sync::CancellationToken;
use trygg_uplink::broker::{BrokerSettings, EmbeddedBroker, MqttVersion};
use trygg_uplink::metrics::Metrics;
use trygg_uplink::mqtt_url::MqttUrl;
use trygg_uplink::tls::DevPki;

use config::BrokerMode;
pub use config::Config;
use store::{Store, StoreWriter};

/// The largest payload the embedded broker passes on. Above the bridge's
/// own batch limit, so an oversized batch reaches the bridge and is kept as
/// a dead letter with its reason instead of vanishing at the broker.
pub const BROKER_MAX_PAYLOAD: usize = 2 * trygg_uplink::contract::MAX_BATCH_BYTES;

/// Sent once the broker listens, the uplink is subscribed and the API is
/// bound: from then on a batch published is taken.
#[derive(Clone, Debug)]
pub struct Ready {
    /// Where gateways connect.
    pub broker: MqttUrl,
    /// The API's address (`http://{api}/api/v1/...`).
    pub api: SocketAddr,
    /// The CA certificate gateways must trust.
    pub ca_file: PathBuf,
    /// The staff console's address (`docs/console.md`).
    pub console: SocketAddr,
    /// Whether the console is served over HTTPS.
    pub console_tls: bool,
    /// Where gateways enroll (`https://{enroll}/enroll/v1`), with the
    /// server certificate of `ca_file`.
    pub enroll: SocketAddr,
    /// The gateway CA's certificate: what client certificates chain to.
    pub gateway_ca: PathBuf,
}

impl Ready {
    /// The console's base URL, `http(s)://HOST:PORT`.
    pub fn console_url(&self) -> String {
        let scheme = if self.console_tls { "https" } else { "http" };
        format!("{scheme}://{}", self.console)
    }

    /// The enrollment endpoint's base URL, `https://HOST:PORT` (what a
    /// gateway's `[enrollment] url` says).
    pub fn enroll_url(&self) -> String {
        let host = if self.enroll.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            self.enroll.ip().to_string()
        };
        format!("https://{host}:{}", self.enroll.port())
    }
}

impl std::fmt::Display for Ready {
    /// The line `trygg-bridge` prints on stdout when ready.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "trygg-bridge ready: broker={} api=http://{} ca={} console={} enroll={} gateway_ca={}",
            self.broker,
            self.api,
            self.ca_file.display(),
            self.console_url(),
            self.enroll_url(),
            self.gateway_ca.display()
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] trygg_uplink::tls::TlsError),
    #[error(transparent)]
    Broker(#[from] trygg_uplink::broker::BrokerError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("cannot listen for the API on {addr}: {source}")]
    ApiBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("API server failed: {0}")]
    Api(std::io::Error),
    #[error("cannot listen for the console on {addr}: {source}")]
    ConsoleBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    ConsoleTls(#[from] console::tls::ConsoleTlsError),
    #[error("console server failed: {0}")]
    Console(std::io::Error),
    #[error(transparent)]
    Uplink(#[from] uplink::UplinkError),
    #[error("a bridge task failed: {0}")]
    Task(String),
    #[error(transparent)]
    GatewayCa(#[from] enrollment::CaError),
    #[error("cannot make the bridge's own uplink certificate: {0}")]
    Identity(String),
    #[error("cannot listen for enrollment on {addr}: {source}")]
    EnrollBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("enrollment server failed: {0}")]
    Enroll(std::io::Error),
}

/// Runs the bridge until `shutdown` completes, then stops in order: stop
/// taking MQTT input, finish the commits in flight (receipt and ack them),
/// let the API finish its requests, let the store writer finish its last
/// commit.
pub async fn run(
    config: Config,
    ready: Option<oneshot::Sender<Ready>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BridgeError> {
    config.validate()?;
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| BridgeError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    trygg_uplink::tls::install_crypto_provider();

    // TLS: given files, or a development PKI made once in {data_dir}/tls.
    let b = &config.broker;
    let (ca_file, server_files) = match (b.mode, &b.cert_file, &b.key_file) {
        (BrokerMode::Embedded, Some(cert), Some(key)) => {
            (b.ca_file.clone(), Some((cert.clone(), key.clone())))
        }
        (BrokerMode::Embedded, _, _) => {
            let pki = DevPki::ensure(&data_dir.join("tls"))?;
            tracing::info!(ca = %pki.ca_cert.display(), "using the development certificate authority");
            (Some(pki.ca_cert), Some((pki.server_cert, pki.server_key)))
        }
        (BrokerMode::External, _, _) => (b.ca_file.clone(), None),
    };

    // The enrollment endpoint's certificate: its own, else the broker's,
    // else the development one.
    let e = &config.enrollment;
    let enroll_files = match (&e.tls_cert, &e.tls_key, &server_files) {
        (Some(c), Some(k), _) => (c.clone(), k.clone()),
        (_, _, Some(files)) => files.clone(),
        _ => {
            let pki = DevPki::ensure(&data_dir.join("tls"))?;
            (pki.server_cert, pki.server_key)
        }
    };
    let gateway_ca = Arc::new(match (&e.ca_cert, &e.ca_key) {
        (Some(c), Some(k)) => enrollment::GatewayCa::load(c, k, e.cert_valid_days)?,
        _ => {
            enrollment::GatewayCa::load_or_create(&data_dir.join("gateway-ca"), e.cert_valid_days)?
        }
    });
    // The bridge's own uplink identity: made at every start, kept in memory.
    let (own_cert, own_key) = gateway_ca
        .issue_own(enrollment::BRIDGE_IDENTITY, store::now_ms())
        .map_err(|e| BridgeError::Identity(e.to_string()))?;
    let own_key = trygg_uplink::tls::read_key_pem(own_key.as_bytes())
        .map_err(|e| BridgeError::Identity(e.to_string()))?;
    let own_identity = (
        vec![rustls::pki_types::CertificateDer::from(
            own_cert.der.clone(),
        )],
        own_key,
    );

    let store_path = data_dir.join("bridge.redb");
    let store = tokio::task::spawn_blocking(move || Store::open(&store_path))
        .await
        .map_err(|e| BridgeError::Task(e.to_string()))??;
    let metrics = Arc::new(Metrics::new());
    let (changes, _) = broadcast::channel(1024);
    let (writer, writer_thread) =
        StoreWriter::spawn(store.clone(), metrics.clone(), changes.clone());

    let verifier_store: mtls::StoreSlot = Arc::new(std::sync::RwLock::new(Some(store.clone())));
    // However this ends, the broker's verifier lets go of the store (the
    // broker outlives the bridge: rumqttd cannot be stopped).
    let _release_store = mtls::ReleaseOnDrop(verifier_store.clone());
    let (refusals_tx, refusals_rx) = tokio::sync::mpsc::unbounded_channel();
    let reporter = tokio::spawn(enrollment::report_refusals(
        refusals_rx,
        writer.clone(),
        metrics.clone(),
    ));

    let broker = match b.mode {
        BrokerMode::Embedded => {
            // Mutual TLS: a client certificate from the gateway CA, issued
            // here and not revoked (checked live at each handshake); each
            // gateway only its own topics.
            let (cert, key) = server_files
                .clone()
                .expect("embedded always has server files");
            let verifier = mtls::RevocationCheckingVerifier::new(
                &trygg_uplink::tls::read_certs(&gateway_ca.cert_file)?,
                verifier_store.clone(),
                vec![trygg_uplink::enroll::fingerprint(&own_cert.der)],
                refusals_tx.clone(),
            )
            .map_err(trygg_uplink::tls::TlsError::from)?;
            let tls_config = mtls::server_config(&cert, &key, verifier)?;
            let settings = BrokerSettings {
                listen: b.listen,
                version: MqttVersion::V5,
                tls: server_files,
                tls_config: Some(tls_config),
                authenticator: None,
                authorizer: Some(mtls::authorizer(refusals_tx.clone())),
                max_payload: BROKER_MAX_PAYLOAD,
                max_inflight: 100,
                log_segment_bytes: BrokerSettings::LARGE_LOG.0,
                log_segments: BrokerSettings::LARGE_LOG.1,
            };
            let started = tokio::task::spawn_blocking(move || EmbeddedBroker::start(settings))
                .await
                .map_err(|e| BridgeError::Task(e.to_string()))??;
            let host = if started.addr.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                started.addr.ip().to_string()
            };
            MqttUrl {
                host,
                port: started.addr.port(),
                tls: true,
            }
        }
        BrokerMode::External => {
            MqttUrl::parse(&b.url).map_err(|e| config::ConfigError::Invalid {
                field: "broker.url",
                reason: e.to_string(),
            })?
        }
    };

    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .map_err(|source| BridgeError::ApiBind {
            addr: config.api.listen,
            source,
        })?;
    let api_addr = listener
        .local_addr()
        .map_err(|source| BridgeError::ApiBind {
            addr: config.api.listen,
            source,
        })?;

    let cancel = CancellationToken::new();
    let (seen_tx, seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let (forget_tx, forget_rx) = tokio::sync::mpsc::unbounded_channel();
    let known = store.gateways()?;
    let supervisor = tokio::spawn(supervision::supervise(
        supervision::GatewayWatch::new(
            std::time::Duration::from_secs(config.supervision.gateway_offline_after_s),
            known,
            tokio::time::Instant::now(),
        ),
        (seen_rx, forget_rx),
        store.clone(),
        writer.clone(),
        metrics.clone(),
        std::time::Duration::from_secs(config.supervision.gap_grace_s),
        cancel.clone(),
    ));
    let escalator = tokio::spawn(escalation::run(
        store.clone(),
        writer.clone(),
        Arc::new(config.escalation.clone()),
        store::now_ms,
        cancel.clone(),
    ));
    let (subscribed_tx, subscribed_rx) = oneshot::channel();
    let (outbox_tx, outbox_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut uplink = tokio::spawn(uplink::run(
        uplink::UplinkSettings {
            url: broker.clone(),
            seen: seen_tx,
            ca_file: ca_file.clone(),
            identity: Some(own_identity),
            max_payload: BROKER_MAX_PAYLOAD,
            outbox: outbox_rx,
            store: store.clone(),
            forget: forget_tx,
        },
        writer.clone(),
        metrics.clone(),
        cancel.clone(),
        subscribed_tx,
    ));
    let app_state_store = store.clone();
    let enroll_metrics = metrics.clone();
    let app_state = api::AppState {
        store,
        writer,
        metrics,
        changes,
        cancel: cancel.clone(),
        outbox: outbox_tx,
    };
    let console_app = console::router(console::ConsoleState {
        app: app_state.clone(),
        policy: config.console.session_policy(),
    })
    .into_make_service_with_connect_info::<console::Peer>();
    let app = api::router(app_state);
    let mut api = tokio::spawn({
        let cancel = cancel.clone();
        async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(cancel.cancelled_owned())
                .await
        }
    });
    tracing::info!(api = %api_addr, broker = %broker, "api listening");

    // The console: its own listener, HTTPS when given a certificate.
    let c = &config.console;
    let console_tcp = tokio::net::TcpListener::bind(c.listen)
        .await
        .map_err(|source| BridgeError::ConsoleBind {
            addr: c.listen,
            source,
        })?;
    let console_addr = console_tcp
        .local_addr()
        .map_err(|source| BridgeError::ConsoleBind {
            addr: c.listen,
            source,
        })?;
    let console_tls = match (&c.tls_cert, &c.tls_key) {
        (Some(cert), Some(key)) => Some(console::tls::server_config(cert, key)?),
        _ => None,
    };
    let mut console_task = {
        let cancel = cancel.clone();
        let has_tls = console_tls.is_some();
        let task = match console_tls {
            Some(tls) => {
                let listener = console::tls::TlsListener::new(console_tcp, tls)
                    .map_err(BridgeError::Console)?;
                tokio::spawn(async move {
                    axum::serve(listener, console_app)
                        .with_graceful_shutdown(cancel.cancelled_owned())
                        .await
                })
            }
            None => tokio::spawn(async move {
                axum::serve(console_tcp, console_app)
                    .with_graceful_shutdown(cancel.cancelled_owned())
                    .await
            }),
        };
        tracing::info!(console = %console_addr, tls = has_tls, "console listening");
        task
    };

    // A CRL of the gateway CA for an external broker, kept current.
    let crl_file = config
        .enrollment
        .crl_file
        .clone()
        .unwrap_or_else(|| data_dir.join("gateway-ca").join("crl.pem"));
    let crl_keeper = tokio::spawn(enrollment::keep_crl(
        app_state_store.clone(),
        gateway_ca.clone(),
        crl_file,
        std::time::Duration::from_secs(5),
        cancel.clone(),
    ));

    // Enrollment: HTTPS with the server certificate gateways trust.
    let enroll_tcp = tokio::net::TcpListener::bind(e.listen)
        .await
        .map_err(|source| BridgeError::EnrollBind {
            addr: e.listen,
            source,
        })?;
    let enroll_addr = enroll_tcp
        .local_addr()
        .map_err(|source| BridgeError::EnrollBind {
            addr: e.listen,
            source,
        })?;
    let enroll_tls = console::tls::server_config(&enroll_files.0, &enroll_files.1)?;
    let enroll_app = enrollment::router(enrollment::EnrollState {
        store: app_state_store,
        ca: gateway_ca.clone(),
        limit: Default::default(),
        refusals: refusals_tx.clone(),
        metrics: enroll_metrics,
    })
    .into_make_service_with_connect_info::<console::Peer>();
    let mut enroll_task = {
        let cancel = cancel.clone();
        let listener =
            console::tls::TlsListener::new(enroll_tcp, enroll_tls).map_err(BridgeError::Enroll)?;
        tokio::spawn(async move {
            axum::serve(listener, enroll_app)
                .with_graceful_shutdown(cancel.cancelled_owned())
                .await
        })
    };
    tracing::info!(enroll = %enroll_addr, gateway_ca = %gateway_ca.cert_file.display(), "enrollment listening");
    drop(refusals_tx);

    let ready_msg = Ready {
        broker,
        api: api_addr,
        ca_file: ca_file.unwrap_or_default(),
        console: console_addr,
        console_tls: config.console.tls(),
        enroll: enroll_addr,
        gateway_ca: gateway_ca.cert_file.clone(),
    };
    let mut ready = ready;
    let mut subscribed_rx = Some(subscribed_rx);
    tokio::pin!(shutdown);
    let mut result: Result<(), BridgeError> = Ok(());
    let mut uplink_done = None;
    let mut api_done = None;
    let mut console_done = None;
    let mut enroll_done = None;
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("shutdown requested");
                break;
            }
            subscribed = async { subscribed_rx.as_mut().expect("guarded").await }, if subscribed_rx.is_some() => {
                subscribed_rx = None;
                if subscribed.is_ok() {
                    tracing::info!(api = %ready_msg.api, broker = %ready_msg.broker, ca = %ready_msg.ca_file.display(), "bridge ready");
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(ready_msg.clone());
                    }
                }
            }
            r = &mut uplink => {
                tracing::error!("uplink stopped before shutdown");
                uplink_done = Some(r);
                break;
            }
            r = &mut api => {
                tracing::error!("api stopped before shutdown");
                api_done = Some(r);
                break;
            }
            r = &mut console_task => {
                tracing::error!("console stopped before shutdown");
                console_done = Some(r);
                break;
            }
            r = &mut enroll_task => {
                tracing::error!(result = ?r, "enrollment endpoint stopped before shutdown");
                enroll_done = Some(r);
                break;
            }
        }
    }

    // In order: the uplink stops taking batches and finishes those it took;
    // then the API finishes its requests (the streams end at the cancel);
    // then the last handle on the writer goes and it finishes its commit.
    cancel.cancel();
    let uplink_result = match uplink_done {
        Some(r) => r,
        None => uplink.await,
    };
    match uplink_result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => result = result.and(Err(e.into())),
        Err(e) => result = result.and(Err(BridgeError::Task(e.to_string()))),
    }
    let _ = supervisor.await;
    let _ = escalator.await;
    let api_result = match api_done {
        Some(r) => r,
        None => api.await,
    };
    match api_result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => result = result.and(Err(BridgeError::Api(e))),
        Err(e) => result = result.and(Err(BridgeError::Task(e.to_string()))),
    }
    let console_result = match console_done {
        Some(r) => r,
        None => console_task.await,
    };
    match console_result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => result = result.and(Err(BridgeError::Console(e))),
        Err(e) => result = result.and(Err(BridgeError::Task(e.to_string()))),
    }
    let enroll_result = match enroll_done {
        Some(r) => r,
        None => enroll_task.await,
    };
    match enroll_result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => result = result.and(Err(BridgeError::Enroll(e))),
        Err(e) => result = result.and(Err(BridgeError::Task(e.to_string()))),
    }
    // The broker's verifier and authorizer hold senders until the process
    // ends: the reporter is stopped, not awaited.
    reporter.abort();
    let _ = reporter.await;
    let _ = crl_keeper.await;
    // The broker's verifier lets go of the store before the writer's last
    // commit; every client is refused from now on.
    drop(_release_store);
    tokio::task::spawn_blocking(move || writer_thread.join())
        .await
        .map_err(|e| BridgeError::Task(e.to_string()))?
        .map_err(|_| BridgeError::Task("store writer panicked".into()))?;
    tracing::info!("trygg-bridge stopped");
    result
}
