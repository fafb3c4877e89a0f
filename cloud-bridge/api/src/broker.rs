//! The embedded MQTT broker: rumqttd, in-process, on its own threads.
//!
//! It acknowledges from RAM like every broker, which is why Trygg never
//! trusts it with durability: application receipts travel end to end. It is
//! here so that the demo and the tests need nothing installed; production
//! may point at Mosquitto instead.
//!
//! rumqttd offers no way to stop it, so it lives until the process ends;
//! tests that need to stop a broker run the service as a child process.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use std::sync::Arc;

pub use rumqttd::{Access, AccessRequest, Authorizer};
use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings, TlsConfig};

/// Checks a CONNECT's client id, username and password.
pub type Authenticator = Arc<dyn Fn(&str, &str, &str) -> bool + Send + Sync>;

/// Log directives that quiet rumqttd's noise: it logs a client's normal
/// disconnect, and every readiness probe, at ERROR. Append to a default
/// filter; `RUST_LOG=rumqttd=debug` shows everything again.
pub const QUIET_BROKER_LOGS: &str =
    "rumqttd=warn,rumqttd::server::broker=off,rumqttd::router::routing=off";

/// A default tracing filter: `base` plus [`QUIET_BROKER_LOGS`].
pub fn default_log_filter(base: &str) -> String {
    format!("{base},{QUIET_BROKER_LOGS}")
}

/// MQTT protocol version a listener speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MqttVersion {
    V4,
    V5,
}

#[derive(Clone)]
pub struct BrokerSettings {
    pub listen: SocketAddr,
    pub version: MqttVersion,
    /// Server certificate and key (PEM); plain TCP when `None`.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub max_payload: usize,
    pub max_inflight: usize,
    /// rumqttd keeps what it routes in memory, per subscription filter, in
    /// up to `log_segments` segments of `log_segment_bytes`; older segments
    /// are dropped. Trygg never relies on the broker's memory (senders keep
    /// everything until a receipt), so a small log only bounds memory.
    pub log_segment_bytes: usize,
    pub log_segments: usize,
    /// A ready rustls server config, used instead of `tls` when set (to
    /// verify client certificates with a verifier of one's own).
    pub tls_config: Option<Arc<rustls::ServerConfig>>,
    /// When set, a CONNECT without a username and password, or with ones it
    /// refuses, is refused. Arguments: client id, username, password.
    pub authenticator: Option<Authenticator>,
    /// When set, every publish, subscribe and will topic is checked; a
    /// refusal closes the client's connection.
    pub authorizer: Option<Authorizer>,
}

impl std::fmt::Debug for BrokerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerSettings")
            .field("listen", &self.listen)
            .field("version", &self.version)
            .field("tls", &self.tls)
            .field("max_payload", &self.max_payload)
            .field("max_inflight", &self.max_inflight)
            .field("log_segment_bytes", &self.log_segment_bytes)
            .field("log_segments", &self.log_segments)
            .field("tls_config", &self.tls_config.is_some())
            .field("authenticator", &self.authenticator.is_some())
            .field("authorizer", &self.authorizer.is_some())
            .finish()
    }
}

impl BrokerSettings {
    /// The log rumqttd uses unless told otherwise: 4 x 16 MiB per filter.
    pub const LARGE_LOG: (usize, usize) = (16 * 1024 * 1024, 4);
    /// For a gateway on a Pi: 2 x 1 MiB per filter (each device's receipt
    /// topic is a filter of its own).
    pub const SMALL_LOG: (usize, usize) = (1024 * 1024, 2);
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("embedded broker did not start listening on {0} within 10 s (is the port taken?)")]
    NotListening(SocketAddr),
    #[error("cannot find a free port on {0}: {1}")]
    NoPort(String, std::io::Error),
}

/// A running embedded broker. It stops when the process ends.
#[derive(Debug)]
pub struct EmbeddedBroker {
    pub addr: SocketAddr,
}

/// Reserves a free TCP port on `host` for a listener that cannot report the
/// port it bound (rumqttd cannot).
pub fn free_port(host: &str) -> Result<SocketAddr, BrokerError> {
    let l = TcpListener::bind((host, 0)).map_err(|e| BrokerError::NoPort(host.into(), e))?;
    l.local_addr()
        .map_err(|e| BrokerError::NoPort(host.into(), e))
}

impl EmbeddedBroker {
    /// Starts the broker and waits until it accepts connections.
    pub fn start(mut settings: BrokerSettings) -> Result<EmbeddedBroker, BrokerError> {
        if settings.listen.port() == 0 {
            settings.listen = free_port(&settings.listen.ip().to_string())?;
        }
        let addr = settings.listen;
        let server = ServerSettings {
            name: format!("trygg-{addr}"),
            listen: addr,
            tls: match (&settings.tls_config, &settings.tls) {
                (Some(config), _) => Some(TlsConfig::RustlsServerConfig(config.clone())),
                (None, Some((cert, key))) => Some(TlsConfig::Rustls {
                    capath: None,
                    certpath: cert.display().to_string(),
                    keypath: key.display().to_string(),
                }),
                (None, None) => None,
            },
            next_connection_delay_ms: 1,
            connections: ConnectionSettings {
                connection_timeout_ms: 60_000,
                max_payload_size: settings.max_payload,
                max_inflight_count: settings.max_inflight,
                auth: None,
                external_auth: None,
                authorizer: None,
                dynamic_filters: true,
            },
        };
        let mut server = server;
        if let Some(authenticate) = settings.authenticator.clone() {
            server.connections.set_auth_handler(
                move |client_id: String, user: String, pass: String| {
                    let ok = authenticate(&client_id, &user, &pass);
                    std::future::ready(ok)
                },
            );
        }
        server.connections.authorizer = settings.authorizer.clone();
        let servers = HashMap::from([("1".to_string(), server)]);
        let config = Config {
            id: 0,
            router: RouterConfig {
                max_connections: 10_010,
                max_outgoing_packet_count: 200,
                max_segment_size: settings.log_segment_bytes,
                max_segment_count: settings.log_segments,
                ..Default::default()
            },
            v4: (settings.version == MqttVersion::V4).then(|| servers.clone()),
            v5: (settings.version == MqttVersion::V5).then_some(servers),
            ..Default::default()
        };
        std::thread::Builder::new()
            .name("embedded-broker".into())
            .spawn(move || {
                let mut broker = rumqttd::Broker::new(config);
                if let Err(e) = broker.start() {
                    tracing::error!(error = %e, "embedded broker stopped");
                }
            })
            .expect("spawning a thread");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline {
                return Err(BrokerError::NotListening(addr));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::info!(%addr, tls = settings.tls.is_some() || settings.tls_config.is_some(), authenticated = settings.authenticator.is_some(), authorized = settings.authorizer.is_some(), version = ?settings.version, "embedded broker listening");
        Ok(EmbeddedBroker { addr })
    }
}
