//! Event kinds and their codes, in one table.
//!
//! Each row names a kind's wire name, category, severity, VKP alert code
//! (`http://ehelse.no/fhir/CodeSystem/vkp-alert-code-v090`), SCAIP device
//! type (`dty`) and status code (`stc`), and a label in bokmål and English
//! for staff. Where a public code list has no code for a kind, the cell is
//! `None`: Trygg never invents codes in someone else's code system.

use core::fmt;

/// How urgent an event is for a carer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Informational: telemetry and confirmations.
    Green,
    /// Needs attention soon: medication and technical faults.
    Yellow,
    /// Someone may need help now.
    Red,
}

impl Severity {
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Green => "green",
            Severity::Yellow => "yellow",
            Severity::Red => "red",
        }
    }

    /// The matching VKP severity level (`vkp-severity-level`):
    /// 10 normal, 20 moderate, 40 critical.
    pub const fn vkp_severity_level(self) -> u8 {
        match self {
            Severity::Green => 10,
            Severity::Yellow => 20,
            Severity::Red => 40,
        }
    }
}

/// What an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Category {
    Alarm,
    Medication,
    Technical,
    Telemetry,
}

impl Category {
    pub const fn as_str(self) -> &'static str {
        match self {
            Category::Alarm => "alarm",
            Category::Medication => "medication",
            Category::Technical => "technical",
            Category::Telemetry => "telemetry",
        }
    }

    /// The priority lane events of this category travel in.
    pub const fn lane(self) -> Lane {
        match self {
            Category::Alarm => Lane::Alarm,
            Category::Medication | Category::Technical => Lane::Care,
            Category::Telemetry => Lane::Telemetry,
        }
    }
}

/// A priority lane. Lower lanes are always served first: alarms before
/// medication and technical events before telemetry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lane {
    Alarm = 0,
    Care = 1,
    Telemetry = 2,
}

impl Lane {
    /// All lanes, highest priority first.
    pub const ALL: [Lane; 3] = [Lane::Alarm, Lane::Care, Lane::Telemetry];

    pub const fn as_str(self) -> &'static str {
        match self {
            Lane::Alarm => "alarm",
            Lane::Care => "care",
            Lane::Telemetry => "telemetry",
        }
    }

    pub fn parse(s: &str) -> Option<Lane> {
        Lane::ALL.into_iter().find(|l| l.as_str() == s)
    }

    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything Trygg knows about one event kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KindInfo {
    pub kind: EventKind,
    /// The name on the wire (`"kind"` in a device event).
    pub wire: &'static str,
    pub category: Category,
    pub severity: Severity,
    /// VKP alert code, where VKP has one.
    pub vkp_alert: Option<&'static str>,
    /// SCAIP device type (`dty`), where SCAIP has one.
    pub scaip_dty: Option<&'static str>,
    /// SCAIP status code (`stc`), where SCAIP has one.
    pub scaip_stc: Option<&'static str>,
    pub label_nb: &'static str,
    pub label_en: &'static str,
}

macro_rules! kinds {
    ($( $variant:ident, $wire:literal, $cat:ident, $sev:ident, $vkp:expr, $dty:expr, $stc:expr, $nb:literal, $en:literal; )*) => {
        /// Every kind of event a device or the gateway can report.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum EventKind { $( $variant, )* }

        /// The one table: kind, wire name, category, severity, VKP alert code,
        /// SCAIP `dty`, SCAIP `stc`, bokmål label, English label.
        pub const TABLE: &[KindInfo] = &[
            $( KindInfo {
                kind: EventKind::$variant,
                wire: $wire,
                category: Category::$cat,
                severity: Severity::$sev,
                vkp_alert: $vkp,
                scaip_dty: $dty,
                scaip_stc: $stc,
                label_nb: $nb,
                label_en: $en,
            }, )*
        ];
    };
}

