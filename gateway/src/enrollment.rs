//! The gateway's identity at the backend: enrollment, and the uplink run
//! with the certificate it gave.
//!
//! The key and certificate live in `{data_dir}/identity/` (see
//! [`trygg_uplink::enroll`] for the files and when they are durable). The
//! gateway makes its private key itself; only a CSR leaves it.
//!
//! [`supervise_uplink`] runs the uplink once there is an identity, and
//! until then:
//! - with `[enrollment] code_file`, enrolls by itself (a refused code is
//!   renamed `*.refused` so it is not tried again and again; an unreachable
//!   backend is tried again with back-off);
//! - otherwise says loudly, every few minutes, that the gateway is not
//!   enrolled and what to run, and looks for an identity every 2 s, so
//!   `trygg-gateway enroll` from a shell takes effect without a restart.
//!
//! Events are journaled all the while; they go up once the uplink runs.
//! A new certificate (re-enrollment to rotate it) restarts the uplink with
//! it within 5 s. A certificate the backend refuses (revoked, expired, not
//! known) shows in `/healthz` and `/api/v1/status` with what to do.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use trygg_uplink::backoff::Backoff;
use trygg_uplink::enroll::{self, EnrollError, IdentityFiles, IdentityInfo};
use trygg_uplink::mqtt_url::MqttUrl;

use crate::config::Config;
use crate::service::{JournalCmd, Shared, UplinkCmd};

/// Where the gateway stands with the backend, for `/healthz`, status and
/// the log.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum IdentityState {
    NotEnrolled,
    Enrolling,
    /// The backend refused the enrollment code (message from it).
    EnrollRefused(String),
    Enrolled {
        fingerprint: String,
        not_after_ms: u64,
    },
    /// The identity files are there but unusable.
    Broken(String),
    /// The uplink refused this gateway's certificate (the TLS alert).
    CertificateRefused {
        fingerprint: String,
        alert: String,
    },
}

/// What to do when not enrolled.
pub const HOW_TO_ENROLL: &str =
    "ask the backend's administrator or technician for an enrollment code \
     (trygg-bridge enroll-code create --gateway ID --site ADDRESS) and run \
     `trygg-gateway --config FILE enroll --code CODE` on this gateway";

impl IdentityState {
    pub fn name(&self) -> &'static str {
        match self {
            IdentityState::NotEnrolled => "not_enrolled",
            IdentityState::Enrolling => "enrolling",
            IdentityState::EnrollRefused(_) => "enrollment_refused",
            IdentityState::Enrolled { .. } => "enrolled",
            IdentityState::Broken(_) => "identity_unusable",
            IdentityState::CertificateRefused { .. } => "certificate_refused",
        }
    }

    /// What is wrong and what to do, when something is.
    pub fn problem(&self) -> Option<String> {
        match self {
            IdentityState::Enrolled { .. } | IdentityState::Enrolling => None,
            IdentityState::NotEnrolled => Some(format!(
                "NOT ENROLLED: this gateway has no certificate for the backend, so events are kept \
                 in its journal but not sent: {HOW_TO_ENROLL}"
            )),
            IdentityState::EnrollRefused(e) => Some(format!(
                "ENROLLMENT REFUSED: {e}; events are kept in the journal but not sent"
            )),
            IdentityState::Broken(e) => Some(format!(
                "the gateway's identity files are unusable ({e}): enroll again with a new code \
                 (trygg-gateway enroll --code CODE); events are kept in the journal"
            )),
            IdentityState::CertificateRefused { alert, .. } => Some(format!(
                "THE BACKEND REFUSES THIS GATEWAY'S CERTIFICATE ({alert}): it was revoked, has \
                 expired or is not known there; events are kept in the journal but not sent: \
                 {HOW_TO_ENROLL}"
            )),
        }
    }
}

/// The TLS alert in an uplink error that means the backend refused our
/// certificate, if it is one.
pub(crate) fn certificate_refusal(error: &str) -> Option<String> {
    const ALERTS: [&str; 7] = [
        "CertificateRevoked",
        "CertificateExpired",
        "BadCertificate",
        "UnknownCA",
        "AccessDenied",
        "CertificateUnknown",
        "CertificateRequired",
    ];
    let at = error.find("fatal alert: ")?;
    let alert = &error[at + "fatal alert: ".len()..];
    ALERTS
        .iter()
        .find(|a| alert.starts_with(*a))
        .map(|a| a.to_string())
}

