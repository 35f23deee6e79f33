-- The audit trail: who did what, when, from where. Written in batches by the server and
-- directly by the CLI; pruned after the retention period (`--audit-retention`).
CREATE TABLE audit_event (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    company_id TEXT NOT NULL,
    key_id     TEXT,
    user_id    TEXT,
    agent_id   TEXT,
    jti        TEXT,
    client_ip  TEXT,
    detail     TEXT
);
CREATE INDEX audit_event_company ON audit_event (company_id, id);
CREATE INDEX audit_event_at ON audit_event (at);