kinds! {
    // Alarms: someone may need help now.
    ButtonPress,      "button_press",      Alarm, Red, Some("4.13"), Some("0003"), Some("0010"), "Alarmknapp trykket", "Alarm button pressed";
    PullCord,         "pull_cord",         Alarm, Red, Some("4.14"), Some("0004"), Some("0010"), "Snortrekk", "Pull cord pulled";
    Fall,             "fall",              Alarm, Red, Some("4.1"),  Some("0005"), Some("0009"), "Fall", "Fall detected";
    LeftBed,          "left_bed",          Alarm, Red, Some("4.2"),  Some("0012"), Some("0009"), "Forlatt sengen", "Left bed";
    Wandering,        "wandering",         Alarm, Red, Some("4.21"), Some("0015"), Some("0009"), "Dør åpnet om natten / forlatt bolig", "Door opened at night / left home";
    Inactivity,       "inactivity",        Alarm, Red, Some("4.9"),  None,         Some("0009"), "Inaktivitet", "Inactivity";
    SmokeFire,        "smoke_fire",        Alarm, Red, Some("4.11"), Some("0023"), Some("0009"), "Brannalarm", "Smoke or fire alarm";
    Water,            "water",             Alarm, Red, Some("4.17"), None,         Some("0009"), "Vannalarm", "Water leak alarm";
    Epilepsy,         "epilepsy",          Alarm, Red, Some("4.24"), Some("0017"), Some("0009"), "Epilepsianfall", "Epileptic seizure";
    // Medication: electronic medicine dispensers.
    DoseDispensed,    "dose_dispensed",    Medication, Green,  None,         Some("0011"), Some("0083"), "Dose tatt ut", "Dose dispensed";
    DoseNotConfirmed, "dose_not_confirmed", Medication, Yellow, Some("1.3"), Some("0011"), Some("0081"), "Mangler utleveringsbekreftelse", "Dose not confirmed";
    DispenserEmpty,   "dispenser_empty",   Medication, Yellow, Some("1.13"), Some("0011"), None, "Tomt for medisin", "Dispenser empty";
    RefillNeeded,     "refill_needed",     Medication, Yellow, Some("1.12"), Some("0011"), None, "Snart tomt for medisin", "Refill needed soon";
    DispenserOpen,    "dispenser_open",    Medication, Yellow, Some("1.21"), Some("0011"), None, "Dispenser åpen", "Dispenser open";
    BreakIn,          "break_in",          Medication, Yellow, Some("1.22"), Some("0011"), None, "Innbruddsforsøk i dispenser", "Dispenser break-in attempt";
    DispenserFault,   "dispenser_fault",   Medication, Yellow, Some("1.5"),  Some("0011"), None, "Teknisk feil på dispenser", "Dispenser technical fault";
    // Technical: the equipment itself.
    BatteryLow,       "battery_low",       Technical, Yellow, None, None, Some("0016"), "Lavt batteri", "Battery low";
    Tamper,           "tamper",            Technical, Yellow, None, None, Some("0125"), "Sabotasje / manipulering", "Tamper";
    PowerFailure,     "power_failure",     Technical, Yellow, None, None, Some("0085"), "Strømbrudd", "Power failure";
    PowerRestored,    "power_restored",    Technical, Green,  None, None, None, "Strøm tilbake", "Power restored";
    DeviceSilent,     "device_silent",     Technical, Yellow, None, None, Some("0123"), "Enhet taus", "Device silent";
    TestAlarm,        "test_alarm",        Technical, Green,  None, None, Some("0102"), "Testalarm", "Test alarm";
    UplinkPathDown,   "uplink_path_down",  Technical, Yellow, None, None, Some("0023"), "Overføringsvei nede", "Uplink path down";
    SequenceGap,      "sequence_gap",      Technical, Yellow, None, None, None, "Hull i hendelsesrekkefølgen", "Gap in event sequence";
    DeviceResumed,    "device_resumed",    Technical, Green,  None, None, None, "Enhet hørt fra igjen", "Device heard from again";
    GatewayOffline,   "gateway_offline",   Technical, Yellow, None, None, None, "Gateway frakoblet", "Gateway offline";
    TelemetryDropped, "telemetry_dropped", Technical, Green,  None, None, None, "Telemetri forkastet (journal full eller for gammel)", "Telemetry dropped (journal full or too old)";
    DeviceFault,      "device_fault",      Technical, Yellow, None, None, None, "Feil i enheten (inngang eller minne)", "Device fault (input or memory)";
    ConfigRejected,   "config_rejected",   Technical, Yellow, None, None, None, "Innstillinger avvist av enheten", "Settings rejected by the device";
    AccessRefused,    "access_refused",    Technical, Yellow, None, None, Some("0125"), "Tilgang avvist: feil kode eller sertifikat (mulig angrep)", "Access refused: wrong code or certificate (possible attack)";
    // Telemetry: the picture of daily life.
    Motion,           "motion",            Telemetry, Green, Some("4.18"), None, None, "Bevegelse", "Motion";
    DoorOpened,       "door_opened",       Telemetry, Green, Some("4.15"), Some("0014"), None, "Dør åpnet", "Door opened";
    DoorClosed,       "door_closed",       Telemetry, Green, Some("4.16"), Some("0014"), None, "Dør lukket", "Door closed";
    BedOccupied,      "bed_occupied",      Telemetry, Green, Some("4.20"), Some("0012"), None, "Lagt seg i sengen", "In bed";
    BedVacated,       "bed_vacated",       Telemetry, Green, None,         Some("0012"), None, "Ute av sengen", "Out of bed";
    Temperature,      "temperature",       Telemetry, Green, None,         None,         None, "Temperatur", "Temperature";
    // Technical, added later (kept last so that earlier kinds keep their index).
    DeviceAuthFailed, "device_auth_failed", Technical, Yellow, None, None, None, "Gjentatte feil nøkler fra en enhet (mulig angrep)", "Repeated wrong keys from a device (possible attack)";
}

