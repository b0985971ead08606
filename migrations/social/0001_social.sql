-- Profiles and relations of the social service.
-- Portable between SQLite and PostgreSQL (see migrations/auth/0001).

-- One row per user, created from the im.evt.v1.user.registered event (or on
-- first use, from the auth service's account lookup).
CREATE TABLE profiles (
    user_id       TEXT PRIMARY KEY,
    username      TEXT NOT NULL,
    -- lowercased username, for prefix search
    username_norm TEXT NOT NULL,
    nickname      TEXT NOT NULL,
    -- lowercased nickname, for substring search in any script
    nickname_norm TEXT NOT NULL,
    signature     TEXT NOT NULL DEFAULT '',
    avatar        TEXT NOT NULL DEFAULT '',
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

CREATE INDEX profiles_by_username ON profiles (username_norm);

CREATE TABLE friend_requests (
    id            TEXT PRIMARY KEY,
    from_user_id  TEXT NOT NULL,
    to_user_id    TEXT NOT NULL,
    greeting      TEXT NOT NULL,
    -- 'pending', 'accepted' or 'rejected'
    status        TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

-- At most one pending request per direction.
CREATE UNIQUE INDEX friend_requests_pending ON friend_requests (from_user_id, to_user_id)
    WHERE status = 'pending';
CREATE INDEX friend_requests_incoming ON friend_requests (to_user_id, created_at_ms);
CREATE INDEX friend_requests_outgoing ON friend_requests (from_user_id, created_at_ms);

-- A friendship is two rows, one per side, written and deleted together.
CREATE TABLE friends (
    user_id       TEXT NOT NULL,
    friend_id     TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, friend_id)
);

CREATE TABLE blocks (
    user_id         TEXT NOT NULL,
    blocked_user_id TEXT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    PRIMARY KEY (user_id, blocked_user_id)
);

CREATE INDEX blocks_by_blocked ON blocks (blocked_user_id);
