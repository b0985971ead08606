-- Conversations and messages of the messages service.
-- Portable between SQLite and PostgreSQL (see migrations/auth/0001).

CREATE TABLE conversations (
    id               TEXT PRIMARY KEY,
    -- 'direct' (later: 'group')
    kind             TEXT NOT NULL,
    -- the highest seq assigned; incremented in the transaction that stores a message
    last_seq         BIGINT NOT NULL DEFAULT 0,
    last_activity_ms BIGINT NOT NULL,
    created_at_ms    BIGINT NOT NULL
);

CREATE TABLE conversation_members (
    conversation_id TEXT NOT NULL REFERENCES conversations (id),
    user_id         TEXT NOT NULL,
    -- first seq this member may read
    joined_seq      BIGINT NOT NULL DEFAULT 1,
    PRIMARY KEY (conversation_id, user_id)
);

CREATE INDEX conversation_members_by_user ON conversation_members (user_id);

CREATE TABLE messages (
    id               TEXT PRIMARY KEY,
    conversation_id  TEXT NOT NULL REFERENCES conversations (id),
    seq              BIGINT NOT NULL,
    sender_id        TEXT NOT NULL,
    sender_device_id TEXT NOT NULL,
    client_msg_id    TEXT NOT NULL,
    -- the message body: natter.message.v1.MessageBody in its JSON mapping
    body             TEXT NOT NULL,
    server_ts_ms     BIGINT NOT NULL,
    -- 0 until the message is in every recipient's inbox and the event stream
    fanned_out       BIGINT NOT NULL DEFAULT 0,
    UNIQUE (conversation_id, seq),
    UNIQUE (sender_id, client_msg_id)
);

CREATE INDEX messages_not_fanned_out ON messages (conversation_id, seq) WHERE fanned_out = 0;
