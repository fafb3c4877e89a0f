//! Escalation: an alarm nobody acknowledges in time goes to the next group
//! of a configured chain, e.g. the home-care team, then the response centre,
//! then the on-call nurse (`[escalation] chain`, `docs/console.md`).
//!
//! - An alarm starts with the chain's first group (level 0; its `after_s`
//!   must be 0). Once it has been **open** (not acknowledged) for a later
//!   step's `after_s`, counted from when the bridge raised it, it is
//!   escalated to that step's group: `escalation_level`, `escalated_to` and
//!   `escalations` on the alarm say so.
//! - Each step is taken once. A bridge that was down past several steps
//!   takes every step that came due, in order, each with its own record and
//!   audit entry, so the history says what should have happened.
//! - Acknowledging stops it: only open alarms escalate.
//! - What is durable when: the escalation, its audit entry (`escalate` by
//!   `trygg`) and the alarm's new level are one store transaction
//!   ([`crate::store::Op::Escalate`]); the `escalated` change goes on the
//!   stream only after that commit. The level lives on the alarm in the
//!   store, so a restart neither repeats a step nor forgets one that came
//!   due while the bridge was down.
//! - Technical alarms (device silent, gateway offline, ...) escalate only
//!   with `technical = true`: by default they wait for a technician rather
//!   than wake an on-call nurse.
//!
//! [`Alarm::escalate`](crate::alarm::Alarm::escalate) is the decision, with
//! the clock passed in; [`run`] is the task that asks the store every
//! second whether anything is due (a read, no fsync) and commits it.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use trygg_protocol::Category;

use crate::alarm::Alarm;
use crate::config::ConfigError;
use crate::store::{Done, Op, Store, StoreWriter};

/// The longest group name, in characters.
pub const MAX_GROUP_CHARS: usize = 64;

/// `[escalation]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EscalationConfig {
    /// The groups in order, each with how long an alarm may stay
    /// unacknowledged before it goes to that group. Empty: no escalation.
    pub chain: Vec<EscalationStep>,
    /// Whether technical alarms escalate too.
    pub technical: bool,
}

/// One group of the chain.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EscalationStep {
    /// An escalation group, as users have it in their `groups`.
    pub group: String,
    /// Seconds after the alarm was raised, unacknowledged.
    pub after_s: u64,
}

impl EscalationConfig {
    /// Checks the chain, naming the field at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |reason: String| {
            Err(ConfigError::Invalid {
                field: "escalation.chain",
                reason,
            })
        };
        if self.chain.len() > usize::from(u8::MAX) {
            return invalid(format!("at most {} steps", u8::MAX));
        }
        for (i, step) in self.chain.iter().enumerate() {
            let g = step.group.trim();
            if g.is_empty() {
                return invalid(format!("step {} has an empty group", i + 1));
            }
            if g.chars().count() > MAX_GROUP_CHARS || g != step.group {
                return invalid(format!(
                    "step {}: group {:?} must be at most {MAX_GROUP_CHARS} characters without surrounding spaces",
                    i + 1,
                    step.group
                ));
            }
            if self.chain[..i].iter().any(|s| s.group == step.group) {
                return invalid(format!("group {:?} is in the chain twice", step.group));
            }
        }
        if let Some(first) = self.chain.first() {
            if first.after_s != 0 {
                return invalid(format!(
                    "the first step ({}) is where alarms start: its after_s must be 0, not {}",
                    first.group, first.after_s
                ));
            }
        }
        for pair in self.chain.windows(2) {
            if pair[1].after_s <= pair[0].after_s {
                return invalid(format!(
                    "after_s must increase along the chain: {} ({} s) comes after {} ({} s)",
                    pair[1].group, pair[1].after_s, pair[0].group, pair[0].after_s
                ));
            }
        }
        Ok(())
    }

    /// Whether this alarm escalates at all (by its category).
    pub fn applies_to(&self, alarm: &Alarm) -> bool {
        self.chain.len() > 1
            && (self.technical || alarm.kind.category() != Category::Technical)
            && alarm.kind.category() != Category::Telemetry
    }

    /// The group now responsible for `alarm`: the one it was escalated to,
    /// else the chain's first. `None` without a chain.
    pub fn responsible_group<'a>(&'a self, alarm: &'a Alarm) -> Option<&'a str> {
        alarm
            .escalated_to
            .as_deref()
            .or_else(|| self.chain.first().map(|s| s.group.as_str()))
    }

    /// When `alarm` is next due to escalate (Unix ms), if it ever is.
    pub fn next_due_ms(&self, alarm: &Alarm) -> Option<u64> {
        if alarm.state != crate::alarm::AlarmState::Open || !self.applies_to(alarm) {
            return None;
        }
        self.chain
            .get(usize::from(alarm.escalation_level) + 1)
            .map(|s| {
                alarm
                    .raised_ms
                    .saturating_add(s.after_s.saturating_mul(1000))
            })
    }
}

