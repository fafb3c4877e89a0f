//! The technician's pages: server-rendered HTML that works without
//! JavaScript, laid out for a phone (one column, touch targets of at least
//! 48 px, text that reflows), in bokmål and English. Every value put into
//! HTML goes through [`esc`]. Residents appear only as their pseudonymous
//! ids: the gateway has nothing else.
//!
//! | page | what |
//! |---|---|
//! | `GET /login`, `POST /login`, `POST /logout` | login, logout |
//! | `GET /lang/{nb,en}` | switch language (a cookie), back to `?back=` |
//! | `GET /` | status, devices asking to join, devices with health, test alarm |
//! | `GET /devices/new`, `POST /devices` | pair a device |
//! | `GET /devices/{id}` | one device: health, test alarm, swap, remove |
//! | `POST /devices/{id}/swap` | swap to `new_id` |
//! | `GET /devices/{id}/remove`, `POST /devices/{id}/remove` | remove, after a confirmation page |
//! | `POST /test-alarm` | `device` (or none: the gateway); waits for the backend |
//! | `GET /pending/{id}/accept`, `POST /pending/{id}/accept`, `POST /pending/{id}/reject` | a device asking to join |
//! | `POST /pending/window` | let unknown devices ask to join for 10 minutes |

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;

use super::i18n::{t, tf, Lang};
use super::sessions::{self, Failure};
use crate::local_api::Refusal;

use super::{
    cookie, lang_of, set_cookie, PageTech, Tech, WebState, LANG_COOKIE, LOGIN_COOKIE,
    SESSION_COOKIE,
};
use crate::config::{Device, DeviceType};
use crate::register::Change;

pub(super) fn routes() -> Router<WebState> {
    Router::new()
        .route("/", get(overview))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/lang/{lang}", get(switch_lang))
        .route("/devices/new", get(pair_form))
        .route("/devices", post(pair))
        .route("/devices/{id}", get(device_page))
        .route("/devices/{id}/swap", post(swap))
        .route("/devices/{id}/remove", get(remove_confirm).post(remove))
        .route("/test-alarm", post(test_alarm))
        .route("/pending/{id}/accept", get(accept_form).post(accept))
        .route("/pending/{id}/reject", post(reject))
        .route("/pending/window", post(pairing_window))
        .fallback(not_found)
}

