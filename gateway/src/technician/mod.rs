//! The technician's page and API on the home's network (`[technician]
//! listen`), for a phone on a doorstep: always HTTPS with the gateway's own
//! certificate ([`tls`]), a login against the accounts on the gateway
//! ([`accounts`]), sessions and lock-outs ([`sessions`]), pages in bokmål
//! and English ([`i18n`], [`pages`]).
//!
//! How a request is checked, in order:
//! - the body is at most [`MAX_BODY`] bytes (413);
//! - `/login` (GET, POST) and `/lang/{nb|en}` need no session; the login
//!   form carries a token that must match its `trygg_login` cookie (a
//!   login from another site is refused);
//! - everything else needs the cookie `trygg_tech` naming a live session
//!   whose account still exists with the password it logged in with:
//!   without one, pages answer 303 to `/login` and `/api/...`, `/healthz`
//!   and `/metrics` answer 401 JSON;
//! - `/api/v1/decommission` is not served here (403): it wipes the
//!   gateway, so only `trygg-gateway decommission` on the gateway itself;
//! - every POST needs the session's CSRF token (form field `csrf` on
//!   pages, header `X-CSRF-Token` on the API): otherwise 403, logged and
//!   counted, and nothing changes.
//!
//! The API is the loopback API's own router ([`crate::local_api`]) behind
//! these checks, and the pages call the same functions it does, so a
//! device paired here is paired exactly as `trygg-gateway device add`
//! pairs it. Every login, failed login, logout and change is logged,
//! counted (`technician_logins_total{outcome}`,
//! `technician_actions_total{action}`, `technician_refused_total{reason}`)
//! and appended to `technician-audit.log` in the data dir.

pub mod accounts;
pub mod i18n;
mod pages;
pub mod sessions;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::serve::IncomingStream;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::service::Shared;
use accounts::{AccountsFile, AuditLine};
use i18n::{t, Lang};
use sessions::{Policy, Session, Sessions};

/// The session cookie.
pub const SESSION_COOKIE: &str = "trygg_tech";
/// The login form's own token, as a cookie.
pub const LOGIN_COOKIE: &str = "trygg_login";
/// The language cookie.
pub const LANG_COOKIE: &str = "trygg_lang";
/// The largest request body read, in bytes.
pub const MAX_BODY: usize = 16 * 1024;
/// Routes of the loopback API that the network API does not serve.
const LOOPBACK_ONLY: &[&str] = &["/api/v1/decommission"];
/// Logins hashing at once (argon2id takes 19 MiB and tens of ms each: a
/// flood of logins must not starve the Pi).
const LOGINS_AT_ONCE: usize = 2;

/// What every handler can reach.
#[derive(Clone)]
pub(crate) struct WebState {
    pub shared: Arc<Shared>,
    pub data_dir: PathBuf,
    pub accounts: AccountsFile,
    pub sessions: Arc<Mutex<Sessions>>,
    pub policy: Policy,
    pub logins: Arc<tokio::sync::Semaphore>,
}

impl WebState {
    pub fn new(shared: Arc<Shared>, data_dir: PathBuf, policy: Policy) -> WebState {
        WebState {
            shared,
            accounts: AccountsFile::in_dir(&data_dir),
            data_dir,
            sessions: Arc::new(Mutex::new(Sessions::new(policy))),
            policy,
            logins: Arc::new(tokio::sync::Semaphore::new(LOGINS_AT_ONCE)),
        }
    }

    /// Logs, counts and appends to the audit log.
    pub fn audit(&self, who: &str, action: &str, target: &str, outcome: &str, remote: &str) {
        tracing::info!(technician = %who, %action, %target, %outcome, %remote, "technician {action}");
        accounts::audit(
            &self.data_dir,
            &AuditLine {
                at_ms: crate::service::now_ms(),
                who: who.into(),
                action: action.into(),
                target: target.into(),
                outcome: outcome.into(),
                remote: remote.into(),
            },
        );
    }

