//! The fault schedule: which fault, when, for how long, drawn from one seed.
//!
//! Pure: the same seed and options give the same schedule, so a failing run
//! can be replayed with `--seed`. What the system does in between (how long
//! a restart takes, which batch is on the wire when the link goes) is not
//! under the seed's control: a replay repeats the faults, not the timing.
//!
//! Each target (the gateway, the bridge, Mosquitto, the link, the disk) has
//! its own list and its own random stream, so adding link faults does not
//! move the kills. A target's faults are spread over the fault phase, one
//! per equal slot at a random point inside it, so they neither bunch up nor
//! overlap one another; faults on different targets do overlap, on purpose.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// What to disturb on the gateway's uplink path (see [`super::proxy`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LinkFault {
    /// Drop every connection and refuse new ones.
    Cut,
    /// Keep connections open but pass no bytes (a black hole).
    Stall,
    /// Add this much latency to every chunk, each way.
    Delay(Duration),
    /// At most this many bytes per second, each way.
    Throttle(u64),
    /// Close every connection abruptly (TCP RST), once; new ones are fine.
    Reset,
}

impl LinkFault {
    /// The name used in progress lines and the summary.
    pub fn name(&self) -> &'static str {
        match self {
            LinkFault::Cut => "cut",
            LinkFault::Stall => "stall",
            LinkFault::Delay(_) => "delay",
            LinkFault::Throttle(_) => "throttle",
            LinkFault::Reset => "reset",
        }
    }
}

impl std::fmt::Display for LinkFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkFault::Delay(d) => write!(f, "delay {} ms", d.as_millis()),
            LinkFault::Throttle(b) => write!(f, "throttle {b} B/s"),
            other => f.write_str(other.name()),
        }
    }
}

/// One fault.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    /// SIGKILL the gateway, leave it down for `down`, start it again.
    KillGateway { down: Duration },
    /// SIGKILL the bridge (and with it the backend broker), likewise.
    KillBridge { down: Duration },
    /// SIGKILL Mosquitto (the device broker), likewise.
    KillMosquitto { down: Duration },
    /// Disturb the uplink for `lasts` (a reset is instantaneous).
    Link { fault: LinkFault, lasts: Duration },
    /// Fill the gateway's disk for `lasts`, then free it.
    DiskFill { lasts: Duration },
}

/// A fault at an offset from the start of the fault phase.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Step {
    pub at: Duration,
    pub fault: Fault,
}

/// How many faults of each kind, over how long.
#[derive(Clone, Debug)]
pub struct PlanOptions {
    pub phase: Duration,
    pub gateway_kills: u32,
    pub bridge_kills: u32,
    pub mosquitto_kills: u32,
    pub link_faults: u32,
    pub disk_fills: u32,
    /// The gateway's uplink receipt timeout: a stall outlasts it, so that
    /// the gateway sends again what the backend may already hold (and the
    /// backend's deduplication has work to do).
    pub receipt_timeout: Duration,
}

/// The schedule, one list per target, each sorted by time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub gateway: Vec<Step>,
    pub bridge: Vec<Step>,
    pub mosquitto: Vec<Step>,
    pub link: Vec<Step>,
    pub disk: Vec<Step>,
}

