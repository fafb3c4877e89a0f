//! HTTPS for the console: rustls (ring), the certificate chain and key
//! from PEM files (`[console] tls_cert`, `tls_key`).
//!
//! [`TlsListener`] accepts TCP connections and runs each TLS handshake in
//! its own task (with a deadline), so a slow or silent client never holds
//! up the others; finished handshakes are handed to axum in the order they
//! complete.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a client may take over its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ConsoleTlsError {
    #[error("cannot read console TLS file {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("console.tls_cert {0} holds no PEM certificate")]
    NoCertificate(String),
    #[error("console.tls_key {0} holds no PEM private key")]
    NoKey(String),
    #[error("console TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}

fn read(path: &Path) -> Result<Vec<u8>, ConsoleTlsError> {
    std::fs::read(path).map_err(|source| ConsoleTlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// A server config from a PEM chain and a PEM key.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, ConsoleTlsError> {
    let pem = read(cert)?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|source| ConsoleTlsError::Read {
            path: cert.display().to_string(),
            source,
        })?;
    if certs.is_empty() {
        return Err(ConsoleTlsError::NoCertificate(cert.display().to_string()));
    }
    let pem = read(key)?;
    let key_der: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|source| ConsoleTlsError::Read {
            path: key.display().to_string(),
            source,
        })?
        .ok_or_else(|| ConsoleTlsError::NoKey(key.display().to_string()))?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_single_cert(certs, key_der)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A listener whose connections are TLS streams.
pub struct TlsListener {
    local: SocketAddr,
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl TlsListener {
    /// Starts accepting on `tcp`; stops when the listener is dropped.
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (stream, addr) = tokio::select! {
                    _ = tx.closed() => return,
                    r = tcp.accept() => match r {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!(error = %e, "console accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, addr)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(remote = %addr, error = %e, "console tls handshake failed")
                        }
                        Err(_) => {
                            tracing::debug!(remote = %addr, "console tls handshake timed out")
                        }
                    }
                });
            }
        });
        Ok(TlsListener { local, rx })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept task ended (it only does when we are dropped):
            // wait for the graceful shutdown to drop us.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
