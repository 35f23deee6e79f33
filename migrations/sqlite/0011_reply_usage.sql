-- An LLM's reply keeps the token usage its endpoint reported (the prompt's tokens and the
-- reply's), set when the reply completes; NULL for every other message.
ALTER TABLE message ADD COLUMN prompt_tokens BIGINT;
ALTER TABLE message ADD COLUMN completion_tokens BIGINT;
