//! Backoff for a kind of run that keeps failing (rotations, revocations), and the log lines
//! of a failure streak: one when it starts, a reminder each hour, one when it heals. An app
//! that runs for days through an outage logs a handful of lines, not one per attempt.

use std::time::Duration;

use tokio::time::Instant;

/// How long between reminders that a streak goes on.
const REMINDER_EVERY: Duration = Duration::from_secs(3600);

/// Retries of one kind of run.
#[derive(Debug)]
pub struct Retry {
    /// What is retried, for the log ("rotation", "revocation").
    what: &'static str,
    /// The longest wait between attempts.
    cap: Duration,
    failures: u32,
    since: Option<Instant>,
    reminded: Option<Instant>,
    /// Not before this (after a failure).
    pub not_before: Option<Instant>,
}

/// What to say about a failure.
pub enum Streak {
    /// The first of a streak: log the run's own error lines and the plan.
    Started,
    /// An hour since the last line: say it goes on.
    Reminder { failures: u32, for_secs: u64 },
    /// Say nothing about the failure (warnings still pass).
    Quiet,
}

impl Retry {
    pub fn new(what: &'static str, cap: Duration) -> Self {
        Self { what, cap, failures: 0, since: None, reminded: None, not_before: None }
    }

    pub fn what(&self) -> &'static str {
        self.what
    }

    /// Count a failure and schedule the next attempt: exponential from 2 s, capped, with
    /// jitter (75–100% of the step, so many apps do not retry in step); no later than `hurry`
    /// when there is one (the credential in use runs out), but never within 0.5 s.
    pub fn failed(&mut self, hurry: Option<Duration>) -> (Duration, Streak) {
        self.failures += 1;
        let now = Instant::now();
        let step = Duration::from_secs(2).saturating_mul(1 << (self.failures - 1).min(16)).min(self.cap);
        let step = match hurry {
            Some(within) => step.min(within.max(Duration::from_millis(500))),
            None => step,
        };
        let wait = step.mul_f64(0.75 + fastrand::f64() * 0.25);
        self.not_before = Some(now + wait);
        let streak = match (self.since, self.reminded) {
            (None, _) => {
                self.since = Some(now);
                self.reminded = Some(now);
                Streak::Started
            }
            (Some(since), Some(last)) if now.duration_since(last) >= REMINDER_EVERY => {
                self.reminded = Some(now);
                Streak::Reminder { failures: self.failures, for_secs: now.duration_since(since).as_secs() }
            }
            _ => Streak::Quiet,
        };
        (wait, streak)
    }

    /// A success: the streak (failures, how long it lasted), if there was one.
    pub fn succeeded(&mut self) -> Option<(u32, Duration)> {
        let ended = self.since.map(|since| (self.failures, since.elapsed()));
        *self = Self::new(self.what, self.cap);
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_exponentially_with_jitter_to_a_cap_and_hurries_for_a_dying_credential() {
        let mut retry = Retry::new("revocation", Duration::from_secs(300));
        let waits: Vec<Duration> = (0..12).map(|_| retry.failed(None).0).collect();
        for (n, wait) in waits.iter().enumerate() {
            let step = Duration::from_secs(2 << n.min(16)).min(Duration::from_secs(300));
            assert!(*wait >= step.mul_f64(0.75) && *wait <= step, "attempt {n}: {wait:?} for a step of {step:?}");
        }
        assert!(waits[11] <= Duration::from_secs(300));
        let (wait, _) = retry.failed(Some(Duration::from_secs(1)));
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        let (wait, _) = retry.failed(Some(Duration::ZERO));
        assert!(wait >= Duration::from_millis(375), "never a tight loop: {wait:?}");
    }

    #[test]
    fn a_streak_is_logged_once_and_its_end_is_reported() {
        let mut retry = Retry::new("rotation", Duration::from_secs(60));
        assert!(matches!(retry.failed(None).1, Streak::Started));
        assert!(matches!(retry.failed(None).1, Streak::Quiet));
        assert!(matches!(retry.failed(None).1, Streak::Quiet));
        let (failures, _) = retry.succeeded().unwrap();
        assert_eq!(failures, 3);
        assert!(retry.succeeded().is_none() && retry.not_before.is_none());
        assert!(matches!(retry.failed(None).1, Streak::Started));
    }
}
