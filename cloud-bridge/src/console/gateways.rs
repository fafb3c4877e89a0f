//! Gateway settings from the alarm reception (`/gateways`, JSON
//! `/console/api/gateways`), for administrators and technicians: every
//! gateway the backend knows, the settings version it runs and its answer,
//! and a form to set the next version (`docs/console.md`).
//!
//! A submitted form becomes a whole set of settings (an empty field: not
//! managed from here, left as it is at the gateway), checked, stored as the
//! next version with an audit entry in one durable transaction, and pushed
//! (`crate::settings`). The page then shows it `pending` until the gateway
//! answers `applied`, or `refused` with its reason.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use trygg_uplink::remote_config::{DeviceSettings, GatewaySettings};

use super::html::{esc, layout, page, time_tag};
use super::{
    blocking, csrf_refused, denied, store_failed, ApiUser, ConsoleState, FormData, PageUser, Who,
};
use crate::access::{Lang, Role};
use crate::settings::GatewaySettingsRecord;

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/gateways", get(gateways_page))
        .route("/gateways/{id}/settings", post(set_settings))
        .route("/console/api/gateways", get(gateways_json))
}

/// Device types, as gateways name them, with their labels.
const TYPES: &[(&str, &str, &str)] = &[
    (
        "safety_button",
        "Trygghetsalarm (knapp)",
        "Safety alarm button",
    ),
    ("pull_cord", "Snortrekk", "Pull cord"),
    ("fall_sensor", "Fallsensor", "Fall sensor"),
    ("epilepsy_sensor", "Epilepsisensor", "Epilepsy sensor"),
    ("door_sensor", "Dørsensor", "Door sensor"),
    ("bed_sensor", "Sengesensor", "Bed sensor"),
    ("motion_sensor", "Bevegelsessensor", "Motion sensor"),
    ("smoke_detector", "Røykvarsler", "Smoke detector"),
    ("water_sensor", "Vannsensor", "Water sensor"),
    (
        "medicine_dispenser",
        "Medisindispenser",
        "Medicine dispenser",
    ),
    ("thermometer", "Termometer", "Thermometer"),
];

/// `(key, bokmål, English)`.
const WORDS: &[(&str, &str, &str)] = &[
    ("title", "Gatewayer", "Gateways"),
    ("intro", "Innstillinger som sendes til gatewayen i hjemmet. Et tomt felt styres ikke herfra: det blir stående slik det er på gatewayen. Gatewayen tar i bruk hele versjonen eller ingenting av den, og svarer.", "Settings sent to the gateway in the home. An empty field is not managed from here: it stays as it is at the gateway. The gateway applies the whole version or none of it, and answers."),
    ("none", "Ingen gatewayer har sendt noe ennå.", "No gateway has sent anything yet."),
    ("version", "Versjon", "Version"),
    ("no_version", "Ingen innstillinger er sendt herfra ennå.", "No settings were sent from here yet."),
    ("pending", "venter på svar fra gatewayen", "waiting for the gateway's answer"),
    ("applied", "tatt i bruk", "applied"),
    ("refused", "avvist av gatewayen", "refused by the gateway"),
    ("set_by", "satt av", "set by"),
    ("heartbeat", "Gatewayens livstegn til sentralen (sekunder, 1–3600)", "The gateway's heartbeat to the backend (seconds, 1–3600)"),
    ("periods", "Tilsynsperiode per enhetstype (sekunder; 0 = av)", "Supervision period by device type (seconds; 0 = off)"),
    ("devices", "Per enhet", "Per device"),
    ("dev_supervision", "tilsynsperiode (s; 0 = av)", "supervision period (s; 0 = off)"),
    ("dev_heartbeat", "livstegn (s, 10–86400)", "heartbeat (s, 10–86400)"),
    ("dev_pre_alarm", "angretid for knapp (s, 0–60)", "pre-alarm time for a button (s, 0–60)"),
    ("save", "Send innstillingene", "Send the settings"),
    ("saved", "Sendt som versjon", "Sent as version"),
    ("error_intro", "Rett opp dette og prøv igjen:", "Fix this and try again:"),
    ("not_number", "må være et helt tall", "must be a whole number"),
];

fn w(lang: Lang, key: &'static str) -> &'static str {
    WORDS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, nb, en)| if lang == Lang::Nb { *nb } else { *en })
        .unwrap_or(key)
}

