//! The console's pages: login, logout, language, the board, one alarm.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use super::board::{act, close_fields, load_for, view, visible, Acted, Action, AlarmView};
use super::html::{esc, layout, message_page, page};
use super::i18n::t;
use super::Who;
use super::{
    blocking, csrf_refused, lang_of_request, store_failed, ConsoleState, FormData, PageUser,
    Remote, SESSION_COOKIE,
};
use crate::access::{AuditEntry, Lang, LoginError};
use crate::alarm::{AlarmState, Cause};
use crate::store::now_ms;

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/lang", post(set_lang))
        .route("/", get(board_page))
        .route("/alarms/{id}", get(alarm_page))
        .route("/alarms/{id}/acknowledge", post(acknowledge))
        .route("/alarms/{id}/close", post(close))
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

/// The board's script: live updates over `/stream`, a beep (after the
/// first interaction, as browsers require), a flash and an announcement
/// for each new alarm; `<time>` shown in the viewer's time zone.
const BOARD_JS: &str = r#"(function(){
var words=JSON.parse(document.getElementById('board-words').textContent);
var announcer=document.getElementById('announcer');
var status=document.getElementById('live-status');
function localise(root){root.querySelectorAll('time[datetime]').forEach(function(t){var d=new Date(t.getAttribute('datetime'));if(!isNaN(d)){t.textContent=d.toLocaleTimeString(document.documentElement.lang==='en'?'en-GB':'nb-NO', {hour:'2-digit',minute:'2-digit',hourCycle:'h23',timeZone:'Europe/Oslo'});}});}
localise(document);
var ctx=null;
function arm(){try{ctx=ctx||new (window.AudioContext||window.webkitAudioContext)();if(ctx.state==='suspended'){ctx.resume();}}catch(e){}}
['click','keydown','touchstart'].forEach(function(n){document.addEventListener(n,arm,{passive:true});});
function beep(){if(!ctx||ctx.state!=='running'){return;}try{var o=ctx.createOscillator(),g=ctx.createGain();o.type='square';o.frequency.value=880;g.gain.value=0.15;o.connect(g);g.connect(ctx.destination);o.start();o.stop(ctx.currentTime+0.3);}catch(e){}}
function empties(){document.querySelectorAll('section.alarm-group').forEach(function(s){var none=s.querySelector('.no-alarms');if(none){none.hidden=s.querySelector('article.alarm')!==null;}});}
function apply(d){var old=document.getElementById('alarm-'+d.id);
if(d.state==='closed'){if(old){old.remove();}empties();return;}
var tpl=document.createElement('template');tpl.innerHTML=d.html.trim();var el=tpl.content.firstElementChild;localise(el);
if(old){var had=old.contains(document.activeElement);old.replaceWith(el);if(had){var l=el.querySelector('.alarm-open');if(l){l.focus();}}}
else{var list=document.querySelector('#'+(d.group==='technical'?'technical':'care')+'-alarms .alarms');if(!list){return;}list.insertBefore(el,list.firstChild);el.classList.add('flash');beep();
announcer.textContent='';setTimeout(function(){announcer.textContent=words.new_alarm+': '+d.label+', '+(d.resident_name||d.resident||'')+(d.room?', '+d.room:'');},50);}
empties();}
var es=new EventSource('/stream');
es.addEventListener('open',function(){status.textContent='';});
es.addEventListener('alarm',function(ev){try{apply(JSON.parse(ev.data));}catch(e){}});
es.addEventListener('resync',function(){location.reload();});
es.addEventListener('session_ended',function(){es.close();location.reload();});
es.addEventListener('error',function(){status.textContent=words.live_lost;if(es.readyState===2){setTimeout(function(){location.reload();},3000);}});
})();"#;

