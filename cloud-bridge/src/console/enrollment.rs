//! `/admin/enrollment`: enrolled gateways for administrators and technicians
//! (`crate::enrollment`): the certificates issued, a form that makes a
//! one-time enrollment code (shown once, on the answer to the form, never
//! in a URL), and revocation with a reason. Every change is audited by the
//! store; a refusal by role or CSRF token is audited too.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use std::collections::HashMap;

use super::html::{esc, layout, page};
use super::{blocking, csrf_refused, denied, store_failed, ConsoleState, FormData, PageUser, Who};
use crate::access::{Lang, Role};
use crate::enrollment::{CodeError, EnrollCode, GatewayCert};
use crate::store::now_ms;

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/admin/enrollment", get(gateways_page).post(create_code))
        .route("/admin/enrollment/{id}/revoke", post(revoke))
}

/// `(key, bokmål, English)`.
const WORDS: &[(&str, &str, &str)] = &[
    ("title", "Innrullering av gatewayer", "Gateway enrollment"),
    ("caption", "Sertifikater utstedt til gatewayer", "Certificates issued to gateways"),
    ("gateway", "Gateway-ID", "Gateway id"),
    ("site", "Sted (adresse)", "Site (address)"),
    ("fingerprint", "Sertifikat (SHA-256)", "Certificate (SHA-256)"),
    ("expires", "Utløper", "Expires"),
    ("state", "Status", "State"),
    ("valid", "Gyldig", "Valid"),
    ("expired", "Utløpt", "Expired"),
    ("revoked", "Tilbakekalt", "Revoked"),
    ("revoke", "Tilbakekall", "Revoke"),
    ("reason", "Årsak", "Reason"),
    ("none", "Ingen gateway er innrullert ennå.", "No gateway is enrolled yet."),
    ("new_code", "Ny innrulleringskode", "New enrollment code"),
    ("valid_h", "Gyldig i timer (1–720)", "Valid for hours (1–720)"),
    ("make_code", "Lag kode", "Make code"),
    ("code_hint", "Koden virker én gang og vises bare nå. Teknikeren kjører «trygg-gateway enroll --code KODE» på gatewayen.", "The code works once and is shown only now. The technician runs \"trygg-gateway enroll --code CODE\" on the gateway."),
    ("code_made", "Innrulleringskode for", "Enrollment code for"),
    ("code_until", "gyldig til", "valid until"),
    ("codes_caption", "Innrulleringskoder (kodene selv lagres ikke)", "Enrollment codes (the codes themselves are not kept)"),
    ("made_by", "Laget av", "Made by"),
    ("open", "Åpen", "Open"),
    ("used", "Brukt", "Used"),
    ("revoked_flash", "Tilbakekalt, avvises fra neste tilkobling:", "Revoked, refused from its next connection:"),
    ("error_intro", "Rett opp dette og prøv igjen:", "Fix this and try again:"),
    ("err_gateway", "Gateway-ID må være 1–64 tegn av A–Z, a–z, 0–9, «_» eller «-» (ikke «trygg-…»).", "The gateway id must be 1–64 characters of A–Z, a–z, 0–9, '_' or '-' (not 'trygg-…')."),
    ("err_site", "Sted er påkrevd, høyst 200 tegn.", "The site is required, at most 200 characters."),
    ("err_valid", "Gyldighet må være 1–720 timer.", "Validity must be 1–720 hours."),
    ("err_reason", "Oppgi en årsak (stjålet, avviklet, byttet …).", "Give a reason (stolen, decommissioned, replaced, ...)."),
];

fn w(lang: Lang, key: &'static str) -> &'static str {
    WORDS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, nb, en)| match lang {
            Lang::Nb => *nb,
            Lang::En => *en,
        })
        .unwrap_or(key)
}

/// Administrators and technicians: `None` to go on, else the 403 (audited).
async fn allowed(s: &ConsoleState, who: &Who, target: &str) -> Option<Response> {
    match who.principal.role {
        Role::Administrator | Role::Technician => None,
        _ => Some(denied(s, who, target, false).await),
    }
}

fn cert_state(lang: Lang, c: &GatewayCert, now: u64) -> String {
    match &c.revoked {
        Some(r) => format!(
            "{} {} ({}: {})",
            w(lang, "revoked"),
            trygg_uplink::enroll::utc_text(r.at_ms),
            r.by,
            r.reason
        ),
        None if c.not_after_ms <= now => w(lang, "expired").to_string(),
        None => w(lang, "valid").to_string(),
    }
}

/// A code just made, to show once.
struct Made {
    code: String,
    gateway: String,
    expires_ms: u64,
}

