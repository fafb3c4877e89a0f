//! What the console shows of an alarm: [`AlarmView`] (the alarm with the
//! names a person reads: resident from the register, who took it), the
//! board's `<article class="alarm">`, and the actions every surface shares
//! (pages, JSON, with the same checks and audit entries).

use std::collections::HashMap;

use serde::Serialize;

use super::html::{esc, time_tag};
use super::i18n::t;
use super::{blocking, ConsoleState, Who};
use crate::access::{AuditEntry, Lang, Principal};
use crate::alarm::{Alarm, AlarmState, Cause, WorkflowError, MAX_NOTE_CHARS};
use crate::store::{now_ms, ActionError, Done, Op, Store, StoreError};

/// An alarm as the console gives it (`/console/api/alarms/{id}`, the
/// stream's `alarm` events): the stored alarm's fields, plus these.
#[derive(Clone, Debug, Serialize)]
pub struct AlarmView {
    #[serde(flatten)]
    pub alarm: Alarm,
    /// `care` or `technical`: which section of the board.
    pub group: &'static str,
    /// The kind in the viewer's language.
    pub label: String,
    /// From the residents register; `None` if the id is not registered.
    pub resident_name: Option<String>,
    pub unit: Option<String>,
    /// Display names of who acknowledged and closed it.
    pub acknowledged_by_name: Option<String>,
    pub closed_by_name: Option<String>,
}

pub fn group_of(alarm: &Alarm) -> &'static str {
    if alarm.category == "technical" {
        "technical"
    } else {
        "care"
    }
}

/// Builds views; display names are looked up once per user.
pub fn views(store: &Store, alarms: Vec<Alarm>, lang: Lang) -> Result<Vec<AlarmView>, StoreError> {
    let mut names: HashMap<String, String> = HashMap::new();
    let mut name = |store: &Store, u: &Option<String>| -> Result<Option<String>, StoreError> {
        let Some(u) = u else { return Ok(None) };
        if let Some(n) = names.get(u) {
            return Ok(Some(n.clone()));
        }
        let n = store
            .user(u)?
            .map(|x| x.display_name)
            .unwrap_or_else(|| u.clone());
        names.insert(u.clone(), n.clone());
        Ok(Some(n))
    };
    let mut out = Vec::with_capacity(alarms.len());
    for alarm in alarms {
        let resident = match &alarm.resident {
            Some(r) => store.resident(r)?,
            None => None,
        };
        let unit = match &resident {
            Some(r) => Some(r.unit.clone()),
            None => store.unit_of(&alarm)?,
        };
        let acknowledged_by_name = name(store, &alarm.acknowledged_by)?;
        let closed_by_name = name(store, &alarm.closed_by)?;
        out.push(AlarmView {
            group: group_of(&alarm),
            label: match lang {
                Lang::Nb => alarm.label_nb.clone(),
                Lang::En => alarm.label_en.clone(),
            },
            resident_name: resident.map(|r| r.name),
            unit,
            acknowledged_by_name,
            closed_by_name,
            alarm,
        });
    }
    Ok(out)
}

pub fn view(store: &Store, alarm: Alarm, lang: Lang) -> Result<AlarmView, StoreError> {
    Ok(views(store, vec![alarm], lang)?
        .pop()
        .expect("one view per alarm"))
}

/// The alarms `who` may see, in `state` (all if `None`), newest first.
pub fn visible(
    store: &Store,
    who: &Principal,
    state: Option<AlarmState>,
) -> Result<Vec<AlarmView>, StoreError> {
    let mut alarms = Vec::new();
    for a in store.alarms(state)? {
        if store.may_see(who, &a)? {
            alarms.push(a);
        }
    }
    alarms.sort_by(|a, b| b.raised_ms.cmp(&a.raised_ms).then(b.id.cmp(&a.id)));
    views(store, alarms, who.lang)
}

pub fn severity_html(lang: Lang, severity: &str) -> String {
    let (shape, key) = match severity {
        "red" => ("▲", "severity_red"),
        _ => ("●", "severity_yellow"),
    };
    format!(
        r#"<span aria-hidden="true">{shape}</span> {}"#,
        esc(t(lang, key))
    )
}

