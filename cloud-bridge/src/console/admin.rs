//! Administration, for administrators only (`docs/console.md`): users
//! (`/admin/users`), the residents register (`/admin/residents`) and the
//! audit log (`/admin/audit`, `/console/api/audit`).
//!
//! - Anyone else gets 403 and an audit entry `denied`, before anything is
//!   read; a write without the session's CSRF token gets 403 and `denied`
//!   and changes nothing.
//! - Every change is audited in the transaction that makes it
//!   (`user_create`, `resident_put`, by `access.rs`); a refused user is
//!   audited as `user_create` with the reason, so a run of bad attempts
//!   shows. Listing the register is a view of residents' data: audited as
//!   `view_resident` on `resident/*`.
//! - A refused form comes back as 422 with what was typed (never the
//!   password) and `#admin-error` (`role="alert"`) saying what to fix.
//!
//! The words of these pages and the benefits page are in [`words`], in
//! both languages; the console's shared words come from `t`.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::html::{esc, layout, page, time_tag, utc};
use super::i18n::t;
use super::{
    blocking, csrf_refused, denied, json_error, store_failed, ApiUser, ConsoleState, FormData,
    PageUser, Who,
};
use crate::access::{AuditEntry, AuditQuery, Lang, NewUser, Resident, Role, User, UserError};
use crate::benefits::Date;
use crate::store::now_ms;

/// The administration routes.
pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/admin/users", get(users_page).post(create_user))
        .route(
            "/admin/users/{username}/disable",
            axum::routing::post(disable_user),
        )
        .route(
            "/admin/users/{username}/enable",
            axum::routing::post(enable_user),
        )
        .route("/admin/residents", get(residents_page).post(put_resident))
        .route("/admin/audit", get(audit_page))
        .route("/console/api/audit", get(audit_json))
}

/// Audit entries shown at most.
pub const MAX_AUDIT_ROWS: usize = 1000;
const DEFAULT_AUDIT_ROWS: usize = 200;

