-- performchat schema, SQLite dialect. Times are unix milliseconds unless named `exp`
-- (a JWT expiry, unix seconds). Ids are text. The PostgreSQL file of the same name
-- holds the same tables.

CREATE TABLE company (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    active           BOOLEAN NOT NULL,
    default_agent_id TEXT,
    created_at       BIGINT NOT NULL
);

CREATE TABLE agent (
    id         TEXT PRIMARY KEY,
    company_id TEXT NOT NULL REFERENCES company (id),
    name       TEXT NOT NULL,
    active     BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX agent_company ON agent (company_id);

CREATE TABLE api_key (
    id          TEXT PRIMARY KEY,
    company_id  TEXT NOT NULL REFERENCES company (id),
    secret_hash BLOB NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX api_key_company ON api_key (company_id);

CREATE TABLE app_user (
    id             TEXT PRIMARY KEY,
    company_id     TEXT NOT NULL REFERENCES company (id),
    external_id    TEXT NOT NULL,
    token_version  BIGINT NOT NULL DEFAULT 0,
    invalidated_at BIGINT,
    created_at     BIGINT NOT NULL,
    UNIQUE (company_id, external_id)
);
CREATE INDEX app_user_invalidated ON app_user (token_version) WHERE token_version > 0;

CREATE TABLE revoked_token (
    jti        TEXT PRIMARY KEY,
    company_id TEXT NOT NULL REFERENCES company (id),
    exp        BIGINT NOT NULL,
    revoked_at BIGINT NOT NULL
);

CREATE TABLE signing_key (
    id         TEXT PRIMARY KEY,
    secret     BLOB NOT NULL,
    created_at BIGINT NOT NULL
);

-- Every change that running servers must apply to their in-memory verification state.
-- Servers read it in `seq` order; SQLite has one writer at a time, so `seq` order is
-- commit order.
CREATE TABLE change_log (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    kind    TEXT NOT NULL,
    subject TEXT NOT NULL,
    at      BIGINT NOT NULL
);
