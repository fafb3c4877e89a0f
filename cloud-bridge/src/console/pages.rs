//! The console's pages: login, logout, language, the board, one alarm.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use super::html::{esc, layout, message_page, page};
use super::i18n::t;
use super::{
    blocking, csrf_refused, lang_of_request, store_failed, ConsoleState, FormData, PageUser,
    Remote, SESSION_COOKIE,
};
use crate::access::{Lang, LoginError};
use crate::store::now_ms;

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/lang", post(set_lang))
}

pub async fn not_found(headers: HeaderMap) -> Response {
    let lang = lang_of_request(None, &headers);
    message_page(
        StatusCode::NOT_FOUND,
        lang,
        None,
        t(lang, "not_found_title"),
        t(lang, "error_not_found"),
    )
}

/// A form that could not be read: its status and a message.
pub(super) fn form_refused(
    e: super::FormError,
    lang: Lang,
    who: Option<&crate::access::Principal>,
) -> Response {
    message_page(
        e.status(),
        lang,
        who,
        t(lang, "error_title"),
        t(lang, e.message_key()),
    )
}

fn login_page(lang: Lang, status: StatusCode, error: bool, username: &str) -> Response {
    let other = if lang == Lang::Nb { Lang::En } else { Lang::Nb };
    let error_html = if error {
        format!(
            r#"<p id="login-error" class="error" role="alert">{}</p>"#,
            esc(t(lang, "login_error"))
        )
    } else {
        String::new()
    };
    let body = format!(
        r#"<h1>{title}</h1>
<p><a href="/login?lang={other}" lang="{other}" hreflang="{other}">{other_name}</a></p>
{error_html}
<form id="login-form" method="post" action="/login{lang_q}">
<label for="username">{user}</label>
<input type="text" id="username" name="username" autocomplete="username" autocapitalize="none" spellcheck="false" required value="{username}">
<label for="password">{pass}</label>
<input type="password" id="password" name="password" autocomplete="current-password" required>
<p><button type="submit" id="login-button">{button}</button></p>
</form>"#,
        title = esc(t(lang, "login_title")),
        other = other.as_str(),
        other_name = esc(t(lang, "switch_to_other")),
        lang_q = format_args!("?lang={}", lang.as_str()),
        user = esc(t(lang, "username")),
        pass = esc(t(lang, "password")),
        username = esc(username),
        button = esc(t(lang, "login_button")),
    );
    page(
        status,
        layout(lang, None, t(lang, "login_title"), "content", &body, None),
    )
}

async fn login_form(Query(q): Query<HashMap<String, String>>, headers: HeaderMap) -> Response {
    let lang = lang_of_request(q.get("lang").map(String::as_str), &headers);
    login_page(lang, StatusCode::OK, false, "")
}

async fn login(
    State(s): State<ConsoleState>,
    Query(q): Query<HashMap<String, String>>,
    Remote(remote): Remote,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let lang = lang_of_request(q.get("lang").map(String::as_str), &headers);
    let form = match FormData::from_body(body) {
        Ok(f) => f,
        Err(e) => return form_refused(e, lang, None),
    };
    let username = form.get("username").unwrap_or("").trim().to_string();
    let password = form.get("password").unwrap_or("").to_string();
    let u = username.clone();
    let result = blocking(s.store(), move |st| {
        Ok(st.login(&u, &password, &remote, now_ms()))
    })
    .await;
    match result {
        Ok(Ok((token, _who))) => {
            let cookie = format!(
                "{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Secure; Path=/; Max-Age={}",
                s.policy.absolute_ms / 1000
            );
            let mut resp = Redirect::to("/").into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
        Ok(Err(LoginError::Wrong | LoginError::Locked { .. })) => {
            login_page(lang, StatusCode::UNAUTHORIZED, true, &username)
        }
        Ok(Err(LoginError::Store(e))) | Err(e) => store_failed(e, lang, false),
    }
}

fn clear_cookie(resp: &mut Response) {
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "trygg_session=; HttpOnly; SameSite=Strict; Secure; Path=/; Max-Age=0",
        ),
    );
}

async fn logout(
    State(s): State<ConsoleState>,
    who: PageUser,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let form = match FormData::from_body(body) {
        Ok(f) => f,
        Err(e) => return form_refused(e, who.lang(), Some(&who.principal)),
    };
    if !who.csrf_ok(form.get("csrf")) {
        return csrf_refused(&s, &who, &format!("user/{}", who.principal.username), false).await;
    }
    let (token, user, remote) = (
        who.token.clone(),
        who.principal.username.clone(),
        who.remote.clone(),
    );
    if let Err(e) = blocking(s.store(), move |st| {
        st.logout(&token, &user, &remote, now_ms())
    })
    .await
    {
        return store_failed(e, who.lang(), false);
    }
    let mut resp = Redirect::to("/login").into_response();
    clear_cookie(&mut resp);
    resp
}

/// Where "303 back" goes: the Referer's path if it is one of ours.
fn back(headers: &HeaderMap) -> String {
    let path = headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| {
            let host = headers.get(header::HOST)?.to_str().ok()?;
            let rest = r
                .strip_prefix("http://")
                .or_else(|| r.strip_prefix("https://"))?;
            rest.strip_prefix(host).map(str::to_string)
        })
        .filter(|p| p.starts_with('/') && !p.starts_with("//"));
    path.unwrap_or_else(|| "/".to_string())
}

async fn set_lang(
    State(s): State<ConsoleState>,
    who: PageUser,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let form = match FormData::from_body(body) {
        Ok(f) => f,
        Err(e) => return form_refused(e, who.lang(), Some(&who.principal)),
    };
    if !who.csrf_ok(form.get("csrf")) {
        return csrf_refused(&s, &who, &format!("user/{}", who.principal.username), false).await;
    }
    let Some(lang) = form.get("lang").and_then(Lang::parse) else {
        return form_refused(
            super::FormError::Malformed,
            who.lang(),
            Some(&who.principal),
        );
    };
    let user = who.principal.username.clone();
    if let Err(e) = blocking(s.store(), move |st| st.set_lang(&user, lang)).await {
        return store_failed(e, who.lang(), false);
    }
    Redirect::to(&back(&headers)).into_response()
}