fn gateways_html(
    lang: Lang,
    who: &Who,
    certs: &[GatewayCert],
    codes: &[EnrollCode],
    made: Option<&Made>,
    error: Option<&str>,
    revoked: Option<&String>,
) -> String {
    let now = now_ms();
    let csrf = esc(&who.principal.csrf);
    let rows: String = certs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let action = if c.revoked.is_none() {
                format!(
                    r#"<form method="post" action="/admin/enrollment/{id}/revoke" class="inline"><input type="hidden" name="csrf" value="{csrf}"><label for="reason-{i}">{reason}</label><input type="text" id="reason-{i}" name="reason" required aria-required="true" maxlength="200"><button type="submit">{revoke} {id}</button></form>"#,
                    id = esc(&c.gateway),
                    reason = esc(w(lang, "reason")),
                    revoke = esc(w(lang, "revoke")),
                )
            } else {
                String::new()
            };
            format!(
                r#"<tr><th scope="row">{gw}</th><td>{site}</td><td><code>{fp}</code></td><td>{exp}</td><td>{state}</td><td>{action}</td></tr>"#,
                gw = esc(&c.gateway),
                site = esc(&c.site),
                fp = esc(&c.fingerprint[..16.min(c.fingerprint.len())]),
                exp = esc(&trygg_uplink::enroll::utc_text(c.not_after_ms)),
                state = esc(&cert_state(lang, c, now)),
            )
        })
        .collect();
    let table = if certs.is_empty() {
        format!("<p>{}</p>", esc(w(lang, "none")))
    } else {
        format!(
            r#"<table id="gateways-table"><caption>{cap}</caption><thead><tr><th scope="col">{gw}</th><th scope="col">{site}</th><th scope="col">{fp}</th><th scope="col">{exp}</th><th scope="col">{state}</th><th scope="col">{revoke}</th></tr></thead><tbody>{rows}</tbody></table>"#,
            cap = esc(w(lang, "caption")),
            gw = esc(w(lang, "gateway")),
            site = esc(w(lang, "site")),
            fp = esc(w(lang, "fingerprint")),
            exp = esc(w(lang, "expires")),
            state = esc(w(lang, "state")),
            revoke = esc(w(lang, "revoke")),
        )
    };
    let code_rows: String = codes
        .iter()
        .take(50)
        .map(|c| {
            let state = match c.used_ms {
                Some(at) => format!("{} {}", w(lang, "used"), trygg_uplink::enroll::utc_text(at)),
                None if c.expires_ms <= now => w(lang, "expired").to_string(),
                None => w(lang, "open").to_string(),
            };
            format!(
                r#"<tr><th scope="row">{gw}</th><td>{site}</td><td>{by}</td><td>{exp}</td><td>{state}</td></tr>"#,
                gw = esc(&c.gateway),
                site = esc(&c.site),
                by = esc(&c.created_by),
                exp = esc(&trygg_uplink::enroll::utc_text(c.expires_ms)),
                state = esc(&state),
            )
        })
        .collect();
    let codes_table = if codes.is_empty() {
        String::new()
    } else {
        format!(
            r#"<table id="codes-table"><caption>{cap}</caption><thead><tr><th scope="col">{gw}</th><th scope="col">{site}</th><th scope="col">{by}</th><th scope="col">{exp}</th><th scope="col">{state}</th></tr></thead><tbody>{code_rows}</tbody></table>"#,
            cap = esc(w(lang, "codes_caption")),
            gw = esc(w(lang, "gateway")),
            site = esc(w(lang, "site")),
            by = esc(w(lang, "made_by")),
            exp = esc(w(lang, "expires")),
            state = esc(w(lang, "state")),
        )
    };
    let made = made
        .map(|m| {
            format!(
                r#"<div id="code-made" role="status"><p>{intro} <strong>{gw}</strong>, {until} {exp}:</p><p class="code"><code id="enroll-code">{code}</code></p><p>{hint}</p></div>"#,
                intro = esc(w(lang, "code_made")),
                gw = esc(&m.gateway),
                until = esc(w(lang, "code_until")),
                exp = esc(&trygg_uplink::enroll::utc_text(m.expires_ms)),
                code = esc(&m.code),
                hint = esc(w(lang, "code_hint")),
            )
        })
        .unwrap_or_default();
    let error = error
        .map(|e| {
            format!(
                r#"<p class="error" id="admin-error" role="alert">{} {}</p>"#,
                esc(w(lang, "error_intro")),
                esc(e)
            )
        })
        .unwrap_or_default();
    let revoked = revoked
        .map(|g| {
            format!(
                r#"<p id="admin-flash" role="status">{} <strong>{}</strong></p>"#,
                esc(w(lang, "revoked_flash")),
                esc(g)
            )
        })
        .unwrap_or_default();
    format!(
        r#"<h1>{title}</h1>{revoked}{made}{table}
<h2 id="new-code-heading">{new_code}</h2>{error}
<form method="post" action="/admin/enrollment" id="code-form" aria-labelledby="new-code-heading">
<input type="hidden" name="csrf" value="{csrf}">
<label for="gateway">{gw}</label><input type="text" id="gateway" name="gateway" required aria-required="true" maxlength="64" autocomplete="off">
<label for="site">{site}</label><input type="text" id="site" name="site" required aria-required="true" maxlength="200" autocomplete="off">
<label for="valid_h">{valid_h}</label><input type="number" id="valid_h" name="valid_h" value="24" min="1" max="720">
<p><button type="submit" id="make-code-button">{make}</button></p>
</form>{codes_table}"#,
        title = esc(w(lang, "title")),
        new_code = esc(w(lang, "new_code")),
        gw = esc(w(lang, "gateway")),
        site = esc(w(lang, "site")),
        valid_h = esc(w(lang, "valid_h")),
        make = esc(w(lang, "make_code")),
    )
}

