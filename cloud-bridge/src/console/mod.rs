//! The staff console: server-rendered pages with login, the live alarm
//! board, alarm pages with acknowledge and close, and a JSON API for the
//! same, on their own listener (`[console] listen`). The contract (URLs,
//! fields, ids, classes) is `docs/console.md`; change both together.
//!
//! How a request is checked, in order:
//! - the body is at most [`MAX_FORM_BYTES`] (413 with a message otherwise);
//! - the cookie `trygg_session` must name a live session
//!   ([`crate::store::Store::session`]): without one, pages answer 303 to
//!   `/login` ([`PageUser`]) and `/console/api` and `/stream` answer 401
//!   ([`ApiUser`]);
//! - a state-changing request must carry the session's CSRF token (form
//!   field `csrf`, header `X-CSRF-Token`): otherwise 403 and an audit entry
//!   `denied` ([`csrf_refused`]), and nothing changes;
//! - each alarm is shown or acted on only if [`Store::may_see`] allows it:
//!   otherwise 403 and an audit entry `denied` ([`denied`]).
//!
//! Alarm actions go through the store writer as `Op::Audited`, so the
//! action and its audit entry are one transaction. Every value interpolated
//! into HTML goes through [`esc`].

pub mod admin;
pub mod benefits_page;
mod board;
pub mod devices;
pub mod enrollment;
pub mod form;
pub mod gateways;
pub mod html;
pub mod i18n;
mod json;
mod pages;
pub mod stream;
pub mod tls;

use std::net::SocketAddr;

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::serve::IncomingStream;
use axum::{Json, Router};
use serde_json::json;

use crate::access::{AuditEntry, Lang, Principal, SessionPolicy};
use crate::api::AppState;
use crate::store::{now_ms, Store, StoreError};

pub use form::{FormData, FormError};
pub use html::{esc, layout, page};
pub use i18n::t;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "trygg_session";
/// The largest request body the console reads, in bytes.
pub const MAX_FORM_BYTES: usize = 16 * 1024;

/// What every console handler can reach.
#[derive(Clone)]
pub struct ConsoleState {
    /// The store, the writer, the change broadcast (shared with the API).
    pub app: AppState,
    pub policy: SessionPolicy,
}

impl ConsoleState {
    pub fn store(&self) -> &Store {
        &self.app.store
    }
}

/// The console's whole router.
pub fn router(state: ConsoleState) -> Router {
    Router::new()
        .merge(pages::routes())
        .merge(json::routes())
        .merge(stream::routes())
        // ---- merge point: administration (console/admin.rs, another
        // engineer's): /admin/users, /admin/residents, /admin/audit and
        // /console/api/audit.
        .merge(admin::routes())
        // Benefits (/benefits, /console/api/benefits).
        .merge(benefits_page::routes())
        // Devices (/devices, /console/api/devices).
        .merge(devices::routes())
        // Gateway settings (/gateways, /console/api/gateways).
        .merge(gateways::routes())
        // Gateway enrollment: certificates, codes, revocation
        // (/admin/enrollment).
        .merge(enrollment::routes())
        .fallback(pages::not_found)
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// Headers on every answer: no caching of people's data, no framing, no
/// MIME sniffing, no referrer leaving the console.
async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    for (name, value) in [
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (
            header::CONTENT_SECURITY_POLICY,
            "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    ] {
        h.entry(name).or_insert(HeaderValue::from_static(value));
    }
    resp
}

/// A checked session: who, from where, with which token.
#[derive(Clone, Debug)]
pub struct Who {
    pub principal: Principal,
    /// The session token (from the cookie), for logout.
    pub token: String,
    /// The client's address, for the audit log.
    pub remote: String,
}

impl Who {
    pub fn lang(&self) -> Lang {
        self.principal.lang
    }

    /// Whether `given` is this session's CSRF token (compared in constant
    /// time).
    pub fn csrf_ok(&self, given: Option<&str>) -> bool {
        let Some(given) = given else { return false };
        let want = self.principal.csrf.as_bytes();
        let given = given.as_bytes();
        want.len() == given.len()
            && !want.is_empty()
            && want
                .iter()
                .zip(given)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// A session for a page: without one, 303 to `/login`.
pub struct PageUser(pub Who);

/// A session for `/console/api` and `/stream`: without one, 401 JSON.
pub struct ApiUser(pub Who);

impl std::ops::Deref for PageUser {
    type Target = Who;
    fn deref(&self) -> &Who {
        &self.0
    }
}

impl std::ops::Deref for ApiUser {
    type Target = Who;
    fn deref(&self) -> &Who {
        &self.0
    }
}

/// The client's address, as the listener saw it (plain TCP or TLS).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

impl Connected<IncomingStream<'_, tokio::net::TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, tokio::net::TcpListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, tls::TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, tls::TlsListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

/// The client's address, where the listener told it.
pub fn remote_of(parts: &Parts) -> String {
    parts
        .extensions
        .get::<ConnectInfo<Peer>>()
        .map(|c| c.0 .0.ip().to_string())
        .unwrap_or_default()
}

/// The client's address as an extractor (empty when unknown).
pub struct Remote(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Remote {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Remote(remote_of(parts)))
    }
}

/// The session token from the `Cookie` header.
pub fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Why there is no usable session.
pub enum NoSession {
    Missing,
    Store(StoreError),
}

async fn who(parts: &Parts, state: &ConsoleState) -> Result<Who, NoSession> {
    let token = session_token(&parts.headers).ok_or(NoSession::Missing)?;
    let remote = remote_of(parts);
    let store = state.store().clone();
    let policy = state.policy;
    let t = token.clone();
    let principal = tokio::task::spawn_blocking(move || store.session(&t, policy, now_ms()))
        .await
        .map_err(|e| NoSession::Store(StoreError::Corrupt(e.to_string())))?
        .map_err(NoSession::Store)?
        .ok_or(NoSession::Missing)?;
    Ok(Who {
        principal,
        token,
        remote,
    })
}

impl FromRequestParts<ConsoleState> for PageUser {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ConsoleState,
    ) -> Result<Self, Self::Rejection> {
        match who(parts, state).await {
            Ok(w) => Ok(PageUser(w)),
            Err(NoSession::Missing) => Err(Redirect::to("/login").into_response()),
            Err(NoSession::Store(e)) => Err(store_failed(e, Lang::default(), false)),
        }
    }
}

impl FromRequestParts<ConsoleState> for ApiUser {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ConsoleState,
    ) -> Result<Self, Self::Rejection> {
        match who(parts, state).await {
            Ok(w) => Ok(ApiUser(w)),
            Err(NoSession::Missing) => Err({
                // Logged, not audited: an audit entry costs an fsync, and
                // anyone can send requests without a session.
                tracing::info!(
                    path = %parts.uri.path(),
                    cookie = parts.headers.contains_key(axum::http::header::COOKIE),
                    "console API request without a valid session: 401"
                );
                json_error(
                    StatusCode::UNAUTHORIZED,
                    "not logged in, or the session has ended: log in at /login",
                )
            }),
            Err(NoSession::Store(e)) => Err(store_failed(e, Lang::En, true)),
        }
    }
}

