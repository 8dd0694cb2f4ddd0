//! The scheduler: fires due transitions without anyone acting (GYM-8,
//! HOST-3, HOST-7).
//!
//! A tokio task that runs [`Host::fire_due`] at start-up (so what fell due
//! while the host was down fires then, once), whenever the earliest pending
//! schedule comes due, and whenever a change may have added an earlier one.
//! Every two seconds it takes up policy set versions another process
//! activated ([`Host::sync_activations`]) and looks for schedules another
//! process made due earlier, so that `rulehost policy activate`, a timed
//! `rulehost lock` and `rulehost schedule retry` take effect in a running
//! service.
//! Time comes from a [`Clock`], so tests move a [`ManualClock`] instead of
//! sleeping.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rulehost_sdk::wire::Timestamp;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::host::{FireReport, Host};

/// Where the scheduler gets the time from.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> Timestamp;

    /// Resolves once `now()` may have reached `at`. `seen` is the time the
    /// caller last acted on: a clock moved by hand resolves as soon as it
    /// is not there any more. Resolving early is allowed (the scheduler
    /// then just looks again).
    fn sleep_until(
        &self,
        seen: Timestamp,
        at: Timestamp,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// The system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp(OffsetDateTime::now_utc())
    }

    fn sleep_until(
        &self,
        _seen: Timestamp,
        at: Timestamp,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let wait = (at.get() - OffsetDateTime::now_utc()).max(time::Duration::ZERO);
        let wait = Duration::try_from(wait).unwrap_or(Duration::MAX);
        Box::pin(tokio::time::sleep(wait.min(Duration::from_secs(24 * 3600))))
    }
}

/// A clock that moves only when told to: for tests and simulations.
#[derive(Debug)]
pub struct ManualClock {
    now: watch::Sender<Timestamp>,
}

impl ManualClock {
    /// A clock standing at `now`.
    pub fn new(now: Timestamp) -> Self {
        ManualClock {
            now: watch::Sender::new(now),
        }
    }

    /// Moves the clock to `now` (backwards too).
    pub fn set(&self, now: Timestamp) {
        self.now.send_replace(now);
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: time::Duration) {
        self.now.send_modify(|now| *now = Timestamp(now.get() + by));
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.borrow()
    }

    fn sleep_until(
        &self,
        seen: Timestamp,
        at: Timestamp,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        // Resolves on any move, so a run follows every move of the clock.
        let mut now = self.now.subscribe();
        Box::pin(async move {
            // The sender lives as long as the clock, which outlives this.
            let _ = now.wait_for(|now| *now != seen || *now >= at).await;
        })
    }
}

/// One run of the scheduler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// The clock's time the run fired schedules for.
    pub now: Timestamp,
    /// What it fired, or the store error that stopped it.
    pub result: Result<FireReport, String>,
}

/// A running scheduler; stops when dropped or [`Scheduler::stop`]ped.
#[derive(Debug)]
pub struct Scheduler {
    task: Option<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    runs: watch::Receiver<Option<Run>>,
}

/// How far ahead the scheduler sleeps when nothing is scheduled.
const IDLE: time::Duration = time::Duration::hours(1);

/// How often the scheduler looks for versions activated by another process
/// ([`Host::sync_activations`]).
const SYNC_EVERY: Duration = Duration::from_secs(2);

/// How long the scheduler waits before retrying after a store error, or
/// when schedules it could not fire yet are still due.
const RETRY_AFTER: Duration = Duration::from_secs(1);

impl Scheduler {
    /// Starts the scheduler on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub fn start(host: Arc<Host>, clock: Arc<dyn Clock>) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let (report, runs) = watch::channel(None);
        let task = tokio::spawn(async move {
            loop {
                let changed = host.schedules_changed().notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                let now = clock.now();
                let fire = Arc::clone(&host);
                let result = tokio::task::spawn_blocking(move || fire.fire_due(now))
                    .await
                    .map_err(|e| format!("the scheduler's run panicked: {e}"))
                    .and_then(|fired| fired.map_err(|e| e.to_string()));
                let failed = result.is_err();
                report.send_replace(Some(Run { now, result }));
                let next = match host.next_due() {
                    Ok(next) if !failed => next,
                    _ => None,
                };
                let wait = async {
                    match next {
                        // Still due after the run: left for a request in
                        // flight or a full instance pool, so not at once.
                        Some(at) if at <= now => tokio::time::sleep(RETRY_AFTER).await,
                        Some(at) => clock.sleep_until(now, at).await,
                        None if failed => tokio::time::sleep(RETRY_AFTER).await,
                        None => clock.sleep_until(now, Timestamp(now.get() + IDLE)).await,
                    }
                };
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        () = &mut changed => break,
                        () = &mut wait => break,
                        // A version that took effect notifies `changed`, so
                        // what its activation released fires with it. A
                        // schedule another process made due earlier (a timed
                        // lock from the CLI, a held schedule retried) ends
                        // the wait too.
                        () = tokio::time::sleep(SYNC_EVERY) => {
                            let sync = Arc::clone(&host);
                            let synced = tokio::task::spawn_blocking(move || {
                                sync.sync_activations()?;
                                sync.next_due()
                            })
                            .await
                            .map_err(|e| e.to_string())
                            .and_then(|synced| synced.map_err(|e| e.to_string()));
                            match synced {
                                Ok(Some(due)) if next.is_none_or(|next| due < next) => break,
                                Ok(_) => {}
                                Err(error) => eprintln!("warning: scheduler: {error}"),
                            }
                        }
                        _ = stopped.changed() => return,
                    }
                }
            }
        });
        Scheduler {
            task: Some(task),
            stop,
            runs,
        }
    }

    /// Waits for the first run that fired schedules for a time at or after
    /// `at`, and returns it; `None` when the scheduler has stopped.
    pub async fn ran_through(&mut self, at: Timestamp) -> Option<Run> {
        self.runs
            .wait_for(|run| run.as_ref().is_some_and(|run| run.now >= at))
            .await
            .ok()
            .and_then(|run| (*run).clone())
    }

    /// Stops the scheduler and waits for its task to end.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            // A task that panicked has nothing more to stop.
            let _ = task.await;
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}