impl EventKind {
    /// This kind's row in [`TABLE`].
    pub fn info(self) -> &'static KindInfo {
        // The table is built from the enum in declaration order.
        &TABLE[self as usize]
    }

    pub fn wire(self) -> &'static str {
        self.info().wire
    }

    pub fn category(self) -> Category {
        self.info().category
    }

    pub fn severity(self) -> Severity {
        self.info().severity
    }

    pub fn lane(self) -> Lane {
        self.info().category.lane()
    }

    /// Whether an event of this kind opens an alarm a person must handle.
    /// Red and yellow events do; green ones are recorded only.
    pub fn needs_handling(self) -> bool {
        self.severity() != Severity::Green
    }

    /// Whether a device may report this kind. Some kinds are raised only by
    /// the gateway or the backend about the system itself: a device that
    /// claims them is refused.
    pub fn device_may_send(self) -> bool {
        !matches!(
            self,
            EventKind::DeviceSilent
                | EventKind::DeviceResumed
                | EventKind::GatewayOffline
                | EventKind::TelemetryDropped
                | EventKind::UplinkPathDown
                | EventKind::SequenceGap
                | EventKind::AccessRefused
                | EventKind::DeviceAuthFailed
        )
    }

    /// Looks a kind up by its wire name.
    pub fn from_wire(s: &str) -> Option<EventKind> {
        TABLE.iter().find(|i| i.wire == s).map(|i| i.kind)
    }
}

impl serde::Serialize for EventKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.wire())
    }
}

impl<'de> serde::Deserialize<'de> for EventKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = EventKind;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Trygg event kind")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<EventKind, E> {
                EventKind::from_wire(v).ok_or_else(|| E::custom("unknown event kind"))
            }
        }
        d.deserialize_str(V)
    }
}

