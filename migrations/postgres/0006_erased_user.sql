-- Users erased on request (`performchat user erase`): their row, conversations and messages are
-- gone; the id stays here so that tokens minted for it are refused, also after a restart.
CREATE TABLE erased_user (
    id         TEXT PRIMARY KEY,
    company_id TEXT NOT NULL,
    erased_at  BIGINT NOT NULL
);
