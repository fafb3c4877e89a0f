//! The benefits page (`GET /benefits`) and its JSON
//! (`GET /console/api/benefits`): the figures of [`crate::benefits`] for a
//! unit and a period, `?unit=&from=YYYY-MM-DD&to=YYYY-MM-DD`.
//!
//! Who sees what: any logged-in user, for their own units only (a unit not
//! theirs is 403 and audited `denied`); without `unit`, all their units
//! together (a user with `*`: everything, also alarms of no unit).
//! Technicians see technical alarms only, here as on the board. A period
//! that cannot be used is 422 with the form and `#benefits-error`.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use trygg_protocol::EventKind;

use super::admin::words;
use super::html::{esc, layout, page};
use super::{blocking, denied, json_error, store_failed, ApiUser, ConsoleState, PageUser, Who};
use crate::access::{Lang, Principal, Role, ALL_UNITS};
use crate::alarm::Cause;
use crate::benefits::{gather, Figures, Period, PeriodError, Scope, Stat, Uptime};
use crate::store::now_ms;

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/benefits", get(benefits_page))
        .route("/console/api/benefits", get(benefits_json))
}

/// Whose figures `who` asks for with `unit`: `None` if the unit is not
/// theirs.
pub fn scope_for(who: &Principal, unit: Option<&str>) -> Option<(Scope, Option<String>)> {
    let all = who.units.iter().any(|u| u == ALL_UNITS);
    match unit.map(str::trim).filter(|u| !u.is_empty()) {
        Some(u) if all || who.units.iter().any(|x| x == u) => {
            Some((Scope::Units(vec![u.to_string()]), Some(u.to_string())))
        }
        Some(_) => None,
        None if all => Some((Scope::All, None)),
        None => Some((Scope::Units(who.units.clone()), None)),
    }
}

enum Asked {
    Figures(Box<Figures>),
    Refused(Response),
    BadPeriod(PeriodError),
}

async fn figures(s: &ConsoleState, who: &Who, q: &HashMap<String, String>, as_json: bool) -> Asked {
    let unit = q.get("unit").map(String::as_str);
    let Some((scope, unit)) = scope_for(&who.principal, unit) else {
        let target = format!(
            "benefits/{}",
            unit.unwrap_or("").chars().take(64).collect::<String>()
        );
        return Asked::Refused(denied(s, who, &target, as_json).await);
    };
    let now = now_ms();
    let period = match Period::parse(
        q.get("from").map(String::as_str),
        q.get("to").map(String::as_str),
        now,
    ) {
        Ok(p) => p,
        Err(e) => return Asked::BadPeriod(e),
    };
    let technical_only = who.principal.role == Role::Technician;
    match blocking(s.store(), move |st| {
        gather(st, &scope, unit, technical_only, period, now)
    })
    .await
    {
        Ok(f) => Asked::Figures(Box::new(f)),
        Err(e) => Asked::Refused(store_failed(e, who.lang(), as_json)),
    }
}

async fn benefits_json(
    State(s): State<ConsoleState>,
    who: ApiUser,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    match figures(&s, &who, &q, true).await {
        Asked::Figures(f) => Json(f).into_response(),
        Asked::Refused(r) => r,
        Asked::BadPeriod(e) => json_error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    }
}

async fn benefits_page(
    State(s): State<ConsoleState>,
    who: PageUser,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let lang = who.lang();
    let (status, figures, error) = match figures(&s, &who, &q, false).await {
        Asked::Figures(f) => (StatusCode::OK, Some(f), None),
        Asked::Refused(r) => return r,
        Asked::BadPeriod(e) => {
            let msg = match e {
                PeriodError::BadDate(_) => words(lang, "bad_date"),
                PeriodError::Backwards => words(lang, "period_backwards"),
                PeriodError::TooLong => words(lang, "period_too_long"),
            };
            (StatusCode::UNPROCESSABLE_ENTITY, None, Some(msg))
        }
    };
    let units = if who.principal.units.iter().any(|u| u == ALL_UNITS) {
        match blocking(s.store(), |st| st.residents()).await {
            Ok(rs) => {
                let mut u: Vec<String> = rs.into_iter().map(|r| r.unit).collect();
                u.sort();
                u.dedup();
                u
            }
            Err(e) => return store_failed(e, lang, false),
        }
    } else {
        who.principal.units.clone()
    };
    let body = render(lang, &q, &units, figures.as_deref(), error);
    page(
        status,
        layout(
            lang,
            Some(&who.principal),
            words(lang, "benefits_title"),
            "benefits",
            &body,
            None,
        ),
    )
}

