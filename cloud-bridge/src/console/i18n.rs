//! The console's words in Norwegian bokmål and English: `t(lang, key)`.
//!
//! One table, so a missing translation shows in review as a row with one
//! side empty. An unknown key comes back as itself (visible, not a panic);
//! a unit test checks that every key has both languages.

use crate::access::Lang;

/// `(key, bokmål, English)`.
const WORDS: &[(&str, &str, &str)] = &[
    ("app_name", "Trygg", "Trygg"),
    ("skip_link", "Hopp til hovedinnhold", "Skip to main content"),
    ("nav_label", "Hovedmeny", "Main menu"),
    ("nav_board", "Alarmtavle", "Alarm board"),
    ("nav_benefits", "Gevinster", "Benefits"),
    ("nav_devices", "Enheter", "Devices"),
    ("devices_title", "Enheter", "Devices"),
    ("devices_intro", "Enhetene som har sendt hendelser, i dine enheter/soner. Par, bytt og fjern enheter på gatewayen (trygg-gateway device).", "The devices that have sent events, in your units. Pair, swap and remove devices on the gateway (trygg-gateway device)."),
    ("devices_none", "Ingen enheter har sendt noe ennå.", "No device has sent anything yet."),
    ("devices_caption", "Kjente enheter", "Known devices"),
    ("devices_device", "Enhet", "Device"),
    ("devices_gateway", "Gateway", "Gateway"),
    ("devices_resident", "Beboer", "Resident"),
    ("devices_unit", "Enhet/sone", "Unit"),
    ("devices_first", "Først hørt", "First heard"),
    ("nav_users", "Brukere", "Users"),
    ("nav_residents", "Beboere", "Residents"),
    ("nav_audit", "Logg", "Audit log"),
    ("nav_gateways", "Gatewayer", "Gateways"),
    ("nav_enrollment", "Innrullering", "Enrollment"),
    ("signed_in_as", "Innlogget som", "Signed in as"),
    ("logout", "Logg ut", "Log out"),
    ("language", "Språk", "Language"),
    ("switch_to_other", "English", "Norsk"),
    ("login_title", "Logg inn", "Log in"),
    ("username", "Brukernavn", "Username"),
    ("password", "Passord", "Password"),
    ("login_button", "Logg inn", "Log in"),
    (
        "login_error",
        "Feil brukernavn eller passord, eller kontoen er midlertidig sperret etter for mange forsøk.",
        "Wrong username or password, or the account is locked for a while after too many tries.",
    ),
    ("board_title", "Alarmtavle", "Alarm board"),
    ("care_alarms", "Omsorgsalarmer", "Care alarms"),
    ("technical_alarms", "Tekniske alarmer", "Technical alarms"),
    ("no_alarms", "Ingen åpne alarmer.", "No open alarms."),
    ("severity_red", "Rød: haster", "Red: urgent"),
    ("severity_yellow", "Gul: følg opp", "Yellow: follow up"),
    ("state_open", "Ny", "New"),
    ("state_acknowledged", "Tatt", "Taken"),
    ("state_closed", "Lukket", "Closed"),
    ("taken_by", "Tatt av", "Taken by"),
    ("presses", "trykk", "presses"),
    ("reports", "meldinger", "reports"),
    ("last", "siste", "last"),
    ("escalated_to", "Eskalert til", "Escalated to"),
    ("your_group", "din gruppe", "your group"),
    ("open_alarm", "Vis alarm", "Open alarm"),
    ("acknowledge", "Ta alarmen", "Acknowledge"),
    ("resident", "Beboer", "Resident"),
    ("room", "Rom", "Room"),
    ("device", "Enhet", "Device"),
    ("gateway", "Gateway", "Gateway"),
    ("time", "Tid", "Time"),
    ("state", "Status", "State"),
    ("severity", "Alvorlighet", "Severity"),
    ("kind", "Type", "Kind"),
    ("address", "Adresse", "Address"),
    ("notes", "Merknader til den som rykker ut", "Notes for responders"),
    ("unit", "Enhet/sone", "Unit"),
    ("not_registered", "ikke i beboerregisteret", "not in the residents register"),
    ("history", "Historikk", "History"),
    ("h_raised", "Alarmen kom inn", "Alarm raised"),
    ("h_repeated", "Gjentatt, siste gang", "Repeated, last at"),
    ("h_acknowledged", "Tatt av", "Taken by"),
    ("h_closed", "Lukket av", "Closed by"),
    ("h_escalated", "Eskalert til", "Escalated to"),
    ("alarm_title", "Alarm", "Alarm"),
    ("close_title", "Lukk alarmen", "Close the alarm"),
    (
        "note_label",
        "Notat: hva ble funnet, hva ble gjort (påkrevd)",
        "Note: what was found, what was done (required)",
    ),
    ("cause_label", "Årsak", "Cause"),
    ("cause_real", "Reell alarm", "Real alarm"),
    ("cause_false", "Falsk alarm", "False alarm"),
    ("cause_test", "Test", "Test"),
    ("cause_technical", "Teknisk feil", "Technical fault"),
    ("close_button", "Lukk alarmen", "Close alarm"),
    (
        "error_note",
        "Skriv et notat om hva som ble funnet og gjort (1–2000 tegn).",
        "Write a note on what was found and done (1–2000 characters).",
    ),
    (
        "error_cause",
        "Velg en årsak: reell alarm, falsk alarm, test eller teknisk feil.",
        "Choose a cause: real alarm, false alarm, test or technical fault.",
    ),
    ("error_taken", "Alarmen er allerede tatt av", "The alarm is already taken by"),
    ("error_closed", "Alarmen er allerede lukket av", "The alarm is already closed by"),
    ("forbidden_title", "Ingen tilgang", "No access"),
    (
        "error_forbidden",
        "Du har ikke tilgang til dette. Forsøket er logget.",
        "You do not have access to this. The attempt has been logged.",
    ),
    (
        "error_csrf",
        "Skjemaet var utløpt eller ikke fra denne økten. Last siden på nytt og prøv igjen. Forsøket er logget.",
        "The form had expired or was not from this session. Reload the page and try again. The attempt has been logged.",
    ),
    (
        "error_too_large",
        "Skjemaet er for stort (høyst 16 KiB). Ingenting er endret.",
        "The form is too large (at most 16 KiB). Nothing was changed.",
    ),
    (
        "error_malformed",
        "Skjemaet kunne ikke leses. Ingenting er endret.",
        "The form could not be read. Nothing was changed.",
    ),
    ("error_title", "Noe gikk galt", "Something went wrong"),
    (
        "error_store",
        "Lagringen svarer ikke akkurat nå. Prøv igjen om litt.",
        "The store is not answering right now. Try again shortly.",
    ),
    ("not_found_title", "Finnes ikke", "Not found"),
    ("error_not_found", "Siden eller alarmen finnes ikke.", "The page or alarm does not exist."),
    ("back_to_board", "Tilbake til alarmtavla", "Back to the alarm board"),
    ("new_alarm", "Ny alarm", "New alarm"),
    ("live_lost", "Direkteoppdatering brutt, kobler til igjen …", "Live updates lost, reconnecting …"),
    ("sound_hint", "Lyd spilles av ved nye alarmer etter at du har klikket eller trykket på siden.", "A sound plays on new alarms once you have clicked or tapped the page."),
];

/// The word or sentence for `key` in `lang`.
pub fn t(lang: Lang, key: &str) -> &str {
    lookup(lang, key).unwrap_or_else(|| {
        tracing::warn!(key, "console text without a translation");
        key
    })
}

fn lookup(lang: Lang, key: &str) -> Option<&'static str> {
    WORDS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, nb, en)| match lang {
            Lang::Nb => *nb,
            Lang::En => *en,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_both_languages_and_is_unique() {
        let mut seen = std::collections::HashSet::new();
        for (k, nb, en) in WORDS {
            assert!(seen.insert(k), "{k} twice");
            assert!(!nb.is_empty() && !en.is_empty(), "{k} lacks a language");
        }
        assert_eq!(t(Lang::Nb, "logout"), "Logg ut");
        assert_eq!(t(Lang::En, "logout"), "Log out");
    }
}