/// `{"error": message}` with `status`.
pub fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// A store failure: 503 while stopping, else 500; logged, never detailed
/// to the person beyond a plain message.
pub fn store_failed(e: StoreError, lang: Lang, as_json: bool) -> Response {
    tracing::error!(error = %e, "console store error");
    let status = match e {
        StoreError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if as_json {
        json_error(status, t(lang, "error_store"))
    } else {
        html::message_page(
            status,
            lang,
            None,
            t(lang, "error_title"),
            t(lang, "error_store"),
        )
    }
}

/// Runs a store read (or a small write) on the blocking pool.
pub async fn blocking<T: Send + 'static>(
    store: &Store,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| StoreError::Corrupt(format!("store task failed: {e}")))?
}

/// Writes an audit entry `denied` for `target`, with `why`.
pub async fn audit_denied(state: &ConsoleState, who: &Who, target: &str, why: &str) {
    let entry = AuditEntry::new(
        &who.principal.username,
        "denied",
        target,
        why,
        &who.remote,
        now_ms(),
    );
    if let Err(e) = blocking(state.store(), move |s| s.audit_now(entry)).await {
        tracing::error!(error = %e, "cannot write the audit entry for a refusal");
    }
}

/// A request without this session's CSRF token: audited, 403, nothing done.
pub async fn csrf_refused(
    state: &ConsoleState,
    who: &Who,
    target: &str,
    as_json: bool,
) -> Response {
    audit_denied(state, who, target, "refused: csrf token missing or wrong").await;
    let lang = who.lang();
    if as_json {
        json_error(StatusCode::FORBIDDEN, t(lang, "error_csrf"))
    } else {
        html::message_page(
            StatusCode::FORBIDDEN,
            lang,
            Some(&who.principal),
            t(lang, "forbidden_title"),
            t(lang, "error_csrf"),
        )
    }
}

/// Something this session may not see or do: audited, 403.
pub async fn denied(state: &ConsoleState, who: &Who, target: &str, as_json: bool) -> Response {
    audit_denied(
        state,
        who,
        target,
        "refused: not in the user's units or role",
    )
    .await;
    let lang = who.lang();
    if as_json {
        json_error(StatusCode::FORBIDDEN, t(lang, "error_forbidden"))
    } else {
        html::message_page(
            StatusCode::FORBIDDEN,
            lang,
            Some(&who.principal),
            t(lang, "forbidden_title"),
            t(lang, "error_forbidden"),
        )
    }
}

/// The language for someone not logged in: `?lang=`, else the first
/// language in Accept-Language we have, else bokmål.
pub fn lang_of_request(query_lang: Option<&str>, headers: &HeaderMap) -> Lang {
    if let Some(l) = query_lang.and_then(Lang::parse) {
        return l;
    }
    headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .map(|p| p.split(';').next().unwrap_or("").trim())
                .find_map(|tag| {
                    let primary = tag.split('-').next().unwrap_or("");
                    match primary {
                        "nb" | "no" | "nn" => Some(Lang::Nb),
                        "en" => Some(Lang::En),
                        _ => None,
                    }
                })
        })
        .unwrap_or_default()
}
