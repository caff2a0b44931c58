//! The pause before acquiring a lost lease again when it keeps being lost: two agents
//! claiming one subnet, or a controller stripping the node's annotations, would otherwise
//! make the agent rewrite its lease in a tight loop against etcd or the apiserver.

use std::time::Duration;

use tokio::time::Instant;

/// A loss this soon after the last reacquisition counts as churn.
pub const CHURN_WINDOW: Duration = Duration::from_secs(60);
/// The first pause; each further loss within the window doubles it.
pub const CHURN_PAUSE_MIN: Duration = Duration::from_secs(1);
/// The longest pause.
pub const CHURN_PAUSE_MAX: Duration = Duration::from_secs(60);

/// When the lease was last acquired again, and the pause a churning loss waits.
#[derive(Debug, Default)]
pub struct Churn {
    last: Option<Instant>,
    pause: Duration,
}

impl Churn {
    /// The pause before acquiring again at `now`: `None` when the last reacquisition is
    /// long enough ago (or there was none).
    pub fn pause_before(&mut self, now: Instant) -> Option<Duration> {
        let churning = self
            .last
            .is_some_and(|t| now.duration_since(t) < CHURN_WINDOW);
        self.pause = if churning {
            (self.pause * 2).clamp(CHURN_PAUSE_MIN, CHURN_PAUSE_MAX)
        } else {
            Duration::ZERO
        };
        churning.then_some(self.pause)
    }

    /// The lease was acquired again at `now`.
    pub fn reacquired(&mut self, now: Instant) {
        self.last = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_in_a_row_pause_longer_and_a_quiet_minute_resets() {
        let t0 = Instant::now();
        let mut c = Churn::default();
        assert_eq!(c.pause_before(t0), None);
        c.reacquired(t0);
        let mut t = t0;
        let mut pauses = Vec::new();
        for _ in 0..8 {
            t += Duration::from_secs(2);
            pauses.push(c.pause_before(t).unwrap().as_secs());
            c.reacquired(t);
        }
        assert_eq!(pauses, [1, 2, 4, 8, 16, 32, 60, 60]);
        t += CHURN_WINDOW;
        assert_eq!(c.pause_before(t), None);
        c.reacquired(t);
        assert_eq!(
            c.pause_before(t + Duration::from_secs(1)),
            Some(CHURN_PAUSE_MIN)
        );
    }
}
