//! The technician page's words in Norwegian bokmål and English:
//! `t(lang, key)`. One table, so a missing translation shows in review as a
//! row with one side empty; an unknown key comes back as itself (visible,
//! not a panic), and a unit test checks every key has both languages.

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Lang {
    #[default]
    Nb,
    En,
}

impl Lang {
    pub fn parse(s: &str) -> Option<Lang> {
        match s {
            "nb" | "no" | "nn" | "nb-NO" => Some(Lang::Nb),
            "en" | "en-GB" | "en-US" => Some(Lang::En),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Lang::Nb => "nb",
            Lang::En => "en",
        }
    }

    pub fn other(self) -> Lang {
        match self {
            Lang::Nb => Lang::En,
            Lang::En => Lang::Nb,
        }
    }
}

/// `(key, bokmål, English)`.
const WORDS: &[(&str, &str, &str)] = &[
    ("app_name", "Trygg gateway", "Trygg gateway"),
    ("skip_link", "Hopp til hovedinnhold", "Skip to main content"),
    ("switch_lang", "English", "Norsk"),
    ("signed_in_as", "Innlogget", "Signed in"),
    ("logout", "Logg ut", "Log out"),
    ("login_title", "Logg inn som tekniker", "Technician login"),
    ("username", "Brukernavn", "Username"),
    ("password", "Passord", "Password"),
    ("login_button", "Logg inn", "Log in"),
    (
        "login_error",
        "Feil brukernavn eller passord, eller kontoen er sperret en stund etter for mange forsøk.",
        "Wrong username or password, or the account is locked for a while after too many tries.",
    ),
    (
        "login_expired",
        "Innloggingsskjemaet er utløpt. Åpne siden på nytt og prøv igjen.",
        "The login form has expired. Open the page again and try again.",
    ),
    (
        "login_hint",
        "Kontoen lages på gatewayen med «trygg-gateway technician add NAVN».",
        "The account is made on the gateway with `trygg-gateway technician add NAME`.",
    ),
    ("overview_title", "Gateway", "Gateway"),
    ("status_heading", "Status", "Status"),
    ("uplink", "Forbindelse til kommunen", "Link to the municipality"),
    ("uplink_up", "Tilkoblet", "Connected"),
    ("uplink_down", "Ikke tilkoblet: hendelser venter på gatewayen", "Not connected: events wait on the gateway"),
    ("backlog", "Venter på å sendes", "Waiting to be sent"),
    ("backlog_counts", "alarmer {a}, omsorg {c}, telemetri {t}", "alarms {a}, care {c}, telemetry {t}"),
    ("disk", "Disk", "Disk"),
    ("disk_ok", "OK", "OK"),
    ("disk_full", "Full: bare alarmer lagres. Frigjør plass.", "Full: only alarms are stored. Free some space."),
    ("journal_error", "Journalen kan ikke lagre", "The journal cannot commit"),
    ("pending_heading", "Enheter som ber om å bli med", "Devices asking to join"),
    (
        "pending_ask",
        "En ukjent enhet ber om å bli med: godta?",
        "An unknown device is asking to join: accept?",
    ),
    ("pending_none", "Ingen ukjente enheter ber om å bli med.", "No unknown device is asking to join."),
    ("pending_attempts", "Forsøk", "Attempts"),
    ("pending_first", "Først sett", "First seen"),
    ("accept", "Godta…", "Accept…"),
    ("accept_title", "Godta enhet", "Accept device"),
    ("accept_button", "Godta og par", "Accept and pair"),
    ("reject", "Avvis", "Reject"),
    (
        "rejected_text",
        "Avvist: {id}. Forespørselen er glemt; kobler enheten til igjen, spør den på nytt.",
        "Rejected: {id}. Its request is forgotten; if the device connects again, it asks again.",
    ),
    (
        "error_not_pending",
        "{id} ber ikke om å bli med (lenger). Se oversikten.",
        "{id} is not asking to join (any more). See the overview.",
    ),
    ("key_label", "Enhetens nøkkel (valgfritt)", "The device's key (optional)"),
    (
        "key_hint",
        "Fra enhetens etikett. Tomt: gatewayen lager en og viser den én gang.",
        "From the device's label. Empty: the gateway makes one and shows it once.",
    ),
    ("key_title", "Enhetens nøkkel", "The device's key"),
    (
        "key_shown",
        "Gatewayen laget denne nøkkelen og viser den bare nå: legg den inn i enheten (dens MQTT-passord) før du går videre.",
        "The gateway made this key and shows it only now: load it into the device (its MQTT password) before you go on.",
    ),
    ("continue", "Videre", "Continue"),
    (
        "window_button",
        "La nye enheter be om å bli med i {min} minutter",
        "Let new devices ask to join for {min} minutes",
    ),
    (
        "window_open",
        "Nye enheter kan be om å bli med de neste {min} minuttene. Slå på enheten nå; den vises under «Enheter som ber om å bli med».",
        "New devices may ask to join for the next {min} minutes. Switch the device on now; it shows under \"Devices asking to join\".",
    ),
    (
        "no_first_contact",
        "Med denne megleren kan ukjente enheter ikke be om å bli med: par enheten med id og nøkkel.",
        "With this broker unknown devices cannot ask to join: pair the device with its id and key.",
    ),
    ("has_key", "Nøkkel", "Key"),
    ("key_set", "Ja", "Yes"),
    ("key_none", "Ingen", "None"),
    ("devices_heading", "Enheter", "Devices"),
    ("devices_none", "Ingen enheter er paret ennå.", "No device is paired yet."),
    ("pair_link", "Par en enhet", "Pair a device"),
    ("pair_title", "Par en enhet", "Pair a device"),
    ("pair_button", "Par enheten", "Pair the device"),
    ("paired", "Paret", "Paired"),
    ("device_id", "Enhetens id", "Device id"),
    ("device_id_hint", "Som på etiketten, f.eks. button-2 (A–Z, a–z, 0–9, - og _).", "As on its label, e.g. button-2 (A-Z, a-z, 0-9, - and _)."),
    ("type", "Type", "Type"),
    ("room", "Rom", "Room"),
    ("room_hint", "F.eks. soverom.", "E.g. bedroom."),
    ("resident", "Beboer (pseudonym id)", "Resident (pseudonymous id)"),
    ("resident_short", "Beboer", "Resident"),
    ("resident_hint", "Id-en fra kommunen, f.eks. r-7f3a. Aldri et navn.", "The id from the municipality, e.g. r-7f3a. Never a name."),
    ("supervision_s", "Tilsynsperiode i sekunder (valgfritt)", "Supervision period in seconds (optional)"),
    ("supervision_hint", "Tomt: typens standard. 0 slår tilsyn av.", "Empty: the type's default. 0 turns supervision off."),
    ("battery", "Batteri", "Battery"),
    ("signal", "Signal", "Signal"),
    ("last_message", "Siste melding", "Last message"),
    ("supervision", "Tilsyn", "Supervision"),
    ("sup_ok", "OK", "OK"),
    ("sup_silent", "Stille: har ikke hørt fra den", "Silent: not heard from"),
    ("sup_off", "Av", "Off"),
    ("never", "aldri", "never"),
    ("unknown", "ukjent", "unknown"),
    ("ago_s", "{n} s siden", "{n} s ago"),
    ("ago_min", "{n} min siden", "{n} min ago"),
    ("ago_h", "{n} t siden", "{n} h ago"),
    ("ago_d", "{n} d siden", "{n} d ago"),
    ("show", "Vis", "Show"),
    ("device_title", "Enhet {id}", "Device {id}"),
    ("back", "Tilbake til oversikten", "Back to the overview"),
    ("swap_heading", "Bytt enheten", "Swap the device"),
    (
        "swap_hint",
        "Alle innstillinger (type, rom, beboer, tilsyn) flyttes til den nye enheten i ett steg. Den gamle avvises etterpå.",
        "Every setting (type, room, resident, supervision) moves to the new device in one step. The old one is refused from then on.",
    ),
    ("new_id", "Den nye enhetens id", "The new device's id"),
    ("swap_button", "Bytt", "Swap"),
    ("swapped", "Byttet: innstillingene er nå på {id}.", "Swapped: the settings are now on {id}."),
    ("remove_heading", "Fjern enheten", "Remove the device"),
    ("remove_button", "Fjern…", "Remove…"),
    ("remove_title", "Fjerne {id}?", "Remove {id}?"),
    (
        "remove_confirm_text",
        "Hendelser fra {id} avvises fra nå av. Dette kan ikke angres (par den på nytt om nødvendig).",
        "Events from {id} are refused from now on. This cannot be undone (pair it again if needed).",
    ),
    ("remove_confirm_button", "Ja, fjern {id}", "Yes, remove {id}"),
    ("cancel", "Avbryt", "Cancel"),
    ("removed", "Fjernet: {id}.", "Removed: {id}."),
    ("test_heading", "Testalarm", "Test alarm"),
    (
        "test_hint",
        "Sender en testalarm hele veien til kommunen og venter på bekreftelsen (opptil 30 s). Den vises som test, ikke som alarm.",
        "Sends a test alarm all the way to the municipality and waits for its confirmation (up to 30 s). It shows as a test, not as an alarm.",
    ),
    ("test_button", "Send testalarm", "Send a test alarm"),
    ("test_gateway_button", "Send testalarm fra gatewayen", "Send a test alarm from the gateway"),
    ("test_title", "Testalarm", "Test alarm"),
    ("test_confirmed", "Bekreftet av kommunen etter {t}.", "Confirmed by the municipality after {t}."),
    (
        "test_not_confirmed",
        "Ikke bekreftet innen {s} s. Den er lagret på gatewayen og sendes når forbindelsen er tilbake. Sjekk forbindelsen og prøv igjen.",
        "Not confirmed within {s} s. It is stored on the gateway and goes up when the link is back. Check the link and try again.",
    ),
    ("test_about", "Gjelder", "About"),
    ("the_gateway", "gatewayen selv", "the gateway itself"),
    ("done_title", "Utført", "Done"),
    ("error_title", "Noe gikk galt", "Something went wrong"),
    ("refused_title", "Ikke utført", "Not done"),
    (
        "error_csrf",
        "Skjemaet var utløpt eller kom ikke fra denne siden. Last siden på nytt og prøv igjen.",
        "The form had expired or did not come from this page. Reload the page and try again.",
    ),
    (
        "error_malformed",
        "Skjemaet kunne ikke leses. Last siden på nytt og prøv igjen.",
        "The form could not be read. Reload the page and try again.",
    ),
    ("error_missing", "Fyll inn: {field}.", "Fill in: {field}."),
    ("error_number", "{field} må være et helt tall.", "{field} must be a whole number."),
    ("error_not_found", "Fant ingen enhet med id {id}.", "No device has the id {id}."),
    (
        "error_accounts",
        "Teknikerkontoene på gatewayen kan ikke leses. Se gatewayens logg.",
        "The technician accounts on the gateway cannot be read. See the gateway's log.",
    ),
    ("not_found_title", "Finnes ikke", "Not found"),
    ("not_found", "Denne siden finnes ikke.", "This page does not exist."),
    ("t_safety_button", "Trygghetsknapp", "Safety button"),
    ("t_pull_cord", "Snortrekk", "Pull cord"),
    ("t_fall_sensor", "Fallsensor", "Fall sensor"),
    ("t_door_sensor", "Dørsensor", "Door sensor"),
    ("t_bed_sensor", "Sengesensor", "Bed sensor"),
    ("t_motion_sensor", "Bevegelsessensor", "Motion sensor"),
    ("t_smoke_detector", "Røykvarsler", "Smoke detector"),
    ("t_water_sensor", "Vannsensor", "Water sensor"),
    ("t_epilepsy_sensor", "Epilepsisensor", "Epilepsy sensor"),
    ("t_medicine_dispenser", "Medisindispenser", "Medicine dispenser"),
    ("t_thermometer", "Termometer", "Thermometer"),
];

/// The word for `key` in `lang`; the key itself if there is none.
pub fn t(lang: Lang, key: &str) -> &str {
    WORDS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, nb, en)| match lang {
            Lang::Nb => *nb,
            Lang::En => *en,
        })
        .unwrap_or(key)
}

/// [`t`] with `{name}` placeholders filled in (values are not escaped:
/// escape the result).
pub fn tf(lang: Lang, key: &str, args: &[(&str, &str)]) -> String {
    let mut s = t(lang, key).to_string();
    for (name, value) in args {
        s = s.replace(&format!("{{{name}}}"), value);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_both_languages_and_is_unique() {
        let mut seen = std::collections::HashSet::new();
        for (k, nb, en) in WORDS {
            assert!(!nb.is_empty() && !en.is_empty(), "{k}");
            assert!(seen.insert(*k), "{k} twice");
        }
    }

    #[test]
    fn placeholders_are_filled_in() {
        assert_eq!(
            tf(Lang::En, "removed", &[("id", "button-2")]),
            "Removed: button-2."
        );
        assert_eq!(
            tf(Lang::Nb, "removed", &[("id", "button-2")]),
            "Fjernet: button-2."
        );
        assert_eq!(t(Lang::En, "no_such_key"), "no_such_key");
    }
}
