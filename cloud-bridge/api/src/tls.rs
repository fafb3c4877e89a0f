//! TLS for the uplink: rustls with the `ring` provider, TLS 1.3 first.
//!
//! [`DevPki`] makes a small certificate authority and a server certificate
//! for loopback, so the demo and the tests run real TLS without a
//! municipality's PKI. Production points the config at real files.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("certificate in {path} is not usable: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Installs `ring` as the process's rustls provider. Safe to call often.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client config trusting only the CA certificates in `ca_file`.
pub fn client_config(ca_file: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    install_crypto_provider();
    let pem = fs::read(ca_file).map_err(|source| TlsError::Read {
        path: ca_file.into(),
        source,
    })?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::Read {
            path: ca_file.into(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: ca_file.into(),
        });
    }
    let mut roots = RootCertStore::empty();
    for c in certs {
        roots.add(c).map_err(|e| TlsError::BadCertificate {
            path: ca_file.into(),
            reason: e.to_string(),
        })?;
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Reads every PEM certificate in `path`.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = fs::read(path).map_err(|source| TlsError::Read {
        path: path.into(),
        source,
    })?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::Read {
            path: path.into(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.into() });
    }
    Ok(certs)
}

/// Reads the PEM private key in `path`.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = fs::read(path).map_err(|source| TlsError::Read {
        path: path.into(),
        source,
    })?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|source| TlsError::Read {
            path: path.into(),
            source,
        })?
        .ok_or_else(|| TlsError::BadCertificate {
            path: path.into(),
            reason: "holds no PEM private key".into(),
        })
}

/// Reads a private key from PEM text.
pub fn read_key_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    let mut reader = pem;
    rustls_pemfile::private_key(&mut reader)
        .map_err(|source| TlsError::Read {
            path: PathBuf::from("(memory)"),
            source,
        })?
        .ok_or_else(|| TlsError::BadCertificate {
            path: PathBuf::from("(memory)"),
            reason: "holds no PEM private key".into(),
        })
}

/// A client config trusting the CA certificates in `ca_file` and proving
/// who it is with the certificate chain in `cert_file` and the key in
/// `key_file` (mutual TLS: a gateway's uplink).
pub fn client_config_with_identity(
    ca_file: &Path,
    cert_file: &Path,
    key_file: &Path,
) -> Result<Arc<ClientConfig>, TlsError> {
    let certs = read_certs(cert_file)?;
    let key = read_key(key_file)?;
    client_config_with_cert(ca_file, certs, key)
}

/// As [`client_config_with_identity`], with the certificate and key given.
pub fn client_config_with_cert(
    ca_file: &Path,
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ClientConfig>, TlsError> {
    install_crypto_provider();
    let mut store = RootCertStore::empty();
    for c in read_certs(ca_file)? {
        store.add(c).map_err(|e| TlsError::BadCertificate {
            path: ca_file.into(),
            reason: e.to_string(),
        })?;
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_root_certificates(store)
            .with_client_auth_cert(certs, key)?;
    Ok(Arc::new(config))
}

/// File names of a development PKI in one directory.
#[derive(Clone, Debug)]
pub struct DevPki {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl DevPki {
    pub fn in_dir(dir: &Path) -> DevPki {
        DevPki {
            ca_cert: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
        }
    }

    /// Creates the CA and a server certificate for `localhost` and
    /// `127.0.0.1` unless they exist already.
    pub fn ensure(dir: &Path) -> Result<DevPki, TlsError> {
        let pki = DevPki::in_dir(dir);
        if pki.ca_cert.exists() && pki.server_cert.exists() && pki.server_key.exists() {
            return Ok(pki);
        }
        fs::create_dir_all(dir).map_err(|source| TlsError::Write {
            path: dir.into(),
            source,
        })?;
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Trygg development CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);

        let server_key = rcgen::KeyPair::generate()?;
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "trygg backend broker");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = params.signed_by(&server_key, &issuer)?;

        let write = |path: &Path, text: String| {
            fs::write(path, text).map_err(|source| TlsError::Write {
                path: path.into(),
                source,
            })
        };
        write(&pki.ca_cert, ca_cert.pem())?;
        write(&pki.server_cert, server_cert.pem())?;
        write(&pki.server_key, server_key.serialize_pem())?;
        restrict_permissions(&pki.server_key);
        Ok(pki)
    }
}

#[cfg(unix)]
fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o600));
}

#[cfg(not(unix))]
fn restrict_permissions(_: &Path) {}
