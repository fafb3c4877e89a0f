//! The alarm workflow: `open -> acknowledged -> closed`.
//!
//! A pure state machine: each transition takes who acts and `now`, checks
//! that it is allowed, and changes the alarm. The store commits the changed
//! alarm (fsync) before the API answers, so an answer of 200 means durable.
//!
//! - Acknowledging says "I am on it"; a second person who tries is told who
//!   took it (409), so two carers do not both drive out, or both assume the
//!   other did. The same person acknowledging again changes nothing.
//! - Closing needs a note (what was found, what was done) and may say its
//!   [`Cause`] (a real alarm, a false alarm, a test, a technical fault): the
//!   false-alarm share a municipality reports is counted from it. Closing an
//!   open alarm is allowed and records the closer as the acknowledger too.
//! - A closed alarm stays closed.
//! - **Repeats** of the same kind from the same device while its alarm is
//!   not closed (an open door, a button pressed again and again) add to
//!   that alarm, counted with the time of the last one; they do not open
//!   new alarms.
//! - Some technical alarms are **cleared by the system** when their cause
//!   is gone (`device_silent` when the device is heard from again,
//!   `gateway_offline` when the gateway is back): closed by `trygg` with a
//!   note saying why, and the cause `technical`.

use serde::{Deserialize, Serialize};
use trygg_protocol::EventKind;

/// The longest closing note, in characters.
pub const MAX_NOTE_CHARS: usize = 2000;
/// The longest name in `by`, in characters.
pub const MAX_BY_CHARS: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmState {
    Open,
    Acknowledged,
    Closed,
}

impl AlarmState {
    pub fn parse(s: &str) -> Option<AlarmState> {
        match s {
            "open" => Some(AlarmState::Open),
            "acknowledged" => Some(AlarmState::Acknowledged),
            "closed" => Some(AlarmState::Closed),
            _ => None,
        }
    }
}

/// Why an alarm happened, as the person closing it judged (the system
/// says `technical` when it clears an alarm whose cause is gone).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// Somebody needed help.
    Real,
    /// Nobody needed help: pressed by mistake, a sensor misread.
    False,
    /// A planned test of the device or the chain.
    Test,
    /// A fault in the equipment (battery, link, power), not a person.
    Technical,
}

impl Cause {
    pub const ALL: [Cause; 4] = [Cause::Real, Cause::False, Cause::Test, Cause::Technical];

    /// The wire name (`real`, `false`, `test`, `technical`).
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Real => "real",
            Cause::False => "false",
            Cause::Test => "test",
            Cause::Technical => "technical",
        }
    }

    pub fn parse(s: &str) -> Option<Cause> {
        Cause::ALL.into_iter().find(|c| c.as_str() == s.trim())
    }

    pub fn label_nb(self) -> &'static str {
        match self {
            Cause::Real => "Reell alarm",
            Cause::False => "Falsk alarm",
            Cause::Test => "Test",
            Cause::Technical => "Teknisk feil",
        }
    }

    pub fn label_en(self) -> &'static str {
        match self {
            Cause::Real => "Real alarm",
            Cause::False => "False alarm",
            Cause::Test => "Test",
            Cause::Technical => "Technical fault",
        }
    }

    /// The label in the reader's language.
    pub fn label(self, lang: crate::access::Lang) -> &'static str {
        match lang {
            crate::access::Lang::Nb => self.label_nb(),
            crate::access::Lang::En => self.label_en(),
        }
    }
}

/// What happened to an alarm, as told on the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    New,
    /// The same device reported the same kind again while it was open.
    Repeated,
    Acknowledged,
    /// Nobody acknowledged it in time: it went to the next group.
    Escalated,
    Closed,
}

/// Who closes alarms the system clears by itself.
pub const SYSTEM_ACTOR: &str = "trygg";

/// What an alarm is raised from: a stored event, or the bridge's own
/// finding (a sequence gap).
#[derive(Clone, Debug, PartialEq)]
pub struct NewAlarm {
    pub event_id: String,
    pub gateway: String,
    pub device: String,
    pub device_seq: u64,
    pub kind: EventKind,
    pub resident: Option<String>,
    pub room: Option<String>,
    pub detail: Option<String>,
    pub gateway_committed_ms: Option<u64>,
    pub device_ts: Option<u64>,
}

