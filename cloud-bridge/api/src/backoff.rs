//! Exponential back-off with jitter, for reconnects.
//!
//! The delay doubles from `base` up to `max`, and each delay is drawn
//! uniformly from its upper half, so that a thousand gateways that lost the
//! same backend do not all come back in the same millisecond.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            attempt: 0,
        }
    }

    /// The ceiling of the next delay, without jitter.
    pub fn ceiling(&self) -> Duration {
        self.base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max)
    }

    /// The next delay; `unit` is a random number in `[0, 1)`.
    pub fn next_with(&mut self, unit: f64) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        ceiling.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }

    pub fn next_delay(&mut self) -> Duration {
        self.next_with(rand::random::<f64>())
    }

    /// Call once a connection has worked.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_up_to_the_ceiling_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        assert_eq!(b.next_with(1.0), Duration::from_millis(100));
        assert_eq!(b.next_with(1.0), Duration::from_millis(200));
        assert_eq!(
            b.next_with(0.0),
            Duration::from_millis(200),
            "lower half of 400"
        );
        assert_eq!(b.next_with(1.0), Duration::from_millis(800));
        assert_eq!(b.next_with(1.0), Duration::from_millis(1000));
        assert_eq!(b.next_with(1.0), Duration::from_millis(1000));
        b.reset();
        assert_eq!(b.next_with(1.0), Duration::from_millis(100));
    }
}