/// A decimal number with the language's decimal sign.
fn decimal(lang: Lang, x: f64, places: usize) -> String {
    let s = format!("{x:.places$}");
    match lang {
        Lang::Nb => s.replace('.', ","),
        Lang::En => s,
    }
}

/// A share as a percentage: "12,5 %" / "12.5%".
pub fn percent(lang: Lang, share: f64) -> String {
    let p = decimal(lang, share * 100.0, 1);
    match lang {
        Lang::Nb => format!("{p} %"),
        Lang::En => format!("{p}%"),
    }
}

/// A duration in words: "2 t 5 min" / "2 h 5 min", "1 min 12 s", "45 s",
/// "3 d 4 t".
pub fn duration(lang: Lang, secs: f64) -> String {
    let s = secs.round().max(0.0) as u64;
    let hour = if lang == Lang::Nb { "t" } else { "h" };
    let (d, h, m, sec) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    if d > 0 {
        format!("{d} d {h} {hour}")
    } else if h > 0 {
        format!("{h} {hour} {m} min")
    } else if m > 0 {
        format!("{m} min {sec} s")
    } else {
        format!("{sec} s")
    }
}

fn kind_label(lang: Lang, wire: &str) -> String {
    match EventKind::from_wire(wire) {
        Some(k) => {
            let info = k.info();
            match lang {
                Lang::Nb => info.label_nb.to_string(),
                Lang::En => info.label_en.to_string(),
            }
        }
        None => wire.to_string(),
    }
}

fn stat_cells(lang: Lang, s: &Stat) -> String {
    let cell = |v: Option<f64>| match v {
        Some(x) => format!(
            r#"<td><span class="duration">{}</span> <span class="hint">({} s)</span></td>"#,
            esc(&duration(lang, x)),
            esc(&decimal(lang, x, 1))
        ),
        None => format!("<td>{}</td>", esc(words(lang, "not_measured"))),
    };
    format!("<td>{}</td>{}{}", s.count, cell(s.median_s), cell(s.p90_s))
}

fn uptime_table(
    lang: Lang,
    id: &str,
    caption: &str,
    rows: &[Uptime],
    mean: Option<f64>,
    name_col: &str,
) -> String {
    let w = |k| words(lang, k);
    if rows.is_empty() {
        return format!(
            r#"<h2 id="{id}-heading">{caption}</h2><p>{}</p>"#,
            esc(w("none_yet")),
            caption = esc(caption),
        );
    }
    let body: String = rows
        .iter()
        .map(|u| {
            format!(
                r#"<tr><th scope="row">{name}</th><td>{gw}</td><td>{up}</td><td>{down}</td><td>{n}</td></tr>"#,
                name = esc(&u.id),
                gw = esc(&u.gateway),
                up = esc(&percent(lang, u.uptime)),
                down = esc(&duration(lang, u.down_s as f64)),
                n = u.outages,
            )
        })
        .collect();
    format!(
        r#"<h2 id="{id}-heading">{caption}</h2><p>{mean_label}: <strong id="{id}-mean">{mean}</strong></p><table id="{id}-table" aria-labelledby="{id}-heading"><thead><tr><th scope="col">{name}</th><th scope="col">{gw}</th><th scope="col">{up}</th><th scope="col">{down}</th><th scope="col">{n}</th></tr></thead><tbody>{body}</tbody></table>"#,
        caption = esc(caption),
        mean_label = esc(w("uptime_mean")),
        mean = esc(&mean.map_or_else(|| w("not_measured").to_string(), |m| percent(lang, m))),
        name = esc(name_col),
        gw = esc(super::i18n::t(lang, "gateway")),
        up = esc(w("uptime")),
        down = esc(w("downtime")),
        n = esc(w("outages")),
    )
}

