-- API key policy and rolling. `scopes` is a comma-separated list (`mint`, `manage`);
-- `allowed_agents` a comma-separated list of agent ids, NULL for any; `max_expires_in` in
-- seconds, NULL for the server's maximum. A rolled key keeps its previous secret's hash
-- until `previous_expires_at` (unix milliseconds).
ALTER TABLE api_key ADD COLUMN scopes TEXT NOT NULL DEFAULT 'mint,manage';
ALTER TABLE api_key ADD COLUMN allowed_agents TEXT;
ALTER TABLE api_key ADD COLUMN max_expires_in BIGINT;
ALTER TABLE api_key ADD COLUMN previous_secret_hash BYTEA;
ALTER TABLE api_key ADD COLUMN previous_expires_at BIGINT;

-- Signing keys are retired (their secret erased) once every token they signed has expired.
ALTER TABLE signing_key ADD COLUMN retire_at BIGINT;