impl serde::Serialize for Lane {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Lane {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Lane;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a lane: alarm, care or telemetry")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Lane, E> {
                Lane::parse(v).ok_or_else(|| E::custom("unknown lane"))
            }
        }
        d.deserialize_str(V)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.wire())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        kind: EventKind,
    ) -> (
        Severity,
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
    ) {
        let i = kind.info();
        (i.severity, i.vkp_alert, i.scaip_dty, i.scaip_stc)
    }

    #[test]
    fn table_is_in_enum_order_and_wire_names_are_unique() {
        for (n, info) in TABLE.iter().enumerate() {
            assert_eq!(info.kind as usize, n, "{} is out of order", info.wire);
            assert_eq!(EventKind::from_wire(info.wire), Some(info.kind));
            assert_eq!(TABLE.iter().filter(|o| o.wire == info.wire).count(), 1);
            assert!(!info.label_nb.is_empty() && !info.label_en.is_empty());
        }
    }

    #[test]
    fn every_vkp_code_exists_in_the_vkp_alert_code_system() {
        // The codes of vkp-alert-code-v090 that Trygg uses (see
        // shared/reference/vkp-r4/CodeSystem/vkp-alert-code-v090.codesystem.xml).
        const KNOWN: &[&str] = &[
            "1.3", "1.5", "1.12", "1.13", "1.21", "1.22", "4.1", "4.2", "4.9", "4.11", "4.13",
            "4.14", "4.15", "4.16", "4.17", "4.18", "4.20", "4.21", "4.24",
        ];
        for info in TABLE {
            if let Some(code) = info.vkp_alert {
                assert!(
                    KNOWN.contains(&code),
                    "{} maps to unknown VKP code {code}",
                    info.wire
                );
            }
        }
    }

    // One test per mapping, as the issue asks: each names the row it checks.
    macro_rules! mapping_tests {
        ($( $name:ident: $kind:ident => $sev:ident, $vkp:expr, $dty:expr, $stc:expr; )*) => {
            $( #[test]
            fn $name() {
                assert_eq!(row(EventKind::$kind), (Severity::$sev, $vkp, $dty, $stc));
            } )*
        };
    }

    mapping_tests! {
        button_press_is_red_vkp_4_13_scaip_personal_trigger_manual_alarm: ButtonPress => Red, Some("4.13"), Some("0003"), Some("0010");
        pull_cord_is_red_vkp_4_14_scaip_fixed_trigger_manual_alarm: PullCord => Red, Some("4.14"), Some("0004"), Some("0010");
        fall_is_red_vkp_4_1_scaip_fall_detector_automatic_alarm: Fall => Red, Some("4.1"), Some("0005"), Some("0009");
        left_bed_is_red_vkp_4_2_scaip_bed_monitor: LeftBed => Red, Some("4.2"), Some("0012"), Some("0009");
        wandering_is_red_vkp_4_21_scaip_wandering_sensor: Wandering => Red, Some("4.21"), Some("0015"), Some("0009");
        inactivity_is_red_vkp_4_9: Inactivity => Red, Some("4.9"), None, Some("0009");
        smoke_fire_is_red_vkp_4_11_scaip_smoke: SmokeFire => Red, Some("4.11"), Some("0023"), Some("0009");
        water_is_red_vkp_4_17: Water => Red, Some("4.17"), None, Some("0009");
        epilepsy_is_red_vkp_4_24_scaip_epilepsy: Epilepsy => Red, Some("4.24"), Some("0017"), Some("0009");
        dose_dispensed_is_green_scaip_pill_taken: DoseDispensed => Green, None, Some("0011"), Some("0083");
        dose_not_confirmed_is_yellow_vkp_1_3_scaip_pill_not_taken: DoseNotConfirmed => Yellow, Some("1.3"), Some("0011"), Some("0081");
        dispenser_empty_is_yellow_vkp_1_13: DispenserEmpty => Yellow, Some("1.13"), Some("0011"), None;
        refill_needed_is_yellow_vkp_1_12: RefillNeeded => Yellow, Some("1.12"), Some("0011"), None;
        dispenser_open_is_yellow_vkp_1_21: DispenserOpen => Yellow, Some("1.21"), Some("0011"), None;
        break_in_is_yellow_vkp_1_22: BreakIn => Yellow, Some("1.22"), Some("0011"), None;
        dispenser_fault_is_yellow_vkp_1_5: DispenserFault => Yellow, Some("1.5"), Some("0011"), None;
        battery_low_is_yellow_scaip_0016: BatteryLow => Yellow, None, None, Some("0016");
        tamper_is_yellow_scaip_0125: Tamper => Yellow, None, None, Some("0125");
        power_failure_is_yellow_scaip_0085: PowerFailure => Yellow, None, None, Some("0085");
        power_restored_is_green_without_codes: PowerRestored => Green, None, None, None;
        device_silent_is_yellow_scaip_0123: DeviceSilent => Yellow, None, None, Some("0123");
        test_alarm_is_green_scaip_0102: TestAlarm => Green, None, None, Some("0102");
        uplink_path_down_is_yellow_scaip_0023: UplinkPathDown => Yellow, None, None, Some("0023");
        sequence_gap_is_yellow_without_codes: SequenceGap => Yellow, None, None, None;
        device_resumed_is_green_without_codes: DeviceResumed => Green, None, None, None;
        gateway_offline_is_yellow_without_codes: GatewayOffline => Yellow, None, None, None;
        telemetry_dropped_is_green_without_codes: TelemetryDropped => Green, None, None, None;
        motion_is_green_vkp_4_18: Motion => Green, Some("4.18"), None, None;
        door_opened_is_green_vkp_4_15_scaip_door_sensor: DoorOpened => Green, Some("4.15"), Some("0014"), None;
        door_closed_is_green_vkp_4_16_scaip_door_sensor: DoorClosed => Green, Some("4.16"), Some("0014"), None;
        bed_occupied_is_green_vkp_4_20_scaip_bed_monitor: BedOccupied => Green, Some("4.20"), Some("0012"), None;
        bed_vacated_is_green_scaip_bed_monitor: BedVacated => Green, None, Some("0012"), None;
        temperature_is_green_without_codes: Temperature => Green, None, None, None;
    }

    #[test]
    fn lanes_follow_categories_alarms_first() {
        assert_eq!(EventKind::Fall.lane(), Lane::Alarm);
        assert_eq!(EventKind::DoseNotConfirmed.lane(), Lane::Care);
        assert_eq!(EventKind::BatteryLow.lane(), Lane::Care);
        assert_eq!(EventKind::Motion.lane(), Lane::Telemetry);
        assert!(Lane::Alarm < Lane::Care && Lane::Care < Lane::Telemetry);
    }
}
