//! Gateway enrollment: the contract of the backend's enrollment endpoint,
//! and the gateway's half of it.
//!
//! A gateway proves who it is on the uplink with a client certificate
//! issued by the backend's own gateway CA. It gets one in exchange for a
//! one-time enrollment code that an administrator or technician made for
//! it (`trygg-bridge enroll-code create`):
//!
//! 1. the gateway generates its private key itself (ECDSA P-256) and keeps
//!    it in `{data_dir}/identity/gateway.key` (0600); the key never leaves
//!    the gateway, only a certificate signing request (CSR, which carries
//!    the public key and a signature made with the private key) does;
//! 2. it sends `POST /enroll/v1` with `{v, gateway, code, csr}` over HTTPS
//!    to the backend, trusting the backend's server certificate through the
//!    same CA file as the uplink (`uplink.ca_file`);
//! 3. the backend checks the code (known, unused, unexpired, for this
//!    gateway), spends it, and answers with the certificate (CN = gateway
//!    id) signed by its gateway CA.
//!
//! What is on disk, and when: the new key goes to `gateway.key.pending`
//! before the request; only once the certificate has come back are the key
//! and certificate renamed into place (`gateway.key`, `gateway.pem`) and
//! `identity.json` written, so an identity in use is never replaced by a
//! half-finished one (re-enrolling to rotate a certificate is the same
//! steps).
//!
//! The HTTP client here is deliberately small (one request, `Connection:
//! close`, a bounded answer): the gateway needs exactly this one call.

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::tls::TlsError;

/// The enrollment endpoint's path on the backend's enrollment listener.
pub const ENROLL_PATH: &str = "/enroll/v1";
/// The schema version of [`EnrollRequest`].
pub const ENROLL_VERSION: u16 = 1;
/// The largest enrollment request the backend reads, in bytes.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// The largest answer the gateway reads, in bytes.
const MAX_ANSWER_BYTES: usize = 256 * 1024;
/// How long one enrollment call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// What a gateway sends to enroll.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub v: u16,
    /// The gateway's id (`gateway_id` in its config): the code must have
    /// been made for it.
    pub gateway: String,
    /// The one-time enrollment code, as printed (dashes and case do not
    /// matter).
    pub code: String,
    /// A PKCS#10 certificate signing request (PEM). Its subject is ignored:
    /// the certificate's CN is the gateway id the code was made for.
    pub csr: String,
}

/// What the backend answers to a good enrollment.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EnrollResponse {
    pub gateway: String,
    /// The site the code was made for (e.g. "Frogner 12").
    pub site: String,
    /// The gateway's client certificate (PEM), CN = gateway id.
    pub certificate: String,
    /// SHA-256 of the certificate (DER), lower-case hex.
    pub fingerprint: String,
    /// When the certificate expires, Unix ms, and as UTC text.
    pub not_after_ms: u64,
    pub not_after: String,
}

/// Why the backend refused an enrollment: `reason` for programs, `error`
/// for people (it says what to do next).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EnrollRefusal {
    /// `unknown_code`, `used_code`, `expired_code`, `wrong_gateway`,
    /// `bad_csr`, `bad_request`, `rate_limited`, `unavailable`.
    pub reason: String,
    pub error: String,
}

/// What the gateway keeps about its identity beside the key and
/// certificate (`identity.json`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct IdentityInfo {
    pub gateway: String,
    pub site: String,
    pub fingerprint: String,
    pub not_after_ms: u64,
    pub not_after: String,
    pub enrolled_ms: u64,
    /// The enrollment endpoint that issued it.
    pub backend: String,
}

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// Final until a new code is made: the backend said no.
    #[error("the backend refused the enrollment ({}): {}", .0.reason, .0.error)]
    Refused(EnrollRefusal),
    /// Worth a retry: the backend could not be reached or answered oddly.
    #[error("cannot reach the enrollment endpoint {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("enrollment URL `{0}` is not https://HOST:PORT")]
    BadUrl(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot make the gateway's key or request: {0}")]
    Key(#[from] rcgen::Error),
    #[error("the backend's answer is not a usable certificate: {0}")]
    BadAnswer(String),
}

impl EnrollError {
    /// Whether trying again later with the same code may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            EnrollError::Unreachable { .. } => true,
            EnrollError::Refused(r) => r.reason == "rate_limited" || r.reason == "unavailable",
            _ => false,
        }
    }
}

/// Where a gateway keeps its identity: `{data_dir}/identity/`.
#[derive(Clone, Debug)]
pub struct IdentityFiles {
    pub dir: PathBuf,
    pub key: PathBuf,
    pub cert: PathBuf,
    pub info: PathBuf,
    pending_key: PathBuf,
}