/// An alarm as stored and as the API shows it. Kind-derived fields are
/// kept as they were when raised, so the record reads the same later.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    pub id: u64,
    pub event_id: String,
    pub gateway: String,
    pub device: String,
    pub device_seq: u64,
    pub kind: EventKind,
    pub category: String,
    pub severity: String,
    pub label_nb: String,
    pub label_en: String,
    pub vkp_alert: Option<String>,
    pub resident: Option<String>,
    pub room: Option<String>,
    pub detail: Option<String>,
    pub state: AlarmState,
    /// When the bridge committed it, Unix milliseconds.
    pub raised_ms: u64,
    pub gateway_committed_ms: Option<u64>,
    pub device_ts: Option<u64>,
    pub acknowledged_by: Option<String>,
    pub acknowledged_ms: Option<u64>,
    pub closed_by: Option<String>,
    pub closed_ms: Option<u64>,
    pub note: Option<String>,
    /// Why it happened, as judged when it was closed. Absent in alarms
    /// stored before causes were recorded, and when the closer did not say.
    #[serde(default)]
    pub cause: Option<Cause>,
    /// Further reports of this kind from this device while it was not
    /// closed, and when the last one came.
    #[serde(default)]
    pub repeats: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_repeat_ms: Option<u64>,
    /// The step of `[escalation] chain` now responsible: 0 is the first
    /// group, each step up is one escalation.
    #[serde(default)]
    pub escalation_level: u8,
    /// The group it was last escalated to; `None` while it is with the
    /// first group.
    #[serde(default)]
    pub escalated_to: Option<String>,
    /// Each escalation, oldest first.
    #[serde(default)]
    pub escalations: Vec<Escalation>,
}

/// One step up the escalation chain: nobody acknowledged the alarm within
/// the step's time, so it went to the step's group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escalation {
    /// The step (1 is the chain's second group).
    pub level: u8,
    pub group: String,
    pub at_ms: u64,
}

/// Why a transition was refused. `Invalid` is the caller's input (422);
/// `Conflict` is the alarm's state (409). Neither is worth a retry as is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WorkflowError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
}

impl Alarm {
    pub fn raise(id: u64, new: NewAlarm, now_ms: u64) -> Alarm {
        let info = new.kind.info();
        Alarm {
            id,
            event_id: new.event_id,
            gateway: new.gateway,
            device: new.device,
            device_seq: new.device_seq,
            kind: new.kind,
            category: info.category.as_str().into(),
            severity: info.severity.as_str().into(),
            label_nb: info.label_nb.into(),
            label_en: info.label_en.into(),
            vkp_alert: info.vkp_alert.map(Into::into),
            resident: new.resident,
            room: new.room,
            detail: new.detail,
            state: AlarmState::Open,
            raised_ms: now_ms,
            gateway_committed_ms: new.gateway_committed_ms,
            device_ts: new.device_ts,
            acknowledged_by: None,
            acknowledged_ms: None,
            closed_by: None,
            closed_ms: None,
            note: None,
            cause: None,
            repeats: 0,
            last_repeat_ms: None,
            escalation_level: 0,
            escalated_to: None,
            escalations: Vec::new(),
        }
    }

    /// Whether more reports of the same kind from the same device add to
    /// this alarm. Gap alarms each name a different gap, so they do not.
    pub fn takes_repeats(&self) -> bool {
        self.state != AlarmState::Closed && self.kind != EventKind::SequenceGap
    }

    /// The same device reported the same kind again.
    pub fn repeat(&mut self, now_ms: u64) -> Change {
        self.repeats = self.repeats.saturating_add(1);
        self.last_repeat_ms = Some(now_ms);
        Change::Repeated
    }

    /// Takes every step of `chain` beyond this alarm's level whose time has
    /// come by `now_ms` (counted from when it was raised), if nobody has
    /// acknowledged it. Returns the steps taken, in order; none is taken
    /// twice.
    pub fn escalate(
        &mut self,
        chain: &[crate::escalation::EscalationStep],
        now_ms: u64,
    ) -> Vec<Escalation> {
        if self.state != AlarmState::Open {
            return Vec::new();
        }
        let age_ms = now_ms.saturating_sub(self.raised_ms);
        let mut taken = Vec::new();
        for (i, step) in chain
            .iter()
            .enumerate()
            .skip(usize::from(self.escalation_level) + 1)
        {
            let Ok(level) = u8::try_from(i) else { break };
            if age_ms < step.after_s.saturating_mul(1000) {
                break;
            }
            let e = Escalation {
                level,
                group: step.group.clone(),
                at_ms: now_ms,
            };
            self.escalation_level = level;
            self.escalated_to = Some(step.group.clone());
            self.escalations.push(e.clone());
            taken.push(e);
        }
        taken
    }