// ---- HTML ---------------------------------------------------------------

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Phone first: one column, 48 px touch targets, colours of at least
/// 4.5:1 contrast (text #1a1a1a on white, links and buttons #0b57d0, red
/// #b00020, header white on #1f2a44), a visible focus ring.
const CSS: &str = r#"
*{box-sizing:border-box}
body{margin:0;font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;font-size:1.1rem;line-height:1.5;color:#1a1a1a;background:#fff}
a{color:#0b57d0}
a:focus-visible,button:focus-visible,input:focus-visible,select:focus-visible{outline:3px solid #1a1a1a;outline-offset:2px;box-shadow:0 0 0 5px #fff}
.skip-link{position:absolute;left:-9999px;top:0;background:#fff;color:#0b57d0;padding:.5rem 1rem;z-index:10}
.skip-link:focus{left:.5rem;top:.5rem}
header.site{background:#1f2a44;color:#fff;padding:.5rem 1rem;display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:center}
header.site a{color:#fff}
header.site .brand{font-weight:700;color:#fff;text-decoration:none;margin-right:auto}
header.site form{display:inline;margin:0}
header.site button,header.site .lang{background:#fff;color:#1f2a44;border:2px solid #fff;border-radius:4px;padding:.4rem .8rem;font:inherit;min-height:48px;display:inline-flex;align-items:center;text-decoration:none}
header.site a:focus-visible,header.site button:focus-visible{outline:3px solid #fff;box-shadow:none}
main{padding:1rem;max-width:40rem;margin:0 auto}
main:focus{outline:none}
h1{font-size:1.5rem;margin:.5rem 0 1rem}
h2{font-size:1.25rem;margin:1.5rem 0 .5rem}
button,.button{display:inline-flex;align-items:center;justify-content:center;background:#0b57d0;color:#fff;border:2px solid #0b57d0;border-radius:6px;padding:.6rem 1rem;font:inherit;font-weight:600;min-height:48px;min-width:48px;text-decoration:none;cursor:pointer}
button.secondary,.button.secondary{background:#fff;color:#0b57d0}
button.danger{background:#b00020;border-color:#b00020}
.wide{width:100%}
label{display:block;font-weight:600;margin:1rem 0 .25rem}
input,select{font:inherit;color:#1a1a1a;background:#fff;border:2px solid #595959;border-radius:6px;padding:.6rem;width:100%;min-height:48px}
.hint{color:#4a4a4a;font-size:.95rem;margin:.25rem 0}
.error{border:2px solid #b00020;background:#fde7e9;color:#7a0012;padding:.75rem;border-radius:6px;margin:.5rem 0 1rem}
.ok{border:2px solid #1b6e3a;background:#e6f4ea;color:#0d3d1f;padding:.75rem;border-radius:6px;margin:.5rem 0 1rem}
ul.cards{list-style:none;padding:0;margin:0;display:grid;gap:.75rem}
.card{border:2px solid #595959;border-radius:8px;padding:.75rem}
.card[data-supervision=silent]{border-color:#b00020;border-left-width:10px}
.card h3{margin:0 0 .25rem;font-size:1.15rem}
dl.facts{display:grid;grid-template-columns:minmax(7rem,45%) 1fr;gap:.1rem .75rem;margin:.5rem 0}
dl.facts dd{overflow-wrap:anywhere}
dl.facts dt{font-weight:600}
dl.facts dd{margin:0}
.actions{display:flex;flex-wrap:wrap;gap:.75rem;margin-top:.75rem}
.actions form{margin:0}
.state-silent{color:#b00020;font-weight:700}
code{font-size:1.2rem;overflow-wrap:anywhere;word-break:break-all}
"#;

/// An HTML answer with `status`.
fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

/// The frame of every page: `<html lang>`, skip link, header (language
/// switch, and the technician with a logout button when logged in),
/// `<main id="content">`.
fn layout(lang: Lang, who: Option<&Tech>, title: &str, back: &str, body: &str) -> String {
    let other = lang.other();
    let mut header = format!(
        r#"<header class="site"><a class="brand" href="/">{app}</a><a class="lang" id="lang-switch" href="/lang/{o}?back={back}" lang="{o}" hreflang="{o}">{switch}</a>"#,
        app = esc(t(lang, "app_name")),
        o = other.as_str(),
        back = esc(&url_encode(back)),
        switch = esc(t(lang, "switch_lang")),
    );
    if let Some(w) = who {
        header.push_str(&format!(
            r#"<span>{signed}: <strong id="technician">{name}</strong></span><form method="post" action="/logout" id="logout-form"><input type="hidden" name="csrf" value="{csrf}"><button type="submit" id="logout-button">{logout}</button></form>"#,
            signed = esc(t(lang, "signed_in_as")),
            name = esc(&w.session.username),
            csrf = esc(&w.session.csrf),
            logout = esc(t(lang, "logout")),
        ));
    }
    header.push_str("</header>");
    format!(
        r##"<!DOCTYPE html>
<html lang="{lang}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} – {app}</title>
<style>{CSS}</style>
</head>
<body>
<a class="skip-link" href="#content">{skip}</a>
{header}
<main id="content" tabindex="-1">
{body}
</main>
</body>
</html>
"##,
        lang = lang.as_str(),
        title = esc(title),
        app = esc(t(lang, "app_name")),
        skip = esc(t(lang, "skip_link")),
    )
}

/// A page with a heading and one message; `ok` styles it as success.
pub(super) fn message(
    status: StatusCode,
    lang: Lang,
    who: Option<&Tech>,
    title: &str,
    text: &str,
) -> Response {
    let class = if status.is_success() { "ok" } else { "error" };
    let role = if status.is_success() {
        "status"
    } else {
        "alert"
    };
    let body = format!(
        r#"<h1>{}</h1><p class="{class}" id="message" role="{role}">{}</p><p><a class="button secondary" href="/" id="back">{}</a></p>"#,
        esc(title),
        esc(text),
        esc(t(lang, "back"))
    );
    html(status, layout(lang, who, title, "/", &body))
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---- forms --------------------------------------------------------------

/// An `application/x-www-form-urlencoded` body.
struct Form(Vec<(String, String)>);

impl Form {
    fn parse(body: &[u8]) -> Option<Form> {
        let mut out = Vec::new();
        for pair in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
            let mut it = pair.splitn(2, |b| *b == b'=');
            let name = decode(it.next().unwrap_or_default())?;
            let value = decode(it.next().unwrap_or_default())?;
            out.push((name, value));
        }
        Some(Form(out))
    }

    /// The first value of `name`, trimmed; `None` if missing or empty.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }
}

fn decode(raw: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(raw.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The form of a POST from a logged-in technician, if its CSRF token is
/// right; otherwise the 403 (or 400) page, logged and counted.
fn checked_form(
    state: &WebState,
    tech: &Tech,
    path: &str,
    body: &[u8],
) -> Result<Form, Box<Response>> {
    let lang = tech.lang;
    let Some(form) = Form::parse(body) else {
        return Err(Box::new(message(
            StatusCode::BAD_REQUEST,
            lang,
            Some(tech),
            t(lang, "error_title"),
            t(lang, "error_malformed"),
        )));
    };
    if !tech.csrf_ok(form.get("csrf")) {
        state.refused("csrf", path, &tech.remote);
        state.audit(
            &tech.session.username,
            "refused",
            path,
            "csrf token missing or wrong",
            &tech.remote,
        );
        return Err(Box::new(message(
            StatusCode::FORBIDDEN,
            lang,
            Some(tech),
            t(lang, "refused_title"),
            t(lang, "error_csrf"),
        )));
    }
    Ok(form)
}

fn csrf_field(tech: &Tech) -> String {
    format!(
        r#"<input type="hidden" name="csrf" value="{}">"#,
        esc(&tech.session.csrf)
    )
}

// ---- login --------------------------------------------------------------

fn login_page(lang: Lang, status: StatusCode, error: Option<&str>, username: &str) -> Response {
    let token = sessions::new_token();
    let error = error
        .map(|e| {
            format!(
                r#"<p id="login-error" class="error" role="alert">{}</p>"#,
                esc(e)
            )
        })
        .unwrap_or_default();
    let body = format!(
        r#"<h1>{title}</h1>{error}
<form id="login-form" method="post" action="/login">
<input type="hidden" name="login_csrf" value="{token}">
<label for="username">{user}</label>
<input id="username" name="username" type="text" autocomplete="username" autocapitalize="none" spellcheck="false" required value="{username}">
<label for="password">{pass}</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<p><button type="submit" id="login-button" class="wide">{button}</button></p>
</form>
<p class="hint">{hint}</p>"#,
        title = esc(t(lang, "login_title")),
        user = esc(t(lang, "username")),
        pass = esc(t(lang, "password")),
        username = esc(username),
        button = esc(t(lang, "login_button")),
        hint = esc(t(lang, "login_hint")),
    );
    let mut resp = html(
        status,
        layout(lang, None, t(lang, "login_title"), "/login", &body),
    );
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, &token, "/login", 3600),
    );
    resp
}

async fn login_form(headers: HeaderMap) -> Response {
    login_page(lang_of(&headers), StatusCode::OK, None, "")
}

async fn login(
    State(state): State<WebState>,
    axum::extract::ConnectInfo(super::Peer(peer)): axum::extract::ConnectInfo<super::Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let lang = lang_of(&headers);
    let remote = peer.ip().to_string();
    let form = Form::parse(&body).unwrap_or(Form(Vec::new()));
    let username = form.get("username").unwrap_or("").to_string();
    let password = form
        .0
        .iter()
        .find(|(k, _)| k == "password")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    // The form must come from our own login page.
    let form_token = form.get("login_csrf").unwrap_or("");
    let cookie_token = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if !sessions::same_secret(&cookie_token, form_token) {
        state.refused("login_form", "/login", &remote);
        return login_page(
            lang,
            StatusCode::FORBIDDEN,
            Some(t(lang, "login_expired")),
            &username,
        );
    }
    let Ok(_permit) = state.logins.acquire().await else {
        return message(
            StatusCode::SERVICE_UNAVAILABLE,
            lang,
            None,
            t(lang, "error_title"),
            "the gateway is stopping",
        );
    };
    let accounts = match state.accounts.load() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "technician accounts cannot be read");
            return message(
                StatusCode::SERVICE_UNAVAILABLE,
                lang,
                None,
                t(lang, "error_title"),
                t(lang, "error_accounts"),
            );
        }
    };
    let now = crate::service::now_ms();
    let account = accounts.get(&username).cloned();
    let locked = account.as_ref().and_then(|_| {
        state
            .sessions
            .lock()
            .ok()
            .and_then(|s| s.locked_until(&username, now))
    });
    // argon2 off the async threads; a wrong or locked name costs the same.
    let hash = match (&account, locked) {
        (Some(a), None) => a.password_hash.clone(),
        _ => super::accounts::decoy_hash().to_string(),
    };
    let pw = password.clone();
    let ok = tokio::task::spawn_blocking(move || super::accounts::verify_password(&hash, &pw))
        .await
        .unwrap_or(false);
    let metric = |outcome: &str| {
        state.shared.metrics.inc(
            "technician_logins_total",
            match outcome {
                "ok" => "outcome=\"ok\"",
                "locked" => "outcome=\"locked\"",
                _ => "outcome=\"wrong\"",
            },
        )
    };
    let refused = || {
        login_page(
            lang,
            StatusCode::UNAUTHORIZED,
            Some(t(lang, "login_error")),
            &username,
        )
    };
    let Some(account) = account else {
        metric("wrong");
        state.audit(
            "anonymous",
            "login_failed",
            &username,
            "no such technician",
            &remote,
        );
        return refused();
    };
    if let Some(until) = locked {
        metric("locked");
        state.audit(
            &username,
            "login_failed",
            &username,
            &format!("locked out for {} more s", until.saturating_sub(now) / 1000),
            &remote,
        );
        return refused();
    }
    if !ok {
        metric("wrong");
        let failure = state
            .sessions
            .lock()
            .map(|mut s| s.failed(&username, now))
            .unwrap_or(Failure::Counted(0));
        let outcome = match failure {
            Failure::Counted(n) => format!("wrong password ({n} in a row)"),
            Failure::LockedNow { .. } => {
                tracing::warn!(technician = %username, %remote, "technician locked out after {} wrong passwords", sessions::MAX_FAILURES);
                format!(
                    "wrong password; locked out for {} min",
                    sessions::LOCKOUT_MS / 60_000
                )
            }
        };
        state.audit(&username, "login_failed", &username, &outcome, &remote);
        return refused();
    }
    let opened = state
        .sessions
        .lock()
        .map(|mut s| s.open(&username, &account.password_hash, now));
    let Ok((token, _)) = opened else {
        return refused();
    };
    metric("ok");
    state.audit(&username, "login", &username, "ok", &remote);
    let mut resp = Redirect::to("/").into_response();
    let h = resp.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, &token, "/", state.policy.absolute_ms / 1000),
    );
    h.append(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, "", "/login", 0),
    );
    resp
}

async fn logout(State(state): State<WebState>, PageTech(tech): PageTech, body: Bytes) -> Response {
    if let Err(r) = checked_form(&state, &tech, "/logout", &body) {
        return *r;
    }
    if let Ok(mut s) = state.sessions.lock() {
        s.close(&tech.token);
    }
    state.audit(
        &tech.session.username,
        "logout",
        &tech.session.username,
        "ok",
        &tech.remote,
    );
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut()
        .append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", "/", 0));
    resp
}

async fn switch_lang(
    Path(lang): Path<String>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let lang = Lang::parse(&lang).unwrap_or_default();
    // Back to a page of ours only.
    let back = q
        .get("back")
        .filter(|b| local_path(b))
        .cloned()
        .unwrap_or_else(|| "/".into());
    let mut resp = Redirect::to(&back).into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(LANG_COOKIE, lang.as_str(), "/", 365 * 86_400),
    );
    resp
}

/// A path on this page (not `//host`, no spaces or control characters,
/// which browsers drop and so turn `/\t/host` into `//host`).
fn local_path(p: &str) -> bool {
    p.starts_with('/')
        && !p.starts_with("//")
        && p.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
}

async fn not_found(headers: HeaderMap) -> Response {
    let lang = lang_of(&headers);
    message(
        StatusCode::NOT_FOUND,
        lang,
        None,
        t(lang, "not_found_title"),
        t(lang, "not_found"),
    )
}

// ---- overview -----------------------------------------------------------

fn ago(lang: Lang, at_ms: Option<u64>) -> String {
    let Some(at) = at_ms else {
        return t(lang, "never").to_string();
    };
    let s = crate::service::now_ms().saturating_sub(at) / 1000;
    let (key, n) = match s {
        0..=119 => ("ago_s", s),
        120..=7199 => ("ago_min", s / 60),
        7200..=172_799 => ("ago_h", s / 3600),
        _ => ("ago_d", s / 86_400),
    };
    tf(lang, key, &[("n", &n.to_string())])
}

fn type_name(lang: Lang, ty: &str) -> String {
    let key = format!("t_{ty}");
    let word = t(lang, &key);
    if word == key {
        ty.to_string()
    } else {
        word.to_string()
    }
}

/// A device's facts: type, room, resident, battery, signal, last message,
/// supervision.
fn device_facts(lang: Lang, d: &Value) -> String {
    let h = &d["health"];
    let battery = h["battery"]
        .as_u64()
        .map(|b| format!("{b} %"))
        .unwrap_or_else(|| t(lang, "unknown").into());
    let signal = h["rssi"]
        .as_i64()
        .map(|r| format!("{r} dBm"))
        .unwrap_or_else(|| t(lang, "unknown").into());
    let supervision = h["supervision"].as_str().unwrap_or("off");
    let sup_text = match supervision {
        "ok" => t(lang, "sup_ok"),
        "silent" => t(lang, "sup_silent"),
        _ => t(lang, "sup_off"),
    };
    let dash = || "–".to_string();
    format!(
        r#"<dl class="facts"><dt>{ty_l}</dt><dd>{ty}</dd><dt>{room_l}</dt><dd class="room">{room}</dd><dt>{res_l}</dt><dd class="resident">{res}</dd><dt>{bat_l}</dt><dd class="battery">{battery}</dd><dt>{sig_l}</dt><dd class="signal">{signal}</dd><dt>{last_l}</dt><dd class="last-message">{last}</dd><dt>{sup_l}</dt><dd class="supervision state-{supervision}">{sup_text}</dd><dt>{key_l}</dt><dd class="has-key">{key}</dd></dl>"#,
        ty_l = esc(t(lang, "type")),
        ty = esc(&type_name(lang, d["type"].as_str().unwrap_or(""))),
        room_l = esc(t(lang, "room")),
        room = esc(&d["room"].as_str().map(str::to_string).unwrap_or_else(dash)),
        res_l = esc(t(lang, "resident_short")),
        res = esc(&d["resident"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(dash)),
        bat_l = esc(t(lang, "battery")),
        sig_l = esc(t(lang, "signal")),
        last_l = esc(t(lang, "last_message")),
        last = esc(&ago(lang, h["last_seen_ms"].as_u64())),
        sup_l = esc(t(lang, "supervision")),
        battery = esc(&battery),
        signal = esc(&signal),
        supervision = esc(supervision),
        sup_text = esc(sup_text),
        key_l = esc(t(lang, "has_key")),
        key = esc(t(
            lang,
            if d["has_key"] == true {
                "key_set"
            } else {
                "key_none"
            }
        )),
    )
}

fn status_section(lang: Lang, s: &Value) -> String {
    let up = s["uplink_connected"] == true;
    let p = &s["journal_pending"];
    let n = |k: &str| p[k].as_u64().unwrap_or(0).to_string();
    let backlog = tf(
        lang,
        "backlog_counts",
        &[
            ("a", &n("alarm")),
            ("c", &n("care")),
            ("t", &n("telemetry")),
        ],
    );
    let disk = if let Some(e) = s["journal_error"].as_str() {
        format!(
            r#"<span class="state-silent">{}: {}</span>"#,
            esc(t(lang, "journal_error")),
            esc(e)
        )
    } else if s["disk_full"] == true {
        format!(
            r#"<span class="state-silent">{}</span>"#,
            esc(t(lang, "disk_full"))
        )
    } else {
        esc(t(lang, "disk_ok"))
    };
    format!(
        r#"<section aria-labelledby="status-h"><h2 id="status-h">{h}</h2><dl class="facts" id="status"><dt>{ul}</dt><dd id="uplink" data-connected="{up}">{uv}</dd><dt>{bl}</dt><dd id="backlog">{backlog}</dd><dt>{dl}</dt><dd id="disk">{disk}</dd></dl></section>"#,
        h = esc(t(lang, "status_heading")),
        ul = esc(t(lang, "uplink")),
        uv = if up {
            esc(t(lang, "uplink_up"))
        } else {
            format!(
                r#"<span class="state-silent">{}</span>"#,
                esc(t(lang, "uplink_down"))
            )
        },
        bl = esc(t(lang, "backlog")),
        backlog = esc(&backlog),
        dl = esc(t(lang, "disk")),
    )
}

fn pending_section(state: &WebState, tech: &Tech) -> String {
    let lang = tech.lang;
    let list = crate::local_api::pending_views(&state.shared);
    let inner = if list.is_empty() {
        format!(
            r#"<p id="pending-none">{}</p>"#,
            esc(t(lang, "pending_none"))
        )
    } else {
        let items: String = list
            .iter()
            .map(|p| {
                let device = p["device"].as_str().unwrap_or("");
                format!(
                    r#"<li class="card pending" data-device="{id}"><p><strong>{ask}</strong></p><h3>{id}</h3><p class="hint">{first_l}: {first} · {att_l}: {attempts}</p><div class="actions"><a class="button" href="/pending/{id_url}/accept">{accept}</a><form method="post" action="/pending/{id_url}/reject">{csrf}<button type="submit" class="secondary">{reject}</button></form></div></li>"#,
                    id = esc(device),
                    id_url = esc(&url_encode(device)),
                    ask = esc(t(lang, "pending_ask")),
                    first_l = esc(t(lang, "pending_first")),
                    first = esc(&ago(lang, p["first_seen_ms"].as_u64())),
                    attempts = p["attempts"].as_u64().unwrap_or(0),
                    att_l = esc(t(lang, "pending_attempts")),
                    accept = esc(t(lang, "accept")),
                    reject = esc(t(lang, "reject")),
                    csrf = csrf_field(tech),
                )
            })
            .collect();
        format!(r#"<ul class="cards" id="pending">{items}</ul>"#)
    };
    let window = if crate::local_api::first_contact_possible(&state.shared) {
        format!(
            r#"<form method="post" action="/pending/window" id="window-form">{csrf}<p><button type="submit" class="secondary wide" id="window-button">{label}</button></p></form>"#,
            csrf = csrf_field(tech),
            label = esc(&tf(
                lang,
                "window_button",
                &[("min", &(WINDOW.as_secs() / 60).to_string())]
            )),
        )
    } else {
        format!(
            r#"<p class="hint" id="no-first-contact">{}</p>"#,
            esc(t(lang, "no_first_contact"))
        )
    };
    format!(
        r#"<section aria-labelledby="pending-h"><h2 id="pending-h">{}</h2>{inner}{window}</section>"#,
        esc(t(lang, "pending_heading"))
    )
}

/// How long the page's pairing window lets unknown devices ask to join.
const WINDOW: Duration = Duration::from_secs(600);

async fn pairing_window(
    State(state): State<WebState>,
    PageTech(tech): PageTech,
    body: Bytes,
) -> Response {
    if let Err(r) = checked_form(&state, &tech, "/pending/window", &body) {
        return *r;
    }
    let lang = tech.lang;
    let result = crate::local_api::open_pairing_window(&state.shared, WINDOW.as_secs());
    let outcome = match &result {
        Ok(_) => "ok".to_string(),
        Err((status, m)) => format!("{status}: {m}"),
    };
    state.audit(
        &tech.session.username,
        "pairing_window",
        &format!("{} s", WINDOW.as_secs()),
        &outcome,
        &tech.remote,
    );
    match result {
        Ok(_) => {
            state
                .shared
                .metrics
                .inc("technician_actions_total", "action=\"pairing_window\"");
            message(
                StatusCode::OK,
                lang,
                Some(&tech),
                t(lang, "done_title"),
                &tf(
                    lang,
                    "window_open",
                    &[("min", &(WINDOW.as_secs() / 60).to_string())],
                ),
            )
        }
        Err((status, m)) => {
            state.refused("invalid", "/pending/window", &tech.remote);
            message(status, lang, Some(&tech), t(lang, "refused_title"), &m)
        }
    }
}

fn test_alarm_form(tech: &Tech, device: Option<&str>) -> String {
    let lang = tech.lang;
    let (field, label) = match device {
        Some(d) => (
            format!(r#"<input type="hidden" name="device" value="{}">"#, esc(d)),
            t(lang, "test_button"),
        ),
        None => (String::new(), t(lang, "test_gateway_button")),
    };
    format!(
        r#"<section aria-labelledby="test-h"><h2 id="test-h">{h}</h2><p class="hint">{hint}</p><form method="post" action="/test-alarm" id="test-alarm-form">{csrf}{field}<button type="submit" class="wide" id="test-alarm-button">{label}</button></form></section>"#,
        h = esc(t(lang, "test_heading")),
        hint = esc(t(lang, "test_hint")),
        csrf = csrf_field(tech),
        label = esc(label),
    )
}

async fn overview(State(state): State<WebState>, PageTech(tech): PageTech) -> Response {
    let lang = tech.lang;
    let status = crate::local_api::status_view(&state.shared);
    let devices = crate::local_api::device_views(&state.shared);
    let list = if devices.is_empty() {
        format!(
            r#"<p id="devices-none">{}</p>"#,
            esc(t(lang, "devices_none"))
        )
    } else {
        let items: String = devices
            .iter()
            .map(|d| {
                let id = d["id"].as_str().unwrap_or("");
                format!(
                    r#"<li class="card device" data-device="{id}" data-supervision="{sup}"><h3><a href="/devices/{id_url}">{id}</a></h3>{facts}</li>"#,
                    id = esc(id),
                    id_url = esc(&url_encode(id)),
                    sup = esc(d["health"]["supervision"].as_str().unwrap_or("off")),
                    facts = device_facts(lang, d),
                )
            })
            .collect();
        format!(r#"<ul class="cards" id="devices">{items}</ul>"#)
    };
    let body = format!(
        r#"<h1>{title}</h1>{status}{pending}<section aria-labelledby="devices-h"><h2 id="devices-h">{dh}</h2><p><a class="button wide" href="/devices/new" id="pair-link">{pair}</a></p>{list}</section>{test}"#,
        title = esc(t(lang, "overview_title")),
        status = status_section(lang, &status),
        pending = pending_section(&state, &tech),
        dh = esc(t(lang, "devices_heading")),
        pair = esc(t(lang, "pair_link")),
        test = test_alarm_form(&tech, None),
    );
    html(
        StatusCode::OK,
        layout(lang, Some(&tech), t(lang, "overview_title"), "/", &body),
    )
}

// ---- pairing ------------------------------------------------------------

const TYPES: &[&str] = &[
    "safety_button",
    "pull_cord",
    "fall_sensor",
    "door_sensor",
    "bed_sensor",
    "motion_sensor",
    "smoke_detector",
    "water_sensor",
    "epilepsy_sensor",
    "medicine_dispenser",
    "thermometer",
];

/// The optional key field (never filled in again: it is a secret).
fn key_field(lang: Lang) -> String {
    format!(
        r#"<label for="key">{l}</label><p class="hint" id="key-hint">{h}</p><input id="key" name="key" type="text" autocomplete="off" autocapitalize="none" spellcheck="false" aria-describedby="key-hint">"#,
        l = esc(t(lang, "key_label")),
        h = esc(t(lang, "key_hint")),
    )
}

/// The fields of a device's place: type, room, resident, supervision;
/// `id_field` first when the id is asked for.
fn place_fields(lang: Lang, form: Option<&Form>, id_field: bool) -> String {
    let v = |name: &str| esc(form.and_then(|f| f.get(name)).unwrap_or(""));
    let chosen = form.and_then(|f| f.get("type")).unwrap_or("safety_button");
    let options: String = TYPES
        .iter()
        .map(|ty| {
            format!(
                r#"<option value="{ty}"{sel}>{name}</option>"#,
                sel = if *ty == chosen { " selected" } else { "" },
                name = esc(&type_name(lang, ty)),
            )
        })
        .collect();
    let id = if id_field {
        format!(
            r#"<label for="id">{l}</label><p class="hint" id="id-hint">{h}</p><input id="id" name="id" type="text" required autocapitalize="none" spellcheck="false" aria-describedby="id-hint" value="{v}">"#,
            l = esc(t(lang, "device_id")),
            h = esc(t(lang, "device_id_hint")),
            v = v("id"),
        ) + &key_field(lang)
    } else {
        String::new()
    };
    format!(
        r#"{id}<label for="type">{type_l}</label><select id="type" name="type">{options}</select>
<label for="room">{room_l}</label><p class="hint" id="room-hint">{room_h}</p><input id="room" name="room" type="text" aria-describedby="room-hint" value="{room}">
<label for="resident">{res_l}</label><p class="hint" id="resident-hint">{res_h}</p><input id="resident" name="resident" type="text" autocapitalize="none" spellcheck="false" aria-describedby="resident-hint" value="{res}">
<label for="supervision_s">{sup_l}</label><p class="hint" id="sup-hint">{sup_h}</p><input id="supervision_s" name="supervision_s" type="number" inputmode="numeric" min="0" aria-describedby="sup-hint" value="{sup}">"#,
        type_l = esc(t(lang, "type")),
        room_l = esc(t(lang, "room")),
        room_h = esc(t(lang, "room_hint")),
        room = v("room"),
        res_l = esc(t(lang, "resident")),
        res_h = esc(t(lang, "resident_hint")),
        res = v("resident"),
        sup_l = esc(t(lang, "supervision_s")),
        sup_h = esc(t(lang, "supervision_hint")),
        sup = v("supervision_s"),
    )
}

fn pair_page(
    tech: &Tech,
    status: StatusCode,
    form: Option<&Form>,
    error: Option<&str>,
) -> Response {
    let lang = tech.lang;
    let error = error
        .map(|e| {
            format!(
                r#"<p class="error" id="form-error" role="alert">{}</p>"#,
                esc(e)
            )
        })
        .unwrap_or_default();
    let body = format!(
        r#"<h1>{title}</h1>{error}<form method="post" action="/devices" id="pair-form">{csrf}{fields}<p><button type="submit" class="wide" id="pair-button">{button}</button></p></form><p><a href="/">{back}</a></p>"#,
        title = esc(t(lang, "pair_title")),
        csrf = csrf_field(tech),
        fields = place_fields(lang, form, true),
        button = esc(t(lang, "pair_button")),
        back = esc(t(lang, "back")),
    );
    html(
        status,
        layout(
            lang,
            Some(tech),
            t(lang, "pair_title"),
            "/devices/new",
            &body,
        ),
    )
}

async fn pair_form(PageTech(tech): PageTech) -> Response {
    pair_page(&tech, StatusCode::OK, None, None)
}

/// The device a form describes, or the message that says what to fix.
fn device_of(lang: Lang, id: &str, form: &Form) -> Result<Device, String> {
    let ty = form.get("type").unwrap_or("");
    let device_type: DeviceType = serde_json::from_value(Value::String(ty.into()))
        .map_err(|_| tf(lang, "error_missing", &[("field", t(lang, "type"))]))?;
    let supervision_s = match form.get("supervision_s") {
        None => None,
        Some(s) => Some(
            s.parse::<u64>()
                .map_err(|_| tf(lang, "error_number", &[("field", t(lang, "supervision_s"))]))?,
        ),
    };
    Ok(Device {
        id: id.to_string(),
        device_type,
        room: form.get("room").map(str::to_string),
        resident: form.get("resident").map(str::to_string),
        supervision_s,
        heartbeat_s: None,
        pre_alarm_s: None,
        key_hash: None,
    })
}

/// What a register change from the page did: audited, logged, counted
/// (a refusal as `technician_refused_total{reason="invalid"}`).
fn record(
    state: &WebState,
    tech: &Tech,
    action: &'static str,
    target: &str,
    result: Result<Value, Refusal>,
) -> Result<Value, Refusal> {
    let outcome = match &result {
        Ok(_) => "ok".to_string(),
        Err((status, m)) => format!("{status}: {m}"),
    };
    match &result {
        Err(_) => state.refused("invalid", target, &tech.remote),
        Ok(_) => state.shared.metrics.inc(
            "technician_actions_total",
            match action {
                "pair" => "action=\"pair\"",
                "swap" => "action=\"swap\"",
                "remove" => "action=\"remove\"",
                _ => "action=\"accept\"",
            },
        ),
    }
    state.audit(
        &tech.session.username,
        action,
        target,
        &outcome,
        &tech.remote,
    );
    result
}

/// After a pairing or swap: the key the gateway made, shown this once, or
/// straight on to the device's page.
fn paired(tech: &Tech, id: &str, done: &str, body: &Value) -> Response {
    let Some(key) = body["key"].as_str() else {
        return Redirect::to(&format!("/devices/{}?done={done}", url_encode(id))).into_response();
    };
    let lang = tech.lang;
    let title = t(lang, "key_title");
    let page = format!(
        r#"<h1>{title_e}</h1><p class="ok" id="message" role="status">{done_text}</p><p>{shown}</p><p class="card"><code id="device-key">{key}</code></p><p><a class="button wide" href="/devices/{id_url}?done={done}" id="continue">{cont}</a></p>"#,
        title_e = esc(title),
        done_text = esc(&match done {
            "swapped" => tf(lang, "swapped", &[("id", id)]),
            _ => format!("{}: {id}", t(lang, "paired")),
        }),
        shown = esc(t(lang, "key_shown")),
        key = esc(key),
        id_url = esc(&url_encode(id)),
        cont = esc(t(lang, "continue")),
    );
    html(StatusCode::OK, layout(lang, Some(tech), title, "/", &page))
}

async fn pair(State(state): State<WebState>, PageTech(tech): PageTech, body: Bytes) -> Response {
    let form = match checked_form(&state, &tech, "/devices", &body) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let lang = tech.lang;
    let Some(id) = form.get("id").map(str::to_string) else {
        state.refused("invalid", "/devices", &tech.remote);
        let e = tf(lang, "error_missing", &[("field", t(lang, "device_id"))]);
        return pair_page(
            &tech,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(&form),
            Some(&e),
        );
    };
    let device = match device_of(lang, &id, &form) {
        Ok(d) => d,
        Err(e) => {
            state.refused("invalid", "/devices", &tech.remote);
            return pair_page(
                &tech,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(&form),
                Some(&e),
            );
        }
    };
    let key = form.get("key").map(str::to_string);
    let result = crate::local_api::pair(&state.shared, device, key).await;
    match record(&state, &tech, "pair", &id, result) {
        Ok(body) => paired(&tech, &id, "paired", &body),
        Err((status, m)) => pair_page(&tech, status, Some(&form), Some(&m)),
    }
}

// ---- one device ---------------------------------------------------------

async fn device_page(
    State(state): State<WebState>,
    PageTech(tech): PageTech,
    Path(id): Path<String>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let lang = tech.lang;
    let Some(d) = crate::local_api::one_device_view(&state.shared, &id) else {
        return message(
            StatusCode::NOT_FOUND,
            lang,
            Some(&tech),
            t(lang, "not_found_title"),
            &tf(lang, "error_not_found", &[("id", &id)]),
        );
    };
    let done = match q.get("done").map(String::as_str) {
        Some("paired") => Some(t(lang, "paired").to_string()),
        Some("swapped") => Some(tf(lang, "swapped", &[("id", &id)])),
        _ => None,
    }
    .map(|m| {
        format!(
            r#"<p class="ok" id="message" role="status">{}</p>"#,
            esc(&m)
        )
    })
    .unwrap_or_default();
    let title = tf(lang, "device_title", &[("id", &id)]);
    let id_url = esc(&url_encode(&id));
    let body = format!(
        r#"<h1>{title_e}</h1>{done}<div class="card device" data-device="{id}">{facts}</div>{test}
<section aria-labelledby="swap-h"><h2 id="swap-h">{swap_h}</h2><p class="hint">{swap_hint}</p><form method="post" action="/devices/{id_url}/swap" id="swap-form">{csrf}<label for="new_id">{new_l}</label><input id="new_id" name="new_id" type="text" required autocapitalize="none" spellcheck="false">{key_field}<p><button type="submit" class="wide" id="swap-button">{swap_b}</button></p></form></section>
<section aria-labelledby="remove-h"><h2 id="remove-h">{rm_h}</h2><p><a class="button secondary wide" href="/devices/{id_url}/remove" id="remove-link">{rm_b}</a></p></section>
<p><a href="/">{back}</a></p>"#,
        title_e = esc(&title),
        id = esc(&id),
        facts = device_facts(lang, &d),
        test = test_alarm_form(&tech, Some(&id)),
        swap_h = esc(t(lang, "swap_heading")),
        swap_hint = esc(t(lang, "swap_hint")),
        csrf = csrf_field(&tech),
        new_l = esc(t(lang, "new_id")),
        key_field = key_field(lang),
        swap_b = esc(t(lang, "swap_button")),
        rm_h = esc(t(lang, "remove_heading")),
        rm_b = esc(t(lang, "remove_button")),
        back = esc(t(lang, "back")),
    );
    html(
        StatusCode::OK,
        layout(
            lang,
            Some(&tech),
            &title,
            &format!("/devices/{}", url_encode(&id)),
            &body,
        ),
    )
}

async fn swap(
    State(state): State<WebState>,
    PageTech(tech): PageTech,
    Path(old): Path<String>,
    body: Bytes,
) -> Response {
    let path = format!("/devices/{old}/swap");
    let form = match checked_form(&state, &tech, &path, &body) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let lang = tech.lang;
    let Some(new_id) = form.get("new_id").map(str::to_string) else {
        return message(
            StatusCode::UNPROCESSABLE_ENTITY,
            lang,
            Some(&tech),
            t(lang, "refused_title"),
            &tf(lang, "error_missing", &[("field", t(lang, "new_id"))]),
        );
    };
    let target = format!("{old} -> {new_id}");
    let key = form.get("key").map(str::to_string);
    let result = crate::local_api::swap(&state.shared, old, new_id.clone(), key).await;
    match record(&state, &tech, "swap", &target, result) {
        Ok(body) => paired(&tech, &new_id, "swapped", &body),
        Err((status, m)) => message(status, lang, Some(&tech), t(lang, "refused_title"), &m),
    }
}

async fn remove_confirm(
    State(state): State<WebState>,
    PageTech(tech): PageTech,
    Path(id): Path<String>,
) -> Response {
    let lang = tech.lang;
    if crate::local_api::one_device_view(&state.shared, &id).is_none() {
        return message(
            StatusCode::NOT_FOUND,
            lang,
            Some(&tech),
            t(lang, "not_found_title"),
            &tf(lang, "error_not_found", &[("id", &id)]),
        );
    }
    let title = tf(lang, "remove_title", &[("id", &id)]);
    let id_url = esc(&url_encode(&id));
    let body = format!(
        r#"<h1>{title_e}</h1><p>{text}</p><form method="post" action="/devices/{id_url}/remove" id="remove-form">{csrf}<input type="hidden" name="confirm" value="yes"><div class="actions"><button type="submit" class="danger" id="remove-confirm">{yes}</button><a class="button secondary" href="/devices/{id_url}">{cancel}</a></div></form>"#,
        title_e = esc(&title),
        text = esc(&tf(lang, "remove_confirm_text", &[("id", &id)])),
        csrf = csrf_field(&tech),
        yes = esc(&tf(lang, "remove_confirm_button", &[("id", &id)])),
        cancel = esc(t(lang, "cancel")),
    );
    html(
        StatusCode::OK,
        layout(
            lang,
            Some(&tech),
            &title,
            &format!("/devices/{}/remove", url_encode(&id)),
            &body,
        ),
    )
}

async fn remove(
    State(state): State<WebState>,
    PageTech(tech): PageTech,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let path = format!("/devices/{id}/remove");
    let form = match checked_form(&state, &tech, &path, &body) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let lang = tech.lang;
    if form.get("confirm") != Some("yes") {
        // Only the confirmation page's form removes.
        return Redirect::to(&path).into_response();
    }
    let result =
        crate::local_api::apply_change(&state.shared, Change::Remove(id.clone()), &id, None).await;
    match record(&state, &tech, "remove", &id, result) {
        Ok(_) => message(
            StatusCode::OK,
            lang,
            Some(&tech),
            t(lang, "done_title"),
            &tf(lang, "removed", &[("id", &id)]),
        ),
        Err((status, m)) => message(status, lang, Some(&tech), t(lang, "refused_title"), &m),
    }
}

// ---- test alarm ---------------------------------------------------------

/// How long the page waits for the backend's confirmation.
const TEST_WAIT: Duration = Duration::from_secs(30);

async fn test_alarm(
    State(state): State<WebState>,
    PageTech(tech): PageTech,
    body: Bytes,
) -> Response {
    let form = match checked_form(&state, &tech, "/test-alarm", &body) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let lang = tech.lang;
    let device = form.get("device").map(str::to_string);
    let result = crate::local_api::run_test_alarm(&state.shared, device.clone(), TEST_WAIT).await;
    let about = device
        .clone()
        .unwrap_or_else(|| t(lang, "the_gateway").to_string());
    state
        .shared
        .metrics
        .inc("technician_actions_total", "action=\"test_alarm\"");
    let body = match result {
        Err((status, m)) => {
            state.audit(
                &tech.session.username,
                "test_alarm",
                &about,
                &format!("{status}: {m}"),
                &tech.remote,
            );
            return message(status, lang, Some(&tech), t(lang, "refused_title"), &m);
        }
        Ok(b) => b,
    };
    let confirmed = body["confirmed"] == true;
    let (status, class, text) = if confirmed {
        let ms = body["confirmed_after_ms"].as_u64().unwrap_or(0);
        (
            StatusCode::OK,
            "ok",
            tf(lang, "test_confirmed", &[("t", &duration(lang, ms))]),
        )
    } else {
        (
            StatusCode::GATEWAY_TIMEOUT,
            "error",
            tf(
                lang,
                "test_not_confirmed",
                &[("s", &TEST_WAIT.as_secs().to_string())],
            ),
        )
    };
    state.audit(
        &tech.session.username,
        "test_alarm",
        &about,
        if confirmed {
            "confirmed"
        } else {
            "not confirmed"
        },
        &tech.remote,
    );
    let back = device
        .as_ref()
        .map(|d| format!("/devices/{}", url_encode(d)))
        .unwrap_or_else(|| "/".into());
    let page = format!(
        r#"<h1>{title}</h1><p class="{class}" id="test-result" data-confirmed="{confirmed}" data-ms="{ms}" role="status">{text}</p><dl class="facts"><dt>{about_l}</dt><dd>{about}</dd></dl><p><a class="button secondary" href="{back}">{back_l}</a></p>"#,
        title = esc(t(lang, "test_title")),
        ms = body["confirmed_after_ms"]
            .as_u64()
            .map(|m| m.to_string())
            .unwrap_or_default(),
        text = esc(&text),
        about_l = esc(t(lang, "test_about")),
        about = esc(&about),
        back = esc(&back),
        back_l = esc(t(lang, "back")),
    );
    html(
        status,
        layout(lang, Some(&tech), t(lang, "test_title"), &back, &page),
    )
}

/// `53 ms`, or `1.2 s` (`1,2 s` in bokmål).
fn duration(lang: Lang, ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms} ms");
    }
    let s = format!("{:.1} s", ms as f64 / 1000.0);
    match lang {
        Lang::Nb => s.replace('.', ","),
        Lang::En => s,
    }
}

// ---- devices asking to join ----------------------------------------------

/// Whether `id` is asking to join now.
fn is_pending(state: &WebState, id: &str) -> bool {
    crate::local_api::pending_views(&state.shared)
        .iter()
        .any(|p| p["device"] == id)
}

fn not_pending(tech: &Tech, id: &str) -> Response {
    let lang = tech.lang;
    message(
        StatusCode::NOT_FOUND,
        lang,
        Some(tech),
        t(lang, "not_found_title"),
        &tf(lang, "error_not_pending", &[("id", id)]),
    )
}

fn accept_page(
    tech: &Tech,
    id: &str,
    status: StatusCode,
    form: Option<&Form>,
    error: Option<&str>,
) -> Response {
    let lang = tech.lang;
    let error = error
        .map(|e| {
            format!(
                r#"<p class="error" id="form-error" role="alert">{}</p>"#,
                esc(e)
            )
        })
        .unwrap_or_default();
    let title = t(lang, "accept_title");
    let body = format!(
        r#"<h1>{title_e}</h1><p><strong id="pending-device">{id}</strong></p>{error}<form method="post" action="/pending/{id_url}/accept" id="accept-form">{csrf}{fields}<p><button type="submit" class="wide" id="accept-button">{button}</button></p></form><p><a href="/">{back}</a></p>"#,
        title_e = esc(title),
        id = esc(id),
        id_url = esc(&url_encode(id)),
        csrf = csrf_field(tech),
        fields = place_fields(lang, form, false),
        button = esc(t(lang, "accept_button")),
        back = esc(t(lang, "back")),
    );
    html(status, layout(lang, Some(tech), title, "/", &body))
}

async fn accept_form(
    State(state): State<WebState>,
    PageTech(tech): PageTech,
    Path(id): Path<String>,
) -> Response {
    if !is_pending(&state, &id) {
        return not_pending(&tech, &id);
    }
    accept_page(&tech, &id, StatusCode::OK, None, None)
}

async fn accept(
    State(state): State<WebState>,
    PageTech(tech): PageTech,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let path = format!("/pending/{id}/accept");
    let form = match checked_form(&state, &tech, &path, &body) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let lang = tech.lang;
    let device = match device_of(lang, &id, &form) {
        Ok(d) => d,
        Err(e) => {
            state.refused("invalid", &path, &tech.remote);
            return accept_page(
                &tech,
                &id,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(&form),
                Some(&e),
            );
        }
    };
    let result = crate::local_api::accept(&state.shared, device).await;
    match record(&state, &tech, "accept", &id, result) {
        Ok(_) => Redirect::to(&format!("/devices/{}?done=paired", url_encode(&id))).into_response(),
        Err((status, m)) => accept_page(&tech, &id, status, Some(&form), Some(&m)),
    }
}

async fn reject(
    State(state): State<WebState>,
    PageTech(tech): PageTech,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let path = format!("/pending/{id}/reject");
    if let Err(r) = checked_form(&state, &tech, &path, &body) {
        return *r;
    }
    let lang = tech.lang;
    let result = crate::local_api::reject(&state.shared, id.clone()).await;
    let outcome = match &result {
        Ok(_) => "ok".to_string(),
        Err((status, m)) => format!("{status}: {m}"),
    };
    state.audit(
        &tech.session.username,
        "reject",
        &id,
        &outcome,
        &tech.remote,
    );
    match result {
        Ok(()) => {
            state
                .shared
                .metrics
                .inc("technician_actions_total", "action=\"reject\"");
            message(
                StatusCode::OK,
                lang,
                Some(&tech),
                t(lang, "done_title"),
                &tf(lang, "rejected_text", &[("id", &id)]),
            )
        }
        Err((status, m)) => {
            state.refused("invalid", &path, &tech.remote);
            message(status, lang, Some(&tech), t(lang, "refused_title"), &m)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_values_comes_out_as_text() {
        assert_eq!(esc(r#"<b a="x">&'"#), "&lt;b a=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn forms_decode_plus_and_percent_and_refuse_bad_escapes() {
        let f = Form::parse(b"room=living+room&resident=r-7f3a&x=%C3%A6&empty=").unwrap();
        assert_eq!(f.get("room"), Some("living room"));
        assert_eq!(f.get("x"), Some("æ"));
        assert_eq!(f.get("empty"), None);
        assert!(Form::parse(b"a=%zz").is_none());
        assert!(Form::parse(b"a=%C3").is_none());
    }

    #[test]
    fn a_form_becomes_a_device_or_says_what_to_fix() {
        let f =
            Form::parse(b"type=fall_sensor&room=bathroom&resident=r-1&supervision_s=600").unwrap();
        let d = device_of(Lang::En, "fall-9", &f).unwrap();
        assert_eq!(d.device_type, DeviceType::FallSensor);
        assert_eq!(d.supervision_s, Some(600));
        let f = Form::parse(b"type=toaster").unwrap();
        assert!(device_of(Lang::En, "x", &f).unwrap_err().contains("Type"));
        let f = Form::parse(b"type=fall_sensor&supervision_s=ten").unwrap();
        assert!(device_of(Lang::En, "x", &f)
            .unwrap_err()
            .contains("whole number"));
    }

    #[test]
    fn the_language_switch_goes_back_only_to_a_page_of_ours() {
        assert!(local_path("/devices/button-1?done=paired"));
        assert!(local_path("/"));
        for bad in [
            "//evil.example",
            "/\t/evil.example",
            "/\\evil.example",
            "https://evil.example",
            "",
            "/a b",
        ] {
            assert!(!local_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(duration(Lang::En, 53), "53 ms");
        assert_eq!(duration(Lang::En, 1_250), "1.2 s");
        assert_eq!(duration(Lang::Nb, 1_250), "1,2 s");
    }

    #[test]
    fn every_device_type_has_a_name_in_both_languages() {
        for ty in TYPES {
            let _: DeviceType = serde_json::from_value(Value::String((*ty).into())).unwrap();
            assert_ne!(type_name(Lang::Nb, ty), *ty);
            assert_ne!(type_name(Lang::En, ty), *ty);
        }
    }
}