impl IdentityFiles {
    pub fn in_data_dir(data_dir: &Path) -> IdentityFiles {
        IdentityFiles::in_dir(&data_dir.join("identity"))
    }

    pub fn in_dir(dir: &Path) -> IdentityFiles {
        IdentityFiles {
            dir: dir.to_path_buf(),
            key: dir.join("gateway.key"),
            cert: dir.join("gateway.pem"),
            info: dir.join("identity.json"),
            pending_key: dir.join("gateway.key.pending"),
        }
    }

    /// Whether a key and a certificate are in place.
    pub fn exists(&self) -> bool {
        self.key.exists() && self.cert.exists()
    }

    /// What `identity.json` says, if it is there and readable.
    pub fn info(&self) -> Option<IdentityInfo> {
        serde_json::from_slice(&fs::read(&self.info).ok()?).ok()
    }

    /// Every file of the identity, for a wipe (decommission).
    pub fn all_files(&self) -> [&Path; 4] {
        [&self.key, &self.cert, &self.info, &self.pending_key]
    }
}

/// A new private key (PEM) and a CSR for it (PEM) with CN = `gateway`.
pub fn new_key_and_csr(gateway: &str) -> Result<(String, String), rcgen::Error> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, gateway);
    let csr = params.serialize_request(&key)?.pem()?;
    Ok((key.serialize_pem(), csr))
}

/// An `https://host:port` address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpsUrl {
    pub host: String,
    pub port: u16,
}

impl HttpsUrl {
    pub fn parse(s: &str) -> Result<HttpsUrl, EnrollError> {
        let bad = || EnrollError::BadUrl(s.to_string());
        let rest = s.strip_prefix("https://").ok_or_else(bad)?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || port == 0 || host.contains('/') {
            return Err(bad());
        }
        Ok(HttpsUrl {
            host: host.to_string(),
            port,
        })
    }
}

impl std::fmt::Display for HttpsUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "https://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "https://{}:{}", self.host, self.port)
        }
    }
}

/// Enrolls: makes a key, sends the CSR and `code` to the backend at `url`
/// (whose server certificate must chain to `ca_file`), and puts the key
/// and the certificate in place in `files`. The key never leaves this
/// function except to its 0600 file.
pub async fn enroll(
    url: &str,
    ca_file: &Path,
    gateway: &str,
    code: &str,
    files: &IdentityFiles,
) -> Result<IdentityInfo, EnrollError> {
    let target = HttpsUrl::parse(url)?;
    let tls = crate::tls::client_config(ca_file)?;
    let csr = write_pending_key(files, gateway)?;
    let request = EnrollRequest {
        v: ENROLL_VERSION,
        gateway: gateway.to_string(),
        code: code.trim().to_string(),
        csr,
    };
    let body = serde_json::to_vec(&request).expect("a request serializes");
    let (status, answer) = https_post(&target, tls, ENROLL_PATH, &body).await?;
    if status != 200 {
        let _ = fs::remove_file(&files.pending_key);
        let refusal: EnrollRefusal =
            serde_json::from_slice(&answer).unwrap_or_else(|_| EnrollRefusal {
                reason: "unavailable".into(),
                error: format!(
                    "HTTP {status}: {}",
                    String::from_utf8_lossy(&answer[..answer.len().min(200)])
                ),
            });
        return Err(EnrollError::Refused(refusal));
    }
    let granted: EnrollResponse = serde_json::from_slice(&answer)
        .map_err(|e| EnrollError::BadAnswer(format!("unreadable answer: {e}")))?;
    install(files, gateway, granted, &target.to_string())
}