    /// Closes an alarm whose cause is gone, as the system. `None` if it
    /// was closed already.
    pub fn clear(&mut self, why: &str, now_ms: u64) -> Option<Change> {
        if self.state == AlarmState::Closed {
            return None;
        }
        if self.state == AlarmState::Open {
            self.acknowledged_by = Some(SYSTEM_ACTOR.into());
            self.acknowledged_ms = Some(now_ms);
        }
        self.state = AlarmState::Closed;
        self.closed_by = Some(SYSTEM_ACTOR.into());
        self.closed_ms = Some(now_ms);
        self.note = Some(why.into());
        self.cause = Some(Cause::Technical);
        Some(Change::Closed)
    }

    /// Takes the alarm. `Ok(None)` when `by` had taken it already.
    pub fn acknowledge(&mut self, by: &str, now_ms: u64) -> Result<Option<Change>, WorkflowError> {
        let by = person(by)?;
        match self.state {
            AlarmState::Open => {
                self.state = AlarmState::Acknowledged;
                self.acknowledged_by = Some(by.into());
                self.acknowledged_ms = Some(now_ms);
                Ok(Some(Change::Acknowledged))
            }
            AlarmState::Acknowledged if self.acknowledged_by.as_deref() == Some(by) => Ok(None),
            AlarmState::Acknowledged => Err(WorkflowError::Conflict(format!(
                "alarm {} is already acknowledged by {}",
                self.id,
                self.acknowledged_by.as_deref().unwrap_or("someone")
            ))),
            AlarmState::Closed => Err(self.closed_conflict()),
        }
    }

    /// Closes the alarm with a note on what was found and done, and the
    /// cause when the closer says it.
    pub fn close(
        &mut self,
        by: &str,
        note: Option<&str>,
        cause: Option<Cause>,
        now_ms: u64,
    ) -> Result<Change, WorkflowError> {
        let by = person(by)?;
        if self.state == AlarmState::Closed {
            return Err(self.closed_conflict());
        }
        let note = note.map(str::trim).unwrap_or("");
        if note.is_empty() {
            return Err(WorkflowError::Invalid(
                "note is required to close an alarm: say what was found and what was done".into(),
            ));
        }
        let chars = note.chars().count();
        if chars > MAX_NOTE_CHARS {
            return Err(WorkflowError::Invalid(format!(
                "note is {chars} characters; at most {MAX_NOTE_CHARS} are kept"
            )));
        }
        if self.state == AlarmState::Open {
            self.acknowledged_by = Some(by.into());
            self.acknowledged_ms = Some(now_ms);
        }
        self.state = AlarmState::Closed;
        self.closed_by = Some(by.into());
        self.closed_ms = Some(now_ms);
        self.note = Some(note.into());
        self.cause = cause;
        Ok(Change::Closed)
    }

    fn closed_conflict(&self) -> WorkflowError {
        WorkflowError::Conflict(format!(
            "alarm {} is already closed by {}",
            self.id,
            self.closed_by.as_deref().unwrap_or("someone")
        ))
    }
}

