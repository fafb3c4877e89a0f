//! Gateway enrollment and identity at the backend: the gateway CA, one-time
//! enrollment codes, the certificates issued, and their revocation.
//!
//! ```text
//! enroll_codes    sha256(code) hex   -> EnrollCode (the code itself is shown once, never stored)
//! gateway_certs   sha256(cert) hex   -> GatewayCert (issued certificates, revoked or not)
//! ```
//!
//! Rules:
//! - a code is made for one named gateway and site by an administrator or
//!   technician (`trygg-bridge enroll-code create`, or the service API the
//!   CLI uses while the bridge runs); it is 16 characters from an alphabet
//!   without look-alikes (about 79 bits), expires (24 h unless told), and
//!   is spent by its first good use;
//! - enrolling with a good code issues a client certificate with CN = the
//!   gateway id, signed by the gateway CA, and records it; the code, the
//!   certificate and the audit entry are one durable transaction;
//! - a wrong, used or expired code, or a code for another gateway, is
//!   refused with a reason, audited, counted, rate-limited per address, and
//!   raised as an `access_refused` technical alarm (possible attack);
//! - the uplink accepts a client certificate only if it chains to the
//!   gateway CA, is within its validity, is recorded here and is not
//!   revoked ([`crate::mtls`]); revoking a gateway revokes every
//!   certificate it holds, audited, and takes effect at its next
//!   connection attempt;
//! - gateway ids starting with `trygg-` are reserved (the bridge's own
//!   MQTT identity is `trygg-bridge`).
//!
//! The gateway CA is separate from the CA of the broker's server
//! certificate: gateways go on trusting the server as before
//! (`uplink.ca_file`), and the server's CA can be a municipality's or a
//! public one while the gateway CA stays the backend's own. It is made once
//! in `{data_dir}/gateway-ca/` (`ca.pem`, `ca.key` 0600) unless
//! `[enrollment] ca_cert` and `ca_key` name files.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use trygg_uplink::enroll::{fingerprint, utc_text, EnrollRefusal, EnrollRequest, EnrollResponse};

use crate::access::{append_audit, AuditEntry};
use crate::store::{Store, StoreError};

pub(crate) const ENROLL_CODES: TableDefinition<&str, &[u8]> = TableDefinition::new("enroll_codes");
pub(crate) const GATEWAY_CERTS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("gateway_certs");

/// The common name of the bridge's own MQTT client certificate.
pub const BRIDGE_IDENTITY: &str = "trygg-bridge";
/// Gateway ids with this prefix are the system's own.
pub const RESERVED_PREFIX: &str = "trygg-";
/// How long a code is valid unless told otherwise.
pub const DEFAULT_CODE_VALID_MS: u64 = 24 * 3600 * 1000;
/// The longest a code may be valid.
pub const MAX_CODE_VALID_MS: u64 = 30 * 24 * 3600 * 1000;
/// Failed enrollments from one address before it must wait.
pub const MAX_FAILURES_PER_ADDRESS: u32 = 5;
/// How long an address that failed too often must wait.
pub const FAILURE_WINDOW_MS: u64 = 15 * 60 * 1000;

const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
const CODE_LEN: usize = 16;

/// An enrollment code as stored: everything but the code.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EnrollCode {
    pub gateway: String,
    pub site: String,
    pub created_by: String,
    pub created_ms: u64,
    pub expires_ms: u64,
    #[serde(default)]
    pub used_ms: Option<u64>,
    /// The certificate it was exchanged for.
    #[serde(default)]
    pub fingerprint: Option<String>,
}

/// A certificate issued to a gateway.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GatewayCert {
    pub fingerprint: String,
    pub gateway: String,
    pub site: String,
    /// Hex.
    pub serial: String,
    pub issued_ms: u64,
    pub not_after_ms: u64,
    /// Who made the code it was issued for.
    pub code_by: String,
    /// The address the enrollment came from.
    pub remote: String,
    #[serde(default)]
    pub revoked: Option<Revocation>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Revocation {
    pub at_ms: u64,
    pub by: String,
    pub reason: String,
}

/// Why a code could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    #[error("`{0}` is not a gateway id: use 1-64 characters of A-Z, a-z, 0-9, '_' or '-' (the gateway's `gateway_id`)")]
    BadGateway(String),
    #[error("gateway ids starting with `{RESERVED_PREFIX}` are reserved for the system; choose another gateway_id")]
    Reserved,
    #[error("a code must be valid between 1 minute and 30 days")]
    BadValidity,
    #[error("the site must be 1-200 characters (e.g. the address: \"Frogner 12\")")]
    BadSite,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why an enrollment was refused.
