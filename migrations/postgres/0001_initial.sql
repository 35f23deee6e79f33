-- performchat schema, PostgreSQL dialect. Times are unix milliseconds unless named `exp`
-- (a JWT expiry, unix seconds). Ids are text. The SQLite file of the same name holds the
-- same tables.

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
    secret_hash BYTEA NOT NULL,
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
    secret     BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

-- Every change that running servers must apply to their in-memory verification state.
-- Servers read it in `seq` order, so `seq` order must be commit order. A plain sequence
-- does not give that (two transactions can commit in the other order than they drew their
-- numbers), so the trigger below draws the number only after taking a transaction-scoped
-- lock: change writers commit one at a time, in `seq` order. Changes are rare (an
-- invalidation, a revocation), so serialising them costs nothing that matters.
CREATE SEQUENCE change_log_seq;
CREATE TABLE change_log (
    seq     BIGINT PRIMARY KEY,
    kind    TEXT NOT NULL,
    subject TEXT NOT NULL,
    at      BIGINT NOT NULL
);

CREATE FUNCTION change_log_assign_seq() RETURNS trigger AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7263091155401);
    NEW.seq := nextval('change_log_seq');
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER change_log_assign_seq BEFORE INSERT ON change_log
    FOR EACH ROW EXECUTE FUNCTION change_log_assign_seq();

-- Wakes every listening server at commit; the payload is only a hint, servers read the
-- log itself, so a lost notification delays a change and never loses it.
CREATE FUNCTION change_log_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('performchat_change', NEW.seq::text);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER change_log_notify AFTER INSERT ON change_log
    FOR EACH ROW EXECUTE FUNCTION change_log_notify();