/// `(key, bokmål, English)`: the words of the administration and benefits
/// pages.
const WORDS: &[(&str, &str, &str)] = &[
    ("users_title", "Brukere", "Users"),
    ("users_caption", "Brukere med tilgang til konsollet", "Users with access to the console"),
    ("add_user", "Legg til bruker", "Add a user"),
    ("display_name", "Fullt navn", "Full name"),
    ("new_password", "Passord (minst 10 tegn)", "Password (at least 10 characters)"),
    ("role", "Rolle", "Role"),
    ("role_operator", "Operatør", "Operator"),
    ("role_nurse", "Sykepleier", "Nurse"),
    ("role_technician", "Tekniker", "Technician"),
    ("role_administrator", "Administrator", "Administrator"),
    ("units_field", "Enheter/soner (kommaseparert, * for alle)", "Units (comma-separated, * for all)"),
    ("groups_field", "Eskaleringsgrupper (kommaseparert)", "Escalation groups (comma-separated)"),
    ("units_col", "Enheter/soner", "Units"),
    ("groups_col", "Grupper", "Groups"),
    ("lang_field", "Språk", "Language"),
    ("lang_nb", "Norsk bokmål", "Norwegian bokmål"),
    ("lang_en", "Engelsk", "English"),
    ("status_col", "Status", "Status"),
    ("status_active", "Aktiv", "Active"),
    ("status_locked", "Sperret til", "Locked until"),
    ("status_disabled", "Deaktivert", "Disabled"),
    ("action_col", "Handling", "Action"),
    ("disable", "Deaktiver", "Disable"),
    ("enable", "Aktiver", "Enable"),
    ("err_disable_self", "Du kan ikke deaktivere deg selv.", "You cannot disable yourself."),
    ("err_no_such_user", "Det finnes ingen slik bruker.", "There is no such user."),
    ("create_user", "Opprett bruker", "Create user"),
    ("user_created", "Brukeren er opprettet:", "User created:"),
    ("no_users", "Ingen brukere ennå.", "No users yet."),
    ("residents_title", "Beboere", "Residents"),
    ("residents_caption", "Beboerregisteret", "The residents register"),
    ("add_resident", "Legg til eller endre beboer", "Add or change a resident"),
    ("resident_id", "Pseudonym-ID (som gatewayen bruker)", "Pseudonymous id (as the gateway uses)"),
    ("resident_id_col", "ID", "Id"),
    ("resident_name", "Navn", "Name"),
    ("save_resident", "Lagre beboer", "Save resident"),
    ("resident_saved", "Beboeren er lagret:", "Resident saved:"),
    ("no_residents", "Ingen beboere i registeret ennå.", "No residents in the register yet."),
    ("resident_hint", "En beboer med samme ID blir erstattet. Navn sendes aldri til gatewayen.", "A resident with the same id is replaced. Names never travel to the gateway."),
    ("audit_title", "Logg", "Audit log"),
    ("audit_caption", "Logg, nyeste først", "Audit log, newest first"),
    ("audit_search", "Søk i loggen", "Search the log"),
    ("actor", "Hvem", "Actor"),
    ("action", "Handling", "Action"),
    ("target", "Gjelder (del av teksten)", "Target (part of the text)"),
    ("target_col", "Gjelder", "Target"),
    ("outcome", "Utfall", "Outcome"),
    ("remote", "Adresse", "Address"),
    ("from_date", "Fra dato", "From date"),
    ("to_date", "Til dato", "To date"),
    ("search", "Søk", "Search"),
    ("no_entries", "Ingen oppføringer.", "No entries."),
    ("entries_shown", "oppføringer vist (høyst", "entries shown (at most"),
    ("bad_date", "Datoen må skrives ÅÅÅÅ-MM-DD.", "Dates are written YYYY-MM-DD."),
    ("error_intro", "Rett opp dette og prøv igjen:", "Fix this and try again:"),
    ("err_role", "Velg en rolle.", "Choose a role."),
    ("err_lang", "Velg et språk.", "Choose a language."),
    ("err_display_name", "Fullt navn kan være høyst 100 tegn.", "Full name can be at most 100 characters."),
    ("err_list", "Hver enhet og gruppe må være 1–64 tegn, uten komma.", "Each unit and group must be 1–64 characters."),
    ("err_bad_username", "Brukernavnet må være 1–64 tegn av a–z, 0–9, «.», «_» eller «-».", "The username must be 1–64 characters of a–z, 0–9, '.', '_' or '-'."),
    ("err_exists", "Det finnes allerede en bruker med dette brukernavnet.", "A user with this username exists already."),
    ("err_weak", "Passordet må være minst 10 tegn.", "The password must be at least 10 characters."),
    ("err_no_units", "En bruker trenger minst én enhet/sone (eller * for alle).", "A user needs at least one unit (or * for all)."),
    ("err_resident_id", "ID må være 1–64 tegn av bokstaver, tall, «.», «_» eller «-».", "The id must be 1–64 characters of letters, digits, '.', '_' or '-'."),
    ("err_resident_name", "Navn er påkrevd, høyst 200 tegn.", "The name is required, at most 200 characters."),
    ("err_resident_unit", "Enhet/sone er påkrevd, høyst 64 tegn.", "The unit is required, at most 64 characters."),
    ("err_resident_address", "Adressen kan være høyst 300 tegn.", "The address can be at most 300 characters."),
    ("err_resident_notes", "Merknadene kan være høyst 2000 tegn.", "The notes can be at most 2000 characters."),
    ("required", "påkrevd", "required"),
    ("benefits_title", "Gevinster", "Benefits"),
    ("benefits_intro", "Tall som viser at tjenesten virker, for en enhet/sone og en periode. Dager regnes i norsk tid.", "Figures that show the service works, for a unit and a period. Days are counted in Norwegian time."),
    ("benefits_form", "Velg enhet og periode", "Choose unit and period"),
    ("all_my_units", "Alle mine enheter", "All my units"),
    ("show", "Vis", "Show"),
    ("summary", "Sammendrag", "Summary"),
    ("period", "Periode", "Period"),
    ("alarms_raised", "Alarmer i perioden", "Alarms in the period"),
    ("care_and_technical", "omsorg og teknisk", "care and technical"),
    ("care", "omsorg", "care"),
    ("technical", "teknisk", "technical"),
    ("response_times", "Responstider (omsorgsalarmer håndtert av personer)", "Response times (care alarms handled by people)"),
    ("response_caption", "Tid fra alarmen kom inn", "Time from when the alarm came in"),
    ("measure", "Mål", "Measure"),
    ("count", "Antall", "Count"),
    ("median", "Median", "Median"),
    ("p90", "90-persentil", "90th percentile"),
    ("to_acknowledge", "Tid til alarmen ble tatt", "Time to acknowledge"),
    ("to_close", "Tid til alarmen ble lukket", "Time to close"),
    ("per_kind", "Alarmer per type", "Alarms per kind"),
    ("per_day", "Alarmer per dag", "Alarms per day"),
    ("day", "Dag", "Day"),
    ("total", "Totalt", "Total"),
    ("false_share", "Andel falske alarmer", "False-alarm share"),
    ("false_basis", "av lukkede omsorgsalarmer", "of care alarms closed"),
    ("of", "av", "of"),
    ("causes", "Årsaker (lukkede omsorgsalarmer)", "Causes (care alarms closed)"),
    ("cause_none", "Ikke oppgitt", "Not given"),
    ("uptime_devices", "Oppetid for enheter", "Device uptime"),
    ("uptime_gateways", "Oppetid for gatewayer", "Gateway uptime"),
    ("uptime_mean", "gjennomsnitt", "mean"),
    ("uptime", "Oppetid", "Uptime"),
    ("downtime", "Nedetid", "Downtime"),
    ("outages", "Stille-/frakoblet-alarmer", "Silent/offline alarms"),
    ("uptime_note", "Oppetid er andelen av perioden (fra enheten først ble hørt, til nå) uten en åpen «enhet taus»- eller «gateway frakoblet»-alarm.", "Uptime is the share of the period (from when the device was first heard of, until now) without an open device-silent or gateway-offline alarm."),
    ("none_yet", "Ingen data i perioden.", "No data in the period."),
    ("not_measured", "ikke målt", "not measured"),
    ("bad_period", "Perioden kan ikke brukes", "The period cannot be used"),
    ("period_backwards", "Perioden slutter før den begynner.", "The period ends before it begins."),
    ("period_too_long", "Perioden kan være høyst 366 dager.", "The period can be at most 366 days."),
];