fn type_label(lang: Lang, name: &str) -> String {
    TYPES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, nb, en)| if lang == Lang::Nb { *nb } else { *en })
        .unwrap_or(name)
        .to_string()
}

/// Administrators and technicians.
fn may_manage(who: &Who) -> bool {
    matches!(who.principal.role, Role::Administrator | Role::Technician)
}

/// One gateway as the page shows it.
#[derive(Clone, Debug, Serialize)]
pub struct GatewayRow {
    pub gateway: String,
    /// Devices heard from through it.
    pub devices: Vec<String>,
    pub settings: Option<GatewaySettingsRecord>,
}

async fn rows(s: &ConsoleState) -> Result<Vec<GatewayRow>, crate::store::StoreError> {
    blocking(s.store(), |st| {
        let mut by: BTreeMap<String, GatewayRow> = BTreeMap::new();
        let row = |g: &str| GatewayRow {
            gateway: g.to_string(),
            devices: Vec::new(),
            settings: None,
        };
        for (g, _) in st.gateways()? {
            by.entry(g.clone()).or_insert_with(|| row(&g));
        }
        for d in st.devices()? {
            if d.device == d.gateway {
                continue;
            }
            by.entry(d.gateway.clone())
                .or_insert_with(|| row(&d.gateway))
                .devices
                .push(d.device);
        }
        for r in st.all_gateway_settings()? {
            let g = r.gateway.clone();
            by.entry(g.clone()).or_insert_with(|| row(&g)).settings = Some(r);
        }
        for r in by.values_mut() {
            r.devices.sort();
            r.devices.dedup();
        }
        Ok(by.into_values().collect())
    })
    .await
}

fn num<T: ToString>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

fn number_input(id: &str, label: &str, value: &str, max: u64) -> String {
    format!(
        r#"<label for="{id}">{label}</label><input type="number" inputmode="numeric" min="0" max="{max}" id="{id}" name="{id}" value="{value}">"#,
        id = esc(id),
        label = esc(label),
        value = esc(value),
    )
}