/// Puts a granted certificate in place beside the pending key in `files`
/// (written by [`enroll`], or by [`write_pending_key`] for provisioning
/// without the network), after checking it is what was asked for.
pub fn install(
    files: &IdentityFiles,
    gateway: &str,
    granted: EnrollResponse,
    backend: &str,
) -> Result<IdentityInfo, EnrollError> {
    let der = first_certificate(granted.certificate.as_bytes())
        .ok_or_else(|| EnrollError::BadAnswer("no PEM certificate in the answer".into()))?;
    if fingerprint(&der) != granted.fingerprint {
        return Err(EnrollError::BadAnswer(
            "the certificate does not match its fingerprint".into(),
        ));
    }
    if granted.gateway != gateway {
        return Err(EnrollError::BadAnswer(format!(
            "the certificate is for {}, not {gateway}",
            granted.gateway
        )));
    }
    // The certificate first (a new one beside the old key is never used:
    // both are read together at the next connection), then the key.
    let cert_tmp = files.dir.join("gateway.pem.tmp");
    write_file(&cert_tmp, granted.certificate.as_bytes())?;
    rename(&cert_tmp, &files.cert)?;
    rename(&files.pending_key, &files.key)?;
    let info = IdentityInfo {
        gateway: granted.gateway,
        site: granted.site,
        fingerprint: granted.fingerprint,
        not_after_ms: granted.not_after_ms,
        not_after: granted.not_after,
        enrolled_ms: now_ms(),
        backend: backend.to_string(),
    };
    let info_tmp = files.dir.join("identity.json.tmp");
    write_file(
        &info_tmp,
        &serde_json::to_vec_pretty(&info).expect("info serializes"),
    )?;
    rename(&info_tmp, &files.info)?;
    sync_dir(&files.dir);
    Ok(info)
}

/// Makes a new key in `files` (pending until [`install`]) and returns a
/// CSR for it.
pub fn write_pending_key(files: &IdentityFiles, gateway: &str) -> Result<String, EnrollError> {
    fs::create_dir_all(&files.dir).map_err(|source| EnrollError::Write {
        path: files.dir.clone(),
        source,
    })?;
    restrict_dir(&files.dir);
    let (key_pem, csr) = new_key_and_csr(gateway)?;
    write_private(&files.pending_key, key_pem.as_bytes())?;
    Ok(csr)
}

/// Asks a running backend's loopback service API for an enrollment code
/// (what `trygg-bridge enroll-code create` does while the bridge runs, and
/// what the demo and the tests do). Returns the code.
pub async fn create_code_via_api(
    api: SocketAddr,
    gateway: &str,
    site: &str,
    valid_s: u64,
    by: &str,
) -> Result<serde_json::Value, EnrollError> {
    let body = serde_json::json!({
        "gateway": gateway,
        "site": site,
        "valid_s": valid_s,
        "by": by,
    });
    let (status, answer) = api_post(api, "/api/v1/enrollment-codes", &body).await?;
    let v: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
    if status != 201 {
        return Err(EnrollError::Refused(EnrollRefusal {
            reason: "bad_request".into(),
            error: v["error"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| format!("HTTP {status}")),
        }));
    }
    Ok(v)
}

/// A JSON POST to a backend's loopback service API (plain HTTP).
pub async fn api_post(
    api: SocketAddr,
    path: &str,
    body: &serde_json::Value,
) -> Result<(u16, Vec<u8>), EnrollError> {
    api_call(api, "POST", path, Some(body)).await
}

/// A GET from a backend's loopback service API (plain HTTP).
pub async fn api_get(api: SocketAddr, path: &str) -> Result<(u16, Vec<u8>), EnrollError> {
    api_call(api, "GET", path, None).await
}

async fn api_call(
    api: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<(u16, Vec<u8>), EnrollError> {
    let url = format!("http://{api}");
    let stream = tokio::time::timeout(CALL_TIMEOUT, tokio::net::TcpStream::connect(api))
        .await
        .map_err(|_| unreachable(&url, "timed out"))?
        .map_err(|e| unreachable(&url, &e.to_string()))?;
    let body = body.map(|b| serde_json::to_vec(b).expect("json serializes"));
    tokio::time::timeout(
        CALL_TIMEOUT,
        http_call(
            stream,
            method,
            &api.to_string(),
            path,
            body.as_deref(),
            &url,
        ),
    )
    .await
    .map_err(|_| unreachable(&url, "timed out"))?
}

async fn https_post(
    target: &HttpsUrl,
    tls: Arc<rustls::ClientConfig>,
    path: &str,
    body: &[u8],
) -> Result<(u16, Vec<u8>), EnrollError> {
    let url = target.to_string();
    let call = async {
        let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| unreachable(&url, &e.to_string()))?;
        let name = rustls::pki_types::ServerName::try_from(target.host.clone())
            .map_err(|_| EnrollError::BadUrl(url.clone()))?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| unreachable(&url, &format!("TLS: {e}")))?;
        http_call(stream, "POST", &target.host, path, Some(body), &url).await
    };
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| unreachable(&url, "timed out"))?
}

fn unreachable(url: &str, reason: &str) -> EnrollError {
    EnrollError::Unreachable {
        url: url.to_string(),
        reason: reason.to_string(),
    }
}