/// A word of these pages in `lang`; an unknown key comes back as itself.
pub(super) fn words(lang: Lang, key: &'static str) -> &'static str {
    WORDS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, nb, en)| match lang {
            Lang::Nb => *nb,
            Lang::En => *en,
        })
        .unwrap_or(key)
}

fn role_label(lang: Lang, role: Role) -> &'static str {
    words(
        lang,
        match role {
            Role::Operator => "role_operator",
            Role::Nurse => "role_nurse",
            Role::Technician => "role_technician",
            Role::Administrator => "role_administrator",
        },
    )
}

/// Administrators only: `None` to go on, else the 403 (audited).
async fn admin_only(s: &ConsoleState, who: &Who, target: &str, as_json: bool) -> Option<Response> {
    if who.principal.is_admin() {
        None
    } else {
        Some(denied(s, who, target, as_json).await)
    }
}

fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

fn field<'a>(f: &'a FormData, name: &str) -> &'a str {
    f.get(name).unwrap_or("")
}

/// A labelled text input.
fn input(id: &str, label: &str, value: &str, kind: &str, required: bool, extra: &str) -> String {
    format!(
        r#"<label for="{id}">{label}</label><input type="{kind}" id="{id}" name="{id}" value="{value}"{req}{extra}>"#,
        label = esc(label),
        value = esc(value),
        req = if required {
            r#" required aria-required="true""#
        } else {
            ""
        },
    )
}

fn error_box(lang: Lang, message: Option<&str>) -> String {
    message
        .map(|m| {
            format!(
                r#"<p class="error" id="admin-error" role="alert">{} {}</p>"#,
                esc(words(lang, "error_intro")),
                esc(m)
            )
        })
        .unwrap_or_default()
}

fn flash(lang: Lang, key: &'static str, what: Option<&String>) -> String {
    what.map(|w| {
        format!(
            r#"<p id="admin-flash" role="status">{} <strong>{}</strong></p>"#,
            esc(words(lang, key)),
            esc(w)
        )
    })
    .unwrap_or_default()
}

// ---- users

