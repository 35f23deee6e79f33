-- One row that readiness rewrites to find out whether the database accepts writes again
-- after a write failed (a full disk, a read-only database).
CREATE TABLE write_probe (
    id INTEGER PRIMARY KEY,
    at BIGINT NOT NULL
);
