//! The uplink's bookkeeping, without I/O: what to send next, what is in
//! flight, what a receipt allows the journal to delete.
//!
//! - Lanes are read in priority order, so a batch holds alarms before care
//!   events before telemetry, and after an outage the first alarm goes out
//!   in the first batch.
//! - At most `window` batches await a receipt; alarms may exceed the window
//!   by [`ALARM_EXTRA`] batches, so they never wait behind telemetry.
//! - On every (re)connect, and when a receipt is overdue, the cursors go
//!   back to the start: everything still in the journal is sent again,
//!   whatever the broker says about the session. The backend deduplicates.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use trygg_protocol::Lane;
use trygg_uplink::{SeqRange, UplinkReceipt};

/// Extra batches alarms may have in flight beyond the window.
pub const ALARM_EXTRA: usize = 4;

#[derive(Debug)]
pub struct UplinkState {
    window: usize,
    receipt_timeout: Duration,
    connected: bool,
    /// Highest lane seq handed to the wire since the last reset.
    sent_upto: [u64; 3],
    /// Batches awaiting a receipt, with when they were sent.
    inflight: BTreeMap<u64, Instant>,
    next_batch: u64,
}

impl UplinkState {
    pub fn new(window: usize, receipt_timeout: Duration) -> Self {
        UplinkState {
            window,
            receipt_timeout,
            connected: false,
            sent_upto: [0; 3],
            inflight: BTreeMap::new(),
            next_batch: 1,
        }
    }

    pub fn connected(&self) -> bool {
        self.connected
    }

    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// A new connection: send everything not yet receipted again.
    pub fn on_connected(&mut self) {
        self.connected = true;
        self.rewind();
    }

    pub fn on_disconnected(&mut self) {
        self.connected = false;
        self.rewind();
    }

    fn rewind(&mut self) {
        self.sent_upto = [0; 3];
        self.inflight.clear();
    }

    /// The lanes that may be read now, with the seq to read after.
    pub fn sendable(&self) -> Vec<(Lane, u64)> {
        if !self.connected {
            return Vec::new();
        }
        if self.inflight.len() < self.window {
            Lane::ALL
                .iter()
                .map(|&l| (l, self.sent_upto[l.index()]))
                .collect()
        } else if self.inflight.len() < self.window + ALARM_EXTRA {
            vec![(Lane::Alarm, self.sent_upto[Lane::Alarm.index()])]
        } else {
            Vec::new()
        }
    }

    /// Records a batch handed to the wire; returns its id.
    pub fn on_sent(&mut self, records: &[(Lane, u64)], now: Instant) -> u64 {
        for &(lane, seq) in records {
            let s = &mut self.sent_upto[lane.index()];
            *s = (*s).max(seq);
        }
        let id = self.next_batch;
        self.next_batch += 1;
        self.inflight.insert(id, now);
        id
    }

    /// The ranges the journal may now delete. A receipt of an earlier
    /// connection's batch is as good as any: the backend committed them.
    pub fn on_receipt(&mut self, receipt: &UplinkReceipt) -> Vec<SeqRange> {
        self.inflight.remove(&receipt.batch);
        receipt.committed.clone()
    }

    /// Rewinds if the oldest batch has waited too long; returns whether it did.
    pub fn on_tick(&mut self, now: Instant) -> bool {
        let overdue = self
            .inflight
            .values()
            .any(|&sent_at| now.saturating_duration_since(sent_at) > self.receipt_timeout);
        if overdue {
            self.rewind();
        }
        overdue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(batch: u64, committed: Vec<SeqRange>) -> UplinkReceipt {
        UplinkReceipt {
            v: 1,
            batch,
            committed,
        }
    }

    #[test]
    fn nothing_is_sendable_while_disconnected() {
        let s = UplinkState::new(2, Duration::from_secs(5));
        assert!(s.sendable().is_empty());
    }

    #[test]
    fn lanes_are_offered_alarms_first_after_their_cursors() {
        let mut s = UplinkState::new(2, Duration::from_secs(5));
        s.on_connected();
        s.on_sent(
            &[(Lane::Alarm, 1), (Lane::Telemetry, 1), (Lane::Telemetry, 2)],
            Instant::now(),
        );
        assert_eq!(
            s.sendable(),
            vec![(Lane::Alarm, 1), (Lane::Care, 0), (Lane::Telemetry, 2)]
        );
    }

    #[test]
    fn a_full_window_still_lets_alarms_through() {
        let mut s = UplinkState::new(1, Duration::from_secs(5));
        s.on_connected();
        s.on_sent(&[(Lane::Telemetry, 1)], Instant::now());
        assert_eq!(s.sendable(), vec![(Lane::Alarm, 0)]);
        for i in 0..ALARM_EXTRA as u64 {
            s.on_sent(&[(Lane::Alarm, i + 1)], Instant::now());
        }
        assert!(s.sendable().is_empty());
    }

    #[test]
    fn receipt_frees_the_window_and_names_what_to_delete() {
        let mut s = UplinkState::new(1, Duration::from_secs(5));
        s.on_connected();
        let id = s.on_sent(&[(Lane::Care, 1), (Lane::Care, 2)], Instant::now());
        let r = SeqRange {
            lane: Lane::Care,
            first: 1,
            last: 2,
        };
        assert_eq!(s.on_receipt(&receipt(id, vec![r])), vec![r]);
        assert_eq!(s.in_flight(), 0);
        assert_eq!(s.sendable().len(), 3);
    }

    #[test]
    fn reconnect_rewinds_to_resend_everything() {
        let mut s = UplinkState::new(4, Duration::from_secs(5));
        s.on_connected();
        s.on_sent(&[(Lane::Alarm, 7)], Instant::now());
        s.on_disconnected();
        s.on_connected();
        assert_eq!(s.sendable()[0], (Lane::Alarm, 0));
        assert_eq!(s.in_flight(), 0);
    }

    #[test]
    fn overdue_receipt_rewinds() {
        let mut s = UplinkState::new(4, Duration::from_secs(5));
        s.on_connected();
        let t0 = Instant::now();
        s.on_sent(&[(Lane::Alarm, 3)], t0);
        assert!(!s.on_tick(t0 + Duration::from_secs(4)));
        assert!(s.on_tick(t0 + Duration::from_secs(6)));
        assert_eq!(s.sendable()[0], (Lane::Alarm, 0));
    }
}