fn users_html(
    lang: Lang,
    who: &Who,
    users: &[User],
    form: &FormData,
    error: Option<&str>,
    created: Option<&String>,
) -> String {
    let w = |k| words(lang, k);
    let mut rows = String::new();
    let now = now_ms();
    for u in users {
        let status = if u.disabled {
            esc(w("status_disabled"))
        } else if u.locked_until_ms > now {
            format!(
                "{} {}",
                esc(w("status_locked")),
                time_tag(u.locked_until_ms)
            )
        } else {
            esc(w("status_active"))
        };
        let (verb, key) = if u.disabled {
            ("enable", "enable")
        } else {
            ("disable", "disable")
        };
        let action = if u.username == who.principal.username {
            String::new()
        } else {
            format!(
                r#"<form method="post" action="/admin/users/{id}/{verb}" class="user-{verb}-form"><input type="hidden" name="csrf" value="{csrf}"><button type="submit" class="user-{verb}">{label}<span class="visually-hidden">: {id}</span></button></form>"#,
                id = esc(&u.username),
                csrf = esc(&who.principal.csrf),
                label = esc(w(key)),
            )
        };
        rows.push_str(&format!(
            r#"<tr id="user-{id}"><th scope="row">{name}</th><td>{display}</td><td>{role}</td><td>{units}</td><td>{groups}</td><td>{ulang}</td><td>{status}</td><td>{action}</td></tr>"#,
            id = esc(&u.username),
            name = esc(&u.username),
            display = esc(&u.display_name),
            role = esc(role_label(lang, u.role)),
            units = esc(&u.units.join(", ")),
            groups = esc(&u.groups.join(", ")),
            ulang = esc(w(if u.lang == Lang::Nb { "lang_nb" } else { "lang_en" })),
        ));
    }
    let table = if users.is_empty() {
        format!("<p>{}</p>", esc(w("no_users")))
    } else {
        format!(
            r#"<table id="users-table"><caption>{cap}</caption><thead><tr><th scope="col">{u}</th><th scope="col">{d}</th><th scope="col">{r}</th><th scope="col">{un}</th><th scope="col">{g}</th><th scope="col">{l}</th><th scope="col">{st}</th><th scope="col">{ac}</th></tr></thead><tbody>{rows}</tbody></table>"#,
            cap = esc(w("users_caption")),
            u = esc(t(lang, "username")),
            d = esc(w("display_name")),
            r = esc(w("role")),
            un = esc(w("units_col")),
            g = esc(w("groups_col")),
            l = esc(w("lang_field")),
            st = esc(w("status_col")),
            ac = esc(w("action_col")),
        )
    };
    let role_now = form.get("role").unwrap_or("operator");
    let roles: String = [
        Role::Operator,
        Role::Nurse,
        Role::Technician,
        Role::Administrator,
    ]
    .iter()
    .map(|r| {
        format!(
            r#"<option value="{v}"{sel}>{label}</option>"#,
            v = r.as_str(),
            sel = if r.as_str() == role_now {
                " selected"
            } else {
                ""
            },
            label = esc(role_label(lang, *r)),
        )
    })
    .collect();
    let lang_now = form.get("lang").unwrap_or(lang.as_str());
    let langs: String = [("nb", "lang_nb"), ("en", "lang_en")]
        .iter()
        .map(|(v, k)| {
            format!(
                r#"<option value="{v}"{sel}>{label}</option>"#,
                sel = if *v == lang_now { " selected" } else { "" },
                label = esc(w(k)),
            )
        })
        .collect();
    format!(
        r#"<h1>{title}</h1>{flash}{table}
<h2 id="add-user-heading">{add}</h2>{error}
<form method="post" action="/admin/users" id="user-form" aria-labelledby="add-user-heading">
<input type="hidden" name="csrf" value="{csrf}">
{username}{display}{password}
<label for="role">{role}</label><select id="role" name="role">{roles}</select>
{units}{groups}
<label for="lang">{lang_label}</label><select id="lang" name="lang">{langs}</select>
<p><button type="submit" id="create-user-button">{create}</button></p>
</form>"#,
        title = esc(w("users_title")),
        flash = flash(lang, "user_created", created),
        add = esc(w("add_user")),
        error = error_box(lang, error),
        csrf = esc(&who.principal.csrf),
        username = input(
            "username",
            t(lang, "username"),
            field(form, "username"),
            "text",
            true,
            r#" autocomplete="off" maxlength="64""#
        ),
        display = input(
            "display_name",
            w("display_name"),
            field(form, "display_name"),
            "text",
            false,
            r#" maxlength="100""#
        ),
        password = input(
            "password",
            w("new_password"),
            "",
            "password",
            true,
            r#" autocomplete="new-password" minlength="10""#
        ),
        role = esc(w("role")),
        units = input(
            "units",
            w("units_field"),
            field(form, "units"),
            "text",
            true,
            ""
        ),
        groups = input(
            "groups",
            w("groups_field"),
            field(form, "groups"),
            "text",
            false,
            ""
        ),
        lang_label = esc(w("lang_field")),
        create = esc(w("create_user")),
    )
}

async fn users_response(
    s: &ConsoleState,
    who: &Who,
    status: StatusCode,
    form: &FormData,
    error: Option<&str>,
    created: Option<&String>,
) -> Response {
    let users = match blocking(s.store(), |st| st.users()).await {
        Ok(u) => u,
        Err(e) => return store_failed(e, who.lang(), false),
    };
    let lang = who.lang();
    let body = users_html(lang, who, &users, form, error, created);
    page(
        status,
        layout(
            lang,
            Some(&who.principal),
            words(lang, "users_title"),
            "admin",
            &body,
            None,
        ),
    )
}

async fn users_page(
    State(s): State<ConsoleState>,
    who: PageUser,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = admin_only(&s, &who, "admin/users", false).await {
        return r;
    }
    users_response(
        &s,
        &who,
        StatusCode::OK,
        &FormData::default(),
        None,
        q.get("created"),
    )
    .await
}

async fn disable_user(
    State(s): State<ConsoleState>,
    who: PageUser,
    axum::extract::Path(username): axum::extract::Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    set_disabled(s, who, username, body, true).await
}

async fn enable_user(
    State(s): State<ConsoleState>,
    who: PageUser,
    axum::extract::Path(username): axum::extract::Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    set_disabled(s, who, username, body, false).await
}