fn board_html(
    lang: Lang,
    who: &crate::access::Principal,
    alarms: &[super::board::AlarmView],
    flash: Option<&str>,
) -> String {
    let section = |id: &str, key: &str, group: &str| {
        let items: String = alarms
            .iter()
            .filter(|v| v.group == group && v.alarm.state != AlarmState::Closed)
            .map(|v| super::board::article(v, lang, who))
            .collect();
        let hidden = if items.is_empty() { "" } else { " hidden" };
        format!(
            r#"<section class="alarm-group" id="{id}" aria-labelledby="{id}-h"><h2 id="{id}-h">{title}</h2><p class="no-alarms"{hidden}>{none}</p><div class="alarms">{items}</div></section>"#,
            title = esc(t(lang, key)),
            none = esc(t(lang, "no_alarms")),
        )
    };
    let flash = flash
        .map(|m| {
            format!(
                r#"<p id="flash" class="flash-msg" role="alert">{}</p>"#,
                esc(m)
            )
        })
        .unwrap_or_default();
    let words = serde_json::json!({
        "new_alarm": t(lang, "new_alarm"),
        "live_lost": t(lang, "live_lost"),
    })
    .to_string()
    .replace('<', "\\u003c");
    let body = format!(
        r#"<h1>{title}</h1>{flash}<p class="hint">{hint}</p><p id="live-status" class="hint" role="status"></p><div id="announcer" class="visually-hidden" aria-live="assertive" aria-atomic="true"></div>{care}{technical}<script type="application/json" id="board-words">{words}</script>"#,
        title = esc(t(lang, "board_title")),
        hint = esc(t(lang, "sound_hint")),
        care = section("care-alarms", "care_alarms", "care"),
        technical = section("technical-alarms", "technical_alarms", "technical"),
    );
    layout(
        lang,
        Some(who),
        t(lang, "board_title"),
        "board",
        &body,
        Some(BOARD_JS),
    )
}

async fn board_response(
    s: &ConsoleState,
    who: &Who,
    status: StatusCode,
    flash: Option<&str>,
) -> Response {
    let p = who.principal.clone();
    match blocking(s.store(), move |st| {
        let mut v = visible(st, &p, Some(AlarmState::Open))?;
        v.extend(visible(st, &p, Some(AlarmState::Acknowledged))?);
        v.sort_by(|a, b| {
            b.alarm
                .raised_ms
                .cmp(&a.alarm.raised_ms)
                .then(b.alarm.id.cmp(&a.alarm.id))
        });
        Ok(v)
    })
    .await
    {
        Ok(alarms) => page(
            status,
            board_html(who.lang(), &who.principal, &alarms, flash),
        ),
        Err(e) => store_failed(e, who.lang(), false),
    }
}

async fn board_page(State(s): State<ConsoleState>, who: PageUser) -> Response {
    board_response(&s, &who, StatusCode::OK, None).await
}

fn parse_id(id: &str) -> Option<u64> {
    id.parse().ok()
}

fn not_found_for(who: &Who) -> Response {
    let lang = who.lang();
    message_page(
        StatusCode::NOT_FOUND,
        lang,
        Some(&who.principal),
        t(lang, "not_found_title"),
        t(lang, "error_not_found"),
    )
}

/// Renders a refused action as a page.
async fn acted_page(s: &ConsoleState, who: &Who, acted: Acted) -> Response {
    let lang = who.lang();
    match acted {
        Acted::Done(_) => Redirect::to("/").into_response(),
        Acted::NotFound => not_found_for(who),
        Acted::Forbidden => message_page(
            StatusCode::FORBIDDEN,
            lang,
            Some(&who.principal),
            t(lang, "forbidden_title"),
            t(lang, "error_forbidden"),
        ),
        Acted::Conflict(m) => board_response(s, who, StatusCode::CONFLICT, Some(&m)).await,
        Acted::Invalid(m) => message_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            lang,
            Some(&who.principal),
            t(lang, "error_title"),
            &m,
        ),
        Acted::Store(e) => store_failed(e, lang, false),
    }
}

