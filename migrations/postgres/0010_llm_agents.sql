-- An 'openai' agent answers with an LLM behind an OpenAI-compatible endpoint
-- (POST {llm_base_url}/chat/completions, streamed). The API key is read from the server's
-- environment variable named llm_api_key_env when a reply starts: it is never stored here.
ALTER TABLE agent ADD COLUMN llm_base_url TEXT;
ALTER TABLE agent ADD COLUMN llm_model TEXT;
ALTER TABLE agent ADD COLUMN llm_api_key_env TEXT;
ALTER TABLE agent ADD COLUMN llm_system_prompt TEXT;
-- How many of the conversation's messages go with each request as context.
ALTER TABLE agent ADD COLUMN llm_history BIGINT NOT NULL DEFAULT 20;
-- The longest wait for the endpoint's next bytes (its answer, then each chunk).
ALTER TABLE agent ADD COLUMN llm_timeout_ms BIGINT NOT NULL DEFAULT 30000;
-- Whether a failed reply hands the conversation to a person.
ALTER TABLE agent ADD COLUMN handoff_on_failure BOOLEAN NOT NULL DEFAULT TRUE;
