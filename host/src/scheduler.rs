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

/// What the scheduler did for one time of its clock: the latest of its
/// runs for that time, with what the runs before it for the same time
/// fired.
///
/// A run can leave schedules due: a subject changed by a request in
/// flight, or no policy instance to be had. The scheduler then runs again
/// for the same time a moment later, and the report grows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// The clock's time the runs fired schedules for.
    pub now: Timestamp,
    /// What the runs for `now` fired, summed (from the last failed one
    /// on), or the store error that stopped the latest.
    pub result: Result<FireReport, String>,
    /// How many runs `result` sums.
    pub runs: u32,
    /// Nothing due at `now` was left unfired by the latest run (held
    /// schedules are not due).
    pub settled: bool,
}

impl Run {
    /// The run for `now` that follows `last`: its report added to the
    /// reports of the runs for the same time before it.
    fn after(
        last: Option<Run>,
        now: Timestamp,
        result: Result<FireReport, String>,
        settled: bool,
    ) -> Run {
        let (result, runs) = match (last, result) {
            (
                Some(Run {
                    now: before,
                    result: Ok(mut earlier),
                    runs,
                    ..
                }),
                Ok(report),
            ) if before == now => {
                earlier += report;
                (Ok(earlier), runs + 1)
            }
            (_, result) => (result, 1),
        };
        Run {
            now,
            result,
            runs,
            settled,
        }
    }
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
                // `None` when not known: the run or the look failed.
                let next = if failed {
                    None
                } else {
                    host.next_due()
                        .map_err(|e| eprintln!("warning: scheduler: {e}"))
                        .ok()
                };
                // Settled when nothing due at `now` is left: a schedule
                // still due was left for a request in flight or a full
                // instance pool.
                let settled = next.is_some_and(|next| next.is_none_or(|at| at > now));
                report.send_modify(|last| {
                    *last = Some(Run::after(last.take(), now, result, settled))
                });
                let wait = async {
                    match next {
                        Some(Some(at)) if settled => clock.sleep_until(now, at).await,
                        Some(None) => clock.sleep_until(now, Timestamp(now.get() + IDLE)).await,
                        // Left due, or the store failed: again, but not at once.
                        _ => tokio::time::sleep(RETRY_AFTER).await,
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
                                Ok(Some(due)) if next.flatten().is_none_or(|next| due < next) => {
                                    break;
                                }
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

    /// Waits until the scheduler has fired what is due at a time at or
    /// after `at`: for the first run for such a time that left nothing due
    /// or failed, and returns it; `None` when the scheduler has stopped.
    /// Schedules that stay due (a policy instance never to be had) keep it
    /// waiting: give it a timeout and look at [`Scheduler::last_run`]
    /// then.
    pub async fn ran_through(&mut self, at: Timestamp) -> Option<Run> {
        self.runs
            .wait_for(|run| {
                run.as_ref()
                    .is_some_and(|run| run.now >= at && (run.settled || run.result.is_err()))
            })
            .await
            .ok()
            .and_then(|run| (*run).clone())
    }

    /// The scheduler's latest run, settled or not.
    pub fn last_run(&self) -> Option<Run> {
        self.runs.borrow().clone()
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
