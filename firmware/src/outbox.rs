//! A bounded queue of events awaiting the gateway's receipt.
//!
//! Invariants:
//! - an event leaves the outbox only on a receipt (committed, duplicate or
//!   rejected) for its sequence number;
//! - a full outbox evicts the oldest event of the lowest-priority lane that
//!   is lower than the newcomer's, and refuses the newcomer otherwise, so an
//!   alarm is never evicted;
//! - events not receipted within the retry interval are offered again, with
//!   the interval doubling up to a ceiling.

use heapless::Vec;
use trygg_protocol::DeviceEvent;

/// Why an event could not be queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushError {
    /// Full of events at least as important as this one.
    Full,
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    event: DeviceEvent,
    /// When to (re)send next, in the caller's milliseconds.
    due_ms: u64,
    attempts: u32,
}

/// Events awaiting receipt, at most `N` of them.
pub struct Outbox<const N: usize> {
    pending: Vec<Pending, N>,
    retry_ms: u64,
    max_retry_ms: u64,
    evicted: u32,
}

impl<const N: usize> Outbox<N> {
    /// `retry_ms` is the first re-send interval; it doubles per attempt up to
    /// `max_retry_ms`.
    pub const fn new(retry_ms: u64, max_retry_ms: u64) -> Self {
        Outbox {
            pending: Vec::new(),
            retry_ms,
            max_retry_ms,
            evicted: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// How many events were evicted to make room for more important ones.
    pub fn evicted(&self) -> u32 {
        self.evicted
    }

    /// The event a full outbox would evict to take one of `kind`: of the
    /// events in a less important lane, the oldest of the least important
    /// lane. `Ok(None)` when there is room; `Err(Full)` when it is full of
    /// events at least as important.
    pub fn victim_for(
        &self,
        kind: trygg_protocol::EventKind,
    ) -> Result<Option<DeviceEvent>, PushError> {
        if !self.pending.is_full() {
            return Ok(None);
        }
        let lane = kind.lane();
        self.pending
            .iter()
            .enumerate()
            .filter(|(_, p)| p.event.kind.lane() > lane)
            .max_by_key(|(i, p)| (p.event.kind.lane(), core::cmp::Reverse(*i)))
            .map(|(_, p)| Some(p.event))
            .ok_or(PushError::Full)
    }

    /// Queues an event to be sent at once. Returns the event evicted for
    /// it, if the outbox was full (see [`Outbox::victim_for`]).
    pub fn push(
        &mut self,
        event: DeviceEvent,
        now_ms: u64,
    ) -> Result<Option<DeviceEvent>, PushError> {
        let victim = self.victim_for(event.kind)?;
        if let Some(v) = victim {
            self.pending.retain(|p| p.event.seq != v.seq);
            self.evicted += 1;
        }
        self.pending
            .push(Pending {
                event,
                due_ms: now_ms,
                attempts: 0,
            })
            .map_err(|_| PushError::Full)?;
        Ok(victim)
    }

    /// The events queued, oldest first.
    pub fn events(&self) -> impl Iterator<Item = DeviceEvent> + Clone + '_ {
        self.pending.iter().map(|p| p.event)
    }

    /// The next event due for (re)sending, highest lane first, then oldest.
    /// Marks it sent: it is offered again after the retry interval unless a
    /// receipt arrives.
    pub fn poll_send(&mut self, now_ms: u64) -> Option<DeviceEvent> {
        let i = self
            .pending
            .iter()
            .enumerate()
            .filter(|(_, p)| p.due_ms <= now_ms)
            .min_by_key(|(i, p)| (p.event.kind.lane(), *i))
            .map(|(i, _)| i)?;
        let retry = self.retry_ms;
        let max = self.max_retry_ms;
        let p = &mut self.pending[i];
        let backoff = retry.saturating_mul(1u64 << p.attempts.min(16)).min(max);
        p.attempts += 1;
        p.due_ms = now_ms.saturating_add(backoff);
        Some(p.event)
    }

    /// Makes every pending event due now (after a reconnect).
    pub fn resend_all(&mut self, now_ms: u64) {
        for p in self.pending.iter_mut() {
            p.due_ms = now_ms;
        }
    }

    /// Removes the event with this sequence number. Returns it, or `None`
    /// for a receipt of an event this outbox does not hold (a late
    /// duplicate receipt, or a stranger's): harmless and ignored.
    pub fn on_receipt(&mut self, seq: u64) -> Option<DeviceEvent> {
        let i = self.pending.iter().position(|p| p.event.seq == seq)?;
        Some(self.pending.remove(i).event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trygg_protocol::EventKind;

    fn ev(seq: u64, kind: EventKind) -> DeviceEvent {
        DeviceEvent {
            seq,
            kind,
            ts: None,
            battery: None,
            value: None,
        }
    }

    #[test]
    fn event_stays_until_its_receipt_arrives() {
        let mut o: Outbox<4> = Outbox::new(100, 1000);
        o.push(ev(1, EventKind::ButtonPress), 0).unwrap();
        assert_eq!(o.poll_send(0).map(|e| e.seq), Some(1));
        assert_eq!(
            o.poll_send(50),
            None,
            "not due again before the retry interval"
        );
        assert_eq!(
            o.poll_send(100).map(|e| e.seq),
            Some(1),
            "re-sent after the interval"
        );
        assert_eq!(o.on_receipt(1).map(|e| e.seq), Some(1));
        assert!(o.is_empty());
        assert_eq!(o.poll_send(10_000), None);
    }

    #[test]
    fn receipt_for_unknown_seq_is_ignored() {
        let mut o: Outbox<2> = Outbox::new(100, 1000);
        o.push(ev(1, EventKind::Motion), 0).unwrap();
        assert_eq!(o.on_receipt(99), None);
        assert_eq!(o.len(), 1);
    }

    #[test]
    fn alarms_are_sent_before_older_telemetry() {
        let mut o: Outbox<4> = Outbox::new(100, 1000);
        o.push(ev(1, EventKind::Motion), 0).unwrap();
        o.push(ev(2, EventKind::Fall), 0).unwrap();
        assert_eq!(o.poll_send(0).map(|e| e.seq), Some(2));
        assert_eq!(o.poll_send(0).map(|e| e.seq), Some(1));
    }

    #[test]
    fn full_outbox_evicts_oldest_telemetry_for_an_alarm_and_never_an_alarm() {
        let mut o: Outbox<2> = Outbox::new(100, 1000);
        o.push(ev(1, EventKind::Motion), 0).unwrap();
        o.push(ev(2, EventKind::Motion), 0).unwrap();
        assert_eq!(
            o.push(ev(3, EventKind::ButtonPress), 0)
                .unwrap()
                .map(|e| e.seq),
            Some(1)
        );
        assert_eq!(o.evicted(), 1);
        assert_eq!(o.on_receipt(1), None, "the oldest telemetry went");
        o.push(ev(4, EventKind::Fall), 0).unwrap();
        assert_eq!(o.push(ev(5, EventKind::Fall), 0), Err(PushError::Full));
        assert_eq!(o.push(ev(6, EventKind::Motion), 0), Err(PushError::Full));
        assert!(o.on_receipt(3).is_some() && o.on_receipt(4).is_some());
    }

    #[test]
    fn retry_interval_doubles_up_to_the_ceiling() {
        let mut o: Outbox<1> = Outbox::new(100, 250);
        o.push(ev(1, EventKind::Fall), 0).unwrap();
        assert!(o.poll_send(0).is_some()); // next due at 100
        assert!(o.poll_send(99).is_none());
        assert!(o.poll_send(100).is_some()); // next due at 300
        assert!(o.poll_send(299).is_none());
        assert!(o.poll_send(300).is_some()); // capped: next due at 550
        assert!(o.poll_send(549).is_none());
        assert!(o.poll_send(550).is_some());
    }
}
