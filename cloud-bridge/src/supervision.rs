//! Silence is an event, for gateways too: every gateway heart-beats (and
//! sends batches, and says `online` on its status topic); one heard from in
//! none of these ways for `gateway_offline_after_s` raises a
//! `gateway_offline` technical alarm, and its next sign of life clears it.
//!
//! The broker's last will (`offline` on the status topic) is not taken as
//! the alarm itself: a gateway that reconnects within seconds (a DSL line
//! re-syncing, a restart after an update) should not wake anybody. It is
//! logged, and the period still runs from the last sign of life.
//!
//! [`GatewayWatch`] is the bookkeeping, with the clock passed in;
//! [`supervise`] is the task. Gateways known from the store are watched
//! from the bridge's start, so a gateway that never comes back after a
//! bridge restart is still reported.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use trygg_uplink::metrics::Metrics;

use crate::store::{Op, Store, StoreWriter};

struct Seen {
    last: Instant,
    offline: bool,
}

/// When each gateway was last heard from, and which are offline.
pub struct GatewayWatch {
    after: Duration,
    gateways: HashMap<String, Seen>,
    /// Decommissioned: never watched again.
    forgotten: std::collections::HashSet<String>,
}

/// What the watch decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Offline { gateway: String, silent_s: u64 },
    Back { gateway: String },
}

impl GatewayWatch {
    /// `known`: gateways from the store, and whether each has a
    /// `gateway_offline` alarm open. All count as heard from `now`.
    pub fn new(after: Duration, known: Vec<(String, bool)>, now: Instant) -> GatewayWatch {
        GatewayWatch {
            after,
            gateways: known
                .into_iter()
                .map(|(g, offline)| (g, Seen { last: now, offline }))
                .collect(),
            forgotten: Default::default(),
        }
    }

    /// Stops watching a decommissioned gateway, for good.
    pub fn forget(&mut self, gateway: &str) {
        self.gateways.remove(gateway);
        self.forgotten.insert(gateway.to_string());
    }

    /// A sign of life from `gateway`.
    pub fn seen(&mut self, gateway: &str, now: Instant) -> Option<Verdict> {
        if self.forgotten.contains(gateway) {
            return None;
        }
        let s = self.gateways.entry(gateway.to_string()).or_insert(Seen {
            last: now,
            offline: false,
        });
        s.last = now;
        std::mem::replace(&mut s.offline, false).then(|| Verdict::Back {
            gateway: gateway.to_string(),
        })
    }

    /// Gateways silent past the period, once per silence.
    pub fn check(&mut self, now: Instant) -> Vec<Verdict> {
        let mut out: Vec<Verdict> = self
            .gateways
            .iter_mut()
            .filter(|(_, s)| !s.offline && now.saturating_duration_since(s.last) > self.after)
            .map(|(g, s)| {
                s.offline = true;
                Verdict::Offline {
                    gateway: g.clone(),
                    silent_s: now.saturating_duration_since(s.last).as_secs(),
                }
            })
            .collect();
        out.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        out
    }

    pub fn offline_count(&self) -> usize {
        self.gateways.values().filter(|s| s.offline).count()
    }
}