/// The page's `<main>` content.
pub fn render(
    lang: Lang,
    q: &HashMap<String, String>,
    units: &[String],
    f: Option<&Figures>,
    error: Option<&str>,
) -> String {
    let w = |k| words(lang, k);
    let v = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    let chosen = v("unit");
    let mut options = format!(
        r#"<option value=""{}>{}</option>"#,
        if chosen.is_empty() { " selected" } else { "" },
        esc(w("all_my_units"))
    );
    for u in units.iter().filter(|u| u.as_str() != ALL_UNITS) {
        options.push_str(&format!(
            r#"<option value="{v}"{sel}>{v}</option>"#,
            v = esc(u),
            sel = if u == chosen { " selected" } else { "" },
        ));
    }
    let (from, to) = match f {
        Some(f) => (f.from.to_string(), f.to.to_string()),
        None => (v("from").to_string(), v("to").to_string()),
    };
    let mut out = format!(
        r#"<h1>{title}</h1><p>{intro}</p>
<form method="get" action="/benefits" id="benefits-form" aria-labelledby="benefits-form-heading">
<h2 id="benefits-form-heading">{form_h}</h2>{error}
<label for="unit">{unit_l}</label><select id="unit" name="unit">{options}</select>
<label for="from">{from_l}</label><input type="date" id="from" name="from" value="{from}">
<label for="to">{to_l}</label><input type="date" id="to" name="to" value="{to}">
<p><button type="submit" id="benefits-button">{show}</button></p>
</form>"#,
        title = esc(w("benefits_title")),
        intro = esc(w("benefits_intro")),
        form_h = esc(w("benefits_form")),
        error = error
            .map(|e| format!(
                r#"<p class="error" id="benefits-error" role="alert">{}: {}</p>"#,
                esc(w("bad_period")),
                esc(e)
            ))
            .unwrap_or_default(),
        unit_l = esc(super::i18n::t(lang, "unit")),
        from_l = esc(w("from_date")),
        to_l = esc(w("to_date")),
        from = esc(&from),
        to = esc(&to),
        show = esc(w("show")),
    );
    let Some(f) = f else { return out };

    // Summary, in words.
    let false_share = match f.false_alarm_share {
        Some(s) => format!(
            "{} ({} {} {} {})",
            percent(lang, s),
            f.causes.get("false").copied().unwrap_or(0),
            w("of"),
            f.care_closed,
            w("false_basis")
        ),
        None => w("not_measured").to_string(),
    };
    let median = |s: &Stat| {
        s.median_s
            .map_or_else(|| w("not_measured").to_string(), |x| duration(lang, x))
    };
    out.push_str(&format!(
        r#"<section id="benefits-summary" aria-labelledby="summary-heading"><h2 id="summary-heading">{summary}</h2><dl>
<dt>{period_l}</dt><dd id="benefits-period">{from} – {to} ({days} d)</dd>
<dt>{alarms_l}</dt><dd id="benefits-alarms">{alarms} ({care} {care_l}, {tech} {tech_l})</dd>
<dt>{ack_l} ({median_l})</dt><dd id="benefits-ack-median">{ack}</dd>
<dt>{close_l} ({median_l})</dt><dd id="benefits-close-median">{close}</dd>
<dt>{false_l}</dt><dd id="benefits-false-share">{false_share}</dd>
<dt>{dev_l} ({mean_l})</dt><dd id="benefits-device-uptime">{dev}</dd>
<dt>{gw_l} ({mean_l})</dt><dd id="benefits-gateway-uptime">{gw}</dd>
</dl></section>"#,
        summary = esc(w("summary")),
        period_l = esc(w("period")),
        from = f.from,
        to = f.to,
        days = f.days,
        alarms_l = esc(w("alarms_raised")),
        alarms = f.alarms,
        care = f.care_alarms,
        care_l = esc(w("care")),
        tech = f.technical_alarms,
        tech_l = esc(w("technical")),
        ack_l = esc(w("to_acknowledge")),
        close_l = esc(w("to_close")),
        median_l = esc(w("median")),
        ack = esc(&median(&f.time_to_acknowledge)),
        close = esc(&median(&f.time_to_close)),
        false_l = esc(w("false_share")),
        false_share = esc(&false_share),
        dev_l = esc(w("uptime_devices")),
        gw_l = esc(w("uptime_gateways")),
        mean_l = esc(w("uptime_mean")),
        dev = esc(&f
            .device_uptime_mean
            .map_or_else(|| w("not_measured").to_string(), |m| percent(lang, m))),
        gw = esc(&f
            .gateway_uptime_mean
            .map_or_else(|| w("not_measured").to_string(), |m| percent(lang, m))),
    ));

    // Response times.
    out.push_str(&format!(
        r#"<h2 id="response-heading">{h}</h2><table id="response-table"><caption>{cap}</caption><thead><tr><th scope="col">{m}</th><th scope="col">{c}</th><th scope="col">{med}</th><th scope="col">{p90}</th></tr></thead><tbody><tr><th scope="row">{ack}</th>{ack_cells}</tr><tr><th scope="row">{close}</th>{close_cells}</tr></tbody></table>"#,
        h = esc(w("response_times")),
        cap = esc(w("response_caption")),
        m = esc(w("measure")),
        c = esc(w("count")),
        med = esc(w("median")),
        p90 = esc(w("p90")),
        ack = esc(w("to_acknowledge")),
        close = esc(w("to_close")),
        ack_cells = stat_cells(lang, &f.time_to_acknowledge),
        close_cells = stat_cells(lang, &f.time_to_close),
    ));

    // Per kind.
    let kinds: Vec<&String> = f.per_kind.keys().collect();
    if kinds.is_empty() {
        out.push_str(&format!(
            r#"<h2 id="per-kind-heading">{}</h2><p>{}</p>"#,
            esc(w("per_kind")),
            esc(w("none_yet"))
        ));
    } else {
        let rows: String = f
            .per_kind
            .iter()
            .map(|(k, n)| {
                format!(
                    r#"<tr><th scope="row">{}</th><td>{n}</td></tr>"#,
                    esc(&kind_label(lang, k))
                )
            })
            .collect();
        out.push_str(&format!(
            r#"<h2 id="per-kind-heading">{h}</h2><table id="per-kind-table" aria-labelledby="per-kind-heading"><thead><tr><th scope="col">{kind}</th><th scope="col">{count}</th></tr></thead><tbody>{rows}</tbody></table>"#,
            h = esc(w("per_kind")),
            kind = esc(super::i18n::t(lang, "kind")),
            count = esc(w("count")),
        ));
    }

    // Per day: a column per kind seen in the period.
    let head: String = kinds
        .iter()
        .map(|k| format!(r#"<th scope="col">{}</th>"#, esc(&kind_label(lang, k))))
        .collect();
    let rows: String = f
        .per_day
        .iter()
        .map(|(day, counts)| {
            let cells: String = kinds
                .iter()
                .map(|k| format!("<td>{}</td>", counts.get(*k).copied().unwrap_or(0)))
                .collect();
            format!(
                r#"<tr><th scope="row">{day}</th><td>{}</td>{cells}</tr>"#,
                counts.values().sum::<usize>(),
                day = esc(day),
            )
        })
        .collect();
    out.push_str(&format!(
        r#"<h2 id="per-day-heading">{h}</h2><table id="per-day-table" aria-labelledby="per-day-heading"><thead><tr><th scope="col">{day}</th><th scope="col">{total}</th>{head}</tr></thead><tbody>{rows}</tbody></table>"#,
        h = esc(w("per_day")),
        day = esc(w("day")),
        total = esc(w("total")),
    ));

    // Causes.
    let cause_rows: String = Cause::ALL
        .iter()
        .map(|c| (c.as_str(), c.label(lang)))
        .chain([("none", w("cause_none"))])
        .map(|(key, label)| {
            format!(
                r#"<tr><th scope="row">{}</th><td>{}</td></tr>"#,
                esc(label),
                f.causes.get(key).copied().unwrap_or(0)
            )
        })
        .collect();
    out.push_str(&format!(
        r#"<h2 id="causes-heading">{h}</h2><p>{false_l}: <strong>{false_share}</strong></p><table id="causes-table" aria-labelledby="causes-heading"><thead><tr><th scope="col">{cause}</th><th scope="col">{count}</th></tr></thead><tbody>{cause_rows}</tbody></table>"#,
        h = esc(w("causes")),
        false_l = esc(w("false_share")),
        false_share = esc(&false_share),
        cause = esc(super::i18n::t(lang, "cause_label")),
        count = esc(w("count")),
    ));

    // Uptime.
    out.push_str(&format!(r#"<p class="hint">{}</p>"#, esc(w("uptime_note"))));
    out.push_str(&uptime_table(
        lang,
        "device-uptime",
        w("uptime_devices"),
        &f.devices,
        f.device_uptime_mean,
        super::i18n::t(lang, "device"),
    ));
    out.push_str(&uptime_table(
        lang,
        "gateway-uptime",
        w("uptime_gateways"),
        &f.gateways,
        f.gateway_uptime_mean,
        super::i18n::t(lang, "gateway"),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::benefits::{compute, Date};

    fn who(units: &[&str]) -> Principal {
        Principal {
            username: "kari".into(),
            display_name: "Kari".into(),
            role: Role::Operator,
            units: units.iter().map(|u| u.to_string()).collect(),
            groups: vec![],
            lang: Lang::Nb,
            csrf: String::new(),
        }
    }

    #[test]
    fn a_user_sees_the_figures_of_their_own_units_only() {
        let kari = who(&["sentrum", "nord"]);
        assert_eq!(
            scope_for(&kari, None),
            Some((Scope::Units(vec!["sentrum".into(), "nord".into()]), None))
        );
        assert_eq!(
            scope_for(&kari, Some("nord")),
            Some((Scope::Units(vec!["nord".into()]), Some("nord".into())))
        );
        assert_eq!(scope_for(&kari, Some("sør")), None);
        assert_eq!(scope_for(&who(&["*"]), Some(" ")), Some((Scope::All, None)));
        assert!(scope_for(&who(&["*"]), Some("sør")).is_some());
    }

    #[test]
    fn numbers_are_said_in_words_in_each_language() {
        assert_eq!(duration(Lang::Nb, 72.0), "1 min 12 s");
        assert_eq!(duration(Lang::En, 7500.0), "2 h 5 min");
        assert_eq!(duration(Lang::Nb, 7500.0), "2 t 5 min");
        assert_eq!(duration(Lang::En, 45.4), "45 s");
        assert_eq!(percent(Lang::Nb, 0.125), "12,5 %");
        assert_eq!(percent(Lang::En, 0.125), "12.5%");
    }

    #[test]
    fn the_page_has_a_labelled_form_and_tables_with_header_scopes() {
        let p = Period {
            from: Date::parse("2025-01-01").unwrap(),
            to: Date::parse("2025-01-03").unwrap(),
        };
        let f = compute(
            Some("sentrum".into()),
            &[],
            &[],
            &["gw-1".to_string()],
            p,
            u64::MAX,
        );
        for lang in [Lang::Nb, Lang::En] {
            let html = render(lang, &HashMap::new(), &["sentrum".into()], Some(&f), None);
            for id in ["unit", "from", "to"] {
                assert!(html.contains(&format!(r#"<label for="{id}">"#)), "{id}");
            }
            assert!(html.contains(r#"value="2025-01-01""#));
            assert!(html.contains(r#"<th scope="row">2025-01-02</th>"#));
            assert!(html.contains(r#"id="gateway-uptime-table""#));
            assert!(html.contains(r#"<th scope="col">"#));
            assert!(!html.contains("<th>"), "every header has a scope");
        }
        let html = render(Lang::En, &HashMap::new(), &[], None, Some("bad"));
        assert!(html.contains(r#"id="benefits-error" role="alert""#));
    }
}
