-- Group conversations (kept in step by the groups service) and each
-- member's own view of a conversation (read position, pin, mute).

-- The last ConversationChange version applied (group conversations).
ALTER TABLE conversations ADD COLUMN applied_version BIGINT NOT NULL DEFAULT 0;
-- Group name, shown in conversation lists.
ALTER TABLE conversations ADD COLUMN title TEXT NOT NULL DEFAULT '';
-- 1: only admins and the owner may speak.
ALTER TABLE conversations ADD COLUMN muted_all BIGINT NOT NULL DEFAULT 0;
-- 1: the group was dismissed; nobody may send.
ALTER TABLE conversations ADD COLUMN dismissed BIGINT NOT NULL DEFAULT 0;

-- 0 while a member; else the last seq the member may read (it left or was removed).
ALTER TABLE conversation_members ADD COLUMN left_seq BIGINT NOT NULL DEFAULT 0;
-- 'owner', 'admin' or 'member' in groups; 'member' in direct chats.
ALTER TABLE conversation_members ADD COLUMN role TEXT NOT NULL DEFAULT 'member';
-- May not speak until this time (Unix ms); 0 = not muted.
ALTER TABLE conversation_members ADD COLUMN muted_until_ms BIGINT NOT NULL DEFAULT 0;
-- The highest seq this member has read.
ALTER TABLE conversation_members ADD COLUMN read_seq BIGINT NOT NULL DEFAULT 0;
-- Conversation-list flags of this member.
ALTER TABLE conversation_members ADD COLUMN pinned BIGINT NOT NULL DEFAULT 0;
ALTER TABLE conversation_members ADD COLUMN notifications_muted BIGINT NOT NULL DEFAULT 0;

CREATE INDEX conversation_members_active ON conversation_members (conversation_id, left_seq);