    pub fn refused(&self, reason: &'static str, path: &str, remote: &str) {
        tracing::warn!(%reason, %path, %remote, "technician page request refused");
        self.shared.metrics.inc(
            "technician_refused_total",
            match reason {
                "csrf" => "reason=\"csrf\"",
                "login_form" => "reason=\"login_form\"",
                "invalid" => "reason=\"invalid\"",
                "loopback_only" => "reason=\"loopback_only\"",
                _ => "reason=\"no_session\"",
            },
        );
    }
}

/// Serves the page until `cancel`.
pub(crate) async fn serve(listener: tls::TlsListener, state: WebState, cancel: CancellationToken) {
    let app = router(state);
    let _ = axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await;
}

pub(crate) fn router(state: WebState) -> Router {
    let api = crate::local_api::router(state.shared.clone()).layer(
        axum::middleware::from_fn_with_state(state.clone(), api_guard),
    );
    pages::routes()
        .with_state(state)
        .merge(api)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response(security_headers))
}

/// No caching, no framing, no sniffing, no scripts, no referrer leaving.
async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    for (name, value) in [
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"),
    ] {
        h.entry(name).or_insert(HeaderValue::from_static(value));
    }
    resp
}

/// The value of cookie `name`.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` value: HttpOnly, Secure (the page is HTTPS only),
/// SameSite=Strict.
pub fn set_cookie(name: &str, value: &str, path: &str, max_age_s: u64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={max_age_s}; HttpOnly; Secure; SameSite=Strict"
    ))
    .expect("cookie values are hex or fixed words")
}

/// The language: the cookie, else Accept-Language, else bokmål.
pub fn lang_of(headers: &HeaderMap) -> Lang {
    if let Some(l) = cookie(headers, LANG_COOKIE).and_then(|c| Lang::parse(&c)) {
        return l;
    }
    headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .map(|p| p.split(';').next().unwrap_or("").trim())
                .find_map(|tag| Lang::parse(tag.split('-').next().unwrap_or("")))
        })
        .unwrap_or_default()
}

/// The client's address, as the TLS listener saw it.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

impl Connected<IncomingStream<'_, tls::TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, tls::TlsListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

pub fn remote_of(parts: &Parts) -> String {
    parts
        .extensions
        .get::<ConnectInfo<Peer>>()
        .map(|c| c.0 .0.ip().to_string())
        .unwrap_or_default()
}

/// A technician with a live session.
#[derive(Clone, Debug)]
pub(crate) struct Tech {
    pub session: Session,
    pub token: String,
    pub remote: String,
    pub lang: Lang,
}

impl Tech {
    pub fn csrf_ok(&self, given: Option<&str>) -> bool {
        given.is_some_and(|g| sessions::same_secret(&self.session.csrf, g))
    }
}

/// Why there is no technician.
pub(crate) enum NoTech {
    Missing,
    Accounts(String),
}

async fn tech_of(parts: &Parts, state: &WebState) -> Result<Tech, NoTech> {
    let token = cookie(&parts.headers, SESSION_COOKIE).ok_or(NoTech::Missing)?;
    let now = crate::service::now_ms();
    let session = state
        .sessions
        .lock()
        .map_err(|_| NoTech::Missing)?
        .get(&token, now)
        .ok_or(NoTech::Missing)?;
    // The account must still exist, with the password it logged in with.
    let accounts = state
        .accounts
        .load()
        .map_err(|e| NoTech::Accounts(e.to_string()))?;
    let current = accounts
        .get(&session.username)
        .is_some_and(|t| t.password_hash == session.credential);
    if !current {
        if let Ok(mut s) = state.sessions.lock() {
            s.close_all_of(&session.username);
        }
        tracing::info!(technician = %session.username, "technician session ended: the account was removed or its password changed");
        return Err(NoTech::Missing);
    }
    Ok(Tech {
        session,
        token,
        remote: remote_of(parts),
        lang: lang_of(&parts.headers),
    })
}