async fn respond(
    s: &ConsoleState,
    who: &Who,
    status: StatusCode,
    made: Option<&Made>,
    error: Option<&str>,
    revoked: Option<&String>,
) -> Response {
    let lists = blocking(s.store(), |st| {
        Ok((st.gateway_certs()?, st.enroll_codes()?))
    })
    .await;
    let (certs, codes) = match lists {
        Ok(l) => l,
        Err(e) => return store_failed(e, who.lang(), false),
    };
    let lang = who.lang();
    let body = gateways_html(lang, who, &certs, &codes, made, error, revoked);
    page(
        status,
        layout(
            lang,
            Some(&who.principal),
            w(lang, "title"),
            "admin",
            &body,
            None,
        ),
    )
}

async fn gateways_page(
    State(s): State<ConsoleState>,
    who: PageUser,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = allowed(&s, &who, "admin/enrollment").await {
        return r;
    }
    respond(&s, &who, StatusCode::OK, None, None, q.get("revoked")).await
}

async fn create_code(
    State(s): State<ConsoleState>,
    who: PageUser,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Some(r) = allowed(&s, &who, "admin/enrollment").await {
        return r;
    }
    let form = match FormData::from_body(body) {
        Ok(f) => f,
        Err(e) => return super::pages::form_refused(e, who.lang(), Some(&who.principal)),
    };
    if !who.csrf_ok(form.get("csrf")) {
        return csrf_refused(&s, &who, "admin/enrollment", false).await;
    }
    let lang = who.lang();
    let gateway = form.get("gateway").unwrap_or("").trim().to_string();
    let site = form.get("site").unwrap_or("").trim().to_string();
    let valid_h: Option<u64> = form
        .get("valid_h")
        .unwrap_or("24")
        .trim()
        .parse()
        .ok()
        .filter(|h| (1..=720).contains(h));
    let Some(valid_h) = valid_h else {
        return respond(
            &s,
            &who,
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
            Some(w(lang, "err_valid")),
            None,
        )
        .await;
    };
    let (actor, remote) = (who.principal.username.clone(), who.remote.clone());
    let (g, st) = (gateway.clone(), site.clone());
    let made = blocking(s.store(), move |store| {
        Ok(store.create_enroll_code(&g, &st, valid_h * 3_600_000, &actor, &remote, now_ms()))
    })
    .await;
    match made {
        Ok(Ok((code, record))) => {
            tracing::info!(gateway = %record.gateway, site = %record.site, by = %record.created_by, "enrollment code made in the console");
            let made = Made {
                code,
                gateway: record.gateway,
                expires_ms: record.expires_ms,
            };
            respond(&s, &who, StatusCode::CREATED, Some(&made), None, None).await
        }
        Ok(Err(CodeError::Store(e))) | Err(e) => store_failed(e, lang, false),
        Ok(Err(e)) => {
            let key = match e {
                CodeError::BadGateway(_) | CodeError::Reserved => "err_gateway",
                CodeError::BadSite => "err_site",
                _ => "err_valid",
            };
            respond(
                &s,
                &who,
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
                Some(w(lang, key)),
                None,
            )
            .await
        }
    }
}

async fn revoke(
    State(s): State<ConsoleState>,
    who: PageUser,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Some(r) = allowed(&s, &who, &format!("gateway/{id}")).await {
        return r;
    }
    let form = match FormData::from_body(body) {
        Ok(f) => f,
        Err(e) => return super::pages::form_refused(e, who.lang(), Some(&who.principal)),
    };
    if !who.csrf_ok(form.get("csrf")) {
        return csrf_refused(&s, &who, &format!("gateway/{id}"), false).await;
    }
    let lang = who.lang();
    let reason = form.get("reason").unwrap_or("").trim().to_string();
    if reason.is_empty() || reason.chars().count() > 200 {
        return respond(
            &s,
            &who,
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
            Some(w(lang, "err_reason")),
            None,
        )
        .await;
    }
    let (actor, remote, gw) = (
        who.principal.username.clone(),
        who.remote.clone(),
        id.clone(),
    );
    match blocking(s.store(), move |st| {
        st.revoke_gateway(&gw, &actor, &reason, &remote, now_ms())
    })
    .await
    {
        Ok(n) => {
            tracing::warn!(gateway = %id, revoked = n, by = %who.principal.username, "gateway revoked in the console");
            let encoded: String = id
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            Redirect::to(&format!("/admin/enrollment?revoked={encoded}")).into_response()
        }
        Err(e) => store_failed(e, lang, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_has_both_languages_and_keys_are_unique() {
        let mut keys: Vec<_> = WORDS.iter().map(|(k, _, _)| *k).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), WORDS.len());
        assert!(WORDS
            .iter()
            .all(|(_, nb, en)| !nb.is_empty() && !en.is_empty()));
    }
}