fn state_line(lang: Lang, r: &GatewaySettingsRecord) -> String {
    let state = match r.state.as_str() {
        "applied" => w(lang, "applied"),
        "refused" => w(lang, "refused"),
        _ => w(lang, "pending"),
    };
    let error = r
        .error
        .as_deref()
        .map(|e| format!(r#": <span class="gateway-error">{}</span>"#, esc(e)))
        .unwrap_or_default();
    format!(
        r#"<p class="gateway-state state-{cls}" role="status">{version} {n}: <strong>{state}</strong>{error} ({set_by} {by}, {at})</p>"#,
        cls = esc(&r.state),
        version = esc(w(lang, "version")),
        n = r.version,
        state = esc(state),
        set_by = esc(w(lang, "set_by")),
        by = esc(&r.set_by),
        at = time_tag(r.set_ms),
    )
}

/// The form for `row`, filled from `form` (a refused submission) or the
/// current settings.
fn gateway_form(lang: Lang, who: &Who, row: &GatewayRow, form: Option<&FormData>) -> String {
    let current = row.settings.as_ref().map(|r| &r.settings);
    let value = |name: &str, now: String| -> String {
        match form {
            Some(f) => f.get(name).unwrap_or("").to_string(),
            None => now,
        }
    };
    let gw = esc(&row.gateway);
    let mut fields = number_input(
        "heartbeat_s",
        w(lang, "heartbeat"),
        &value("heartbeat_s", num(current.and_then(|c| c.heartbeat_s))),
        3600,
    );
    let mut periods = String::new();
    for (name, _, _) in TYPES {
        let id = format!("period_{name}");
        periods.push_str(&number_input(
            &id,
            &type_label(lang, name),
            &value(
                &id,
                num(current.and_then(|c| c.supervision_periods_s.get(*name).copied())),
            ),
            604_800,
        ));
    }
    fields.push_str(&format!(
        r#"<fieldset><legend>{}</legend>{periods}</fieldset>"#,
        esc(w(lang, "periods"))
    ));
    let mut devices = String::new();
    for d in &row.devices {
        let now = current
            .and_then(|c| c.devices.get(d))
            .copied()
            .unwrap_or_default();
        let mut inner = String::new();
        for (suffix, key, v, max) in [
            (
                "supervision_s",
                "dev_supervision",
                num(now.supervision_s),
                604_800,
            ),
            ("heartbeat_s", "dev_heartbeat", num(now.heartbeat_s), 86_400),
            ("pre_alarm_s", "dev_pre_alarm", num(now.pre_alarm_s), 60),
        ] {
            let id = format!("dev.{d}.{suffix}");
            inner.push_str(&number_input(
                &id,
                &format!("{d}: {}", w(lang, key)),
                &value(&id, v),
                max,
            ));
        }
        devices.push_str(&format!(
            r#"<fieldset class="device-settings"><legend>{}</legend>{inner}</fieldset>"#,
            esc(d)
        ));
    }
    if !devices.is_empty() {
        fields.push_str(&format!(r#"<h3>{}</h3>{devices}"#, esc(w(lang, "devices"))));
    }
    format!(
        r#"<form method="post" action="/gateways/{gw}/settings" class="gateway-form" id="gateway-form-{gw}"><input type="hidden" name="csrf" value="{csrf}">{fields}<p><button type="submit" class="gateway-save">{save}<span class="visually-hidden"> ({gw})</span></button></p></form>"#,
        csrf = esc(&who.principal.csrf),
        save = esc(w(lang, "save")),
    )
}

fn html(
    lang: Lang,
    who: &Who,
    rows: &[GatewayRow],
    refused: Option<(&str, &FormData, &str)>,
    saved: Option<(&str, &str)>,
) -> String {
    let mut body = format!(
        r#"<h1 id="gateways-title">{}</h1><p>{}</p>"#,
        esc(w(lang, "title")),
        esc(w(lang, "intro"))
    );
    if let Some((gw, version)) = saved {
        body.push_str(&format!(
            r#"<p id="gateways-flash" role="status">{gw}: {} {}</p>"#,
            esc(w(lang, "saved")),
            esc(version),
            gw = esc(gw),
        ));
    }
    if rows.is_empty() {
        body.push_str(&format!(
            r#"<p id="no-gateways">{}</p>"#,
            esc(w(lang, "none"))
        ));
        return body;
    }
    for row in rows {
        let state = match &row.settings {
            Some(r) => state_line(lang, r),
            None => format!(
                r#"<p class="gateway-state state-none">{}</p>"#,
                esc(w(lang, "no_version"))
            ),
        };
        let (error, form) = match refused {
            Some((gw, form, message)) if gw == row.gateway => (
                format!(
                    r#"<p class="error" id="gateways-error" role="alert">{} {}</p>"#,
                    esc(w(lang, "error_intro")),
                    esc(message)
                ),
                Some(form),
            ),
            _ => (String::new(), None),
        };
        body.push_str(&format!(
            r#"<section class="gateway" id="gateway-{gw}" aria-labelledby="gateway-{gw}-title"><h2 id="gateway-{gw}-title">{gw}</h2>{state}{error}{form}</section>"#,
            gw = esc(&row.gateway),
            form = gateway_form(lang, who, row, form),
        ));
    }
    body
}

/// The settings a submitted form asks for, or what is wrong with it.
fn settings_from(
    lang: Lang,
    form: &FormData,
    devices: &[String],
) -> Result<GatewaySettings, String> {
    fn parse<T: std::str::FromStr>(
        lang: Lang,
        form: &FormData,
        name: &str,
        label: &str,
    ) -> Result<Option<T>, String> {
        let v = form.get(name).unwrap_or("").trim();
        if v.is_empty() {
            return Ok(None);
        }
        v.parse()
            .map(Some)
            .map_err(|_| format!("{label}: {}", w(lang, "not_number")))
    }
    let mut s = GatewaySettings {
        heartbeat_s: parse(lang, form, "heartbeat_s", w(lang, "heartbeat"))?,
        ..Default::default()
    };
    for (name, _, _) in TYPES {
        if let Some(v) = parse(
            lang,
            form,
            &format!("period_{name}"),
            &type_label(lang, name),
        )? {
            s.supervision_periods_s.insert(name.to_string(), v);
        }
    }
    for d in devices {
        let ds = DeviceSettings {
            supervision_s: parse(lang, form, &format!("dev.{d}.supervision_s"), d)?,
            heartbeat_s: parse(lang, form, &format!("dev.{d}.heartbeat_s"), d)?,
            pre_alarm_s: parse(lang, form, &format!("dev.{d}.pre_alarm_s"), d)?,
        };
        if ds != DeviceSettings::default() {
            s.devices.insert(d.clone(), ds);
        }
    }
    s.check()?;
    Ok(s)
}

async fn respond(
    s: &ConsoleState,
    who: &Who,
    status: StatusCode,
    refused: Option<(&str, &FormData, &str)>,
    saved: Option<(&str, &str)>,
) -> Response {
    let lang = who.lang();
    match rows(s).await {
        Ok(rows) => page(
            status,
            layout(
                lang,
                Some(&who.principal),
                w(lang, "title"),
                "gateways",
                &html(lang, who, &rows, refused, saved),
                None,
            ),
        ),
        Err(e) => store_failed(e, lang, false),
    }
}

async fn gateways_page(
    State(s): State<ConsoleState>,
    who: PageUser,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    if !may_manage(&who) {
        return denied(&s, &who, "gateways", false).await;
    }
    let saved = match (q.get("saved"), q.get("version")) {
        (Some(g), Some(v)) => Some((g.as_str(), v.as_str())),
        _ => None,
    };
    respond(&s, &who, StatusCode::OK, None, saved).await
}

async fn set_settings(
    State(s): State<ConsoleState>,
    who: PageUser,
    Path(gateway): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let target = format!("gateway/{gateway}");
    if !may_manage(&who) {
        return denied(&s, &who, &target, false).await;
    }
    let form = match FormData::from_body(body) {
        Ok(f) => f,
        Err(e) => return super::pages::form_refused(e, who.lang(), Some(&who.principal)),
    };
    if !who.csrf_ok(form.get("csrf")) {
        return csrf_refused(&s, &who, &target, false).await;
    }
    let lang = who.lang();
    let known = match rows(&s).await {
        Ok(r) => r.into_iter().find(|r| r.gateway == gateway),
        Err(e) => return store_failed(e, lang, false),
    };
    let Some(row) = known else {
        return super::html::message_page(
            StatusCode::NOT_FOUND,
            lang,
            Some(&who.principal),
            super::t(lang, "not_found_title"),
            super::t(lang, "error_not_found"),
        );
    };
    let settings = match settings_from(lang, &form, &row.devices) {
        Ok(s) => s,
        Err(message) => {
            return respond(
                &s,
                &who,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some((&gateway, &form, &message)),
                None,
            )
            .await
        }
    };
    match crate::api::set_gateway_settings(
        &s.app,
        &gateway,
        settings,
        &who.principal.username,
        &who.remote,
    )
    .await
    {
        Ok(record) => Redirect::to(&format!(
            "/gateways?saved={}&version={}#gateway-{}",
            gateway, record.version, gateway
        ))
        .into_response(),
        Err(e) => {
            let message = e.message().to_string();
            respond(
                &s,
                &who,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some((&gateway, &form, &message)),
                None,
            )
            .await
        }
    }
}

async fn gateways_json(State(s): State<ConsoleState>, who: ApiUser) -> Response {
    if !may_manage(&who) {
        return denied(&s, &who, "gateways", true).await;
    }
    match rows(&s).await {
        Ok(rows) => Json(rows).into_response(),
        Err(e) => store_failed(e, who.lang(), true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> FormData {
        FormData(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn a_form_becomes_settings_and_empty_fields_are_left_out() {
        let devices = vec!["button-1".to_string(), "door-1".to_string()];
        let f = form(&[
            ("heartbeat_s", ""),
            ("period_safety_button", "600"),
            ("dev.button-1.pre_alarm_s", "10"),
            ("dev.door-1.supervision_s", ""),
        ]);
        let s = settings_from(Lang::En, &f, &devices).unwrap();
        assert_eq!(s.heartbeat_s, None);
        assert_eq!(s.supervision_periods_s["safety_button"], 600);
        assert_eq!(s.devices["button-1"].pre_alarm_s, Some(10));
        assert!(!s.devices.contains_key("door-1"));
        let e = settings_from(Lang::Nb, &form(&[("heartbeat_s", "ti")]), &devices).unwrap_err();
        assert!(e.contains("helt tall"), "{e}");
        let e = settings_from(
            Lang::En,
            &form(&[("dev.button-1.pre_alarm_s", "61")]),
            &devices,
        )
        .unwrap_err();
        assert!(e.contains("pre_alarm_s"), "{e}");
    }
}
