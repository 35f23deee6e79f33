-- The chat: conversations between an end user and one agent, and their messages.

CREATE TABLE conversation (
    id             TEXT PRIMARY KEY,
    company_id     TEXT NOT NULL REFERENCES company (id),
    agent_id       TEXT NOT NULL REFERENCES agent (id),
    user_id        TEXT NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
    status         TEXT NOT NULL,
    -- The seq of its newest message; each message takes the next one in the transaction that
    -- stores it, so seqs are gapless and in commit order.
    last_seq       BIGINT NOT NULL DEFAULT 0,
    -- The highest seq each side has read.
    user_read_seq  BIGINT NOT NULL DEFAULT 0,
    agent_read_seq BIGINT NOT NULL DEFAULT 0,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    closed_at      BIGINT
);
-- At most one open conversation per (user, agent).
CREATE UNIQUE INDEX conversation_open ON conversation (user_id, agent_id) WHERE status = 'open';
CREATE INDEX conversation_user ON conversation (user_id, agent_id, created_at);
CREATE INDEX conversation_company_updated ON conversation (company_id, updated_at, id);

CREATE TABLE message (
    id                TEXT PRIMARY KEY,
    conversation_id   TEXT NOT NULL REFERENCES conversation (id) ON DELETE CASCADE,
    seq               BIGINT NOT NULL,
    client_message_id TEXT NOT NULL,
    sender_kind       TEXT NOT NULL,
    sender_name       TEXT,
    text              TEXT NOT NULL,
    status            TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    UNIQUE (conversation_id, seq),
    UNIQUE (conversation_id, client_message_id)
);

-- The chat scope (the company side of the chat) belongs to the default scopes, also of the
-- keys made before it existed.
UPDATE api_key SET scopes = 'mint,manage,chat' WHERE scopes = 'mint,manage';