/// Disables or enables a user: administrators only, never oneself (the last
/// administrator must not lock everyone out). Their sessions end at once.
async fn set_disabled(
    s: ConsoleState,
    who: PageUser,
    username: String,
    body: Result<Bytes, BytesRejection>,
    disabled: bool,
) -> Response {
    let target = format!("user/{}", username.chars().take(64).collect::<String>());
    if let Some(r) = admin_only(&s, &who, &target, false).await {
        return r;
    }
    let form = match FormData::from_body(body) {
        Ok(f) => f,
        Err(e) => return super::pages::form_refused(e, who.lang(), Some(&who.principal)),
    };
    if !who.csrf_ok(form.get("csrf")) {
        return csrf_refused(&s, &who, &target, false).await;
    }
    let lang = who.lang();
    if username == who.principal.username {
        return users_response(
            &s,
            &who,
            StatusCode::CONFLICT,
            &FormData::default(),
            Some(words(lang, "err_disable_self")),
            None,
        )
        .await;
    }
    let (actor, remote) = (who.principal.username.clone(), who.remote.clone());
    match blocking(s.store(), move |st| {
        st.set_disabled(&username, disabled, &actor, &remote, now_ms())
    })
    .await
    {
        Ok(true) => Redirect::to("/admin/users").into_response(),
        Ok(false) => {
            users_response(
                &s,
                &who,
                StatusCode::NOT_FOUND,
                &FormData::default(),
                Some(words(lang, "err_no_such_user")),
                None,
            )
            .await
        }
        Err(e) => store_failed(e, lang, false),
    }
}

/// The user a form describes, or the key of what is wrong with it.
fn new_user(form: &FormData) -> Result<NewUser, &'static str> {
    let role = Role::parse(field(form, "role")).ok_or("err_role")?;
    let lang = Lang::parse(field(form, "lang")).ok_or("err_lang")?;
    let display_name = field(form, "display_name").trim().to_string();
    if display_name.chars().count() > 100 {
        return Err("err_display_name");
    }
    let units = list(field(form, "units"));
    let groups = list(field(form, "groups"));
    if units.iter().chain(&groups).any(|x| x.chars().count() > 64) {
        return Err("err_list");
    }
    Ok(NewUser {
        username: field(form, "username").trim().to_string(),
        display_name,
        role,
        units,
        groups,
        lang,
        password: field(form, "password").to_string(),
    })
}