#[derive(Debug, thiserror::Error)]
pub enum RedeemError {
    #[error("this enrollment code is not known: check it for typos, or ask for a new one (trygg-bridge enroll-code create)")]
    Unknown,
    #[error("this enrollment code was used already ({0}); a code works once: ask for a new one (trygg-bridge enroll-code create)")]
    Used(String),
    #[error(
        "this enrollment code expired {0}; ask for a new one (trygg-bridge enroll-code create)"
    )]
    Expired(String),
    #[error("this enrollment code was made for another gateway id; check `gateway_id` in the gateway's config, or ask for a code for this gateway")]
    WrongGateway,
    #[error("the certificate request is not usable ({0}); update trygg-gateway and try again")]
    BadCsr(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RedeemError {
    /// The `reason` a program reads.
    pub fn reason(&self) -> &'static str {
        match self {
            RedeemError::Unknown => "unknown_code",
            RedeemError::Used(_) => "used_code",
            RedeemError::Expired(_) => "expired_code",
            RedeemError::WrongGateway => "wrong_gateway",
            RedeemError::BadCsr(_) => "bad_csr",
            RedeemError::Store(_) => "unavailable",
        }
    }
}

macro_rules! via_store_error {
    ($($e:ty),*) => {$(
        impl From<redb::TableError> for $e {
            fn from(e: redb::TableError) -> Self { StoreError::from(e).into() }
        }
        impl From<redb::StorageError> for $e {
            fn from(e: redb::StorageError) -> Self { StoreError::from(e).into() }
        }
        impl From<redb::CommitError> for $e {
            fn from(e: redb::CommitError) -> Self { StoreError::from(e).into() }
        }
    )*};
}
via_store_error!(CodeError, RedeemError);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the gateway CA: {0}")]
    Write(String),
    #[error("the gateway CA in {path} is not usable: {reason}")]
    Bad { path: PathBuf, reason: String },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The backend's certificate authority for gateways.
pub struct GatewayCa {
    /// The CA certificate (PEM): what the broker trusts client
    /// certificates by (Mosquitto's `cafile` for `require_certificate`).
    pub cert_file: PathBuf,
    pub cert_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// How long a gateway's certificate is valid.
    pub cert_valid_days: u64,
}

impl std::fmt::Debug for GatewayCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayCa")
            .field("cert_file", &self.cert_file)
            .finish_non_exhaustive()
    }
}

impl GatewayCa {
    /// The CA in `dir` (`ca.pem`, `ca.key`), made there first if missing.
    pub fn load_or_create(dir: &Path, cert_valid_days: u64) -> Result<GatewayCa, CaError> {
        let cert = dir.join("ca.pem");
        let key = dir.join("ca.key");
        if !cert.exists() || !key.exists() {
            std::fs::create_dir_all(dir)
                .map_err(|e| CaError::Write(format!("{}: {e}", dir.display())))?;
            let ca_key = rcgen::KeyPair::generate()?;
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
            params.distinguished_name = rcgen::DistinguishedName::new();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "Trygg gateway CA");
            params.key_usages = vec![
                rcgen::KeyUsagePurpose::KeyCertSign,
                rcgen::KeyUsagePurpose::CrlSign,
            ];
            let now = trygg_uplink::enroll::now_ms();
            params.not_before = at(now.saturating_sub(3600 * 1000));
            params.not_after = at(now + 20 * 365 * 24 * 3600 * 1000);
            let ca = params.self_signed(&ca_key)?;
            trygg_uplink::enroll::write_private(&key, ca_key.serialize_pem().as_bytes())
                .map_err(|e| CaError::Write(e.to_string()))?;
            std::fs::write(&cert, ca.pem())
                .map_err(|e| CaError::Write(format!("{}: {e}", cert.display())))?;
            tracing::info!(ca = %cert.display(), "made the gateway certificate authority");
        }
        GatewayCa::load(&cert, &key, cert_valid_days)
    }

    /// The CA from given files.
    pub fn load(cert: &Path, key: &Path, cert_valid_days: u64) -> Result<GatewayCa, CaError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| CaError::Read {
                path: p.into(),
                source,
            })
        };
        let cert_pem = read(cert)?;
        let key_pair = rcgen::KeyPair::from_pem(&read(key)?).map_err(|e| CaError::Bad {
            path: key.into(),
            reason: e.to_string(),
        })?;
        let issuer =
            rcgen::Issuer::from_ca_cert_pem(&cert_pem, key_pair).map_err(|e| CaError::Bad {
                path: cert.into(),
                reason: e.to_string(),
            })?;
        Ok(GatewayCa {
            cert_file: cert.to_path_buf(),
            cert_pem,
            issuer,
            cert_valid_days,
        })
    }

    /// A client certificate for `cn` with the public key of `csr` (PEM,
    /// its signature checked): PEM, DER, serial (hex) and expiry (Unix ms).
    /// Whatever the request asks for besides its key is ignored.
    pub fn issue(&self, csr: &str, cn: &str, now_ms: u64) -> Result<Issued, rcgen::Error> {
        let mut request = rcgen::CertificateSigningRequestParams::from_pem(csr)?;
        let (params, serial, not_after_ms) = self.client_params(cn, now_ms)?;
        request.params = params;
        let cert = request.signed_by(&self.issuer)?;
        Ok(Issued {
            pem: cert.pem(),
            der: cert.der().to_vec(),
            serial,
            not_after_ms,
        })
    }

    /// A certificate and key for the bridge's own MQTT client (kept in
    /// memory only; a new one at every start).
    pub fn issue_own(&self, cn: &str, now_ms: u64) -> Result<(Issued, String), rcgen::Error> {
        let key = rcgen::KeyPair::generate()?;
        let (params, serial, not_after_ms) = self.client_params(cn, now_ms)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((
            Issued {
                pem: cert.pem(),
                der: cert.der().to_vec(),
                serial,
                not_after_ms,
            },
            key.serialize_pem(),
        ))
    }

    fn client_params(
        &self,
        cn: &str,
        now_ms: u64,
    ) -> Result<(rcgen::CertificateParams, String, u64), rcgen::Error> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let mut serial: [u8; 16] = rand::random();
        serial[0] &= 0x7f;
        serial[0] |= 0x01;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        // A little slack for a gateway whose clock is behind.
        params.not_before = at(now_ms.saturating_sub(3600 * 1000));
        let not_after_ms = now_ms + self.cert_valid_days * 24 * 3600 * 1000;
        params.not_after = at(not_after_ms);
        let serial_hex = serial.iter().map(|b| format!("{b:02x}")).collect();
        Ok((params, serial_hex, not_after_ms))
    }
}

