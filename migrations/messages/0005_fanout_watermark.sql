-- Fan-out progress per conversation instead of per message: every message
-- with seq <= fanned_seq is in every inbox (or on its group's subject) and
-- announced. It moves forward once per conversation per transaction, where
-- the old per-message flag rewrote every message row and a partial index.
ALTER TABLE conversations ADD COLUMN fanned_seq BIGINT NOT NULL DEFAULT 0;
UPDATE conversations SET fanned_seq = COALESCE(
    (SELECT MIN(m.seq) - 1 FROM messages m
     WHERE m.conversation_id = conversations.id AND m.fanned_out = 0),
    last_seq);
DROP INDEX messages_not_fanned_out;
ALTER TABLE messages DROP COLUMN fanned_out;
-- The conversations with messages left to fan out (few at any moment).
CREATE INDEX conversations_fanning_out ON conversations (id) WHERE fanned_seq < last_seq;
