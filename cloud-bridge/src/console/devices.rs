//! The backend's device register as staff see it (`GET /devices`, JSON
//! `GET /console/api/devices`): every device that has sent an event, with
//! its gateway, its resident (the name from the register; the gateway only
//! ever knows the pseudonymous id), its unit, and when it was first heard.
//!
//! Who sees what: each user the devices of their own units (a device
//! belongs to its resident's unit, else to its gateway's), as on the board.
//! Pairing, swapping and removing devices is done on the gateway
//! (`trygg-gateway device ...`, docs/operations.md §4).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::html::{esc, layout, page, time_tag};
use super::i18n::t;
use super::{blocking, store_failed, ApiUser, ConsoleState, PageUser, Who};
use crate::access::Lang;

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/devices", get(devices_page))
        .route("/console/api/devices", get(devices_json))
}

/// One device as a user may see it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DeviceRow {
    pub device: String,
    pub gateway: String,
    /// The pseudonymous id the gateway uses.
    pub resident_id: Option<String>,
    /// The name from the register, where registered.
    pub resident_name: Option<String>,
    pub unit: Option<String>,
    pub first_ms: u64,
}

/// The devices `who` may see, by device id.
async fn rows(s: &ConsoleState, who: &Who) -> Result<Vec<DeviceRow>, crate::store::StoreError> {
    let principal = who.principal.clone();
    blocking(s.store(), move |st| {
        let mut out = Vec::new();
        for d in st.devices()? {
            let unit = st.unit_for(d.resident.as_deref(), &d.gateway)?;
            if !principal.has_unit(unit.as_deref()) {
                continue;
            }
            let name = match d.resident.as_deref() {
                Some(r) => st.resident(r)?.map(|r| r.name),
                None => None,
            };
            out.push(DeviceRow {
                device: d.device,
                gateway: d.gateway,
                resident_id: d.resident,
                resident_name: name,
                unit,
                first_ms: d.first_ms,
            });
        }
        Ok(out)
    })
    .await
}

fn html(lang: Lang, rows: &[DeviceRow]) -> String {
    let dash = "–";
    let mut body = format!(
        r#"<h1 id="devices-title">{}</h1><p>{}</p>"#,
        esc(t(lang, "devices_title")),
        esc(t(lang, "devices_intro"))
    );
    if rows.is_empty() {
        body.push_str(&format!(
            r#"<p id="no-devices">{}</p>"#,
            esc(t(lang, "devices_none"))
        ));
        return body;
    }
    let mut trs = String::new();
    for r in rows {
        let resident = match (&r.resident_name, &r.resident_id) {
            (Some(name), Some(id)) => format!("{} ({})", esc(name), esc(id)),
            (None, Some(id)) => esc(id),
            _ => dash.to_string(),
        };
        trs.push_str(&format!(
            r#"<tr id="device-{id}"><th scope="row">{id}</th><td>{gw}</td><td>{resident}</td><td>{unit}</td><td>{first}</td></tr>"#,
            id = esc(&r.device),
            gw = esc(&r.gateway),
            unit = esc(r.unit.as_deref().unwrap_or(dash)),
            first = time_tag(r.first_ms),
        ));
    }
    body.push_str(&format!(
        r#"<table id="devices-table"><caption>{cap}</caption><thead><tr><th scope="col">{d}</th><th scope="col">{g}</th><th scope="col">{r}</th><th scope="col">{u}</th><th scope="col">{f}</th></tr></thead><tbody>{trs}</tbody></table>"#,
        cap = esc(t(lang, "devices_caption")),
        d = esc(t(lang, "devices_device")),
        g = esc(t(lang, "devices_gateway")),
        r = esc(t(lang, "devices_resident")),
        u = esc(t(lang, "devices_unit")),
        f = esc(t(lang, "devices_first")),
    ));
    body
}

async fn devices_page(State(s): State<ConsoleState>, who: PageUser) -> Response {
    let lang = who.lang();
    match rows(&s, &who).await {
        Ok(rows) => page(
            StatusCode::OK,
            layout(
                lang,
                Some(&who.principal),
                t(lang, "devices_title"),
                "devices",
                &html(lang, &rows),
                None,
            ),
        ),
        Err(e) => store_failed(e, lang, false),
    }
}

async fn devices_json(State(s): State<ConsoleState>, who: ApiUser) -> Response {
    match rows(&s, &who).await {
        Ok(rows) => Json(rows).into_response(),
        Err(e) => store_failed(e, who.lang(), true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_the_resident_and_escapes_everything() {
        let rows = [DeviceRow {
            device: "button-1".into(),
            gateway: "gw-1".into(),
            resident_id: Some("r-1".into()),
            resident_name: Some("<b>Ola</b>".into()),
            unit: Some("sentrum".into()),
            first_ms: 0,
        }];
        let h = html(Lang::En, &rows);
        assert!(h.contains(r#"<tr id="device-button-1">"#), "{h}");
        assert!(h.contains("&lt;b&gt;Ola&lt;/b&gt; (r-1)"), "{h}");
        assert!(h.contains(r#"<th scope="col">"#));
        assert!(html(Lang::Nb, &[]).contains(r#"id="no-devices""#));
    }
}