/// How long a CRL the bridge writes is valid; it writes a new one at least
/// daily, so a broker that checks it never sees it run out.
pub const CRL_VALID_MS: u64 = 7 * 24 * 3600 * 1000;

impl GatewayCa {
    /// A CRL (PEM) signed by this CA naming every revoked certificate in
    /// `certs`: what an external broker (Mosquitto's `crlfile`) checks.
    pub fn crl_pem(&self, certs: &[GatewayCert], now_ms: u64) -> Result<String, rcgen::Error> {
        let revoked_certs = certs
            .iter()
            .filter_map(|c| {
                let r = c.revoked.as_ref()?;
                let serial: Vec<u8> = (0..c.serial.len() / 2)
                    .filter_map(|i| u8::from_str_radix(c.serial.get(2 * i..2 * i + 2)?, 16).ok())
                    .collect();
                Some(rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from_slice(&serial),
                    revocation_time: at(r.at_ms),
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect();
        let params = rcgen::CertificateRevocationListParams {
            this_update: at(now_ms.saturating_sub(60_000)),
            next_update: at(now_ms + CRL_VALID_MS),
            crl_number: rcgen::SerialNumber::from(now_ms),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer)?.pem()
    }
}

/// Keeps `path` holding a current CRL of the gateway CA: at start, within
/// `every` of a revocation (however it was made: CLI, API, console,
/// decommission), and at least daily. Written whole and renamed into
/// place. Runs until `cancel`.
pub async fn keep_crl(
    store: Store,
    ca: Arc<GatewayCa>,
    path: PathBuf,
    every: std::time::Duration,
    cancel: tokio_util::sync::CancellationToken,
) {
    let mut written: Option<(Vec<String>, u64)> = None;
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = crate::store::now_ms();
        let store = store.clone();
        let certs = match tokio::task::spawn_blocking(move || store.gateway_certs()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot read the certificates for the CRL");
                continue;
            }
            Err(_) => continue,
        };
        let revoked: Vec<String> = certs
            .iter()
            .filter(|c| c.revoked.is_some())
            .map(|c| c.serial.clone())
            .collect();
        let fresh = written
            .as_ref()
            .is_some_and(|(r, at)| *r == revoked && now.saturating_sub(*at) < 24 * 3600 * 1000);
        if fresh {
            continue;
        }
        let result = ca
            .crl_pem(&certs, now)
            .map_err(|e| e.to_string())
            .and_then(|pem| {
                if let Some(dir) = path.parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, pem)
                    .and_then(|()| std::fs::rename(&tmp, &path))
                    .map_err(|e| format!("{}: {e}", path.display()))
            });
        match result {
            Ok(()) => {
                tracing::info!(crl = %path.display(), revoked = revoked.len(), "gateway CRL written (reload an external broker that reads it)");
                written = Some((revoked, now));
            }
            Err(e) => tracing::error!(error = %e, "cannot write the gateway CRL"),
        }
    }
}

/// A certificate just issued.
pub struct Issued {
    pub pem: String,
    pub der: Vec<u8>,
    pub serial: String,
    pub not_after_ms: u64,
}