/// How often the task looks for alarms due.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Runs until `cancel`: every second, escalates the open alarms whose next
/// step has come (as of `clock()`, Unix ms).
pub async fn run(
    store: Store,
    writer: StoreWriter,
    policy: Arc<EscalationConfig>,
    clock: impl Fn() -> u64 + Send + 'static,
    cancel: CancellationToken,
) {
    if policy.chain.len() < 2 {
        tracing::info!("escalation off: the chain has fewer than two groups");
        return;
    }
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let as_of_ms = clock();
        let due = {
            let (store, policy) = (store.clone(), policy.clone());
            tokio::task::spawn_blocking(move || store.escalations_due(&policy, as_of_ms)).await
        };
        match due {
            Ok(Ok(false)) => continue,
            Ok(Ok(true)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "escalation could not read the store");
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "escalation check failed");
                continue;
            }
        }
        let op = Op::Escalate {
            policy: policy.clone(),
            as_of_ms,
        };
        match writer.submit(op).await {
            Ok(Done::Escalated(_)) => {}
            Ok(other) => tracing::error!(done = ?other, "unexpected store answer to escalate"),
            Err(e) => tracing::error!(error = %e, "escalation could not commit"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::AuditQuery;
    use crate::alarm::{AlarmState, Change};
    use crate::ingest::tests::{batch, record};
    use trygg_protocol::{EventKind, Lane};

    fn policy() -> Arc<EscalationConfig> {
        Arc::new(crate::Config::default().escalation)
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("bridge.redb")).unwrap();
        (dir, s)
    }

    /// A button press raised at `at_ms`; returns its id.
    fn press(store: &Store, n: u64, at_ms: u64) -> u64 {
        let b = batch(
            n,
            vec![record(
                Lane::Alarm,
                n,
                &format!("button-{n}"),
                1,
                EventKind::ButtonPress,
            )],
        );
        match &store.commit(vec![Op::Ingest(b)], at_ms).unwrap()[0] {
            Done::Ingested { raised, .. } => raised[0].id,
            other => panic!("{other:?}"),
        }
    }

    fn escalate(store: &Store, as_of_ms: u64) -> Vec<Alarm> {
        match store
            .commit(
                vec![Op::Escalate {
                    policy: policy(),
                    as_of_ms,
                }],
                as_of_ms,
            )
            .unwrap()
            .remove(0)
        {
            Done::Escalated(a) => a,
            other => panic!("{other:?}"),
        }
    }

    fn audit_escalations(store: &Store) -> Vec<crate::access::AuditEntry> {
        store
            .audit(&AuditQuery {
                action: Some("escalate".into()),
                ..AuditQuery::default()
            })
            .unwrap()
    }

    const T0: u64 = 1_700_000_000_000;

    #[test]
    fn the_default_chain_is_home_care_then_response_centre_then_on_call_nurse() {
        let p = policy();
        p.validate().unwrap();
        let chain: Vec<(&str, u64)> = p
            .chain
            .iter()
            .map(|s| (s.group.as_str(), s.after_s))
            .collect();
        assert_eq!(
            chain,
            [
                ("home-care", 0),
                ("response-centre", 120),
                ("on-call-nurse", 300)
            ]
        );
        assert!(!p.technical);
    }

    #[test]
    fn a_chain_that_does_not_increase_or_has_an_empty_group_is_refused_naming_the_field() {
        let step = |group: &str, after_s| EscalationStep {
            group: group.into(),
            after_s,
        };
        let bad = [
            vec![step("a", 0), step("b", 120), step("c", 120)],
            vec![step("a", 0), step("b", 300), step("c", 120)],
            vec![step("a", 0), step(" ", 120)],
            vec![step("a", 30), step("b", 120)],
            vec![step("a", 0), step("a", 120)],
        ];
        for chain in bad {
            let c = EscalationConfig {
                chain: chain.clone(),
                technical: false,
            };
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains("escalation.chain"), "{chain:?}: {err}");
        }
        EscalationConfig {
            chain: vec![],
            technical: false,
        }
        .validate()
        .unwrap();
        let err = crate::Config::from_toml_str(
            "[escalation]\nchain = [{ group = \"a\", after_s = 0 }, { group = \"b\", after_s = 0 }]\n",
        )
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("escalation.chain"), "{err}");
    }

    #[test]
    fn an_alarm_is_not_escalated_before_its_time() {
        let (_d, s) = store();
        let id = press(&s, 1, T0);
        assert!(!s.escalations_due(&policy(), T0 + 119_999).unwrap());
        assert!(escalate(&s, T0 + 119_999).is_empty());
        let a = s.alarm(id).unwrap().unwrap();
        assert_eq!((a.escalation_level, a.escalated_to.as_deref()), (0, None));
        assert_eq!(policy().responsible_group(&a), Some("home-care"));
        assert!(audit_escalations(&s).is_empty());
    }

    #[test]
    fn an_alarm_is_escalated_once_per_step_with_an_audit_entry_each() {
        let (_d, s) = store();
        let id = press(&s, 1, T0);
        assert!(s.escalations_due(&policy(), T0 + 120_000).unwrap());
        let up = escalate(&s, T0 + 120_000);
        assert_eq!(up.len(), 1);
        assert_eq!(up[0].escalated_to.as_deref(), Some("response-centre"));
        assert_eq!(up[0].escalation_level, 1);
        // Every tick until the next step finds nothing more to do.
        for t in [120_001, 150_000, 299_999] {
            assert!(!s.escalations_due(&policy(), T0 + t).unwrap());
            assert!(escalate(&s, T0 + t).is_empty());
        }
        let up = escalate(&s, T0 + 300_000);
        assert_eq!(up[0].escalated_to.as_deref(), Some("on-call-nurse"));
        // The end of the chain: nothing further, ever.
        assert!(!s.escalations_due(&policy(), u64::MAX / 2).unwrap());
        assert!(escalate(&s, T0 + 3_600_000).is_empty());
        let a = s.alarm(id).unwrap().unwrap();
        assert_eq!(a.state, AlarmState::Open);
        assert_eq!(
            a.escalations,
            vec![
                crate::alarm::Escalation {
                    level: 1,
                    group: "response-centre".into(),
                    at_ms: T0 + 120_000
                },
                crate::alarm::Escalation {
                    level: 2,
                    group: "on-call-nurse".into(),
                    at_ms: T0 + 300_000
                },
            ]
        );
        let audit = audit_escalations(&s);
        assert_eq!(audit.len(), 2);
        assert!(audit.iter().all(|e| e.actor == crate::alarm::SYSTEM_ACTOR
            && e.target == format!("alarm/{id}")
            && e.outcome.starts_with("ok")));
        assert!(audit[0].outcome.contains("on-call-nurse"), "newest first");
        assert_eq!(audit[1].at_ms, T0 + 120_000);
    }

    #[test]
    fn acknowledging_stops_the_escalation() {
        let (_d, s) = store();
        let id = press(&s, 1, T0);
        escalate(&s, T0 + 130_000);
        s.commit(
            vec![Op::Acknowledge {
                alarm: id,
                by: "kari".into(),
            }],
            T0 + 140_000,
        )
        .unwrap();
        assert!(!s.escalations_due(&policy(), T0 + 999_000).unwrap());
        assert!(escalate(&s, T0 + 999_000).is_empty());
        let a = s.alarm(id).unwrap().unwrap();
        assert_eq!(a.state, AlarmState::Acknowledged);
        assert_eq!(
            a.escalated_to.as_deref(),
            Some("response-centre"),
            "the record of the escalation stays"
        );
        assert_eq!(audit_escalations(&s).len(), 1);
    }

    #[test]
    fn a_bridge_down_past_several_steps_takes_each_in_order_and_a_restart_repeats_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bridge.redb");
        let id = {
            let s = Store::open(&path).unwrap();
            let id = press(&s, 1, T0);
            escalate(&s, T0 + 121_000);
            id
        };
        let s = Store::open(&path).unwrap();
        assert_eq!(s.alarm(id).unwrap().unwrap().escalation_level, 1);
        assert!(escalate(&s, T0 + 200_000).is_empty(), "not again");
        let id2 = press(&s, 2, T0);
        let up = escalate(&s, T0 + 400_000);
        assert_eq!(up.len(), 2, "both alarms, each once");
        let a2 = up.iter().find(|a| a.id == id2).unwrap();
        assert_eq!(a2.escalation_level, 2);
        assert_eq!(
            a2.escalations.iter().map(|e| e.level).collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(audit_escalations(&s).len(), 1 + 1 + 2);
    }

    #[test]
    fn technical_alarms_escalate_only_when_configured() {
        let (_d, s) = store();
        let b = batch(
            1,
            vec![record(Lane::Care, 1, "smoke-1", 1, EventKind::BatteryLow)],
        );
        s.commit(vec![Op::Ingest(b)], T0).unwrap();
        assert!(!s.escalations_due(&policy(), T0 + 999_000).unwrap());
        let mut with = (*policy()).clone();
        with.technical = true;
        assert!(s.escalations_due(&with, T0 + 999_000).unwrap());
    }

    /// Real time with a clock the test sets: the task's store reads and
    /// commits run on other threads, which paused tokio time would skip
    /// past.
    #[tokio::test]
    async fn the_task_escalates_once_the_clock_passes_the_step_and_tells_the_stream() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let (_d, s) = store();
        let id = press(&s, 1, T0);
        let (changes, mut rx) = tokio::sync::broadcast::channel(16);
        let (writer, thread) = StoreWriter::spawn(
            s.clone(),
            Arc::new(trygg_uplink::metrics::Metrics::new()),
            changes,
        );
        let now = Arc::new(AtomicU64::new(T0 + 119_000));
        let clock = {
            let now = now.clone();
            move || now.load(Ordering::SeqCst)
        };
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(s.clone(), writer, policy(), clock, cancel.clone()));
        tokio::time::sleep(CHECK_EVERY * 2).await;
        assert_eq!(s.alarm(id).unwrap().unwrap().escalation_level, 0);
        assert!(rx.try_recv().is_err(), "nothing on the stream yet");
        now.store(T0 + 120_000, Ordering::SeqCst);
        let change = tokio::time::timeout(CHECK_EVERY * 5, rx.recv())
            .await
            .expect("escalated within a few ticks")
            .unwrap();
        assert_eq!(change.change, Change::Escalated);
        assert_eq!(
            change.alarm.escalated_to.as_deref(),
            Some("response-centre")
        );
        tokio::time::sleep(CHECK_EVERY * 2).await;
        assert!(rx.try_recv().is_err(), "once per step");
        cancel.cancel();
        task.await.unwrap();
        tokio::task::spawn_blocking(move || thread.join().unwrap())
            .await
            .unwrap();
    }
}
