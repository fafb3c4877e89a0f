//! Mutual TLS and per-gateway topic authorization on the uplink (the
//! embedded broker).
//!
//! Who may connect: a client whose certificate chains to the gateway CA
//! ([`crate::enrollment::GatewayCa`]), is within its validity, was issued
//! by this backend (it is in `gateway_certs`) and is not revoked, or the
//! bridge's own client (a certificate issued at start, kept in memory).
//! [`RevocationCheckingVerifier`] wraps rustls's `WebPkiClientVerifier` and
//! reads the store at every handshake, so a revocation takes effect at the
//! gateway's next connection attempt without a restart.
//!
//! A client that presents no certificate at all completes the TLS
//! handshake, but [`check`] refuses it everything: its CONNECT's will, its
//! first publish or subscribe closes the connection (so the refusal can be
//! logged, counted and raised like the others; rustls gives no word of a
//! handshake without a certificate).
//!
//! What a gateway may do ([`check`]; `{id}` is its certificate's CN):
//! - connect with client id `trygg-uplink-{id}`;
//! - publish to `trygg/v1/gw/{id}/...` (batch, heartbeat, status,
//!   config-result, decommission) except [`FROM_THE_BRIDGE`] (`receipt`,
//!   `config`, `decommission-result`), without wildcards;
//! - subscribe to its [`FROM_THE_BRIDGE`] topics and
//!   `trygg/v1/bridge/status`.
//!
//! The bridge (CN `trygg-bridge`, client id `trygg-bridge`) may do
//! anything. Every refusal closes the connection and goes to
//! [`crate::enrollment::report_refusals`]: logged, counted
//! (`uplink_tls_refused_total{reason}`), raised as `access_refused`.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::sync::mpsc::UnboundedSender;
use trygg_uplink::broker::{Access, AccessRequest, Authorizer};
use trygg_uplink::contract::BRIDGE_STATUS_TOPIC;
use trygg_uplink::enroll::fingerprint;

use crate::enrollment::{valid_gateway_id, Refusal, BRIDGE_IDENTITY, RESERVED_PREFIX};
use crate::store::Store;

/// A gateway's topics the bridge publishes to and the gateway only reads
/// (`trygg/v1/gw/{id}/...`): receipts, settings pushed from the backend,
/// the answer to its decommission.
pub const FROM_THE_BRIDGE: [&str; 3] = ["receipt", "config", "decommission-result"];

/// The store as the broker's verifier sees it: `None` once the bridge has
/// stopped (so that the store's file is released).
pub type StoreSlot = Arc<std::sync::RwLock<Option<Store>>>;

/// Takes the store out of its slot when dropped: however `run` ends.
pub struct ReleaseOnDrop(pub StoreSlot);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        if let Ok(mut s) = self.0.write() {
            *s = None;
        }
    }
}

/// The uplink client id a gateway must use.
pub fn gateway_client_id(gateway: &str) -> String {
    format!("trygg-uplink-{gateway}")
}

/// Whether the client behind `r` may do what it asks; `Err` says why not.
pub fn check(r: &AccessRequest) -> Result<(), String> {
    let Some(who) = r.peer_identity else {
        return Err(
            "no client certificate: only enrolled gateways may use the uplink (trygg-gateway enroll --code CODE)"
                .into(),
        );
    };
    if who == BRIDGE_IDENTITY {
        return if r.client_id == crate::uplink::CLIENT_ID {
            Ok(())
        } else {
            Err(format!(
                "the bridge's certificate with client id {}",
                r.client_id
            ))
        };
    }
    if !valid_gateway_id(who) || who.starts_with(RESERVED_PREFIX) {
        return Err(format!("certificate CN `{who}` is not a gateway id"));
    }
    let client_id = gateway_client_id(who);
    if r.client_id != client_id {
        return Err(format!(
            "gateway {who} connected with client id `{}`, not `{client_id}`",
            r.client_id
        ));
    }
    let own = format!("trygg/v1/gw/{who}/");
    let leaf = r.topic.strip_prefix(&own);
    let ok = match r.access {
        Access::Publish => leaf.is_some_and(|l| {
            !l.is_empty()
                && !l.contains(['+', '#'])
                && !FROM_THE_BRIDGE
                    .iter()
                    .any(|b| l == *b || l.starts_with(&format!("{b}/")))
        }),
        Access::Subscribe => {
            leaf.is_some_and(|l| FROM_THE_BRIDGE.contains(&l)) || r.topic == BRIDGE_STATUS_TOPIC
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "gateway {who} may not {} `{}`",
            match r.access {
                Access::Publish => "publish to",
                Access::Subscribe => "subscribe to",
            },
            r.topic
        ))
    }
}