fn at(ms: u64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// Whether `id` may name a gateway (what its config's `gateway_id` allows).
pub fn valid_gateway_id(id: &str) -> bool {
    trygg_protocol::topic::is_valid_device_id(id)
}

/// A fresh code, `XXXX-XXXX-XXXX-XXXX`.
pub fn new_code() -> String {
    let chars: Vec<u8> = (0..CODE_LEN)
        .map(|_| CODE_ALPHABET[rand::random_range(0..CODE_ALPHABET.len())])
        .collect();
    chars
        .chunks(4)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect::<Vec<_>>()
        .join("-")
}

/// The key a code is stored under: SHA-256 of the code without dashes,
/// spaces or case.
pub fn code_key(code: &str) -> String {
    let norm: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    fingerprint(norm.as_bytes())
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialize")
}

fn parse<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(b).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl Store {
    /// Makes a one-time code for `gateway` at `site`, valid `valid_ms`.
    /// Returns the code (shown once; only its hash is kept). Audited.
    pub fn create_enroll_code(
        &self,
        gateway: &str,
        site: &str,
        valid_ms: u64,
        by: &str,
        remote: &str,
        now_ms: u64,
    ) -> Result<(String, EnrollCode), CodeError> {
        if !valid_gateway_id(gateway) {
            return Err(CodeError::BadGateway(gateway.to_string()));
        }
        if gateway.starts_with(RESERVED_PREFIX) {
            return Err(CodeError::Reserved);
        }
        if !(60_000..=MAX_CODE_VALID_MS).contains(&valid_ms) {
            return Err(CodeError::BadValidity);
        }
        let site = site.trim();
        if site.is_empty() || site.chars().count() > 200 {
            return Err(CodeError::BadSite);
        }
        let code = new_code();
        let record = EnrollCode {
            gateway: gateway.to_string(),
            site: site.to_string(),
            created_by: by.to_string(),
            created_ms: now_ms,
            expires_ms: now_ms + valid_ms,
            used_ms: None,
            fingerprint: None,
        };
        let txn = self.begin_durable()?;
        txn.open_table(ENROLL_CODES)?
            .insert(code_key(&code).as_str(), json(&record).as_slice())?;
        append_audit(
            &txn,
            AuditEntry::new(
                by,
                "enroll_code_create",
                &format!("gateway/{gateway}"),
                &format!("ok: site {site}, expires {}", utc_text(record.expires_ms)),
                remote,
                now_ms,
            ),
        )?;
        txn.commit()?;
        Ok((code, record))
    }

    /// Exchanges a code for a certificate: checks the code, issues the
    /// certificate, spends the code, records the certificate and audits,
    /// in one durable transaction. A refusal is audited too.
    pub fn redeem_enroll_code(
        &self,
        request: &EnrollRequest,
        ca: &GatewayCa,
        remote: &str,
        now_ms: u64,
    ) -> Result<(EnrollResponse, GatewayCert), RedeemError> {
        let result = self.try_redeem(request, ca, remote, now_ms);
        if let Err(e) = &result {
            if !matches!(e, RedeemError::Store(_)) {
                self.audit_now(AuditEntry::new(
                    "anonymous",
                    "gateway_enroll_refused",
                    &format!("gateway/{}", request.gateway),
                    &format!("refused: {}", e.reason()),
                    remote,
                    now_ms,
                ))?;
            }
        }
        result
    }

    fn try_redeem(
        &self,
        request: &EnrollRequest,
        ca: &GatewayCa,
        remote: &str,
        now_ms: u64,
    ) -> Result<(EnrollResponse, GatewayCert), RedeemError> {
        let key = code_key(&request.code);
        let txn = self.begin_durable()?;
        let response;
        let cert;
        {
            let mut codes = txn.open_table(ENROLL_CODES)?;
            let found: Option<EnrollCode> = codes
                .get(key.as_str())?
                .map(|v| parse(v.value()))
                .transpose()?;
            let Some(mut code) = found else {
                return Err(RedeemError::Unknown);
            };
            if let Some(used) = code.used_ms {
                return Err(RedeemError::Used(utc_text(used)));
            }
            if code.expires_ms <= now_ms {
                return Err(RedeemError::Expired(utc_text(code.expires_ms)));
            }
            if code.gateway != request.gateway {
                return Err(RedeemError::WrongGateway);
            }
            let issued = ca
                .issue(&request.csr, &code.gateway, now_ms)
                .map_err(|e| RedeemError::BadCsr(e.to_string()))?;
            let fp = fingerprint(&issued.der);
            code.used_ms = Some(now_ms);
            code.fingerprint = Some(fp.clone());
            codes.insert(key.as_str(), json(&code).as_slice())?;
            cert = GatewayCert {
                fingerprint: fp.clone(),
                gateway: code.gateway.clone(),
                site: code.site.clone(),
                serial: issued.serial.clone(),
                issued_ms: now_ms,
                not_after_ms: issued.not_after_ms,
                code_by: code.created_by.clone(),
                remote: remote.to_string(),
                revoked: None,
            };
            txn.open_table(GATEWAY_CERTS)?
                .insert(fp.as_str(), json(&cert).as_slice())?;
            response = EnrollResponse {
                gateway: code.gateway.clone(),
                site: code.site.clone(),
                certificate: issued.pem,
                fingerprint: fp,
                not_after_ms: issued.not_after_ms,
                not_after: utc_text(issued.not_after_ms),
            };
        }
        append_audit(
            &txn,
            AuditEntry::new(
                "anonymous",
                "gateway_enroll",
                &format!("gateway/{}", cert.gateway),
                &format!(
                    "ok: site {}, certificate {}, code by {}",
                    cert.site, cert.fingerprint, cert.code_by
                ),
                remote,
                now_ms,
            ),
        )?;
        txn.commit()?;
        Ok((response, cert))
    }

    /// The certificate with this fingerprint, if the backend issued it.
    pub fn gateway_cert(&self, fingerprint: &str) -> Result<Option<GatewayCert>, StoreError> {
        let txn = self.db().begin_read()?;
        let t = match txn.open_table(GATEWAY_CERTS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        t.get(fingerprint)?.map(|v| parse(v.value())).transpose()
    }

    /// Every certificate issued, oldest first.
    pub fn gateway_certs(&self) -> Result<Vec<GatewayCert>, StoreError> {
        let mut out: Vec<GatewayCert> = self.all(GATEWAY_CERTS)?;
        out.sort_by_key(|c| c.issued_ms);
        Ok(out)
    }

    /// Every enrollment code made (without the codes), newest first.
    pub fn enroll_codes(&self) -> Result<Vec<EnrollCode>, StoreError> {
        let mut out: Vec<EnrollCode> = self.all(ENROLL_CODES)?;
        out.sort_by_key(|c| std::cmp::Reverse(c.created_ms));
        Ok(out)
    }

    fn all<T: for<'de> Deserialize<'de>>(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<T>, StoreError> {
        let txn = self.db().begin_read()?;
        let t = match txn.open_table(table) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for e in t.iter()? {
            out.push(parse(e?.1.value())?);
        }
        Ok(out)
    }

    /// Revokes every certificate `gateway` holds, and every unused code
    /// made for it: from its next connection attempt the uplink refuses
    /// it. Audited (also when there was nothing to revoke). Returns how
    /// many certificates were revoked now. This is what decommissioning a
    /// gateway calls.
    pub fn revoke_gateway(
        &self,
        gateway: &str,
        by: &str,
        reason: &str,
        remote: &str,
        now_ms: u64,
    ) -> Result<usize, StoreError> {
        let txn = self.begin_durable()?;
        let mut revoked = 0;
        {
            let mut certs = txn.open_table(GATEWAY_CERTS)?;
            let mut changed = Vec::new();
            for e in certs.iter()? {
                let (k, v) = e?;
                let mut c: GatewayCert = parse(v.value())?;
                if c.gateway == gateway && c.revoked.is_none() {
                    c.revoked = Some(Revocation {
                        at_ms: now_ms,
                        by: by.to_string(),
                        reason: reason.to_string(),
                    });
                    changed.push((k.value().to_string(), c));
                }
            }
            for (k, c) in changed {
                certs.insert(k.as_str(), json(&c).as_slice())?;
                revoked += 1;
            }
            let mut codes = txn.open_table(ENROLL_CODES)?;
            let mut spent = Vec::new();
            for e in codes.iter()? {
                let (k, v) = e?;
                let mut c: EnrollCode = parse(v.value())?;
                if c.gateway == gateway && c.used_ms.is_none() && c.expires_ms > now_ms {
                    // An unused code of a revoked gateway must not bring it back.
                    c.expires_ms = now_ms;
                    spent.push((k.value().to_string(), c));
                }
            }
            for (k, c) in spent {
                codes.insert(k.as_str(), json(&c).as_slice())?;
            }
        }
        append_audit(
            &txn,
            AuditEntry::new(
                by,
                "gateway_revoke",
                &format!("gateway/{gateway}"),
                &if revoked > 0 {
                    format!("ok: {revoked} certificate(s) revoked; reason: {reason}")
                } else {
                    format!("ok: no certificate to revoke; reason: {reason}")
                },
                remote,
                now_ms,
            ),
        )?;
        txn.commit()?;
        Ok(revoked)
    }
}

/// Enrolls a gateway without the network, for setups that make the
/// gateway before its backend runs (tests, chaos runs, benchmarks): opens
/// the stopped bridge's store in `bridge_data_dir`, makes a code (audited,
/// by `setup`) and exchanges it as the endpoint would, with a key made in
/// `gateway_identity` (never leaving that directory). The gateway CA is
/// the one a bridge with the default `[enrollment]` uses.
pub fn provision_offline(
    bridge_data_dir: &Path,
    gateway: &str,
    gateway_identity: &trygg_uplink::enroll::IdentityFiles,
) -> Result<trygg_uplink::enroll::IdentityInfo, String> {
    std::fs::create_dir_all(bridge_data_dir).map_err(|e| e.to_string())?;
    let store = Store::open(&bridge_data_dir.join("bridge.redb")).map_err(|e| e.to_string())?;
    let ca = GatewayCa::load_or_create(&bridge_data_dir.join("gateway-ca"), 730)
        .map_err(|e| e.to_string())?;
    let now = crate::store::now_ms();
    let (code, _) = store
        .create_enroll_code(gateway, "provisioned offline", 3_600_000, "setup", "", now)
        .map_err(|e| e.to_string())?;
    let csr = trygg_uplink::enroll::write_pending_key(gateway_identity, gateway)
        .map_err(|e| e.to_string())?;
    let request = EnrollRequest {
        v: trygg_uplink::enroll::ENROLL_VERSION,
        gateway: gateway.to_string(),
        code,
        csr,
    };
    let (granted, _) = store
        .redeem_enroll_code(&request, &ca, "local", now)
        .map_err(|e| e.to_string())?;
    trygg_uplink::enroll::install(gateway_identity, gateway, granted, "offline")
        .map_err(|e| e.to_string())
}

/// Failed enrollments per address: after [`MAX_FAILURES_PER_ADDRESS`] in
/// [`FAILURE_WINDOW_MS`], the address waits out the window.
#[derive(Default)]
pub struct FailureLimit {
    by_address: HashMap<IpAddr, (u32, u64)>,
}

impl FailureLimit {
    /// `Some(ms to wait)` while `addr` may not try.
    pub fn blocked(&mut self, addr: IpAddr, now_ms: u64) -> Option<u64> {
        let (count, since) = *self.by_address.get(&addr)?;
        if now_ms.saturating_sub(since) >= FAILURE_WINDOW_MS {
            self.by_address.remove(&addr);
            return None;
        }
        (count >= MAX_FAILURES_PER_ADDRESS).then(|| since + FAILURE_WINDOW_MS - now_ms)
    }

    pub fn failed(&mut self, addr: IpAddr, now_ms: u64) {
        let e = self.by_address.entry(addr).or_insert((0, now_ms));
        if now_ms.saturating_sub(e.1) >= FAILURE_WINDOW_MS {
            *e = (0, now_ms);
        }
        e.0 += 1;
        if self.by_address.len() > 10_000 {
            self.by_address
                .retain(|_, (_, since)| now_ms.saturating_sub(*since) < FAILURE_WINDOW_MS);
        }
    }
}

/// A refused enrollment or uplink connection, on its way to be logged,
/// counted and raised.
#[derive(Clone, Debug)]
pub struct Refusal {
    /// The gateway it claimed or proved to be, or `unknown`.
    pub gateway: String,
    /// `enrollment` or `uplink`.
    pub subject: &'static str,
    /// Metric label: `unknown_code`, `revoked`, `unknown_issuer`, ...
    pub reason: String,
    /// For people: what happened, from where.
    pub detail: String,
}

/// How often, at most, one gateway's refusals of one kind raise (or repeat)
/// `access_refused` and are logged: a revoked gateway retrying every
/// second must not cost an fsync each time, nor flood the log.
pub const REFUSAL_REPORT_EVERY_MS: u64 = 60_000;

/// Logs, counts and raises refusals, each key at most once per
/// [`REFUSAL_REPORT_EVERY_MS`] (the count of those in between goes with
/// the next report).
pub async fn report_refusals(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Refusal>,
    writer: crate::store::StoreWriter,
    metrics: Arc<trygg_uplink::metrics::Metrics>,
) {
    let mut last: HashMap<(String, &'static str, String), (u64, u64)> = HashMap::new();
    while let Some(r) = rx.recv().await {
        let metric = match r.subject {
            "enrollment" => "enroll_refused_total",
            _ => "uplink_tls_refused_total",
        };
        metrics.inc(metric, &format!("reason=\"{}\"", r.reason));
        let now = crate::store::now_ms();
        let key = (r.gateway.clone(), r.subject, r.reason.clone());
        let entry = last.entry(key).or_insert((0, 0));
        entry.1 += 1;
        if entry.0 != 0 && now.saturating_sub(entry.0) < REFUSAL_REPORT_EVERY_MS {
            continue;
        }
        let times = std::mem::take(&mut entry.1);
        entry.0 = now;
        tracing::warn!(
            gateway = %r.gateway,
            subject = r.subject,
            reason = %r.reason,
            times,
            detail = %r.detail,
            "access refused (possible attack): raising access_refused"
        );
        let detail = if times > 1 {
            format!("{} ({times} times since the last report)", r.detail)
        } else {
            r.detail
        };
        let op = crate::store::Op::AccessRefused {
            gateway: r.gateway,
            subject: r.subject.to_string(),
            detail,
        };
        if let Err(e) = writer.submit(op).await {
            tracing::error!(error = %e, "access_refused could not be raised");
        }
    }
}

/// The shared state of the enrollment endpoint.
#[derive(Clone)]
pub struct EnrollState {
    pub store: Store,
    pub ca: Arc<GatewayCa>,
    pub limit: Arc<Mutex<FailureLimit>>,
    pub refusals: tokio::sync::mpsc::UnboundedSender<Refusal>,
    pub metrics: Arc<trygg_uplink::metrics::Metrics>,
}

/// The HTTPS enrollment endpoint (`POST /enroll/v1`).
pub fn router(state: EnrollState) -> axum::Router {
    use axum::routing::post;
    axum::Router::new()
        .route(trygg_uplink::enroll::ENROLL_PATH, post(enroll))
        .fallback(|| async {
            refusal(
                axum::http::StatusCode::NOT_FOUND,
                "bad_request",
                "no such path: gateways enroll with POST /enroll/v1 (trygg-gateway enroll --code CODE)",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(
            trygg_uplink::enroll::MAX_REQUEST_BYTES,
        ))
        .with_state(state)
}

fn refusal(status: axum::http::StatusCode, reason: &str, error: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        status,
        axum::Json(EnrollRefusal {
            reason: reason.to_string(),
            error: error.to_string(),
        }),
    )
        .into_response()
}

async fn enroll(
    axum::extract::State(st): axum::extract::State<EnrollState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<crate::console::Peer>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let ip = peer.0.ip();
    let remote = ip.to_string();
    let now = crate::store::now_ms();
    st.metrics.inc("enroll_requests_total", "");
    let wait = st.limit.lock().ok().and_then(|mut l| l.blocked(ip, now));
    if let Some(wait_ms) = wait {
        let _ = st.refusals.send(Refusal {
            gateway: "unknown".into(),
            subject: "enrollment",
            reason: "rate_limited".into(),
            detail: format!("enrollment attempts from {remote} refused: too many failures"),
        });
        return refusal(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            &format!(
                "too many failed enrollment attempts from this address: wait {} minutes, check the code, and try again",
                wait_ms.div_ceil(60_000)
            ),
        );
    }
    let request: EnrollRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(remote = %remote, error = %e, "enrollment request unreadable");
            st.metrics
                .inc("enroll_refused_total", "reason=\"bad_request\"");
            return refusal(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("the enrollment request is not valid JSON of version 1 ({e}); use trygg-gateway enroll"),
            );
        }
    };
    if request.v != trygg_uplink::enroll::ENROLL_VERSION || !valid_gateway_id(&request.gateway) {
        st.metrics
            .inc("enroll_refused_total", "reason=\"bad_request\"");
        return refusal(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the enrollment request has an unknown version or an invalid gateway id; use trygg-gateway enroll",
        );
    }
    let store = st.store.clone();
    let ca = st.ca.clone();
    let r = remote.clone();
    let req = request.clone();
    let result =
        tokio::task::spawn_blocking(move || store.redeem_enroll_code(&req, &ca, &r, now)).await;
    match result {
        Ok(Ok((response, cert))) => {
            st.metrics.inc("gateways_enrolled_total", "");
            tracing::info!(
                gateway = %cert.gateway,
                site = %cert.site,
                fingerprint = %cert.fingerprint,
                not_after = %response.not_after,
                remote = %remote,
                "gateway enrolled: certificate issued"
            );
            (StatusCode::OK, axum::Json(response)).into_response()
        }
        Ok(Err(RedeemError::Store(e))) => {
            tracing::error!(error = %e, "enrollment could not be committed");
            refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the backend could not record the enrollment; try again in a minute (the code is not spent)",
            )
        }
        Ok(Err(e)) => {
            if let Ok(mut l) = st.limit.lock() {
                l.failed(ip, now);
            }
            tracing::warn!(gateway = %request.gateway, remote = %remote, reason = e.reason(), "enrollment refused");
            let _ = st.refusals.send(Refusal {
                gateway: request.gateway.clone(),
                subject: "enrollment",
                reason: e.reason().to_string(),
                detail: format!(
                    "enrollment of gateway {} from {remote} refused: {} / innrullering av gateway {} fra {remote} avvist: {}",
                    request.gateway,
                    e.reason(),
                    request.gateway,
                    e.reason()
                ),
            });
            let status = match e {
                RedeemError::BadCsr(_) => StatusCode::UNPROCESSABLE_ENTITY,
                _ => StatusCode::FORBIDDEN,
            };
            refusal(status, e.reason(), &e.to_string())
        }
        Err(e) => {
            tracing::error!(error = %e, "enrollment task failed");
            refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the backend could not finish the enrollment; try again in a minute",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, Store, GatewayCa) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("bridge.redb")).unwrap();
        let ca = GatewayCa::load_or_create(&dir.path().join("gateway-ca"), 730).unwrap();
        (dir, s, ca)
    }

    fn request(gateway: &str, code: &str) -> EnrollRequest {
        let (_key, csr) = trygg_uplink::enroll::new_key_and_csr(gateway).unwrap();
        EnrollRequest {
            v: 1,
            gateway: gateway.into(),
            code: code.into(),
            csr,
        }
    }

    #[test]
    fn a_code_is_spent_by_its_first_good_use_and_only_its_hash_is_kept() {
        let (dir, s, ca) = setup();
        let (code, _) = s
            .create_enroll_code(
                "gw-1",
                "Frogner 12",
                DEFAULT_CODE_VALID_MS,
                "kari",
                "",
                1000,
            )
            .unwrap();
        assert_eq!(code.len(), 19);
        let (granted, cert) = s
            .redeem_enroll_code(
                &request("gw-1", &code.to_lowercase()),
                &ca,
                "10.0.0.2",
                2000,
            )
            .unwrap();
        assert_eq!(granted.gateway, "gw-1");
        assert_eq!(granted.site, "Frogner 12");
        assert_eq!(s.gateway_cert(&cert.fingerprint).unwrap().unwrap(), cert);
        assert!(matches!(
            s.redeem_enroll_code(&request("gw-1", &code), &ca, "10.0.0.2", 3000),
            Err(RedeemError::Used(_))
        ));
        drop(s);
        let raw = std::fs::read(dir.path().join("bridge.redb")).unwrap();
        let needle = code.replace('-', "");
        assert!(
            !raw.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "the code itself is never stored"
        );
    }

    #[test]
    fn wrong_expired_and_foreign_codes_are_refused_and_audited() {
        let (_d, s, ca) = setup();
        let (code, _) = s
            .create_enroll_code("gw-1", "Frogner 12", 60_000, "kari", "", 1000)
            .unwrap();
        assert!(matches!(
            s.redeem_enroll_code(&request("gw-1", "AAAA-BBBB-CCCC-DDDD"), &ca, "x", 2000),
            Err(RedeemError::Unknown)
        ));
        assert!(matches!(
            s.redeem_enroll_code(&request("gw-2", &code), &ca, "x", 2000),
            Err(RedeemError::WrongGateway)
        ));
        assert!(matches!(
            s.redeem_enroll_code(&request("gw-1", &code), &ca, "x", 61_000),
            Err(RedeemError::Expired(_))
        ));
        let refused = s
            .audit(&crate::access::AuditQuery {
                action: Some("gateway_enroll_refused".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(refused.len(), 3);
    }

    #[test]
    fn the_certificate_names_the_gateway_of_the_code_whatever_the_request_asks() {
        let (_d, s, ca) = setup();
        let (code, _) = s
            .create_enroll_code("gw-1", "Frogner 12", 60_000, "kari", "", 1000)
            .unwrap();
        let mut req = request("gw-1", &code);
        // A request that asks for the bridge's own name.
        let (_key, csr) = trygg_uplink::enroll::new_key_and_csr(BRIDGE_IDENTITY).unwrap();
        req.csr = csr;
        let (granted, _) = s.redeem_enroll_code(&req, &ca, "x", 2000).unwrap();
        let der = trygg_uplink::enroll::first_certificate(granted.certificate.as_bytes()).unwrap();
        let (_, x509) = x509_parser::parse_x509_certificate(&der).unwrap();
        let cn: Vec<_> = x509
            .subject()
            .iter_common_name()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        assert_eq!(cn, ["gw-1"]);
    }

    #[test]
    fn reserved_and_invalid_gateway_ids_get_no_code() {
        let (_d, s, _ca) = setup();
        assert!(matches!(
            s.create_enroll_code("trygg-bridge", "x", 60_000, "a", "", 1),
            Err(CodeError::Reserved)
        ));
        assert!(matches!(
            s.create_enroll_code("gw/1", "x", 60_000, "a", "", 1),
            Err(CodeError::BadGateway(_))
        ));
        assert!(matches!(
            s.create_enroll_code("gw-1", "x", 1, "a", "", 1),
            Err(CodeError::BadValidity)
        ));
    }

    #[test]
    fn revoking_marks_every_certificate_and_spends_open_codes() {
        let (_d, s, ca) = setup();
        let (code, _) = s
            .create_enroll_code("gw-1", "Frogner 12", 60_000, "kari", "", 1000)
            .unwrap();
        let (_, cert) = s
            .redeem_enroll_code(&request("gw-1", &code), &ca, "x", 2000)
            .unwrap();
        let (open, _) = s
            .create_enroll_code("gw-1", "Frogner 12", 60_000, "kari", "", 3000)
            .unwrap();
        assert_eq!(
            s.revoke_gateway("gw-1", "admin", "stolen", "", 4000)
                .unwrap(),
            1
        );
        let c = s.gateway_cert(&cert.fingerprint).unwrap().unwrap();
        assert_eq!(c.revoked.unwrap().reason, "stolen");
        assert!(matches!(
            s.redeem_enroll_code(&request("gw-1", &open), &ca, "x", 5000),
            Err(RedeemError::Expired(_))
        ));
    }

    #[test]
    fn the_crl_names_the_revoked_serials_and_is_signed_by_the_ca() {
        let (_d, s, ca) = setup();
        let (code, _) = s
            .create_enroll_code("gw-1", "Frogner 12", 60_000, "kari", "", 1000)
            .unwrap();
        let (_, cert) = s
            .redeem_enroll_code(&request("gw-1", &code), &ca, "x", 2000)
            .unwrap();
        let (code, _) = s
            .create_enroll_code("gw-2", "Frogner 14", 60_000, "kari", "", 1000)
            .unwrap();
        s.redeem_enroll_code(&request("gw-2", &code), &ca, "x", 2000)
            .unwrap();
        s.revoke_gateway("gw-1", "admin", "stolen", "", 3000)
            .unwrap();
        let now = crate::store::now_ms();
        let pem = ca.crl_pem(&s.gateway_certs().unwrap(), now).unwrap();
        let der = rustls_pemfile::crls(&mut pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        use x509_parser::prelude::FromDer;
        let (_, crl) =
            x509_parser::revocation_list::CertificateRevocationList::from_der(&der).unwrap();
        let serials: Vec<String> = crl
            .iter_revoked_certificates()
            .map(|r| r.raw_serial().iter().map(|b| format!("{b:02x}")).collect())
            .collect();
        assert_eq!(serials, [cert.serial]);
        let ca_der = trygg_uplink::enroll::first_certificate(ca.cert_pem.as_bytes()).unwrap();
        let (_, ca_x509) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        crl.verify_signature(ca_x509.public_key()).unwrap();
        assert!(crl.next_update().unwrap().timestamp() as u64 > now / 1000 + 6 * 86_400);
    }

    #[test]
    fn an_address_failing_too_often_waits() {
        let mut l = FailureLimit::default();
        let a: IpAddr = "10.0.0.9".parse().unwrap();
        for i in 0..MAX_FAILURES_PER_ADDRESS {
            assert!(l.blocked(a, 100 + i as u64).is_none());
            l.failed(a, 100 + i as u64);
        }
        assert!(l.blocked(a, 200).is_some());
        assert!(l.blocked(a, 100 + FAILURE_WINDOW_MS).is_none());
    }
}