/// How often the watch is checked.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Runs until `cancel`: takes gateway ids heard from on `seen` (and those
/// decommissioned, to forget, on `forget`), commits
/// what the watch decides through `writer`, and raises the sequence gaps
/// still missing after `gap_grace`.
pub async fn supervise(
    mut watch: GatewayWatch,
    (mut seen, mut forget): (
        mpsc::UnboundedReceiver<String>,
        mpsc::UnboundedReceiver<String>,
    ),
    store: Store,
    writer: StoreWriter,
    metrics: Arc<Metrics>,
    gap_grace: Duration,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        let verdicts = tokio::select! {
            _ = cancel.cancelled() => break,
            Some(g) = forget.recv() => {
                tracing::info!(gateway = %g, "gateway decommissioned: no longer supervised");
                watch.forget(&g);
                Vec::new()
            }
            g = seen.recv() => match g {
                Some(g) => watch.seen(&g, Instant::now()).into_iter().collect(),
                None => break,
            },
            _ = tick.tick() => {
                let before = crate::store::now_ms().saturating_sub(gap_grace.as_millis() as u64);
                let store = store.clone();
                let due = tokio::task::spawn_blocking(move || store.gaps_due(before)).await;
                if matches!(due, Ok(Ok(true))) {
                    if let Err(e) = writer.submit(Op::RaiseGaps { found_before_ms: before }).await {
                        tracing::error!(error = %e, "sequence gaps could not be raised");
                    }
                }
                watch.check(Instant::now())
            }
        };
        metrics.set("gateways_offline", "", watch.offline_count() as f64);
        for v in verdicts {
            let op = match v {
                Verdict::Offline { gateway, silent_s } => {
                    tracing::warn!(gateway = %gateway, silent_s, "gateway silent past its period: raising gateway_offline");
                    Op::GatewayOffline { gateway, silent_s }
                }
                Verdict::Back { gateway } => {
                    tracing::info!(gateway = %gateway, "gateway heard from again: clearing gateway_offline");
                    Op::GatewayBack { gateway }
                }
            };
            if let Err(e) = writer.submit(op).await {
                tracing::error!(error = %e, "gateway supervision could not commit");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER: Duration = Duration::from_secs(180);

    #[test]
    fn a_gateway_silent_past_the_period_is_offline_once_and_back_on_its_next_sign() {
        let t0 = Instant::now();
        let mut w = GatewayWatch::new(AFTER, vec![], t0);
        assert_eq!(w.seen("gw-1", t0), None);
        assert!(w.check(t0 + Duration::from_secs(180)).is_empty());
        assert_eq!(
            w.check(t0 + Duration::from_secs(181)),
            vec![Verdict::Offline {
                gateway: "gw-1".into(),
                silent_s: 181
            }]
        );
        assert!(w.check(t0 + Duration::from_secs(999)).is_empty(), "once");
        assert_eq!(
            w.seen("gw-1", t0 + Duration::from_secs(1000)),
            Some(Verdict::Back {
                gateway: "gw-1".into()
            })
        );
        assert_eq!(w.seen("gw-1", t0 + Duration::from_secs(1001)), None);
    }

    #[test]
    fn heartbeats_keep_a_quiet_gateway_online() {
        let t0 = Instant::now();
        let mut w = GatewayWatch::new(AFTER, vec![], t0);
        for i in 0..100u64 {
            w.seen("gw-1", t0 + Duration::from_secs(30 * i));
            assert!(w.check(t0 + Duration::from_secs(30 * i + 29)).is_empty());
        }
    }

    #[test]
    fn gateways_known_at_start_are_watched_and_their_open_alarms_remembered() {
        let t0 = Instant::now();
        let mut w = GatewayWatch::new(
            AFTER,
            vec![("gw-a".into(), false), ("gw-b".into(), true)],
            t0,
        );
        let v = w.check(t0 + Duration::from_secs(200));
        assert_eq!(
            v,
            vec![Verdict::Offline {
                gateway: "gw-a".into(),
                silent_s: 200
            }],
            "gw-b's alarm is open already"
        );
        assert_eq!(
            w.seen("gw-b", t0 + Duration::from_secs(201)),
            Some(Verdict::Back {
                gateway: "gw-b".into()
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn under_paused_time_offline_comes_after_the_period_and_not_before() {
        let mut w = GatewayWatch::new(AFTER, vec![], Instant::now());
        w.seen("gw-1", Instant::now());
        tokio::time::sleep(Duration::from_secs(179)).await;
        assert!(w.check(Instant::now()).is_empty());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(w.check(Instant::now()).len(), 1);
    }
}