impl Plan {
    pub fn len(&self) -> usize {
        self.gateway.len()
            + self.bridge.len()
            + self.mosquitto.len()
            + self.link.len()
            + self.disk.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A random stream per target, all from one seed.
fn stream(seed: u64, target: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ target.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

fn secs(rng: &mut StdRng, lo: f64, hi: f64) -> Duration {
    Duration::from_secs_f64(rng.random_range(lo..hi))
}

/// `n` steps spread over `phase`: one per equal slot, at a random point in
/// its first 3/4 (so that what the step lasts fits in the rest), each
/// lasting what `make` draws given the slot's length.
fn spread(
    rng: &mut StdRng,
    n: u32,
    phase: Duration,
    mut make: impl FnMut(&mut StdRng, Duration) -> Fault,
) -> Vec<Step> {
    if n == 0 {
        return Vec::new();
    }
    let slot = phase / n;
    (0..n)
        .map(|i| {
            let at = slot * i + slot.mul_f64(rng.random_range(0.05..0.75));
            Step {
                at,
                fault: make(rng, slot),
            }
        })
        .collect()
}

/// How long a process stays dead: up to 1.5 s, and never more than a
/// third of its slot, so that it is up for most of the run.
fn downtime(rng: &mut StdRng, slot: Duration) -> Duration {
    let hi = (slot.as_secs_f64() / 3.0).clamp(0.05, 1.5);
    secs(rng, 0.0, hi)
}

/// Draws the schedule.
pub fn plan(seed: u64, o: &PlanOptions) -> Plan {
    let mut plan = Plan {
        gateway: spread(&mut stream(seed, 1), o.gateway_kills, o.phase, |r, s| {
            Fault::KillGateway {
                down: downtime(r, s),
            }
        }),
        bridge: spread(&mut stream(seed, 2), o.bridge_kills, o.phase, |r, s| {
            Fault::KillBridge {
                down: downtime(r, s),
            }
        }),
        mosquitto: spread(&mut stream(seed, 3), o.mosquitto_kills, o.phase, |r, s| {
            Fault::KillMosquitto {
                down: downtime(r, s),
            }
        }),
        ..Plan::default()
    };

    // Link faults: every kind once (as far as the count allows), the rest
    // drawn at random, in a shuffled order.
    let mut rng = stream(seed, 4);
    let kinds = |rng: &mut StdRng, k: usize| match k {
        0 => LinkFault::Cut,
        1 => LinkFault::Reset,
        2 => LinkFault::Delay(Duration::from_millis(rng.random_range(50..800))),
        3 => LinkFault::Throttle(rng.random_range(2_000..40_000)),
        _ => LinkFault::Stall,
    };
    let mut faults: Vec<LinkFault> = (0..o.link_faults as usize)
        .map(|i| {
            let k = if i < 5 { i } else { rng.random_range(0..5) };
            kinds(&mut rng, k)
        })
        .collect();
    faults.shuffle(&mut rng);
    let mut next = faults.into_iter();
    let receipt_timeout = o.receipt_timeout;
    plan.link = spread(&mut rng, o.link_faults, o.phase, |r, slot| {
        let fault = next.next().unwrap_or(LinkFault::Cut);
        let hi = (slot.as_secs_f64() * 0.6).clamp(0.2, 4.0);
        let lasts = match fault {
            LinkFault::Reset => Duration::ZERO,
            LinkFault::Stall => {
                let t = receipt_timeout.as_secs_f64();
                secs(r, t * 1.1, t * 1.6)
            }
            _ => secs(r, hi * 0.25, hi),
        };
        Fault::Link { fault, lasts }
    });

    plan.disk = spread(&mut stream(seed, 5), o.disk_fills, o.phase, |r, slot| {
        let hi = (slot.as_secs_f64() * 0.6).clamp(2.0, 8.0);
        Fault::DiskFill {
            lasts: secs(r, hi * 0.5, hi),
        }
    });
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> PlanOptions {
        PlanOptions {
            phase: Duration::from_secs(60),
            gateway_kills: 20,
            bridge_kills: 20,
            mosquitto_kills: 5,
            link_faults: 12,
            disk_fills: 2,
            receipt_timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        assert_eq!(plan(7, &options()), plan(7, &options()));
        assert_ne!(plan(7, &options()), plan(8, &options()));
    }

    #[test]
    fn every_fault_asked_for_is_scheduled_inside_the_phase() {
        let p = plan(1, &options());
        assert_eq!(
            (
                p.gateway.len(),
                p.bridge.len(),
                p.mosquitto.len(),
                p.link.len(),
                p.disk.len()
            ),
            (20, 20, 5, 12, 2)
        );
        for steps in [&p.gateway, &p.bridge, &p.mosquitto, &p.link, &p.disk] {
            assert!(steps.windows(2).all(|w| w[0].at < w[1].at), "sorted");
            assert!(steps.iter().all(|s| s.at < Duration::from_secs(60)));
        }
    }

    #[test]
    fn a_process_is_back_before_its_next_kill_is_due() {
        let p = plan(3, &options());
        for w in p.gateway.windows(2) {
            let Fault::KillGateway { down } = w[0].fault else {
                panic!()
            };
            assert!(w[0].at + down < w[1].at, "{w:?}");
        }
    }

    #[test]
    fn five_link_faults_or_more_include_every_kind() {
        let p = plan(11, &options());
        let names: std::collections::BTreeSet<&str> = p
            .link
            .iter()
            .map(|s| match s.fault {
                Fault::Link { fault, .. } => fault.name(),
                _ => panic!(),
            })
            .collect();
        assert_eq!(names.len(), 5, "{names:?}");
    }

    #[test]
    fn a_stall_outlasts_the_receipt_timeout() {
        for s in plan(13, &options()).link {
            if let Fault::Link {
                fault: LinkFault::Stall,
                lasts,
            } = s.fault
            {
                assert!(lasts > Duration::from_secs(5), "{lasts:?}");
            }
        }
    }

    #[test]
    fn adding_link_faults_does_not_move_the_kills() {
        let more = PlanOptions {
            link_faults: 30,
            ..options()
        };
        assert_eq!(plan(5, &options()).gateway, plan(5, &more).gateway);
    }
}