/// A technician for a page: without one, 303 to `/login`.
pub(crate) struct PageTech(pub Tech);

impl FromRequestParts<WebState> for PageTech {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, Response> {
        match tech_of(parts, state).await {
            Ok(t) => Ok(PageTech(t)),
            Err(NoTech::Missing) => {
                state.refused("no_session", parts.uri.path(), &remote_of(parts));
                Err(Redirect::to("/login").into_response())
            }
            Err(NoTech::Accounts(e)) => {
                tracing::error!(error = %e, "technician accounts cannot be read");
                let lang = lang_of(&parts.headers);
                Err(pages::message(
                    StatusCode::SERVICE_UNAVAILABLE,
                    lang,
                    None,
                    t(lang, "error_title"),
                    t(lang, "error_accounts"),
                ))
            }
        }
    }
}

fn json_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// The API behind a session, and a CSRF header on anything but GET/HEAD.
async fn api_guard(State(state): State<WebState>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    // Ending the gateway's service wipes it: only from the gateway itself.
    if LOOPBACK_ONLY.contains(&parts.uri.path()) {
        state.refused("loopback_only", parts.uri.path(), &remote_of(&parts));
        return json_error(
            StatusCode::FORBIDDEN,
            "not over the network: run `trygg-gateway decommission` on the gateway itself",
        );
    }
    let tech = match tech_of(&parts, &state).await {
        Ok(t) => t,
        Err(NoTech::Missing) => {
            state.refused("no_session", parts.uri.path(), &remote_of(&parts));
            return json_error(
                StatusCode::UNAUTHORIZED,
                "not logged in, or the session has ended: log in at /login",
            );
        }
        Err(NoTech::Accounts(e)) => {
            tracing::error!(error = %e, "technician accounts cannot be read");
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the technician accounts on the gateway cannot be read; see the gateway's log",
            );
        }
    };
    if parts.method != Method::GET && parts.method != Method::HEAD {
        let given = parts
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok());
        if !tech.csrf_ok(given) {
            state.refused("csrf", parts.uri.path(), &tech.remote);
            return json_error(
                StatusCode::FORBIDDEN,
                "missing or wrong X-CSRF-Token header: send the session's CSRF token (shown on the page as the form field csrf)",
            );
        }
        let action = format!("api {} {}", parts.method, parts.uri.path());
        let resp = {
            parts.extensions.insert(tech.clone());
            next.run(Request::from_parts(parts, body)).await
        };
        state
            .shared
            .metrics
            .inc("technician_actions_total", "action=\"api\"");
        state.audit(
            &tech.session.username,
            "api",
            &action,
            resp.status().as_str(),
            &tech.remote,
        );
        return resp;
    }
    next.run(Request::from_parts(parts, body)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_name_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; trygg_tech=abc ; trygg_lang=en"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, LANG_COOKIE).as_deref(), Some("en"));
        assert_eq!(cookie(&h, LOGIN_COOKIE), None);
        assert_eq!(lang_of(&h), Lang::En);
    }

    #[test]
    fn the_session_cookie_is_http_only_secure_and_strict() {
        let c = set_cookie(SESSION_COOKIE, "tok", "/", 60);
        let c = c.to_str().unwrap();
        for part in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
            assert!(c.contains(part), "{c}");
        }
    }

    #[test]
    fn language_follows_accept_language_without_a_cookie() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_LANGUAGE,
            HeaderValue::from_static("en-GB,en;q=0.9"),
        );
        assert_eq!(lang_of(&h), Lang::En);
        h.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_static("nb-NO"));
        assert_eq!(lang_of(&h), Lang::Nb);
        assert_eq!(lang_of(&HeaderMap::new()), Lang::Nb);
    }
}