/// One HTTP/1.1 request with `Connection: close`; the answer's status and
/// body (read up to [`MAX_ANSWER_BYTES`]).
async fn http_call<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    method: &str,
    host: &str,
    path: &str,
    body: Option<&[u8]>,
    url: &str,
) -> Result<(u16, Vec<u8>), EnrollError> {
    let body = body.unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let io = |e: std::io::Error| unreachable(url, &e.to_string());
    stream.write_all(head.as_bytes()).await.map_err(io)?;
    stream.write_all(body).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.len() > MAX_ANSWER_BYTES {
                    return Err(unreachable(url, "the answer is too large"));
                }
                if complete(&answer) {
                    break;
                }
            }
            // A peer that closes without TLS close_notify: what came is
            // judged by its Content-Length below.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(io(e)),
        }
    }
    parse_answer(&answer).ok_or_else(|| unreachable(url, "the answer is not HTTP"))
}

fn split_head(answer: &[u8]) -> Option<(&str, &[u8])> {
    let at = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some((std::str::from_utf8(&answer[..at]).ok()?, &answer[at + 4..]))
}

fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    })
}

fn complete(answer: &[u8]) -> bool {
    match split_head(answer) {
        Some((head, body)) => content_length(head).is_some_and(|n| body.len() >= n),
        None => false,
    }
}

fn parse_answer(answer: &[u8]) -> Option<(u16, Vec<u8>)> {
    let (head, body) = split_head(answer)?;
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = match content_length(head) {
        Some(n) if body.len() >= n => &body[..n],
        Some(_) => return None,
        None => body,
    };
    Some((status, body.to_vec()))
}

/// The first certificate (DER) in PEM text.
pub fn first_certificate(pem: &[u8]) -> Option<Vec<u8>> {
    let mut reader = pem;
    let first = rustls_pemfile::certs(&mut reader).next()?;
    first.ok().map(|c| c.to_vec())
}

/// SHA-256 of a certificate's DER, lower-case hex: how Trygg names a
/// certificate (`openssl x509 -noout -fingerprint -sha256` prints the same
/// bytes, upper-case with colons).
pub fn fingerprint(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Unix ms as `YYYY-MM-DD HH:MM UTC`.
pub fn utc_text(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), EnrollError> {
    let w = |source| EnrollError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = fs::File::create(path).map_err(w)?;
    f.write_all(bytes).map_err(w)?;
    f.sync_all().map_err(w)
}

/// Writes a file that only its owner may read, created so from the start
/// (no moment with wider permissions).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), EnrollError> {
    let w = |source| EnrollError::Write {
        path: path.to_path_buf(),
        source,
    };
    let _ = fs::remove_file(path);
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path).map_err(w)?;
    f.write_all(bytes).map_err(w)?;
    f.sync_all().map_err(w)
}

fn rename(from: &Path, to: &Path) -> Result<(), EnrollError> {
    fs::rename(from, to).map_err(|source| EnrollError::Write {
        path: to.to_path_buf(),
        source,
    })
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(unix)]
fn restrict_dir(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
}

#[cfg(not(unix))]
fn restrict_dir(_: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csr_carries_the_public_key_and_never_the_private_one() {
        let (key, csr) = new_key_and_csr("gw-1").unwrap();
        assert!(key.contains("PRIVATE KEY"));
        assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        assert!(!csr.contains("PRIVATE"));
        let key_body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
        let csr_body: String = csr.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(!csr_body.contains(&key_body[..40]));
        let parsed = rcgen::CertificateSigningRequestParams::from_pem(&csr).unwrap();
        let pair = rcgen::KeyPair::from_pem(&key).unwrap();
        use rcgen::PublicKeyData;
        assert_eq!(parsed.public_key.der_bytes(), pair.der_bytes());
    }

    #[test]
    fn https_urls_parse_and_others_are_refused() {
        assert_eq!(
            HttpsUrl::parse("https://127.0.0.1:8884/").unwrap(),
            HttpsUrl {
                host: "127.0.0.1".into(),
                port: 8884
            }
        );
        assert!(HttpsUrl::parse("http://127.0.0.1:8884").is_err());
        assert!(HttpsUrl::parse("https://127.0.0.1").is_err());
    }

    #[test]
    fn an_http_answer_is_read_by_its_content_length() {
        let a = b"HTTP/1.1 403 Forbidden\r\ncontent-length: 2\r\n\r\n{}extra";
        assert!(complete(a));
        assert_eq!(parse_answer(a).unwrap(), (403, b"{}".to_vec()));
        assert!(!complete(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n{}"));
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n{}").is_none());
    }

    #[test]
    fn utc_text_is_the_calendar_date() {
        assert_eq!(utc_text(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_text(1_795_000_000_000), "2026-11-18 11:06 UTC");
    }
}