fn set(shared: &Shared, state: IdentityState) {
    if let Ok(mut s) = shared.identity.lock() {
        if *s != state {
            *s = state;
        }
    }
}

fn cert_fingerprint(path: &Path) -> Option<String> {
    let pem = std::fs::read(path).ok()?;
    enroll::first_certificate(&pem).map(|der| enroll::fingerprint(&der))
}

/// The state an identity on disk stands for.
pub(crate) fn enrolled_state(files: &IdentityFiles) -> IdentityState {
    match (cert_fingerprint(&files.cert), files.info()) {
        (Some(fingerprint), info) => IdentityState::Enrolled {
            fingerprint,
            not_after_ms: info.map(|i| i.not_after_ms).unwrap_or(0),
        },
        (None, _) => {
            IdentityState::Broken(format!("{} holds no certificate", files.cert.display()))
        }
    }
}

/// Warn this long before the certificate runs out.
const EXPIRY_WARNING_MS: u64 = 30 * 24 * 3600 * 1000;
/// Say "not enrolled" in the log this often while it lasts.
const NAG_EVERY: Duration = Duration::from_secs(300);

/// Runs the uplink with the gateway's identity, enrolling first where it
/// can; returns at `cancel`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn supervise_uplink(
    mut cmds: mpsc::Receiver<UplinkCmd>,
    config: Arc<Config>,
    url: MqttUrl,
    shared: Arc<Shared>,
    journal_tx: mpsc::Sender<JournalCmd>,
    committed: watch::Receiver<u64>,
    cancel: CancellationToken,
) {
    let files = IdentityFiles::in_data_dir(&config.data_dir);
    let mut last_nag: Option<Instant> = None;
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    let pause = |d: Duration| {
        let cancel = cancel.clone();
        async move {
            tokio::select! {
                _ = cancel.cancelled() => false,
                _ = tokio::time::sleep(d) => true,
            }
        }
    };
    loop {
        if cancel.is_cancelled() {
            return;
        }
        if files.exists() {
            let tls = match trygg_uplink::tls::client_config_with_identity(
                &config.uplink.ca_file,
                &files.cert,
                &files.key,
            ) {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::error!(error = %e, dir = %files.dir.display(), "the gateway's identity is unusable: enroll again with a new code (trygg-gateway enroll --code CODE); events stay in the journal");
                    set(&shared, IdentityState::Broken(e.to_string()));
                    if !pause(Duration::from_secs(10)).await {
                        return;
                    }
                    continue;
                }
            };
            let state = enrolled_state(&files);
            let current = cert_fingerprint(&files.cert);
            if let IdentityState::Enrolled {
                fingerprint,
                not_after_ms,
            } = &state
            {
                tracing::info!(fingerprint = %fingerprint, not_after = %enroll::utc_text(*not_after_ms), "uplink identity: the gateway's certificate");
            }
            set(&shared, state);
            shared.metrics.set("gateway_enrolled", "", 1.0);
            let run = cancel.child_token();
            let uplink = crate::service::uplink_loop(
                &mut cmds,
                config.clone(),
                url.clone(),
                tls,
                shared.clone(),
                journal_tx.clone(),
                committed.clone(),
                run.clone(),
            );
            tokio::pin!(uplink);
            let mut warned_expiry: Option<Instant> = None;
            loop {
                tokio::select! {
                    _ = &mut uplink => return,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {
                        if cert_fingerprint(&files.cert) != current {
                            tracing::info!("a new certificate is in place (re-enrolled): reconnecting the uplink with it");
                            run.cancel();
                            (&mut uplink).await;
                            break;
                        }
                        let left = files.info().map(|i| i.not_after_ms.saturating_sub(enroll::now_ms()));
                        if let Some(left) = left.filter(|l| *l < EXPIRY_WARNING_MS) {
                            if warned_expiry.is_none_or(|w| w.elapsed() > Duration::from_secs(24 * 3600)) {
                                warned_expiry = Some(Instant::now());
                                tracing::warn!(days_left = left / 86_400_000, "the gateway's certificate runs out soon: ask for a new enrollment code and run trygg-gateway enroll --code CODE to renew it");
                            }
                        }
                    }
                }
            }
            continue;
        }
        shared.metrics.set("gateway_enrolled", "", 0.0);
        let code_file = config
            .enrollment
            .code_file
            .as_ref()
            .filter(|f| f.exists())
            .cloned();
        if let Some(code_file) = code_file {
            let code = std::fs::read_to_string(&code_file).unwrap_or_default();
            set(&shared, IdentityState::Enrolling);
            tracing::info!(url = %config.enrollment.url, code_file = %code_file.display(), "not enrolled: enrolling with the code in the code file");
            match enroll::enroll(
                &config.enrollment.url,
                &config.uplink.ca_file,
                &config.gateway_id,
                code.trim(),
                &files,
            )
            .await
            {
                Ok(info) => {
                    report_enrolled(&info, &files);
                    if let Err(e) = std::fs::remove_file(&code_file) {
                        tracing::warn!(error = %e, file = %code_file.display(), "cannot delete the spent code file");
                    }
                    backoff.reset();
                }
                Err(e) if e.is_retryable() => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_s = delay.as_secs(), "enrollment not possible yet; trying again");
                    if !pause(delay).await {
                        return;
                    }
                }
                Err(e) => {
                    let refused = code_file.with_extension("refused");
                    let _ = std::fs::rename(&code_file, &refused);
                    tracing::error!(error = %e, code_file = %refused.display(), "ENROLLMENT REFUSED: the code was set aside; events stay in the journal until the gateway is enrolled");
                    set(&shared, IdentityState::EnrollRefused(refusal_text(&e)));
                }
            }
            continue;
        }
        let refused_before = matches!(
            shared.identity.lock().map(|s| s.clone()),
            Ok(IdentityState::EnrollRefused(_))
        );
        if !refused_before {
            set(&shared, IdentityState::NotEnrolled);
        }
        if last_nag.is_none_or(|t| t.elapsed() >= NAG_EVERY) {
            last_nag = Some(Instant::now());
            let problem = shared
                .identity
                .lock()
                .ok()
                .and_then(|s| s.problem())
                .unwrap_or_default();
            tracing::error!(gateway = %config.gateway_id, identity = %files.dir.display(), "{problem}");
        }
        if !pause(Duration::from_secs(2)).await {
            return;
        }
    }
}

