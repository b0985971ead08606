-- Replies and delete-for-me.

-- The quoted message (natter.message.v1.Quote in its JSON mapping), '' = none.
ALTER TABLE messages ADD COLUMN reply_to TEXT NOT NULL DEFAULT '';

-- Messages a user deleted for itself: left out of its history.
CREATE TABLE hidden_messages (
    user_id         TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    seq             BIGINT NOT NULL,
    hidden_at_ms    BIGINT NOT NULL,
    PRIMARY KEY (user_id, conversation_id, seq)
);
