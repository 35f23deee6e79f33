-- What answers for an agent: 'human' (the company's backend, through the agent API),
-- 'webhook' (the company's bot, sent every event of its conversations as a signed webhook).
ALTER TABLE agent ADD COLUMN kind TEXT NOT NULL DEFAULT 'human';
ALTER TABLE agent ADD COLUMN webhook_url TEXT;
-- Set when the webhook answered 410 Gone: no event is sent until its URL is set again.
ALTER TABLE agent ADD COLUMN webhook_disabled_at BIGINT;

-- The secrets that sign an agent's webhooks (Standard Webhooks `whsec_…`). Every one not
-- expired signs, so that a receiver keeps verifying while it moves to a new one.
CREATE TABLE webhook_secret (
    id         TEXT PRIMARY KEY,
    agent_id   TEXT NOT NULL REFERENCES agent (id),
    secret     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT
);
CREATE INDEX webhook_secret_agent ON webhook_secret (agent_id);

-- The agents' outbox: the events an agent that answers by itself is told of. An event row
-- commits with what it tells (a user's message, a conversation opened or closed), and a
-- worker acts on it (a webhook agent's: sends it), retrying until it is done or fails for
-- good; then the row goes (the audit trail keeps every attempt). `n` orders the events of a
-- conversation; `id` is the event's id (a webhook's `webhook-id` header), the same on every
-- attempt.
CREATE TABLE agent_event (
    n               INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    agent_id        TEXT NOT NULL REFERENCES agent (id),
    conversation_id TEXT NOT NULL REFERENCES conversation (id) ON DELETE CASCADE,
    type            TEXT NOT NULL,
    message_id      TEXT,
    created_at      BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    -- When it is due; while a worker holds it, the end of that worker's lease.
    next_attempt_at BIGINT NOT NULL,
    -- The body, fixed at the first attempt so that every retry sends the same bytes.
    body            TEXT,
    last_error      TEXT
);
CREATE INDEX agent_event_due ON agent_event (next_attempt_at);
CREATE INDEX agent_event_conversation ON agent_event (conversation_id, n);
