//! The outbox worker: claims due agent events (`db::agent_event`) for a lease and hands each
//! to its agent's kind: a `webhook` agent's is POSTed (`webhook`), an `openai` agent's is
//! answered by the LLM (`llm`).
//!
//! Events are committed with what they tell. A claim makes an event one worker's until its
//! lease ends (one attempt at a time per event, on any number of instances); only the oldest
//! pending event of a conversation is due, so a conversation's events are handled in order
//! (a user's second message is answered after the first). A worker that dies mid-attempt
//! leaves its event claimed until the lease ends; then any instance takes it again (at least
//! once).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::AgentKind;
use crate::app::AppState;
use crate::db::AgentEvent;

/// How often the worker looks for due events when nothing woke it (retries, other
/// instances' events).
const POLL: Duration = Duration::from_secs(1);
/// Events claimed per query, and attempts in flight per instance.
const CLAIM_BATCH: usize = 32;
const IN_FLIGHT: usize = 64;
/// How long a claim outlives the attempt's timeout: the attempt is over by then (or its
/// instance died), and the event may be claimed again.
pub const LEASE_MARGIN_MS: i64 = 5_000;

/// Runs until `stop`, then abandons attempts in flight (their events are taken again when
/// their leases end).
pub async fn run(state: AppState, stop: CancellationToken) {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let attempts = TaskTracker::new();
    let agents = &state.agents;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = agents.wake.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
        loop {
            let free = permits.available_permits().min(CLAIM_BATCH);
            if free == 0 {
                break;
            }
            let now = state.clock.now_ms();
            // The webhook's timeout; an LLM reply extends its own lease as it streams.
            let lease_until = now + agents.webhooks.timeout.as_millis() as i64 + LEASE_MARGIN_MS;
            let done = agents.take_done();
            let claimed = match state
                .db
                .claim_agent_events(&done, now, lease_until, free as i64)
                .await
            {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim agent events");
                    agents.put_back_done(done);
                    break;
                }
            };
            let more = claimed.len() == free;
            for event in claimed {
                let permit = permits.clone().try_acquire_owned().expect("counted free");
                let (state, stop) = (state.clone(), stop.clone());
                attempts.spawn(async move {
                    tokio::select! {
                        _ = attempt(&state, &event) => {}
                        _ = stop.cancelled() => {}
                    }
                    drop(permit);
                    // Its conversation's next event may be due now.
                    state.agents.wake();
                });
            }
            if !more {
                break;
            }
        }
    }
    attempts.close();
    attempts.wait().await;
    // What was done is deleted (else it would be done again after the restart).
    let done = agents.take_done();
    if !done.is_empty() {
        let now = state.clock.now_ms();
        if let Err(e) = state.db.claim_agent_events(&done, now, now, 0).await {
            tracing::warn!(error = %e, "cannot delete the agent events done");
        }
    }
}

/// One claimed event, handed to its agent's kind.
async fn attempt(state: &AppState, event: &AgentEvent) {
    let outcome = async {
        let agent = state.db.find_agent_by_id(&event.agent_id).await?;
        let Some(a) = agent else {
            return no_longer(state, event).await;
        };
        match AgentKind::of(&a.kind) {
            Some(AgentKind::Openai) if event.kind == "message.created" => {
                super::llm::answer(state, event, &a).await
            }
            Some(AgentKind::Webhook) if a.webhook_disabled_at.is_none() => {
                match a.webhook_url.clone() {
                    Some(url) => super::webhook::deliver(state, event, &a, &url).await,
                    None => no_longer(state, event).await,
                }
            }
            _ => no_longer(state, event).await,
        }
    };
    if let Err(e) = outcome.await {
        // Storage failed mid-way: the event is taken again when its lease ends.
        tracing::warn!(event = %event.id, error = %e, "agent event interrupted");
    }
}

/// The agent changed kind (or lost its webhook) since the event was queued: dropped.
async fn no_longer(state: &AppState, event: &AgentEvent) -> crate::error::Result<()> {
    tracing::info!(event = %event.id, "agent event dropped: the agent no longer answers it");
    state.agents.done(event.n);
    Ok(())
}