fn alarm_html(
    lang: Lang,
    who: &crate::access::Principal,
    v: &AlarmView,
    resident: Option<&crate::access::Resident>,
    close_error: Option<&str>,
    note: &str,
    cause: &str,
) -> String {
    let a = &v.alarm;
    let id = a.id;
    let row = |k: &str, val: String| format!("<dt>{}</dt><dd>{val}</dd>", esc(t(lang, k)));
    let mut dl = String::new();
    dl.push_str(&row(
        "severity",
        super::board::severity_html(lang, &a.severity),
    ));
    dl.push_str(&row("state", super::board::state_html(lang, v)));
    dl.push_str(&row(
        "resident",
        match (resident, &a.resident) {
            (Some(r), _) => format!("{} ({})", esc(&r.name), esc(&r.id)),
            (None, Some(id)) => format!("{} ({})", esc(id), esc(t(lang, "not_registered"))),
            (None, None) => "–".into(),
        },
    ));
    if let Some(r) = resident {
        dl.push_str(&row("address", esc(&r.address)));
        dl.push_str(&row("notes", esc(&r.notes)));
    }
    dl.push_str(&row("unit", esc(v.unit.as_deref().unwrap_or("–"))));
    dl.push_str(&row("room", esc(a.room.as_deref().unwrap_or("–"))));
    dl.push_str(&row("device", esc(&a.device)));
    dl.push_str(&row("gateway", esc(&a.gateway)));
    dl.push_str(&row("time", super::html::time_tag(a.raised_ms)));
    if let Some(c) = a.cause {
        dl.push_str(&row(
            "cause_label",
            esc(match lang {
                Lang::Nb => c.label_nb(),
                Lang::En => c.label_en(),
            }),
        ));
    }
    if let Some(n) = &a.note {
        dl.push_str(&row("note_label", esc(n)));
    }
    let mut history = format!(
        "<li>{} {}</li>",
        esc(t(lang, "h_raised")),
        super::html::time_tag(a.raised_ms)
    );
    if let Some(ms) = a.last_repeat_ms {
        history.push_str(&format!(
            "<li>{} ({}) {}</li>",
            esc(t(lang, "h_repeated")),
            a.repeats,
            super::html::time_tag(ms)
        ));
    }
    for e in &a.escalations {
        history.push_str(&format!(
            "<li>{} {} {}</li>",
            esc(t(lang, "h_escalated")),
            esc(&e.group),
            super::html::time_tag(e.at_ms)
        ));
    }
    if let Some(ms) = a.acknowledged_ms {
        history.push_str(&format!(
            "<li>{} {} {}</li>",
            esc(t(lang, "h_acknowledged")),
            esc(v.acknowledged_by_name.as_deref().unwrap_or("?")),
            super::html::time_tag(ms)
        ));
    }
    if let Some(ms) = a.closed_ms {
        history.push_str(&format!(
            "<li>{} {} {}</li>",
            esc(t(lang, "h_closed")),
            esc(v.closed_by_name.as_deref().unwrap_or("?")),
            super::html::time_tag(ms)
        ));
    }
    let ack = if a.state == AlarmState::Open {
        format!(
            r#"<form method="post" action="/alarms/{id}/acknowledge" class="ack-form"><input type="hidden" name="csrf" value="{csrf}"><button type="submit" class="ack-button" id="ack-button">{ack}</button></form>"#,
            csrf = esc(&who.csrf),
            ack = esc(t(lang, "acknowledge")),
        )
    } else {
        String::new()
    };
    let close = if a.state != AlarmState::Closed {
        let err = close_error
            .map(|m| {
                format!(
                    r#"<p id="close-error" class="error" role="alert">{}</p>"#,
                    esc(m)
                )
            })
            .unwrap_or_default();
        let invalid = if close_error.is_some() {
            r#" aria-invalid="true" aria-describedby="close-error""#
        } else {
            ""
        };
        let options: String = Cause::ALL
            .iter()
            .map(|c| {
                format!(
                    r#"<option value="{v}"{sel}>{label}</option>"#,
                    v = c.as_str(),
                    sel = if c.as_str() == cause { " selected" } else { "" },
                    label = esc(t(lang, &format!("cause_{}", c.as_str()))),
                )
            })
            .collect();
        format!(
            r#"<section aria-labelledby="close-h"><h2 id="close-h">{title}</h2>{err}<form method="post" action="/alarms/{id}/close" id="close-form"><input type="hidden" name="csrf" value="{csrf}"><label for="note">{note_label}</label><textarea id="note" name="note" required maxlength="2000"{invalid}>{note}</textarea><label for="cause">{cause_label}</label><select id="cause" name="cause" required{invalid}><option value="">–</option>{options}</select><p><button type="submit" id="close-button">{button}</button></p></form></section>"#,
            title = esc(t(lang, "close_title")),
            csrf = esc(&who.csrf),
            note_label = esc(t(lang, "note_label")),
            note = esc(note),
            cause_label = esc(t(lang, "cause_label")),
            button = esc(t(lang, "close_button")),
        )
    } else {
        String::new()
    };
    format!(
        r#"<h1>{title}: {label}</h1><article class="alarm-detail" id="alarm-{id}" data-alarm-id="{id}" data-state="{state}"><dl class="alarm-facts">{dl}</dl></article>{ack}<section aria-labelledby="history-h"><h2 id="history-h">{h_history}</h2><ul class="alarm-history">{history}</ul></section>{close}<p><a href="/">{back}</a></p>"#,
        title = esc(t(lang, "alarm_title")),
        label = esc(&v.label),
        state = match a.state {
            AlarmState::Open => "open",
            AlarmState::Acknowledged => "acknowledged",
            AlarmState::Closed => "closed",
        },
        h_history = esc(t(lang, "history")),
        back = esc(t(lang, "back_to_board")),
    )
}

