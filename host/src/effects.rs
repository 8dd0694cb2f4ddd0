//! From a `transition` decision's effects to the store's writes and the
//! backend's events. The host applies the effects on state it owns (locks,
//! schedules, statuses, switches, events) and returns the rest
//! (`backend` effects) to the caller.

use rulehost_sdk::wire::{Actor, Effect, Lock, SubjectRef, Timestamp};
use serde_json::{Value, json};

use crate::store::{LiftMode, Lifted, NewEvent, NewLock, Write};

/// What the host does with a decision's effects.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// The writes, in the effects' order.
    pub writes: Vec<Write>,
    /// For each write, the index of the effect it comes from.
    pub write_effect: Vec<usize>,
    /// The events announcing the writes, and those the policy asked for.
    pub events: Vec<NewEvent>,
    /// Effects for the caller to carry out.
    pub backend: Vec<Effect>,
}

impl Plan {
    fn write(&mut self, effect: usize, write: Write) {
        self.writes.push(write);
        self.write_effect.push(effect);
    }

    fn event(&mut self, kind: String, subject: &SubjectRef, data: Value) {
        self.events.push(NewEvent {
            kind,
            subject: subject.clone(),
            data,
        });
    }

    /// Adds the host's own lifting of an expired lock, announced as
    /// `lock.expired`.
    pub fn expire(&mut self, subject: &SubjectRef, lock_id: &str, at: Timestamp, host: &Actor) {
        self.writes.push(Write::LiftLocks {
            subject: subject.clone(),
            kind: None,
            lock_id: Some(lock_id.to_owned()),
            lifted: Lifted {
                at,
                actor: host.clone(),
                reason: "expired".to_owned(),
                mode: LiftMode::Automatic,
            },
        });
        self.write_effect.push(usize::MAX);
        self.event(
            "lock.expired".to_owned(),
            subject,
            json!({ "lock": lock_id }),
        );
    }

    /// Adds the announcement that schedule `id` is held because its policy
    /// failed: `schedule.held`, naming the action, the attempts and the
    /// failure.
    pub fn hold(
        &mut self,
        subject: &SubjectRef,
        id: i64,
        action: &str,
        attempts: u32,
        error: &str,
    ) {
        self.event(
            "schedule.held".to_owned(),
            subject,
            json!({ "schedule": id, "action": action, "attempts": attempts, "error": error }),
        );
    }

    /// Plans `effects`, decided for `actor` at `at`.
    ///
    /// # Errors
    ///
    /// The index of the first effect the host refuses, and why.
    pub fn effects(
        &mut self,
        effects: &[Effect],
        actor: &Actor,
        at: Timestamp,
    ) -> Result<(), (usize, String)> {
        for (index, effect) in effects.iter().enumerate() {
            self.effect(index, effect, actor, at)
                .map_err(|reason| (index, reason))?;
        }
        Ok(())
    }

    fn effect(
        &mut self,
        index: usize,
        effect: &Effect,
        actor: &Actor,
        at: Timestamp,
    ) -> Result<(), String> {
        match effect {
            Effect::SetLock {
                subject,
                kind,
                reason,
                message,
                until,
            } => {
                non_empty("kind", kind)?;
                non_empty("reason", reason)?;
                if let Some(until) = until
                    && *until <= at
                {
                    return Err(format!("the lock's end `{until}` is not after `{at}`"));
                }
                self.write(
                    index,
                    Write::SetLock(NewLock {
                        subject: subject.clone(),
                        lock: Lock {
                            id: None,
                            kind: kind.clone(),
                            actor: actor.clone(),
                            reason: reason.clone(),
                            message: message.clone(),
                            since: at,
                            until: *until,
                        },
                        legacy_id: None,
                    }),
                );
                self.event(
                    format!("{}.locked", subject.kind.name()),
                    subject,
                    json!({ "kind": kind, "actor": actor, "reason": reason, "until": until }),
                );
            }
            Effect::LiftLock {
                subject,
                kind,
                reason,
            } => {
                non_empty("reason", reason)?;
                self.write(
                    index,
                    Write::LiftLocks {
                        subject: subject.clone(),
                        kind: kind.clone(),
                        lock_id: None,
                        lifted: Lifted {
                            at,
                            actor: actor.clone(),
                            reason: reason.clone(),
                            mode: LiftMode::Manual,
                        },
                    },
                );
                self.event(
                    format!("{}.unlocked", subject.kind.name()),
                    subject,
                    json!({ "kind": kind, "actor": actor, "reason": reason }),
                );
            }
            Effect::Schedule {
                subject,
                at: when,
                action,
                params,
            } => {
                non_empty("action", action)?;
                if *when <= at {
                    return Err(format!("the schedule's time `{when}` is not after `{at}`"));
                }
                self.write(
                    index,
                    Write::Schedule {
                        subject: subject.clone(),
                        at: *when,
                        action: action.clone(),
                        params: params.clone(),
                    },
                );
            }
            Effect::CancelSchedule { subject, action } => self.write(
                index,
                Write::CancelSchedule {
                    subject: subject.clone(),
                    action: action.clone(),
                },
            ),
            Effect::SetStatus { subject, status } => {
                non_empty("status", status)?;
                self.write(
                    index,
                    Write::SetStatus {
                        subject: subject.clone(),
                        status: status.clone(),
                    },
                );
                self.event(
                    format!("{}.{status}", subject.kind.name()),
                    subject,
                    json!({ "status": status }),
                );
            }
            Effect::SetSwitch {
                subject,
                switch,
                on,
            } => {
                non_empty("switch", switch)?;
                self.write(
                    index,
                    Write::SetSwitch {
                        subject: subject.clone(),
                        switch: switch.clone(),
                        on: *on,
                    },
                );
                self.event(
                    format!("{}.switch_changed", subject.kind.name()),
                    subject,
                    json!({ "switch": switch, "on": on }),
                );
            }
            Effect::Notify {
                event,
                subject,
                data,
            } => {
                non_empty("event", event)?;
                self.event(event.clone(), subject, data.clone());
            }
            Effect::Backend { .. } => self.backend.push(effect.clone()),
        }
        Ok(())
    }
}

fn non_empty(field: &str, value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err(format!("its `{field}` is empty"));
    }
    Ok(())
}

/// The wire name of an effect (`set_lock`).
pub(crate) fn name(effect: &Effect) -> &'static str {
    match effect {
        Effect::SetLock { .. } => "set_lock",
        Effect::LiftLock { .. } => "lift_lock",
        Effect::Schedule { .. } => "schedule",
        Effect::CancelSchedule { .. } => "cancel_schedule",
        Effect::SetStatus { .. } => "set_status",
        Effect::SetSwitch { .. } => "set_switch",
        Effect::Notify { .. } => "notify",
        Effect::Backend { .. } => "backend",
    }
}
