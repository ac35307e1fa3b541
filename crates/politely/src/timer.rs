//! Waiting for a sans-I/O state machine's next deadline (the engine's, the SFU room's).

use std::time::Instant;

/// The wait for a state machine's `poll_timeout`, shared by the connection driver and the
/// SFU's loop.
///
/// A deadline already past is run without a sleep: tokio's timer wheel turns in milliseconds,
/// so a sleep until an instant just past still waits for the wheel's next tick (rtc asks for an
/// immediate timer to run a connectivity check it deferred; that cost every connect about a
/// millisecond). Once per deadline: a deadline still there after it was run goes back to the
/// sleep, so a timer stuck in the past cannot spin the task.
#[derive(Debug, Default)]
pub(crate) struct DeadlineTimer {
    ran_at_once: Option<Instant>,
}

impl DeadlineTimer {
    /// Resolves when `deadline` is reached: at once if it is already past and was not run at
    /// once before, never if there is none. Meant for a `select!` branch; the deadline counts
    /// as run at once only if this future resolves.
    pub(crate) async fn wait(&mut self, deadline: Option<Instant>) {
        match deadline {
            None => std::future::pending().await,
            Some(at) if self.run_at_once(at, Instant::now()) => {}
            Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        }
    }

    /// Whether `at` runs without a sleep at `now`, counting it as run if so.
    fn run_at_once(&mut self, at: Instant, now: Instant) -> bool {
        let at_once = at <= now && self.ran_at_once != Some(at);
        if at_once {
            self.ran_at_once = Some(at);
        }
        at_once
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use std::time::Duration;

    #[tokio::test]
    async fn a_deadline_already_past_resolves_on_the_first_poll() {
        let mut timer = DeadlineTimer::default();
        let past = Instant::now() - Duration::from_millis(1);
        assert!(timer.wait(Some(past)).now_or_never().is_some());
    }

    #[test]
    fn a_deadline_runs_at_once_only_once() {
        let mut timer = DeadlineTimer::default();
        let now = Instant::now();
        let past = now - Duration::from_millis(1);
        assert!(timer.run_at_once(past, now));
        // Still due, but it had its turn: the sleep takes it from here.
        assert!(!timer.run_at_once(past, now));
        assert!(!timer.run_at_once(past, now + Duration::from_secs(1)));
        // A new deadline, due too, runs at once again; one to come does not.
        assert!(timer.run_at_once(past + Duration::from_micros(1), now));
        assert!(!timer.run_at_once(now + Duration::from_millis(1), now));
    }

    #[tokio::test]
    async fn a_deadline_run_at_once_still_resolves_through_the_sleep() {
        let mut timer = DeadlineTimer::default();
        let past = Instant::now() - Duration::from_millis(1);
        timer.wait(Some(past)).await;
        tokio::time::timeout(Duration::from_secs(5), timer.wait(Some(past)))
            .await
            .expect("a past deadline's sleep ends");
    }

    #[tokio::test]
    async fn a_deadline_not_taken_is_still_run_at_once() {
        let mut timer = DeadlineTimer::default();
        let past = Instant::now() - Duration::from_millis(1);
        // Built but never polled (another select! branch won): the deadline did not run.
        drop(timer.wait(Some(past)));
        assert!(timer.wait(Some(past)).now_or_never().is_some());
    }

    #[tokio::test]
    async fn no_deadline_never_resolves_and_a_future_one_waits() {
        let mut timer = DeadlineTimer::default();
        assert!(timer.wait(None).now_or_never().is_none());
        let soon = Instant::now() + Duration::from_millis(20);
        assert!(timer.wait(Some(soon)).now_or_never().is_none());
        timer.wait(Some(soon)).await;
        assert!(Instant::now() >= soon);
    }
}