async fn create_user(
    State(s): State<ConsoleState>,
    who: PageUser,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Some(r) = admin_only(&s, &who, "admin/users", false).await {
        return r;
    }
    let form = match FormData::from_body(body) {
        Ok(f) => f,
        Err(e) => return super::pages::form_refused(e, who.lang(), Some(&who.principal)),
    };
    if !who.csrf_ok(form.get("csrf")) {
        return csrf_refused(&s, &who, "admin/users", false).await;
    }
    let lang = who.lang();
    let username = field(&form, "username").trim().to_string();
    let refused = match new_user(&form) {
        Err(key) => Some((words(lang, key), key.to_string())),
        Ok(new) => {
            let actor = who.principal.username.clone();
            match blocking(s.store(), move |st| {
                Ok(st.create_user(new, &actor, now_ms()))
            })
            .await
            {
                Ok(Ok(u)) => {
                    return Redirect::to(&format!(
                        "/admin/users?created={}",
                        url_encode(&u.username)
                    ))
                    .into_response()
                }
                Ok(Err(UserError::Store(e))) | Err(e) => return store_failed(e, lang, false),
                Ok(Err(e)) => {
                    let key = match e {
                        UserError::BadUsername => "err_bad_username",
                        UserError::Exists(_) => "err_exists",
                        UserError::WeakPassword => "err_weak",
                        _ => "err_no_units",
                    };
                    Some((words(lang, key), e.to_string()))
                }
            }
        }
    };
    let (message, reason) = refused.unwrap_or_default();
    let entry = AuditEntry::new(
        &who.principal.username,
        "user_create",
        &format!("user/{}", username.chars().take(64).collect::<String>()),
        &format!("refused: {reason}"),
        &who.remote,
        now_ms(),
    );
    if let Err(e) = blocking(s.store(), move |st| st.audit_now(entry)).await {
        return store_failed(e, lang, false);
    }
    users_response(
        &s,
        &who,
        StatusCode::UNPROCESSABLE_ENTITY,
        &form,
        Some(message),
        None,
    )
    .await
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

// ---- residents

fn residents_html(
    lang: Lang,
    who: &Who,
    residents: &[Resident],
    form: &FormData,
    error: Option<&str>,
    saved: Option<&String>,
) -> String {
    let w = |k| words(lang, k);
    let rows: String = residents
        .iter()
        .map(|r| {
            format!(
                r#"<tr id="resident-{id}"><th scope="row">{id}</th><td>{name}</td><td>{unit}</td><td>{address}</td><td>{notes}</td></tr>"#,
                id = esc(&r.id),
                name = esc(&r.name),
                unit = esc(&r.unit),
                address = esc(&r.address),
                notes = esc(&r.notes),
            )
        })
        .collect();
    let table = if residents.is_empty() {
        format!("<p>{}</p>", esc(w("no_residents")))
    } else {
        format!(
            r#"<table id="residents-table"><caption>{cap}</caption><thead><tr><th scope="col">{id}</th><th scope="col">{name}</th><th scope="col">{unit}</th><th scope="col">{address}</th><th scope="col">{notes}</th></tr></thead><tbody>{rows}</tbody></table>"#,
            cap = esc(w("residents_caption")),
            id = esc(w("resident_id_col")),
            name = esc(w("resident_name")),
            unit = esc(t(lang, "unit")),
            address = esc(t(lang, "address")),
            notes = esc(t(lang, "notes")),
        )
    };
    format!(
        r#"<h1>{title}</h1>{flash}{table}
<h2 id="add-resident-heading">{add}</h2>{error}
<p class="hint" id="resident-hint">{hint}</p>
<form method="post" action="/admin/residents" id="resident-form" aria-labelledby="add-resident-heading" aria-describedby="resident-hint">
<input type="hidden" name="csrf" value="{csrf}">
{id}{name}{unit}{address}
<label for="notes">{notes_label}</label><textarea id="notes" name="notes" maxlength="2000">{notes}</textarea>
<p><button type="submit" id="save-resident-button">{save}</button></p>
</form>"#,
        title = esc(w("residents_title")),
        flash = flash(lang, "resident_saved", saved),
        add = esc(w("add_resident")),
        error = error_box(lang, error),
        hint = esc(w("resident_hint")),
        csrf = esc(&who.principal.csrf),
        id = input(
            "id",
            w("resident_id"),
            field(form, "id"),
            "text",
            true,
            r#" maxlength="64" autocomplete="off""#
        ),
        name = input(
            "name",
            w("resident_name"),
            field(form, "name"),
            "text",
            true,
            r#" maxlength="200" autocomplete="off""#
        ),
        unit = input(
            "unit",
            t(lang, "unit"),
            field(form, "unit"),
            "text",
            true,
            r#" maxlength="64""#
        ),
        address = input(
            "address",
            t(lang, "address"),
            field(form, "address"),
            "text",
            false,
            r#" maxlength="300" autocomplete="off""#
        ),
        notes_label = esc(t(lang, "notes")),
        notes = esc(field(form, "notes")),
        save = esc(w("save_resident")),
    )
}

async fn residents_response(
    s: &ConsoleState,
    who: &Who,
    status: StatusCode,
    form: &FormData,
    error: Option<&str>,
    saved: Option<&String>,
) -> Response {
    let entry = AuditEntry::new(
        &who.principal.username,
        "view_resident",
        "resident/*",
        "ok: the register listed",
        &who.remote,
        now_ms(),
    );
    let residents = match blocking(s.store(), move |st| {
        st.audit_now(entry)?;
        st.residents()
    })
    .await
    {
        Ok(r) => r,
        Err(e) => return store_failed(e, who.lang(), false),
    };
    let lang = who.lang();
    let body = residents_html(lang, who, &residents, form, error, saved);
    page(
        status,
        layout(
            lang,
            Some(&who.principal),
            words(lang, "residents_title"),
            "admin",
            &body,
            None,
        ),
    )
}

async fn residents_page(
    State(s): State<ConsoleState>,
    who: PageUser,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = admin_only(&s, &who, "admin/residents", false).await {
        return r;
    }
    residents_response(
        &s,
        &who,
        StatusCode::OK,
        &FormData::default(),
        None,
        q.get("saved"),
    )
    .await
}

/// The resident a form describes, or the key of what is wrong with it.
fn resident(form: &FormData) -> Result<Resident, &'static str> {
    let id = field(form, "id").trim();
    let ok_id = !id.is_empty()
        && id.chars().count() <= 64
        && id
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok_id {
        return Err("err_resident_id");
    }
    let name = field(form, "name").trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err("err_resident_name");
    }
    let unit = field(form, "unit").trim();
    if unit.is_empty() || unit.chars().count() > 64 || unit == crate::access::ALL_UNITS {
        return Err("err_resident_unit");
    }
    let address = field(form, "address").trim();
    if address.chars().count() > 300 {
        return Err("err_resident_address");
    }
    let notes = field(form, "notes").trim();
    if notes.chars().count() > crate::alarm::MAX_NOTE_CHARS {
        return Err("err_resident_notes");
    }
    Ok(Resident {
        id: id.into(),
        name: name.into(),
        unit: unit.into(),
        address: address.into(),
        notes: notes.into(),
    })
}

async fn put_resident(
    State(s): State<ConsoleState>,
    who: PageUser,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Some(r) = admin_only(&s, &who, "admin/residents", false).await {
        return r;
    }
    let form = match FormData::from_body(body) {
        Ok(f) => f,
        Err(e) => return super::pages::form_refused(e, who.lang(), Some(&who.principal)),
    };
    if !who.csrf_ok(form.get("csrf")) {
        return csrf_refused(&s, &who, "admin/residents", false).await;
    }
    let lang = who.lang();
    match resident(&form) {
        Ok(r) => {
            let actor = who.principal.username.clone();
            let id = r.id.clone();
            match blocking(s.store(), move |st| st.put_resident(&r, &actor, now_ms())).await {
                Ok(()) => Redirect::to(&format!("/admin/residents?saved={}", url_encode(&id)))
                    .into_response(),
                Err(e) => store_failed(e, lang, false),
            }
        }
        Err(key) => {
            residents_response(
                &s,
                &who,
                StatusCode::UNPROCESSABLE_ENTITY,
                &form,
                Some(words(lang, key)),
                None,
            )
            .await
        }
    }
}