/// The embedded broker's authorizer: [`check`], with refusals reported.
pub fn authorizer(refusals: UnboundedSender<Refusal>) -> Authorizer {
    Arc::new(move |r: &AccessRequest| match check(r) {
        Ok(()) => true,
        Err(why) => {
            let gateway = r
                .peer_identity
                .filter(|g| valid_gateway_id(g))
                .unwrap_or("unknown")
                .to_string();
            let reason = if r.peer_identity.is_none() {
                "no_certificate"
            } else {
                "topic_denied"
            };
            let _ = refusals.send(Refusal {
                gateway,
                subject: "uplink",
                reason: reason.into(),
                detail: format!(
                    "{why}; connection closed / tilkoblingen er stengt (client id {})",
                    r.client_id
                ),
            });
            false
        }
    })
}

/// Checks a client certificate as WebPKI does (chain to the gateway CA,
/// validity, key usage), then against the store: issued here and not
/// revoked. Refusals are reported.
pub struct RevocationCheckingVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    /// The store while the bridge runs. The embedded broker (and so this
    /// verifier) lives until the process ends, the store only until the
    /// bridge stops: then it is taken away, and every certificate refused.
    store: StoreSlot,
    /// Fingerprints of the bridge's own certificates (not in the store).
    own: Vec<String>,
    refusals: UnboundedSender<Refusal>,
}

impl std::fmt::Debug for RevocationCheckingVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationCheckingVerifier")
            .finish_non_exhaustive()
    }
}

impl RevocationCheckingVerifier {
    pub fn new(
        gateway_ca: &[CertificateDer<'static>],
        store: StoreSlot,
        own: Vec<String>,
        refusals: UnboundedSender<Refusal>,
    ) -> Result<RevocationCheckingVerifier, rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        for c in gateway_ca {
            roots.add(c.clone())?;
        }
        let inner = WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        Ok(RevocationCheckingVerifier {
            inner,
            store,
            own,
            refusals,
        })
    }

    fn refuse(&self, end_entity: &CertificateDer<'_>, reason: &str, why: String) {
        let (cn, issuer) = names(end_entity);
        let gateway = cn
            .as_deref()
            .filter(|g| valid_gateway_id(g))
            .unwrap_or("unknown")
            .to_string();
        let _ = self.refusals.send(Refusal {
            gateway,
            subject: "uplink",
            reason: reason.to_string(),
            detail: format!(
                "uplink connection refused: {why} (certificate CN {}, issuer {}, SHA-256 {}) / tilkobling avvist",
                cn.as_deref().unwrap_or("?"),
                issuer.as_deref().unwrap_or("?"),
                fingerprint(end_entity)
            ),
        });
    }
}

/// The subject CN and issuer CN of a certificate, where readable.
fn names(der: &CertificateDer<'_>) -> (Option<String>, Option<String>) {
    let Ok((_, x509)) = x509_parser::parse_x509_certificate(der) else {
        return (None, None);
    };
    let cn = |n: &x509_parser::x509::X509Name<'_>| {
        n.iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            .map(String::from)
    };
    (cn(x509.subject()), cn(x509.issuer()))
}

impl ClientCertVerifier for RevocationCheckingVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    /// Optional at the TLS layer on purpose: a client without a
    /// certificate is refused by [`check`], where it can be reported.
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if let Err(e) = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            let reason = match &e {
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
                    "unknown_issuer"
                }
                rustls::Error::InvalidCertificate(
                    CertificateError::Expired | CertificateError::ExpiredContext { .. },
                ) => "expired",
                rustls::Error::InvalidCertificate(
                    CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
                ) => "not_valid_yet",
                // Signed by another key under the gateway CA's name.
                rustls::Error::InvalidCertificate(CertificateError::BadSignature) => {
                    "bad_signature"
                }
                _ => "invalid_certificate",
            };
            self.refuse(end_entity, reason, e.to_string());
            return Err(e);
        }
        let fp = fingerprint(end_entity);
        if self.own.contains(&fp) {
            return Ok(ClientCertVerified::assertion());
        }
        let Some(store) = self.store.read().ok().and_then(|s| s.clone()) else {
            return Err(rustls::Error::General("the bridge has stopped".into()));
        };
        match store.gateway_cert(&fp) {
            Ok(Some(c)) if c.revoked.is_none() => Ok(ClientCertVerified::assertion()),
            Ok(Some(c)) => {
                let r = c.revoked.expect("guarded");
                self.refuse(
                    end_entity,
                    "revoked",
                    format!(
                        "the certificate of gateway {} was revoked {} by {} ({})",
                        c.gateway,
                        trygg_uplink::enroll::utc_text(r.at_ms),
                        r.by,
                        r.reason
                    ),
                );
                Err(rustls::Error::InvalidCertificate(CertificateError::Revoked))
            }
            Ok(None) => {
                self.refuse(
                    end_entity,
                    "not_issued",
                    "signed by the gateway CA but not issued by this backend's store".into(),
                );
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ))
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot check a gateway certificate against the store");
                Err(rustls::Error::General(
                    "the certificate could not be checked".into(),
                ))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The broker's server config: its certificate and key (PEM files), and
