//! Waiting for a condition by polling it, with a limit so a broken build fails instead of hanging.

use std::future::Future;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

/// How long [`wait_for`] and the [`Process`](crate::Process) waits last at
/// most: generous, so a slow machine passes, while a broken build still
/// fails instead of hanging. Use it for causal waits (the event is under
/// way), never to let time pass.
pub const WAIT_LIMIT: Duration = Duration::from_secs(60);

/// How a condition is polled: every `pause`, for at most `limit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Poll {
    /// How long to keep polling.
    pub limit: Duration,
    /// The pause between two polls.
    pub pause: Duration,
}

impl Default for Poll {
    /// Every 5 ms, for at most [`WAIT_LIMIT`].
    fn default() -> Self {
        Poll {
            limit: WAIT_LIMIT,
            pause: Duration::from_millis(5),
        }
    }
}

impl Poll {
    /// The default poll with another limit.
    pub fn limit(limit: Duration) -> Poll {
        Poll {
            limit,
            ..Poll::default()
        }
    }

    /// The same poll with another pause (a slow condition, or one that
    /// loads what it waits for, is polled less often).
    pub fn pause(self, pause: Duration) -> Poll {
        Poll { pause, ..self }
    }

    /// Calls `f` until it returns `Some` and returns that value; `None` when
    /// `limit` has passed since the first call. `f` is always called at
    /// least once, and once more after the limit has passed.
    pub fn until<T>(self, mut f: impl FnMut() -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + self.limit;
        loop {
            if let ControlFlow::Break(done) = attempt(&mut f, deadline) {
                return done;
            }
            std::thread::sleep(self.pause);
        }
    }

    /// [`Poll::until`] in an async test: it pauses with `sleep` (the
    /// runtime's, `tokio::time::sleep`), so it never blocks the runtime's
    /// threads.
    pub async fn until_async<T, S: Future<Output = ()>>(
        self,
        mut f: impl FnMut() -> Option<T>,
        mut sleep: impl FnMut(Duration) -> S,
    ) -> Option<T> {
        let deadline = Instant::now() + self.limit;
        loop {
            if let ControlFlow::Break(done) = attempt(&mut f, deadline) {
                return done;
            }
            sleep(self.pause).await;
        }
    }

    /// Polls `ok` until it holds.
    ///
    /// # Panics
    /// When it still does not hold once `limit` has passed; the message
    /// names `what` was awaited.
    pub fn wait_for(self, what: &str, mut ok: impl FnMut() -> bool) {
        if self.until(|| ok().then_some(())).is_none() {
            panic!("timed out after {:?} waiting for {what}", self.limit);
        }
    }

    /// [`Poll::wait_for`] in an async test, pausing with `sleep` as
    /// [`Poll::until_async`] does.
    ///
    /// # Panics
    /// When `ok` still does not hold once `limit` has passed; the message
    /// names `what` was awaited.
    pub async fn wait_for_async<S: Future<Output = ()>>(
        self,
        what: &str,
        mut ok: impl FnMut() -> bool,
        sleep: impl FnMut(Duration) -> S,
    ) {
        if self
            .until_async(|| ok().then_some(()), sleep)
            .await
            .is_none()
        {
            panic!("timed out after {:?} waiting for {what}", self.limit);
        }
    }
}

/// One poll: `Break(Some(v))` when `f` gave a value, `Break(None)` when it
/// did not and `deadline` had passed before it was called, else `Continue`.
fn attempt<T>(f: &mut impl FnMut() -> Option<T>, deadline: Instant) -> ControlFlow<Option<T>> {
    let passed = Instant::now() >= deadline;
    match f() {
        Some(v) => ControlFlow::Break(Some(v)),
        None if passed => ControlFlow::Break(None),
        None => ControlFlow::Continue(()),
    }
}

/// Polls `ok` every 5 ms until it holds ([`Poll::default`]).
///
/// # Panics
/// When it still does not hold after [`WAIT_LIMIT`]; the message names
/// `what` was awaited.
pub fn wait_for(what: &str, ok: impl FnMut() -> bool) {
    Poll::default().wait_for(what, ok);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_returns_the_first_value_and_gives_up_after_the_limit() {
        let mut calls = 0;
        assert_eq!(
            Poll::default().until(|| {
                calls += 1;
                (calls == 3).then_some(calls)
            }),
            Some(3)
        );
        let start = Instant::now();
        let mut calls = 0;
        let never = Poll::limit(Duration::from_millis(30)).until(|| {
            calls += 1;
            None::<()>
        });
        assert_eq!(never, None);
        assert!(start.elapsed() >= Duration::from_millis(30));
        assert!(calls >= 2, "called again after the limit: {calls}");
    }

    #[test]
    #[should_panic(expected = "waiting for the impossible")]
    fn wait_for_names_what_never_happened() {
        Poll::limit(Duration::from_millis(10)).wait_for("the impossible", || false);
    }

    #[test]
    fn until_async_pauses_with_the_given_sleep() {
        let mut slept = Vec::new();
        let mut calls = 0;
        {
            let fut = Poll::default().until_async(
                || {
                    calls += 1;
                    (calls == 3).then_some("done")
                },
                |d| {
                    slept.push(d);
                    std::future::ready(())
                },
            );
            let mut fut = std::pin::pin!(fut);
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            assert_eq!(
                fut.as_mut().poll(&mut cx),
                std::task::Poll::Ready(Some("done"))
            );
        }
        assert_eq!(slept, [Duration::from_millis(5); 2]);
    }
}