// ---- audit log

/// The audit query a request asks for, or the key of what is wrong.
fn audit_query(q: &HashMap<String, String>) -> Result<AuditQuery, &'static str> {
    let text = |k: &str| {
        q.get(k)
            .map(|v| v.trim().chars().take(200).collect::<String>())
            .filter(|v| !v.is_empty())
    };
    let date = |k: &str| -> Result<Option<Date>, &'static str> {
        match text(k) {
            None => Ok(None),
            Some(v) => Date::parse(&v).map(Some).ok_or("bad_date"),
        }
    };
    let limit = q
        .get("limit")
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(DEFAULT_AUDIT_ROWS)
        .clamp(1, MAX_AUDIT_ROWS);
    Ok(AuditQuery {
        actor: text("actor"),
        action: text("action"),
        target: text("target"),
        since_ms: date("from")?.map(Date::start_ms),
        until_ms: date("to")?.map(|d| d.next().start_ms().saturating_sub(1)),
        limit,
    })
}

fn audit_html(
    lang: Lang,
    q: &HashMap<String, String>,
    entries: &[AuditEntry],
    limit: usize,
    error: Option<&str>,
) -> String {
    let w = |k| words(lang, k);
    let v = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    let rows: String = entries
        .iter()
        .map(|e| {
            format!(
                r#"<tr><td>{time} <span class="visually-hidden">{iso}</span></td><td>{actor}</td><td>{action}</td><td>{target}</td><td>{outcome}</td><td>{remote}</td></tr>"#,
                time = time_tag(e.at_ms),
                iso = esc(&utc(e.at_ms).0),
                actor = esc(&e.actor),
                action = esc(&e.action),
                target = esc(&e.target),
                outcome = esc(&e.outcome),
                remote = esc(&e.remote),
            )
        })
        .collect();
    let table = if entries.is_empty() {
        format!(r#"<p id="audit-empty">{}</p>"#, esc(w("no_entries")))
    } else {
        format!(
            r#"<p>{n} {shown} {limit})</p><table id="audit-table"><caption>{cap}</caption><thead><tr><th scope="col">{time}</th><th scope="col">{actor}</th><th scope="col">{action}</th><th scope="col">{target}</th><th scope="col">{outcome}</th><th scope="col">{remote}</th></tr></thead><tbody>{rows}</tbody></table>"#,
            n = entries.len(),
            shown = esc(w("entries_shown")),
            cap = esc(w("audit_caption")),
            time = esc(t(lang, "time")),
            actor = esc(w("actor")),
            action = esc(w("action")),
            target = esc(w("target_col")),
            outcome = esc(w("outcome")),
            remote = esc(w("remote")),
        )
    };
    format!(
        r#"<h1>{title}</h1>
<form method="get" action="/admin/audit" id="audit-form" aria-labelledby="audit-search-heading">
<h2 id="audit-search-heading">{search_h}</h2>{error}
{actor}{action}{target}{from}{to}
<p><button type="submit" id="audit-search-button">{search}</button></p>
</form>
{table}"#,
        title = esc(w("audit_title")),
        search_h = esc(w("audit_search")),
        error = error_box(lang, error),
        actor = input("actor", w("actor"), v("actor"), "text", false, ""),
        action = input("action", w("action"), v("action"), "text", false, ""),
        target = input("target", w("target"), v("target"), "text", false, ""),
        from = input("from", w("from_date"), v("from"), "date", false, ""),
        to = input("to", w("to_date"), v("to"), "date", false, ""),
        search = esc(w("search")),
    )
}

async fn audit_page(
    State(s): State<ConsoleState>,
    who: PageUser,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = admin_only(&s, &who, "admin/audit", false).await {
        return r;
    }
    let lang = who.lang();
    let (status, entries, limit, error) = match audit_query(&q) {
        Ok(query) => {
            let limit = query.limit;
            match blocking(s.store(), move |st| st.audit(&query)).await {
                Ok(e) => (StatusCode::OK, e, limit, None),
                Err(e) => return store_failed(e, lang, false),
            }
        }
        Err(key) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Vec::new(),
            0,
            Some(words(lang, key)),
        ),
    };
    let body = audit_html(lang, &q, &entries, limit, error);
    page(
        status,
        layout(
            lang,
            Some(&who.principal),
            words(lang, "audit_title"),
            "admin",
            &body,
            None,
        ),
    )
}

