-- Who answers a conversation: its agent ('bot': the company's backend, its bot or an LLM),
-- nobody yet because it was handed to a person ('waiting_human'), or a person ('human').
ALTER TABLE conversation ADD COLUMN handler TEXT NOT NULL DEFAULT 'bot';