/// client certificates checked by `verifier`.
pub fn server_config(
    cert: &std::path::Path,
    key: &std::path::Path,
    verifier: RevocationCheckingVerifier,
) -> Result<Arc<rustls::ServerConfig>, trygg_uplink::tls::TlsError> {
    let certs = trygg_uplink::tls::read_certs(cert)?;
    let key = trygg_uplink::tls::read_key(key)?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
    .with_client_cert_verifier(Arc::new(verifier))
    .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(
        who: Option<&'a str>,
        client_id: &'a str,
        access: Access,
        topic: &'a str,
    ) -> AccessRequest<'a> {
        AccessRequest {
            client_id,
            username: None,
            peer_identity: who,
            access,
            topic,
        }
    }

    #[test]
    fn a_gateway_publishes_to_its_own_topics_only() {
        let me = Some("gw-1");
        let id = "trygg-uplink-gw-1";
        for t in [
            "trygg/v1/gw/gw-1/batch",
            "trygg/v1/gw/gw-1/heartbeat",
            "trygg/v1/gw/gw-1/status",
            "trygg/v1/gw/gw-1/config-result",
            "trygg/v1/gw/gw-1/decommission",
        ] {
            assert!(check(&req(me, id, Access::Publish, t)).is_ok(), "{t}");
        }
        for t in [
            "trygg/v1/gw/gw-2/batch",
            "trygg/v1/gw/gw-1/receipt",
            "trygg/v1/gw/gw-1/config",
            "trygg/v1/gw/gw-1/decommission-result",
            "trygg/v1/gw/gw-1/",
            "trygg/v1/bridge/status",
            "trygg/v1/gw/gw-1x/batch",
        ] {
            assert!(check(&req(me, id, Access::Publish, t)).is_err(), "{t}");
        }
    }

    #[test]
    fn a_gateway_subscribes_to_its_receipts_config_and_the_bridge_status_only() {
        let me = Some("gw-1");
        let id = "trygg-uplink-gw-1";
        for t in [
            "trygg/v1/gw/gw-1/receipt",
            "trygg/v1/gw/gw-1/config",
            "trygg/v1/gw/gw-1/decommission-result",
            "trygg/v1/bridge/status",
        ] {
            assert!(check(&req(me, id, Access::Subscribe, t)).is_ok(), "{t}");
        }
        for t in [
            "trygg/v1/gw/gw-2/receipt",
            "trygg/v1/gw/+/receipt",
            "#",
            "trygg/v1/gw/gw-1/#",
            "trygg/v1/gw/gw-1/batch",
        ] {
            assert!(check(&req(me, id, Access::Subscribe, t)).is_err(), "{t}");
        }
    }

    #[test]
    fn the_client_id_must_match_the_certificate() {
        assert!(check(&req(
            Some("gw-1"),
            "trygg-uplink-gw-2",
            Access::Publish,
            "trygg/v1/gw/gw-1/batch"
        ))
        .is_err());
        assert!(check(&req(
            Some("trygg-bridge"),
            "trygg-uplink-gw-1",
            Access::Publish,
            "trygg/v1/gw/gw-1/batch"
        ))
        .is_err());
        assert!(check(&req(
            Some("trygg-bridge"),
            "trygg-bridge",
            Access::Subscribe,
            "trygg/v1/gw/+/batch"
        ))
        .is_ok());
    }

    #[test]
    fn without_a_certificate_nothing_is_allowed() {
        let e = check(&req(
            None,
            "trygg-uplink-gw-1",
            Access::Publish,
            "trygg/v1/gw/gw-1/batch",
        ))
        .unwrap_err();
        assert!(e.contains("enroll"), "{e}");
    }
}
