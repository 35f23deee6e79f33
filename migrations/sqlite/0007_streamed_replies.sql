-- Streamed replies: a message with status 'streaming' grows chunk by chunk until it is
-- complete (or failed). When it last grew (NULL: not since it was created), so that one left
-- unfinished can be ended.
ALTER TABLE message ADD COLUMN grown_at BIGINT;
CREATE INDEX message_streaming ON message (created_at) WHERE status = 'streaming';
