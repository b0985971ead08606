-- Groups, members and the change log of the groups service.
-- Portable between SQLite and PostgreSQL (see migrations/auth/0001).

CREATE TABLE chat_groups (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    description   TEXT NOT NULL DEFAULT '',
    announcement  TEXT NOT NULL DEFAULT '',
    owner_id      TEXT NOT NULL,
    -- 1: only admins and the owner may speak
    muted_all     BIGINT NOT NULL DEFAULT 0,
    max_members   BIGINT NOT NULL,
    -- changes so far; bumped first in every changing transaction, which
    -- serializes changes per group
    version       BIGINT NOT NULL DEFAULT 0,
    dismissed     BIGINT NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

CREATE TABLE group_members (
    group_id       TEXT NOT NULL REFERENCES chat_groups (id),
    user_id        TEXT NOT NULL,
    -- 'owner', 'admin' or 'member'
    role           TEXT NOT NULL,
    -- may not speak until this time (Unix ms); 0 = not muted
    muted_until_ms BIGINT NOT NULL DEFAULT 0,
    joined_at_ms   BIGINT NOT NULL,
    PRIMARY KEY (group_id, user_id)
);

CREATE INDEX group_members_by_user ON group_members (user_id);

-- Every change, in version order, until the messages service has applied it
-- to the group's conversation (the outbox of this service).
CREATE TABLE group_changes (
    group_id      TEXT NOT NULL REFERENCES chat_groups (id),
    version       BIGINT NOT NULL,
    -- natter.message.v1.ConversationChange, protobuf, base64
    change        TEXT NOT NULL,
    applied       BIGINT NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (group_id, version)
);

CREATE INDEX group_changes_pending ON group_changes (group_id, version) WHERE applied = 0;