/// The alarm page; the resident's data shown is audited (`view_resident`).
async fn alarm_response(
    s: &ConsoleState,
    who: &Who,
    id: u64,
    status: StatusCode,
    close_error: Option<&str>,
    note: &str,
    cause: &str,
) -> Response {
    let lang = who.lang();
    let alarm = match load_for(s, who, id).await {
        Ok(Some(a)) => a,
        Ok(None) => return not_found_for(who),
        Err(acted) => return acted_page(s, who, acted).await,
    };
    let (user, remote) = (who.principal.username.clone(), who.remote.clone());
    let r = blocking(s.store(), move |st| {
        let resident = match &alarm.resident {
            Some(r) => st.resident(r)?,
            None => None,
        };
        if let Some(r) = &resident {
            st.audit_now(AuditEntry::new(
                &user,
                "view_resident",
                &format!("resident/{}", r.id),
                &format!("ok: alarm/{}", alarm.id),
                &remote,
                now_ms(),
            ))?;
        }
        Ok((view(st, alarm, lang)?, resident))
    })
    .await;
    match r {
        Ok((v, resident)) => page(
            status,
            layout(
                lang,
                Some(&who.principal),
                &format!("{}: {}", t(lang, "alarm_title"), v.label),
                "content",
                &alarm_html(
                    lang,
                    &who.principal,
                    &v,
                    resident.as_ref(),
                    close_error,
                    note,
                    cause,
                ),
                None,
            ),
        ),
        Err(e) => store_failed(e, lang, false),
    }
}

async fn alarm_page(
    State(s): State<ConsoleState>,
    who: PageUser,
    Path(id): Path<String>,
) -> Response {
    match parse_id(&id) {
        Some(id) => alarm_response(&s, &who, id, StatusCode::OK, None, "", "").await,
        None => not_found_for(&who),
    }
}

/// An alarm action's form, read and checked: the alarm id from the path,
/// the body within its limit, the session's CSRF token. Otherwise the
/// answer to give (400/413, 404, or 403 audited).
async fn alarm_form(
    s: &ConsoleState,
    who: &Who,
    id: &str,
    body: Result<Bytes, BytesRejection>,
) -> Result<(u64, FormData), Response> {
    let form = match FormData::from_body(body) {
        Ok(f) => f,
        Err(e) => return Err(form_refused(e, who.lang(), Some(&who.principal))),
    };
    let Some(id) = parse_id(id) else {
        return Err(not_found_for(who));
    };
    if !who.csrf_ok(form.get("csrf")) {
        return Err(csrf_refused(s, who, &format!("alarm/{id}"), false).await);
    }
    Ok((id, form))
}

async fn acknowledge(
    State(s): State<ConsoleState>,
    who: PageUser,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (id, _) = match alarm_form(&s, &who, &id, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let acted = act(&s, &who, id, Action::Acknowledge).await;
    acted_page(&s, &who, acted).await
}

async fn close(
    State(s): State<ConsoleState>,
    who: PageUser,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (id, form) = match alarm_form(&s, &who, &id, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (note, cause) = (
        form.get("note").unwrap_or(""),
        form.get("cause").unwrap_or(""),
    );
    let action = match close_fields(who.lang(), Some(note), Some(cause)) {
        Ok(a) => a,
        Err(m) => {
            return alarm_response(
                &s,
                &who,
                id,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(&m),
                note,
                cause,
            )
            .await
        }
    };
    let acted = act(&s, &who, id, action).await;
    acted_page(&s, &who, acted).await
}