fn person(by: &str) -> Result<&str, WorkflowError> {
    let by = by.trim();
    if by.is_empty() {
        return Err(WorkflowError::Invalid(
            "by is required: who is acting on the alarm".into(),
        ));
    }
    if by.chars().count() > MAX_BY_CHARS {
        return Err(WorkflowError::Invalid(format!(
            "by is longer than {MAX_BY_CHARS} characters"
        )));
    }
    Ok(by)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_alarm() -> Alarm {
        Alarm::raise(
            17,
            NewAlarm {
                event_id: "gw-1/button-1/5".into(),
                gateway: "gw-1".into(),
                device: "button-1".into(),
                device_seq: 5,
                kind: EventKind::ButtonPress,
                resident: Some("r-1".into()),
                room: None,
                detail: None,
                gateway_committed_ms: Some(1),
                device_ts: None,
            },
            1000,
        )
    }

    #[test]
    fn raised_alarm_is_open_and_carries_the_kinds_codes() {
        let a = open_alarm();
        assert_eq!(a.state, AlarmState::Open);
        assert_eq!((a.severity.as_str(), a.category.as_str()), ("red", "alarm"));
        assert_eq!(a.vkp_alert.as_deref(), Some("4.13"));
        assert_eq!(a.label_nb, "Alarmknapp trykket");
    }

    #[test]
    fn acknowledging_an_open_alarm_records_who_and_when() {
        let mut a = open_alarm();
        assert_eq!(
            a.acknowledge(" kari ", 2000),
            Ok(Some(Change::Acknowledged))
        );
        assert_eq!(a.state, AlarmState::Acknowledged);
        assert_eq!(
            (a.acknowledged_by.as_deref(), a.acknowledged_ms),
            (Some("kari"), Some(2000))
        );
    }

    #[test]
    fn acknowledging_again_by_the_same_person_changes_nothing() {
        let mut a = open_alarm();
        a.acknowledge("kari", 2000).unwrap();
        assert_eq!(a.acknowledge("kari", 3000), Ok(None));
        assert_eq!(a.acknowledged_ms, Some(2000));
    }

    #[test]
    fn acknowledging_an_alarm_someone_else_took_is_a_conflict_naming_them() {
        let mut a = open_alarm();
        a.acknowledge("ola", 2000).unwrap();
        assert_eq!(
            a.acknowledge("kari", 3000),
            Err(WorkflowError::Conflict(
                "alarm 17 is already acknowledged by ola".into()
            ))
        );
    }

    #[test]
    fn acting_without_a_name_is_invalid() {
        let mut a = open_alarm();
        assert!(matches!(
            a.acknowledge("  ", 2000),
            Err(WorkflowError::Invalid(_))
        ));
        assert!(matches!(
            a.close("", Some("ok"), None, 2000),
            Err(WorkflowError::Invalid(_))
        ));
        assert_eq!(a.state, AlarmState::Open);
    }

    #[test]
    fn closing_without_a_note_is_invalid_and_changes_nothing() {
        let mut a = open_alarm();
        a.acknowledge("kari", 2000).unwrap();
        let before = a.clone();
        assert!(matches!(
            a.close("kari", None, None, 3000),
            Err(WorkflowError::Invalid(_))
        ));
        assert!(matches!(
            a.close("kari", Some(" \n "), None, 3000),
            Err(WorkflowError::Invalid(_))
        ));
        assert_eq!(a, before);
    }

    #[test]
    fn closing_with_a_note_too_long_is_invalid() {
        let mut a = open_alarm();
        let note = "x".repeat(MAX_NOTE_CHARS + 1);
        assert!(matches!(
            a.close("kari", Some(&note), None, 3000),
            Err(WorkflowError::Invalid(_))
        ));
        assert!(a.close("kari", Some(&note[1..]), None, 3000).is_ok());
    }

    #[test]
    fn closing_an_acknowledged_alarm_keeps_the_acknowledger() {
        let mut a = open_alarm();
        a.acknowledge("ola", 2000).unwrap();
        assert_eq!(
            a.close(
                "kari",
                Some(" found on floor, helped up "),
                Some(Cause::Real),
                3000
            ),
            Ok(Change::Closed)
        );
        assert_eq!(a.state, AlarmState::Closed);
        assert_eq!(a.acknowledged_by.as_deref(), Some("ola"));
        assert_eq!(
            (a.closed_by.as_deref(), a.closed_ms),
            (Some("kari"), Some(3000))
        );
        assert_eq!(a.note.as_deref(), Some("found on floor, helped up"));
        assert_eq!(a.cause, Some(Cause::Real));
    }

    #[test]
    fn closing_an_open_alarm_implies_acknowledging_it() {
        let mut a = open_alarm();
        a.close(
            "kari",
            Some("false alarm, pressed by mistake"),
            Some(Cause::False),
            3000,
        )
        .unwrap();
        assert_eq!(
            (a.acknowledged_by.as_deref(), a.acknowledged_ms),
            (Some("kari"), Some(3000))
        );
        assert_eq!(a.state, AlarmState::Closed);
    }

    #[test]
    fn a_closed_alarm_can_be_neither_closed_nor_acknowledged_again() {
        let mut a = open_alarm();
        a.close("kari", Some("ok"), None, 3000).unwrap();
        let conflict = Err(WorkflowError::Conflict(
            "alarm 17 is already closed by kari".into(),
        ));
        assert_eq!(a.close("ola", Some("again"), None, 4000), conflict.clone());
        assert_eq!(
            a.close("ola", None, None, 4000),
            conflict.clone(),
            "conflict wins over a missing note"
        );
        assert_eq!(
            a.acknowledge("ola", 4000).map(|_| ()),
            conflict.map(|_: Change| ())
        );
    }

    #[test]
    fn alarm_json_uses_wire_names() {
        let json = serde_json::to_value(open_alarm()).unwrap();
        assert_eq!(json["kind"], "button_press");
        assert_eq!(json["state"], "open");
        assert!(json["detail"].is_null() && json["acknowledged_by"].is_null());
    }

    #[test]
    fn repeats_are_counted_on_the_open_alarm() {
        let mut a = open_alarm();
        assert!(a.takes_repeats());
        assert_eq!(a.repeat(2000), Change::Repeated);
        a.repeat(3000);
        assert_eq!((a.repeats, a.last_repeat_ms), (2, Some(3000)));
        a.close("kari", Some("door closed"), None, 4000).unwrap();
        assert!(!a.takes_repeats(), "a closed alarm takes no more repeats");
    }

    #[test]
    fn the_system_clears_an_alarm_once_with_a_note() {
        let mut a = open_alarm();
        assert_eq!(
            a.clear("device heard from again", 5000),
            Some(Change::Closed)
        );
        assert_eq!(a.closed_by.as_deref(), Some(SYSTEM_ACTOR));
        assert_eq!(a.note.as_deref(), Some("device heard from again"));
        assert_eq!(a.cause, Some(Cause::Technical));
        assert_eq!(a.clear("again", 6000), None);
    }

    #[test]
    fn causes_use_snake_case_wire_names_and_have_labels_in_both_languages() {
        for c in Cause::ALL {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
            assert_eq!(Cause::parse(c.as_str()), Some(c));
            assert!(!c.label_nb().is_empty() && !c.label_en().is_empty());
        }
        assert_eq!(Cause::parse("false"), Some(Cause::False));
        assert_eq!(Cause::parse("mistake"), None);
        assert_eq!(Cause::False.label(crate::access::Lang::Nb), "Falsk alarm");
    }

    #[test]
    fn an_alarm_stored_before_causes_reads_without_one() {
        let mut json = serde_json::to_value(open_alarm()).unwrap();
        let obj = json.as_object_mut().unwrap();
        obj.remove("cause");
        let a: Alarm = serde_json::from_value(json).unwrap();
        assert_eq!(a.cause, None);
    }

    fn chain() -> Vec<crate::escalation::EscalationStep> {
        [
            ("home-care", 0),
            ("response-centre", 120),
            ("on-call-nurse", 300),
        ]
        .into_iter()
        .map(|(group, after_s)| crate::escalation::EscalationStep {
            group: group.into(),
            after_s,
        })
        .collect()
    }

    #[test]
    fn an_open_alarm_escalates_one_step_at_a_time_as_each_comes_due() {
        let mut a = open_alarm();
        assert!(a.escalate(&chain(), 1000 + 119_999).is_empty());
        let up = a.escalate(&chain(), 1000 + 120_000);
        assert_eq!(up.len(), 1);
        assert_eq!(
            (a.escalation_level, a.escalated_to.as_deref()),
            (1, Some("response-centre"))
        );
        assert!(a.escalate(&chain(), 1000 + 200_000).is_empty(), "once");
        assert_eq!(a.escalate(&chain(), 1000 + 300_000)[0].level, 2);
        assert!(a.escalate(&chain(), u64::MAX).is_empty(), "end of chain");
    }

    #[test]
    fn a_late_check_takes_every_step_that_came_due_in_order() {
        let mut a = open_alarm();
        let up = a.escalate(&chain(), 1000 + 600_000);
        assert_eq!(up.iter().map(|e| e.level).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(a.escalated_to.as_deref(), Some("on-call-nurse"));
    }

    #[test]
    fn an_acknowledged_or_closed_alarm_does_not_escalate() {
        let mut a = open_alarm();
        a.acknowledge("kari", 2000).unwrap();
        assert!(a.escalate(&chain(), u64::MAX).is_empty());
        let mut b = open_alarm();
        b.close("kari", Some("ok"), Some(Cause::Test), 2000)
            .unwrap();
        assert!(b.escalate(&chain(), u64::MAX).is_empty());
        assert_eq!(b.escalation_level, 0);
    }
}