fn refusal_text(e: &EnrollError) -> String {
    match e {
        EnrollError::Refused(r) => r.error.clone(),
        other => other.to_string(),
    }
}

fn report_enrolled(info: &IdentityInfo, files: &IdentityFiles) {
    tracing::info!(
        gateway = %info.gateway,
        site = %info.site,
        fingerprint = %info.fingerprint,
        not_after = %info.not_after,
        key = %files.key.display(),
        "enrolled with the backend: certificate in place"
    );
}

/// `trygg-gateway enroll`: enrolls with `code` and says what happened and
/// what to do next. Returns the text for the technician.
pub async fn enroll_command(config: &Config, code: &str) -> Result<String, EnrollError> {
    let files = IdentityFiles::in_data_dir(&config.data_dir);
    let replacing = files.info();
    let info = enroll::enroll(
        &config.enrollment.url,
        &config.uplink.ca_file,
        &config.gateway_id,
        code,
        &files,
    )
    .await?;
    let mut out = format!(
        "Enrolled gateway {} (site \"{}\") with the backend at {}.\n\
         \x20 certificate SHA-256: {}\n\
         \x20 valid until:         {}\n\
         \x20 private key:         {} (made on this gateway; it never leaves it)\n",
        info.gateway,
        info.site,
        info.backend,
        info.fingerprint,
        info.not_after,
        files.key.display()
    );
    if let Some(old) = replacing {
        out.push_str(&format!(
            "  replaced certificate: {} (it stays valid at the backend until it expires or the \
             gateway is revoked)\n",
            old.fingerprint
        ));
    }
    out.push_str(
        "Next: start the gateway (a running one picks the certificate up within seconds), \
         then confirm the path end to end with `trygg-gateway test-alarm`.",
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_certificate_is_told_from_a_network_error() {
        assert_eq!(
            certificate_refusal("I/O: received fatal alert: CertificateRevoked").as_deref(),
            Some("CertificateRevoked")
        );
        assert_eq!(
            certificate_refusal("tls: received fatal alert: UnknownCA").as_deref(),
            Some("UnknownCA")
        );
        assert_eq!(
            certificate_refusal("Connection refused (os error 111)"),
            None
        );
        assert_eq!(
            certificate_refusal("received fatal alert: DecodeError"),
            None
        );
    }

    #[test]
    fn not_enrolled_says_what_to_run() {
        let p = IdentityState::NotEnrolled.problem().unwrap();
        assert!(
            p.contains("trygg-gateway") && p.contains("enroll --code"),
            "{p}"
        );
        assert!(IdentityState::Enrolled {
            fingerprint: "x".into(),
            not_after_ms: 1
        }
        .problem()
        .is_none());
    }
}
