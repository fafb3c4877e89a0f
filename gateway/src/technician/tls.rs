//! HTTPS for the technician page: the gateway's own self-signed
//! certificate, made once with rcgen and kept in
//! `{data_dir}/technician-tls/` (`cert.pem`, `key.pem` mode 0600). The key is
//! made on the gateway and never leaves it. A browser cannot know this
//! certificate, so it warns; the technician compares the SHA-256
//! fingerprint the browser shows with the one the gateway prints
//! (`trygg-gateway technician fingerprint`, and the log at every start).
//!
//! [`TlsListener`] runs each handshake in its own task with a deadline, so
//! a slow or silent client never holds up the others (the same shape as the
//! staff console's listener in trygg-bridge).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
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
pub enum CertError {
    #[error("cannot read or write {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} holds no usable PEM {what}; move technician-tls/ away to have a new certificate made (its fingerprint changes: tell the technicians)")]
    Bad { path: PathBuf, what: &'static str },
    #[error("making the certificate failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The page's certificate: where it is and its fingerprint.
#[derive(Clone, Debug)]
pub struct PageCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// SHA-256 of the certificate (DER), `AB:CD:...` as browsers show it.
    pub fingerprint: String,
    /// Whether this start made it.
    pub made_now: bool,
}

pub fn cert_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("technician-tls")
}

/// `AB:CD:...` of SHA-256(`der`).
pub fn fingerprint(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CertError + '_ {
    move |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The names the certificate is for: loopback, this host's name (and
/// `.local`, as mDNS announces it), and the listen address if it is one.
fn names(listen: IpAddr) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let host = host.trim();
    let dns_ok = |s: &str| {
        !s.is_empty() && s.len() < 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if dns_ok(host) {
        names.push(host.to_string());
        names.push(format!("{host}.local"));
    }
    if !listen.is_unspecified() && !listen.is_loopback() {
        names.push(listen.to_string());
    }
    names
}

fn read_cert(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let pem = std::fs::read(path).map_err(io_err(path))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(io_err(path))?;
    if certs.is_empty() {
        return Err(CertError::Bad {
            path: path.into(),
            what: "certificate",
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    let pem = std::fs::read(path).map_err(io_err(path))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(io_err(path))?
        .ok_or_else(|| CertError::Bad {
            path: path.into(),
            what: "private key",
        })
}

/// The certificate in `data_dir`, made now if there is none. A damaged
/// one is refused (making a new one silently would change the fingerprint
/// technicians check).
pub fn ensure(data_dir: &Path, listen: IpAddr) -> Result<PageCert, CertError> {
    let dir = cert_dir(data_dir);
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let mut made_now = false;
    if !cert.exists() && !key.exists() {
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let key_pair = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(names(listen))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Trygg gateway technician page");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let made = params.self_signed(&key_pair)?;
        write_file(&key, key_pair.serialize_pem().as_bytes(), 0o600)?;
        // The certificate is public: anyone on the Pi may print its
        // fingerprint.
        write_file(&cert, made.pem().as_bytes(), 0o644)?;
        made_now = true;
    }
    let der = read_cert(&cert)?;
    read_key(&key)?;
    Ok(PageCert {
        fingerprint: fingerprint(der[0].as_ref()),
        cert,
        key,
        made_now,
    })
}

fn write_file(path: &Path, body: &[u8], _mode: u32) -> Result<(), CertError> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(_mode);
    }
    let mut f = o.open(path).map_err(io_err(path))?;
    f.write_all(body).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

/// A rustls server config for `cert`.
pub fn server_config(cert: &PageCert) -> Result<Arc<ServerConfig>, CertError> {
    let chain = read_cert(&cert.cert)?;
    let key = read_key(&cert.key)?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
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
        let (tx, rx) = mpsc::channel(16);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (stream, addr) = tokio::select! {
                    _ = tx.closed() => return,
                    r = tcp.accept() => match r {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!(error = %e, "technician page accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, addr)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(remote = %addr, error = %e, "technician page tls handshake failed")
                        }
                        Err(_) => {
                            tracing::debug!(remote = %addr, "technician page tls handshake timed out")
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
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_is_made_once_and_keeps_its_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure(dir.path(), IpAddr::from([0, 0, 0, 0])).unwrap();
        assert!(first.made_now);
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1, "{}", first.fingerprint);
        let again = ensure(dir.path(), IpAddr::from([0, 0, 0, 0])).unwrap();
        assert!(!again.made_now);
        assert_eq!(first.fingerprint, again.fingerprint);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&again.key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        }
        server_config(&again).unwrap();
    }

    #[test]
    fn a_damaged_certificate_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let c = ensure(dir.path(), IpAddr::from([127, 0, 0, 1])).unwrap();
        std::fs::write(&c.cert, b"garbage").unwrap();
        let err = ensure(dir.path(), IpAddr::from([127, 0, 0, 1]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cert.pem"), "{err}");
        assert_eq!(std::fs::read(&c.cert).unwrap(), b"garbage");
    }
}