/// "New", or "Taken by Kari 03:12".
pub fn state_html(lang: Lang, v: &AlarmView) -> String {
    let a = &v.alarm;
    match a.state {
        AlarmState::Open => esc(t(lang, "state_open")),
        AlarmState::Acknowledged => format!(
            "{} {} {}",
            esc(t(lang, "taken_by")),
            esc(v
                .acknowledged_by_name
                .as_deref()
                .or(a.acknowledged_by.as_deref())
                .unwrap_or("?")),
            a.acknowledged_ms.map(time_tag).unwrap_or_default()
        ),
        AlarmState::Closed => format!(
            "{} {} {}",
            esc(t(lang, "h_closed")),
            esc(v
                .closed_by_name
                .as_deref()
                .or(a.closed_by.as_deref())
                .unwrap_or("?")),
            a.closed_ms.map(time_tag).unwrap_or_default()
        ),
    }
}

fn resident_text(lang: Lang, v: &AlarmView) -> String {
    match (&v.resident_name, &v.alarm.resident) {
        (Some(n), _) => esc(n),
        (None, Some(id)) => format!("{} ({})", esc(id), esc(t(lang, "not_registered"))),
        (None, None) => "–".into(),
    }
}

/// One alarm on the board (`docs/console.md`, "The board").
pub fn article(v: &AlarmView, lang: Lang, who: &Principal) -> String {
    let a = &v.alarm;
    let id = a.id;
    let state = match a.state {
        AlarmState::Open => "open",
        AlarmState::Acknowledged => "acknowledged",
        AlarmState::Closed => "closed",
    };
    let kind = serde_json::to_value(a.kind)
        .ok()
        .and_then(|k| k.as_str().map(String::from))
        .unwrap_or_default();
    let mut extra = String::new();
    if a.repeats > 0 {
        let what = if kind.contains("button") {
            "presses"
        } else {
            "reports"
        };
        extra.push_str(&format!(
            r#"<p class="alarm-repeats">{} {}, {} {}</p>"#,
            a.repeats.saturating_add(1),
            esc(t(lang, what)),
            esc(t(lang, "last")),
            a.last_repeat_ms.map(time_tag).unwrap_or_default()
        ));
    }
    if let Some(g) = &a.escalated_to {
        let mine = if who.groups.iter().any(|x| x == g) {
            format!(" ({})", esc(t(lang, "your_group")))
        } else {
            String::new()
        };
        extra.push_str(&format!(
            r#"<p class="alarm-escalation">{} <strong>{}</strong>{mine}</p>"#,
            esc(t(lang, "escalated_to")),
            esc(g)
        ));
    }
    let ack = if a.state == AlarmState::Open {
        format!(
            r#"<form method="post" action="/alarms/{id}/acknowledge" class="ack-form"><input type="hidden" name="csrf" value="{csrf}"><button type="submit" class="ack-button">{ack}<span class="visually-hidden">: {label}, {resident}</span></button></form>"#,
            csrf = esc(&who.csrf),
            ack = esc(t(lang, "acknowledge")),
            label = esc(&v.label),
            resident = resident_text(lang, v),
        )
    } else {
        String::new()
    };
    format!(
        r#"<article class="alarm" id="alarm-{id}" data-alarm-id="{id}" data-state="{state}" data-kind="{kind}" data-severity="{sev}" aria-labelledby="alarm-{id}-kind">
<h3 class="alarm-kind" id="alarm-{id}-kind">{label}</h3>
<p class="alarm-severity">{severity}</p>
<dl>
<dt>{l_state}</dt><dd class="alarm-state">{state_text}</dd>
<dt>{l_resident}</dt><dd class="alarm-resident">{resident}</dd>
<dt>{l_room}</dt><dd class="alarm-room">{room}</dd>
<dt>{l_device}</dt><dd class="alarm-device">{device}</dd>
<dt>{l_time}</dt><dd class="alarm-time">{time}</dd>
</dl>
{extra}<div class="alarm-actions"><a class="alarm-open" href="/alarms/{id}">{open}<span class="visually-hidden">: {label}, {resident}</span></a>{ack}</div>
</article>"#,
        kind = esc(&kind),
        sev = esc(&a.severity),
        label = esc(&v.label),
        severity = severity_html(lang, &a.severity),
        l_state = esc(t(lang, "state")),
        state_text = state_html(lang, v),
        l_resident = esc(t(lang, "resident")),
        resident = resident_text(lang, v),
        l_room = esc(t(lang, "room")),
        room = esc(a.room.as_deref().unwrap_or("–")),
        l_device = esc(t(lang, "device")),
        device = esc(&a.device),
        l_time = esc(t(lang, "time")),
        time = time_tag(a.raised_ms),
        open = esc(t(lang, "open_alarm")),
    )
}

/// What an alarm action asks for.
#[derive(Clone, Debug)]
pub enum Action {
    Acknowledge,
    Close { note: String, cause: Cause },
}