async fn audit_json(
    State(s): State<ConsoleState>,
    who: ApiUser,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = admin_only(&s, &who, "console/api/audit", true).await {
        return r;
    }
    let query = match audit_query(&q) {
        Ok(q) => q,
        Err(_) => {
            return json_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "from and to are dates, YYYY-MM-DD",
            )
        }
    };
    match blocking(s.store(), move |st| st.audit(&query)).await {
        Ok(entries) => Json(json!({ "entries": entries })).into_response(),
        Err(e) => store_failed(e, Lang::En, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Principal;

    fn admin() -> Who {
        Who {
            principal: Principal {
                username: "admin".into(),
                display_name: "Admin".into(),
                role: Role::Administrator,
                units: vec!["*".into()],
                groups: vec![],
                lang: Lang::En,
                csrf: "tok".into(),
            },
            token: String::new(),
            remote: String::new(),
        }
    }

    #[test]
    fn every_word_has_both_languages_and_keys_are_unique() {
        for (i, (k, nb, en)) in WORDS.iter().enumerate() {
            assert!(!nb.is_empty() && !en.is_empty(), "{k}");
            assert!(WORDS[..i].iter().all(|(x, _, _)| x != k), "{k} twice");
        }
        assert_eq!(words(Lang::Nb, "users_title"), "Brukere");
    }

    #[test]
    fn a_user_form_is_read_or_refused_with_a_reason() {
        let f = FormData::parse(
            b"username=kari&display_name=Kari+N&password=correct+horse&role=nurse&units=sentrum%2C+nord&groups=home-care&lang=en",
        )
        .unwrap();
        let u = new_user(&f).unwrap();
        assert_eq!(u.role, Role::Nurse);
        assert_eq!(u.units, ["sentrum", "nord"]);
        assert_eq!(u.groups, ["home-care"]);
        assert_eq!(u.lang, Lang::En);
        let f = FormData::parse(b"username=kari&role=boss&lang=en").unwrap();
        assert_eq!(new_user(&f).err(), Some("err_role"));
    }

    #[test]
    fn a_resident_form_is_checked() {
        let ok = FormData::parse(
            b"id=r-17&name=Ola+Nordmann&unit=sentrum&address=Storgata+1&notes=Key+safe",
        )
        .unwrap();
        assert_eq!(resident(&ok).unwrap().id, "r-17");
        for (body, key) in [
            (&b"id=r+17&name=Ola&unit=s"[..], "err_resident_id"),
            (b"id=r-17&name=&unit=s", "err_resident_name"),
            (b"id=r-17&name=Ola&unit=", "err_resident_unit"),
            (b"id=r-17&name=Ola&unit=*", "err_resident_unit"),
        ] {
            assert_eq!(resident(&FormData::parse(body).unwrap()).err(), Some(key));
        }
    }

    #[test]
    fn the_pages_have_labelled_inputs_table_headers_and_escape_values() {
        let user = User {
            username: "kari".into(),
            display_name: "Kari <script>".into(),
            role: Role::Operator,
            units: vec!["sentrum".into()],
            groups: vec![],
            lang: Lang::Nb,
            password_hash: "$argon2id$secret".into(),
            failures: 0,
            locked_until_ms: 0,
            disabled: false,
            created_ms: 0,
        };
        let html = users_html(
            Lang::En,
            &admin(),
            &[user],
            &FormData::default(),
            Some("bad"),
            None,
        );
        assert!(html.contains("Kari &lt;script&gt;"));
        assert!(!html.contains("argon2"), "never the hash");
        assert!(html.contains(r#"<th scope="col">"#) && html.contains(r#"<th scope="row">"#));
        for id in [
            "username",
            "display_name",
            "password",
            "role",
            "units",
            "groups",
            "lang",
        ] {
            assert!(html.contains(&format!(r#"<label for="{id}">"#)), "{id}");
            assert!(html.contains(&format!(r#"id="{id}" name="{id}""#)), "{id}");
        }
        assert!(html.contains(r#"id="admin-error" role="alert""#));
        assert!(html.contains(r#"name="csrf" value="tok""#));
        let html = residents_html(Lang::Nb, &admin(), &[], &FormData::default(), None, None);
        for id in ["id", "name", "unit", "address", "notes"] {
            assert!(html.contains(&format!(r#"<label for="{id}">"#)), "{id}");
        }
    }

    #[test]
    fn an_audit_search_reads_dates_as_norwegian_days_and_caps_the_limit() {
        let q: HashMap<String, String> = [
            ("actor", " kari "),
            ("from", "2025-01-15"),
            ("to", "2025-01-15"),
            ("limit", "999999"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let a = audit_query(&q).unwrap();
        assert_eq!(a.actor.as_deref(), Some("kari"));
        assert_eq!(a.action, None);
        assert_eq!(a.limit, MAX_AUDIT_ROWS);
        assert_eq!(a.since_ms, Some(1_736_895_600_000));
        assert_eq!(a.until_ms, Some(1_736_895_600_000 + 86_400_000 - 1));
        let bad: HashMap<String, String> = [("from".to_string(), "15.01.2025".to_string())]
            .into_iter()
            .collect();
        assert_eq!(audit_query(&bad).err(), Some("bad_date"));
    }
}