/// What an alarm action came to.
pub enum Acted {
    Done(Box<Alarm>),
    NotFound,
    /// Not this user's: audited already.
    Forbidden,
    /// Taken or closed by someone else: a message naming them.
    Conflict(String),
    Invalid(String),
    Store(StoreError),
}

/// Checks a close form's fields: the note (1–2000 characters) and cause.
pub fn close_fields(lang: Lang, note: Option<&str>, cause: Option<&str>) -> Result<Action, String> {
    let note = note.map(str::trim).unwrap_or("");
    if note.is_empty() || note.chars().count() > MAX_NOTE_CHARS {
        return Err(t(lang, "error_note").to_string());
    }
    let cause = cause
        .and_then(Cause::parse)
        .ok_or_else(|| t(lang, "error_cause").to_string())?;
    Ok(Action::Close {
        note: note.to_string(),
        cause,
    })
}

/// Loads the alarm and checks `who` may see it (auditing a refusal).
pub async fn load_for(s: &ConsoleState, who: &Who, id: u64) -> Result<Option<Alarm>, Acted> {
    let p = who.principal.clone();
    let r = blocking(s.store(), move |st| {
        let Some(a) = st.alarm(id)? else {
            return Ok(None);
        };
        let ok = st.may_see(&p, &a)?;
        Ok(Some((a, ok)))
    })
    .await;
    match r {
        Ok(None) => Ok(None),
        Ok(Some((a, true))) => Ok(Some(a)),
        Ok(Some((_, false))) => {
            super::audit_denied(
                s,
                who,
                &format!("alarm/{id}"),
                "refused: not in the user's units or role",
            )
            .await;
            Err(Acted::Forbidden)
        }
        Err(e) => Err(Acted::Store(e)),
    }
}

/// Acknowledges or closes alarm `id` as `who`: authorised, then written
/// with its audit entry in one transaction.
pub async fn act(s: &ConsoleState, who: &Who, id: u64, action: Action) -> Acted {
    match load_for(s, who, id).await {
        Ok(Some(_)) => {}
        Ok(None) => return Acted::NotFound,
        Err(a) => return a,
    }
    let by = who.principal.username.clone();
    let (op, verb, outcome) = match action {
        Action::Acknowledge => (
            Op::Acknowledge { alarm: id, by },
            "acknowledge",
            "ok".to_string(),
        ),
        Action::Close { note, cause } => (
            Op::Close {
                alarm: id,
                by,
                note: Some(note),
                cause: Some(cause),
            },
            "close",
            format!("ok: cause {}", cause.as_str()),
        ),
    };
    let entry = AuditEntry::new(
        &who.principal.username,
        verb,
        &format!("alarm/{id}"),
        &outcome,
        &who.remote,
        now_ms(),
    );
    match s.app.writer.submit(Op::Audited(Box::new(op), entry)).await {
        Ok(Done::Alarm(Ok((alarm, _)))) => Acted::Done(alarm),
        Ok(Done::Alarm(Err(ActionError::NotFound(_)))) => Acted::NotFound,
        Ok(Done::Alarm(Err(ActionError::Workflow(WorkflowError::Invalid(m))))) => Acted::Invalid(m),
        Ok(Done::Alarm(Err(ActionError::Workflow(WorkflowError::Conflict(m))))) => {
            let lang = who.lang();
            let now = blocking(s.store(), move |st| match st.alarm(id)? {
                Some(a) => Ok(Some(view(st, a, lang)?)),
                None => Ok(None),
            })
            .await;
            Acted::Conflict(match now {
                Ok(Some(v)) => conflict_message(lang, &v),
                _ => m,
            })
        }
        Ok(other) => Acted::Store(StoreError::Corrupt(format!(
            "unexpected store answer {other:?}"
        ))),
        Err(e) => Acted::Store(e),
    }
}

/// "The alarm is already taken by Kari Nordmann (03:12)", in Norwegian time.
pub fn conflict_message(lang: Lang, v: &AlarmView) -> String {
    let a = &v.alarm;
    let (key, name, at) = match a.state {
        AlarmState::Closed => (
            "error_closed",
            v.closed_by_name.as_deref().or(a.closed_by.as_deref()),
            a.closed_ms,
        ),
        _ => (
            "error_taken",
            v.acknowledged_by_name
                .as_deref()
                .or(a.acknowledged_by.as_deref()),
            a.acknowledged_ms,
        ),
    };
    let at = at
        .map(|ms| format!(" ({})", super::html::oslo_hm(ms)))
        .unwrap_or_default();
    format!("{} {}{at}.", t(lang, key), name.unwrap_or("?"))
}
